"""SharedStats updates, 1000 calls, in a shared-memory segment, per twin.

Run: ``pytest benchmarks/bench_hotpath_stats.py --benchmark-only``.  Divide by 1000 for
one update (the loop adds about 10 ns each; ``loop`` measures it alone).
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Callable, Iterator

import pytest

from aigateway import shm
from aigateway.stats.registry import slot_table, stats_schema

CALLS = 1000
_REPEAT = itertools.repeat
SCHEMA = stats_schema(("openai",))
REQUESTS = slot_table(SCHEMA, "requests_answered", ())[()]
LATENCY = slot_table(SCHEMA, "request_duration_seconds", ())[()]


def _incr_many(incr: Callable[[int], None]) -> None:
    for _ in _REPEAT(None, CALLS):
        incr(REQUESTS)


def _observe_many(observe: Callable[[int, float], None]) -> None:
    for _ in _REPEAT(None, CALLS):
        observe(LATENCY, 0.042)


def _loop() -> None:
    for _ in _REPEAT(None, CALLS):
        pass


@pytest.fixture(scope="module")
def segment() -> Iterator[shm.Segment]:
    layout = shm.NodeLayout(stats=SCHEMA, stats_slots=8)
    created = shm.create_segment(layout, f"{shm.segment_name()}.bench-stats")
    yield created
    created.close()
    created.unlink()


def test_stats_incr(benchmark, hotpath_impl: types.ModuleType, segment) -> None:
    benchmark.group = f"shared stats: {CALLS} updates"
    stats = hotpath_impl.SharedStats(SCHEMA, segment.stats_region())
    benchmark(_incr_many, stats.incr)
    stats.close()


def test_stats_observe(benchmark, hotpath_impl: types.ModuleType, segment) -> None:
    benchmark.group = f"shared stats: {CALLS} updates"
    stats = hotpath_impl.SharedStats(SCHEMA, segment.stats_region())
    benchmark(_observe_many, stats.observe)
    stats.close()


def test_stats_snapshot(benchmark, hotpath_impl: types.ModuleType, segment) -> None:
    benchmark.group = "shared stats: snapshot of 8 slots"
    stats = hotpath_impl.SharedStats(SCHEMA, segment.stats_region())
    benchmark(stats.snapshot)
    stats.close()


def test_stats_baseline_empty_loop(benchmark) -> None:
    benchmark.group = f"shared stats: {CALLS} updates"
    benchmark(_loop)
