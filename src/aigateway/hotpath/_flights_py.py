"""The node's calls in flight, in shared memory (pure-Python twin).

This module is the executable specification of ``ext/_flights_c.pyx``: both define the
same names with the same signatures and give the same results for the same calls; both
use the region layout declared in ``regions`` (``FLIGHTS_HEADER``, ``FLIGHT_SLOT``).

A *claim* says: process ``pid`` is fetching the answer for cache key ``key`` (16 bytes)
and will be done by ``deadline`` (wall-clock seconds).  The de-duplication across the
workers of a node uses it (``cache.store``): a worker that misses the cache claims the
key; a worker that finds another live process's claim waits for the answer in the cache
instead of calling the provider too.

* ``FlightTable(buffer, slots=SLOTS, lock_path=None)`` uses the table in ``buffer`` (a
  writable buffer of at least ``FlightTable.size(slots)`` bytes, 8-byte aligned; a zeroed
  buffer is initialised, an initialised one must have ``slots`` slots).  ``lock_path``
  names the file whose ``flock`` this twin takes around each change when the buffer is
  shared by processes (the compiled twin takes none).
* ``claim(key, pid, deadline, now)`` claims ``key`` for ``pid`` and returns ``None``;
  or, when another process that is alive holds a claim on ``key`` whose deadline is after
  ``now``, takes nothing and returns that claim as ``(pid, deadline)``.  A claim that is
  ``pid``'s own, past its deadline, or of a dead process is replaced.  When the key's
  window has no free slot (more calls in flight around its home slot than the window
  holds), nothing is claimed and ``None`` is returned all the same: the caller fetches
  as if it held the claim, and only the de-duplication across workers is lost.
* ``owner(key, now)``: the live claim on ``key`` as ``(pid, deadline)`` (any process's,
  ``pid``'s own included), or ``None``.
* ``release(key, pid)`` clears ``pid``'s claim on ``key``; whether there was one.
* ``drop(gone, pid, now)`` clears every claim past its deadline, and every claim of a
  process other than ``pid`` for which ``gone(owner_pid)`` is true (a worker that died);
  it returns ``(key, owner_pid)`` of the claims of dead processes that were still within
  their deadline.
* ``close()`` lets go of the buffer.

Deadlines are kept to the millisecond (rounded up).  The slots a key may sit in are the
``window`` slots from its home slot on (its first 8 bytes, modulo ``slots``); lookups
read all of them (a claim released leaves a free slot that a later key's claim may
take).  Two processes that claim the same key at the same moment can, in the compiled
twin, both miss each other's claim (its key is written just after its owner word): both
then call the provider, as each would without de-duplication.

This twin changes the table under a ``RegionLock`` (``flock`` on ``lock_path`` across
processes; a thread lock otherwise).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import ClassVar

from .regions import (
    CLOSED_FLIGHTS,
    FLIGHT_SLOT,
    FLIGHTS_HEADER,
    FLIGHTS_MAGIC,
    REGION_VERSION,
    RegionLock,
    buffer_address,
    pid_alive,
)

__all__ = ("FlightTable",)

_MAGIC = FLIGHTS_HEADER.index("magic")
_VERSION = FLIGHTS_HEADER.index("version")
_SLOTS = FLIGHTS_HEADER.index("slots")
_WINDOW = FLIGHTS_HEADER.index("window")
_HEAD = FLIGHTS_HEADER.size
_SLOT = FLIGHT_SLOT.size
_KEY_AT = FLIGHT_SLOT.offset_of("key")
_OWNER = FLIGHT_SLOT.index("owner")  # in a slot cast to "Q"
_PID_BITS = 22
_PID_MASK = (1 << _PID_BITS) - 1
_MAX_MS = (1 << (64 - _PID_BITS)) - 1
KEY_SIZE = 16
WINDOW = 32


def _pack(pid: int, deadline: float) -> int:
    if not 0 < pid <= _PID_MASK:
        raise ValueError(f"pid must be within 1 .. {_PID_MASK}, not {pid!r}")
    if not math.isfinite(deadline):
        raise ValueError(f"deadline must be a finite wall-clock time, not {deadline!r}")
    ms = min(max(math.ceil(deadline * 1000.0), 1), _MAX_MS)
    return ms << _PID_BITS | pid


def _deadline(word: int) -> float:
    return (word >> _PID_BITS) / 1000.0


def _check_key(key: bytes) -> bytes:
    if len(key) != KEY_SIZE:
        raise ValueError(f"a flight's key is {KEY_SIZE} bytes, not {len(key)}")
    return bytes(key)


class FlightTable:
    """Claims of calls in flight; with a shared buffer, one table for the node."""

    SLOTS: ClassVar[int] = 4096

    __slots__ = ("_lock", "_mask", "_owners", "_u64", "_view", "_window", "slots")

    @staticmethod
    def size(slots: int = 4096) -> int:
        """Bytes of a table of ``slots`` slots."""
        return _HEAD + slots * _SLOT

    def __init__(self, buffer: object, slots: int = 4096, lock_path: str | None = None) -> None:
        if slots < 1 or slots & (slots - 1) or slots > 1 << 24:
            raise ValueError(f"slots must be a power of two up to 2**24, not {slots!r}")
        view = memoryview(buffer)  # type: ignore[arg-type]
        if view.readonly:
            raise TypeError("a flight table needs a writable buffer")
        view = view.cast("B")
        need = self.size(slots)
        if len(view) < need:
            raise ValueError(f"a flight table of {slots} slots needs {need} bytes, not {len(view)}")
        view = view[:need]
        if buffer_address(view) % 8:
            raise ValueError("a flight table's buffer must be 8-byte aligned")
        self._lock = RegionLock(lock_path)
        u32 = view[:_HEAD].cast("I")
        with self._lock:
            if u32[_MAGIC] == 0:  # a zeroed region: ours to initialise
                u32[_SLOTS] = slots
                u32[_WINDOW] = min(WINDOW, slots)
                u32[_VERSION] = REGION_VERSION
                u32[_MAGIC] = FLIGHTS_MAGIC  # last: a region with its magic is complete
            elif u32[_MAGIC] != FLIGHTS_MAGIC or u32[_VERSION] != REGION_VERSION:
                raise ValueError("the buffer holds no flight table (bad magic or version)")
            elif u32[_SLOTS] != slots:
                raise ValueError(f"the flight table has {u32[_SLOTS]} slots, not {slots}")
            self._window = u32[_WINDOW]
        u32.release()
        self.slots = slots
        self._mask = slots - 1
        self._view: memoryview = view
        self._u64 = view.cast("Q")
        # The owner words of a window's slots, read from its bytes in one call.
        skip_key, skip_rest = (
            FLIGHT_SLOT.offset_of("owner"),
            _SLOT - FLIGHT_SLOT.offset_of("owner") - 8,
        )
        self._owners = struct.Struct("=" + f"{skip_key}xQ{skip_rest}x" * self._window)

    # -- the slots -----------------------------------------------------------------------

    def _read(self, key: bytes) -> tuple[int, bytes, tuple[int, ...]]:
        """The key's home slot, its window's bytes (wrapping around the end) and owners."""
        home = int.from_bytes(key[:8], "little") & self._mask
        at = _HEAD + home * _SLOT
        first = min(self._window, self.slots - home)
        raw = self._view[at : at + first * _SLOT].tobytes()
        if first < self._window:
            raw += self._view[_HEAD : _HEAD + (self._window - first) * _SLOT].tobytes()
        return home, raw, self._owners.unpack(raw)

    @staticmethod
    def _find(key: bytes, raw: bytes, owners: tuple[int, ...]) -> int:
        """The window position of ``key``'s claim, or -1."""
        at = raw.find(key)
        while at >= 0:
            if at % _SLOT == _KEY_AT and owners[at // _SLOT]:
                return at // _SLOT
            at = raw.find(key, at + 1)
        return -1

    def _set(self, home: int, position: int, word: int, key: bytes | None = None) -> None:
        slot = (home + position) & self._mask
        if key is not None:
            at = _HEAD + slot * _SLOT + _KEY_AT
            self._view[at : at + KEY_SIZE] = key
        self._u64[(_HEAD + slot * _SLOT) // 8 + _OWNER] = word

    # -- claims --------------------------------------------------------------------------

    def claim(self, key: bytes, pid: int, deadline: float, now: float) -> tuple[int, float] | None:
        """Claim ``key`` for ``pid``; or the live claim of another process on it."""
        key = _check_key(key)
        mine = _pack(pid, deadline)
        with self._lock:
            home, raw, owners = self._read(key)
            found = self._find(key, raw, owners)
            if found >= 0:
                word = owners[found]
                holder = word & _PID_MASK
                if _deadline(word) > now and holder != pid and pid_alive(holder):
                    return holder, _deadline(word)
                self._set(home, found, mine)  # ours, past its deadline, or of a dead process
                return None
            # The first free slot, or the first whose claim is over, if one comes before.
            first = owners.index(0) if 0 in owners else len(owners)
            over = [i for i in range(first) if _deadline(owners[i]) <= now]
            free = over[:1] or ([first] if first < len(owners) else [])
            if not free:  # full around its home: the claims of dead processes are free too
                free = [i for i, word in enumerate(owners) if not pid_alive(word & _PID_MASK)]
            if free:
                self._set(home, free[0], mine, key)
        return None

    def owner(self, key: bytes, now: float) -> tuple[int, float] | None:
        """The live claim on ``key`` (pid, deadline), or None."""
        key = _check_key(key)
        with self._lock:
            _, raw, owners = self._read(key)
            found = self._find(key, raw, owners)
        word = owners[found] if found >= 0 else 0
        if not word or _deadline(word) <= now or not pid_alive(word & _PID_MASK):
            return None
        return word & _PID_MASK, _deadline(word)

    def release(self, key: bytes, pid: int) -> bool:
        """Clear ``pid``'s claim on ``key``; whether it held one."""
        key = _check_key(key)
        with self._lock:
            home, raw, owners = self._read(key)
            found = self._find(key, raw, owners)
            if found < 0 or owners[found] & _PID_MASK != pid:
                return False
            self._set(home, found, 0)
            return True

    def drop(self, gone: Callable[[int], bool], pid: int, now: float) -> list[tuple[bytes, int]]:
        """Clear the claims past their deadline and those of dead processes (not
        ``pid``'s); the (key, pid) of the dead processes' claims still within deadline."""
        dead: list[tuple[bytes, int]] = []
        with self._lock:
            for slot in range(self.slots):
                word = self._u64[(_HEAD + slot * _SLOT) // 8 + _OWNER]
                if not word:
                    continue
                holder = word & _PID_MASK
                if _deadline(word) <= now:
                    self._set(slot, 0, 0)
                elif holder != pid and gone(holder):
                    at = _HEAD + slot * _SLOT + _KEY_AT
                    dead.append((self._view[at : at + KEY_SIZE].tobytes(), holder))
                    self._set(slot, 0, 0)
        return dead

    def close(self) -> None:
        """Let go of the buffer (so that a shared-memory mapping can be closed)."""
        if self._view is CLOSED_FLIGHTS:
            return
        self._u64.release()
        self._view.release()
        self._u64 = self._view = CLOSED_FLIGHTS
        self._lock.close()
