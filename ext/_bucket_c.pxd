# Fields of the compiled token bucket (implemented in _bucket_c.pyx).
cimport cython
from cpython.buffer cimport Py_buffer
from libc.stdint cimport int64_t, uint32_t, uint64_t


# The region layout declared as regions.BUCKET (checked against it at import).
ctypedef struct BucketRegion:
    uint32_t magic
    uint32_t version
    double rate_per_s
    double burst
    int64_t tat_ns      # GCRA: CLOCK_MONOTONIC ns at which the bucket is full again
    int64_t creator_pid
    uint64_t region_id
    uint64_t reserved[2]


@cython.final
cdef class TokenBucket:
    # The buffer the region lives in, held for as long as the bucket uses it.
    cdef Py_buffer _view
    cdef bint _has_view
    # Points into _view: the shared state; NULL once closed.
    cdef BucketRegion* _region

    cdef int _use(self, object buffer) except -1
    cdef BucketRegion* _live(self) except NULL
