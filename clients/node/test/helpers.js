// Real processes for the tests: the bundled mock provider and the gateway, on free loopback
// ports, spoken to over real HTTP and stopped (with their whole process group) afterwards.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { startGateway } from '../src/index.js';

export const PACKAGE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const FAKE_GATEWAY = path.join(PACKAGE_DIR, 'test', 'fixtures', 'fake-gateway.mjs');
export const TEST_KEY = 'sk-test-0123456789abcdefSECRET';
const MOCK_READY = 'mock provider listening on ';

/** The `aigateway` command: $AIGATEWAY_BIN, else the repository's .venv. */
export function aigatewayBin() {
  if (process.env.AIGATEWAY_BIN) return process.env.AIGATEWAY_BIN;
  const bin = path.resolve(PACKAGE_DIR, '../../.venv/bin/aigateway');
  if (!existsSync(bin)) {
    throw new Error(`${bin} does not exist: run \`make test\` at the repository root (it creates .venv), or set AIGATEWAY_BIN`);
  }
  return bin;
}

const groups = new Set();
process.on('exit', () => {
  for (const pgid of groups) {
    try { process.kill(-pgid, 'SIGKILL'); } catch { /* gone */ }
  }
});

/** The bundled mock provider (`aigateway mock-upstream --port 0`), with its control API. */
export async function startMock() {
  const child = spawn(aigatewayBin(), ['mock-upstream', '--host', '127.0.0.1', '--port', '0'], {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  groups.add(child.pid);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  let output = '';
  child.stderr.setEncoding('utf8').on('data', (text) => { output += text; });
  const url = await new Promise((resolve, reject) => {
    let buffer = '';
    const timer = setTimeout(() => reject(new Error(`the mock provider did not start:\n${output}`)), 30_000);
    child.stdout.setEncoding('utf8').on('data', (text) => {
      buffer += text;
      const line = buffer.split('\n').find((l) => l.startsWith(MOCK_READY));
      if (line) {
        clearTimeout(timer);
        resolve(line.slice(MOCK_READY.length).trim());
      }
    });
    exited.then(({ code }) => { clearTimeout(timer); reject(new Error(`the mock provider exited (${code}):\n${output}`)); });
  });
  const control = async (method, route, body) => {
    const response = await fetch(url + route, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) throw new Error(`${method} ${route}: HTTP ${response.status} ${await response.text()}`);
    return response.json();
  };
  return {
    url,
    baseUrl: `${url}/v1`,
    stats: () => control('GET', '/_mock/stats'),
    reset: () => control('POST', '/_mock/reset'),
    faults: (next = [], fallback = null) => control('POST', '/_mock/faults', { next, default: fallback }),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        try { process.kill(-child.pid, 'SIGTERM'); } catch { /* gone */ }
        const result = await Promise.race([exited, delay(5000, null)]);
        if (result === null) {
          try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
          await exited;
        }
      }
      groups.delete(child.pid);
    },
  };
}

/** The gateway's environment: our mock as every provider (or demo mode without one). */
export function gatewayEnv(mock, overrides = {}) {
  const env = Object.fromEntries(Object.entries(process.env)
    .filter(([name]) => !/^(OPENAI_|AI_GATEWAY_|GOOGLE_|ANTHROPIC_)/.test(name)));
  Object.assign(env, {
    MAX_WORKERS: '1',
    LOG_LEVEL: 'warning',
    INITIAL_DELAY_MS: '10',
    MAX_DELAY_MS: '200',
    REQUEST_TIMEOUT_SEC: '10',
    // The tests inject provider failures: keep circuits closed and probes off (as tests/servers.py).
    CIRCUIT_FAILURE_THRESHOLD: '0',
    HEALTH_CHECK_INTERVAL_SEC: '0',
  });
  if (mock) {
    Object.assign(env, {
      OPENAI_BASE_URL: mock.baseUrl,
      OPENAI_API_KEY: TEST_KEY,
      GOOGLE_AI_BASE_URL: `${mock.url}/gemini/v1beta`,
      GOOGLE_AI_API_KEY: TEST_KEY,
      ANTHROPIC_BASE_URL: `${mock.url}/anthropic/v1`,
      ANTHROPIC_API_KEY: TEST_KEY,
    });
  }
  return { ...env, ...overrides };
}

/** Options for startGateway() or a client's `gateway` option, for the real gateway. */
export function gatewayOptions(mock, { env, ...options } = {}) {
  return {
    command: aigatewayBin(),
    inheritEnv: false,
    env: gatewayEnv(mock, env),
    readyTimeoutMs: 30_000,
    stopTimeoutMs: 15_000,
    ...options,
  };
}

/** Starts the real gateway (`aigateway serve`) in front of `mock` (null: demo mode). */
export function startTestGateway(mock, options = {}) {
  return startGateway(gatewayOptions(mock, options));
}

export function chatRequest(text = 'Hello there', extra = {}) {
  return { model: 'gpt-4o-mini', messages: [{ role: 'user', content: text }], ...extra };
}

/** Polls `predicate` until it is true or `timeoutMs` passes. */
export async function waitFor(predicate, { timeoutMs = 10_000, intervalMs = 25, what = 'the condition' } = {}) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(intervalMs);
  }
}

/** Rejects with an error naming `what` if `promise` takes longer than `ms`. */
export function within(ms, promise, what = 'the operation') {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}
