# cython: language_level=3
"""The node's calls in flight, in shared memory (compiled twin).

Same names, signatures and results as ``aigateway.hotpath._flights_py``, which is the
specification; read it for the API and ``aigateway.hotpath.regions`` for the layout.

Algorithm
---------
A claim is one 64-bit word, a slot's ``owner``: ``deadline_ms << 22 | pid`` (0: free).
So taking a free slot, replacing a claim that is ours, stale or of a dead process, and
clearing our own are each one compare-and-swap from the word just read to the new one;
when it fails another process changed the slot in between, and the operation starts
over from its lookup (a few times at most, then it gives up as a full window does: no
claim, the caller calls the provider itself).  A new claim's key is written after its
owner word (stores release, loads acquire): a lookup that reads the owner word before
the key was written sees an old key, misses the claim, and at worst both processes
call the provider.  No lock exists, so a worker killed in the middle leaves at most a
claim that its deadline, or the node's dead-worker sweep, ends.
"""

cimport cython
from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from libc.errno cimport EPERM, errno
from libc.math cimport ceil
from libc.stdint cimport int64_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memcpy

from includes.atomics cimport (
    aigw_cas_i64,
    aigw_load_u64,
    aigw_store_u64,
)
from includes.system cimport kill

from .regions import FLIGHT_SLOT, FLIGHTS_HEADER, FLIGHTS_MAGIC, REGION_VERSION

__all__ = ("FlightTable",)

cdef uint32_t _MAGIC = FLIGHTS_MAGIC
cdef uint32_t _VERSION = REGION_VERSION
cdef int _PID_BITS = 22
cdef uint64_t _PID_MASK = (1 << 22) - 1
cdef uint64_t _MAX_MS = (1 << 42) - 1
cdef int _TRIES = 8
cdef uint32_t _WINDOW_SLOTS = 32

# The C structs must be the declared layouts: a mismatch fails the import, loudly.
cdef FlightsHeader _head_probe
cdef FlightSlot _slot_probe
C_LAYOUTS = {
    "flights header": (
        sizeof(FlightsHeader),
        {
            "magic": <char*>&_head_probe.magic - <char*>&_head_probe,
            "version": <char*>&_head_probe.version - <char*>&_head_probe,
            "slots": <char*>&_head_probe.slots - <char*>&_head_probe,
            "window": <char*>&_head_probe.window - <char*>&_head_probe,
            "reserved": <char*>&_head_probe.reserved - <char*>&_head_probe,
        },
    ),
    "flight slot": (
        sizeof(FlightSlot),
        {
            "key": <char*>&_slot_probe.key - <char*>&_slot_probe,
            "owner": <char*>&_slot_probe.owner - <char*>&_slot_probe,
            "reserved": <char*>&_slot_probe.reserved - <char*>&_slot_probe,
        },
    ),
}
FLIGHTS_HEADER.check(*C_LAYOUTS["flights header"])
FLIGHT_SLOT.check(*C_LAYOUTS["flight slot"])


cdef inline bint _cas(uint64_t* word, uint64_t expected, uint64_t desired) noexcept:
    return aigw_cas_i64(<int64_t*>word, <int64_t*>&expected, <int64_t>desired)


cdef inline bint _alive(uint64_t pid) noexcept:
    return pid != 0 and (kill(<int>pid, 0) == 0 or errno == EPERM)


cdef inline double _deadline(uint64_t word) noexcept:
    return <double>(word >> _PID_BITS) / 1000.0


cdef uint64_t _pack(long pid, double deadline) except 0:
    cdef double ms
    if not (0 < pid <= <long>_PID_MASK):
        raise ValueError(f"pid must be within 1 .. {_PID_MASK}, not {pid!r}")
    if not (-1e300 < deadline < 1e300):
        raise ValueError(f"deadline must be a finite wall-clock time, not {deadline!r}")
    ms = ceil(deadline * 1000.0)
    if ms < 1.0:
        ms = 1.0
    elif ms > <double>_MAX_MS:
        ms = <double>_MAX_MS
    return (<uint64_t>ms) << _PID_BITS | <uint64_t>pid


cdef int _read_key(bytes key, uint64_t* out) except -1:
    if len(key) != 16:
        raise ValueError(f"a flight's key is 16 bytes, not {len(key)}")
    memcpy(out, <const char*>key, 16)
    return 0


@cython.final
cdef class FlightTable:
    """Claims of calls in flight; with a shared buffer, one table for the node."""

    SLOTS = 4096

    @staticmethod
    def size(slots=4096):
        """Bytes of a table of ``slots`` slots."""
        return sizeof(FlightsHeader) + slots * sizeof(FlightSlot)

    def __cinit__(self):
        self._has_view = False
        self._head = NULL
        self._slots = NULL

    def __init__(self, object buffer, long slots=4096, object lock_path=None):
        cdef Py_ssize_t need
        if slots < 1 or slots & (slots - 1) or slots > (1 << 24):
            raise ValueError(f"slots must be a power of two up to 2**24, not {slots!r}")
        if self._has_view:
            self.close()
        try:
            PyObject_GetBuffer(buffer, &self._view, PyBUF_WRITABLE)
        except BufferError:
            raise TypeError("a flight table needs a writable buffer") from None
        self._has_view = True
        need = sizeof(FlightsHeader) + slots * sizeof(FlightSlot)
        if self._view.len < need:
            raise ValueError(
                f"a flight table of {slots} slots needs {need} bytes, not {self._view.len}"
            )
        if <uintptr_t>self._view.buf % 8:
            raise ValueError("a flight table's buffer must be 8-byte aligned")
        head = <FlightsHeader*>self._view.buf
        if head.magic == 0:  # a zeroed region: ours to initialise (racers write the same)
            head.slots = <uint32_t>slots
            head.window = _WINDOW_SLOTS if <uint32_t>slots > _WINDOW_SLOTS else <uint32_t>slots
            head.version = _VERSION
            aigw_store_u64(<uint64_t*>head, (<uint64_t>_VERSION << 32) | _MAGIC)  # last
        elif head.magic != _MAGIC or head.version != _VERSION:
            raise ValueError("the buffer holds no flight table (bad magic or version)")
        elif head.slots != <uint32_t>slots:
            raise ValueError(f"the flight table has {head.slots} slots, not {slots}")
        self._head = head
        self._slots = <FlightSlot*>(<char*>self._view.buf + sizeof(FlightsHeader))
        self._mask = <uint64_t>(slots - 1)
        self._window = head.window
        self.slots = <uint32_t>slots

    def __dealloc__(self):
        if self._has_view:
            PyBuffer_Release(&self._view)

    cdef FlightSlot* _live(self) except NULL:
        if self._slots == NULL:
            raise ValueError("the flight table is closed")
        return self._slots

    cdef Py_ssize_t _find(self, const uint64_t* key) noexcept:
        """The slot of ``key``'s claim, or -1."""
        cdef uint64_t home = key[0] & self._mask
        cdef uint64_t i, at
        cdef FlightSlot* slot
        for i in range(self._window):
            at = (home + i) & self._mask
            slot = &self._slots[at]
            if (
                aigw_load_u64(&slot.owner) != 0
                and aigw_load_u64(&slot.key[0]) == key[0]
                and aigw_load_u64(&slot.key[1]) == key[1]
            ):
                return <Py_ssize_t>at
        return -1

    def claim(self, bytes key, long pid, double deadline, double now):
        """Claim ``key`` for ``pid``; or the live claim of another process on it."""
        cdef uint64_t k[2]
        cdef uint64_t mine, word, home, i, at
        cdef Py_ssize_t found, free
        cdef uint64_t free_word
        cdef FlightSlot* slots = self._live()
        cdef int tries
        _read_key(key, k)
        mine = _pack(pid, deadline)
        home = k[0] & self._mask
        for tries in range(_TRIES):
            found = self._find(k)
            if found >= 0:
                word = aigw_load_u64(&slots[found].owner)
                if word == 0:
                    continue  # released just now: look again
                if (
                    _deadline(word) > now
                    and (word & _PID_MASK) != <uint64_t>pid
                    and _alive(word & _PID_MASK)
                ):
                    return <long>(word & _PID_MASK), _deadline(word)
                if _cas(&slots[found].owner, word, mine):
                    return None
                continue
            free = -1
            free_word = 0
            for i in range(self._window):  # a free slot, or one whose claim is over
                at = (home + i) & self._mask
                word = aigw_load_u64(&slots[at].owner)
                if word == 0 or _deadline(word) <= now:
                    free, free_word = <Py_ssize_t>at, word
                    break
            if free < 0:  # full around its home: the claims of dead processes are free too
                for i in range(self._window):
                    at = (home + i) & self._mask
                    word = aigw_load_u64(&slots[at].owner)
                    if not _alive(word & _PID_MASK):
                        free, free_word = <Py_ssize_t>at, word
                        break
            if free < 0:
                return None  # no room: unmarked, the caller calls the provider itself
            if _cas(&slots[free].owner, free_word, mine):
                aigw_store_u64(&slots[free].key[0], k[0])
                aigw_store_u64(&slots[free].key[1], k[1])
                return None
        return None

    def owner(self, bytes key, double now):
        """The live claim on ``key`` (pid, deadline), or None."""
        cdef uint64_t k[2]
        cdef uint64_t word
        cdef FlightSlot* slots = self._live()
        cdef Py_ssize_t found
        _read_key(key, k)
        found = self._find(k)
        if found < 0:
            return None
        word = aigw_load_u64(&slots[found].owner)
        if word == 0 or _deadline(word) <= now or not _alive(word & _PID_MASK):
            return None
        return <long>(word & _PID_MASK), _deadline(word)

    def release(self, bytes key, long pid):
        """Clear ``pid``'s claim on ``key``; whether it held one."""
        cdef uint64_t k[2]
        cdef uint64_t word
        cdef FlightSlot* slots = self._live()
        cdef Py_ssize_t found
        cdef int tries
        _read_key(key, k)
        for tries in range(_TRIES):
            found = self._find(k)
            if found < 0:
                return False
            word = aigw_load_u64(&slots[found].owner)
            if (word & _PID_MASK) != <uint64_t>pid:
                return False
            if _cas(&slots[found].owner, word, 0):
                return True
        return False

    def drop(self, object gone, long pid, double now):
        """Clear the claims past their deadline and those of dead processes (not
        ``pid``'s); the (key, pid) of the dead processes' claims still within deadline."""
        cdef FlightSlot* slots = self._live()
        cdef uint64_t at, word, holder
        cdef uint64_t k[2]
        dead = []
        for at in range(self.slots):
            word = aigw_load_u64(&slots[at].owner)
            if word == 0:
                continue
            holder = word & _PID_MASK
            if _deadline(word) <= now:
                _cas(&slots[at].owner, word, 0)
            elif holder != <uint64_t>pid and gone(<long>holder):
                k[0] = aigw_load_u64(&slots[at].key[0])
                k[1] = aigw_load_u64(&slots[at].key[1])
                if _cas(&slots[at].owner, word, 0):  # not claimed again meanwhile
                    dead.append(((<char*>k)[:16], <long>holder))
        return dead

    def close(self):
        """Let go of the buffer (so that a shared-memory mapping can be closed)."""
        self._head = NULL
        self._slots = NULL
        if self._has_view:
            self._has_view = False
            PyBuffer_Release(&self._view)
