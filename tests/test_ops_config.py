"""Live configuration over real HTTP: GET and PUT /admin/config, applied by every worker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from servers import TEST_KEY, Gateway, MockProvider, chat_body

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
FRESH = httpx.Limits(max_keepalive_connections=0)  # a new connection, any worker, each time


@pytest.fixture(scope="module")
def tunable(mock_provider: MockProvider) -> Iterator[Gateway]:
    gateway = Gateway(mock_provider, OPENAI_RPS="40", REQUEST_TIMEOUT_SEC="20")
    yield gateway
    gateway.stop()


def put(gateway: Gateway, changes: dict[str, Any]) -> httpx.Response:
    with gateway.client() as client:
        return client.put("/admin/config", json=changes)


def shown_by_every_worker(gateway: Gateway, name: str) -> set[tuple[int, str]]:
    """(pid, value) of setting ``name`` as each worker shows it."""
    seen = set()
    with httpx.Client(base_url=gateway.url, limits=FRESH) as client:
        for _ in range(16):
            shown = client.get("/admin/config").json()
            seen.add((shown["pid"], shown["settings"][name]))
    return seen


async def burst(gateway: Gateway, count: int) -> list[int]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30, limits=FRESH) as client:
        answers = await asyncio.gather(
            *(client.post(CHAT, json=chat_body(f"rate {i}")) for i in range(count))
        )
    return [answer.status_code for answer in answers]


def call_span(mock: MockProvider) -> float:
    times = mock.stats()["call_times"]
    return float(max(times) - min(times))


def test_get_shows_the_effective_settings_with_secrets_masked(tunable: Gateway) -> None:
    with tunable.client() as client:
        shown = client.get("/admin/config").json()
    assert shown["settings"]["OPENAI_RPS"] == "40.0"
    assert shown["settings"]["OPENAI_API_KEY"].startswith("****")
    assert TEST_KEY not in str(shown)
    assert "OPENAI_RPS" in shown["live"] and "AI_GATEWAY_PORT" not in shown["live"]


def test_a_new_rate_changes_what_the_provider_sees_from_every_worker(
    tunable: Gateway, mock: MockProvider
) -> None:
    assert asyncio.run(burst(tunable, 40)) == [200] * 40
    assert call_span(mock) < 1.0  # 40 a second, with a burst of 40: at once
    changed = put(tunable, {"OPENAI_RPS": 5})
    assert changed.status_code == 200
    body = changed.json()
    assert body["changed"] == ["OPENAI_RPS"]
    assert body["workers"] == {"applied": 2, "live": 2}
    seen = shown_by_every_worker(tunable, "OPENAI_RPS")
    assert {value for _, value in seen} == {"5.0"} and len(seen) == 2
    mock.reset()
    try:
        assert asyncio.run(burst(tunable, 20)) == [200] * 20
        # At most a burst of 5, then 5 a second, for the node: the 20 calls take >= 3 s.
        assert call_span(mock) >= 2.5
    finally:
        assert put(tunable, {"OPENAI_RPS": None}).json()["settings"]["OPENAI_RPS"] == "40.0"


def test_a_bad_value_is_refused_clearly_and_nothing_changes(tunable: Gateway) -> None:
    with tunable.client() as client:
        before = client.get("/admin/config").json()
        refused = client.put("/admin/config", json={"LOG_LEVEL": "debug", "OPENAI_RPS": "fast"})
        assert refused.status_code == 400
        assert refused.json()["error"] == {
            "message": "invalid OPENAI_RPS='fast': expected a number > 0",
            "type": "invalid_request_error",
            "param": "OPENAI_RPS",
            "code": "invalid_config",
        }
        not_live = client.put("/admin/config", json={"AI_GATEWAY_PORT": 1})
        assert not_live.status_code == 400
        assert not_live.json()["error"]["code"] == "not_live"
        assert client.put("/admin/config", content=b"[1]").status_code == 400
        after = client.get("/admin/config").json()
    assert after["version"] == before["version"]
    assert after["settings"] == before["settings"]


def test_retry_policy_and_log_level_change_on_every_worker(
    tunable: Gateway, mock: MockProvider
) -> None:
    assert put(tunable, {"MAX_RETRIES": 0, "LOG_LEVEL": "warning"}).status_code == 200
    try:
        with httpx.Client(base_url=tunable.url, limits=FRESH, timeout=30) as client:
            lines = tunable.log().count("aigateway.access")
            for _ in range(8):
                mock.faults({"status": 500})
                assert client.post(CHAT, json=chat_body("no retry")).status_code == 502
            assert mock.calls() == 8  # not one retry, whichever worker answered
            assert tunable.log().count("aigateway.access") == lines  # info lines are off
    finally:
        put(tunable, {"MAX_RETRIES": None, "LOG_LEVEL": None})
    mock.reset()
    mock.faults({"status": 500})
    with tunable.client() as client:
        assert client.post(CHAT, json=chat_body("retried again")).status_code == 200
    assert mock.calls() == 2


def provider_connections(mock: MockProvider, count: int) -> int:
    """How many connections the gateway used for its last ``count`` provider calls."""
    recent = mock.stats()["last_requests"][-count:]
    return len({request["peer"] for request in recent})


def test_a_new_connection_limit_takes_effect_in_every_worker(
    tunable: Gateway, mock: MockProvider
) -> None:
    mock.faults(default={"latency_ms": 150})
    assert asyncio.run(burst(tunable, 8)) == [200] * 8
    assert provider_connections(mock, 8) > 2  # 20 connections a worker: no waiting
    assert put(tunable, {"OPENAI_MAX_CONNS": 1}).json()["workers"]["applied"] == 2
    try:
        assert asyncio.run(burst(tunable, 8)) == [200] * 8
        assert provider_connections(mock, 8) <= 2  # one connection in each worker
    finally:
        put(tunable, {"OPENAI_MAX_CONNS": None})
