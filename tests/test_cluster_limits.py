"""A provider's rate limit holds for the whole cluster, and when Redis is gone each node
falls back as configured.

Real processes: two gateway nodes of two workers each on one ``redis-server`` of the
test's own, and the mock provider, which records when each call arrived.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from redis_servers import RedisServer, start_nodes, stop_nodes
from servers import Gateway, MockProvider, chat_body, wait_for

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


def cluster(node: Gateway) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(node.url + "/health", timeout=10).json()
    return body.get("cluster", {})


def metric(node: Gateway, name: str) -> float | None:
    for line in httpx.get(node.url + "/metrics", timeout=10).text.splitlines():
        ours = line.startswith(name + " ") or line.startswith(name + '{provider="openai"}')
        if ours:
            return float(line.rsplit(" ", 1)[1])
    return None


async def send_all(nodes: list[Gateway], count: int, per_second: float) -> Counter[int]:
    """``count`` different requests, spread over the nodes, sent at ``per_second``; each
    may wait for admission at most half of its 3 s deadline."""
    statuses: Counter[int] = Counter()
    headers = {"x-aigateway-timeout-ms": "3000"}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)

    async def one(client: httpx.AsyncClient, n: int) -> None:
        await asyncio.sleep(n / per_second)
        node = nodes[n % len(nodes)]
        answer = await client.post(node.url + CHAT, json=chat_body(f"request {n}"), headers=headers)
        statuses[answer.status_code] += 1

    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await asyncio.gather(*(one(client, n) for n in range(count)))
    return statuses


def test_two_nodes_hold_the_provider_to_its_limit_together(
    redis: RedisServer, mock: MockProvider
) -> None:
    nodes = start_nodes(mock, redis.url, OPENAI_RPS="20")
    try:
        assert wait_for(lambda: all(cluster(n).get("nodes") == 2 for n in nodes))
        mock.reset()
        started = time.time()
        statuses = asyncio.run(send_all(nodes, 600, per_second=60))
        took = time.time() - started
        times = sorted(mock.stats()["call_times"])
        shares = [metric(n, "aigateway_limit_share") for n in nodes]
        calls = [metric(n, "aigateway_limit_lease_calls_total") for n in nodes]
    finally:
        stop_nodes(nodes)
    assert sum(statuses.values()) == 600
    assert set(statuses) <= {200, 504}, statuses  # served, or refused at once: too late
    first = times[0]
    per_second = Counter(int(t - first) for t in times)
    # The cluster was idle, so its global bucket starts full: that burst (GLOBAL_BURST_S of
    # the limit) is spent in the first two seconds, as a single node's bucket would spend
    # its own. Each second after those: the limit (a call more, now and then, from a node
    # bucket's one spare token: any token bucket with a burst does that in fixed bins).
    steady = {second: n for second, n in per_second.items() if second >= 2}
    assert len(steady) >= 3 and max(steady.values()) <= 21, per_second
    # From the first call on: the limit, plus at most one second's burst, at every moment.
    for seen, at in enumerate(times, start=1):
        assert seen <= 20 * (at - first) + 20, per_second
    assert len(times) >= 20 * took * 0.6, (len(times), took)  # and the limit was used
    assert all(share is not None and 0 < share <= 20 for share in shares), shares
    # A few Redis calls a second per node for limits, not one per request:
    assert all(c is not None and c <= 4 * (took + 10) for c in calls), (calls, took)


def test_with_redis_gone_an_open_node_takes_its_part_and_a_closed_one_refuses(
    redis: RedisServer, mock: MockProvider
) -> None:
    # A generous timeout: a loaded test machine must not look like a Redis outage.
    env = {"REDIS_URL": redis.url, "OPENAI_RPS": "20", "REDIS_TIMEOUT_MS": "1000"}
    open_node = Gateway(mock, AI_GATEWAY_NODE_ID="node-open", **env)
    try:
        closed_node = Gateway(
            mock, AI_GATEWAY_NODE_ID="node-closed", REDIS_LIMITS_ON_FAILURE="closed", **env
        )
    except BaseException:
        open_node.stop()
        raise
    nodes = [open_node, closed_node]
    try:
        assert wait_for(lambda: all(cluster(n).get("nodes") == 2 for n in nodes))
        redis.kill()
        assert wait_for(lambda: all(cluster(n).get("redis") == "down" for n in nodes))
        assert wait_for(lambda: metric(open_node, "aigateway_limit_share") == 10.0)
        with open_node.client() as client:
            assert client.post(CHAT, json=chat_body("open")).status_code == 200
        with closed_node.client() as client:
            refused = client.post(CHAT, json=chat_body("closed"))
        assert refused.status_code == 503, refused.text
        error = refused.json()["error"]
        assert error["code"] == "limits_unavailable" and "Redis" in error["message"]
        assert error["type"] == "provider_unavailable"
        assert metric(closed_node, "aigateway_limit_share") == 0.0

        redis.start()
        assert wait_for(lambda: all(cluster(n).get("redis") == "up" for n in nodes))

        def served() -> bool:
            with closed_node.client() as client:
                return client.post(CHAT, json=chat_body("back")).status_code == 200

        assert wait_for(served)  # rejoined by itself
    finally:
        stop_nodes(nodes)
    for node in nodes:
        log = node.log()
        assert log.count("Redis is unavailable") == 1, log  # said once, by the agent
        assert "Traceback" not in log, log
