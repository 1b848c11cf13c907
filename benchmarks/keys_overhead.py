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
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from aigateway.bench import bodies
from aigateway.bench.wrk import lua_script, parse_wrk_output, wrk_command
from harness import free_port, priced_gateway, wait_ready

ROOT = Path(__file__).resolve().parent.parent
LOADS = (("miss", 1), ("miss", 16), ("hit", 16))


def measure(url: str, secret: str, load: str, connections: int, seconds: int, work: Path) -> Any:
    body: Any = (
        bodies.identical_body() if load == "hit" else bodies.unique_body_parts(secrets.token_hex(4))
    )
    script = work / f"{secrets.token_hex(3)}.lua"
    script.write_text(lua_script(body, bodies.CHAT_PATH, {"Authorization": f"Bearer {secret}"}))
    command = wrk_command(shutil.which("wrk") or "wrk", url, str(script), connections, seconds, 2)
    run = subprocess.run(command, capture_output=True, text=True, check=True)
    result = parse_wrk_output(run.stdout)
    if result.error_count:
        raise RuntimeError(f"wrk saw errors: {result.errors}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aigateway-keys-bench-"))
    mock_port = free_port()
    mock = subprocess.Popen(
        [sys.executable, "-m", "aigateway.cli", "mock-upstream", "--port", str(mock_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mock_url = f"http://127.0.0.1:{mock_port}"
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
                    measure(url, secret, "miss", 16, 2, work)  # warm-up
                    for load, connections in LOADS:
                        result = measure(url, secret, load, connections, args.seconds, work)
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
