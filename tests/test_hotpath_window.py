"""CallWindow: the health board counts each provider call into its window without a lock.

Both twins count the same way (``hotpath_impl``); the compiled one adds with atomics, so
processes that count into one shared bucket at once lose no call, which the last test
checks with real processes.
"""

from __future__ import annotations

import mmap
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from aigateway import hotpath
from aigateway.hotpath.regions import WINDOW_BUCKET


def bucket(buffer: Any, at: int = 0) -> tuple[int, int, int, float]:
    return WINDOW_BUCKET.struct.unpack_from(buffer, at)  # type: ignore[no-any-return]


def test_a_call_is_counted_into_a_bucket_of_its_epoch(hotpath_impl):
    buffer = bytearray(64)
    window = hotpath_impl.CallWindow(buffer)
    window.reset(32, 7, False, 0.5)
    assert window.count(32, 7, True, 0.25) is True
    assert window.count(32, 7, False, 0.25) is True
    assert bucket(buffer, 32) == (7, 3, 1, 1.0)
    assert bucket(buffer, 0) == (0, 0, 0, 0.0)


def test_a_bucket_of_another_epoch_is_left_for_a_reset(hotpath_impl):
    buffer = bytearray(32)
    window = hotpath_impl.CallWindow(buffer)
    window.reset(0, 7, True, 2.0)
    assert window.count(0, 8, False, 1.0) is False
    assert bucket(buffer) == (7, 1, 1, 2.0)
    window.reset(0, 8, False, 1.0)
    assert bucket(buffer) == (8, 1, 0, 1.0)


def test_buckets_outside_the_buffer_are_refused(hotpath_impl):
    window = hotpath_impl.CallWindow(bytearray(64))
    for at in (-8, 4, 40, 64):
        with pytest.raises(ValueError, match="no bucket fits"):
            window.count(at, 1, False, 0.0)
    with pytest.raises(TypeError):
        hotpath_impl.CallWindow(bytes(64))


def test_only_the_compiled_twin_counts_without_a_lock():
    assert hotpath.load("python").ATOMIC_WINDOW is False
    if not hotpath.NO_EXTENSIONS:
        assert hotpath.load("cython").ATOMIC_WINDOW is True


def _count(path: str, calls: int) -> None:
    window_module = hotpath.load("cython")
    with open(path, "r+b") as file:
        mapping = mmap.mmap(file.fileno(), 0)
    window = window_module.CallWindow(mapping)
    for _ in range(calls):
        assert window.count(0, 1, False, 0.5)
    window.close()
    mapping.close()


@pytest.mark.skipif(hotpath.NO_EXTENSIONS, reason="the compiled twins are not used")
def test_processes_counting_into_one_bucket_at_once_lose_no_call(tmp_path: Path):
    path = tmp_path / "window"
    path.write_bytes(bytes(4096))
    with open(path, "r+b") as file:
        mapping = mmap.mmap(file.fileno(), 0)
    hotpath.load("cython").CallWindow(mapping).reset(0, 1, False, 0.0)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_count, args=(str(path), 20_000)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    assert bucket(mapping) == (1, 60_001, 0, 30_000.0)
    mapping.close()
