"""SharedStats: counters, gauges and histograms with one slot per writing process.

Behaviour tests run against both twins (``hotpath_impl``); the multi-process tests at the
end use real processes: exact sums from concurrent writers, and no value lost when a
writer is killed.
"""

from __future__ import annotations

import gc
import math
import multiprocessing
import os
import signal
import sys
import time
from typing import Any

import pytest

from aigateway import hotpath, shm

SCHEMA = hotpath.StatsSchema(
    counters=("requests", "tokens"),
    gauges=("in_flight",),
    histograms=(
        hotpath.Histogram("latency_s", (0.1, 0.5, 1.0)),
        hotpath.Histogram("size", ()),
    ),
)
REQUESTS = SCHEMA.counter("requests")
TOKENS = SCHEMA.counter("tokens")
IN_FLIGHT = SCHEMA.gauge("in_flight")
LATENCY = SCHEMA.histogram("latency_s")
SIZE = SCHEMA.histogram("size")


def region(impl: Any, slots: int) -> bytearray:
    buffer = bytearray(impl.SharedStats.buffer_size(SCHEMA, slots))
    impl.SharedStats.initialise(buffer, SCHEMA, slots)
    return buffer


# --- the schema -----------------------------------------------------------------------


def test_names_map_to_indices():
    assert (REQUESTS, TOKENS, IN_FLIGHT, LATENCY, SIZE) == (0, 1, 0, 0, 1)
    with pytest.raises(KeyError, match="no counter named 'latency_s'"):
        SCHEMA.counter("latency_s")
    with pytest.raises(KeyError):
        SCHEMA.histogram("requests")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"counters": ("a", "a")},
        {"counters": ("a",), "gauges": ("a",)},
        {"counters": ("with space",)},
        {"counters": ("1st",)},
        {"counters": "abc"},
    ],
)
def test_bad_schemas_are_rejected(kwargs):
    with pytest.raises((ValueError, TypeError), match="StatsSchema"):
        hotpath.StatsSchema(**kwargs)


@pytest.mark.parametrize("bounds", [(1.0, 1.0), (2.0, 1.0), (math.inf,), (math.nan,)])
def test_bad_histogram_bounds_are_rejected(bounds):
    with pytest.raises(ValueError, match="bounds"):
        hotpath.Histogram("h", bounds)


def test_the_fingerprint_follows_names_and_bounds():
    same = hotpath.StatsSchema.from_json(SCHEMA.to_json())
    assert same == SCHEMA
    assert same.fingerprint == SCHEMA.fingerprint
    changed = [
        hotpath.StatsSchema(counters=("requests",)),
        hotpath.StatsSchema(counters=("tokens", "requests")),
        hotpath.StatsSchema(
            counters=SCHEMA.counters,
            gauges=SCHEMA.gauges,
            histograms=(hotpath.Histogram("latency_s", (0.1, 0.5, 2.0)), SCHEMA.histograms[1]),
        ),
    ]
    assert len({schema.fingerprint for schema in [SCHEMA, *changed]}) == 4


def test_slots_are_whole_cache_lines():
    assert SCHEMA.slot_size % 64 == 0
    assert SCHEMA.slot_size >= 16 + 8 * (2 + 1 + 5 + 2)
    assert SCHEMA.buffer_size(3) == 64 + 3 * SCHEMA.slot_size
    assert hotpath.StatsSchema().slot_size == 64


# --- one process ----------------------------------------------------------------------


def test_counters_gauges_and_histograms_add_up(hotpath_impl):
    stats = hotpath_impl.SharedStats(SCHEMA)
    stats.incr(REQUESTS)
    stats.incr(REQUESTS)
    stats.incr(TOKENS, 1000)
    stats.incr(TOKENS, 0)
    stats.gauge_add(IN_FLIGHT, 3)
    stats.gauge_add(IN_FLIGHT, -1)
    for value in (0.05, 0.1, 0.3, 1.0, 7.0, -2.0):
        stats.observe(LATENCY, value)
    stats.observe(SIZE, 12)
    snapshot = stats.snapshot()
    assert snapshot.counters == {"requests": 2, "tokens": 1000}
    assert snapshot.gauges == {"in_flight": 2}
    latency = snapshot.histograms["latency_s"]
    assert latency.bounds == (0.1, 0.5, 1.0)
    assert latency.counts == (3, 1, 1, 1)  # a value equal to a bound is in its bucket
    assert latency.count == 6
    assert latency.cumulative() == (3, 4, 5, 6)
    assert latency.sum == pytest.approx(6.45)
    assert snapshot.histograms["size"] == hotpath.HistogramSnapshot((), (1,), 12.0)
    stats.gauge_set(IN_FLIGHT, -5)
    assert stats.snapshot().gauges == {"in_flight": -5}


def test_counters_wrap_at_64_bits(hotpath_impl):
    stats = hotpath_impl.SharedStats(SCHEMA)
    stats.incr(TOKENS, 2**64 - 1)
    stats.incr(TOKENS, 2)
    assert stats.snapshot().counters["tokens"] == 1


@pytest.mark.parametrize(
    ("method", "args", "error"),
    [
        ("incr", (2,), IndexError),
        ("incr", (-1,), IndexError),
        ("incr", (0, -1), OverflowError),
        ("incr", (0, 2**64), OverflowError),
        ("incr", (0, 1.5), TypeError),
        ("gauge_add", (1, 1), IndexError),
        ("gauge_add", (0, 2**63), OverflowError),
        ("gauge_set", (-1, 1), IndexError),
        ("gauge_set", (0, 0.5), TypeError),
        ("observe", (2, 1.0), IndexError),
        ("observe", (-1, 1.0), IndexError),
        ("observe", (0, math.nan), ValueError),
        ("observe", (0, "1"), TypeError),
    ],
)
def test_bad_updates_are_rejected(hotpath_impl, method, args, error):
    stats = hotpath_impl.SharedStats(SCHEMA)
    with pytest.raises(error):
        getattr(stats, method)(*args)
    assert stats.snapshot().counters == {"requests": 0, "tokens": 0}


def test_closed_stats_refuse_to_work(hotpath_impl):
    stats = hotpath_impl.SharedStats(SCHEMA)
    stats.close()
    stats.close()
    for method, args in [("incr", (0,)), ("gauge_add", (0, 1)), ("observe", (0, 1.0))]:
        with pytest.raises(ValueError, match="closed"):
            getattr(stats, method)(*args)
    with pytest.raises(ValueError, match="closed"):
        stats.snapshot()
    assert "closed" in repr(stats)


# --- slots ----------------------------------------------------------------------------


def test_each_writer_takes_its_own_slot_and_snapshots_sum_them(hotpath_impl):
    buffer = region(hotpath_impl, 3)
    writers = [hotpath_impl.SharedStats(SCHEMA, buffer) for _ in range(3)]
    assert sorted(writer.slot for writer in writers) == [0, 1, 2]
    for n, writer in enumerate(writers, 1):
        writer.incr(REQUESTS, n)
        writer.gauge_add(IN_FLIGHT, n)
        writer.observe(LATENCY, n / 10)
    for writer in writers:
        snapshot = writer.snapshot()
        assert snapshot.counters["requests"] == 6
        assert snapshot.gauges["in_flight"] == 6
        assert snapshot.histograms["latency_s"].counts == (1, 2, 0, 0)
    with pytest.raises(RuntimeError, match="live processes"):
        hotpath_impl.SharedStats(SCHEMA, buffer)


def test_a_released_slot_is_reused_with_its_counters_and_without_its_gauges(hotpath_impl):
    buffer = region(hotpath_impl, 2)
    first = hotpath_impl.SharedStats(SCHEMA, buffer)
    second = hotpath_impl.SharedStats(SCHEMA, buffer)
    first.incr(REQUESTS, 5)
    first.gauge_add(IN_FLIGHT, 4)
    first.observe(LATENCY, 0.2)
    first.close()
    assert second.snapshot().counters["requests"] == 5
    assert second.snapshot().gauges["in_flight"] == 0
    third = hotpath_impl.SharedStats(SCHEMA, buffer)
    assert third.slot == 0
    third.incr(REQUESTS)
    snapshot = third.snapshot()
    assert snapshot.counters["requests"] == 6  # totals never go down
    assert snapshot.histograms["latency_s"].count == 1


def test_dropping_the_object_gives_the_slot_back(hotpath_impl):
    buffer = region(hotpath_impl, 1)
    stats = hotpath_impl.SharedStats(SCHEMA, buffer)
    stats.incr(REQUESTS)
    del stats
    again = hotpath_impl.SharedStats(SCHEMA, buffer)
    assert again.snapshot().counters["requests"] == 1


def test_either_twin_attaches_to_stats_the_other_laid_out():
    twins = [hotpath.load("python")]
    if not hotpath.NO_EXTENSIONS:
        twins.append(hotpath.load("cython"))
    for maker in twins:
        for user in twins:
            buffer = bytearray(SCHEMA.buffer_size(2))
            maker.SharedStats.initialise(buffer, SCHEMA, 2)
            first = maker.SharedStats(SCHEMA, buffer)
            second = user.SharedStats(SCHEMA, buffer)
            first.incr(REQUESTS, 2)
            second.incr(REQUESTS, 3)
            second.observe(LATENCY, 0.7)
            assert first.snapshot() == second.snapshot()
            assert second.snapshot().counters["requests"] == 5


def test_unusable_buffers_are_rejected(hotpath_impl):
    other = hotpath.StatsSchema(counters=("requests",))
    with pytest.raises(ValueError, match="another schema"):
        hotpath_impl.SharedStats(other, region(hotpath_impl, 1))
    with pytest.raises(ValueError, match="no shared stats"):
        hotpath_impl.SharedStats(SCHEMA, bytearray(SCHEMA.buffer_size(1)))
    with pytest.raises(ValueError, match="bytes"):
        hotpath_impl.SharedStats(SCHEMA, region(hotpath_impl, 2)[:200])
    with pytest.raises(ValueError, match="bytes"):
        hotpath_impl.SharedStats.initialise(bytearray(100), SCHEMA, 1)
    with pytest.raises(TypeError, match="writable"):
        hotpath_impl.SharedStats(SCHEMA, bytes(region(hotpath_impl, 1)))
    unaligned = memoryview(bytearray(SCHEMA.buffer_size(1) + 8))[4:]
    with pytest.raises(ValueError, match="aligned"):
        hotpath_impl.SharedStats.initialise(unaligned, SCHEMA, 1)
    with pytest.raises(ValueError, match="slots"):
        hotpath_impl.SharedStats.initialise(bytearray(4096), SCHEMA, 0)


# --- several processes ----------------------------------------------------------------

WRITERS = 4
INCREMENTS = 20_000


def _write(implementation: str, segment_name: str, n: int, results: Any) -> None:
    """Child process: claim a slot and count INCREMENTS requests and some tokens."""
    segment = shm.attach_segment(segment_name)
    stats = hotpath.load(implementation).SharedStats(SCHEMA, segment.stats_region())
    for i in range(INCREMENTS):
        stats.incr(REQUESTS)
        stats.incr(TOKENS, n)
        if i % 100 == 0:
            stats.observe(LATENCY, n / 10)
    results.put(stats.slot)
    stats.close()
    segment.close()


def _segment(impl: Any, tag: str, slots: int) -> shm.Segment:
    layout = shm.NodeLayout(stats=SCHEMA, stats_slots=slots)
    return shm.create_segment(layout, f"{shm.segment_name()}.test-{tag}-{impl.IMPLEMENTATION}")


def test_concurrent_writers_give_exact_totals(hotpath_impl):
    segment = _segment(hotpath_impl, "stats-sum", WRITERS + 1)
    context = multiprocessing.get_context("spawn")
    results = context.SimpleQueue()
    children = [
        context.Process(target=_write, args=(hotpath_impl.IMPLEMENTATION, segment.name, n, results))
        for n in range(1, WRITERS + 1)
    ]
    try:
        for child in children:
            child.start()
        for _ in children:
            results.get()
        for child in children:
            child.join(30)
            assert child.exitcode == 0
        reader = hotpath_impl.SharedStats(SCHEMA, segment.stats_region())
        snapshot = reader.snapshot()
        reader.close()
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join()
        segment.close()
        segment.unlink()
    assert snapshot.counters == {
        "requests": WRITERS * INCREMENTS,
        "tokens": INCREMENTS * sum(range(1, WRITERS + 1)),
    }
    assert snapshot.histograms["latency_s"].count == WRITERS * INCREMENTS // 100
    assert snapshot.gauges == {"in_flight": 0}


def _count_then_hang(implementation: str, segment_name: str, results: Any) -> None:
    """Child process: count 1000 requests, hold 7 in flight, then keep counting in pairs."""
    segment = shm.attach_segment(segment_name)
    stats = hotpath.load(implementation).SharedStats(SCHEMA, segment.stats_region())
    stats.incr(REQUESTS, 1000)
    stats.gauge_add(IN_FLIGHT, 7)
    results.put(os.getpid())
    while True:  # killed in here: what it counted is kept, at most one pair half-counted
        stats.incr(TOKENS)
        stats.incr(REQUESTS)


def test_a_killed_writer_loses_nothing_and_its_slot_is_taken_over(hotpath_impl):
    segment = _segment(hotpath_impl, "stats-kill", 1)
    context = multiprocessing.get_context("spawn")
    results = context.SimpleQueue()
    child = context.Process(
        target=_count_then_hang, args=(hotpath_impl.IMPLEMENTATION, segment.name, results)
    )
    successor = None
    try:
        child.start()
        pid = results.get()
        time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        child.join(10)
        assert child.exitcode == -signal.SIGKILL
        # Its one slot belongs to a dead process now: the next writer takes it over.
        successor = hotpath_impl.SharedStats(SCHEMA, segment.stats_region())
        assert successor.slot == 0
        before = successor.snapshot()
        counted = before.counters["requests"] - 1000
        assert before.counters["tokens"] - counted in (0, 1)  # tokens first, then requests
        assert before.counters["tokens"] > 0
        assert before.gauges == {"in_flight": 0}  # it described the dead process
        successor.incr(REQUESTS)
        after = successor.snapshot()
    finally:
        if child.is_alive():
            child.kill()
            child.join()
        if successor is not None:
            successor.close()
        segment.close()
        segment.unlink()
    assert after.counters["requests"] == before.counters["requests"] + 1


def test_the_gauges_of_a_dead_writer_leave_the_totals_at_once(hotpath_impl):
    segment = _segment(hotpath_impl, "stats-gauges", 2)
    context = multiprocessing.get_context("spawn")
    results = context.SimpleQueue()
    child = context.Process(
        target=_count_then_hang, args=(hotpath_impl.IMPLEMENTATION, segment.name, results)
    )
    reader = None
    try:
        child.start()
        pid = results.get()
        reader = hotpath_impl.SharedStats(SCHEMA, segment.stats_region())
        assert reader.snapshot().gauges == {"in_flight": 7}
        os.kill(pid, signal.SIGKILL)
        child.join(10)
        snapshot = reader.snapshot()
        assert snapshot.gauges == {"in_flight": 0}
        assert snapshot.counters["requests"] >= 1000
    finally:
        if child.is_alive():
            child.kill()
            child.join()
        if reader is not None:
            reader.close()
        segment.close()
        segment.unlink()


def test_stats_caught_in_a_garbage_cycle_let_go_of_their_buffer_cleanly(
    hotpath_impl: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cycle (a frame held by an exception's traceback, say) reaching stats that own a
    # private buffer: the collector must not free the buffer while it is still in use.
    printed: list[BaseException] = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, error, tb: printed.append(error))
    cycle: list[Any] = [hotpath_impl.SharedStats(SCHEMA)]
    cycle.append(cycle)
    del cycle
    gc.collect()
    assert printed == []
