"""A worker's spend on its way to the store: gathered in memory, flushed every interval.

Settling a call adds to the key's slot in shared memory at once (what budgets check),
and to this worker's ``SpendLog``; every ``KEY_SPEND_FLUSH_MS`` (default 1,000) a task
writes the log to the store in one transaction, in a thread, off the event loop.  So a
worker killed with ``kill -9`` loses at most what it settled since its last flush: one
interval's spend.  A worker that stops normally flushes what is left.

The log is bounded by construction: it holds one entry per key and UTC day, whatever
the number of requests (a day, because the store counts spend per day and month).  A
flush that fails (the store busy past its timeout, a full disk) keeps its entries for
the next one and says so in the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from aigateway.keys.model import SpendRow
from aigateway.keys.store import KeyStore, StoreUnavailable

__all__ = ("DEFAULT_FLUSH_MS", "SpendLog")

logger = logging.getLogger("aigateway.keys")

DEFAULT_FLUSH_MS: Final = 1000


class SpendLog:
    def __init__(
        self, store: KeyStore, every_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.every_s = every_s
        self._clock = clock
        # (key id, UTC day) -> [requests, prompt tokens, completion tokens, USD, first at]
        self._pending: dict[tuple[str, int], list[float]] = {}

    def add(
        self,
        key_id: str,
        requests: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        usd: float = 0.0,
        now: float | None = None,
    ) -> None:
        """``now``: the caller's reading of this log's clock, if it has one."""
        if now is None:
            now = self._clock()
        day = (key_id, int(now // 86400))
        entry = self._pending.get(day)
        if entry is None:
            entry = self._pending[day] = [0, 0, 0, 0.0, now]
        entry[0] += requests
        entry[1] += prompt_tokens
        entry[2] += completion_tokens
        entry[3] += usd

    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Write what is pending to the store (all or nothing); the rows written."""
        pending = self._take()
        try:
            return self._write(pending)
        except StoreUnavailable:
            self._put_back(pending)
            raise

    async def run(self) -> None:
        """Flush every interval, until cancelled (then flush what is left)."""
        try:
            while True:
                await asyncio.sleep(self.every_s)
                pending = self._take()  # on the event loop, where ``add`` runs
                try:
                    # In a thread: the store may wait for another worker's write.
                    await asyncio.to_thread(self._write, pending)
                except StoreUnavailable as exc:
                    self._put_back(pending)
                    logger.warning("could not flush tenant key spend (kept): %s", exc)
        finally:
            try:
                self.flush()
            except StoreUnavailable as exc:
                logger.error("tenant key spend lost at shutdown: %s", exc)

    def _take(self) -> dict[tuple[str, int], list[float]]:
        pending, self._pending = self._pending, {}
        return pending

    def _write(self, pending: dict[tuple[str, int], list[float]]) -> int:
        if not pending:
            return 0
        rows = [
            SpendRow(key_id, entry[4], int(entry[0]), int(entry[1]), int(entry[2]), entry[3])
            for (key_id, _), entry in pending.items()
        ]
        self.store.add_spend(rows)
        return len(rows)

    def _put_back(self, pending: dict[tuple[str, int], list[float]]) -> None:
        for (key_id, day), entry in pending.items():
            mine = self._pending.setdefault((key_id, day), [0, 0, 0, 0.0, entry[4]])
            for i in range(4):
                mine[i] += entry[i]
