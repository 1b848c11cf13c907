"""Misbehaving providers, over real HTTP: a gateway (2 workers) in front of two mock providers.

What a provider does wrong stays the provider's problem, and a client's choices stay the
client's:

* a provider that times a call out (408) is retried and then the next target of the
  fallback chain answers (every wire format and 504 too: tests/test_pipeline_faults.py);
* a 429 with an absurd ``Retry-After`` (600 s, ten digits, an HTTP date in 2099) pauses
  the provider for at most PROVIDER_PAUSE_MAX_SEC (default 60 s), its requests move on to
  the next target at once (even for a short pause), and a client is told a small number of
  seconds;
* a client's own short deadline does not count against the provider's health.

In process, without HTTP: a lone target's prompt 429 after a pause
(tests/test_pipeline_faults.py), and the gateway's own REQUEST_TIMEOUT_SEC counting
against the provider (tests/test_pipeline.py).

Every case uses providers of its own (names in the configuration file), so the node-wide
pauses and circuits one test leaves behind never touch another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from servers import Gateway, MockProvider, chat_body

pytestmark = pytest.mark.e2e

PAUSE_MAX_S = 60  # PROVIDER_PAUSE_MAX_SEC's default
# (provider, wire format, model, the status it times a call out with)
TIMING_OUT = [("late_openai", "openai", "gpt-4o-mini", 408)]
RETRY_AFTERS: list[Any] = [600, 2299607594, "Thu, 01 Jan 2099 00:00:00 GMT"]


def _config(flaky: MockProvider, slow_base_url: str) -> str:
    paths = {"openai": "/v1", "anthropic": "/anthropic/v1", "gemini": "/gemini/v1beta"}
    lines: list[str] = []
    aliases: list[str] = []
    for name, kind, model, _ in TIMING_OUT:
        lines += [f"[providers.{name}]", f'type = "{kind}"']
        lines += [f'base_url = "{flaky.url}{paths[kind]}"', ""]
        aliases.append(f'{name} = ["{name}/{model}", "openai/gpt-4o-mini"]')
    for i in range(len(RETRY_AFTERS)):
        for prefix in ("paused", "dated"):
            lines += [f"[providers.{prefix}{i}]", f'base_url = "{flaky.base_url}"', ""]
        aliases.append(f'paused{i} = ["paused{i}/gpt-4o-mini", "openai/gpt-4o-mini"]')
    lines += ["[providers.brief]", f'base_url = "{flaky.base_url}"', ""]
    aliases.append('brief = ["brief/gpt-4o-mini", "openai/gpt-4o-mini"]')
    lines += ["[providers.slow]", f'base_url = "{slow_base_url}"', ""]
    return "\n".join([*lines, "[aliases]", *aliases, ""])


@pytest.fixture(scope="module")
def faulty(
    mock_provider: MockProvider,
    flaky_provider: MockProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    config = tmp_path_factory.mktemp("faults") / "gateway.toml"
    config.write_text(_config(flaky_provider, mock_provider.base_url))
    gateway = Gateway(
        mock_provider,
        AI_GATEWAY_CONFIG=str(config),
        CIRCUIT_FAILURE_THRESHOLD="3",
        REQUEST_TIMEOUT_SEC="2",
        MAX_DELAY_MS="50",
    )
    yield gateway
    gateway.stop()


@pytest.fixture
def flaky(flaky_provider: MockProvider) -> MockProvider:
    flaky_provider.reset()
    return flaky_provider


def _chat(gateway: Gateway, model: str, **headers: str) -> httpx.Response:
    with gateway.client() as client:
        body = {**chat_body("misbehave"), "model": model}
        return client.post("/v1/chat/completions", json=body, headers=headers)


@pytest.mark.parametrize(
    ("name", "status"), [(name, status) for name, _, _, status in TIMING_OUT], ids=str
)
def test_a_provider_that_times_the_call_out_is_retried_then_the_next_target_answers(
    faulty: Gateway, flaky: MockProvider, mock: MockProvider, name: str, status: int
) -> None:
    flaky.faults(default={"status": status})
    response = _chat(faulty, name)
    assert response.status_code == 200, response.text
    assert response.headers["x-aigateway-provider"] == "openai"
    assert flaky.calls() == 4  # the first try and 3 retries: a failure of the provider
    assert mock.calls() == 1


@pytest.mark.parametrize("index", range(len(RETRY_AFTERS)), ids=lambda i: repr(RETRY_AFTERS[i]))
def test_a_long_retry_after_pauses_a_target_briefly_and_its_requests_move_on_at_once(
    faulty: Gateway, flaky: MockProvider, mock: MockProvider, index: int
) -> None:
    flaky.faults({"status": 429, "retry_after": RETRY_AFTERS[index]})  # the next call only
    alias = f"paused{index}"
    first = _chat(faulty, alias)
    assert first.status_code == 200, first.text
    assert first.headers["x-aigateway-provider"] == "openai"

    async def five_more() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=faulty.url, timeout=30) as client:
            body = {**chat_body("while paused"), "model": alias}
            calls = [client.post("/v1/chat/completions", json=body) for _ in range(5)]
            return list(await asyncio.gather(*calls))

    # The pause outlasts their 2 s deadline: each goes straight to the next target.
    for response in asyncio.run(five_more()):
        assert response.status_code == 200, response.text
        assert response.headers["x-aigateway-provider"] == "openai"
    assert flaky.calls() == 1  # the pause holds for the node: nobody called it again
    assert mock.calls() == 6

    queue = httpx.get(faulty.url + "/admin/queue").json()
    assert 0 < queue["providers"][alias]["paused_for_s"] <= PAUSE_MAX_S


def test_even_a_short_pause_is_not_waited_out_while_another_target_can_answer(
    faulty: Gateway, flaky: MockProvider, mock: MockProvider
) -> None:
    # A pause shorter than the 2 s deadline: a lone target would be waited for.
    flaky.faults({"status": 429, "retry_after": 1.5})  # the next call only
    first = _chat(faulty, "brief")
    assert first.headers.get("x-aigateway-provider") == "openai"

    async def three_more() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=faulty.url, timeout=30) as client:
            body = {**chat_body("during a short pause"), "model": "brief"}
            calls = [client.post("/v1/chat/completions", json=body) for _ in range(3)]
            return list(await asyncio.gather(*calls))

    responses = asyncio.run(three_more())
    assert [r.headers.get("x-aigateway-provider") for r in responses] == ["openai"] * 3
    assert flaky.calls() == 1  # nobody waited for the pause to end to call it again
    assert mock.calls() == 4


@pytest.mark.parametrize("index", range(len(RETRY_AFTERS)), ids=lambda i: repr(RETRY_AFTERS[i]))
def test_the_retry_after_a_client_is_told_is_a_small_number_of_seconds(
    faulty: Gateway, flaky: MockProvider, index: int
) -> None:
    flaky.faults(default={"status": 429, "retry_after": RETRY_AFTERS[index]})
    model = f"dated{index}/gpt-4o-mini"
    rate_limited = _chat(faulty, model)
    assert rate_limited.status_code == 429
    assert 1 <= int(rate_limited.headers["retry-after"]) <= PAUSE_MAX_S
    # While the provider is paused, a request without another target is refused at once.
    paused = _chat(faulty, model)
    assert paused.status_code == 429
    assert paused.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(paused.headers["retry-after"]) <= PAUSE_MAX_S
    assert flaky.calls() == 1


def test_a_clients_own_deadline_never_opens_the_providers_circuit(
    faulty: Gateway, mock: MockProvider
) -> None:
    mock.faults(default={"latency_ms": 300})
    for _ in range(6):  # twice the circuit's threshold
        response = _chat(faulty, "slow/gpt-4o-mini", **{"x-aigateway-timeout-ms": "20"})
        assert response.status_code == 504
        assert response.json()["error"]["type"] == "timeout_error"
    mock.faults(default=None)
    assert _chat(faulty, "slow/gpt-4o-mini").status_code == 200  # not 503 circuit_open
    health = httpx.get(faulty.url + "/health").json()
    assert health["providers"]["slow"]["state"] in ("healthy", "degraded")
