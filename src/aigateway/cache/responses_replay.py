"""Convert between a whole Responses ``response`` and the events of its stream.

The cache keeps a ``/v1/responses`` answer as one Response object, whatever the target
was: a streamed answer is the ``response`` its ``response.completed`` event carries
(``ResponsesAssembler``), and a streamed hit is replayed as the events OpenAI would send
(``replay_responses``): text in small pieces, call arguments as JSON fragments, items the
gateway does not grow (reasoning, built-in tool calls) whole in their ``added``/``done``
events, a gap-free ``sequence_number`` throughout.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_PIECES = re.compile(r"\S+\s*|\s+")
WORDS_PER_EVENT = 3
ARGUMENT_CHARS_PER_EVENT = 24
FINAL_EVENTS = ("response.completed", "response.incomplete")


class ResponsesAssembler:
    """Keeps the final ``response`` of a stream's event payloads; gives up (``completion()``
    is None) on anything that is not an event, or once the payloads pass ``max_bytes``."""

    __slots__ = ("_final", "_max_bytes", "_size", "failed")

    def __init__(self, max_bytes: int | None = None) -> None:
        self._max_bytes = max_bytes
        self._size = 0
        self._final: dict[str, Any] | None = None
        self.failed = False

    def add(self, payload: bytes) -> None:
        if self.failed:
            return
        self._size += len(payload)
        if self._max_bytes is not None and self._size > self._max_bytes:
            self._give_up()
            return
        if b'"response.completed"' not in payload and b'"response.incomplete"' not in payload:
            return  # only the last event matters: the others are not even parsed
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._give_up()
            return
        if not isinstance(event, dict) or event.get("type") not in FINAL_EVENTS:
            return
        response = event.get("response")
        if isinstance(response, dict):
            self._final = response

    def completion(self) -> dict[str, Any] | None:
        return None if self.failed else self._final

    def _give_up(self) -> None:
        self.failed = True
        self._final = None


def responses_cacheable(response: dict[str, Any]) -> bool:
    """Only completed responses with their ``usage`` (a hit must say what it cost)."""
    return (
        response.get("object") == "response"
        and response.get("status") == "completed"
        and isinstance(response.get("output"), list)
        and all(isinstance(item, dict) for item in response["output"])
        and isinstance(response.get("usage"), dict)
    )


def replay_responses(response: dict[str, Any]) -> list[bytes]:
    """The event payloads of a stream that adds up to ``response``."""
    out: list[bytes] = []

    def event(kind: str, **fields: Any) -> None:
        out.append(orjson.dumps({"type": kind, **fields, "sequence_number": len(out)}))

    started = {**response, "status": "in_progress", "output": [], "usage": None,
               "completed_at": None}  # fmt: skip
    event("response.created", response=started)
    event("response.in_progress", response=started)
    for index, item in enumerate(response.get("output") or ()):
        kind = item.get("type")
        if kind == "message":
            event("response.output_item.added", output_index=index,
                  item={**item, "status": "in_progress", "content": []})  # fmt: skip
            for part_index, part in enumerate(item.get("content") or ()):
                _part(event, item, index, part_index, part)
        elif kind == "function_call":
            event("response.output_item.added", output_index=index,
                  item={**item, "status": "in_progress", "arguments": ""})  # fmt: skip
            arguments = str(item.get("arguments") or "")
            for start in range(0, len(arguments), ARGUMENT_CHARS_PER_EVENT):
                piece = arguments[start : start + ARGUMENT_CHARS_PER_EVENT]
                event("response.function_call_arguments.delta", item_id=item.get("id"),
                      output_index=index, delta=piece)  # fmt: skip
            event("response.function_call_arguments.done", item_id=item.get("id"),
                  output_index=index, name=item.get("name"), arguments=arguments)  # fmt: skip
        else:
            event("response.output_item.added", output_index=index, item=item)
        event("response.output_item.done", output_index=index, item=item)
    event("response.completed", response=response)
    return out


def _part(event: Any, item: dict[str, Any], index: int, part_index: int, part: Any) -> None:
    where = {"item_id": item.get("id"), "output_index": index, "content_index": part_index}
    if not isinstance(part, dict) or part.get("type") != "output_text":
        event("response.content_part.added", **where, part=part)
        event("response.content_part.done", **where, part=part)
        return
    text = str(part.get("text") or "")
    logprobs = part.get("logprobs") or []
    event("response.content_part.added", **where, part={**part, "text": "", "logprobs": []})
    pieces = _PIECES.findall(text)
    for i in range(0, len(pieces), WORDS_PER_EVENT):
        event("response.output_text.delta", **where,
              delta="".join(pieces[i : i + WORDS_PER_EVENT]), logprobs=[])  # fmt: skip
    event("response.output_text.done", **where, text=text, logprobs=logprobs)
    event("response.content_part.done", **where, part=part)
