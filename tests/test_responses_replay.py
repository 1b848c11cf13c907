"""The cache keeps a ``/v1/responses`` answer as one Response object: a stream is folded
into the Response its ``response.completed`` event carries, and a streamed hit is replayed
as the events OpenAI sends (text in pieces, call arguments in fragments, items it does not
grow whole), with a gap-free ``sequence_number``; folding the replay gives the Response
back. Only completed responses with their usage are kept.
"""

from __future__ import annotations

from typing import Any

import orjson

from aigateway.cache.responses_replay import (
    ResponsesAssembler,
    replay_responses,
    responses_cacheable,
)

TEXT = "Paris is sunny today, with a light breeze from the west."
RESPONSE: dict[str, Any] = {
    "id": "resp_1",
    "object": "response",
    "status": "completed",
    "model": "gpt-4o-mini",
    "output": [
        {"id": "rs_1", "type": "reasoning", "summary": []},
        {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": TEXT, "annotations": [], "logprobs": []}]},
        {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_1",
         "name": "get_weather", "arguments": '{"location": "Paris, France", "unit": "c"}'},
    ],
    "usage": {"input_tokens": 9, "output_tokens": 12, "total_tokens": 21},
}  # fmt: skip


def _events() -> list[dict[str, Any]]:
    return [orjson.loads(e) for e in replay_responses(RESPONSE)]


def test_a_replay_has_openais_events_in_order_with_gap_free_numbers() -> None:
    events = _events()
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == TEXT and kinds.count("response.output_text.delta") > 1
    arguments = [e["delta"] for e in events if e["type"].endswith("arguments.delta")]
    assert "".join(arguments) == RESPONSE["output"][2]["arguments"] and len(arguments) > 1
    added = [e["item"]["type"] for e in events if e["type"] == "response.output_item.added"]
    assert added == ["reasoning", "message", "function_call"]
    assert events[0]["response"]["status"] == "in_progress" and not events[0]["response"]["output"]


def test_folding_a_replay_gives_the_response_back() -> None:
    assembler = ResponsesAssembler()
    for payload in replay_responses(RESPONSE):
        assembler.add(payload)
    assert assembler.completion() == RESPONSE


def test_an_assembler_past_its_size_gives_up() -> None:
    assembler = ResponsesAssembler(max_bytes=200)
    for payload in replay_responses(RESPONSE):
        assembler.add(payload)
    assert assembler.failed and assembler.completion() is None


def test_only_completed_responses_with_usage_are_kept() -> None:
    assert responses_cacheable(RESPONSE)
    assert not responses_cacheable({**RESPONSE, "status": "incomplete"})
    assert not responses_cacheable({**RESPONSE, "usage": None})
    assert not responses_cacheable({**RESPONSE, "output": ["not an item"]})
