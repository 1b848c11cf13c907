"""The CPU a worker spends on the shared cache's second tier per first-tier miss.

    .venv/bin/python benchmarks/second_tier_cost.py [--misses 5000] [--concurrency 1]

Starts a scratch ``redis-server``, then in one uvloop process runs what a miss adds with
``REDIS_URL``: ``SecondTier.find`` (``LOOKUP_V1``: no entry, the claim taken) and, after
a pause standing in for the provider call (0 to twice ``--provider-ms``),
``SecondTier.store`` (``STORE_V1``, held back to ride with the next write), for unique
keys, ``--concurrency`` at a time. Prints this process's CPU per miss
(``time.process_time``), ``redis-server``'s, and Redis's reads per miss (each a wake-up
of Redis). ``--no-tier``: the same loop without Redis (what the tier adds is the
difference); ``--unix``: Redis on a unix socket instead of loopback TCP. In-process, so
the machine's load moves it less than a whole gateway's figures; compare two checkouts
by running it from each.

``--prepare-us N``: N µs of CPU (a busy loop) standing in for the provider call's
preparation, after the lookup's answer; with ``--overlap``, done while Redis runs the
lookup instead, as the gateway does (``SecondTier.begin`` at the miss, the answer awaited
after the preparation). Also prints the wall time per miss.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import random
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import uvloop

from aigateway.bench import procs
from aigateway.bench.cluster_demo import RedisProcess
from aigateway.cache.store import CacheEntry
from aigateway.cluster.cache_tier import SecondTier
from aigateway.cluster.state import ClusterState
from aigateway.cluster.worker import WorkerRedis
from aigateway.config import load_settings

BODY = (
    b'{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":'
    b'{"role":"assistant","content":"' + b"x" * 400 + b'"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}'
)


def _unix_server() -> tuple[RedisProcess, str]:
    """A scratch ``redis-server`` on a unix socket too, in a directory of its own (which
    ``stop`` removes)."""
    directory = Path(tempfile.mkdtemp(prefix="aigateway-tier-"))
    path = str(directory / "redis.sock")
    port = procs.free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--unixsocket", path,
         "--unixsocketperm", "700", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(100):
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return RedisProcess(process, port, directory, owns_directory=True), path
        time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def _reads(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"INFO stats\r\n")
        data = b""
        while b"total_reads_processed" not in data or not data.endswith(b"\r\n"):
            data += sock.recv(65536)
    line = next(x for x in data.decode().splitlines() if x.startswith("total_reads_processed:"))
    return int(line.split(":")[1])


def _busy(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


async def run(
    url: str,
    misses: int,
    concurrency: int,
    provider_s: float,
    tier_on: bool = True,
    prepare_s: float = 0.0,
    overlap: bool = False,
) -> tuple[float, float, int]:
    settings = load_settings({"REDIS_URL": url, "AI_GATEWAY_NODE_ID": "bench"})
    redis = WorkerRedis(settings, ClusterState.private())
    tier = SecondTier(redis)
    loop = asyncio.get_running_loop()
    prefix = f"{time.time_ns()}".encode()

    async def one(i: int) -> None:
        key = hashlib.blake2b(prefix + str(i).encode(), digest_size=16).digest()
        if tier_on and overlap:
            lookup = tier.begin(key, loop.time() + 30)
            await asyncio.sleep(0)  # the call's task: its first step after the lookup's write
            _busy(prepare_s)
            assert await lookup.answer() is None
        else:
            if tier_on:
                assert await tier.find(key, loop.time() + 30) is None
            _busy(prepare_s)
        await asyncio.sleep(random.uniform(0, 2 * provider_s))  # calls end out of step
        now = time.time()
        entry = CacheEntry(BODY, "openai", "gpt-4o-mini", now, now + 3600, 10, 20)
        if tier_on:
            tier.store(key, entry)

    async def lane(start: int) -> None:
        for i in range(start, misses, concurrency):
            await one(i)

    await one(-1)  # connects
    await tier.settle()
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(lane(i) for i in range(concurrency)))
    await tier.settle()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await redis.close()
    return cpu, wall, misses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--provider-ms", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-tier", action="store_true", help="the same loop without Redis")
    parser.add_argument("--unix", action="store_true", help="reach Redis by a unix socket")
    parser.add_argument("--prepare-us", type=float, default=0.0, help="the call's preparation")
    parser.add_argument("--overlap", action="store_true", help="prepare while Redis runs")
    args = parser.parse_args()
    server = RedisProcess.start()
    url = server.url
    if args.unix:  # a second server, on a unix socket (its TCP port only for the figures)
        server.stop()
        server, path = _unix_server()
        url = f"unix://{path}"
    try:
        for _ in range(args.rounds):
            redis_cpu, reads = procs.cpu_seconds(server.pid), _reads(server.port)
            cpu, wall, n = uvloop.run(
                run(
                    url,
                    args.misses,
                    args.concurrency,
                    args.provider_ms / 1000,
                    not args.no_tier,
                    args.prepare_us / 1e6,
                    args.overlap,
                )
            )
            redis_cpu = procs.cpu_seconds(server.pid) - redis_cpu
            reads = _reads(server.port) - reads
            print(
                f"c={args.concurrency}: this process {cpu / n * 1e6:.1f} us CPU per miss, "
                f"redis-server {redis_cpu / n * 1e6:.1f} us, Redis reads {reads / n:.2f} per miss, "
                f"wall {wall / n * 1e6:.1f} us per miss"
            )
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
