"""What passes between the layers: the gateway's own request and result types, and the
facts of a provider's answer every layer reads the same way (its ``Retry-After``, the
token counts of its ``usage``).

A leaf: it imports nothing from the gateway, so the API layer, the core, the cache and
the provider adapters all build on it without building on each other.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from time import time
from typing import Any, Final, Literal

Operation = Literal["chat", "embeddings", "messages", "responses"]
#: Admission priorities, most urgent first.
PRIORITIES = ("critical", "high", "normal", "low")


@dataclass(frozen=True, slots=True)
class CacheControl:
    """What one request lets the response cache do."""

    read: bool = True  # False: `no-cache`, the answer comes from the provider
    write: bool = True  # False: `no-store`, the answer is not kept
    ttl_s: float | None = None  # the client's own TTL for this answer


DEFAULT_CACHE_CONTROL = CacheControl()


@dataclass(frozen=True, slots=True)
class HeldTurn:
    """A Responses request continuing a response its provider keeps itself (OpenAI, with
    ``store``): that provider is sent ``previous_response_id`` and only the new items;
    every other target gets the whole conversation the request's body holds."""

    provider: str  # the provider holding the previous response
    response_id: str
    new_items: int  # the body's last ``new_items`` input items are this turn's own


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One validated client request in OpenAI's format.

    ``raw`` keeps the exact bytes the client sent, so a provider that speaks the
    same format gets them forwarded without a re-encode. Routes build it in one place
    (``api/builder.py``); a request derived from another is ``dataclasses.replace(...)``
    of it, so nothing the client asked for (scope, deadline, cache controls) is dropped.
    """

    operation: Operation
    model: str
    body: dict[str, Any]
    raw: bytes
    stream: bool = False
    provider: str | None = None  # the native API's explicit provider
    priority: str = "normal"
    cache: CacheControl = DEFAULT_CACHE_CONTROL
    cache_scope: str = ""  # a namespace of cache keys (per client key with CACHE_SCOPE=key)
    timeout_s: float | None = None  # the client's own deadline, if shorter than the gateway's
    # Headers the client sent for a provider that speaks its API (``anthropic-beta`` on
    # /v1/messages), passed on only there; part of the cache key.
    provider_headers: tuple[tuple[str, str], ...] = ()
    held: HeldTurn | None = None  # /v1/responses: the previous turn, if a provider keeps it
    tenant: str = ""  # the id of the tenant key the client presented ("" for none)


@dataclass(frozen=True, slots=True)
class Target:
    """One place that can answer a request: a configured provider and its model name."""

    provider: str
    model: str


@dataclass(slots=True)
class Completed:
    """A whole answer, already in OpenAI's JSON format."""

    body: bytes
    provider: str
    model: str
    attempts: int
    cache: str = "miss"  # hit, miss or bypass: the x-aigateway-cache header
    completion: Any = None  # ``body`` parsed, when the pipeline had to parse it anyway
    cost: float | None = None  # USD of its usage (x-aigateway-cost); None: not known
    key: bytes | None = None  # the cache key a hit was found under


@dataclass(slots=True)
class Streaming:
    """An answer that streams: ``events`` yields OpenAI SSE bytes, ``data: [DONE]`` last."""

    events: AsyncIterator[bytes]
    provider: str
    model: str
    attempts: int
    cache: str = "miss"
    # Every event is in memory already (a stored answer replayed): sent in one piece.
    replayed: bool = False
    key: bytes | None = None  # the cache key a hit was found under


async def close_events(events: AsyncIterator[bytes]) -> None:
    """End an answer's events early (an async generator's ``aclose``): whatever produces
    them (a provider call, a shared stream) learns at once that nobody reads on."""
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        result = aclose()
        if inspect.isawaitable(result):
            await result


def retry_after_from_headers(
    headers: Mapping[str, str], now: Callable[[], float] = time
) -> float | None:
    """The wait a provider asked for, in seconds, from ``retry-after-ms`` or ``retry-after``.

    ``headers`` must have lower-case names. Unparseable values are ignored.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms)
        except ValueError:
            value = -1.0
        if 0 <= value < float("inf"):
            return value / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:  # an HTTP date; the caller bounds a wait that lasts until 2099
            seconds = max(0.0, parsedate_to_datetime(raw).timestamp() - now())
        except (TypeError, ValueError, IndexError, OverflowError, OSError):
            return None
    return seconds if 0 <= seconds < float("inf") else None


# A provider's answer is served as it came, but its ``usage`` is only trusted this far: a
# count is a whole number of tokens from 0 to MAX_TOKENS. An integral float (12.0) counts
# as the integer it equals, a larger count is clamped, and anything else (a negative
# number, a fraction, a string, a ``usage`` that is not an object) counts as 0.
MAX_TOKENS: Final = 2**32 - 1


def token_count(value: Any) -> int:
    if type(value) is int and 0 <= value <= MAX_TOKENS:  # the usual count, at once
        return value
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return min(max(value, 0), MAX_TOKENS)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return min(max(int(value), 0), MAX_TOKENS)
    return 0


def usage_of(answer: Mapping[str, Any]) -> Any:
    """The ``usage`` of an answer or stream event: at its top level, or inside the
    ``response`` a Responses event carries (``response.completed``)."""
    usage = answer.get("usage")
    if usage is None:
        response = answer.get("response")
        if isinstance(response, Mapping):
            return response.get("usage")
    return usage


def token_counts(usage: Any) -> tuple[int, int]:
    """(prompt tokens, completion tokens) of an OpenAI ``usage`` object, or of an Anthropic
    one (``input_tokens`` counts neither cache reads nor cache writes: both are added)."""
    if type(usage) is not dict and not isinstance(usage, Mapping):  # a dict: no ABC check
        return 0, 0
    if "prompt_tokens" not in usage and "input_tokens" in usage:
        prompt = sum(
            token_count(usage.get(name))
            for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        return min(prompt, MAX_TOKENS), token_count(usage.get("output_tokens"))
    return token_count(usage.get("prompt_tokens")), token_count(usage.get("completion_tokens"))
