"""A first-tier miss on a node with Redis: the cluster is asked before anything is spent.

The second tier's lookup leaves at the first-tier miss, and the pipeline builds the
provider call while Redis runs it; its answer is awaited before admission. So a request
the cluster answers (an entry in the second tier, or another node's identical call in
flight) takes no token of the provider's rate limit and reserves nothing; only the node
that leads the call spends one.

In process: two "nodes" (a pipeline each, its own LMDB first tier, a ``SecondTier`` on a
real ``redis-server``, a single server and a three-master cluster), fake providers, and
node B's provider limited to one call a second (a burst of one): a token B spent for
nothing would leave its next real miss without one. A call that fails before it asks
(its request cannot be built) leaves no claim behind for other nodes to wait on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import redis

from aigateway.cache.service import ResponseCache
from aigateway.cache.store import LmdbStore
from aigateway.cluster.cache_tier import SecondTier
from aigateway.cluster.keys import Keys
from aigateway.cluster.state import ClusterState
from aigateway.cluster.worker import WorkerRedis
from aigateway.config import Settings
from aigateway.core.accounting import Accounting
from aigateway.core.admission import Admission, pause_bucket_spec
from aigateway.core.dedup import Coalescer, Gate
from aigateway.core.media import RemoteMedia
from aigateway.core.observer import RequestObserver, RequestRecord
from aigateway.core.pipeline import Pipeline
from aigateway.core.providers import Provider
from aigateway.core.registry import ProviderRegistry
from aigateway.core.retry import RetryPolicy
from aigateway.core.router import Router
from aigateway.errors import InvalidRequest
from aigateway.hotpath import TokenBucket, TTLPolicy
from aigateway.providers.openai import OpenAIAdapter
from aigateway.wire import ApiRequest, Completed
from fake_upstream import FakeUpstream, Reply

T = TypeVar("T")


_caches: list[ResponseCache] = []


def node(url: str, path: Path, node_id: str, upstream: FakeUpstream, rate: float) -> Pipeline:
    """A worker of node ``node_id`` (its heartbeat says it lives): ``openai`` limited to
    ``rate`` calls a second, a burst of as many."""
    with _client(url) as client:
        client.set(Keys("aigateway").node(node_id), b"{}", px=60_000)
    settings = Settings(redis_url=url, node_id=node_id, redis_timeout_ms=3000)  # CI is busy
    cache = ResponseCache(LmdbStore(str(path / node_id), 8 << 20), 60.0, TTLPolicy())
    cache.shared = SecondTier(WorkerRedis(settings, ClusterState.private()))
    _caches.append(cache)
    buckets = {"openai": (TokenBucket(rate, rate), TokenBucket(*pause_bucket_spec()))}
    provider = Provider(
        "openai",
        OpenAIAdapter("openai", "http://openai.test", "sk-test", "KEY"),
        upstream,
        usable=True,
        key_variable="KEY",
    )
    return Pipeline(
        ProviderRegistry({"openai": provider}),
        Router(("openai",)),
        RetryPolicy(0, initial_delay_s=0.01, max_delay_s=0.05),
        5.0,
        RemoteMedia(FakeUpstream(), 1 << 20, 5.0, allow_private=False),
        cache,
        admission=Admission(buckets, {"openai": rate}, 100),
    )


def _client(url: str) -> redis.Redis | redis.RedisCluster:
    if url.startswith("redis+cluster://"):
        return redis.RedisCluster.from_url(url.replace("redis+cluster", "redis"))
    return redis.Redis.from_url(url)


def _tier(pipeline: Pipeline) -> SecondTier:
    cache = pipeline._cache
    assert cache is not None and cache.shared is not None
    return cache.shared


def chat(prompt: str, timeout_s: float | None = None) -> ApiRequest:
    body: dict[str, Any] = {
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": prompt}],
    }
    model = "openai/gpt-4o-mini"
    return ApiRequest("chat", model, body, orjson.dumps(body), timeout_s=timeout_s)


def observer() -> RequestObserver:
    return RequestObserver(Accounting.private(("openai",)), RequestRecord("req"))


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, each node's writes settled and its links closed on the way out."""

    async def main() -> T:
        try:
            return await coroutine
        finally:
            while _caches:
                cache = _caches.pop()
                assert cache.shared is not None
                await cache.shared.settle()
                await cache.shared.redis.close()
                cache.store.close()

    return asyncio.run(main())


async def settled(pipeline: Pipeline) -> None:
    """The node's writes to the second tier landed."""
    for cache in _caches:
        assert cache.shared is not None
        await cache.shared.settle()


def test_a_second_tier_hit_takes_no_token_of_the_providers_limit(
    each_redis: str, tmp_path: Path
) -> None:
    async def main() -> None:
        upstream_a, upstream_b = FakeUpstream(), FakeUpstream()
        a = node(each_redis, tmp_path, "node-a", upstream_a, rate=100.0)
        b = node(each_redis, tmp_path, "node-b", upstream_b, rate=1.0)
        await a.chat(chat("shared"), observer())
        await settled(a)

        hit = await b.chat(chat("shared"), observer())  # from the second tier
        assert isinstance(hit, Completed) and hit.cache == "hit"
        assert len(upstream_b.calls) == 0
        # B's one token is still there: a new prompt is admitted at once, well within a
        # deadline far shorter than the second a spent token takes to come back.
        fresh = await b.chat(chat("new", timeout_s=0.5), observer())
        assert isinstance(fresh, Completed) and fresh.cache != "hit"
        assert len(upstream_b.calls) == 1

    run(main())


def test_a_follower_of_another_nodes_call_takes_no_token_either(
    each_redis: str, tmp_path: Path
) -> None:
    async def main() -> None:
        upstream_a = FakeUpstream(Reply(latency_s=0.3))
        upstream_b = FakeUpstream()
        a = node(each_redis, tmp_path, "node-a", upstream_a, rate=100.0)
        b = node(each_redis, tmp_path, "node-b", upstream_b, rate=1.0)
        leading = asyncio.ensure_future(a.chat(chat("shared"), observer()))
        await asyncio.sleep(0.1)  # A holds the cluster's claim, its call under way
        followed = await b.chat(chat("shared"), observer())
        await leading
        assert isinstance(followed, Completed) and followed.cache == "hit"
        assert (len(upstream_a.calls), len(upstream_b.calls)) == (1, 0)
        fresh = await b.chat(chat("new", timeout_s=0.5), observer())
        assert isinstance(fresh, Completed) and len(upstream_b.calls) == 1

    run(main())


def test_a_call_that_fails_before_its_gate_leaves_no_claim_behind(
    each_redis: str, tmp_path: Path
) -> None:
    async def main() -> None:
        a = node(each_redis, tmp_path, "node-a", FakeUpstream(), rate=100.0)
        cache = a._cache
        assert cache is not None
        await a.chat(chat("first"), observer())  # Redis knows the scripts from now on
        dedup = Coalescer(cache)
        request = chat("shared")
        key = cache.key(request, "openai", "gpt-4o-mini")
        assert key is not None

        async def unbuildable(gate: Gate | None) -> Completed:
            raise InvalidRequest("this request cannot be sent to the provider")

        loop = asyncio.get_running_loop()
        with pytest.raises(InvalidRequest):
            await dedup.run(key, request, unbuildable, loop.time() + 60)  # the claim: 60 s
        # The lookup's reply comes, then the claim it made is released: bounded generously.
        claim = Keys("aigateway").in_flight(key)
        with _client(each_redis) as client:
            for _ in range(100):
                await _tier(a).settle()
                if not client.exists(claim):
                    break
                await asyncio.sleep(0.05)
            assert not client.exists(claim)

    run(main())
