"""Two nodes act as one: a provider's pause and open circuit, a live setting, and the
members with their figures, seen from either node.

Real processes: two gateway nodes of two workers each, sharing one ``redis-server`` and
the mock provider (its ``status``/``retry_after`` faults stand for the provider's 429s
and 500s).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from redis_servers import RedisServer, start_nodes, stop_nodes
from servers import Gateway, MockProvider, chat_body, wait_for

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def nodes(redis_server: RedisServer, mock_provider: MockProvider) -> Iterator[list[Gateway]]:
    redis_server.client().flushall()
    started = start_nodes(
        mock_provider,
        redis_server.url,
        MAX_RETRIES="0",
        CACHE_ENABLED="true",
        CIRCUIT_FAILURE_THRESHOLD="2",
        CIRCUIT_COOLDOWN_SEC="30",
    )
    yield started
    stop_nodes(started)
    for node in started:
        assert "still in use" not in node.log()  # the agent let go of the shared memory


def get(node: Gateway, path: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(node.url + path, timeout=10).json()
    return body


def test_a_pause_from_a_429_on_one_node_holds_on_the_other(
    nodes: list[Gateway], mock: MockProvider
) -> None:
    a, b = nodes
    mock.faults({"status": 429, "retry_after": 6})
    with a.client() as client:
        assert client.post(CHAT, json=chat_body("meets the 429")).status_code == 429

    def paused_on_b() -> float:
        row = get(b, "/admin/stats")["admission"]["providers"]["openai"]
        return float(row["paused_for_s"])

    assert wait_for(lambda: paused_on_b() > 3.0), paused_on_b()
    calls = mock.calls()
    with b.client() as client:  # B waits out no pause past a fair start: 429 at once
        refused = client.post(
            CHAT, json=chat_body("on B"), headers={"x-aigateway-timeout-ms": "2000"}
        )
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert mock.calls() == calls  # the provider was left alone


def test_a_circuit_opened_on_one_node_is_open_on_the_other(
    nodes: list[Gateway], mock: MockProvider
) -> None:
    a, b = nodes
    mock.faults({"status": 500}, {"status": 500})
    with a.client() as client:
        for _ in range(2):  # CIRCUIT_FAILURE_THRESHOLD=2
            failed = client.post(CHAT, json=chat_body(model="claude-sonnet-4"))
            assert failed.status_code >= 500
    assert get(a, "/health")["providers"]["anthropic"]["state"] == "open"
    state = lambda: get(b, "/health")["providers"]["anthropic"]["state"]  # noqa: E731
    assert wait_for(lambda: state() == "open"), state()
    calls = mock.calls()
    with b.client() as client:
        refused = client.post(CHAT, json=chat_body(model="claude-sonnet-4"))
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "circuit_open"
    assert mock.calls() == calls


def test_a_live_setting_changed_on_one_node_applies_on_the_other(nodes: list[Gateway]) -> None:
    a, b = nodes
    changed = httpx.put(a.url + "/admin/config", json={"QUEUE_SIZE": 77, "GOOGLE_RPS": 13})
    assert changed.status_code == 200, changed.text

    def applied_on_b() -> bool:
        admission = get(b, "/admin/stats")["admission"]
        google = admission["providers"]["google"]
        return bool(
            admission["queue_size"] == 77
            and google["configured_rate_per_s"] == 13
            # B's bucket runs at its lease: its share of the new cluster-wide limit
            and 0 < google["rate_per_s"] <= 13
        )

    assert wait_for(applied_on_b, 5.0), get(b, "/admin/stats")["admission"]
    assert get(b, "/admin/config")["overrides"] == {"QUEUE_SIZE": "77", "GOOGLE_RPS": "13"}


def test_admin_stats_on_either_node_lists_both_members_and_the_totals(
    nodes: list[Gateway],
) -> None:
    for node in nodes:
        with node.client() as client:
            for _ in range(2):  # the second is a hit of the node's cache
                body = chat_body(f"asked on {node.url}", model="gemini-2.0-flash")
                assert client.post(CHAT, json=body).status_code == 200

    def section(node: Gateway) -> dict[str, Any]:
        cluster: dict[str, Any] = get(node, "/admin/stats")["cluster"]
        return cluster

    for node in nodes:
        assert wait_for(lambda node=node: section(node)["totals"]["cache_hits"] >= 2)
        cluster = section(node)
        assert cluster["redis"] == "up" and cluster["nodes"] == 2
        assert [m["id"] for m in cluster["members"]] == ["node-a", "node-b"]
        figures = [m["figures"] for m in cluster["members"]]
        assert all(f["requests"] >= 2 and f["cache_hits"] >= 1 for f in figures)
        assert cluster["totals"]["provider_calls"] >= 2
        for name, total in cluster["totals"].items():
            assert total == sum(f[name] for f in figures)


def test_the_dashboard_on_either_node_shows_both_nodes(nodes: list[Gateway]) -> None:
    for node in nodes:
        document = get(node, "/admin/dashboard.json")
        assert document["summary"]["nodes"] == 2
        cluster = document["cluster"]
        assert cluster["redis"] == "up"
        assert [m["id"] for m in cluster["members"]] == ["node-a", "node-b"]
        assert all("figures" in member for member in cluster["members"])
