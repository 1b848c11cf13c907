"""Convert between a whole OpenAI completion and the chunks of a stream.

The cache keeps one form, the completion: a streamed answer is assembled into one
when it completes, and a streamed hit is replayed as chunks shaped like a provider's
stream (role first, text in small pieces, tool-call deltas, the finish, the usage when
asked), never as one blob.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

_PIECES = re.compile(r"\S+\s*|\s+")
WORDS_PER_CHUNK = 3
ARGUMENT_CHARS_PER_CHUNK = 24


def assemble(chunks: Iterable[bytes]) -> dict[str, Any] | None:
    """The completion a stream of OpenAI chunk payloads adds up to; None if unusable."""
    head: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for payload in chunks:
        chunk = orjson.loads(payload)
        if not isinstance(chunk, dict) or "error" in chunk:
            return None
        if not head:
            head = {k: chunk.get(k) for k in ("id", "created", "model", "system_fingerprint")}
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            state = choices.setdefault(
                choice.get("index", 0), {"content": [], "tools": {}, "finish_reason": None}
            )
            delta = choice.get("delta") or {}
            if delta.get("content"):
                state["content"].append(delta["content"])
            for call in delta.get("tool_calls") or ():
                tool = state["tools"].setdefault(
                    call.get("index", 0), {"id": None, "name": "", "arguments": []}
                )
                tool["id"] = call.get("id") or tool["id"]
                function = call.get("function") or {}
                tool["name"] += function.get("name") or ""
                tool["arguments"].append(function.get("arguments") or "")
            if choice.get("finish_reason"):
                state["finish_reason"] = choice["finish_reason"]
    if not choices:
        return None
    return {
        "id": head.get("id"),
        "object": "chat.completion",
        "created": head.get("created"),
        "model": head.get("model"),
        "choices": [_message(index, state) for index, state in sorted(choices.items())],
        "usage": usage,
        "system_fingerprint": head.get("system_fingerprint"),
    }


def _message(index: int, state: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(state["content"]) or None}
    if state["tools"]:
        message["tool_calls"] = [
            {
                "id": tool["id"],
                "type": "function",
                "function": {"name": tool["name"], "arguments": "".join(tool["arguments"])},
            }
            for _, tool in sorted(state["tools"].items())
        ]
    elif message["content"] is None:
        message["content"] = ""
    return {"index": index, "message": message, "finish_reason": state["finish_reason"]}


def replay(completion: dict[str, Any], include_usage: bool) -> list[bytes]:
    """The chunk payloads of a stream that adds up to ``completion``."""
    head = {
        "id": completion.get("id"),
        "object": "chat.completion.chunk",
        "created": completion.get("created"),
        "model": completion.get("model"),
    }

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return orjson.dumps({**head, "choices": [choice]})

    out: list[bytes] = []
    for choice in completion.get("choices") or ():
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        out.append(chunk(index, {"role": "assistant", "content": ""}))
        pieces = _PIECES.findall(message.get("content") or "")
        for i in range(0, len(pieces), WORDS_PER_CHUNK):
            out.append(chunk(index, {"content": "".join(pieces[i : i + WORDS_PER_CHUNK])}))
        for n, call in enumerate(message.get("tool_calls") or ()):
            function = call.get("function") or {}
            opening = {"index": n, "id": call.get("id"), "type": "function",
                       "function": {"name": function.get("name"), "arguments": ""}}  # fmt: skip
            out.append(chunk(index, {"tool_calls": [opening]}))
            arguments = function.get("arguments") or ""
            for i in range(0, len(arguments), ARGUMENT_CHARS_PER_CHUNK):
                piece = arguments[i : i + ARGUMENT_CHARS_PER_CHUNK]
                out.append(
                    chunk(index, {"tool_calls": [{"index": n, "function": {"arguments": piece}}]})
                )
        out.append(chunk(index, {}, choice.get("finish_reason") or "stop"))
    if include_usage and completion.get("usage"):
        out.append(orjson.dumps({**head, "choices": [], "usage": completion["usage"]}))
    return out


FINAL_REASONS = frozenset({"stop", "tool_calls"})


def is_cacheable(completion: dict[str, Any], body: dict[str, Any]) -> bool:
    """Only complete answers: every choice finished for a final reason the client expects.

    ``length`` counts as final only when the client itself set a token limit.
    """
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    asked_limit = (
        body.get("max_tokens") is not None or body.get("max_completion_tokens") is not None
    )
    for choice in choices:
        reason = choice.get("finish_reason") if isinstance(choice, dict) else None
        if reason not in FINAL_REASONS and not (reason == "length" and asked_limit):
            return False
    return True
