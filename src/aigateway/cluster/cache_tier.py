"""The shared cache's second tier in Redis, and the claims of identical calls in flight.

The node's LMDB cache stays the first tier; this worker reaches Redis (``REDIS_CACHE_URL``,
else ``REDIS_URL``) only when the first tier missed and this worker leads the node's call
for the key (``core.dedup``). Then one script (``LOOKUP_V1``) does in one round trip what
the node would otherwise ask in two:

* the entry is there: its value and the time it has left (``PTTL``, Redis's clock);
* it is not, and nobody claims the call: this worker claims it (``SET NX PX``, bounded by
  its deadline) and calls the provider;
* another node holds the claim: this worker waits for that node's answer, asking again
  with a short backoff (5 ms, doubling to 50 ms), until the entry is there, the claim is
  gone (then it claims and calls itself), or its own deadline.

The answer is written after it went out (``STORE_V1``: the entry with its TTL, and the
claim deleted in the same script if it is still this worker's), without waiting for
Redis's reply, so Redis never delays an answer: over the lean link it rides with the
next command's write (``cluster.resp``), else in a task of its own. A write that Redis
refuses, or that a broken connection or a backlog loses, is reported to ``on_lost``
(the cache's ``store_failures``, logged): never lost silently. A call that ends without
an answer to keep (an error, a client that left, a stream too large) deletes its claim at
once (``RELEASE_V1``, compare-and-delete: never another's). A leader whose worker dies
has its claims released by its node's agent (``cluster.dead_workers``); a waiter sees that
the leader's node stopped its heartbeat (``cluster.membership``: gone within
``NODE_TTL_MS``), or that a worker of its own node died, and takes the claim over.

Entries are the first tier's own encoding (``cache.store.encode_entry``) behind a magic
prefix; a value that is not one (corrupt, foreign, of another type) is a miss, never an
error. Every call goes through the worker's guard (``cluster.worker``): when Redis is slow
or gone the node serves from its first tier and de-duplicates within itself, and no call
waits past ``REDIS_TIMEOUT_MS``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import orjson
from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster

from aigateway.cache.store import CacheEntry, decode_entry, encode_entry
from aigateway.cluster.connect import RedisClient
from aigateway.cluster.guard import RedisUnavailable
from aigateway.cluster.resp import LuaScript
from aigateway.cluster.worker import WorkerRedis
from aigateway.hotpath.regions import pid_alive

__all__ = ("LOOKUP_V1", "MAGIC", "RELEASE_V1", "STORE_V1", "Found", "Lookup", "SecondTier")

logger = logging.getLogger("aigateway.cache")

#: What a value of ours starts with (a format version of its own).
MAGIC: Final = b"aigw-entry-1\n"
FIRST_POLL_S: Final = 0.005
MAX_POLL_S: Final = 0.05
LIVENESS_S: Final = 0.5  # how often a waiter checks that the claim's holder is alive
MAX_PENDING_WRITES: Final = 10_000  # writes in flight per worker; past it, skipped
SCAN_COUNT: Final = 500

# v1. KEYS: the entry, its claim. ARGV: this worker's token, the claim's life in ms.
# Answers {1, value, ms left} (found), {2} (claimed: call the provider), or
# {3, holder's token} (another holds the claim).
LOOKUP_V1: Final = """
local value = redis.call('GET', KEYS[1])
if value then
  return {1, value, redis.call('PTTL', KEYS[1])}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2}
end
return {3, redis.call('GET', KEYS[2]) or ''}
"""

# v1. KEYS: the entry, its claim. ARGV: the value, its TTL in ms, the writer's token ('':
# it held no claim). The claim goes only if it is still the writer's.
STORE_V1: Final = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
return 1
"""

# v1. KEYS: a claim. ARGV: the token it must still hold.
RELEASE_V1: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_FOUND, _CLAIMED, _HELD = 1, 2, 3
_LOOKUP, _STORE, _RELEASE = LuaScript(LOOKUP_V1), LuaScript(STORE_V1), LuaScript(RELEASE_V1)


@dataclass(frozen=True, slots=True)
class Found:
    """An answer from the second tier; ``waited``: another node's identical call gave it
    (a de-duplicated request), rather than an entry already there (a second-tier hit)."""

    entry: CacheEntry
    waited: bool


class SecondTier:
    """One worker's view of the second tier and of its claims."""

    def __init__(
        self, redis: WorkerRedis, on_lost: Callable[[Exception], None] | None = None
    ) -> None:
        self.redis = redis
        #: Told of each answer's write that did not land (the cache counts and logs it).
        self.on_lost = on_lost if on_lost is not None else _log_lost
        self.keys = redis.keys
        self.node_id = redis.node_id
        client = redis.cache_redis
        self._link = redis.cache_link  # None: redis-py's scripts (a cluster, Sentinel...)
        self._lookup = client.register_script(LOOKUP_V1)
        self._store = client.register_script(STORE_V1)
        self._release = client.register_script(RELEASE_V1)
        self._claims: dict[bytes, str] = {}  # key -> the token of a claim this worker holds
        self._pending: set[asyncio.Future[Any]] = set()
        # node|pid|random.n: unique across restarts; the node and pid say who to check on.
        self._token_prefix = f"{self.node_id}|{os.getpid()}|{secrets.token_hex(4)}."
        self._serial = itertools.count()

    # -- the request path ---------------------------------------------------------------

    async def find(self, key: bytes, deadline: float) -> Found | None:
        """The answer for ``key`` from the second tier, waiting while another node's call
        holds the claim; None when this worker should call the provider itself (it holds
        the claim then, or Redis cannot be used now). ``deadline``: the loop's clock; the
        caller bounds the wait by it."""
        return await self.begin(key, deadline).answer()

    def begin(self, key: bytes, deadline: float) -> Lookup:
        """:meth:`find`, its first script sent now: the caller prepares its provider call
        while Redis runs it, and awaits :meth:`Lookup.answer` before it spends anything on
        that call (a rate token, a reservation). Over the lean link only; through
        redis-py the lookup starts when it is awaited."""
        names = [self.keys.cache_entry(key), self.keys.in_flight(key)]
        token = f"{self._token_prefix}{next(self._serial)}"
        lookup = Lookup(self, key, names, token, deadline)
        link = self._link
        if link is not None and self.redis.cache_usable:
            life_ms = max(1, int((deadline - asyncio.get_running_loop().time()) * 1000))
            lookup.first_args = [token, life_ms]
            lookup.first = link.begin(_LOOKUP, names, lookup.first_args)
        return lookup

    async def _find(self, lookup: Lookup) -> Found | None:
        key, names, token = lookup.key, lookup.names, lookup.token
        loop = asyncio.get_running_loop()
        waited, delay, checked = False, FIRST_POLL_S, loop.time()
        while True:
            first, lookup.first = lookup.first, None
            if first is not None and self._link is not None:
                finish = partial(self._link.finish, first, _LOOKUP, names, lookup.first_args)
                reply = await self._call(finish)
                if reply is None:  # not read (Redis slow or gone): a claim it made goes
                    self._release_when_claimed(first, key, token)
            else:
                life_ms = max(1, int((lookup.deadline - loop.time()) * 1000))
                reply = await self._run(_LOOKUP, names, [token, life_ms])
            if reply is None:
                return None  # Redis cannot be used: the node goes on alone
            if reply[0] == _FOUND:
                entry = _entry(reply[1], reply[2])
                return Found(entry, waited) if entry is not None else None
            if reply[0] == _CLAIMED:
                self._claims[key] = token
                return None
            waited = True
            if loop.time() - checked >= LIVENESS_S:
                checked = loop.time()
                holder = _text(reply[1])
                if not await self._holder_alive(holder):
                    await self._run(_RELEASE, names[1:], [holder])
                    continue  # the next lookup claims it
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_POLL_S)

    def _release_when_claimed(self, reply: asyncio.Future[Any], key: bytes, token: str) -> None:
        """When a lookup's reply nobody reads comes, delete the claim it made, if any."""

        def replied(done: asyncio.Future[Any]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            answer = done.result()
            if isinstance(answer, list) and answer and answer[0] == _CLAIMED:
                self._background_release(key, token)

        if reply.done():
            replied(reply)
        else:
            reply.add_done_callback(replied)

    def store(self, key: bytes, entry: CacheEntry) -> None:
        """Write ``entry`` with the TTL it has left, releasing this worker's claim on
        ``key``; in the background (the answer does not wait for Redis)."""
        token = self._claims.pop(key, "")
        ttl_ms = int((entry.expires_at - time.time()) * 1000)
        if ttl_ms <= 0:
            self._background_release(key, token)
            return
        names = [self.keys.cache_entry(key), self.keys.in_flight(key)]
        value = MAGIC + encode_entry(entry)
        if self._link is not None:  # no task, no reply awaited
            if self.redis.cache_usable:  # else Redis is known down: the node goes on alone
                args: list[bytes | int | str] = [value, ttl_ms, token]
                if not self._link.send_script(_STORE, names, args, self.on_lost):
                    self.on_lost(_backlog())
            return
        self._background(lambda: self._store(keys=names, args=[value, ttl_ms, token]), True)

    def release(self, key: bytes) -> None:
        """Delete this worker's claim on ``key`` now (no answer to keep is coming), if it
        is still its own."""
        self._background_release(key, self._claims.pop(key, ""))

    async def settle(self) -> None:
        """Wait for the writes and releases under way (a worker that stops; tests)."""
        while self._pending:
            await asyncio.gather(*self._pending)
        if self._link is not None and self.redis.cache_usable:
            await self._call(lambda: self._link.drain() if self._link else asyncio.sleep(0))

    # -- clearing -----------------------------------------------------------------------

    async def clear(self) -> tuple[int, int]:
        """Empty the second tier, then move the cache's generation so that every node
        clears its first tier (``cache_sync``); (entries removed, new generation).
        ``RedisUnavailable`` when Redis cannot be reached."""
        try:
            return await self._clear()
        except redis_errors.RedisError as exc:  # an answer, not an outage: say it all the same
            raise RedisUnavailable(f"Redis refused to clear the cache: {exc}") from None

    async def _clear(self) -> tuple[int, int]:
        client = self.redis.cache_redis
        pattern = self.keys.cache_entries()
        removed = 0
        # On a Redis Cluster each master holds its own share: SCAN each one.
        masters: list[Any] = client.get_primaries() if isinstance(client, RedisCluster) else [None]
        for master in masters:
            cursor = 0
            while True:
                cursor, found = await self.redis.cache_call(_scan(cursor, pattern, master))
                if found:
                    removed += int(await self.redis.cache_call(_unlink(found)))
                if cursor == 0:
                    break
        generation = await self.redis.call(lambda c: c.incr(self.keys.cache_generation()))
        return removed, int(generation)

    # -- internals ----------------------------------------------------------------------

    async def _call(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """A call on the cache's Redis; None when Redis cannot be used or refused it."""
        try:
            return await self.redis.cache_call(lambda client: make())
        except RedisUnavailable:
            return None
        except redis_errors.RedisError as exc:  # its answer: a key of another type...
            logger.debug("the shared cache's Redis refused a call: %r", exc)
            return None

    async def _run(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any:
        """One script on the cache's Redis, awaited; None when it cannot be used."""
        link = self._link
        if link is not None:
            return await self._call(lambda: link.script(script, keys, args))
        registered = {_LOOKUP: self._lookup, _STORE: self._store, _RELEASE: self._release}
        return await self._call(partial(registered[script], keys=keys, args=args))

    async def _holder_alive(self, holder: str) -> bool:
        """Whether the worker holding a claim may still answer: its node still beats (a
        worker of this node: its process lives)."""
        parts = holder.rsplit("|", 2)
        if len(parts) != 3:
            return False  # not a token of ours, or the claim just went
        node, pid = parts[0], parts[1]
        if node == self.node_id:
            return pid.isdigit() and pid_alive(int(pid))
        try:
            return bool(await self.redis.call(lambda c: c.exists(self.keys.node(node))))
        except RedisUnavailable:
            return True  # cannot tell: the next lookup decides
        except redis_errors.RedisError:
            return True

    def _background_release(self, key: bytes, token: str) -> None:
        if not token:
            return
        name = [self.keys.in_flight(key)]
        if self._link is not None:
            if self.redis.cache_usable:
                self._link.send_script(_RELEASE, name, [token])
            return
        self._background(lambda: self._release(keys=name, args=[token]))

    def _background(self, make: Callable[[], Awaitable[Any]], write: bool = False) -> None:
        """``make()`` in a task of its own; ``write``: an answer's, reported if lost (a
        claim not released expires by itself)."""
        if len(self._pending) >= MAX_PENDING_WRITES:
            if write:  # Redis is slower than the answers come
                self.on_lost(_backlog())
            return
        task = asyncio.ensure_future(self._written(make) if write else self._call(make))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _written(self, make: Callable[[], Awaitable[Any]]) -> None:
        try:
            await self.redis.cache_call(lambda client: make())
        except RedisUnavailable:
            pass  # Redis is down, which the node already says (health, metric, log)
        except redis_errors.RedisError as exc:
            self.on_lost(exc)


class Lookup:
    """One lookup of :meth:`SecondTier.begin`: its first script possibly under way."""

    __slots__ = ("_answered", "_tier", "deadline", "first", "first_args", "key", "names", "token")

    def __init__(
        self, tier: SecondTier, key: bytes, names: list[str], token: str, deadline: float
    ) -> None:
        self._tier = tier
        self.key, self.names, self.token, self.deadline = key, names, token, deadline
        self.first: asyncio.Future[Any] | None = None  # the first script's reply, if sent
        self.first_args: list[Any] = []
        self._answered = False

    async def answer(self) -> Found | None:
        """As :meth:`SecondTier.find` answers (once)."""
        self._answered = True
        return await self._tier._find(self)

    def abandon(self) -> None:
        """Nobody will read the answer (the call failed or was cancelled before it asked):
        a claim the first script made is deleted when its reply comes. Once answered, the
        claim is the tier's to release, as after :meth:`SecondTier.find`."""
        first, self.first = self.first, None
        if not self._answered and first is not None:
            self._answered = True
            self._tier._release_when_claimed(first, self.key, self.token)


def _backlog() -> Exception:
    return redis_errors.ConnectionError("too many writes waiting for Redis: one skipped")


_last_lost_log = -60.0


def _log_lost(exc: Exception) -> None:
    global _last_lost_log
    if time.monotonic() - _last_lost_log >= 60.0:  # once a minute at most
        _last_lost_log = time.monotonic()
        logger.warning("an answer was not written to the shared cache: %r", exc)


def _entry(value: bytes, ttl_ms: int) -> CacheEntry | None:
    """The entry a value of the second tier holds; None if it is not one of ours."""
    if not isinstance(value, bytes) or not value.startswith(MAGIC) or ttl_ms <= 0:
        return None
    try:
        entry = decode_entry(value[len(MAGIC) :], time.time() + ttl_ms / 1000)
        answer = orjson.loads(entry.body)
    except (ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        return None
    return entry


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _scan(
    cursor: int, pattern: str, master: Any
) -> Callable[[RedisClient], Awaitable[tuple[int, list[Any]]]]:
    """One SCAN step (on ``master`` of a cluster, whose client answers a cursor per node)."""

    async def scan(client: RedisClient) -> tuple[int, list[Any]]:
        options: dict[str, Any] = {} if master is None else {"target_nodes": master}
        moved: Any
        moved, found = await client.scan(cursor, match=pattern, count=SCAN_COUNT, **options)
        if isinstance(moved, dict):
            moved = moved[master.name]
        return int(moved), list(found)

    return scan


def _unlink(names: list[Any]) -> Callable[[RedisClient], Awaitable[int]]:
    async def unlink(client: RedisClient) -> int:
        return int(await client.unlink(*names))

    return unlink
