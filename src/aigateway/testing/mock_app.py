"""The aiohttp application of the mock provider: one app, three wire formats, a control API.

OpenAI under ``/v1``, Anthropic under ``/anthropic/v1``, Gemini under ``/gemini/v1beta``; the
control API under ``/_mock``. Every provider call goes through the same steps: read and parse the
body, record the call (stats), check the API key (if one is configured, sent the way that format
sends it), pick a fault (per-request fault, else the next queued fault, else the default fault),
wait the latency, apply hang/drop/status, and only then validate and answer the request. Errors
come in the format of the endpoint called.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from aigateway.testing import mock_anthropic, mock_gemini, mock_responses
from aigateway.testing.mock_bodies import huge_answer, huge_stream, shaped_answer, shaped_stream
from aigateway.testing.mock_control import MAX_RECORDED_REQUESTS, MockState, control_routes
from aigateway.testing.mock_embeddings import render_embeddings, render_model, render_models
from aigateway.testing.mock_errors import Dialect
from aigateway.testing.mock_faults import (
    Fault,
    FaultError,
    MockRequestError,
    parse_fault_text,
)
from aigateway.testing.mock_replies import plan_chat, render_chat, render_chat_stream

__all__ = ["MAX_RECORDED_REQUESTS", "MockOptions", "create_mock_app"]

MAX_BODY_BYTES = 64 * 1024 * 1024
_HANG_POLL_SECONDS = 0.05
_JSON_HEADERS = {"Content-Type": "application/json"}
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_BAD_JSON = {
    "openai": "We could not parse the JSON body of your request. (HINT: This likely means you "
    "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what "
    "was sent was not valid JSON.)",
    "anthropic": "There was an error parsing the body of your request: invalid JSON",
    "gemini": "Invalid JSON payload received. Unexpected token.",
}
_GEMINI_NO_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). Please "
    "use API Key or other form of API consumer identity to call this API."
)

_V1Handler = Callable[[web.Request, Any, Fault | None], Awaitable[web.StreamResponse]]
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class MockOptions:
    """Per-server defaults of the mock provider.

    ``latency_ms``: wait before every provider answer (a fault's ``latency_ms`` adds to it).
    ``stream_chunk_delay_ms``: wait between two events of a streamed reply (a fault's
    ``stream_chunk_delay_ms`` replaces it). ``api_key``: if set, requests must send it as
    ``Authorization: Bearer <api_key>`` (OpenAI), ``x-api-key`` (Anthropic), or
    ``x-goog-api-key`` / ``?key=`` (Gemini).
    """

    latency_ms: float = 0.0
    stream_chunk_delay_ms: float = 0.0
    api_key: str | None = None


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, headers=_JSON_HEADERS)


def _error(exc: MockRequestError, dialect: Dialect) -> web.Response:
    return _json(exc.body(dialect), exc.status)


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
        self._api_key = options.api_key
        self._expected_auth = (
            None if options.api_key is None else f"Bearer {options.api_key}".encode()
        )
        self.state = MockState()
        self.kept_responses = mock_responses.ResponsesMemory()

    # ---------------------------------------------------------------- /v1 pipeline

    def _check_auth(self, request: web.Request, dialect: Dialect) -> None:
        if self._api_key is None or self._expected_auth is None:
            return
        if dialect == "anthropic":
            sent_key = request.headers.get("x-api-key", "")
            if not hmac.compare_digest(sent_key.encode(), self._api_key.encode()):
                raise MockRequestError(401, "invalid x-api-key")
            return
        if dialect == "gemini":
            sent_key = request.headers.get("x-goog-api-key") or request.query.get("key", "")
            if not sent_key:
                raise MockRequestError(403, _GEMINI_NO_KEY)
            if not hmac.compare_digest(sent_key.encode(), self._api_key.encode()):
                raise MockRequestError(
                    400, "API key not valid. Please pass a valid API key.", code="API_KEY_INVALID"
                )
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
            return self.state.faults.take()
        try:
            return parse_fault_text(text)
        except FaultError as exc:
            raise MockRequestError(400, f"Invalid {source}: {exc}") from None

    def _v1(self, handler: _V1Handler, dialect: Dialect = "openai") -> _Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            body: Any = None
            bad_json = False
            if raw:
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    bad_json = True
            self.state.record(request, body)
            try:
                self._check_auth(request, dialect)
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
                        answer = fault.errors[dialect]
                        return web.Response(
                            body=answer.body, status=fault.status, headers=answer.headers
                        )
                if bad_json:
                    raise MockRequestError(400, _BAD_JSON[dialect])
                return await handler(request, body, fault)
            except MockRequestError as exc:
                return _error(exc, dialect)

        return run

    # ---------------------------------------------------------------- /v1 endpoints

    async def chat_completions(
        self, request: web.Request, body: Any, fault: Fault | None
    ) -> web.StreamResponse:
        plan = plan_chat(body)
        shaped = fault is not None and fault.shapes_answer
        if not plan.stream:
            if shaped and fault is not None and fault.reply_mb is not None:
                return await self._pieces(request, huge_answer(plan, fault))
            answer = render_chat(plan)
            return _json(shaped_answer(answer, fault) if shaped and fault else answer)
        if shaped and fault is not None and fault.reply_mb is not None:
            total, pieces = huge_stream(plan, fault)
            return await self._stream(request, pieces, fault, "openai", total)
        events = render_chat_stream(plan)
        if shaped and fault is not None:
            events = shaped_stream(events, plan, fault)
        return await self._stream(request, events, fault, "openai")

    async def responses(
        self, request: web.Request, body: Any, fault: Fault | None
    ) -> web.StreamResponse:
        """``POST /v1/responses``: OpenAI's Responses API, plain or streamed."""
        expanded = self.kept_responses.expand(body)
        plan, checked = mock_responses.plan_responses(expanded)
        answer = mock_responses.render_response(plan, checked)
        self.kept_responses.keep(checked, orjson.loads(answer))
        if not plan.stream:
            return _json(answer)
        events = mock_responses.render_response_stream(plan, checked)
        return await self._stream(request, events, fault, "openai")

    async def delete_response(
        self, request: web.Request, body: Any, fault: Fault | None
    ) -> web.StreamResponse:
        """``DELETE /v1/responses/{id}``: a kept response forgotten, else OpenAI's 404."""
        response_id = request.match_info["response_id"]
        if not self.kept_responses.forget(response_id):
            raise MockRequestError(
                404, f"Response with id '{response_id}' not found.", param="response_id"
            )
        return _json(orjson.dumps({"id": response_id, "object": "response", "deleted": True}))

    async def _pieces(self, request: web.Request, pieces: Iterable[bytes]) -> web.StreamResponse:
        """A JSON answer written piece by piece (chunked), each write waiting for the reader."""
        response = web.StreamResponse(headers=_JSON_HEADERS)
        try:
            await response.prepare(request)
            for piece in pieces:
                await response.write(piece)
            await response.write_eof()
        except ConnectionError:
            pass
        return response

    async def _stream(
        self,
        request: web.Request,
        events: Iterable[bytes],
        fault: Fault | None,
        dialect: Dialect,
        total: int | None = None,
    ) -> web.StreamResponse:
        delay_ms = self._chunk_delay_ms
        drop_after: int | None = None
        if fault is not None:
            if fault.stream_chunk_delay_ms is not None:
                delay_ms = fault.stream_chunk_delay_ms
            drop_after = fault.drop_after_chunks
            error_after = fault.stream_error_after_chunks
            if error_after is not None:
                events = [*list(events)[:error_after], fault.stream_errors[dialect]]
        if isinstance(events, list):
            total = len(events)
        delay = delay_ms / 1000
        record = self.state.stream_started(request.path, total)
        response = web.StreamResponse(headers=_SSE_HEADERS)
        try:
            await response.prepare(request)
            for position, event in enumerate(events):
                if position == drop_after:
                    break
                if delay and position:
                    await asyncio.sleep(delay)
                await response.write(event)
                record["sent"] = position + 1
            if drop_after is not None:
                record["outcome"] = "dropped"
                _abort(request)
                return response
            await response.write_eof()
            record["outcome"] = "complete"
        except ConnectionError:
            pass  # client went away mid-stream; aiohttp closes the connection quietly
        finally:
            if record["outcome"] == "running":
                record["outcome"] = "cut"  # the client left (or the handler was cancelled)
            record["ended"] = time.time()
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

    # ---------------------------------------------------------------- /anthropic/v1 endpoints

    async def anthropic_messages(
        self, request: web.Request, body: Any, fault: Fault | None
    ) -> web.StreamResponse:
        plan = mock_anthropic.plan_messages(body)
        thinking = mock_anthropic.thinks(body)
        if not plan.stream:
            return _json(mock_anthropic.render_message(plan, thinking))
        events = mock_anthropic.render_message_stream(plan, thinking)
        return await self._stream(request, events, fault, "anthropic")

    async def anthropic_count_tokens(
        self, request: web.Request, body: Any, fault: Fault | None
    ) -> web.StreamResponse:
        return _json(mock_anthropic.count_tokens(body))

    async def anthropic_models(
        self, request: web.Request, body: Any, fault: Fault | None
    ) -> web.StreamResponse:
        return _json(mock_anthropic.render_models())

    async def anthropic_model(
        self, request: web.Request, body: Any, fault: Fault | None
    ) -> web.StreamResponse:
        return _json(mock_anthropic.render_model(request.match_info["model"]))

    async def anthropic_unknown(
        self, request: web.Request, body: Any, fault: Fault | None
    ) -> web.StreamResponse:
        raise MockRequestError(404, "Not found")

    # ---------------------------------------------------------------- /gemini/v1beta endpoints

    async def gemini_call(
        self, request: web.Request, body: Any, fault: Fault | None
    ) -> web.StreamResponse:
        """``POST models/{model}:{method}``."""
        model, _, method = request.match_info["target"].rpartition(":")
        logprobs = mock_gemini.logprobs_config(body)
        if method == "generateContent":
            plan = mock_gemini.plan_generate(model, body, False)
            return _json(mock_gemini.render_generate(plan, logprobs))
        if method == "streamGenerateContent":
            plan = mock_gemini.plan_generate(model, body, True)
            events = mock_gemini.render_generate_stream(plan, logprobs)
            if request.query.get("alt") == "sse":
                return await self._stream(request, events, fault, "gemini")
            # without alt=sse the stream is one JSON array
            return _json(b"[" + b",".join(event[6:-4] for event in events) + b"]")
        if method == "embedContent":
            return _json(mock_gemini.render_embed(body))
        if method == "batchEmbedContents":
            return _json(mock_gemini.render_batch_embed(model, body))
        raise MockRequestError(404, f"Method not found: {request.match_info['target']}")

    async def gemini_models(
        self, request: web.Request, body: Any, fault: Fault | None
    ) -> web.StreamResponse:
        return _json(mock_gemini.render_models())

    async def gemini_model(
        self, request: web.Request, body: Any, fault: Fault | None
    ) -> web.StreamResponse:
        return _json(mock_gemini.render_model(request.match_info["target"]))

    async def gemini_unknown(
        self, request: web.Request, body: Any, fault: Fault | None
    ) -> web.StreamResponse:
        raise MockRequestError(404, f"Invalid URL ({request.method} {request.path})")


def create_mock_app(options: MockOptions | None = None) -> web.Application:
    """Build the mock provider's aiohttp application.

    Run it with :class:`aiohttp.web.AppRunner` (``handler_cancellation=True`` makes hung
    handlers end as soon as the client disconnects; without it they notice within ~50 ms).
    """
    service = _MockService(options or MockOptions())
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    v1, anthropic, gemini = "/v1", "/anthropic/v1", "/gemini/v1beta"
    routes: list[tuple[str, str, _V1Handler, Dialect]] = [
        ("POST", v1 + "/chat/completions", service.chat_completions, "openai"),
        ("POST", v1 + "/embeddings", service.embeddings, "openai"),
        ("POST", v1 + "/responses", service.responses, "openai"),
        ("DELETE", v1 + "/responses/{response_id}", service.delete_response, "openai"),
        ("GET", v1 + "/models", service.models, "openai"),
        ("GET", v1 + "/models/{model}", service.model, "openai"),
        ("*", v1 + "/{tail:.*}", service.unknown, "openai"),
        ("POST", anthropic + "/messages", service.anthropic_messages, "anthropic"),
        ("POST", anthropic + "/messages/count_tokens", service.anthropic_count_tokens, "anthropic"),
        ("GET", anthropic + "/models", service.anthropic_models, "anthropic"),
        ("GET", anthropic + "/models/{model}", service.anthropic_model, "anthropic"),
        ("*", anthropic + "/{tail:.*}", service.anthropic_unknown, "anthropic"),
        ("POST", gemini + "/models/{target}", service.gemini_call, "gemini"),
        ("GET", gemini + "/models", service.gemini_models, "gemini"),
        ("GET", gemini + "/models/{target}", service.gemini_model, "gemini"),
        ("*", gemini + "/{tail:.*}", service.gemini_unknown, "gemini"),
    ]
    for method, path, handler, dialect in routes:
        app.router.add_route(method, path, service._v1(handler, dialect))
    app.router.add_routes(control_routes(service.state))
    return app
