"""Answers that misbehave on purpose, for the faults of :mod:`aigateway.testing.mock_faults`.

No I/O here: huge answers are generated piece by piece (the caller writes each piece as it
comes, so a 200 MB answer never sits in the mock's memory), long streams as lists of events,
and odd ``usage`` values or malformed events are patched into the ordinary reply.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from aigateway.testing.mock_faults import Fault
from aigateway.testing.mock_replies import CREATED, SYSTEM_FINGERPRINT, ChatPlan

__all__ = ["huge_answer", "huge_stream", "shaped_answer", "shaped_stream"]

MB = 1_000_000
PIECE_BYTES = 64 * 1024
STREAM_TEXT_BYTES = 16 * 1024  # text per event of a huge stream
_WORDS = b"lorem ipsum " * (PIECE_BYTES // 12 + 1)


def _head(plan: ChatPlan, obj: str) -> dict[str, Any]:
    return {"id": plan.completion_id, "object": obj, "created": CREATED, "model": plan.model,
            "system_fingerprint": SYSTEM_FINGERPRINT}  # fmt: skip


def _usage(plan: ChatPlan, fault: Fault, completion_tokens: int | None = None) -> Any:
    if fault.has_usage:
        return fault.usage
    usage = dict(plan.usage)
    if completion_tokens is not None:
        usage["completion_tokens"] = completion_tokens
        usage["total_tokens"] = usage["prompt_tokens"] + completion_tokens
    return usage


def shaped_answer(body: bytes, fault: Fault) -> bytes:
    """A non-stream answer with the fault's ``usage`` and ``answer_patch`` applied."""
    answer = orjson.loads(body)
    if fault.has_usage:
        answer["usage"] = fault.usage
    if fault.answer_patch is not None:
        answer.update(fault.answer_patch)
    return orjson.dumps(answer)


def shaped_stream(events: list[bytes], plan: ChatPlan, fault: Fault) -> list[bytes]:
    """A stream's events with the fault's long content, ``usage`` and raw event applied."""
    if fault.stream_chunks is not None:
        events = _long_stream(plan, fault.stream_chunks)
    if fault.has_usage and plan.include_usage:
        usage_event = _event({**_head(plan, "chat.completion.chunk"), "choices": [],
                              "usage": fault.usage})  # fmt: skip
        events = [*events[:-2], usage_event, events[-1]]
    if fault.raw_event is not None:
        at = min(fault.raw_event_after_chunks, len(events))
        events = [*events[:at], b"data: " + fault.raw_event.encode() + b"\n\n", *events[at:]]
    return events


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _chunk(plan: ChatPlan, delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    payload: dict[str, Any] = {**_head(plan, "chat.completion.chunk"), "choices": [choice]}
    if plan.include_usage:
        payload["usage"] = None
    return _event(payload)


def _long_stream(plan: ChatPlan, chunks: int) -> list[bytes]:
    events = [_chunk(plan, {"role": "assistant", "content": ""})]
    events += [_chunk(plan, {"content": f"chunk {n} "}) for n in range(chunks)]
    events.append(_chunk(plan, {}, "stop"))
    usage = _usage(plan, Fault(spec={}), completion_tokens=2 * chunks)
    events.append(
        _event({**_head(plan, "chat.completion.chunk"), "choices": [], "usage": usage})
        if plan.include_usage
        else b""
    )
    events.append(b"data: [DONE]\n\n")
    return [event for event in events if event]


def huge_answer(plan: ChatPlan, fault: Fault) -> Iterator[bytes]:
    """A ``chat.completion`` whose text is ``fault.reply_mb`` MB, in pieces of 64 KiB."""
    size = int((fault.reply_mb or 0) * MB)
    words = size // 6
    head = orjson.dumps({**_head(plan, "chat.completion")})[:-1]
    yield head + b',"choices":[{"index":0,"message":{"role":"assistant","content":"'
    left = size
    while left > 0:
        piece = _WORDS[: min(left, PIECE_BYTES)]
        left -= len(piece)
        yield piece
    tail = {"usage": _usage(plan, fault, words)}
    yield b'","refusal":null},"logprobs":null,"finish_reason":"stop"}],' + orjson.dumps(tail)[1:]


def huge_stream(plan: ChatPlan, fault: Fault) -> tuple[int, Iterator[bytes]]:
    """(events, the events) of a stream whose text is ``fault.reply_mb`` MB."""
    size = int((fault.reply_mb or 0) * MB)
    count = -(-size // STREAM_TEXT_BYTES)

    def events() -> Iterator[bytes]:
        yield _chunk(plan, {"role": "assistant", "content": ""})
        left = size
        while left > 0:
            text = _WORDS[: min(left, STREAM_TEXT_BYTES)].decode()
            left -= len(text)
            yield _chunk(plan, {"content": text})
        yield _chunk(plan, {}, "stop")
        if plan.include_usage:
            usage = _usage(plan, fault, size // 6)
            yield _event({**_head(plan, "chat.completion.chunk"), "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"

    return count + 3 + plan.include_usage, events()
