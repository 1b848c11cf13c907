"""TokenBucket: rate limits, node-wide through a shared-memory buffer.

Behaviour tests run against both twins (``hotpath_impl``) with explicit ``now`` values, so
they do not depend on the clock; the multi-process test at the end hammers one shared
bucket from four real processes.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from typing import Any

import pytest

from aigateway import hotpath, shm

T0 = 1000.0  # an arbitrary monotonic time, in seconds


def take(bucket: Any, count: int, now: float, tokens: float = 1.0) -> int:
    """How many of ``count`` acquisitions at ``now`` succeed."""
    return sum(bucket.try_acquire(tokens, now=now) == 0.0 for _ in range(count))


def test_a_new_bucket_is_full(hotpath_impl):
    bucket = hotpath_impl.TokenBucket(10, 5)
    assert bucket.available(now=T0) == 5.0
    assert take(bucket, 8, T0) == 5
    assert bucket.available(now=T0) == 0.0


def test_a_refused_acquisition_says_how_long_to_wait(hotpath_impl):
    bucket = hotpath_impl.TokenBucket(10, 5)
    take(bucket, 5, T0)
    assert bucket.try_acquire(now=T0) == pytest.approx(0.1)
    assert bucket.try_acquire(3, now=T0) == pytest.approx(0.3)
    assert bucket.try_acquire(now=T0 + 0.05) == pytest.approx(0.05)
    assert bucket.try_acquire(now=T0 + 0.1) == 0.0
    assert bucket.try_acquire(now=T0 + 0.1) == pytest.approx(0.1)


def test_it_refills_at_the_rate_up_to_the_burst(hotpath_impl):
    bucket = hotpath_impl.TokenBucket(100, 20)
    take(bucket, 20, T0)
    assert bucket.available(now=T0 + 0.05) == pytest.approx(5)
    assert take(bucket, 10, T0 + 0.05) == 5
    assert bucket.available(now=T0 + 60) == 20.0
    assert take(bucket, 30, T0 + 60) == 20


def test_over_time_it_grants_the_rate(hotpath_impl):
    bucket = hotpath_impl.TokenBucket(50, 5)
    granted = sum(take(bucket, 10, T0 + i / 1000) for i in range(10_000))  # 0 to 9.999 s
    assert granted == 5 + 499


def test_fractional_tokens(hotpath_impl):
    bucket = hotpath_impl.TokenBucket(1, 2)
    assert take(bucket, 10, T0, tokens=0.5) == 4
    assert bucket.try_acquire(0.25, now=T0) == pytest.approx(0.25)
    assert bucket.try_acquire(0.0, now=T0) == 0.0


def test_a_reserve_keeps_tokens_for_more_urgent_callers(hotpath_impl):
    bucket = hotpath_impl.TokenBucket(10, 10)
    low = sum(bucket.try_acquire(now=T0, reserve=3) == 0.0 for _ in range(10))
    assert low == 7
    assert bucket.try_acquire(now=T0, reserve=3) == pytest.approx(0.1)
    assert take(bucket, 5, T0) == 3  # the urgent callers get the reserve
    assert bucket.try_acquire(now=T0, reserve=3) == pytest.approx(0.4)


def test_what_can_never_be_granted_waits_forever(hotpath_impl):
    bucket = hotpath_impl.TokenBucket(10, 5)
    assert bucket.try_acquire(6, now=T0) == math.inf
    assert bucket.try_acquire(3, now=T0, reserve=3) == math.inf
    assert bucket.try_acquire(math.inf, now=T0) == math.inf
    assert bucket.available(now=T0) == 5.0
    assert bucket.try_acquire(5, now=T0) == 0.0


def test_set_rate_keeps_the_tokens_available(hotpath_impl):
    bucket = hotpath_impl.TokenBucket(10, 10)
    take(bucket, 6, T0)
    bucket.set_rate(100, 20, now=T0)
    assert (bucket.rate_per_s, bucket.burst) == (100.0, 20.0)
    assert bucket.available(now=T0) == pytest.approx(4)
    assert bucket.available(now=T0 + 0.1) == pytest.approx(14)
    assert bucket.available(now=T0 + 1) == 20.0
    bucket.set_rate(1, 2, now=T0 + 1)  # capped at the new burst
    assert bucket.available(now=T0 + 1) == pytest.approx(2)
    assert take(bucket, 5, T0 + 1) == 2
    assert bucket.try_acquire(now=T0 + 1) == pytest.approx(1.0)


def test_settle_takes_more_even_into_debt_which_later_callers_wait_out(hotpath_impl):
    # A reservation of 4 tokens whose call used 9: the 5 more are taken although the
    # bucket holds only 1, and the debt delays whoever comes next.
    bucket = hotpath_impl.TokenBucket(10, 5)
    assert bucket.try_acquire(4, now=T0) == 0.0
    bucket.settle(5, now=T0)
    assert bucket.available(now=T0) == 0.0
    assert bucket.try_acquire(1, now=T0) == pytest.approx(0.5)  # 4 in debt, then 1
    assert bucket.available(now=T0 + 0.5) == pytest.approx(1.0)
    assert bucket.try_acquire(1, now=T0 + 0.5) == 0.0


def test_settle_gives_tokens_back_up_to_the_burst(hotpath_impl):
    # A reservation of 4 tokens whose call used 1 (or failed before it counted anything).
    bucket = hotpath_impl.TokenBucket(10, 5)
    assert bucket.try_acquire(4, now=T0) == 0.0
    bucket.settle(-3, now=T0)
    assert bucket.available(now=T0) == pytest.approx(4.0)
    bucket.settle(-100, now=T0)  # never more than the burst
    assert bucket.available(now=T0) == 5.0
    assert take(bucket, 8, T0) == 5


def test_settle_of_one_token_undoes_an_acquisition(hotpath_impl):
    bucket = hotpath_impl.TokenBucket(10, 2)
    assert take(bucket, 2, T0) == 2
    bucket.settle(-1.0, now=T0)
    assert take(bucket, 2, T0) == 1
    bucket.settle(0.0, now=T0)
    assert bucket.available(now=T0) == 0.0


def test_a_debt_is_capped_and_bad_settlements_are_rejected(hotpath_impl):
    bucket = hotpath_impl.TokenBucket(1, 1)
    bucket.settle(1e300, now=T0)  # at most 1e9 seconds of the rate
    assert bucket.try_acquire(now=T0) == pytest.approx(1e9)
    for tokens in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="must be"):
            bucket.settle(tokens, now=T0)
    with pytest.raises(ValueError, match="must be"):
        bucket.settle(1, now=math.nan)


def test_both_twins_settle_to_the_same_state():
    from aigateway.hotpath import _bucket_c, _bucket_py

    buffers = [bytearray(64), bytearray(64)]
    buckets = [
        _bucket_py.TokenBucket(7, 30, buffers[0]),
        _bucket_c.TokenBucket(7, 30, buffers[1]),
    ]
    steps = [(12.5, 0.0), (-3.25, 0.1), (40.0, 0.2), (-1e6, 9.0), (0.001, 9.0), (-0.3, 9.5)]
    for tokens, at in steps:
        for bucket in buckets:
            assert bucket.try_acquire(2.0, now=T0 + at) >= 0.0
            bucket.settle(tokens, now=T0 + at)
        assert buffers[0][24:32] == buffers[1][24:32]  # tat_ns, the whole state


def test_the_real_clock_is_the_default(hotpath_impl):
    bucket = hotpath_impl.TokenBucket(1000, 1)
    assert bucket.try_acquire() == 0.0
    wait = bucket.try_acquire()
    assert 0.0 < wait <= 0.001
    time.sleep(wait + 0.002)
    assert bucket.try_acquire() == 0.0
    assert 0.0 <= bucket.available() < 1.0


@pytest.mark.parametrize(
    ("rate", "burst"),
    [(0, 1), (-1, 1), (1, 0), (math.nan, 1), (1, math.inf), (math.inf, 1), (1e-9, 10)],
)
def test_bad_rates_are_rejected(hotpath_impl, rate, burst):
    with pytest.raises(ValueError, match="rate_per_s"):
        hotpath_impl.TokenBucket(rate, burst)
    bucket = hotpath_impl.TokenBucket(1, 1)
    with pytest.raises(ValueError, match="rate_per_s"):
        bucket.set_rate(rate, burst)
    assert (bucket.rate_per_s, bucket.burst) == (1.0, 1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tokens": -1},
        {"tokens": math.nan},
        {"reserve": -0.5},
        {"reserve": math.nan},
        {"now": math.nan},
        {"now": math.inf},
        {"now": 5e9},
    ],
)
def test_bad_acquisitions_are_rejected(hotpath_impl, kwargs):
    bucket = hotpath_impl.TokenBucket(1, 1)
    with pytest.raises(ValueError, match="must be"):
        bucket.try_acquire(**{"now": T0, **kwargs})


# --- buffers --------------------------------------------------------------------------


def test_the_region_is_64_bytes(hotpath_impl):
    assert hotpath_impl.TokenBucket.SIZE == 64


def test_objects_attached_to_one_buffer_share_the_bucket(hotpath_impl):
    buffer = bytearray(hotpath_impl.TokenBucket.SIZE)
    first = hotpath_impl.TokenBucket(10, 4, buffer)
    second = hotpath_impl.TokenBucket.attach(buffer)
    assert (second.rate_per_s, second.burst) == (10.0, 4.0)
    assert take(first, 3, T0) == 3
    assert take(second, 3, T0) == 1
    second.set_rate(20, 4, now=T0)
    assert first.rate_per_s == 20.0


def test_either_twin_attaches_to_a_bucket_the_other_made():
    twins = [hotpath.load("python")]
    if not hotpath.NO_EXTENSIONS:
        twins.append(hotpath.load("cython"))
    for maker in twins:
        for user in twins:
            view = memoryview(bytearray(4096))
            made = maker.TokenBucket(5, 3, view[64:128])
            attached = user.TokenBucket.attach(view[64:128])
            assert take(attached, 2, T0) == 2
            assert made.available(now=T0) == pytest.approx(1)


def test_a_bigger_buffer_uses_its_first_64_bytes(hotpath_impl):
    buffer = bytearray(b"\xee" * 200)
    hotpath_impl.TokenBucket(1, 1, buffer)
    assert buffer[64:] == b"\xee" * 136


def test_unusable_buffers_are_rejected(hotpath_impl):
    with pytest.raises(ValueError, match="64 bytes"):
        hotpath_impl.TokenBucket(1, 1, bytearray(63))
    with pytest.raises(TypeError, match="writable"):
        hotpath_impl.TokenBucket(1, 1, bytes(64))
    with pytest.raises(ValueError, match="aligned"):
        hotpath_impl.TokenBucket(1, 1, memoryview(bytearray(80))[4:68])
    with pytest.raises(ValueError, match="no token bucket"):
        hotpath_impl.TokenBucket.attach(bytearray(64))


def test_a_closed_bucket_refuses_to_work(hotpath_impl):
    bucket = hotpath_impl.TokenBucket(1, 1)
    bucket.close()
    bucket.close()
    with pytest.raises(ValueError, match="closed"):
        bucket.try_acquire()
    with pytest.raises(ValueError, match="closed"):
        bucket.set_rate(1, 1)
    with pytest.raises(ValueError, match="closed"):
        bucket.available()
    assert "closed" in repr(bucket)


# --- several processes ----------------------------------------------------------------

RATE = 2000.0
BURST = 1000.0
SECONDS = 2.0
PROCESSES = 4


def _hammer(
    implementation: str, segment_name: str, ready: Any, go: Any, start: Any, results: Any
) -> None:
    """Child process: take tokens as fast as possible for SECONDS; report how many."""
    segment = shm.attach_segment(segment_name)
    bucket = hotpath.load(implementation).TokenBucket.attach(segment.bucket_region("hammer"))
    ready.put(None)
    go.wait()
    begin = start.value
    end = begin + SECONDS
    granted = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now >= begin and bucket.try_acquire(now=now) == 0.0:
            granted += 1
    bucket.close()
    segment.close()
    results.put(granted)


def test_processes_sharing_a_bucket_get_the_rate_in_total(hotpath_impl):
    layout = shm.NodeLayout(buckets=(shm.BucketSpec("hammer", RATE, BURST),))
    name = f"{shm.segment_name()}.test-bucket-{hotpath_impl.IMPLEMENTATION}"
    segment = shm.create_segment(layout, name)
    context = multiprocessing.get_context("spawn")
    ready, results = context.SimpleQueue(), context.SimpleQueue()
    go = context.Event()
    start = context.Value("d", 0.0, lock=False)
    args = (hotpath_impl.IMPLEMENTATION, name, ready, go, start, results)
    children = [context.Process(target=_hammer, args=args) for _ in range(PROCESSES)]
    try:
        for child in children:
            child.start()
        for _ in children:
            ready.get()
        start.value = time.monotonic() + 0.05
        go.set()
        granted = [results.get() for _ in children]
        for child in children:
            child.join(10)
            assert child.exitcode == 0
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join()
        segment.close()
        segment.unlink()
    total = sum(granted)
    limit = RATE * SECONDS + BURST
    assert total <= limit
    assert total >= 0.95 * limit, granted
    assert all(granted), granted  # every process got some
