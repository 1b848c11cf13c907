"""Running a plan: start what each step needs, measure it, stop everything afterwards.

One mock provider runs at a time (``--workers 1``, so its call counter is the node's);
the targets in front of it start on first use and stay up until the mock configuration
changes. Each step: a short warm-up with unique requests, then a snapshot (CPU of the
target, the mock and the machine; the mock's call counter), the measured load, and a
second snapshot. :meth:`Environment.close` stops every process the bench started.

With ``--profile`` py-spy records one gateway worker during each gateway measurement; a
``soak`` step samples the workers' resident memory while its load runs, a ``hostile`` one
every second, and starts the attacker (``bench/hostile.py``) before its load.

The ``cluster`` scenario's targets run on one scratch ``redis-server`` the run starts on
first use (``bench/cluster_demo.py``'s :class:`RedisProcess`): ``gateway+redis`` is one
node with ``REDIS_URL``, ``cluster`` two of them measured as one (``bench/cluster.py``'s
:class:`NodeGroup`, the load spread over both). Redis's CPU is counted apart, and its
command counters are read around each load of these targets (``bench/redis_counters.py``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from aigateway.bench import bodies, procs, soak
from aigateway.bench.cluster import NodeGroup, cross_node_figures, largest_excess, redis_figures
from aigateway.bench.cluster_demo import RedisProcess, node_variables
from aigateway.bench.hostile import MEMORY_SAMPLE_S, Attacker
from aigateway.bench.loadclient import observed_rate, parse_output, steady_window
from aigateway.bench.procs import HOST, MockService, Service, ServiceError, free_port
from aigateway.bench.profile import file_stem
from aigateway.bench.progress import Progress
from aigateway.bench.pyspy import Profiler
from aigateway.bench.redis_counters import CommandMonitor, commands_between, commandstats
from aigateway.bench.scenarios import SOAK_REPEAT_EVERY, SOAK_REPEAT_POOL, MockConfig, Step
from aigateway.bench.trace import TraceSpec, generate_trace
from aigateway.bench.wrk import WrkError, lua_script, parse_wrk_output, wrk_command
from aigateway.cluster.keys import Keys

UPSTREAM_MAX_CONNS = 1024  # per worker, gateway and passthrough alike: never the limit here
CLUSTER_NAME = "bench"  # the nodes' CLUSTER_NAME: their keys in the bench's Redis
REDIS_TARGETS = ("gateway+redis", "cluster")
PROFILED = ("gateway", "gateway+redis")  # one node: one worker of it is profiled
Server = Service | NodeGroup


@dataclass
class RunConfig:
    wrk: str
    work_dir: Path
    duration_s: int = 10
    warmup_s: int = 1
    workers: int = 2
    upstream_client: str = "aiohttp"
    wrk_threads: int = 2
    # repeat a measurement while other processes took more than this (% of one core)
    max_other_pct: float | None = 25.0
    retries: int = 1
    python: str = sys.executable
    trace: TraceSpec = field(default_factory=TraceSpec)
    profile_dir: Path | None = None  # --profile: py-spy profiles of gateway workers go here
    pyspy: str = "py-spy"


UNLIMITED_RPS = 1_000_000


def _clean_env() -> dict[str, str]:
    """The environment without any gateway setting the user may have exported."""
    from aigateway.config import VARIABLES, WORKER_SETTINGS_ENV

    names = {name for name, *_ in VARIABLES} | {WORKER_SETTINGS_ENV}
    return {k: v for k, v in os.environ.items() if k not in names}


class Environment:
    """The processes of a run; use as a context manager so that they always stop."""

    def __init__(
        self, config: RunConfig, progress: Progress, started: list[dict[str, Any]] | None = None
    ) -> None:
        self.config = config
        self.progress = progress
        self.mock: MockService | None = None
        self.mock_config: MockConfig | None = None
        self.targets: dict[tuple[str, int, tuple[tuple[str, str], ...], int], Server] = {}
        self.redis: RedisProcess | None = None
        # every server started: name, pid, url
        self.started: list[dict[str, Any]] = [] if started is None else started
        self._names: dict[str, int] = {}
        self._profile_stems: set[str] = set()

    def profile_stem(self, key: str) -> str:
        """A file name for a measurement's profile; a repeated measurement gets its own."""
        stem = base = file_stem(key)
        number = 1
        while stem in self._profile_stems:
            number += 1
            stem = f"{base}.{number}"
        self._profile_stems.add(stem)
        return stem

    def __enter__(self) -> Environment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _name(self, base: str) -> str:
        self._names[base] = self._names.get(base, 0) + 1
        return f"{base}-{self._names[base]}"

    def mock_for(self, config: MockConfig) -> MockService:
        if self.mock is not None and self.mock_config == config and self.mock.alive():
            return self.mock
        self.close()
        port = free_port()
        args = [
            self.config.python, "-m", "aigateway.testing.mock_provider", "--host", HOST,
            "--port", str(port), "--latency-ms", f"{config.latency_ms:g}",
            "--stream-chunk-delay-ms", f"{config.chunk_delay_ms:g}",
        ]  # fmt: skip
        self.progress.say(f"starting the mock provider ({config.describe()}) on port {port}")
        self.mock = MockService.start(
            self._name("mock"), args, _clean_env(), f"http://{HOST}:{port}", "/_mock/stats",
            self.config.work_dir,
        )  # fmt: skip
        self._record(self.mock)
        self.mock_config = config
        return self.mock

    def redis_for(self) -> RedisProcess:
        """The run's scratch Redis, started on first use (stopped with the targets)."""
        if self.redis is not None and self.redis.alive():
            return self.redis
        self.redis = RedisProcess.start()
        self.progress.say(f"started redis-server on port {self.redis.port}")
        self.started.append({"name": "redis", "pid": self.redis.pid, "url": self.redis.url})
        return self.redis

    def _gateway_env(
        self, port: int, workers: int, settings: tuple[tuple[str, str], ...]
    ) -> dict[str, str]:
        assert self.mock is not None, "start the mock first"
        env = _clean_env()
        env.update(
            AI_GATEWAY_HOST=HOST,
            AI_GATEWAY_PORT=str(port),
            MAX_WORKERS=str(workers),
            LOG_LEVEL="warning",
            OPENAI_BASE_URL=self.mock.url + "/v1",
            OPENAI_API_KEY=bodies.API_KEY,
            OPENAI_MAX_CONNS=str(UPSTREAM_MAX_CONNS),
            # The mock has no rate limit: the gateway's own (50/s by default) would
            # measure admission control instead of the gateway's throughput.
            OPENAI_RPS=str(UNLIMITED_RPS),
            UPSTREAM_CLIENT=self.config.upstream_client,
            # Tenant keys of the run's own: a user's keys must not make /v1/* ask for them.
            AI_GATEWAY_DATA_DIR=str(self.config.work_dir / f"data-{port}"),
        )
        env.update(dict(settings))  # a scenario's own limits (admission)
        return env

    def _start_nodes(
        self, kind: str, count: int, workers: int, settings: tuple[tuple[str, str], ...]
    ) -> Server:
        """``count`` gateway nodes on the run's Redis (one: a Service, more: a group)."""
        redis = self.redis_for()
        nodes: list[Service] = []
        try:
            for index in range(count):
                port = free_port()
                env = self._gateway_env(port, workers, settings)
                env.update(node_variables(index, redis.url), CLUSTER_NAME=CLUSTER_NAME)
                self.progress.say(
                    f"starting {kind} node {index + 1}/{count} with {workers} worker(s) "
                    f"on port {port}"
                )
                args = [self.config.python, "-m", "aigateway.cli", "serve"]
                node = Service.start(
                    self._name(f"{kind}-w{workers}"), args, env, f"http://{HOST}:{port}",
                    "/health", self.config.work_dir,
                )  # fmt: skip
                self._record(node)
                nodes.append(node)
        except BaseException:
            for node in nodes:
                node.stop()
            raise
        return nodes[0] if count == 1 else NodeGroup(self._name(kind), nodes)

    def target(
        self,
        kind: str,
        workers: int,
        settings: tuple[tuple[str, str], ...] = (),
        nodes: int = 1,
    ) -> Server | None:
        """The server of a target (None for direct: the mock itself), started on first use;
        ``settings``: more environment of the gateway (e.g. its ``OPENAI_RPS``); ``nodes``:
        of a ``cluster``."""
        if kind == "direct":
            return None
        assert self.mock is not None, "start the mock first"
        running = self.targets.get((kind, workers, settings, nodes))
        if running is not None:
            if running.alive():
                return running
            raise ServiceError(f"{running.name} died; its log:\n{running.log_tail()}")
        if kind in REDIS_TARGETS:
            server = self._start_nodes(kind, nodes, workers, settings)
            self.targets[(kind, workers, settings, nodes)] = server
            return server
        port = free_port()
        env = _clean_env()
        if kind == "gateway":
            args = [self.config.python, "-m", "aigateway.cli", "serve"]
            env = self._gateway_env(port, workers, settings)
        else:
            args = [
                self.config.python, "-m", "aigateway.bench.baselines", kind,
                "--host", HOST, "--port", str(port), "--workers", str(workers),
            ]  # fmt: skip
            env["AIGATEWAY_BENCH_BASELINE"] = orjson.dumps(
                {
                    "upstream": self.mock.url + "/v1",
                    "api_key": bodies.API_KEY,
                    "client": self.config.upstream_client,
                    "max_connections": UPSTREAM_MAX_CONNS,
                }
            ).decode()
        self.progress.say(f"starting {kind} with {workers} worker(s) on port {port}")
        service = Service.start(
            self._name(f"{kind}-w{workers}"), args, env, f"http://{HOST}:{port}", "/health",
            self.config.work_dir,
        )  # fmt: skip
        self._record(service)
        self.targets[(kind, workers, settings, nodes)] = service
        return service

    def _record(self, service: Service) -> None:
        self.started.append({"name": service.name, "pid": service.pid, "url": service.url})

    def close(self) -> None:
        """Stop the targets, then the mock (each by its own process id); a second Ctrl-C
        does not cut this short."""
        with _signals_ignored():
            while self.targets:
                _, service = self.targets.popitem()
                service.stop()
            if self.mock is not None:
                mock, self.mock = self.mock, None
                mock.stop()
            if self.redis is not None:
                redis, self.redis = self.redis, None
                redis.stop()
            self.mock_config = None


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class _Snapshot:
    at: float
    machine: procs.MachineCpu
    own_cpu: float  # this process: it polls the mock and /proc while the load runs
    target_cpu: float | None
    mock_cpu: float
    calls: int
    redis_cpu: float | None = None
    redis_commands: dict[str, int] | None = None  # INFO commandstats: calls by command

    @classmethod
    def take(
        cls, mock: MockService, target: Server | None, redis: RedisProcess | None = None
    ) -> _Snapshot:
        return cls(
            time.monotonic(),
            procs.machine_cpu(),
            procs.self_cpu_seconds(),
            None if target is None else target.cpu_seconds(),
            mock.cpu_seconds(),
            mock.calls(),
            None if redis is None else procs.cpu_seconds(redis.pid),
            None if redis is None else commandstats(redis.port),
        )


def _wait_quiet(max_pct: float, progress: Progress, timeout_s: float = 5.0) -> None:
    """Wait (a while) until other processes leave the machine's CPU alone."""
    deadline = time.monotonic() + timeout_s
    busy = procs.machine_busy_pct()
    if busy <= max_pct:
        return
    progress.say(f"other processes use {busy:.0f}% of a core: waiting up to {timeout_s:g} s")
    while busy > max_pct and time.monotonic() < deadline:
        busy = procs.machine_busy_pct()


def measure_undisturbed(step: Step, env: Environment, progress: Progress) -> dict[str, Any]:
    """:func:`measure`, repeated (``config.retries`` times at most) while processes outside
    the bench took more than ``config.max_other_pct`` of a core; the least disturbed row."""
    config = env.config
    best: dict[str, Any] | None = None
    # a soak is about memory over minutes: never run it twice for a disturbed throughput
    retries = 0 if step.load == "soak" else config.retries
    for attempt in range(1, retries + 2):
        row = measure(step, env, progress)
        row["attempts"] = attempt
        if best is None or row["other_pct"] < best["other_pct"]:
            best = row
        if config.max_other_pct is None or row["other_pct"] <= config.max_other_pct:
            break
        if attempt <= retries:
            progress.say(
                f"other processes took {row['other_pct']:.0f}% of a core during the "
                "measurement: measuring again"
            )
    assert best is not None
    return best


def _settle(mock: MockService, timeout_s: float = 3.0) -> None:
    """Wait until requests a generator abandoned at its end have reached the mock."""
    deadline = time.monotonic() + timeout_s
    last, steady = mock.calls(), 0
    while steady < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        now = mock.calls()
        steady = steady + 1 if now == last else 0
        last = now


def _wrk_body(load: str) -> bytes | tuple[bytes, bytes] | bodies.MixedBodies:
    if load == "identical":
        return bodies.identical_body()
    if load == "soak":
        return bodies.mixed_body_parts(secrets.token_hex(4), SOAK_REPEAT_EVERY, SOAK_REPEAT_POOL)
    return bodies.unique_body_parts(secrets.token_hex(4))


def _run_wrk(
    config: RunConfig, url: str, step: Step, load: str, seconds: int, tick: Callable[[float], None]
) -> tuple[dict[str, Any], float]:
    """wrk against one URL (a group's load goes through the load client)."""
    name = f"wrk-{secrets.token_hex(3)}"
    script = config.work_dir / f"{name}.lua"
    headers = {"Authorization": f"Bearer {bodies.API_KEY}"}
    script.write_text(lua_script(_wrk_body(load), bodies.CHAT_PATH, headers))
    command = wrk_command(
        config.wrk, url, str(script), step.concurrency, seconds, config.wrk_threads
    )
    code, out, cpu = procs.run_generator(
        command, config.work_dir / f"{name}.out", seconds + 30, tick
    )
    if code != 0:
        raise WrkError(f"wrk exited with code {code}:\n{out.strip()[-1000:]}")
    parsed = parse_wrk_output(out)
    latency = parsed.latency_ms
    figures: dict[str, Any] = {
        "requests": parsed.requests,
        "duration_s": parsed.duration_s,
        "rps": parsed.rps,
        "p50_ms": latency.get("p50"),
        "p90_ms": latency.get("p90"),
        "p99_ms": latency.get("p99"),
        "errors": parsed.error_count,
        "extra": {"errors_by_kind": parsed.errors, "parsed_from": parsed.source},
    }
    if parsed.notes:
        figures["extra"]["notes"] = parsed.notes
    return figures, cpu


def _run_client(
    config: RunConfig,
    urls: list[str],
    step: Step,
    seconds: int,
    tick: Callable[[float], None],
) -> tuple[dict[str, Any], float]:
    name = f"client-{secrets.token_hex(3)}"
    command = [
        config.python, "-m", "aigateway.bench.loadclient", step.load,
        "--concurrency", str(step.concurrency), "--duration", str(seconds),
    ]  # fmt: skip
    for url in urls:
        command += ["--url", url]
    if step.load == "open-loop":
        command += ["--rate", f"{step.offered_rps:g}", "--seed", str(config.trace.seed)]
    if step.load == "trace":
        trace_file = config.work_dir / "trace.jsonl"
        if not trace_file.exists():
            lines = (orjson.dumps(r.to_json()) for r in generate_trace(config.trace))
            trace_file.write_bytes(b"\n".join(lines) + b"\n")
        command += ["--trace", str(trace_file)]
    code, out, cpu = procs.run_generator(
        command, config.work_dir / f"{name}.out", seconds + 90, tick
    )
    if code != 0:
        raise ServiceError(f"the load client exited with code {code}:\n{out.strip()[-1000:]}")
    result = parse_output(out)
    latency = result["latency_ms"]
    duration = float(result["duration_s"])
    skip = ("requests", "duration_s", "latency_ms")
    extra = {k: v for k, v in result.items() if k not in skip}
    figures: dict[str, Any] = {
        "requests": result["requests"],
        "duration_s": duration,
        "rps": result["requests"] / duration if duration > 0 else 0.0,
        "p50_ms": latency["p50"],
        "p90_ms": latency["p90"],
        "p99_ms": latency["p99"],
        "errors": result["errors"],
        "extra": extra,
    }
    return figures, cpu


def measure(step: Step, env: Environment, progress: Progress) -> dict[str, Any]:
    """One measurement: warm up, snapshot, load, snapshot; the result row as a dict."""
    config = env.config
    mock = env.mock_for(step.mock)
    target = env.target(step.target, step.workers, step.gateway_env, step.nodes)
    url = (target or mock).url
    if config.max_other_pct is not None:
        _wait_quiet(config.max_other_pct, progress)
    if config.warmup_s > 0:
        # every node of a group: the load spreads over them
        for node_url in target.urls if isinstance(target, NodeGroup) else [url]:
            _run_wrk(
                config, node_url, step, "unique", config.warmup_s,
                lambda t: progress.tick("warm-up", t, config.warmup_s),
            )  # fmt: skip
    _settle(mock)
    attacker = None
    if step.hostile is not None and target is not None:
        progress.say(f"attacker: opening {step.hostile.describe()}")
        attacker = Attacker.start(config.python, target.url, step.hostile, config.work_dir)
    try:
        row = _measure_load(step, env, progress, mock, target, url, attacker)
    except BaseException:
        if attacker is not None:
            attacker.kill()
        raise
    if attacker is not None:
        row["extra"]["attacker"] = attacker.stop()
    return row


def _measure_load(
    step: Step,
    env: Environment,
    progress: Progress,
    mock: MockService,
    target: Server | None,
    url: str,
    attacker: Attacker | None,
) -> dict[str, Any]:
    config = env.config
    redis = env.redis if step.target in REDIS_TARGETS else None
    before = _Snapshot.take(mock, target, redis)
    monitor = None
    # MONITOR costs Redis a copy of each command: the two-node steps, and hits (which
    # send next to none), so that their request path and the agent's are told apart
    hits = step.target == "gateway+redis" and step.load == "identical"
    if redis is not None and (isinstance(target, NodeGroup) or hits):
        monitor = CommandMonitor(redis.port, Keys(CLUSTER_NAME))
    attacker_cpu = attacker.cpu_seconds() if attacker is not None else 0.0
    seconds = step.duration_s or config.duration_s
    memory = None
    if step.load == "soak" and target is not None:
        memory = soak.RssRecorder(_worker_memory(target))
        memory.sample(0.0)
    elif step.scenario == "hostile" and target is not None:
        memory = soak.RssRecorder(_worker_memory(target), MEMORY_SAMPLE_S)
        memory.sample(0.0)
    profiler = _profiler(step, target, env, seconds)
    profile: dict[str, Any] | None = None
    profiler_cpu = 0.0
    load_started = time.monotonic()

    def tick(elapsed: float) -> None:
        progress.tick("measuring", elapsed, seconds)
        if memory is not None:
            memory.tick(elapsed)
        if profiler is not None:
            profiler.tick(elapsed)

    urls = target.urls if isinstance(target, NodeGroup) else [url]
    try:
        if step.load in ("unique", "identical", "soak"):
            figures, generator_cpu = _run_wrk(config, url, step, step.load, seconds, tick)
        else:
            figures, generator_cpu = _run_client(config, urls, step, seconds, tick)
        if memory is not None:
            memory.finish(time.monotonic() - load_started)
        if profiler is not None:
            profile, profiler_cpu = profiler.finish(figures["requests"], seconds + 30.0)
            _say_profile(progress, profile)
    finally:
        if profiler is not None:
            profiler.stop()
        monitored = None if monitor is None else monitor.stop()
    _settle(mock)
    after = _Snapshot.take(mock, target, redis)
    window = max(after.at - before.at, 1e-9)
    cpu_s = {"mock": after.mock_cpu - before.mock_cpu, "generator": generator_cpu}
    if attacker is not None:
        cpu_s["attacker"] = attacker.cpu_seconds() - attacker_cpu
    if after.target_cpu is not None and before.target_cpu is not None:
        cpu_s["target"] = after.target_cpu - before.target_cpu
    if after.redis_cpu is not None and before.redis_cpu is not None:
        cpu_s["redis"] = after.redis_cpu - before.redis_cpu
    machine_total = max(after.machine.total - before.machine.total, 1e-9)
    machine_busy = after.machine.busy - before.machine.busy
    # CPU that none of the measured processes used: other processes on the machine
    # (interrupt time, mostly our own loopback traffic, is left out)
    other = machine_busy - (after.machine.interrupts - before.machine.interrupts)
    other -= sum(cpu_s.values()) + after.own_cpu - before.own_cpu + profiler_cpu
    row: dict[str, Any] = {
        "key": step.key,
        "scenario": step.scenario,
        "target": step.target,
        "concurrency": step.concurrency,
        "workers": step.workers,
        "nodes": step.nodes,
        "mock_latency_ms": step.mock.latency_ms,
        "mock_chunk_delay_ms": step.mock.chunk_delay_ms,
        "load": step.load,
        "label": step.label,
        **figures,
        # the load client's own warm-up (opening its connections) is not part of the run
        "provider_calls": after.calls - before.calls - figures["extra"].get("warmup_requests", 0),
        "window_s": window,
        "cpu_s": cpu_s,
        "cpu_pct": {name: 100.0 * value / window for name, value in cpu_s.items()},
        "cpu_ms_per_request": {
            name: 1000.0 * value / figures["requests"] if figures["requests"] else None
            for name, value in cpu_s.items()
        },
        "machine_busy_pct": 100.0 * machine_busy / machine_total,
        "other_pct": max(0.0, 100.0 * other / window),
        "rss_mb": None,
        "rss_per_worker_mb": None,
        "private_per_worker_mb": None,
        "mapped_per_worker_mb": None,
    }
    if target is not None:
        rss, count = target.worker_rss_bytes()
        row["rss_mb"] = rss / 2**20
        row["rss_per_worker_mb"] = rss / 2**20 / max(count, 1)
        row["private_per_worker_mb"] = target.worker_private_bytes() / 2**20 / max(count, 1)
        row["mapped_per_worker_mb"] = target.worker_mapped_bytes() / 2**20 / max(count, 1)
    if step.load == "trace":
        extra = row["extra"]
        requests = int(row["requests"])
        extra["hit_rate"] = extra.get("hits", 0) / requests if requests else 0.0
        extra["provider_calls_avoided"] = requests - row["provider_calls"]
        if step.nodes > 1:
            extra.update(cross_node_figures(extra))
    if step.load == "open-loop":
        _add_provider_rate(row, step, mock)
    if before.redis_commands is not None and after.redis_commands is not None:
        commands = commands_between(before.redis_commands, after.redis_commands)
        row["extra"]["redis"] = redis_figures(int(row["requests"]), commands, monitored)
    if memory is not None:
        row["extra"].update(soak.summarise_rss(memory.samples))
    if profile is not None:
        row["profile"] = profile
    return row


def _worker_memory(target: Server) -> Callable[[], soak.Reading]:
    def read() -> soak.Reading:
        return {pid: procs.memory_bytes(pid) for pid in target.worker_pids()}

    return read


def _profiler(step: Step, target: Server | None, env: Environment, seconds: int) -> Profiler | None:
    """py-spy on one gateway worker for the load's duration (``--profile`` only)."""
    config = env.config
    if config.profile_dir is None or step.target not in PROFILED or target is None:
        return None
    stem = env.profile_stem(step.key)
    return Profiler(config.pyspy, target.pid, seconds, config.profile_dir, stem)


def _say_profile(progress: Progress, profile: dict[str, Any]) -> None:
    if "error" in profile:
        progress.say(f"profile: py-spy failed ({profile['error']}); measuring on without it")
    else:
        progress.say(f"profile: {profile['summary']}")


def _add_provider_rate(row: dict[str, Any], step: Step, mock: MockService) -> None:
    """The rate the provider saw over the steady middle of an open-loop run, from the
    mock's call times: the bucket's burst (one second's worth) first drains at
    ``offered - limit`` per second, so that long is skipped at the start."""
    extra = row["extra"]
    limit = step.provider_rps
    extra["provider_limit_rps"] = limit
    skip = 1.0
    if limit and step.offered_rps > limit:
        skip = max(skip, limit / (step.offered_rps - limit))
    window = steady_window(float(extra["schedule_s"]), skip)
    call_times = mock.call_times()
    started = float(extra["started_wall"])
    rate, calls = observed_rate(call_times, started, window)
    extra["provider_rate_window_s"] = list(window)
    extra["provider_rate_calls"] = calls
    extra["provider_observed_rps"] = rate
    if limit:  # from the load's start on: the warm-up's calls came before the settle
        excess = largest_excess([t for t in call_times if t >= started], limit)
        extra["provider_excess_calls"] = excess
