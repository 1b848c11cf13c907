"""Provider health and circuit breaking, one view for every worker of the node.

Each provider is in one of these states, kept in the node's shared memory::

    healthy ──failures──> open ──cool-down──> half_open ──probe ok──> healthy
       │                   ^                      │
       └─> degraded        └─────probe fails──────┘

* **healthy** / **degraded** (the circuit is closed: routing uses the provider).  Degraded
  when, over the last 30 s, at least 10 % of at least 5 calls failed, or their mean
  latency passed ``slow_s``, or the last call or probe failed.
* **open**: ``failure_threshold`` consecutive failed calls, or at least half of at least
  20 calls over the last 30 s.  Routing skips the provider (its fallback chain serves;
  with no target left the client gets 503 with ``Retry-After``) for ``cooldown_s``.
* **half_open**: after the cool-down one worker probes the provider (lists its models);
  success closes the circuit, failure opens it for another cool-down.  A provider that
  cannot be probed lets one live request through instead.

What counts is the failure's ``errors.Fault``, the one classification that also decides
retry and failover: failures are server errors (5xx, a provider's 408), no connection,
timeouts of the gateway's own limits, and rejected credentials; client errors (4xx) are
successes (the provider answered); rate limits (429, handled by admission), an exhausted
account, the client's own deadline and cancelled calls do not count.  Live traffic is
fed in by dispatch itself (``Circuit.record``, every attempt); besides, one worker of the
node probes every provider every ``probe_interval_s`` (``core.probe``; 0: only after a
cool-down).

Region layout: one entry (``ENTRY``, 256 bytes) per provider, in ``params["providers"]``
order.  A success while the circuit is closed (nearly every call) is counted without a
lock: ``hotpath.CallWindow`` adds it to the window's current bucket with atomics, and the
consecutive failures are set back to 0.  Everything else (a failure, a probe, a bucket
the window has moved past, a state change) happens under the region's lock (a
``flock``, so a killed worker never leaves it held), as every change does with the pure
twins; routing reads the state word without it.  Times are CLOCK_MONOTONIC seconds
unless marked wall; the window counts calls in 6 buckets of 5 s::

    0    circuit    circuit
         0    u32  state         0 closed, 1 open, 2 half open
         4    u32  consecutive   consecutive failures
         8    f64  open_until
         16   f64  trial_until   the probe's (or trial call's) lease
         24   f64  next_probe    the next periodic probe
         32   u32  last_failure  its outcome, an index of OUTCOMES
         36   u32  last_probe    0 none, 1 ok, 2 failed
         40   u64  opened        times opened
         48   f64  changed       when the state last changed (wall)
         56   u64  probes
         64   (end)
    64   bucket[6]  window
         0    u64  epoch     int(now / 5 s) + 1 of the calls counted
         8    u64  calls
         16   u64  failures
         24   f64  seconds   their summed latency
         32   (end)
    256  (end)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from aigateway.errors import Fault
from aigateway.hotpath import ATOMIC_WINDOW, CallWindow
from aigateway.hotpath.regions import WINDOW_BUCKET, RegionLock
from aigateway.shm_layout import Field, Layout

logger = logging.getLogger("aigateway.health")

__all__ = ("OUTCOMES", "Circuit", "HealthBoard", "HealthPolicy")

CLOSED, OPEN, HALF_OPEN = 0, 1, 2
STATE_NAMES: Final = {CLOSED: "healthy", OPEN: "open", HALF_OPEN: "half_open"}
#: Outcomes of a provider call, as accounting reports them; their index is stored (new
#: ones go at the end).
OUTCOMES: Final = (
    "ok",
    "client_error",
    "rate_limited",
    "auth_error",
    "server_error",
    "unreachable",
    "timeout",
    "cancelled",
    "deadline",
    "account_error",
)
FAILURES: Final = frozenset(f.outcome for f in Fault if f.health is True)
SUCCESSES: Final = frozenset({"ok"} | {f.outcome for f in Fault if f.health is False})

_BUCKETS = 6
_BUCKET_S = 5.0
CIRCUIT: Final = Layout(
    "circuit",
    (
        Field("state", "u32", doc="0 closed, 1 open, 2 half open"),
        Field("consecutive", "u32", doc="consecutive failures"),
        Field("open_until", "f64"),
        Field("trial_until", "f64", doc="the probe's (or trial call's) lease"),
        Field("next_probe", "f64", doc="the next periodic probe"),
        Field("last_failure", "u32", doc="its outcome, an index of OUTCOMES"),
        Field("last_probe", "u32", doc="0 none, 1 ok, 2 failed"),
        Field("opened", "u64", doc="times opened"),
        Field("changed", "f64", doc="when the state last changed (wall)"),
        Field("probes", "u64"),
    ),
)
ENTRY: Final = Layout(
    "health entry",
    (Field("circuit", CIRCUIT), Field("window", WINDOW_BUCKET, _BUCKETS)),
    size=256,
)
# Derived once: where each value sits (indices in the region cast to its type).
_SIZE = ENTRY.size
_CIRCUIT = CIRCUIT.struct
_CIRCUIT_AT = ENTRY.offset_of("circuit")
_BUCKET = WINDOW_BUCKET.struct
_WINDOW_OFFSET = ENTRY.offset_of("window")
_STATE = ENTRY.index("circuit.state")
_CONSECUTIVE = ENTRY.index("circuit.consecutive")
_OPEN_UNTIL = ENTRY.index("circuit.open_until")
_TRIAL_UNTIL = ENTRY.index("circuit.trial_until")
_NEXT_PROBE = ENTRY.index("circuit.next_probe")
_LAST_FAILURE = ENTRY.index("circuit.last_failure")
_LAST_PROBE = ENTRY.index("circuit.last_probe")
_OPENED = ENTRY.index("circuit.opened")
_CHANGED = ENTRY.index("circuit.changed")
_PROBES = ENTRY.index("circuit.probes")
_RATE_MIN_CALLS = 20
_DEGRADED_MIN_CALLS = 5


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    failure_threshold: int = 5  # consecutive failures that open a circuit; 0: never
    cooldown_s: float = 30.0
    probe_interval_s: float = 30.0  # 0: probe only to close an open circuit
    slow_s: float = 30.0  # mean latency that makes a provider degraded
    probe_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class _Entry:
    """One provider's ``CIRCUIT``, field by field."""

    state: int
    consecutive: int
    open_until: float
    trial_until: float
    next_probe: float
    last_failure: int
    last_probe: int
    opened: int
    changed: float
    probes: int


class HealthBoard:
    """The health of the node's providers, in a shared-memory region (or private bytes)."""

    #: What the region is laid out by (``shm.RegionSpec.layouts``).
    LAYOUTS: ClassVar[tuple[Layout, ...]] = (ENTRY,)

    def __init__(
        self,
        region: memoryview | bytearray,
        providers: list[str],
        policy: HealthPolicy,
        lock_path: str | None = None,
    ) -> None:
        need = self.size(len(providers))
        view = memoryview(region)
        if len(view) < need:
            raise ValueError(f"the health region needs {need} bytes, it has {len(view)}")
        self._view = view[:need]
        self._index = {name: i for i, name in enumerate(providers)}
        self.providers = tuple(providers)
        self.policy = policy
        self._lock = RegionLock(lock_path)
        self._window_counts = CallWindow(self._view)
        self._f64 = self._view.cast("d")
        self._u64 = self._view.cast("Q")
        self._u32 = self._view.cast("I")

    @staticmethod
    def size(providers: int) -> int:
        return _SIZE * max(providers, 1)

    @classmethod
    def private(cls, providers: list[str], policy: HealthPolicy) -> HealthBoard:
        """A board of this process only (no shared memory: an app run without a server)."""
        return cls(bytearray(cls.size(len(providers))), providers, policy)

    def circuit(self, name: str, probe_able: bool = True) -> Circuit:
        return Circuit(self, name, probe_able)

    # -- reading -------------------------------------------------------------------------

    def state(self, name: str, now: float | None = None) -> str:
        """healthy, degraded, open or half_open."""
        entry = self._entry(name)
        now = time.monotonic() if now is None else now
        if entry.state == OPEN:
            return "half_open" if now >= entry.open_until else "open"
        if entry.state == HALF_OPEN:
            return "half_open"
        calls, failures, seconds = self._window(self._index[name], now)
        if (
            entry.consecutive > 0
            or entry.last_probe == 2
            or (calls >= _DEGRADED_MIN_CALLS and failures >= 0.1 * calls)
            or (calls and seconds / calls > self.policy.slow_s)
        ):
            return "degraded"
        return "healthy"

    def closed(self, name: str) -> bool:
        """Whether routing may use the provider (its circuit is closed)."""
        return self._u32[self._index[name] * _SIZE // 4 + _STATE] == CLOSED

    def retry_after(self, name: str, now: float | None = None) -> float:
        """Seconds until the provider may be tried again (0 when its circuit is closed)."""
        entry = self._entry(name)
        if entry.state == CLOSED:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(entry.open_until - now, 0.0) + (
            self.policy.probe_timeout_s if now >= entry.open_until else 0.0
        )

    def report(self, name: str, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        entry = self._entry(name)
        calls, failures, seconds = self._window(self._index[name], now)
        report: dict[str, Any] = {
            "state": self.state(name, now),
            "consecutive_failures": entry.consecutive,
            "window_calls": calls,
            "window_failures": failures,
            "window_mean_latency_ms": round(1000 * seconds / calls, 3) if calls else None,
            "times_opened": entry.opened,
            "probes": entry.probes,
            "last_probe": ("none", "ok", "failed")[entry.last_probe],
        }
        if entry.last_failure:
            report["last_failure"] = OUTCOMES[entry.last_failure]
        if entry.state != CLOSED:
            report["retry_after_s"] = round(self.retry_after(name, now), 3)
        return report

    def opened_total(self, name: str) -> int:
        return self._entry(name).opened

    def open_left_s(self, name: str, now: float | None = None) -> float:
        """Seconds of cool-down left while the provider's circuit is open (else 0)."""
        entry = self._entry(name)
        if entry.state == CLOSED:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(entry.open_until - now, 0.0)

    # -- writing -------------------------------------------------------------------------

    def record(self, name: str, outcome: str, seconds: float, *, probe: bool = False) -> None:
        """Feed one call's outcome (``OUTCOMES``) into the provider's state."""
        index = self._index.get(name)
        if index is None or (outcome not in FAILURES and outcome not in SUCCESSES):
            return
        failed = outcome in FAILURES
        now = time.monotonic()
        u32 = index * _SIZE // 4
        if ATOMIC_WINDOW and not failed and not probe and self._u32[u32 + _STATE] == CLOSED:
            epoch = int(now / _BUCKET_S) + 1
            at = index * _SIZE + _WINDOW_OFFSET + (epoch % _BUCKETS) * _BUCKET.size
            if self._window_counts.count(at, epoch, False, max(seconds, 0.0)):
                if self._u32[u32 + _CONSECUTIVE]:
                    self._u32[u32 + _CONSECUTIVE] = 0
                return
        with self._lock:
            entry = self._entry(name)
            state, consecutive = entry.state, entry.consecutive + 1 if failed else 0
            last_failure = OUTCOMES.index(outcome) if failed else entry.last_failure
            calls, failures = self._count(index, now, failed, seconds)
            if state == CLOSED and failed and self._should_open(consecutive, calls, failures):
                self._open(name, now, f"after {consecutive} consecutive failures")
            elif state != CLOSED and failed and (probe or now >= entry.open_until):
                self._open(name, now, "again: its trial call failed")
            elif state != CLOSED and not failed and (probe or now >= entry.open_until):
                self._close(index, now)
                logger.warning("%s answered again: its circuit is closed", name)
            self._u32[u32 + _CONSECUTIVE] = consecutive
            self._u32[u32 + _LAST_FAILURE] = last_failure
            if probe:
                self._u32[u32 + _LAST_PROBE] = 2 if failed else 1

    def open_from_cluster(
        self, name: str, seconds: float, why: str, now: float | None = None
    ) -> bool:
        """Open the provider's circuit for ``seconds`` because another node opened it
        (``why`` says where); whether that changed anything (an open circuit ending later
        stays as it is). Not counted in ``opened``: the node that opened it counts it."""
        index = self._index.get(name)
        if index is None or seconds <= 0.0:
            return False
        now = time.monotonic() if now is None else now
        base = index * _SIZE
        with self._lock:
            entry = self._entry(name)
            if entry.state == OPEN and entry.open_until >= now + seconds:
                return False
            self._u32[base // 4 + _STATE] = OPEN
            self._f64[base // 8 + _OPEN_UNTIL] = now + seconds
            self._f64[base // 8 + _TRIAL_UNTIL] = 0.0
            self._f64[base // 8 + _CHANGED] = time.time()
        logger.warning("%s circuit opened %s: routing skips it for %.1f s", name, why, seconds)
        return True

    def take_probe(self, name: str, now: float | None = None) -> bool:
        """Whether this worker should probe the provider now (at most one worker does)."""
        index = self._index[name]
        now = time.monotonic() if now is None else now
        base = index * _SIZE // 8
        with self._lock:
            entry = self._entry(name)
            if entry.state == CLOSED:
                interval = self.policy.probe_interval_s
                if interval <= 0:
                    return False
                if entry.next_probe == 0.0:  # the first time: one interval after the start
                    self._f64[base + _NEXT_PROBE] = now + interval
                    return False
                if now < entry.next_probe:
                    return False
                self._f64[base + _NEXT_PROBE] = now + interval
            else:
                if now < entry.open_until or now < entry.trial_until:
                    return False
                self._u32[index * _SIZE // 4 + _STATE] = HALF_OPEN
                self._f64[base + _TRIAL_UNTIL] = now + self.policy.probe_timeout_s
            self._u64[base + _PROBES] = entry.probes + 1
            return True

    def take_trial(self, name: str, now: float | None = None) -> bool:
        """For a provider that cannot be probed: may one live request try it now?"""
        return self.take_probe(name, now) and self._entry(name).state != CLOSED

    # -- internals -----------------------------------------------------------------------

    def _should_open(self, consecutive: int, calls: int, failures: int) -> bool:
        threshold = self.policy.failure_threshold
        if threshold <= 0:
            return False
        return consecutive >= threshold or (calls >= _RATE_MIN_CALLS and failures * 2 >= calls)

    def _open(self, name: str, now: float, why: str) -> None:
        index = self._index[name]
        base = index * _SIZE
        self._u32[base // 4 + _STATE] = OPEN
        self._f64[base // 8 + _OPEN_UNTIL] = now + self.policy.cooldown_s
        self._f64[base // 8 + _TRIAL_UNTIL] = 0.0
        self._u64[base // 8 + _OPENED] += 1
        self._f64[base // 8 + _CHANGED] = time.time()
        logger.warning(
            "%s circuit opened %s: routing skips it for %g s", name, why, self.policy.cooldown_s
        )

    def _close(self, index: int, now: float) -> None:
        base = index * _SIZE
        self._u32[base // 4 + _STATE] = CLOSED
        self._f64[base // 8 + _TRIAL_UNTIL] = 0.0
        self._f64[base // 8 + _CHANGED] = time.time()
        if self.policy.probe_interval_s > 0:
            self._f64[base // 8 + _NEXT_PROBE] = now + self.policy.probe_interval_s
        for bucket in range(_BUCKETS):  # a fresh window: old failures must not reopen it
            at = base + _WINDOW_OFFSET + bucket * _BUCKET.size
            self._view[at : at + _BUCKET.size] = bytes(_BUCKET.size)

    def _count(self, index: int, now: float, failed: bool, seconds: float) -> tuple[int, int]:
        """Count one call in the current bucket; the window's calls and failures after a
        failure (zeros after a success, which never opens the circuit)."""
        epoch = int(now / _BUCKET_S) + 1
        at = index * _SIZE + _WINDOW_OFFSET + (epoch % _BUCKETS) * _BUCKET.size
        if not self._window_counts.count(at, epoch, failed, max(seconds, 0.0)):
            self._window_counts.reset(at, epoch, failed, max(seconds, 0.0))
        if not failed:
            return 0, 0  # only a failure can open the circuit: no need to sum the window
        window_calls, window_failures, _ = self._window(index, now)
        return window_calls, window_failures

    def _window(self, index: int, now: float) -> tuple[int, int, float]:
        epoch = int(now / _BUCKET_S) + 1
        calls = failures = 0
        seconds = 0.0
        for bucket in range(_BUCKETS):
            at = index * _SIZE + _WINDOW_OFFSET + bucket * _BUCKET.size
            stored, c, f, s = _BUCKET.unpack_from(self._view, at)
            if epoch - _BUCKETS < stored <= epoch:
                calls, failures, seconds = calls + c, failures + f, seconds + s
        return calls, failures, seconds

    def _entry(self, name: str) -> _Entry:
        return _Entry(*_CIRCUIT.unpack_from(self._view, self._index[name] * _SIZE + _CIRCUIT_AT))

    def close(self) -> None:
        self._lock.close()
        self._window_counts.close()
        for view in (self._f64, self._u64, self._u32, self._view):
            view.release()


class Circuit:
    """One provider's circuit as routing sees it."""

    __slots__ = ("_board", "_probe_able", "name")

    def __init__(self, board: HealthBoard, name: str, probe_able: bool) -> None:
        self._board = board
        self._probe_able = probe_able
        self.name = name

    def allows(self) -> bool:
        if self._board.closed(self.name):
            return True
        # Probed providers close through the probe; others let one live request try.
        return not self._probe_able and self._board.take_trial(self.name)

    def record(self, outcome: str, seconds: float) -> None:
        """Feed one call's outcome (dispatch does, for every attempt)."""
        self._board.record(self.name, outcome, seconds)

    def retry_after_s(self) -> float:
        return self._board.retry_after(self.name)

    def describe(self) -> str:
        report = self._board.report(self.name)
        last = report.get("last_failure")
        return f"its circuit is {report['state']}" + (f" (last failure: {last})" if last else "")
