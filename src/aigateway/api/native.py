"""The native API, ``POST /v1/chat``: one simple shape for every provider.

Request: ``{model, messages, provider?, temperature?, max_tokens?, top_p?, stop?, tools?,
tool_choice?, priority?, attachments?, cache?, metadata?, stream?}``.
Answer: ``{id, provider, model, content, tool_calls?, finish_reason, usage, cached,
latency_ms}``. With ``stream: true`` the same content arrives as server-sent events:
``{id, provider, model, content}`` deltas, then ``{..., finish_reason, usage}``, then
``data: [DONE]``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from aigateway.api.builder import NativeControls
from aigateway.api.http import answer_headers, event_stream, json_response, observer_of, read_body
from aigateway.api.routes import PipelineRoutes
from aigateway.api.validation import check_depth, parse_chat_request, parse_json_object
from aigateway.errors import InvalidRequest, ProviderError
from aigateway.hotpath import SSEDecoder
from aigateway.providers._openai_format import load_any
from aigateway.wire import PRIORITIES, ApiRequest, Completed, Streaming, close_events

PASSED_ON = ("temperature", "max_tokens", "top_p", "stop", "tools", "tool_choice", "stream")
NATIVE_KEYS = frozenset(
    {"model", "messages", "provider", "priority", "attachments", "cache", "metadata", *PASSED_ON}
)


def parse_native_request(raw: bytes) -> tuple[ApiRequest, NativeControls]:
    """The request in the gateway's form, and the native body's priority and cache."""
    return parse_native_body(parse_json_object(raw))


def parse_native_body(native: dict[str, Any]) -> tuple[ApiRequest, NativeControls]:
    """``parse_native_request`` for a body already parsed (a batch item)."""
    check_depth(native)
    unknown = sorted(set(native) - NATIVE_KEYS)
    if unknown:
        raise InvalidRequest(
            f"unknown field '{unknown[0]}'; the native API takes " + ", ".join(sorted(NATIVE_KEYS)),
            param=unknown[0],
            code="unknown_parameter",
        )
    body: dict[str, Any] = {k: native[k] for k in ("model", "messages") if k in native}
    body.update({k: native[k] for k in PASSED_ON if native.get(k) is not None})
    if body.get("stream") is True:
        body["stream_options"] = {"include_usage": True}
    request = parse_chat_request(orjson.dumps(body))  # the chat is checked as sent
    provider = native.get("provider")
    if provider is not None and (not isinstance(provider, str) or not provider):
        raise InvalidRequest("invalid field 'provider': expected a provider name", param="provider")
    priority = native.get("priority")
    if "priority" in native and (not isinstance(priority, str) or priority not in PRIORITIES):
        raise InvalidRequest(
            f"invalid field 'priority': expected one of {', '.join(PRIORITIES)}", param="priority"
        )
    for name in ("cache", "metadata"):
        if native.get(name) is not None and not isinstance(native[name], dict):
            raise InvalidRequest(f"invalid field '{name}': expected an object", param=name)
    parts = _image_parts(native.get("attachments"))
    if parts:
        body["messages"] = _attach(body["messages"], parts)
        request = dataclasses.replace(request, body=body, raw=orjson.dumps(body))
    controls = NativeControls(priority, native.get("cache"))
    return dataclasses.replace(request, provider=provider), controls


def _image_parts(attachments: Any) -> list[dict[str, Any]]:
    """Each attachment as an OpenAI image part: ``{"url"}`` or ``{"data", "mime_type"}``,
    with an optional ``"type": "image"``."""
    if attachments is None:
        return []
    if not isinstance(attachments, list):
        raise InvalidRequest("invalid field 'attachments': expected a list", param="attachments")
    parts = []
    for i, item in enumerate(attachments):
        param = f"attachments[{i}]"
        if not isinstance(item, dict) or item.get("type", "image") != "image":
            raise InvalidRequest(f"invalid field '{param}': expected an image", param=param)
        for name in ("url", "data", "mime_type"):
            if name in item and not isinstance(item[name], str):
                raise InvalidRequest(
                    f"invalid field '{param}.{name}': expected a string", param=f"{param}.{name}"
                )
        if "url" in item:
            url = item["url"]
        elif "data" in item and "mime_type" in item:
            url = f"data:{item['mime_type']};base64,{item['data']}"
        else:
            raise InvalidRequest(
                f"invalid field '{param}': expected 'url', or 'data' with 'mime_type'", param=param
            )
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


def _attach(messages: list[dict[str, Any]], parts: list[dict[str, Any]]) -> list[Any]:
    """The image parts appended to the last user message (the chat is already checked)."""
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last_user is None:
        raise InvalidRequest("attachments need a user message to attach to", param="attachments")
    messages = list(messages)
    message = dict(messages[last_user])
    content = message["content"]
    text_parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    message["content"] = [*text_parts, *parts]
    messages[last_user] = message
    return messages


class NativeRoutes(PipelineRoutes):
    async def chat(self, request: Request) -> Response:
        started = time.perf_counter()
        parsed, controls = parse_native_request(await read_body(request, self.max_body_bytes))
        chat = self.builder.build(request, parsed, controls)
        result = await self._pipeline().chat(chat, observer_of(request))
        headers = answer_headers(result)
        if isinstance(result, Streaming):
            return event_stream(result, chat, headers, _native_events(result))
        return json_response(native_answer(result, started), headers=headers)


def native_answer(result: Completed, started: float) -> dict[str, Any]:
    """A whole answer in the native shape; ``started`` is the request's perf_counter()."""
    completion = orjson.loads(result.body)
    choice = _first(completion.get("choices"))
    message = _object(choice.get("message"))
    answer: dict[str, Any] = {
        "id": _text(completion.get("id"), "id", result, required=True),
        "provider": result.provider,
        "model": _text(completion.get("model"), "model", result) or result.model,
        "content": _text(message.get("content"), "content", result),
        "finish_reason": _text(choice.get("finish_reason"), "finish_reason", result),
        "usage": completion.get("usage"),
        "cached": result.cache == "hit",
        "latency_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    if message.get("tool_calls"):
        answer["tool_calls"] = message["tool_calls"]
    return answer


async def _native_events(result: Streaming) -> AsyncIterator[bytes]:
    """The OpenAI chunks as native events; an event that is not a chunk ends the stream
    with the documented error event (the client already has its 200)."""
    decoder = SSEDecoder()
    try:
        async for raw in result.events:
            out = []
            for data in decoder.feed(raw):
                if data == b"[DONE]":
                    out.append(b"data: [DONE]\n\n")
                    continue
                chunk = load_any(data)
                if not isinstance(chunk, dict):
                    error = ProviderError(f"{result.provider} sent a stream event that is not JSON")
                    yield b"".join(out) + b"data: " + error.json() + b"\n\n"
                    return
                event = _native_event(chunk, result)
                if event is not None:
                    out.append(b"data: " + orjson.dumps(event) + b"\n\n")
            if out:
                yield b"".join(out)
    finally:
        await close_events(result.events)


def _text(value: Any, field: str, result: Completed, required: bool = False) -> str | None:
    """A field the native answer promises as text: a provider that sent something else
    gave a malformed answer (502), not one to pass on."""
    if isinstance(value, str) or (value is None and not required):
        return value
    raise ProviderError(f"{result.provider} answered with a {field} that is not text")


def _first(choices: Any) -> dict[str, Any]:
    return _object(choices[0]) if isinstance(choices, list) and choices else {}


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _native_event(chunk: dict[str, Any], result: Streaming) -> dict[str, Any] | None:
    if "error" in chunk:
        return chunk
    event: dict[str, Any] = {
        "id": chunk.get("id"),
        "provider": result.provider,
        "model": chunk.get("model") or result.model,
    }
    choices = chunk.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        delta = _object(choice.get("delta"))
        if delta.get("content"):
            event["content"] = delta["content"]
        if delta.get("tool_calls"):
            event["tool_calls"] = delta["tool_calls"]
        if choice.get("finish_reason"):
            event["finish_reason"] = choice["finish_reason"]
    if chunk.get("usage"):
        event["usage"] = chunk["usage"]
    return event if len(event) > 3 else None
