// Lifecycle of a local gateway process: start `aigateway serve`, wait until /health answers,
// restart it with backoff when it exits unexpectedly, stop it with SIGTERM and wait for the
// drain.
//
// The gateway is spawned in a process group of its own (`detached: true`): Granian's worker
// processes and the demo mode's mock provider are its children and share that group, so a
// main process that died (even of SIGKILL) never leaves workers behind: the whole group is
// killed before a restart and after a stop.

import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { readFileSync, readdirSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';

const DEFAULT_RESTART = { maxRestarts: 5, backoffMs: 500, maxBackoffMs: 10_000, resetAfterMs: 60_000 };
const LOG_LINES = 200;

/** Every process group this module started and has not seen end, killed when Node exits. */
const liveGroups = new Set();
let exitHookInstalled = false;

function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const pgid of liveGroups) killGroup(pgid, 'SIGKILL');
  });
}

/** Starts a gateway and resolves once its /health answers. */
export async function startGateway(options = {}) {
  const gateway = new GatewayProcess(options);
  await gateway.start();
  return gateway;
}

export class GatewayProcess extends EventEmitter {
  constructor(options = {}) {
    super();
    const {
      command = process.env.AIGATEWAY_BIN || 'aigateway',
      args = ['serve'],
      env = {},
      inheritEnv = true,
      host = '127.0.0.1',
      port = 0,
      workers,
      cwd,
      readyTimeoutMs = 30_000,
      stopTimeoutMs = 30_000,
      restart = {},
      checkOwnership = true,
    } = options;
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new TypeError(`port must be an integer from 0 to 65535, got ${port}`);
    }
    this.command = command;
    this.args = [...args];
    this.extraEnv = { ...env };
    this.inheritEnv = inheritEnv;
    this.host = host;
    this.port = port;
    this.workers = workers;
    this.cwd = cwd;
    this.readyTimeoutMs = readyTimeoutMs;
    this.stopTimeoutMs = stopTimeoutMs;
    this.restartPolicy = restart === false ? null : { ...DEFAULT_RESTART, ...restart };
    this.checkOwnership = checkOwnership;
    this.state = 'idle';
    this.restarts = 0;
    this.child = null;
    this.consecutiveRestarts = 0;
    this.startedAt = 0;
    this.lastExit = null;
    this.logLines = [];
    this.restartTimer = null;
    this.stopping = null;
    this.readyWaiters = [];
  }

  /** `http://host:port` of the gateway. */
  get url() {
    const host = this.host.includes(':') ? `[${this.host}]` : this.host;
    return `http://${host}:${this.port}`;
  }

  /** PID of the current main process (null when none runs). */
  get pid() {
    return this.child && this.child.exitCode === null && this.child.signalCode === null
      ? this.child.pid : null;
  }

  /** The last lines the gateway wrote to stdout and stderr. */
  logs() {
    return [...this.logLines];
  }

  /** Resolves when the gateway is running (at once if it is); rejects if it stops or fails. */
  ready() {
    if (this.state === 'running') return Promise.resolve();
    if (this.state === 'stopped' || this.state === 'failed' || this.state === 'stopping') {
      return Promise.reject(new Error(`the gateway is ${this.state}`));
    }
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
  }

  async start() {
    if (this.state !== 'idle') throw new Error(`start() was already called (state: ${this.state})`);
    this.state = 'starting';
    installExitHook();
    try {
      if (this.port === 0) this.port = await freePort(this.host);
      await this.spawnAndWait();
    } catch (error) {
      if (this.state === 'starting') this.state = 'failed';
      this.settleReadyWaiters(error);
      throw error;
    }
    this.state = 'running';
    this.settleReadyWaiters();
    this.emit('ready', { pid: this.pid, url: this.url });
    return this;
  }

  /**
   * Sends SIGTERM to the main process and waits for it to exit (the gateway drains its
   * requests); past `timeoutMs` the process group is killed. Resolves with `{code, signal}`.
   */
  stop({ timeoutMs = this.stopTimeoutMs } = {}) {
    if (this.stopping) return this.stopping;
    this.stopping = (async () => {
      const previous = this.state;
      this.state = 'stopping';
      clearTimeout(this.restartTimer);
      this.restartTimer = null;
      let result = previous === 'failed' || previous === 'idle' ? this.lastExit : null;
      const child = this.child;
      if (child) {
        if (isRunning(child)) {
          try { process.kill(child.pid, 'SIGTERM'); } catch { /* already gone */ }
          const timer = delay(timeoutMs, null, { ref: false });
          result = await Promise.race([child.exited, timer]);
          if (result === null) {
            killGroup(child.pid, 'SIGKILL');
            result = await child.exited;
          }
        } else {
          result = await child.exited;
        }
        await this.reapGroup(child.pid);
      }
      this.lastExit = result;
      this.state = 'stopped';
      this.settleReadyWaiters(new Error('the gateway was stopped'));
      this.emit('stopped', result);
      return result;
    })();
    return this.stopping;
  }

  // -- internals ---------------------------------------------------------------------------

  buildEnv() {
    const env = this.inheritEnv ? { ...process.env } : {};
    Object.assign(env, this.extraEnv);
    if (this.workers !== undefined) env.MAX_WORKERS = String(this.workers);
    env.AI_GATEWAY_HOST = this.host;
    env.AI_GATEWAY_PORT = String(this.port);
    for (const [key, value] of Object.entries(env)) if (value === undefined) delete env[key];
    return env;
  }

  async spawnAndWait() {
    const child = spawn(this.command, this.args, {
      cwd: this.cwd,
      env: this.buildEnv(),
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', (error) => {
        // A process that could not be spawned emits no 'exit'.
        if (child.pid === undefined) resolve({ code: null, signal: null, error });
      });
    });
    this.child = child;
    if (child.pid !== undefined) liveGroups.add(child.pid);
    this.collectLogs(child.stdout, 'stdout');
    this.collectLogs(child.stderr, 'stderr');
    child.exited.then((result) => this.onExit(child, result));

    const deadline = Date.now() + this.readyTimeoutMs;
    for (;;) {
      const exit = await Promise.race([child.exited, Promise.resolve(null)]);
      if (exit) {
        const what = exit.error
          ? `could not run ${this.command}: ${exit.error.message} (set AIGATEWAY_BIN or the command option)`
          : `${this.command} exited (${exit.signal ?? `code ${exit.code}`}) before it was ready`;
        throw new Error(`${what}${this.tail()}`);
      }
      if (this.state === 'stopping' || this.state === 'stopped') throw new Error('the gateway was stopped while starting');
      if (Date.now() > deadline) {
        killGroup(child.pid, 'SIGKILL');
        await child.exited;
        await this.reapGroup(child.pid);
        throw new Error(`the gateway did not answer ${this.url}/health within ${this.readyTimeoutMs} ms${this.tail()}`);
      }
      if (await this.answersHealth(child.pid)) {
        this.startedAt = Date.now();
        return;
      }
      await Promise.race([delay(100), child.exited]);
    }
  }

  /** True when GET /health answers 200 from a worker of our own process group. */
  async answersHealth(pgid) {
    try {
      const response = await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(1000) });
      if (!response.ok) {
        await response.body?.cancel();
        return false;
      }
      const body = await response.json();
      // Granian binds with SO_REUSEPORT, so another server may share the port: make sure the
      // answer came from a process of the group we started.
      if (!this.checkOwnership || typeof body?.pid !== 'number') return true;
      const group = processGroupOf(body.pid);
      return group === null || group === pgid;
    } catch {
      return false;
    }
  }

  onExit(child, result) {
    if (child !== this.child) return;
    if (this.state === 'stopping' || this.state === 'stopped' || this.state === 'starting') return;
    if (this.state === 'restarting') return; // a restart attempt failing; handled there
    // Unexpected exit of a running gateway.
    this.lastExit = result;
    this.emit('exit', { ...result, pid: child.pid });
    this.scheduleRestart(child);
  }

  async scheduleRestart(deadChild) {
    const ranMs = Date.now() - this.startedAt;
    killGroup(deadChild.pid, 'SIGKILL'); // workers and the demo mock outlive a killed main
    await this.reapGroup(deadChild.pid);
    const policy = this.restartPolicy;
    if (policy && ranMs >= policy.resetAfterMs) this.consecutiveRestarts = 0;
    if (!policy || this.consecutiveRestarts >= policy.maxRestarts) {
      this.fail(new Error(policy
        ? `the gateway exited ${this.consecutiveRestarts + 1} times in a row; giving up after ${policy.maxRestarts} restarts${this.tail()}`
        : `the gateway exited (${describeExit(this.lastExit)}) and restarts are off${this.tail()}`));
      return;
    }
    if (this.state === 'stopping' || this.state === 'stopped') return;
    this.state = 'restarting';
    const wait = Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** this.consecutiveRestarts);
    this.consecutiveRestarts += 1;
    this.restartTimer = setTimeout(() => this.restartNow(), wait);
  }

  async restartNow() {
    this.restartTimer = null;
    if (this.state !== 'restarting') return;
    try {
      await this.spawnAndWait();
    } catch (error) {
      if (this.state !== 'restarting') return;
      this.emit('restartFailed', error);
      this.startedAt = Date.now();
      this.scheduleRestart(this.child);
      return;
    }
    if (this.state !== 'restarting') return;
    this.restarts += 1;
    this.state = 'running';
    this.emit('restart', { pid: this.pid, restarts: this.restarts });
    this.settleReadyWaiters();
    this.emit('ready', { pid: this.pid, url: this.url });
  }

  fail(error) {
    if (this.state === 'stopping' || this.state === 'stopped') return;
    this.state = 'failed';
    this.settleReadyWaiters(error);
    this.emit('failed', error);
  }

  settleReadyWaiters(error) {
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const { resolve, reject } of waiters) (error ? reject(error) : resolve());
  }

  /** Kills what is left of a process group and waits (briefly) until it is gone. */
  async reapGroup(pgid) {
    killGroup(pgid, 'SIGKILL');
    const until = Date.now() + 2000;
    while (groupAlive(pgid) && Date.now() < until) await delay(20);
    liveGroups.delete(pgid);
  }

  collectLogs(stream, name) {
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (text) => {
      const lines = (partial + text).split('\n');
      partial = lines.pop();
      for (const line of lines) this.addLog(line, name);
    });
    stream.on('end', () => { if (partial) this.addLog(partial, name); });
  }

  addLog(line, stream) {
    this.logLines.push(line);
    if (this.logLines.length > LOG_LINES) this.logLines.shift();
    this.emit('log', line, stream);
  }

  tail() {
    const lines = this.logLines.slice(-15);
    return lines.length ? `\n--- last gateway output ---\n${lines.join('\n')}` : '';
  }
}

function isRunning(child) {
  return child.pid !== undefined && child.exitCode === null && child.signalCode === null;
}

function describeExit(exit) {
  if (!exit) return 'unknown';
  return exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`;
}

function killGroup(pgid, signal) {
  if (!pgid) return;
  try { process.kill(-pgid, signal); } catch { /* no such group: already gone */ }
}

/** Process group of `pid` from /proc (Linux), or null when it cannot be told. */
export function processGroupOf(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[2]);
  } catch {
    return null;
  }
}

/** PIDs of the live (not zombie) processes of a group, from /proc; null off Linux. */
export function groupMembers(pgid) {
  let entries;
  try {
    entries = readdirSync('/proc');
  } catch {
    return null;
  }
  const members = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) === pgid && fields[0] !== 'Z' && fields[0] !== 'X') members.push(Number(entry));
    } catch { /* it ended meanwhile */ }
  }
  return members;
}

function groupAlive(pgid) {
  const members = groupMembers(pgid);
  if (members !== null) return members.length > 0;
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A port that was free a moment ago on `host`. */
export function freePort(host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}
