"""The miss path with Redis, two checkouts side by side on one Redis: paired rounds.

    .venv/bin/python benchmarks/redis_miss_pair.py --other /path/to/other/.venv/bin/python \
        [--rounds 4] [--seconds 5] [--this /a/frozen/copy/.venv/bin/python] [--profile DIR]

One mock provider (0 ms) and one ``redis-server`` for the whole run; each round starts,
measures and stops, in an order that alternates from round to round:

* ``this+redis``: this checkout's gateway (2 workers) with ``REDIS_URL``;
* ``other+redis``: the same from the other checkout's interpreter (``--other``: its venv's
  python, e.g. a worktree at ``main``);
* ``this``: this checkout without Redis (what "added by Redis" is measured against).

Each is loaded with the bench's own measurement (``aigateway.bench.runner.measure``):
unique requests (misses) at 1 and 16 connections, one body (hits) at 16. Wall-clock
figures move with the machine's load; what survives it is printed per side as the median
over the rounds: the gateway's CPU per request (all its processes, ``/proc``), Redis's
CPU per request, the commands Redis ran per request (``INFO commandstats``, a script's
own commands included), the scripts sent per request (``evalsha``/``eval``) and the reads
Redis made per request (``total_reads_processed``: each a wake-up for a socket).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from aigateway.bench import redis_counters, runner
from aigateway.bench.progress import Progress
from aigateway.bench.pyspy import find_pyspy
from aigateway.bench.runner import Environment, RunConfig, measure
from aigateway.bench.scenarios import MockConfig, Step
from aigateway.bench.wrk import ensure_wrk

LOADS = (("unique", 1), ("unique", 16), ("identical", 16))
READS = "(reads)"  # a pseudo command: Redis's total_reads_processed, read with the counters


def _with_reads(port: int, timeout_s: float = 5.0) -> dict[str, int]:
    """The commands' counters and Redis's reads (each a wake-up of Redis for a socket)."""
    with socket.create_connection((redis_counters.HOST, port), timeout=timeout_s) as sock:
        sock.sendall(b"INFO stats\r\n")
        text = redis_counters._read_reply(sock).decode(errors="replace")
    reads = next(int(line.split(":")[1]) for line in text.splitlines()
                 if line.startswith("total_reads_processed:"))  # fmt: skip
    return {**_commandstats(port, timeout_s), READS: reads}


_commandstats = runner.commandstats
runner.commandstats = _with_reads  # this script's own figure: the bench's stay as they are


def _row_figures(row: dict[str, Any]) -> dict[str, float | None]:
    cpu = row["cpu_ms_per_request"]
    redis = row["extra"].get("redis") or {}
    by_name = redis.get("run_by_command") or {}
    requests = max(int(row["requests"]), 1)
    scripts = by_name.get("evalsha", 0) + by_name.get("eval", 0)
    reads = by_name.pop(READS, 0)
    if redis:
        redis["run_per_request"] = sum(by_name.values()) / requests
    return {
        "rps": row["rps"],
        "p50": row["p50_ms"],
        "cpu": cpu.get("target"),
        "redis_cpu": cpu.get("redis"),
        "run": redis.get("run_per_request"),
        "scripts": scripts / requests if redis else None,
        "reads": reads / requests if redis else None,
        "other": row["other_pct"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", required=True, help="the other checkout's venv python")
    parser.add_argument("--other-name", default="main")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile", type=Path, help="py-spy profiles of one worker, here")
    parser.add_argument("--this", default=sys.executable, help="this side's venv python")
    args = parser.parse_args()
    sides = {
        "this": (args.this, "gateway"),
        "this+redis": (args.this, "gateway+redis"),
        f"{args.other_name}+redis": (args.other, "gateway+redis"),
    }
    wrk = ensure_wrk(say=lambda text: print(f"pair: {text}", file=sys.stderr))
    work_dir = Path(tempfile.mkdtemp(prefix="aigateway-pair-"))
    config = RunConfig(
        wrk=wrk, work_dir=work_dir, duration_s=args.seconds, workers=args.workers,
        max_other_pct=None, profile_dir=args.profile,
        pyspy=find_pyspy() or "py-spy",
    )  # fmt: skip
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    progress = Progress(args.rounds * len(sides) * len(LOADS))
    results: dict[tuple[str, str, int], list[dict[str, float | None]]] = {}
    names = list(sides)
    with Environment(config, progress) as env:
        for round_no in range(args.rounds):
            order = names if round_no % 2 == 0 else names[::-1]
            for side in order:
                python, kind = sides[side]
                config.python = python
                for load, c in LOADS:
                    step = Step("cluster", kind, c, args.workers, MockConfig(0.0), load)
                    progress.say(f"round {round_no + 1}: {side} {load} c={c}")
                    row = measure(step, env, progress)
                    figures = _row_figures(row)
                    results.setdefault((side, load, c), []).append(figures)
                    progress.say(f"  {figures}")
                # one side's processes at a time: an idle node still beats and leases
                while env.targets:
                    env.targets.popitem()[1].stop()
    print(f"\nmedians over {args.rounds} rounds ({args.seconds} s each, {args.workers} workers)")
    print("| side | load | c | req/s | p50 ms | gateway cpu ms/req | redis cpu ms/req "
          "| redis run/req | scripts/req | redis reads/req | other% |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (side, load, c), rows in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        cells = []
        for name, digits in (("rps", 0), ("p50", 3), ("cpu", 3), ("redis_cpu", 3),
                             ("run", 3), ("scripts", 3), ("reads", 3), ("other", 0)):  # fmt: skip
            values = [r[name] for r in rows if r[name] is not None]
            cells.append(f"{statistics.median(values):.{digits}f}" if values else "-")
        print(f"| {side} | {load} | {c} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
