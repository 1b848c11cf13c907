"""Labelled metrics in the node's shared memory: a table of series every worker adds to.

``hotpath.SharedStats`` holds metrics whose names are fixed before the workers start.
Metrics with labels whose values only show up at run time (provider, model, route,
outcome) live here: a *series* is one metric with one set of label values, identified by
a key such as ``provider_calls\\x1fprovider=openai\\x1fmodel=gpt-4o\\x1foutcome=ok``.

Like ``SharedStats``, every worker writes only its own *slot*, so writers never contend
and a worker that dies leaves its counts behind for the node's totals; the first worker
that takes a dead worker's slot carries on from its values. What the workers share is
the directory of series, appended to under a lock (rarely: each process remembers the
series it has seen), never rewritten, so readers need no lock.

Region layout (``series`` and ``cells`` capacities and ``slots`` come from the region's
parameters): a head (``HEAD``), the directory of ``series`` entries (``ENTRY``), ``slots``
slot heads (``hotpath.regions.SLOT_HEAD``: i64 owner pid, u64 claims), then ``slots`` x
``cells`` values of 8 bytes (u64 counter, i64 gauge, histogram: u64 count per bucket,
+Inf last, then f64 sum)::

    0    u32  series_used
    4    u32  cells_used
    64   (end)

    0    u32         first_cell
    4    u16         cells
    6    u8          kind        1 counter, 2 gauge, 3 histogram
    7    u8          key_length
    8    bytes[120]  key         UTF-8
    128  (end)

A full table takes no more series: ``cell()`` returns -1 and the caller counts the drop.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from aigateway.hotpath.regions import SLOT_HEAD, RegionLock, pid_alive
from aigateway.shm_layout import Field, Layout

__all__ = (
    "COUNTER",
    "ENTRY",
    "GAUGE",
    "HEAD",
    "HISTOGRAM",
    "Series",
    "SeriesTable",
    "series_key",
    "split_key",
)

COUNTER: Final = 1
GAUGE: Final = 2
HISTOGRAM: Final = 3

HEAD: Final = Layout(
    "series table", (Field("series_used", "u32"), Field("cells_used", "u32")), size=64
)
ENTRY: Final = Layout(
    "series entry",
    (
        Field("first_cell", "u32"),
        Field("cells", "u16"),
        Field("kind", "u8", doc="1 counter, 2 gauge, 3 histogram"),
        Field("key_length", "u8"),
        Field("key", "bytes", 120, doc="UTF-8"),
    ),
)
_HEADER = HEAD.size
_USED = HEAD.index("series_used")
_CELLS = HEAD.index("cells_used")
_ENTRY = ENTRY.size
_ENTRY_STRUCT = ENTRY.struct
_MAX_KEY = ENTRY.field("key").count
_SLOT_HEAD = SLOT_HEAD.size
_OWNER = SLOT_HEAD.index("owner_pid")
_CLAIMS = SLOT_HEAD.index("claims")
_SEPARATOR = "\x1f"
_U64 = 2**64 - 1


def series_key(family: str, labels: Sequence[tuple[str, str]]) -> str:
    """The key of one series: its family and label pairs (values must not hold \\x1f)."""
    return _SEPARATOR.join([family, *(f"{name}={value}" for name, value in labels)])


def split_key(key: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    family, *pairs = key.split(_SEPARATOR)
    labels = []
    for pair in pairs:
        name, _, value = pair.partition("=")
        labels.append((name, value))
    return family, tuple(labels)


@dataclass(frozen=True, slots=True)
class Series:
    """One series summed over the node: counters and gauges have one value, histograms
    the count of each bucket (+Inf last) and then the sum."""

    family: str
    labels: tuple[tuple[str, str], ...]
    kind: int
    values: tuple[float, ...]

    @property
    def value(self) -> float:
        return self.values[0]


class SeriesTable:
    """This process's slot of the node's labelled series, and the node's totals."""

    #: What the region is laid out by (``shm.RegionSpec.layouts``).
    LAYOUTS: ClassVar[tuple[Layout, ...]] = (HEAD, ENTRY, SLOT_HEAD)

    def __init__(
        self,
        region: memoryview,
        params: dict[str, Any],
        lock_path: str | None,
        *,
        claim_slot: bool = True,
    ) -> None:
        """``claim_slot=False``: a reader of the node's totals that writes nothing and is
        not counted as a worker (the node agent's, for its heartbeat)."""
        self._series = int(params["series"])
        self._cells = int(params["cells"])
        self._slots = int(params["slots"])
        need = self.size(self._series, self._cells, self._slots)
        if len(region) < need:
            raise ValueError(f"a series table needs {need} bytes, the region has {len(region)}")
        self._view = region[:need]
        self._u32 = self._view[:_HEADER].cast("I")
        self._slot_words = (_HEADER + self._series * _ENTRY) // 8
        self._value_words = self._slot_words + self._slots * _SLOT_HEAD // 8
        self._u64 = self._view.cast("Q")
        self._i64 = self._view.cast("q")
        self._f64 = self._view.cast("d")
        self._lock = RegionLock(lock_path)
        # Directory entries parsed so far (they never change once written).
        self._entries: list[tuple[str, int, int, int]] = []  # key, kind, first cell, cells
        self._known: dict[str, int] = {}  # key -> first cell
        self._reader = not claim_slot  # open until closed, with no slot to give back
        self._slot = self._claim() if claim_slot else -1
        self._base = self._value_words + self._slot * self._cells

    @staticmethod
    def size(series: int, cells: int, slots: int) -> int:
        """Bytes of a table for ``series`` series of ``cells`` values in all, ``slots`` slots."""
        return _HEADER + series * _ENTRY + slots * (_SLOT_HEAD + 8 * cells)

    @property
    def slot(self) -> int:
        return self._slot

    # -- writing (this process's slot) ---------------------------------------------------

    def cell(self, kind: int, key: str, width: int = 1) -> int:
        """The first value cell of series ``key`` (registered on first use), or -1 if the
        table is full or the key too long."""
        cell = self._known.get(key)
        if cell is not None:
            return cell
        if self._slot < 0:
            return -1  # closed
        raw = key.encode()
        if len(raw) > _MAX_KEY or not 1 <= width <= 0xFFFF:
            return -1
        with self._lock:
            self._read_directory()
            cell = self._known.get(key)
            if cell is not None:
                return cell
            used, cells = self._u32[_USED], self._u32[_CELLS]
            if used >= self._series or cells + width > self._cells:
                return -1
            at = _HEADER + used * _ENTRY
            _ENTRY_STRUCT.pack_into(self._view, at, cells, width, kind, len(raw), raw)
            self._u32[_CELLS] = cells + width
            self._u32[_USED] = used + 1  # last: readers see only complete entries
            self._read_directory()
        return self._known[key]

    def add(self, cell: int, n: int = 1) -> None:
        """Add ``n`` to a counter (or ``n`` may be negative: to a gauge)."""
        if cell < 0 or self._slot < 0:
            return
        word = self._base + cell
        if n >= 0:
            self._u64[word] = (self._u64[word] + n) & _U64
        else:
            self._i64[word] += n

    def observe(self, cell: int, bounds: Sequence[float], value: float) -> None:
        """Count ``value`` in the histogram whose first cell is ``cell``."""
        if cell < 0 or value != value or self._slot < 0:
            return
        word = self._base + cell
        self._u64[word + bisect_left(bounds, value)] += 1
        self._f64[word + len(bounds) + 1] += value

    # -- reading (the node) --------------------------------------------------------------

    def read(self) -> list[Series]:
        """Every series summed over the slots (gauges over slots of live processes)."""
        self._read_directory()
        owners = [self._owner(slot) for slot in range(self._slots)]
        used = [slot for slot, (pid, claims) in enumerate(owners) if claims]
        live = [slot for slot in used if owners[slot][0] and _alive(owners[slot][0])]
        result = []
        for key, kind, first, width in self._entries:
            slots = live if kind == GAUGE else used
            values: list[float] = []
            for i in range(width):
                if kind == HISTOGRAM and i == width - 1:
                    values.append(sum(self._f64[self._word(s, first + i)] for s in slots))
                elif kind == GAUGE:
                    values.append(float(sum(self._i64[self._word(s, first + i)] for s in slots)))
                else:
                    values.append(float(sum(self._u64[self._word(s, first + i)] for s in slots)))
            family, labels = split_key(key)
            result.append(Series(family, labels, kind, tuple(values)))
        return result

    def live_slots(self) -> int:
        """How many slots belong to live processes (the node's workers)."""
        return sum(1 for pid, _ in map(self._owner, range(self._slots)) if pid and _alive(pid))

    def close(self) -> None:
        """Give the slot back (its gauges zeroed, its counters kept) and let go of the region."""
        if self._slot < 0 and not self._reader:
            return
        if self._slot >= 0:
            with self._lock:
                self._read_directory()
                self._zero_gauges(self._slot)
                self._i64[self._head_word(self._slot) + _OWNER] = 0
        self._slot, self._reader = -1, False
        self._lock.close()
        for view in (self._u32, self._u64, self._i64, self._f64, self._view):
            view.release()

    # -- internals -----------------------------------------------------------------------

    def _claim(self) -> int:
        me = os.getpid()
        with self._lock:
            self._read_directory()
            for slot in range(self._slots):
                owner, _ = self._owner(slot)
                if owner == 0 or (owner != me and not _alive(owner)):
                    word = self._head_word(slot)
                    self._i64[word + _OWNER] = me
                    self._u64[word + _CLAIMS] += 1
                    self._zero_gauges(slot)
                    return slot
        raise RuntimeError(f"all {self._slots} slots of the series table belong to live processes")

    def _head_word(self, slot: int) -> int:
        return self._slot_words + slot * _SLOT_HEAD // 8

    def _owner(self, slot: int) -> tuple[int, int]:
        word = self._head_word(slot)
        return self._i64[word + _OWNER], self._u64[word + _CLAIMS]

    def _word(self, slot: int, cell: int) -> int:
        return self._value_words + slot * self._cells + cell

    def _zero_gauges(self, slot: int) -> None:
        for _, kind, first, width in self._entries:
            if kind == GAUGE:
                for i in range(width):
                    self._i64[self._word(slot, first + i)] = 0

    def _read_directory(self) -> None:
        used = self._u32[_USED]
        for index in range(len(self._entries), used):
            at = _HEADER + index * _ENTRY
            first, width, kind, length, raw = _ENTRY_STRUCT.unpack_from(self._view, at)
            key = raw[:length].decode()
            self._entries.append((key, kind, first, width))
            self._known[key] = first


def _alive(pid: int) -> bool:
    return pid == os.getpid() or pid_alive(pid)
