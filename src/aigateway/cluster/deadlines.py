"""A provider's pause and its open circuit, shared by every node within a second.

Both are a deadline per provider that only ever moves later while it runs: a 429 with
``Retry-After`` pauses the provider until then (``core.admission.PauseClock``), an opened
circuit keeps routing off it until its cool-down ends (``core.health.HealthBoard``). So
both share one mechanism, a ``DeadlineSync`` of the node agent, each over its own keys
(``pause:<provider>``, ``circuit:<provider>``):

* every turn (``INTERVAL_S``) the agent reads the node's deadlines in shared memory; one
  that ends later than the last one it knows of is new here (a worker's 429, a circuit a
  worker opened) and goes to Redis with the seconds it has left;
* one script (``DEADLINES_V1``) sets each published key with ``PX`` = those seconds
  unless the key already outlives them (Redis's own clock: the nodes' clocks never
  matter), and answers what every key has left and which node set it;
* a deadline another node set that ends later than the node's own is applied to the
  node's shared memory, and noted as known: it is not published back (no echo), and the
  node's workers see it at their next request.

A node that joins applies the deadlines running at its first turn. While Redis is down
each node keeps its own deadlines; one that begins meanwhile is published when Redis
returns, if it still runs. Closing a circuit stays each node's business: the shared key
expires with the cool-down, and each node's probe then decides for itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Final, Protocol

from aigateway.cluster.sync import Agent
from aigateway.core.admission import PauseClock
from aigateway.core.health import HealthBoard

__all__ = (
    "DEADLINES_V1",
    "INTERVAL_S",
    "CircuitDeadlines",
    "DeadlineSync",
    "Deadlines",
    "PauseDeadlines",
)

logger = logging.getLogger("aigateway.cluster")

INTERVAL_S: Final = 0.2
#: A local deadline must end this much later than the known one to be new (the pause
#: clock counts in milliseconds, and a deadline applied here reads back a hair apart).
TOLERANCE_S: Final = 0.05

# v1. KEYS: one per provider. ARGV[1]: this node's id; ARGV[1 + i]: milliseconds to
# publish for KEYS[i] (0: nothing). Answers {ms left, the node that set it} per key.
DEADLINES_V1: Final = """
local out = {}
for i, key in ipairs(KEYS) do
  local ms = tonumber(ARGV[i + 1])
  if ms > 0 and redis.call('PTTL', key) < ms then
    redis.call('SET', key, ARGV[1], 'PX', ms)
  end
  local left = redis.call('PTTL', key)
  if left > 0 then
    out[i] = {left, redis.call('GET', key)}
  else
    out[i] = {0, false}
  end
end
return out
"""


class Deadlines(Protocol):
    """The node's own deadlines of one kind, in its shared memory."""

    def left_s(self, name: str) -> float:
        """Seconds left of the provider's deadline on this node (0: none running)."""
        ...

    def extend(self, name: str, seconds: float, origin: str) -> None:
        """Make the provider's deadline end no sooner than ``seconds`` from now."""
        ...

    def close(self) -> None:
        """Let go of the shared memory."""
        ...


class PauseDeadlines:
    """The providers' pause clocks (``core.admission``)."""

    def __init__(self, clocks: dict[str, PauseClock]) -> None:
        self.clocks = clocks

    def left_s(self, name: str) -> float:
        return self.clocks[name].left_s()

    def extend(self, name: str, seconds: float, origin: str) -> None:
        self.clocks[name].pause(seconds)
        logger.info("%s paused for %.1f s by a rate limit met on node %s", name, seconds, origin)

    def close(self) -> None:
        pass  # the buckets are the segment's: closed with it


class CircuitDeadlines:
    """The providers' open circuits (``core.health``)."""

    def __init__(self, board: HealthBoard) -> None:
        self.board = board

    def left_s(self, name: str) -> float:
        return self.board.open_left_s(name)

    def extend(self, name: str, seconds: float, origin: str) -> None:
        self.board.open_from_cluster(name, seconds, f"on node {origin}")

    def close(self) -> None:
        self.board.close()


class DeadlineSync:
    """One kind of deadline (``kind``: ``pause``, ``circuit``) shared for ``names``."""

    interval_s = INTERVAL_S

    def __init__(self, kind: str, names: Sequence[str], local: Deadlines) -> None:
        self.name = f"{kind}s"
        self.kind = kind
        self.names = tuple(names)
        self.local = local
        # When each provider's latest known deadline ends (CLOCK_MONOTONIC, like the
        # pause clocks and the health board): published from here or applied here.
        self.known = dict.fromkeys(self.names, 0.0)
        self._script: Any = None

    async def tick(self, agent: Agent) -> None:
        if not self.names:
            return
        if self._script is None:
            self._keys = [agent.keys.coordination_key(self.kind, name) for name in self.names]
            self._script = agent.redis.register_script(DEADLINES_V1)
        now = time.monotonic()
        publish = []
        for name in self.names:
            left = self.local.left_s(name)
            new = left > 0.0 and now + left > self.known[name] + TOLERANCE_S
            publish.append(max(1, round(left * 1000)) if new else 0)
        answer = await agent.call(
            lambda: self._script(keys=self._keys, args=[agent.node_id, *publish])
        )
        for name, sent_ms in zip(self.names, publish, strict=True):
            if sent_ms:  # now the cluster's (or a longer one is: applied below)
                self.known[name] = max(self.known[name], now + sent_ms / 1000)
        now = time.monotonic()
        for name, (left_ms, origin) in zip(self.names, answer, strict=True):
            left = int(left_ms) / 1000
            if left <= 0.0 or now + left <= self.known[name] + TOLERANCE_S:
                continue
            self.known[name] = now + left
            who = origin.decode(errors="replace") if isinstance(origin, bytes) else str(origin)
            if who != agent.node_id:
                self.local.extend(name, left, who)

    def redis_changed(self, up: bool) -> None:
        pass  # the node keeps its own deadlines; new ones are published on return

    def close(self) -> None:
        self.local.close()
