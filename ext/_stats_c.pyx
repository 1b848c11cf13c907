# cython: language_level=3
"""Counters, gauges and histograms of a node in shared memory (compiled twin).

Same names, signatures and results as ``aigateway.hotpath._stats_py``, which is the
specification; read it for the API and ``aigateway.hotpath.regions`` for the layout.

Algorithm
---------
Every writing process owns one slot of the region, so an update is a load and a store on
a word nobody else writes: ``incr`` is ``counters[i] += n`` done as a relaxed atomic load
and store (atomic so that a reader never sees a torn word; no ordering is needed), a few
nanoseconds after the bounds check.  ``observe`` finds the bucket by binary search over a
private C copy of the bounds and does the same on the bucket count and the sum.

A slot is claimed with a compare-and-swap on its owner word, from 0 (free) or from the pid
of a dead process (``kill(pid, 0)`` fails with ESRCH) to our pid; the slot's counters and
histograms are kept, so the node's totals never go down when a worker is replaced, and
its gauges are zeroed (they described the dead process).  Two processes racing for one
slot cannot both win the CAS.  ``snapshot`` sums every slot into C arrays first and makes
Python objects once at the end.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.long cimport PyLong_AsLongLong, PyLong_AsUnsignedLongLong
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc
from libc.errno cimport EPERM, errno
from libc.stdint cimport int64_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memset

from includes.atomics cimport (
    aigw_cas_i64,
    aigw_load_f64_relaxed,
    aigw_load_i64,
    aigw_load_i64_relaxed,
    aigw_load_u64_relaxed,
    aigw_store_f64_relaxed,
    aigw_store_i64,
    aigw_store_i64_relaxed,
    aigw_store_u64_relaxed,
)
from includes.system cimport getpid, kill

import os

from ._stats_schema import Histogram, HistogramSnapshot, StatsSchema, StatsSnapshot
from .regions import REGION_VERSION, SLOT_HEAD, STATS_HEADER, STATS_MAGIC

__all__ = ("Histogram", "HistogramSnapshot", "SharedStats", "StatsSchema", "StatsSnapshot")

cdef uint32_t _MAGIC = STATS_MAGIC
cdef uint32_t _VERSION = REGION_VERSION

# The C structs must be the declared layouts: a mismatch fails the import, loudly.
cdef StatsHeader _header
cdef SlotHeader _slot_head
C_LAYOUTS = {
    "stats header": (
        sizeof(StatsHeader),
        {
            "magic": <char*>&_header.magic - <char*>&_header,
            "version": <char*>&_header.version - <char*>&_header,
            "fingerprint": <char*>&_header.fingerprint - <char*>&_header,
            "slots": <char*>&_header.slots - <char*>&_header,
            "slot_size": <char*>&_header.slot_size - <char*>&_header,
            "creator_pid": <char*>&_header.creator_pid - <char*>&_header,
            "region_id": <char*>&_header.region_id - <char*>&_header,
            "counters": <char*>&_header.counters - <char*>&_header,
            "gauges": <char*>&_header.gauges - <char*>&_header,
            "histograms": <char*>&_header.histograms - <char*>&_header,
            "histogram_words": <char*>&_header.histogram_words - <char*>&_header,
            "reserved": <char*>&_header.reserved - <char*>&_header,
        },
    ),
    "slot head": (
        sizeof(SlotHeader),
        {
            "owner_pid": <char*>&_slot_head.owner_pid - <char*>&_slot_head,
            "claims": <char*>&_slot_head.claims - <char*>&_slot_head,
        },
    ),
}
STATS_HEADER.check(*C_LAYOUTS["stats header"])
SLOT_HEAD.check(*C_LAYOUTS["slot head"])


cdef inline bint _alive(int64_t pid) noexcept:
    if pid <= 0:
        return False
    return kill(<int>pid, 0) == 0 or errno == EPERM


cdef int _get_region(Py_buffer* view, object buffer, Py_ssize_t need) except -1:
    """Fill ``view`` with a writable, 8-byte aligned buffer of at least ``need`` bytes."""
    PyObject_GetBuffer(buffer, view, PyBUF_SIMPLE)
    if view.readonly:
        PyBuffer_Release(view)
        raise TypeError("shared stats need a writable buffer")
    if view.len < need:
        PyBuffer_Release(view)
        raise ValueError(f"shared stats need {need} bytes, the buffer has {view.len}")
    if <uintptr_t>view.buf % 8:
        PyBuffer_Release(view)
        raise ValueError("the buffer of shared stats must be 8-byte aligned")
    return 0


# no_gc_clear: the collector must never drop ``_view.obj`` on its own (it would free a
# private buffer that still counts this export); ``__dealloc__`` releases the view.
@cython.final
@cython.no_gc_clear
cdef class SharedStats:
    """This process's slot of a node's statistics, and the node's totals."""

    def __cinit__(self):
        self._has_view = False
        self._base = NULL
        self._gauge_offset = self._gauge_count = 0
        self._n_counters = self._n_gauges = self._n_histograms = 0
        self._counters = NULL
        self._gauges = NULL
        self._histograms = NULL
        self._bounds = NULL

    def __dealloc__(self):
        self._release()
        PyMem_Free(self._histograms)
        PyMem_Free(self._bounds)

    @staticmethod
    def buffer_size(schema, slots):
        """Bytes of a region for ``schema`` with ``slots`` slots."""
        return schema.buffer_size(slots)

    @staticmethod
    def initialise(buffer, schema, slots):
        """Lay out a fresh region in ``buffer``: header written, every slot free and zero."""
        cdef Py_ssize_t size = schema.buffer_size(slots)
        cdef Py_buffer view
        cdef StatsHeader* header
        _get_region(&view, buffer, size)
        try:
            header = <StatsHeader*>view.buf
            memset(view.buf, 0, size)
            header.fingerprint = schema.fingerprint
            header.creator_pid = getpid()
            header.region_id = int.from_bytes(os.urandom(8), "little")
            header.slots = slots
            header.slot_size = schema.slot_size
            header.counters = len(schema.counters)
            header.gauges = len(schema.gauges)
            header.histograms = len(schema.histograms)
            header.histogram_words = schema.histogram_words
            header.version = _VERSION
            header.magic = _MAGIC
        finally:
            PyBuffer_Release(&view)

    def __init__(self, schema, buffer=None):
        cdef StatsHeader* header
        cdef Py_ssize_t size, i, j, nbounds, total_bounds
        cdef char* cell
        if not isinstance(schema, StatsSchema):
            raise TypeError(f"schema must be a StatsSchema, not {type(schema).__name__}")
        if self._has_view:
            raise RuntimeError("SharedStats.__init__ called twice")
        if buffer is None:
            buffer = bytearray(schema.buffer_size(1))
            SharedStats.initialise(buffer, schema, 1)
        _get_region(&self._view, buffer, sizeof(StatsHeader))
        self._has_view = True
        header = <StatsHeader*>self._view.buf
        if header.magic != _MAGIC or header.version != _VERSION:
            self._release()
            raise ValueError("the buffer holds no shared stats (bad magic or version)")
        if header.fingerprint != <uint64_t>schema.fingerprint:
            self._release()
            raise ValueError("the shared stats in the buffer were laid out for another schema")
        if header.slot_size != <uint32_t>schema.slot_size or header.slots == 0:
            self._release()
            raise ValueError("the shared stats in the buffer have an inconsistent header")
        size = schema.buffer_size(header.slots)
        if self._view.len < size:
            self._release()
            raise ValueError(f"shared stats need {size} bytes, the buffer has {self._view.len}")
        self._schema = schema
        self._base = <char*>self._view.buf
        self._slots = header.slots
        self._slot_size = header.slot_size
        self._pid = getpid()
        n_counters = len(schema.counters)
        n_gauges = len(schema.gauges)
        self._gauge_offset = n_counters
        self._gauge_count = n_gauges
        histograms = schema.histograms
        total_bounds = sum([len(h.bounds) for h in histograms])
        self._histograms = <HistogramCell*>PyMem_Malloc(
            max(1, len(histograms)) * sizeof(HistogramCell)
        )
        self._bounds = <double*>PyMem_Malloc(max(1, total_bounds) * sizeof(double))
        if self._histograms == NULL or self._bounds == NULL:
            self._release()
            raise MemoryError()
        self._claim()
        cell = <char*>self._slot_at(self._slot) + sizeof(SlotHeader)
        self._counters = <uint64_t*>cell
        cell += 8 * n_counters
        self._gauges = <int64_t*>cell
        cell += 8 * n_gauges
        total_bounds = 0
        for i, histogram in enumerate(histograms):
            nbounds = len(histogram.bounds)
            for j in range(nbounds):
                self._bounds[total_bounds + j] = histogram.bounds[j]
            self._histograms[i].bounds = self._bounds + total_bounds
            self._histograms[i].nbounds = nbounds
            self._histograms[i].counts = <uint64_t*>cell
            self._histograms[i].sum = <double*>(cell + 8 * (nbounds + 1))
            cell += 8 * (nbounds + 2)
            total_bounds += nbounds
        self._n_counters = n_counters
        self._n_gauges = n_gauges
        self._n_histograms = len(histograms)

    cdef SlotHeader* _slot_at(self, Py_ssize_t slot) noexcept:
        return <SlotHeader*>(self._base + sizeof(StatsHeader) + slot * self._slot_size)

    cdef int _claim(self) except -1:
        cdef Py_ssize_t slot
        cdef SlotHeader* head
        cdef int64_t owner
        for slot in range(self._slots):
            head = self._slot_at(slot)
            owner = aigw_load_i64(&head.owner_pid)
            while owner == 0 or (owner != self._pid and not _alive(owner)):
                if aigw_cas_i64(&head.owner_pid, &owner, self._pid):
                    aigw_store_u64_relaxed(&head.claims, aigw_load_u64_relaxed(&head.claims) + 1)
                    self._slot = slot
                    self._zero_gauges(slot)
                    return 0
                # Lost the race for this slot: owner is the winner's pid now; look again.
        self._release()
        raise RuntimeError(f"all {self._slots} stats slots belong to live processes")

    cdef void _zero_gauges(self, Py_ssize_t slot) noexcept:
        cdef int64_t* gauges = <int64_t*>(<char*>self._slot_at(slot) + sizeof(SlotHeader))
        cdef Py_ssize_t i
        for i in range(self._gauge_offset, self._gauge_offset + self._gauge_count):
            aigw_store_i64_relaxed(gauges + i, 0)

    cdef void _release(self) noexcept:
        """Give the slot back, if claimed, and the buffer."""
        cdef SlotHeader* head
        if self._counters != NULL:
            self._zero_gauges(self._slot)
            head = self._slot_at(self._slot)
            aigw_store_i64(&head.owner_pid, 0)
        self._n_counters = self._n_gauges = self._n_histograms = 0
        self._counters = NULL
        self._gauges = NULL
        self._base = NULL
        if self._has_view:
            self._has_view = False
            PyBuffer_Release(&self._view)

    cdef int _bad_index(self, str kind) except -1:
        if self._base == NULL:
            raise ValueError("the shared stats are closed")
        raise IndexError(f"{kind} index out of range")

    @property
    def schema(self):
        return self._schema

    @property
    def slot(self):
        """The index of the slot this object writes."""
        return self._slot

    def incr(self, Py_ssize_t counter, object n=1):
        """Add ``n`` (>= 0) to counter number ``counter``."""
        # PyLong_As* take ints only (a C-typed argument would also truncate floats).
        cdef uint64_t amount = PyLong_AsUnsignedLongLong(n)
        cdef uint64_t* cell
        if <size_t>counter >= <size_t>self._n_counters:
            self._bad_index("counter")
        cell = self._counters + counter
        aigw_store_u64_relaxed(cell, aigw_load_u64_relaxed(cell) + amount)

    def gauge_add(self, Py_ssize_t gauge, object delta):
        """Add ``delta`` (may be negative) to gauge number ``gauge``."""
        cdef int64_t amount = PyLong_AsLongLong(delta)
        cdef int64_t* cell
        if <size_t>gauge >= <size_t>self._n_gauges:
            self._bad_index("gauge")
        cell = self._gauges + gauge
        aigw_store_i64_relaxed(
            cell, <int64_t>(<uint64_t>aigw_load_i64_relaxed(cell) + <uint64_t>amount)
        )

    def gauge_set(self, Py_ssize_t gauge, object value):
        """Set this process's part of gauge number ``gauge``."""
        cdef int64_t level = PyLong_AsLongLong(value)
        if <size_t>gauge >= <size_t>self._n_gauges:
            self._bad_index("gauge")
        aigw_store_i64_relaxed(self._gauges + gauge, level)

    def observe(self, Py_ssize_t histogram, double value):
        """Count ``value`` in histogram number ``histogram``."""
        cdef HistogramCell* h
        cdef Py_ssize_t lo = 0, hi, mid
        if <size_t>histogram >= <size_t>self._n_histograms:
            self._bad_index("histogram")
        if value != value:
            raise ValueError("cannot observe NaN")
        h = self._histograms + histogram
        hi = h.nbounds
        while lo < hi:  # bisect_left: the first bound >= value
            mid = (lo + hi) >> 1
            if h.bounds[mid] < value:
                lo = mid + 1
            else:
                hi = mid
        aigw_store_u64_relaxed(h.counts + lo, aigw_load_u64_relaxed(h.counts + lo) + 1)
        aigw_store_f64_relaxed(h.sum, aigw_load_f64_relaxed(h.sum) + value)

    def snapshot(self):
        """The node's totals: every slot summed (gauges: slots of live processes only)."""
        cdef Py_ssize_t n_counters = self._n_counters
        cdef Py_ssize_t n_gauges = self._n_gauges
        cdef Py_ssize_t words, slot, h, i, j, nbuckets
        cdef SlotHeader* head
        cdef uint64_t* totals
        cdef int64_t* gauges
        cdef uint64_t* counts
        cdef uint64_t* cell
        cdef int64_t owner
        if self._base == NULL:
            raise ValueError("the shared stats are closed")
        words = n_counters + n_gauges + self._schema.histogram_words
        # One zeroed scratch block laid out like a slot: counters, gauges, histograms.
        totals = <uint64_t*>PyMem_Calloc(max(1, words), 8)
        if totals == NULL:
            raise MemoryError()
        gauges = <int64_t*>(totals + n_counters)
        counts = totals + n_counters + n_gauges
        try:
            for slot in range(self._slots):
                head = self._slot_at(slot)
                owner = aigw_load_i64(&head.owner_pid)
                cell = <uint64_t*>(<char*>head + sizeof(SlotHeader))
                for i in range(n_counters):
                    totals[i] += aigw_load_u64_relaxed(cell + i)
                cell += n_counters
                if owner == self._pid or _alive(owner):
                    for i in range(n_gauges):
                        gauges[i] += aigw_load_i64_relaxed(<int64_t*>cell + i)
                cell += n_gauges
                i = 0
                for h in range(self._n_histograms):
                    nbuckets = self._histograms[h].nbounds + 1
                    for j in range(i, i + nbuckets):
                        counts[j] += aigw_load_u64_relaxed(cell + j)
                    i += nbuckets
                    (<double*>(counts + i))[0] += aigw_load_f64_relaxed(<double*>(cell + i))
                    i += 1
            histograms = {}
            i = 0
            for h, histogram in enumerate(self._schema.histograms):
                nbuckets = self._histograms[h].nbounds + 1
                histograms[histogram.name] = HistogramSnapshot(
                    histogram.bounds,
                    tuple([counts[j] for j in range(i, i + nbuckets)]),
                    (<double*>(counts + i + nbuckets))[0],
                )
                i += nbuckets + 1
            return StatsSnapshot(
                counters={name: totals[i] for i, name in enumerate(self._schema.counters)},
                gauges={name: gauges[i] for i, name in enumerate(self._schema.gauges)},
                histograms=histograms,
            )
        finally:
            PyMem_Free(totals)

    def close(self):
        """Give the slot back (gauges zeroed, counters kept) and let go of the buffer."""
        self._release()

    def __repr__(self):
        if self._base == NULL:
            return "<SharedStats closed>"
        return f"<SharedStats slot {self._slot} of {self._slots}>"
