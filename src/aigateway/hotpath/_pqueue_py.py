"""Priority queue of waiting requests (pure-Python twin).

This module is the executable specification of ``ext/_pqueue_c.pyx``: both define the same
names with the same signatures and must give the same results for every sequence of
operations (handles are opaque: their values differ between the twins).

* ``push(priority, item)`` queues ``item`` and returns a handle; a lower priority number
  is more urgent and items of equal priority leave first in, first out.  Priorities are
  integers in the signed 64-bit range (``OverflowError`` outside it).
* ``pop()`` removes and returns the most urgent item; ``peek()`` returns it and
  ``peek_priority()`` its priority without removing it; all three raise ``IndexError``
  on an empty queue.
* ``cancel(handle)`` withdraws a queued item (its client went away) in O(1) and returns
  whether it was still queued; the queue drops the reference to the item at once, and its
  heap entry when it comes to the top (or when cancelled entries outnumber live ones).
* ``len(queue)`` and truthiness count queued, not cancelled, items; ``clear()`` empties.

``push`` and ``pop`` are O(log n) (a binary heap ordered by ``(priority, sequence
number)``); the sequence number makes equal priorities FIFO and also serves as handle.
"""

from __future__ import annotations

import heapq
import operator
from typing import Any

__all__ = ("PriorityQueue",)

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
# Compact the heap once it holds more than this many cancelled entries and they outnumber
# the live ones, so a queue whose clients keep leaving does not grow without bound.
_COMPACT_MIN = 64


class PriorityQueue:
    """Items ordered by priority (lower is more urgent), FIFO among equal priorities."""

    __slots__ = ("_heap", "_pending", "_seq")

    def __init__(self) -> None:
        # Heap entries are [priority, seq, item]; seq is unique, so items never get compared.
        self._heap: list[list[Any]] = []
        # The entries still queued, by seq (which is also their handle).
        self._pending: dict[int, list[Any]] = {}
        self._seq = 0

    def push(self, priority: int, item: object) -> int:
        """Queue ``item``; return a handle for ``cancel``."""
        priority = operator.index(priority)
        if not _I64_MIN <= priority <= _I64_MAX:
            raise OverflowError(f"priority {priority} is outside the signed 64-bit range")
        seq = self._seq = self._seq + 1
        entry = [priority, seq, item]
        self._pending[seq] = entry
        heapq.heappush(self._heap, entry)
        return seq

    def pop(self) -> Any:
        """Remove and return the most urgent item."""
        heap = self._heap
        pending = self._pending
        while heap:
            _, seq, item = heapq.heappop(heap)
            if pending.pop(seq, None) is not None:
                return item
        raise IndexError("pop from an empty priority queue")

    def peek(self) -> Any:
        """The most urgent item, left in the queue."""
        return self._top()[2]

    def peek_priority(self) -> int:
        """The priority of the most urgent item."""
        priority: int = self._top()[0]
        return priority

    def cancel(self, handle: int) -> bool:
        """Withdraw the item ``handle`` refers to; ``False`` if it already left the queue."""
        entry = self._pending.pop(handle, None)
        if entry is None:
            return False
        entry[2] = None  # let the item go now; the heap entry goes later
        stale = len(self._heap) - len(self._pending)
        if stale > _COMPACT_MIN and stale > len(self._pending):
            self._heap = [entry for entry in self._heap if entry[1] in self._pending]
            heapq.heapify(self._heap)
        return True

    def clear(self) -> None:
        """Remove every item."""
        self._heap.clear()
        self._pending.clear()

    def __len__(self) -> int:
        return len(self._pending)

    def __bool__(self) -> bool:
        return bool(self._pending)

    def __repr__(self) -> str:
        return f"<PriorityQueue: {len(self._pending)} queued>"

    def _top(self) -> list[Any]:
        heap = self._heap
        pending = self._pending
        while heap:
            entry = heap[0]
            if entry[1] in pending:
                return entry
            heapq.heappop(heap)
        raise IndexError("peek into an empty priority queue")
