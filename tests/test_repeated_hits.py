"""A request that was a cache hit, sent again byte for byte, is answered from the worker's
memory of it (``api.repeats``): the same answer, headers and counts as the whole path's
hit, and never where the whole path would decide otherwise.

Real processes: a gateway of one worker (so the worker that learned a request answers it
again) and the bundled mock provider. ``repeat_hits`` in ``GET /admin/cache`` counts the
hits answered from memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from servers import Gateway, MockProvider, chat_body, wait_for

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def gateway(mock_provider: MockProvider) -> Iterator[Gateway]:
    started = Gateway(mock_provider, CACHE_ENABLED="true", MAX_WORKERS="1")
    yield started
    started.stop()


@pytest.fixture
def client(gateway: Gateway, mock: MockProvider) -> Iterator[httpx.Client]:
    with gateway.client() as opened:
        opened.delete("/admin/cache").raise_for_status()
        yield opened


def repeat_hits(client: httpx.Client) -> int:
    cache: dict[str, Any] = client.get("/admin/cache").json()
    return int(cache["repeat_hits"])


def learned(client: httpx.Client, body: dict[str, Any], **headers: str) -> httpx.Response:
    """Send ``body`` twice: a miss, then the whole path's hit the worker learns from."""
    assert client.post(CHAT, json=body, headers=headers).headers["x-aigateway-cache"] == "miss"
    hit = client.post(CHAT, json=body, headers=headers)
    assert hit.headers["x-aigateway-cache"] == "hit"
    return hit


def comparable(answer: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in answer.headers.items() if k not in ("x-request-id", "date")}


def test_a_hit_sent_again_gets_the_same_answer_and_headers_from_memory(
    client: httpx.Client, mock: MockProvider
) -> None:
    body = chat_body("remember me")
    hit = learned(client, body)
    before = repeat_hits(client)
    again = client.post(CHAT, json=body)
    assert again.status_code == 200
    assert again.content == hit.content
    assert comparable(again) == comparable(hit)
    assert again.headers["x-aigateway-cost"] == "0"
    assert repeat_hits(client) == before + 1
    assert mock.calls() == 1


def test_the_request_id_a_client_sends_is_echoed_and_does_not_make_it_new(
    client: httpx.Client,
) -> None:
    body = chat_body("same body, new id")
    learned(client, body, **{"x-request-id": "first-id"})
    before = repeat_hits(client)
    again = client.post(CHAT, json=body, headers={"x-request-id": "second-id"})
    assert again.headers["x-request-id"] == "second-id"
    assert repeat_hits(client) == before + 1


def test_a_header_the_gateway_reads_is_checked_again_when_it_changes(
    client: httpx.Client,
) -> None:
    body = chat_body("checked headers")
    learned(client, body)
    refused = client.post(CHAT, json=body, headers={"x-aigateway-priority": "urgentest"})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "x-aigateway-priority"


def test_no_cache_still_goes_to_the_provider_for_a_remembered_request(
    client: httpx.Client, mock: MockProvider
) -> None:
    body = chat_body("no-cache after all")
    learned(client, body)
    bypassed = client.post(CHAT, json=body, headers={"cache-control": "no-cache"})
    assert bypassed.headers["x-aigateway-cache"] == "bypass"
    assert mock.calls() == 2


def test_a_cleared_cache_sends_a_remembered_request_to_the_provider(
    client: httpx.Client, mock: MockProvider
) -> None:
    body = chat_body("forget the answer")
    learned(client, body)
    client.delete("/admin/cache").raise_for_status()
    before = repeat_hits(client)
    again = client.post(CHAT, json=body)
    assert again.headers["x-aigateway-cache"] == "miss"
    assert mock.calls() == 2
    assert repeat_hits(client) == before


def test_a_live_settings_change_makes_the_worker_take_the_whole_path_again(
    client: httpx.Client,
) -> None:
    body = chat_body("settings moved")
    learned(client, body)
    assert client.put("/admin/config", json={"CACHE_TTL_MINUTES": 61}).status_code == 200
    try:
        before = repeat_hits(client)
        relearned = client.post(CHAT, json=body)  # a hit the whole way, learned again
        assert relearned.headers["x-aigateway-cache"] == "hit"
        assert repeat_hits(client) == before
        assert client.post(CHAT, json=body).headers["x-aigateway-cache"] == "hit"
        assert repeat_hits(client) == before + 1
    finally:
        client.put("/admin/config", json={"CACHE_TTL_MINUTES": None})


def test_a_repeated_stream_is_replayed_from_memory_like_the_whole_paths_hit(
    client: httpx.Client, mock: MockProvider
) -> None:
    body = chat_body("a stream", stream=True, stream_options={"include_usage": True})
    answers = []
    before = repeat_hits(client)
    for _ in range(3):  # a miss, the whole path's hit, the remembered one
        with client.stream("POST", CHAT, json=body) as answer:
            assert answer.status_code == 200
            answers.append((answer.headers, answer.read()))
    assert [headers["x-aigateway-cache"] for headers, _ in answers] == ["miss", "hit", "hit"]
    (hit_headers, hit_events), (again_headers, again_events) = answers[1], answers[2]
    assert again_events == hit_events and b'"usage"' in again_events
    assert again_events.endswith(b"data: [DONE]\n\n")
    assert {k: v for k, v in again_headers.items() if k not in ("x-request-id", "date")} == {
        k: v for k, v in hit_headers.items() if k not in ("x-request-id", "date")
    }
    assert repeat_hits(client) == before + 1
    assert mock.calls() == 1


def test_an_open_circuit_is_not_hidden_by_a_remembered_hit(
    mock_provider: MockProvider, mock: MockProvider
) -> None:
    gateway = Gateway(
        mock_provider,
        CACHE_ENABLED="true",
        MAX_WORKERS="1",
        MAX_RETRIES="0",
        CIRCUIT_FAILURE_THRESHOLD="1",
        CIRCUIT_COOLDOWN_SEC="60",
    )
    try:
        with gateway.client() as client:
            body = chat_body("behind a circuit")
            learned(client, body)
            mock.faults({"status": 500})
            assert client.post(CHAT, json=chat_body("breaks it")).status_code >= 500
            refused = client.post(CHAT, json=body)  # as the whole path answers it
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "circuit_open"
    finally:
        gateway.stop()


def test_a_tenant_keys_remembered_request_is_still_admitted_by_its_key(
    mock_provider: MockProvider,
) -> None:
    gateway = Gateway(mock_provider, CACHE_ENABLED="true", MAX_WORKERS="1")
    try:
        with gateway.client() as client:
            made = client.post("/admin/keys", json={"name": "team", "rpm": 4})
            assert made.status_code == 201, made.text
            key = {"authorization": f"Bearer {made.json()['key']}"}
            body = chat_body("a team's")
            answers = [client.post(CHAT, json=body, headers=key) for _ in range(5)]
            assert [a.headers["x-aigateway-cache"] for a in answers[:4]] == ["miss"] + ["hit"] * 3
            assert repeat_hits(client) == 2  # the third and fourth
            # The fifth is over the key's 4 a minute, remembered or not.
            assert answers[4].status_code == 429
            assert answers[4].json()["error"]["code"] == "key_rate_limited"

            def requests() -> int:  # written through the spend log, once a second
                return int(
                    client.get(f"/admin/keys/{made.json()['id']}").json()["usage"]["requests"]
                )

            assert wait_for(lambda: requests() == 4, 10.0), requests()

            client.delete(f"/admin/keys/{made.json()['id']}").raise_for_status()
            revoked = client.post(CHAT, json=body, headers=key)
            assert revoked.status_code == 401
    finally:
        gateway.stop()
