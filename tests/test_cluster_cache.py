"""The cluster's cache in two tiers, and identical calls shared across nodes, in process.

Each "node" here is what one worker of a node holds: its LMDB cache (the first tier) on a
directory of its own, the real de-duplication (``Coalescer``), and a ``SecondTier`` on a
real ``redis-server`` the tests start; every test that touches keys runs against a single
server and against a Redis Cluster of three masters. The provider is a function that
counts its calls. tests/test_cluster_cache_nodes.py shows the same with real nodes.

* An answer is written to both tiers; another node's first-tier miss finds it in the
  second, with the TTL it has left, and keeps it in its own first tier. A write to the
  second tier that Redis refuses is counted as a store failure: never lost silently.
* A value that is not one of ours (corrupt, foreign, of another type) is a miss.
* The node that leads claims the call; identical requests on other nodes wait for its
  answer in the second tier, streams included (replayed once it ended). A claim lasts no
  longer than its leader's deadline, is deleted at once when its call ends without an
  answer to keep (only by its holder), and is taken over when its node stopped beating.
* Clearing empties the second tier on every master and moves the generation that makes
  each node's agent empty its first tier.
* Without Redis, the cache is its first tier and de-duplication stays within the node.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import redis

from aigateway.cache.service import ResponseCache
from aigateway.cache.store import CacheEntry, LmdbStore
from aigateway.cluster.agent import NodeAgent
from aigateway.cluster.cache_sync import CacheGeneration
from aigateway.cluster.cache_tier import LIVENESS_S, MAGIC, SecondTier
from aigateway.cluster.dead_workers import DeadWorkers
from aigateway.cluster.keys import Keys
from aigateway.cluster.state import ClusterState
from aigateway.cluster.worker import WorkerRedis
from aigateway.config import Settings
from aigateway.core.dedup import Coalescer, Gate
from aigateway.hotpath import TTLPolicy
from aigateway.wire import ApiRequest, CacheControl, Completed, Streaming
from servers import free_port

T = TypeVar("T")
KEY = bytes(range(16))
NOWHERE_PORT = str(free_port())
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-test",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "shared"}, "finish_reason": "stop"}
    ],
    "usage": USAGE,
}


@pytest.fixture
def url(each_redis: str) -> str:
    """A Redis of the tests' own, emptied: a single server, then a three-master cluster."""
    return each_redis


@dataclass
class Node:
    """One worker of a node: its first tier, the second tier, its de-duplication."""

    cache: ResponseCache
    tier: SecondTier
    dedup: Coalescer

    async def close(self) -> None:
        await self.tier.settle()
        self.cache.store.close()
        await self.tier.redis.close()


_open: list[Node] = []


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, closing the nodes the test made on its way out, passed or not."""

    async def main() -> T:
        try:
            return await coroutine
        finally:
            while _open:
                await _open.pop().close()

    return asyncio.run(main())


def node(url: str, path: Path, node_id: str, **settings: Any) -> Node:
    """A worker of node ``node_id``, whose heartbeat (``cluster.membership``) says it lives."""
    if not url.endswith(NOWHERE_PORT):
        with plain_client(url) as client:
            client.set(Keys("aigateway").node(node_id), b"{}", px=60_000)
    options: dict[str, Any] = {"redis_timeout_ms": 3000, **settings}  # generous: CI is busy
    config = Settings(redis_url=url, node_id=node_id, **options)
    cache = ResponseCache(LmdbStore(str(path / node_id), 8 << 20), 60.0, TTLPolicy())
    cache.shared = SecondTier(
        WorkerRedis(config, ClusterState.private()), on_lost=cache.shared_write_lost
    )
    made = Node(cache, cache.shared, Coalescer(cache))
    _open.append(made)
    return made


def entry(ttl_s: float = 30.0) -> CacheEntry:
    now = time.time()
    return CacheEntry(orjson.dumps(ANSWER), "openai", "gpt-test", now, now + ttl_s, 3, 2)


def request(stream: bool = False, **fields: Any) -> ApiRequest:
    body: dict[str, Any] = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    return ApiRequest("chat", "gpt-test", body, orjson.dumps(body), stream=stream, **fields)


@dataclass
class Provider:
    """Answers after ``latency_s``, whole or as a stream; counts its calls."""

    latency_s: float = 0.3
    calls: int = 0
    chunks: list[bytes] = field(default_factory=list)

    async def fetch(self, request: ApiRequest, gate: Gate | None = None) -> Completed | Streaming:
        """As the pipeline does: the call prepared, the gate awaited, then the call made
        (a second-tier hit or a follower raises out of the gate: no call)."""
        if gate is not None:
            await gate()
        self.calls += 1
        await asyncio.sleep(self.latency_s)
        if request.stream:
            return Streaming(self._events(), "openai", "gpt-test", 1)
        return Completed(orjson.dumps(ANSWER), "openai", "gpt-test", 1, completion=ANSWER)

    async def _events(self) -> AsyncIterator[bytes]:
        head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-test"}
        for word in ("shared ", "answer"):
            choice = {"index": 0, "delta": {"content": word}, "finish_reason": None}
            yield b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"
            await asyncio.sleep(0.05)
        done = {"index": 0, "delta": {}, "finish_reason": "stop"}
        yield b"data: " + orjson.dumps({**head, "choices": [done]}) + b"\n\n"
        yield b"data: " + orjson.dumps({**head, "choices": [], "usage": USAGE}) + b"\n\n"
        yield b"data: [DONE]\n\n"


async def text_of(result: Completed | Streaming) -> str:
    if isinstance(result, Completed):
        return str(orjson.loads(result.body)["choices"][0]["message"]["content"])
    words = []
    async for piece in result.events:
        for line in piece.split(b"\n"):
            if line.startswith(b"data: {"):
                for choice in orjson.loads(line[6:])["choices"]:
                    words.append(choice["delta"].get("content") or "")
    return "".join(words)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Direct = redis.Redis | redis.RedisCluster


def plain_client(url: str) -> Direct:
    if url.startswith("redis+cluster://"):
        return redis.RedisCluster.from_url(url.replace("redis+cluster", "redis"))
    return redis.Redis.from_url(url)


def holder(client: Direct, claim: str) -> bytes:
    """Who holds a claim: the token's ``node|pid|...``."""
    return bytes(client.get(claim) or b"")  # type: ignore[arg-type]


@pytest.fixture
def direct(url: str) -> Iterator[redis.Redis | redis.RedisCluster]:
    """A plain client of the same Redis, to look at what the gateway wrote."""
    client = plain_client(url)
    yield client
    client.close()


def deadline(seconds: float = 10.0) -> float:
    return asyncio.get_running_loop().time() + seconds


# -- two tiers ---------------------------------------------------------------------------


def test_an_answer_kept_on_one_node_is_found_on_another_with_the_ttl_it_has_left(
    url: str, tmp_path: Path
) -> None:
    async def main() -> None:
        a, b = node(url, tmp_path, "node-a"), node(url, tmp_path, "node-b")
        kept = entry(ttl_s=30.0)
        a.tier.store(KEY, kept)
        await a.tier.settle()
        found = await b.tier.find(KEY, deadline())
        assert found is not None and not found.waited  # there already: a second-tier hit
        assert found.entry.body == kept.body and found.entry.provider == "openai"
        assert (found.entry.prompt_tokens, found.entry.completion_tokens) == (3, 2)
        assert 25.0 < found.entry.expires_at - time.time() <= 30.0  # Redis's clock
        b.cache.keep(KEY, found.entry, joined=False)  # into b's first tier
        again = b.cache.store.get(KEY)
        assert again is not None and again.expires_at == found.entry.expires_at
        assert b.cache.store.counters()["second_tier_hits"] == 1

    run(main())


@pytest.mark.parametrize(
    "value", [b"plain text", MAGIC + b"\x00\x01 not an entry", b"\xff" * 40, "a list"]
)
def test_a_value_that_is_not_one_of_ours_is_a_miss(
    url: str, direct: Direct, tmp_path: Path, value: bytes | str
) -> None:
    name = Keys("aigateway").cache_entry(KEY)
    if value == "a list":
        direct.rpush(name, b"x")
    else:
        direct.set(name, value, px=30_000)

    async def main() -> None:
        a = node(url, tmp_path, "node-a")
        assert await a.tier.find(KEY, deadline()) is None  # no error: a miss

    run(main())


def test_answers_go_to_both_tiers_with_the_ttl_the_rules_compute(
    url: str, direct: Direct, tmp_path: Path
) -> None:
    async def main() -> None:
        a = node(url, tmp_path, "node-a")
        ask = request(cache=CacheControl(ttl_s=20.0))
        a.cache.remember(KEY, ask, Completed(orjson.dumps(ANSWER), "openai", "gpt-test", 1))
        await a.tier.settle()
        assert a.cache.store.get(KEY) is not None

    run(main())
    ttl = direct.pttl(Keys("aigateway").cache_entry(KEY))
    assert 15_000 < ttl <= 20_000


def test_an_answer_redis_refuses_to_keep_is_counted_as_a_store_failure(
    url: str, direct: Direct, tmp_path: Path
) -> None:
    async def main() -> dict[str, int]:
        a = node(url, tmp_path, "node-a")
        direct.config_set("maxmemory-policy", "noeviction")
        direct.config_set("maxmemory", "1")  # full: every write is refused (OOM)
        ask = request(cache=CacheControl(ttl_s=20.0))
        a.cache.remember(KEY, ask, Completed(orjson.dumps(ANSWER), "openai", "gpt-test", 1))
        await a.tier.settle()
        assert a.cache.store.get(KEY) is not None  # the first tier kept it all the same
        return a.cache.store.counters()

    try:
        counters = run(main())
    finally:
        direct.config_set("maxmemory", "0")
    assert counters["store_failures"] == 1


# -- claims ------------------------------------------------------------------------------


def test_the_leader_claims_and_a_waiter_on_another_node_gets_its_answer(
    url: str, direct: Direct, tmp_path: Path
) -> None:
    async def main() -> None:
        a, b = node(url, tmp_path, "node-a"), node(url, tmp_path, "node-b")
        assert await a.tier.find(KEY, deadline()) is None  # claimed: a calls the provider
        await b.tier.redis.cache_call(lambda client: client.ping())  # b is connected
        waiting = asyncio.ensure_future(b.tier.find(KEY, deadline()))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        a.tier.store(KEY, entry())  # the answer, and the claim deleted with it
        found = await asyncio.wait_for(waiting, 5)
        assert found is not None and found.waited  # a de-duplicated request

    run(main())
    assert direct.exists(Keys("aigateway").in_flight(KEY)) == 0


def test_a_claim_given_up_lets_a_waiter_call_the_provider_itself(
    url: str, direct: Direct, tmp_path: Path
) -> None:
    async def main() -> None:
        a, b = node(url, tmp_path, "node-a"), node(url, tmp_path, "node-b")
        assert await a.tier.find(KEY, deadline()) is None
        waiting = asyncio.ensure_future(b.tier.find(KEY, deadline()))
        await asyncio.sleep(0.05)
        a.tier.release(KEY)  # e.g. the provider failed: no answer to keep
        assert await asyncio.wait_for(waiting, 5) is None  # b calls the provider now

    run(main())
    assert holder(direct, Keys("aigateway").in_flight(KEY)).startswith(b"node-b|")


def test_a_claim_lasts_no_longer_than_its_leader_deadline_and_only_its_holder_deletes_it(
    url: str, direct: Direct, tmp_path: Path
) -> None:
    claim = Keys("aigateway").in_flight(KEY)

    async def main() -> None:
        a, b = node(url, tmp_path, "node-a"), node(url, tmp_path, "node-b")
        assert await a.tier.find(KEY, deadline(0.3)) is None
        assert 0 < direct.pttl(claim) <= 300
        await asyncio.sleep(0.4)  # a's deadline passed: its claim expired
        assert await b.tier.find(KEY, deadline()) is None  # b claims now
        held = holder(direct, claim)
        a.tier.release(KEY)  # too late: the claim is b's, and stays
        await a.tier.settle()
        assert holder(direct, claim) == held and held.startswith(b"node-b|")

    run(main())


def test_a_waiter_takes_over_the_claim_of_a_node_that_stopped_beating(
    url: str, direct: Direct, tmp_path: Path
) -> None:
    keys = Keys("aigateway")

    async def main() -> None:
        a, b = node(url, tmp_path, "node-a"), node(url, tmp_path, "node-b")
        direct.set(keys.node("node-a"), b"{}", px=60_000)  # node-a's heartbeat document
        assert await a.tier.find(KEY, deadline()) is None
        with pytest.raises(TimeoutError):  # a lives: b waits
            await asyncio.wait_for(b.tier.find(KEY, deadline()), LIVENESS_S * 3)
        direct.delete(keys.node("node-a"))  # node-a died: its document expired
        started = time.monotonic()
        assert await b.tier.find(KEY, deadline()) is None  # b took the claim over
        assert time.monotonic() - started < LIVENESS_S * 4
        assert holder(direct, keys.in_flight(KEY)).startswith(b"node-b|")

    run(main())


# -- across nodes, with the real de-duplication ------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_identical_requests_on_two_nodes_make_one_provider_call(
    url: str, tmp_path: Path, stream: bool
) -> None:
    provider = Provider()

    async def main() -> list[str]:
        nodes = [node(url, tmp_path, "node-a"), node(url, tmp_path, "node-b")]

        async def ask(index: int) -> str:
            one = request(stream)
            at = nodes[index % 2]
            result = await at.dedup.run(
                KEY, one, lambda gate: provider.fetch(one, gate), deadline()
            )
            return await text_of(result)

        answers = await asyncio.gather(*(ask(i) for i in range(10)))
        return answers

    answers = run(main())
    assert provider.calls == 1
    assert answers == ["shared" if not stream else "shared answer"] * 10


def test_a_no_cache_request_neither_waits_nor_claims(
    url: str, direct: Direct, tmp_path: Path
) -> None:
    provider = Provider(latency_s=0.05)

    async def main() -> None:
        a = node(url, tmp_path, "node-a")
        one = request(cache=CacheControl(read=False))
        await a.dedup.run(KEY, one, lambda gate: provider.fetch(one, gate), deadline())
        await a.tier.settle()

    run(main())
    assert direct.exists(Keys("aigateway").in_flight(KEY)) == 0
    assert direct.exists(Keys("aigateway").cache_entry(KEY)) == 1  # but its answer is kept


# -- CACHE_SCOPE -------------------------------------------------------------------------


def test_each_client_scope_has_its_own_entries_in_the_second_tier(url: str, tmp_path: Path) -> None:
    async def main() -> None:
        a, b = node(url, tmp_path, "node-a"), node(url, tmp_path, "node-b")
        one, other = request(cache_scope="client-one"), request(cache_scope="client-two")
        key_one = a.cache.key(one, "openai", "gpt-test")
        key_other = b.cache.key(other, "openai", "gpt-test")
        assert key_one is not None and key_other is not None and key_one != key_other
        a.tier.store(key_one, entry())
        await a.tier.settle()
        assert await b.tier.find(key_other, deadline()) is None  # another client's: a miss
        assert await b.tier.find(key_one, deadline()) is not None

    run(main())


# -- clearing ----------------------------------------------------------------------------


def test_clearing_empties_the_second_tier_on_every_master_and_moves_the_generation(
    url: str, direct: Direct, tmp_path: Path
) -> None:
    others = Keys("another-gateway")
    direct.set(others.cache_entry(KEY), b"theirs")

    async def main() -> list[tuple[int, int]]:
        a = node(url, tmp_path, "node-a")
        for i in range(40):
            a.tier.store(bytes([i]) * 16, entry())
        await a.tier.settle()
        cleared = [await a.tier.clear(), await a.tier.clear()]
        return cleared

    assert run(main()) == [(40, 1), (0, 2)]
    assert direct.get(others.cache_entry(KEY)) == b"theirs"  # another gateway's: untouched
    assert direct.get(Keys("aigateway").cache_generation()) == b"2"


def test_the_node_agent_empties_its_first_tier_when_the_generation_moves(
    redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        redis_url=redis_url, node_id="node-a", cache_path=str(tmp_path / "lmdb"), cache_max_mb=8
    )
    store = LmdbStore(str(tmp_path / "lmdb"), 8 * 2**20)  # the main process's one handle

    def entries() -> int:
        return int(store.counters().get("entries", 0))

    store.put(KEY, entry())
    clock = FakeClock()

    async def main() -> list[int]:
        agent = NodeAgent(settings, ClusterState.private(), clock=clock)
        agent.add(CacheGeneration(lambda: store))
        await agent.round()  # the generation as the node starts: nothing to clear
        seen = [entries()]
        await agent.redis.incr(agent.keys.cache_generation())  # DELETE /admin/cache elsewhere
        clock.now += 1.0
        await agent.round()
        seen.append(entries())
        await agent.close()
        return seen

    assert run(main()) == [1, 0]
    store.close()


def test_the_node_agent_releases_the_marks_and_claims_of_a_worker_that_died(
    url: str, tmp_path: Path, direct: Direct
) -> None:
    path = str(tmp_path / "lmdb")
    other = bytes(range(1, 17))
    # A worker marks two calls in flight on the node, then dies (its pid is gone).
    marking = (
        "import sys, time; from aigateway.cache.store import LmdbStore; "
        "s = LmdbStore(sys.argv[1], 8 << 20); "
        "[s.claim_flight(bytes.fromhex(k), time.time() + 60) for k in sys.argv[2:]]; "
        "import os; print(os.getpid())"
    )
    done = subprocess.run(
        [sys.executable, "-c", marking, path, KEY.hex(), other.hex()],
        capture_output=True, check=True, text=True,
    )  # fmt: skip
    dead = int(done.stdout)
    keys = Keys("aigateway")
    direct.set(keys.in_flight(KEY), f"node-a|{dead}|abc.0", px=60_000)  # its claim
    direct.set(keys.in_flight(other), f"node-a|{os.getpid()}|abc.1", px=60_000)  # not its
    store = LmdbStore(path, 8 << 20)  # the main process's one handle
    settings = Settings(redis_url=url, node_id="node-a", redis_timeout_ms=3000)

    async def main() -> int:
        agent = NodeAgent(settings, ClusterState.private(), clock=FakeClock())
        sync = DeadWorkers(settings, lambda: store)
        agent.add(sync)
        await agent.round()
        await agent.close()
        return sync.released

    assert run(main()) == 1
    assert store.flight_owner(KEY) is None and store.flight_owner(other) is None
    assert direct.get(keys.in_flight(KEY)) is None  # waiters on every node go on
    assert direct.get(keys.in_flight(other)) is not None  # another process's claim stays
    store.close()


# -- without Redis -----------------------------------------------------------------------


def test_without_redis_the_cache_is_its_first_tier_and_answers_go_on(tmp_path: Path) -> None:
    nowhere = f"redis://127.0.0.1:{NOWHERE_PORT}"  # nothing listens there
    provider = Provider(latency_s=0.01)

    async def main() -> None:
        a = node(nowhere, tmp_path, "node-a", redis_timeout_ms=100)
        started = time.monotonic()
        assert await a.tier.find(KEY, deadline()) is None
        one = request()
        result = await a.dedup.run(KEY, one, lambda gate: provider.fetch(one, gate), deadline())
        assert await text_of(result) == "shared"
        assert time.monotonic() - started < 2.0
        assert a.cache.store.get(KEY) is not None  # the first tier kept it

    run(main())
    assert provider.calls == 1
