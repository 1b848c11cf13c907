"""What a sync of the node agent is, and what it may use of the agent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from aigateway.cluster.connect import RedisClient
from aigateway.cluster.keys import Keys
from aigateway.config import Settings

__all__ = ("Agent", "Sync")

T = TypeVar("T")


class Agent(Protocol):
    """The node agent as a sync sees it."""

    settings: Settings
    node_id: str
    keys: Keys
    redis: RedisClient
    started: float

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """A Redis call through the guard: ``RedisUnavailable`` when it cannot be made."""
        ...


class Sync(Protocol):
    """One kind of periodic work of the agent (the heartbeat, a provider's leases...)."""

    name: str
    interval_s: float

    async def tick(self, agent: Agent) -> None:
        """One turn; Redis calls go through ``agent.call``."""

    def redis_changed(self, up: bool) -> None:
        """Redis went down (fall back to the node alone) or came back (rejoin)."""
