"""What ``SharedStats`` records: a declarative schema, and the snapshots it sums to.

Shared by both twins of ``SharedStats`` (it is data, not a hot path).  A schema names its
counters (monotonic, unsigned 64-bit), gauges (signed 64-bit levels such as requests in
flight) and fixed-bucket histograms; the position of a name is the index the hot methods
take, so callers look indices up once::

    STATS = StatsSchema(
        counters=("requests", "cache_hits"),
        gauges=("in_flight",),
        histograms=(Histogram("latency_s", (0.01, 0.05, 0.1, 0.5, 1.0, 5.0)),),
    )
    REQUESTS = STATS.counter("requests")
    ...
    stats.incr(REQUESTS)

Adding a metric is adding a name (or a ``Histogram``) here; the shared-memory layout
follows (see ``regions``), and the fingerprint of the schema, stored in the region,
keeps a process with another schema from attaching to it.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import xxhash

from .regions import SLOT_HEAD, STATS_HEADER

__all__ = ("Histogram", "HistogramSnapshot", "StatsSchema", "StatsSnapshot")

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")  # a Prometheus metric name
_MAX_BUCKETS = 256
_MAX_METRICS = 4096


def _names(names: Iterable[str], kind: str) -> tuple[str, ...]:
    if isinstance(names, str):
        raise TypeError(f"StatsSchema.{kind} must be a sequence of names, not a string")
    result = tuple(names)
    for name in result:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"StatsSchema.{kind}: {name!r} is not a valid metric name")
    return result


@dataclass(frozen=True, slots=True)
class Histogram:
    """A histogram with fixed upper bucket bounds (``le``, Prometheus-style).

    ``bounds`` are finite and strictly increasing; a last ``+Inf`` bucket is implied.  A
    value ``v`` lands in the first bucket whose bound is >= ``v``.
    """

    name: str
    bounds: tuple[float, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"Histogram: {self.name!r} is not a valid metric name")
        bounds = tuple(float(bound) for bound in self.bounds)
        if len(bounds) > _MAX_BUCKETS:
            raise ValueError(f"Histogram {self.name}: more than {_MAX_BUCKETS} buckets")
        if not all(math.isfinite(bound) for bound in bounds):
            raise ValueError(f"Histogram {self.name}: bounds must be finite")
        if any(low >= high for low, high in itertools.pairwise(bounds)):
            raise ValueError(f"Histogram {self.name}: bounds must be strictly increasing")
        object.__setattr__(self, "bounds", bounds)


@dataclass(frozen=True, slots=True)
class StatsSchema:
    """The counters, gauges and histograms of a ``SharedStats`` region, in index order."""

    counters: tuple[str, ...] = ()
    gauges: tuple[str, ...] = ()
    histograms: tuple[Histogram, ...] = ()
    _index: dict[tuple[str, str], int] = field(init=False, repr=False, compare=False)
    _fingerprint: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        counters = _names(self.counters, "counters")
        gauges = _names(self.gauges, "gauges")
        histograms = tuple(self.histograms)
        if not all(isinstance(h, Histogram) for h in histograms):
            raise TypeError("StatsSchema.histograms must be Histogram instances")
        every = [*counters, *gauges, *(h.name for h in histograms)]
        if len(set(every)) != len(every):
            raise ValueError("StatsSchema: metric names must be unique")
        if len(every) > _MAX_METRICS:
            raise ValueError(f"StatsSchema: more than {_MAX_METRICS} metrics")
        object.__setattr__(self, "counters", counters)
        object.__setattr__(self, "gauges", gauges)
        object.__setattr__(self, "histograms", histograms)
        index = {("counter", name): i for i, name in enumerate(counters)}
        index.update((("gauge", name), i) for i, name in enumerate(gauges))
        index.update((("histogram", h.name), i) for i, h in enumerate(histograms))
        object.__setattr__(self, "_index", index)
        text = "aigateway-stats-1;c={};g={};h={}".format(
            ",".join(counters),
            ",".join(gauges),
            ";".join(h.name + ":" + ",".join(b.hex() for b in h.bounds) for h in histograms),
        )
        object.__setattr__(self, "_fingerprint", xxhash.xxh3_64_intdigest(text.encode()))

    def counter(self, name: str) -> int:
        """The index of counter ``name`` (``KeyError`` if there is none)."""
        return self._lookup("counter", name)

    def gauge(self, name: str) -> int:
        """The index of gauge ``name``."""
        return self._lookup("gauge", name)

    def histogram(self, name: str) -> int:
        """The index of histogram ``name``."""
        return self._lookup("histogram", name)

    @property
    def fingerprint(self) -> int:
        """A 64-bit digest of the names and bounds, stored in the region's header."""
        return self._fingerprint

    @property
    def histogram_words(self) -> int:
        """8-byte words of one slot's histograms: bucket counts (+Inf included) and sums."""
        return sum(len(h.bounds) + 2 for h in self.histograms)

    @property
    def slot_size(self) -> int:
        """Bytes of one slot, a multiple of 64 so that two writers never share a cache line."""
        words = len(self.counters) + len(self.gauges) + self.histogram_words
        return -(-(SLOT_HEAD.size + 8 * words) // 64) * 64

    def buffer_size(self, slots: int) -> int:
        """Bytes of a region with ``slots`` slots."""
        if not 1 <= slots < 2**31:
            raise ValueError(f"slots must be >= 1, not {slots!r}")
        return STATS_HEADER.size + slots * self.slot_size

    def to_json(self) -> dict[str, Any]:
        """A JSON-able description, from which ``from_json`` rebuilds an equal schema."""
        return {
            "counters": list(self.counters),
            "gauges": list(self.gauges),
            "histograms": [{"name": h.name, "bounds": list(h.bounds)} for h in self.histograms],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StatsSchema:
        return cls(
            counters=tuple(data["counters"]),
            gauges=tuple(data["gauges"]),
            histograms=tuple(Histogram(h["name"], tuple(h["bounds"])) for h in data["histograms"]),
        )

    def _lookup(self, kind: str, name: str) -> int:
        try:
            return self._index[kind, name]
        except KeyError:
            raise KeyError(f"the stats schema has no {kind} named {name!r}") from None


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """One histogram summed over every slot: per-bucket counts (the last is +Inf) and sum."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> tuple[int, ...]:
        """Counts of values <= each bound, then the total (Prometheus ``_bucket``)."""
        running = 0
        result = []
        for count in self.counts:
            running += count
            result.append(running)
        return tuple(result)


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """Node totals: every counter and histogram summed over all slots, gauges over live ones."""

    counters: Mapping[str, int]
    gauges: Mapping[str, int]
    histograms: Mapping[str, HistogramSnapshot]
