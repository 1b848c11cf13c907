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

{layout}

The buckets are the providers' (``hotpath.TokenBucket``, either twin: the compiled one
takes and gives back with one compare-and-swap, no lock), requests in flight included: a
request takes one of ``max_parallel`` tokens and gives it back when it ends (the bucket
refills so slowly that only the places of a worker killed mid-request come back by it;
a restart frees them at once).

The budget is two words (``used``: spent in the period plus the estimates in flight;
``reserved``: those estimates), each tagged with the slot's epoch, which every new owner
moves on (``hotpath.BudgetWords``, either twin).  With the compiled twin a call's
reservation and its settlement are each one compare-and-swap, no lock (under the
region's ``flock``, two workers on one key queued behind each other twice per call, and
behind a holder the scheduler had preempted at worst), and a revoked key's late
settlement finds another epoch and changes nothing.  The pure twin changes them under the
region's lock (``RegionLock``: a ``flock`` the kernel drops when its holder dies).  A new
budget period and a new owner (both rare) change them under the lock, the compiled twin
still by compare-and-swap, so no reservation in flight is lost.

Several nodes (REDIS_URL, ``leased`` in the head): the node agent leases each key's
``rpm`` and ``tpm`` from a global bucket in Redis (``cluster/key_leases.py``) into the
slot's buckets, which then barely refill by themselves: what they hold was granted.  A
request that finds its key's bucket short while the slot's ``mode`` says leased adds what
it needs to the slot's ``*_waiting`` words and waits (``KeySlot.lease``) for the agent's
next lease calls, which ask Redis for it: served when the tokens come, refused (429) when
a lease call that saw it came back without them.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Final

from aigateway.hotpath import ATOMIC_BUDGET, BudgetWords, TokenBucket
from aigateway.hotpath.regions import BUCKET, RegionLock
from aigateway.keys.model import TenantKey, period_bounds, period_index, period_label
from aigateway.shm_layout import Field, Layout

__all__ = ("HEAD", "SLOT", "KeySlot", "KeySlots", "leased_spec", "rate_spec", "region_size")

HEAD: Final = Layout(
    "key slots",
    (
        Field("generation", "u64", doc="moved by every change of the key set"),
        Field("capacity", "u32", doc="slots that follow"),
        Field("leased", "u32", doc="1: the node agent leases the rates from Redis"),
        Field("lease_rounds", "u64", doc="the agent's lease calls answered (or given up)"),
    ),
    size=64,
)
SLOT: Final = Layout(
    "key slot",
    (
        Field("owner", "u64", doc="tag of the key it holds (0: none)"),
        Field("period", "i64", doc="the budget period spent_usd counts"),
        Field("used", "u64", doc="epoch << 48 | USD spent in it + reserved (BudgetWords)"),
        Field("reserved", "u64", doc="epoch << 48 | USD of the calls in flight"),
        Field("rpm", BUCKET, doc="requests a minute"),
        Field("tpm", BUCKET, doc="tokens a minute"),
        Field("parallel", BUCKET, doc="requests in flight: a place is a token"),
        Field("rpm_waiting", "f64", doc="requests waiting for the agent's next lease"),
        Field("tpm_waiting", "f64", doc="tokens waiting for the agent's next lease"),
        Field("mode", "u32", doc="the rates' lease: 0 none, 1 leased, 2 alone, 3 closed"),
    ),
    size=256,
)
# Word indices within a slot (each slot starts on an 8-byte boundary).
_WORDS: Final = SLOT.size // 8
_OWNER = SLOT.index("owner")
_PERIOD = SLOT.index("period")
_USED_AT: Final = SLOT.offset_of("used")  # and ``reserved`` right after it
_BUCKETS_AT: Final = tuple(SLOT.offset_of(name) for name in ("rpm", "tpm", "parallel"))
_GENERATION = HEAD.index("generation")
_LEASE_ROUNDS = HEAD.index("lease_rounds")
_UNUSED_RATE: Final = (1.0, 1.0)  # a bucket of a key without that limit (never used)
_YEAR_S: Final = 365 * 86400.0
_RPM_WAITING = SLOT.index("rpm_waiting")
_TPM_WAITING = SLOT.index("tpm_waiting")
_MODE_WORD = SLOT.offset_of("mode") // 4
LEASED_RATE: Final = 1e-3  # a leased bucket's own refill (the agent pays for it)
#: The slot's ``mode``: as the lease board's (``cluster.lease_board``).
LOCAL, LEASED, ALONE, CLOSED = 0, 1, 2, 3
WAIT_POLL_S: Final = 0.02  # a waiting request looks at its bucket this often
WAIT_MOST_S: Final = 3.0  # and gives up after this long, whatever the agent does


def parallel_spec(most: int | None) -> tuple[float, float]:
    """(rate a second, burst) of a ``max_parallel`` bucket: ``most`` places, each taken
    by a request and given back when it ends; it refills so slowly (all of it in a year)
    that no request sees it, only the places of a worker killed mid-request come back."""
    if most is None:
        return _UNUSED_RATE
    return most / _YEAR_S, float(most)


def region_size(capacity: int) -> int:
    return HEAD.size + capacity * SLOT.size


def rate_spec(per_minute: int | None) -> tuple[float, float]:
    """(rate a second, burst) of a per-minute limit: a minute's worth may come at once."""
    if per_minute is None:
        return _UNUSED_RATE
    return per_minute / 60.0, float(per_minute)


def leased_spec(per_minute: int | None) -> tuple[float, float]:
    """(rate, burst) of a leased per-minute limit: a minute's worth may be held, and it
    refills at next to nothing (the agent deposits what Redis grants; it sets the same)."""
    if per_minute is None:
        return _UNUSED_RATE
    burst = float(per_minute)
    return max(LEASED_RATE, burst / 1e8), burst


class KeySlots:
    """The region: its generation, and the slot of each key."""

    def __init__(self, buffer: memoryview, lock_path: str | None) -> None:
        self._view = buffer.cast("B")
        self._u64 = self._view.cast("Q")
        self._i64 = self._view.cast("q")
        self._f64 = self._view.cast("d")
        self._u32 = self._view.cast("I")
        self._lock = RegionLock(lock_path)
        self._budget = BudgetWords(self._view)
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

    def words(self) -> tuple[memoryview, int]:
        """The region's words and the generation's index in them, for a reader on every
        request (released with the region: no view of its own to let go of)."""
        return self._u64, _GENERATION

    def bump(self) -> None:
        """Tell every worker the key set changed."""
        with self._lock:
            self._u64[_GENERATION] += 1

    @property
    def leased(self) -> bool:
        """Whether the node agent leases the keys' rates from Redis (REDIS_URL)."""
        return bool(HEAD.read(self._view, "leased"))

    def lease_from_cluster(self) -> None:
        """The node agent leases the rates: set once, before the workers start."""
        HEAD.write(self._view, "leased", 1)

    def lease_rounds(self) -> int:
        return int(self._u64[_LEASE_ROUNDS])

    def lease_round_done(self) -> None:
        """The agent's lease call came back (or failed): waiting requests look again."""
        self._u64[_LEASE_ROUNDS] += 1  # the agent is the only writer

    def waiting(self, slot: int) -> tuple[float, float]:
        """(requests, tokens) waiting for a lease in ``slot``."""
        base = (HEAD.size // 8) + slot * _WORDS
        return self._f64[base + _RPM_WAITING], self._f64[base + _TPM_WAITING]

    def set_mode(self, slot: int, mode: int) -> None:
        """The agent says how the slot's rates are limited now (LEASED, ALONE, CLOSED)."""
        self._u32[(HEAD.size + slot * SLOT.size) // 4 + _MODE_WORD] = mode

    def add_spent(self, key: TenantKey, usd: float, now: float) -> bool:
        """Add what other nodes spent (the node agent, from Redis's totals) to the key's
        budget period, if its slot holds it and counts that period (False: it does not)."""
        if not 0 <= key.slot < self.capacity:
            return False
        base = (HEAD.size // 8) + key.slot * _WORDS
        at = HEAD.size + key.slot * SLOT.size + _USED_AT
        with self._lock:
            if self._u64[base + _OWNER] != key.tag:
                return False
            if self._i64[base + _PERIOD] != period_index(key.budget_period, now):
                return False
            return self._budget.add(at, self._budget.read(at)[0], usd)

    def bind(self, key: TenantKey, now: float | None = None) -> KeySlot:
        """The slot of ``key``, laid out for it when it held another, its rates set."""
        if not 0 <= key.slot < self.capacity:
            raise ValueError(f"key {key.id} has slot {key.slot}, past the {self.capacity} slots")
        base = (HEAD.size // 8) + key.slot * _WORDS
        at = HEAD.size + key.slot * SLOT.size
        when = time.time() if now is None else now
        views = [self._view[at + offset : at + offset + BUCKET.size] for offset in _BUCKETS_AT]
        leased = self.leased
        rates = leased_spec if leased else rate_spec
        specs = (rates(key.rpm), rates(key.tpm), parallel_spec(key.max_parallel))
        budget_at = at + _USED_AT
        with self._lock:
            made = self._buckets.get((key.slot, key.tag))
            epoch = self._budget.read(budget_at)[0]
            if self._u64[base + _OWNER] != key.tag:
                self._u64[base + _OWNER] = 0  # incomplete until the owner is written last
                self._i64[base + _PERIOD] = period_index(key.budget_period, when)
                # The next epoch: the previous owner's calls still settling leave it be.
                epoch = (epoch + 1) & 0xFFFF
                self._budget.reset(
                    budget_at, epoch, key.spend.in_period(period_label(key.budget_period, when))
                )
                self._f64[base + _RPM_WAITING] = self._f64[base + _TPM_WAITING] = 0.0
                self._u32[(at // 4) + _MODE_WORD] = LEASED if leased else LOCAL
                fresh = [TokenBucket(*spec, view) for spec, view in zip(specs, views, strict=True)]
                if leased:  # nothing of a leased rate is held before the agent leases it
                    for bucket in fresh[:2]:
                        bucket.try_acquire(bucket.available())
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
                # Leased rates are the agent's to set (it follows a changed limit).
                for bucket, spec in zip(
                    made[2:] if leased else made, specs[2:] if leased else specs, strict=True
                ):
                    if (bucket.rate_per_s, bucket.burst) != spec:
                        bucket.set_rate(*spec)
        return KeySlot(self, key, base, epoch, *made)

    def close(self) -> None:
        """Let go of the region (its buckets first), so the segment can be unmapped."""
        for pair in self._buckets.values():
            self._retired.extend(pair)
        for bucket in self._retired:
            bucket.close()
        self._buckets.clear()
        self._retired.clear()
        self._budget.close()
        for view in (self._u64, self._i64, self._f64, self._u32, self._view):
            view.release()
        self._lock.close()


class KeySlot:
    """One key's slot, as one worker uses it (built again when the key changes)."""

    __slots__ = (
        "_at", "_base", "_budget", "_epoch", "_f64", "_i64", "_lock", "_mode", "_period_from",
        "_period_until", "_slots", "_tag", "_u32", "_u64", "key", "parallel", "rpm", "tpm",
    )  # fmt: skip

    def __init__(
        self,
        slots: KeySlots,
        key: TenantKey,
        base: int,
        epoch: int,
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
        self._u32 = slots._u32
        self._slots = slots
        self._budget = slots._budget
        self._at = HEAD.size + key.slot * SLOT.size + _USED_AT
        self._epoch = epoch  # of the budget's words, while the slot holds this key
        self._mode = (HEAD.size + key.slot * SLOT.size) // 4 + _MODE_WORD
        # The budget period the slot was last seen to count, [from, until): within it no
        # roll is due (see ``_roll``).
        self._period_from = self._period_until = 0.0

    # -- rates leased from the cluster ---------------------------------------------------

    @property
    def mode(self) -> int:
        """How the key's rates are limited: LOCAL (one node), or as the agent last set
        them: LEASED, ALONE (Redis gone: a part of the limit), CLOSED (Redis gone: none)."""
        return int(self._u32[self._mode])

    async def lease(self, tpm: bool, amount: float) -> float:
        """Wait for the agent to lease ``amount`` of the key's requests (``tpm``: tokens)
        a minute from the cluster: 0.0 once taken from the slot's bucket, else the
        bucket's wait (math.inf: a lease call that saw this request brought too little)."""
        bucket = self.tpm if tpm else self.rpm
        word = self._base + (_TPM_WAITING if tpm else _RPM_WAITING)
        slots = self._slots
        with self._lock:
            self._f64[word] += amount
        try:
            # The call under way may have started before this request asked; the one
            # after it has seen it.
            until = slots.lease_rounds() + 2
            deadline = time.monotonic() + WAIT_MOST_S
            while True:
                await asyncio.sleep(WAIT_POLL_S)
                wait = bucket.try_acquire(amount)
                if wait == 0.0 or self.mode != LEASED:
                    return wait
                if slots.lease_rounds() >= until or time.monotonic() >= deadline:
                    return math.inf
        finally:
            with self._lock:
                left = self._f64[word] - amount
                self._f64[word] = left if left > 1e-9 else 0.0

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
        (so the node overshoots by at most one call's estimate); None when reserved (or
        the slot is another key's now), else what was spent and reserved."""
        if not self._period_from <= now < self._period_until:
            with self._lock:
                self._roll(now)
        if ATOMIC_BUDGET:  # one compare-and-swap: no lock, once per provider call
            used = self._budget.reserve(self._at, self._epoch, budget, usd)
        else:
            with self._lock:
                used = self._budget.reserve(self._at, self._epoch, budget, usd)
        return None if used < 0.0 else used

    def settle(self, reserved: float, cost: float, now: float) -> None:
        """A call that reserved ``reserved`` cost ``cost`` (0 when it failed unanswered)."""
        if not self._period_from <= now < self._period_until:
            with self._lock:
                self._roll(now)
        if ATOMIC_BUDGET:
            self._budget.settle(self._at, self._epoch, reserved, cost)
        else:
            with self._lock:
                self._budget.settle(self._at, self._epoch, reserved, cost)

    def spent(self, now: float) -> float:
        """Spent in the budget period ``now`` falls in, node-wide (flushed or not)."""
        with self._lock:
            self._roll(now)
            _, used, reserved = self._budget.read(self._at)
        spent = used - reserved
        return spent if spent > 1e-9 else 0.0

    def reserved(self) -> float:
        return self._budget.read(self._at)[2]

    def _roll(self, now: float) -> None:
        """A new budget period: start its count (from the store's, for a period that
        began before this slot knew it: a changed ``budget_period``), the calls in flight
        still counted. Under the lock.

        Within the period this ``KeySlot`` last saw the slot count there is nothing to
        do: the slot's period word moves only forward (a roll by any worker, to the
        period the clock is in) or with a new owner (which ``_mine`` tells), so the
        period's bounds are computed once per period, not on every call."""
        if self._period_from <= now < self._period_until or not self._mine():
            return
        key = self.key
        period = period_index(key.budget_period, now)
        base = self._base
        if self._i64[base + _PERIOD] != period:
            self._i64[base + _PERIOD] = period
            spent = key.spend.in_period(period_label(key.budget_period, now))
            self._budget.rebase(self._at, self._epoch, spent)
        self._period_from, self._period_until = period_bounds(key.budget_period, now)


def retry_after(wait_s: float) -> float:
    """A bucket's wait as a ``Retry-After`` (never infinite: a limit below one request's
    need still frees up within the minute)."""
    return 60.0 if math.isinf(wait_s) else wait_s


__doc__ = __doc__.format(layout=HEAD.describe("    ") + "\n\n" + SLOT.describe("    "))
