// The client's HTTP behaviour against a small scripted server on loopback: connection reuse,
// the headers it sends, request ids, retries, broken and silent streams, aborts, SSE framing,
// and the documented /v1/batch answer.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, beforeEach, test } from 'node:test';

import { createGatewayClient, GatewayError, GatewayStreamError } from '../src/index.js';
import { readSSE } from '../src/sse.js';
import { chatRequest } from './helpers.js';

let server;
let baseUrl;
let connections = 0;
let seen = [];
let handler = null;

const ANSWER = {
  id: 'chatcmpl-1', provider: 'openai', model: 'gpt-4o-mini', content: 'scripted',
  finish_reason: 'stop', usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
  cached: false, latency_ms: 1,
};

before(async () => {
  server = http.createServer(async (request, response) => {
    let body = '';
    for await (const chunk of request) body += chunk;
    const parsed = body ? JSON.parse(body) : undefined;
    seen.push({ method: request.method, url: request.url, headers: request.headers, body: parsed });
    if (request.url === '/health') return json(response, 200, { status: 'ok' });
    if (handler) return handler(request, response, parsed);
    return json(response, 200, ANSWER);
  });
  server.on('connection', () => { connections += 1; });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${server.address().port}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

beforeEach(() => {
  handler = null;
  seen = [];
});

function json(response, status, body, headers = {}) {
  response.writeHead(status, { 'content-type': 'application/json', ...headers });
  response.end(JSON.stringify(body));
}

function sse(response) {
  response.writeHead(200, { 'content-type': 'text/event-stream' });
}

test('consecutive calls reuse pooled keep-alive connections', async () => {
  const client = createGatewayClient({ baseUrl });
  try {
    const before = connections;
    await client.health();
    for (let i = 0; i < 10; i += 1) assert.equal((await client.chat(chatRequest(`n${i}`))).content, 'scripted');
    await client.models();
    // undici may open a second connection while the first is being returned to its pool, but
    // 12 calls never open 12.
    assert.ok(connections - before <= 2, `${connections - before} connections for 12 calls`);
  } finally {
    await client.close();
  }
});

test('sends the key, the request id, priority, cache controls and the remaining deadline', async () => {
  const client = createGatewayClient({ baseUrl: `${baseUrl}/v1/`, apiKey: 'key-123', headers: { 'x-team': 'search' }, timeoutMs: 20_000 });
  try {
    const reply = await client.chat(chatRequest('hi'), {
      requestId: 'req-42', priority: 'high', cache: { noCache: true, noStore: true, ttlSeconds: 90 },
    });
    assert.equal(reply.requestId, 'req-42');
    const sent = seen.find((r) => r.url === '/v1/chat');
    assert.equal(sent.method, 'POST');
    assert.equal(sent.headers.authorization, 'Bearer key-123');
    assert.equal(sent.headers['x-request-id'], 'req-42');
    assert.equal(sent.headers['x-aigateway-priority'], 'high');
    assert.equal(sent.headers['cache-control'], 'no-cache, no-store');
    assert.equal(sent.headers['x-aigateway-cache-ttl'], '90');
    assert.equal(sent.headers['x-team'], 'search');
    assert.equal(sent.headers['content-type'], 'application/json');
    const remaining = Number(sent.headers['x-aigateway-timeout-ms']);
    assert.ok(remaining > 15_000 && remaining <= 20_000, String(remaining));
    assert.deepEqual(sent.body, { ...chatRequest('hi'), stream: false, priority: 'high' });
    // Without a caller's id, every call gets a fresh one.
    await client.chat(chatRequest());
    await client.chat(chatRequest());
    const ids = seen.filter((r) => r.url === '/v1/chat').map((r) => r.headers['x-request-id']);
    assert.equal(new Set(ids).size, 3);
    const embedding = seen.length;
    handler = (request, response) => json(response, 200, { object: 'list', data: [], model: 'm' });
    await client.embed(['a'], 'text-embedding-3-small');
    assert.deepEqual(seen[embedding].body, { model: 'text-embedding-3-small', input: ['a'] });
    assert.equal(seen[embedding].url, '/v1/embeddings');
  } finally {
    await client.close();
  }
});

test('a GatewayError carries the x-request-id the gateway answered with', async () => {
  handler = (request, response) => json(response, 422,
    { error: { message: 'nope', type: 'invalid_request_error', param: 'model', code: 'model_not_found' } },
    { 'x-request-id': 'gw-assigned-7' });
  const client = createGatewayClient({ baseUrl });
  try {
    const error = await client.chat(chatRequest(), { requestId: 'mine' }).then(() => null, (e) => e);
    assert.ok(error instanceof GatewayError);
    assert.equal(error.status, 422);
    assert.equal(error.requestId, 'gw-assigned-7');
    assert.equal(error.code, 'model_not_found');
    assert.equal(error.param, 'model');
    assert.equal(error.message, 'nope');
  } finally {
    await client.close();
  }
});

test('a 401 never goes to the fallback', async () => {
  handler = (request, response) => json(response, 401,
    { error: { message: 'missing key', type: 'authentication_error', param: null, code: 'invalid_api_key' } });
  let called = 0;
  const client = createGatewayClient({ baseUrl, fallback: () => { called += 1; return ANSWER; } });
  try {
    await assert.rejects(client.chat(chatRequest()), { status: 401, type: 'authentication_error' });
    await assert.rejects(client.chatStream(chatRequest()).text(), { status: 401 });
    assert.equal(called, 0);
    assert.equal(client.status, 'up');
  } finally {
    await client.close();
  }
});

test('without a fallback a 503 is retried after the Retry-After it names', async () => {
  let calls = 0;
  handler = (request, response) => {
    calls += 1;
    if (calls === 1) return json(response, 503, { error: { message: 'busy', type: 'provider_unavailable' } }, { 'retry-after-ms': '150' });
    return json(response, 200, ANSWER);
  };
  const client = createGatewayClient({ baseUrl });
  try {
    const started = Date.now();
    const reply = await client.chat(chatRequest());
    assert.equal(reply.via, 'gateway');
    assert.equal(calls, 2);
    assert.ok(Date.now() - started >= 140);
    const { gateway } = client.metrics();
    assert.equal(gateway.errorsByKind['503'], 1);
    assert.equal(gateway.successes, 1);
    assert.equal(gateway.requests, 2);
  } finally {
    await client.close();
  }
});

test('a stream cut before [DONE] and a silent stream end with GatewayStreamError', async () => {
  const event = JSON.stringify({ id: 'c', provider: 'openai', model: 'm', content: 'partial' });
  handler = (request, response) => {
    sse(response);
    response.write(`data: ${event}\n\n`);
    setTimeout(() => response.socket.destroy(), 50);
  };
  const client = createGatewayClient({ baseUrl, timeoutMs: 400 });
  try {
    const got = [];
    await assert.rejects(async () => {
      for await (const e of client.chatStream(chatRequest())) got.push(e);
    }, (error) => error instanceof GatewayStreamError && /stream_(broken|incomplete)/.test(error.code));
    assert.deepEqual(got.map((e) => e.content), ['partial']);

    handler = (request, response) => {
      sse(response);
      response.write(`data: ${event}\n\n`); // then silence
    };
    const started = Date.now();
    await assert.rejects(client.chatStream(chatRequest()).text(), { name: 'GatewayStreamError', code: 'stream_timeout' });
    assert.ok(Date.now() - started < 2000);
    assert.equal(client.metrics().gateway.errors, 2);
  } finally {
    await client.close();
  }
});

test('a caller abort rejects with its reason, and close() ends calls in flight', async () => {
  handler = () => {}; // never answers
  const client = createGatewayClient({ baseUrl, fallback: () => ANSWER });
  const controller = new AbortController();
  const pending = client.chat(chatRequest(), { signal: controller.signal });
  setTimeout(() => controller.abort(new Error('caller gave up')), 50);
  await assert.rejects(pending, /caller gave up/);
  assert.equal(client.metrics().fallback.requests, 0, 'an abort is not a reason to fall back');

  const inFlight = client.chat(chatRequest());
  setTimeout(() => client.close(), 50);
  await assert.rejects(inFlight, { code: 'client_closed' });
  await assert.rejects(client.chat(chatRequest()), { code: 'client_closed' });
});

test('the SSE reader handles CRLF, split chunks, multi-line data and comments', async () => {
  const text = ': comment\r\ndata: {"a":\r\ndata: 1}\r\n\r\nevent: x\ndata: two\n\ndata:three\r\rdata: [DONE]\n\n';
  const encoder = new TextEncoder();
  for (const size of [1, 2, 3, 7, text.length]) {
    const body = new ReadableStream({
      start(controller) {
        for (let i = 0; i < text.length; i += size) controller.enqueue(encoder.encode(text.slice(i, i + size)));
        controller.close();
      },
    });
    const events = [];
    for await (const data of readSSE(body)) events.push(data);
    assert.deepEqual(events, ['{"a":\n1}', 'two', 'three', '[DONE]'], `chunks of ${size}`);
  }
});

test('batch() reads the documented /v1/batch answer: results in order, errors by index', async () => {
  handler = (request, response, body) => json(response, 200, {
    results: body.requests.map((item, index) => (Array.isArray(item.messages)
      ? { ...ANSWER, content: `answer ${index}` }
      : { error: { message: `requests[${index}].messages: expected a list`, type: 'invalid_request_error', param: `requests[${index}].messages`, code: 'invalid_type' } })),
  });
  const client = createGatewayClient({ baseUrl });
  try {
    const requests = [chatRequest('a'), { model: 'gpt-4o-mini', messages: 'bad' }, chatRequest('c')];
    const batch = await client.batch(requests, { priority: 'low' });
    assert.equal(batch.via, 'gateway');
    const sent = seen.find((r) => r.url === '/v1/batch');
    assert.equal(sent.body.requests.length, 3);
    assert.equal(sent.headers['x-aigateway-priority'], 'low');
    assert.deepEqual(sent.body.requests, requests, 'items are sent as given');
    assert.deepEqual(batch.results.map((r) => [r.index, r.ok]), [[0, true], [1, false], [2, true]]);
    assert.equal(batch.results[2].response.content, 'answer 2');
    assert.ok(batch.results[1].error instanceof GatewayError);
    assert.equal(batch.results[1].error.param, 'requests[1].messages');
  } finally {
    await client.close();
  }
});
