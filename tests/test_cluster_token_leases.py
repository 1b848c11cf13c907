"""A provider's tokens per minute (``<PROVIDER>_TPM``) hold for every node sharing the
Redis: each node's agent leases tokens of a second global bucket per provider, in the
same script call as the requests of its ``<PROVIDER>_RPS``, into the node's token bucket.

In-process: node agents as nodes, each with its buckets (as in the node's shared memory),
against real ``redis-server``\\ s (a single one and a cluster of three masters), on an
injected local clock (Redis's own clock runs as it does).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from aigateway.cluster.agent import NodeAgent
from aigateway.cluster.keys import Keys
from aigateway.cluster.lease_board import LeaseBoard
from aigateway.cluster.leases import LEASE_S, SLACK_S, TOKEN_BURST_S, LeaseSync, token_lease
from aigateway.cluster.state import ClusterState
from aigateway.config import Settings
from aigateway.core.token_budget import token_bucket_spec
from aigateway.hotpath import TokenBucket
from redis_servers import RedisServer

TOKENS = token_lease("openai")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Node:
    """One node: its agent, its rate and token buckets, its demand in tokens."""

    def __init__(
        self, url: str, node_id: str, tpm: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock
        self.tpm = tpm
        self.reserved = 0  # tokens reserved in total (the admission counter)
        self.waiting = 0  # tokens the waiting requests reserve
        settings = Settings(redis_url=url, node_id=node_id, redis_timeout_ms=300)
        self.agent = NodeAgent(settings, ClusterState.private(), clock=clock)
        self.rate = TokenBucket(1000.0, 1000.0)
        self.tokens = TokenBucket(*token_bucket_spec(tpm))  # as the node's segment starts it
        self.leases = LeaseSync(
            {"openai": self.rate, TOKENS: self.tokens},
            LeaseBoard.private(["openai"]),
            limits=lambda: {"openai": 1000.0, TOKENS: self.tpm / 60.0},
            demand=lambda: {"openai": (0, 0), TOKENS: (self.reserved, self.waiting)},
            nodes=lambda: self.agent.membership.nodes,
            clock=clock,
            tokens=[TOKENS],
        )
        self.agent.add(self.leases)

    def spend_all(self) -> int:
        """Every whole token the token bucket has now (requests that never stop)."""
        now = self.clock()
        have = int(self.tokens.available(now=now))
        if have and self.tokens.try_acquire(float(have), now=now) == 0.0:
            self.reserved += have
            return have
        return 0

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


def test_a_node_starts_with_no_token_it_has_not_leased(url: str) -> None:
    clock = FakeClock()

    async def main() -> float:
        node = Node(url, "a", 600.0, clock=clock)
        level = node.tokens.available(now=clock())
        await node.close()
        return level

    assert asyncio.run(main()) == 0.0  # not the full minute its segment started with


def test_two_busy_nodes_spend_at_most_the_burst_and_the_rate_together(url: str) -> None:
    tpm, seconds = 600.0, 3.0  # 10 tokens a second, a burst of 600
    clock = FakeClock()

    async def main() -> tuple[int, int]:
        a, b = Node(url, "a", tpm, clock=clock), Node(url, "b", tpm, clock=clock)
        a.waiting = b.waiting = 2000  # more than the whole burst waits on each
        spent = {"a": 0, "b": 0}
        started = time.monotonic()
        while time.monotonic() - started < seconds:  # Redis's clock is the real one
            for name, node in (("a", a), ("b", b)):
                await node.agent.round()
                clock.now = 1000.0 + time.monotonic() - started
                spent[name] += node.spend_all()
            await asyncio.sleep(0.02)
        await a.close()
        await b.close()
        return spent["a"], spent["b"]

    on_a, on_b = asyncio.run(main())
    total = on_a + on_b
    burst, rate = tpm / 60.0 * TOKEN_BURST_S, tpm / 60.0
    # The burst, and the rate over the run and a lease ahead:
    assert total <= burst + rate * (seconds + LEASE_S + SLACK_S) + 2, (on_a, on_b)
    assert total >= 0.9 * burst, (on_a, on_b)  # and the burst was there to be used
    assert on_a > 0 and on_b > 0, (on_a, on_b)  # the rate after it is shared


def test_a_request_larger_than_a_round_of_tokens_is_granted_whole(url: str) -> None:
    clock = FakeClock()

    async def main() -> tuple[float, float, float]:
        node = Node(url, "a", 6000.0, clock=clock)  # 100 tokens a second, a burst of 6000
        node.waiting = 3000  # one request of 3000 tokens: thirty seconds of the rate
        await node.agent.round()
        clock.now += LEASE_S + SLACK_S  # the bucket spends what was paid, over a lease
        level = node.tokens.available(now=clock())
        burst = node.tokens.burst
        node.waiting = 0
        await node.agent.round()  # what the bucket holds is not asked for again
        clock.now += LEASE_S + SLACK_S
        after = node.tokens.available(now=clock())
        await node.close()
        return level, burst, after

    level, burst, after = asyncio.run(main())
    assert burst == 6000.0  # a whole request must fit in the node's bucket
    assert level >= 3000.0 - 1  # granted at once from the global burst
    assert after <= level + 100 * (LEASE_S + SLACK_S) + 1  # an idle share at most on top


def test_the_token_lease_rides_in_the_same_call_in_format_1(url: str) -> None:
    clock = FakeClock()

    async def main() -> tuple[int, dict[bytes, bytes], dict[bytes, bytes]]:
        node = Node(url, "a", 600.0, clock=clock)
        await node.agent.round()
        keys = Keys("aigateway")
        rate_state = await node.agent.redis.hgetall(keys.limit("openai"))
        token_state = await node.agent.redis.hgetall(keys.token_limit("openai"))
        calls = node.leases.board.calls
        await node.close()
        return calls, rate_state, token_state

    calls, rate_state, token_state = asyncio.run(main())
    assert calls == 1  # one script call for both limits
    assert rate_state[b"v"] == b"1" and float(rate_state[b"rate"]) == 1000.0
    assert token_state[b"v"] == b"1" and float(token_state[b"rate"]) == 10.0
    assert b"w:a" in token_state


def test_a_state_written_by_a_node_of_the_previous_version_is_read(url: str) -> None:
    # A node with LEASE_V1 (no token limits) left the provider's global bucket spent for
    # a while ahead, and its want: a node of this version honours both, in format 1.
    clock = FakeClock()

    async def main() -> tuple[float, dict[bytes, bytes]]:
        node = Node(url, "new", 0.0, clock=clock)
        key = Keys("aigateway").limit("openai")
        now_s, now_us = await node.agent.redis.time()
        now = now_s * 1_000_000 + now_us
        await node.agent.redis.hset(
            key,
            mapping={
                "v": "1",
                "rate": "1000",
                "tat": str(now + 5_000_000),  # spent for 5 s ahead
                "w:old": f"900:{now // 1000}",
            },
        )
        await node.agent.round()
        granted = node.leases.leases["openai"].leased
        state = await node.agent.redis.hgetall(key)
        await node.close()
        return granted, state

    granted, state = asyncio.run(main())
    assert granted == 0.0  # nothing left in the global bucket for now
    assert state[b"v"] == b"1" and b"w:old" in state and b"w:new" in state


def test_with_redis_gone_the_token_bucket_takes_the_limit_over_the_live_nodes(
    own_redis: RedisServer,
) -> None:
    clock = FakeClock()

    async def main() -> tuple[float, float]:
        a = Node(own_redis.url, "a", 1200.0, clock=clock)
        b = Node(own_redis.url, "b", 1200.0)
        await a.agent.round()
        await b.agent.round()
        clock.now += 1.0
        await a.agent.round()  # a has seen both nodes
        own_redis.kill()
        for _ in range(3):  # two failed calls open the guard
            clock.now += 1.0
            await a.agent.round()
        rate, burst = a.tokens.rate_per_s, a.tokens.burst
        await a.close()
        await b.close()
        return rate, burst

    rate, burst = asyncio.run(main())
    assert rate == pytest.approx(10.0)  # 1200 a minute, 20 a second, over 2 nodes
    assert burst == pytest.approx(600.0)  # and half the burst
