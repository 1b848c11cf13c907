"""A worker's own link to the cluster's Redis, for what cannot wait for the node agent.

The node agent does the node's periodic work; a worker calls Redis itself only on the
request path (the shared cache's second tier, claims of de-duplicated calls) and for
admin answers (the cluster's members). Each call goes through the worker's guard, and is
not even tried while the node agent says Redis is down: the agent probes it for the node,
so the workers do not each pay a timeout to find out.

Transitions of a worker's guard are logged at debug level: the agent's log says once
for the node that Redis went away or came back.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aigateway.cluster.connect import RedisClient, open_client
from aigateway.cluster.guard import RedisGuard, RedisUnavailable
from aigateway.cluster.keys import Keys
from aigateway.cluster.resp import RespLink
from aigateway.cluster.state import ClusterState
from aigateway.config import Settings

__all__ = ("WorkerRedis",)

logger = logging.getLogger("aigateway.cluster")

T = TypeVar("T")


class WorkerRedis:
    """One worker's clients (coordination, and the cache's when it has its own URL)."""

    def __init__(
        self,
        settings: Settings,
        state: ClusterState,
        *,
        client: RedisClient | None = None,
        cache_client: RedisClient | None = None,
    ) -> None:
        assert settings.redis_url is not None, "a worker's Redis link needs REDIS_URL"
        self.settings = settings
        self.state = state
        self.keys = Keys(settings.cluster_name)
        self.node_id = settings.node_id or ""
        timeout_s = settings.redis_timeout_ms / 1000
        self.guard = RedisGuard(timeout_s, name="Redis (worker)", on_change=_debug, log=False)
        self.redis = client if client is not None else open_client(settings.redis_url, timeout_s)
        if cache_client is None and settings.redis_cache_url is None:
            self.cache_guard, self.cache_redis = self.guard, self.redis
        else:
            self.cache_guard = RedisGuard(
                timeout_s, name="Redis cache (worker)", on_change=_debug, log=False
            )
            url = settings.redis_cache_url or settings.redis_url
            self.cache_redis = cache_client or open_client(url, timeout_s)
        # The second tier's scripts on a miss: a lean pipelined link when the cache's
        # Redis is one plain server, else None (redis-py's client: a cluster, Sentinel...).
        self.cache_link = RespLink.for_client(self.cache_redis, timeout_s)

    @property
    def usable(self) -> bool:
        """Whether a coordination call would be tried now."""
        return self.guard.allows() and not self.state.degraded

    @property
    def cache_usable(self) -> bool:
        """Whether a call on the cache's Redis would be tried now."""
        if self.cache_guard is self.guard and self.state.degraded:
            return False
        return self.cache_guard.allows()

    async def call(self, make: Callable[[RedisClient], Awaitable[T]]) -> T:
        """``make(client)`` on the coordination Redis, through the guard."""
        if self.state.degraded:
            raise RedisUnavailable("Redis is down (the node agent says so)")
        return await self.guard.call(lambda: make(self.redis))

    async def cache_call(self, make: Callable[[RedisClient], Awaitable[T]]) -> T:
        """``make(client)`` on the cache's Redis (``REDIS_CACHE_URL``, else the same)."""
        if self.cache_guard is self.guard and self.state.degraded:
            raise RedisUnavailable("Redis is down (the node agent says so)")
        return await self.cache_guard.call(lambda: make(self.cache_redis))

    async def close(self) -> None:
        if self.cache_link is not None:
            await self.cache_link.close()
        await self.redis.aclose()
        if self.cache_redis is not self.redis:
            await self.cache_redis.aclose()


def _debug(up: bool, reason: str) -> None:
    logger.debug("this worker's Redis link is %s %s", "up" if up else "down", reason)
