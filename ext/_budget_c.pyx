# cython: language_level=3
"""A budget in dollars in two shared-memory words (compiled twin).

Same names, signatures and results as ``aigateway.hotpath._budget_py``, which is the
specification (the words' format is there).

``reserve``, ``settle`` and ``add`` change each word with a compare-and-swap loop that
re-reads the word's epoch on every try: the check of the budget and the reservation are
one atomic step on ``used``, so processes reserving at once overshoot the budget by at
most one call's estimate, and a word re-laid for another owner (``reset``, a new epoch)
makes a late call's swap fail and then decline.  ``rebase`` and ``reset`` run under the
region's lock (rare: a new period, a new owner); ``rebase`` swaps too, so a concurrent
reservation is never lost.
"""

cimport cython
from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport int64_t, uint64_t, uintptr_t
from libc.string cimport memcpy

from includes.atomics cimport aigw_cas_i64, aigw_load_u64, aigw_store_u64

__all__ = ("ATOMIC_BUDGET", "BudgetWords")

ATOMIC_BUDGET = True

cdef uint64_t _VALUE_MASK = (<uint64_t>1 << 48) - 1
cdef uint64_t _EPOCH_MASK = 0xFFFF
cdef double _ZERO = 1e-9


cdef inline uint64_t _pack(uint64_t epoch, double value) noexcept nogil:
    cdef uint64_t bits
    if not value > _ZERO:  # NaN too
        return (epoch & _EPOCH_MASK) << 48
    memcpy(&bits, &value, 8)
    bits = (bits + 0x8000) >> 16
    if bits > _VALUE_MASK:
        bits = _VALUE_MASK
    return ((epoch & _EPOCH_MASK) << 48) | bits


cdef inline double _value(uint64_t word) noexcept nogil:
    cdef uint64_t bits = (word & _VALUE_MASK) << 16
    cdef double value
    memcpy(&value, &bits, 8)
    return value


cdef inline bint _add(uint64_t* p, uint64_t epoch, double delta) noexcept nogil:
    """``*p``'s value += delta while it holds ``epoch`` (False: it holds another)."""
    cdef int64_t old = <int64_t>aigw_load_u64(p)
    while True:
        if (<uint64_t>old) >> 48 != epoch:
            return False
        if aigw_cas_i64(<int64_t*>p, &old, <int64_t>_pack(epoch, _value(<uint64_t>old) + delta)):
            return True


@cython.final
cdef class BudgetWords:
    """The budgets' words of one buffer."""

    cdef Py_buffer _view
    cdef bint _has_view

    def __cinit__(self):
        self._has_view = False

    def __init__(self, object buffer):
        if self._has_view:
            self.close()
        try:
            PyObject_GetBuffer(buffer, &self._view, PyBUF_WRITABLE)
        except BufferError:
            raise TypeError("budget words need a writable buffer") from None
        self._has_view = True
        if <uintptr_t>self._view.buf % 8:
            raise ValueError("a budget's buffer must be 8-byte aligned")

    def __dealloc__(self):
        if self._has_view:
            PyBuffer_Release(&self._view)

    cdef uint64_t* _words(self, Py_ssize_t at) except NULL:
        if not self._has_view:
            raise ValueError("the budget words are closed")
        if at % 8 or not (0 <= at <= (self._view.len - self._view.len % 8) - 16):
            raise ValueError(f"no budget fits at byte {at!r}")
        return <uint64_t*>(<char*>self._view.buf + at)

    def reserve(self, Py_ssize_t at, uint64_t epoch, double budget, double usd):
        """Reserve ``usd`` if anything is left of ``budget``: -1.0, else what was used."""
        cdef uint64_t* words = self._words(at)
        cdef int64_t old = <int64_t>aigw_load_u64(words)
        cdef double used
        while True:
            if (<uint64_t>old) >> 48 != epoch:
                return -1.0
            used = _value(<uint64_t>old)
            if used >= budget:
                return used
            if aigw_cas_i64(<int64_t*>words, &old, <int64_t>_pack(epoch, used + usd)):
                break
        _add(words + 1, epoch, usd)
        return -1.0

    def settle(self, Py_ssize_t at, uint64_t epoch, double reserved, double cost):
        """A call that reserved ``reserved`` cost ``cost`` (False: another epoch's)."""
        cdef uint64_t* words = self._words(at)
        if not _add(words, epoch, cost - reserved):
            return False
        _add(words + 1, epoch, -reserved)
        return True

    def add(self, Py_ssize_t at, uint64_t epoch, double usd):
        """Add ``usd`` to what was used (False: another epoch's)."""
        return _add(self._words(at), epoch, usd)

    def rebase(self, Py_ssize_t at, uint64_t epoch, double spent):
        """A new period: what was used is ``spent`` plus the calls in flight."""
        cdef uint64_t* words = self._words(at)
        cdef int64_t old = <int64_t>aigw_load_u64(words)
        while True:
            if (<uint64_t>old) >> 48 != epoch:
                return False
            if aigw_cas_i64(
                <int64_t*>words, &old, <int64_t>_pack(epoch, spent + _value(aigw_load_u64(words + 1)))
            ):
                return True

    def reset(self, Py_ssize_t at, uint64_t epoch, double spent):
        """Lay the words out for ``epoch``: ``spent`` used, nothing reserved."""
        cdef uint64_t* words = self._words(at)
        aigw_store_u64(words + 1, _pack(epoch, 0.0))
        aigw_store_u64(words, _pack(epoch, spent))  # last

    def read(self, Py_ssize_t at):
        """(epoch, used, reserved)."""
        cdef uint64_t* words = self._words(at)
        cdef uint64_t word = aigw_load_u64(words)
        return word >> 48, _value(word), _value(aigw_load_u64(words + 1))

    def close(self):
        if self._has_view:
            self._has_view = False
            PyBuffer_Release(&self._view)
