"""Claims of a worker that died while its node lives, released at once.

A worker that leads a call holds the node's in-flight mark on the key (the node's LMDB
cache) and, with a cluster, the cluster's claim in Redis (``cache_tier``). If the worker
dies (killed, crashed) while the node lives, nothing would release either: the node's
other workers see the mark's owner is gone and go on, but the claim names a node whose
heartbeat still beats, so followers on other nodes would wait until the claim expires
with the leader's deadline (a minute, by default).

The node agent looks every ``INTERVAL_S`` at the node's in-flight marks: a mark whose
owner is gone (no such process, or a zombie its parent has not reaped yet) is cleared,
and the claim of the same key in Redis is deleted if it is still that process's
(``RELEASE_HOLDER_V1``: its token starts with ``<node>|<pid>|``). A follower's next
lookup, on any node, then finds no claim, takes it and calls the provider itself. A
release that could not reach Redis is tried again at the next turn (until the claim's
own deadline would have ended it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from aigateway.cache.store import LmdbStore
from aigateway.cluster.connect import RedisClient, open_client
from aigateway.cluster.guard import RedisGuard
from aigateway.cluster.sync import Agent
from aigateway.config import Settings
from aigateway.hotpath.regions import pid_alive

__all__ = ("INTERVAL_S", "RELEASE_HOLDER_V1", "DeadWorkers", "gone")

logger = logging.getLogger("aigateway.cluster")

INTERVAL_S: Final = 0.25
PENDING_S: Final = 120.0  # a release not made for this long is dropped (the claim expired)

# v1. KEYS: a claim. ARGV: the prefix its holder's token must start with (node|pid|).
RELEASE_HOLDER_V1: Final = """
local holder = redis.call('GET', KEYS[1])
if holder and string.sub(holder, 1, string.len(ARGV[1])) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def gone(pid: int) -> bool:
    """Whether process ``pid`` is dead: no such process, or a zombie (dead, not reaped)."""
    if not pid_alive(pid):
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] == b"Z"
    except (OSError, IndexError):
        return False  # no /proc: alive, as far as we can tell


class DeadWorkers:
    """The sync that releases a dead worker's in-flight marks and claims."""

    name = "dead-workers"
    interval_s = INTERVAL_S

    def __init__(
        self,
        settings: Settings,
        node_store: Callable[[], LmdbStore | None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._node_store = node_store  # the main process's handle on the node's cache
        self._clock = clock
        self._pending: dict[bytes, tuple[int, float]] = {}  # key -> (pid, since)
        # The claims live on the cache's Redis: the agent's, or REDIS_CACHE_URL's (a client
        # made for the occasion: a worker dies rarely).
        self._cache_url = settings.redis_cache_url
        self._timeout_s = settings.redis_timeout_ms / 1000
        self._guard = RedisGuard(self._timeout_s, name="Redis cache", log=False)
        self.released = 0  # claims deleted (tests)

    async def tick(self, agent: Agent) -> None:
        store = self._node_store()
        if store is None:
            return
        now = self._clock()
        for key, pid in store.drop_dead_flights(gone):
            logger.info("worker %d died while it led a call: its followers go on", pid)
            self._pending[key] = (pid, now)
        if not self._pending:
            return
        client = (
            agent.redis
            if self._cache_url is None
            else open_client(self._cache_url, self._timeout_s)
        )
        try:
            for key, (pid, since) in list(self._pending.items()):
                if now - since <= PENDING_S:
                    name, prefix = agent.keys.in_flight(key), f"{agent.node_id}|{pid}|"
                    self.released += await self._release(agent, client, name, prefix)
                del self._pending[key]
        finally:
            if client is not agent.redis:
                await client.aclose()

    def redis_changed(self, up: bool) -> None:
        pass  # releases not made wait in _pending for the next turn

    async def _release(self, agent: Agent, client: RedisClient, name: str, prefix: str) -> int:
        """``RELEASE_HOLDER_V1`` (``RedisUnavailable`` if Redis cannot be used now)."""
        if client is agent.redis:
            return int(await agent.call(lambda: client.eval(RELEASE_HOLDER_V1, 1, name, prefix)))
        return int(await self._guard.call(lambda: client.eval(RELEASE_HOLDER_V1, 1, name, prefix)))
