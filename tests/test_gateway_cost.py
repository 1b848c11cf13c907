"""What answers cost, over real HTTP: a gateway (two workers, cache on) in front of the
bundled mock, with prices the test sets in a configuration file.

Every answer that carries usage says its cost in ``x-aigateway-cost`` (USD): its usage
times the model's price. An answer from the cache costs 0, and what it would have cost
is counted as avoided. A stream's headers leave before its usage comes, so a stream from
a provider has no header; its cost is counted (spend, log line) when its usage arrives.
``/metrics`` and ``/admin/stats`` show the sums.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from servers import Gateway, MockProvider, chat_body, wait_for

pytestmark = pytest.mark.e2e

# USD per million tokens: a token of gpt-4o-mini costs a tenth of a cent in, two out.
INPUT, OUTPUT = 1000.0, 2000.0
PRICES = f"""
[prices."gpt-4o-mini"]
input = {INPUT}
output = {OUTPUT}

[prices."text-embedding-3-small"]
input = 50
output = 0

[prices."claude-haiku-4-5"]
input = 300
output = 600
"""
SPEND = 'aigateway_spend_usd_total{{provider="{}",model="{}"}}'
AVOIDED = 'aigateway_avoided_usd_total{{provider="{}",model="{}",via="cache"}}'


@pytest.fixture(scope="module")
def priced(mock_provider: MockProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = tmp_path_factory.mktemp("prices") / "gateway.toml"
    config.write_text(PRICES)
    gateway = Gateway(mock_provider, CACHE_ENABLED="true", AI_GATEWAY_CONFIG=str(config))
    yield gateway.url
    assert gateway.stop() == 0, gateway.log()


def post(url: str, body: dict[str, Any], path: str = "/v1/chat/completions") -> httpx.Response:
    response = httpx.post(url + path, json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response


def cost_of(usage: dict[str, Any], input_price: float, output_price: float) -> float:
    prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
    return (prompt * input_price + completion * output_price) / 1e6


def metric(url: str, sample: str) -> float:
    text = httpx.get(url + "/metrics").text
    found = re.search(re.escape(sample) + r" (\S+)", text)
    return float(found.group(1)) if found else 0.0


def test_an_answer_carries_its_cost_usage_times_price(priced: str) -> None:
    answer = post(priced, chat_body("what does this cost?"))
    usage = answer.json()["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert float(answer.headers["x-aigateway-cost"]) == pytest.approx(cost_of(usage, INPUT, OUTPUT))


def test_the_cost_is_a_plain_decimal(priced: str) -> None:
    shown = post(priced, chat_body("plain decimals please")).headers["x-aigateway-cost"]
    assert re.fullmatch(r"\d+(\.\d+)?", shown)


def test_a_cache_hit_costs_nothing_and_counts_as_savings(priced: str) -> None:
    body = chat_body("ask me twice", temperature=0.1)
    saved_before = metric(priced, AVOIDED.format("openai", "gpt-4o-mini"))
    first = post(priced, body)
    second = post(priced, body)
    assert second.headers["x-aigateway-cache"] == "hit"
    assert second.headers["x-aigateway-cost"] == "0"
    would_have = float(first.headers["x-aigateway-cost"])
    # The cache's counters reach /metrics within half a second (each worker's flush).
    saved = wait_for(
        lambda: (
            metric(priced, AVOIDED.format("openai", "gpt-4o-mini")) - saved_before
            >= would_have * 0.999
        )
    )
    assert saved
    after = metric(priced, AVOIDED.format("openai", "gpt-4o-mini")) - saved_before
    assert after == pytest.approx(would_have)


def test_spend_in_metrics_and_admin_stats_is_the_sum_of_the_answers_costs(priced: str) -> None:
    sample = SPEND.format("openai", "gpt-4o-mini")
    before = metric(priced, sample)
    stats_before = httpx.get(priced + "/admin/stats").json()["providers"]["openai"]
    costs = [
        float(post(priced, chat_body(f"count me {i}")).headers["x-aigateway-cost"])
        for i in range(5)
    ]
    assert metric(priced, sample) - before == pytest.approx(sum(costs))
    stats = httpx.get(priced + "/admin/stats").json()["providers"]["openai"]
    assert stats["spend_usd"] - stats_before["spend_usd"] == pytest.approx(sum(costs))
    model = stats["models"]["gpt-4o-mini"]
    before_model = stats_before["models"].get("gpt-4o-mini", {"spend_usd": 0.0})
    assert model["spend_usd"] - before_model["spend_usd"] == pytest.approx(sum(costs))


def test_embeddings_carry_their_cost(priced: str) -> None:
    body = {"model": "text-embedding-3-small", "input": ["one", "two and three"]}
    answer = post(priced, body, "/v1/embeddings")
    usage = answer.json()["usage"]
    assert float(answer.headers["x-aigateway-cost"]) == pytest.approx(cost_of(usage, 50, 0))


def test_messages_answers_carry_their_cost(priced: str) -> None:
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "cost in Anthropic's shape"}],
    }
    answer = post(priced, body, "/v1/messages")
    usage = answer.json()["usage"]
    assert float(answer.headers["x-aigateway-cost"]) == pytest.approx(cost_of(usage, 300, 600))


def test_responses_answers_carry_their_cost(priced: str) -> None:
    body = {"model": "gpt-4o-mini", "input": "cost in the Responses shape", "store": False}
    answer = post(priced, body, "/v1/responses")
    usage = answer.json()["usage"]
    assert float(answer.headers["x-aigateway-cost"]) == pytest.approx(cost_of(usage, INPUT, OUTPUT))


def test_an_unpriced_model_costs_nothing(priced: str) -> None:
    answer = post(priced, chat_body("free", model="gpt-house-unpriced"))
    assert answer.json()["usage"]["prompt_tokens"] > 0
    assert answer.headers["x-aigateway-cost"] == "0"


def test_a_stream_has_no_cost_header_but_its_usage_is_spent_when_it_ends(priced: str) -> None:
    sample = SPEND.format("openai", "gpt-4o-mini")
    before = metric(priced, sample)
    body = chat_body("stream my cost", stream=True, stream_options={"include_usage": True})
    with httpx.stream("POST", priced + "/v1/chat/completions", json=body, timeout=30) as answer:
        assert "x-aigateway-cost" not in answer.headers
        lines = [line for line in answer.iter_lines() if line.startswith("data: {")]
    usage = httpx.Response(200, content=lines[-1][6:]).json()["usage"]
    spent = wait_for(lambda: metric(priced, sample) - before)
    assert spent == pytest.approx(cost_of(usage, INPUT, OUTPUT))


def test_a_stream_from_the_cache_says_it_cost_nothing(priced: str) -> None:
    body = chat_body("stream me twice", temperature=0.2)
    post(priced, body)
    with httpx.stream(
        "POST", priced + "/v1/chat/completions", json={**body, "stream": True}, timeout=30
    ) as answer:
        assert answer.headers["x-aigateway-cache"] == "hit"
        assert answer.headers["x-aigateway-cost"] == "0"
        answer.read()


def test_the_request_log_line_says_what_each_answer_cost(
    mock_provider: MockProvider, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(PRICES)
    gateway = Gateway(mock_provider, MAX_WORKERS="1", AI_GATEWAY_CONFIG=str(config))
    try:
        cost = post(gateway.url, chat_body("log my cost")).headers["x-aigateway-cost"]
        body = chat_body("log my stream", stream=True, stream_options={"include_usage": True})
        with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body) as streamed:
            lines = [line for line in streamed.iter_lines() if line.startswith("data: {")]
        usage = httpx.Response(200, content=lines[-1][6:]).json()["usage"]
    finally:
        assert gateway.stop() == 0
    log = gateway.log()
    assert f'cost="{cost}"' in log or f"cost={cost} " in log
    logged = re.findall(r"cost=\"?([0-9.]+)", log)
    assert any(float(v) == pytest.approx(cost_of(usage, INPUT, OUTPUT)) for v in logged)
