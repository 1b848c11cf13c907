"""Relay a provider's stream to the client as OpenAI server-sent events.

Events are decoded from the provider's bytes and sent on as soon as each network
chunk completes them. The relay always ends with ``data: [DONE]``; a provider
stream that breaks off ends instead with an error event in OpenAI's shape (the
official SDKs raise it), since the client already has a 200 and part of the answer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from aigateway.core.dispatch import Answer
from aigateway.errors import GatewayError, ProviderError
from aigateway.hotpath import SSEDecoder
from aigateway.providers.base import ChatAdapter, StreamTranslator
from aigateway.upstream import UpstreamFailure

logger = logging.getLogger("aigateway.stream")

DONE = b"data: [DONE]\n\n"


async def relay_stream(
    answer: Answer, adapter: ChatAdapter, translator: StreamTranslator
) -> AsyncIterator[bytes]:
    decoder = SSEDecoder()
    translate = translator.event
    try:
        out = _encode(decoder.feed(answer.body), translate)
        if out:
            yield out
        if answer.rest is not None:
            async for chunk in answer.rest:
                out = _encode(decoder.feed(chunk), translate)
                if out:
                    yield out
        out = _encode(decoder.flush(), translate) + _encode(translator.end(), _same)
        if out:
            yield out
        yield DONE
    except UpstreamFailure as exc:
        logger.warning("%s stream broke off: %s", adapter.name, exc)
        yield _error_event(ProviderError(f"{adapter.name} stream broke off: {exc}"))
    except GatewayError as exc:
        yield _error_event(exc)
    finally:
        await answer.response.close()


def _encode(events: list[bytes], translate: Callable[[bytes], list[bytes]]) -> bytes:
    if not events:
        return b""
    parts: list[bytes] = []
    for data in events:
        if data == b"[DONE]":
            continue  # the relay sends its own, once, at the very end
        for payload in translate(data):
            parts.append(b"data: " + payload + b"\n\n")
    return b"".join(parts)


def _same(data: bytes) -> list[bytes]:
    return [data]


def _error_event(error: GatewayError) -> bytes:
    return b"data: " + error.json() + b"\n\n"
