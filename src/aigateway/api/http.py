"""Small HTTP helpers shared by the handlers: the request's observer, bounded body reads,
JSON answers, streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from aigateway.api.anthropic_errors import anthropic_error_response, speaks_anthropic
from aigateway.core.observer import RequestObserver
from aigateway.core.streaming import without_usage
from aigateway.errors import GatewayError, PayloadTooLarge
from aigateway.middleware._headers import header
from aigateway.middleware.requests import OBSERVER_KEY
from aigateway.pricing import format_usd
from aigateway.providers._openai_format import include_usage
from aigateway.wire import ApiRequest, Completed, Streaming, close_events

JSON = "application/json"
STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class EventStream(StreamingResponse):
    """Server-sent events that always end what produces them: when the answer is complete,
    and as soon as the client leaves (Starlette stops iterating then, without closing the
    iterator), so the provider call behind it is let go at once.

    ``whole``: every event is in memory already (a stored answer replayed), so they go out
    as one chunk of the same chunked stream, without Starlette's task group and its
    disconnect listener (nothing waits between the events for a client to leave in): a
    replayed stream cost a cache hit three to four times a plain one, most of it in one
    ``send`` an event (docs/benchmarks.md, issue 19)."""

    def __init__(
        self, content: AsyncIterator[bytes], *, whole: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self.whole = whole

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if self.whole:
                await self._send_whole(send)
            else:
                await super().__call__(scope, receive, send)
        finally:
            await close_events(self.body_iterator)  # type: ignore[arg-type]

    async def _send_whole(self, send: Send) -> None:
        chunks = [
            chunk.encode(self.charset) if isinstance(chunk, str) else chunk
            async for chunk in self.body_iterator
        ]
        body = b"".join(chunks)
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})  # fmt: skip
        # Two body messages, as a stream ends: the answer stays chunked, as streams are.
        await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


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
        events,
        media_type="text/event-stream",
        headers={**STREAM_HEADERS, **headers},
        whole=result.replayed,
    )


def answer_headers(result: Completed | Streaming) -> dict[str, str]:
    """The gateway's headers on an answer: who answered, whether the cache did, and what
    it cost (``x-aigateway-cost``, USD): 0 for an answer the cache or an identical call
    gave; absent on a stream from a provider, whose usage comes after the headers."""
    headers = {"x-aigateway-provider": result.provider, "x-aigateway-cache": result.cache}
    if result.cache == "hit":
        headers["x-aigateway-cost"] = "0"
    elif isinstance(result, Completed) and result.cost is not None:
        headers["x-aigateway-cost"] = format_usd(result.cost)
    return headers


def answer_response(
    result: Completed | Streaming, request: ApiRequest,
    reshape: Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]] | None = None,
) -> Response:  # fmt: skip
    """The pipeline's answer as the client's response, with ``answer_headers``;
    ``reshape``: a stream's events in the client's API (``event_stream`` otherwise)."""
    headers = answer_headers(result)
    if isinstance(result, Streaming):
        events = reshape(result.events) if reshape is not None else None
        return event_stream(result, request, headers, events)
    return json_response(result.body, headers=headers)


def observer_of(request: Request) -> RequestObserver:
    """The request's observer, made by the request middleware (always outermost)."""
    observer: RequestObserver = request.scope[OBSERVER_KEY]
    return observer


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body; 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = whole_number(header(request.scope, b"content-length") or "")
    if declared is not None and declared > limit:
        raise _too_large(limit)
    # The messages themselves, not Starlette's ``Request.stream`` (an async generator
    # and a ``Headers`` object a request: a few microseconds of every cache hit).
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            # A body cut short (fewer bytes than its Content-Length, then a close; a
            # broken chunk size): the client's doing, counted as 499, never a fault.
            raise ClientClosed("the client closed the connection before the whole body")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class ClientClosed(GatewayError):
    """The client left before its request was read (nginx's 499): no server fault."""

    status = 499
    error_type = "invalid_request_error"
    default_code = "client_closed_request"


def whole_number(text: str) -> int | None:
    """A whole number >= 0 in ASCII digits, or None; past 18 digits it reads as 10**18
    (``int()`` would take ``²`` as a digit and refuse 4,300 of them)."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0")
    return int(digits or "0") if len(digits) <= 18 else HUGE


HUGE = 10**18


def json_response(
    content: bytes | Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = content if isinstance(content, bytes) else orjson.dumps(content)
    return Response(body, status_code=status, headers=headers, media_type=JSON)


def error_response(
    error: GatewayError, headers: dict[str, str] | None = None, path: str = ""
) -> Response:
    """The error in OpenAI's shape, or in Anthropic's under ``/v1/messages`` (``path``), so
    each API's SDK raises its own exception classes whatever failed (a bad body, a
    missing key, an unknown sub-path, a method, a slow body...)."""
    if speaks_anthropic(path):
        return anthropic_error_response(error, headers)
    all_headers = error.headers()
    if headers:
        all_headers.update(headers)
    return Response(error.json(), status_code=error.status, headers=all_headers, media_type=JSON)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")
