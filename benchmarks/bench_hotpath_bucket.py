"""TokenBucket.try_acquire, 1000 calls, private and in a shared-memory segment, per twin.

Run: ``pytest benchmarks/bench_hotpath_bucket.py --benchmark-only``.  Divide by 1000 for
one acquisition (the loop adds about 10 ns each; ``loop`` measures it alone).
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Callable, Iterator

import pytest

from aigateway import shm

CALLS = 1000
_REPEAT = itertools.repeat


def _acquire_many(acquire: Callable[[], float]) -> None:
    for _ in _REPEAT(None, CALLS):
        acquire()


def _loop() -> None:
    for _ in _REPEAT(None, CALLS):
        pass


@pytest.fixture(scope="module")
def segment() -> Iterator[shm.Segment]:
    layout = shm.NodeLayout(buckets=(shm.BucketSpec("bench", 1e9, 1e9),))
    created = shm.create_segment(layout, f"{shm.segment_name()}.bench-bucket")
    yield created
    created.close()
    created.unlink()


def test_bucket_acquire_private(benchmark, hotpath_impl: types.ModuleType) -> None:
    benchmark.group = f"token bucket: {CALLS} acquisitions"
    bucket = hotpath_impl.TokenBucket(1e9, 1e9)
    benchmark(_acquire_many, bucket.try_acquire)


def test_bucket_acquire_shared(benchmark, hotpath_impl: types.ModuleType, segment) -> None:
    benchmark.group = f"token bucket: {CALLS} acquisitions"
    bucket = hotpath_impl.TokenBucket.attach(segment.bucket_region("bench"))
    benchmark(_acquire_many, bucket.try_acquire)
    bucket.close()


def test_bucket_acquire_baseline_empty_loop(benchmark) -> None:
    benchmark.group = f"token bucket: {CALLS} acquisitions"
    benchmark(_loop)
