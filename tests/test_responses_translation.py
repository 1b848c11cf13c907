"""The Responses API in and out of the chat path, in-process: a Responses request becomes
the gateway's chat body, a chat answer becomes a Response, a chat stream becomes the events
OpenAI itself sends (same order, gap-free ``sequence_number``), and stored responses keep
to their owner, their lifetime and their size budget (clock injected).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from aigateway.cache.response_store import (
    LmdbResponseStore,
    MemoryResponseStore,
    ResponseStore,
    StoredResponse,
)
from aigateway.errors import InvalidRequest
from aigateway.providers._responses_answer import ResponseShell, from_completion
from aigateway.providers._responses_request import chat_body, read_request
from aigateway.providers._responses_stream import ResponsesEvents
from wire_fixtures import fixture, fixture_json

SAMPLE = "openai-responses/responses.request.json"


def _chat_of(body: dict[str, Any]) -> dict[str, Any]:
    request = read_request(body)
    return chat_body(request, request.items)


def test_every_kind_of_input_item_becomes_its_chat_message() -> None:
    body = fixture_json(SAMPLE)
    body.pop("previous_response_id")
    chat = _chat_of(body)
    system, user, call, result = chat["messages"]
    assert system == {"role": "system", "content": body["instructions"]}
    assert user["role"] == "user"
    assert user["content"][0] == {"type": "text", "text": body["input"][0]["content"][0]["text"]}
    assert user["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert user["content"][1]["image_url"]["detail"] == "auto"
    assert call["role"] == "assistant" and call["content"] is None
    assert call["tool_calls"][0]["id"] == "call_7Hq2Lw9Xe4Rt1Ym6Nb3Vc8Zk"
    assert call["tool_calls"][0]["function"]["name"] == "get_current_weather"
    assert result == {
        "role": "tool",
        "tool_call_id": "call_7Hq2Lw9Xe4Rt1Ym6Nb3Vc8Zk",
        "content": body["input"][2]["output"],
    }


def test_tools_formats_limits_and_effort_take_their_chat_names() -> None:
    body = fixture_json(SAMPLE)
    chat = _chat_of(body)
    tool = chat["tools"][0]
    assert tool["type"] == "function"
    assert tool["function"]["name"] == "get_current_weather"
    assert tool["function"]["strict"] is True
    assert chat["tool_choice"] == "auto"
    assert chat["parallel_tool_calls"] is True
    schema = body["text"]["format"]
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": schema["name"], "schema": schema["schema"], "strict": True},
    }
    assert chat["verbosity"] == "low"
    assert chat["reasoning_effort"] == "low"
    assert chat["max_completion_tokens"] == 2048
    for kept_by_the_gateway in ("store", "previous_response_id", "metadata", "instructions"):
        assert kept_by_the_gateway not in chat


def test_a_string_input_is_one_user_message_and_a_stream_always_asks_for_usage() -> None:
    chat = _chat_of({"model": "m", "input": "hi", "stream": True, "temperature": 0.2})
    assert chat["messages"] == [{"role": "user", "content": "hi"}]
    assert chat["stream_options"] == {"include_usage": True}
    assert chat["temperature"] == 0.2


def test_a_forced_function_and_allowed_tools_become_chat_tool_choices() -> None:
    tools = [{"type": "function", "name": n} for n in ("a", "b")]
    forced = _chat_of({"model": "m", "input": "x", "tools": tools,
                       "tool_choice": {"type": "function", "name": "b"}})  # fmt: skip
    assert forced["tool_choice"] == {"type": "function", "function": {"name": "b"}}
    allowed = _chat_of({"model": "m", "input": "x", "tools": tools, "tool_choice": {
        "type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "a"}]
    }})  # fmt: skip
    assert [t["function"]["name"] for t in allowed["tools"]] == ["a"]
    assert allowed["tool_choice"] == "required"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]},
         "input[0].content[0].type"),
        ({"input": [{"type": "computer_call"}]}, "input[0].type"),
        ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
        ({"input": None}, "input"),
        ({"model": ""}, "model"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
    ],
)  # fmt: skip
def test_what_the_chat_path_cannot_carry_is_a_400_naming_the_field(
    change: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        _chat_of({"model": "m", "input": "x", **change})
    assert caught.value.param == param


# --- answers ---------------------------------------------------------------------------------


def _completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10,
                  "prompt_tokens_details": {"cached_tokens": 2}},
    }  # fmt: skip


def test_a_completion_becomes_a_response_with_a_message_then_its_calls() -> None:
    calls = [{"id": "call_1", "type": "function",
              "function": {"name": "f", "arguments": "{}"}}]  # fmt: skip
    shell = ResponseShell({"model": "gpt-4o-mini", "input": "x", "metadata": {"a": "b"}}, "m")
    response = from_completion(shell, _completion({"content": "Let me look.", "tool_calls": calls}))
    message, call = response["output"]
    assert response["object"] == "response" and response["id"].startswith("resp_")
    assert response["status"] == "completed"
    assert message["content"][0] == {"type": "output_text", "annotations": [], "logprobs": [],
                                     "text": "Let me look."}  # fmt: skip
    assert call["type"] == "function_call" and call["call_id"] == "call_1"
    assert call["id"].startswith("fc_")
    assert response["usage"]["input_tokens"] == 7
    assert response["usage"]["input_tokens_details"]["cached_tokens"] == 2
    assert response["usage"]["total_tokens"] == 10
    assert response["metadata"] == {"a": "b"}


def test_a_length_finish_is_an_incomplete_response() -> None:
    shell = ResponseShell({"model": "m", "input": "x"}, "m")
    response = from_completion(shell, _completion({"content": "cut"}, "length"))
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}


# --- streams ---------------------------------------------------------------------------------


def _events(raw: bytes) -> list[dict[str, Any]]:
    events = []
    for block in raw.split(b"\n\n"):
        if not block.strip():
            continue
        name, data = block.split(b"\n", 1)
        event = orjson.loads(data.removeprefix(b"data: "))
        assert name == b"event: " + event["type"].encode()
        events.append(event)
    return events


def _kinds(events: list[dict[str, Any]]) -> list[str]:
    """Event types with runs of deltas collapsed: the number of deltas is the provider's."""
    kinds: list[str] = []
    for event in events:
        if not (kinds and kinds[-1] == event["type"] and event["type"].endswith(".delta")):
            kinds.append(event["type"])
    return kinds


def _translate(chunks: list[dict[str, Any]], done: bool = True) -> tuple[list[Any], Any]:
    translator = ResponsesEvents(ResponseShell({"model": "m", "input": "x"}, "m"))
    out = translator.start()
    for chunk in chunks:
        out += translator.feed(orjson.dumps(chunk))
    if done:
        out += translator.feed(b"[DONE]")
    return _events(out), translator.final


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> dict[str, Any]:
    return {"model": "m", "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}


USAGE_CHUNK = {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}


def test_a_text_stream_has_openais_events_in_openais_order() -> None:
    text = [_chunk({"role": "assistant", "content": ""})]
    text += [_chunk({"content": w}) for w in ("Hi", " there")]
    events, final = _translate([*text, _chunk(finish="stop"), USAGE_CHUNK])
    recorded = _events(fixture("openai-responses/responses.stream.sse.txt"))
    assert _kinds(events) == _kinds(recorded)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "".join(e["delta"] for e in events if e["type"].endswith("text.delta")) == "Hi there"
    assert events[-1]["response"]["usage"]["output_tokens"] == 2
    assert final == events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hi there"


def test_a_streamed_tool_call_has_openais_events_in_openais_order() -> None:
    first = {"index": 0, "id": "call_9", "type": "function",
             "function": {"name": "get_current_weather", "arguments": ""}}  # fmt: skip
    chunks = [_chunk({"role": "assistant", "tool_calls": [first]})]
    for part in ('{"location"', ': "Boston"}'):
        chunks.append(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}))
    events, final = _translate([*chunks, _chunk(finish="tool_calls"), USAGE_CHUNK])
    recorded = _events(fixture("openai-responses/responses.stream.function_call.sse.txt"))
    assert _kinds(events) == _kinds(recorded)
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["arguments"] == '{"location": "Boston"}'
    assert done["name"] == "get_current_weather"
    assert final["output"][0]["call_id"] == "call_9"


def test_an_error_after_the_200_is_an_error_event_then_response_failed() -> None:
    error = {"error": {"message": "boom", "type": "provider_error", "code": "provider_error"}}
    events, final = _translate([_chunk({"content": "Hi"}), error])
    recorded = _events(fixture("openai-responses/error.in_stream.sse.txt"))
    assert _kinds(events)[-2:] == _kinds(recorded)[-2:] == ["error", "response.failed"]
    assert events[-2]["message"] == "boom" and events[-2]["code"] == "provider_error"
    assert events[-1]["response"]["status"] == "failed"
    assert events[-1]["response"]["error"] == {"code": "provider_error", "message": "boom"}
    assert final is None, "a failed response is not stored"


def test_a_length_finish_ends_the_stream_with_response_incomplete() -> None:
    events, final = _translate([_chunk({"content": "cut"}), _chunk(finish="length"), USAGE_CHUNK])
    assert events[-1]["type"] == "response.incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}


# --- stored responses ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


DAY = 86400.0


def _lmdb(tmp_path: Path, clock: Clock, max_bytes: int = 1 << 20) -> LmdbResponseStore:
    return LmdbResponseStore(str(tmp_path / "responses"), max_bytes, 30 * DAY, clock)


def _memory(tmp_path: Path, clock: Clock, max_bytes: int = 1 << 20) -> MemoryResponseStore:
    return MemoryResponseStore(30 * DAY, clock=clock)


STORES: dict[str, Callable[..., ResponseStore]] = {"lmdb": _lmdb, "memory": _memory}


def _record(response_id: str, text: str = "hello") -> StoredResponse:
    item = {"id": "msg_" + response_id, "type": "message", "role": "assistant",
            "content": [{"type": "output_text", "text": text}]}  # fmt: skip
    return StoredResponse({"id": response_id, "output": [item]}, [{"role": "user", "content": "x"}])


@pytest.mark.parametrize("kind", STORES)
def test_a_stored_response_is_read_back_only_by_its_owner(tmp_path: Path, kind: str) -> None:
    store = STORES[kind](tmp_path, Clock())
    store.put("alice", _record("resp_1"))
    found = store.get("alice", "resp_1")
    assert found is not None and found.input == [{"role": "user", "content": "x"}]
    assert store.item("alice", "msg_resp_1") == found.response["output"][0]
    assert store.get("bob", "resp_1") is None
    assert store.item("bob", "msg_resp_1") is None
    assert not store.delete("bob", "resp_1")
    assert store.delete("alice", "resp_1")
    assert store.get("alice", "resp_1") is None
    assert not store.delete("alice", "resp_1")


@pytest.mark.parametrize("kind", STORES)
def test_a_stored_response_lives_its_lifetime_and_no_longer(tmp_path: Path, kind: str) -> None:
    clock = Clock()
    store = STORES[kind](tmp_path, clock)
    store.put("alice", _record("resp_old"))
    clock.now += 29 * DAY
    assert store.get("alice", "resp_old") is not None
    clock.now += 2 * DAY
    assert store.get("alice", "resp_old") is None
    assert store.item("alice", "msg_resp_old") is None


def test_past_the_size_budget_the_oldest_responses_go_first(tmp_path: Path) -> None:
    clock = Clock()
    store = _lmdb(tmp_path, clock, max_bytes=256 * 1024)
    for i in range(200):
        clock.now += 1
        store.put("alice", _record(f"resp_{i}", "many words " * 200))
    assert store.get("alice", "resp_199") is not None, "the newest stays"
    assert store.get("alice", "resp_0") is None, "the oldest went"
    assert store.count() < 200


def test_expired_responses_are_swept_as_new_ones_arrive(tmp_path: Path) -> None:
    clock = Clock()
    store = _lmdb(tmp_path, clock)
    for i in range(10):
        store.put("alice", _record(f"resp_{i}"))
    clock.now += 31 * DAY
    store.put("alice", _record("resp_new"))
    assert store.count() == 1


def test_a_response_stored_again_replaces_its_older_copy(tmp_path: Path) -> None:
    store = _lmdb(tmp_path, Clock())
    store.put("alice", _record("resp_1", "first"))
    store.put("alice", _record("resp_1", "second"))
    found = store.get("alice", "resp_1")
    assert found is not None and found.response["output"][0]["content"][0]["text"] == "second"
    assert store.count() == 1
