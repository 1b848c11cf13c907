// The tenant-key helpers (POST/GET/PATCH/DELETE /admin/keys, GET /admin/keys/{id}) against a
// small server on loopback standing in for the gateway's key endpoints (issue 17): what each
// helper sends, with which key, and what it returns; errors come back typed. The same file
// checks that an answer's x-aigateway-cost reaches the caller as `cost`. The same helpers
// against the real gateway, every field and status: keys-gateway.test.js.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, beforeEach, test } from 'node:test';

import { createGatewayClient, GatewayError } from '../src/index.js';
import { chatRequest } from './helpers.js';

const ADMIN_KEY = 'admin-key-0123456789';
const API_KEY = 'api-key-0123456789';
const FIELDS = new Set([
  'name', 'rpm', 'tpm', 'max_parallel', 'budget_usd', 'budget_period', 'models', 'priority',
  'max_priority', 'expires_at', 'metadata',
]);

let server;
let baseUrl;
let seen = [];
let keys = new Map();
let nextId = 1;

function json(response, status, body, headers = {}) {
  response.writeHead(status, { 'content-type': 'application/json', ...headers });
  response.end(JSON.stringify(body));
}

function error(response, status, message, param = null, code = null) {
  json(response, status, { error: { message, type: 'invalid_request_error', param, code } });
}

function document(id, fields) {
  return {
    id, object: 'key', name: fields.name, prefix: 'agk_1234', created_at: '2026-12-07T18:00:00Z',
    revoked_at: null, rpm: null, tpm: null, max_parallel: null, budget_usd: null,
    budget_period: 'total', models: [], priority: null, max_priority: null, expires_at: null,
    metadata: {}, ...fields,
    usage: { requests: 0, prompt_tokens: 0, completion_tokens: 0, in_flight: 0 },
    spend: {
      total_usd: 0, period: 'total', period_usd: 0, budget_remaining_usd: fields.budget_usd ?? null, reserved_usd: 0,
    },
  };
}

// What the gateway's /admin/keys does, as issue 17 specifies it, in a few lines.
function keyEndpoints(request, response, body) {
  if (request.headers.authorization !== `Bearer ${ADMIN_KEY}`) return error(response, 401, 'admin key needed');
  const [, , , id] = request.url.split('/');
  if (request.url === '/admin/keys' && request.method === 'POST') {
    const unknown = Object.keys(body).filter((name) => !FIELDS.has(name));
    if (unknown.length) return error(response, 400, `unknown field(s): ${unknown}`, unknown[0], 'unknown_field');
    const key = document(`key_${nextId++}`, body);
    keys.set(key.id, key);
    return json(response, 201, { ...key, key: `agk_secret_${key.id}` });
  }
  if (request.url === '/admin/keys' && request.method === 'GET') {
    return json(response, 200, { object: 'list', data: [...keys.values()] });
  }
  const key = keys.get(decodeURIComponent(id ?? ''));
  if (!key) return error(response, 404, `no key ${decodeURIComponent(id ?? '')}`, 'id', 'key_not_found');
  if (request.method === 'PATCH') Object.assign(key, body);
  if (request.method === 'DELETE') key.revoked_at = '2026-12-07T18:01:00Z';
  return json(response, 200, key);
}

before(async () => {
  server = http.createServer(async (request, response) => {
    let text = '';
    for await (const chunk of request) text += chunk;
    const body = text ? JSON.parse(text) : undefined;
    seen.push({ method: request.method, url: request.url, headers: request.headers, body });
    if (request.url === '/health') return json(response, 200, { status: 'ok' });
    if (request.url.startsWith('/admin/keys')) return keyEndpoints(request, response, body);
    const cost = request.url === '/v1/chat' ? { 'x-aigateway-cost': '0.000123', 'x-aigateway-cache': 'miss' } : {};
    return json(response, 200, {
      id: 'chatcmpl-1', provider: 'openai', model: 'gpt-4o-mini', content: 'priced',
      finish_reason: 'stop', usage: { prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 },
      cached: false, latency_ms: 1,
    }, cost);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${server.address().port}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

beforeEach(() => {
  seen = [];
  keys = new Map();
  nextId = 1;
});

function adminClient() {
  return createGatewayClient({ baseUrl, apiKey: API_KEY, adminKey: ADMIN_KEY, healthIntervalMs: 0 });
}

const keyCalls = () => seen.filter((r) => r.url.startsWith('/admin/keys'));

test('createKey posts the fields as given, with the admin key, and returns the secret once', async () => {
  const client = adminClient();
  try {
    const spec = {
      name: 'search-team', rpm: 5, tpm: 20_000, max_parallel: 2, budget_usd: 0.05, budget_period: 'day',
      models: ['gpt-4o-mini'], priority: 'low', max_priority: 'high', expires_at: '2027-01-31T00:00:00Z',
      metadata: { owner: 'search' },
    };
    const created = await client.createKey(spec);
    const [sent] = keyCalls();
    assert.equal(sent.method, 'POST');
    assert.equal(sent.url, '/admin/keys');
    assert.equal(sent.headers.authorization, `Bearer ${ADMIN_KEY}`);
    assert.deepEqual(sent.body, spec);
    assert.equal(created.id, 'key_1');
    assert.equal(created.key, 'agk_secret_key_1');
    assert.equal(created.budget_period, 'day');
    assert.equal((await client.getKey(created.id)).key, undefined); // the secret, never again
  } finally {
    await client.close();
  }
});

test('listKeys and getKey read the keys with their limits, usage and spend', async () => {
  const client = adminClient();
  try {
    const { id } = await client.createKey({ name: 'batch-jobs', budget_usd: 10 });
    await client.createKey({ name: 'chat-ui' });
    const list = await client.listKeys();
    assert.equal(list.object, 'list');
    assert.deepEqual(list.data.map((k) => k.name), ['batch-jobs', 'chat-ui']);
    const one = await client.getKey(id);
    assert.equal(one.spend.budget_remaining_usd, 10);
    assert.deepEqual(one.usage, { requests: 0, prompt_tokens: 0, completion_tokens: 0, in_flight: 0 });
    assert.deepEqual(keyCalls().slice(2).map((r) => `${r.method} ${r.url}`), ['GET /admin/keys', `GET /admin/keys/${id}`]);
  } finally {
    await client.close();
  }
});

test('updateKey sends only the changes, null clearing a limit', async () => {
  const client = adminClient();
  try {
    const { id } = await client.createKey({ name: 'ingest', rpm: 60 });
    const changed = await client.updateKey(id, { rpm: null, budget_usd: 25, budget_period: 'month' });
    const sent = keyCalls().at(-1);
    assert.equal(sent.method, 'PATCH');
    assert.equal(sent.url, `/admin/keys/${id}`);
    assert.deepEqual(sent.body, { rpm: null, budget_usd: 25, budget_period: 'month' });
    assert.equal(changed.rpm, null);
    assert.equal(changed.budget_period, 'month');
  } finally {
    await client.close();
  }
});

test('revokeKey deletes the key and returns it revoked', async () => {
  const client = adminClient();
  try {
    const { id } = await client.createKey({ name: 'leaked' });
    const revoked = await client.revokeKey(id);
    assert.equal(keyCalls().at(-1).method, 'DELETE');
    assert.ok(revoked.revoked_at);
  } finally {
    await client.close();
  }
});

test('a key id goes into the path escaped', async () => {
  const client = adminClient();
  try {
    await assert.rejects(client.getKey('a/b?c'), (error) => error instanceof GatewayError && error.status === 404);
    assert.equal(keyCalls().at(-1).url, '/admin/keys/a%2Fb%3Fc');
  } finally {
    await client.close();
  }
});

test("the gateway's refusals come back as typed errors naming the field", async () => {
  const client = adminClient();
  try {
    await assert.rejects(client.createKey({ name: 'x', colour: 'blue' }), (error) => {
      assert.ok(error instanceof GatewayError);
      assert.equal(error.status, 400);
      assert.equal(error.param, 'colour');
      assert.equal(error.code, 'unknown_field');
      return true;
    });
    await assert.rejects(client.getKey('key_404'), (error) => error.status === 404 && error.code === 'key_not_found');
    const noAdmin = createGatewayClient({ baseUrl, apiKey: API_KEY, healthIntervalMs: 0 });
    try {
      await assert.rejects(noAdmin.listKeys(), (error) => error.status === 401);
      assert.equal(keyCalls().at(-1).headers.authorization, `Bearer ${API_KEY}`); // adminKey defaults to apiKey
    } finally {
      await noAdmin.close();
    }
  } finally {
    await client.close();
  }
});

test('bad arguments are refused before anything is sent', async () => {
  const client = adminClient();
  try {
    await assert.rejects(client.createKey({ rpm: 5 }), TypeError);
    await assert.rejects(client.createKey(null), TypeError);
    await assert.rejects(client.getKey(''), TypeError);
    await assert.rejects(client.updateKey('key_1', 'rpm=5'), TypeError);
    await assert.rejects(client.revokeKey(undefined), TypeError);
    assert.equal(keyCalls().length, 0);
  } finally {
    await client.close();
  }
});

test("an answer's cost in USD reaches the caller as `cost`", async () => {
  const client = adminClient();
  try {
    const reply = await client.chat(chatRequest('what does it cost?'));
    assert.equal(reply.cost, 0.000123);
    assert.equal(reply.cache, 'miss');
    const models = await client.models(); // no cost header: no cost
    assert.equal(models.cost, undefined);
  } finally {
    await client.close();
  }
});
