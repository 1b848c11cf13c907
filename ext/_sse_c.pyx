# cython: language_level=3
"""Incremental Server-Sent-Events decoder (compiled twin).

Same names, signatures and results as ``aigateway.hotpath._sse_py``, which is the
specification; read it for the rules.

Algorithm
---------
The decoder owns two growable C buffers and no Python objects:

``_line``
    the bytes of a line whose terminator has not arrived yet (only ever used when a line
    straddles a chunk boundary);
``_data``
    the current event's data so far: the data-line values joined with LF, plus the flag
    ``_has_data`` that tells "no data line yet" from "one empty data line".

``feed`` walks the chunk in place through a ``const char*``.  Line ends are located with
``memchr`` (vectorised by libc), one search for LF and one for CR; each result is
remembered until the scan passes it, so a chunk without any CR costs a single extra
``memchr`` and CRLF framing costs two per line.  For every complete line:

* if part of it is already in ``_line`` (it began in an earlier chunk), the rest is appended
  there and ``_line`` is handled as the line, then emptied;
* otherwise the line is handled straight out of the chunk, without a copy.

Handling a line means: empty line -> dispatch; ``data`` or ``data:...`` -> append the value
(after an LF separator if the event already has data) to ``_data``; a line starting with
``{`` -> append the whole line (Gemini's bare in-stream error JSON); anything else is a
comment or an ignored field.  Dispatching creates the payload with a single
``PyBytes_FromStringAndSize`` over ``_data`` and empties it.  A CR that is the last byte of
a chunk ends its line at once (no waiting for the next chunk) and sets ``_skip_lf`` so that
an LF opening the next chunk is not taken for a blank line.  What is left after the last
terminator is appended to ``_line``.

Every input byte is copied at most twice (into ``_line`` when a line is split, into
``_data`` for data lines) and the buffers grow geometrically, so any chunking of a stream
costs time linear in its length.  Buffers that grew past ``_KEEP_CAPACITY`` for one huge
event are released once emptied, so a long-lived decoder does not keep that memory.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.string cimport memchr, memcpy

__all__ = ("SSEDecoder",)

cdef enum:
    _LF = 0x0A
    _CR = 0x0D
    _COLON = 0x3A
    _SPACE = 0x20
    _BRACE = 0x7B
    _MIN_CAPACITY = 256
    _KEEP_CAPACITY = 64 * 1024


cdef inline Py_ssize_t _find(const char* p, Py_ssize_t start, Py_ssize_t end, int byte) noexcept:
    """Index of the first ``byte`` in ``p[start:end]``, or ``end`` if there is none."""
    cdef const void* hit = memchr(p + start, byte, <size_t>(end - start))
    return end if hit == NULL else <const char*>hit - p


cdef int _append(char** buf, Py_ssize_t* length, Py_ssize_t* capacity,
                 const char* src, Py_ssize_t n) except -1:
    """Append ``src[:n]`` to the growable buffer ``(*buf, *length, *capacity)``."""
    cdef Py_ssize_t need = length[0] + n
    cdef Py_ssize_t new_capacity
    cdef char* grown
    if need > capacity[0]:
        new_capacity = capacity[0] * 2
        if new_capacity < need:
            new_capacity = need
        if new_capacity < _MIN_CAPACITY:
            new_capacity = _MIN_CAPACITY
        grown = <char*>PyMem_Realloc(buf[0], <size_t>new_capacity)
        if grown == NULL:
            raise MemoryError()
        buf[0] = grown
        capacity[0] = new_capacity
    if n:
        memcpy(buf[0] + length[0], src, <size_t>n)
    length[0] = need
    return 0


@cython.final
cdef class SSEDecoder:
    """Turn a stream of byte chunks into the data payloads of its events.

    ``feed`` each chunk as it arrives and collect the payloads of the events it completes;
    call ``flush`` once at the end of the stream for a last event that was never ended by
    a blank line.  Chunks may be ``bytes`` or any other bytes-like object; payloads are
    always ``bytes``.
    """

    def __cinit__(self):
        self._line = NULL
        self._line_len = self._line_cap = 0
        self._data = NULL
        self._data_len = self._data_cap = 0
        self._has_data = False
        self._skip_lf = False

    def __dealloc__(self):
        PyMem_Free(self._line)
        PyMem_Free(self._data)

    def feed(self, object chunk):
        """Consume ``chunk``; return the data payloads of the events it completes, in order."""
        cdef bytes buf = chunk if type(chunk) is bytes else bytes(chunk)
        cdef const char* p = PyBytes_AS_STRING(buf)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
        cdef Py_ssize_t start = 0
        cdef Py_ssize_t end
        cdef Py_ssize_t next_lf = -1
        cdef Py_ssize_t next_cr = -1
        cdef list events = []

        if n == 0:
            return events
        if self._skip_lf:
            self._skip_lf = False
            if p[0] == _LF:
                start = 1

        while start < n:
            if next_lf < start:
                next_lf = _find(p, start, n, _LF)
            if next_cr < start:
                next_cr = _find(p, start, n, _CR)
            end = next_lf if next_lf < next_cr else next_cr
            if end == n:
                break  # no terminator left: the rest is an incomplete line
            if self._line_len:
                _append(&self._line, &self._line_len, &self._line_cap, p + start, end - start)
                self._on_line(self._line, self._line_len, events)
                self._line_len = 0
                if self._line_cap > _KEEP_CAPACITY:
                    PyMem_Free(self._line)
                    self._line = NULL
                    self._line_cap = 0
            else:
                self._on_line(p + start, end - start, events)
            if p[end] == _CR:
                if end + 1 == n:
                    self._skip_lf = True
                elif p[end + 1] == _LF:
                    end += 1
            start = end + 1

        if start < n:
            _append(&self._line, &self._line_len, &self._line_cap, p + start, n - start)
        return events

    def flush(self):
        """End of stream: return the payload of an event left without its blank line.

        An unterminated last line counts as a complete line.  The decoder is reset and can
        be used for a new stream.
        """
        cdef list events = []
        self._skip_lf = False
        if self._line_len:
            self._on_line(self._line, self._line_len, events)
            self._line_len = 0
        self._dispatch(events)
        PyMem_Free(self._line)
        self._line = NULL
        self._line_cap = 0
        PyMem_Free(self._data)
        self._data = NULL
        self._data_cap = 0
        return events

    cdef int _on_line(self, const char* line, Py_ssize_t n, list events) except -1:
        cdef Py_ssize_t value = 4
        if n == 0:
            return self._dispatch(events)
        if line[0] == _BRACE:
            value = 0  # a bare JSON line, taken whole: Gemini's in-stream error
        elif n < 4 or line[0] != b"d" or line[1] != b"a" or line[2] != b"t" or line[3] != b"a":
            return 0  # a comment or a field other than data
        elif n > 4:
            if line[4] != _COLON:
                return 0  # a field whose name merely starts with "data"
            value = 6 if n > 5 and line[5] == _SPACE else 5
        if self._has_data:
            _append(&self._data, &self._data_len, &self._data_cap, b"\n", 1)
        _append(&self._data, &self._data_len, &self._data_cap, line + value, n - value)
        self._has_data = True
        return 0

    cdef int _dispatch(self, list events) except -1:
        if not self._has_data:
            return 0
        events.append(PyBytes_FromStringAndSize(self._data, self._data_len))
        self._data_len = 0
        self._has_data = False
        if self._data_cap > _KEEP_CAPACITY:
            PyMem_Free(self._data)
            self._data = NULL
            self._data_cap = 0
        return 0
