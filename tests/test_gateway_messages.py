"""Anthropic's Messages API on the gateway, spoken by the real anthropic SDK.

A real gateway (2 workers, cache on, a gateway key required) in front of the bundled mock;
the SDK is given only the gateway's URL and key. ``claude-*`` passes through to the mock's
Anthropic route, ``gpt-*`` and ``gemini-*`` are translated to the mock's OpenAI and Gemini
routes, and every answer and stream reads as Anthropic's. The cache, de-duplication and
failover work on ``/v1/messages`` as on chat; errors come in Anthropic's shape.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from servers import Gateway, MockProvider

pytestmark = pytest.mark.e2e

KEY = "gateway-key-for-messages"
MODELS = ["claude-sonnet-4-5", "gpt-4o-mini", "gemini-2.5-flash"]
PROVIDER = {"claude-sonnet-4-5": "anthropic", "gpt-4o-mini": "openai", "gemini-2.5-flash": "google"}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}


@pytest.fixture(scope="module")
def messages_gateway(
    mock_provider: MockProvider,
    flaky_provider: MockProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    config = tmp_path_factory.mktemp("messages") / "gateway.toml"
    config.write_text(
        f"""
[providers.flaky]
type = "anthropic"
base_url = "{flaky_provider.url}/anthropic/v1"

[aliases]
claude-then-gpt = ["flaky/claude-sonnet-4-5", "openai/gpt-4o-mini"]
"""
    )
    server = Gateway(
        mock_provider,
        CACHE_ENABLED="true",
        AI_GATEWAY_API_KEYS=KEY,
        AI_GATEWAY_CONFIG=str(config),
    )
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
def gateway_url(messages_gateway: Gateway, mock: MockProvider) -> str:
    headers = {"x-api-key": KEY}
    httpx.delete(messages_gateway.url + "/admin/cache", headers=headers).raise_for_status()
    return messages_gateway.url


@pytest.fixture
def client(gateway_url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway_url, api_key=KEY, max_retries=0) as sdk:
        yield sdk


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def last_request(mock: MockProvider) -> dict[str, Any]:
    request: dict[str, Any] = mock.stats()["last_requests"][-1]
    return request


# --- the SDK against every provider ------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_messages_create_answers_in_anthropics_shape(
    client: anthropic.Anthropic, mock: MockProvider, model: str
) -> None:
    raw = client.messages.with_raw_response.create(
        model=model, max_tokens=100, messages=user(f"Hello from {model}")
    )
    message = raw.parse()
    assert raw.headers["x-aigateway-provider"] == PROVIDER[model]
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == f"Mock reply to: Hello from {model}"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert mock.calls() == 1


@pytest.mark.parametrize("model", MODELS)
def test_messages_stream_delivers_anthropics_events(
    client: anthropic.Anthropic, mock: MockProvider, model: str
) -> None:
    with client.messages.stream(
        model=model, max_tokens=100, messages=user(f"Stream from {model}")
    ) as stream:
        kinds = [event.type for event in stream]
        message = stream.get_final_message()
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert kinds[-2] == "message_delta"
    assert {"content_block_start", "content_block_delta", "content_block_stop"} <= set(kinds)
    assert message.content[0].text == f"Mock reply to: Stream from {model}"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("model", MODELS)
def test_a_tool_use_then_its_tool_result_makes_a_conversation(
    client: anthropic.Anthropic, model: str, streamed: bool
) -> None:
    question = user(f"What is the weather in Paris? ({model}, {streamed})")
    asked: dict[str, Any] = {"model": model, "max_tokens": 100, "tools": [WEATHER_TOOL]}
    if streamed:
        with client.messages.stream(messages=question, **asked) as stream:
            first = stream.get_final_message()
    else:
        first = client.messages.create(messages=question, **asked)
    assert first.stop_reason == "tool_use"
    (call,) = [block for block in first.content if block.type == "tool_use"]
    assert call.name == "get_weather" and call.input == {"location": "Paris"}

    history = [
        *question,
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "22 C, sunny"}],
        },
    ]
    second = client.messages.create(messages=history, **asked)
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"


def test_count_tokens_asks_anthropic_for_claude(
    client: anthropic.Anthropic, mock: MockProvider
) -> None:
    raw = client.messages.with_raw_response.count_tokens(
        model="claude-sonnet-4-5", messages=user("Count these words please"), system="Be brief."
    )
    assert raw.headers["x-aigateway-token-count"] == "provider"
    assert raw.parse().input_tokens > 0
    assert mock.stats()["by_path"] == {"/anthropic/v1/messages/count_tokens": 1}


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gemini-2.5-flash"])
def test_count_tokens_estimates_for_other_providers(
    client: anthropic.Anthropic, mock: MockProvider, model: str
) -> None:
    text = "Count these words please"  # 24 characters
    raw = client.messages.with_raw_response.count_tokens(model=model, messages=user(text))
    assert raw.headers["x-aigateway-token-count"] == "estimate"
    assert raw.parse().input_tokens == math.ceil(len(text) / 4) + 3  # docs/api.md
    assert mock.calls() == 0


# --- claude passes through with nothing lost ------------------------------------------------


def test_top_k_reaches_claude_without_thinking(
    client: anthropic.Anthropic, mock: MockProvider
) -> None:
    sent = {"model": "claude-sonnet-4-5", "max_tokens": 64,
            "messages": [{"role": "user", "content": "Hi"}]}  # fmt: skip
    client.messages.create(**sent, extra_body={"top_k": 5})  # this SDK has no parameter
    assert last_request(mock)["body"] == {**sent, "top_k": 5}


def test_a_claude_request_reaches_anthropic_as_sent(
    client: anthropic.Anthropic, mock: MockProvider
) -> None:
    history = [
        {"role": "user", "content": "Think about the weather."},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Hmm.", "signature": "sig-from-anthropic"},
                {"type": "text", "text": "It is sunny."},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And tomorrow?", "cache_control": {"type": "ephemeral"}}
            ],
        },
    ]
    sent: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 2048,
        "system": [
            {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}
        ],
        "messages": history,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "metadata": {"user_id": "user-42"},
        "stop_sequences": ["\n\nHuman:"],
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "auto"},
    }
    # No top_k: Anthropic refuses it with thinking on (as the mock now does).
    message = client.messages.create(
        **sent, extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"}
    )
    reached = last_request(mock)
    assert reached["path"] == "/anthropic/v1/messages"
    assert reached["body"] == sent
    assert reached["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.signature.startswith("mock-signature-")
    assert text.type == "text"


def test_thinking_and_its_signature_stream_through(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=user("Think, then stream"),
    ) as stream:
        deltas = {e.delta.type for e in stream if e.type == "content_block_delta"}
        message = stream.get_final_message()
    assert {"thinking_delta", "signature_delta", "text_delta"} <= deltas
    assert message.content[0].type == "thinking"
    assert message.content[0].signature.startswith("mock-signature-")


def test_what_a_translated_target_cannot_take_is_refused_with_the_field_named(
    client: anthropic.Anthropic, mock: MockProvider
) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(
            model="gpt-4o-mini",
            max_tokens=100,
            messages=user("search the web"),
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )
    assert raised.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "tools.0.type" in raised.value.body["error"]["message"]  # type: ignore[index]
    assert mock.calls() == 0


# --- the pipeline: cache, de-duplication, failover ----------------------------------------------


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "gpt-4o-mini"])
def test_the_same_request_is_a_cache_hit_whole_and_streamed(
    client: anthropic.Anthropic, mock: MockProvider, model: str
) -> None:
    asked: dict[str, Any] = {"model": model, "max_tokens": 100, "messages": user("cache me")}
    first = client.messages.with_raw_response.create(**asked)
    second = client.messages.with_raw_response.create(**asked)
    assert first.headers["x-aigateway-cache"] == "miss"
    assert second.headers["x-aigateway-cache"] == "hit"
    assert second.parse().content == first.parse().content
    with client.messages.stream(**asked) as stream:
        replayed = stream.get_final_message()
    assert [b.model_dump() for b in replayed.content] == [
        b.model_dump() for b in first.parse().content
    ]
    assert replayed.usage.output_tokens == first.parse().usage.output_tokens
    assert mock.calls() == 1


def test_a_cached_claude_answer_keeps_its_thinking_and_signature(
    client: anthropic.Anthropic, mock: MockProvider
) -> None:
    asked: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 2048,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": user("think once, answer twice"),
    }
    with client.messages.stream(**asked) as stream:
        first = stream.get_final_message()
    raw = client.messages.with_raw_response.create(**asked)
    assert raw.headers["x-aigateway-cache"] == "hit"
    with client.messages.stream(**asked) as stream:
        replayed = stream.get_final_message()
    for again in (raw.parse(), replayed):
        assert [b.model_dump() for b in again.content] == [b.model_dump() for b in first.content]
    assert first.content[0].type == "thinking" and first.content[0].signature
    assert mock.calls() == 1


def test_a_messages_answer_is_never_a_chat_answer(gateway_url: str, mock: MockProvider) -> None:
    body = {"model": "gpt-4o-mini", "max_tokens": 10, "messages": user("same body, two APIs")}
    headers = {"x-api-key": KEY}
    for path in ("/v1/chat/completions", "/v1/messages"):
        response = httpx.post(gateway_url + path, json=body, headers=headers, timeout=30)
        assert response.status_code == 200
        assert response.headers["x-aigateway-cache"] == "miss"
    assert mock.calls() == 2


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_identical_concurrent_requests_share_one_provider_call(
    gateway_url: str, mock: MockProvider, stream: bool
) -> None:
    mock.faults(default={"latency_ms": 500})
    text = f"all together {stream}"
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": user(text)}

    async def one() -> str:
        sdk = anthropic.AsyncAnthropic(base_url=gateway_url, api_key=KEY, max_retries=0)
        async with sdk:
            if stream:
                async with sdk.messages.stream(**body) as events:
                    message = await events.get_final_message()
            else:
                message = await sdk.messages.create(**body)
        return str(message.content[0].text)  # type: ignore[union-attr]

    async def all_of_them() -> list[str]:
        return list(await asyncio.gather(*(one() for _ in range(10))))

    assert asyncio.run(all_of_them()) == [f"Mock reply to: {text}"] * 10
    assert mock.calls() == 1


@pytest.fixture
def overloaded(flaky_provider: MockProvider) -> Iterator[MockProvider]:
    flaky_provider.reset()
    flaky_provider.faults(default={"status": 529})
    yield flaky_provider
    flaky_provider.reset()


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_an_alias_fails_over_from_claude_to_gpt_and_still_answers_as_anthropic(
    client: anthropic.Anthropic, mock: MockProvider, overloaded: MockProvider, streamed: bool
) -> None:
    asked: dict[str, Any] = {
        "model": "claude-then-gpt",
        "max_tokens": 100,
        "messages": user(f"fail over {streamed}"),
    }
    if streamed:
        with client.messages.with_streaming_response.create(**asked, stream=True) as raw:
            provider = raw.headers["x-aigateway-provider"]
            kinds = [line[7:] for line in raw.iter_lines() if line.startswith("event: ")]
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    else:
        raw_answer = client.messages.with_raw_response.create(**asked)
        provider = raw_answer.headers["x-aigateway-provider"]
        assert raw_answer.parse().content[0].text == f"Mock reply to: fail over {streamed}"  # type: ignore[union-attr]
    assert provider == "openai"
    assert overloaded.calls() == 4  # the first try and 3 retries
    assert mock.stats()["by_path"] == {"/v1/chat/completions": 1}


def test_an_error_inside_a_stream_arrives_as_anthropics_error_event(
    client: anthropic.Anthropic, mock: MockProvider
) -> None:
    mock.faults({"stream_error_after_chunks": 3})
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        client.messages.stream(
            model="gpt-4o-mini", max_tokens=100, messages=user("break off")
        ) as stream,
    ):
        for _ in stream:
            pass
    assert raised.value.body["type"] == "error"  # type: ignore[index]
    assert raised.value.body["error"]["message"]  # type: ignore[index]


# --- errors and keys ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"model": "claude-sonnet-4-5", "messages": user("no max_tokens")},
        {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []},
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 10,
            "messages": [{"role": "system", "content": "no"}],
        },
        {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": user("x"), "temperature": 2},
        {
            "model": "gpt-4o-mini",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": [{"type": "text"}]}],
        },
    ],
    ids=["max_tokens missing", "no messages", "system role", "temperature 2", "text block"],
)
def test_bad_input_is_a_400_in_anthropics_error_shape(
    gateway_url: str, mock: MockProvider, body: dict[str, Any]
) -> None:
    response = httpx.post(
        gateway_url + "/v1/messages", json=body, headers={"x-api-key": KEY}, timeout=30
    )
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"]
    assert mock.calls() == 0


def test_a_body_that_is_not_json_is_a_400_too(gateway_url: str) -> None:
    response = httpx.post(
        gateway_url + "/v1/messages", content=b"{nope", headers={"x-api-key": KEY}, timeout=30
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "not-a-gateway-key"}], ids=["none", "wrong"])
def test_a_missing_or_wrong_key_is_a_401_in_anthropics_shape(
    gateway_url: str, headers: dict[str, str]
) -> None:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": user("let me in")}
    response = httpx.post(gateway_url + "/v1/messages", json=body, headers=headers, timeout=30)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    with (
        anthropic.Anthropic(base_url=gateway_url, api_key="wrong", max_retries=0) as sdk,
        pytest.raises(anthropic.AuthenticationError),
    ):
        sdk.messages.create(**body)


def test_the_key_also_works_as_a_bearer_token(gateway_url: str) -> None:
    with anthropic.Anthropic(base_url=gateway_url, auth_token=KEY, max_retries=0) as sdk:
        message = sdk.messages.create(model="gpt-4o-mini", max_tokens=10, messages=user("bearer"))
    assert message.type == "message"


def test_the_stream_is_named_server_sent_events(gateway_url: str) -> None:
    body = {"model": "gemini-2.5-flash", "max_tokens": 50, "messages": user("raw"), "stream": True}
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    with httpx.stream(
        "POST", gateway_url + "/v1/messages", json=body, headers=headers, timeout=30
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    events = [event for event in text.split("\n\n") if event]
    for event in events:
        name, data = event.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        assert orjson.loads(data[6:])["type"] == name[7:]
    assert "[DONE]" not in text
