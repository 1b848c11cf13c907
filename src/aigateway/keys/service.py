"""The tenant keys of one worker, put together: store, slots, ring, gate and spend log.

``TenantKeys(settings)`` is made with the app; the worker's lifespan ``open``\\ s it on
the node's segment (the ``keys`` region, see ``region_spec``) and ``start``\\ s the spend
flush, and ``stop`` flushes what is left.  Authentication asks it ``find(secret)``; the
pipeline asks its ``gate``; the admin endpoints change keys through ``store`` and then
``ring.changed()``.

``/metrics``, ``/admin/stats`` and the dashboard (polled every second or two) read each
key's spend from ``spend_by_name``: the store's totals as a task last read them, in a
thread, every ``KEY_SPEND_FLUSH_MS`` while any tenant key exists.  A poll never queries
the store on the event loop, where a read took milliseconds with many keys (and could
wait for another worker's flush), stalling every request of the worker.

``prepare_data_dir`` runs once in the main process of ``aigateway serve``: it makes
``AI_GATEWAY_DATA_DIR`` and opens the store there, so a directory that cannot be written
stops the server at once (exit 2) rather than failing in every worker, and hands the
workers the directory it chose.  An app made in-process without a data directory (a
tool, a test: ``create_app(Settings())``) keeps its keys in a temporary directory of its
own, removed when it stops, never in the user's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aigateway import shm
from aigateway.keys.gate import KeyGate, Pricing
from aigateway.keys.model import TenantKey
from aigateway.keys.ring import KeyRing
from aigateway.keys.slots import HEAD, SLOT, KeySlot, KeySlots, region_size
from aigateway.keys.spend import SpendLog
from aigateway.keys.store import KEY_SLOTS, SqliteKeyStore, StoreUnavailable
from aigateway.pricing import PriceTable

if TYPE_CHECKING:
    from aigateway.config import Settings

logger = logging.getLogger("aigateway.keys")

__all__ = ("KEYS_REGION", "TenantKeys", "data_directory", "prepare_data_dir", "region_spec")

KEYS_REGION = "keys"


def region_spec(capacity: int = KEY_SLOTS) -> shm.RegionSpec:
    """The node's key slots, in every layout (keys may be made at any time)."""
    return shm.RegionSpec(KEYS_REGION, region_size(capacity), {}, (HEAD, SLOT))


def data_directory(settings: Settings) -> str:
    """``AI_GATEWAY_DATA_DIR``, else ``$XDG_DATA_HOME/aigateway``, else
    ``~/.local/share/aigateway``."""
    if settings.data_dir:
        return settings.data_dir
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(base, "aigateway")


def prepare_data_dir(path: str) -> str | None:
    """Make the data directory and open the key store in it: None, or why it failed."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        return f"cannot create {path}: {exc.strerror or exc}"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable"
    try:
        SqliteKeyStore(path).close()
    except StoreUnavailable as exc:
        return str(exc)
    return None


def open_store(settings: Settings, directory: str) -> SqliteKeyStore:
    """The node's SQLite store; with REDIS_URL, one that changes keys through Redis and
    queues spend for the node agent (``cluster/key_store.py``)."""
    if settings.redis_url is None:
        return SqliteKeyStore(directory)
    from aigateway.cluster.key_store import RedisKeyStore  # only with REDIS_URL

    return RedisKeyStore(
        directory, settings.redis_url, settings.cluster_name, settings.redis_timeout_ms / 1000
    )


class TenantKeys:
    def __init__(
        self,
        settings: Settings,
        pricing: Pricing | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.pricing = pricing if pricing is not None else PriceTable.from_settings(settings)
        self._clock = clock
        self.store: SqliteKeyStore | None = None
        self.ring: KeyRing | None = None
        self.gate: KeyGate | None = None
        self.spend: SpendLog | None = None
        self._task: asyncio.Task[None] | None = None
        self._totals: list[tuple[str, str, int, float]] = []  # spend_by_name's last read
        self._totals_task: asyncio.Task[None] | None = None
        self._scratch: str | None = None  # a temporary data directory, without one set

    def open(self, segment: shm.Segment | None) -> None:
        """Open the store and the node's key slots (private ones without a segment)."""
        settings = self.settings
        if settings.data_dir:
            directory = settings.data_dir
            os.makedirs(directory, mode=0o700, exist_ok=True)
        else:
            directory = self._scratch = tempfile.mkdtemp(prefix="aigateway-keys-")
        store = open_store(settings, directory)
        if segment is not None and KEYS_REGION in segment.region_names:
            slots = KeySlots(
                segment.region(KEYS_REGION, HEAD, SLOT), segment.region_lock_path(KEYS_REGION)
            )
        else:
            slots = KeySlots.private(KEY_SLOTS)
        self.store = store
        self.ring = KeyRing(store, slots, self._clock)
        self.spend = SpendLog(store, settings.key_spend_flush_ms / 1000.0, self._clock)
        self.gate = KeyGate(
            self.ring,
            self.spend,
            self.pricing,
            cut_streams=settings.key_budget_cut_streams,
            clock=self._clock,
        )
        self.ring.reload()  # before the worker serves: nothing waits
        self._totals = self._read_totals()

    def start(self) -> None:
        assert self.spend is not None
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self.spend.run())
        self._totals_task = loop.create_task(self._follow_totals(self.spend.every_s))

    async def stop(self) -> None:
        """Flush the spend, let go of the store and the slots."""
        for task in (self._totals_task, self._task):  # the spend log flushes as it ends
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._totals_task = None
        self._totals = []
        if self.ring is not None:
            await self.ring.stop()
        if self.store is not None:
            self.store.close()
        if self.ring is not None:
            self.ring.slots.close()
        self.store = self.ring = self.gate = self.spend = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __bool__(self) -> bool:
        """Whether any tenant key was ever made (then ``/v1/*`` needs a key)."""
        return self.ring is not None and bool(self.ring)

    def find(self, secret: str) -> TenantKey | None:
        """The live key whose secret this is (expired keys too: the caller says 401)."""
        ring = self.ring
        if ring is None:
            return None
        slot = ring.find(secret)
        return slot.key if slot is not None else None

    def spend_by_name(self) -> list[tuple[str, str, int, float]]:
        """(name, id, requests, USD) of every key, as the store had them at the last read
        (at most about two flush intervals behind; see module); none while closed."""
        return self._totals

    async def _follow_totals(self, every_s: float) -> None:
        """Read the store's totals in a thread every ``every_s`` while keys exist."""
        while True:
            await asyncio.sleep(every_s)
            if not self:  # without a key ever made, there is nothing to read
                continue
            try:
                self._totals = await asyncio.to_thread(self._read_totals)
            except Exception:  # the last read stands; the next round may well succeed
                logger.exception("could not read the tenant keys' spend")

    def _read_totals(self) -> list[tuple[str, str, int, float]]:
        """The store's (name, id, requests, USD); the last read when it cannot be read."""
        store = self.store
        if store is None:
            return []
        try:
            return store.spend_by_name()
        except StoreUnavailable:
            return self._totals

    def reloading(self) -> Awaitable[None] | None:
        """The reload of the key set in flight, if any (see ``KeyRing.reloading``)."""
        return self.ring.reloading() if self.ring is not None else None

    def live(self) -> list[KeySlot]:
        """The keys not revoked, with their slots (none while closed)."""
        return self.ring.live() if self.ring is not None else []

    def spend_in(self, periods: tuple[str, ...]) -> dict[str, float]:
        """USD all keys spent in each period, as the store has it (empty when closed or
        unreadable)."""
        store = self.store
        if store is None:
            return {}
        try:
            return store.spend_in(periods)
        except StoreUnavailable:
            return {}

    def now(self) -> float:
        return self._clock()
