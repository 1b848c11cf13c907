"""A provider's pause and open circuit, and the live settings, are the cluster's.

Two node agents stand for two nodes against a real ``redis-server`` (and a cluster of
three masters, for the scripts): each has its own pause clocks, health board and live
settings region, in private memory as a node keeps them in its segment, and the test
drives the agents' rounds itself on an injected clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from aigateway.cluster.agent import NodeAgent
from aigateway.cluster.deadlines import CircuitDeadlines, DeadlineSync, PauseDeadlines
from aigateway.cluster.figures import cluster_section, totals
from aigateway.cluster.keys import Keys
from aigateway.cluster.settings import SettingsSync
from aigateway.cluster.state import ClusterState
from aigateway.cluster.worker import WorkerRedis
from aigateway.config import Settings
from aigateway.core.admission import PauseClock, pause_bucket_spec
from aigateway.core.health import HealthBoard, HealthPolicy
from aigateway.hotpath import TokenBucket
from aigateway.runtime import LiveSettings, region_size
from redis_servers import RedisCluster, RedisServer

PROVIDERS = ["openai", "anthropic"]
SLOTS = 4


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Node:
    """One node as its agent sees it, and one of its workers' live settings."""

    agent: NodeAgent
    clock: FakeClock
    pauses: dict[str, PauseClock]
    board: HealthBoard
    worker: LiveSettings
    rates: list[tuple[str, float]] = field(default_factory=list)  # buckets moved

    async def round(self) -> None:
        self.clock.now += 1.0  # every sync is due
        await self.agent.round()

    def settings(self) -> Settings:
        self.worker.refresh()
        return self.worker.current


def make_node(url: str, node_id: str) -> Node:
    settings = Settings(redis_url=url, node_id=node_id, redis_timeout_ms=500)
    clock = FakeClock()
    agent = NodeAgent(settings, ClusterState.private(), clock=clock)
    pauses = {name: PauseClock(TokenBucket(*pause_bucket_spec())) for name in PROVIDERS}
    board = HealthBoard.private(PROVIDERS, HealthPolicy(failure_threshold=2, cooldown_s=30.0))
    region = bytearray(region_size(SLOTS))
    worker = LiveSettings(settings, region, SLOTS)
    guest = LiveSettings(settings, region, SLOTS, claim_slot=False)
    node = Node(agent, clock, pauses, board, worker)

    def moved(old: Settings, new: Settings) -> None:
        before = {p.name: p.rps for p in old.providers}
        node.rates += [(p.name, p.rps) for p in new.providers if before[p.name] != p.rps]

    agent.add(DeadlineSync("pause", PROVIDERS, PauseDeadlines(pauses)))
    agent.add(DeadlineSync("circuit", PROVIDERS, CircuitDeadlines(board)))
    agent.add(SettingsSync(guest, moved))
    return node


@pytest.fixture(params=["server", "cluster"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A flushed Redis: the single server, or the three-master cluster."""
    if request.param == "server":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.client().flushall()
        yield server.url
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        yield cluster.url


def two_nodes(url: str) -> tuple[Node, Node]:
    return make_node(url, "node-a"), make_node(url, "node-b")


# -- pauses -----------------------------------------------------------------------------


def test_a_pause_met_on_one_node_holds_on_the_other(url: str) -> None:
    async def scenario() -> None:
        a, b = two_nodes(url)
        a.pauses["openai"].pause(5.0)  # a worker of node A met a 429 with Retry-After: 5
        await a.round()
        await b.round()
        assert 4.0 < b.pauses["openai"].left_s() <= 5.0
        assert b.pauses["anthropic"].left_s() == 0.0  # only the provider that said 429
        for _ in range(3):  # no echo: B does not publish back what it applied
            await a.round()
            await b.round()
        assert a.pauses["openai"].left_s() <= 5.0
        owner = await a.agent.redis.get(Keys("aigateway").coordination_key("pause", "openai"))
        assert owner == b"node-a"
        await a.agent.close()
        await b.agent.close()

    asyncio.run(scenario())


def test_a_longer_pause_elsewhere_extends_and_a_shorter_one_never_shortens(url: str) -> None:
    async def scenario() -> None:
        a, b = two_nodes(url)
        a.pauses["openai"].pause(2.0)
        await a.round()
        await b.round()
        b.pauses["openai"].pause(8.0)  # B met a longer one meanwhile
        await b.round()
        await a.round()
        assert a.pauses["openai"].left_s() > 7.0
        b.pauses["anthropic"].pause(1.0)
        a.pauses["anthropic"].pause(6.0)
        await b.round()
        await a.round()
        await b.round()
        assert a.pauses["anthropic"].left_s() > 5.0 and b.pauses["anthropic"].left_s() > 5.0
        await a.agent.close()
        await b.agent.close()

    asyncio.run(scenario())


def test_a_node_that_joins_applies_the_pause_running(redis_url: str) -> None:
    async def scenario() -> None:
        a = make_node(redis_url, "node-a")
        a.pauses["openai"].pause(5.0)
        await a.round()
        late = make_node(redis_url, "node-c")
        await late.round()
        assert late.pauses["openai"].left_s() > 4.0
        await a.agent.close()
        await late.agent.close()

    asyncio.run(scenario())


# -- circuits ---------------------------------------------------------------------------


def test_a_circuit_opened_on_one_node_is_open_on_the_other(url: str) -> None:
    async def scenario() -> None:
        a, b = two_nodes(url)
        for _ in range(2):  # failure_threshold=2
            a.board.record("anthropic", "server_error", 0.01)
        assert a.board.state("anthropic") == "open"
        await a.round()
        await b.round()
        assert b.board.state("anthropic") == "open" and not b.board.closed("anthropic")
        assert 25.0 < b.board.retry_after("anthropic") <= 30.0  # the cool-down left
        assert b.board.opened_total("anthropic") == 0  # counted by the node that opened it
        assert b.board.state("openai") == "healthy"
        until = a.board.open_left_s("anthropic")
        await b.round()
        await a.round()  # no echo: A's cool-down is not stretched by B
        assert a.board.open_left_s("anthropic") <= until
        await a.agent.close()
        await b.agent.close()

    asyncio.run(scenario())


def test_a_circuit_closes_by_each_nodes_own_probe(redis_url: str) -> None:
    async def scenario() -> None:
        a, b = two_nodes(redis_url)
        for _ in range(2):
            a.board.record("openai", "timeout", 0.01)
        await a.round()
        await b.round()
        # After the cool-down B's probe succeeds: B closes, whatever A does.
        b.board.record("openai", "ok", 0.01, probe=True)
        assert b.board.closed("openai")
        await a.round()
        await b.round()
        assert b.board.closed("openai")  # the same opening is not applied twice
        assert not a.board.closed("openai")
        await a.agent.close()
        await b.agent.close()

    asyncio.run(scenario())


# -- live settings ----------------------------------------------------------------------


def test_a_live_change_on_one_node_applies_on_the_other(url: str) -> None:
    async def scenario() -> None:
        a, b = two_nodes(url)
        await a.round()
        await b.round()
        a.worker.update({"MAX_RETRIES": 4, "OPENAI_RPS": 7})  # PUT /admin/config on A
        await a.round()
        await b.round()
        assert b.settings().max_retries == 4
        assert b.worker.overrides == {"MAX_RETRIES": "4", "OPENAI_RPS": "7"}
        assert b.rates == [("openai", 7.0)]  # B's bucket moved to the new rate
        assert not a.rates  # A's worker moved its own bucket when it took the PUT
        a.worker.update({"MAX_RETRIES": None})  # back to the startup value
        await a.round()
        await b.round()
        assert b.settings().max_retries == Settings().max_retries
        assert "MAX_RETRIES" not in b.worker.overrides
        await a.agent.close()
        await b.agent.close()

    asyncio.run(scenario())


def test_changes_made_at_once_on_two_nodes_both_hold_and_the_last_writer_wins(
    redis_url: str,
) -> None:
    async def scenario() -> None:
        a, b = two_nodes(redis_url)
        await a.round()
        await b.round()
        a.worker.update({"MAX_RETRIES": 3, "QUEUE_SIZE": 50})
        b.worker.update({"MAX_RETRIES": 5, "LOG_LEVEL": "warning"})
        await a.round()  # A writes first in Redis's order
        await b.round()  # B's changes merge onto A's: B's MAX_RETRIES is the last write
        await a.round()
        for node in (a, b):
            settings = node.settings()
            assert (settings.max_retries, settings.queue_size) == (5, 50)
            assert settings.log_level == "warning"
        assert a.worker.overrides == b.worker.overrides
        await a.agent.close()
        await b.agent.close()

    asyncio.run(scenario())


def test_a_node_that_joins_takes_the_clusters_settings(redis_url: str) -> None:
    async def scenario() -> None:
        a = make_node(redis_url, "node-a")
        a.worker.update({"MAX_RETRIES": 6})
        await a.round()  # the first node: its settings become the cluster's
        late = make_node(redis_url, "node-c")
        late.worker.update({"MAX_RETRIES": 1})  # changed before it joined
        await late.round()
        assert late.settings().max_retries == 6
        await a.round()
        assert a.settings().max_retries == 6
        await a.agent.close()
        await late.agent.close()

    asyncio.run(scenario())


def test_a_node_back_after_redis_was_gone_takes_the_clusters_settings(
    redis_url: str, redis_server: RedisServer
) -> None:
    async def scenario() -> None:
        a, b = two_nodes(redis_url)
        await a.round()
        await b.round()
        # B loses Redis: its guard opens, its sync will rejoin when Redis answers again.
        for sync in b.agent.syncs:
            sync.redis_changed(False)
        b.worker.update({"QUEUE_SIZE": 9})  # alone
        a.worker.update({"QUEUE_SIZE": 70})
        await a.round()
        await b.round()  # back: the cluster's settings replace its own
        assert b.settings().queue_size == 70
        await a.agent.close()
        await b.agent.close()

    asyncio.run(scenario())


def test_the_clusters_totals_sum_each_members_figures() -> None:
    figures = [
        {"requests": 10, "errors": 1, "cache_hits": 3, "provider_calls": 7, "in_flight": 2},
        {"requests": 5, "errors": 0, "cache_hits": 1, "provider_calls": 4, "in_flight": 0},
    ]
    assert totals(figures) == {
        "requests": 15,
        "errors": 1,
        "cache_hits": 4,
        "provider_calls": 11,
        "in_flight": 2,
    }


# -- the members in /admin/stats --------------------------------------------------------


def test_the_cluster_section_lists_the_members_with_their_figures(redis_url: str) -> None:
    async def scenario() -> dict[str, Any]:
        figures = {"requests": 4, "errors": 0, "cache_hits": 1, "provider_calls": 3, "in_flight": 0}
        nodes = []
        for node_id in ("node-a", "node-b"):
            settings = Settings(redis_url=redis_url, node_id=node_id, redis_timeout_ms=500)
            agent = NodeAgent(settings, ClusterState.private(), figures=lambda: figures)
            await agent.round()
            nodes.append(agent)
        worker = WorkerRedis(nodes[0].settings, nodes[0].state)
        section = await cluster_section(worker, nodes[0].state.read(), dict)
        await worker.close()
        for agent in nodes:
            await agent.close()
        return section

    section = asyncio.run(scenario())
    assert section["redis"] == "up" and section["nodes"] == 2
    assert [m["id"] for m in section["members"]] == ["node-a", "node-b"]
    assert section["totals"]["requests"] == 8 and section["totals"]["cache_hits"] == 2


def test_with_redis_frozen_the_section_shows_this_node_alone_within_the_timeout(
    redis_server: RedisServer,
) -> None:
    own = {"requests": 3, "errors": 1, "cache_hits": 0, "provider_calls": 2, "in_flight": 1}

    async def scenario() -> tuple[dict[str, Any], float]:
        settings = Settings(redis_url=redis_server.url, node_id="node-a", redis_timeout_ms=100)
        state = ClusterState.private()
        state.write(redis="up", node_id="node-a")
        worker = WorkerRedis(settings, state)
        await worker.call(lambda client: client.ping())  # connected before the freeze
        redis_server.freeze()
        try:
            started = time.monotonic()
            section = await cluster_section(worker, state.read(), lambda: own)
            took = time.monotonic() - started
        finally:
            redis_server.thaw()
        await worker.close()
        return section, took

    section, took = asyncio.run(scenario())
    assert section["redis"] == "down" and "showing this node only" in section["reason"]
    assert [m["id"] for m in section["members"]] == ["node-a"]
    assert section["totals"] == own
    assert took < 2.0  # the Redis timeout (0.1 s), not Redis's freeze


def test_while_the_agent_says_redis_is_down_the_section_does_not_even_try() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:9", node_id="node-a")
    state = ClusterState.private()
    state.write(redis="down", reason="connection refused", node_id="node-a")
    worker = WorkerRedis(settings, state)
    section = asyncio.run(cluster_section(worker, state.read(), dict))
    assert section["redis"] == "down" and "connection refused" in section["reason"]
    assert worker.guard.calls == 0
