"""What one poll of the node's figures costs a worker's event loop, with many tenant keys.

    .venv/bin/python benchmarks/poll_cost.py [--keys 1000] [--days 30] [--calls 100]

Writes a key store of ``--keys`` keys with ``--days`` days of spend each (through the
store's own API, so an older tree writes its own schema), then starts the app in-process
(its lifespan run by Starlette's test client) on that store and times
``Operations.numbers()`` (what ``/metrics``, ``/admin/stats`` and the dashboard read) on
the event loop, ``--calls`` times; prints the median and the largest in milliseconds.
Run it from two trees' virtual environments in turn to compare them (docs/benchmarks.md,
"Hygiene").
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from starlette.routing import Route
from starlette.testclient import TestClient

from aigateway.app import create_app
from aigateway.config import Settings
from aigateway.keys.model import SpendRow
from aigateway.keys.store import SqliteKeyStore


def fill(directory: str, keys: int, days: int) -> None:
    store = SqliteKeyStore(directory)
    try:
        ids = [store.create({"name": f"key-{i:05d}"})[0].id for i in range(keys)]
        first = time.time() - days * 86400
        for day in range(days):
            store.add_spend([SpendRow(k, first + day * 86400, 1, 10, 10, 0.01) for k in ids])
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        fill(directory, args.keys, args.days)
        app = create_app(Settings(workers=1, data_dir=directory))
        metrics = next(r for r in app.routes if isinstance(r, Route) and r.path == "/metrics")
        operations = metrics.endpoint.__self__.operations  # type: ignore[attr-defined]

        def timed() -> list[float]:
            times = []
            for _ in range(args.calls):
                started = time.perf_counter()
                operations.numbers()
                times.append((time.perf_counter() - started) * 1000)
            return times

        with TestClient(app) as client:
            times = client.portal.call(timed)  # on the event loop, as a poll runs
    print(
        f"keys={args.keys} days={args.days} numbers() on the event loop: "
        f"median {statistics.median(times):.3f} ms, max {max(times):.3f} ms"
    )


if __name__ == "__main__":
    main()
