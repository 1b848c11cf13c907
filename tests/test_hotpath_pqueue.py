"""PriorityQueue: waiting requests by priority, FIFO among equals, cancellable.

Behaviour tests run against both twins (``hotpath_impl``); the differential test at the
end runs generated sequences of operations on both twins and on a naive reference model.
"""

from __future__ import annotations

import gc
import heapq
import random
import weakref
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aigateway import hotpath


def drain(queue: Any) -> list[Any]:
    return [queue.pop() for _ in range(len(queue))]


def test_lower_numbers_leave_first(hotpath_impl):
    queue = hotpath_impl.PriorityQueue()
    for priority in (5, 1, 9, -3, 0):
        queue.push(priority, f"p{priority}")
    assert drain(queue) == ["p-3", "p0", "p1", "p5", "p9"]


def test_equal_priorities_leave_in_push_order(hotpath_impl):
    queue = hotpath_impl.PriorityQueue()
    for i in range(50):
        queue.push(i % 3, i)
    assert drain(queue) == [i for p in range(3) for i in range(50) if i % 3 == p]


def test_fifo_holds_across_interleaved_pushes_and_pops(hotpath_impl):
    queue = hotpath_impl.PriorityQueue()
    queue.push(1, "a")
    queue.push(1, "b")
    assert queue.pop() == "a"
    queue.push(1, "c")
    queue.push(0, "urgent")
    assert drain(queue) == ["urgent", "b", "c"]


def test_peek_and_peek_priority_leave_the_item(hotpath_impl):
    queue = hotpath_impl.PriorityQueue()
    queue.push(2, "later")
    queue.push(1, "first")
    assert queue.peek() == "first"
    assert queue.peek_priority() == 1
    assert len(queue) == 2
    assert queue.pop() == "first"
    assert (queue.peek(), queue.peek_priority()) == ("later", 2)


def test_len_and_truthiness_count_queued_items(hotpath_impl):
    queue = hotpath_impl.PriorityQueue()
    assert len(queue) == 0
    assert not queue
    handle = queue.push(0, None)  # None is an item like any other
    queue.push(0, None)
    assert len(queue) == 2
    assert queue
    queue.cancel(handle)
    assert len(queue) == 1
    assert queue.pop() is None
    assert not queue


def test_an_empty_queue_raises_index_error(hotpath_impl):
    queue = hotpath_impl.PriorityQueue()
    for operation in (queue.pop, queue.peek, queue.peek_priority):
        with pytest.raises(IndexError):
            operation()
    queue.cancel(queue.push(1, "gone"))
    for operation in (queue.pop, queue.peek, queue.peek_priority):
        with pytest.raises(IndexError):
            operation()


def test_items_are_never_compared(hotpath_impl):
    class Incomparable:
        def __lt__(self, other: object) -> bool:
            raise AssertionError("compared")

        __gt__ = __le__ = __ge__ = __lt__

    queue = hotpath_impl.PriorityQueue()
    items = [Incomparable() for _ in range(20)]
    for item in items:
        queue.push(7, item)
    assert drain(queue) == items


# --- cancel ---------------------------------------------------------------------------


def test_a_cancelled_item_never_leaves_the_queue(hotpath_impl):
    queue = hotpath_impl.PriorityQueue()
    handles = {name: queue.push(priority, name) for priority, name in enumerate("abcde")}
    assert queue.cancel(handles["a"]) is True
    assert queue.cancel(handles["c"]) is True
    assert queue.peek() == "b"
    assert drain(queue) == ["b", "d", "e"]


def test_cancel_is_true_only_while_the_item_is_queued(hotpath_impl):
    queue = hotpath_impl.PriorityQueue()
    first = queue.push(1, "first")
    second = queue.push(2, "second")
    assert queue.cancel(first) is True
    assert queue.cancel(first) is False
    assert queue.pop() == "second"
    assert queue.cancel(second) is False


def test_stale_and_foreign_handles_do_nothing(hotpath_impl):
    queue = hotpath_impl.PriorityQueue()
    old = queue.push(1, "old")
    assert queue.pop() == "old"
    queue.push(1, "new")  # may reuse the old item's storage
    assert queue.cancel(old) is False
    for handle in (-1, 2**64, 2**70, 12345678, "handle", None):
        assert queue.cancel(handle) is False
    assert drain(queue) == ["new"]


def test_cancel_lets_the_item_go_at_once(hotpath_impl):
    class Item:
        pass

    queue = hotpath_impl.PriorityQueue()
    item = Item()
    ref = weakref.ref(item)
    queue.push(0, "stays")
    handle = queue.push(5, item)
    del item
    queue.cancel(handle)
    gc.collect()
    assert ref() is None
    assert drain(queue) == ["stays"]


def test_many_cancellations_keep_order_and_memory_bounded(hotpath_impl):
    queue = hotpath_impl.PriorityQueue()
    rng = random.Random(5)
    expected = []
    for round_ in range(20):
        handles = [(queue.push(rng.randrange(10), (round_, i)), i) for i in range(500)]
        for handle, i in handles:
            if i % 50:
                assert queue.cancel(handle)
        expected += [(round_, i) for _, i in handles if i % 50 == 0]
    assert len(queue) == len(expected)
    popped = drain(queue)
    assert sorted(popped) == sorted(expected)


def test_an_item_whose_finaliser_uses_the_queue(hotpath_impl):
    queue = hotpath_impl.PriorityQueue()

    class Reentrant:
        def __del__(self) -> None:
            for i in range(40):
                queue.push(3, f"from finaliser {i}")

    handle = queue.push(1, Reentrant())
    assert queue.cancel(handle)
    gc.collect()
    assert len(queue) == 40
    queue.push(1, Reentrant())
    queue.clear()
    gc.collect()
    assert drain(queue) == [f"from finaliser {i}" for i in range(40)]


def test_clear_empties_the_queue_and_invalidates_handles(hotpath_impl):
    queue = hotpath_impl.PriorityQueue()
    handles = [queue.push(i, i) for i in range(10)]
    queue.clear()
    assert len(queue) == 0
    assert not any(queue.cancel(handle) for handle in handles)
    queue.push(4, "after")
    assert drain(queue) == ["after"]


# --- priorities -----------------------------------------------------------------------


def test_priorities_span_the_signed_64_bit_range(hotpath_impl):
    queue = hotpath_impl.PriorityQueue()
    queue.push(2**63 - 1, "max")
    queue.push(-(2**63), "min")
    queue.push(0, "zero")
    assert drain(queue) == ["min", "zero", "max"]
    with pytest.raises(OverflowError):
        queue.push(2**63, "too big")
    with pytest.raises(OverflowError):
        queue.push(-(2**63) - 1, "too small")


def test_priorities_must_be_integers(hotpath_impl):
    queue = hotpath_impl.PriorityQueue()
    with pytest.raises(TypeError):
        queue.push(1.5, "float")
    with pytest.raises(TypeError):
        queue.push("1", "str")
    assert len(queue) == 0


def test_a_large_queue_matches_a_sort(hotpath_impl):
    rng = random.Random(11)
    queue = hotpath_impl.PriorityQueue()
    entries = [(rng.randrange(-100, 100), i) for i in range(20_000)]
    for priority, i in entries:
        queue.push(priority, i)
    assert drain(queue) == [i for _, i in sorted(entries)]


# --- differential test ----------------------------------------------------------------

_OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(-3, 3)),
        st.tuples(st.just("push"), st.integers(-(2**63), 2**63 - 1)),
        st.tuples(st.just("pop"), st.just(0)),
        st.tuples(st.just("peek"), st.just(0)),
        st.tuples(st.just("cancel"), st.integers(0, 200)),
    ),
    max_size=200,
)


def _run(queue: Any, operations: list[tuple[str, int]]) -> list[Any]:
    """Apply ``operations``; return what each one gave (cancel picks a handle by number)."""
    handles = []
    results: list[Any] = []
    for n, (operation, argument) in enumerate(operations):
        if operation == "push":
            handles.append(queue.push(argument, n))
            results.append(None)
        elif operation == "cancel":
            results.append(queue.cancel(handles[argument % len(handles)]) if handles else None)
        else:
            try:
                results.append(queue.pop() if operation == "pop" else queue.peek_priority())
            except IndexError:
                results.append("empty")
        results.append(len(queue))
    return results


class Reference:
    """A naive priority queue: a sorted list of (priority, seq, item), linear cancel."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, int, Any]] = []
        self.seq = 0

    def push(self, priority: int, item: Any) -> int:
        self.seq += 1
        heapq.heappush(self.entries, (priority, self.seq, item))
        return self.seq

    def pop(self) -> Any:
        if not self.entries:
            raise IndexError
        return heapq.heappop(self.entries)[2]

    def peek_priority(self) -> int:
        if not self.entries:
            raise IndexError
        return self.entries[0][0]

    def cancel(self, handle: int) -> bool:
        kept = [entry for entry in self.entries if entry[1] != handle]
        found = len(kept) != len(self.entries)
        self.entries = kept
        heapq.heapify(self.entries)
        return found

    def __len__(self) -> int:
        return len(self.entries)


@settings(max_examples=200, deadline=None, database=None)
@given(operations=_OPERATIONS)
def test_twins_agree_with_each_other_and_a_reference(hotpath_impl, operations):
    expected = _run(Reference(), operations)
    assert _run(hotpath.load("python").PriorityQueue(), operations) == expected
    assert _run(hotpath_impl.PriorityQueue(), operations) == expected
