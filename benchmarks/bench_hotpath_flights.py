"""A cache miss's in-flight claim and release, and a provider call's health record.

Run: ``pytest benchmarks/bench_hotpath_flights.py --benchmark-only``.  Divide by 1000 for
one claim + release (or one record).  Baselines: the claim and release as LMDB write
transactions (what a miss cost before ``FlightTable``), and the ``flock`` the health
board took around every record before ``CallWindow``.
"""

from __future__ import annotations

import itertools
import mmap
import os
import struct
import time
import types
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest

from aigateway.core.health import HealthBoard, HealthPolicy
from aigateway.hotpath.regions import RegionLock

CALLS = 1000
KEYS = [os.urandom(16) for _ in range(CALLS)]
_OWNER = struct.Struct("<qd")


@pytest.fixture
def mapped(tmp_path: Path) -> Iterator[tuple[mmap.mmap, str]]:
    path = str(tmp_path / "flights")
    with open(path, "wb") as file:
        file.truncate(1 << 20)
    with open(path, "r+b") as file:
        mapping = mmap.mmap(file.fileno(), 0)
    yield mapping, path
    mapping.close()


def test_flight_claim_release(benchmark, hotpath_impl: types.ModuleType, mapped) -> None:
    benchmark.group = f"in-flight claim + release: {CALLS} keys"
    mapping, path = mapped
    flights = hotpath_impl.FlightTable(mapping, 4096, lock_path=path)
    pid, deadline = os.getpid(), time.time() + 60

    def run() -> None:
        now = time.time()
        for key in KEYS:
            flights.claim(key, pid, deadline, now)
            flights.release(key, pid)

    benchmark(run)
    flights.close()


def test_flight_claim_release_baseline_lmdb(benchmark, tmp_path: Path) -> None:
    benchmark.group = f"in-flight claim + release: {CALLS} keys"
    env = lmdb.open(str(tmp_path / "lmdb"), map_size=64 << 20, max_dbs=2, sync=False,
                    metasync=False, writemap=True)  # fmt: skip
    db = env.open_db(b"inflight")
    mark = _OWNER.pack(os.getpid(), time.time() + 60)

    def run() -> None:
        for key in KEYS:
            with env.begin(write=True, db=db) as txn:
                txn.get(key)
                txn.put(key, mark)
            with env.begin(write=True, db=db) as txn:
                txn.delete(key)

    benchmark(run)
    env.close()


def test_health_record_success(benchmark, mapped) -> None:
    benchmark.group = f"health: {CALLS} successful calls recorded"
    mapping, path = mapped
    board = HealthBoard(memoryview(mapping)[: HealthBoard.size(1)], ["p"], HealthPolicy(),
                        lock_path=path + ".lock")  # fmt: skip

    def run() -> None:
        for _ in itertools.repeat(None, CALLS):
            board.record("p", "ok", 0.01)

    benchmark(run)
    board.close()


def test_health_record_baseline_flock_alone(benchmark, tmp_path: Path) -> None:
    benchmark.group = f"health: {CALLS} successful calls recorded"
    lock = RegionLock(str(tmp_path / "lock"))

    def run() -> None:
        for _ in itertools.repeat(None, CALLS):
            with lock:
                pass

    benchmark(run)
    lock.close()
