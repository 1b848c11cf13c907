"""Where a tenant key's cost goes under concurrency: worker CPU and context switches per
request, by key, over HTTP, the sides alternated within each round.

    .venv/bin/python benchmarks/keys_cpu.py [--seconds 5] [--rounds 5] [--workers 2]
        [--connections 16] [--hits] [--keys flat,full,budget,rates,none]
        [--python NAME=/path/to/python ...]

One mock provider (0 ms) and, per ``--python`` (default: this interpreter, named
``here``), one gateway with ``--workers`` workers, the cache on.  Each gateway holds the
flat key and one tenant key of each variant:

* ``full``: every limit on and never reached (rpm, tpm, max_parallel, a monthly budget,
  a model list), as ``keys_overhead.py``'s;
* ``budget``: only the budget; ``rates``: only rpm, tpm and max_parallel; ``none``: no
  limit at all.

Every round runs wrk once per (gateway, key) in a rotated order, misses (unique bodies;
``--hits``: one body) at ``--connections``, and reads the worker processes'
``/proc/<pid>/stat`` (user + system CPU, all threads) and ``/proc/<pid>/status``
(voluntary and involuntary context switches) before and after.  Prints medians over the
rounds per request: CPU in microseconds, switches, and req/s (wall clock: noise on a
loaded machine; CPU per request is the figure that survives load).  Run it with two
``--python`` of two checkouts to pair old and new code in the same minutes
(docs/benchmarks.md, "Tenant keys").
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from aigateway.bench import bodies
from aigateway.bench.procs import spawned_workers
from harness import priced_gateway, start_mock, wait_ready, wrk_chat

BUDGET = {"budget_usd": 10**9, "budget_period": "month"}
RATES = {"rpm": 10**9, "tpm": 10**11, "max_parallel": 100_000}
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {**RATES, **BUDGET, "models": [bodies.MODEL]},
    "budget": BUDGET,
    "rates": RATES,
    "none": {},
}
TICKS = os.sysconf("SC_CLK_TCK")


def counters(pids: list[int]) -> tuple[float, int, int]:
    """(CPU seconds, voluntary, involuntary context switches) of ``pids``, all threads."""
    cpu, voluntary, involuntary = 0.0, 0, 0
    for pid in pids:
        raw = Path(f"/proc/{pid}/stat").read_text()
        fields = raw[raw.rindex(")") + 2 :].split()
        cpu += (int(fields[11]) + int(fields[12])) / TICKS
        for task in os.listdir(f"/proc/{pid}/task"):
            for line in Path(f"/proc/{pid}/task/{task}/status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    involuntary += int(line.split()[1])
    return cpu, voluntary, involuntary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--hits", action="store_true")
    parser.add_argument("--keys", default="flat,full,budget,rates,none")
    parser.add_argument("--python", action="append", default=[])
    parser.add_argument(
        "--bare", action="store_true", help="also a gateway without tenant keys (flat key)"
    )
    args = parser.parse_args()
    pythons = dict(p.split("=", 1) for p in args.python) or {"here": sys.executable}
    if args.bare:
        pythons["bare"] = next(iter(pythons.values()))
    names = args.keys.split(",")
    work = Path(tempfile.mkdtemp(prefix="aigateway-keys-cpu-", dir="/var/tmp"))
    mock, mock_url = start_mock()
    gateways: dict[str, tuple[Any, str, list[int], dict[str, str]]] = {}
    rows: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    try:
        wait_ready(mock_url + "/v1/models", mock)
        for side, python in pythons.items():
            process, url = priced_gateway(python, mock_url, args.workers, work)
            secrets_ = {"flat": bodies.API_KEY}
            for name in names:
                if name == "flat" or side == "bare":
                    continue
                made = httpx.post(
                    url + "/admin/keys", json={"name": name, **VARIANTS[name]}, timeout=10
                )
                made.raise_for_status()
                secrets_[name] = made.json()["key"]
            gateways[side] = (process, url, spawned_workers(process.pid), secrets_)
            for name in secrets_:  # warm-up
                wrk_chat(url, secrets_[name], args.hits, args.connections, 1, work)
        pairs = [(side, name) for side in gateways for name in gateways[side][3]]
        for round_ in range(args.rounds):
            shift = round_ % len(pairs)
            order = pairs[shift:] + pairs[:shift]
            if round_ % 2:
                order.reverse()
            for side, name in order:
                _, url, workers, secrets_ = gateways[side]
                before = counters(workers)
                result = wrk_chat(
                    url, secrets_[name], args.hits, args.connections, args.seconds, work
                )
                after = counters(workers)
                n = result.requests
                rows.setdefault((side, name), []).append(
                    (
                        (after[0] - before[0]) / n * 1e6,
                        (after[1] - before[1]) / n,
                        (after[2] - before[2]) / n,
                        result.rps,
                    )
                )
    finally:
        for process, *_ in gateways.values():
            process.terminate()
            process.wait(timeout=60)
        mock.terminate()
        mock.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print("| side | key | CPU us/req | vol. switches/req | invol. switches/req | req/s |")
    print("|---|---|---:|---:|---:|---:|")
    for (side, name), got in rows.items():
        cpu, vol, invol, rps = (statistics.median(r[i] for r in got) for i in range(4))
        print(f"| {side} | {name} | {cpu:.0f} | {vol:.3f} | {invol:.3f} | {rps:,.0f} |")
    print()
    print("Paired within each round, over the flat key of the same gateway (medians):")
    print("| side | key | +CPU us/req | +vol. switches/req | req/s ratio |")
    print("|---|---|---:|---:|---:|")
    for (side, name), got in rows.items():
        flat = rows.get((side, "flat"))
        if name == "flat" or flat is None:
            continue
        cpu = statistics.median(k[0] - f[0] for k, f in zip(got, flat, strict=True))
        vol = statistics.median(k[1] - f[1] for k, f in zip(got, flat, strict=True))
        ratio = statistics.median(k[3] / f[3] for k, f in zip(got, flat, strict=True))
        print(f"| {side} | {name} | {cpu:+.0f} | {vol:+.3f} | {ratio:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
