"""The body deadline middleware in-process: what it times, what it answers, and that a
request cancelled for another reason stays cancelled. (Over real sockets against a real
gateway: tests/test_hostile_connections.py.)"""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message, Receive, Scope, Send

from aigateway.errors import RequestTimeout
from aigateway.middleware.body_timeout import BodyTimeoutMiddleware

SCOPE: Scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
PART: Message = {"type": "http.request", "body": b"{", "more_body": True}
LAST: Message = {"type": "http.request", "body": b"}", "more_body": False}


def _feed(*messages: Message) -> Receive:
    """A client that sends ``messages``, then nothing (it never leaves)."""
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


async def _answering(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body like the routes do; a RequestTimeout becomes its answer."""
    try:
        while (await receive()).get("more_body"):
            pass
        status, headers = 200, [(b"connection", b"keep-alive")]
    except RequestTimeout as exc:  # as the app's error handler answers it
        status = exc.status
        headers = [(k.encode(), v.encode()) for k, v in exc.headers().items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _run(receive: Receive, timeout_s: float = 0.05) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    app = BodyTimeoutMiddleware(_answering, timeout_s)
    asyncio.run(asyncio.wait_for(app(SCOPE, receive, send), 10))
    return sent


def test_a_body_that_stops_halfway_gets_408_with_connection_close() -> None:
    start = _run(_feed(PART))[0]
    assert start["status"] == 408
    assert start["headers"] == [(b"connection", b"close")]


def test_a_whole_body_is_answered_untouched() -> None:
    start = _run(_feed(PART, LAST))[0]
    assert start["status"] == 200 and start["headers"] == [(b"connection", b"keep-alive")]


def test_a_read_that_starts_past_the_deadline_fails_at_once() -> None:
    async def slow_parts() -> Message:
        await asyncio.sleep(0.03)  # each part comes in time, the whole body does not
        return PART

    assert _run(slow_parts)[0]["status"] == 408


def test_after_the_whole_body_later_reads_are_not_timed() -> None:
    """A streaming answer waits on receive() for the client leaving, for as long as the
    answer takes."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive()) == LAST
        waiting = asyncio.ensure_future(receive())
        await asyncio.sleep(0.6)  # past the deadline and a couple of sweeps
        assert not waiting.done()
        waiting.cancel()
        await send({"type": "http.response.start", "status": 200, "headers": []})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(BodyTimeoutMiddleware(app, 0.05)(SCOPE, _feed(LAST), send))
    assert sent[0]["status"] == 200


def test_a_request_cancelled_for_another_reason_stays_cancelled() -> None:
    async def scenario() -> None:
        app = BodyTimeoutMiddleware(_answering, 60)

        async def send(message: Message) -> None:
            raise AssertionError("nothing is answered")

        task = asyncio.ensure_future(app(SCOPE, _feed(PART), send))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        BodyTimeoutMiddleware(_answering, 0)
