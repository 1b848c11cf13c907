// Types of the aigateway Node.js client. Hand-kept beside the JavaScript in src/; the type
// check (`npm run typecheck`, part of `npm test`) compiles types-check.ts against them.

import { EventEmitter } from 'node:events';

export declare const VERSION: string;

// -- requests and answers of the native API ----------------------------------------------------

export type Role = 'system' | 'developer' | 'user' | 'assistant' | 'tool';
export type Priority = 'critical' | 'high' | 'normal' | 'low';
/** Which path served a call. */
export type Via = 'gateway' | 'fallback';

export interface TextPart {
  type: 'text';
  text: string;
}
export interface ImagePart {
  type: 'image_url';
  image_url: { url: string; detail?: 'auto' | 'low' | 'high' };
}
export type ContentPart = TextPart | ImagePart | { type: string; [key: string]: unknown };

export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

export interface ChatMessage {
  role: Role;
  content: string | ContentPart[] | null;
  name?: string;
  tool_calls?: ToolCall[];
  tool_call_id?: string;
}

export interface Tool {
  type: 'function';
  function: { name: string; description?: string; parameters?: Record<string, unknown>; strict?: boolean };
}

export type ToolChoice = 'none' | 'auto' | 'required' | { type: 'function'; function: { name: string } };

export type Attachment =
  | { type?: 'image'; url: string }
  | { type?: 'image'; data: string; mime_type: string };

/** `POST /v1/chat`. Only `model` and `messages` are required; `stream` is set by the client. */
export interface ChatRequest {
  model: string;
  messages: ChatMessage[];
  /** Names the provider; `model` is then that provider's model name. */
  provider?: string;
  temperature?: number;
  max_tokens?: number;
  top_p?: number;
  stop?: string | string[];
  tools?: Tool[];
  tool_choice?: ToolChoice;
  priority?: Priority;
  /** Become image parts of the last user message. */
  attachments?: Attachment[];
  /** Per-request cache control in the body (see also `CallOptions.cache`). */
  cache?: Record<string, unknown>;
  metadata?: Record<string, unknown>;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  [key: string]: unknown;
}

/** The native answer. */
export interface ChatResponse {
  id: string | null;
  provider: string;
  model: string | null;
  content: string | null;
  finish_reason: string | null;
  usage: Usage | null;
  cached: boolean;
  /** Set by the gateway; a fallback may leave it out. */
  latency_ms?: number;
  tool_calls?: ToolCall[];
}

/** What every call returns besides the answer: which path served it, and the request id. */
export interface ResultMeta {
  via: Via;
  /** From the `x-request-id` response header, else the id the client sent. */
  requestId: string;
  /** The gateway's `x-aigateway-cache` header (`hit`, `miss`, `bypass`) when it sent one. */
  cache?: string;
  /**
   * What the answer cost in USD (`x-aigateway-cost`): its usage at the gateway's prices, 0 for
   * an answer from its cache. Absent when the gateway did not say (a fallback's answer).
   */
  cost?: number;
}

export type ChatResult = ChatResponse & ResultMeta;

export interface ToolCallDelta {
  index: number;
  id?: string;
  type?: 'function';
  function?: { name?: string; arguments?: string };
}

/** One event of a native stream: a text delta, tool-call deltas, the finish reason, or usage. */
export interface ChatStreamEvent {
  id: string | null;
  provider: string;
  model: string | null;
  content?: string;
  tool_calls?: ToolCallDelta[];
  finish_reason?: string;
  usage?: Usage;
}

export interface EmbeddingsResponse {
  object: 'list';
  data: Array<{ object: 'embedding'; index: number; embedding: number[] | string }>;
  model: string;
  usage?: { prompt_tokens: number; total_tokens: number };
}
export type EmbeddingsResult = EmbeddingsResponse & ResultMeta;
export type EmbeddingInput = string | string[] | number[] | number[][];

export interface Model {
  id: string;
  object: 'model';
  created?: number;
  owned_by?: string;
  /** Which configured provider lists it. */
  provider?: string;
}
export interface ModelList {
  object: 'list';
  data: Model[];
}
export type ModelsResult = ModelList & ResultMeta;

export interface HealthResponse {
  status: string;
  version?: string;
  workers?: number;
  pid?: number;
  providers?: Record<string, Record<string, unknown>>;
  [key: string]: unknown;
}

/** `GET /admin/stats` (the operations issue): node totals, per-provider latency, and more. */
export interface AdminStats {
  uptime_s?: number;
  version?: string;
  workers?: number;
  requests_per_second?: number;
  providers?: Record<string, Record<string, unknown>>;
  [key: string]: unknown;
}

// -- tenant keys (/admin/keys) -----------------------------------------------------------------

export type BudgetPeriod = 'day' | 'month' | 'total';

/** The limits of a tenant key; `null` (or leaving a field out) means no limit. */
export interface TenantKeyLimits {
  /** Requests per minute. */
  rpm?: number | null;
  /** Tokens per minute (prompt + completion). */
  tpm?: number | null;
  /** Requests in flight at once. */
  max_parallel?: number | null;
  /** USD the key may spend per `budget_period`. */
  budget_usd?: number | null;
  /** `day` or `month` (UTC calendar) or `total` (the default). */
  budget_period?: BudgetPeriod | null;
  /** The models and aliases the key may use (empty or null: any). */
  models?: string[] | null;
  /** Its requests' priority when they ask for none. */
  priority?: Priority | null;
  /** The most urgent priority its requests may ask for (`x-aigateway-priority` is capped to it). */
  max_priority?: Priority | null;
  /** RFC 3339 time after which the key is refused, e.g. `2027-01-31T00:00:00Z`. */
  expires_at?: string | null;
  /** Any JSON object, kept and shown as given. */
  metadata?: Record<string, unknown> | null;
}

/** `POST /admin/keys`: `name` is required and unique; any other field is a 400 naming it. */
export interface TenantKeySpec extends TenantKeyLimits {
  name: string;
}

/** `PATCH /admin/keys/{id}`: the fields to change. */
export interface TenantKeyChanges extends TenantKeyLimits {
  name?: string;
}

/** A key as `GET /admin/keys` shows it: limits, usage and spend, never its secret. */
export interface TenantKey {
  id: string;
  object: 'key';
  name: string;
  /** The first characters of its secret, to recognise it. */
  prefix: string;
  /** RFC 3339. */
  created_at: string;
  /** RFC 3339; null while the key is live. */
  revoked_at: string | null;
  rpm: number | null;
  tpm: number | null;
  max_parallel: number | null;
  budget_usd: number | null;
  budget_period: BudgetPeriod;
  models: string[];
  priority: Priority | null;
  max_priority: Priority | null;
  expires_at: string | null;
  metadata: Record<string, unknown>;
  /** As the key store has it (at most one spend flush behind). */
  usage: {
    requests: number;
    prompt_tokens: number;
    completion_tokens: number;
    /** Its requests in flight on the node now (live keys only). */
    in_flight?: number;
    [key: string]: unknown;
  };
  spend: {
    /** USD over the key's whole life. */
    total_usd: number;
    /** `day:YYYY-MM-DD`, `month:YYYY-MM` or `total`. */
    period: string;
    /** USD in the current budget period (a live key: the node's figure, flushed or not). */
    period_usd: number;
    budget_remaining_usd: number | null;
    /** USD reserved by calls under way (live keys only). */
    reserved_usd?: number;
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

/** The 201 answer of `POST /admin/keys`: the key, with its secret this once. */
export interface CreatedTenantKey extends TenantKey {
  /** The secret: send it as `Authorization: Bearer <key>`. The gateway keeps only a hash. */
  key: string;
}

export interface TenantKeyList {
  object: 'list';
  data: TenantKey[];
}

export type BatchItemResult =
  | { index: number; ok: true; response: ChatResponse }
  | { index: number; ok: false; error: GatewayError };

export interface BatchResult extends ResultMeta {
  /** One per request, in the order of the requests. */
  results: BatchItemResult[];
}

// -- options ----------------------------------------------------------------------------------

export interface CacheOptions {
  /** `Cache-Control: no-cache`: do not answer from the cache. */
  noCache?: boolean;
  /** `Cache-Control: no-store`: do not write the answer to the cache. */
  noStore?: boolean;
  /** `x-aigateway-cache-ttl`: how long the answer may be cached. */
  ttlSeconds?: number;
}

export interface CallOptions {
  /** Aborts the call; it then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Overrides the client's `timeoutMs` for this call. */
  timeoutMs?: number;
  /** Overrides the client's `retries` for this call. */
  retries?: number;
  /** Sent as `x-request-id` (default: a random UUID). */
  requestId?: string;
  /** Sent as `x-aigateway-priority`; chat() and chatStream() also set the body's `priority` when it has none. */
  priority?: Priority;
  /** Sent as `Cache-Control` and `x-aigateway-cache-ttl`. */
  cache?: CacheOptions;
  /** Extra request headers (they win over the client's). */
  headers?: Record<string, string>;
}

export type FallbackReason = 'gateway_down' | 'connection_error' | 'timeout' | 'unavailable' | 'start_failed';

/** What a fallback handler receives besides the request. */
export interface FallbackContext {
  /** Why the gateway did not serve the call. */
  reason: FallbackReason;
  /** The gateway's error (or the one the client met on the way). */
  error: GatewayError;
  requestId: string;
  /** Aborts when the caller aborts, the client closes, or `timeoutMs` passes. */
  signal: AbortSignal;
}

type Awaitable<T> = T | Promise<T>;

/**
 * Handlers that serve calls when the gateway is unavailable, each optional. A missing handler
 * (or one that returns `undefined`) declines: the caller gets the gateway's error.
 * Without `chatStream`, streams fall back to `chat` and its answer is replayed as events.
 * `batch()` falls back to `chat` for each item.
 */
export interface FallbackHandlers {
  chat?(request: ChatRequest, ctx: FallbackContext): Awaitable<ChatResponse | undefined>;
  chatStream?(request: ChatRequest, ctx: FallbackContext): Awaitable<AsyncIterable<ChatStreamEvent> | ChatResponse | undefined>;
  embed?(call: { input: EmbeddingInput; model: string }, ctx: FallbackContext): Awaitable<EmbeddingsResponse | undefined>;
  models?(ctx: FallbackContext): Awaitable<ModelList | undefined>;
}

export type FallbackCall =
  | ({ operation: 'chat'; request: ChatRequest } & FallbackContext)
  | ({ operation: 'chatStream'; request: ChatRequest } & FallbackContext)
  | ({ operation: 'embed'; input: EmbeddingInput; model: string } & FallbackContext)
  | ({ operation: 'models' } & FallbackContext);

/** One function for every operation: switch on `call.operation`; return undefined to decline. */
export type FallbackFunction = (
  call: FallbackCall,
) => Awaitable<ChatResponse | AsyncIterable<ChatStreamEvent> | EmbeddingsResponse | ModelList | undefined>;

export type GatewayStatus = 'unknown' | 'up' | 'down';

export interface GatewayClientOptions {
  /** The gateway's address, with or without `/v1` (default `http://127.0.0.1:8081`). */
  baseUrl?: string;
  /** Sent as `Authorization: Bearer …`. */
  apiKey?: string;
  /** Sent to `/admin/*` instead of `apiKey`. */
  adminKey?: string;
  /** One deadline per call, retries included; for streams, until the stream starts and then
   * the longest silence between two events. 0 or Infinity: none. Default 60000. */
  timeoutMs?: number;
  /** Retries after connection errors and 503 answers (not with a fallback). Default 2. */
  retries?: number;
  /** Ceiling of the first retry's random backoff, doubling after. Default 100. */
  retryDelayMs?: number;
  /** Serves calls when the gateway is down, unreachable, too slow or answers 503. */
  fallback?: FallbackFunction | FallbackHandlers;
  /** Health check interval while the gateway is up; 0: only after failures. Default 30000. */
  healthIntervalMs?: number;
  /** Health check interval while the gateway is down. Default 1000. */
  recoveryIntervalMs?: number;
  /** Timeout of one health check. Default 5000. */
  healthTimeoutMs?: number;
  /** Headers sent with every call. */
  headers?: Record<string, string>;
  /**
   * Options to start `aigateway serve` lazily on the first call (the client stops it on
   * `close()`), or a running `GatewayProcess` to watch.
   */
  gateway?: StartGatewayOptions | GatewayProcess;
  /** Called when `status` changes. */
  onStatusChange?: (status: GatewayStatus, previous: GatewayStatus) => void;
  /** A fetch implementation (default: Node's built-in fetch). */
  fetch?: typeof fetch;
}

// -- metrics ----------------------------------------------------------------------------------

export interface LatencySummary {
  count: number;
  mean: number | null;
  p50: number | null;
  p95: number | null;
  p99: number | null;
  max: number | null;
}

export interface PathMetrics {
  /** Calls on this path: each request sent (a retry counts again), and on the gateway path
   * also calls refused at once because it is known to be down (error kind "down") or did not
   * start (kind "start"). Always `successes + errors`. */
  requests: number;
  successes: number;
  errors: number;
  /** By HTTP status ("400", "503"), or "connection", "timeout", "down", "stream", "aborted", "error"… */
  errorsByKind: Record<string, number>;
  /** Of successful calls, from entering the path to the whole answer (percentiles over the last 1024). */
  latencyMs: LatencySummary;
}

export interface ClientMetrics {
  status: GatewayStatus;
  /** When `status` last changed (ms since the epoch). */
  statusSince: number;
  gateway: PathMetrics;
  fallback: PathMetrics;
  /** Calls that went to the fallback, by reason. */
  fallbacks: Partial<Record<FallbackReason, number>>;
  health: {
    checks: number;
    failures: number;
    lastCheckAt: number | null;
    lastOk: boolean | null;
    lastLatencyMs: number | null;
    lastError: string | null;
  };
}

// -- client -----------------------------------------------------------------------------------

export declare class ChatStream implements AsyncIterable<ChatStreamEvent> {
  /** Which path serves the stream: set once it has started (before the first event). */
  readonly via: Via | undefined;
  readonly requestId: string | undefined;
  /** From the gateway's `x-aigateway-provider` header. */
  readonly provider: string | undefined;
  [Symbol.asyncIterator](): AsyncIterator<ChatStreamEvent>;
  /** Reads the whole stream and returns its text. */
  text(): Promise<string>;
  /** Ends the stream; the iteration then throws `reason`. */
  abort(reason?: unknown): void;
}

export declare class GatewayClient {
  constructor(options?: GatewayClientOptions);
  /** The gateway's state as the client sees it. */
  readonly status: GatewayStatus;
  readonly baseUrl: string | null;
  /** The gateway process the client started or watches. */
  readonly gateway: GatewayProcess | null;
  chat(request: ChatRequest, options?: CallOptions): Promise<ChatResult>;
  chatStream(request: ChatRequest, options?: CallOptions): ChatStream;
  batch(requests: ChatRequest[], options?: CallOptions): Promise<BatchResult>;
  embed(input: EmbeddingInput, model: string, options?: CallOptions): Promise<EmbeddingsResult>;
  models(options?: CallOptions): Promise<ModelsResult>;
  health(options?: Pick<CallOptions, 'signal' | 'timeoutMs' | 'requestId'>): Promise<HealthResponse>;
  stats(options?: CallOptions): Promise<AdminStats>;
  /** `POST /admin/keys` (with `adminKey`): the answer carries `key`, the secret, this once. */
  createKey(spec: TenantKeySpec, options?: CallOptions): Promise<CreatedTenantKey>;
  /** `GET /admin/keys`. */
  listKeys(options?: CallOptions): Promise<TenantKeyList>;
  /** `GET /admin/keys/{id}`. */
  getKey(id: string, options?: CallOptions): Promise<TenantKey>;
  /** `PATCH /admin/keys/{id}`: `null` clears a limit. */
  updateKey(id: string, changes: TenantKeyChanges, options?: CallOptions): Promise<TenantKey>;
  /** `DELETE /admin/keys/{id}`: revokes it on every worker and node; answers the revoked key. */
  revokeKey(id: string, options?: CallOptions): Promise<TenantKey>;
  metrics(): ClientMetrics;
  resetMetrics(): void;
  close(): Promise<void>;
}

export declare function createGatewayClient(options?: GatewayClientOptions): GatewayClient;

// -- errors -----------------------------------------------------------------------------------

export interface GatewayErrorOptions {
  status?: number;
  type?: string | null;
  code?: string | null;
  param?: string | null;
  requestId?: string | null;
  retryAfterMs?: number | null;
  body?: unknown;
  cause?: unknown;
}

/** An error answer of the gateway (OpenAI's shape) or a failure on the way to it. */
export declare class GatewayError extends Error {
  constructor(message: string, options?: GatewayErrorOptions);
  /** HTTP status; 0 when no HTTP answer came. */
  readonly status: number;
  readonly type: string | null;
  readonly code: string | null;
  readonly param: string | null;
  /** From the `x-request-id` response header, else the id the client sent. */
  readonly requestId: string | null;
  /** From `retry-after-ms` or `retry-after`. */
  readonly retryAfterMs: number | null;
  /** The answer's body (parsed JSON, or text). */
  readonly body: unknown;
}
/** Unreachable, known down, not started, or 503; and no fallback took the call. */
export declare class GatewayUnavailableError extends GatewayError {}
/** `timeoutMs` passed before the answer (status 0), or the gateway answered 504. */
export declare class GatewayTimeoutError extends GatewayError {}
/** A stream that had started failed: an error event, a cut connection, or a long silence. */
export declare class GatewayStreamError extends GatewayError {}
/** The gateway was unavailable and the fallback failed too (`cause` is the fallback's error). */
export declare class FallbackError extends Error {
  constructor(message: string, options: { cause: unknown; gatewayError: GatewayError });
  readonly gatewayError: GatewayError;
}

// -- lifecycle --------------------------------------------------------------------------------

export interface RestartOptions {
  /** Restarts in a row before giving up (default 5). */
  maxRestarts?: number;
  /** Wait before the first restart, doubling after each (default 500). */
  backoffMs?: number;
  /** Longest wait between restarts (default 10000). */
  maxBackoffMs?: number;
  /** A process that ran this long before it exited resets the count (default 60000). */
  resetAfterMs?: number;
}

export interface StartGatewayOptions {
  /** Default: `$AIGATEWAY_BIN`, else `aigateway` on the PATH. */
  command?: string;
  /** Default `["serve"]`. */
  args?: string[];
  /** Extra environment variables (over the inherited environment). */
  env?: Record<string, string | undefined>;
  /** Inherit this process's environment (default true). */
  inheritEnv?: boolean;
  /** `AI_GATEWAY_HOST` (default 127.0.0.1). */
  host?: string;
  /** `AI_GATEWAY_PORT`; 0 picks a free port (default 0). */
  port?: number;
  /** `MAX_WORKERS`. */
  workers?: number;
  cwd?: string;
  /** How long to wait for `/health` (default 30000). */
  readyTimeoutMs?: number;
  /** How long `stop()` waits for the drain before it kills (default 30000). */
  stopTimeoutMs?: number;
  /** Restart after an unexpected exit (default on); false: never. */
  restart?: RestartOptions | false;
  /** Check that /health is answered by a process this module started (Linux; default true). */
  checkOwnership?: boolean;
}

export type GatewayProcessState = 'idle' | 'starting' | 'running' | 'restarting' | 'stopping' | 'stopped' | 'failed';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export declare class GatewayProcess extends EventEmitter {
  constructor(options?: StartGatewayOptions);
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** PID of the main process while one runs (it leads the process group). */
  readonly pid: number | null;
  readonly state: GatewayProcessState;
  /** Completed restarts. */
  readonly restarts: number;
  readonly lastExit: ExitInfo | null;
  start(): Promise<this>;
  /** Resolves when the gateway runs (at once if it does). */
  ready(): Promise<void>;
  /** SIGTERM, wait for the drain (up to `timeoutMs`), then kill what is left of the group. */
  stop(options?: { timeoutMs?: number }): Promise<ExitInfo | null>;
  /** The last lines of its stdout and stderr. */
  logs(): string[];

  on(event: 'ready', listener: (info: { pid: number | null; url: string }) => void): this;
  on(event: 'exit', listener: (info: ExitInfo & { pid: number }) => void): this;
  on(event: 'restart', listener: (info: { pid: number | null; restarts: number }) => void): this;
  on(event: 'restartFailed', listener: (error: Error) => void): this;
  on(event: 'failed', listener: (error: Error) => void): this;
  on(event: 'stopped', listener: (exit: ExitInfo | null) => void): this;
  on(event: 'log', listener: (line: string, stream: 'stdout' | 'stderr') => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
}

/** Spawns the gateway and resolves once its `/health` answers. */
export declare function startGateway(options?: StartGatewayOptions): Promise<GatewayProcess>;

// -- conversions for fallbacks ----------------------------------------------------------------

export interface OpenAIChatParams {
  model: string;
  /** OpenAI's message shapes (typed loosely so they pass to the SDK's per-role union). */
  messages: any[];
  temperature?: number;
  max_tokens?: number;
  top_p?: number;
  stop?: string | string[];
  tools?: Tool[];
  tool_choice?: ToolChoice;
}

export declare function toOpenAIChatRequest(request: ChatRequest): OpenAIChatParams;
export declare function fromOpenAIChatCompletion(
  completion: unknown,
  options?: { provider?: string; latencyMs?: number },
): ChatResponse;
export declare function fromOpenAIChatStream(
  chunks: AsyncIterable<unknown>,
  options?: { provider?: string },
): AsyncGenerator<ChatStreamEvent, void, undefined>;
