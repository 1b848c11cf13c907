"""The node agent's side of tenant keys shared through Redis (``key_store.py``).

Every turn (``INTERVAL_S``) the agent:

* reads the keys' generation; when it moved (a key made, changed or revoked on any
  node), copies every record into the node's ``keys.db`` and moves the node's
  generation (``KeySlots.bump``): the workers reload their keys at their next request
  (and the lease sync, which leases the keys' rates: ``key_leases``);

and every ``KEY_SPEND_FLUSH_MS`` it sends the node's ``outbox`` (what its workers
flushed) to Redis with ``SPEND_V1``, which adds it and answers the totals of every live
key in one script. What the totals grew by beyond this node's own part is what the other
nodes spent: it is added to the key's slot (``KeySlots.add_spent``), so each node's
budget check sees the cluster's spend, at most one flush interval (per node) late. The
totals also become the node's copy, for ``GET /admin/keys`` and ``/metrics``.

With Redis down nothing is sent: the outbox waits in ``keys.db`` (it survives a restart
of the node) and goes with the first turn that reaches Redis again. A node that stops
sends its outbox one last time (``final``), after its workers' last flush.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final

import orjson

from aigateway import shm
from aigateway.cluster.key_store import (
    NANO,
    SPEND_V1,
    decode_record,
    prepare_shared_keys,
    spend_fields,
)
from aigateway.cluster.sync import Agent
from aigateway.config import Settings
from aigateway.keys.model import TenantKey, period_label
from aigateway.keys.service import KEYS_REGION
from aigateway.keys.slots import HEAD, SLOT, KeySlots
from aigateway.keys.store import SqliteKeyStore

__all__ = ("INTERVAL_S", "KeySync", "key_sync", "last_seen")

logger = logging.getLogger("aigateway.keys")

INTERVAL_S: Final = 0.1  # the keys' generation is one GET: cheap enough to read often
PERIODS: Final = ("total", "day", "month")


def key_sync(settings: Settings, segment: shm.Segment) -> KeySync | None:
    """The node's key sync, after the start-up work (``prepare_shared_keys``); None
    without a data directory or key slots (a gateway made in-process)."""
    if settings.data_dir is None or settings.redis_url is None:
        return None
    if KEYS_REGION not in segment.region_names:
        return None
    totals = prepare_shared_keys(
        settings.redis_url,
        settings.cluster_name,
        settings.data_dir,
        settings.redis_timeout_ms / 1000,
    )
    slots = KeySlots(segment.region(KEYS_REGION, HEAD, SLOT), segment.region_lock_path(KEYS_REGION))
    if totals is not None:
        seen = {key: values[3] for key, values in totals.items()}
    else:
        seen = last_seen(settings.data_dir)
    return KeySync(settings.data_dir, slots, settings.key_spend_flush_ms / 1000, seen)


def last_seen(directory: str) -> dict[tuple[str, str], int]:
    """Redis's totals as the node's copy last had them (its spend, less what is still to
    send): where a node that started without Redis takes up the count."""
    store = SqliteKeyStore(directory)
    try:
        _, outbox = store.take_outbox()
        unsent = {(key_id, period): usd for key_id, period, _r, _p, _c, usd in outbox}
        return {
            (key_id, period): round((usd - unsent.get((key_id, period), 0.0)) * NANO)
            for key_id, period, _r, _p, _c, usd in store.spend_rows()
        }
    finally:
        store.close()


class KeySync:
    name = "tenant-keys"
    interval_s = INTERVAL_S

    def __init__(
        self,
        directory: str,
        slots: KeySlots,
        flush_s: float,
        seen: dict[tuple[str, str], int] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.slots = slots
        self.flush_s = flush_s
        self.clock = clock
        #: (key id, period) -> nano-dollars in Redis when last read
        self.seen: dict[tuple[str, str], int] = dict(seen or {})
        self.generation: int | None = None
        self._store: SqliteKeyStore | None = None
        self._script: Any = None
        self._spend_due = 0.0

    async def tick(self, agent: Agent) -> None:
        store = self._open()
        keys = agent.keys
        raw = await agent.call(lambda: agent.redis.get(keys.tenant_key("generation")))
        generation = int(raw or 0)
        if generation != self.generation:
            records: Any = await agent.call(lambda: agent.redis.hgetall(keys.tenant_key("records")))
            rows = [decode_record(value) for value in records.values()]
            await asyncio.to_thread(store.put_rows, rows, replace=True)
            self.generation = generation
            self.slots.bump()
        now = self.clock()
        if now >= self._spend_due:
            self._spend_due = now + self.flush_s
            await self.exchange_spend(agent, now)

    async def exchange_spend(self, agent: Agent, now: float) -> None:
        """Send the outbox, take back the totals (see module)."""
        store = self._open()
        last, outbox = await asyncio.to_thread(store.take_outbox)
        live = [key for key in await asyncio.to_thread(store.keys) if key.revoked_at is None]
        mine: dict[tuple[str, str], tuple[int, int, int, int]] = {
            (key_id, period): (int(r), int(p), int(c), round(usd * NANO))
            for key_id, period, r, p, c, usd in outbox
        }
        ids = [key.id for key in live]
        ids += sorted({key_id for key_id, _ in mine} - set(ids))
        if not ids:
            return
        labels = [period_label(period, now) for period in PERIODS]
        adds: list[list[list[str]]] = [[] for _ in ids]
        where = {key_id: index for index, key_id in enumerate(ids)}
        for (key_id, period), values in mine.items():
            index = where[key_id]
            for field, value in zip(spend_fields(period), values, strict=True):
                if value:
                    adds[index].append([field, str(value)])
        reads = [
            [field for label in labels for field in spend_fields(label)] if i < len(live) else []
            for i in range(len(ids))
        ]
        if self._script is None or self._script.registered_client is not agent.redis:
            self._script = agent.redis.register_script(SPEND_V1)
        script = self._script
        hashes = [agent.keys.tenant_spend(key_id) for key_id in ids]
        args = [orjson.dumps(adds), orjson.dumps(reads)]
        answer: Any = await agent.call(lambda: script(keys=hashes, args=args))
        totals = []
        for key, values in zip(live, answer, strict=False):
            counts = [int(v) if v is not None else 0 for v in values]
            for n, label in enumerate(labels):
                r, p, c, usd = counts[4 * n : 4 * n + 4]
                totals.append((key.id, label, r, p, c, usd / NANO))
                self._follow(key, label, usd, mine.get((key.id, label)), now)
        await asyncio.to_thread(store.settle_outbox, last, totals)

    def _follow(
        self, key: TenantKey, label: str, total: int, mine: tuple[int, ...] | None, now: float
    ) -> None:
        """What others spent since the last read goes into the key's slot."""
        before = self.seen.get((key.id, label), 0)
        self.seen[key.id, label] = total
        if label != period_label(key.budget_period, now):
            return
        others = total - before - (mine[3] if mine else 0)
        if others:
            self.slots.add_spent(key, others / NANO, now)

    async def final(self, agent: Agent) -> None:
        """The node stops (its workers flushed): send what they spent last, so a node that
        never comes back leaves nothing unsent in its ``keys.db``."""
        await self.exchange_spend(agent, self.clock())

    def redis_changed(self, up: bool) -> None:
        pass  # the outbox waits in keys.db; the generation is read again when Redis is back

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        self.slots.close()

    def _open(self) -> SqliteKeyStore:
        if self._store is None:
            self._store = SqliteKeyStore(self.directory)
        return self._store
