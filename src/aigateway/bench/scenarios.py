"""The scenarios: which targets are measured, under which load, in what order (no I/O here).

A scenario expands into steps; a step is one measurement of one target:

* ``direct``       wrk straight to the mock provider (the generator's and mock's ceiling)
* ``passthrough``  a bare Starlette-on-Granian relay with one pooled client per worker
* ``constant``     a bare Starlette-on-Granian app answering one fixed completion
* ``gateway``      ``aigateway serve``

The ``admission`` scenario runs the gateway with a provider rate limit (``OPENAI_RPS``),
a small queue and a short deadline, under an open-loop load (a fixed arrival rate above
the limit) of unique requests with mixed priorities.

The ``hostile`` scenario runs the same closed-loop load on the gateway twice: once quiet,
once while an attacker process holds thousands of idle and slowloris connections and a
slow reader drains a large stream (``bench/attacker.py``); it compares the normal
clients' latency and errors and samples each worker's memory. It needs many file
descriptors and loads the machine, so it runs only when named.

The ``soak`` scenario (memory over time) runs the gateway alone for ``--soak-duration``
seconds under a steady mix of cache misses and hits. It takes minutes, so it is not part
of the default set (:data:`DEFAULT_SCENARIOS`): it runs only when named.

The ``cluster`` scenario (only when named: it needs ``redis-server``) runs gateway nodes
on one Redis: two nodes under an open-loop load over a provider limit spread over both
(the provider's rate against the limit, Redis commands per request), the trace replayed
over both nodes (cross-node hits), and one node with Redis against the same node without
it, pair by pair (misses at 1 and 16 connections, hits at 16).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

SCENARIOS = (
    "overhead", "miss-frontier", "hit-frontier", "stream", "trace", "workers", "admission",
    "soak", "hostile", "cluster",
)  # fmt: skip
# too long, too heavy or needing redis-server for "all": only when named
OPT_IN_SCENARIOS = ("soak", "hostile", "cluster")
DEFAULT_SCENARIOS = tuple(s for s in SCENARIOS if s not in OPT_IN_SCENARIOS)
TARGETS = ("direct", "passthrough", "constant", "gateway", "gateway+redis", "cluster")
FRONTIER_CONCURRENCY = (16, 64, 256)
# the 50 ms mock also runs at 128 connections: the goal's "128 x 20 requests/s" point
SLOW_FRONTIER_CONCURRENCY = (16, 64, 128, 256)
SLOW_MOCK_MS = 50.0
STREAM_CONCURRENCY = (4,)
STREAM_CHUNK_DELAY_MS = 2.0
TRACE_CONCURRENCY = (16,)
WORKER_COUNTS = (1, 2, 4)
HIT_LABEL = "identical requests: cache hits after the first"
# admission: the provider's limit, the offered load over it, and the gateway's queue
ADMISSION_PROVIDER_RPS = 100.0
ADMISSION_OVERLOAD = 1.5  # offered arrival rate / the limit
ADMISSION_MOCK_MS = 20.0
ADMISSION_QUEUE_SIZE = 100
ADMISSION_TIMEOUT_S = 1.0
# A token bucket may run ahead of its rate by up to its burst (one second's worth here)
# in any window, so a rate is judged to 2% only over a window of many seconds.
ADMISSION_DURATION_S = 30
ADMISSION_LABEL = "open loop, mixed priorities, over the provider's rate limit"
# soak: a steady closed loop; every SOAK_REPEAT_EVERY-th request repeats one of
# SOAK_REPEAT_POOL fixed bodies (cache hits once seen), the others are unique (misses)
SOAK_CONCURRENCY = (64,)
SOAK_DURATION_S = 600
SOAK_REPEAT_EVERY = 4
SOAK_REPEAT_POOL = 100
SOAK_LABEL = (
    f"every {SOAK_REPEAT_EVERY}th request repeats one of {SOAK_REPEAT_POOL} bodies, "
    "the others are unique"
)
# hostile: normal clients at a moderate closed-loop load (not saturating the gateway, so
# the attack's effect on latency shows) against a provider with a realistic latency
HOSTILE_CONCURRENCY = (16,)
HOSTILE_MOCK_MS = 20.0
HOSTILE_IDLE = 10_000
HOSTILE_SLOWLORIS = 2_000
HOSTILE_SLOW_READERS = 1
QUIET_LABEL = "quiet: no hostile connection"
# cluster: nodes on one Redis. The limit step offers more than the nodes' limits added up
# (2.5x one limit), so a limit that is per node shows as about twice the limit.
CLUSTER_NODES = 2
CLUSTER_PROVIDER_RPS = 100.0
CLUSTER_OVERLOAD = 2.5
CLUSTER_MOCK_MS = 20.0
CLUSTER_DURATION_S = 30  # the rate is judged to 2% over many seconds, as for admission
CLUSTER_TRACE_CONCURRENCY = 16
# with Redis against without: p50 at one connection, throughput at a saturating load
CLUSTER_PAIR_CONCURRENCY = (1, 16)
CLUSTER_LIMIT_LABEL = "open loop over the provider's limit, spread over both nodes"
CLUSTER_TRACE_LABEL = "the trace, spread over both nodes"


@dataclass(frozen=True, slots=True)
class Hostile:
    """What the attacker holds during a hostile step."""

    idle: int = HOSTILE_IDLE
    slowloris: int = HOSTILE_SLOWLORIS
    slow_readers: int = HOSTILE_SLOW_READERS

    def describe(self) -> str:
        return (
            f"{self.idle:,} idle + {self.slowloris:,} slowloris connections held, "
            f"{self.slow_readers} slow reader(s)"
        )


@dataclass(frozen=True, slots=True, order=True)
class MockConfig:
    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0

    def describe(self) -> str:
        text = f"{self.latency_ms:g} ms"
        return text + (f", {self.chunk_delay_ms:g} ms/chunk" if self.chunk_delay_ms else "")


@dataclass(frozen=True, slots=True)
class Step:
    scenario: str
    target: str
    concurrency: int
    workers: int  # of the target's server; 0 for direct
    mock: MockConfig
    load: str  # "unique", "identical", "stream", "trace", "open-loop" or "soak"
    label: str = ""
    offered_rps: float = 0.0  # open loop: requests sent per second, whatever comes back
    # settings of the gateway beyond the bench's own (e.g. OPENAI_RPS), as (name, value)
    gateway_env: tuple[tuple[str, str], ...] = ()
    duration_s: int = 0  # seconds of load; 0: the run's --duration
    hostile: Hostile | None = None  # held by the attacker while the load runs
    nodes: int = 1  # gateway nodes sharing one Redis (target "cluster"); the load spreads

    @property
    def provider_rps(self) -> float | None:
        """The provider rate limit the gateway runs with (None: unlimited)."""
        value = dict(self.gateway_env).get("OPENAI_RPS")
        return None if value is None else float(value)

    @property
    def key(self) -> str:
        """Stable name of this measurement across runs, for --compare."""
        mock = f"mock{self.mock.latency_ms:g}ms"
        if self.mock.chunk_delay_ms:
            mock += f"+{self.mock.chunk_delay_ms:g}ms/chunk"
        where = f"c{self.concurrency}/w{self.workers}/{mock}"
        if self.nodes > 1:
            where = f"n{self.nodes}/" + where
        if self.offered_rps:
            where += f"/offered{self.offered_rps:g}"
        where += "".join(f"/{name}={value}" for name, value in self.gateway_env)
        if self.scenario == "hostile":
            h = self.hostile
            where += "/quiet" if h is None else f"/idle{h.idle}+slow{h.slowloris}+r{h.slow_readers}"
        return f"{self.scenario}/{self.target}/{self.load}/{where}"

    def describe(self) -> str:
        workers = f" w={self.workers}" if self.workers else ""
        if self.nodes > 1:
            workers = f" {self.nodes} nodes" + workers
        if self.offered_rps:
            return (
                f"{self.scenario}: {self.target}{workers} {self.offered_rps:g} req/s open loop, "
                f"limit {self.provider_rps or 0:g}/s, mock={self.mock.describe()}"
                + (f" for {self.duration_s} s" if self.duration_s else "")
            )
        text = (
            f"{self.scenario}: {self.target} c={self.concurrency}{workers} "
            f"mock={self.mock.describe()} ({self.load})"
        )
        return text + (f" for {self.duration_s} s" if self.duration_s else "")


@dataclass(frozen=True, slots=True)
class PlanOptions:
    scenarios: tuple[str, ...] = DEFAULT_SCENARIOS
    workers: int = 2
    concurrency: tuple[int, ...] | None = None  # overrides every list but overhead's
    mock_latency_ms: tuple[float, ...] | None = None  # overrides every scenario's
    stream_chunk_delay_ms: float = STREAM_CHUNK_DELAY_MS
    soak_duration_s: int = SOAK_DURATION_S
    admission_duration_s: int = ADMISSION_DURATION_S
    hostile: Hostile = Hostile()
    cluster_duration_s: int = CLUSTER_DURATION_S


def _latencies(options: PlanOptions, default: tuple[float, ...]) -> tuple[float, ...]:
    return options.mock_latency_ms if options.mock_latency_ms is not None else default


def _levels(options: PlanOptions, default: tuple[int, ...]) -> tuple[int, ...]:
    return options.concurrency if options.concurrency is not None else default


def _scenario_steps(name: str, options: PlanOptions) -> list[Step]:
    w = options.workers
    steps: list[Step] = []
    if name == "overhead":
        for latency in _latencies(options, (0.0,)):
            mock = MockConfig(latency)
            for target in ("direct", "passthrough", "gateway"):
                steps.append(Step(name, target, 1, 0 if target == "direct" else w, mock, "unique"))
    elif name == "miss-frontier":
        for latency in _latencies(options, (0.0, SLOW_MOCK_MS)):
            default = SLOW_FRONTIER_CONCURRENCY if latency == SLOW_MOCK_MS else FRONTIER_CONCURRENCY
            for c in _levels(options, default):
                for target in ("direct", "passthrough", "gateway"):
                    workers = 0 if target == "direct" else w
                    steps.append(Step(name, target, c, workers, MockConfig(latency), "unique"))
    elif name == "hit-frontier":
        for latency in _latencies(options, (0.0,)):
            for c in _levels(options, FRONTIER_CONCURRENCY):
                for target in ("constant", "gateway"):
                    mock = MockConfig(latency)
                    steps.append(Step(name, target, c, w, mock, "identical", HIT_LABEL))
    elif name == "stream":
        for latency in _latencies(options, (0.0,)):
            mock = MockConfig(latency, options.stream_chunk_delay_ms)
            for c in _levels(options, STREAM_CONCURRENCY):
                for target in ("direct", "passthrough", "gateway"):
                    workers = 0 if target == "direct" else w
                    steps.append(Step(name, target, c, workers, mock, "stream"))
    elif name == "trace":
        for latency in _latencies(options, (0.0,)):
            for c in _levels(options, TRACE_CONCURRENCY):
                steps.append(Step(name, "gateway", c, w, MockConfig(latency), "trace"))
    elif name == "workers":
        for latency in _latencies(options, (0.0,)):
            mock = MockConfig(latency)
            for workers in WORKER_COUNTS:
                for c in _levels(options, FRONTIER_CONCURRENCY):
                    for target, load in (
                        ("passthrough", "unique"),
                        ("gateway", "unique"),
                        ("constant", "identical"),
                        ("gateway", "identical"),
                    ):
                        label = HIT_LABEL if load == "identical" else ""
                        steps.append(Step(name, target, c, workers, mock, load, label))
    elif name == "admission":
        for latency in _latencies(options, (ADMISSION_MOCK_MS,)):
            env = (
                ("OPENAI_RPS", f"{ADMISSION_PROVIDER_RPS:g}"),
                ("QUEUE_SIZE", str(ADMISSION_QUEUE_SIZE)),
                ("REQUEST_TIMEOUT_SEC", f"{ADMISSION_TIMEOUT_S:g}"),
            )
            offered = ADMISSION_PROVIDER_RPS * ADMISSION_OVERLOAD
            # concurrency 1: the warm-up's; the measured load is open loop
            step = Step(name, "gateway", 1, w, MockConfig(latency), "open-loop", ADMISSION_LABEL)
            step = replace(step, offered_rps=offered, gateway_env=env)
            steps.append(replace(step, duration_s=options.admission_duration_s))
    elif name == "soak":
        for latency in _latencies(options, (0.0,)):
            for c in _levels(options, SOAK_CONCURRENCY):
                step = Step(name, "gateway", c, w, MockConfig(latency), "soak", SOAK_LABEL)
                steps.append(replace(step, duration_s=options.soak_duration_s))
    elif name == "hostile":
        for latency in _latencies(options, (HOSTILE_MOCK_MS,)):
            for c in _levels(options, HOSTILE_CONCURRENCY):
                quiet = Step(name, "gateway", c, w, MockConfig(latency), "unique", QUIET_LABEL)
                held = options.hostile
                steps += [quiet, replace(quiet, label=held.describe(), hostile=held)]
    elif name == "cluster":
        steps += _cluster_steps(options)
    else:
        raise ValueError(f"unknown scenario {name!r}: expected one of {', '.join(SCENARIOS)}")
    return steps


def _cluster_steps(options: PlanOptions) -> list[Step]:
    """Two nodes over a limit, two nodes on the trace, then one node without and with
    Redis, each pair measured back to back (misses at 1 and 16 connections, hits)."""
    w, n = options.workers, CLUSTER_NODES
    steps: list[Step] = []
    for latency in _latencies(options, (CLUSTER_MOCK_MS,)):
        env = (
            ("OPENAI_RPS", f"{CLUSTER_PROVIDER_RPS:g}"),
            ("QUEUE_SIZE", str(ADMISSION_QUEUE_SIZE)),
            ("REQUEST_TIMEOUT_SEC", f"{ADMISSION_TIMEOUT_S:g}"),
        )
        step = Step("cluster", "cluster", 1, w, MockConfig(latency), "open-loop",
                    CLUSTER_LIMIT_LABEL, nodes=n)  # fmt: skip
        steps.append(
            replace(
                step,
                offered_rps=CLUSTER_PROVIDER_RPS * CLUSTER_OVERLOAD,
                gateway_env=env,
                duration_s=options.cluster_duration_s,
            )
        )
    for latency in _latencies(options, (0.0,)):
        mock = MockConfig(latency)
        for c in _levels(options, (CLUSTER_TRACE_CONCURRENCY,)):
            steps.append(
                Step("cluster", "cluster", c, w, mock, "trace", CLUSTER_TRACE_LABEL, nodes=n)
            )
        pairs = [("unique", c) for c in _levels(options, CLUSTER_PAIR_CONCURRENCY)]
        pairs.append(("identical", max(_levels(options, CLUSTER_PAIR_CONCURRENCY))))
        for load, c in pairs:
            label = HIT_LABEL if load == "identical" else ""
            for target in ("gateway", "gateway+redis"):
                steps.append(Step("cluster", target, c, w, mock, load, label))
    return steps


def build_plan(options: PlanOptions) -> list[Step]:
    """Every step of the chosen scenarios, grouped by mock configuration (each mock is
    started once), in scenario order within a group."""
    steps: list[Step] = []
    for name in SCENARIOS:
        if name in options.scenarios:
            steps.extend(_scenario_steps(name, options))
    first_seen: dict[MockConfig, int] = {}
    for step in steps:
        first_seen.setdefault(step.mock, len(first_seen))
    return sorted(steps, key=lambda s: first_seen[s.mock])  # sorted() is stable
