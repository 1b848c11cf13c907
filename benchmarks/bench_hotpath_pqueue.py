"""PriorityQueue: 1000 pushes then 1000 pops, for each twin and for heapq.

Run: ``pytest benchmarks/bench_hotpath_pqueue.py --benchmark-only``.  The heapq baseline
stores ``(priority, seq, item)`` tuples: the same order, without cancellation.
"""

from __future__ import annotations

import heapq
import itertools
import random
import types

N = 1000
PRIORITIES = [random.Random(1).randrange(10) for _ in range(N)]


def _push_pop(queue_type: type) -> int:
    queue = queue_type()
    push = queue.push
    for i, priority in enumerate(PRIORITIES):
        push(priority, i)
    pop = queue.pop
    for _ in PRIORITIES:
        pop()
    return len(queue)


def _push_cancel_pop(queue_type: type) -> int:
    queue = queue_type()
    handles = [queue.push(priority, i) for i, priority in enumerate(PRIORITIES)]
    for handle in handles[::4]:
        queue.cancel(handle)
    while queue:
        queue.pop()
    return len(queue)


def _heapq_push_pop() -> int:
    heap: list[tuple[int, int, int]] = []
    seq = itertools.count()
    for i, priority in enumerate(PRIORITIES):
        heapq.heappush(heap, (priority, next(seq), i))
    for _ in PRIORITIES:
        heapq.heappop(heap)
    return len(heap)


def test_pqueue_push_pop(benchmark, hotpath_impl: types.ModuleType) -> None:
    benchmark.group = f"priority queue: {N} pushes, {N} pops"
    assert benchmark(_push_pop, hotpath_impl.PriorityQueue) == 0


def test_pqueue_push_pop_baseline_heapq(benchmark) -> None:
    benchmark.group = f"priority queue: {N} pushes, {N} pops"
    assert benchmark(_heapq_push_pop) == 0


def test_pqueue_push_cancel_pop(benchmark, hotpath_impl: types.ModuleType) -> None:
    benchmark.group = f"priority queue: {N} pushes, {N // 4} cancels, pops"
    assert benchmark(_push_cancel_pop, hotpath_impl.PriorityQueue) == 0
