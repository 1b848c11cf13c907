"""OpenAI options that reach Anthropic translated instead of refused (issue 16).

Structured output goes natively (``output_config.format``) to models that have it and as a
forced tool to the others, and either way the client gets the JSON as the message content with
finish reason ``stop``, streamed or not. ``reasoning_effort`` becomes a thinking budget (or
adaptive thinking with an effort), with ``max_tokens`` raised by the budget. Whitespace-only
stop sequences are dropped; ``top_p`` is dropped when ``temperature`` is set on models that
refuse both. The rules are in ``providers/_anthropic_options.py`` and docs/api.md.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from aigateway.errors import InvalidRequest
from aigateway.providers._anthropic_options import claude_version
from aigateway.providers.anthropic import AnthropicAdapter
from test_provider_anthropic import run_stream
from wire_fixtures import chat, sent, user

BASE = "https://api.anthropic.com/v1"
NATIVE = "claude-sonnet-4-5-20250929"
OLDER = "claude-sonnet-4-20250514"
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 3},
    },
    "required": ["city", "tags"],
}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "Trip", "schema": SCHEMA}}


@pytest.fixture
def adapter() -> AnthropicAdapter:
    return AnthropicAdapter("anthropic", BASE, "sk-ant-test", default_max_tokens=1000)


def request_for(adapter: AnthropicAdapter, model: str, **extra: Any) -> dict[str, Any]:
    return sent(adapter.chat_call(chat(user("hi", **extra)), model))


@pytest.mark.parametrize(
    ("model", "version"),
    [
        ("claude-sonnet-4-5-20250929", ("sonnet", 4, 5)),
        ("claude-sonnet-4-20250514", ("sonnet", 4, 0)),
        ("claude-opus-4-1", ("opus", 4, 1)),
        ("claude-3-5-haiku-20241022", ("haiku", 3, 5)),
        ("claude-3-opus-20240229", ("opus", 3, 0)),
    ],
)
def test_model_versions_are_read_from_the_id(model: str, version: tuple[str, int, int]) -> None:
    found = claude_version(model)
    assert found is not None and (found.family, found.major, found.minor) == version


def test_json_schema_goes_natively_to_models_that_have_structured_outputs(
    adapter: AnthropicAdapter,
) -> None:
    request = request_for(adapter, NATIVE, response_format=JSON_SCHEMA)
    schema = request["output_config"]["format"]["schema"]
    assert request["output_config"]["format"]["type"] == "json_schema"
    assert "tools" not in request
    # Anthropic's subset: objects closed, length and count limits moved into the description
    assert schema["additionalProperties"] is False
    assert "minLength" not in schema["properties"]["city"]
    assert "minLength: 2" in schema["properties"]["city"]["description"]
    assert "minItems: 3" in schema["properties"]["tags"]["description"]


def test_json_schema_is_a_forced_tool_on_older_models(adapter: AnthropicAdapter) -> None:
    request = request_for(adapter, OLDER, response_format=JSON_SCHEMA)
    assert "output_config" not in request
    assert request["tools"] == [
        {
            "name": "Trip",
            "description": "Respond with a JSON object in this schema.",
            "input_schema": SCHEMA,
        }
    ]
    assert request["tool_choice"] == {
        "type": "tool",
        "name": "Trip",
        "disable_parallel_tool_use": True,
    }


def test_json_object_is_a_forced_tool_named_json(adapter: AnthropicAdapter) -> None:
    request = request_for(adapter, NATIVE, response_format={"type": "json_object"})
    assert request["tools"][0]["name"] == "json"
    assert request["tools"][0]["input_schema"] == {"type": "object"}
    assert request["tool_choice"]["name"] == "json"


def test_a_forced_json_tool_cannot_join_the_clients_tools(adapter: AnthropicAdapter) -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    with pytest.raises(InvalidRequest) as caught:
        request_for(adapter, OLDER, response_format=JSON_SCHEMA, tools=tools)
    assert caught.value.param == "response_format"


def test_the_forced_tools_input_is_the_answer_with_finish_reason_stop(
    adapter: AnthropicAdapter,
) -> None:
    request = chat(user("hi", response_format=JSON_SCHEMA))
    raw = orjson.dumps(
        {
            "id": "msg_1",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "Trip", "input": {"a": 1}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 3, "output_tokens": 4},
        }
    )
    answer = json.loads(adapter.chat_response(raw, request, OLDER))
    message = answer["choices"][0]["message"]
    assert json.loads(message["content"]) == {"a": 1}
    assert "tool_calls" not in message
    assert answer["choices"][0]["finish_reason"] == "stop"


def _event(payload: dict[str, Any]) -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def test_a_streamed_forced_tool_arrives_as_content_deltas(adapter: AnthropicAdapter) -> None:
    message = {"id": "msg_1", "content": [], "usage": {"input_tokens": 3, "output_tokens": 1}}
    tool = {"type": "tool_use", "id": "toolu_1", "name": "Trip", "input": {}}
    raw = b"".join(
        _event(e)
        for e in [
            {"type": "message_start", "message": message},
            {"type": "content_block_start", "index": 0, "content_block": tool},
            {"type": "content_block_delta", "index": 0,
             "delta": {"type": "input_json_delta", "partial_json": '{"a"'}},
            {"type": "content_block_delta", "index": 0,
             "delta": {"type": "input_json_delta", "partial_json": ": 1}"}},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
             "usage": {"output_tokens": 9}},
            {"type": "message_stop"},
        ]
    )  # fmt: skip
    request = chat(user("hi", stream=True, response_format=JSON_SCHEMA))
    chunks = run_stream(adapter.chat_stream(request, OLDER), raw)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("content") or "" for d in deltas) == '{"a": 1}'
    assert not any("tool_calls" in d for d in deltas)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("effort", "budget"),
    [("minimal", 1024), ("low", 2048), ("medium", 8192), ("high", 16384)],
)
def test_reasoning_effort_is_a_thinking_budget_on_top_of_max_tokens(
    adapter: AnthropicAdapter, effort: str, budget: int
) -> None:
    request = request_for(adapter, NATIVE, reasoning_effort=effort, max_tokens=500)
    assert request["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert request["max_tokens"] == 500 + budget


def test_thinking_drops_sampling_and_yields_to_a_forced_tool(adapter: AnthropicAdapter) -> None:
    request = request_for(adapter, NATIVE, reasoning_effort="low", temperature=0.2, top_k=3)
    assert "temperature" not in request and "top_k" not in request
    tools = [{"type": "function", "function": {"name": "f"}}]
    forced = request_for(
        adapter, NATIVE, reasoning_effort="low", tools=tools, tool_choice="required"
    )
    assert "thinking" not in forced and forced["max_tokens"] == 1000


def test_effort_none_sends_no_thinking(adapter: AnthropicAdapter) -> None:
    assert "thinking" not in request_for(adapter, NATIVE, reasoning_effort="none")


def test_adaptive_models_get_an_effort(adapter: AnthropicAdapter) -> None:
    request = request_for(adapter, "claude-opus-4-6", reasoning_effort="xhigh")
    assert request["thinking"] == {"type": "adaptive"}
    assert request["output_config"] == {"effort": "high"}


def test_an_unknown_effort_is_a_400(adapter: AnthropicAdapter) -> None:
    with pytest.raises(InvalidRequest) as caught:
        request_for(adapter, NATIVE, reasoning_effort="extreme")
    assert caught.value.param == "reasoning_effort"


def test_whitespace_only_stop_sequences_are_dropped(adapter: AnthropicAdapter) -> None:
    assert request_for(adapter, NATIVE, stop=["\n", "END", " "])["stop_sequences"] == ["END"]
    assert "stop_sequences" not in request_for(adapter, NATIVE, stop="\n\n")


def test_temperature_wins_over_top_p_on_models_that_take_one(adapter: AnthropicAdapter) -> None:
    request = request_for(adapter, NATIVE, temperature=0.3, top_p=0.5)
    assert request["temperature"] == 0.3 and "top_p" not in request
    assert request_for(adapter, NATIVE, top_p=0.5)["top_p"] == 0.5  # alone it stays
    assert request_for(adapter, OLDER, temperature=0.3, top_p=0.5)["top_p"] == 0.5


def test_models_without_sampling_get_none(adapter: AnthropicAdapter) -> None:
    request = request_for(adapter, "claude-opus-4-7", temperature=0.3, top_p=0.5, top_k=2)
    assert not {"temperature", "top_p", "top_k"} & set(request)
