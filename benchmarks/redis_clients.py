"""Redis clients on the gateway's own pattern of commands, side by side in one run.

    python benchmarks/redis_clients.py [--url redis://127.0.0.1:6379] [--seconds 3]

Each client runs, from one asyncio (uvloop) process with 64 concurrent tasks, what a
cache miss costs the gateway with the Redis tier on: a GET of a missing entry, a SET of a
2 KiB answer with PX, and an EVALSHA of a small script (a claim), then a GET hit. It
prints operations a second per client. Clients not installed are skipped (coredis is not
a dependency: `pip install coredis` to include it).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

SCRIPT = "return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', 5000)"
VALUE = b"x" * 2048
TASKS = 64


async def drive(name: str, one: Callable[[int], Awaitable[Any]], seconds: float) -> None:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        nonlocal done
        i = index
        while time.perf_counter() < stop:
            await one(i)
            done += 1
            i += TASKS

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(TASKS)))
    elapsed = time.perf_counter() - started
    print(f"{name:<28} {done / elapsed:>10,.0f} rounds/s  ({done * 4 / elapsed:,.0f} commands/s)")


async def redis_py(url: str, seconds: float, parser: str) -> None:
    import redis.asyncio as redis_asyncio
    from redis.asyncio.connection import Connection, _AsyncHiredisParser, _AsyncRESP2Parser

    kwargs: dict[str, Any] = {
        "parser_class": _AsyncRESP2Parser if parser == "python" else _AsyncHiredisParser
    }
    pool = redis_asyncio.ConnectionPool.from_url(url, connection_class=Connection, **kwargs)
    client = redis_asyncio.Redis(connection_pool=pool)
    script = client.register_script(SCRIPT)
    await client.flushdb()

    async def one(i: int) -> None:
        key = f"bench:{i}"
        await client.get(key)
        await client.set(key, VALUE, px=5000)
        await script(keys=[key + ":claim"], args=["me"])
        await client.get(key)

    await drive(f"redis-py ({parser} parser)", one, seconds)
    await client.aclose()


async def coredis_client(url: str, seconds: float) -> None:
    try:
        import coredis
    except ImportError:
        print("coredis                      not installed (pip install coredis)")
        return
    client: Any = coredis.Redis.from_url(url)
    async with client:
        script = client.register_script(SCRIPT)
        await client.flushdb()

        async def one(i: int) -> None:
            key = f"bench:{i}"
            await client.get(key)
            await client.set(key, VALUE, px=5000)
            await script(keys=[key + ":claim"], args=["me"])
            await client.get(key)

        await drive("coredis", one, seconds)


async def main(url: str, seconds: float) -> None:
    await redis_py(url, seconds, "hiredis")
    await redis_py(url, seconds, "python")
    await coredis_client(url, seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    uvloop.run(main(args.url, args.seconds))
