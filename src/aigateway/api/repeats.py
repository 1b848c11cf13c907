"""Cache hits for a request seen before, byte for byte: answered without working it out again.

Most cache hits are the same request sent again: the same body, the same key, the same
headers.  The whole path parses and validates the body, builds the request, routes it and
computes its cache key before it can look the answer up (about a third of a hit's work in
the worker); none of that can come out differently for the same bytes under the same
settings.  So once a request was a hit, the worker remembers its fingerprint (its body and
headers, hashed) with what the whole path worked out: the cache key, the model asked for
and the target it was routed to.  The next request with that fingerprint is answered from
the cache entry under that key (a stream replayed from it as the whole path replays one),
with the same headers, the same counts (a hit, the provider call it avoided) and the same
log line and metrics (the request middleware and the route are the same).

Whatever could make the whole path decide differently sends a request the whole way, or
is part of the fingerprint:

* every header is part of it (its name and value, in order), but for the few that change
  from one request to the next and that the gateway never reads (``UNREAD``): a header
  the gateway acts on (a priority, a deadline, cache controls, the key presented) was
  read, and checked, by the whole path's hit the fingerprint was learned from;
* a tenant key's request is admitted by its key as on the whole path (revoked, expired,
  a model it may not use, its requests a minute and in flight), before the hit counts;
* tracing on (a hit has a span of its own): the whole path;
* a change of the node's live settings (aliases, TTLs, scope): the memory is emptied;
* routing: the first usable target is asked again on every request, as the whole path
  does, and must be the one remembered (a provider whose circuit opened or closed since);
* the entry gone (expired, evicted, deleted): the request then takes the whole path, which
  counts its miss and may call the provider.

Per worker, at most ``CAPACITY`` fingerprints (emptied when full: a repeated request is
learned again by its next hit).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import xxhash
from starlette.responses import Response
from starlette.types import Scope

from aigateway.api.http import answer_headers, answer_response, json_response
from aigateway.cache.service import ResponseCache
from aigateway.core.pipeline import Pipeline
from aigateway.wire import ApiRequest, Completed, Streaming

__all__ = ("CAPACITY", "UNREAD", "RepeatedHits")

CAPACITY: Final = 4096
#: Request headers that change from one request to the next and that the gateway never
#: reads (the request middleware echoes ``x-request-id``; the OpenAI SDKs' own headers
#: carry a retry count): left out of the fingerprint.
UNREAD: Final = frozenset((b"x-request-id",))
_SDK_HEADERS: Final = b"x-stainless-"
_Head = tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]


@dataclass(frozen=True, slots=True)
class _Known:
    key: bytes  # the cache key the hit was found under
    model: str  # as the request asked, and its provider (None: by the model's name)
    provider: str | None
    target: tuple[str, str]  # (provider, model) it was routed to
    # The request without its body but for what a replayed stream reads of it: what a
    # tenant key's admission and the answer's shape need.
    request: ApiRequest


class RepeatedHits:
    """One worker's memory of the requests that were cache hits."""

    def __init__(
        self,
        pipeline: Pipeline,
        cache: ResponseCache,
        settings: Callable[[], object],
        traced: Callable[[], bool],
    ) -> None:
        """``settings``: the live settings in force (a new object after each change);
        ``traced``: whether tracing is on."""
        self._pipeline = pipeline
        self._cache = cache
        self._settings = settings
        self._traced = traced
        self._seen_under: object = None
        self._known: dict[bytes, _Known] = {}
        self._heads: dict[str, _Head] = {}

    def fingerprint(self, scope: Scope, body: bytes) -> bytes | None:
        """The request's fingerprint, or None when it must take the whole path."""
        if self._traced():
            return None
        digest = xxhash.xxh3_128()
        for name, value in scope["headers"]:
            if name in UNREAD or name.startswith(_SDK_HEADERS):
                continue
            digest.update(name)
            digest.update(b"\0")
            digest.update(value)
            digest.update(b"\0")
        digest.update(body)
        return digest.digest()

    async def answer(self, fingerprint: bytes) -> Response | None:
        """The cached answer of a request known to be a hit (None: take the whole path).
        A tenant key's request is admitted by its key first, as the whole path does (a
        refusal raised as there; a leased rate waited for)."""
        known = self._known.get(fingerprint)
        if known is None:
            return None
        settings = self._settings()
        if settings is not self._seen_under:
            self._forget(settings)
            return None
        if self._pipeline.first_target(known.model, known.provider) != known.target:
            del self._known[fingerprint]
            return None
        entry = self._cache.peek(known.key)
        if entry is None:
            del self._known[fingerprint]
            return None
        request = known.request
        try:  # in the form the whole path gives it (a stream replayed from the entry)
            answer = self._cache.answer_from(
                entry.body, entry.provider, entry.model, request, "hit"
            )
        except Exception:  # the whole path counts the entry it cannot read
            del self._known[fingerprint]
            return None
        if request.tenant:  # its models, requests a minute, places in flight
            answer = await self._pipeline.admit(request).around(_ready(answer))
        self._cache.count_hit(entry, repeated=True)
        if isinstance(answer, Streaming):
            return answer_response(answer, request)
        return _Hit(entry.body, self._head(entry.provider))

    def learn(self, fingerprint: bytes, request: ApiRequest, result: object) -> None:
        """Remember a request the whole path answered, if it was a cache hit."""
        if not (isinstance(result, Completed | Streaming) and result.cache == "hit"):
            return
        if not result.key:
            return
        target = self._pipeline.first_target(request.model, request.provider)
        if target is None:
            return
        settings = self._settings()
        if settings is not self._seen_under or len(self._known) >= CAPACITY:
            self._forget(settings)
        options = request.body.get("stream_options")
        slim = {"stream_options": options} if options is not None else {}
        self._known[fingerprint] = _Known(
            result.key,
            request.model,
            request.provider,
            target,
            dataclasses.replace(request, body=slim, raw=b""),
        )

    def _head(self, provider: str) -> _Head:
        head = self._heads.get(provider)
        if head is None:  # the headers the whole path gives a hit (json_response's), once
            hit = Completed(b"", provider, "", 0, cache="hit")
            made = json_response(b"", headers=answer_headers(hit)).raw_headers
            at = [name for name, _ in made].index(b"content-length")
            head = self._heads[provider] = (made[:at], made[at + 1 :])
        return head

    def __len__(self) -> int:
        return len(self._known)

    def _forget(self, settings: object) -> None:
        self._known.clear()
        self._seen_under = settings


async def _ready(answer: Completed | Streaming) -> Completed | Streaming:
    return answer


class _Hit(Response):
    """A cached answer with the headers ``json_response`` gives it, made without building
    them again: the ones before the length, the length, the ones after it."""

    def __init__(self, body: bytes, head: _Head) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        before, after = head
        self.raw_headers = [*before, (b"content-length", str(len(body)).encode()), *after]
