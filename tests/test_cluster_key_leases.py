"""Tenant keys' rates for the whole cluster: each node's agent leases a key's requests
and tokens a minute from a global bucket in Redis, beside the providers' limits and in
the same script call; a round carries only the keys with recent demand; an idle node
keeps a small standing lease; with Redis gone a node runs its part of the key's minute
(``REDIS_LIMITS_ON_FAILURE=open``) or refuses (``closed``).

In-process: node agents as nodes, each with its own key slots (as in the node's shared
memory) over one key store, against real ``redis-server``\\ s (a single one, and a
cluster of three masters where it matters).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from aigateway.cluster.agent import NodeAgent
from aigateway.cluster.key_leases import KeyLeases
from aigateway.cluster.lease_board import LeaseBoard
from aigateway.cluster.leases import LeaseSync
from aigateway.cluster.state import ClusterState
from aigateway.config import Settings
from aigateway.errors import GatewayError
from aigateway.hotpath import TokenBucket
from aigateway.keys.gate import KeyGate
from aigateway.keys.model import TenantKey
from aigateway.keys.ring import KeyRing
from aigateway.keys.slots import ALONE, CLOSED, LEASED, KeySlot, KeySlots
from aigateway.keys.spend import SpendLog
from aigateway.keys.store import SqliteKeyStore
from aigateway.wire import ApiRequest
from redis_servers import RedisServer

SLOTS = 512


class Node:
    """One node: its agent leasing one provider's rate and the keys' rates into its slots."""

    def __init__(self, url: str, node_id: str, directory: str, *, fail_open: bool = True) -> None:
        settings = Settings(redis_url=url, node_id=node_id, redis_timeout_ms=300)
        self.agent = NodeAgent(settings, ClusterState.private())
        self.slots = KeySlots.private(SLOTS)
        self.slots.lease_from_cluster()
        self.store = SqliteKeyStore(directory, slots=SLOTS)
        self.ring = KeyRing(self.store, self.slots)
        self.leases = LeaseSync(
            {"openai": TokenBucket(10.0, 10.0)},
            LeaseBoard.private(["openai"]),
            limits=lambda: {"openai": 10.0},
            demand=lambda: {"openai": (0, 0)},
            nodes=lambda: self.agent.membership.nodes,
            fail_open=fail_open,
            keys=KeyLeases(directory, KeySlots(self.slots._view, None)),
        )
        self.agent.add(self.leases)

    def slot(self, key: TenantKey) -> KeySlot:
        found = self.ring.get(key.id)
        if found is None:  # in a running loop the ring reads in a task of its own: read now
            self.ring.reload()
            found = self.ring.get(key.id)
        assert found is not None
        return found

    async def rounds(self, count: int) -> None:
        for _ in range(count):
            await self.agent.round()
            await asyncio.sleep(0.11)  # one tick of the agent: every round is due

    async def close(self) -> None:
        await self.agent.close()
        self.store.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


def make_keys(directory: Path, *fields: dict[str, object]) -> list[TenantKey]:
    store = SqliteKeyStore(str(directory), slots=SLOTS)
    try:
        return [store.create(each)[0] for each in fields]
    finally:
        store.close()


def test_an_idle_node_keeps_a_standing_lease_of_a_tenth_of_its_share_in_whole_requests(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    big, small, huge = make_keys(
        tmp_path,
        {"name": "big", "rpm": 600},
        {"name": "small", "rpm": 5},
        {"name": "huge", "tpm": 100_000_000},  # a bucket of 1e8 tokens refills at 1 a second
    )

    async def main() -> tuple[float, float, float]:
        a, b = Node(own_redis.url, "a", str(tmp_path)), Node(own_redis.url, "b", str(tmp_path))
        await b.rounds(1)
        await a.rounds(6)  # a's heartbeat sees both nodes before its first lease
        held = (
            a.slot(big).rpm.available(),
            a.slot(small).rpm.available(),
            a.slot(huge).tpm.available(),
        )
        await a.close()
        await b.close()
        return held

    big_held, small_held, huge_held = asyncio.run(main())
    assert math.floor(big_held) == 30  # a tenth of 300, its even share of 600
    assert small_held < 1.0  # a tenth of 2.5 is no whole request: none held idle
    assert math.floor(huge_held) == 5_000_000


def test_a_round_carries_only_the_keys_with_recent_demand(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path, *({"name": f"k{n}", "rpm": 60} for n in range(40)))

    async def main() -> list[int]:
        a = Node(own_redis.url, "a", str(tmp_path))
        await a.rounds(6)  # every key's first round, then its standing lease
        asked = []
        for key in keys[:3]:  # three keys get requests, the other 37 none
            slot = a.slot(key)
            assert slot.rpm.try_acquire(1.0) == 0.0
        await asyncio.sleep(0.55)  # the next full round (they come every 0.5 s) is due
        await a.agent.round()
        asked.append(a.leases.asked)
        await a.rounds(6)
        await asyncio.sleep(0.55)
        await a.agent.round()
        asked.append(a.leases.asked)
        await a.close()
        return asked

    busy, quiet = asyncio.run(main())
    assert busy == 1 + 3  # the provider's rate and the three busy keys
    assert quiet == 1


def test_a_round_with_hundreds_of_keys_goes_in_calls_of_200(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """A script's time on Redis grows faster than its keys: no call holds it for long."""
    keys = make_keys(tmp_path, *({"name": f"k{n}", "rpm": 60} for n in range(450)))

    async def main() -> tuple[int, int, list[float]]:
        a = Node(own_redis.url, "a", str(tmp_path))
        await a.rounds(1)  # every key's first round: its standing lease
        seen = a.leases.asked, a.leases.calls, [a.slot(key).rpm.available() for key in keys]
        await a.close()
        return seen

    asked, calls, held = asyncio.run(main())
    assert (asked, calls) == (1 + 450, 3)
    assert all(math.floor(level) == 6 for level in held)  # a tenth of 60, one node


def test_a_request_on_a_node_without_a_lease_waits_for_one_and_the_sixth_is_refused(
    each_redis: str, tmp_path: Path
) -> None:
    """On a single Redis and on a Redis Cluster (the keys' state shares the coordination
    hash tag: one script call per round)."""
    (key,) = make_keys(tmp_path, {"name": "five", "rpm": 5})

    async def main() -> list[float]:
        a, b = Node(each_redis, "a", str(tmp_path)), Node(each_redis, "b", str(tmp_path))
        stop = asyncio.Event()
        runs = [asyncio.create_task(node.agent.run(stop)) for node in (a, b)]
        await asyncio.sleep(0.5)
        slot = b.slot(key)
        waits = []
        for _ in range(6):
            wait = slot.rpm.try_acquire(1.0)
            waits.append(wait if wait == 0.0 else await slot.lease(False, 1.0))
        stop.set()
        await asyncio.gather(*runs)
        a.store.close()
        b.store.close()
        return waits

    waits = asyncio.run(main())
    assert waits[:5] == [0.0] * 5
    assert waits[5] == math.inf  # a lease call that saw it came back without one


@pytest.mark.parametrize("fail_open", [True, False], ids=["open", "closed"])
def test_with_redis_gone_a_node_runs_its_part_of_a_keys_minute_or_refuses(
    own_redis: RedisServer, tmp_path: Path, fail_open: bool
) -> None:
    (key,) = make_keys(tmp_path, {"name": "k", "rpm": 120})

    async def main() -> tuple[int, float, float, GatewayError | None]:
        a = Node(own_redis.url, "a", str(tmp_path), fail_open=fail_open)
        b = Node(own_redis.url, "b", str(tmp_path))
        await b.rounds(1)
        await a.rounds(2)  # a's heartbeat sees both nodes
        assert a.slot(key).mode == LEASED
        own_redis.kill()
        for _ in range(50):  # until failed calls open the guard (two in a row)
            await a.rounds(1)
            if not a.agent.guard.up:
                break
        slot = a.slot(key)
        refused = None
        if not fail_open:
            gate = KeyGate(a.ring, SpendLog(a.store, 1.0))
            request = ApiRequest("chat", "m", {"messages": []}, b"", tenant=key.id)
            try:
                gate.admit(request)
            except GatewayError as exc:
                refused = exc
        seen = slot.mode, slot.rpm.rate_per_s, slot.rpm.burst, refused
        await a.close()
        await b.close()
        return seen

    mode, rate, burst, refused = asyncio.run(main())
    if fail_open:
        assert mode == ALONE
        assert rate == pytest.approx(120 / 60 / 2)  # its part: the limit / the nodes seen
        assert burst == pytest.approx(60.0)  # a minute of it
    else:
        assert mode == CLOSED
        assert refused is not None and refused.status == 503
        assert refused.code == "limits_unavailable"


def test_a_calls_tokens_wait_for_their_lease_and_past_the_minute_are_refused(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """``tpm`` as ``rpm``: a provider call's estimated tokens are leased to the node it
    reaches; once the key's minute is spent, 429 ``key_rate_limited`` with Retry-After."""
    (key,) = make_keys(tmp_path, {"name": "tokens", "tpm": 600})

    async def main() -> tuple[list[str], GatewayError | None]:
        a, b = Node(own_redis.url, "a", str(tmp_path)), Node(own_redis.url, "b", str(tmp_path))
        stop = asyncio.Event()
        runs = [asyncio.create_task(node.agent.run(stop)) for node in (a, b)]
        await asyncio.sleep(0.5)
        gate = KeyGate(b.ring, SpendLog(b.store, 60.0))
        await b.ring.refresh()  # the keys, read in a task as a worker reads them
        body = {"messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 100}
        request = ApiRequest("chat", "m", body, b"", tenant=key.id)  # 110 tokens
        how, refused = [], None
        for _ in range(6):
            held = gate.reserve(request, "m")
            assert held is not None
            try:
                if held.pending is not None:
                    how.append("leased")
                    held = await held.lease()
                else:
                    how.append("held")
            except GatewayError as exc:
                refused = exc
                break
            held.settle(110)
        stop.set()
        await asyncio.gather(*runs)
        a.store.close()
        b.store.close()
        return how, refused

    how, refused = asyncio.run(main())
    assert how[0] == "leased"  # node b held none of the key's minute: it waited for it
    assert len(how) == 6  # five calls of 110 served (550 of 600), the sixth refused
    assert refused is not None and refused.status == 429
    assert refused.code == "key_rate_limited"
    assert refused.retry_after_s is not None and 1.0 <= refused.retry_after_s <= 60.0
