"""A key's budget taken by several processes at once: under the region's flock (as the
key slots did) against the compiled twin's compare-and-swap (``hotpath.BudgetWords``).

    .venv/bin/python benchmarks/keys_contention.py [--calls 20000] [--processes 2 3]
        [--rounds 5]

Each process reserves and settles one call's budget ``--calls`` times on one shared
mapping, as a worker does for every provider call of the one key a benchmark uses; the
``flock`` side takes the region's lock (``RegionLock``, a real lock file) around each of
the two, the ``cas`` side does not.  With more processes than cores a holder of the lock
gets preempted and the others wait for it.  Prints, per side and process count, the
medians over the alternated rounds of the wall time per call, the CPU per call (all
processes) and the voluntary context switches per call (waits).
"""

from __future__ import annotations

import argparse
import mmap
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aigateway import hotpath
from aigateway.hotpath.regions import RegionLock


def _worker(path: str, lock_path: str, locked: bool, calls: int, start: float, out: object) -> None:
    twin = hotpath.load("cython")
    with open(path, "r+b") as file:
        mapping = mmap.mmap(file.fileno(), 0)
    words = twin.BudgetWords(mapping)
    lock = RegionLock(lock_path)
    while time.time() < start:
        pass
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(calls):
        if locked:
            with lock:
                words.reserve(0, 1, 1e12, 0.001)
            with lock:
                words.settle(0, 1, 0.001, 0.0005)
        else:
            words.reserve(0, 1, 1e12, 0.001)
            words.settle(0, 1, 0.001, 0.0005)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    out.put((cpu, after.ru_nvcsw - before.ru_nvcsw))  # type: ignore[attr-defined]
    words.close()
    mapping.close()
    lock.close()


def run(locked: bool, processes: int, calls: int, work: Path) -> tuple[float, float, float]:
    path = work / "budget"
    path.write_bytes(bytes(4096))
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    start = time.time() + 0.3
    procs = [
        context.Process(
            target=_worker, args=(str(path), str(work / "lock"), locked, calls, start, out)
        )
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(60)
    wall = time.time() - start
    total = calls * processes
    return (
        wall / total * 1e6,
        sum(cpu for cpu, _ in results) / total * 1e6,
        sum(waits for _, waits in results) / total,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--processes", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    figures: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory(dir="/var/tmp") as scratch:
        for round_ in range(args.rounds):
            sides = ("flock", "cas") if round_ % 2 == 0 else ("cas", "flock")
            for processes in args.processes:
                for side in sides:
                    got = run(side == "flock", processes, args.calls, Path(scratch))
                    figures.setdefault((side, processes), []).append(got)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print("| side | processes | wall us/call | CPU us/call | waits/call |")
    print("|---|---:|---:|---:|---:|")
    for (side, processes), got in sorted(figures.items(), key=lambda item: item[0][::-1]):
        wall, cpu, waits = (statistics.median(g[i] for g in got) for i in range(3))
        print(f"| {side} | {processes} | {wall:.2f} | {cpu:.2f} | {waits:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
