"""The response cache and de-duplication, over real HTTP with two worker processes.

Each request in these tests goes over a fresh connection, so both workers answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from servers import Gateway, MockProvider, chat_body

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cached_gateway(mock_provider: MockProvider) -> Iterator[Gateway]:
    gateway = Gateway(mock_provider, CACHE_ENABLED="true")
    yield gateway
    gateway.stop()


@pytest.fixture
def cache_url(cached_gateway: Gateway, mock: MockProvider) -> str:
    httpx.delete(cached_gateway.url + "/admin/cache").raise_for_status()
    return cached_gateway.url


def post(url: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def stream_events(url: str, body: dict[str, Any], path: str = "/v1/chat/completions") -> list[str]:
    with httpx.stream("POST", url + path, json={**body, "stream": True}, timeout=30) as response:
        assert response.status_code == 200
        return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


def test_the_same_request_reaches_the_provider_once(cache_url: str, mock: MockProvider) -> None:
    body = chat_body("cache me once", temperature=0.1)
    answers = [post(cache_url, body) for _ in range(20)]
    assert mock.calls() == 1
    assert [a.headers["x-aigateway-cache"] for a in answers] == ["miss"] + ["hit"] * 19
    assert len({a.json()["choices"][0]["message"]["content"] for a in answers}) == 1


def test_a_different_temperature_or_message_misses(cache_url: str, mock: MockProvider) -> None:
    post(cache_url, chat_body("vary me", temperature=0.1))
    assert (
        post(cache_url, chat_body("vary me", temperature=0.9)).headers["x-aigateway-cache"]
        == "miss"
    )
    assert (
        post(cache_url, chat_body("vary me too", temperature=0.1)).headers["x-aigateway-cache"]
        == "miss"
    )
    assert mock.calls() == 3


def test_key_order_in_the_body_does_not_matter(cache_url: str, mock: MockProvider) -> None:
    first = b'{"model": "gpt-4o-mini", "temperature": 0.5, "messages": [{"role": "user", '
    first += b'"content": "order"}]}'
    second = b'{"messages": [{"content": "order", "role": "user"}], "temperature": 0.5, '
    second += b'"model": "gpt-4o-mini"}'
    for raw in (first, second):
        httpx.post(
            cache_url + "/v1/chat/completions",
            content=raw,
            headers={"content-type": "application/json"},
        )
    assert mock.calls() == 1


def test_an_expired_entry_is_not_served(cache_url: str, mock: MockProvider) -> None:
    body = chat_body("short lived")
    post(cache_url, body, **{"x-aigateway-cache-ttl": "1"})
    assert post(cache_url, body).headers["x-aigateway-cache"] == "hit"
    time.sleep(1.2)
    assert post(cache_url, body).headers["x-aigateway-cache"] == "miss"
    assert mock.calls() == 2


def test_no_cache_bypasses_the_read_and_no_store_skips_the_write(
    cache_url: str, mock: MockProvider
) -> None:
    body = chat_body("controls")
    post(cache_url, body)
    assert (
        post(cache_url, body, **{"cache-control": "no-cache"}).headers["x-aigateway-cache"]
        == "bypass"
    )
    assert mock.calls() == 2
    other = chat_body("never stored")
    post(cache_url, other, **{"cache-control": "no-store"})
    assert post(cache_url, other).headers["x-aigateway-cache"] == "miss"
    assert mock.calls() == 4


def test_the_native_cache_field_and_cached_flag(cache_url: str, mock: MockProvider) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "native cache"}]}
    first = httpx.post(cache_url + "/v1/chat", json=body).json()
    second = httpx.post(cache_url + "/v1/chat", json=body).json()
    third = httpx.post(cache_url + "/v1/chat", json={**body, "cache": {"no_cache": True}}).json()
    assert (first["cached"], second["cached"], third["cached"]) == (False, True, False)
    assert mock.calls() == 2


def test_a_streamed_answer_is_replayed_in_chunks_on_a_hit(
    cache_url: str, mock: MockProvider
) -> None:
    body = chat_body(
        "stream then replay these words please", stream_options={"include_usage": True}
    )
    original = stream_events(cache_url, body)
    replayed = stream_events(cache_url, body)
    assert mock.calls() == 1
    assert replayed[-1] == "[DONE]"
    assert len(replayed) > 4

    def text(events: list[str]) -> str:
        chunks = [orjson.loads(e) for e in events[:-1]]
        return "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )

    assert (
        text(replayed) == text(original) == "Mock reply to: stream then replay these words please"
    )
    assert orjson.loads(replayed[-2])["usage"]["total_tokens"] > 0


def test_a_replayed_stream_has_a_live_streams_headers_and_bytes(
    cache_url: str, mock: MockProvider
) -> None:
    # A replay goes out in one piece (its events are all in memory), yet as a stream:
    # chunked, with the stream's headers, every event in its own ``data:`` line.
    body = {**chat_body("one piece or many, the same stream"), "stream": True}

    def streamed() -> tuple[httpx.Headers, bytes]:
        with httpx.stream("POST", cache_url + "/v1/chat/completions", json=body) as response:
            return response.headers, response.read()

    live_headers, live = streamed()
    replay_headers, replay = streamed()
    assert mock.calls() == 1
    assert (live_headers["x-aigateway-cache"], replay_headers["x-aigateway-cache"]) == (
        "miss",
        "hit",
    )
    assert replay.endswith(b"data: [DONE]\n\n") and live.endswith(b"data: [DONE]\n\n")
    assert replay.count(b"data: ") > 3
    for name in ("content-type", "cache-control", "x-accel-buffering", "transfer-encoding"):
        assert replay_headers.get(name) == live_headers.get(name), name
    assert replay_headers["transfer-encoding"] == "chunked"
    assert "content-length" not in replay_headers


def test_stream_and_whole_answers_serve_each_other(cache_url: str, mock: MockProvider) -> None:
    streamed_first = chat_body("streamed first")
    stream_events(cache_url, streamed_first)
    whole = post(cache_url, streamed_first)
    assert whole.headers["x-aigateway-cache"] == "hit"
    assert whole.json()["choices"][0]["message"]["content"] == "Mock reply to: streamed first"
    whole_first = chat_body("whole first")
    post(cache_url, whole_first)
    assert stream_events(cache_url, whole_first)[-1] == "[DONE]"
    assert mock.calls() == 2


def test_an_upstream_error_is_not_cached(cache_url: str, mock: MockProvider) -> None:
    mock.faults(default={"status": 400})
    body = chat_body("error once")
    assert post(cache_url, body).status_code == 400
    mock.faults(default=None)
    assert post(cache_url, body).status_code == 200
    assert mock.calls() == 2


def test_a_stream_that_broke_off_is_not_cached(cache_url: str, mock: MockProvider) -> None:
    mock.faults({"drop_after_chunks": 2})
    body = chat_body("broken stream not cached")
    events = stream_events(cache_url, body)
    assert "error" in events[-1]
    assert post(cache_url, body).headers["x-aigateway-cache"] == "miss"


async def _concurrently(url: str, body: dict[str, Any], n: int, stream: bool) -> list[str]:
    async def one() -> str:
        async with httpx.AsyncClient(timeout=30) as client:  # a connection of its own
            if not stream:
                response = await client.post(url + "/v1/chat/completions", json=body)
                return str(response.json()["choices"][0]["message"]["content"])
            parts = []
            async with client.stream(
                "POST", url + "/v1/chat/completions", json={**body, "stream": True}
            ) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: {"):
                        chunk = orjson.loads(line[6:])
                        parts.extend(c["delta"].get("content") or "" for c in chunk["choices"])
            return "".join(parts)

    return list(await asyncio.gather(*(one() for _ in range(n))))


def test_identical_concurrent_streams_share_one_provider_call(
    cache_url: str, mock: MockProvider
) -> None:
    # Whole answers, and who waits for whom, in process: tests/test_pipeline.py.
    mock.faults(default={"latency_ms": 500})
    answers = asyncio.run(_concurrently(cache_url, chat_body("all at once"), 20, stream=True))
    assert mock.calls() == 1
    assert answers == ["Mock reply to: all at once"] * 20


def test_the_memory_budget_holds(mock: MockProvider) -> None:
    budget = 0.05  # MB
    gateway = Gateway(mock, CACHE_ENABLED="true", CACHE_MAX_MB=str(budget))
    try:
        with gateway.client() as client:
            for i in range(600):  # about 10x the budget in distinct answers
                text = f"distinct answer number {i} " + "padding " * 6
                client.post("/v1/chat/completions", json=chat_body(text))
            report = client.get("/admin/cache").json()
        # the budget limits the LMDB pages the entries occupy, and so their bytes too
        assert report["bytes"] <= report["pages_bytes"] <= budget * 1024 * 1024
        assert report["evictions"] > 0 and report["store_failures"] == 0
    finally:
        gateway.stop()


def test_admin_cache_reports_and_delete_clears_every_worker(
    cache_url: str, mock: MockProvider
) -> None:
    body = chat_body("admin sees me")
    for _ in range(3):
        post(cache_url, body)
    report = httpx.get(cache_url + "/admin/cache").json()
    assert report["entries"] >= 1
    assert report["hits"] >= 2
    assert report["top_entries"][0]["model"] == "gpt-4o-mini"
    assert "admin sees me" not in orjson.dumps(report).decode()
    avoided = {row["model"]: row for row in report["avoided"]}
    assert avoided["gpt-4o-mini"]["cache_calls"] >= 2
    assert httpx.delete(cache_url + "/admin/cache").json()["cleared"] >= 1
    assert all(post(cache_url, body).headers["x-aigateway-cache"] == "miss" for _ in range(1))
    assert mock.calls() == 2
