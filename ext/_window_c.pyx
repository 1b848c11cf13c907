# cython: language_level=3
"""Counting calls into a window bucket of the health board (compiled twin).

Same names, signatures and results as ``aigateway.hotpath._window_py``, which is the
specification.

``count`` loads the bucket's epoch (acquire) and, when it is the caller's, adds to the
calls and failures with atomic fetch-and-add and to the summed seconds with a
compare-and-swap loop on the double's 64 bits: so every worker records its calls' outcomes
at once, with no lock.  ``reset`` (called under the region's lock, when the window moved
on) writes the counts first and the epoch last (release), so a ``count`` that sees the
new epoch adds on top of them; one that saw the old epoch declined and takes the lock.
A ``count`` that read the epoch just before a reset 30 s later (the same bucket, six
epochs on) could still add its call to the new epoch: one call, once in a long while.
"""

cimport cython
from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport int64_t, uint64_t, uintptr_t
from libc.string cimport memcpy

from includes.atomics cimport aigw_cas_i64, aigw_load_u64, aigw_store_f64, aigw_store_u64

from .regions import WINDOW_BUCKET

__all__ = ("ATOMIC_WINDOW", "CallWindow")

ATOMIC_WINDOW = True


cdef extern from *:
    """
    static inline void aigw_add_u64(uint64_t *p, uint64_t n) {
        __atomic_fetch_add(p, n, __ATOMIC_RELAXED);
    }
    """
    void aigw_add_u64(uint64_t* p, uint64_t n) nogil


cdef WindowBucket _probe
C_LAYOUTS = {
    "bucket": (
        sizeof(WindowBucket),
        {
            "epoch": <char*>&_probe.epoch - <char*>&_probe,
            "calls": <char*>&_probe.calls - <char*>&_probe,
            "failures": <char*>&_probe.failures - <char*>&_probe,
            "seconds": <char*>&_probe.seconds - <char*>&_probe,
        },
    ),
}
WINDOW_BUCKET.check(*C_LAYOUTS["bucket"])


cdef inline void _add_f64(double* p, double n) noexcept:
    cdef int64_t old = <int64_t>aigw_load_u64(<uint64_t*>p)
    cdef int64_t new
    cdef double value
    while True:
        memcpy(&value, &old, 8)
        value += n
        memcpy(&new, &value, 8)
        if aigw_cas_i64(<int64_t*>p, &old, new):
            return


@cython.final
cdef class CallWindow:
    """Counts calls into the window buckets of one buffer."""

    def __cinit__(self):
        self._has_view = False

    def __init__(self, object buffer):
        if self._has_view:
            self.close()
        try:
            PyObject_GetBuffer(buffer, &self._view, PyBUF_WRITABLE)
        except BufferError:
            raise TypeError("a call window needs a writable buffer") from None
        self._has_view = True
        if <uintptr_t>self._view.buf % 8:
            raise ValueError("a call window's buffer must be 8-byte aligned")

    def __dealloc__(self):
        if self._has_view:
            PyBuffer_Release(&self._view)

    cdef WindowBucket* _bucket(self, Py_ssize_t at) except NULL:
        if not self._has_view:
            raise ValueError("the call window is closed")
        if at % 8 or not (0 <= at <= (self._view.len - self._view.len % 8) - <Py_ssize_t>sizeof(WindowBucket)):
            raise ValueError(f"no bucket fits at byte {at!r}")
        return <WindowBucket*>(<char*>self._view.buf + at)

    def count(self, Py_ssize_t at, uint64_t epoch, bint failed, double seconds):
        """Count one call into the bucket at ``at`` if it holds ``epoch``."""
        cdef WindowBucket* bucket = self._bucket(at)
        if aigw_load_u64(&bucket.epoch) != epoch:
            return False
        aigw_add_u64(&bucket.calls, 1)
        if failed:
            aigw_add_u64(&bucket.failures, 1)
        _add_f64(&bucket.seconds, seconds)
        return True

    def reset(self, Py_ssize_t at, uint64_t epoch, bint failed, double seconds):
        """Start the bucket at ``at`` afresh for ``epoch``, with this one call."""
        cdef WindowBucket* bucket = self._bucket(at)
        aigw_store_u64(&bucket.calls, 1)
        aigw_store_u64(&bucket.failures, 1 if failed else 0)
        aigw_store_f64(&bucket.seconds, seconds)
        aigw_store_u64(&bucket.epoch, epoch)  # last

    def close(self):
        if self._has_view:
            self._has_view = False
            PyBuffer_Release(&self._view)
