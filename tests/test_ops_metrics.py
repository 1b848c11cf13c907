"""/metrics and /admin/stats over real HTTP: node totals, whichever worker answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aigateway.stats.registry import METRICS
from servers import Gateway, MockProvider, chat_body

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
CACHE_FLUSH_S = 0.7


@pytest.fixture(scope="module")
def metered(mock_provider: MockProvider) -> Iterator[Gateway]:
    gateway = Gateway(mock_provider, CACHE_ENABLED="true", OPENAI_RPS="100000")
    yield gateway
    gateway.stop()


def scrape(gateway: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed by prometheus_client, on a new connection."""
    with httpx.Client() as fresh:
        response = fresh.get(gateway.url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    )


async def send_many(gateway: Gateway, count: int, tag: str, concurrency: int = 32) -> list[int]:
    """``count`` chat requests, each on a new connection so that every worker gets some."""
    limits = httpx.Limits(max_keepalive_connections=0)
    statuses: list[int] = []
    queue = list(range(count))
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30, limits=limits) as client:

        async def worker() -> None:
            while queue:
                i = queue.pop()
                response = await client.post(CHAT, json=chat_body(f"{tag} {i}"))
                statuses.append(response.status_code)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def test_a_thousand_requests_are_counted_exactly_by_every_worker(
    metered: Gateway, mock: MockProvider
) -> None:
    statuses = asyncio.run(send_many(metered, 1000, "count me"))
    assert statuses == [200] * 1000
    pids = set()
    for _ in range(12):
        samples = scrape(metered)
        chat = total(samples, "aigateway_requests_total", route=CHAT, method="POST", status="2xx")
        assert chat == 1000
        calls = total(samples, "aigateway_provider_calls_total", provider="openai", outcome="ok")
        assert calls == 1000 == mock.calls()
        assert total(samples, "aigateway_request_duration_seconds_count") >= 1000
        assert total(samples, "aigateway_gateway_overhead_seconds_count") == 1000
        assert total(samples, "aigateway_workers") == 2
        with httpx.Client() as fresh:
            stats = fresh.get(metered.url + "/admin/stats").json()
        pids.add(stats["pid"])
        routes = {(r["route"], r["status"]): r["count"] for r in stats["requests"]["by_route"]}
        assert routes[CHAT, "2xx"] == 1000
        assert stats["providers"]["openai"]["calls"]["ok"] == 1000
    assert len(pids) == 2  # both workers answered, with the same node totals
    # The cache's counters live in its LMDB store: each worker adds its own every 0.5 s.
    time.sleep(CACHE_FLUSH_S)
    assert total(scrape(metered), "aigateway_cache_misses_total") == 1000


def test_cache_hits_dedup_and_failures_are_counted(metered: Gateway, mock: MockProvider) -> None:
    before = scrape(metered)
    mock.faults({"status": 500})
    with metered.client() as client:
        for _ in range(3):
            assert client.post(CHAT, json=chat_body("cached answer")).status_code == 200
        stream = chat_body("streamed", stream=True, stream_options={"include_usage": True})
        assert client.post(CHAT, json=stream).status_code == 200
        assert client.get("/v1/nowhere").status_code == 404
    time.sleep(CACHE_FLUSH_S)
    after = scrape(metered)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("aigateway_cache_hits_total") == 2
    assert grew("aigateway_avoided_provider_calls_total", via="cache") == 2
    assert grew("aigateway_provider_calls_total", outcome="server_error") == 1
    assert grew("aigateway_retries_total", provider="openai") == 1
    assert grew("aigateway_stream_first_byte_seconds_count") == 1
    assert grew("aigateway_tokens_total", provider="openai", direction="out") > 0  # streamed
    assert grew("aigateway_requests_total", route="unmatched", status="4xx") == 1
    assert total(after, "aigateway_cache_entries") >= 1
    assert total(after, "aigateway_circuit_state", provider="openai") in (0, 1)


def test_admin_stats_sums_up_the_same_numbers(metered: Gateway, mock: MockProvider) -> None:
    with metered.client() as client:
        stats = client.get("/admin/stats").json()
    assert (stats["workers"], stats["workers_configured"], stats["worker_restarts"]) == (2, 2, 0)
    assert stats["uptime_s"] > 0 and stats["version"]
    assert stats["requests"]["per_second_1m"] > 0
    latency = stats["providers"]["openai"]["latency"]
    assert latency["count"] > 0 and latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]
    assert stats["providers"]["google"]["state"] == "healthy"
    assert stats["cache"]["enabled"] is True
    assert "queue_size" in stats["admission"]


def test_the_pipeline_reports_tokens_failovers_and_models(
    metered: Gateway, mock: MockProvider
) -> None:
    before = scrape(metered)
    with metered.client() as client:
        assert client.post(CHAT, json=chat_body("tokens, please")).status_code == 200
    after = scrape(metered)
    tokens = "aigateway_tokens_total"
    grown = total(after, tokens, direction="in") - total(before, tokens, direction="in")
    assert grown > 0
    calls = "aigateway_provider_calls_total"
    assert total(after, calls, model="gpt-4o-mini") > total(before, calls, model="gpt-4o-mini")


# Families that the traffic below cannot reach (no fallback chain, no probes, no rate limit
# in this gateway): they must still be exported, with their type, but may have no samples.
RARE = {"aigateway_failovers", "aigateway_health_probes", "aigateway_rate_limit_waits"}
# Samples only with REDIS_URL (tests/test_cluster_node.py, test_cluster_limits.py show them).
CLUSTER_ONLY = {
    "aigateway_redis_up",
    "aigateway_cluster_nodes",
    "aigateway_limit_share",
    "aigateway_limit_leased",
    "aigateway_limit_token_share",
    "aigateway_limit_tokens_leased",
    "aigateway_limit_lease_calls",
}
# Samples only once a tenant key spent (tests/test_gateway_key_budgets.py shows them).
KEYS_ONLY = {"aigateway_key_spend_usd"}


def test_every_declared_metric_is_exported_and_every_exported_one_is_declared(
    metered: Gateway, mock: MockProvider
) -> None:
    mock.faults({"status": 500})  # one retry
    with metered.client() as client:
        for _ in range(2):  # a miss, then a hit
            assert client.post(CHAT, json=chat_body("declared metrics")).status_code == 200
        stream = chat_body("declared, streamed", stream=True)
        assert client.post(CHAT, json=stream).status_code == 200
    time.sleep(CACHE_FLUSH_S)
    with httpx.Client() as fresh:
        text = fresh.get(metered.url + "/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    declared = {f"aigateway_{m.name}": m.kind for m in METRICS.values() if m.exported}
    assert {name: f.type for name, f in families.items()} == declared
    empty = {name for name, family in families.items() if not family.samples}
    assert empty <= RARE | CLUSTER_ONLY | KEYS_ONLY
