"""A finished request leaves nothing behind for the cyclic garbage collector.

A worker collects its older generations seldom (``app.GC_THRESHOLDS``), so whatever a
request leaves in a reference cycle waits there: at 256 connections, thousands of requests'
scopes, tasks and records, tens of MB a worker (docs/benchmarks.md, issue 19's memory).
Reference counting must free a request the moment it is done, answered or failed: an
error raised through frames that hold it (a local, a task, a shared flight) is the usual
cycle. Checked in-process with the collector saving what it finds: the outermost
middleware, which keeps a task and a pending ``receive`` per request, and the pipeline
(de-duplication, failover) failing a call and refusing one at an open circuit.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.types import Message, Receive, Scope, Send

from aigateway.core.accounting import Accounting
from aigateway.core.observer import RequestObserver, RequestRecord
from aigateway.errors import ProviderError, ProviderUnavailable
from aigateway.middleware.requests import WATCH_AFTER_S, RequestMiddleware, RequestTracing
from fake_upstream import Reply
from test_pipeline import THRESHOLD, chat, gateway
from virtual_clock import run

# Objects of one request: none of them may be garbage the collector has to find.
REQUEST_TYPES = frozenset(
    {"_ClientWatch", "_Exchange", "RequestRecord", "RequestObserver", "ApiRequest", "Flight"}
)


class _Source:
    def __init__(self) -> None:
        self.accounting = Accounting.private()
        self.tracing: RequestTracing | None = None


async def _slow_answer(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the body, then answers after the middleware has started watching for the
    client's disconnect (a provider call takes longer than ``WATCH_AFTER_S``)."""
    while (await receive()).get("more_body", False):
        pass
    await asyncio.sleep(WATCH_AFTER_S * 3)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _serve_one(app: RequestMiddleware) -> list[Message]:
    """One request as a server hands it over; its ``receive`` blocks after the body until
    the connection closes, as Granian's does."""
    closed = asyncio.Event()
    messages = [{"type": "http.request", "body": b"{}", "more_body": False}]
    sent: list[Message] = []

    async def receive() -> Message:
        if messages:
            return messages.pop()
        await closed.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
                    "headers": [], "client": ("127.0.0.1", 1)}  # fmt: skip
    await app(scope, receive, send)
    await asyncio.sleep(0.01)  # the cancelled watch's task runs to its end
    return sent


@pytest.fixture
def saved_garbage() -> Iterator[list[object]]:
    """What the collector finds unreachable while the test runs (kept, not freed)."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.collect()


def test_a_request_that_was_watched_for_a_disconnect_is_freed_without_the_collector(
    saved_garbage: list[object],
) -> None:
    app = RequestMiddleware(_slow_answer, _Source())
    sent = asyncio.run(_serve_one(app))
    assert sent[0]["status"] == 200
    gc.collect()
    left = sorted({type(o).__name__ for o in saved_garbage} & REQUEST_TYPES)
    assert left == []


def test_failed_and_refused_calls_through_the_pipeline_are_freed_without_the_collector(
    tmp_path: Path, saved_garbage: list[object]
) -> None:
    gw = gateway(max_retries=0, cache_dir=tmp_path)  # with the cache: de-duplication too
    for upstream in gw.upstreams.values():
        upstream.reply = Reply(status=500)

    async def scenario() -> None:
        with pytest.raises(ProviderError):  # a chain: the first target fails, then the last
            await gw.pipeline.chat(chat("resilient"), gw.observer())
        for _ in range(THRESHOLD - 1):  # the provider fails; then its circuit refuses at once
            with pytest.raises(ProviderError):
                await gw.pipeline.chat(chat(), gw.observer())
        with pytest.raises(ProviderUnavailable):
            await gw.pipeline.chat(chat(), gw.observer())

    run(scenario())
    gc.collect()
    left = sorted({type(o).__name__ for o in saved_garbage} & REQUEST_TYPES)
    assert left == []


def test_the_check_would_see_a_request_left_in_a_cycle(saved_garbage: list[object]) -> None:
    """The check itself: a request's observer kept in a cycle is found."""
    held: list[object] = [RequestObserver(Accounting.private(), RequestRecord("cycle"))]
    held.append(held)
    del held
    gc.collect()
    assert "RequestObserver" in {type(o).__name__ for o in saved_garbage}
