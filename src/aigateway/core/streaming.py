"""Relay a provider's stream to the client as OpenAI server-sent events.

Events are decoded from the provider's bytes and sent on as soon as each network
chunk completes them. The relay always ends with ``data: [DONE]``; a provider
stream that breaks off ends instead with an error event in OpenAI's shape (the
official SDKs raise it), since the client already has a 200 and part of the answer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from aigateway.core.dispatch import Answer
from aigateway.errors import GatewayError, ProviderError
from aigateway.hotpath import SSEDecoder
from aigateway.providers._openai_format import load_any
from aigateway.providers.base import ChatAdapter, StreamTranslator
from aigateway.upstream import UpstreamFailure
from aigateway.wire import close_events

logger = logging.getLogger("aigateway.stream")

DONE = b"data: [DONE]\n\n"


class UsageCounter(Protocol):
    """Who counts a stream's usage: ``Accounting``, or a request's ``RequestObserver``
    (which also notes the cost for the request's log line)."""

    def usage_from_body(self, provider: str, model: str, body: bytes) -> float | None: ...


async def relay_stream(
    answer: Answer,
    adapter: ChatAdapter,
    translator: StreamTranslator,
    accounting: UsageCounter,
    *,
    model: str = "",
) -> AsyncIterator[bytes]:
    """The client's events; the usage the provider reports is counted in ``accounting``."""
    decoder = SSEDecoder()
    translate = _counting(translator.event, accounting, adapter.name, model)
    end = _counting(_same, accounting, adapter.name, model)
    try:
        out = _encode(decoder.feed(answer.body), translate)
        if out:
            yield out
        if answer.rest is not None:
            async for chunk in answer.rest:
                out = _encode(decoder.feed(chunk), translate)
                if out:
                    yield out
        out = _encode(decoder.flush(), translate) + _encode(translator.end(), end)
        if out:
            yield out
        yield DONE
    except UpstreamFailure as exc:
        logger.warning("%s stream broke off: %s", adapter.name, exc)
        yield _error_event(ProviderError(f"{adapter.name} stream broke off: {exc}"))
    except _ErrorAfter as exc:
        yield exc.sent + _error_event(exc.error)  # the events before the error still go out
    except GatewayError as exc:
        yield _error_event(exc)
    finally:
        await answer.response.close()


class _ErrorAfter(Exception):
    """A provider error event, and what the same network chunk carried before it."""

    def __init__(self, sent: bytes, error: GatewayError) -> None:
        self.sent = sent
        self.error = error


def _encode(events: list[bytes], translate: Callable[[bytes], list[bytes]]) -> bytes:
    if not events:
        return b""
    parts: list[bytes] = []
    for data in events:
        if data == b"[DONE]":
            continue  # the relay sends its own, once, at the very end
        try:
            payloads = translate(data)
        except GatewayError as exc:
            raise _ErrorAfter(b"".join(parts), exc) from None
        for payload in payloads:
            parts.append(b"data: " + payload + b"\n\n")
    return b"".join(parts)


def _same(data: bytes) -> list[bytes]:
    return [data]


def _counting(
    translate: Callable[[bytes], list[bytes]],
    accounting: UsageCounter,
    provider: str,
    model: str,
) -> Callable[[bytes], list[bytes]]:
    """``translate``, counting the tokens of the chunks that carry ``usage``."""

    def counted(data: bytes) -> list[bytes]:
        payloads = translate(data)
        for payload in payloads:
            if carries_usage(payload):
                accounting.usage_from_body(provider, model, payload)
        return payloads

    return counted


def carries_usage(payload: bytes) -> bool:
    """Whether a chunk may carry usage (every chunk says ``"usage":null`` once asked)."""
    return b'"usage"' in payload and payload.count(b'"usage"') != payload.count(b'"usage":null')


async def without_usage(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``events`` without the usage chunk (``choices: []``), for a client that did not set
    ``stream_options.include_usage``: the gateway asks every provider for usage (the cache
    keeps no answer without it), and the client gets the stream it asked for."""
    try:
        async for piece in events:
            if carries_usage(piece):
                piece = b"".join(e for e in _events_of(piece) if not _usage_chunk(e))
                if not piece:
                    continue
            yield piece
    finally:
        await close_events(events)


def _events_of(piece: bytes) -> list[bytes]:
    """The ``data: ...\n\n`` events of a piece of the relay's output."""
    return [event + b"\n\n" for event in piece.split(b"\n\n") if event]


def _usage_chunk(event: bytes) -> bool:
    if not event.startswith(b"data: {") or not carries_usage(event):
        return False
    chunk = load_any(event[6:])
    return isinstance(chunk, dict) and not chunk.get("choices") and "error" not in chunk


def _error_event(error: GatewayError) -> bytes:
    return b"data: " + error.json() + b"\n\n"
