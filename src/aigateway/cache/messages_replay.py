"""Convert between a whole Anthropic message and the events of its stream.

The cache keeps a ``/v1/messages`` answer as one message, whatever the target was: a
streamed answer is assembled from its events (``MessagesAssembler``), and a streamed hit
is replayed as the events Anthropic would send (``replay_messages``): text and thinking
in small pieces, tool input as JSON fragments, the thinking signature and each citation
in deltas of their own.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_PIECES = re.compile(r"\S+\s*|\s+")
WORDS_PER_EVENT = 3
JSON_CHARS_PER_EVENT = 24
# Answers a client can be given again: finished, or stopped at the client's own limit
# (``max_tokens`` is always the client's on /v1/messages).
FINAL_STOPS = frozenset({"end_turn", "stop_sequence", "tool_use", "max_tokens"})
# Per kind of growing block: the field its deltas add to, and each delta's (type, key).
_GROWS = {
    "text": ("text", {"text_delta": "text"}),
    "thinking": ("thinking", {"thinking_delta": "thinking", "signature_delta": "signature"}),
    "tool_use": ("input", {"input_json_delta": "partial_json"}),
    "server_tool_use": ("input", {"input_json_delta": "partial_json"}),
}


class MessagesAssembler:
    """Folds a stream's event payloads into the message they add up to. It gives up
    (``completion()`` is None) on anything that is not an event, an error event, or once
    the content passes ``max_bytes``."""

    __slots__ = ("_blocks", "_max_bytes", "_message", "_size", "_stopped", "failed")

    def __init__(self, max_bytes: int | None = None) -> None:
        self._max_bytes = max_bytes
        self._size = 0
        self._message: dict[str, Any] | None = None
        self._blocks: dict[int, dict[str, Any]] = {}
        self._stopped = False
        self.failed = False

    def add(self, payload: bytes) -> None:
        if self.failed:
            return
        try:
            self._add(orjson.loads(payload))
        except (orjson.JSONDecodeError, _Unusable, KeyError, TypeError, AttributeError):
            self._give_up()
            return
        if self._max_bytes is not None and self._size > self._max_bytes:
            self._give_up()

    def completion(self) -> dict[str, Any] | None:
        if self.failed or self._message is None or not self._stopped:
            return None
        try:
            content = [_finished(block) for _, block in sorted(self._blocks.items())]
        except orjson.JSONDecodeError:  # a tool input that is not JSON: not replayable
            return None
        return {**self._message, "content": content}

    def _give_up(self) -> None:
        self.failed = True
        self._message, self._blocks = None, {}

    def _add(self, event: Any) -> None:
        kind = event["type"]
        if kind == "message_start":
            self._message = {**event["message"], "content": []}
        elif kind == "content_block_start":
            block = dict(event["content_block"])
            field = _GROWS.get(block["type"], ("", {}))[0]
            if field == "input":
                block["input"] = []  # JSON fragments, parsed when the block is done
            self._blocks[int(event["index"])] = block
            self._size += len(orjson.dumps(block))
        elif kind == "content_block_delta":
            block = self._blocks[int(event["index"])]
            delta = event["delta"]
            if delta["type"] == "citations_delta" and block["type"] == "text":
                block.setdefault("citations", []).append(delta["citation"])
                self._size += len(orjson.dumps(delta["citation"]))
                return
            key = _GROWS.get(block["type"], ("", {}))[1].get(delta["type"])
            if key is None:
                raise _Unusable  # deltas added later: not replayable
            piece = delta[key]
            if not isinstance(piece, str):
                raise _Unusable
            if key == "partial_json":
                block["input"].append(piece)
            elif key == "signature":
                block["signature"] = piece
            else:
                block[key] = block.get(key, "") + piece
            self._size += len(piece)
        elif kind == "message_delta":
            if self._message is None:
                raise _Unusable
            self._message.update(event.get("delta") or {})
            usage = event.get("usage")
            if isinstance(usage, dict):
                self._message["usage"] = {**(self._message.get("usage") or {}), **usage}
        elif kind == "message_stop":
            self._stopped = True
        elif kind == "error":
            raise _Unusable


class _Unusable(Exception):
    """An event the cache cannot make sense of."""


def _finished(block: dict[str, Any]) -> dict[str, Any]:
    if isinstance(block.get("input"), list):
        text = "".join(block["input"])
        block["input"] = orjson.loads(text) if text else {}
    return block


def replay_messages(message: dict[str, Any]) -> list[bytes]:
    """The event payloads of a stream that adds up to ``message``."""
    usage = message.get("usage") or {}
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**usage, "output_tokens": 0}
    out = [_dump({"type": "message_start", "message": start})]
    for index, block in enumerate(message.get("content") or ()):
        kind = block.get("type")
        if kind in ("text", "thinking"):
            opening = {k: v for k, v in block.items() if k != "citations"}
            opening[kind] = ""
            if kind == "thinking":
                opening["signature"] = ""
            out.append(_start(index, opening))
            for citation in block.get("citations") or ():
                out.append(_delta(index, {"type": "citations_delta", "citation": citation}))
            pieces = _PIECES.findall(block.get(kind) or "")
            for i in range(0, len(pieces), WORDS_PER_EVENT):
                text = "".join(pieces[i : i + WORDS_PER_EVENT])
                out.append(_delta(index, {"type": f"{kind}_delta", kind: text}))
            if kind == "thinking":
                signature = block.get("signature") or ""
                out.append(_delta(index, {"type": "signature_delta", "signature": signature}))
        elif kind in ("tool_use", "server_tool_use"):
            out.append(_start(index, {**block, "input": {}}))
            arguments = orjson.dumps(block.get("input") or {}).decode()
            for i in range(0, len(arguments), JSON_CHARS_PER_EVENT):
                piece = arguments[i : i + JSON_CHARS_PER_EVENT]
                out.append(_delta(index, {"type": "input_json_delta", "partial_json": piece}))
        else:  # redacted thinking, tool results of server tools: whole in their start
            out.append(_start(index, block))
        out.append(_dump({"type": "content_block_stop", "index": index}))
    delta = {
        "stop_reason": message.get("stop_reason"),
        "stop_sequence": message.get("stop_sequence"),
    }
    out.append(_dump({"type": "message_delta", "delta": delta, "usage": usage}))
    out.append(_dump({"type": "message_stop"}))
    return out


def messages_cacheable(message: dict[str, Any]) -> bool:
    """Only whole messages with their ``usage``, stopped for a final reason."""
    return (
        isinstance(message.get("content"), list)
        and all(isinstance(block, dict) for block in message["content"])
        and isinstance(message.get("usage"), dict)
        and message.get("stop_reason") in FINAL_STOPS
    )


def _start(index: int, block: dict[str, Any]) -> bytes:
    return _dump({"type": "content_block_start", "index": index, "content_block": block})


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return _dump({"type": "content_block_delta", "index": index, "delta": delta})


def _dump(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)
