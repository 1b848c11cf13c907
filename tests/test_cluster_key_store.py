"""The tenant keys' Redis store and the agent's key sync, in-process, on a single Redis
and on the three-master cluster (every key under the coordination hash tag).

Two "nodes" are two data directories (each its ``keys.db`` copy) with a key store and an
agent each; the agents' rounds are run by hand.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from aigateway.cluster.agent import NodeAgent
from aigateway.cluster.key_store import (
    RedisKeyStore,
    persistence_problems,
    prepare_shared_keys,
    sync_client,
)
from aigateway.cluster.key_sync import KeySync, last_seen
from aigateway.cluster.state import ClusterState
from aigateway.config import Settings
from aigateway.errors import GatewayError
from aigateway.keys.model import SpendRow
from aigateway.keys.slots import KeySlots
from aigateway.keys.store import SqliteKeyStore, StoreUnavailable

NOW = 1_800_000_000.0


class Node:
    """One node's copy, store, slots and key sync (the agent made per round)."""

    def __init__(self, url: str, directory: Path, node_id: str) -> None:
        directory.mkdir()
        self.directory = str(directory)
        SqliteKeyStore(self.directory).close()  # its own pepper, as prepare_data_dir does
        self.url, self.node_id = url, node_id
        totals = prepare_shared_keys(url, "test", self.directory, 1.0)
        self.store = RedisKeyStore(self.directory, url, "test", 1.0)
        self.slots = KeySlots.private(64)
        seen = {key: values[3] for key, values in (totals or {}).items()}
        self.sync = KeySync(self.directory, self.slots, 0.0, seen, clock=lambda: NOW)

    def round(self) -> None:
        async def main() -> None:
            config = Settings(
                redis_url=self.url, node_id=self.node_id, cluster_name="test", redis_timeout_ms=2000
            )  # type: ignore[call-arg]
            agent = NodeAgent(config, ClusterState.private())
            try:
                await agent.membership.tick(agent)
                await self.sync.tick(agent)
            finally:
                await agent.redis.aclose()

        asyncio.run(main())

    def close(self) -> None:
        self.store.close()
        self.sync.close()


@pytest.fixture
def two(each_redis: str, tmp_path: Path) -> Any:
    nodes = [Node(each_redis, tmp_path / name, name) for name in ("node-a", "node-b")]
    yield nodes
    for node in nodes:
        node.close()


def test_a_key_made_on_one_node_is_copied_to_the_other_when_its_agent_turns(two: Any) -> None:
    a, b = two
    key, secret = a.store.create({"name": "team", "rpm": 10})
    generation = b.slots.generation()
    b.round()
    assert b.slots.generation() > generation  # its workers reload
    copied = b.store.get(key.id)
    assert copied is not None and copied.rpm == 10
    assert b.store.hasher.digest(secret) == copied.digest  # one pepper for the cluster


def test_names_are_unique_across_nodes_and_slots_are_never_shared(two: Any) -> None:
    a, b = two
    first, _ = a.store.create({"name": "same"})
    with pytest.raises(GatewayError) as refused:
        b.store.create({"name": "same"})
    assert refused.value.status == 409
    other, _ = b.store.create({"name": "other"})
    assert other.slot != first.slot


def test_a_change_and_a_revocation_on_one_node_reach_the_other(two: Any) -> None:
    a, b = two
    key, _ = a.store.create({"name": "changing", "rpm": 10})
    b.round()
    b.store.update(key.id, {"rpm": 20})
    a.round()
    assert a.store.get(key.id).rpm == 20
    a.store.revoke(key.id)
    b.round()
    assert b.store.get(key.id).revoked_at is not None
    renamed, _ = b.store.create({"name": "changing"})  # the name is free again
    assert renamed.id != key.id


def test_each_node_sees_the_spend_of_the_other_in_its_budget(two: Any) -> None:
    a, b = two
    key, _ = a.store.create({"name": "budget", "budget_usd": 1.0})
    for node in (a, b):
        node.round()
    slot_a = a.slots.bind(a.store.get(key.id), NOW)
    slot_b = b.slots.bind(b.store.get(key.id), NOW)
    # Each node's workers settle and flush what they spent on their own node.
    slot_a.settle(0.0, 0.25, NOW)
    a.store.add_spend([SpendRow(key.id, NOW, 1, 10, 5, 0.25)])
    slot_b.settle(0.0, 0.5, NOW)
    b.store.add_spend([SpendRow(key.id, NOW, 1, 10, 5, 0.5)])
    for node in (a, b, a, b):
        node.round()
    assert slot_a.spent(NOW) == pytest.approx(0.75)
    assert slot_b.spent(NOW) == pytest.approx(0.75)
    assert a.store.get(key.id).spend.usd == pytest.approx(0.75)
    assert b.store.get(key.id).spend.requests == 2


def test_a_redis_without_persistence_or_with_eviction_is_named(each_redis: str) -> None:
    client = sync_client(each_redis, 1.0)
    try:
        problems = persistence_problems(client)
    finally:
        client.close()
    assert any("no persistence" in problem for problem in problems)


def test_changes_are_refused_while_redis_is_away_and_known_keys_stay(
    each_redis: str, tmp_path: Path
) -> None:
    node = Node(each_redis, tmp_path / "node-a", "node-a")
    try:
        key, _ = node.store.create({"name": "kept"})
        away = RedisKeyStore(node.directory, "redis://127.0.0.1:1", "test", 0.2)
        try:
            with pytest.raises(StoreUnavailable):
                away.create({"name": "new"})
            with pytest.raises(StoreUnavailable):
                away.revoke(key.id)
            assert away.get(key.id) is not None  # the node's copy still answers
        finally:
            away.close()
    finally:
        node.close()


def test_a_node_that_started_without_redis_takes_up_the_count_without_counting_twice(
    two: Any,
) -> None:
    a, _ = two
    key, _ = a.store.create({"name": "restarted", "budget_usd": 1.0})
    a.store.add_spend([SpendRow(key.id, NOW, 1, 10, 5, 0.25)])
    a.round()
    # The node restarts while Redis is away: it serves its copy, then Redis answers.
    a.sync.close()
    a.slots = KeySlots.private(64)
    a.sync = KeySync(a.directory, a.slots, 0.0, last_seen(a.directory), clock=lambda: NOW)
    slot = a.slots.bind(a.store.get(key.id), NOW)
    assert slot.spent(NOW) == pytest.approx(0.25)
    a.round()
    assert slot.spent(NOW) == pytest.approx(0.25)
