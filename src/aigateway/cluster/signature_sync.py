"""Gemini's thought signatures across nodes (with REDIS_URL).

Each node keeps the signatures its workers saw in its own store (``cache/signatures.py``),
which the request path reads without a round trip. Across nodes they travel by one capped
Redis stream (``Keys.signatures``, at most ``MAX_SIGNATURES`` entries, the oldest trimmed):

* a worker that keeps a signature appends it to the stream in the background
  (``SignatureFeed``: the answer never waits for Redis; past ``MAX_PENDING`` appends in
  flight, or while Redis is away, it is not shared);
* every node's agent reads what the others appended since its last turn, every
  ``INTERVAL_S``, into its node's store (``SignatureSync``); a node that starts reads the
  whole stream first, so it knows the conversations under way.

So a Gemini 3 tool loop whose next turn lands on another node carries its real signature,
once that node's agent has read it (within about ``INTERVAL_S``; a turn that comes sooner,
or while Redis is away, goes with Google's placeholder, as for any unknown signature).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from aigateway.cache.signatures import LmdbSignatures
from aigateway.cluster.guard import RedisUnavailable
from aigateway.cluster.sync import Agent
from aigateway.cluster.worker import WorkerRedis
from aigateway.providers._gemini_calls import MAX_SIGNATURES

__all__ = ("INTERVAL_S", "MAX_PENDING", "SignatureFeed", "SignatureSync")

logger = logging.getLogger("aigateway.cluster")

INTERVAL_S: Final = 0.25
READ_COUNT: Final = 1000  # entries read per turn (a starting node catches up over turns)
MAX_PENDING: Final = 1000  # appends in flight per worker; past it, not shared


class SignatureFeed:
    """A worker's side: each signature kept, appended to the cluster's stream."""

    def __init__(self, redis: WorkerRedis) -> None:
        self.redis = redis
        self.key = redis.keys.signatures()
        self._pending: set[asyncio.Task[Any]] = set()

    def publish(self, call_id: str, value: bytes) -> None:
        if len(self._pending) >= MAX_PENDING:
            return
        fields: dict[Any, Any] = {"id": call_id, "v": value, "n": self.redis.node_id}
        task = asyncio.get_running_loop().create_task(self._append(fields))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _append(self, fields: dict[Any, Any]) -> None:
        try:
            await self.redis.call(
                lambda client: client.xadd(
                    self.key, fields, maxlen=MAX_SIGNATURES, approximate=True
                )
            )
        except RedisUnavailable:
            pass  # kept on this node all the same
        except Exception as exc:  # Redis's own refusal (a full Redis...): logged, not fatal
            logger.debug("a thought signature was not shared: %r", exc)

    async def settle(self) -> None:
        """Wait for the appends under way (tests; a worker that stops)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


class SignatureSync:
    """The agent's side: what other nodes appended, into this node's store."""

    name = "signatures"
    interval_s = INTERVAL_S

    def __init__(self, path: str) -> None:
        self._path = path
        self._store: LmdbSignatures | None = None  # opened at the first turn
        self.last = "0-0"  # the stream's last entry read: from its start at first
        self.added = 0

    async def tick(self, agent: Agent) -> None:
        key = agent.keys.signatures()
        reply: Any = await agent.call(lambda: agent.redis.xread({key: self.last}, count=READ_COUNT))
        if not reply:
            return
        store = self._open()
        for _stream, entries in reply:
            for entry_id, fields in entries:
                self.last = _text(entry_id)
                if _text(fields.get(b"n")) == agent.node_id:
                    continue  # this node's own: its store has it
                call_id, value = fields.get(b"id"), fields.get(b"v")
                if isinstance(call_id, bytes) and isinstance(value, bytes):
                    self.added += store.add(call_id.decode(errors="replace"), value)

    def redis_changed(self, up: bool) -> None:
        pass  # the next turn reads on from the last entry read (trimmed ones are lost)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def _open(self) -> LmdbSignatures:
        if self._store is None:
            self._store = LmdbSignatures(self._path)
        return self._store


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")
