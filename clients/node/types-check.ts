// Compiled by `npm run typecheck` (never run): it uses the API the way a TypeScript backend
// would, so the hand-kept index.d.ts is checked for consistency and usability.
import OpenAI from 'openai';

import {
  createGatewayClient,
  fromOpenAIChatCompletion,
  fromOpenAIChatStream,
  startGateway,
  toOpenAIChatRequest,
  ChatStream,
  FallbackError,
  GatewayClient,
  GatewayError,
  GatewayProcess,
  GatewayStreamError,
  GatewayTimeoutError,
  GatewayUnavailableError,
  VERSION,
  type BatchResult,
  type ChatRequest,
  type ChatResponse,
  type ChatResult,
  type ChatStreamEvent,
  type ClientMetrics,
  type EmbeddingsResult,
  type FallbackCall,
  type FallbackHandlers,
  type HealthResponse,
  type ModelsResult,
  type CreatedTenantKey,
  type TenantKey,
  type TenantKeyList,
  type TenantKeySpec,
  type Via,
} from '@aigateway/client';

const openai = new OpenAI({ apiKey: 'sk-…', baseURL: 'https://api.openai.com/v1' });

const handlers: FallbackHandlers = {
  async chat(request, ctx) {
    const completion = await openai.chat.completions.create(toOpenAIChatRequest(request), { signal: ctx.signal });
    return fromOpenAIChatCompletion(completion);
  },
  async chatStream(request, ctx) {
    const stream = await openai.chat.completions.create(
      { ...toOpenAIChatRequest(request), stream: true, stream_options: { include_usage: true } },
      { signal: ctx.signal },
    );
    return fromOpenAIChatStream(stream);
  },
  async embed({ input, model }) {
    const answer = await openai.embeddings.create({ input: input as string | string[], model });
    return { object: 'list', data: answer.data.map((d) => ({ object: 'embedding', index: d.index, embedding: d.embedding })), model: answer.model };
  },
};

async function fallbackFunction(call: FallbackCall) {
  switch (call.operation) {
    case 'chat':
      return fromOpenAIChatCompletion(await openai.chat.completions.create(toOpenAIChatRequest(call.request)));
    case 'embed':
      // @ts-expect-error: `request` exists only on chat calls
      call.request;
      return undefined;
    default:
      return undefined;
  }
}

export async function main(): Promise<void> {
  const gateway: GatewayProcess = await startGateway({
    command: '/opt/aigateway/bin/aigateway',
    env: { OPENAI_API_KEY: 'sk-…', LOG_LEVEL: 'warning' },
    port: 0,
    workers: 2,
    readyTimeoutMs: 30_000,
    restart: { maxRestarts: 3, backoffMs: 250 },
  });
  gateway.on('restart', ({ pid, restarts }) => console.log(pid, restarts));
  gateway.on('log', (line, stream) => console.log(stream, line));
  const pid: number | null = gateway.pid;
  void pid;

  const client: GatewayClient = createGatewayClient({
    baseUrl: gateway.url,
    apiKey: 'key',
    timeoutMs: 30_000,
    retries: 2,
    fallback: handlers,
    healthIntervalMs: 30_000,
    onStatusChange: (status, previous) => console.log(previous, '->', status),
  });
  const functionClient = createGatewayClient({ fallback: fallbackFunction });
  const lazy = createGatewayClient({ gateway: { env: { LOG_LEVEL: 'warning' } } });
  const watching = createGatewayClient({ gateway, healthIntervalMs: 0 });
  void watching.gateway?.pid;

  const request: ChatRequest = {
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'Hello' }],
    priority: 'high',
    attachments: [{ url: 'https://example.com/cat.png' }],
  };
  // @ts-expect-error: messages are required
  const incomplete: ChatRequest = { model: 'gpt-4o-mini' };
  void incomplete;
  // @ts-expect-error: not a priority
  const badPriority: ChatRequest = { ...request, priority: 'urgent' };
  void badPriority;

  const reply: ChatResult = await client.chat(request, {
    priority: 'critical',
    cache: { noCache: true, ttlSeconds: 60 },
    requestId: 'req-1',
    timeoutMs: 5000,
    signal: AbortSignal.timeout(10_000),
  });
  const via: Via = reply.via;
  const text: string | null = reply.content;
  const answer: ChatResponse = reply;
  void via; void text; void answer;

  const stream: ChatStream = client.chatStream(request);
  for await (const event of stream) {
    const e: ChatStreamEvent = event;
    if (e.content) process.stdout.write(e.content);
    if (e.usage) console.log(e.usage.total_tokens);
  }
  console.log(stream.via, stream.requestId, stream.provider);
  const whole: string = await lazy.chatStream(request).text();
  void whole;

  const batch: BatchResult = await client.batch([request, request]);
  for (const item of batch.results) {
    if (item.ok) console.log(item.index, item.response.content);
    else console.log(item.index, item.error.status, item.error.code);
  }

  const vectors: EmbeddingsResult = await client.embed(['a', 'b'], 'text-embedding-3-small');
  console.log(vectors.data[0].embedding, vectors.via);
  const models: ModelsResult = await client.models();
  console.log(models.data.map((m) => m.provider));
  const health: HealthResponse = await client.health();
  console.log(health.status);
  const stats = await client.stats();
  console.log(stats.uptime_s);
  const cost: number | undefined = reply.cost;
  void cost;

  const spec: TenantKeySpec = {
    name: 'search-team', rpm: 600, tpm: 200_000, max_parallel: 8, budget_usd: 50, budget_period: 'month',
    models: ['gpt-4o-mini', 'fast'], priority: 'normal', max_priority: 'high',
    expires_at: '2027-01-31T00:00:00Z', metadata: { owner: 'search' },
  };
  const created: CreatedTenantKey = await client.createKey(spec);
  const secret: string = created.key;
  void secret;
  // @ts-expect-error: a key needs a name
  await client.createKey({ rpm: 5 });
  // @ts-expect-error: not a budget period
  await client.createKey({ name: 'x', budget_period: 'week' });
  const changed: TenantKey = await client.updateKey(created.id, { rpm: null, budget_usd: 100 });
  const list: TenantKeyList = await client.listKeys();
  const one: TenantKey = await client.getKey(list.data[0].id);
  console.log(changed.rpm, one.spend?.period_usd, one.usage?.requests);
  const revoked: TenantKey = await client.revokeKey(created.id);
  console.log(revoked.revoked_at);

  const metrics: ClientMetrics = client.metrics();
  console.log(metrics.gateway.latencyMs.p95, metrics.fallback.errors, metrics.fallbacks.gateway_down, client.status);

  try {
    await functionClient.chat(request);
  } catch (error) {
    if (error instanceof GatewayTimeoutError) console.log('timeout', error.requestId);
    else if (error instanceof GatewayUnavailableError) console.log('down', error.status);
    else if (error instanceof GatewayStreamError) console.log('stream', error.code);
    else if (error instanceof GatewayError) console.log(error.status, error.type, error.code, error.param, error.retryAfterMs);
    else if (error instanceof FallbackError) console.log(error.gatewayError.message, error.cause);
  }

  await Promise.all([client.close(), functionClient.close(), lazy.close()]);
  const exit = await gateway.stop({ timeoutMs: 10_000 });
  console.log(exit?.code, exit?.signal, VERSION);
}
