// Latency and error counts for one path (the gateway, or the fallback).

const WINDOW = 1024; // latency samples kept for the percentiles

export class PathMetrics {
  constructor() {
    this.reset();
  }

  reset() {
    this.requests = 0;
    this.successes = 0;
    this.errors = 0;
    this.errorsByKind = {};
    this.count = 0;
    this.totalMs = 0;
    this.maxMs = 0;
    this.samples = new Float64Array(WINDOW);
    this.next = 0;
  }

  success(latencyMs) {
    this.requests += 1;
    this.successes += 1;
    this.count += 1;
    this.totalMs += latencyMs;
    if (latencyMs > this.maxMs) this.maxMs = latencyMs;
    this.samples[this.next % WINDOW] = latencyMs;
    this.next += 1;
  }

  failure(kind) {
    this.requests += 1;
    this.errors += 1;
    this.errorsByKind[kind] = (this.errorsByKind[kind] ?? 0) + 1;
  }

  snapshot() {
    const kept = Math.min(this.next, WINDOW);
    const sorted = Array.from(this.samples.subarray(0, kept)).sort((a, b) => a - b);
    const pick = (q) => (kept ? round(sorted[Math.min(kept - 1, Math.ceil(q * kept) - 1)]) : null);
    return {
      requests: this.requests,
      successes: this.successes,
      errors: this.errors,
      errorsByKind: { ...this.errorsByKind },
      latencyMs: {
        count: this.count,
        mean: this.count ? round(this.totalMs / this.count) : null,
        p50: pick(0.5),
        p95: pick(0.95),
        p99: pick(0.99),
        max: this.count ? round(this.maxMs) : null,
      },
    };
  }
}

function round(ms) {
  return Math.round(ms * 1000) / 1000;
}
