"""Token buckets, node-wide through shared memory (pure-Python twin).

This module is the executable specification of ``ext/_bucket_c.pyx``: both define the same
names with the same signatures and give the same results for the same calls; both use
the region layout declared in ``regions`` (``BUCKET``) (GCRA: the state is one 64-bit word, the
time at which the bucket is full again).

* ``TokenBucket(rate_per_s, burst, buffer=None)`` makes a full bucket that refills at
  ``rate_per_s`` tokens a second up to ``burst`` tokens.  With a ``buffer`` (a writable
  buffer of at least ``TokenBucket.SIZE`` bytes, 8-byte aligned; usually a slice of the
  node's shared-memory segment) the bucket lives there, initialised afresh, and
  ``TokenBucket.attach(buffer)`` in any process of the node uses the same bucket with the
  rate and burst stored in it.  Without, the bucket is private to this object.
* ``try_acquire(tokens=1.0, now=None, reserve=0.0)`` takes ``tokens`` if at least
  ``tokens + reserve`` are available and returns ``0.0``; otherwise it takes nothing and
  returns the seconds until they will be (``math.inf`` if ``tokens + reserve > burst``:
  never).  ``reserve`` keeps a level for more urgent callers.  ``now`` is a
  ``time.monotonic()`` reading in seconds (default: the clock now).
* ``set_rate(rate_per_s, burst, now=None)`` changes both live; the tokens available stay
  as they are (capped at the new burst).  An acquisition racing with it in another
  process may still use the old values once.
* ``settle(tokens, now=None)`` corrects an earlier acquisition by ``tokens`` without
  waiting: a positive number is taken even when the bucket does not hold it (a debt, which
  later acquisitions wait out), a negative one is given back (the bucket never holds more
  than ``burst``).  Admission reserves an estimate of a call's tokens, then settles it
  against what the call really used; giving back one token also undoes an acquisition.
* ``available(now=None)`` is the number of tokens available; ``rate_per_s`` and
  ``burst`` the current values; ``close()`` lets go of the buffer.

Limits: ``rate_per_s`` and ``burst`` are finite and > 0 with ``burst / rate_per_s`` at
most 1e9 seconds; ``tokens`` and ``reserve`` are >= 0 (``settle``'s ``tokens`` any finite
number; a debt is capped at 1e9 seconds of the rate); ``now`` is finite and within
+-4e9 seconds.  Anything else raises ``ValueError``.

This twin changes the state under a ``RegionLock`` (``flock`` on a lock file when the
buffer is a memory mapping, so several processes exclude each other; a thread lock
otherwise).
"""

from __future__ import annotations

import math
import os
import time
from typing import ClassVar

from .regions import (
    BUCKET,
    BUCKET_MAGIC,
    CLOSED_BUCKET,
    REGION_VERSION,
    RegionLock,
    buffer_address,
    lock_path,
    shared_backing,
)

__all__ = ("TokenBucket",)

# Indices of the fields in the region cast to their type (see regions.BUCKET).
_MAGIC = BUCKET.index("magic")
_VERSION = BUCKET.index("version")
_RATE = BUCKET.index("rate_per_s")
_BURST = BUCKET.index("burst")
_TAT = BUCKET.index("tat_ns")
_PID = BUCKET.index("creator_pid")
_ID = BUCKET.index("region_id")
_MAX_FILL_S = 1e9
_MAX_NOW_S = 4e9


def _check_rate(rate_per_s: float, burst: float) -> None:
    if not (0.0 < rate_per_s < math.inf and 0.0 < burst < math.inf):
        raise ValueError(
            f"rate_per_s and burst must be finite and > 0, not {rate_per_s!r}, {burst!r}"
        )
    if burst / rate_per_s > _MAX_FILL_S:
        raise ValueError("burst / rate_per_s must be at most 1e9 seconds")


def _now_ns(now: float | None) -> int:
    if now is None:
        return time.monotonic_ns()
    if not -_MAX_NOW_S < now < _MAX_NOW_S:
        raise ValueError(f"now must be a finite monotonic time in seconds, not {now!r}")
    return int(now * 1e9)


def _region(buffer: object) -> memoryview:
    view = memoryview(buffer)  # type: ignore[arg-type]
    if view.readonly:
        raise TypeError("a token bucket needs a writable buffer")
    if not view.c_contiguous:
        raise ValueError("a token bucket needs a contiguous buffer")
    view = view.cast("B")
    if len(view) < BUCKET.size:
        raise ValueError(f"a token bucket needs {BUCKET.size} bytes, the buffer has {len(view)}")
    view = view[: BUCKET.size]
    if buffer_address(view) % 8:
        raise ValueError("a token bucket's buffer must be 8-byte aligned")
    return view


class TokenBucket:
    """A token bucket; with a shared buffer, one bucket for every process attached to it."""

    SIZE: ClassVar[int] = BUCKET.size

    __slots__ = ("_f64", "_i64", "_lock", "_view")

    def __init__(self, rate_per_s: float, burst: float, buffer: object = None) -> None:
        _check_rate(rate_per_s, burst)
        view = _region(bytearray(BUCKET.size) if buffer is None else buffer)
        region_id = int.from_bytes(os.urandom(8), "little")
        view[:] = bytes(BUCKET.size)
        f64 = view.cast("d")
        i64 = view.cast("q")
        f64[_RATE] = float(rate_per_s)
        f64[_BURST] = float(burst)
        i64[_PID] = os.getpid()
        view.cast("Q")[_ID] = region_id
        u32 = view.cast("I")
        u32[_VERSION] = REGION_VERSION
        u32[_MAGIC] = BUCKET_MAGIC  # last: a region with its magic is complete
        self._use(view)

    @classmethod
    def attach(cls, buffer: object) -> TokenBucket:
        """The bucket already initialised in ``buffer`` (by any process, either twin)."""
        view = _region(buffer)
        u32 = view.cast("I")
        if u32[_MAGIC] != BUCKET_MAGIC or u32[_VERSION] != REGION_VERSION:
            raise ValueError("the buffer holds no token bucket (bad magic or version)")
        f64 = view.cast("d")
        _check_rate(f64[_RATE], f64[_BURST])
        bucket = cls.__new__(cls)
        bucket._use(view)
        return bucket

    def _use(self, view: memoryview) -> None:
        self._view: memoryview | None = view
        self._f64 = view.cast("d")
        self._i64 = view.cast("q")
        path = None
        if shared_backing(view):
            path = lock_path(self._i64[_PID], view.cast("Q")[_ID])
        self._lock = RegionLock(path)

    @property
    def rate_per_s(self) -> float:
        return self._f64[_RATE]

    @property
    def burst(self) -> float:
        return self._f64[_BURST]

    def try_acquire(
        self, tokens: float = 1.0, now: float | None = None, reserve: float = 0.0
    ) -> float:
        """Take ``tokens`` (keeping ``reserve``): 0.0, or the seconds until possible."""
        now_ns = _now_ns(now)
        if not (tokens >= 0.0 and reserve >= 0.0):
            raise ValueError(f"tokens and reserve must be >= 0, not {tokens!r}, {reserve!r}")
        f64 = self._f64
        i64 = self._i64
        with self._lock:
            rate = f64[_RATE]
            burst = f64[_BURST]
            if tokens > burst - reserve:
                return math.inf
            cost = math.ceil(tokens * 1e9 / rate)
            tolerance = math.ceil((burst - reserve) * 1e9 / rate)
            tat = i64[_TAT]
            new_tat = (tat if tat > now_ns else now_ns) + cost
            if new_tat - now_ns > tolerance:
                return (new_tat - now_ns - tolerance) / 1e9
            if cost:
                i64[_TAT] = new_tat
            return 0.0

    def settle(self, tokens: float, now: float | None = None) -> None:
        """Take ``tokens`` more (> 0, even into debt) or give ``-tokens`` back (< 0)."""
        now_ns = _now_ns(now)
        if not math.isfinite(tokens):
            raise ValueError(f"tokens must be a finite number, not {tokens!r}")
        f64 = self._f64
        i64 = self._i64
        with self._lock:
            tat = i64[_TAT]
            base = tat if tat > now_ns else now_ns
            if tokens >= 0.0:
                cost = math.ceil(min(tokens / f64[_RATE], _MAX_FILL_S) * 1e9)
                new_tat = min(base + cost, now_ns + int(_MAX_FILL_S * 1e9))
            else:
                refund = math.floor(min(-tokens / f64[_RATE], _MAX_FILL_S) * 1e9)
                new_tat = base - refund
                if new_tat < now_ns:
                    new_tat = now_ns  # full: a bucket holds at most its burst
            if new_tat != tat:
                i64[_TAT] = new_tat

    def available(self, now: float | None = None) -> float:
        """The tokens in the bucket at ``now``."""
        now_ns = _now_ns(now)
        with self._lock:
            rate = self._f64[_RATE]
            burst = self._f64[_BURST]
            deficit_ns = self._i64[_TAT] - now_ns
        level = burst - deficit_ns * rate / 1e9 if deficit_ns > 0 else burst
        return level if level > 0.0 else 0.0

    def set_rate(self, rate_per_s: float, burst: float, now: float | None = None) -> None:
        """Change rate and burst, keeping the tokens available (capped at ``burst``)."""
        _check_rate(rate_per_s, burst)
        now_ns = _now_ns(now)
        f64 = self._f64
        i64 = self._i64
        with self._lock:
            deficit_ns = i64[_TAT] - now_ns
            old = f64[_BURST]
            level = old - deficit_ns * f64[_RATE] / 1e9 if deficit_ns > 0 else old
            if level > burst:
                level = burst
            elif level < 0.0:
                level = 0.0
            f64[_BURST] = float(burst)
            f64[_RATE] = float(rate_per_s)
            i64[_TAT] = now_ns + math.ceil((burst - level) * 1e9 / rate_per_s)

    def close(self) -> None:
        """Let go of the buffer (so that a shared-memory mapping can be closed)."""
        if self._view is None:
            return
        views = (self._f64, self._i64, self._view)
        self._f64 = self._i64 = CLOSED_BUCKET
        self._view = None
        for view in views:
            view.release()
        self._lock.close()

    def __repr__(self) -> str:
        if self._view is None:
            return "<TokenBucket (closed)>"
        return f"<TokenBucket rate_per_s={self.rate_per_s:g} burst={self.burst:g}>"
