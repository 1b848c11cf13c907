"""A provider's tokens-per-minute limit (``<PROVIDER>_TPM``) holds against the tokens the
provider itself reports, on one node and on two nodes sharing a Redis.

Real processes: gateways of two workers each in front of the mock provider, whose
``usage`` fault makes every answer report 100 tokens; it records when each call arrived.
With ``OPENAI_TPM=3000`` (50 tokens a second, a burst of one minute's 3000), from the
first call on the provider never sees more tokens than the burst plus the rate since,
which bounds every minute to the limit plus the burst.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from redis_servers import RedisServer, start_nodes, stop_nodes
from servers import Gateway, MockProvider, chat_body

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
TPM = 3000
USAGE = {"prompt_tokens": 20, "completion_tokens": 80, "total_tokens": 100}


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


def metric(node: Gateway, name: str) -> float:
    for line in httpx.get(node.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + '{provider="openai"}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def send_all(nodes: list[Gateway], count: int, per_second: float) -> Counter[int]:
    """``count`` requests of ``max_tokens=100`` (an estimate of about 103 tokens) spread
    over the nodes; each may wait for admission at most half of its 3 s deadline."""
    statuses: Counter[int] = Counter()
    headers = {"x-aigateway-timeout-ms": "3000"}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)

    async def one(client: httpx.AsyncClient, n: int) -> None:
        await asyncio.sleep(n / per_second)
        node = nodes[n % len(nodes)]
        body = chat_body(f"request {n}", max_tokens=100)
        answer = await client.post(node.url + CHAT, json=body, headers=headers)
        statuses[answer.status_code] += 1

    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await asyncio.gather(*(one(client, n) for n in range(count)))
    return statuses


def check_within_the_limit(times: list[float], statuses: Counter[int], sent: int) -> None:
    assert sum(statuses.values()) == sent
    assert set(statuses) <= {200, 504}, statuses  # served, or refused at once: too late
    first = times[0]
    for seen, at in enumerate(times, start=1):  # tokens reported up to each call
        assert seen * 100 <= TPM + TPM / 60 * (at - first) + 100, (seen, at - first)
    # The burst was there to be used (normal priority leaves a quarter of it on one node):
    assert len(times) >= 0.9 * 0.75 * TPM / 103, len(times)
    assert statuses[200] == len(times)


def test_one_node_keeps_the_tokens_the_provider_reports_within_its_tpm(
    mock: MockProvider,
) -> None:
    node = Gateway(mock, OPENAI_TPM=str(TPM))
    try:
        mock.faults(default={"usage": USAGE})
        statuses = asyncio.run(send_all([node], 120, per_second=40))
        times = sorted(mock.stats()["call_times"])
        used = metric(node, "aigateway_token_budget_used_total")
        reserved = metric(node, "aigateway_token_budget_reserved_total")
        waiting = metric(node, "aigateway_token_budget_waiting")

        with node.client() as client:  # more than a minute's tokens can never fit: 400
            refused = client.post(CHAT, json=chat_body("too long", max_tokens=TPM))
            # The limit changes live, like <PROVIDER>_RPS: set lower, the same request
            # shape that fitted no longer does.
            assert client.put("/admin/config", json={"OPENAI_TPM": 60}).status_code == 200
            deadline = time.monotonic() + 10
            while True:
                lowered = client.post(CHAT, json=chat_body("lowered", max_tokens=100))
                if lowered.status_code == 400 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
    finally:
        node.stop()
        mock.faults(default=None)
    check_within_the_limit(times, statuses, 120)
    assert used == 100 * len(times)  # settled by what the provider reported
    assert reserved >= used and waiting == 0
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "tokens_exceed_limit" and error["param"] == "max_tokens"
    assert error["type"] == "invalid_request_error"
    assert lowered.status_code == 400 and lowered.json()["error"]["code"] == "tokens_exceed_limit"


def test_two_nodes_keep_the_tokens_within_the_tpm_together(
    redis: RedisServer, mock: MockProvider
) -> None:
    nodes = start_nodes(mock, redis.url, OPENAI_TPM=str(TPM))
    try:

        def both_joined() -> bool:
            health = [httpx.get(n.url + "/health", timeout=10).json() for n in nodes]
            return all(h.get("cluster", {}).get("nodes") == 2 for h in health)

        deadline = time.monotonic() + 15
        while not both_joined() and time.monotonic() < deadline:
            time.sleep(0.1)
        mock.faults(default={"usage": USAGE})
        statuses = asyncio.run(send_all(nodes, 120, per_second=40))
        times = sorted(mock.stats()["call_times"])
        used = sum(metric(n, "aigateway_token_budget_used_total") for n in nodes)
        leased = [metric(n, "aigateway_limit_tokens_leased_total") for n in nodes]
        shares = [metric(n, "aigateway_limit_token_share") for n in nodes]
        limits = [
            httpx.get(n.url + "/admin/stats", timeout=10).json()["providers"]["openai"]
            for n in nodes
        ]
    finally:
        stop_nodes(nodes)
        mock.faults(default=None)
    check_within_the_limit(times, statuses, 120)
    assert used == 100 * len(times)
    # Each node's part of the TPM shows beside its part of the RPS (/metrics, /admin/stats).
    assert all(tokens > 0 for tokens in leased) and sum(leased) >= used, (leased, used)
    assert all(0 <= share <= TPM for share in shares), shares
    for row in limits:
        tpm, rps = row["cluster_limit"]["tpm"], row["cluster_limit"]["rps"]
        assert tpm["mode"] == "leased" and tpm["limit"] == TPM and tpm["leased"] > 0
        assert rps["mode"] == "leased" and rps["leased"] > 0
