"""How a ``/v1/messages`` request and its answer cross between Anthropic's shapes and the rest.

In-process, from the wire fixtures: a Messages request becomes the chat body a gpt-* or
gemini-* target's adapter takes (what cannot go is dropped, or refused with a 400 naming
it); an OpenAI answer and its chunks come back as a message and Anthropic's events;
Claude's own events pass through; the cache folds any of those streams into one message
and replays it as events; the route names each event and reshapes the gateway's errors.
"""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from aigateway.api.messages import anthropic_events
from aigateway.api.messages_tokens import estimate_input_tokens
from aigateway.cache.messages_replay import MessagesAssembler, messages_cacheable, replay_messages
from aigateway.errors import GatewayError, InvalidRequest, ProviderError
from aigateway.hotpath import SSEDecoder
from aigateway.providers._messages_chat import chat_body, message_from_completion
from aigateway.providers._messages_stream import MessagesFromChunks
from aigateway.providers.anthropic import AnthropicAdapter
from aigateway.providers.messages import answering
from aigateway.providers.openai import OpenAIAdapter
from aigateway.wire import ApiRequest, token_counts
from wire_fixtures import fixture, fixture_json

ANTHROPIC = AnthropicAdapter("anthropic", "https://api.anthropic.test/v1", "key")
OPENAI = OpenAIAdapter("openai", "https://api.openai.test/v1", "key", "OPENAI_API_KEY")


def messages(body: dict[str, Any], stream: bool = False) -> ApiRequest:
    return ApiRequest("messages", body["model"], body, orjson.dumps(body), stream)


def events_of(raw: bytes) -> list[bytes]:
    return SSEDecoder().feed(raw)


# --- requests to a translated target -------------------------------------------------------


def test_the_sample_request_becomes_the_chat_body_openai_takes() -> None:
    body = fixture_json("messages/messages.request.json")
    chat = chat_body(body, top_k=False)
    image = body["messages"][2]["content"][1]["source"]
    assert chat == {
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
            {"role": "user", "content": "Hello."},
            {"role": "assistant", "content": "Hi! How can I help?"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": body["messages"][2]["content"][0]["text"]},
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:image/png;base64,{image['data']}"},
                    },
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/boardwalk.jpg"},
                    },
                ],
            },
        ],
        "max_completion_tokens": 1024,
        "temperature": 0.7,
        "stop": ["\n\nUser:"],
        "user": "user-1234",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_current_weather",
                    "description": "Get the current weather in a given location",
                    "parameters": body["tools"][0]["input_schema"],
                },
            }
        ],
        "tool_choice": "auto",
    }


def test_top_k_goes_only_where_the_target_has_it() -> None:
    body = fixture_json("messages/messages.request.json")
    assert "top_k" not in chat_body(body, top_k=False)  # OpenAI's format has none
    assert chat_body(body, top_k=True)["top_k"] == 40  # Gemini's topK


def test_tool_results_follow_the_calls_they_answer_and_thinking_stays_with_anthropic() -> None:
    body = fixture_json("messages/messages.request.tool_history.json")
    body["messages"][1]["content"].insert(
        0, {"type": "thinking", "thinking": "Let me look.", "signature": "sig"}
    )
    body["messages"][2]["content"][0]["is_error"] = True
    body["messages"][2]["content"].append({"type": "text", "text": "Thanks!"})
    chat = chat_body(body, top_k=False)
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "tool", "user"]
    assistant, tool = chat["messages"][2:4]
    assert assistant["content"] == "I'll check the current weather in Boston."
    assert assistant["tool_calls"] == [
        {
            "id": "toolu_01Wm4Xc7Nq2Hj8Kp5Rt3Ys6V",
            "type": "function",
            "function": {"name": "get_current_weather", "arguments": '{"location":"Boston, MA"}'},
        }
    ]
    assert tool["tool_call_id"] == "toolu_01Wm4Xc7Nq2Hj8Kp5Rt3Ys6V"
    assert tool["content"].startswith("Error: {")  # is_error, said in the text


def test_what_changes_no_meaning_is_dropped() -> None:
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 10,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "service_tier": "auto",
    }
    assert chat_body(body, top_k=False) == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "max_completion_tokens": 10,
    }


def test_structured_output_becomes_response_format_and_a_stream_asks_for_usage() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "Boston?"}],
        "output_config": {"format": {"type": "json_schema", "schema": schema}},
        "tool_choice": {"type": "any"},  # no tools: a choice among none means nothing
        "stream": True,
    }
    chat = chat_body(body, top_k=False)
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }
    assert "tool_choice" not in chat
    assert chat["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"mcp_servers": []}, "mcp_servers"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
        (
            {"messages": [{"role": "user", "content": [{"type": "search_result", "x": 1}]}]},
            "messages.0.content.0.type",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": [{"type": "server_tool_use", "id": "x"}]},
                ]
            },
            "messages.1.content.0.type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "file", "file_id": "file_1"},
                            }
                        ],
                    }
                ]
            },
            "messages.0.content.0.source",
        ),
    ],
    ids=["unknown field", "server tool", "unknown user block", "server tool use", "file image"],
)
def test_what_would_change_the_meaning_is_refused_naming_the_field(
    change: dict[str, Any], param: str
) -> None:
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "x"}],
    }
    with pytest.raises(InvalidRequest) as raised:
        chat_body({**body, **change}, top_k=False)
    assert raised.value.param == param
    assert raised.value.status == 400


# --- answers from a translated target ------------------------------------------------------


def test_a_completion_with_a_tool_call_becomes_a_tool_use_message() -> None:
    completion = {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 30,
            "completion_tokens": 7,
            "total_tokens": 37,
            "prompt_tokens_details": {"cached_tokens": 20},
        },
    }
    message = orjson.loads(message_from_completion("openai", orjson.dumps(completion), "m"))
    assert message == {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "gpt-4o-mini",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,  # Anthropic's input tokens leave out cache reads
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 20,
            "output_tokens": 7,
        },
    }
    assert token_counts(message["usage"]) == (30, 7)  # the accounting sees the same tokens


def openai_chunks() -> list[bytes]:
    head = {"id": "chatcmpl-s1", "object": "chat.completion.chunk", "model": "gpt-4o-mini"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return orjson.dumps({**head, "choices": [choice]})

    call = {"index": 0, "id": "call_9", "type": "function"}
    return [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me "}),
        chunk({"content": "check."}),
        chunk({"tool_calls": [{**call, "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk({}, "tool_calls"),
        orjson.dumps(
            {**head, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 9}}
        ),
    ]


def test_openai_chunks_become_anthropics_events_in_order() -> None:
    request = messages({"model": "gpt-4o-mini", "max_tokens": 50, "messages": []}, stream=True)
    translator = answering(request, OPENAI).chat_stream(request, "gpt-4o-mini")
    assert isinstance(translator, MessagesFromChunks)
    out = [e for chunk in openai_chunks() for e in translator.event(chunk)] + translator.end()
    events = [orjson.loads(e) for e in out]
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[5]["content_block"] == {
        "type": "tool_use",
        "id": "call_9",
        "name": "get_weather",
        "input": {},
    }
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    assert events[-2]["usage"]["input_tokens"] == 12 and events[-2]["usage"]["output_tokens"] == 9
    assembler = MessagesAssembler()
    for event in out:
        assembler.add(event)
    message = assembler.completion()
    assert message is not None
    assert message["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_9", "name": "get_weather", "input": {"city": "Paris"}},
    ]


# --- Claude's own events --------------------------------------------------------------------


def test_claudes_events_pass_through_with_the_whole_usage_on_message_delta() -> None:
    raw = fixture("anthropic/messages.stream.thinking.sse.txt")
    request = messages({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []}, True)
    translator = answering(request, ANTHROPIC).chat_stream(request, "claude-sonnet-4-5")
    sent = events_of(raw)
    out = [e for data in sent for e in translator.event(data)] + translator.end()
    assert len(out) == len(sent)
    for before, after in zip(sent, out, strict=True):
        if b"message_delta" not in before:
            assert after == before  # byte for byte, thinking and its signature included
    (delta,) = [orjson.loads(e) for e in out if b"message_delta" in e]
    assert delta["usage"] == {
        "input_tokens": 42,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 100,
        "output_tokens": 38,
    }


def test_an_error_event_or_a_cut_stream_from_claude_is_an_error() -> None:
    request = messages({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []}, True)
    translator = ANTHROPIC.messages_stream(request, "claude-sonnet-4-5")
    events = events_of(fixture("anthropic/error.in_stream.sse.txt"))
    with pytest.raises(GatewayError) as raised:
        [translator.event(data) for data in events]
    assert raised.value.status == 503  # overloaded: the route tells it as overloaded_error
    cut = ANTHROPIC.messages_stream(request, "claude-sonnet-4-5")
    for data in events_of(fixture("anthropic/messages.stream.truncated.sse.txt")):
        cut.event(data)
    with pytest.raises(ProviderError):
        cut.end()


def test_a_claude_request_goes_out_as_sent_with_its_beta_header() -> None:
    body = fixture_json("messages/messages.request.tool_history.json")
    request = ApiRequest(
        "messages",
        "claude-sonnet-4-5",
        body,
        orjson.dumps(body),
        provider_headers=(("anthropic-beta", "token-efficient-tools-2025-02-19"),),
    )
    call = answering(request, ANTHROPIC).chat_call(request, "claude-sonnet-4-5")
    assert call.url == "https://api.anthropic.test/v1/messages"
    assert call.body == request.raw
    assert call.headers["anthropic-beta"] == "token-efficient-tools-2025-02-19"
    counting = ANTHROPIC.count_tokens_call(request, "claude-sonnet-4-5-20250929")
    assert counting.url.endswith("/messages/count_tokens")
    assert "max_tokens" not in orjson.loads(counting.body or b"")


# --- the cache's view -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "messages.stream.sse.txt",
        "messages.stream.tool_use.sse.txt",
        "messages.stream.thinking.sse.txt",
    ],
)
def test_a_stream_folds_into_one_message_and_replays_into_the_same(name: str) -> None:
    assembler = MessagesAssembler()
    for data in events_of(fixture(f"anthropic/{name}")):
        assembler.add(data)
    message = assembler.completion()
    assert message is not None and messages_cacheable(message)
    again = MessagesAssembler()
    for payload in replay_messages(copy.deepcopy(message)):
        again.add(payload)
    assert again.completion() == message


def test_the_thinking_stream_folds_into_thinking_with_its_signature() -> None:
    assembler = MessagesAssembler()
    for data in events_of(fixture("anthropic/messages.stream.thinking.sse.txt")):
        assembler.add(data)
    message = assembler.completion()
    assert message is not None
    assert message["content"][0] == {
        "type": "thinking",
        "thinking": "The user asks for 27 * 453. That is 12231.",
        "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds",
    }


def test_unfinished_or_failed_streams_are_not_kept() -> None:
    cut = MessagesAssembler()
    for data in events_of(fixture("anthropic/messages.stream.truncated.sse.txt")):
        cut.add(data)
    assert cut.completion() is None
    failed = MessagesAssembler()
    for data in events_of(fixture("anthropic/error.in_stream.sse.txt")):
        failed.add(data)
    assert failed.completion() is None
    paused = fixture_json("anthropic/messages.response.json") | {"stop_reason": "pause_turn"}
    assert not messages_cacheable(paused)


# --- the route's framing --------------------------------------------------------------------


async def _pieces(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def test_each_event_gets_its_name_and_the_gateways_errors_anthropics_shape() -> None:
    error = ProviderError("openai stream broke off").json()
    relayed = (
        b'data: {"type":"message_start","message":{}}\n\ndata: {"type":"ping"',
        b"}\n\ndata: " + error + b"\n\ndata: [DONE]\n\n",
    )

    async def collect() -> bytes:
        return b"".join([piece async for piece in anthropic_events(_pieces(*relayed))])

    out = asyncio.run(collect())
    assert out == (
        b'event: message_start\ndata: {"type":"message_start","message":{}}\n\n'
        b'event: ping\ndata: {"type":"ping"}\n\n'
        b'event: error\ndata: {"type":"error","error":{"type":"api_error",'
        b'"message":"openai stream broke off"}}\n\n'
    )


def test_the_token_estimate_follows_its_documented_formula() -> None:
    body = {
        "model": "gpt-4o-mini",
        "system": "Be brief.",  # 9 characters
        "messages": [
            {"role": "user", "content": "What is in this picture?"},  # 24
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                    {"type": "text", "text": "Thanks"},  # 6
                ],
            },
        ],
    }
    assert estimate_input_tokens(body) == math.ceil((9 + 24 + 6) / 4) + 2 * 3 + 1600
