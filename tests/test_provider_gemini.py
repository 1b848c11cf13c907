"""The Gemini adapter: OpenAI requests in, Gemini v1beta requests out; Gemini answers, streams and
errors back to OpenAI's format. Fed by the recorded-shape fixtures under ``fixtures/wire``; the
last tests run the adapter against the bundled mock provider over real HTTP.
"""

from __future__ import annotations

import base64
import json
import struct
import time
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
from aigateway.providers._gemini_calls import Kept
from aigateway.providers.base import StreamTranslator, UpstreamCall
from aigateway.providers.gemini import GeminiAdapter
from aigateway.wire import ApiRequest
from servers import MockProvider
from wire_fixtures import chat, fixture, fixture_json, http_fixture, sent, user

KEY = "AIza-test-key-0123456789"
BASE = "https://generativelanguage.googleapis.com/v1beta"
MODEL = "gemini-2.5-flash"


def run_stream(translator: StreamTranslator, raw: bytes, piece: int = 7) -> list[dict[str, Any]]:
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
def adapter() -> GeminiAdapter:
    return GeminiAdapter("google", BASE + "/", KEY)


# ------------------------------------------------------------------------------------ requests


def test_chat_request_is_built_as_the_fixture(adapter: GeminiAdapter) -> None:
    call = adapter.chat_call(chat(fixture_json("openai/chat.request.json")), MODEL)
    assert call.method == "POST"
    assert call.url == f"{BASE}/models/{MODEL}:generateContent"
    assert call.headers["x-goog-api-key"] == KEY
    assert call.headers["content-type"] == "application/json"
    # systemInstruction from system + developer, roles user/model, data URL inlined without its
    # prefix, tools as functionDeclarations, tool_choice, generation parameters renamed
    assert sent(call) == fixture_json("gemini/generateContent.request.expected.json")
    assert KEY not in repr(adapter)


def test_streaming_request_asks_for_server_sent_events(adapter: GeminiAdapter) -> None:
    body = fixture_json("openai/chat.request.json")
    call = adapter.chat_call(chat({**body, "stream": True}, stream=True), MODEL)
    assert call.url == f"{BASE}/models/{MODEL}:streamGenerateContent?alt=sse"
    assert call.headers["accept"] == "text/event-stream"
    assert sent(call) == fixture_json("gemini/generateContent.request.expected.json")


def test_tool_history_request_is_built_as_the_fixture(adapter: GeminiAdapter) -> None:
    # the functionResponse names come from the assistant's tool_calls; a JSON-object result is
    # sent as is, any other result wrapped; tool results and the next user turn share one content;
    # a forced function is mode ANY restricted to it
    call = adapter.chat_call(chat(fixture_json("openai/chat.request.tool_history.json")), MODEL)
    assert sent(call) == fixture_json("gemini/generateContent.request.tool_history.expected.json")


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("gemini-2.0-flash", "models/gemini-2.0-flash"),
        ("models/gemini-2.0-flash", "models/gemini-2.0-flash"),
        ("tunedModels/my-model-1", "tunedModels/my-model-1"),
    ],
)
def test_model_goes_in_the_url(adapter: GeminiAdapter, model: str, path: str) -> None:
    assert adapter.chat_call(chat(user("hi")), model).url == f"{BASE}/{path}:generateContent"


def test_no_key_no_key_header() -> None:
    call = GeminiAdapter("google", BASE, None).chat_call(chat(user("hi")), MODEL)
    assert "x-goog-api-key" not in call.headers


def test_generation_parameters_map_to_generation_config(adapter: GeminiAdapter) -> None:
    body = user(
        "hi",
        temperature=1.7,
        top_p=0.5,
        top_k=20,
        max_tokens=64,
        stop="STOP",
        n=3,
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}},
        },
    )
    assert sent(adapter.chat_call(chat(body), MODEL))["generationConfig"] == {
        "temperature": 1.7,
        "topP": 0.5,
        "topK": 20,
        "maxOutputTokens": 64,
        "stopSequences": ["STOP"],
        "candidateCount": 3,
        "seed": 7,
        "presencePenalty": 0.5,
        "frequencyPenalty": -0.5,
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object"},
    }
    json_mode = user("hi", response_format={"type": "json_object"}, max_completion_tokens=9)
    config = sent(adapter.chat_call(chat(json_mode), MODEL))["generationConfig"]
    assert config == {"maxOutputTokens": 9, "responseMimeType": "application/json"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"stop": ["a", "b", "c", "d", "e", "f"]}, "stop"),
        ({"n": 9}, "n"),
        ({"temperature": 2.5}, "temperature"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ],
)
def test_values_gemini_cannot_take_are_400s_naming_them(
    adapter: GeminiAdapter, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        adapter.chat_call(chat(user("hi", **extra)), MODEL)
    assert caught.value.status == 400
    assert caught.value.param == param
    assert param in caught.value.message


def test_neutral_values_of_unsupported_parameters_pass(adapter: GeminiAdapter) -> None:
    body = user("hi", logprobs=False, logit_bias={}, n=1, modalities=["text"])
    assert "generationConfig" not in sent(adapter.chat_call(chat(body), MODEL))


def test_https_image_url_is_a_400_naming_the_part(adapter: GeminiAdapter) -> None:
    with pytest.raises(InvalidRequest) as caught:
        adapter.chat_call(chat(fixture_json("openai/chat.request.https_image.json")), MODEL)
    assert caught.value.param == "messages[0].content[1].image_url.url"
    assert "data:" in caught.value.message


def test_data_url_must_be_base64(adapter: GeminiAdapter) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png,not-base64"}}
    body = {"model": "m", "messages": [{"role": "user", "content": [image]}]}
    with pytest.raises(InvalidRequest) as caught:
        adapter.chat_call(chat(body), MODEL)
    assert caught.value.param == "messages[0].content[0].image_url.url"


def test_audio_and_pdf_parts_are_inlined(adapter: GeminiAdapter) -> None:
    content = [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a"},
        },
    ]
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    assert sent(adapter.chat_call(chat(body), MODEL))["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "system", "content": "only a system prompt"}], "messages"),
        ([{"role": "user", "content": ""}], "messages[0].content"),
        (
            [{"role": "user", "content": [{"type": "video", "video": {}}]}],
            "messages[0].content[0].type",
        ),
        ([{"role": "function", "name": "f", "content": "x"}], "messages[0].role"),
        (
            [{"role": "tool", "tool_call_id": "call_unknown", "content": "x"}],
            "messages[0].tool_call_id",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{oops"}}],
                }
            ],
            "messages[0].tool_calls[0].function.arguments",
        ),
        ([{"role": "system", "content": [{"type": "image_url"}]}], "messages[0].content[0]"),
    ],
)
def test_messages_gemini_cannot_take_are_400s(
    adapter: GeminiAdapter, messages: list[Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        adapter.chat_call(chat({"model": "m", "messages": messages}), MODEL)
    assert caught.value.param == param


def test_function_names_gemini_rejects_are_400s(adapter: GeminiAdapter) -> None:
    tool = {"type": "function", "function": {"name": "9-lives"}}
    with pytest.raises(InvalidRequest) as caught:
        adapter.chat_call(chat(user("hi", tools=[tool])), MODEL)
    assert caught.value.param == "tools[0].function.name"


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("none", {"mode": "NONE"}),
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "f"}},
            {"mode": "ANY", "allowedFunctionNames": ["f"]},
        ),
    ],
)
def test_tool_choice_becomes_function_calling_config(
    adapter: GeminiAdapter, choice: Any, config: dict[str, Any]
) -> None:
    tool = {"type": "function", "function": {"name": "f"}}  # no parameters: none sent
    request = sent(adapter.chat_call(chat(user("hi", tools=[tool], tool_choice=choice)), MODEL))
    assert request["tools"] == [{"functionDeclarations": [{"name": "f"}]}]
    assert request["toolConfig"] == {"functionCallingConfig": config}


# ------------------------------------------------------------------------ answers and call ids


def assert_recent(created: int) -> None:
    assert abs(created - time.time()) < 60


def test_text_answer(adapter: GeminiAdapter) -> None:
    answer = json.loads(
        adapter.chat_response(
            fixture("gemini/generateContent.response.json"), chat(user("x")), MODEL
        )
    )
    assert answer["id"] == "chatcmpl-kq3LaN-7H4ax1MkPq5aW8Ag"
    assert answer["object"] == "chat.completion"
    assert_recent(answer["created"])
    assert answer["model"] == "gemini-2.5-flash"
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                # the thought summary part is left out
                "content": "This looks like Bergen harbour; it is 7 degrees and raining there.",
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    # completion = candidates + thoughts; cached tokens are part of the prompt
    assert answer["usage"] == {
        "prompt_tokens": 120,
        "completion_tokens": 45,
        "total_tokens": 165,
        "prompt_tokens_details": {"cached_tokens": 100},
        "completion_tokens_details": {"reasoning_tokens": 30},
    }


def test_function_call_answer_gets_synthesised_ids(adapter: GeminiAdapter) -> None:
    raw = fixture("gemini/generateContent.response.function_call.json")
    answer = json.loads(adapter.chat_response(raw, chat(user("x")), MODEL))
    (choice,) = answer["choices"]
    assert choice["finish_reason"] == "tool_calls"  # Gemini said STOP
    message = choice["message"]
    assert message["content"] == "Checking both cities."
    oslo, lima = message["tool_calls"]
    assert oslo["type"] == lima["type"] == "function"
    assert oslo["function"] == {"name": "get_weather", "arguments": '{"location":"Oslo, NO"}'}
    assert lima["function"] == {"name": "get_weather", "arguments": '{"location":"Lima, PE"}'}
    assert oslo["id"] != lima["id"]
    assert all(len(c["id"]) <= 40 for c in (oslo, lima))  # OpenAI's limit
    # the signature and Gemini's own id stay with the gateway (test_translate_gemini.py)
    assert adapter.signatures.recall(oslo["id"]) == Kept(
        "get_weather", "CiQBVKhc7vB2bS1sZ25hdHVyZS0x", None
    )
    assert adapter.signatures.recall(lima["id"]) == Kept("get_weather", None, "fc-lima-7")
    assert answer["usage"]["prompt_tokens"] == 86  # prompt + tool-use prompt
    assert answer["usage"]["total_tokens"] == 110


def test_synthesised_ids_come_back_as_names_ids_and_signatures(adapter: GeminiAdapter) -> None:
    raw = fixture("gemini/generateContent.response.function_call.json")
    message = json.loads(adapter.chat_response(raw, chat(user("x")), MODEL))["choices"][0][
        "message"
    ]
    oslo, lima = message["tool_calls"]
    history = [
        {"role": "user", "content": "Weather in Oslo and Lima?"},
        message,
        {"role": "tool", "tool_call_id": oslo["id"], "content": '{"temperature": 4}'},
        {"role": "tool", "tool_call_id": lima["id"], "content": "19 degrees"},
    ]
    contents = sent(adapter.chat_call(chat({"model": "m", "messages": history}), MODEL))["contents"]
    assert contents[1] == {
        "role": "model",
        "parts": [
            {"text": "Checking both cities."},
            {
                "functionCall": {"name": "get_weather", "args": {"location": "Oslo, NO"}},
                "thoughtSignature": "CiQBVKhc7vB2bS1sZ25hdHVyZS0x",
            },
            {
                "functionCall": {
                    "name": "get_weather",
                    "args": {"location": "Lima, PE"},
                    "id": "fc-lima-7",
                }
            },
        ],
    }
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"temperature": 4}}},
        {
            "functionResponse": {
                "name": "get_weather",
                "response": {"content": "19 degrees"},
                "id": "fc-lima-7",
            }
        },
    ]
    # a client that kept only the tool results still names the function: the gateway kept it
    trimmed = [history[0], {"role": "tool", "tool_call_id": oslo["id"], "content": "4"}]
    contents = sent(adapter.chat_call(chat({"model": "m", "messages": trimmed}), MODEL))["contents"]
    assert contents[0]["parts"][1]["functionResponse"]["name"] == "get_weather"


def test_several_candidates_and_their_finish_reasons(adapter: GeminiAdapter) -> None:
    raw = fixture("gemini/generateContent.response.candidates.json")
    answer = json.loads(adapter.chat_response(raw, chat(user("x", n=2)), "gemini-2.0-flash"))
    first, second = answer["choices"]
    assert (first["index"], first["finish_reason"]) == (0, "length")
    assert first["message"]["content"] == "The forecast for tomorrow is"
    assert (second["index"], second["finish_reason"]) == (1, "content_filter")
    assert second["message"]["content"] == ""
    assert answer["id"].startswith("chatcmpl-")  # no responseId: one is made up


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("LANGUAGE", "content_filter"),
        ("OTHER", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
    ],
)
def test_finish_reasons(adapter: GeminiAdapter, reason: str, finish: str) -> None:
    candidate = {"content": {"parts": [{"text": "x"}]}, "finishReason": reason}
    raw = orjson.dumps({"candidates": [candidate]})
    answer = json.loads(adapter.chat_response(raw, chat(user("x")), MODEL))
    assert answer["choices"][0]["finish_reason"] == finish
    assert answer["model"] == MODEL  # no modelVersion: the model asked for


def test_blocked_prompt_is_a_content_filter_answer(adapter: GeminiAdapter) -> None:
    raw = fixture("gemini/generateContent.response.prompt_blocked.json")
    answer = json.loads(adapter.chat_response(raw, chat(user("x")), MODEL))
    assert answer["choices"][0]["finish_reason"] == "content_filter"
    assert answer["choices"][0]["message"]["content"] == ""
    assert answer["usage"]["prompt_tokens"] == 14


@pytest.mark.parametrize("body", [b"<html>", b"[]", b'{"usageMetadata": {}}'])
def test_unusable_answers_are_provider_errors(adapter: GeminiAdapter, body: bytes) -> None:
    with pytest.raises(ProviderError):
        adapter.chat_response(body, chat(user("x")), MODEL)


# ------------------------------------------------------------------------------------ streams


def test_text_stream(adapter: GeminiAdapter) -> None:
    request = chat(user("x", stream=True), stream=True)
    chunks = run_stream(
        adapter.chat_stream(request, MODEL), fixture("gemini/streamGenerateContent.sse.txt")
    )
    assert {c["id"] for c in chunks} == {"chatcmpl-c3RyZWFtLXRleHQtMDAx"}
    assert {c["model"] for c in chunks} == {"gemini-2.5-flash"}
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Bergen"},
        {"content": " is rainy"},
        {"content": " today."},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks][-2:] == [None, "stop"]


def test_stream_usage_chunk_only_when_asked(adapter: GeminiAdapter) -> None:
    body = user("x", stream=True, stream_options={"include_usage": True})
    raw = fixture("gemini/streamGenerateContent.sse.txt")
    chunks = run_stream(adapter.chat_stream(chat(body, stream=True), MODEL), raw)
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 11,
        "completion_tokens": 13,
        "total_tokens": 24,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 8},
    }


def test_function_call_stream(adapter: GeminiAdapter) -> None:
    raw = fixture("gemini/streamGenerateContent.function_call.sse.txt")
    chunks = run_stream(adapter.chat_stream(chat(user("x"), stream=True), MODEL), raw)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[:2] == [
        {"role": "assistant", "content": ""},
        {"content": "Checking both cities."},
    ]
    oslo, lima = deltas[2]["tool_calls"]
    assert (oslo["index"], lima["index"]) == (0, 1)
    assert oslo["function"] == {"name": "get_weather", "arguments": '{"location":"Oslo, NO"}'}
    assert adapter.signatures.recall(oslo["id"]) == Kept(
        "get_weather", "CiQBVKhc7vB2bS1sZ25hdHVyZS0x", None
    )
    assert lima["type"] == "function"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_of_several_candidates(adapter: GeminiAdapter) -> None:
    event = {
        "candidates": [
            {"content": {"parts": [{"text": "A"}], "role": "model"}, "index": 0},
            {"content": {"parts": [{"text": "B"}], "role": "model"}, "index": 1},
        ]
    }
    last = {
        "candidates": [
            {"content": {"parts": [{"text": "."}]}, "finishReason": "STOP", "index": 0},
            {"content": {"parts": [{"text": "!"}]}, "finishReason": "MAX_TOKENS", "index": 1},
        ]
    }
    raw = b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in (event, last))
    chunks = run_stream(adapter.chat_stream(chat(user("x", n=2), stream=True), MODEL), raw)
    text = {0: "", 1: ""}
    finish = {}
    for chunk in chunks:
        (choice,) = chunk["choices"]
        text[choice["index"]] += choice["delta"].get("content", "")
        if choice["finish_reason"]:
            finish[choice["index"]] = choice["finish_reason"]
    assert text == {0: "A.", 1: "B!"}
    assert finish == {0: "stop", 1: "length"}


def test_blocked_prompt_stream(adapter: GeminiAdapter) -> None:
    raw = (
        b"data: "
        + fixture("gemini/generateContent.response.prompt_blocked.json").replace(b"\n", b"")
        + b"\r\n\r\n"
    )
    chunks = run_stream(adapter.chat_stream(chat(user("x"), stream=True), MODEL), raw)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, "content_filter"]


def test_stream_without_finish_reason_is_incomplete(adapter: GeminiAdapter) -> None:
    raw = fixture("gemini/streamGenerateContent.truncated.sse.txt")
    with pytest.raises(ProviderError, match="ended before the answer was complete"):
        run_stream(adapter.chat_stream(chat(user("x"), stream=True), MODEL), raw)


def test_error_inside_a_stream(adapter: GeminiAdapter) -> None:
    # as a data: event, the error is raised where it arrives
    raw = fixture("gemini/error.in_stream.data.txt")
    with pytest.raises(ProviderUnavailable):
        run_stream(adapter.chat_stream(chat(user("x"), stream=True), MODEL), raw)
    # Gemini's own bare-JSON error line is no SSE event, but the decoder passes a line that
    # starts with "{" on as data, so the provider's own reason reaches the client
    raw = fixture("gemini/error.in_stream.txt")
    with pytest.raises(ProviderError, match="An internal error has occurred"):
        run_stream(adapter.chat_stream(chat(user("x"), stream=True), MODEL), raw)
    bare = raw.split(b"\r\n\r\n")[1]
    with pytest.raises(ProviderError) as caught:
        adapter.chat_stream(chat(user("x"), stream=True), MODEL).event(bare)
    assert type(caught.value) is ProviderError
    assert "INTERNAL" in caught.value.message


# ------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("name", "kind", "retryable", "retry_after", "status"),
    [
        ("error.400.api_key_invalid.http", ProviderAuthFailed, False, None, 502),
        ("error.400.invalid_argument.http", InvalidRequest, False, None, 400),
        ("error.400.failed_precondition.http", ProviderError, False, None, 502),
        ("error.403.permission_denied.http", ProviderAuthFailed, False, None, 502),
        ("error.404.not_found.http", InvalidRequest, False, None, 404),
        ("error.429.resource_exhausted.http", RateLimited, True, 13.0, 429),
        ("error.429.per_day.http", QuotaExceeded, False, None, 429),
        ("error.500.internal.http", ProviderError, True, None, 502),
        ("error.503.unavailable.http", ProviderUnavailable, True, None, 503),
        ("error.504.deadline_exceeded.http", GatewayTimeout, True, None, 504),
    ],
)
def test_errors_are_classified(
    adapter: GeminiAdapter,
    name: str,
    kind: type[GatewayError],
    retryable: bool,
    retry_after: float | None,
    status: int,
) -> None:
    http_status, headers, body = http_fixture("gemini/" + name)
    failure = adapter.classify_error(http_status, headers, body)
    assert type(failure.error) is kind
    assert (failure.retryable, failure.retry_after_s, failure.error.status) == (
        retryable,
        retry_after,
        status,
    )
    assert KEY not in failure.error.message
    if kind is ProviderAuthFailed:
        assert "GOOGLE_AI_API_KEY" in failure.error.message


def test_invalid_argument_passes_the_providers_message_on(adapter: GeminiAdapter) -> None:
    status, headers, body = http_fixture("gemini/error.400.invalid_argument.http")
    error = adapter.classify_error(status, headers, body).error
    assert error.message.startswith("* GenerateContentRequest.contents")
    assert error.code == "invalid_argument"


def test_retry_after_header_wins_and_odd_bodies_are_classified_by_status(
    adapter: GeminiAdapter,
) -> None:
    _, _, body = http_fixture("gemini/error.429.resource_exhausted.http")
    assert adapter.classify_error(429, {"retry-after": "3"}, body).retry_after_s == 3.0
    wrapped = b"[" + http_fixture("gemini/error.503.unavailable.http")[2] + b"]"
    assert type(adapter.classify_error(503, {}, wrapped).error) is ProviderUnavailable
    assert type(adapter.classify_error(502, {}, b"<html>bad gateway</html>").error) is ProviderError


# -------------------------------------------------------------------------- embeddings, models


def embed(body: dict[str, Any]) -> ApiRequest:
    return ApiRequest("embeddings", body["model"], body, orjson.dumps(body))


def test_one_string_is_embedded_with_embed_content(adapter: GeminiAdapter) -> None:
    call = adapter.embeddings_call(
        embed({"model": "e", "input": "hello", "dimensions": 4}), "gemini-embedding-001"
    )
    assert call.url == f"{BASE}/models/gemini-embedding-001:embedContent"
    assert sent(call) == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": "hello"}]},
        "outputDimensionality": 4,
    }


def test_a_list_is_embedded_with_batch_embed_contents(adapter: GeminiAdapter) -> None:
    call = adapter.embeddings_call(embed({"model": "e", "input": ["a", "b"]}), "text-embedding-004")
    assert call.url == f"{BASE}/models/text-embedding-004:batchEmbedContents"
    model = "models/text-embedding-004"
    assert sent(call) == {
        "requests": [
            {"model": model, "content": {"parts": [{"text": "a"}]}},
            {"model": model, "content": {"parts": [{"text": "b"}]}},
        ]
    }


@pytest.mark.parametrize("value", [[1, 2, 3], [[1], [2]], ["x"] * 101])
def test_inputs_gemini_cannot_embed_are_400s(adapter: GeminiAdapter, value: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        adapter.embeddings_call(embed({"model": "e", "input": value}), "text-embedding-004")
    assert caught.value.param == "input"


def test_embedding_answers_in_openai_shape(adapter: GeminiAdapter) -> None:
    request = embed({"model": "e", "input": ["a", "b"]})
    answer = json.loads(
        adapter.embeddings_response(
            fixture("gemini/batchEmbedContents.response.json"), request, "text-embedding-004"
        )
    )
    assert answer == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 0.125, 0.75]},
            {"object": "embedding", "index": 1, "embedding": [-0.0625, 0.5, 0.375, -0.25]},
        ],
        "model": "text-embedding-004",
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }
    single = json.loads(
        adapter.embeddings_response(
            fixture("gemini/embedContent.response.json"), embed({"model": "e", "input": "a"}), "e"
        )
    )
    assert single["data"][0]["embedding"] == [0.25, -0.5, 0.125, 0.75]


def test_base64_embeddings_are_packed_like_openai(adapter: GeminiAdapter) -> None:
    request = embed({"model": "e", "input": "a", "encoding_format": "base64"})
    answer = json.loads(
        adapter.embeddings_response(fixture("gemini/embedContent.response.json"), request, "e")
    )
    packed = base64.b64decode(answer["data"][0]["embedding"])
    assert struct.unpack("<4f", packed) == (0.25, -0.5, 0.125, 0.75)


def test_models_list(adapter: GeminiAdapter) -> None:
    call = adapter.models_call()
    assert (call.method, call.url) == ("GET", f"{BASE}/models?pageSize=1000")
    assert call.headers["x-goog-api-key"] == KEY
    assert adapter.models_response(fixture("gemini/models.list.response.json")) == [
        {"id": "gemini-2.5-flash", "object": "model", "created": 0, "owned_by": "google"},
        {"id": "gemini-embedding-001", "object": "model", "created": 0, "owned_by": "google"},
    ]
    with pytest.raises(ProviderError):
        adapter.models_response(b'{"data": []}')


# ------------------------------------------------------------------- against the mock provider


def send(call: UpstreamCall) -> httpx.Response:
    return httpx.request(
        call.method, call.url, headers=dict(call.headers), content=call.body, timeout=10
    )


@pytest.fixture
def live(mock: MockProvider) -> GeminiAdapter:
    return GeminiAdapter("google", mock.url + "/gemini/v1beta", "any-key")


@pytest.mark.e2e
def test_mock_chat_answers_like_the_openai_mock(live: GeminiAdapter, mock: MockProvider) -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello mock provider"},
        ],
    }
    request = chat(body)
    response = send(live.chat_call(request, "gemini-2.0-flash"))
    assert response.status_code == 200
    answer = json.loads(live.chat_response(response.content, request, "gemini-2.0-flash"))
    reference = httpx.post(
        mock.base_url + "/chat/completions", json={**body, "model": "gpt-4o-mini"}
    ).json()
    assert answer["choices"][0]["message"]["content"] == "Mock reply to: Hello mock provider"
    assert answer["usage"]["prompt_tokens"] == reference["usage"]["prompt_tokens"]
    assert answer["usage"]["completion_tokens"] == reference["usage"]["completion_tokens"]

    streamed = chat(
        {**body, "stream": True, "stream_options": {"include_usage": True}}, stream=True
    )
    response = send(live.chat_call(streamed, "gemini-2.0-flash"))
    assert response.headers["content-type"].startswith("text/event-stream")
    assert b"\r\n\r\n" in response.content  # CRLF framing, like the real API
    chunks = run_stream(live.chat_stream(streamed, "gemini-2.0-flash"), response.content)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Mock reply to: Hello mock provider"
    assert chunks[-1]["usage"]["total_tokens"] == answer["usage"]["total_tokens"]


@pytest.mark.e2e
def test_mock_tool_call_round_trip_keeps_the_thought_signature(live: GeminiAdapter) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        },
    }
    model = "gemini-3-pro-preview"  # the mock, like Gemini 3, rejects calls replayed unsigned
    first = chat(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "weather in Paris?"}],
            "tools": [tool],
        }
    )
    answer = json.loads(
        live.chat_response(send(live.chat_call(first, model)).content, first, model)
    )
    message = answer["choices"][0]["message"]
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    (call,) = message["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"location": "Paris"}

    history = [
        *first.body["messages"],
        message,
        {"role": "tool", "tool_call_id": call["id"], "content": "Sunny"},
    ]
    second = chat({"model": "m", "messages": history, "tools": [tool]})
    response = send(live.chat_call(second, model))
    assert response.status_code == 200, response.text
    reply = json.loads(live.chat_response(response.content, second, model))
    assert reply["choices"][0]["message"]["content"].startswith("Mock reply to: ")

    # a history made elsewhere has no signature: Gemini 3 gets Google's placeholder
    unsigned = json.loads(json.dumps(history))
    unsigned[1]["tool_calls"][0]["id"] = "call_plain"
    unsigned[2]["tool_call_id"] = "call_plain"
    call = live.chat_call(chat({"model": "m", "messages": unsigned, "tools": [tool]}), model)
    assert b"skip_thought_signature_validator" in (call.body or b"")
    assert send(call).status_code == 200


@pytest.mark.e2e
def test_mock_embeddings_and_models(live: GeminiAdapter, mock: MockProvider) -> None:
    request = embed({"model": "e", "input": ["hi", "hello there"], "dimensions": 16})
    response = send(live.embeddings_call(request, "text-embedding-004"))
    answer = json.loads(live.embeddings_response(response.content, request, "text-embedding-004"))
    reference = httpx.post(
        mock.base_url + "/embeddings",
        json={"model": "x", "input": ["hi", "hello there"], "dimensions": 16},
    ).json()
    assert [d["embedding"] for d in answer["data"]] == [d["embedding"] for d in reference["data"]]

    one = embed({"model": "e", "input": "hi"})
    single = json.loads(
        live.embeddings_response(
            send(live.embeddings_call(one, "text-embedding-004")).content, one, "e"
        )
    )
    assert len(single["data"][0]["embedding"]) == 8

    models = live.models_response(send(live.models_call()).content)
    assert {"gemini-2.0-flash", "text-embedding-004"} <= {m["id"] for m in models}


@pytest.mark.e2e
def test_mock_faults_come_as_gemini_errors(live: GeminiAdapter, mock: MockProvider) -> None:
    request = chat(user("hi"))
    mock.faults(
        {"status": 429, "retry_after": 2},
        {"status": 400, "code": "API_KEY_INVALID"},
        {"status": 429, "code": "insufficient_quota"},
        {"status": 503},
    )
    failures = []
    for _ in range(4):
        response = send(live.chat_call(request, MODEL))
        failures.append(
            live.classify_error(response.status_code, dict(response.headers), response.content)
        )
    assert [type(f.error) for f in failures] == [
        RateLimited,
        ProviderAuthFailed,
        QuotaExceeded,
        ProviderUnavailable,
    ]
    assert failures[0].retry_after_s == 2.0  # from RetryInfo.retryDelay: no header
    assert [f.retryable for f in failures] == [True, False, False, True]

    streamed = chat({**user("hi"), "stream": True}, stream=True)
    mock.faults({"stream_error_after_chunks": 2})
    response = send(live.chat_call(streamed, MODEL))
    assert response.status_code == 200
    assert b'{"error"' in response.content
    with pytest.raises(ProviderError, match="HTTP 500"):
        run_stream(live.chat_stream(streamed, MODEL), response.content)
