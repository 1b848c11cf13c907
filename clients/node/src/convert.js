// Conversions between the gateway's native chat shape and OpenAI's chat completions, for
// fallbacks that call a provider's SDK directly (for example the official `openai` package).

const PASSED_ON = ['temperature', 'max_tokens', 'top_p', 'stop', 'tools', 'tool_choice'];

/** A native chat request as OpenAI chat completion parameters (without `stream`). */
export function toOpenAIChatRequest(request) {
  const body = { model: request.model, messages: attach(request.messages, request.attachments) };
  for (const key of PASSED_ON) if (request[key] !== undefined && request[key] !== null) body[key] = request[key];
  return body;
}

/** An OpenAI chat completion as a native answer. */
export function fromOpenAIChatCompletion(completion, { provider = 'openai', latencyMs } = {}) {
  const choice = completion?.choices?.[0] ?? {};
  const message = choice.message ?? {};
  const answer = {
    id: completion?.id ?? null,
    provider,
    model: completion?.model ?? null,
    content: message.content ?? null,
    finish_reason: choice.finish_reason ?? null,
    usage: completion?.usage ?? null,
    cached: false,
  };
  if (latencyMs !== undefined) answer.latency_ms = latencyMs;
  if (message.tool_calls?.length) answer.tool_calls = message.tool_calls;
  return answer;
}

/** OpenAI chat completion chunks (any async iterable, e.g. an SDK stream) as native events. */
export async function* fromOpenAIChatStream(chunks, { provider = 'openai' } = {}) {
  for await (const chunk of chunks) {
    const event = { id: chunk?.id ?? null, provider, model: chunk?.model ?? null };
    for (const choice of chunk?.choices ?? []) {
      const delta = choice.delta ?? {};
      if (delta.content) event.content = (event.content ?? '') + delta.content;
      if (delta.tool_calls?.length) event.tool_calls = delta.tool_calls;
      if (choice.finish_reason) event.finish_reason = choice.finish_reason;
    }
    if (chunk?.usage) event.usage = chunk.usage;
    if (Object.keys(event).length > 3) yield event;
  }
}

/** Attachments become image parts of the last user message, as the gateway does it. */
function attach(messages, attachments) {
  if (!attachments?.length || !Array.isArray(messages)) return messages;
  const parts = attachments.map((item) => ({
    type: 'image_url',
    image_url: { url: item.url ?? `data:${item.mime_type};base64,${item.data}` },
  }));
  let last = -1;
  messages.forEach((message, index) => { if (message?.role === 'user') last = index; });
  if (last === -1) throw new TypeError('attachments need a user message to attach to');
  const copy = [...messages];
  const content = copy[last].content;
  const text = typeof content === 'string' ? [{ type: 'text', text: content }] : content ?? [];
  copy[last] = { ...copy[last], content: [...text, ...parts] };
  return copy;
}
