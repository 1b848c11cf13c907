"""Counters, gauges and histograms of a node in shared memory (pure-Python twin).

This module is the executable specification of ``ext/_stats_c.pyx``: both define the same
names with the same signatures and give the same results; both use the region layout
declared in ``regions`` (``STATS_HEADER``, ``SLOT_HEAD``).

The region holds one *slot* per writing process, so writers never contend: a process
claims a slot, then only ever writes its own, and ``snapshot()`` sums them all.

* ``SharedStats.buffer_size(schema, slots)``: bytes needed for ``slots`` slots.
* ``SharedStats.initialise(buffer, schema, slots)``: lay out a fresh, zeroed region (the
  main process does this once, before any worker starts).
* ``SharedStats(schema, buffer=None)`` attaches to an initialised region (whose schema
  must be equal: same fingerprint) and claims a slot: a free one, or one whose owner
  process is dead, taking over its values, so node totals never go down when a worker is
  replaced.  ``RuntimeError`` if every slot belongs to a live process.  Without a buffer
  the statistics are private to the object (one slot).
* ``incr(counter, n=1)``, ``gauge_add(gauge, delta)``, ``gauge_set(gauge, value)`` and
  ``observe(histogram, value)`` take the index of a metric (``schema.counter(name)``...).
  Counters are unsigned 64-bit (wrapping); gauges signed 64-bit; a histogram adds 1 to
  the first bucket whose bound is >= ``value`` (else +Inf) and ``value`` to its sum
  (``ValueError`` for NaN).
* ``snapshot()`` returns a ``StatsSnapshot``: counters and histograms summed over every
  slot (a dead process's values included), gauges over slots whose owner is alive.
* ``close()`` gives the slot back (its gauges are zeroed, its counters stay), and lets
  go of the buffer; so does losing the last reference to the object.

This twin claims slots under a ``RegionLock``; the compiled twin with compare-and-swap.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from typing import Any

from ._stats_schema import Histogram, HistogramSnapshot, StatsSchema, StatsSnapshot
from .regions import (
    CLOSED_STATS,
    REGION_VERSION,
    SLOT_HEAD,
    STATS_HEADER,
    STATS_MAGIC,
    RegionLock,
    buffer_address,
    lock_path,
    pid_alive,
    shared_backing,
)

__all__ = ("Histogram", "HistogramSnapshot", "SharedStats", "StatsSchema", "StatsSnapshot")

_U64 = 2**64 - 1
_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
# Indices of the header's fields in the region cast to their type (see regions).
_H_MAGIC = STATS_HEADER.index("magic")
_H_VERSION = STATS_HEADER.index("version")
_H_FINGERPRINT = STATS_HEADER.index("fingerprint")
_H_PID = STATS_HEADER.index("creator_pid")
_H_ID = STATS_HEADER.index("region_id")
_H_SLOTS = STATS_HEADER.index("slots")
_H_SLOT_SIZE = STATS_HEADER.index("slot_size")
_H_COUNTERS = STATS_HEADER.index("counters")
_H_GAUGES = STATS_HEADER.index("gauges")
_H_HISTOGRAMS = STATS_HEADER.index("histograms")
_H_HISTOGRAM_WORDS = STATS_HEADER.index("histogram_words")
_HEADER_WORDS = STATS_HEADER.size // 8
# A slot: its head (owner pid, claims), then counters, gauges and histograms.
_OWNER = SLOT_HEAD.index("owner_pid")
_CLAIMS = SLOT_HEAD.index("claims")
_SLOT_HEAD_WORDS = SLOT_HEAD.size // 8


def _region(buffer: object, size: int | None = None) -> memoryview:
    view = memoryview(buffer)  # type: ignore[arg-type]
    if view.readonly:
        raise TypeError("shared stats need a writable buffer")
    if not view.c_contiguous:
        raise ValueError("shared stats need a contiguous buffer")
    view = view.cast("B")
    need = STATS_HEADER.size if size is None else size
    if len(view) < need:
        raise ValueError(f"shared stats need {need} bytes, the buffer has {len(view)}")
    if buffer_address(view) % 8:
        raise ValueError("the buffer of shared stats must be 8-byte aligned")
    return view


class SharedStats:
    """This process's slot of a node's statistics, and the node's totals."""

    __slots__ = (
        "_counters",
        "_f64",
        "_gauges",
        "_histograms",
        "_lock",
        "_schema",
        "_slot",
        "_slot_words",
        "_slots",
        "_u64",
        "_view",
    )

    @staticmethod
    def buffer_size(schema: StatsSchema, slots: int) -> int:
        """Bytes of a region for ``schema`` with ``slots`` slots."""
        return schema.buffer_size(slots)

    @staticmethod
    def initialise(buffer: object, schema: StatsSchema, slots: int) -> None:
        """Lay out a fresh region in ``buffer``: header written, every slot free and zero."""
        size = schema.buffer_size(slots)
        view = _region(buffer, size)[:size]
        view[:] = bytes(size)
        u64 = view.cast("Q")
        u64[_H_FINGERPRINT] = schema.fingerprint
        u64[_H_PID] = os.getpid()
        u64[_H_ID] = int.from_bytes(os.urandom(8), "little")
        u32 = view.cast("I")
        u32[_H_SLOTS] = slots
        u32[_H_SLOT_SIZE] = schema.slot_size
        u32[_H_COUNTERS] = len(schema.counters)
        u32[_H_GAUGES] = len(schema.gauges)
        u32[_H_HISTOGRAMS] = len(schema.histograms)
        u32[_H_HISTOGRAM_WORDS] = schema.histogram_words
        u32[_H_VERSION] = REGION_VERSION
        u32[_H_MAGIC] = STATS_MAGIC  # last: a region with its magic is complete

    def __init__(self, schema: StatsSchema, buffer: object = None) -> None:
        self._view: memoryview | None = None
        if buffer is None:
            buffer = bytearray(schema.buffer_size(1))
            self.initialise(buffer, schema, 1)
        view = _region(buffer)
        u32 = view.cast("I")
        if u32[_H_MAGIC] != STATS_MAGIC or u32[_H_VERSION] != REGION_VERSION:
            raise ValueError("the buffer holds no shared stats (bad magic or version)")
        if view.cast("Q")[_H_FINGERPRINT] != schema.fingerprint:
            raise ValueError("the shared stats in the buffer were laid out for another schema")
        slots = u32[_H_SLOTS]
        slot_size = u32[_H_SLOT_SIZE]
        if slot_size != schema.slot_size or not slots:
            raise ValueError("the shared stats in the buffer have an inconsistent header")
        size = schema.buffer_size(slots)
        if len(view) < size:
            raise ValueError(f"shared stats need {size} bytes, the buffer has {len(view)}")
        view = view[:size]
        u64 = view.cast("Q")
        self._schema = schema
        self._u64 = u64
        self._f64 = view.cast("d")
        self._slots = slots
        self._slot_words = slot_size // 8
        path = lock_path(u64[_H_PID], u64[_H_ID]) if shared_backing(view) else None
        self._lock = RegionLock(path)
        self._slot = self._claim()
        start = STATS_HEADER.size + self._slot * slot_size + SLOT_HEAD.size
        counters = len(schema.counters)
        gauges = len(schema.gauges)
        self._counters = view[start : start + 8 * counters].cast("Q")
        start += 8 * counters
        self._gauges = view[start : start + 8 * gauges].cast("q")
        start += 8 * gauges
        histograms = []
        for histogram in schema.histograms:
            buckets = len(histogram.bounds) + 1
            counts = view[start : start + 8 * buckets].cast("Q")
            total = view[start + 8 * buckets : start + 8 * buckets + 8].cast("d")
            histograms.append((histogram.bounds, counts, total))
            start += 8 * (buckets + 1)
        self._histograms = histograms
        self._view = view  # last: a half-made object has nothing to give back

    def _claim(self) -> int:
        me = os.getpid()
        u64 = self._u64
        with self._lock:
            for slot in range(self._slots):
                base = self._slot_base(slot)
                owner = u64[base + _OWNER]
                if owner == 0 or (owner != me and not pid_alive(owner)):
                    u64[base + _OWNER] = me
                    u64[base + _CLAIMS] += 1
                    self._zero_gauges(slot)
                    return slot
        raise RuntimeError(f"all {self._slots} stats slots belong to live processes")

    def _slot_base(self, slot: int) -> int:
        return _HEADER_WORDS + slot * self._slot_words

    def _zero_gauges(self, slot: int) -> None:
        start = self._slot_base(slot) + _SLOT_HEAD_WORDS + len(self._schema.counters)
        for word in range(start, start + len(self._schema.gauges)):
            self._u64[word] = 0

    @property
    def schema(self) -> StatsSchema:
        return self._schema

    @property
    def slot(self) -> int:
        """The index of the slot this object writes."""
        return self._slot

    def incr(self, counter: int, n: int = 1) -> None:
        """Add ``n`` (>= 0) to counter number ``counter``."""
        if n < 0 or n > _U64:
            raise OverflowError(f"a counter increment must be in [0, 2**64), not {n}")
        if counter < 0:
            raise IndexError("counter index out of range")
        counters = self._counters
        counters[counter] = (counters[counter] + n) & _U64

    def gauge_add(self, gauge: int, delta: int) -> None:
        """Add ``delta`` (may be negative) to gauge number ``gauge`` (wrapping at 64 bits)."""
        if not _I64_MIN <= delta <= _I64_MAX:
            raise OverflowError(f"a gauge change must fit in 64 bits, not {delta}")
        if gauge < 0:
            raise IndexError("gauge index out of range")
        gauges = self._gauges
        gauges[gauge] = ((gauges[gauge] + delta - _I64_MIN) & _U64) + _I64_MIN

    def gauge_set(self, gauge: int, value: int) -> None:
        """Set this process's part of gauge number ``gauge``."""
        if not _I64_MIN <= value <= _I64_MAX:
            raise OverflowError(f"a gauge must fit in 64 bits, not {value}")
        if gauge < 0:
            raise IndexError("gauge index out of range")
        self._gauges[gauge] = value

    def observe(self, histogram: int, value: float) -> None:
        """Count ``value`` in histogram number ``histogram``."""
        if histogram < 0:
            raise IndexError("histogram index out of range")
        bounds, counts, total = self._histograms[histogram]
        if value != value:
            raise ValueError("cannot observe NaN")
        bucket = bisect_left(bounds, value)
        counts[bucket] += 1
        total[0] += value

    def snapshot(self) -> StatsSnapshot:
        """The node's totals: every slot summed (gauges: slots of live processes only)."""
        schema = self._schema
        u64 = self._u64
        f64 = self._f64
        me = os.getpid()
        ncounters = len(schema.counters)
        ngauges = len(schema.gauges)
        counters = [0] * ncounters
        gauges = [0] * ngauges
        counts = [[0] * (len(h.bounds) + 1) for h in schema.histograms]
        sums = [0.0] * len(schema.histograms)
        for slot in range(self._slots):
            word = self._slot_base(slot)
            owner = u64[word + _OWNER]
            word += _SLOT_HEAD_WORDS
            for i in range(ncounters):
                counters[i] = (counters[i] + u64[word + i]) & _U64
            word += ncounters
            if owner == me or pid_alive(owner):
                for i in range(ngauges):
                    value = u64[word + i]
                    gauges[i] += value - (1 << 64) if value >> 63 else value
            word += ngauges
            for h, histogram_counts in enumerate(counts):
                for i in range(len(histogram_counts)):
                    histogram_counts[i] += u64[word + i]
                word += len(histogram_counts)
                sums[h] += f64[word]
                word += 1
        return StatsSnapshot(
            counters=dict(zip(schema.counters, counters, strict=True)),
            gauges=dict(zip(schema.gauges, gauges, strict=True)),
            histograms={
                h.name: HistogramSnapshot(h.bounds, tuple(c), s)
                for h, c, s in zip(schema.histograms, counts, sums, strict=True)
            },
        )

    def close(self) -> None:
        """Give the slot back (gauges zeroed, counters kept) and let go of the buffer."""
        if self._view is None:
            return
        with self._lock:
            self._zero_gauges(self._slot)
            self._u64[self._slot_base(self._slot) + _OWNER] = 0
        self._lock.close()
        views: list[Any] = [self._counters, self._gauges, self._u64, self._f64, self._view]
        views += [view for _, counts, total in self._histograms for view in (counts, total)]
        self._counters = self._gauges = CLOSED_STATS
        self._histograms = [((), CLOSED_STATS, CLOSED_STATS)] * len(self._histograms)
        self._u64 = self._f64 = CLOSED_STATS
        self._view = None
        for view in views:
            view.release()

    def __del__(self) -> None:
        if getattr(self, "_view", None) is not None:
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._view is None else f"slot {self._slot} of {self._slots}"
        return f"<SharedStats {state}>"
