"""The request bodies every load of the benchmark sends (no I/O here).

``unique`` loads put a per-request counter inside the message text, so no two requests
of one run are alike (every one a cache miss); ``identical`` loads send one fixed body
(every one but the first a cache hit, once the gateway has a cache); ``soak`` loads mix
the two (:class:`MixedBodies`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

MODEL = "gpt-4o-mini"
API_KEY = "sk-bench-0123456789abcdef"
CHAT_PATH = "/v1/chat/completions"
PRIORITY_HEADER = "x-aigateway-priority"
CACHE_HEADER = "x-aigateway-cache"

IDENTICAL_TEXT = "Say hello to the benchmark"
STREAM_TEXT = "Stream a short answer about the benchmark of this gateway please"


def chat_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


def identical_body() -> bytes:
    return orjson.dumps(chat_body(IDENTICAL_TEXT))


def unique_body_parts(nonce: str) -> tuple[bytes, bytes]:
    """(prefix, suffix) around a request id: ``prefix + b"3-17" + suffix`` is a whole body.

    ``nonce`` tells runs apart (a warm-up never shares a body with the measurement after it).
    """
    marker = "\x00"
    whole = orjson.dumps(chat_body(f"bench {nonce} request {marker}"))
    escaped = b"\\u0000"
    prefix, _, suffix = whole.partition(escaped)
    if not suffix:
        raise AssertionError("the request id marker was not found in the body")
    return prefix, suffix


@dataclass(frozen=True, slots=True)
class MixedBodies:
    """Unique bodies, except that every ``every``-th request repeats one of ``pool`` fixed
    bodies in turn. Each part is (prefix, suffix) around an id, as in
    :func:`unique_body_parts`."""

    unique: tuple[bytes, bytes]
    repeated: tuple[bytes, bytes]
    every: int
    pool: int


def mixed_body_parts(nonce: str, every: int, pool: int) -> MixedBodies:
    """``nonce`` makes the unique bodies differ between runs; the repeated ones never carry
    it, so they stay the same across warm-up and measurement."""
    return MixedBodies(unique_body_parts(nonce), unique_body_parts("repeated"), every, pool)


def stream_body(nonce: str, index: int) -> bytes:
    """A unique streamed request: ``nonce`` tells runs apart, ``index`` requests."""
    return orjson.dumps(chat_body(f"{STREAM_TEXT} {nonce} {index}", stream=True))
