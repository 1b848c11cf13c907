"""Retries with backoff, only for failures worth retrying, within the request's deadline.

The mock provider counts every call it receives, so each test can tell how many
times the gateway tried.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from servers import Gateway, MockProvider, chat_body

pytestmark = pytest.mark.e2e


def test_two_failures_then_success_is_one_answer_from_three_calls(
    client: httpx.Client, mock: MockProvider
) -> None:
    mock.faults({"status": 500}, {"status": 503})
    response = client.post("/v1/chat/completions", json=chat_body("retry me"))
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Mock reply to: retry me"
    assert mock.calls() == 3


def test_a_dropped_connection_is_retried(client: httpx.Client, mock: MockProvider) -> None:
    mock.faults({"drop": True})
    assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
    assert mock.calls() == 2


def test_a_rate_limit_waits_for_the_providers_retry_after(
    client: httpx.Client, mock: MockProvider
) -> None:
    mock.faults({"status": 429, "retry_after_ms": 150})
    started = time.monotonic()
    assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
    assert time.monotonic() - started >= 0.15
    assert mock.calls() == 2


@pytest.mark.parametrize("status", [400, 404, 422])
def test_a_client_error_is_not_retried_and_passes_through(
    client: httpx.Client, mock: MockProvider, status: int
) -> None:
    mock.faults({"status": status, "message": "bad parameter", "code": "bad_thing"})
    response = client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == status
    assert response.json()["error"]["message"] == "bad parameter"
    assert response.json()["error"]["code"] == "bad_thing"
    assert mock.calls() == 1


def test_an_exhausted_quota_is_not_retried(client: httpx.Client, mock: MockProvider) -> None:
    mock.faults({"status": 429, "code": "insufficient_quota"})
    response = client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"
    assert mock.calls() == 1


def test_provider_auth_failure_is_a_502_that_says_so(
    client: httpx.Client, mock: MockProvider
) -> None:
    mock.faults({"status": 401, "code": "invalid_api_key"})
    response = client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "provider_authentication_error"
    assert "OPENAI_API_KEY" in error["message"]
    assert mock.calls() == 1


def test_persistent_rate_limiting_becomes_a_429_with_retry_after(
    client: httpx.Client, mock: MockProvider
) -> None:
    mock.faults(default={"status": 429, "retry_after": 0.05})
    response = client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert mock.calls() == 4  # the first try and MAX_RETRIES=3 retries


def test_a_retry_after_beyond_the_cap_is_passed_to_the_client_at_once(
    mock: MockProvider,
) -> None:
    # A gateway of its own: the provider's 30 s pause holds for the whole node after this.
    gateway = Gateway(mock)
    try:
        mock.faults({"status": 429, "retry_after": 30})
        with gateway.client() as client:
            response = client.post("/v1/chat/completions", json=chat_body())
            assert response.status_code == 429
            assert response.headers["retry-after"] == "30"
            assert mock.calls() == 1
            # The pause holds for the node: the next request is not sent to the provider,
            # and its client is told at once how long the pause has left.
            paused = client.post("/v1/chat/completions", json=chat_body("while paused"))
            assert paused.status_code == 429
            assert 1 <= int(paused.headers["retry-after"]) <= 30
            assert mock.calls() == 1
    finally:
        gateway.stop()


def test_persistent_server_errors_become_a_502(client: httpx.Client, mock: MockProvider) -> None:
    mock.faults(default={"status": 500})
    response = client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "provider_error"
    assert mock.calls() == 4


def test_an_overloaded_provider_becomes_a_503(client: httpx.Client, mock: MockProvider) -> None:
    mock.faults(default={"status": 503})
    assert client.post("/v1/chat/completions", json=chat_body()).status_code == 503


def test_a_stream_that_fails_before_its_first_byte_is_retried(
    client: httpx.Client, mock: MockProvider
) -> None:
    mock.faults({"status": 500})
    body = chat_body("stream after a failure", stream=True)
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert mock.calls() == 2


def test_a_stream_that_breaks_off_ends_with_an_error_event_and_no_retry(
    client: httpx.Client, mock: MockProvider
) -> None:
    mock.faults({"drop_after_chunks": 2})
    body = chat_body("this stream will break off midway", stream=True)
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] != "[DONE]"
    assert "broke off" in orjson.loads(events[-1])["error"]["message"]
    assert len(events) >= 2
    assert mock.calls() == 1


# --- the deadline: a gateway with REQUEST_TIMEOUT_SEC=1 --------------------------------


@pytest.fixture(scope="module")
def short_deadline_gateway(mock_provider: MockProvider) -> Iterator[Gateway]:
    gateway = Gateway(
        mock_provider, REQUEST_TIMEOUT_SEC="1", INITIAL_DELAY_MS="300", MAX_DELAY_MS="1000"
    )
    yield gateway
    gateway.stop()


def test_a_hanging_provider_gets_a_504_at_the_deadline(
    short_deadline_gateway: Gateway, mock: MockProvider
) -> None:
    mock.faults({"hang": True})
    started = time.monotonic()
    with short_deadline_gateway.client() as client:
        response = client.post("/v1/chat/completions", json=chat_body())
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout_error"
    assert 0.9 <= elapsed < 3.0


def test_the_deadline_covers_every_retry(
    short_deadline_gateway: Gateway, mock: MockProvider
) -> None:
    mock.faults(default={"status": 500, "latency_ms": 400})
    started = time.monotonic()
    with short_deadline_gateway.client() as client:
        response = client.post("/v1/chat/completions", json=chat_body())
    assert time.monotonic() - started < 2.0
    assert response.status_code in (502, 504)
    assert mock.calls() < 4  # no time left for every retry
