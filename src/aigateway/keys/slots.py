"""The node's key slots in shared memory: what every worker must agree on, per key.

A key's requests a minute, tokens a minute, requests in flight and budget hold for the
whole node, whichever worker takes a request; so they live in a region of the node's
segment (``RegionSpec`` ``keys``), beside the providers' buckets, in a fixed number of
slots (``store.KEY_SLOTS``, 4,096 of 256 bytes: 1 MiB).  The store gives each key not revoked a
slot of its own when it is made; a node with every slot taken refuses a new key (409)
until one is revoked.  A slot says which key it holds (``owner``, the key's tag): a
worker that finds another owner (a new key in a revoked key's slot, or a fresh segment
after a restart) lays the slot out afresh, under the region's lock, with the key's spend
in its budget period as the store knows it.

Region layout: a head (``HEAD``), then ``capacity`` slots (``SLOT``; each bucket is a
``hotpath.TokenBucket`` region, either twin)::

    0    u64  generation  moved by every change of the key set
    8    u32  capacity    slots that follow
    12   u32  nodes       live nodes sharing the keys' rates (0: one node)
    16   u32  rank        this node's place among them
    64   (end)

    0    u64           owner         tag of the key it holds (0: none)
    8    i64           period        the budget period spent_usd counts
    16   f64           spent_usd     spent in that period
    24   f64           reserved_usd  estimates of the calls in flight
    32   token bucket  rpm           requests a minute
         0    u32     magic        "AGTB"
         4    u32     version      REGION_VERSION
         8    f64     rate_per_s
         16   f64     burst
         24   i64     tat_ns       GCRA: CLOCK_MONOTONIC ns at which it is full again
         32   i64     creator_pid  pid of the initialising process
         40   u64     region_id    random: names the pure twins' lock file
         48   u64[2]  reserved     zero
         64   (end)
    96   token bucket  tpm           tokens a minute
         0    u32     magic        "AGTB"
         4    u32     version      REGION_VERSION
         8    f64     rate_per_s
         16   f64     burst
         24   i64     tat_ns       GCRA: CLOCK_MONOTONIC ns at which it is full again
         32   i64     creator_pid  pid of the initialising process
         40   u64     region_id    random: names the pure twins' lock file
         48   u64[2]  reserved     zero
         64   (end)
    160  token bucket  parallel      requests in flight: a place is a token
         0    u32     magic        "AGTB"
         4    u32     version      REGION_VERSION
         8    f64     rate_per_s
         16   f64     burst
         24   i64     tat_ns       GCRA: CLOCK_MONOTONIC ns at which it is full again
         32   i64     creator_pid  pid of the initialising process
         40   u64     region_id    random: names the pure twins' lock file
         48   u64[2]  reserved     zero
         64   (end)
    256  (end)

The buckets are the providers' (``hotpath.TokenBucket``, either twin: the compiled one
takes and gives back with one compare-and-swap, no lock), requests in flight included: a
request takes one of ``max_parallel`` tokens and gives it back when it ends (the bucket
refills so slowly that only the places of a worker killed mid-request come back by it;
a restart frees them at once).  The budget's words change under the region's lock
(``RegionLock``: a ``flock`` the kernel drops when its holder dies), once before and
once after each provider call.
"""

from __future__ import annotations

import math
import time
from typing import Final

from aigateway.hotpath import TokenBucket
from aigateway.hotpath.regions import BUCKET, RegionLock
from aigateway.keys.model import TenantKey, period_index, period_label
from aigateway.shm_layout import Field, Layout

__all__ = ("HEAD", "SLOT", "KeySlot", "KeySlots", "region_size")

HEAD: Final = Layout(
    "key slots",
    (
        Field("generation", "u64", doc="moved by every change of the key set"),
        Field("capacity", "u32", doc="slots that follow"),
        Field("nodes", "u32", doc="live nodes sharing the keys' rates (0: one node)"),
        Field("rank", "u32", doc="this node's place among them"),
    ),
    size=64,
)
SLOT: Final = Layout(
    "key slot",
    (
        Field("owner", "u64", doc="tag of the key it holds (0: none)"),
        Field("period", "i64", doc="the budget period spent_usd counts"),
        Field("spent_usd", "f64", doc="spent in that period"),
        Field("reserved_usd", "f64", doc="estimates of the calls in flight"),
        Field("rpm", BUCKET, doc="requests a minute"),
        Field("tpm", BUCKET, doc="tokens a minute"),
        Field("parallel", BUCKET, doc="requests in flight: a place is a token"),
    ),
    size=256,
)
# Word indices within a slot (each slot starts on an 8-byte boundary).
_WORDS: Final = SLOT.size // 8
_OWNER = SLOT.index("owner")
_PERIOD = SLOT.index("period")
_SPENT = SLOT.index("spent_usd")
_RESERVED = SLOT.index("reserved_usd")
_BUCKETS_AT: Final = tuple(SLOT.offset_of(name) for name in ("rpm", "tpm", "parallel"))
_GENERATION = HEAD.index("generation")
_UNUSED_RATE: Final = (1.0, 1.0)  # a bucket of a key without that limit (never used)
_YEAR_S: Final = 365 * 86400.0


def parallel_spec(most: int | None) -> tuple[float, float]:
    """(rate a second, burst) of a ``max_parallel`` bucket: ``most`` places, each taken
    by a request and given back when it ends; it refills so slowly (all of it in a year)
    that no request sees it, only the places of a worker killed mid-request come back."""
    if most is None:
        return _UNUSED_RATE
    return most / _YEAR_S, float(most)


def region_size(capacity: int) -> int:
    return HEAD.size + capacity * SLOT.size


def rate_spec(per_minute: int | None, nodes: int = 1, rank: int = 0) -> tuple[float, float]:
    """(rate a second, burst) of a per-minute limit: a minute's worth may come at once.
    Shared by ``nodes`` (REDIS_URL), each node takes its whole share of the limit, the
    first ``per_minute % nodes`` one more: the shares add up to the limit."""
    if per_minute is None:
        return _UNUSED_RATE
    if nodes > 1:
        per_minute = per_minute // nodes + (1 if rank < per_minute % nodes else 0)
        if per_minute == 0:
            return 1e-9, 1e-9  # no share left for this node: refuse (Retry-After: 60)
    return per_minute / 60.0, float(per_minute)


class KeySlots:
    """The region: its generation, and the slot of each key."""

    def __init__(self, buffer: memoryview, lock_path: str | None) -> None:
        self._view = buffer.cast("B")
        self._u64 = self._view.cast("Q")
        self._i64 = self._view.cast("q")
        self._f64 = self._view.cast("d")
        self._lock = RegionLock(lock_path)
        self.capacity = (len(self._view) - HEAD.size) // SLOT.size
        # The buckets made on each slot, by slot and owner: reused when a key's slot is
        # bound again (a reload), all closed with the region.
        self._buckets: dict[tuple[int, int], tuple[TokenBucket, TokenBucket, TokenBucket]] = {}
        self._retired: list[TokenBucket] = []
        if HEAD.read(self._view, "capacity") == 0:
            HEAD.write(self._view, "capacity", self.capacity)

    @classmethod
    def private(cls, capacity: int) -> KeySlots:
        """Slots in this process's memory (a gateway without a node segment, a test)."""
        return cls(memoryview(bytearray(region_size(capacity))), None)

    def generation(self) -> int:
        return self._u64[_GENERATION]

    def bump(self) -> None:
        """Tell every worker the key set changed."""
        with self._lock:
            self._u64[_GENERATION] += 1

    def share(self) -> tuple[int, int]:
        """(live nodes, this node's rank) sharing the keys' rates (the node agent's)."""
        return max(HEAD.read(self._view, "nodes"), 1), HEAD.read(self._view, "rank")

    def set_share(self, nodes: int, rank: int) -> bool:
        """The node agent saw the cluster change: rates are split anew (True: they moved,
        and so did the generation, so workers bind their keys again)."""
        if self.share() == (max(nodes, 1), rank):
            return False
        with self._lock:
            HEAD.write(self._view, "nodes", nodes)
            HEAD.write(self._view, "rank", rank)
            self._u64[_GENERATION] += 1
        return True

    def add_spent(self, key: TenantKey, usd: float, now: float) -> bool:
        """Add what other nodes spent (the node agent, from Redis's totals) to the key's
        budget period, if its slot holds it and counts that period (False: it does not)."""
        if not 0 <= key.slot < self.capacity:
            return False
        base = (HEAD.size // 8) + key.slot * _WORDS
        with self._lock:
            if self._u64[base + _OWNER] != key.tag:
                return False
            if self._i64[base + _PERIOD] != period_index(key.budget_period, now):
                return False
            self._f64[base + _SPENT] += usd
        return True

    def bind(self, key: TenantKey, now: float | None = None) -> KeySlot:
        """The slot of ``key``, laid out for it when it held another, its rates set."""
        if not 0 <= key.slot < self.capacity:
            raise ValueError(f"key {key.id} has slot {key.slot}, past the {self.capacity} slots")
        base = (HEAD.size // 8) + key.slot * _WORDS
        at = HEAD.size + key.slot * SLOT.size
        when = time.time() if now is None else now
        views = [self._view[at + offset : at + offset + BUCKET.size] for offset in _BUCKETS_AT]
        nodes, rank = self.share()
        specs = (
            rate_spec(key.rpm, nodes, rank),
            rate_spec(key.tpm, nodes, rank),
            parallel_spec(key.max_parallel),
        )
        with self._lock:
            made = self._buckets.get((key.slot, key.tag))
            if self._u64[base + _OWNER] != key.tag:
                self._u64[base + _OWNER] = 0  # incomplete until the owner is written last
                self._i64[base + _PERIOD] = period_index(key.budget_period, when)
                self._f64[base + _SPENT] = key.spend.in_period(
                    period_label(key.budget_period, when)
                )
                self._f64[base + _RESERVED] = 0.0
                fresh = [TokenBucket(*spec, view) for spec, view in zip(specs, views, strict=True)]
                self._u64[base + _OWNER] = key.tag
                if made is not None:
                    self._retired.extend(made)  # in-flight calls may still settle on them
                made = self._buckets[key.slot, key.tag] = (fresh[0], fresh[1], fresh[2])
            else:
                if made is None:
                    attached = [TokenBucket.attach(view) for view in views]
                    made = self._buckets[key.slot, key.tag] = (
                        attached[0],
                        attached[1],
                        attached[2],
                    )
                for bucket, spec in zip(made, specs, strict=True):
                    if (bucket.rate_per_s, bucket.burst) != spec:
                        bucket.set_rate(*spec)
        return KeySlot(self, key, base, *made)

    def close(self) -> None:
        """Let go of the region (its buckets first), so the segment can be unmapped."""
        for pair in self._buckets.values():
            self._retired.extend(pair)
        for bucket in self._retired:
            bucket.close()
        self._buckets.clear()
        self._retired.clear()
        for view in (self._u64, self._i64, self._f64, self._view):
            view.release()
        self._lock.close()


class KeySlot:
    """One key's slot, as one worker uses it (built again when the key changes)."""

    __slots__ = (
        "_base", "_f64", "_i64", "_lock", "_tag", "_u64", "key", "parallel", "rpm", "tpm",
    )  # fmt: skip

    def __init__(
        self,
        slots: KeySlots,
        key: TenantKey,
        base: int,
        rpm: TokenBucket,
        tpm: TokenBucket,
        parallel: TokenBucket,
    ) -> None:
        self.key = key
        self.rpm = rpm
        self.tpm = tpm
        self.parallel = parallel
        self._base = base
        self._tag = key.tag
        self._u64 = slots._u64
        self._i64 = slots._i64
        self._f64 = slots._f64
        self._lock = slots._lock

    # -- requests in flight --------------------------------------------------------------

    def _mine(self) -> bool:
        """Whether the slot still holds this key (under the lock): a revoked key's slot
        may be laid out for a new key while the old one's calls are still settling, and
        those must not count against the new one."""
        return self._u64[self._base + _OWNER] == self._tag

    def enter(self) -> bool:
        """Take a place among the key's requests in flight (False: none is free). One
        compare-and-swap of the compiled twin: no lock, nothing a killed worker holds."""
        return self.parallel.try_acquire(1.0) == 0.0 or not self._mine()

    def leave(self) -> None:
        if self._mine():
            self.parallel.settle(-1.0)

    def in_flight(self) -> int:
        if self.key.max_parallel is None:
            return 0
        return max(round(self.parallel.burst - self.parallel.available()), 0)

    # -- budget --------------------------------------------------------------------------

    def reserve(self, budget: float, usd: float, now: float) -> float | None:
        """Reserve ``usd`` if anything is left of ``budget`` in the period ``now`` falls in
        (so the node overshoots by at most one call's estimate); None when reserved, else
        what was spent and reserved."""
        base = self._base
        with self._lock:
            if not self._mine():
                return None
            self._roll(now)
            used = self._f64[base + _SPENT] + self._f64[base + _RESERVED]
            if used >= budget:
                return used
            self._f64[base + _RESERVED] += usd
            return None

    def settle(self, reserved: float, cost: float, now: float) -> None:
        """A call that reserved ``reserved`` cost ``cost`` (0 when it failed unanswered)."""
        base = self._base
        with self._lock:
            if not self._mine():
                return
            self._roll(now)
            left = self._f64[base + _RESERVED] - reserved
            self._f64[base + _RESERVED] = left if left > 1e-12 else 0.0
            self._f64[base + _SPENT] += cost

    def spent(self, now: float) -> float:
        """Spent in the budget period ``now`` falls in, node-wide (flushed or not)."""
        base = self._base
        with self._lock:
            self._roll(now)
            return self._f64[base + _SPENT]

    def reserved(self) -> float:
        return self._f64[self._base + _RESERVED]

    def _roll(self, now: float) -> None:
        """A new budget period: start its count (from the store's, for a period that
        began before this slot knew it: a changed ``budget_period``). Under the lock."""
        key = self.key
        period = period_index(key.budget_period, now)
        base = self._base
        if self._i64[base + _PERIOD] != period:
            self._i64[base + _PERIOD] = period
            self._f64[base + _SPENT] = key.spend.in_period(period_label(key.budget_period, now))


def retry_after(wait_s: float) -> float:
    """A bucket's wait as a ``Retry-After`` (never infinite: a limit below one request's
    need still frees up within the minute)."""
    return 60.0 if math.isinf(wait_s) else wait_s
