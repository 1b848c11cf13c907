// Typed errors of the client. Every failure a caller sees is one of these (or the
// caller's own AbortSignal reason when it aborted the call itself).

/**
 * An error answered by the gateway (OpenAI's shape `{"error": {message, type, param, code}}`)
 * or met on the way to it. `status` is the HTTP status, or 0 when no HTTP answer came.
 */
export class GatewayError extends Error {
  constructor(message, { status = 0, type = null, code = null, param = null, requestId = null,
    retryAfterMs = null, body = undefined, cause = undefined } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'GatewayError';
    this.status = status;
    this.type = type;
    this.code = code;
    this.param = param;
    this.requestId = requestId;
    this.retryAfterMs = retryAfterMs;
    this.body = body;
  }
}

/**
 * The gateway could not be reached (connection refused or reset, the gateway known to be
 * down, a lazily started gateway that did not start) or answered 503, and no fallback took
 * the request.
 */
export class GatewayUnavailableError extends GatewayError {
  constructor(message, options = {}) {
    super(message, withDefaults(options, { type: 'gateway_unavailable', code: 'gateway_unavailable' }));
    this.name = 'GatewayUnavailableError';
  }
}

/**
 * The call's deadline passed: the client's `timeoutMs` (status 0, code `timeout`), or the
 * gateway answered 504 (its own deadline, or the remaining time the client sent it).
 */
export class GatewayTimeoutError extends GatewayError {
  constructor(message, options = {}) {
    super(message, withDefaults(options, { type: 'timeout_error', code: 'timeout' }));
    this.name = 'GatewayTimeoutError';
  }
}

/**
 * An error inside a stream that had already started: an `data: {"error": …}` event, a
 * connection cut before `[DONE]`, or more than `timeoutMs` of silence between two events.
 */
export class GatewayStreamError extends GatewayError {
  constructor(message, options = {}) {
    super(message, withDefaults(options, { status: 200 }));
    this.name = 'GatewayStreamError';
  }
}

/** The gateway was unavailable and the fallback, called in its place, failed too. */
export class FallbackError extends Error {
  constructor(message, { cause, gatewayError }) {
    super(message, { cause });
    this.name = 'FallbackError';
    this.gatewayError = gatewayError;
  }
}

function withDefaults(options, defaults) {
  const merged = { ...options };
  for (const [key, value] of Object.entries(defaults)) merged[key] ??= value;
  return merged;
}

/** Builds a GatewayError from an HTTP answer's status, headers and (parsed or raw) body. */
export function errorFromResponse(status, headers, body, sentRequestId) {
  const requestId = headers.get('x-request-id') ?? sentRequestId ?? null;
  const retryAfterMs = parseRetryAfter(headers);
  const error = body && typeof body === 'object' && body.error && typeof body.error === 'object'
    ? body.error : null;
  const message = typeof error?.message === 'string' && error.message
    ? error.message
    : `gateway answered HTTP ${status}${typeof body === 'string' && body ? `: ${body.slice(0, 200)}` : ''}`;
  const options = {
    status,
    type: error?.type ?? null,
    code: error?.code ?? null,
    param: error?.param ?? null,
    requestId,
    retryAfterMs,
    body,
  };
  if (status === 503) return new GatewayUnavailableError(message, options);
  // The deadline passed at the gateway: its own, or the one the client sent it.
  if (status === 504) return new GatewayTimeoutError(message, options);
  return new GatewayError(message, options);
}

/** `retry-after-ms` or `retry-after` (seconds or an HTTP date) in milliseconds, else null. */
export function parseRetryAfter(headers) {
  const ms = headers.get('retry-after-ms');
  if (ms !== null && ms.trim() !== '' && Number.isFinite(Number(ms))) return Math.max(0, Number(ms));
  const value = headers.get('retry-after');
  if (value === null || value.trim() === '') return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, date - Date.now());
}
