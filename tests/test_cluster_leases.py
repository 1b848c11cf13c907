"""A provider's limit holds for every node sharing the Redis: each node's agent leases
slices of a global bucket into the node's own bucket, so no request waits on Redis.

In-process: two node agents as two nodes, each with a bucket of its own (as in the
node's shared memory), against real ``redis-server``\\ s (a single one and a cluster of
three masters). Redis's clock is real, so the tests that spend tokens run for a second
or two of real time; the others drive rounds on an injected local clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from aigateway.cluster.agent import NodeAgent
from aigateway.cluster.keys import Keys
from aigateway.cluster.lease_board import LeaseBoard
from aigateway.cluster.leases import GLOBAL_BURST_S, IDLE_SHARE, LEASE_S, LeaseSync
from aigateway.cluster.state import ClusterState
from aigateway.config import Settings
from aigateway.core.admission import Admission
from aigateway.errors import Fault, ProviderUnavailable
from aigateway.hotpath import TokenBucket
from redis_servers import RedisServer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Node:
    """One node: its agent (heartbeat and leases), its bucket, its demand, its board."""

    def __init__(
        self,
        url: str,
        node_id: str,
        limit: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        closed: bool = False,
    ) -> None:
        self.clock = clock
        self.limit = limit
        self.admitted = 0
        self.waiting = 0
        settings = Settings(
            redis_url=url,
            node_id=node_id,
            redis_timeout_ms=300,
            redis_limits_on_failure="closed" if closed else "open",
        )
        self.agent = NodeAgent(settings, ClusterState.private(), clock=clock)
        self.bucket = TokenBucket(limit, max(1.0, limit))  # as the node's segment starts it
        self.board = LeaseBoard.private(["openai"])
        self.leases = LeaseSync(
            {"openai": self.bucket},
            self.board,
            limits=lambda: {"openai": self.limit},
            demand=lambda: {"openai": (self.admitted, self.waiting)},
            nodes=lambda: self.agent.membership.nodes,
            fail_open=not closed,
            clock=clock,
        )
        self.agent.add(self.leases)

    def take_all(self) -> int:
        """Every token the bucket has now (a node whose requests never stop)."""
        taken = 0
        while self.bucket.try_acquire(1.0, now=self.clock()) == 0.0:
            taken += 1
        self.admitted += taken
        return taken

    async def close(self) -> None:
        await self.agent.close()


@pytest.fixture
def url(each_redis: str) -> str:
    """A Redis of the tests' own, emptied: a single server, then a three-master cluster."""
    return each_redis


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


def test_two_busy_nodes_share_the_limit_and_never_exceed_it(url: str) -> None:
    limit, seconds = 100.0, 2.0

    async def main() -> tuple[int, int]:
        a, b = Node(url, "a", limit), Node(url, "b", limit)
        a.waiting = b.waiting = 50  # both always have requests waiting
        taken = {"a": 0, "b": 0}
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            for name, node in (("a", a), ("b", b)):
                await node.agent.round()
                taken[name] += node.take_all()
            await asyncio.sleep(0.01)
        await a.close()
        await b.close()
        return taken["a"], taken["b"]

    on_a, on_b = asyncio.run(main())
    total = on_a + on_b
    # The limit over the run, the global bucket's burst and each node's first token:
    assert total <= limit * seconds + limit * GLOBAL_BURST_S + 2 + 5, (on_a, on_b)
    assert total >= limit * seconds * 0.6, (on_a, on_b)  # and most of it was used
    assert 0.25 < on_a / total < 0.75, (on_a, on_b)  # shared, neither starved


def test_an_idle_node_keeps_a_small_standing_lease_and_a_busy_one_grows(url: str) -> None:
    clock = FakeClock()

    async def main() -> tuple[float, float, int]:
        node = Node(url, "a", 100.0, clock=clock)
        await node.agent.round()
        idle = node.bucket.rate_per_s
        clock.now += LEASE_S
        node.waiting = 40  # requests waiting: it asks for them, with headroom
        await node.agent.round()
        busy = node.bucket.rate_per_s
        calls = node.board.calls
        await node.close()
        return idle, busy, calls

    idle, busy, calls = asyncio.run(main())
    assert idle == pytest.approx(IDLE_SHARE * 100.0, rel=0.01)  # a tenth of its even share
    assert busy == pytest.approx(60.0, rel=0.01)  # 40 waiting, half as much again
    assert calls == 2  # one script a round, whatever the number of providers


def test_the_lease_state_is_versioned_rescaled_on_a_new_limit_and_one_slot(url: str) -> None:
    clock = FakeClock()

    async def main() -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
        node = Node(url, "a", 100.0, clock=clock)
        await node.agent.round()
        key = Keys("aigateway").limit("openai")
        before = await node.agent.redis.hgetall(key)
        node.limit = 40.0  # PUT /admin/config on this node, say
        clock.now += LEASE_S
        await node.agent.round()
        after = await node.agent.redis.hgetall(key)
        await node.close()
        return before, after

    before, after = asyncio.run(main())
    assert before[b"v"] == b"1" and float(before[b"rate"]) == 100.0
    assert float(after[b"rate"]) == 40.0  # the global bucket follows the live limit
    assert b"w:a" in after  # each node's want, beside the bucket


def test_a_newer_format_is_left_alone_and_the_node_limits_by_itself(url: str) -> None:
    clock = FakeClock()

    async def main() -> tuple[str, float, dict[bytes, bytes]]:
        node = Node(url, "a", 100.0, clock=clock)
        key = Keys("aigateway").limit("openai")
        await node.agent.redis.hset(key, mapping={"v": "2", "shape": "new"})
        await node.agent.round()
        row = node.board.row("openai")
        state = await node.agent.redis.hgetall(key)
        await node.close()
        assert row is not None
        return row.mode, node.bucket.rate_per_s, state

    mode, rate, state = asyncio.run(main())
    assert mode == "alone" and rate == 100.0  # one live node: the whole limit
    assert state == {b"v": b"2", b"shape": b"new"}  # not misread, not overwritten


def test_with_redis_gone_each_node_takes_the_limit_over_the_live_nodes(
    own_redis: RedisServer,
) -> None:
    clock = FakeClock()

    async def main() -> list[tuple[str, float]]:
        a, b = Node(own_redis.url, "a", 60.0, clock=clock), Node(own_redis.url, "b", 60.0)
        await a.agent.round()
        await b.agent.round()
        clock.now += 1.0
        await a.agent.round()  # now a has seen both nodes
        seen = []
        own_redis.kill()
        for _ in range(3):  # two failed calls open the guard
            clock.now += 1.0
            await a.agent.round()
        row = a.board.row("openai")
        assert row is not None
        seen.append((row.mode, a.bucket.rate_per_s))
        a.limit = 90.0  # a live change while alone still applies
        clock.now += 1.0
        await a.agent.round()
        seen.append(("alone", a.bucket.rate_per_s))
        own_redis.start()
        clock.now += 6.0  # past the guard's cool-down: the next call probes, and rejoins
        await a.agent.round()
        row = a.board.row("openai")
        assert row is not None
        seen.append((row.mode, a.bucket.rate_per_s))
        await a.close()
        await b.close()
        return seen

    (down, rate), (_, changed), (back, _) = asyncio.run(main())
    assert down == "alone" and rate == 30.0  # 60/s over the 2 nodes last seen
    assert changed == 45.0
    assert back == "leased"


def test_with_limits_failing_closed_calls_are_refused_until_redis_returns(
    own_redis: RedisServer,
) -> None:
    clock = FakeClock()

    async def main() -> tuple[BaseException | None, bool, bool]:
        node = Node(own_redis.url, "a", 60.0, clock=clock, closed=True)
        admission = Admission(
            {"openai": (node.bucket, TokenBucket(1000.0, 1000.0))}, {"openai": 60.0}, 100
        )
        admission.closed = node.board.closed
        await node.agent.round()
        own_redis.kill()
        for _ in range(3):
            clock.now += 1.0
            await node.agent.round()
        refused: BaseException | None = None
        try:
            deadline = asyncio.get_running_loop().time() + 30.0
            await admission.admit("openai", "normal", deadline)
        except ProviderUnavailable as exc:
            refused = exc
        closed = node.board.closed("openai")
        own_redis.start()
        clock.now += 6.0
        await node.agent.round()
        reopened = not node.board.closed("openai")
        await node.close()
        return refused, closed, reopened

    refused, closed, reopened = asyncio.run(main())
    assert closed and reopened
    assert isinstance(refused, ProviderUnavailable) and refused.status == 503
    assert refused.code == "limits_unavailable" and "REDIS_LIMITS_ON_FAILURE" in refused.message
    assert refused.fault is Fault.RATE_LIMITED  # not held against the provider's health
