"""Two gateway nodes on one Redis share one cache and make one provider call for identical
requests, whichever node each request reaches.

Real processes: two nodes of two workers each (``start_nodes``) with the cache on and
``CACHE_SCOPE=key``, a ``redis-server`` of this module's own, and the bundled mock
provider, which counts the calls it gets (and is made slow where a test needs requests to
overlap). tests/test_cluster_cache.py shows the same logic in process, against a Redis
Cluster too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from redis_servers import RedisServer, start_nodes, stop_nodes
from servers import Gateway, MockProvider, chat_body, wait_for

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 300  # generous for a busy CI machine; what a frozen Redis may cost a request


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


NODE_ENV = {"CACHE_ENABLED": "true", "CACHE_SCOPE": "key", "REDIS_TIMEOUT_MS": str(TIMEOUT_MS)}


@pytest.fixture(scope="module")
def nodes(redis: RedisServer, mock_provider: MockProvider) -> Iterator[list[Gateway]]:
    started = start_nodes(
        mock_provider, redis.url, CACHE_ENABLED="true", CACHE_SCOPE="key",
        REDIS_TIMEOUT_MS=str(TIMEOUT_MS),
    )  # fmt: skip
    for node in started:
        assert wait_for(redis_up(node))
    yield started
    stop_nodes(started)


def redis_up(node: Gateway) -> Callable[[], bool]:
    return lambda: bool(health(node)["cluster"]["redis"] == "up")


def health(node: Gateway) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(node.url + "/health", timeout=10).json()
    return body


def post(node: Gateway, body: dict[str, Any], key: str = "client-one") -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(node.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def cache_report(node: Gateway) -> dict[str, Any]:
    report: dict[str, Any] = httpx.get(node.url + "/admin/cache", timeout=10).json()
    return report


def metric(node: Gateway, name: str) -> float:
    for line in httpx.get(node.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def together(requests: list[tuple[Gateway, dict[str, Any]]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return list(
            await asyncio.gather(
                *(
                    client.post(node.url + "/v1/chat/completions", json=body)
                    for node, body in requests
                )
            )
        )


def kill_node(node: Gateway) -> None:
    """SIGKILL the node's main process and its workers at once: no goodbye, no cleanup."""
    main = node.process.pid
    children = []
    for listing in Path(f"/proc/{main}/task").glob("*/children"):
        children += [int(pid) for pid in listing.read_text().split()]
    for pid in [main, *children]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    node.process.wait(timeout=10)


def test_an_answer_from_node_a_is_a_hit_on_node_b_with_one_provider_call(
    nodes: list[Gateway], mock: MockProvider
) -> None:
    a, b = nodes
    body = chat_body("shared between nodes")
    first = post(a, body)
    assert first.status_code == 200 and first.headers["x-aigateway-cache"] == "miss"
    second = post(b, body)
    assert second.status_code == 200 and second.headers["x-aigateway-cache"] == "hit"
    assert second.json()["choices"] == first.json()["choices"]
    assert mock.calls() == 1
    assert post(b, body).headers["x-aigateway-cache"] == "hit"  # now from b's own first tier
    assert mock.calls() == 1
    second_tier = "aigateway_cache_second_tier_hits_total"
    assert wait_for(lambda: metric(b, second_tier) >= 1), metric(b, second_tier)


def test_each_client_key_has_its_own_answers_on_every_node(
    nodes: list[Gateway], mock: MockProvider
) -> None:
    a, b = nodes
    body = chat_body("scoped per client key")
    assert post(a, body, "client-one").headers["x-aigateway-cache"] == "miss"
    assert post(b, body, "client-two").headers["x-aigateway-cache"] == "miss"  # not shared
    assert mock.calls() == 2
    assert post(b, body, "client-one").headers["x-aigateway-cache"] == "hit"
    assert post(a, body, "client-two").headers["x-aigateway-cache"] == "hit"
    assert mock.calls() == 2


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_ten_identical_requests_split_over_two_nodes_make_one_provider_call(
    nodes: list[Gateway], mock: MockProvider, stream: bool
) -> None:
    mock.faults(default={"latency_ms": 600})  # long enough for all ten to overlap
    body = chat_body(f"ten at once, stream={stream}", stream=stream)
    answers = asyncio.run(together([(nodes[i % 2], body) for i in range(10)]))
    assert [r.status_code for r in answers] == [200] * 10
    assert mock.calls() == 1
    if stream:
        texts = {
            r.text.count("data: ") > 2 and r.text.endswith("data: [DONE]\n\n") for r in answers
        }
        assert texts == {True}  # every one a whole stream (replayed where it waited)
    else:
        assert len({r.json()["choices"][0]["message"]["content"] for r in answers}) == 1


def test_delete_admin_cache_on_one_node_empties_every_node(
    nodes: list[Gateway], mock: MockProvider
) -> None:
    a, b = nodes
    body = chat_body("cleared everywhere")
    post(a, body)
    assert post(b, body).headers["x-aigateway-cache"] == "hit"  # b keeps it in its first tier
    assert wait_for(lambda: cache_report(b)["entries"] >= 1)
    cleared = httpx.delete(a.url + "/admin/cache", timeout=30)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["shared_cleared"] >= 1 and cleared.json()["generation"] >= 1
    assert wait_for(lambda: cache_report(b)["entries"] == 0, 5.0), cache_report(b)
    assert post(b, body).headers["x-aigateway-cache"] == "miss"
    assert mock.calls() == 2


def test_a_node_killed_while_it_leads_does_not_strand_its_followers_on_another_node(
    nodes: list[Gateway], redis: RedisServer, mock_provider: MockProvider, mock: MockProvider
) -> None:
    b = nodes[1]
    c = Gateway(mock_provider, REDIS_URL=redis.url, AI_GATEWAY_NODE_ID="node-c", **NODE_ENV)
    try:
        assert wait_for(redis_up(c))
        mock.faults({"latency_ms": 20_000})  # c's call: it will never answer
        body = chat_body("led by a node about to die")
        leader = threading.Thread(target=lambda: _quietly(lambda: post(c, body)), daemon=True)
        leader.start()
        client = redis.client()
        assert wait_for(lambda: client.keys("aigw:aigateway:f:*"), 10.0)  # c claimed the call
        answers: list[httpx.Response] = []
        follower = threading.Thread(target=lambda: answers.append(post(b, body)))
        follower.start()
        time.sleep(0.5)  # b waits for c's answer
        assert not answers
        kill_node(c)
        killed = time.monotonic()
        follower.join(15)
        assert answers and answers[0].status_code == 200, answers
        # c's heartbeat expires within 3 s; then b took the claim over and called itself
        assert time.monotonic() - killed < 10.0
        assert mock.calls() == 2
    finally:
        c.stop()


def test_a_worker_killed_while_it_leads_does_not_strand_its_followers_on_either_node(
    nodes: list[Gateway], redis: RedisServer, mock: MockProvider
) -> None:
    # The worker dies, its node lives (and beats): its agent sees the worker gone and
    # releases the claim at once, where it would otherwise last the leader's deadline.
    a, b = nodes
    mock.faults({"latency_ms": 20_000})  # the leader's call: it will never answer
    body = chat_body("led by a worker about to die")
    leader = threading.Thread(target=lambda: _quietly(lambda: post(a, body)), daemon=True)
    leader.start()
    client = redis.client()
    assert wait_for(lambda: client.keys("aigw:aigateway:f:*"), 10.0)  # a's worker claimed
    claim = client.keys("aigw:aigateway:f:*")[0]
    node, pid, _ = client.get(claim).decode().split("|")
    assert node == "node-a"
    answers: dict[str, httpx.Response] = {}
    on_b = threading.Thread(target=lambda: answers.__setitem__("b", post(b, body)))
    on_b.start()
    time.sleep(0.5)  # b waits for a's answer
    assert not answers
    left_s = client.pttl(claim) / 1000  # the claim's life: the leader's deadline (10 s here)
    os.kill(int(pid), signal.SIGKILL)
    killed = time.monotonic()
    on_b.join(15)  # nothing else happens on a: its agent alone can free b's follower
    assert "b" in answers and answers["b"].status_code == 200, answers
    took = time.monotonic() - killed
    assert left_s > 6.0 and took < 4.0, (left_s, took)  # well before the claim would end
    again = post(a, body)  # on a's other worker (or the one that replaced it)
    assert again.status_code == 200 and again.headers["x-aigateway-cache"] == "hit"
    assert mock.calls() == 2  # the dead leader's, and b's


def test_a_frozen_redis_never_holds_a_request_past_its_timeout(
    nodes: list[Gateway], redis: RedisServer, mock: MockProvider
) -> None:
    redis.freeze()
    try:
        for i, node in enumerate(nodes * 2):
            started = time.monotonic()
            answer = post(node, chat_body(f"while Redis is frozen {i}"))
            assert answer.status_code == 200
            assert time.monotonic() - started < 2.0  # the Redis timeout, not Redis, bounds it
        started = time.monotonic()
        assert (
            post(nodes[0], chat_body("while Redis is frozen 0")).headers["x-aigateway-cache"]
            == "hit"
        )  # the first tier still serves
        assert time.monotonic() - started < 2.0
    finally:
        redis.thaw()
    for node in nodes:  # and they rejoin by themselves
        assert wait_for(redis_up(node)), health(node)


def _quietly(call: Callable[[], Any]) -> None:
    with contextlib.suppress(httpx.HTTPError):  # its node was killed under it
        call()
