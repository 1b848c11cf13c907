"""A worker's tenant keys, in memory: found by their secret's hash, reloaded on a change.

Authentication reads keys here, never the store: ``find(secret)`` is one keyed hash, one
dictionary lookup and one read of the node's generation (``KeySlots.generation``, a word
of shared memory).  Whoever changes the key set (the admin endpoint, in whichever worker
took it) writes the store first, then moves the generation; every worker sees it moved
on its next request and reloads the keys from the store (one read per change, not per
request).  Expiry needs no change: ``expires_at`` is compared with the clock on every
request.

The reload reads only the keys table and the spend of the periods a key's budget may
count now (``total``, today, this month: the ``spend_period`` index), never the spend
table's history, and in a thread (``asyncio.to_thread``): the event loop keeps serving
on the keys it had, and the new ones replace them whole when the read is done, so a
request sees the old key set or the new one, never a mix.  Changes that come while a
read runs are taken by one more read when it ends, however many there were.  Requests
to ``/v1`` (and refused ones) wait for the read in flight (``reloading``), so a key
made, changed or revoked holds on every worker from its next such request, as when the
read was made on the loop; the loop serves everything else meanwhile (answers being
streamed, other endpoints).  A read that takes longer than ``WAIT_S`` (the store busy
behind a slow writer) is waited for no longer: the old keys serve until it is done.
The worker that made the change waits for its own reload before it answers
(``refresh``).  Without a running event loop (before the worker serves, a tool, a test)
the read is made then and there.

With REDIS_URL the node agent follows the cluster's generation in Redis and moves the
node's (``cluster/key_sync.py``): workers never read Redis for keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from aigateway.keys.model import TenantKey, period_label
from aigateway.keys.slots import KeySlot, KeySlots
from aigateway.keys.store import KeyStore, StoreUnavailable

__all__ = ("KeyRing",)

logger = logging.getLogger("aigateway.keys")

RETRY_S: Final = 1.0  # a failed reload is tried again this soon (the old keys serve meanwhile)
WAIT_S: Final = 1.0  # a request waits this long at most for a reload, then uses the old keys


class KeyRing:
    def __init__(
        self, store: KeyStore, slots: KeySlots, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.slots = slots
        self._clock = clock
        self._by_digest: dict[bytes, KeySlot] = {}
        self._by_id: dict[str, KeySlot] = {}
        self._seen = -1  # the generation the keys were loaded at
        self._any = False
        self._retry_at = 0.0
        self._task: asyncio.Task[None] | None = None  # the reload in flight
        self._words, self._generation = slots.words()

    def __bool__(self) -> bool:
        """Whether any tenant key was ever made, revoked or not: from then on ``/v1/*``
        needs a key (revoking the last one does not open the gateway to anyone)."""
        self._fresh()
        return self._any

    def find(self, secret: str) -> KeySlot | None:
        """The live key whose secret this is (None: not a tenant key, or revoked)."""
        self._fresh()
        if not self._by_digest:
            return None
        return self._by_digest.get(self.store.hasher.digest(secret))

    def get(self, key_id: str) -> KeySlot | None:
        self._fresh()
        return self._by_id.get(key_id)

    def live(self) -> list[KeySlot]:
        """Every key not revoked, in the order they were made (expired ones too)."""
        self._fresh()
        return list(self._by_id.values())

    def changed(self) -> None:
        """The caller changed the key set: tell every worker (this one included)."""
        self.slots.bump()

    def reloading(self) -> Awaitable[None] | None:
        """The reload in flight, to wait for, up to ``WAIT_S`` (None: the keys are
        current, or the last read failed and the old keys serve until the retry)."""
        self._fresh()
        task = self._task
        return _awaited(task) if task is not None else None

    async def refresh(self) -> None:
        """Wait until the keys are the store's as of now (or a read failed)."""
        waiting = self.reloading()
        if waiting is not None:
            await waiting

    async def stop(self) -> None:
        """Let the reload in flight go (before the store and the slots close)."""
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def reload(self, generation: int | None = None) -> None:
        """Read the keys then and there (before the worker serves; without a loop)."""
        if generation is None:
            generation = self.slots.generation()
        now = self._clock()
        if now < self._retry_at:
            return
        try:
            keys = self._read(now)
        except StoreUnavailable as exc:
            self._failed(now, exc)
            return
        self._swap(keys, generation, now)

    def _fresh(self) -> None:
        # Up to three times per request (find, admit, reserve): one word of shared memory.
        if self._words[self._generation] == self._seen or self._task is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.reload()
            return
        if self._clock() >= self._retry_at:
            self._task = loop.create_task(self._follow())

    async def _follow(self) -> None:
        """Reload until the keys are at the generation the last read began at."""
        try:
            while (generation := self.slots.generation()) != self._seen:
                now = self._clock()
                try:
                    keys = await asyncio.to_thread(self._read, now)
                except StoreUnavailable as exc:
                    self._failed(now, exc)
                    return
                self._swap(keys, generation, self._clock())
        except Exception:  # the old keys serve; the next request tries again
            logger.exception("could not reload the tenant keys")
            self._retry_at = self._clock() + RETRY_S
        finally:
            self._task = None

    def _read(self, now: float) -> list[TenantKey]:
        """The store's keys, with what the slots need of their spend (in a thread)."""
        periods = ("total", period_label("day", now), period_label("month", now))
        return self.store.keys_in(periods)

    def _swap(self, keys: list[TenantKey], generation: int, now: float) -> None:
        """Bind the live keys' slots and replace the whole key set at once."""
        slots = {key.id: self.slots.bind(key, now) for key in keys if key.revoked_at is None}
        self._by_id = slots
        self._by_digest = {slot.key.digest: slot for slot in slots.values()}
        self._any = bool(keys)
        self._seen = generation

    def _failed(self, now: float, exc: StoreUnavailable) -> None:
        self._retry_at = now + RETRY_S
        logger.warning("could not reload the tenant keys (the old ones serve): %s", exc)


async def _awaited(task: asyncio.Task[None]) -> None:
    """Wait for the reload, at most ``WAIT_S`` (shielded: a waiter that goes away, or
    gives up, does not cancel it)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), WAIT_S)
