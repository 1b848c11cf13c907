# Fields of the compiled call window (implemented in _window_c.pyx).
cimport cython
from cpython.buffer cimport Py_buffer
from libc.stdint cimport uint64_t


# One bucket, regions.WINDOW_BUCKET (checked against it at import).
ctypedef struct WindowBucket:
    uint64_t epoch
    uint64_t calls
    uint64_t failures
    double seconds


@cython.final
cdef class CallWindow:
    cdef Py_buffer _view
    cdef bint _has_view

    cdef WindowBucket* _bucket(self, Py_ssize_t at) except NULL
