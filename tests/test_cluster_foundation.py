"""The parts every shared subsystem stands on: Redis clients from URLs, the guard that
keeps a slow or dead Redis off the request path, key names, the node agent's heartbeat
and the cluster region the workers read.

In-process against real ``redis-server``\\ s the tests start (a single one, and a cluster
of three masters); the guard's cool-down runs on an injected clock.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.cluster import key_slot

from aigateway.cluster.agent import NodeAgent
from aigateway.cluster.connect import open_client
from aigateway.cluster.guard import RedisGuard, RedisUnavailable
from aigateway.cluster.keys import Keys
from aigateway.cluster.membership import members
from aigateway.cluster.state import ClusterState
from aigateway.config import ConfigError, Settings, load_settings
from redis_servers import RedisCluster, RedisServer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def agent_for(url: str, node_id: str, **settings: object) -> NodeAgent:
    config = Settings(redis_url=url, node_id=node_id, redis_timeout_ms=200, **settings)  # type: ignore[arg-type]
    return NodeAgent(config, ClusterState.private())


# -- configuration ----------------------------------------------------------------------


def test_without_redis_url_the_node_is_alone() -> None:
    settings = load_settings({})
    assert settings.redis_url is None and settings.redis_cache_url is None


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "rediss://:secret@redis.example.com:6380",
        "unix:///run/redis/redis.sock?db=2",
        "redis+cluster://10.0.0.1:7000",
        "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster",
    ],
)
def test_every_documented_url_form_is_accepted(url: str) -> None:
    assert load_settings({"REDIS_URL": url}).redis_url == url


def test_a_bad_redis_url_is_refused_without_showing_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"REDIS_URL": "http://:hunter2@localhost:6379"})
    assert caught.value.name == "REDIS_URL" and "hunter2" not in str(caught.value)
    with pytest.raises(ConfigError, match="naming its service"):
        load_settings({"REDIS_URL": "redis+sentinel://10.0.0.1:26379"})


def test_redis_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="REDIS_LIMITS_ON_FAILURE"):
        load_settings({"REDIS_LIMITS_ON_FAILURE": "maybe"})
    with pytest.raises(ConfigError, match="REDIS_TIMEOUT_MS"):
        load_settings({"REDIS_TIMEOUT_MS": "0"})
    with pytest.raises(ConfigError, match="CLUSTER_NAME"):
        load_settings({"CLUSTER_NAME": "has space"})


# -- keys -------------------------------------------------------------------------------


def test_coordination_keys_share_one_cluster_slot_and_entries_spread() -> None:
    keys = Keys("prod")
    coordination = [keys.nodes(), keys.node("a:1"), keys.coordination_key("limit", "openai")]
    assert len({key_slot(k.encode()) for k in coordination}) == 1
    entry, claim = keys.cache_entry(b"\x01" * 16), keys.in_flight(b"\x01" * 16)
    assert key_slot(entry.encode()) == key_slot(claim.encode())  # a claim beside its entry
    slots = {key_slot(keys.cache_entry(bytes([i]) * 16).encode()) for i in range(32)}
    assert len(slots) > 16
    assert all(k.startswith(("aigw:prod:", "{aigw:prod}:")) for k in [*coordination, entry])


# -- clients ----------------------------------------------------------------------------


def test_a_client_talks_to_a_single_server(redis_url: str) -> None:
    async def main() -> bytes | None:
        client = open_client(redis_url, 1.0)
        await client.set("k", b"v")
        value = await client.get("k")
        await client.aclose()
        return value

    assert asyncio.run(main()) == b"v"


def test_a_client_talks_to_a_unix_socket(tmp_path: object) -> None:
    import pathlib

    assert isinstance(tmp_path, pathlib.Path)
    socket_path = tmp_path / "redis.sock"
    server = RedisServer("--unixsocket", str(socket_path), "--unixsocketperm", "700")
    try:

        async def main() -> object:
            client = open_client(f"unix://{socket_path}?db=1", 1.0)
            result = await client.ping()
            await client.aclose()
            return result

        assert asyncio.run(main()) is True
    finally:
        server.stop()


def test_a_cluster_client_reaches_keys_on_every_master(redis_cluster: RedisCluster) -> None:
    async def main() -> list[bytes | None]:
        client = open_client(redis_cluster.url, 2.0)
        names = [Keys("t").cache_entry(bytes([i]) * 16) for i in range(12)]
        for name in names:
            await client.set(name, name.encode())
        values = [await client.get(name) for name in names]
        await client.aclose()
        return values

    values = asyncio.run(main())
    assert all(v is not None for v in values)


# -- the guard --------------------------------------------------------------------------


def test_a_frozen_redis_costs_a_call_the_timeout_then_nothing(redis_server: RedisServer) -> None:
    clock = FakeClock()
    changes: list[tuple[bool, str]] = []
    guard = RedisGuard(0.1, clock=clock, on_change=lambda up, why: changes.append((up, why)))

    async def main() -> None:
        client = open_client(redis_server.url, 0.1)
        await guard.call(client.ping)
        redis_server.freeze()
        try:
            for _ in range(2):  # two failures in a row open the breaker
                started = time.monotonic()
                with pytest.raises(RedisUnavailable):
                    await guard.call(client.ping)
                assert time.monotonic() - started < 2.0  # bounded by the timeout, not Redis
            assert not guard.up and changes == [(False, "no answer within 100 ms")]
            started = time.monotonic()
            with pytest.raises(RedisUnavailable):
                await guard.call(client.ping)  # refused at once while open
            assert time.monotonic() - started < 0.05 and guard.refused == 1
        finally:
            redis_server.thaw()
        clock.now += 1.5  # after the cool-down one call probes, and closes the breaker
        await client.aclose()
        client = open_client(redis_server.url, 1.0)
        assert await guard.call(client.ping) is True
        await client.aclose()

    asyncio.run(main())
    assert guard.up and changes[-1] == (True, "")
    assert len(changes) == 2  # each transition reported once


def test_redis_answers_are_not_outages(redis_url: str) -> None:
    guard = RedisGuard(1.0)

    async def main() -> None:
        client = open_client(redis_url, 1.0)
        await client.set("text", "x")
        for _ in range(3):
            with pytest.raises(Exception, match="WRONGTYPE"):
                await guard.call(lambda: client.lpush("text", "y"))
        await client.aclose()

    asyncio.run(main())
    assert guard.up and guard.failures == 0


# -- the agent --------------------------------------------------------------------------


def test_nodes_see_each_other_and_a_leaving_node_is_gone_at_once(redis_url: str) -> None:
    async def main() -> None:
        a, b = agent_for(redis_url, "node-a"), agent_for(redis_url, "node-b")
        a.membership.interval_s = b.membership.interval_s = 0  # a heartbeat every round
        await a.round()
        await b.round()
        await a.round()
        assert a.state.read().nodes == 2 and b.state.read().nodes == 2
        documents = await members(a.redis, a.keys)
        assert {d["id"] for d in documents} == {"node-a", "node-b"}
        assert all(d["seen_ms_ago"] < 5000 for d in documents)
        await b.close()
        await a.round()
        assert a.state.read().nodes == 1
        await a.close()

    asyncio.run(main())


def test_the_region_says_down_with_the_reason_and_keeps_the_last_node_count(
    redis_server: RedisServer,
) -> None:
    redis_server.client().flushall()
    clock = FakeClock()

    async def main() -> None:
        config = Settings(redis_url=redis_server.url, node_id="node-a", redis_timeout_ms=100)
        other = agent_for(redis_server.url, "node-b")
        agent = NodeAgent(config, ClusterState.private(), clock=clock)
        await other.round()
        await agent.round()
        assert agent.state.read().redis == "up" and agent.state.read().nodes == 2
        redis_server.kill()
        try:
            for _ in range(3):
                clock.now += 1.0
                await agent.round()
            view = agent.state.read()
            assert view.redis == "down" and view.degraded and view.nodes == 2
            assert view.reason
        finally:
            redis_server.start()
        for _ in range(50):  # the next probe after the cool-down rejoins by itself
            clock.now += 1.0
            await agent.round()
            if agent.state.read().redis == "up":
                break
            await asyncio.sleep(0.05)
        assert agent.state.read().redis == "up" and agent.state.read().reason == ""
        await agent.close()
        await other.close()

    asyncio.run(main())
