"""What tenant keys cost a request: the same gateway with and without a tenant key.

    .venv/bin/python benchmarks/keys_overhead.py [--seconds 10] [--rounds 3] [--workers 2]

One mock provider (0 ms), then one gateway (its own data directory, the cache on) per
round and side, measured with wrk (``aigateway.bench.wrk``):

* ``flat``: the bench's flat key (``AI_GATEWAY_API_KEYS``), no limits;
* ``keys``: a tenant key with every limit on and never reached (rpm, tpm, max_parallel,
  a budget in dollars at priced tokens, a model list), so every check and reservation
  runs on every request.

Misses (unique bodies) at 1 and 16 connections, hits (one body) at 16.  The sides
alternate within each round so that load from elsewhere on the machine falls on both;
the table shows each side's median over the rounds, and the differences
(docs/benchmarks.md, "Tenant keys").
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

from aigateway.bench import bodies
from harness import priced_gateway, start_mock, wait_ready, wrk_chat

ROOT = Path(__file__).resolve().parent.parent
LOADS = (("miss", 1), ("miss", 16), ("hit", 16))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aigateway-keys-bench-"))
    mock, mock_url = start_mock()
    figures: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    try:
        wait_ready(mock_url + "/v1/models", mock)
        for round_ in range(args.rounds):
            sides = ("flat", "keys") if round_ % 2 == 0 else ("keys", "flat")
            for side in sides:
                process, url = priced_gateway(sys.executable, mock_url, args.workers, work)
                try:
                    secret = bodies.API_KEY
                    if side == "keys":
                        made = httpx.post(
                            url + "/admin/keys",
                            json={
                                "name": "bench", "rpm": 10**9, "tpm": 10**11,
                                "max_parallel": 100_000, "budget_usd": 10**9,
                                "budget_period": "month", "models": [bodies.MODEL],
                            },
                            timeout=10,
                        )  # fmt: skip
                        made.raise_for_status()
                        secret = made.json()["key"]
                    wrk_chat(url, secret, False, 16, 2, work)  # warm-up
                    for load, connections in LOADS:
                        result = wrk_chat(
                            url, secret, load == "hit", connections, args.seconds, work
                        )
                        figures.setdefault((side, load, connections), []).append(
                            (result.latency_ms["p50"], result.rps)
                        )
                finally:
                    process.terminate()
                    process.wait(timeout=60)
    finally:
        mock.terminate()
        mock.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    print(
        "| load | conns | p50 flat (ms) | p50 keys (ms) | +p50 (ms) | req/s flat | req/s keys",
        end="",
    )
    print(" | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for load, connections in LOADS:
        flat = figures[("flat", load, connections)]
        keys = figures[("keys", load, connections)]
        p50_flat = statistics.median(p for p, _ in flat)
        p50_keys = statistics.median(p for p, _ in keys)
        rps_flat = statistics.median(r for _, r in flat)
        rps_keys = statistics.median(r for _, r in keys)
        print(
            f"| {load} | {connections} | {p50_flat:.3f} | {p50_keys:.3f} | "
            f"{p50_keys - p50_flat:+.3f} | {rps_flat:,.0f} | {rps_keys:,.0f} | "
            f"{rps_keys / rps_flat:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
