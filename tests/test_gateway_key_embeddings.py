"""Merged embedding calls charge each tenant key its own part, over real HTTP.

Embedding requests that arrive together share one provider call (``core.batching``).
Each caller's key is charged its own part of that call's usage, by its inputs' share of
the prompt tokens: its answer's ``usage``, priced at the model's price, is what its key
spends, and the parts add up to what the provider counted for the whole call.

One worker (so the requests meet in one batch); the mock provider takes 300 ms a call,
so requests sent while a call is in flight gather and leave together when it ends.
The configuration prices the embedding model at $1,000 per million input tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from servers import Gateway, MockProvider, wait_for

pytestmark = pytest.mark.e2e

MODEL = "text-embedding-3-small"
PRICE = 1000.0  # USD per million input tokens
PRICES = f'[prices."{MODEL}"]\ninput = {PRICE}\noutput = 0.0\n'


@pytest.fixture(scope="module")
def mock() -> Iterator[MockProvider]:
    provider = MockProvider()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def gateway(mock: MockProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = tmp_path_factory.mktemp("config") / "gateway.toml"
    config.write_text(PRICES)
    node = Gateway(
        mock,
        AI_GATEWAY_CONFIG=str(config),
        AI_GATEWAY_DATA_DIR=str(tmp_path_factory.mktemp("data")),
        MAX_WORKERS="1",
        BATCH_SIZE="10",
        BATCH_TIMEOUT_MS="2000",
        KEY_SPEND_FLUSH_MS="100",
    )
    yield node
    node.stop()


def make_key(gateway: Gateway, name: str) -> tuple[str, str]:
    answer = httpx.post(gateway.url + "/admin/keys", json={"name": name}, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"], answer.json()["key"]


async def embed_together(url: str, asks: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Each (secret, text) as its own request; the first alone, the rest while its call
    is in flight."""

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def one(secret: str, text: str, after_s: float) -> dict[str, Any]:
            await asyncio.sleep(after_s)
            answer = await client.post(
                "/v1/embeddings",
                json={"model": MODEL, "input": text},
                headers={"authorization": f"Bearer {secret}"},
            )
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        return list(
            await asyncio.gather(
                *(one(s, t, 0.0 if i == 0 else 0.1) for i, (s, t) in enumerate(asks))
            )
        )


def test_each_key_in_a_merged_embedding_call_is_charged_its_own_share(
    gateway: Gateway, mock: MockProvider
) -> None:
    opener_id, opener = make_key(gateway, "opener")
    short_id, short = make_key(gateway, "short")
    long_id, long = make_key(gateway, "long")
    mock.faults(default={"latency_ms": 300})
    before = mock.calls()
    answers = asyncio.run(
        embed_together(
            gateway.url,
            [(opener, "the first, alone"), (short, "tiny"), (long, "a much longer text " * 40)],
        )
    )
    assert mock.calls() - before == 2  # the opener's call, then the other two merged
    used = [answer["usage"]["prompt_tokens"] for answer in answers]
    assert 0 < used[1] < used[2]  # split by prompt, not one part per request

    def spent(key_id: str) -> dict[str, Any]:
        return dict(httpx.get(f"{gateway.url}/admin/keys/{key_id}", timeout=10).json())

    for key_id, prompt in zip((opener_id, short_id, long_id), used, strict=True):
        # The request is counted when admitted, its tokens when answered: a flush may
        # fall between the two, so wait for both.
        shown = wait_for(
            lambda k=key_id, p=prompt: (
                (s := spent(k))["usage"]["requests"] == 1 and s["usage"]["prompt_tokens"] == p and s
            )
        )
        assert shown, spent(key_id)
        assert shown["usage"]["prompt_tokens"] == prompt
        assert shown["spend"]["total_usd"] == pytest.approx(prompt * PRICE / 1e6)
        assert shown["spend"]["period_usd"] == pytest.approx(prompt * PRICE / 1e6)
