// Every client method against the real gateway in front of the bundled mock provider.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  createGatewayClient,
  GatewayError,
  GatewayStreamError,
  GatewayTimeoutError,
  GatewayUnavailableError,
} from '../src/index.js';
import { chatRequest, startMock, startTestGateway, waitFor, within } from './helpers.js';

let mock;
let gateway;
let client;

before(async () => {
  mock = await startMock();
  gateway = await startTestGateway(mock);
  client = createGatewayClient({ baseUrl: gateway.url, timeoutMs: 15_000 });
});

after(async () => {
  await client?.close();
  await gateway?.stop();
  await mock?.stop();
});

describe('calls through the gateway', () => {
  test('chat returns the native answer, says it came via the gateway, and carries the request id', async () => {
    const reply = await client.chat(chatRequest('Hello there', { max_tokens: 50 }), { requestId: 'req-chat-1' });
    assert.equal(reply.via, 'gateway');
    assert.equal(reply.provider, 'openai');
    assert.equal(reply.model, 'gpt-4o-mini');
    assert.equal(reply.content, 'Mock reply to: Hello there');
    assert.equal(reply.finish_reason, 'stop');
    assert.equal(reply.usage.total_tokens, reply.usage.prompt_tokens + reply.usage.completion_tokens);
    assert.equal(typeof reply.latency_ms, 'number');
    assert.equal(reply.requestId, 'req-chat-1');
    const sent = (await mock.stats()).last_requests.at(-1);
    assert.equal(sent.path, '/v1/chat/completions');
    assert.equal(sent.body.max_tokens, 50);
  });

  test('chat with a priority sends it to the gateway', async () => {
    const reply = await client.chat(chatRequest('urgent'), { priority: 'critical' });
    assert.equal(reply.content, 'Mock reply to: urgent');
  });

  test('chatStream yields the native events in order, then ends', async () => {
    const stream = client.chatStream(chatRequest('Stream this please'));
    const events = [];
    for await (const event of stream) events.push(event);
    assert.equal(stream.via, 'gateway');
    assert.equal(stream.provider, 'openai');
    assert.ok(stream.requestId);
    const text = events.filter((e) => e.content).map((e) => e.content).join('');
    assert.equal(text, 'Mock reply to: Stream this please');
    assert.ok(events.filter((e) => e.content).length > 1, 'the text arrives in several events');
    const finish = events.findIndex((e) => e.finish_reason);
    const usage = events.findIndex((e) => e.usage);
    assert.equal(events[finish].finish_reason, 'stop');
    assert.ok(finish > 0 && usage > finish, 'finish_reason, then usage, after the text');
    for (const event of events) assert.equal(event.provider, 'openai');
  });

  test('chatStream.text() collects the answer; breaking out early frees the call', async () => {
    assert.equal(await client.chatStream(chatRequest('abc def ghi')).text(), 'Mock reply to: abc def ghi');
    for await (const event of client.chatStream(chatRequest('one two three four five'))) {
      assert.ok(event);
      break;
    }
    const reply = await within(5000, client.chat(chatRequest('after the break')), 'a call after an early break');
    assert.equal(reply.via, 'gateway');
  });

  test('a stream that fails after it started throws a GatewayStreamError', async () => {
    await mock.faults([{ stream_error_after_chunks: 3, stream_chunk_delay_ms: 30 }]);
    const seen = [];
    await assert.rejects(async () => {
      for await (const event of client.chatStream(chatRequest('this stream breaks off'))) seen.push(event);
    }, (error) => {
      assert.ok(error instanceof GatewayStreamError, `got ${error}`);
      assert.equal(error.status, 200);
      assert.ok(error.message);
      return true;
    });
    assert.ok(seen.length >= 1, 'events before the error were delivered');
    await mock.reset();
  });

  test('embed returns one vector per input', async () => {
    const result = await client.embed(['first text', 'second text', 'third'], 'text-embedding-3-small');
    assert.equal(result.via, 'gateway');
    assert.equal(result.object, 'list');
    assert.deepEqual(result.data.map((d) => d.index), [0, 1, 2]);
    for (const item of result.data) {
      assert.ok(Array.isArray(item.embedding) && item.embedding.length > 0);
    }
    const single = await client.embed('just one', 'text-embedding-3-small');
    assert.equal(single.data.length, 1);
  });

  test('models lists the models of every provider', async () => {
    const result = await client.models();
    assert.equal(result.via, 'gateway');
    assert.equal(result.object, 'list');
    const ids = result.data.map((m) => m.id);
    assert.ok(ids.includes('gpt-4o-mini'), ids.join(', '));
    assert.ok(result.data.every((m) => typeof m.provider === 'string'));
    assert.ok(new Set(result.data.map((m) => m.provider)).size >= 2, 'several providers are listed');
  });

  test('health answers and the client knows the gateway is up', async () => {
    const health = await client.health();
    assert.equal(health.status, 'ok');
    assert.equal(typeof health.pid, 'number');
    assert.ok(health.providers.openai);
    assert.equal(client.status, 'up');
    const { health: checks } = client.metrics();
    assert.ok(checks.checks >= 1 && checks.lastOk === true && checks.lastLatencyMs >= 0);
  });

  test('the health monitor checks on its interval', async () => {
    const watcher = createGatewayClient({ baseUrl: gateway.url, healthIntervalMs: 100 });
    try {
      await waitFor(() => watcher.metrics().health.checks >= 4, { timeoutMs: 5000, what: '4 health checks' });
      assert.equal(watcher.status, 'up');
      assert.equal(watcher.metrics().health.failures, 0);
    } finally {
      await watcher.close();
    }
  });
});

describe('errors', () => {
  test('a 400 is a typed GatewayError and never goes to the fallback', async () => {
    let fallbackCalls = 0;
    const guarded = createGatewayClient({
      baseUrl: gateway.url,
      fallback: () => { fallbackCalls += 1; return { content: 'from the fallback' }; },
    });
    try {
      const bad = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], temperature: 3 };
      const error = await guarded.chat(bad, { requestId: 'req-bad-1' }).then(() => null, (e) => e);
      assert.ok(error instanceof GatewayError, `got ${error}`);
      assert.ok(!(error instanceof GatewayUnavailableError));
      assert.equal(error.status, 400);
      assert.equal(error.type, 'invalid_request_error');
      assert.equal(error.param, 'temperature');
      assert.equal(error.requestId, 'req-bad-1');
      assert.match(error.message, /temperature/);
      const unknownField = await guarded.chat({ ...chatRequest(), colour: 'blue' }).then(() => null, (e) => e);
      assert.equal(unknownField.status, 400);
      assert.equal(unknownField.param, 'colour');
      await assert.rejects(guarded.chatStream({ model: 'gpt-4o-mini', messages: [] }).text(), { status: 400 });
      assert.equal(fallbackCalls, 0);
      const metrics = guarded.metrics();
      assert.equal(metrics.fallback.requests, 0);
      assert.equal(metrics.gateway.errorsByKind['400'], 3);
      assert.equal(guarded.status, 'up');
    } finally {
      await guarded.close();
    }
  });

  test('a 503 from the gateway goes to the fallback; without one it is a GatewayUnavailableError', async () => {
    await mock.faults([], { status: 503 });
    const withFallback = createGatewayClient({
      baseUrl: gateway.url,
      fallback: { chat: (request, ctx) => ({ id: 'fb', provider: 'direct', model: request.model, content: `fallback (${ctx.reason})`, finish_reason: 'stop', usage: null, cached: false }) },
    });
    const without = createGatewayClient({ baseUrl: gateway.url, retries: 0 });
    try {
      const reply = await withFallback.chat(chatRequest('overloaded'));
      assert.equal(reply.via, 'fallback');
      assert.equal(reply.content, 'fallback (unavailable)');
      const metrics = withFallback.metrics();
      assert.equal(metrics.fallbacks.unavailable, 1);
      assert.equal(metrics.gateway.errorsByKind['503'], 1);
      assert.equal(metrics.fallback.successes, 1);
      assert.equal(withFallback.status, 'up', 'a 503 does not mark the gateway down');

      const error = await without.chat(chatRequest('overloaded')).then(() => null, (e) => e);
      assert.ok(error instanceof GatewayUnavailableError, `got ${error}`);
      assert.equal(error.status, 503);
      assert.equal(error.type, 'provider_unavailable');
    } finally {
      await mock.reset();
      await withFallback.close();
      await without.close();
    }
  });

  test('timeoutMs bounds a call: GatewayTimeoutError, or the fallback when there is one', async () => {
    const quick = createGatewayClient({ baseUrl: gateway.url, timeoutMs: 300 });
    const quickWithFallback = createGatewayClient({
      baseUrl: gateway.url,
      timeoutMs: 300,
      fallback: { chat: () => ({ id: 'fb', provider: 'direct', model: 'm', content: 'fast path', finish_reason: 'stop', usage: null, cached: false }) },
    });
    try {
      await mock.faults([{ latency_ms: 2000 }, { latency_ms: 2000 }]);
      const started = Date.now();
      const error = await quick.chat(chatRequest('slow')).then(() => null, (e) => e);
      // The client's timer, or the gateway honouring the x-aigateway-timeout-ms it was sent
      // (a 504), whichever notices first: the same typed error.
      assert.ok(error instanceof GatewayTimeoutError, `got ${error}`);
      assert.ok(error.status === 0 || error.status === 504, `status ${error.status}`);
      assert.equal(error.type, 'timeout_error');
      assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
      const reply = await quickWithFallback.chat(chatRequest('slow'));
      assert.equal(reply.via, 'fallback');
      assert.equal(quickWithFallback.metrics().fallbacks.timeout, 1);
      // A slow answer is not a dead gateway.
      await quick.health();
      assert.equal(quick.status, 'up');
    } finally {
      await mock.reset();
      await quick.close();
      await quickWithFallback.close();
    }
  });
});

test('metrics count latency and errors of the gateway path', () => {
  const metrics = client.metrics();
  assert.equal(metrics.status, 'up');
  assert.ok(metrics.gateway.successes >= 6, JSON.stringify(metrics.gateway));
  assert.equal(metrics.gateway.requests, metrics.gateway.successes + metrics.gateway.errors);
  const latency = metrics.gateway.latencyMs;
  assert.equal(latency.count, metrics.gateway.successes);
  assert.ok(latency.p50 > 0 && latency.p50 <= latency.p95 && latency.p95 <= latency.p99 && latency.p99 <= latency.max);
  assert.equal(metrics.fallback.requests, 0);
});

test('batch answers every item in order, one malformed item reported by index', async () => {
    const requests = Array.from({ length: 10 }, (_, i) => chatRequest(`item ${i}`));
    requests[4] = { model: 'gpt-4o-mini', messages: 'not a list' };
    const batch = await client.batch(requests);
    assert.equal(batch.via, 'gateway');
    assert.equal(batch.results.length, 10);
    batch.results.forEach((item, index) => {
      assert.equal(item.index, index);
      if (index === 4) {
        assert.equal(item.ok, false);
        assert.ok(item.error instanceof GatewayError);
        assert.equal(item.error.type, 'invalid_request_error');
      } else {
        assert.equal(item.ok, true);
        assert.equal(item.response.content, `Mock reply to: item ${index}`);
      }
    });
  });

test('stats returns the node totals as JSON', async () => {
    await client.chat(chatRequest('counted'));
    const stats = await client.stats();
    assert.equal(typeof stats, 'object');
    assert.ok(stats.version);
    assert.ok(typeof stats.workers === 'number');
  });
