"""The response cache as the pipeline sees it: keys, per-request controls, hits, stores.

Keys and TTLs come from the hot paths (``cache_key``, ``compute_ttl``). What a client
can ask, per request (headers, or the native body's ``cache`` field):

    Cache-Control: no-cache        / "no_cache": true   do not read the cache (bypass)
    Cache-Control: no-store        / "no_store": true   do not write the answer
    x-aigateway-cache-ttl: <s>     / "ttl": <s>         keep the answer this long
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import lmdb
import orjson

from aigateway.cache.replay import assemble, is_cacheable, replay
from aigateway.cache.store import CacheEntry, LmdbStore
from aigateway.core.types import ApiRequest, Completed, Streaming
from aigateway.hotpath import TTLPolicy, cache_key, compute_ttl

logger = logging.getLogger("aigateway.cache")


def client_scope(authorization: str | None) -> str:
    """A per-client cache namespace derived from its API key (never the key itself)."""
    if not authorization:
        return ""
    return hashlib.blake2b(authorization.encode(), digest_size=12).hexdigest()


class ResponseCache:
    def __init__(self, store: LmdbStore, default_ttl_s: float, policy: TTLPolicy) -> None:
        self.store = store
        self._default_ttl_s = default_ttl_s
        self._policy = policy

    def configure(self, default_ttl_s: float, policy: TTLPolicy) -> None:
        """Change the default TTL and the TTL policy live (``PUT /admin/config``)."""
        self._default_ttl_s = default_ttl_s
        self._policy = policy

    def key(self, request: ApiRequest, provider: str, model: str) -> bytes:
        return cache_key(request.body, request.cache_scope, provider=provider, model=model)

    def lookup(self, key: bytes, request: ApiRequest) -> Completed | Streaming | None:
        """A cached answer in the form the client asked for, or None (counted as a miss)."""
        if not request.cache.read:
            self.store.count("bypasses")
            return None
        entry = self.store.get(key)
        if entry is None:
            self.store.count("misses")
            return None
        self.store.count("hits")
        self._count_avoided("cache", entry.provider, entry.model, entry)
        return self.answer_from(entry.body, entry.provider, entry.model, request, "hit")

    def answer_from(
        self, body: bytes, provider: str, model: str, request: ApiRequest, status: str
    ) -> Completed | Streaming:
        if not request.stream:
            return Completed(body, provider, model, 0, cache=status)
        include_usage = bool((request.body.get("stream_options") or {}).get("include_usage"))
        chunks = replay(orjson.loads(body), include_usage)
        return Streaming(_replayed(chunks), provider, model, 0, cache=status)

    def remember(
        self, key: bytes, request: ApiRequest, result: Completed | Streaming,
        on_complete: Callable[[bytes | None], None] | None = None,
    ) -> Completed | Streaming:  # fmt: skip
        """``result`` as it goes to the client, stored once complete if it may be."""
        if isinstance(result, Completed):
            completion = result.completion
            if completion is None:
                completion = orjson.loads(result.body)
            self._store(key, request, result.provider, result.model, completion, result.body)
            if on_complete is not None:
                on_complete(result.body)
            return result
        result.events = self._tee(key, request, result, result.events, on_complete)
        return result

    def count_joined(self, provider: str, model: str, body: bytes) -> None:
        self.store.count("dedup_joins")
        completion = orjson.loads(body)
        usage = completion.get("usage") or {}
        entry = CacheEntry(body, provider, model, 0, 0, usage.get("prompt_tokens") or 0,
                           usage.get("completion_tokens") or 0)  # fmt: skip
        self._count_avoided("dedup", provider, model, entry)

    async def _tee(
        self, key: bytes, request: ApiRequest, result: Streaming, events: AsyncIterator[bytes],
        on_complete: Callable[[bytes | None], None] | None,
    ) -> AsyncIterator[bytes]:  # fmt: skip
        from aigateway.hotpath import SSEDecoder

        decoder = SSEDecoder()
        payloads: list[bytes] = []
        complete = False
        try:
            async for piece in events:
                for data in decoder.feed(piece):
                    if data == b"[DONE]":
                        complete = True
                    else:
                        payloads.append(data)
                yield piece
        finally:
            body = None
            completion = assemble(payloads) if complete else None
            if completion is not None:
                body = orjson.dumps(completion)
                self._store(key, request, result.provider, result.model, completion, body)
            if on_complete is not None:
                on_complete(body)

    def _store(
        self, key: bytes, request: ApiRequest, provider: str, model: str, completion: Any,
        body: bytes,
    ) -> CacheEntry | None:  # fmt: skip
        """Keep ``body`` (``completion`` serialised) if the request and the answer allow."""
        if not request.cache.write or not isinstance(completion, dict):
            return None
        if not is_cacheable(completion, request.body):
            return None
        ttl = request.cache.ttl_s
        if ttl is None:
            ttl = compute_ttl(request.body, provider, self._default_ttl_s, self._policy)
        if ttl <= 0:
            return None
        usage = completion.get("usage") or {}
        now = time.time()
        entry = CacheEntry(
            body, provider, model, now, now + ttl,
            usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0,
        )  # fmt: skip
        try:
            self.store.put(key, entry)
        except lmdb.Error as exc:  # the answer still goes out; only the cache misses it
            self.store.count("store_failures")
            _log_store_failure(exc)
            return None
        return entry

    def _count_avoided(self, how: str, provider: str, model: str, entry: CacheEntry) -> None:
        prefix = f"avoided:{how}:{provider}:{model}:"
        self.store.count(prefix + "calls")
        self.store.count(prefix + "prompt_tokens", entry.prompt_tokens)
        self.store.count(prefix + "completion_tokens", entry.completion_tokens)


_last_failure_log = 0.0


def _log_store_failure(exc: Exception) -> None:
    global _last_failure_log
    now = time.monotonic()
    if now - _last_failure_log >= 60.0:  # once a minute at most: it repeats under load
        _last_failure_log = now
        logger.warning("the cache could not store an answer (served anyway): %s", exc)


async def _replayed(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield b"data: " + chunk + b"\n\n"
    yield b"data: [DONE]\n\n"
