"""What the node agent reads and writes of its node's shared memory, from the main process.

The workers own these structures; the agent opens them as a guest: the providers' pause
clocks, the health board, the live settings without a slot of their own (no worker waits
for the agent to acknowledge a version), the series table without a slot (the agent is
not counted as a worker), and the cache's counters. Each is closed by the agent when it
stops, before the main process unmaps the segment.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from aigateway import shm
from aigateway.cache.store import LmdbStore
from aigateway.config import Settings
from aigateway.core.admission import PauseClock, pause_bucket_name
from aigateway.core.health import HealthBoard
from aigateway.hotpath import StatsSnapshot
from aigateway.operations import HEALTH_REGION, LIVE_REGION, SERIES_REGION, health_policy
from aigateway.runtime import LiveSettings
from aigateway.stats.series import Series, SeriesTable

__all__ = ("NodeReader", "circuit_board", "live_settings", "pause_clocks")


def pause_clocks(segment: shm.Segment, names: Sequence[str]) -> dict[str, PauseClock]:
    buckets = set(segment.bucket_names)
    return {
        name: PauseClock(segment.bucket(pause_bucket_name(name)))
        for name in names
        if pause_bucket_name(name) in buckets
    }


def circuit_board(settings: Settings, segment: shm.Segment) -> HealthBoard | None:
    if HEALTH_REGION not in segment.region_names:
        return None
    return HealthBoard(
        segment.region(HEALTH_REGION, *HealthBoard.LAYOUTS),
        segment.region_params(HEALTH_REGION)["providers"],
        health_policy(settings),
        segment.region_lock_path(HEALTH_REGION),
    )


def live_settings(settings: Settings, segment: shm.Segment) -> LiveSettings | None:
    if LIVE_REGION not in segment.region_names:
        return None
    return LiveSettings(
        settings,
        segment.region(LIVE_REGION, *LiveSettings.LAYOUTS),
        segment.region_params(LIVE_REGION)["slots"],
        segment.region_lock_path(LIVE_REGION),
        claim_slot=False,
    )


class NodeReader:
    """The node's numbers that its heartbeat's figures come from."""

    def __init__(self, settings: Settings, segment: shm.Segment) -> None:
        self.settings = settings
        self.stats = segment.stats()
        self.table: SeriesTable | None = None
        if SERIES_REGION in segment.region_names:
            self.table = SeriesTable(
                segment.region(SERIES_REGION, *SeriesTable.LAYOUTS),
                segment.region_params(SERIES_REGION),
                segment.region_lock_path(SERIES_REGION),
                claim_slot=False,
            )
        self._store: LmdbStore | None = None

    def read(self) -> tuple[StatsSnapshot, list[Series], dict[str, int] | None]:
        series = self.table.read() if self.table is not None else []
        return self.stats.snapshot(), series, self._cache_counters()

    def close(self) -> None:
        if self.table is not None:
            self.table.close()
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()

    def store(self) -> LmdbStore | None:
        """The node's cache, opened once for the main process (LMDB must not be opened
        twice in one process: closing the second handle breaks the first one's locks)."""
        settings = self.settings
        if not settings.cache_enabled or not settings.cache_path:
            return None
        if self._store is None:
            try:
                self._store = LmdbStore(settings.cache_path, int(settings.cache_max_mb * 2**20))
            except Exception:
                return None  # the workers have not made it yet
        return self._store

    def _cache_counters(self) -> dict[str, int] | None:
        store = self.store()
        return store.counters() if store is not None else None
