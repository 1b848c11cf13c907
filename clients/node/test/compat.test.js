// Compatibility: clients nobody here wrote, unmodified, against the real gateway in front of the
// bundled mock provider (which plays OpenAI, Anthropic and Gemini). The Responses API reaches an
// OpenAI target as is and every other provider translated through chat; the Vercel AI SDK's
// default model (`createOpenAI(...)('gpt-4o-mini')`) speaks the Responses API.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { createOpenAI } from '@ai-sdk/openai';
import { generateObject, generateText, stepCountIs, streamText, tool } from 'ai';
import OpenAI from 'openai';
import { z } from 'zod';

import { startMock, startTestGateway } from './helpers.js';

let mock;
let gateway;
let openai;

before(async () => {
  mock = await startMock();
  gateway = await startTestGateway(mock);
  openai = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});

after(async () => {
  await gateway?.stop();
  await mock?.stop();
});

const MODELS = [
  ['gpt-4o-mini', 'openai'],
  ['claude-sonnet-4', 'anthropic'],
  ['gemini-2.5-flash', 'google'],
];

describe('the openai package: client.responses.create', () => {
  for (const [model, provider] of MODELS) {
    test(`answers a plain request on ${model} (${provider})`, async () => {
      const { data: response, response: http } = await openai.responses
        .create({ model, instructions: 'Be brief.', input: `Hello ${provider}` })
        .withResponse();
      assert.equal(http.headers.get('x-aigateway-provider'), provider);
      assert.equal(response.object, 'response');
      assert.equal(response.status, 'completed');
      assert.match(response.id, /^resp_/);
      assert.equal(response.output_text, `Mock reply to: Hello ${provider}`);
      assert.ok(response.usage.input_tokens > 0 && response.usage.output_tokens > 0);
      assert.equal(response.usage.total_tokens, response.usage.input_tokens + response.usage.output_tokens);
    });

    test(`streams the Responses events on ${model} (${provider})`, async () => {
      const stream = await openai.responses.create({ model, input: `Stream from ${provider}`, stream: true });
      const types = [];
      let text = '';
      let completed = null;
      for await (const event of stream) {
        types.push(event.type);
        if (event.type === 'response.output_text.delta') text += event.delta;
        if (event.type === 'response.completed') completed = event.response;
      }
      assert.equal(types[0], 'response.created');
      assert.ok(types.includes('response.output_item.added'), types.join(' '));
      assert.ok(types.includes('response.output_text.done'), types.join(' '));
      assert.equal(types.at(-1), 'response.completed');
      assert.equal(text, `Mock reply to: Stream from ${provider}`);
      assert.equal(completed.status, 'completed');
      assert.equal(completed.output_text ?? completed.output[0].content[0].text, text);
      assert.ok(completed.usage.output_tokens > 0);
    });
  }
});

describe('the Vercel AI SDK with its default (Responses API) model', () => {
  const model = () => createOpenAI({ baseURL: `${gateway.url}/v1`, apiKey: 'unused' })('gpt-4o-mini');
  const weather = tool({
    description: 'The weather in a city',
    inputSchema: z.object({ location: z.string() }),
  });

  test('generateText returns the text and the usage', async () => {
    const result = await generateText({ model: model(), prompt: 'Hello from Vercel', maxRetries: 0 });
    assert.equal(result.text, 'Mock reply to: Hello from Vercel');
    assert.equal(result.finishReason, 'stop');
    assert.ok(result.usage.inputTokens > 0 && result.usage.outputTokens > 0);
  });

  test('streamText with a tool streams the tool call', async () => {
    const result = streamText({
      model: model(),
      prompt: 'What is the weather in Paris?',
      tools: { weather },
      maxRetries: 0,
    });
    const parts = [];
    for await (const part of result.fullStream) {
      if (part.type === 'error') throw part.error;
      parts.push(part);
    }
    const calls = parts.filter((part) => part.type === 'tool-call');
    assert.equal(calls.length, 1, parts.map((part) => part.type).join(' '));
    assert.equal(calls[0].toolName, 'weather');
    assert.deepEqual(calls[0].input, { location: 'Paris' });
    assert.equal(await result.finishReason, 'tool-calls');
  });

  test('a tool loop and a later turn go on from the items the gateway stored', async () => {
    // The SDK stores responses by default and sends earlier output back as `item_reference`s.
    const withResult = tool({ ...weather, execute: async ({ location }) => ({ location, forecast: 'sunny' }) });
    const first = await generateText({
      model: model(),
      prompt: 'What is the weather in Paris?',
      tools: { weather: withResult },
      stopWhen: stepCountIs(3),
      maxRetries: 0,
    });
    assert.deepEqual(first.steps.map((step) => step.finishReason), ['tool-calls', 'stop']);
    assert.deepEqual(first.steps[0].toolResults[0].output, { location: 'Paris', forecast: 'sunny' });
    assert.equal(first.text, 'Mock reply to: What is the weather in Paris?');

    const messages = [{ role: 'user', content: 'What is the weather in Paris?' }, ...first.response.messages];
    const second = await generateText({
      model: model(),
      messages: [...messages, { role: 'user', content: 'Thank you' }],
      tools: { weather: withResult },
      maxRetries: 0,
    });
    assert.equal(second.text, 'Mock reply to: Thank you');
  });

  test('generateObject returns an object valid for the zod schema', async () => {
    const schema = z.object({
      city: z.string(),
      temperature: z.number(),
      sunny: z.boolean(),
      tags: z.array(z.string()),
    });
    const { object } = await generateObject({ model: model(), schema, prompt: 'Describe Paris', maxRetries: 0 });
    assert.deepEqual(schema.parse(object), object);
  });
});
