// Compatibility: the official `openai` npm package, pointed at the gateway's /v1.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import OpenAI from 'openai';

import { startTestGateway } from './helpers.js';

let gateway;
let openai;

before(async () => {
  gateway = await startTestGateway(null); // demo mode: the gateway runs its own mock provider
  openai = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});

after(async () => {
  await gateway?.stop();
});

test('chat completions through the official openai package', async () => {
  const completion = await openai.chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'Hello from the SDK' }],
  });
  assert.equal(completion.object, 'chat.completion');
  assert.equal(completion.choices[0].message.role, 'assistant');
  assert.equal(completion.choices[0].message.content, 'Mock reply to: Hello from the SDK');
  assert.equal(completion.choices[0].finish_reason, 'stop');
  assert.ok(completion.usage.total_tokens > 0);

  const { response } = await openai.chat.completions
    .create({ model: 'claude-sonnet-4', messages: [{ role: 'user', content: 'and Claude' }] })
    .withResponse();
  assert.equal(response.headers.get('x-aigateway-provider'), 'anthropic');
});

test('streaming chat completions through the official openai package', async () => {
  const stream = await openai.chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'Stream from the SDK' }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let chunks = 0;
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    chunks += 1;
    assert.equal(chunk.object, 'chat.completion.chunk');
    for (const choice of chunk.choices) {
      text += choice.delta.content ?? '';
      finish = choice.finish_reason ?? finish;
    }
    usage = chunk.usage ?? usage;
  }
  assert.equal(text, 'Mock reply to: Stream from the SDK');
  assert.ok(chunks > 2, `${chunks} chunks`);
  assert.equal(finish, 'stop');
  assert.ok(usage?.total_tokens > 0);
});

test('errors reach the SDK as its own typed errors', async () => {
  await assert.rejects(
    openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [], temperature: 3 }),
    (error) => {
      assert.ok(error instanceof OpenAI.BadRequestError, `got ${error}`);
      assert.equal(error.status, 400);
      assert.equal(error.type, 'invalid_request_error');
      return true;
    },
  );
});
