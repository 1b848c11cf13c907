// Surviving the gateway going away: the fallback (the official openai package calling the
// provider directly), recovery when the gateway comes back, and typed errors without one.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import OpenAI from 'openai';

import {
  createGatewayClient,
  fromOpenAIChatCompletion,
  fromOpenAIChatStream,
  GatewayUnavailableError,
  toOpenAIChatRequest,
} from '../src/index.js';
import { freePort } from '../src/lifecycle.js';
import { chatRequest, startMock, startTestGateway, TEST_KEY, waitFor, within } from './helpers.js';

let mock;
const gateways = [];

before(async () => {
  mock = await startMock();
});

after(async () => {
  for (const gateway of gateways) await gateway.stop();
  await mock?.stop();
});

/** A fallback that calls the provider itself with its official SDK, as a backend would. */
function directToProvider() {
  const openai = new OpenAI({ baseURL: mock.baseUrl, apiKey: TEST_KEY, maxRetries: 0 });
  return {
    async chat(request, ctx) {
      const completion = await openai.chat.completions.create(toOpenAIChatRequest(request), { signal: ctx.signal });
      return fromOpenAIChatCompletion(completion);
    },
    async chatStream(request, ctx) {
      const chunks = await openai.chat.completions.create(
        { ...toOpenAIChatRequest(request), stream: true, stream_options: { include_usage: true } },
        { signal: ctx.signal },
      );
      return fromOpenAIChatStream(chunks);
    },
    async embed({ input, model }, ctx) {
      return openai.embeddings.create({ input, model }, { signal: ctx.signal });
    },
  };
}

async function lastProviderCaller() {
  const { last_requests: requests } = await mock.stats();
  return requests.at(-1)?.headers['user-agent'] ?? '';
}

test('falls back while the gateway is stopped and returns to it when it is back', async () => {
  const first = await startTestGateway(mock);
  gateways.push(first);
  const statusChanges = [];
  const client = createGatewayClient({
    baseUrl: first.url,
    fallback: directToProvider(),
    onStatusChange: (status) => statusChanges.push(status),
  });
  try {
    const before = await client.chat(chatRequest('before the outage'));
    assert.equal(before.via, 'gateway');
    assert.equal(before.content, 'Mock reply to: before the outage');
    assert.doesNotMatch(await lastProviderCaller(), /OpenAI\/JS/);

    // The gateway goes away mid-test.
    await first.stop();
    const checksBefore = client.metrics().health.checks;
    const failedAt = Date.now();
    const during = await within(3000, client.chat(chatRequest('during the outage')), 'the first call after the stop');
    assert.equal(during.via, 'fallback');
    assert.equal(during.content, 'Mock reply to: during the outage');
    assert.match(await lastProviderCaller(), /OpenAI\/JS/, 'the fallback called the provider itself');
    assert.equal(client.status, 'down');
    // A connection failure makes the client check the gateway's health at once (the next
    // periodic check is 30 s away and the recovery checks 1 s).
    await waitFor(() => client.metrics().health.checks > checksBefore, { timeoutMs: 900, what: 'an immediate health check' });
    assert.ok(client.metrics().health.lastCheckAt - failedAt < 900);

    // While it is known to be down, calls go straight to the fallback.
    const started = Date.now();
    const again = await client.chat(chatRequest('still down'));
    assert.equal(again.via, 'fallback');
    assert.ok(Date.now() - started < 1000);
    const stream = client.chatStream(chatRequest('stream while down'));
    assert.equal(await stream.text(), 'Mock reply to: stream while down');
    assert.equal(stream.via, 'fallback');
    const vectors = await client.embed(['a', 'b'], 'text-embedding-3-small');
    assert.equal(vectors.via, 'fallback');
    assert.equal(vectors.data.length, 2);

    let metrics = client.metrics();
    assert.equal(metrics.fallbacks.connection_error, 1);
    assert.equal(metrics.fallbacks.gateway_down, 3);
    assert.equal(metrics.fallback.successes, 4);
    assert.equal(metrics.fallback.errors, 0);
    assert.ok(metrics.fallback.latencyMs.p50 > 0);
    assert.ok(metrics.gateway.errorsByKind.connection >= 1);

    // The gateway comes back on the same address: the recovery checks notice.
    const second = await startTestGateway(mock, { port: first.port });
    gateways.push(second);
    await waitFor(() => client.status === 'up', { timeoutMs: 5000, what: 'the client to see the gateway again' });
    const afterwards = await client.chat(chatRequest('after the outage'));
    assert.equal(afterwards.via, 'gateway');
    const resumed = client.chatStream(chatRequest('streaming again'));
    assert.equal(await resumed.text(), 'Mock reply to: streaming again');
    assert.equal(resumed.via, 'gateway');
    assert.doesNotMatch(await lastProviderCaller(), /OpenAI\/JS/);

    metrics = client.metrics();
    assert.equal(metrics.gateway.successes, 3);
    assert.ok(metrics.gateway.latencyMs.max > 0);
    assert.deepEqual(statusChanges.filter((s, i) => s !== statusChanges[i - 1]).slice(-3), ['up', 'down', 'up']);
  } finally {
    await client.close();
  }
});

test('without a fallback a stopped gateway is a typed error at once, not a hang', async () => {
  const port = await freePort();
  const client = createGatewayClient({ baseUrl: `http://127.0.0.1:${port}`, timeoutMs: 30_000 });
  try {
    const started = Date.now();
    const error = await client.chat(chatRequest('anyone there?')).then(() => null, (e) => e);
    assert.ok(error instanceof GatewayUnavailableError, `got ${error}`);
    assert.equal(error.status, 0);
    assert.equal(error.code, 'gateway_unavailable');
    assert.ok(error.requestId);
    assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
    const streamStarted = Date.now();
    await assert.rejects(client.chatStream(chatRequest('stream?')).text(), GatewayUnavailableError);
    await assert.rejects(client.embed('x', 'text-embedding-3-small'), GatewayUnavailableError);
    await assert.rejects(client.models(), GatewayUnavailableError);
    await assert.rejects(client.health(), GatewayUnavailableError);
    assert.ok(Date.now() - streamStarted < 2000);
    assert.equal(client.status, 'down');
  } finally {
    await client.close();
  }
});

test('a fallback that fails too gives a FallbackError holding both causes', async () => {
  const port = await freePort();
  const client = createGatewayClient({
    baseUrl: `http://127.0.0.1:${port}`,
    fallback: async () => { throw new Error('provider down as well'); },
  });
  try {
    const error = await client.chat(chatRequest()).then(() => null, (e) => e);
    assert.equal(error?.name, 'FallbackError');
    assert.equal(error.cause.message, 'provider down as well');
    assert.ok(error.gatewayError instanceof GatewayUnavailableError);
    assert.equal(client.metrics().fallback.errors, 1);
  } finally {
    await client.close();
  }
});
