"""Tenant keys' rates for the whole cluster: one more kind of leased limit (``leases``).

A key's ``rpm`` and ``tpm`` hold for every node sharing the Redis, whichever node a
request hits, with no Redis call per request: each is a global bucket in Redis leased by
the nodes' agents, in the same ``LEASE_V2`` call as the providers' limits, into the
key's buckets in the node's shared memory (``keys.slots``). They are leased as the
providers' tokens a minute are: the global bucket's burst is a minute of the limit (a
key's whole minute may be spent on one node), what a node is granted goes into its
bucket at once, and the bucket barely refills by itself.

This module tells the lease sync which keys there are (the node's ``keys.db``, read again
when the node's key generation moves) and what each one's node demand is: the requests
(or tokens) waiting in its slot for a lease, and what its bucket spent since the last
lease (``LeaseSync`` reads that from the bucket's level). A key with neither, whose node
holds its standing lease, stays out of the round: with thousands of keys, a round carries
only those with recent demand, all in the one script call. Requests that wait make the
agent ask at its next tick (every 0.1 s) rather than at the next full round (0.5 s).

Each key's state sits under the coordination hash tag (``Keys.key_limit``), so a node's
whole round stays one call on a Redis Cluster too (docs/cluster.md says why).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Final

from aigateway.hotpath import TokenBucket
from aigateway.keys.model import TenantKey
from aigateway.keys.slots import KeySlots
from aigateway.keys.store import SqliteKeyStore, StoreUnavailable

__all__ = ("IDLE_KEY_SHARE", "KeyLeases", "KeyLimit", "key_lease")

#: An idle node's standing lease of a key: this part of its even share of the key's
#: minute, in whole requests (or tokens); none when that is under one (a 5-rpm key on 2
#: nodes), so that an idle node never holds what a busy one needs.
IDLE_KEY_SHARE: Final = 0.1


def key_lease(key_id: str, kind: str) -> str:
    """The name of a key's lease (``kind``: ``rpm`` or ``tpm``) among the leases."""
    return f"key:{key_id}:{kind}"


@dataclass(slots=True)
class KeyLimit:
    """One key's ``rpm`` or ``tpm`` on this node."""

    key_id: str
    kind: str  # "rpm" or "tpm"
    slot: int
    tag: int
    per_minute: int
    bucket: TokenBucket

    @property
    def limit(self) -> float:
        """The limit a second (what the lease script takes)."""
        return self.per_minute / 60.0

    def standing(self, nodes: int) -> float:
        """What an idle node keeps leased (see ``IDLE_KEY_SHARE``)."""
        return float(math.floor(IDLE_KEY_SHARE * self.per_minute / max(nodes, 1)))


class KeyLeases:
    """The node's keys with a rate limit, as the lease sync leases them."""

    def __init__(self, directory: str, slots: KeySlots) -> None:
        self.directory = directory
        self.slots = slots
        self.limits: dict[str, KeyLimit] = {}
        self._seen = -1
        self._store: SqliteKeyStore | None = None

    async def refresh(self) -> bool:
        """Read the keys again if the node's key generation moved (True: it did)."""
        generation = self.slots.generation()
        if generation == self._seen:
            return False
        try:
            keys = await asyncio.to_thread(self._keys)
        except StoreUnavailable:
            return False  # the old ones meanwhile; tried again at the next tick
        self._seen = generation
        limits: dict[str, KeyLimit] = {}
        for key in keys:
            if key.revoked_at is not None or (key.rpm is None and key.tpm is None):
                continue
            try:
                slot = self.slots.bind(key)  # laid out here if no worker did yet
            except ValueError:
                continue  # a slot past this node's (a smaller segment): no worker binds it
            rates = (("rpm", key.rpm, slot.rpm), ("tpm", key.tpm, slot.tpm))
            for kind, per_minute, bucket in rates:
                if per_minute is not None:
                    limits[key_lease(key.id, kind)] = KeyLimit(
                        key.id, kind, key.slot, key.tag, per_minute, bucket
                    )
        self.limits = limits
        return True

    def waiting(self, limit: KeyLimit) -> float:
        """Requests (``tpm``: tokens) waiting in the key's slot for a lease."""
        requests, tokens = self.slots.waiting(limit.slot)
        return tokens if limit.kind == "tpm" else requests

    def any_waiting(self) -> bool:
        return any(self.waiting(limit) > 0.0 for limit in self.limits.values())

    def set_mode(self, limit: KeyLimit, mode: int) -> None:
        self.slots.set_mode(limit.slot, mode)

    def round_done(self) -> None:
        self.slots.lease_round_done()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        self.slots.close()

    def _keys(self) -> list[TenantKey]:
        if self._store is None:
            self._store = SqliteKeyStore(self.directory)
        return self._store.keys()
