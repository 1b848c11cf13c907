"""Small HTTP helpers shared by the handlers: bounded body reads, JSON answers, streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from aigateway.core.streaming import without_usage
from aigateway.core.types import ApiRequest, CacheControl, Streaming, close_events
from aigateway.errors import GatewayError, InvalidRequest, PayloadTooLarge
from aigateway.providers._openai_format import include_usage

JSON = "application/json"
STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class EventStream(StreamingResponse):
    """Server-sent events that always end what produces them: when the answer is complete,
    and as soon as the client leaves (Starlette stops iterating then, without closing the
    iterator), so the provider call behind it is let go at once."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await close_events(self.body_iterator)  # type: ignore[arg-type]


def event_stream(
    result: Streaming, request: ApiRequest, headers: Mapping[str, str],
    events: AsyncIterator[bytes] | None = None,
) -> EventStream:  # fmt: skip
    """The response for a streamed answer (``events``: ``result.events`` reshaped). Its
    usage chunk goes unless the client set ``stream_options.include_usage``."""
    if events is None:
        events = result.events
        if not include_usage(request.body):
            events = without_usage(events)
    return EventStream(
        events, media_type="text/event-stream", headers={**STREAM_HEADERS, **headers}
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body; 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def json_response(
    content: bytes | Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = content if isinstance(content, bytes) else orjson.dumps(content)
    return Response(body, status_code=status, headers=headers, media_type=JSON)


def error_response(error: GatewayError, headers: dict[str, str] | None = None) -> Response:
    all_headers = error.headers()
    if headers:
        all_headers.update(headers)
    return Response(error.json(), status_code=error.status, headers=all_headers, media_type=JSON)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")


def cache_control(request: Request, native: Any = None) -> CacheControl:
    """The client's cache instructions: ``Cache-Control`` and ``x-aigateway-cache-ttl``
    headers, or the native body's ``cache`` object (``no_cache``, ``no_store``, ``ttl``)."""
    directives = {d.strip().lower() for d in request.headers.get("cache-control", "").split(",")}
    read, write = "no-cache" not in directives, "no-store" not in directives
    raw_ttl: Any = request.headers.get("x-aigateway-cache-ttl")
    param = "x-aigateway-cache-ttl"
    if isinstance(native, dict):
        read = read and not native.get("no_cache", False)
        write = write and not native.get("no_store", False)
        if native.get("ttl") is not None:
            raw_ttl, param = native["ttl"], "cache.ttl"
    ttl = None
    if raw_ttl is not None:
        try:
            ttl = float(raw_ttl)
        except (TypeError, ValueError):
            ttl = -1.0
        if isinstance(raw_ttl, bool) or not 0 <= ttl < float("inf"):
            raise InvalidRequest(f"invalid {param}: expected a number of seconds >= 0", param=param)
    if read and write and ttl is None:
        return _DEFAULT_CONTROL
    return CacheControl(read, write, ttl)


_DEFAULT_CONTROL = CacheControl()


PRIORITIES = ("critical", "high", "normal", "low")


def priority_header(request: Request, default: str = "normal") -> str:
    """The request's priority from ``x-aigateway-priority`` (critical, high, normal, low)."""
    value = request.headers.get("x-aigateway-priority")
    if value is None:
        return default
    value = value.strip().lower()
    if value not in PRIORITIES:
        raise InvalidRequest(
            "invalid x-aigateway-priority: expected one of " + ", ".join(PRIORITIES),
            param="x-aigateway-priority",
        )
    return value


def timeout_header(request: Request) -> float | None:
    """The client's deadline from ``x-aigateway-timeout-ms``, in seconds."""
    value = request.headers.get("x-aigateway-timeout-ms")
    if value is None:
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise InvalidRequest(
            "invalid x-aigateway-timeout-ms: expected a whole number of milliseconds >= 1",
            param="x-aigateway-timeout-ms",
        )
    return int(value) / 1000.0


def apply_headers(request: Request, api_request: ApiRequest, native_cache: Any = None) -> None:
    """What a client may say in headers for any request: cache, priority, deadline."""
    api_request.cache = cache_control(request, native_cache)
    if "x-aigateway-priority" in request.headers:
        api_request.priority = priority_header(request)
    api_request.timeout_s = timeout_header(request)
