"""Stored Responses (``store: true``) are shared by every node on one Redis: a response
created on node A is read back, continued with ``previous_response_id`` and deleted on node
B, and once deleted anywhere it is gone everywhere. Without Redis, or while it is away, each
node serves what it stored itself.

In process first (the shared store over a real single server and a real three-master
cluster, with each node's own LMDB store), then end to end: two real nodes of two workers
each on one ``redis-server``, with the bundled mock provider behind them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from aigateway.cache.response_store import LmdbResponseStore, StoredResponse
from aigateway.cluster.response_tier import SharedResponses
from aigateway.cluster.state import ClusterState
from aigateway.cluster.worker import WorkerRedis
from aigateway.config import Settings
from redis_servers import RedisServer, start_nodes, stop_nodes
from servers import Gateway, MockProvider, wait_for

NOWHERE = "redis://127.0.0.1:1"  # nothing listens there: Redis is away
DAY_S = 86400.0


def record(response_id: str = "resp_1", holder: str | None = None) -> StoredResponse:
    output = [{"id": f"msg_{response_id}", "type": "message", "role": "assistant",
               "content": [{"type": "output_text", "text": "hi", "annotations": []}]}]  # fmt: skip
    response = {"id": response_id, "object": "response", "status": "completed", "output": output}
    return StoredResponse(response, [{"type": "message", "role": "user", "content": "q"}], holder)


def node(url: str, path: Path, name: str) -> SharedResponses:
    settings = Settings(redis_url=url, node_id=name, redis_timeout_ms=3000)
    local = LmdbResponseStore(str(path / name), 8 << 20, DAY_S)
    return SharedResponses(local, WorkerRedis(settings, ClusterState.private()), DAY_S)


async def closed(*stores: SharedResponses) -> None:
    for store in stores:
        await store.redis.close()
        store.local.close()  # type: ignore[attr-defined]


def test_a_response_stored_on_one_node_is_read_and_deleted_on_another(
    each_redis: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        a, b = node(each_redis, tmp_path, "a"), node(each_redis, tmp_path, "b")
        try:
            await a.put("owner", record(holder="openai"))
            found = await b.get("owner", "resp_1")
            assert found is not None and found.holder == "openai"
            assert found.input == record().input
            assert await b.get("someone-else", "resp_1") is None
            item = await b.item("owner", "msg_resp_1")
            assert item is not None and item["type"] == "message"
            assert await b.delete("owner", "resp_1")
            assert await a.get("owner", "resp_1") is None, "A's own copy is not served again"
            assert not await a.delete("owner", "resp_1")
        finally:
            await closed(a, b)

    asyncio.run(scenario())


def test_without_redis_a_node_serves_what_it_stored_itself(tmp_path: Path) -> None:
    async def scenario() -> None:
        away = node(NOWHERE, tmp_path, "a")
        try:
            await away.put("owner", record())
            found = await away.get("owner", "resp_1")
            assert found is not None and found.response["id"] == "resp_1"
            assert await away.delete("owner", "resp_1")
            assert await away.get("owner", "resp_1") is None
        finally:
            await closed(away)

    asyncio.run(scenario())


def test_a_record_in_redis_lives_as_long_as_the_stored_lifetime(
    redis_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        a = node(redis_url, tmp_path, "a")
        try:
            await a.put("owner", record())
            key = a.keys.stored_response("owner", "resp_1")
            ttl_ms = await a.redis.cache_redis.pttl(key)
            assert DAY_S * 1000 - 60_000 < ttl_ms <= DAY_S * 1000
        finally:
            await closed(a)

    asyncio.run(scenario())


# --- two real nodes -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nodes(redis: RedisServer, mock_provider: MockProvider) -> Iterator[list[Gateway]]:
    started = start_nodes(mock_provider, redis.url, REDIS_TIMEOUT_MS="1000")
    for each in started:
        assert wait_for(_redis_up(each))
    yield started
    stop_nodes(started)


def _redis_up(node: Gateway) -> Callable[[], bool]:
    return lambda: httpx.get(node.url + "/health", timeout=10).json()["cluster"]["redis"] == "up"


def _sdk(node: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=node.base_url, api_key="client-one", max_retries=0)


@pytest.mark.e2e
@pytest.mark.parametrize("model", ["gpt-4o-mini", "gemini-2.0-flash"])
def test_created_on_node_a_continued_and_deleted_on_node_b(
    nodes: list[Gateway], mock: MockProvider, model: str
) -> None:
    node_a, node_b = nodes
    with _sdk(node_a) as a, _sdk(node_b) as b:
        created = a.responses.create(model=model, input="Remember the word 'teal'.")
        assert b.responses.retrieve(created.id).output_text == created.output_text
        follow = b.responses.create(model=model, previous_response_id=created.id,
                                    input="Which word?")  # fmt: skip
        assert follow.previous_response_id == created.id
        body: Any = mock.stats()["last_requests"][-1]["body"]
        if model.startswith("gpt-"):  # OpenAI keeps the first turn: node B sent its id
            assert body["previous_response_id"] == created.id
        else:  # the gateway keeps it: node B sent the whole conversation
            assert "teal" in str(body)
        b.responses.delete(created.id)
        with pytest.raises(openai.NotFoundError):
            a.responses.retrieve(created.id)
        with pytest.raises(openai.BadRequestError):
            a.responses.create(model=model, previous_response_id=created.id, input="again")
