"""An OpenAI chunk stream as Anthropic's Messages events, for a translated target.

The target's own translator turns its stream into OpenAI chunks; this one turns those
into ``message_start``, ``content_block_start`` / ``content_block_delta`` (``text_delta``,
``input_json_delta``) / ``content_block_stop`` per block, then ``message_delta`` (stop
reason and usage, input tokens included: OpenAI reports them only at the end) and
``message_stop``. One instance per stream.
"""

from __future__ import annotations

from typing import Any

import orjson

from aigateway.errors import ProviderError
from aigateway.providers._messages_chat import STOP_REASONS, message_id, messages_usage
from aigateway.providers._openai_format import JsonObject, load_any
from aigateway.providers.base import StreamTranslator

__all__ = ["MessagesFromChunks"]


class MessagesFromChunks:
    __slots__ = (
        "_block",
        "_calls",
        "_inner",
        "_kind",
        "_model",
        "_name",
        "_started",
        "_stop",
        "_usage",
    )

    def __init__(self, inner: StreamTranslator, provider: str, model: str) -> None:
        self._inner = inner
        self._name = provider
        self._model = model
        self._started = False
        self._block = -1  # the index of the open (last started) block
        self._kind: str | None = None  # "text" or "tool_use" while a block is open
        self._calls: dict[Any, int] = {}  # OpenAI tool call index -> block index
        self._stop: str | None = None
        self._usage: Any = None

    def event(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for chunk in self._inner.event(data):
            self._chunk(chunk, out)
        return out

    def end(self) -> list[bytes]:
        out: list[bytes] = []
        for chunk in self._inner.end():
            self._chunk(chunk, out)
        self._start(None, out)
        self._close(out)
        delta = {"stop_reason": self._stop or "end_turn", "stop_sequence": None}
        usage = messages_usage(self._usage)
        out.append(_dump({"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(_dump({"type": "message_stop"}))
        return out

    def _chunk(self, data: bytes, out: list[bytes]) -> None:
        chunk = load_any(data)
        if not isinstance(chunk, dict):
            raise ProviderError(f"{self._name} sent a stream event that is not JSON")
        self._start(chunk, out)
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._delta(delta, out)
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                self._stop = STOP_REASONS.get(reason, "end_turn")

    def _delta(self, delta: JsonObject, out: list[bytes]) -> None:
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self._kind != "text":
                self._open({"type": "text", "text": ""}, out)
            out.append(_delta(self._block, {"type": "text_delta", "text": text}))
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            position = call.get("index", 0)
            function = call.get("function")
            if not isinstance(function, dict):
                function = {}
            if position not in self._calls:
                block = {
                    "type": "tool_use",
                    "id": str(call.get("id") or ""),
                    "name": str(function.get("name") or ""),
                    "input": {},
                }
                self._open(block, out)
                self._calls[position] = self._block
            fragment = function.get("arguments")
            if isinstance(fragment, str) and fragment:
                json_delta = {"type": "input_json_delta", "partial_json": fragment}
                out.append(_delta(self._calls[position], json_delta))

    def _start(self, chunk: JsonObject | None, out: list[bytes]) -> None:
        if self._started:
            return
        self._started = True
        chunk = chunk or {}
        message: JsonObject = {
            "id": message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model") or self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": messages_usage(None),
        }
        out.append(_dump({"type": "message_start", "message": message}))

    def _open(self, block: JsonObject, out: list[bytes]) -> None:
        self._close(out)
        self._block += 1
        self._kind = block["type"]
        out.append(
            _dump({"type": "content_block_start", "index": self._block, "content_block": block})
        )

    def _close(self, out: list[bytes]) -> None:
        if self._kind is not None:
            out.append(_dump({"type": "content_block_stop", "index": self._block}))
            self._kind = None


def _delta(index: int, delta: JsonObject) -> bytes:
    return _dump({"type": "content_block_delta", "index": index, "delta": delta})


def _dump(payload: JsonObject) -> bytes:
    return orjson.dumps(payload)
