"""Gemini's thought signatures are kept for the whole node: the next turn of a conversation
carries the real signature back to Gemini whichever worker it lands on.

In process, the node's store (``cache/signatures.py``) with an injected clock; end to end,
a real gateway of two workers: the tool call is made through a connection one worker holds,
the next turn through one the other worker holds, and the bundled mock (which checks
signatures as Gemini 3 does) must receive its own signature, not Google's placeholder.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aigateway.cache.signatures import LmdbSignatures
from aigateway.cluster.agent import NodeAgent
from aigateway.cluster.signature_sync import SignatureFeed, SignatureSync
from aigateway.cluster.state import ClusterState
from aigateway.cluster.worker import WorkerRedis
from aigateway.config import Settings
from aigateway.testing.mock_gemini import PLACEHOLDER_SIGNATURE, THOUGHT_SIGNATURE
from servers import Gateway, MockProvider


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_signature_kept_is_read_by_whoever_opens_the_store_next(tmp_path: Path) -> None:
    one = LmdbSignatures(str(tmp_path))  # LMDB opens an environment once per process:
    one.keep("call_1", "get_weather", "c2lnbmF0dXJl", "gemini-id")  # another worker's turn
    one.close()  # is played by opening it again
    two = LmdbSignatures(str(tmp_path))
    try:
        kept = two.recall("call_1")
        assert kept is not None
        assert (kept.name, kept.signature, kept.gemini_id) == (
            "get_weather", "c2lnbmF0dXJl", "gemini-id",
        )  # fmt: skip
        assert two.recall("call_unknown") is None and two.recall(None) is None
    finally:
        two.close()


def test_a_signature_expires_after_its_lifetime(tmp_path: Path) -> None:
    clock = Clock()
    store = LmdbSignatures(str(tmp_path), ttl_s=60.0, clock=clock)
    try:
        store.keep("call_1", "f", "sig", None)
        clock.now += 59
        assert store.recall("call_1") is not None
        clock.now += 2
        assert store.recall("call_1") is None
        store.keep("call_2", "f", "sig", None)  # a write sweeps what expired
        assert len(store) == 1
    finally:
        store.close()


def test_past_its_bound_the_oldest_signatures_go_first(tmp_path: Path) -> None:
    clock = Clock()
    store = LmdbSignatures(str(tmp_path), max_entries=3, clock=clock)
    try:
        for n in range(5):
            clock.now += 1
            store.keep(f"call_{n}", "f", f"sig{n}", None)
        assert len(store) == 3
        assert store.recall("call_0") is None and store.recall("call_1") is None
        kept = store.recall("call_4")
        assert kept is not None and kept.signature == "sig4"
    finally:
        store.close()


# --- a real gateway of two workers ----------------------------------------------------------

MODEL = "gemini-3-pro-preview"  # Gemini 3: a replayed call needs its signature
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"location": {"type": "string"}}}}}]  # fmt: skip


def _worker(client: httpx.Client) -> int:
    pid: int = client.get("/health").json()["pid"]
    return pid


@pytest.fixture
def two_workers(gateway: Gateway) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two kept-alive connections, each held by a different worker process."""
    clients: dict[int, httpx.Client] = {}
    spare: list[httpx.Client] = []
    try:
        for _ in range(40):
            client = gateway.client()
            pid = _worker(client)
            if pid in clients:
                spare.append(client)
                continue
            clients[pid] = client
            if len(clients) == 2:
                break
        assert len(clients) == 2, "both workers should accept connections"
        first, second = clients.values()
        assert _worker(first) != _worker(second)
        yield first, second
    finally:
        for client in [*clients.values(), *spare]:
            client.close()


def test_the_next_turn_on_another_worker_carries_the_real_signature(
    two_workers: tuple[httpx.Client, httpx.Client], mock: MockProvider
) -> None:
    first, second = two_workers
    question = {"role": "user", "content": "What is the weather in Paris?"}
    answer = first.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": [question], "tools": TOOLS}
    )
    assert answer.status_code == 200, answer.text
    message = answer.json()["choices"][0]["message"]
    call = message["tool_calls"][0]
    assert len(call["id"]) <= 40
    history: list[dict[str, Any]] = [
        question,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ]
    follow = second.post("/v1/chat/completions", json={"model": MODEL, "messages": history})
    assert follow.status_code == 200, follow.text
    sent = mock.stats()["last_requests"][-1]["body"]
    parts = [p for c in sent["contents"] for p in c["parts"] if "functionCall" in p]
    assert parts[0]["thoughtSignature"] == THOUGHT_SIGNATURE != PLACEHOLDER_SIGNATURE


# --- across nodes, through Redis -------------------------------------------------------------


def test_a_signature_kept_on_one_node_reaches_the_other_nodes_store(
    each_redis: str, tmp_path: Path
) -> None:
    """Node A's worker appends what it keeps to the cluster's stream; node B's agent reads
    it into B's store at its next turn (a single server, then a three-master cluster)."""

    async def scenario() -> None:
        settings_a = Settings(redis_url=each_redis, node_id="node-a", redis_timeout_ms=3000)
        settings_b = Settings(redis_url=each_redis, node_id="node-b", redis_timeout_ms=3000)
        worker_a = WorkerRedis(settings_a, ClusterState.private())
        store_a = LmdbSignatures(str(tmp_path / "a"))
        feed = SignatureFeed(worker_a)
        store_a.published = feed.publish
        agent_a = NodeAgent(settings_a, ClusterState.private())
        agent_b = NodeAgent(settings_b, ClusterState.private())
        sync_a = SignatureSync(str(tmp_path / "a-agent"))  # A's agent: its own store
        sync_b = SignatureSync(str(tmp_path / "b"))
        agent_a.add(sync_a)
        agent_b.add(sync_b)
        try:
            store_a.keep("call_abc", "get_weather", "c2ln", "g-1")
            await feed.settle()
            await agent_b.round()
            await agent_a.round()
            assert sync_b.added == 1
            assert sync_a.added == 0, "a node's own signatures are not read back"
            sync_b.close()
            store_b = LmdbSignatures(str(tmp_path / "b"))  # as B's workers open it
            kept = store_b.recall("call_abc")
            store_b.close()
            assert kept is not None and (kept.name, kept.signature) == ("get_weather", "c2ln")
        finally:
            store_a.close()
            await worker_a.close()
            await agent_a.close()
            await agent_b.close()

    asyncio.run(scenario())
