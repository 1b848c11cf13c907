"""Clearing every node's first tier when the cluster's cache is cleared.

``DELETE /admin/cache`` on any node empties the second tier in Redis, then moves the
cache's generation (a counter among the coordination keys). The node agent reads the
generation every ``INTERVAL_S`` and, when it moved, empties the node's LMDB cache: every
node's first tier is empty within about a second. A node that could not reach Redis when
the cache was cleared finds the generation moved when it rejoins, and empties its own then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from aigateway.cache.store import LmdbStore
from aigateway.cluster.sync import Agent

__all__ = ("INTERVAL_S", "CacheGeneration")

logger = logging.getLogger("aigateway.cluster")

INTERVAL_S: Final = 0.25


class CacheGeneration:
    """The sync that follows the cache's generation."""

    name = "cache-generation"
    interval_s = INTERVAL_S

    def __init__(self, node_store: Callable[[], LmdbStore | None]) -> None:
        self._node_store = node_store  # the main process's one handle on the node's cache
        self.generation: int | None = None  # as last seen (None: not yet)

    async def tick(self, agent: Agent) -> None:
        raw = await agent.call(lambda: agent.redis.get(agent.keys.cache_generation()))
        try:
            generation = int(raw) if raw is not None else 0
        except ValueError:
            generation = -1  # not a counter of ours: the next clear sets it again
        if self.generation is not None and generation != self.generation:
            removed = self.clear()
            logger.info(
                "the cluster's cache was cleared: %d entries of this node's cache removed",
                removed,
            )
        self.generation = generation

    def clear(self) -> int:
        store = self._node_store()
        return store.clear() if store is not None else 0

    def redis_changed(self, up: bool) -> None:
        pass  # a clear missed while Redis was away shows as a moved generation
