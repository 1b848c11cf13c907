"""The request middleware's watch for a client that leaves, in process.

A request answered within ``WATCH_AFTER_S`` of its body never asks the server whether its
client left (quick answers pay nothing for the watch); one that takes longer starts
watching then, and when its client leaves before the answer starts, the work done for it
is cancelled and the request is counted and logged as 499. One timer per worker starts
the watches that are due (not one timer per request).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from aigateway.core.accounting import Accounting
from aigateway.middleware.requests import WATCH_AFTER_S, RequestMiddleware, RequestTracing


@dataclass
class Source:
    accounting: Accounting
    tracing: RequestTracing | None = None


def scope() -> Scope:
    return {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}


class Client:
    """Sends one body; asked again, it answers only once it has left (``leave``)."""

    def __init__(self) -> None:
        self.asks = 0
        self.gone = asyncio.Event()

    async def receive(self) -> Message:
        self.asks += 1
        if self.asks == 1:
            return {"type": "http.request", "body": b"{}", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def ignore(message: Message) -> None:
    pass


async def answer(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}", "more_body": False})


def test_quick_answers_never_ask_whether_their_client_left() -> None:
    async def main() -> tuple[list[int], int]:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await receive()
            await answer(send)

        middleware = RequestMiddleware(app, Source(Accounting.private()))
        clients = [Client() for _ in range(20)]
        for client in clients:
            await middleware(scope(), client.receive, ignore)
        await asyncio.sleep(WATCH_AFTER_S * 3)  # long past any watch's start
        return [c.asks for c in clients], len(middleware.late.waiting)

    asks, waiting = asyncio.run(main())
    assert asks == [1] * 20
    assert waiting == 0


def test_a_slow_request_whose_client_leaves_is_cancelled_and_logged_as_499(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aigateway.access")
    seen: dict[str, Any] = {}

    async def main() -> None:
        client = Client()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await receive()
            try:
                await asyncio.sleep(30)  # a provider that thinks
            except asyncio.CancelledError:
                seen["cancelled"] = True
                raise
            await answer(send)

        middleware = RequestMiddleware(app, Source(Accounting.private()))
        request = asyncio.create_task(middleware(scope(), client.receive, ignore))
        await asyncio.sleep(WATCH_AFTER_S * 4)
        seen["asks before leaving"] = client.asks  # the watch has started
        client.gone.set()
        await asyncio.wait_for(request, 10)

    asyncio.run(main())
    assert seen == {"asks before leaving": 2, "cancelled": True}
    statuses = [r.fields["status"] for r in caplog.records if hasattr(r, "fields")]
    assert statuses == [499]
