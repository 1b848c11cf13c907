"""A deadline for a request's body: the slow-upload half of slow-client protection.

Granian (hyper underneath) bounds how long a connection may take to send a request
*head* (``CLIENT_HEADER_TIMEOUT_SEC``, see ``server.py``) but not its body: a client
that sends half a body and then nothing would hold its connection, its worker task and
its buffers for ever.  This middleware gives the whole body ``timeout_s`` from the
moment the head was read.  A read still waiting at the deadline ends with
:class:`~aigateway.errors.RequestTimeout`: 408 in OpenAI's error shape, with
``connection: close`` so the connection is not kept for a next request whose start
would be the rest of this body.

Only reads of the body are timed: once the last chunk (or a disconnect) has come, later
``receive()`` calls, such as a streaming answer listening for the client leaving, pass
through untouched.

No timer per request: a timer costs ~4-6 us on uvloop (``asyncio.timeout`` or
``call_at`` + ``cancel``), 3% of a cache miss's CPU. Instead a read that waits is
entered in the worker's :class:`_Watch`, and one sweep every ``SWEEP_S`` (scheduled
only while some read waits) cancels the reads past their deadline; the cancelled read
turns its ``CancelledError`` into the 408. A deadline is thus kept to within
``SWEEP_S``; a read that starts past it fails at once.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aigateway.errors import RequestTimeout

SWEEP_S = 0.25


class BodyTimeoutMiddleware:
    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.app = app
        self.timeout_s = timeout_s
        self.watch = _Watch()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, self.timed(receive), send)

    def timed(self, receive: Receive, loop: asyncio.AbstractEventLoop | None = None) -> Receive:
        """``receive`` reading the body against a deadline ``timeout_s`` from now;
        ``loop``: the running one, when the caller has it at hand."""
        if loop is None:
            loop = asyncio.get_running_loop()
        return _TimedBody(receive, loop, loop.time() + self.timeout_s, self.watch).receive


class _Watch:
    """The reads of one worker that wait for body bytes; swept while there are any."""

    __slots__ = ("loop", "waiting")

    def __init__(self) -> None:
        self.waiting: dict[_TimedBody, asyncio.Task[object]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None  # sweeping on it

    def enter(
        self, body: _TimedBody, task: asyncio.Task[object], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.waiting[body] = task
        if self.loop is not loop:  # no sweep scheduled (or one on a loop now gone)
            self.loop = loop
            loop.call_later(SWEEP_S, self.sweep)

    def leave(self, body: _TimedBody) -> None:
        self.waiting.pop(body, None)

    def sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for body, task in list(self.waiting.items()):
            if body.deadline <= now:
                del self.waiting[body]
                body.expired = True
                task.cancel()
        if self.waiting:
            loop.call_later(SWEEP_S, self.sweep)
        else:
            self.loop = None


class _TimedBody:
    # expired: by the sweep; loop: the request's (asking asyncio for it costs a getpid()
    # system call each time on Python 3.11, and a body read asked three times)
    __slots__ = ("deadline", "done", "expired", "inner", "loop", "watch")

    def __init__(
        self, inner: Receive, loop: asyncio.AbstractEventLoop, deadline: float, watch: _Watch
    ) -> None:
        self.inner = inner
        self.loop = loop
        self.deadline = deadline
        self.watch = watch
        self.done = False  # the whole body (or a disconnect) has been received
        self.expired = False

    async def receive(self) -> Message:
        if self.done:
            return await self.inner()
        loop = self.loop
        if loop.time() >= self.deadline:
            raise _timeout()
        task = asyncio.current_task(loop)
        assert task is not None
        self.watch.enter(self, task, loop)
        try:
            message = await self.inner()
        except asyncio.CancelledError:
            # ours (the sweep's) unless someone else cancelled the request as well
            if self.expired and task.uncancel() == 0:
                raise _timeout() from None
            raise
        finally:
            self.watch.leave(self)
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.done = True
        return message


def _timeout() -> RequestTimeout:
    return RequestTimeout(
        "the request body did not arrive in time; send it at once after the headers"
    )
