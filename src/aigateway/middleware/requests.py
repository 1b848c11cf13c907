"""The outermost middleware: request id, node-wide request metrics, one log line a request.

* The request id is the client's ``x-request-id`` when it is a sane token (at most 128
  characters of letters, digits and ``._:-``), else a new random one; every response
  carries it back in ``x-request-id``, and every log line written while the request is
  handled names it.
* The request's observer (``core.observer.RequestObserver``: the worker's accounting and
  the request's record) goes to the route in the ASGI scope (``OBSERVER_KEY``, read by
  ``api.http.observer_of``); the route hands it to the pipeline.
* Metrics: requests by route template, method and status class, end-to-end latency, time
  to the first byte of streams, in-flight requests (see ``core.accounting``).  A request
  is counted just before the last byte of its answer goes out, so a client that has its
  whole answer always finds it counted in ``/metrics``.
* A client that leaves before its answer is complete is counted and logged as 499 (nginx's
  status for it).  Once its body is read, the request watches for the client's disconnect
  (after ``WATCH_AFTER_S``: quick answers never pay for it); if the client leaves before
  the answer starts, the work done for it is cancelled, so a provider call nobody waits
  for any more stops at once (a stream in progress is stopped by Starlette itself).
* With tracing on (``aigateway.tracing``), the source's ``RequestTracing`` makes the
  request's observer (a span for requests under ``/v1/``), and the span ends with the
  answer's status once the answer is out.
* The log line (logger ``aigateway.access``, info): request id, method, route, status,
  provider, model, cached, cost (USD), retries, queue wait and latency; the trace id
  when tracing is on.  Never a header (so never an API key); request and answer bodies
  only at debug level, cut at 64 KiB.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
from typing import Any, Final, Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aigateway.core.accounting import Accounting
from aigateway.core.observer import RequestObserver, RequestRecord
from aigateway.logs import REQUEST_ID
from aigateway.middleware._headers import header
from aigateway.pricing import format_usd

logger = logging.getLogger("aigateway.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}\Z")
_DEBUG_BODY_LIMIT = 64 * 1024
_CLIENT_CLOSED = 499  # nginx's status for a request whose client left before the answer
WATCH_AFTER_S: Final = 0.05
#: Where the route finds the request's ``RequestObserver`` in the ASGI scope.
OBSERVER_KEY: Final = "aigateway.observer"
#: The running loop, in the scope for what the request middleware wraps (asking asyncio
#: for it is a ``getpid()`` system call each time on Python 3.11).
LOOP_KEY: Final = "aigateway.loop"


class RequestTracing(Protocol):
    """A worker's tracing (``aigateway.tracing.otel.Tracing``)."""

    def observer(
        self, scope: Scope, accounting: Accounting, record: RequestRecord
    ) -> RequestObserver: ...

    async def shutdown(self) -> None: ...


class AccountingSource(Protocol):
    """Where the worker's accounting (and its tracing, if on) is found once its lifespan
    has started."""

    accounting: Accounting
    tracing: RequestTracing | None


def request_id_from(scope: Scope) -> str:
    given = header(scope, b"x-request-id")
    if given is not None and _REQUEST_ID.match(given):
        return given
    return f"{_ids.getrandbits(96):024x}"


# New request ids: 96 random bits, as os.urandom(12) gave, from a generator seeded by it
# (an id names a request, it guards nothing; the system call cost ~4 us a request).
_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))


class RequestMiddleware:
    def __init__(self, app: ASGIApp, source: AccountingSource) -> None:
        self.app = app
        self.source = source
        self.late = _LateWatches()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        accounting = self.source.accounting
        record = RequestRecord(request_id_from(scope))
        tracing = self.source.tracing
        if tracing is None:
            observer = RequestObserver(accounting, record)
        else:
            observer = tracing.observer(scope, accounting, record)
        scope[OBSERVER_KEY] = observer
        token = REQUEST_ID.set(record.request_id)
        accounting.request_started()
        state = _Exchange(record, accounting, scope)
        debug = logger.isEnabledFor(logging.DEBUG)
        if debug:
            receive = state.recording(receive)
        watch = _ClientWatch(receive, state, self.late)
        scope[LOOP_KEY] = watch.loop
        try:
            await self.app(scope, watch.receive, state.wrap(send))
        except asyncio.CancelledError:
            if not watch.cancelled or watch.task is None or watch.task.uncancel() > 0:
                raise  # not (only) ours: the server is stopping
        except Exception:
            state.finish(_CLIENT_CLOSED if watch.left else 500)
            raise
        finally:
            watch.stop()
            if watch.left and not state.counted:
                state.status = _CLIENT_CLOSED  # whatever had started, the client has not all
            state.finish(state.status or _CLIENT_CLOSED)
            if observer.trace is not None:
                cache = state.response_headers.get(b"x-aigateway-cache", b"").decode()
                observer.trace.end(state.status, cache)
            state.log(debug)  # after the answer went out: the client does not wait for it
            REQUEST_ID.reset(token)


class _ClientWatch:
    """The request's ``receive``, noticing a client that leaves before its answer is done.

    While the body is read, messages pass through.  Afterwards the only message left is
    ``http.disconnect``: one pending ``receive`` is shared by whoever asks (Starlette's
    streaming response listens for it too), started ``WATCH_AFTER_S`` after the body or
    at the first ask.  A disconnect before the answer started cancels the request's task.
    """

    __slots__ = ("_after_body", "_late", "_pending", "_receive", "_state", "cancelled",
                 "left", "loop", "task")  # fmt: skip

    def __init__(self, receive: Receive, state: _Exchange, late: _LateWatches) -> None:
        self._receive = receive
        self._state = state
        self._late = late
        self.loop = loop = asyncio.get_running_loop()  # once: each ask is a getpid() on 3.11
        self.task = asyncio.current_task(loop)
        self._after_body = False
        self._pending: asyncio.Future[Message] | None = None
        self.left = False
        self.cancelled = False

    async def receive(self) -> Message:
        if self._after_body:
            return await asyncio.shield(self._shared())
        message = await self._receive()
        kind = message["type"]
        if kind == "http.request" and not message.get("more_body", False):
            self._after_body = True
            self._late.enter(self)
        elif kind == "http.disconnect":
            self.left = True
        return message

    def start(self) -> None:
        """Watch for the client leaving from now on."""
        self._shared()

    def _shared(self) -> asyncio.Future[Message]:
        if self._pending is None:
            # A task of our own: the server's receive may return a future of its own kind.
            self._pending = asyncio.ensure_future(self._receive_later())
            self._pending.add_done_callback(self._received)
        return self._pending

    async def _receive_later(self) -> Message:
        return await self._receive()

    def _received(self, pending: asyncio.Future[Message]) -> None:
        if pending.cancelled() or pending.exception() is not None:
            return
        if pending.result()["type"] != "http.disconnect" or self._state.counted:
            return
        self.left = True
        if not self._state.status and self.task is not None and not self.cancelled:
            self.cancelled = True
            self.task.cancel()  # nobody waits for this answer any more

    def stop(self) -> None:
        """Stop watching, and let go of the pending ``receive`` and the request's task: a
        cancelled task keeps its ``CancelledError``, whose traceback holds the frame of
        ``_receive_later`` and so this watch; were the watch still holding the task, the
        whole request (scope, records, the server's protocol) would be left in a
        reference cycle for the cyclic collector, which under load runs seldom enough
        that thousands of them pile up (tens of MB a worker at 256 connections)."""
        self._late.leave(self)
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.cancel()
        self.task = None


class _LateWatches:
    """The requests of one worker whose body is read and whose watch has not started yet.

    One timer, due at the oldest one's start, starts every watch that has waited
    ``WATCH_AFTER_S`` (in the order they came, so the oldest is first): a timer per request
    (``call_later`` and its ``cancel``) cost ~1.5 us, and nearly every one was cancelled.
    """

    __slots__ = ("loop", "waiting")

    def __init__(self) -> None:
        self.waiting: dict[_ClientWatch, float] = {}  # -> when its watch starts
        self.loop: asyncio.AbstractEventLoop | None = None  # a sweep is due on it

    def enter(self, watch: _ClientWatch) -> None:
        loop = watch.loop
        self.waiting[watch] = loop.time() + WATCH_AFTER_S
        if self.loop is not loop:  # no sweep due (or one on a loop now gone)
            self.loop = loop
            loop.call_later(WATCH_AFTER_S, self.sweep, loop)

    def leave(self, watch: _ClientWatch) -> None:
        self.waiting.pop(watch, None)

    def sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self.loop:  # the sweeps moved to another loop
            return
        now = loop.time()
        due = []
        for watch, starts in self.waiting.items():
            if starts > now:
                break
            due.append(watch)
        for watch in due:
            del self.waiting[watch]
            if watch.loop is loop:  # (a watch of a loop now gone has nothing to watch)
                watch.start()
        if self.waiting:
            loop.call_later(max(0.0, next(iter(self.waiting.values())) - now), self.sweep, loop)
        else:
            self.loop = None


class _Exchange:
    """One request/answer exchange as the middleware watches it."""

    __slots__ = (
        "accounting",
        "answer_body",
        "counted",
        "first_byte_s",
        "record",
        "request_body",
        "response_headers",
        "scope",
        "seconds",
        "status",
        "streaming",
    )

    def __init__(self, record: RequestRecord, accounting: Accounting, scope: Scope) -> None:
        self.record = record
        self.accounting = accounting
        self.scope = scope
        self.status = 0
        self.streaming = False
        self.first_byte_s: float | None = None
        self.counted = False
        self.seconds = 0.0
        self.response_headers: dict[bytes, bytes] = {}
        self.request_body = bytearray()
        self.answer_body = bytearray()

    def wrap(self, send: Send) -> Send:
        request_id = self.record.request_id.encode()

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                headers = [*message.get("headers", ()), (b"x-request-id", request_id)]
                message = {**message, "headers": headers}
                for key, value in headers:
                    if key in _NOTED_HEADERS:
                        self.response_headers[key] = value
                content_type = self.response_headers.get(b"content-type", b"")
                self.streaming = content_type.startswith(b"text/event-stream")
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if self.streaming and body and self.first_byte_s is None:
                    self.first_byte_s = time.perf_counter() - self.record.started
                if logger.isEnabledFor(logging.DEBUG):
                    _keep(self.answer_body, body)
                if not message.get("more_body", False):
                    self.finish(self.status)
            await send(message)

        return wrapped

    def recording(self, receive: Receive) -> Receive:
        async def recorded() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                _keep(self.request_body, message.get("body", b""))
            return message

        return recorded

    def finish(self, status: int) -> None:
        """Count the request, once (just before the last byte of its answer leaves)."""
        if self.counted:
            return
        self.counted = True
        self.status = self.status or status
        self.seconds = time.perf_counter() - self.record.started
        provider_s = self.record.provider_s if self.record.attempts else None
        self.accounting.request_finished(
            self.route, self.scope.get("method", ""), self.status, self.seconds, provider_s,
            self.first_byte_s,
        )  # fmt: skip

    @property
    def route(self) -> str:
        return getattr(self.scope.get("route"), "path", None) or "unmatched"

    def log(self, debug: bool) -> None:
        if logger.isEnabledFor(logging.INFO):
            method = self.scope.get("method", "")
            logger.info("request", extra={"fields": self.fields(self.route, method)})
        if debug:
            self.log_bodies()

    def fields(self, route: str, method: str) -> dict[str, Any]:
        record = self.record
        noted = self.response_headers
        client = self.scope.get("client")
        fields = {
            "request_id": record.request_id,
            "method": method,
            "route": route,
            "path": self.scope.get("path", "")[:200],
            "status": self.status,
            "provider": record.provider or noted.get(b"x-aigateway-provider", b"").decode(),
            "model": record.model,
            "cached": noted.get(b"x-aigateway-cache", b"").decode(),
            "cost": _cost(noted.get(b"x-aigateway-cost"), record.cost),
            "retries": record.retries,
            "failovers": record.failovers,
            "queue_ms": round(record.queue_wait_s * 1000, 3),
            "latency_ms": round(self.seconds * 1000, 3),
            "client": client[0] if client else "",
        }
        if record.trace_id:
            fields["trace_id"] = record.trace_id
        return fields

    def log_bodies(self) -> None:
        if self.request_body:
            logger.debug("request body: %s", self.request_body.decode(errors="replace"))
        if self.answer_body:
            logger.debug("answer body: %s", self.answer_body.decode(errors="replace"))


_NOTED_HEADERS = frozenset(
    {b"content-type", b"x-aigateway-provider", b"x-aigateway-cache", b"x-aigateway-cost"}
)


def _cost(header: bytes | None, counted: float | None) -> str:
    """The answer's cost in USD: its header (what the client was told), else what its
    stream's usage cost once it came; empty when the answer said no usage."""
    if header is not None:
        return header.decode()
    return "" if counted is None else format_usd(counted)


def _keep(buffer: bytearray, chunk: bytes) -> None:
    room = _DEBUG_BODY_LIMIT - len(buffer)
    if room > 0:
        buffer += chunk[:room]
