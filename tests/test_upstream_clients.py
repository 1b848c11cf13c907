"""Both upstream client implementations behave the same behind the one interface."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from aigateway.upstream import (
    PoolLimits,
    UpstreamBrokenBody,
    UpstreamClient,
    UpstreamConnectError,
    UpstreamTimeout,
    create_upstream_client,
)
from servers import MockProvider, chat_body, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

LIMITS = PoolLimits(
    max_connections=4, connect_timeout_s=2, keepalive_expiry_s=5, read_idle_timeout_s=5
)
JSON = {"content-type": "application/json"}


@pytest.fixture(params=["aiohttp", "httpx"])
async def upstream(request: pytest.FixtureRequest) -> AsyncIterator[UpstreamClient]:
    client = create_upstream_client(request.param, LIMITS)
    yield client
    await client.close()


async def _chat(upstream: UpstreamClient, mock: MockProvider, **extra: object) -> object:
    return await upstream.send(
        "POST",
        mock.base_url + "/chat/completions",
        headers=JSON,
        body=orjson.dumps(chat_body("ping", **extra)),
        timeout_s=5,
    )


async def test_send_and_read_a_whole_answer(upstream: UpstreamClient, mock: MockProvider) -> None:
    response = await _chat(upstream, mock)
    assert response.status == 200  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith("application/json")  # type: ignore[attr-defined]
    body = orjson.loads(await response.read(5))  # type: ignore[attr-defined]
    assert body["choices"][0]["message"]["content"] == "Mock reply to: ping"


async def test_stream_chunks_arrive_incrementally(
    upstream: UpstreamClient, mock: MockProvider
) -> None:
    mock.faults({"stream_chunk_delay_ms": 20})
    response = await _chat(upstream, mock, stream=True)
    chunks = [chunk async for chunk in response.iter_chunks()]  # type: ignore[attr-defined]
    await response.close()  # type: ignore[attr-defined]
    assert len(chunks) > 3
    assert b"".join(chunks).endswith(b"data: [DONE]\n\n")


async def test_connections_are_reused(upstream: UpstreamClient, mock: MockProvider) -> None:
    for _ in range(5):
        response = await _chat(upstream, mock)
        await response.read(5)  # type: ignore[attr-defined]
    peers = {r["peer"] for r in mock.stats()["last_requests"]}
    assert mock.calls() == 5
    assert len(peers) == 1  # one pooled keep-alive connection


async def test_a_closed_port_is_a_connect_error(upstream: UpstreamClient) -> None:
    with pytest.raises(UpstreamConnectError):
        await upstream.send(
            "GET", f"http://127.0.0.1:{free_port()}/v1/models", headers={}, body=None, timeout_s=2
        )


async def test_a_silent_provider_times_out(upstream: UpstreamClient, mock: MockProvider) -> None:
    mock.faults({"hang": True})
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamTimeout):
        await upstream.send(
            "POST",
            mock.base_url + "/chat/completions",
            headers=JSON,
            body=orjson.dumps(chat_body()),
            timeout_s=0.3,
        )
    assert loop.time() - started < 2


async def test_a_dropped_connection_is_a_connect_error(
    upstream: UpstreamClient, mock: MockProvider
) -> None:
    mock.faults({"drop": True})
    with pytest.raises(UpstreamConnectError):
        await _chat(upstream, mock)


async def test_a_stream_cut_midway_is_a_broken_body(
    upstream: UpstreamClient, mock: MockProvider
) -> None:
    mock.faults({"drop_after_chunks": 2})
    response = await _chat(upstream, mock, stream=True)
    with pytest.raises(UpstreamBrokenBody):
        async for _ in response.iter_chunks():  # type: ignore[attr-defined]
            pass
    await response.close()  # type: ignore[attr-defined]
