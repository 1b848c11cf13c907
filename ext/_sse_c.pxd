# Fields and C-level methods of the compiled SSE decoder (implemented in _sse_c.pyx).
cimport cython


@cython.final
cdef class SSEDecoder:
    # A line whose terminator has not arrived yet (it never contains CR or LF).
    cdef char* _line
    cdef Py_ssize_t _line_len
    cdef Py_ssize_t _line_cap
    # The current event's data: its data-line values joined with LF.
    cdef char* _data
    cdef Py_ssize_t _data_len
    cdef Py_ssize_t _data_cap
    # Whether the current event has at least one data line (its data may still be empty).
    cdef bint _has_data
    # The previous chunk ended with CR: a LF starting the next one belongs to it.
    cdef bint _skip_lf

    cdef int _on_line(self, const char* line, Py_ssize_t n, list events) except -1
    cdef int _dispatch(self, list events) except -1
