"""A worker's tenant keys, in memory: found by their secret's hash, reloaded on a change.

Authentication reads keys here, never the store: ``find(secret)`` is one keyed hash, one
dictionary lookup and one read of the node's generation (``KeySlots.generation``, a word
of shared memory).  Whoever changes the key set (the admin endpoint, in whichever worker
took it) writes the store first, then moves the generation; the next request in every
worker sees it moved and reloads the keys from the store (one read per change, not per
request).  So a revocation or a change of limits holds on every worker from its next
request, well within a second.  Expiry needs no change: ``expires_at`` is compared with
the clock on every request.

With REDIS_URL the node agent follows the cluster's generation in Redis and moves the
node's (``cluster/key_sync.py``): workers never read Redis for keys.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from aigateway.keys.model import TenantKey
from aigateway.keys.slots import KeySlot, KeySlots
from aigateway.keys.store import KeyStore, StoreUnavailable

__all__ = ("KeyRing",)

logger = logging.getLogger("aigateway.keys")

RETRY_S: Final = 1.0  # a failed reload is tried again this soon (the old keys serve meanwhile)


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

    def _fresh(self) -> None:
        generation = self.slots.generation()
        if generation != self._seen:
            self.reload(generation)

    def reload(self, generation: int | None = None) -> None:
        if generation is None:
            generation = self.slots.generation()
        now = self._clock()
        if now < self._retry_at:
            return
        try:
            keys = self.store.keys()
        except StoreUnavailable as exc:
            self._retry_at = now + RETRY_S
            logger.warning("could not reload the tenant keys (the old ones serve): %s", exc)
            return
        live: list[TenantKey] = [key for key in keys if key.revoked_at is None]
        slots = {key.id: self.slots.bind(key, now) for key in live}
        self._by_id = slots
        self._by_digest = {slot.key.digest: slot for slot in slots.values()}
        self._any = bool(keys)
        self._seen = generation
