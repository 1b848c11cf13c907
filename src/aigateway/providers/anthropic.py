"""Anthropic's Messages API behind OpenAI's wire format.

Chat goes to ``POST /messages`` (``"stream": true`` for server-sent events), the model list to
``GET /models``; every call carries ``x-api-key`` and ``anthropic-version: 2023-06-01``.
Requests are built by :mod:`aigateway.providers._anthropic_request`; answers, streams and
errors are read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from aigateway.errors import (
    GatewayError,
    ProviderError,
)
from aigateway.providers._anthropic_messages import (
    NativeMessagesStream,
    count_tokens_call,
    messages_call,
    messages_response,
)
from aigateway.providers._anthropic_options import json_answer
from aigateway.providers._anthropic_request import build_request
from aigateway.providers._openai_format import (
    ChunkWriter,
    JsonObject,
    choice,
    completion,
    completion_id,
    include_usage,
    load_any,
    load_object,
    tool_call,
    usage,
)
from aigateway.providers.base import ProviderFailure, StreamTranslator, UpstreamCall
from aigateway.providers.failures import ErrorBody, Said, classify
from aigateway.wire import ApiRequest

__all__ = ["ANTHROPIC_VERSION", "ERROR_STATUS", "AnthropicAdapter"]

ANTHROPIC_VERSION = "2023-06-01"
MODELS_PAGE_LIMIT = 1000  # the API's maximum: one page lists every model
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",  # a paused server-tool turn: no OpenAI equivalent
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# The HTTP status each of Anthropic's error types comes with (its documented table): for
# errors that arrive inside a stream, and read backwards by the gateway's own Anthropic-
# shaped errors (api/anthropic_errors.py) and by the bundled mock (testing/mock_errors.py).
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicAdapter:
    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None,
        default_max_tokens: int = 4096,
        *,
        key_variable: str = "ANTHROPIC_API_KEY",
    ) -> None:
        if default_max_tokens < 1:
            raise ValueError(f"default_max_tokens must be >= 1, got {default_max_tokens}")
        self.name = name
        self._base_url = base_url.rstrip("/")
        self._default_max_tokens = default_max_tokens
        self._key_variable = key_variable
        headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
        }
        if api_key:
            headers["x-api-key"] = api_key
        self._headers: Mapping[str, str] = headers
        self._stream_headers: Mapping[str, str] = {**headers, "accept": "text/event-stream"}
        self._get_headers: Mapping[str, str] = {
            k: v for k, v in headers.items() if k != "content-type"
        }

    def __repr__(self) -> str:  # never show the key
        return f"AnthropicAdapter(name={self.name!r}, base_url={self._base_url!r})"

    # chat ------------------------------------------------------------------------------

    def chat_call(self, request: ApiRequest, model: str) -> UpstreamCall:
        body = build_request(request.body, model, self._default_max_tokens, request.stream)
        headers = self._stream_headers if request.stream else self._headers
        return UpstreamCall("POST", self._base_url + "/messages", headers, orjson.dumps(body))

    def chat_response(self, body: bytes, request: ApiRequest, model: str) -> bytes:
        data = load_object(self.name, body)
        json_tool = _json_tool(request, model)
        texts: list[str] = []
        calls: list[JsonObject] = []
        structured = False
        for block in data.get("content") or ():
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif kind == "tool_use" and block.get("name") == json_tool:
                texts.append(orjson.dumps(block.get("input")).decode())  # the structured answer
                structured = True
            elif kind == "tool_use" and isinstance(block.get("name"), str):
                calls.append(tool_call(str(block.get("id")), block["name"], block.get("input")))
            # thinking and redacted_thinking blocks have no place in an OpenAI message
        text = "".join(texts) if texts or not calls else None
        finish = _FINISH.get(data.get("stop_reason") or "", "stop")
        if finish == "tool_calls" and structured and not calls:
            finish = "stop"  # the forced JSON tool answered: for the client, a plain answer
        return completion(
            completion_id(data.get("id")),
            _model_name(data, model),
            [choice(0, text, calls, finish)],
            _usage(data.get("usage") or {}),
        )

    def chat_stream(self, request: ApiRequest, model: str) -> StreamTranslator:
        return _AnthropicStream(
            self, model, include_usage(request.body), _json_tool(request, model)
        )

    # messages, passed through (see _anthropic_messages) ----------------------------------

    def messages_call(self, request: ApiRequest, model: str) -> UpstreamCall:
        headers = self._stream_headers if request.stream else self._headers
        return messages_call(self._base_url, headers, request, model)

    def messages_response(self, body: bytes, request: ApiRequest, model: str) -> bytes:
        return messages_response(self.name, body)

    def messages_stream(self, request: ApiRequest, model: str) -> StreamTranslator:
        return NativeMessagesStream(self)

    def count_tokens_call(self, request: ApiRequest, model: str) -> UpstreamCall:
        return count_tokens_call(self._base_url, self._headers, request, model)

    # models ---------------------------------------------------------------------------

    def models_call(self) -> UpstreamCall:
        url = f"{self._base_url}/models?limit={MODELS_PAGE_LIMIT}"
        return UpstreamCall("GET", url, self._get_headers)

    def models_response(self, body: bytes) -> list[dict[str, Any]]:
        data = load_object(self.name, body).get("data")
        if not isinstance(data, list):
            raise ProviderError(f"{self.name} listed its models in an unexpected shape")
        return [
            {
                "id": item["id"],
                "object": "model",
                "created": _timestamp(item.get("created_at")),
                "owned_by": "anthropic",
            }
            for item in data
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        ]

    # errors ---------------------------------------------------------------------------

    def classify_error(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> ProviderFailure:
        return classify(self.name, self._key_variable, status, headers, _error_body(status, body))

    def stream_error(self, payload: JsonObject, data: bytes) -> GatewayError:
        """The error for an ``event: error`` that arrived after the 200."""
        detail = payload.get("error")
        kind = detail.get("type") if isinstance(detail, dict) else None
        status = ERROR_STATUS.get(kind, 500) if isinstance(kind, str) else 500
        return self.classify_error(status, {}, data).error


class _AnthropicStream:
    """Anthropic's typed events as OpenAI chunks; tool calls renumbered from 0."""

    __slots__ = (
        "_adapter",
        "_blocks",
        "_finish",
        "_include_usage",
        "_json_blocks",
        "_json_tool",
        "_model",
        "_stopped",
        "_usage",
        "_writer",
    )

    def __init__(
        self, adapter: AnthropicAdapter, model: str, include_usage: bool, json_tool: str | None
    ) -> None:
        self._adapter = adapter
        self._json_tool = json_tool  # the forced tool whose input is the answer, if any
        self._json_blocks: set[Any] = set()
        self._model = model
        self._include_usage = include_usage
        self._writer: ChunkWriter | None = None
        self._blocks: dict[Any, int] = {}  # content block index -> OpenAI tool call index
        self._usage: JsonObject = {}
        self._finish: str | None = None
        self._stopped = False

    def _chunks(self, message: Any = None) -> ChunkWriter:
        if self._writer is None:
            if not isinstance(message, dict):
                message = {}
            self._writer = ChunkWriter(
                completion_id(message.get("id")),
                _model_name(message, self._model),
                self._include_usage,
            )
        return self._writer

    def event(self, data: bytes) -> list[bytes]:
        payload = load_any(data)
        if not isinstance(payload, dict):
            raise ProviderError(f"{self._adapter.name} sent a stream event that is not JSON")
        kind = payload.get("type")
        if self._stopped:
            return []
        if kind == "content_block_delta":
            return self._delta(payload)
        if kind == "message_start":
            message = payload.get("message")
            if isinstance(message, dict):
                self._add_usage(message.get("usage"))
            return [self._chunks(message).chunk(0, {"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(payload)
        if kind == "message_delta":
            delta = payload.get("delta")
            reason = delta.get("stop_reason") if isinstance(delta, dict) else None
            self._add_usage(payload.get("usage"))
            if not isinstance(reason, str):
                return []
            self._finish = _FINISH.get(reason, "stop")
            if self._finish == "tool_calls" and self._json_blocks and not self._blocks:
                self._finish = "stop"  # only the JSON tool was called
            return [self._chunks().chunk(0, {}, self._finish)]
        if kind == "message_stop":
            self._stopped = True
            return self._usage_chunk()
        if kind == "error":
            raise self._adapter.stream_error(payload, data)
        return []  # ping, content_block_stop, and event types added later

    def _delta(self, payload: JsonObject) -> list[bytes]:
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            return []
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            if isinstance(text, str) and text:
                return [self._chunks().chunk(0, {"content": text})]
        elif kind == "input_json_delta":
            fragment = delta.get("partial_json")
            if payload.get("index") in self._json_blocks:
                if isinstance(fragment, str) and fragment:
                    return [self._chunks().chunk(0, {"content": fragment})]
                return []
            index = self._blocks.get(payload.get("index"))
            if index is not None and isinstance(fragment, str) and fragment:
                call = {"index": index, "function": {"arguments": fragment}}
                return [self._chunks().chunk(0, {"tool_calls": [call]})]
        return []  # thinking_delta, signature_delta, citations_delta, ...

    def _block_start(self, payload: JsonObject) -> list[bytes]:
        block = payload.get("content_block")
        if not isinstance(block, dict):
            return []
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if isinstance(text, str) and text:
                return [self._chunks().chunk(0, {"content": text})]
        elif kind == "tool_use" and block.get("name") == self._json_tool:
            self._json_blocks.add(payload.get("index"))
            given = block.get("input")
            if given:
                return [self._chunks().chunk(0, {"content": orjson.dumps(given).decode()})]
        elif kind == "tool_use" and isinstance(block.get("name"), str):
            index = self._blocks[payload.get("index")] = len(self._blocks)
            given = block.get("input")
            call = {
                "index": index,
                "id": str(block.get("id")),
                "type": "function",
                "function": {
                    "name": block["name"],
                    "arguments": orjson.dumps(given).decode() if given else "",
                },
            }
            return [self._chunks().chunk(0, {"tool_calls": [call]})]
        return []

    def _add_usage(self, counts: Any) -> None:
        """Counts are cumulative: a later value replaces an earlier one."""
        if isinstance(counts, dict):
            for key, value in counts.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    self._usage[key] = value

    def _usage_chunk(self) -> list[bytes]:
        """Always: the gateway needs the usage (it leaves the client's stream if unasked)."""
        return [self._chunks().usage_chunk(_usage(self._usage))]

    def end(self) -> list[bytes]:
        if self._stopped:
            return []
        if self._finish is None:
            raise ProviderError(f"{self._adapter.name} stream ended before the answer was complete")
        return self._usage_chunk()  # finished, only message_stop went missing


def _json_tool(request: ApiRequest, model: str) -> str | None:
    """The name of the tool forced to carry a structured answer (see _anthropic_options)."""
    answer = json_answer(request.body, model)
    return answer.tool_name if answer is not None else None


def _usage(counts: Any) -> JsonObject:
    """OpenAI's prompt tokens include cached ones; Anthropic counts cache reads/writes apart."""
    if not isinstance(counts, dict):
        counts = {}

    def count(key: str) -> int:
        value = counts.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    cached = count("cache_read_input_tokens")
    prompt = count("input_tokens") + count("cache_creation_input_tokens") + cached
    return usage(prompt, count("output_tokens"), cached=cached)


def _model_name(data: JsonObject, model: str) -> str:
    name = data.get("model")
    return name if isinstance(name, str) and name else model


# What Anthropic's error types say beyond the status (see ``providers.failures``).
_SAID = {
    "authentication_error": Said.AUTH,
    "permission_error": Said.AUTH,
    "billing_error": Said.QUOTA,
    "rate_limit_error": Said.RATE_LIMITED,
    "overloaded_error": Said.OVERLOADED,
    "timeout_error": Said.TIMED_OUT,
}


def _error_body(status: int, body: bytes) -> ErrorBody:
    """``{"type": "error", "error": {"type", "message"}}``; a 402 is the account's bill."""
    parsed = load_any(body)
    detail = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(detail, dict):
        detail = {}
    kind = str(detail.get("type") or "")
    said = _SAID.get(kind)
    if said is not Said.AUTH and (status == 402 or _spend_limit(detail)):
        said = Said.QUOTA
    return ErrorBody(str(detail.get("message") or ""), kind, said, code=kind or None)


def _spend_limit(detail: JsonObject) -> bool:
    """The monthly spend cap: a 429 that no retry will cure."""
    details = detail.get("details")
    return isinstance(details, dict) and details.get("error_code") == "enforced_spend_limit_reached"


def _timestamp(value: Any) -> int:
    if not isinstance(value, str):
        return 0
    try:
        return int(datetime.fromisoformat(value).timestamp())
    except ValueError:
        return 0
