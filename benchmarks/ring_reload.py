"""What one reload of a worker's tenant keys costs, and how much of it the event loop waits.

    .venv/bin/python benchmarks/ring_reload.py [--keys 1000] [--days 365] [--rounds 5]
    .venv/bin/python benchmarks/ring_reload.py --store DIR   # a store filled already

Fills a key store as ``benchmarks/poll_cost.py`` does (``--keys`` keys, ``--days`` days of
spend each), then reloads a ``KeyRing`` on it ``--rounds`` times (the node's generation
moved each time), in-process.  Prints the medians of the reload's wall and CPU time and,
in a tree whose ring reads in a thread, of the part left on the event loop (binding the
slots and swapping the key set).  An older tree reloads wholly on the loop.  Run it from
two trees in turn to compare them (docs/benchmarks.md, "Hygiene").
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from aigateway.keys.ring import KeyRing
from aigateway.keys.slots import KeySlots
from aigateway.keys.store import KEY_SLOTS, SqliteKeyStore
from poll_cost import fill


def measure(directory: str, rounds: int) -> None:
    store = SqliteKeyStore(directory)
    ring = KeyRing(store, KeySlots.private(KEY_SLOTS))
    walls, cpus, reads = [], [], []
    try:
        ring.reload()  # the slots bound once, as a serving worker has them
        for _ in range(rounds):
            ring.changed()
            wall, cpu = time.perf_counter(), time.process_time()
            ring.reload()
            walls.append((time.perf_counter() - wall) * 1000)
            cpus.append((time.process_time() - cpu) * 1000)
            read = getattr(ring, "_read", None)  # the part a newer ring runs in a thread
            if read is not None:
                started = time.perf_counter()
                read(time.time())
                reads.append((time.perf_counter() - started) * 1000)
        keys = len(ring.live())
    finally:
        store.close()
    line = (
        f"keys={keys} reload: median {statistics.median(walls):.1f} ms"
        f" (CPU {statistics.median(cpus):.1f} ms)"
    )
    if reads:
        read_ms = statistics.median(reads)
        on_loop = statistics.median(walls) - read_ms
        line += f"; read in a thread {read_ms:.1f} ms, on the loop {on_loop:.1f} ms"
    else:
        line += ", all of it on the event loop"
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--store", help="a directory holding a filled keys.db")
    args = parser.parse_args()
    if args.store:
        measure(args.store, args.rounds)
        return
    with tempfile.TemporaryDirectory() as directory:
        fill(directory, args.keys, args.days)
        measure(directory, args.rounds)


if __name__ == "__main__":
    main()
