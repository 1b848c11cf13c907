"""The response cache as the pipeline sees it: keys, per-request controls, hits, stores.

Keys and TTLs come from the hot paths (``cache_key``, ``compute_ttl``). What a client
can ask, per request (headers, or the native body's ``cache`` field):

    Cache-Control: no-cache        / "no_cache": true   do not read the cache (bypass)
    Cache-Control: no-store        / "no_store": true   do not write the answer
    x-aigateway-cache-ttl: <s>     / "ttl": <s>         keep the answer this long

The cache never fails a request: a key it cannot compute, an entry it cannot read or an
answer it cannot store is logged (once a minute at most) and counted in
``store_failures``, and the request goes on as if there were no cache. Only complete
answers with their ``usage`` are kept, up to ``max_entry_bytes``; a stream is folded into
its completion as it goes, and given up on past that size.

Every call the cache (or an identical call in flight) saved is counted with its tokens
and what they would have cost at ``prices`` (``avoided_usd``, in nano-dollars).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import orjson

from aigateway.cache.messages_replay import MessagesAssembler, messages_cacheable, replay_messages
from aigateway.cache.replay import Assembler, is_cacheable, replay
from aigateway.cache.responses_replay import (
    ResponsesAssembler,
    replay_responses,
    responses_cacheable,
)
from aigateway.cache.store import CacheEntry, LmdbStore
from aigateway.hotpath import SSEDecoder, TTLPolicy, cache_key, compute_ttl
from aigateway.pricing import PriceTable, to_nanos
from aigateway.stats.registry import labelled_key
from aigateway.wire import ApiRequest, Completed, Streaming, close_events, token_counts

if TYPE_CHECKING:
    from aigateway.cluster.cache_tier import SecondTier
    from aigateway.config import Settings

logger = logging.getLogger("aigateway.cache")


def client_scope(authorization: str | None) -> str:
    """A per-client cache namespace derived from its API key (never the key itself)."""
    if not authorization:
        return ""
    return hashlib.blake2b(authorization.encode(), digest_size=12).hexdigest()


DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024


class ResponseCache:
    def __init__(
        self,
        store: LmdbStore,
        default_ttl_s: float,
        policy: TTLPolicy,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        prices: PriceTable | None = None,
    ) -> None:
        self.store = store
        self.prices = PriceTable.shipped() if prices is None else prices
        self._default_ttl_s = default_ttl_s
        self._policy = policy
        self.max_entry_bytes = max_entry_bytes
        self.shared: SecondTier | None = None  # with REDIS_URL: the cluster's second tier
        # The counters' keys of an avoided call by (how, provider, model): made once, not
        # on every hit (four joins of label pairs were a sixth of a hit's Python).
        self._avoided_keys: dict[tuple[str, str, str], tuple[str, str, str, str]] = {}

    def configure(self, default_ttl_s: float, policy: TTLPolicy) -> None:
        """Change the default TTL and the TTL policy."""
        self._default_ttl_s = default_ttl_s
        self._policy = policy

    def apply_settings(self, old: Settings, new: Settings) -> None:
        """Live settings (``PUT /admin/config``): CACHE_TTL_MINUTES and
        CACHE_PROVIDER_TTL_FACTORS."""
        policy = TTLPolicy(provider_factors=dict(new.cache_ttl_factors))
        self.configure(new.cache_ttl_minutes * 60.0, policy)

    def key(self, request: ApiRequest, provider: str, model: str) -> bytes | None:
        """The request's key; None if it has none (the request then skips the cache)."""
        try:
            scope = _namespace(request)
            return cache_key(request.body, scope, provider=provider, model=model)
        except Exception as exc:  # e.g. a body nested deeper than keys go
            self._failed("compute a key", exc)
            return None

    def lookup(self, key: bytes, request: ApiRequest) -> Completed | Streaming | None:
        """A cached answer in the form the client asked for, or None (counted as a miss)."""
        if not request.cache.read:
            self.store.count("bypasses")
            return None
        try:
            entry = self.store.get(key)
            answer = None
            if entry is not None:
                answer = self.answer_from(entry.body, entry.provider, entry.model, request, "hit")
                answer.key = key
        except Exception as exc:
            self._failed("read an entry", exc)
            entry = answer = None
        if entry is None or answer is None:
            self.store.count("misses")
            return None
        self.count_hit(entry)
        return answer

    def peek(self, key: bytes) -> CacheEntry | None:
        """The entry under ``key``, counted as no hit yet, for a request already known to
        be a hit there (``api.repeats``; ``count_hit`` once it is served); None when it is
        gone (the request then takes the whole path, which counts its miss)."""
        try:
            return self.store.get(key)
        except Exception as exc:
            self._failed("read an entry", exc)
            return None

    def count_hit(self, entry: CacheEntry, *, repeated: bool = False) -> None:
        """``entry`` served as a hit, as ``lookup`` counts one (``repeated``: by ``peek``)."""
        self.store.count("hits")
        if repeated:
            self.store.count("repeat_hits")
        self._count_avoided("cache", entry.provider, entry.model, entry)

    def answer_from(
        self, body: bytes, provider: str, model: str, request: ApiRequest, status: str
    ) -> Completed | Streaming:
        if not request.stream:
            return Completed(body, provider, model, 0, cache=status)
        if request.operation == "messages":
            chunks = replay_messages(orjson.loads(body))
            return Streaming(_replayed(chunks), provider, model, 0, status, replayed=True)
        if request.operation == "responses":
            chunks = replay_responses(orjson.loads(body))
            return Streaming(_replayed(chunks), provider, model, 0, status, replayed=True)
        include_usage = bool((request.body.get("stream_options") or {}).get("include_usage"))
        chunks = replay(orjson.loads(body), include_usage)
        return Streaming(_replayed(chunks), provider, model, 0, status, replayed=True)

    def remember(
        self, key: bytes, request: ApiRequest, result: Completed | Streaming,
        on_complete: Callable[[bytes | None], None] | None = None,
        on_give_up: Callable[[], None] | None = None,
    ) -> Completed | Streaming:  # fmt: skip
        """``result`` as it goes to the client, stored once complete if it may be.
        ``on_give_up`` is called as soon as a stream is known not to be kept (too large)."""
        if isinstance(result, Completed):
            completion = result.completion
            if completion is None:
                with contextlib.suppress(orjson.JSONDecodeError):
                    completion = orjson.loads(result.body)
            self._store(key, request, result.provider, result.model, completion, result.body)
            if on_complete is not None:
                on_complete(result.body)
            return result
        result.events = self._tee(key, request, result, result.events, on_complete, on_give_up)
        return result

    def keep(self, key: bytes, entry: CacheEntry, joined: bool) -> None:
        """An answer from the second tier into the first, with the TTL it has left;
        ``joined``: another node's identical call gave it (counted as de-duplicated),
        else it was there already (a second-tier hit)."""
        if joined:
            self.store.count("dedup_joins")
            self._count_avoided("dedup", entry.provider, entry.model, entry)
        else:
            self.store.count("second_tier_hits")
            self._count_avoided("cache", entry.provider, entry.model, entry)
        try:
            self.store.put(key, entry)
        except Exception as exc:  # served all the same
            self._failed("store an answer", exc)

    def shared_write_lost(self, exc: Exception) -> None:
        """An answer's write to the second tier did not land (``cluster.cache_tier``)."""
        self._failed("write an answer to the shared cache", exc)

    def count_joined(self, provider: str, model: str, body: bytes) -> None:
        self.store.count("dedup_joins")
        try:
            usage = orjson.loads(body).get("usage")
        except (orjson.JSONDecodeError, AttributeError):
            usage = None
        entry = CacheEntry(body, provider, model, 0, 0, *token_counts(usage))
        self._count_avoided("dedup", provider, model, entry)

    async def _tee(
        self, key: bytes, request: ApiRequest, result: Streaming, events: AsyncIterator[bytes],
        on_complete: Callable[[bytes | None], None] | None,
        on_give_up: Callable[[], None] | None = None,
    ) -> AsyncIterator[bytes]:  # fmt: skip
        decoder = SSEDecoder()
        assembler: Assembler | MessagesAssembler | ResponsesAssembler
        if request.operation == "messages":
            assembler = MessagesAssembler(self.max_entry_bytes)
        elif request.operation == "responses":
            assembler = ResponsesAssembler(self.max_entry_bytes)
        else:
            assembler = Assembler(self.max_entry_bytes)
        complete = False
        try:
            async for piece in events:
                if not assembler.failed:
                    for data in decoder.feed(piece):
                        if data == b"[DONE]":
                            complete = True
                        else:
                            assembler.add(data)
                    if assembler.failed and on_give_up is not None:
                        on_give_up()
                yield piece
        finally:
            body = None
            try:
                await close_events(events)  # the provider's stream, if it did not end
                completion = assembler.completion() if complete else None
                if completion is not None:
                    body = orjson.dumps(completion)
                    self._store(key, request, result.provider, result.model, completion, body)
            except Exception as exc:
                self._failed("assemble a streamed answer", exc)
            if on_complete is not None:
                on_complete(body)

    def _store(
        self, key: bytes, request: ApiRequest, provider: str, model: str, completion: Any,
        body: bytes,
    ) -> CacheEntry | None:  # fmt: skip
        """Keep ``body`` (``completion`` serialised) if the request and the answer allow.
        Never raises: the answer goes out whether or not the cache could keep it."""
        if not request.cache.write or not isinstance(completion, dict):
            return None
        if len(body) > self.max_entry_bytes:
            self.store.count("too_large")
            return None
        try:
            if request.operation == "messages":
                if not messages_cacheable(completion):
                    return None
            elif request.operation == "responses":
                if not responses_cacheable(completion):
                    return None
            elif not is_cacheable(completion, request.body):
                return None
            ttl = request.cache.ttl_s
            if ttl is None:
                ttl = compute_ttl(request.body, provider, self._default_ttl_s, self._policy)
            if ttl <= 0:
                return None
            now = time.time()
            entry = CacheEntry(
                body, provider, model, now, now + ttl, *token_counts(completion.get("usage"))
            )
            if self.shared is not None:
                self.shared.store(key, entry)  # in the background: never delays the answer
            self.store.put(key, entry)
        except Exception as exc:  # the answer still goes out; only the cache misses it
            self._failed("store an answer", exc)
            return None
        return entry

    def _failed(self, what: str, exc: Exception) -> None:
        self.store.count("store_failures")
        _log_store_failure(what, exc)

    def _count_avoided(self, how: str, provider: str, model: str, entry: CacheEntry) -> None:
        keys = self._avoided_keys.get((how, provider, model))
        if keys is None:
            keys = _avoided_keys(how, provider, model)
            if len(self._avoided_keys) >= _MAX_AVOIDED_KEYS:  # models are the clients' words
                self._avoided_keys.clear()
            self._avoided_keys[how, provider, model] = keys
        calls, tokens_in, tokens_out, usd_key = keys
        count = self.store.count
        count(calls)
        count(tokens_in, entry.prompt_tokens)
        count(tokens_out, entry.completion_tokens)
        # What the call would have cost, its prompt taken as uncached (the entry keeps no
        # more than the two counts; the provider's own prompt cache may have made it less).
        usd = self.prices.tokens_cost(model, entry.prompt_tokens, entry.completion_tokens)
        if usd > 0:
            count(usd_key, to_nanos(usd))


_MAX_AVOIDED_KEYS = 1024


def _avoided_keys(how: str, provider: str, model: str) -> tuple[str, str, str, str]:
    return (
        labelled_key("avoided_provider_calls", provider, model, how),
        labelled_key("avoided_tokens", provider, model, how, "in"),
        labelled_key("avoided_tokens", provider, model, how, "out"),
        labelled_key("avoided_usd", provider, model, how),
    )


def _namespace(request: ApiRequest) -> str:
    """The key's scope: a Messages or Responses answer is never served to a chat request
    (nor the other way round), and the provider headers a client sent (``anthropic-beta``)
    are part of what was asked."""
    if request.operation == "responses":
        return f"responses\x00{request.cache_scope}"
    if request.operation != "messages":
        return request.cache_scope
    headers = "\x00".join(f"{name}:{value}" for name, value in request.provider_headers)
    return f"messages\x00{request.cache_scope}\x00{headers}"


_last_failure_log = 0.0


def _log_store_failure(what: str, exc: Exception) -> None:
    global _last_failure_log
    now = time.monotonic()
    if now - _last_failure_log >= 60.0:  # once a minute at most: it repeats under load
        _last_failure_log = now
        logger.warning("the cache could not %s (request served without it): %r", what, exc)


async def _replayed(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield b"data: " + chunk + b"\n\n"
    yield b"data: [DONE]\n\n"
