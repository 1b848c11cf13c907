"""Relay a provider's stream to the client as OpenAI server-sent events.

Events are decoded from the provider's bytes and sent on as soon as each network
chunk completes them. The relay always ends with ``data: [DONE]``; a provider
stream that breaks off ends instead with an error event in OpenAI's shape (the
official SDKs raise it), since the client already has a 200 and part of the answer.

What the stream did (its first token, its usage, how it ended) goes to the request's
observer when the relay ends: the stream metrics, and the stream's span when traced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable

import orjson

from aigateway.core.dispatch import Answer
from aigateway.core.observer import RequestObserver, StreamRecord
from aigateway.errors import GatewayError, ProviderError
from aigateway.hotpath import SSEDecoder
from aigateway.providers._openai_format import load_any
from aigateway.providers.base import ChatAdapter, StreamTranslator
from aigateway.upstream import UpstreamFailure
from aigateway.wire import close_events, token_counts

logger = logging.getLogger("aigateway.stream")

DONE = b"data: [DONE]\n\n"


async def relay_stream(
    answer: Answer,
    adapter: ChatAdapter,
    translator: StreamTranslator,
    observer: RequestObserver,
    *,
    model: str = "",
) -> AsyncIterator[bytes]:
    """The client's events; what the stream did is reported to ``observer`` at its end."""
    decoder = SSEDecoder()
    stream = StreamRecord(adapter.name, model)
    traced = observer.trace is not None
    translate = _counting(translator.event, observer, stream, traced)
    end = _counting(_same, observer, stream, traced)
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
        stream.outcome = "broken"
        logger.warning("%s stream broke off: %s", adapter.name, exc)
        yield _error_event(ProviderError(f"{adapter.name} stream broke off: {exc}"))
    except _ErrorAfter as exc:
        stream.outcome = "error"
        yield exc.sent + _error_event(exc.error)  # the events before the error still go out
    except GatewayError as exc:
        stream.outcome = "error"
        yield _error_event(exc)
    except BaseException:  # closed early (the client left) or cancelled
        stream.outcome = "cancelled"
        raise
    finally:
        await answer.response.close()
        observer.stream_ended(stream)


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
    observer: RequestObserver,
    stream: StreamRecord,
    traced: bool,
) -> Callable[[bytes], list[bytes]]:
    """``translate``, noting when the first token came and counting the tokens of the
    chunks that carry ``usage``; when ``traced``, the finish reasons too."""

    def counted(data: bytes) -> list[bytes]:
        payloads = translate(data)
        for payload in payloads:
            if stream.first_token is None and carries_token(payload):
                stream.first_token = time.perf_counter()
            if carries_usage(payload):
                _count_usage(observer, stream, payload)
            if traced and (_FINISH in payload or _STOP in payload):
                _note_finish(stream, payload)
        return payloads

    return counted


def _count_usage(observer: RequestObserver, stream: StreamRecord, payload: bytes) -> None:
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return
    if not isinstance(chunk, dict):
        return
    usage = chunk.get("usage")
    model = stream.model or str(chunk.get("model") or "")
    observer.usage(stream.provider, model, usage)  # its cost noted for the log line
    if isinstance(usage, dict):
        prompt, completion = token_counts(usage)
        stream.input_tokens = max(prompt, stream.input_tokens or 0)
        stream.output_tokens = max(completion, stream.output_tokens or 0)
    if isinstance(chunk.get("model"), str):
        stream.response_model = chunk["model"]


_FINISH = b'"finish_reason":"'  # a chunk that ends a choice (OpenAI's stream format)
_STOP = b'"stop_reason":"'  # Anthropic's


def _note_finish(stream: StreamRecord, payload: bytes) -> None:
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        reason = choice.get("finish_reason") if isinstance(choice, dict) else None
        if isinstance(reason, str):
            stream.finish_reasons.append(reason)
    delta = chunk.get("delta") if isinstance(chunk, dict) else None
    if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
        stream.finish_reasons.append(delta["stop_reason"])
    if isinstance(chunk, dict) and isinstance(chunk.get("model"), str):
        stream.response_model = chunk["model"]


# Events that carry generated content in the formats the relay speaks: Anthropic's deltas
# and the Responses API's ``response.*.delta`` events; OpenAI's chunks are looked at apart
# (their first chunk often carries an empty ``content``).
_TOKEN_MARKS = (b'"tool_calls"', b'_delta"', b'.delta"')
_CONTENT = b'"content":"'
_EMPTY_CONTENT = b'"content":""'


def carries_token(payload: bytes) -> bool:
    """Whether an event carries generated content (for the time to the first token)."""
    if _CONTENT in payload and payload.count(_CONTENT) != payload.count(_EMPTY_CONTENT):
        return True
    return any(mark in payload for mark in _TOKEN_MARKS)


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
