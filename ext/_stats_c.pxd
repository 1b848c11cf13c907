# Fields of the compiled shared stats (implemented in _stats_c.pyx).
cimport cython
from cpython.buffer cimport Py_buffer
from libc.stdint cimport int64_t, uint32_t, uint64_t


# The region header declared as regions.STATS_HEADER (checked against it at import).
ctypedef struct StatsHeader:
    uint32_t magic
    uint32_t version
    uint64_t fingerprint
    uint32_t slots
    uint32_t slot_size
    int64_t creator_pid
    uint64_t region_id
    uint32_t counters
    uint32_t gauges
    uint32_t histograms
    uint32_t histogram_words
    uint64_t reserved


# The head of one slot (regions.SLOT_HEAD); its counters, gauges and histograms follow.
ctypedef struct SlotHeader:
    int64_t owner_pid   # 0: free
    uint64_t claims


# One histogram of this process's slot.
ctypedef struct HistogramCell:
    const double* bounds  # into SharedStats._bounds
    Py_ssize_t nbounds
    uint64_t* counts      # nbounds + 1 buckets, in the slot
    double* sum           # in the slot


@cython.final
cdef class SharedStats:
    cdef object _schema
    # The buffer the region lives in, held for as long as the stats use it.
    cdef Py_buffer _view
    cdef bint _has_view
    cdef char* _base
    cdef Py_ssize_t _slots
    cdef Py_ssize_t _slot_size
    cdef Py_ssize_t _slot
    cdef int64_t _pid
    # Where gauges sit in every slot (words after the slot header), and how many.
    cdef Py_ssize_t _gauge_offset
    cdef Py_ssize_t _gauge_count
    # This process's slot; the counts are 0 (so any index is out of range) once closed.
    cdef Py_ssize_t _n_counters
    cdef Py_ssize_t _n_gauges
    cdef Py_ssize_t _n_histograms
    cdef uint64_t* _counters
    cdef int64_t* _gauges
    cdef HistogramCell* _histograms
    cdef double* _bounds

    cdef int _claim(self) except -1
    cdef SlotHeader* _slot_at(self, Py_ssize_t slot) noexcept
    cdef void _zero_gauges(self, Py_ssize_t slot) noexcept
    cdef void _release(self) noexcept
    cdef int _bad_index(self, str kind) except -1
