// The gateway client: typed calls over HTTP, health monitoring, transparent fallback,
// latency and error counts per path, and (optionally) a gateway process it starts lazily.
//
// Connections: Node's built-in fetch (undici) keeps connections alive and reuses them by
// default, so consecutive calls share a pooled connection to the gateway.

import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';

import {
  FallbackError,
  GatewayError,
  GatewayStreamError,
  GatewayTimeoutError,
  GatewayUnavailableError,
  errorFromResponse,
} from './errors.js';
import { GatewayProcess, startGateway } from './lifecycle.js';
import { PathMetrics } from './metrics.js';
import { readSSE } from './sse.js';

export const VERSION = '0.1.0';
const USER_AGENT = `aigateway-node/${VERSION}`;
const DEFAULT_BASE_URL = 'http://127.0.0.1:8081';
const MAX_BACKOFF_MS = 2000;
const MAX_RETRY_AFTER_MS = 5000;
const BATCH_FALLBACK_CONCURRENCY = 8;

/** Why a call is eligible for the fallback (absent: it is not). */
const REASON = Symbol('fallbackReason');

export function createGatewayClient(options = {}) {
  return new GatewayClient(options);
}

export class GatewayClient {
  constructor(options = {}) {
    const {
      baseUrl,
      apiKey,
      adminKey,
      timeoutMs = 60_000,
      retries = 2,
      retryDelayMs = 100,
      fallback,
      healthIntervalMs = 30_000,
      recoveryIntervalMs = 1000,
      healthTimeoutMs = 5000,
      headers = {},
      gateway,
      onStatusChange,
      fetch: fetchImpl = globalThis.fetch,
    } = options;
    for (const [name, value] of Object.entries({ timeoutMs, retries, retryDelayMs, healthIntervalMs, recoveryIntervalMs, healthTimeoutMs })) {
      if (typeof value !== 'number' || Number.isNaN(value) || value < 0) {
        throw new TypeError(`${name} must be a number >= 0, got ${value}`);
      }
    }
    if (fallback !== undefined && fallback !== null && typeof fallback !== 'function' && typeof fallback !== 'object') {
      throw new TypeError('fallback must be a function or an object of handlers');
    }
    this.baseUrl = baseUrl === undefined ? null : normalizeBaseUrl(baseUrl);
    this.apiKey = apiKey;
    this.adminKey = adminKey ?? apiKey;
    this.timeoutMs = timeoutMs;
    this.retries = Math.floor(retries);
    this.retryDelayMs = retryDelayMs;
    this.fallback = normalizeFallback(fallback);
    this.healthIntervalMs = healthIntervalMs;
    this.recoveryIntervalMs = Math.max(50, recoveryIntervalMs);
    this.healthTimeoutMs = healthTimeoutMs;
    this.headers = { ...headers };
    this.onStatusChange = onStatusChange;
    this.fetchImpl = fetchImpl;

    this.status = 'unknown';
    this.statusSince = Date.now();
    this.gatewayMetrics = new PathMetrics();
    this.fallbackMetrics = new PathMetrics();
    this.fallbackReasons = {};
    this.healthStats = { checks: 0, failures: 0, lastCheckAt: null, lastOk: null, lastLatencyMs: null, lastError: null };
    this.healthTimer = null;
    this.healthInFlight = null;
    this.closed = false;
    this.closing = null;
    this.lifetime = new AbortController();

    // The gateway process: one given to us (we watch it), or options to start one lazily.
    this.gatewayProcess = null;
    this.ownsGateway = false;
    this.gatewayOptions = null;
    this.gatewayStarting = null;
    if (gateway instanceof GatewayProcess) {
      this.attachGateway(gateway);
      this.baseUrl ??= normalizeBaseUrl(gateway.url);
    } else if (gateway) {
      this.gatewayOptions = { ...gateway };
      if (this.baseUrl && gateway.port === undefined) {
        const url = new URL(this.baseUrl);
        this.gatewayOptions.host ??= url.hostname.replace(/^\[|\]$/g, '');
        this.gatewayOptions.port = Number(url.port || 80);
      }
    }
    this.baseUrl ??= this.gatewayOptions ? null : DEFAULT_BASE_URL;
    if (!this.gatewayOptions) this.scheduleHealth(0);
  }

  // -- public API ----------------------------------------------------------------------------

  /** `POST /v1/chat` (native API). */
  async chat(request, options = {}) {
    checkChatRequest(request);
    const body = withPriority({ ...request, stream: false }, options);
    return this.call('chat', options, {
      method: 'POST', path: '/v1/chat', body,
      decorate: (answer, meta) => ({ ...answer, ...meta }),
      fallback: (handler, ctx) => this.fallbackChat(handler, request, ctx),
    });
  }

  /** `POST /v1/chat` with `stream: true`: an async iterable over the native stream events. */
  chatStream(request, options = {}) {
    checkChatRequest(request);
    return new ChatStream(this, request, options);
  }

  /** `POST /v1/batch`: `results[i]` answers `requests[i]`, each a response or an error. */
  async batch(requests, options = {}) {
    if (!Array.isArray(requests) || requests.length === 0) {
      throw new TypeError('batch() takes a non-empty array of chat requests');
    }
    // Items may be native or OpenAI-format requests: the call's priority goes in the header
    // only, and each item keeps its own.
    return this.call('batch', options, {
      method: 'POST', path: '/v1/batch', body: { requests },
      decorate: (answer, meta) => ({ results: batchResults(answer, requests.length, meta.requestId), ...meta }),
      fallback: async (handler, ctx) => {
        if (!handler.chat) return undefined;
        const results = await mapLimited(requests, BATCH_FALLBACK_CONCURRENCY, async (item, index) => {
          try {
            return { index, ok: true, response: await this.fallbackChat(handler, item, ctx) };
          } catch (error) {
            return { index, ok: false, error: asGatewayError(error, ctx.requestId) };
          }
        });
        return { results };
      },
    });
  }

  /** `POST /v1/embeddings` (OpenAI's shape): `input` a string, strings, or token arrays. */
  async embed(input, model, options = {}) {
    if (typeof model !== 'string' || !model) throw new TypeError('embed() needs a model name');
    return this.call('embed', options, {
      method: 'POST', path: '/v1/embeddings', body: { model, input },
      decorate: (answer, meta) => ({ ...answer, ...meta }),
      fallback: (handler, ctx) => (handler.embed ? handler.embed({ input, model }, ctx) : undefined),
    });
  }

  /** `GET /v1/models`: the models of every configured provider. */
  async models(options = {}) {
    return this.call('models', options, {
      method: 'GET', path: '/v1/models',
      decorate: (answer, meta) => ({ ...answer, ...meta }),
      fallback: (handler, ctx) => (handler.models ? handler.models(ctx) : undefined),
    });
  }

  /** `GET /health`; also updates the client's view of the gateway (`client.status`). */
  async health(options = {}) {
    this.assertOpen();
    await this.ensureStarted(options);
    return this.checkHealth(options);
  }

  /** `GET /admin/stats` (sent with `adminKey`, else `apiKey`). Never falls back. */
  async stats(options = {}) {
    return this.call('stats', options, {
      method: 'GET', path: '/admin/stats', admin: true, diagnostic: true,
      decorate: (answer) => answer,
    });
  }

  // -- tenant keys (admin: sent with `adminKey`, else `apiKey`; never fall back) -------------

  /** `POST /admin/keys`: a new key; the answer carries its `id` and, this once, its secret as `key`. */
  async createKey(spec, options = {}) {
    if (!isObject(spec) || typeof spec.name !== 'string' || !spec.name) {
      throw new TypeError('createKey() takes an object with a name');
    }
    return this.adminCall('createKey', options, 'POST', '/admin/keys', spec);
  }

  /** `GET /admin/keys`: every key (revoked ones too) with its limits, usage and spend. */
  async listKeys(options = {}) {
    return this.adminCall('listKeys', options, 'GET', '/admin/keys');
  }

  /** `GET /admin/keys/{id}`: one key. */
  async getKey(id, options = {}) {
    return this.adminCall('getKey', options, 'GET', keyPath(id, 'getKey'));
  }

  /** `PATCH /admin/keys/{id}`: changes its name or limits (`null` clears a limit). */
  async updateKey(id, changes, options = {}) {
    if (!isObject(changes)) throw new TypeError('updateKey() takes an id and an object of changes');
    return this.adminCall('updateKey', options, 'PATCH', keyPath(id, 'updateKey'), changes);
  }

  /** `DELETE /admin/keys/{id}`: revokes the key, for good; answers the revoked key. */
  async revokeKey(id, options = {}) {
    return this.adminCall('revokeKey', options, 'DELETE', keyPath(id, 'revokeKey'));
  }

  adminCall(operation, options, method, path, body) {
    return this.call(operation, options, {
      method, path, body, admin: true, diagnostic: true,
      decorate: (answer) => answer,
    });
  }

  /** Latency and error counts of both paths, and the gateway's status as this client sees it. */
  metrics() {
    return {
      status: this.status,
      statusSince: this.statusSince,
      gateway: this.gatewayMetrics.snapshot(),
      fallback: this.fallbackMetrics.snapshot(),
      fallbacks: { ...this.fallbackReasons },
      health: { ...this.healthStats },
    };
  }

  resetMetrics() {
    this.gatewayMetrics.reset();
    this.fallbackMetrics.reset();
    this.fallbackReasons = {};
    this.healthStats = { checks: 0, failures: 0, lastCheckAt: null, lastOk: null, lastLatencyMs: null, lastError: null };
  }

  /** The gateway process this client started or watches (null when none). */
  get gateway() {
    return this.gatewayProcess;
  }

  /** Stops health monitoring, aborts calls in flight, stops a gateway the client started. */
  close() {
    if (this.closing) return this.closing;
    this.closed = true;
    clearTimeout(this.healthTimer);
    this.healthTimer = null;
    this.lifetime.abort(new GatewayError('the client was closed', { code: 'client_closed' }));
    this.closing = (async () => {
      if (this.gatewayStarting) await this.gatewayStarting.catch(() => {});
      if (this.gatewayProcess) this.detachGateway?.();
      if (this.ownsGateway && this.gatewayProcess) await this.gatewayProcess.stop();
    })();
    return this.closing;
  }

  // -- calls -----------------------------------------------------------------------------------

  /** One unary call: gateway first, then the fallback when the gateway is unavailable. */
  async call(operation, options, spec) {
    this.assertOpen();
    const ctx = new CallContext(this, options);
    try {
      let response;
      try {
        response = await this.openGateway(operation, ctx, spec);
      } catch (error) {
        if (spec.diagnostic || !error[REASON]) throw error;
        const result = await this.runFallback(operation, error, ctx, spec.fallback);
        return result;
      }
      let answer;
      try {
        answer = await response.json();
      } catch (cause) {
        if (!spec.diagnostic) this.gatewayMetrics.failure(ctx.timedOut ? 'timeout' : 'unreadable');
        throw ctx.callerAbortReason() ?? (ctx.timedOut
          ? ctx.timeoutError()
          : new GatewayError('the gateway sent an answer that is not JSON', { status: response.status, requestId: ctx.responseRequestId(response), cause }));
      }
      ctx.complete = true;
      if (!spec.diagnostic) this.gatewayMetrics.success(performance.now() - ctx.pathStart);
      return spec.decorate(answer, gatewayMeta(response, ctx));
    } finally {
      ctx.done();
    }
  }

  /**
   * Sends the request (with retries) and returns a 2xx Response, or throws. Errors that may go
   * to the fallback carry a [REASON].
   */
  async openGateway(operation, ctx, spec) {
    const metrics = spec.diagnostic ? null : this.gatewayMetrics;
    try {
      await this.ensureStarted(ctx);
    } catch (error) {
      metrics?.failure('start');
      throw error;
    }
    if (!spec.diagnostic && this.status === 'down') {
      metrics.failure('down');
      throw eligible(new GatewayUnavailableError(
        `the gateway at ${this.baseUrl} is down (${this.healthStats.lastError ?? 'its last health check failed'})`,
        { requestId: ctx.requestId }), 'gateway_down');
    }
    const retries = ctx.options.retries ?? this.retries;
    const canFallBack = !spec.diagnostic && Boolean(this.fallback);
    ctx.pathStart = performance.now();
    for (let attempt = 0; ; attempt += 1) {
      let response;
      try {
        response = await this.fetchImpl(this.baseUrl + spec.path, {
          method: spec.method,
          headers: this.requestHeaders(ctx, spec),
          body: spec.body === undefined ? undefined : JSON.stringify(spec.body),
          signal: ctx.signal,
        });
      } catch (cause) {
        const aborted = ctx.callerAbortReason();
        if (aborted) {
          metrics?.failure('aborted');
          throw aborted;
        }
        if (ctx.timedOut) {
          metrics?.failure('timeout');
          this.scheduleHealth(0, true);
          throw eligible(ctx.timeoutError(), 'timeout');
        }
        metrics?.failure('connection');
        this.scheduleHealth(0, true);
        const refused = connectionCode(cause) === 'ECONNREFUSED';
        if (attempt < retries && !(canFallBack && refused) && (await this.backoff(ctx, attempt))) continue;
        this.setStatus('down', describeCause(cause));
        throw eligible(new GatewayUnavailableError(
          `cannot reach the gateway at ${this.baseUrl}: ${describeCause(cause)}`,
          { requestId: ctx.requestId, cause }), 'connection_error');
      }
      if (response.ok) {
        if (!spec.diagnostic && this.status !== 'up') this.setStatus('up');
        return response;
      }
      const error = await this.errorFrom(response, ctx);
      metrics?.failure(String(response.status));
      if (response.status === 503 && !spec.diagnostic) {
        if (!canFallBack && attempt < retries && (await this.backoff(ctx, attempt, error.retryAfterMs))) continue;
        throw eligible(error, 'unavailable');
      }
      // A 504 is the same event as the client's own timeout, noticed first by the gateway.
      if (response.status === 504 && !spec.diagnostic) throw eligible(error, 'timeout');
      throw error;
    }
  }

  /** Waits before retry `attempt`; false when the deadline leaves no room for it. */
  async backoff(ctx, attempt, retryAfterMs = null) {
    const wait = retryAfterMs !== null
      ? retryAfterMs
      : Math.random() * Math.min(MAX_BACKOFF_MS, this.retryDelayMs * 2 ** attempt);
    if (retryAfterMs !== null && retryAfterMs > MAX_RETRY_AFTER_MS) return false;
    if (performance.now() + wait >= ctx.deadline) return false;
    try {
      await sleep(wait, ctx.signal);
    } catch {
      return false;
    }
    return !ctx.signal.aborted;
  }

  async errorFrom(response, ctx) {
    let text = '';
    try {
      text = await response.text();
    } catch { /* the body is unreadable: the status still says enough */ }
    let body = text;
    try {
      body = JSON.parse(text);
    } catch { /* not JSON */ }
    return errorFromResponse(response.status, response.headers, body, ctx.requestId);
  }

  requestHeaders(ctx, spec) {
    const headers = { 'user-agent': USER_AGENT, accept: spec.stream ? 'text/event-stream' : 'application/json' };
    if (spec.body !== undefined) headers['content-type'] = 'application/json';
    const key = spec.admin ? this.adminKey : this.apiKey;
    if (key) headers.authorization = `Bearer ${key}`;
    headers['x-request-id'] = ctx.requestId;
    const { priority, cache } = ctx.options;
    const bodyPriority = spec.body && typeof spec.body === 'object' ? spec.body.priority : undefined;
    if (priority ?? bodyPriority) headers['x-aigateway-priority'] = priority ?? bodyPriority;
    if (cache) {
      const directives = [];
      if (cache.noCache) directives.push('no-cache');
      if (cache.noStore) directives.push('no-store');
      if (directives.length) headers['cache-control'] = directives.join(', ');
      if (cache.ttlSeconds !== undefined) headers['x-aigateway-cache-ttl'] = String(cache.ttlSeconds);
    }
    if (Number.isFinite(ctx.deadline)) {
      headers['x-aigateway-timeout-ms'] = String(Math.max(1, Math.floor(ctx.deadline - performance.now())));
    }
    return { ...headers, ...this.headers, ...ctx.options.headers };
  }

  /** Calls the fallback for an eligible gateway error, or rethrows the error. */
  async runFallback(operation, gatewayError, ctx, invoke) {
    const reason = gatewayError[REASON];
    if (!this.fallback || !invoke) throw gatewayError;
    const fallbackCtx = ctx.forFallback(reason, gatewayError);
    const started = performance.now();
    let result;
    try {
      result = await invoke(this.fallback, fallbackCtx.context);
    } catch (cause) {
      fallbackCtx.cleanup();
      this.countFallback(reason);
      this.fallbackMetrics.failure('error');
      throw new FallbackError(
        `the gateway was unavailable (${gatewayError.message}) and the fallback failed: ${cause?.message ?? cause}`,
        { cause, gatewayError });
    }
    fallbackCtx.cleanup();
    if (result === undefined) throw gatewayError; // no handler for this operation
    this.countFallback(reason);
    this.fallbackMetrics.success(performance.now() - started);
    return { ...result, via: 'fallback', requestId: ctx.requestId };
  }

  countFallback(reason) {
    this.fallbackReasons[reason] = (this.fallbackReasons[reason] ?? 0) + 1;
  }

  async fallbackChat(handler, request, ctx) {
    if (handler.chat) return handler.chat(request, ctx);
    return undefined;
  }

  // -- health ----------------------------------------------------------------------------------

  async checkHealth(options = {}) {
    if (!options.signal && this.healthInFlight) return this.healthInFlight;
    const run = (async () => {
      const started = performance.now();
      const timeout = options.timeoutMs ?? this.healthTimeoutMs;
      const { signal, unlink } = linkSignals([this.lifetime.signal, options.signal, timeout ? AbortSignal.timeout(timeout) : null]);
      this.healthStats.checks += 1;
      this.healthStats.lastCheckAt = Date.now();
      try {
        let response;
        try {
          response = await this.fetchImpl(`${this.baseUrl}/health`, {
            headers: { 'user-agent': USER_AGENT, accept: 'application/json', ...(options.requestId ? { 'x-request-id': options.requestId } : {}) },
            signal,
          });
        } catch (cause) {
          if (options.signal?.aborted) throw options.signal.reason;
          const timedOut = signal.aborted && !this.lifetime.signal.aborted;
          throw timedOut
            ? new GatewayTimeoutError(`GET /health did not answer within ${timeout} ms`, { cause })
            : new GatewayUnavailableError(`cannot reach the gateway at ${this.baseUrl}: ${describeCause(cause)}`, { cause });
        }
        if (!response.ok) throw await this.errorFrom(response, { requestId: options.requestId });
        const body = await response.json();
        this.healthStats.lastOk = true;
        this.healthStats.lastError = null;
        this.healthStats.lastLatencyMs = Math.round((performance.now() - started) * 1000) / 1000;
        this.setStatus('up');
        return body;
      } catch (error) {
        this.healthStats.failures += 1;
        this.healthStats.lastOk = false;
        this.healthStats.lastError = error.message;
        if (!this.closed && !options.signal?.aborted) this.setStatus('down', error.message);
        throw error;
      } finally {
        unlink();
        if (this.healthInFlight === run) this.healthInFlight = null;
        this.scheduleHealth();
      }
    })();
    if (!options.signal) this.healthInFlight = run;
    return run;
  }

  /**
   * Plans the next background check: after `delayMs`, else after the interval that fits the
   * status (`recoveryIntervalMs` while down, `healthIntervalMs` otherwise; 0 means no
   * periodic check while up). `soon` only ever brings a planned check forward.
   */
  scheduleHealth(delayMs, soon = false) {
    if (this.closed || (!this.baseUrl && !this.gatewayProcess)) return;
    if (this.gatewayOptions && !this.gatewayProcess) return; // not started yet
    if (soon && this.healthInFlight) return;
    let wait = delayMs;
    if (wait === undefined) {
      if (this.status === 'down') wait = this.recoveryIntervalMs;
      else if (this.healthIntervalMs > 0) wait = this.healthIntervalMs;
      else return;
    }
    if (soon && this.healthTimer && this.healthTimerAt <= Date.now() + wait) return;
    clearTimeout(this.healthTimer);
    this.healthTimerAt = Date.now() + wait;
    this.healthTimer = setTimeout(() => {
      this.healthTimer = null;
      this.checkHealth().catch(() => {});
    }, wait);
    this.healthTimer.unref?.();
  }

  setStatus(next, why = null) {
    if (this.status === next) return;
    const previous = this.status;
    this.status = next;
    this.statusSince = Date.now();
    if (next === 'down') this.healthStats.lastError ??= why;
    if (this.onStatusChange) {
      try {
        this.onStatusChange(next, previous);
      } catch { /* a listener's failure is not the client's */ }
    }
  }

  // -- gateway process -------------------------------------------------------------------------

  attachGateway(gateway) {
    this.gatewayProcess = gateway;
    const onExit = () => this.setStatus('down', 'the gateway process exited');
    const onStopped = () => this.setStatus('down', 'the gateway process was stopped');
    const onReady = () => {
      this.setStatus('up');
      this.scheduleHealth();
    };
    gateway.on('exit', onExit);
    gateway.on('stopped', onStopped);
    gateway.on('failed', onStopped);
    gateway.on('ready', onReady);
    this.detachGateway = () => {
      gateway.off('exit', onExit);
      gateway.off('stopped', onStopped);
      gateway.off('failed', onStopped);
      gateway.off('ready', onReady);
    };
  }

  /** Starts the gateway on the first call when the client was given `gateway` options. */
  async ensureStarted(ctx) {
    if (!this.gatewayOptions || this.gatewayProcess) return;
    if (!this.gatewayStarting) {
      this.gatewayStarting = startGateway(this.gatewayOptions).then((started) => {
        if (this.closed) {
          return started.stop().then(() => { throw new GatewayError('the client was closed', { code: 'client_closed' }); });
        }
        this.ownsGateway = true;
        this.baseUrl ??= normalizeBaseUrl(started.url);
        this.attachGateway(started);
        this.setStatus('up');
        this.scheduleHealth();
        return started;
      });
      this.gatewayStarting.catch(() => { this.gatewayStarting = null; });
    }
    const signal = ctx?.signal;
    try {
      await (signal ? raceSignal(this.gatewayStarting, signal) : this.gatewayStarting);
    } catch (cause) {
      const aborted = ctx?.callerAbortReason?.();
      if (aborted) throw aborted;
      if (ctx?.timedOut) throw eligible(ctx.timeoutError(), 'timeout');
      throw eligible(new GatewayUnavailableError(`could not start the gateway: ${cause.message}`,
        { requestId: ctx?.requestId ?? null, cause }), 'start_failed');
    }
  }

  assertOpen() {
    if (this.closed) throw new GatewayError('the client was closed', { code: 'client_closed' });
  }
}

/** The async iterable `chatStream()` returns. */
export class ChatStream {
  constructor(client, request, options) {
    this.client = client;
    this.request = request;
    this.options = options;
    this.via = undefined;
    this.requestId = undefined;
    this.provider = undefined;
    this.iterated = false;
    this.ctx = null;
    this.abortReason = null;
  }

  [Symbol.asyncIterator]() {
    if (this.iterated) throw new Error('a ChatStream can be iterated only once');
    this.iterated = true;
    return this.events();
  }

  /** The text of the whole answer (consumes the stream). */
  async text() {
    let text = '';
    for await (const event of this) if (typeof event.content === 'string') text += event.content;
    return text;
  }

  /** Ends the stream; the iterator then throws `reason` (an AbortError by default). */
  abort(reason = new DOMException('the stream was aborted', 'AbortError')) {
    this.abortReason = reason;
    this.ctx?.abortAsCaller(reason);
  }

  async *events() {
    const client = this.client;
    client.assertOpen();
    const ctx = new CallContext(client, this.options);
    this.ctx = ctx;
    if (this.abortReason) ctx.abortAsCaller(this.abortReason);
    const body = withPriority({ ...this.request, stream: true }, this.options);
    let response;
    try {
      try {
        response = await client.openGateway('chatStream', ctx, {
          method: 'POST', path: '/v1/chat', body, stream: true,
        });
      } catch (error) {
        if (!error[REASON]) throw error;
        yield* this.fallbackEvents(error, ctx);
        return;
      }
      this.via = 'gateway';
      this.requestId = response.headers.get('x-request-id') ?? ctx.requestId;
      this.provider = response.headers.get('x-aigateway-provider') ?? undefined;
      yield* this.gatewayEvents(response, ctx);
    } finally {
      ctx.done();
    }
  }

  async *gatewayEvents(response, ctx) {
    const metrics = this.client.gatewayMetrics;
    ctx.idle();
    let sawDone = false;
    let finished = false;
    try {
      for await (const data of readSSE(response.body, () => ctx.touch())) {
        if (data === '[DONE]') {
          sawDone = true;
          break;
        }
        let event;
        try {
          event = JSON.parse(data);
        } catch (cause) {
          throw new GatewayStreamError('the gateway sent a stream event that is not JSON', { requestId: this.requestId, cause });
        }
        if (event && typeof event === 'object' && event.error) {
          const e = event.error;
          throw new GatewayStreamError(e.message ?? 'the stream failed', {
            type: e.type ?? null, code: e.code ?? null, param: e.param ?? null, requestId: this.requestId, body: event,
          });
        }
        yield event;
      }
      if (!sawDone) {
        throw new GatewayStreamError('the stream ended before [DONE]', { code: 'stream_incomplete', requestId: this.requestId });
      }
      finished = true;
      ctx.complete = true;
      metrics.success(performance.now() - ctx.pathStart);
    } catch (error) {
      finished = true;
      const aborted = ctx.callerAbortReason();
      if (aborted) {
        metrics.failure('aborted');
        throw aborted;
      }
      if (ctx.idleTimedOut) {
        metrics.failure('stream_timeout');
        throw new GatewayStreamError(`no stream event for ${ctx.timeoutMs} ms`, { code: 'stream_timeout', requestId: this.requestId, cause: error });
      }
      if (error instanceof GatewayStreamError) {
        metrics.failure('stream');
        throw error;
      }
      metrics.failure('stream');
      throw new GatewayStreamError(`the stream broke off: ${describeCause(error)}`, { code: 'stream_broken', requestId: this.requestId, cause: error });
    } finally {
      // The consumer stopped early: the gateway did its part.
      if (!finished) metrics.success(performance.now() - ctx.pathStart);
    }
  }

  async *fallbackEvents(gatewayError, ctx) {
    const client = this.client;
    const reason = gatewayError[REASON];
    const handler = client.fallback;
    if (!handler || (!handler.chatStream && !handler.chat)) throw gatewayError;
    const fallbackCtx = ctx.forFallback(reason, gatewayError);
    const started = performance.now();
    client.countFallback(reason);
    this.via = 'fallback';
    this.requestId = ctx.requestId;
    let failed = false;
    try {
      let source = handler.chatStream
        ? await handler.chatStream(this.request, fallbackCtx.context)
        : await handler.chat(this.request, fallbackCtx.context);
      if (source === undefined) {
        failed = true;
        throw gatewayError;
      }
      if (!source || typeof source[Symbol.asyncIterator] !== 'function') source = eventsFromResponse(source);
      let first = true;
      for await (const event of source) {
        if (first) {
          first = false;
          fallbackCtx.clearDeadline();
        }
        if (this.provider === undefined && event?.provider) this.provider = event.provider;
        yield event;
      }
    } catch (cause) {
      if (cause === gatewayError) throw cause;
      failed = true;
      client.fallbackMetrics.failure('error');
      throw new FallbackError(
        `the gateway was unavailable (${gatewayError.message}) and the fallback failed: ${cause?.message ?? cause}`,
        { cause, gatewayError });
    } finally {
      fallbackCtx.cleanup();
      if (!failed) client.fallbackMetrics.success(performance.now() - started);
    }
  }
}

/** Per-call state: request id, deadline, the abort signal that ends the call. */
class CallContext {
  constructor(client, options = {}) {
    this.client = client;
    this.options = options;
    this.requestId = options.requestId ?? randomUUID();
    this.timeoutMs = options.timeoutMs ?? client.timeoutMs;
    const finite = Number.isFinite(this.timeoutMs) && this.timeoutMs > 0;
    this.start = performance.now();
    this.pathStart = this.start;
    this.deadline = finite ? this.start + this.timeoutMs : Infinity;
    this.controller = new AbortController();
    this.timedOut = false;
    this.idleTimedOut = false;
    this.complete = false;
    this.callerReason = null;
    this.timer = null;
    this.unlink = [];
    const follow = (signal, asCaller) => {
      if (!signal) return;
      const onAbort = () => (asCaller ? this.abortAsCaller(signal.reason) : this.controller.abort(signal.reason));
      if (signal.aborted) onAbort();
      else {
        signal.addEventListener('abort', onAbort, { once: true });
        this.unlink.push(() => signal.removeEventListener('abort', onAbort));
      }
    };
    follow(options.signal, true);
    follow(client.lifetime.signal, true);
    if (finite) {
      this.timer = setTimeout(() => {
        this.timedOut = true;
        this.controller.abort(this.timeoutError());
      }, this.timeoutMs);
      this.timer.unref?.();
    }
  }

  get signal() {
    return this.controller.signal;
  }

  abortAsCaller(reason) {
    this.callerReason ??= reason ?? new DOMException('the call was aborted', 'AbortError');
    this.controller.abort(this.callerReason);
  }

  callerAbortReason() {
    return this.callerReason;
  }

  timeoutError() {
    return new GatewayTimeoutError(`the gateway did not answer within ${this.timeoutMs} ms`, { requestId: this.requestId });
  }

  /** After a stream opened: the deadline becomes an idle timeout between two chunks. */
  idle() {
    clearTimeout(this.timer);
    this.timer = null;
    if (!Number.isFinite(this.timeoutMs) || this.timeoutMs <= 0) return;
    this.touch();
  }

  touch() {
    if (!Number.isFinite(this.timeoutMs) || this.timeoutMs <= 0) return;
    if (this.timer) this.timer.refresh();
    else {
      this.timer = setTimeout(() => {
        this.idleTimedOut = true;
        this.controller.abort(new GatewayStreamError(`no stream event for ${this.timeoutMs} ms`, { code: 'stream_timeout' }));
      }, this.timeoutMs);
      this.timer.unref?.();
    }
  }

  responseRequestId(response) {
    return response.headers.get('x-request-id') ?? this.requestId;
  }

  /** What a fallback handler receives: why, the gateway's error, and a signal of its own. */
  forFallback(reason, error) {
    const controller = new AbortController();
    const onAbort = () => controller.abort(this.callerReason);
    const cleanups = [];
    if (this.callerReason) controller.abort(this.callerReason);
    for (const signal of [this.options.signal, this.client.lifetime.signal]) {
      if (!signal) continue;
      signal.addEventListener('abort', onAbort, { once: true });
      cleanups.push(() => signal.removeEventListener('abort', onAbort));
    }
    let timer = null;
    if (Number.isFinite(this.timeoutMs) && this.timeoutMs > 0) {
      timer = setTimeout(() => controller.abort(new GatewayTimeoutError(`the fallback did not answer within ${this.timeoutMs} ms`)), this.timeoutMs);
      timer.unref?.();
    }
    return {
      context: { reason, error, requestId: this.requestId, signal: controller.signal },
      /** A fallback stream that started has no deadline any more (like the gateway's). */
      clearDeadline() {
        clearTimeout(timer);
      },
      cleanup() {
        clearTimeout(timer);
        for (const cleanup of cleanups) cleanup();
      },
    };
  }

  done() {
    clearTimeout(this.timer);
    this.timer = null;
    for (const unlink of this.unlink) unlink();
    this.unlink = [];
    // Ends a stream the consumer left early (bodies read to the end keep their connection).
    if (!this.complete && !this.controller.signal.aborted) this.controller.abort(new DOMException('the call ended', 'AbortError'));
  }
}

// -- helpers ---------------------------------------------------------------------------------

function eligible(error, reason) {
  error[REASON] = reason;
  return error;
}

function gatewayMeta(response, ctx) {
  const meta = { via: 'gateway', requestId: response.headers.get('x-request-id') ?? ctx.requestId };
  const cache = response.headers.get('x-aigateway-cache');
  if (cache) meta.cache = cache;
  const cost = Number.parseFloat(response.headers.get('x-aigateway-cost') ?? '');
  if (Number.isFinite(cost)) meta.cost = cost;
  return meta;
}

function normalizeBaseUrl(url) {
  const parsed = new URL(String(url));
  let path = parsed.pathname.replace(/\/+$/, '');
  if (path.endsWith('/v1')) path = path.slice(0, -3);
  return `${parsed.protocol}//${parsed.host}${path}`;
}

function normalizeFallback(fallback) {
  if (!fallback) return null;
  if (typeof fallback === 'function') {
    return {
      chat: (request, ctx) => fallback({ operation: 'chat', request, ...ctx }),
      chatStream: (request, ctx) => fallback({ operation: 'chatStream', request, ...ctx }),
      embed: ({ input, model }, ctx) => fallback({ operation: 'embed', input, model, ...ctx }),
      models: (ctx) => fallback({ operation: 'models', ...ctx }),
    };
  }
  const handlers = {};
  for (const name of ['chat', 'chatStream', 'embed', 'models']) {
    if (fallback[name] === undefined) continue;
    if (typeof fallback[name] !== 'function') throw new TypeError(`fallback.${name} must be a function`);
    handlers[name] = fallback[name].bind(fallback);
  }
  return handlers;
}

function isObject(value) {
  return Boolean(value) && typeof value === 'object' && !Array.isArray(value);
}

function keyPath(id, method) {
  if (typeof id !== 'string' || !id) throw new TypeError(`${method}() needs a key id`);
  return `/admin/keys/${encodeURIComponent(id)}`;
}

function checkChatRequest(request) {
  if (!request || typeof request !== 'object' || Array.isArray(request)) {
    throw new TypeError('a chat request is an object with model and messages');
  }
}

function withPriority(body, options) {
  if (options.priority !== undefined && body.priority === undefined) body.priority = options.priority;
  return body;
}

/** Native stream events for a whole native answer (a fallback that does not stream). */
async function* eventsFromResponse(answer) {
  const head = { id: answer?.id ?? null, provider: answer?.provider ?? 'fallback', model: answer?.model ?? null };
  if (answer?.content) yield { ...head, content: answer.content };
  if (answer?.tool_calls?.length) {
    yield { ...head, tool_calls: answer.tool_calls.map((call, index) => ({ index, ...call })) };
  }
  yield { ...head, finish_reason: answer?.finish_reason ?? 'stop' };
  if (answer?.usage) yield { ...head, usage: answer.usage };
}

/** `/v1/batch`'s answer as `[{index, ok, response | error}]`, one per request in order. */
function batchResults(answer, expected, requestId) {
  const list = Array.isArray(answer) ? answer
    : answer?.results ?? answer?.data ?? answer?.responses;
  if (!Array.isArray(list)) {
    throw new GatewayError('the gateway sent a batch answer without a results list', { status: 200, requestId, body: answer });
  }
  const results = new Array(Math.max(expected, list.length));
  list.forEach((item, position) => {
    const index = Number.isInteger(item?.index) ? item.index : position;
    const error = item?.error ?? item?.body?.error ?? item?.response?.error;
    if (error && typeof error === 'object') {
      const status = item.status ?? item.status_code ?? 0;
      results[index] = {
        index, ok: false,
        error: new GatewayError(error.message ?? 'the batch item failed', {
          status, type: error.type ?? null, code: error.code ?? null, param: error.param ?? null, requestId, body: item,
        }),
      };
    } else {
      const response = item?.response ?? item?.body ?? item;
      results[index] = { index, ok: true, response };
    }
  });
  for (let index = 0; index < results.length; index += 1) {
    results[index] ??= {
      index, ok: false,
      error: new GatewayError('the batch answer has no result for this item', { code: 'missing_result', requestId }),
    };
  }
  return results;
}

function asGatewayError(error, requestId) {
  if (error instanceof GatewayError) return error;
  return new GatewayError(error?.message ?? String(error), { code: 'fallback_error', requestId, cause: error });
}

async function mapLimited(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const index = next;
      next += 1;
      results[index] = await fn(items[index], index);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

function connectionCode(error) {
  let cause = error;
  for (let depth = 0; cause && depth < 5; depth += 1) {
    if (typeof cause.code === 'string') return cause.code;
    cause = cause.cause;
  }
  return null;
}

function describeCause(error) {
  const code = connectionCode(error);
  let inner = error;
  while (inner?.cause && inner.cause !== inner) inner = inner.cause;
  const message = inner?.message || error?.message || String(error);
  return code && !message.includes(code) ? `${code}: ${message}` : message;
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    function onAbort() {
      clearTimeout(timer);
      reject(signal.reason);
    }
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function raceSignal(promise, signal) {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => { signal.removeEventListener('abort', onAbort); resolve(value); },
      (error) => { signal.removeEventListener('abort', onAbort); reject(error); },
    );
  });
}

/** One signal that aborts when any of `signals` does; `unlink()` drops the listeners. */
function linkSignals(signals) {
  const controller = new AbortController();
  const cleanups = [];
  for (const signal of signals) {
    if (!signal) continue;
    if (signal.aborted) {
      controller.abort(signal.reason);
      break;
    }
    const onAbort = () => controller.abort(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    cleanups.push(() => signal.removeEventListener('abort', onAbort));
  }
  return { signal: controller.signal, unlink: () => cleanups.forEach((cleanup) => cleanup()) };
}
