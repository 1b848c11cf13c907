"""``redis+sentinel://`` reaches the master that Sentinel names, as the docs promise.

A real ``redis-server`` as the master and a real Sentinel (``redis-server --sentinel``,
from the same Debian package) that monitors it, both the test's own on free ports.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from aigateway.cluster.agent import NodeAgent
from aigateway.cluster.connect import open_client
from aigateway.cluster.state import ClusterState
from aigateway.config import Settings, load_settings
from redis_servers import RedisServer, redis_server_binary
from servers import free_port


@pytest.fixture(scope="module")
def sentinel(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A Sentinel monitoring the session's Redis as the master ``gateway``; its port."""
    port = free_port()
    directory: Path = tmp_path_factory.mktemp("sentinel")
    config = directory / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
        f"sentinel monitor gateway 127.0.0.1 {redis_server.port} 1\n"
    )
    process = subprocess.Popen(
        [redis_server_binary(), str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        client = redis.Redis(port=port, socket_timeout=2)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if client.execute_command("SENTINEL", "get-master-addr-by-name", "gateway"):
                    break
            except redis.RedisError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError("the sentinel did not start")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_sentinel_url_reaches_the_master_it_names(sentinel: int, redis_url: str) -> None:
    url = f"redis+sentinel://127.0.0.1:{sentinel}/gateway"
    assert load_settings({"REDIS_URL": url}).redis_url == url

    async def main() -> bytes | None:
        client = open_client(url, 2.0)
        await client.set("through-sentinel", b"yes")
        value = await client.get("through-sentinel")
        await client.aclose()
        return value

    assert asyncio.run(main()) == b"yes"
    assert redis.Redis.from_url(redis_url).get("through-sentinel") == b"yes"


def test_a_node_joins_through_sentinel(sentinel: int, redis_url: str) -> None:
    url = f"redis+sentinel://127.0.0.1:{sentinel}/gateway"

    async def main() -> str:
        agent = NodeAgent(Settings(redis_url=url, node_id="node-s"), ClusterState.private())
        await agent.round()
        redis_state = agent.state.read().redis
        await agent.close()
        return redis_state

    assert asyncio.run(main()) == "up"
