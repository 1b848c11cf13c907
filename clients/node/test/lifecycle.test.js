// Managing the gateway's process: start, restart after an unexpected exit, stop, and the lazy
// start of a client; no process is ever left behind.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';

import { createGatewayClient, GatewayProcess, startGateway } from '../src/index.js';
import { groupMembers } from '../src/lifecycle.js';
import { aigatewayBin, chatRequest, FAKE_GATEWAY, gatewayOptions, startTestGateway, waitFor, within } from './helpers.js';

const LINUX = process.platform === 'linux';

function assertGroupGone(pgid, what) {
  if (!LINUX) return;
  assert.deepEqual(groupMembers(pgid), [], `${what}: processes left in group ${pgid}`);
}

test('starts the gateway, restarts it after SIGKILL without orphans, and stops it', async () => {
  // Demo mode (no provider key): the gateway starts its own mock provider; 2 workers.
  const gateway = await startTestGateway(null, { workers: 2, restart: { backoffMs: 100 } });
  try {
    assert.equal(gateway.state, 'running');
    const client = createGatewayClient({ baseUrl: gateway.url });
    const health = await client.health();
    assert.equal(health.status, 'ok');
    assert.equal(health.workers, 2);
    assert.ok(Object.values(health.providers).every((p) => p.mock === true));

    const firstPid = gateway.pid;
    if (LINUX) {
      // The main process, 2 workers and the demo mock provider share one process group.
      await waitFor(() => groupMembers(firstPid).length >= 4, { what: 'the workers and the mock' });
    }
    const exited = once(gateway, 'exit');
    const restarted = once(gateway, 'restart');
    process.kill(firstPid, 'SIGKILL');
    const [exit] = await within(5000, exited, 'the exit event');
    assert.equal(exit.signal, 'SIGKILL');
    assert.equal(exit.pid, firstPid);
    const [info] = await within(30_000, restarted, 'the restart');
    assert.equal(info.restarts, 1);
    assert.equal(gateway.restarts, 1);
    assert.equal(gateway.state, 'running');
    assert.notEqual(gateway.pid, firstPid);
    // The killed main's workers and mock did not outlive it.
    assertGroupGone(firstPid, 'after the restart');

    const reply = await client.chat(chatRequest('after the restart'));
    assert.equal(reply.via, 'gateway');
    assert.equal(reply.content, 'Mock reply to: after the restart');
    await client.close();

    const secondPid = gateway.pid;
    const result = await gateway.stop();
    assert.deepEqual(result, { code: 0, signal: null }, 'SIGTERM drains and exits 0');
    assert.equal(gateway.state, 'stopped');
    assert.equal(gateway.pid, null);
    assertGroupGone(secondPid, 'after stop');
    await assert.rejects(fetch(`${gateway.url}/health`));
  } finally {
    await gateway.stop();
  }
});

test('a gateway that cannot start fails with its own message', async () => {
  const started = Date.now();
  await assert.rejects(
    startTestGateway(null, { env: { OPENAI_RPS: 'abc' } }),
    (error) => {
      assert.match(error.message, /exited \(code 2\) before it was ready/);
      assert.match(error.message, /invalid OPENAI_RPS/);
      return true;
    },
  );
  await assert.rejects(startGateway({ command: '/nonexistent/aigateway' }), /could not run \/nonexistent\/aigateway/);
  assert.ok(Date.now() - started < 15_000);
});

test('restarts with backoff, then gives up after maxRestarts', async () => {
  const gateway = new GatewayProcess({
    command: process.execPath,
    args: [FAKE_GATEWAY],
    env: { FAKE_EXIT_AFTER_MS: '500' },
    restart: { maxRestarts: 2, backoffMs: 50 },
  });
  const events = [];
  for (const name of ['exit', 'restart', 'failed']) gateway.on(name, () => events.push(name));
  try {
    await gateway.start();
    const [error] = await within(10_000, once(gateway, 'failed'), 'giving up');
    assert.match(error.message, /giving up after 2 restarts/);
    assert.equal(gateway.state, 'failed');
    assert.equal(gateway.restarts, 2);
    assert.deepEqual(events, ['exit', 'restart', 'exit', 'restart', 'exit', 'failed']);
    assert.deepEqual(await gateway.stop(), { code: 7, signal: null });
  } finally {
    await gateway.stop();
  }
});

test('stop() kills the process group when the drain does not end in time', async () => {
  const gateway = await startGateway({
    command: process.execPath,
    args: [FAKE_GATEWAY],
    env: { FAKE_IGNORE_SIGTERM: '1' },
  });
  const pid = gateway.pid;
  const started = Date.now();
  const result = await gateway.stop({ timeoutMs: 300 });
  assert.deepEqual(result, { code: null, signal: 'SIGKILL' });
  assert.ok(Date.now() - started < 3000);
  assertGroupGone(pid, 'after the forced stop');
});

test('a client with gateway options starts it lazily on the first call and stops it on close', async () => {
  const client = createGatewayClient({ gateway: gatewayOptions(null) });
  assert.equal(client.gateway, null, 'nothing runs before the first call');
  assert.equal(client.status, 'unknown');
  // Concurrent first calls share one start.
  const replies = await Promise.all([1, 2, 3].map((n) => client.chat(chatRequest(`lazy ${n}`))));
  assert.deepEqual(replies.map((r) => r.via), ['gateway', 'gateway', 'gateway']);
  assert.equal(replies[2].content, 'Mock reply to: lazy 3');
  const gateway = client.gateway;
  assert.ok(gateway instanceof GatewayProcess);
  assert.equal(gateway.state, 'running');
  assert.equal(client.baseUrl, gateway.url);
  assert.equal(client.status, 'up');
  const pid = gateway.pid;
  await client.close();
  assert.equal(gateway.state, 'stopped');
  assertGroupGone(pid, 'after close');
});

test('a lazy start that fails goes to the fallback', async () => {
  const client = createGatewayClient({
    gateway: { command: `${aigatewayBin()}-missing` },
    fallback: { chat: (request, ctx) => ({ id: 'x', provider: 'direct', model: request.model, content: ctx.reason, finish_reason: 'stop', usage: null, cached: false }) },
  });
  try {
    const reply = await client.chat(chatRequest());
    assert.equal(reply.via, 'fallback');
    assert.equal(reply.content, 'start_failed');
    assert.equal(client.metrics().fallbacks.start_failed, 1);
  } finally {
    await client.close();
  }
});
