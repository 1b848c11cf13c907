"""Anthropic's Messages API: the anthropic SDK and Claude-native tools work by changing
only their base URL (and using a gateway key as their API key).

``POST /v1/messages`` goes through the same pipeline as chat (route, cache, de-duplication,
admission, retries, failover): targets speaking Anthropic's format get the body as sent,
others a translation (``providers/messages.py``). Inside the gateway a streamed answer is
a series of ``data: <event>`` lines like any other; here each becomes
``event: <type>`` + ``data: <event>``, the relay's ``[DONE]`` is left out (``message_stop``
ends a Messages stream) and an error event takes Anthropic's shape.

``POST /v1/messages/count_tokens``: Anthropic's own count for an Anthropic target, an
estimate (``messages_tokens.py``) for the others. The ``anthropic-version`` header is
accepted whatever it says; ``anthropic-beta`` reaches Anthropic targets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigateway.api.anthropic_errors import (
    ERROR_TYPES,
    anthropic_error_response,
    error_type,
)
from aigateway.api.builder import RequestBuilder
from aigateway.api.http import answer_headers, event_stream, json_response, observer_of, read_body
from aigateway.api.messages_request import parse_count_tokens_request, parse_messages_request
from aigateway.api.messages_tokens import estimate_input_tokens
from aigateway.core.pipeline import Pipeline
from aigateway.errors import GatewayError
from aigateway.providers._openai_format import load_any
from aigateway.wire import Streaming, close_events

# OpenAI-shaped error types of the gateway's own errors, as Anthropic's.
_FROM_OPENAI = {
    "rate_limit_error": "rate_limit_error",
    "insufficient_quota": "billing_error",
    "invalid_request_error": "invalid_request_error",
    "permission_error": "permission_error",
    "provider_unavailable": "overloaded_error",
    "timeout_error": "timeout_error",
}
PASSED_HEADERS = ("anthropic-beta",)


class MessagesRoutes:
    """Handlers bound to the worker's pipeline (set when the lifespan starts)."""

    def __init__(self, max_body_bytes: int, builder: RequestBuilder) -> None:
        self.max_body_bytes = max_body_bytes
        self.builder = builder
        self.pipeline: Pipeline | None = None

    def routes(self) -> list[Route]:
        return [
            Route("/v1/messages", self.messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", self.count_tokens, methods=["POST"]),
        ]

    def _pipeline(self) -> Pipeline:
        assert self.pipeline is not None, "the app's lifespan has not started"
        return self.pipeline

    async def messages(self, request: Request) -> Response:
        try:
            raw = await read_body(request, self.max_body_bytes)
            parsed = parse_messages_request(raw, provider_headers(request))
            asked = self.builder.build(request, parsed)
            result = await self._pipeline().chat(asked, observer_of(request))
        except GatewayError as exc:
            return anthropic_error_response(exc)
        headers = answer_headers(result)
        if isinstance(result, Streaming):
            return event_stream(result, asked, headers, anthropic_events(result.events))
        return json_response(result.body, headers=headers)

    async def count_tokens(self, request: Request) -> Response:
        try:
            raw = await read_body(request, self.max_body_bytes)
            parsed = parse_count_tokens_request(raw, provider_headers(request))
            asked = self.builder.build(request, parsed)
            counted = await self._pipeline().count_tokens(asked, observer_of(request))
        except GatewayError as exc:
            return anthropic_error_response(exc)
        if counted is None:
            estimate = {"input_tokens": estimate_input_tokens(asked.body)}
            return json_response(estimate, headers={"x-aigateway-token-count": "estimate"})
        return json_response(counted, headers={"x-aigateway-token-count": "provider"})


def provider_headers(request: Request) -> tuple[tuple[str, str], ...]:
    return tuple((name, value) for name in PASSED_HEADERS if (value := request.headers.get(name)))


async def anthropic_events(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The gateway's ``data:`` events as Anthropic's named server-sent events."""
    pending = b""
    try:
        async for piece in events:
            *whole, pending = (pending + piece).split(b"\n\n")
            out = b"".join(_named(event) for event in whole)
            if out:
                yield out
    finally:
        await close_events(events)


def _named(event: bytes) -> bytes:
    if not event.startswith(b"data: "):
        return b""
    data = event[6:]
    if data == b"[DONE]":
        return b""
    payload = load_any(data)
    if not isinstance(payload, dict):
        return b""
    kind = payload.get("type")
    if "error" in payload and kind != "error":  # the gateway's own, in OpenAI's shape
        kind = "error"
        data = orjson.dumps({"type": "error", "error": _error_of(payload["error"])})
    if not isinstance(kind, str):
        return b""
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


def _error_of(detail: object) -> dict[str, str]:
    if not isinstance(detail, dict):
        return {"type": "api_error", "message": str(detail)}
    code, kind = detail.get("code"), detail.get("type")
    if code in ERROR_TYPES:
        anthropic = str(code)
    elif isinstance(kind, str) and kind in _FROM_OPENAI:
        anthropic = _FROM_OPENAI[kind]
    else:
        anthropic = error_type(500)
    return {"type": anthropic, "message": str(detail.get("message") or "")}
