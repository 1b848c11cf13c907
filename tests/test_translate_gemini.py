"""OpenAI options that reach Gemini translated instead of refused, and Gemini's call ids (issue 16).

Gemini's function calls get short, stable OpenAI ids (``call_`` + 24 hex digits, within
OpenAI's 40 characters) while the thought signature stays with the gateway for a bounded time;
a history whose signatures the gateway does not have (made by another model, or kept past the
lifetime) reaches Gemini 3 with Google's placeholder signature. ``logprobs``/``top_logprobs``
become ``responseLogprobs``/``logprobs`` and come back in OpenAI's shape; ``reasoning_effort``
becomes ``thinkingLevel`` (Gemini 3) or ``thinkingBudget`` (2.5); a JSON schema is restricted
to the keywords Gemini lists, the others moved into descriptions.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from aigateway.errors import InvalidRequest
from aigateway.providers._gemini_calls import PLACEHOLDER_SIGNATURE, ThoughtSignatures
from aigateway.providers.gemini import GeminiAdapter
from test_provider_gemini import run_stream
from wire_fixtures import chat, fixture, sent, user

BASE = "https://generativelanguage.googleapis.com/v1beta"
SIGNED = "gemini-3-pro-preview"
ID = re.compile(r"call_[0-9a-f]{24}\Z")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def adapter(clock: Clock) -> GeminiAdapter:
    signatures = ThoughtSignatures(ttl_s=60, max_entries=4, clock=clock)
    return GeminiAdapter("google", BASE, "key", signatures=signatures)


def calls_of(adapter: GeminiAdapter, raw: bytes, model: str = SIGNED) -> dict[str, Any]:
    answer = json.loads(adapter.chat_response(raw, chat(user("x")), model))
    message: dict[str, Any] = answer["choices"][0]["message"]
    return message


def history_after(message: dict[str, Any]) -> dict[str, Any]:
    tool_results = [
        {"role": "tool", "tool_call_id": call["id"], "content": "4 degrees"}
        for call in message["tool_calls"]
    ]
    return {"model": "m", "messages": [{"role": "user", "content": "x"}, message, *tool_results]}


def model_turn(adapter: GeminiAdapter, body: dict[str, Any], model: str = SIGNED) -> Any:
    return sent(adapter.chat_call(chat(body), model))["contents"][1]["parts"]


def test_call_ids_are_short_stable_and_distinct(adapter: GeminiAdapter) -> None:
    raw = fixture("gemini/generateContent.response.thought_signature.json")
    first = [c["id"] for c in calls_of(adapter, raw)["tool_calls"]]
    again = [c["id"] for c in calls_of(adapter, raw)["tool_calls"]]
    assert all(ID.match(call_id) for call_id in first)  # 29 characters: OpenAI takes them
    assert first == again  # the same answer (a cache hit, say) has the same ids
    assert len(set(first)) == len(first)


def test_the_kept_signature_goes_back_on_its_call_and_only_there(adapter: GeminiAdapter) -> None:
    raw = fixture("gemini/generateContent.response.thought_signature.json")
    parts = model_turn(adapter, history_after(calls_of(adapter, raw)))
    calls = [p for p in parts if "functionCall" in p]
    assert calls[0]["thoughtSignature"].startswith("UvImZaYMEtKJ")
    assert "thoughtSignature" not in calls[1]  # its parallel sibling came without one


def test_a_foreign_history_gets_the_placeholder_on_gemini_3_only(adapter: GeminiAdapter) -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_abc", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location": "Oslo"}'}},
            {"id": "toolu_01", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location": "Lima"}'}},
        ],
    }  # fmt: skip
    parts = model_turn(adapter, history_after(message))
    assert parts[0]["thoughtSignature"] == PLACEHOLDER_SIGNATURE
    assert "thoughtSignature" not in parts[1]
    older = model_turn(adapter, history_after(message), "gemini-2.5-flash")
    assert not any("thoughtSignature" in p for p in older)


def test_after_its_lifetime_a_signature_is_replaced_by_the_placeholder(
    adapter: GeminiAdapter, clock: Clock
) -> None:
    raw = fixture("gemini/generateContent.response.function_call.json")
    body = history_after(calls_of(adapter, raw))
    assert model_turn(adapter, body)[1]["thoughtSignature"] != PLACEHOLDER_SIGNATURE
    clock.now += 61
    assert model_turn(adapter, body)[1]["thoughtSignature"] == PLACEHOLDER_SIGNATURE


def test_the_store_is_bounded_oldest_out_first(clock: Clock) -> None:
    store = ThoughtSignatures(ttl_s=60, max_entries=2, clock=clock)
    for n in range(3):
        store.keep(f"call_{n}", "f", f"sig{n}", None)
    assert len(store) == 2
    assert store.recall("call_0") is None
    kept = store.recall("call_2")
    assert kept is not None and kept.signature == "sig2"


def test_logprobs_are_asked_for_and_come_back_in_openais_shape(adapter: GeminiAdapter) -> None:
    request = sent(adapter.chat_call(chat(user("x", logprobs=True, top_logprobs=2)), SIGNED))
    config = request["generationConfig"]
    assert (config["responseLogprobs"], config["logprobs"]) == (True, 2)
    raw = fixture("gemini/generateContent.response.logprobs.json")
    answer = json.loads(adapter.chat_response(raw, chat(user("x", logprobs=True)), SIGNED))
    (token,) = answer["choices"][0]["logprobs"]["content"]
    assert token["token"] == "Negative" and token["logprob"] == -0.0213
    assert token["bytes"] == list(b"Negative")
    assert [t["token"] for t in token["top_logprobs"]] == ["Negative", "Positive"]


def test_top_logprobs_need_logprobs(adapter: GeminiAdapter) -> None:
    with pytest.raises(InvalidRequest) as caught:
        adapter.chat_call(chat(user("x", top_logprobs=2)), SIGNED)
    assert caught.value.param == "top_logprobs"


def test_streamed_text_carries_its_logprobs(adapter: GeminiAdapter) -> None:
    raw = (
        b"data: "
        + fixture("gemini/generateContent.response.logprobs.json").replace(b"\n", b"")
        + b"\r\n\r\n"
    )
    chunks = run_stream(adapter.chat_stream(chat(user("x", stream=True), stream=True), SIGNED), raw)
    text = [c for c in chunks if c["choices"][0]["delta"].get("content")]
    assert text[0]["choices"][0]["logprobs"]["content"][0]["token"] == "Negative"


@pytest.mark.parametrize(
    ("model", "effort", "thinking"),
    [
        ("gemini-3-pro-preview", "low", {"thinkingLevel": "low"}),
        ("gemini-3-pro-preview", "medium", {"thinkingLevel": "high"}),
        ("gemini-3-pro-preview", "none", {"thinkingLevel": "low"}),
        ("gemini-2.5-flash", "low", {"thinkingBudget": 1024}),
        ("gemini-2.5-flash", "medium", {"thinkingBudget": 8192}),
        ("gemini-2.5-flash", "high", {"thinkingBudget": 24576}),
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
        ("gemini-2.5-pro", "none", {"thinkingBudget": 128}),  # 2.5 Pro always thinks
        ("gemini-2.0-flash", "high", None),  # no thinking at all: nothing to set
    ],
)
def test_reasoning_effort_is_a_thinking_level_or_budget(
    adapter: GeminiAdapter, model: str, effort: str, thinking: Any
) -> None:
    request = sent(adapter.chat_call(chat(user("x", reasoning_effort=effort)), model))
    assert request.get("generationConfig", {}).get("thinkingConfig") == thinking


def test_schema_keywords_gemini_does_not_list_move_into_descriptions(
    adapter: GeminiAdapter,
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{3}$", "description": "IATA"},
            "kind": {"const": "airport"},
            "alt": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]},
        },
        "required": ["code", "kind", "alt"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "A", "schema": schema}}
    request = sent(adapter.chat_call(chat(user("x", response_format=response_format)), SIGNED))
    config = request["generationConfig"]
    sent_schema = config["responseJsonSchema"]
    assert config["responseMimeType"] == "application/json"
    assert sent_schema["properties"]["code"] == {
        "type": "string",
        "description": "IATA\npattern: ^[A-Z]{3}$",
    }
    assert sent_schema["properties"]["kind"] == {"enum": ["airport"]}
    assert sent_schema["properties"]["alt"]["oneOf"][0] == {"type": "integer", "minimum": 0}
    assert sent_schema["additionalProperties"] is False
