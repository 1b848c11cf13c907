"""The Anthropic adapter: OpenAI requests in, Messages API requests out; Anthropic answers,
streams and errors back to OpenAI's format. Fed by the recorded-shape fixtures under
``fixtures/wire``; the last tests run the adapter against the bundled mock provider over HTTP.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from aigateway.errors import (
    GatewayError,
    GatewayTimeout,
    InvalidRequest,
    ProviderAuthFailed,
    ProviderError,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
)
from aigateway.hotpath import SSEDecoder
from aigateway.providers.anthropic import AnthropicAdapter
from aigateway.providers.base import StreamTranslator, UpstreamCall
from servers import MockProvider
from wire_fixtures import chat, fixture, fixture_json, http_fixture, sent, user

KEY = "sk-ant-test-0123456789"
BASE = "https://api.anthropic.com/v1"
MODEL = "claude-sonnet-4-5"


def run_stream(translator: StreamTranslator, raw: bytes, piece: int = 9) -> list[dict[str, Any]]:
    """Decode ``raw`` like the relay does (arriving in small pieces) and translate every event."""
    decoder = SSEDecoder()
    out: list[bytes] = []
    for start in range(0, len(raw), piece):
        for data in decoder.feed(raw[start : start + piece]):
            out.extend(translator.event(data))
    for data in decoder.flush():
        out.extend(translator.event(data))
    out.extend(translator.end())
    chunks = [json.loads(chunk) for chunk in out]
    # Every stream ends with its usage chunk (the gateway needs it); a client that did not
    # ask for it never sees it (core.streaming.without_usage), and neither do these tests.
    if not any("usage" in c and c["choices"] for c in chunks):
        assert chunks and chunks[-1]["choices"] == [] and "usage" in chunks[-1]
        chunks = chunks[:-1]
    return chunks


@pytest.fixture
def adapter() -> AnthropicAdapter:
    return AnthropicAdapter("anthropic", BASE + "/", KEY)


# ------------------------------------------------------------------------------------ requests


def test_chat_request_is_built_as_the_fixture(adapter: AnthropicAdapter) -> None:
    call = adapter.chat_call(chat(fixture_json("openai/chat.request.json")), MODEL)
    assert (call.method, call.url) == ("POST", BASE + "/messages")
    assert call.headers["x-api-key"] == KEY
    assert call.headers["anthropic-version"] == "2023-06-01"
    assert call.headers["content-type"] == "application/json"
    # system + developer as top-level system blocks, data URL as a base64 image source,
    # max_completion_tokens as max_tokens, tools with input_schema, user as metadata.user_id
    assert sent(call) == fixture_json("anthropic/messages.request.expected.json")
    assert KEY not in repr(adapter)


def test_streaming_request(adapter: AnthropicAdapter) -> None:
    body = fixture_json("openai/chat.request.json")
    call = adapter.chat_call(chat({**body, "stream": True}, stream=True), MODEL)
    assert call.url == BASE + "/messages"
    assert call.headers["accept"] == "text/event-stream"
    assert sent(call) == {
        **fixture_json("anthropic/messages.request.expected.json"),
        "stream": True,
    }


def test_tool_history_request_is_built_as_the_fixture(adapter: AnthropicAdapter) -> None:
    # tool_calls as tool_use blocks (arguments parsed), tool messages as tool_result blocks of
    # one user turn that also takes the next user message, default max_tokens, a forced
    # function with parallel_tool_calls false
    call = adapter.chat_call(chat(fixture_json("openai/chat.request.tool_history.json")), MODEL)
    assert sent(call) == fixture_json("anthropic/messages.request.tool_history.expected.json")


def test_https_image_is_sent_as_a_url_source(adapter: AnthropicAdapter) -> None:
    call = adapter.chat_call(chat(fixture_json("openai/chat.request.https_image.json")), MODEL)
    assert sent(call) == fixture_json("anthropic/messages.request.https_image.expected.json")


def test_max_tokens_default_is_configurable() -> None:
    small = AnthropicAdapter("anthropic", BASE, KEY, default_max_tokens=100)
    assert sent(small.chat_call(chat(user("hi")), MODEL))["max_tokens"] == 100
    assert sent(small.chat_call(chat(user("hi", max_tokens=7)), MODEL))["max_tokens"] == 7
    with pytest.raises(ValueError, match="default_max_tokens"):
        AnthropicAdapter("anthropic", BASE, KEY, default_max_tokens=0)


def test_no_key_no_key_header() -> None:
    call = AnthropicAdapter("anthropic", BASE, None).chat_call(chat(user("hi")), MODEL)
    assert "x-api-key" not in call.headers
    assert call.headers["anthropic-version"] == "2023-06-01"


def test_sampling_parameters(adapter: AnthropicAdapter) -> None:
    body = user("hi", temperature=1, top_p=0.3, top_k=5, stop="END", seed=3, n=1)
    # Claude 4 still takes temperature with top_p (4.5 does not: test_translate_anthropic.py)
    request = sent(adapter.chat_call(chat(body), "claude-sonnet-4-20250514"))
    assert (request["temperature"], request["top_p"], request["top_k"]) == (1, 0.3, 5)
    assert request["stop_sequences"] == ["END"]
    assert "seed" not in request  # best effort in OpenAI too; Anthropic has none


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": 1.5}, "temperature"),
        ({"n": 2}, "n"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": 1}, "frequency_penalty"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools[0].function.name",
        ),
    ],
)
def test_values_anthropic_cannot_take_are_400s_naming_them(
    adapter: AnthropicAdapter, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        adapter.chat_call(chat(user("hi", **extra)), MODEL)
    assert caught.value.status == 400
    assert caught.value.param == param
    assert param in caught.value.message


def test_neutral_values_of_unsupported_parameters_pass(adapter: AnthropicAdapter) -> None:
    body = user(
        "hi",
        presence_penalty=0,
        frequency_penalty=0.0,
        logprobs=False,
        response_format={"type": "text"},
    )
    assert set(sent(adapter.chat_call(chat(body), MODEL))) == {"model", "max_tokens", "messages"}


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice(adapter: AnthropicAdapter, choice: Any, parallel: Any, expected: Any) -> None:
    extra: dict[str, Any] = {"tools": [{"type": "function", "function": {"name": "f"}}]}
    if choice is not None:
        extra["tool_choice"] = choice
    if parallel is not None:
        extra["parallel_tool_calls"] = parallel
    request = sent(adapter.chat_call(chat(user("hi", **extra)), MODEL))
    assert request["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]
    assert request["tool_choice"] == expected


def test_empty_text_is_left_out_and_consecutive_turns_merge(adapter: AnthropicAdapter) -> None:
    messages = [
        {"role": "user", "content": "first"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "  "}, {"type": "text", "text": "second"}],
        },
        {"role": "assistant", "content": ""},  # an empty turn Anthropic would reject: dropped
        {"role": "user", "content": "third"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
    ]
    request = sent(adapter.chat_call(chat({"model": "m", "messages": messages}), MODEL))
    assert request["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "first"},
                {"type": "text", "text": "second"},
                {"type": "text", "text": "third"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "I can't."}]},
    ]


def test_pdf_files_become_documents(adapter: AnthropicAdapter) -> None:
    part = {
        "type": "file",
        "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
    }
    body = {"model": "m", "messages": [{"role": "user", "content": [part]}]}
    (block,) = sent(adapter.chat_call(chat(body), MODEL))["messages"][0]["content"]
    assert block == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
    }


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "system", "content": "only a system prompt"}], "messages"),
        ([{"role": "user", "content": " "}], "messages[0].content"),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}
                    ],
                }
            ],
            "messages[0].content[0].image_url.url",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}],
                }
            ],
            "messages[0].content[0].image_url.url",
        ),
        (
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
            "messages[0].content[0].type",
        ),
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
        (
            [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}],
            "messages[0].tool_calls[0].id",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}],
                }
            ],
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
)
def test_messages_anthropic_cannot_take_are_400s(
    adapter: AnthropicAdapter, messages: list[Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        adapter.chat_call(chat({"model": "m", "messages": messages}), MODEL)
    assert caught.value.param == param


def test_jpg_media_type_is_normalised(adapter: AnthropicAdapter) -> None:
    part = {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/"}}
    body = {"model": "m", "messages": [{"role": "user", "content": [part]}]}
    (block,) = sent(adapter.chat_call(chat(body), MODEL))["messages"][0]["content"]
    assert block["source"] == {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}


# -------------------------------------------------------------------------------------- answers


def answer_of(adapter: AnthropicAdapter, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        adapter.chat_response(fixture(name), chat(user("x")), MODEL)
    )
    return result


def test_text_answer(adapter: AnthropicAdapter) -> None:
    answer = answer_of(adapter, "anthropic/messages.response.json")
    assert answer["id"] == "chatcmpl-msg_01Xq2Bv7Rk9Pw4Ls6Dt8Nm3C"
    assert answer["object"] == "chat.completion"
    assert abs(answer["created"] - time.time()) < 60
    assert answer["model"] == "claude-sonnet-4-5-20250929"
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "This looks like Bergen harbour; it is 7 degrees and raining there.",
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    # prompt = input + cache writes + cache reads; cached = cache reads
    assert answer["usage"] == {
        "prompt_tokens": 1250,
        "completion_tokens": 42,
        "total_tokens": 1292,
        "prompt_tokens_details": {"cached_tokens": 1000},
    }


def test_tool_use_answer(adapter: AnthropicAdapter) -> None:
    (choice,) = answer_of(adapter, "anthropic/messages.response.tool_use.json")["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me look both up."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_01Oslo4Xc7Nq2Hj8Kp5Rt3Ys",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location":"Oslo, NO"}'},
        },
        {
            "id": "toolu_01Lima9Wm4Xc7Nq2Hj8Kp5Rt",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location":"Lima, PE"}'},
        },
    ]


@pytest.mark.parametrize(
    ("name", "finish", "content"),
    [
        ("messages.response.max_tokens.json", "length", "The forecast for tomorrow is"),
        ("messages.response.stop_sequence.json", "stop", "Sunny, 21 degrees."),
        ("messages.response.refusal.json", "content_filter", ""),
    ],
)
def test_stop_reasons(adapter: AnthropicAdapter, name: str, finish: str, content: str) -> None:
    (choice,) = answer_of(adapter, "anthropic/" + name)["choices"]
    assert (choice["finish_reason"], choice["message"]["content"]) == (finish, content)


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("some_future_reason", "stop"),
    ],
)
def test_every_stop_reason_has_a_finish_reason(
    adapter: AnthropicAdapter, reason: str, finish: str
) -> None:
    raw = orjson.dumps(
        {"id": "msg_1", "content": [{"type": "text", "text": "x"}], "stop_reason": reason}
    )
    answer = json.loads(adapter.chat_response(raw, chat(user("x")), MODEL))
    assert answer["choices"][0]["finish_reason"] == finish
    assert answer["model"] == MODEL  # no model in the answer: the model asked for
    assert answer["usage"]["total_tokens"] == 0


def test_unusable_answer_is_a_provider_error(adapter: AnthropicAdapter) -> None:
    with pytest.raises(ProviderError):
        adapter.chat_response(b"<html>", chat(user("x")), MODEL)


# -------------------------------------------------------------------------------------- streams


def test_text_stream_skips_ping_thinking_citations_and_unknown_events(
    adapter: AnthropicAdapter,
) -> None:
    raw = fixture("anthropic/messages.stream.sse.txt")
    chunks = run_stream(adapter.chat_stream(chat(user("x"), stream=True), MODEL), raw)
    assert {c["id"] for c in chunks} == {"chatcmpl-msg_01St7Zk2VbN4mTxR8sYw3LpD"}
    assert {c["model"] for c in chunks} == {"claude-sonnet-4-5-20250929"}
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Bergen"},
        {"content": " is rainy today."},
        {},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_usage_chunk_only_when_asked(adapter: AnthropicAdapter) -> None:
    body = user("x", stream=True, stream_options={"include_usage": True})
    raw = fixture("anthropic/messages.stream.sse.txt")
    chunks = run_stream(adapter.chat_stream(chat(body, stream=True), MODEL), raw)
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    # input from message_start (cache reads included), output from message_delta (cumulative)
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 320,
        "completion_tokens": 9,
        "total_tokens": 329,
        "prompt_tokens_details": {"cached_tokens": 300},
    }


def test_tool_use_stream_renumbers_tool_calls_from_zero(adapter: AnthropicAdapter) -> None:
    raw = fixture("anthropic/messages.stream.tool_use.sse.txt")
    chunks = run_stream(adapter.chat_stream(chat(user("x"), stream=True), MODEL), raw)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[:3] == [
        {"role": "assistant", "content": ""},
        {"content": "Let me look both up."},
        {
            "tool_calls": [
                {
                    "index": 0,  # content block 1
                    "id": "toolu_01Oslo4Xc7Nq2Hj8Kp5Rt3Ys",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
    ]
    arguments: dict[int, str] = {}
    for delta in deltas[2:]:
        for call in delta.get("tool_calls", ()):
            arguments[call["index"]] = (
                arguments.get(call["index"], "") + call["function"]["arguments"]
            )
    assert arguments == {0: '{"location": "Oslo, NO"}', 1: '{"location": "Lima, PE"}'}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_cut_before_the_stop_reason_is_incomplete(adapter: AnthropicAdapter) -> None:
    raw = fixture("anthropic/messages.stream.truncated.sse.txt")
    with pytest.raises(ProviderError, match="ended before the answer was complete"):
        run_stream(adapter.chat_stream(chat(user("x"), stream=True), MODEL), raw)


def test_stream_finished_but_without_message_stop_still_ends(adapter: AnthropicAdapter) -> None:
    raw = fixture("anthropic/messages.stream.sse.txt").rsplit(b"event: message_stop", 1)[0]
    body = user("x", stream=True, stream_options={"include_usage": True})
    chunks = run_stream(adapter.chat_stream(chat(body, stream=True), MODEL), raw)
    assert chunks[-1]["usage"]["completion_tokens"] == 9


def test_error_event_inside_a_stream(adapter: AnthropicAdapter) -> None:
    raw = fixture("anthropic/error.in_stream.sse.txt")
    translator = adapter.chat_stream(chat(user("x"), stream=True), MODEL)
    with pytest.raises(ProviderUnavailable) as caught:
        run_stream(translator, raw)
    assert "Overloaded" in caught.value.message
    bad_request = b'{"type":"error","error":{"type":"invalid_request_error","message":"no"}}'
    with pytest.raises(InvalidRequest):
        adapter.chat_stream(chat(user("x"), stream=True), MODEL).event(bad_request)


# --------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("name", "kind", "retryable", "retry_after", "status"),
    [
        ("error.400.invalid_request.http", InvalidRequest, False, None, 400),
        ("error.401.authentication.http", ProviderAuthFailed, False, None, 502),
        ("error.402.billing.http", QuotaExceeded, False, None, 429),
        ("error.404.not_found.http", InvalidRequest, False, None, 404),
        ("error.429.rate_limit.http", RateLimited, True, 17.0, 429),
        ("error.429.spend_limit.http", QuotaExceeded, False, None, 429),
        ("error.500.api_error.http", ProviderError, True, None, 502),
        ("error.504.timeout.http", GatewayTimeout, True, None, 504),
        ("error.529.overloaded.http", ProviderUnavailable, True, None, 503),
    ],
)
def test_errors_are_classified(
    adapter: AnthropicAdapter,
    name: str,
    kind: type[GatewayError],
    retryable: bool,
    retry_after: float | None,
    status: int,
) -> None:
    http_status, headers, body = http_fixture("anthropic/" + name)
    failure = adapter.classify_error(http_status, headers, body)
    assert type(failure.error) is kind
    assert (failure.retryable, failure.retry_after_s, failure.error.status) == (
        retryable,
        retry_after,
        status,
    )
    assert KEY not in failure.error.message
    if kind is ProviderAuthFailed:
        assert "ANTHROPIC_API_KEY" in failure.error.message


def test_refusals_pass_the_providers_message_and_type_on(adapter: AnthropicAdapter) -> None:
    status, headers, body = http_fixture("anthropic/error.404.not_found.http")
    error = adapter.classify_error(status, headers, body).error
    assert (error.message, error.code) == ("model: claude-nonexistent-1", "not_found_error")
    assert type(adapter.classify_error(503, {}, b"").error) is ProviderUnavailable


# --------------------------------------------------------------------------------------- models


def test_models_list(adapter: AnthropicAdapter) -> None:
    call = adapter.models_call()
    assert (call.method, call.url) == ("GET", BASE + "/models?limit=1000")
    assert call.headers["x-api-key"] == KEY
    assert call.headers["anthropic-version"] == "2023-06-01"
    assert adapter.models_response(fixture("anthropic/models.list.response.json")) == [
        {
            "id": "claude-sonnet-4-5-20250929",
            "object": "model",
            "created": 1759104000,
            "owned_by": "anthropic",
        },
        {
            "id": "claude-haiku-4-5-20251001",
            "object": "model",
            "created": 1760486400,
            "owned_by": "anthropic",
        },
    ]
    with pytest.raises(ProviderError):
        adapter.models_response(b'{"models": []}')


# ------------------------------------------------------------------- against the mock provider


def send(call: UpstreamCall) -> httpx.Response:
    return httpx.request(
        call.method, call.url, headers=dict(call.headers), content=call.body, timeout=10
    )


@pytest.fixture(scope="module")
def keyed_mock() -> Iterator[MockProvider]:
    provider = MockProvider("--api-key", KEY)
    yield provider
    provider.stop()


@pytest.mark.e2e
def test_mock_chat_answers_like_the_openai_mock(keyed_mock: MockProvider) -> None:
    live = AnthropicAdapter("anthropic", keyed_mock.url + "/anthropic/v1", KEY)
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello mock provider"},
        ],
    }
    request = chat(body)
    response = send(live.chat_call(request, "claude-sonnet-4-5-20250929"))
    assert response.status_code == 200, response.text
    answer = json.loads(live.chat_response(response.content, request, "claude-sonnet-4-5-20250929"))
    reference = httpx.post(
        keyed_mock.base_url + "/chat/completions",
        json={**body, "model": "gpt-4o-mini"},
        headers={"Authorization": f"Bearer {KEY}"},
    ).json()
    assert (
        answer["choices"][0]["message"]["content"] == reference["choices"][0]["message"]["content"]
    )
    assert answer["usage"]["total_tokens"] == reference["usage"]["total_tokens"]

    streamed = chat(
        {**body, "stream": True, "stream_options": {"include_usage": True}}, stream=True
    )
    response = send(live.chat_call(streamed, "claude-sonnet-4-5-20250929"))
    assert b"event: ping" in response.content
    chunks = run_stream(live.chat_stream(streamed, "claude-sonnet-4-5-20250929"), response.content)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Mock reply to: Hello mock provider"
    assert chunks[-1]["usage"] == answer["usage"]

    wrong = AnthropicAdapter("anthropic", keyed_mock.url + "/anthropic/v1", "sk-ant-wrong")
    response = send(wrong.chat_call(request, "claude-sonnet-4-5-20250929"))
    failure = wrong.classify_error(response.status_code, dict(response.headers), response.content)
    assert response.status_code == 401
    assert type(failure.error) is ProviderAuthFailed


@pytest.mark.e2e
def test_mock_tool_call_round_trip(mock: MockProvider) -> None:
    live = AnthropicAdapter("anthropic", mock.url + "/anthropic/v1", "any")
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        },
    }
    first = chat(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "weather in Paris?"}],
            "tools": [tool],
            "stream": True,
        },
        stream=True,
    )
    response = send(live.chat_call(first, MODEL))
    chunks = run_stream(live.chat_stream(first, MODEL), response.content)
    (call,) = chunks[1]["choices"][0]["delta"]["tool_calls"]
    arguments = "".join(
        c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[1:-1]
    )
    assert json.loads(arguments) == {"location": "Paris"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": arguments},
            }
        ],
    }
    history = [
        *first.body["messages"],
        message,
        {"role": "tool", "tool_call_id": call["id"], "content": "Sunny"},
    ]
    second = chat({"model": "m", "messages": history, "tools": [tool]})
    response = send(live.chat_call(second, MODEL))
    assert response.status_code == 200, response.text
    reply = json.loads(live.chat_response(response.content, second, MODEL))
    assert reply["choices"][0]["finish_reason"] == "stop"

    stray = [history[0], {"role": "tool", "tool_call_id": "toolu_unknown", "content": "x"}]
    response = send(live.chat_call(chat({"model": "m", "messages": stray}), MODEL))
    failure = live.classify_error(response.status_code, dict(response.headers), response.content)
    assert type(failure.error) is InvalidRequest  # the mock checks tool results like Anthropic
    assert "tool_use_id" in failure.error.message


@pytest.mark.e2e
def test_mock_faults_come_as_anthropic_errors(mock: MockProvider) -> None:
    live = AnthropicAdapter("anthropic", mock.url + "/anthropic/v1", "any")
    request = chat(user("hi"))
    mock.faults(
        {"status": 529},
        {"status": 429, "retry_after": 3},
        {"status": 429, "code": "insufficient_quota"},
    )
    failures = []
    for _ in range(3):
        response = send(live.chat_call(request, MODEL))
        failures.append(
            live.classify_error(response.status_code, dict(response.headers), response.content)
        )
    assert [type(f.error) for f in failures] == [ProviderUnavailable, RateLimited, QuotaExceeded]
    assert [(f.retryable, f.retry_after_s) for f in failures] == [
        (True, None),
        (True, 3.0),
        (False, None),
    ]

    streamed = chat({**user("hi"), "stream": True}, stream=True)
    mock.faults({"stream_error_after_chunks": 3})
    response = send(live.chat_call(streamed, MODEL))
    assert response.status_code == 200
    with pytest.raises(ProviderUnavailable):
        run_stream(live.chat_stream(streamed, MODEL), response.content)

    models = live.models_response(send(live.models_call()).content)
    assert "claude-sonnet-4-5-20250929" in {m["id"] for m in models}
