// The tenant-key helpers against the real gateway (`aigateway serve` from this checkout, in
// front of the bundled mock provider), not a stand-in: every field the gateway answers, every
// status the helpers turn into a typed error, and what a key is worth once revoked.
//
// The gateway gets a data directory of its own (its key store) and an admin key, and a price
// for the mock's model so answers cost something; once a key exists, every /v1 request needs
// one, so the key's secret is what the chat client sends.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { createGatewayClient, GatewayError } from '../src/index.js';
import { chatRequest, startMock, startTestGateway, waitFor } from './helpers.js';

const ADMIN_KEY = 'sk-admin-node-keys-0123456789';
const ID = /^key_[0-9a-f]+$/;
const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;
// What every key document carries, in the gateway's order.
const KEY_FIELDS = [
  'id', 'object', 'name', 'prefix', 'created_at', 'revoked_at', 'rpm', 'tpm', 'max_parallel',
  'budget_usd', 'budget_period', 'models', 'priority', 'max_priority', 'expires_at', 'metadata',
  'usage', 'spend',
];

let dir;
let mock;
let gateway;
let admin;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'aigateway-node-keys-'));
  const config = path.join(dir, 'gateway.toml');
  writeFileSync(config, '[prices."gpt-4o-mini"]\ninput = 1000.0\noutput = 2000.0\n');
  mock = await startMock();
  gateway = await startTestGateway(mock, {
    env: {
      AI_GATEWAY_DATA_DIR: path.join(dir, 'data'),
      AI_GATEWAY_CONFIG: config,
      AI_GATEWAY_ADMIN_KEY: ADMIN_KEY,
      KEY_SPEND_FLUSH_MS: '100',
    },
  });
  admin = createGatewayClient({ baseUrl: gateway.url, adminKey: ADMIN_KEY, healthIntervalMs: 0, retries: 0 });
});

after(async () => {
  await admin?.close();
  await gateway?.stop();
  await mock?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A client that sends `secret` as its key on /v1 requests. */
function tenant(secret) {
  return createGatewayClient({ baseUrl: gateway.url, apiKey: secret, healthIntervalMs: 0, retries: 0 });
}

function refusedWith(status, code, param) {
  return (error) => {
    assert.ok(error instanceof GatewayError, `${error}`);
    assert.equal(error.status, status, error.message);
    if (code !== undefined) assert.equal(error.code, code, error.message);
    if (param !== undefined) assert.equal(error.param, param, error.message);
    assert.ok(error.message.length > 0);
    return true;
  };
}

describe('createKey', () => {
  test('answers 201 with every field set, the id and, this once, the secret', async () => {
    const spec = {
      name: 'node-search', rpm: 120, tpm: 50_000, max_parallel: 3, budget_usd: 2.5, budget_period: 'month',
      models: ['gpt-4o-mini'], priority: 'low', max_priority: 'high', expires_at: '2099-01-31T00:00:00Z',
      metadata: { owner: 'search', tier: 2 },
    };
    const created = await admin.createKey(spec);
    assert.match(created.id, ID);
    assert.equal(typeof created.key, 'string');
    assert.ok(created.key.length >= 20, 'a secret worth the name');
    assert.ok(created.key.startsWith(created.prefix), `${created.prefix} is how the secret begins`);
    assert.deepEqual(Object.keys(created).sort(), [...KEY_FIELDS, 'key'].sort());
    assert.equal(created.object, 'key');
    assert.match(created.created_at, RFC3339);
    assert.equal(created.revoked_at, null);
    for (const name of Object.keys(spec)) assert.deepEqual(created[name], spec[name], name);
    // A live key's figures include the node's live ones: requests in flight, USD reserved.
    assert.deepEqual(created.usage, { requests: 0, prompt_tokens: 0, completion_tokens: 0, in_flight: 0 });
    assert.match(created.spend.period, /^month:\d{4}-\d\d$/);
    assert.deepEqual(created.spend, {
      total_usd: 0, period: created.spend.period, period_usd: 0, budget_remaining_usd: 2.5, reserved_usd: 0,
    });

    const again = await admin.getKey(created.id);
    assert.equal(again.key, undefined, 'the secret is never shown again');
    assert.deepEqual(Object.keys(again).sort(), [...KEY_FIELDS].sort());
    const { key: _secret, ...shown } = created;
    assert.deepEqual(again, shown);
  });

  test('unset limits come back as null, the period as total, models and metadata empty', async () => {
    const created = await admin.createKey({ name: 'node-plain' });
    for (const name of ['rpm', 'tpm', 'max_parallel', 'budget_usd', 'priority', 'max_priority', 'expires_at']) {
      assert.equal(created[name], null, name);
    }
    assert.equal(created.budget_period, 'total');
    assert.deepEqual(created.models, []);
    assert.deepEqual(created.metadata, {});
    assert.equal(created.spend.period, 'total');
    assert.equal(created.spend.budget_remaining_usd, null);
  });

  test('an unknown field is a 400 naming it; nothing is made', async () => {
    await assert.rejects(admin.createKey({ name: 'node-colour', colour: 'blue' }), (error) => {
      refusedWith(400, 'unknown_field', 'colour')(error);
      assert.match(error.message, /colour/);
      return true;
    });
    const { data } = await admin.listKeys();
    assert.ok(!data.some((k) => k.name === 'node-colour'));
  });

  test('a name in use is a 409', async () => {
    await admin.createKey({ name: 'node-twice' });
    await assert.rejects(admin.createKey({ name: 'node-twice' }), refusedWith(409, 'key_name_taken'));
  });

  test('a bad value is a 400 naming the field', async () => {
    await assert.rejects(admin.createKey({ name: 'node-bad', budget_period: 'week' }), refusedWith(400, undefined, 'budget_period'));
    await assert.rejects(admin.createKey({ name: 'node-bad', rpm: -1 }), refusedWith(400, undefined, 'rpm'));
  });
});

describe('listKeys and getKey', () => {
  test('list every key with its limits, usage and spend; an unknown id is a 404', async () => {
    const made = await admin.createKey({ name: 'node-listed', rpm: 7 });
    const list = await admin.listKeys();
    assert.equal(list.object, 'list');
    const found = list.data.find((k) => k.id === made.id);
    assert.equal(found.name, 'node-listed');
    assert.equal(found.rpm, 7);
    assert.equal(found.key, undefined);
    for (const k of list.data) assert.deepEqual(Object.keys(k).sort(), [...KEY_FIELDS].sort());
    await assert.rejects(admin.getKey('key_0123456789abcdef'), refusedWith(404, 'key_not_found'));
  });

  test('the admin endpoints refuse a client without the admin key', async () => {
    const stranger = createGatewayClient({ baseUrl: gateway.url, apiKey: 'sk-not-the-admin', healthIntervalMs: 0, retries: 0 });
    try {
      await assert.rejects(stranger.listKeys(), (error) => error instanceof GatewayError && [401, 403].includes(error.status));
    } finally {
      await stranger.close();
    }
  });
});

describe('a key in use', () => {
  test('its requests are counted and priced; the answer carries the cost', async () => {
    const made = await admin.createKey({ name: 'node-spender', budget_usd: 1 });
    const client = tenant(made.key);
    try {
      const reply = await client.chat(chatRequest('what does this cost?'));
      assert.ok(reply.cost > 0, `cost ${reply.cost}`);
      // The store's figures follow within a spend flush (KEY_SPEND_FLUSH_MS, 100 ms here); a
      // request is counted when admitted, its tokens and dollars when its answer settles.
      let seen;
      await waitFor(async () => {
        seen = await admin.getKey(made.id);
        return seen.usage.completion_tokens > 0 && seen.spend.total_usd > 0;
      }, { what: 'the spend to reach the key store' });
      assert.equal(seen.usage.requests, 1);
      assert.ok(seen.usage.prompt_tokens > 0 && seen.usage.completion_tokens > 0);
      assert.ok(Math.abs(seen.spend.period_usd - reply.cost) < 1e-9, `${seen.spend.period_usd} vs ${reply.cost}`);
      assert.ok(Math.abs(seen.spend.total_usd - reply.cost) < 1e-9);
      assert.ok(Math.abs(seen.spend.budget_remaining_usd - (1 - reply.cost)) < 1e-9);
    } finally {
      await client.close();
    }
  });

  test('a request without a key, or with a wrong one, is a 401 once keys exist', async () => {
    await admin.createKey({ name: 'node-gatekeeper' });
    for (const secret of [undefined, 'agk_not-a-real-key-0000000000']) {
      const client = tenant(secret);
      try {
        await assert.rejects(client.chat(chatRequest('let me in')), refusedWith(401));
      } finally {
        await client.close();
      }
    }
  });
});

describe('updateKey', () => {
  test('PATCH changes the given limits, null clears one, the rest stays', async () => {
    const made = await admin.createKey({ name: 'node-ingest', rpm: 60, tpm: 1000, metadata: { team: 'a' } });
    const changed = await admin.updateKey(made.id, { rpm: null, budget_usd: 25, budget_period: 'day' });
    assert.equal(changed.id, made.id);
    assert.equal(changed.rpm, null);
    assert.equal(changed.tpm, 1000);
    assert.equal(changed.budget_usd, 25);
    assert.equal(changed.budget_period, 'day');
    assert.match(changed.spend.period, /^day:\d{4}-\d\d-\d\d$/);
    assert.deepEqual(changed.metadata, { team: 'a' });
    assert.equal(changed.key, undefined);
    assert.deepEqual(await admin.getKey(made.id), changed);
  });

  test('PATCH refuses an unknown field (400), a taken name (409) and an unknown id (404)', async () => {
    const made = await admin.createKey({ name: 'node-patched' });
    await admin.createKey({ name: 'node-other' });
    await assert.rejects(admin.updateKey(made.id, { colour: 'red' }), refusedWith(400, 'unknown_field', 'colour'));
    await assert.rejects(admin.updateKey(made.id, { name: 'node-other' }), refusedWith(409, 'key_name_taken'));
    await assert.rejects(admin.updateKey('key_0123456789abcdef', { rpm: 1 }), refusedWith(404, 'key_not_found'));
  });
});

describe('revokeKey', () => {
  test('DELETE revokes the key: it answers the key revoked, and the key is refused with 401', async () => {
    const made = await admin.createKey({ name: 'node-leaked' });
    const client = tenant(made.key);
    try {
      await client.chat(chatRequest('before'));
      const revoked = await admin.revokeKey(made.id);
      assert.equal(revoked.id, made.id);
      assert.match(revoked.revoked_at, RFC3339);
      assert.equal(revoked.key, undefined);
      // Revoked, it has no live figures: what the store kept.
      assert.deepEqual(Object.keys(revoked.usage).sort(), ['completion_tokens', 'prompt_tokens', 'requests']);
      assert.equal(revoked.spend.reserved_usd, undefined);
      await assert.rejects(client.chat(chatRequest('after')), refusedWith(401));
      const listed = (await admin.listKeys()).data.find((k) => k.id === made.id);
      assert.equal(listed.revoked_at, revoked.revoked_at, 'a revoked key stays listed');
      await assert.rejects(admin.revokeKey(made.id), refusedWith(404, 'key_not_found'));
      await assert.rejects(admin.updateKey(made.id, { rpm: 1 }), refusedWith(404, 'key_not_found'));
    } finally {
      await client.close();
    }
  });
});
