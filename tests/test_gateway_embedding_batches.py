"""Coalesced embeddings over real HTTP: fewer, fuller provider calls, and every client's
own deadline kept (the timing rules are pinned in tests/test_embedding_batches.py).

The session's gateway runs 2 workers with BATCH_SIZE=10; the mock provider is slowed by
its ``latency_ms`` fault and counts the calls it gets.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from servers import Gateway, MockProvider

pytestmark = pytest.mark.e2e

Result = tuple[int, float]  # status, seconds


async def _embed(
    url: str, texts: list[str], *, gap_s: float = 0.0, headers: list[dict[str, str]] | None = None
) -> list[Result]:
    """One request per text, the i-th sent ``i * gap_s`` after the first."""
    limits = httpx.Limits(max_connections=len(texts) + 1)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(i: int) -> Result:
            await asyncio.sleep(i * gap_s)
            started = time.monotonic()
            response = await client.post(
                "/v1/embeddings",
                json={"model": "text-embedding-3-small", "input": texts[i]},
                headers=(headers or [{}] * len(texts))[i],
            )
            return response.status_code, time.monotonic() - started

        return list(await asyncio.gather(*(one(i) for i in range(len(texts)))))


def test_requests_spread_in_time_gather_while_a_call_is_in_flight(
    gateway: Gateway, mock: MockProvider
) -> None:
    # 15 ms apart: no two requests meet within the 10 ms idle window, so only the calls
    # in flight (300 ms each) make them gather. Each request alone would be 32 calls.
    mock.faults(default={"latency_ms": 300})
    results = asyncio.run(_embed(gateway.url, [f"spread {i}" for i in range(32)], gap_s=0.015))
    assert [status for status, _ in results] == [200] * 32
    # Per worker: the first request alone, then those that came during each call.
    assert mock.calls() <= 8


def test_each_merged_request_gets_504_at_its_own_deadline(
    gateway: Gateway, mock: MockProvider
) -> None:
    mock.faults(default={"latency_ms": 1500})
    hurried = {"x-aigateway-timeout-ms": "300"}
    texts = [f"hurried {i}" for i in range(6)] + ["patient"]
    results = asyncio.run(_embed(gateway.url, texts, headers=[hurried] * 6 + [{}]))
    assert [status for status, _ in results] == [504] * 6 + [200]
    # Far below the provider's 1.5 s: they did not wait for the call they shared.
    assert max(seconds for _, seconds in results[:6]) < 1.2
