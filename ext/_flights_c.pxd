# Fields of the compiled flight table (implemented in _flights_c.pyx).
cimport cython
from cpython.buffer cimport Py_buffer
from libc.stdint cimport uint32_t, uint64_t


# The region layout declared as regions.FLIGHTS_HEADER (checked against it at import).
ctypedef struct FlightsHeader:
    uint32_t magic
    uint32_t version
    uint32_t slots
    uint32_t window
    uint64_t reserved[6]


# One claim, regions.FLIGHT_SLOT.
ctypedef struct FlightSlot:
    uint64_t key[2]     # the cache key's 16 bytes
    uint64_t owner      # deadline_ms << 22 | pid; 0: free
    uint64_t reserved


@cython.final
cdef class FlightTable:
    # The buffer the region lives in, held for as long as the table uses it.
    cdef Py_buffer _view
    cdef bint _has_view
    # Points into _view; NULL once closed.
    cdef FlightsHeader* _head
    cdef FlightSlot* _slots
    cdef uint64_t _mask
    cdef uint32_t _window
    cdef readonly uint32_t slots

    cdef FlightSlot* _live(self) except NULL
    cdef Py_ssize_t _find(self, const uint64_t* key) noexcept
