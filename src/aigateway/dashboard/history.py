"""The last minutes of the node's numbers: a ring of samples in the node's shared memory.

Every second one worker of the node (whichever finds the last sample a second old; the
others see it is not due and go back to sleep) reads the node's totals and appends one
*sample*: a row of cumulative counters, gauges and histogram bucket counts (``Columns``)
with its time.  Whichever worker answers the dashboard reads the ring and derives rates
and percentiles from the differences between samples (``dashboard.derive``), so every
worker shows the same history, a restarted worker included, and the node pays for one
reading a second however many workers or viewers it has.

Region layout (``capacity`` rows of ``columns`` ``f64`` values follow the head; both come
from the region's parameters, with the providers the columns were laid out for)::

    0    u64  count      samples written so far (the next goes to row count % capacity)
    8    f64  last_time  Unix time of the last sample
    64   (end)

A row is written under the region's lock, then ``count`` is raised: readers take no lock
and read only rows of samples before ``count`` (never the oldest one, which the next
write overwrites).
"""

from __future__ import annotations

import array
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Final

from aigateway.hotpath.regions import RegionLock
from aigateway.shm_layout import Field, Layout
from aigateway.stats.registry import FAST_BOUNDS, LATENCY_BOUNDS, METRICS, stats_samples
from aigateway.stats.report import NodeNumbers, cache_series
from aigateway.wire import PRIORITIES

__all__ = ("CAPACITY", "HEAD", "INTERVAL_S", "Columns", "History")

INTERVAL_S: Final = 1.0
#: Sixteen minutes of samples a second: the charts show fifteen.
CAPACITY: Final = 960
#: A worker takes a sample once the last is this old (workers wake about every second,
#: each at its own moment: a little slack keeps the samples a second apart).
_DUE_S: Final = 0.9

HEAD: Final = Layout(
    "dashboard history",
    (
        Field("count", "u64", doc="samples written so far (the next goes to row count % capacity)"),
        Field("last_time", "f64", doc="Unix time of the last sample"),
    ),
    size=64,
)
_COUNT = HEAD.index("count")
_LAST = HEAD.index("last_time")
_HEAD_WORDS = HEAD.size // 8

# What requests are the clients' (not the operators' polls of /admin, /metrics, /health).
_API_PREFIX: Final = "/v1"
# Outcomes of a provider call that are not the provider's or the request's failure.
_NOT_ERRORS: Final = frozenset({"ok", "cancelled"})
_QUEUE_DEPTH = METRICS["queue_depth"]
_ADMISSION = METRICS["admission"]
_TTFB = METRICS["stream_first_byte_seconds"].stored_as
_OVERHEAD = METRICS["gateway_overhead_seconds"].stored_as
_IN_FLIGHT = METRICS["requests_in_flight"].stored_as


class Columns:
    """The values of one sample, by name, for the node's providers.

    ``time``; clients' requests (``api_requests``, ``api_client_errors`` 4xx,
    ``api_errors`` 5xx), ``in_flight``; the cache's ``cache_hits`` and ``cache_misses``,
    ``avoided_calls`` and ``avoided_tokens`` (cache, dedup and batching); ``shed`` and
    ``timed_out`` admissions; ``queue:<priority>`` depths; the buckets of the time to
    first byte (``ttft:<i>``) and of the gateway's overhead (``overhead:<i>``); and for
    each provider ``calls:<p>``, ``errors:<p>`` and its latency buckets ``latency:<p>:<i>``.
    """

    def __init__(self, providers: Sequence[str]) -> None:
        self.providers = tuple(providers)
        names = [
            "time",
            "api_requests",
            "api_client_errors",
            "api_errors",
            "in_flight",
            "cache_hits",
            "cache_misses",
            "avoided_calls",
            "avoided_tokens",
            "shed",
            "timed_out",
            *(f"queue:{priority}" for priority in PRIORITIES),
            *self.buckets("ttft", LATENCY_BOUNDS),
            *self.buckets("overhead", FAST_BOUNDS),
        ]
        for provider in self.providers:
            names += [f"calls:{provider}", f"errors:{provider}"]
            names += self.buckets(f"latency:{provider}", LATENCY_BOUNDS)
        self.names = tuple(names)
        self.index = {name: i for i, name in enumerate(self.names)}
        self._spans: dict[str, slice] = {}

    def __len__(self) -> int:
        return len(self.names)

    @staticmethod
    def buckets(prefix: str, bounds: Sequence[float]) -> list[str]:
        """A histogram's bucket columns (+Inf last); its sum is not kept."""
        return [f"{prefix}:{i}" for i in range(len(bounds) + 1)]

    def span(self, prefix: str, bounds: Sequence[float]) -> slice:
        """The columns of a histogram's buckets."""
        found = self._spans.get(prefix)
        if found is None:
            first = self.index[f"{prefix}:0"]
            found = self._spans[prefix] = slice(first, first + len(bounds) + 1)
        return found

    def sample(self, numbers: NodeNumbers, now: float) -> list[float]:
        """One row: the node's totals as ``numbers`` has them, at ``now``."""
        row = [0.0] * len(self.names)
        index = self.index

        def add(name: str, value: float) -> None:
            at = index.get(name)
            if at is not None:
                row[at] += value

        row[index["time"]] = now
        for one in numbers.series:
            labels = dict(one.labels)
            family = one.family
            if family == "requests":
                if not labels.get("route", "").startswith(_API_PREFIX):
                    continue
                add("api_requests", one.value)
                status = labels.get("status", "")
                if status == "5xx":
                    add("api_errors", one.value)
                elif status == "4xx":
                    add("api_client_errors", one.value)
            elif family == "provider_calls":
                provider = labels.get("provider", "")
                add(f"calls:{provider}", one.value)
                if labels.get("outcome") not in _NOT_ERRORS:
                    add(f"errors:{provider}", one.value)
            elif family == "provider_call_duration_seconds":
                prefix = f"latency:{labels.get('provider', '')}"
                if f"{prefix}:0" in index:
                    row[self.span(prefix, LATENCY_BOUNDS)] = one.values[:-1]
            elif family == "avoided_provider_calls":
                add("avoided_calls", one.value)
            elif family == "avoided_tokens":
                add("avoided_tokens", one.value)
        counters = numbers.cache or {}
        add("cache_hits", counters.get(METRICS["cache_hits"].stored_as, 0))
        add("cache_misses", counters.get(METRICS["cache_misses"].stored_as, 0))
        for one in cache_series(numbers.cache):  # what the cache and dedup saved
            avoided = "calls" if one.family == "avoided_provider_calls" else "tokens"
            add(f"avoided_{avoided}", one.value)
        snapshot = numbers.snapshot
        add("in_flight", max(snapshot.gauges.get(_IN_FLIGHT, 0), 0))
        providers = numbers.providers
        for pairs, value in stats_samples(_QUEUE_DEPTH, snapshot.gauges, providers):
            add(f"queue:{dict(pairs)['priority']}", max(value, 0))
        for pairs, value in stats_samples(_ADMISSION, snapshot.counters, providers):
            outcome = dict(pairs)["outcome"]
            if outcome != "admitted":
                add(outcome, value)
        for prefix, name, bounds in (
            ("ttft", _TTFB, LATENCY_BOUNDS),
            ("overhead", _OVERHEAD, FAST_BOUNDS),
        ):
            histogram = snapshot.histograms.get(name)
            if histogram is not None:
                row[self.span(prefix, bounds)] = [float(c) for c in histogram.counts]
        return row


class History:
    """The node's ring of samples (``region``: the node's, or private bytes)."""

    #: What the region is laid out by (``shm.RegionSpec.layouts``).
    LAYOUTS: ClassVar[tuple[Layout, ...]] = (HEAD,)

    def __init__(
        self,
        region: memoryview | bytearray,
        params: dict[str, Any],
        lock_path: str | None,
    ) -> None:
        self.columns = Columns(params["providers"])
        self.capacity = int(params["capacity"])
        width = len(self.columns)
        if int(params["columns"]) != width:
            raise ValueError(
                "the dashboard's history was laid out for other columns "
                "(another version of aigateway): restart the server"
            )
        need = self.size(width, self.capacity)
        view = memoryview(region).cast("B")
        if len(view) < need:
            raise ValueError(f"a dashboard history needs {need} bytes, the region has {len(view)}")
        self._width = width
        self._view = view[:need]
        self._u64 = self._view.cast("Q")
        self._f64 = self._view.cast("d")
        self._lock = RegionLock(lock_path)

    @classmethod
    def private(cls, providers: Sequence[str], capacity: int = CAPACITY) -> History:
        """A ring in this process's own memory (a worker without the node's segment)."""
        params = cls.params(providers, capacity)
        return cls(bytearray(cls.size(params["columns"], capacity)), params, None)

    @staticmethod
    def params(providers: Sequence[str], capacity: int = CAPACITY) -> dict[str, Any]:
        """The region's parameters for these providers."""
        return {
            "providers": list(providers),
            "capacity": capacity,
            "columns": len(Columns(providers)),
        }

    @staticmethod
    def size(columns: int, capacity: int) -> int:
        return HEAD.size + capacity * columns * 8

    @property
    def count(self) -> int:
        return int(self._u64[_COUNT])

    def due(self, now: float) -> bool:
        """Whether the next sample is due (a clock that went back makes it due)."""
        return not 0 <= now - self._f64[_LAST] < _DUE_S

    def record(self, now: float, take: Callable[[], Sequence[float]]) -> bool:
        """Append ``take()`` (a row of ``Columns``) if a sample is due at ``now``; whether
        this call wrote it.  ``take`` runs under the lock: one worker reads the node a
        second, not each of them."""
        if not self.due(now):
            return False
        with self._lock:
            if not self.due(now):
                return False  # another worker just did
            row = take()
            count = self.count
            at = _HEAD_WORDS + (count % self.capacity) * self._width
            self._f64[at : at + self._width] = array.array("d", row)
            self._f64[_LAST] = now
            self._u64[_COUNT] = count + 1  # last: readers see only complete rows
        return True

    def rows(self, after: float = 0.0, before: int = 0) -> list[list[float]]:
        """The samples taken after ``after`` (Unix time), oldest first, and the ``before``
        samples just before them (for differences and windows)."""
        count = self.count
        first = max(0, count - self.capacity + 1)  # never the row being overwritten
        index = [self._row_word(n) for n in range(first, count)]
        times = [self._f64[word] for word in index]
        start = len(times)
        while start > 0 and times[start - 1] > after:
            start -= 1
        start = max(0, start - before)
        rows: list[list[float]] = []
        for word in index[start:]:
            row: list[float] = self._f64[word : word + self._width].tolist()  # type: ignore[assignment]
            rows.append(row)
        return rows

    def close(self) -> None:
        self._lock.close()
        for view in (self._u64, self._f64, self._view):
            view.release()

    def _row_word(self, n: int) -> int:
        return _HEAD_WORDS + (n % self.capacity) * self._width
