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


class Assembler:
    """Folds a stream's OpenAI chunk payloads, as they come, into the completion they add up
    to: memory grows with the answer's text, not with the stream's framing.

    It gives up (``completion()`` is None, and what it held is freed) on a payload that is
    not a chunk, an error, or once the text passes ``max_bytes``.
    """

    __slots__ = ("_choices", "_head", "_max_bytes", "_size", "_usage", "failed")

    def __init__(self, max_bytes: int | None = None) -> None:
        self._max_bytes = max_bytes
        self._size = 0
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: Any = None
        self.failed = False

    def add(self, payload: bytes) -> None:
        if self.failed:
            return
        try:
            self._add(orjson.loads(payload))
        except (orjson.JSONDecodeError, _Unusable):
            self._give_up()
            return
        if self._max_bytes is not None and self._size > self._max_bytes:
            self._give_up()

    def completion(self) -> dict[str, Any] | None:
        if self.failed or not self._choices:
            return None
        head = self._head
        return {
            "id": head.get("id"),
            "object": "chat.completion",
            "created": head.get("created"),
            "model": head.get("model"),
            "choices": [_message(index, state) for index, state in sorted(self._choices.items())],
            "usage": self._usage,
            "system_fingerprint": head.get("system_fingerprint"),
        }

    def _give_up(self) -> None:
        self.failed = True
        self._choices, self._head = {}, {}

    def _add(self, chunk: Any) -> None:
        if not isinstance(chunk, dict) or "error" in chunk:
            raise _Unusable
        if not self._head:
            self._head = {k: chunk.get(k) for k in ("id", "created", "model", "system_fingerprint")}
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in _items(chunk.get("choices")):
            index = choice.get("index", 0)
            if not isinstance(index, int):
                raise _Unusable
            state = self._choices.setdefault(
                index, {"content": [], "tools": {}, "finish_reason": None}
            )
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise _Unusable
            content = delta.get("content")
            if content:
                state["content"].append(_text(content))
                self._size += len(content)
            for call in _items(delta.get("tool_calls")):
                position = call.get("index", 0)
                if not isinstance(position, int):
                    raise _Unusable
                tool = state["tools"].setdefault(
                    position, {"id": None, "name": "", "arguments": []}
                )
                tool["id"] = call.get("id") or tool["id"]
                function = call.get("function") or {}
                if not isinstance(function, dict):
                    raise _Unusable
                name, arguments = _text(function.get("name")), _text(function.get("arguments"))
                tool["name"] += name
                tool["arguments"].append(arguments)
                self._size += len(name) + len(arguments) + 64
            reason = choice.get("finish_reason")
            if reason:
                state["finish_reason"] = _text(reason)


class _Unusable(Exception):
    """A chunk the cache cannot make sense of."""


def _items(value: Any) -> list[dict[str, Any]]:
    """A list of objects (None: an empty one); anything else is unusable."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise _Unusable
    return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Unusable
    return value


def assemble(chunks: Iterable[bytes], max_bytes: int | None = None) -> dict[str, Any] | None:
    """The completion a stream of OpenAI chunk payloads adds up to; None if unusable."""
    assembler = Assembler(max_bytes)
    for payload in chunks:
        assembler.add(payload)
    return assembler.completion()


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
    """Only complete answers in OpenAI's shape, with their ``usage`` (a hit must tell the
    client what the answer cost), every choice finished for a final reason the client
    expects. ``length`` counts as final only when the client itself set a token limit.
    """
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    if not isinstance(completion.get("usage"), dict):
        return False
    asked_limit = (
        body.get("max_tokens") is not None or body.get("max_completion_tokens") is not None
    )
    for choice in choices:
        if not isinstance(choice, dict) or not _replayable(choice.get("message")):
            return False
        reason = choice.get("finish_reason")
        if reason not in FINAL_REASONS and not (reason == "length" and asked_limit):
            return False
    return True


def _replayable(message: Any) -> bool:
    """A message ``replay`` can turn back into chunks."""
    if not isinstance(message, dict):
        return False
    content, calls = message.get("content"), message.get("tool_calls")
    if content is not None and not isinstance(content, str):
        return False
    if calls is None:
        return True
    return isinstance(calls, list) and all(
        isinstance(call, dict) and isinstance(call.get("function") or {}, dict) for call in calls
    )
