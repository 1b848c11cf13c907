"""The aiohttp application of the mock provider: OpenAI routes under /v1, control API under /_mock.

Every /v1 call goes through the same steps: read and parse the body, record the call (stats),
check the API key (if one is configured), pick a fault (per-request fault, else the next queued
fault, else the default fault), wait the latency, apply hang/drop/status, and only then validate
and answer the request.
"""

from __future__ import annotations

import asyncio
import hmac
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from aigateway.testing.mock_embeddings import render_embeddings, render_model, render_models
from aigateway.testing.mock_faults import (
    Fault,
    FaultError,
    FaultQueue,
    MockRequestError,
    error_payload,
    parse_fault_text,
)
from aigateway.testing.mock_replies import plan_chat, render_chat, render_chat_stream

__all__ = ["MAX_RECORDED_REQUESTS", "MockOptions", "create_mock_app"]

MAX_RECORDED_REQUESTS = 50
MAX_BODY_BYTES = 64 * 1024 * 1024
_HANG_POLL_SECONDS = 0.05
_SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key"})
_JSON_HEADERS = {"Content-Type": "application/json"}
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_OK_BODY = b'{"ok":true}'

_V1Handler = Callable[[web.Request, Any, Fault | None], Awaitable[web.StreamResponse]]
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class MockOptions:
    """Per-server defaults of the mock provider.

    ``latency_ms``: wait before every /v1 answer (a fault's ``latency_ms`` adds to it).
    ``stream_chunk_delay_ms``: wait between two events of a streamed reply (a fault's
    ``stream_chunk_delay_ms`` replaces it). ``api_key``: if set, /v1 requests must send
    ``Authorization: Bearer <api_key>``.
    """

    latency_ms: float = 0.0
    stream_chunk_delay_ms: float = 0.0
    api_key: str | None = None


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, headers=_JSON_HEADERS)


def _error(exc: MockRequestError) -> web.Response:
    return _json(exc.body(), exc.status)


def _mask_key(key: str) -> str:
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}...{key[-4:]}"


def _abort(request: web.Request) -> web.Response:
    """Close the connection without an answer.

    The returned response is never sent: writing to the aborted transport fails, and aiohttp
    treats that as a quiet client disconnection.
    """
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response()


async def _hang(request: web.Request) -> web.Response:
    """Wait until the client disconnects (or, when the server cancels handlers on disconnect,
    until this handler is cancelled)."""
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return web.Response()  # nobody left to send it to; dropped quietly
        await asyncio.sleep(_HANG_POLL_SECONDS)


class _MockService:
    """State (stats, faults) and request handlers of one mock provider app."""

    def __init__(self, options: MockOptions) -> None:
        self._latency_ms = options.latency_ms
        self._chunk_delay_ms = options.stream_chunk_delay_ms
        self._expected_auth = (
            None if options.api_key is None else f"Bearer {options.api_key}".encode()
        )
        self.calls = 0
        self.by_path: dict[str, int] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDED_REQUESTS)
        self.faults = FaultQueue()

    # ---------------------------------------------------------------- /v1 pipeline

    def _record(self, request: web.Request, body: Any) -> None:
        path = request.path
        self.calls += 1
        self.by_path[path] = self.by_path.get(path, 0) + 1
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            lower = name.lower()
            headers[lower] = "present" if lower in _SECRET_HEADERS else value
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.recent.append(
            {
                "path": path,
                "method": request.method,
                "headers": headers,
                "body": body,
                # the client's address:port tells tests whether a connection was reused
                "peer": f"{peer[0]}:{peer[1]}" if peer else None,
            }
        )

    def _check_auth(self, request: web.Request) -> None:
        if self._expected_auth is None:
            return
        sent = request.headers.get("Authorization", "")
        if hmac.compare_digest(sent.encode(), self._expected_auth):
            return
        key = sent[7:].strip() if sent[:7].lower() == "bearer " else sent.strip()
        if key:
            message = f"Incorrect API key provided: {_mask_key(key)}."
        else:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        raise MockRequestError(401, message, code="invalid_api_key")

    def _select_fault(self, request: web.Request, body: Any) -> Fault | None:
        text = request.headers.get("x-mock-fault")
        source = "x-mock-fault header"
        if text is None and isinstance(body, dict):
            metadata = body.get("metadata")
            if isinstance(metadata, dict):
                spec = metadata.get("mock_fault")
                if isinstance(spec, dict):
                    spec = orjson.dumps(spec).decode()
                if isinstance(spec, str):
                    text = spec
                    source = "metadata.mock_fault"
        if text is None:
            return self.faults.take()
        try:
            return parse_fault_text(text)
        except FaultError as exc:
            raise MockRequestError(400, f"Invalid {source}: {exc}") from None

    def _v1(self, handler: _V1Handler) -> _Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            body: Any = None
            bad_json = False
            if raw:
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    bad_json = True
            self._record(request, body)
            try:
                self._check_auth(request)
                fault = self._select_fault(request, body)
                delay_ms = self._latency_ms
                if fault is not None:
                    delay_ms += fault.latency_ms
                if delay_ms > 0:
                    await asyncio.sleep(delay_ms / 1000)
                if fault is not None:
                    if fault.hang:
                        return await _hang(request)
                    if fault.drop:
                        return _abort(request)
                    if fault.status is not None:
                        return web.Response(
                            body=fault.error_body, status=fault.status, headers=fault.error_headers
                        )
                if bad_json:
                    raise MockRequestError(
                        400,
                        "We could not parse the JSON body of your request. (HINT: This likely "
                        "means you aren't using your HTTP library correctly. The OpenAI API "
                        "expects a JSON payload, but what was sent was not valid JSON.)",
                    )
                return await handler(request, body, fault)
            except MockRequestError as exc:
                return _error(exc)

        return run

    # ---------------------------------------------------------------- /v1 endpoints

    async def chat_completions(
        self, request: web.Request, body: Any, fault: Fault | None
    ) -> web.StreamResponse:
        plan = plan_chat(body)
        if not plan.stream:
            return _json(render_chat(plan))
        return await self._stream(request, render_chat_stream(plan), fault)

    async def _stream(
        self, request: web.Request, events: list[bytes], fault: Fault | None
    ) -> web.StreamResponse:
        delay_ms = self._chunk_delay_ms
        drop_after: int | None = None
        if fault is not None:
            if fault.stream_chunk_delay_ms is not None:
                delay_ms = fault.stream_chunk_delay_ms
            drop_after = fault.drop_after_chunks
        delay = delay_ms / 1000
        response = web.StreamResponse(headers=_SSE_HEADERS)
        try:
            await response.prepare(request)
            for position, event in enumerate(events):
                if position == drop_after:
                    break
                if delay and position:
                    await asyncio.sleep(delay)
                await response.write(event)
            if drop_after is not None:
                _abort(request)
                return response
            await response.write_eof()
        except ConnectionError:
            pass  # client went away mid-stream; aiohttp closes the connection quietly
        return response

    async def embeddings(
        self, request: web.Request, body: Any, fault: Fault | None
    ) -> web.StreamResponse:
        return _json(render_embeddings(body))

    async def models(
        self, request: web.Request, body: Any, fault: Fault | None
    ) -> web.StreamResponse:
        return _json(render_models())

    async def model(
        self, request: web.Request, body: Any, fault: Fault | None
    ) -> web.StreamResponse:
        return _json(render_model(request.match_info["model"]))

    async def unknown(
        self, request: web.Request, body: Any, fault: Fault | None
    ) -> web.StreamResponse:
        message = f"Invalid URL ({request.method} {request.path})"
        raise MockRequestError(404, message)

    # ---------------------------------------------------------------- control API

    async def stats(self, request: web.Request) -> web.Response:
        return _json(
            orjson.dumps(
                {
                    "calls": self.calls,
                    "by_path": self.by_path,
                    "last_requests": list(self.recent),
                }
            )
        )

    async def reset(self, request: web.Request) -> web.Response:
        self.calls = 0
        self.by_path.clear()
        self.recent.clear()
        self.faults.clear()
        return _json(_OK_BODY)

    async def set_faults(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            self.faults.configure(orjson.loads(raw or b"{}"))
        except orjson.JSONDecodeError as exc:
            return _json(orjson.dumps(error_payload(f"Invalid JSON: {exc}")), 400)
        except FaultError as exc:
            return _json(orjson.dumps(error_payload(str(exc))), 400)
        return _json(orjson.dumps({"ok": True, **self.faults.describe()}))

    async def get_faults(self, request: web.Request) -> web.Response:
        return _json(orjson.dumps(self.faults.describe()))


def create_mock_app(options: MockOptions | None = None) -> web.Application:
    """Build the mock provider's aiohttp application.

    Run it with :class:`aiohttp.web.AppRunner` (``handler_cancellation=True`` makes hung
    handlers end as soon as the client disconnects; without it they notice within ~50 ms).
    """
    service = _MockService(options or MockOptions())
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    router = app.router
    router.add_post("/v1/chat/completions", service._v1(service.chat_completions))
    router.add_post("/v1/embeddings", service._v1(service.embeddings))
    router.add_get("/v1/models", service._v1(service.models), allow_head=False)
    router.add_get("/v1/models/{model}", service._v1(service.model), allow_head=False)
    router.add_route("*", "/v1/{tail:.*}", service._v1(service.unknown))
    router.add_get("/_mock/stats", service.stats, allow_head=False)
    router.add_post("/_mock/reset", service.reset)
    router.add_post("/_mock/faults", service.set_faults)
    router.add_get("/_mock/faults", service.get_faults, allow_head=False)
    return app
