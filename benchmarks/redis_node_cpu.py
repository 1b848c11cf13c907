"""Where a node with ``REDIS_URL`` spends CPU that a node without it does not: paired rounds.

    .venv/bin/python benchmarks/redis_node_cpu.py [--other /path/to/other/.venv/bin/python] \
        [--rounds 4] [--seconds 5] [--idle 5] [--loads unique:1,unique:16,identical:16]

One mock provider (0 ms) and one ``redis-server`` for the whole run. Each round starts,
measures and stops every side in an order that alternates from round to round:
``this`` (no Redis), ``this+redis`` and, with ``--other``, ``other+redis`` (another
checkout's interpreter, e.g. a worktree at ``main``). Per side it measures:

* idle (no load, ``--idle`` seconds): the CPU a second of the main process (where the node
  agent runs) and of the workers, and the commands a second Redis ran;
* under each load (wrk, ``--seconds``): the CPU per request of the main process, of the
  workers and of ``redis-server``, and the commands Redis ran per request.

Only CPU time (``/proc``) is compared, not wall-clock figures: on a shared machine those
move with the others' load. Medians over the rounds are printed per side.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aigateway.bench import bodies, procs
from aigateway.bench.cluster_demo import RedisProcess, node_variables
from aigateway.bench.procs import MockService, Service, free_port
from aigateway.bench.redis_counters import commandstats
from aigateway.bench.wrk import ensure_wrk, lua_script, parse_wrk_output, wrk_command

HOST = "127.0.0.1"


def _gateway(python: str, redis_url: str | None, mock: str, work: Path) -> Service:
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "AI_GATEWAY_HOST": HOST,
        "AI_GATEWAY_PORT": str(port),
        "MAX_WORKERS": "2",
        "LOG_LEVEL": "warning",
        "OPENAI_BASE_URL": mock + "/v1",
        "OPENAI_API_KEY": bodies.API_KEY,
        "OPENAI_MAX_CONNS": "1024",
        "OPENAI_RPS": "1000000",
        "AI_GATEWAY_DATA_DIR": str(work / f"data-{port}"),
    }
    if redis_url is not None:
        env |= node_variables(0, redis_url) | {"CLUSTER_NAME": f"c{port}"}
    args = [python, "-m", "aigateway.cli", "serve"]
    return Service.start(f"gw-{port}", args, env, f"http://{HOST}:{port}", "/health", work)


def _cpu(pids: list[int]) -> float:
    return sum(procs.cpu_seconds(pid) for pid in pids)


def _sample(gw: Service, redis: RedisProcess) -> tuple[float, float, float, int]:
    """CPU seconds of the main process alone (the node agent's), of the workers, of
    ``redis-server``, and the commands Redis ran so far."""
    workers = _cpu(gw.worker_pids())
    whole = procs.cpu_seconds(gw.pid)  # the main process and its descendants
    return whole - workers, workers, procs.cpu_seconds(redis.pid), _commands(redis.port)


def _commands(port: int) -> int:
    return sum(commandstats(port).values())


def _measure(
    gw: Service, redis: RedisProcess, wrk: str, work: Path, load: str, c: int, seconds: int
) -> dict[str, float]:
    if load == "idle":
        before = _sample(gw, redis)
        t0 = time.monotonic()
        time.sleep(seconds)
        dt = time.monotonic() - t0
        after = _sample(gw, redis)
        d = [b - a for a, b in zip(before, after, strict=True)]
        return {"main": d[0] / dt * 1000, "workers": d[1] / dt * 1000, "redis": d[2] / dt * 1000,
                "cmds": d[3] / dt}  # fmt: skip
    body = (
        bodies.identical_body()
        if load == "identical"
        else bodies.unique_body_parts(secrets.token_hex(4))
    )
    script = work / f"wrk-{secrets.token_hex(3)}.lua"
    headers = {"Authorization": f"Bearer {bodies.API_KEY}"}
    script.write_text(lua_script(body, bodies.CHAT_PATH, headers))
    before = _sample(gw, redis)
    command = wrk_command(wrk, gw.url, str(script), c, seconds, 2)
    _, out, _ = procs.run_generator(command, work / "wrk.out", seconds + 30, lambda _: None)
    after = _sample(gw, redis)
    parsed = parse_wrk_output(out)
    n = max(parsed.requests, 1)
    d = [b - a for a, b in zip(before, after, strict=True)]
    return {"main": d[0] / n * 1000, "workers": d[1] / n * 1000, "redis": d[2] / n * 1000,
            "cmds": d[3] / n, "rps": parsed.rps, "p50": parsed.latency_ms.get("p50") or 0.0,
            "errors": parsed.error_count}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", help="the other checkout's venv python")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--idle", type=int, default=5)
    parser.add_argument("--loads", default="unique:1,unique:16,identical:16")
    parser.add_argument("--no-plain", action="store_true", help="leave out the side without Redis")
    args = parser.parse_args()
    loads = [("idle", 0)] + [(x.split(":")[0], int(x.split(":")[1])) for x in args.loads.split(",")]
    sides: dict[str, tuple[str, bool]] = {"this+redis": (sys.executable, True)}
    if not args.no_plain:
        sides["this"] = (sys.executable, False)
    if args.other:
        sides["other+redis"] = (args.other, True)
    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="aigateway-nodecpu-"))
    mock_port = free_port()
    mock = MockService.start(
        "mock", [sys.executable, "-m", "aigateway.cli", "mock-upstream", "--host", HOST,
                 "--port", str(mock_port), "--latency-ms", "0"],
        {"PATH": "/usr/bin:/bin"}, f"http://{HOST}:{mock_port}", "/_mock/stats", work,
    )  # fmt: skip
    redis = RedisProcess.start()
    results: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    try:
        names = list(sides)
        for round_no in range(args.rounds):
            for side in names if round_no % 2 == 0 else names[::-1]:
                python, with_redis = sides[side]
                gw = _gateway(python, redis.url if with_redis else None, mock.url, work)
                try:
                    time.sleep(1.0)  # the agent's first rounds
                    for load, c in loads:
                        seconds = args.idle if load == "idle" else args.seconds
                        row = _measure(gw, redis, wrk, work, load, c, seconds)
                        results.setdefault((side, load, c), []).append(row)
                        shown = {k: round(v, 3) for k, v in row.items()}
                        print(f"round {round_no + 1} {side} {load} c={c}: {shown}", flush=True)
                finally:
                    gw.stop()
    finally:
        redis.stop()
        mock.stop()
        shutil.rmtree(work, ignore_errors=True)  # this run's own directory (mkdtemp)
    print(f"\nmedians over {args.rounds} rounds; idle: per second (ms CPU, commands); "
          "loads: per request (ms CPU, commands)")  # fmt: skip
    print("| side | load | c | main | workers | redis | redis cmds | req/s | p50 ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (side, load, c), rows in sorted(
        results.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])
    ):
        cells = []
        for name in ("main", "workers", "redis", "cmds", "rps", "p50"):
            values = [r[name] for r in rows if name in r]
            cells.append(f"{statistics.median(values):.3f}" if values else "-")
        print(f"| {side} | {load} | {c} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
