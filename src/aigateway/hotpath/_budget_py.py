"""A budget in dollars in two shared-memory words (pure-Python twin).

This module is the executable specification of ``ext/_budget_c.pyx``: both define the
same names with the same signatures and give the same results for the same calls.

A budget lives in two 64-bit words, side by side at a byte offset ``at`` (a multiple of
8) of a writable buffer (a tenant key's slot, ``keys.slots``): ``used``, what was spent
in the budget's period plus the estimates of the calls in flight, and ``reserved``, those
estimates alone.  Each word is ``epoch << 48 | value``: ``epoch`` (16 bits) names the
owner the words were laid out for (a slot re-laid for another key gets the next epoch),
``value`` is a non-negative double without its 16 lowest mantissa bits, rounded to
nearest (a relative precision of 2**-37: a nano-dollar of a thousand dollars).  So the
check and the reservation of a call are one compare-and-swap of one word in the compiled
twin, no lock, and a call of a key whose slot was re-laid since (another ``epoch``)
changes nothing: a revoked key's late settlement never lands on the slot's new owner.

* ``reserve(at, epoch, budget, usd)``: if ``used < budget``, add ``usd`` to both words
  and return -1.0; else return ``used`` (refused).  -1.0 too when the words hold another
  epoch (not the caller's any more: nothing to count against).
* ``settle(at, epoch, reserved, cost)``: a call that reserved ``reserved`` cost ``cost``:
  ``used += cost - reserved``, ``reserved -= reserved`` (values under 1e-9 become 0).
* ``add(at, epoch, usd)``: ``used += usd`` (spend seen elsewhere, e.g. other nodes').
* ``rebase(at, epoch, spent)``: a new budget period: ``used = spent + reserved``.
* ``reset(at, epoch, spent)``: lay the words out for ``epoch`` (``reserved`` 0, ``used``
  ``spent``; ``used`` written last).
* ``read(at)``: ``(epoch, used, reserved)``.
* ``ATOMIC_BUDGET``: whether ``reserve``, ``settle`` and ``add`` may run without the
  region's lock while other processes run them.  Not here: this twin reads and writes the
  words plainly, so its callers take the lock; the compiled twin uses compare-and-swap
  (``rebase``, ``reset`` and ``add`` stay under the lock in both: they are rare).
"""

from __future__ import annotations

import struct
from typing import Final

from .regions import buffer_address

__all__ = ("ATOMIC_BUDGET", "BudgetWords")

ATOMIC_BUDGET: Final = False

_VALUE_MASK: Final = (1 << 48) - 1
_EPOCH_MASK: Final = 0xFFFF
_ZERO: Final = 1e-9  # dollars: what is left under it is rounding, not money
_F64 = struct.Struct("<d")
_U64 = struct.Struct("<Q")


def _pack(epoch: int, value: float) -> int:
    if not value > _ZERO:  # NaN too
        return (epoch & _EPOCH_MASK) << 48
    bits: int = _U64.unpack(_F64.pack(value))[0]
    return (epoch & _EPOCH_MASK) << 48 | min((bits + 0x8000) >> 16, _VALUE_MASK)


def _value(word: int) -> float:
    value: float = _F64.unpack(_U64.pack((word & _VALUE_MASK) << 16))[0]
    return value


class BudgetWords:
    """The budgets' words of one buffer."""

    __slots__ = ("_size", "_u64")

    def __init__(self, buffer: object) -> None:
        view = memoryview(buffer).cast("B")  # type: ignore[arg-type]
        if view.readonly:
            raise TypeError("budget words need a writable buffer")
        if buffer_address(view) % 8:
            raise ValueError("a budget's buffer must be 8-byte aligned")
        self._size = len(view) - len(view) % 8
        self._u64 = view[: self._size].cast("Q")

    def _base(self, at: int) -> int:
        if at % 8 or not 0 <= at <= self._size - 16:
            raise ValueError(f"no budget fits at byte {at!r}")
        return at // 8

    def reserve(self, at: int, epoch: int, budget: float, usd: float) -> float:
        """Reserve ``usd`` if anything is left of ``budget``: -1.0, else what was used."""
        base = self._base(at)
        u64 = self._u64
        word = u64[base]
        if word >> 48 != epoch:
            return -1.0
        used = _value(word)
        if used >= budget:
            return used
        u64[base] = _pack(epoch, used + usd)
        u64[base + 1] = _pack(epoch, _value(u64[base + 1]) + usd)
        return -1.0

    def settle(self, at: int, epoch: int, reserved: float, cost: float) -> bool:
        """A call that reserved ``reserved`` cost ``cost`` (False: another epoch's)."""
        base = self._base(at)
        u64 = self._u64
        word = u64[base]
        if word >> 48 != epoch:
            return False
        u64[base] = _pack(epoch, _value(word) + cost - reserved)
        u64[base + 1] = _pack(epoch, _value(u64[base + 1]) - reserved)
        return True

    def add(self, at: int, epoch: int, usd: float) -> bool:
        """Add ``usd`` to what was used (False: another epoch's)."""
        base = self._base(at)
        word = self._u64[base]
        if word >> 48 != epoch:
            return False
        self._u64[base] = _pack(epoch, _value(word) + usd)
        return True

    def rebase(self, at: int, epoch: int, spent: float) -> bool:
        """A new period: what was used is ``spent`` plus the calls in flight."""
        base = self._base(at)
        if self._u64[base] >> 48 != epoch:
            return False
        self._u64[base] = _pack(epoch, spent + _value(self._u64[base + 1]))
        return True

    def reset(self, at: int, epoch: int, spent: float) -> None:
        """Lay the words out for ``epoch``: ``spent`` used, nothing reserved."""
        base = self._base(at)
        self._u64[base + 1] = _pack(epoch, 0.0)
        self._u64[base] = _pack(epoch, spent)  # last

    def read(self, at: int) -> tuple[int, float, float]:
        """(epoch, used, reserved)."""
        base = self._base(at)
        word = self._u64[base]
        return word >> 48, _value(word), _value(self._u64[base + 1])

    def close(self) -> None:
        self._u64.release()
