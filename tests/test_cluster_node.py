"""A gateway node with ``REDIS_URL``: it joins the cluster, says so, and goes on alone
(``degraded``) while Redis is gone, then rejoins by itself.

Real processes: a gateway of two workers, the mock provider and a ``redis-server`` of the
test's own, killed and restarted on the same port.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from redis_servers import RedisServer
from servers import Gateway, MockProvider, chat_body, wait_for

pytestmark = pytest.mark.e2e

# A killed Redis refuses connections at once; a generous timeout keeps a loaded test
# machine from seeing outages that are not there.


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


def health(gateway: Gateway) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(gateway.url + "/health", timeout=10).json()
    return body


def test_a_node_reports_redis_down_serves_alone_and_rejoins(
    redis: RedisServer, mock: MockProvider
) -> None:
    gateway = Gateway(
        mock, REDIS_URL=redis.url, AI_GATEWAY_NODE_ID="node-a", REDIS_TIMEOUT_MS="1000"
    )
    try:
        up = wait_for(lambda: health(gateway).get("cluster", {}).get("redis") == "up")
        assert up, health(gateway)
        body = health(gateway)
        assert body["status"] == "ok" and body["cluster"]["node"] == "node-a"
        assert body["cluster"]["nodes"] == 1
        metrics = httpx.get(gateway.url + "/metrics").text
        assert "aigateway_redis_up 1" in metrics and "aigateway_cluster_nodes 1" in metrics

        redis.kill()
        down = wait_for(lambda: health(gateway)["status"] == "degraded")
        assert down, health(gateway)
        body = health(gateway)
        assert body["cluster"]["redis"] == "down"
        assert body["cluster"]["reason"].startswith("Redis unavailable")
        with gateway.client() as client:  # it serves alone
            assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
        assert "aigateway_redis_up 0" in httpx.get(gateway.url + "/metrics").text

        redis.start()
        assert wait_for(lambda: health(gateway)["status"] == "ok"), health(gateway)
        assert health(gateway)["cluster"]["redis"] == "up"
    finally:
        gateway.stop()
    log = gateway.log()
    assert log.count("Redis is unavailable") == 1, log  # each transition said once
    assert log.count("Redis is back") == 1, log


def test_without_redis_url_health_has_no_cluster(gateway: Gateway) -> None:
    body = health(gateway)
    assert "cluster" not in body and body["status"] == "ok"
    assert "\naigateway_redis_up " not in httpx.get(gateway.url + "/metrics").text  # no sample


def test_redis_killed_mid_load_loses_no_request_and_the_nodes_rejoin(
    redis: RedisServer, mock: MockProvider
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from redis_servers import start_nodes, stop_nodes

    nodes = start_nodes(mock, redis.url, REDIS_TIMEOUT_MS="1000", CACHE_ENABLED="true")
    try:
        assert wait_for(lambda: all(health(n).get("cluster", {}).get("nodes") == 2 for n in nodes))

        def ask(index: int) -> int:
            node = nodes[index % 2]
            body = chat_body(f"mid-load {index % 40}")  # repeats: hits, shared or not
            with httpx.Client(timeout=30) as client:
                response = client.post(node.base_url + "/chat/completions", json=body)
                return response.status_code

        with ThreadPoolExecutor(8) as pool:
            first = pool.map(ask, range(60))
            redis.kill()  # while requests are in flight
            second = list(pool.map(ask, range(60, 120)))
        assert set(first) == {200} and set(second) == {200}
        assert wait_for(lambda: all(health(n)["status"] == "degraded" for n in nodes))

        redis.start()

        def rejoined() -> bool:
            clusters = [health(n)["cluster"] for n in nodes]
            return all(c["redis"] == "up" and c["nodes"] == 2 for c in clusters)

        assert wait_for(rejoined), [health(n) for n in nodes]
    finally:
        stop_nodes(nodes)
