"""A deadline for a request's body: the slow-upload half of slow-client protection.

Granian (hyper underneath) bounds how long a connection may take to send a request
*head* (``CLIENT_HEADER_TIMEOUT_SEC``, see ``server.py``) but not its body: a client
that sends half a body and then nothing would hold its connection, its worker task and
its buffers for ever.  This middleware gives the whole body ``timeout_s`` from the
moment the head was read.  A read still waiting at the deadline ends with
:class:`~aigateway.errors.RequestTimeout` (408 in OpenAI's error shape), and the answer
carries ``connection: close`` so the connection is not kept for a next request whose
start would be the rest of this body.

Only reads of the body are timed: once the last chunk (or a disconnect) has come, later
``receive()`` calls, such as a streaming answer listening for the client leaving, pass
through untouched.  Pure ASGI, one timer per read (``asyncio.timeout_at``), no task.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aigateway.errors import RequestTimeout

_CLOSE = (b"connection", b"close")


class BodyTimeoutMiddleware:
    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = _TimedBody(receive, asyncio.get_running_loop().time() + self.timeout_s)
        await self.app(scope, body.receive, body.wrap(send))


class _TimedBody:
    __slots__ = ("deadline", "done", "expired", "inner")

    def __init__(self, inner: Receive, deadline: float) -> None:
        self.inner = inner
        self.deadline = deadline
        self.done = False  # the whole body (or a disconnect) has been received
        self.expired = False

    async def receive(self) -> Message:
        if self.done:
            return await self.inner()
        try:
            async with asyncio.timeout_at(self.deadline):
                message = await self.inner()
        except TimeoutError:
            self.expired = True
            raise RequestTimeout(
                "the request body did not arrive in time; send it at once after the headers"
            ) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.done = True
        return message

    def wrap(self, send: Send) -> Send:
        async def sending(message: Message) -> None:
            if self.expired and message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k != b"connection"]
                message = {**message, "headers": [*headers, _CLOSE]}
            await send(message)

        return sending
