"""Membership: each node's heartbeat, and who is alive.

Every ``HEARTBEAT_S`` the agent runs one script that stamps the node in a sorted set with
Redis's own clock (so the nodes' clocks never matter), renews the node's document (its
figures, expiring after ``NODE_TTL_MS``) and drops nodes not seen for that long; it
answers the number of live nodes, which the node keeps as the divisor of its limits
should Redis go away. A node that stops says goodbye (removed at once); one that dies is
gone from the set within ``NODE_TTL_MS``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final, cast

import orjson

from aigateway import __version__
from aigateway.cluster.connect import RedisClient
from aigateway.cluster.keys import Keys
from aigateway.cluster.sync import Agent

__all__ = ("HEARTBEAT_S", "NODE_TTL_MS", "Membership", "members", "node_document")

HEARTBEAT_S: Final = 0.5
NODE_TTL_MS: Final = 3000

# v1. KEYS: the nodes' sorted set, this node's document. ARGV: node id, document, ttl ms.
HEARTBEAT_V1: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
return redis.call('ZCARD', KEYS[1])
"""


class Membership:
    name = "membership"
    interval_s = HEARTBEAT_S

    def __init__(self, agent: Agent, figures: Callable[[], dict[str, Any]]) -> None:
        self.figures = figures
        self.nodes = 1  # live nodes last seen (this one included)
        self._script = agent.redis.register_script(HEARTBEAT_V1)

    async def tick(self, agent: Agent) -> None:
        keys = [agent.keys.nodes(), agent.keys.node(agent.node_id)]
        document = node_document(agent, self.figures())
        count = await agent.call(
            lambda: self._script(keys=keys, args=[agent.node_id, document, NODE_TTL_MS])
        )
        self.nodes = max(1, int(count))

    def redis_changed(self, up: bool) -> None:
        pass  # ``nodes`` keeps its last value: the fallback divisor

    async def leave(self, agent: Agent) -> None:
        async def goodbye() -> None:
            await agent.redis.zrem(agent.keys.nodes(), agent.node_id)
            await agent.redis.delete(agent.keys.node(agent.node_id))

        await agent.call(goodbye)


def node_document(agent: Agent, figures: dict[str, Any]) -> bytes:
    """What a node publishes about itself with each heartbeat."""
    settings = agent.settings
    return orjson.dumps(
        {
            "id": agent.node_id,
            "version": __version__,
            "pid": os.getpid(),
            "host": settings.host,
            "port": settings.port,
            "workers": settings.workers,
            "started": agent.started,
            "figures": figures,
        }
    )


async def members(client: RedisClient, keys: Keys) -> list[dict[str, Any]]:
    """Every live node's document, with ``seen_ms_ago`` (for ``/admin/stats``)."""
    stamped = cast(
        "list[tuple[bytes, float]]", await client.zrange(keys.nodes(), 0, -1, withscores=True)
    )
    if not stamped:
        return []
    clock = await client.time()
    now_ms = int(clock[0]) * 1000 + int(clock[1]) // 1000
    found = []
    for raw_id, score in stamped:
        node_id = raw_id.decode()
        raw = await client.get(keys.node(node_id))
        if raw is None:
            continue
        document: dict[str, Any] = orjson.loads(raw)
        document["seen_ms_ago"] = max(0, now_ms - int(score))
        found.append(document)
    return found
