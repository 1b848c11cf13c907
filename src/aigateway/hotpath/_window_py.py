"""Counting calls into a window bucket of the health board (pure-Python twin).

This module is the executable specification of ``ext/_window_c.pyx``: both define the
same names with the same signatures and give the same results for the same calls; both
use the bucket layout declared in ``regions`` (``WINDOW_BUCKET``: epoch, calls, failures,
summed seconds).

* ``CallWindow(buffer)`` counts into buckets that live anywhere in ``buffer`` (a writable
  buffer, 8-byte aligned: the health board's region), each at a byte offset ``at``
  (a multiple of 8).
* ``count(at, epoch, failed, seconds)`` counts one call into the bucket at ``at`` if it
  holds ``epoch`` (calls + 1, failures + ``failed``, seconds + ``seconds``) and returns
  True; a bucket that holds another epoch is left as it is and False is returned (the
  caller starts it afresh with ``reset``, under the region's lock).
* ``reset(at, epoch, failed, seconds)`` makes the bucket hold ``epoch`` and this one
  call, the epoch written last (so a ``count`` that sees the new epoch counts on top).
* ``ATOMIC_WINDOW``: whether ``count`` may run without the region's lock while others count.
  Not here: this twin reads and writes the words plainly, so the health board calls it
  under the lock; the compiled twin adds with atomic operations.
"""

from __future__ import annotations

from typing import Final

from .regions import WINDOW_BUCKET, buffer_address

__all__ = ("ATOMIC_WINDOW", "CallWindow")

ATOMIC_WINDOW: Final = False

_EPOCH = WINDOW_BUCKET.index("epoch")
_CALLS = WINDOW_BUCKET.index("calls")
_FAILURES = WINDOW_BUCKET.index("failures")
_SECONDS = WINDOW_BUCKET.index("seconds")


class CallWindow:
    """Counts calls into the window buckets of one buffer."""

    __slots__ = ("_f64", "_size", "_u64")

    def __init__(self, buffer: object) -> None:
        view = memoryview(buffer).cast("B")  # type: ignore[arg-type]
        if view.readonly:
            raise TypeError("a call window needs a writable buffer")
        if buffer_address(view) % 8:
            raise ValueError("a call window's buffer must be 8-byte aligned")
        self._size = len(view) - len(view) % 8
        self._u64 = view[: self._size].cast("Q")
        self._f64 = view[: self._size].cast("d")

    def _base(self, at: int) -> int:
        if at % 8 or not 0 <= at <= self._size - WINDOW_BUCKET.size:
            raise ValueError(f"no bucket fits at byte {at!r}")
        return at // 8

    def count(self, at: int, epoch: int, failed: bool, seconds: float) -> bool:
        """Count one call into the bucket at ``at`` if it holds ``epoch``."""
        base = self._base(at)
        if self._u64[base + _EPOCH] != epoch:
            return False
        self._u64[base + _CALLS] += 1
        if failed:
            self._u64[base + _FAILURES] += 1
        self._f64[base + _SECONDS] += seconds
        return True

    def reset(self, at: int, epoch: int, failed: bool, seconds: float) -> None:
        """Start the bucket at ``at`` afresh for ``epoch``, with this one call."""
        base = self._base(at)
        self._u64[base + _CALLS] = 1
        self._u64[base + _FAILURES] = 1 if failed else 0
        self._f64[base + _SECONDS] = seconds
        self._u64[base + _EPOCH] = epoch  # last

    def close(self) -> None:
        self._u64.release()
        self._f64.release()
