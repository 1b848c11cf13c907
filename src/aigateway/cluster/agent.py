"""The node agent: the node's periodic work against Redis, in a thread of the main process.

One agent per node (not per worker): it outlives worker restarts, talks to Redis over one
client of its own, and meets the workers in the node's shared memory. Each round (every
``ROUND_S``) it runs the ``Sync``\\ s that are due, one after another; a sync does one
thing (the heartbeat, leases of a provider's limits, pauses and health, live settings,
clearing the cache) and is written as if Redis were always there: a call that fails
raises ``RedisUnavailable`` out of ``agent.call``, the agent notes it, and the sync tries
again at its next turn. While Redis is down the agent keeps probing it (one call per
cool-down, through the guard) and each sync's ``redis_changed`` lets it fall back and,
when Redis returns, rejoin.

What every worker needs to know (Redis up or down and why, the live nodes) goes into the
cluster region (``state``) after each round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aigateway.cluster.connect import RedisClient, open_client
from aigateway.cluster.guard import RedisGuard, RedisUnavailable
from aigateway.cluster.keys import Keys
from aigateway.cluster.membership import Membership
from aigateway.cluster.state import ClusterState
from aigateway.cluster.sync import Sync
from aigateway.config import Settings

__all__ = ("ROUND_S", "AgentThread", "NodeAgent", "node_id_of")

logger = logging.getLogger("aigateway.cluster")

T = TypeVar("T")
ROUND_S = 0.1


def node_id_of(settings: Settings) -> str:
    """The node's id: AI_GATEWAY_NODE_ID, else host name and port."""
    return settings.node_id or f"{socket.gethostname()}:{settings.port}"


class NodeAgent:
    def __init__(
        self,
        settings: Settings,
        state: ClusterState,
        *,
        client: RedisClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        figures: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        assert settings.redis_url is not None, "the agent needs REDIS_URL"
        self.settings = settings
        self.state = state
        self.node_id = node_id_of(settings)
        self.keys = Keys(settings.cluster_name)
        self.clock = clock
        timeout_s = settings.redis_timeout_ms / 1000
        self.guard = RedisGuard(timeout_s, name="Redis", clock=clock, on_change=self._changed)
        self.redis = client if client is not None else open_client(settings.redis_url, timeout_s)
        self.started = time.time()
        self.membership = Membership(self, figures)
        self.syncs: list[Sync] = [self.membership]
        self._due: dict[int, float] = {}
        #: Called when the agent stops (after each sync's ``close``): what it opened.
        self.closing: list[Callable[[], None]] = []
        self._changes: list[bool] = []
        state.write(redis="up", node_id=self.node_id, nodes=1, reason="")

    def add(self, sync: Sync) -> None:
        self.syncs.append(sync)

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """A Redis call through the guard (``RedisUnavailable`` when it cannot be made)."""
        return await self.guard.call(make)

    async def round(self) -> None:
        """Every sync that is due, once; then the cluster region."""
        now = self.clock()
        for index, sync in enumerate(self.syncs):
            if self._due.get(index, 0.0) > now:
                continue
            self._due[index] = now + sync.interval_s
            try:
                await sync.tick(self)
            except RedisUnavailable:
                pass  # the guard logged it; the sync tries again at its next turn
            except Exception:
                logger.exception("cluster sync %s failed", sync.name)
        for up in self._changes:  # after the round: a sync may fall back or rejoin
            for sync in self.syncs:
                try:
                    sync.redis_changed(up)
                except Exception:
                    logger.exception("cluster sync %s failed to follow Redis", sync.name)
        self._changes.clear()
        self.state.write(
            redis="up" if self.guard.up else "down",
            reason=self.guard.reason,
            nodes=self.membership.nodes,
        )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), ROUND_S)
        await self.close()

    async def close(self) -> None:
        for sync in self.syncs:  # a sync's last word (the workers have stopped by now)
            final = getattr(sync, "final", None)
            if final is not None:
                try:
                    await final(self)
                except RedisUnavailable:
                    pass
                except Exception:
                    logger.exception("cluster sync %s failed to finish", sync.name)
        with contextlib.suppress(RedisUnavailable):
            await self.membership.leave(self)
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        # Let go of the node's shared memory before the main process unmaps it.
        closers = [getattr(sync, "close", None) for sync in self.syncs]
        for close in [*closers, *self.closing, self.state.close]:
            if close is not None:
                try:
                    close()
                except Exception:
                    logger.exception("the cluster agent failed to let go of shared memory")

    def _changed(self, up: bool, reason: str) -> None:
        self._changes.append(up)


class AgentThread:
    """The agent on an event loop of its own, in a daemon thread of the main process."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="aigateway-cluster", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)

    def stop(self, timeout_s: float = 3.0) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)

    def _main(self) -> None:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            self._loop = runner.get_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            runner.run(self.agent.run(self._stop))
