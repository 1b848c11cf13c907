"""Admission control: node-wide provider rate limits, priority queueing, load shedding.

Every provider call first takes a token from the provider's bucket, a
``hotpath.TokenBucket`` in the node's shared memory, so a rate holds for the node
whatever the worker count. When no token is there, the request waits in this worker's
``hotpath.PriorityQueue``: most urgent first, first in first out within a priority.

Node-wide priority comes from the shared bucket: a request of priority *p* may only take
a token if it leaves ``reserve(p)`` tokens behind (critical 0, high 10%, normal 25%, low
50% of the burst, always below the burst minus one token), so under saturation the last
tokens go to the more urgent requests of every worker.

Never hanging: at most ``QUEUE_SIZE`` requests wait on the node; past that a request is
refused at once with 429 and a ``Retry-After`` estimated from the queue and the rate,
unless it can displace a queued request of lower priority in this worker.

A fair start: a request waits here (for a pause or a token) only while the provider call
keeps at least ``1 - WAIT_SHARE`` (half) of the time its deadline left it on arrival,
its *latest start*. Otherwise the gateway's own queue would eat the deadline and the call
would time out, blamed on the provider (its circuit) although it never had a chance.
So a request is refused at once, without reaching the provider, as the provider's side
(``Fault.RATE_LIMITED``: the next target of its fallback chain is tried, the provider's
health is untouched):

* while the provider is paused, when it has a next target (``fallback``) or the pause
  ends after its latest start: 429 with a ``Retry-After`` of the pause left;
* when its estimated wait for a token ends after its latest start: 504 ``queue_timeout``.

A waiting request is let go the same way when a new pause outlasts its latest start, or
when its latest start comes while it still waits.

A provider's 429 pauses it for the node for the time it asked (``retry-after``, else one
second, bounded by the pipeline to PROVIDER_PAUSE_MAX_SEC) and halves its rate, down to a
tenth of the configured one; each success after a second of calm raises the rate by a
tenth of the configured rate until it is back.

A provider with a tokens-per-minute limit (``<PROVIDER>_TPM``, ``core.token_budget``)
has a second bucket: a request also reserves its estimated tokens there, in the same
turn as its token of the rate (both, or neither), and waits for them by the same rules
(its place in the queue, the fair start, 504 ``queue_timeout``); the priority reserves
hold there too (of its burst, never more than leaves room for the request). The pipeline
settles the reservation after the call.

With several nodes (``REDIS_URL``) the node agent sets each bucket's rate (the node's
lease of the cluster-wide limit, ``cluster.leases``): the gates leave the rate alone
(``adaptive`` off; a 429 still pauses), and while Redis is gone and the limits fail
closed (``closed``), a request that finds no token is refused with 503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aigateway.core.token_budget import (
    NO_RESERVATION,
    Estimate,
    Reservation,
    token_bucket_spec,
    too_large,
)
from aigateway.errors import (
    Fault,
    GatewayError,
    GatewayTimeout,
    ProviderUnavailable,
    RateLimited,
)
from aigateway.hotpath import PriorityQueue, SharedStats, TokenBucket
from aigateway.shm import provider_bucket
from aigateway.stats.registry import ADMISSION_OUTCOMES, slot_table, stats_schema

if TYPE_CHECKING:
    from aigateway.config import Settings

PRIORITIES = ("critical", "high", "normal", "low")
PRIORITY_RANK = {name: rank for rank, name in enumerate(PRIORITIES)}
DEFAULT_RESERVES = {"critical": 0.0, "high": 0.1, "normal": 0.25, "low": 0.5}
MAX_POLL_S = 0.05
MIN_RATE_FRACTION = 0.1


OUTCOMES = ADMISSION_OUTCOMES
PAUSE_TICKS_PER_S = 1000.0
MAX_PAUSE_S = 3600.0  # the pause clock's capacity: PROVIDER_PAUSE_MAX_SEC is at most this
# The most of a request's remaining time it may spend waiting here: the call keeps the rest.
WAIT_SHARE = 0.5


def pause_bucket_name(provider: str) -> str:
    return f"pause:{provider}"


def pause_bucket_spec() -> tuple[float, float]:
    """(rate, burst) of a pause clock: a bucket that is full unless a pause drained it."""
    return PAUSE_TICKS_PER_S, PAUSE_TICKS_PER_S * MAX_PAUSE_S


class NodeCounters:
    """Node-wide queue depths and admission outcomes in the node's shared stats (every
    worker adds to its own slot; reads sum them), or in private stats when none are given.

    The slots (``queue_depth`` and ``admission`` of the metric registry) are resolved to
    indices here, once; a provider the stats were not laid out for is not counted."""

    def __init__(self, stats: SharedStats | None, providers: Sequence[str]) -> None:
        self._stats = stats if stats is not None else SharedStats(stats_schema(providers))
        schema = self._stats.schema
        self._depth = slot_table(schema, "queue_depth", providers)
        self._outcomes = slot_table(schema, "admission", providers)
        self._depth_names = {key: schema.gauges[i] for key, i in self._depth.items()}
        budget = {
            name: slot_table(schema, f"token_budget_{name}", providers)
            for name in ("reserved", "used", "waiting", "waits")
        }
        self._reserved, self._used = budget["reserved"], budget["used"]
        self._waiting_tokens, self._token_waits = budget["waiting"], budget["waits"]
        self._waiting_names = {k[0]: schema.gauges[i] for k, i in self._waiting_tokens.items()}
        self._reserved_names = {k[0]: schema.counters[i] for k, i in self._reserved.items()}
        self._outcome_names = {key: schema.counters[i] for key, i in self._outcomes.items()}

    def queued(self, provider: str, priority: str, n: int, tokens: int = 0) -> None:
        index = self._depth.get((provider, priority))
        if index is not None:
            self._stats.gauge_add(index, n)
        if tokens:
            index = self._waiting_tokens.get((provider,))
            if index is not None:
                self._stats.gauge_add(index, n * tokens)

    def tokens_reserved(self, provider: str, tokens: int) -> None:
        index = self._reserved.get((provider,))
        if index is not None:
            self._stats.incr(index, tokens)

    def tokens_used(self, provider: str, tokens: int) -> None:
        index = self._used.get((provider,))
        if index is not None and tokens > 0:
            self._stats.incr(index, tokens)

    def token_wait(self, provider: str) -> None:
        index = self._token_waits.get((provider,))
        if index is not None:
            self._stats.incr(index)

    def waiting_tokens(self, provider: str) -> int:
        """Tokens the requests waiting for ``provider`` on the node reserve."""
        return self.token_demand(provider)[1]

    def token_demand(self, provider: str) -> tuple[int, int]:
        """(tokens reserved in total, tokens waited for now) of ``provider`` on the node."""
        snapshot = self._stats.snapshot()
        reserved = self._reserved_names.get(provider)
        waiting = self._waiting_names.get(provider)
        return (
            snapshot.counters[reserved] if reserved is not None else 0,
            snapshot.gauges[waiting] if waiting is not None else 0,
        )

    def count(self, provider: str, priority: str, outcome: str) -> None:
        index = self._outcomes.get((provider, priority, outcome))
        if index is not None:
            self._stats.incr(index)

    def depth(self, provider: str | None = None) -> int:
        """Requests waiting on the node: for ``provider``, or for all of them."""
        gauges = self._stats.snapshot().gauges
        return sum(
            gauges[name]
            for (name_of, _), name in self._depth_names.items()
            if provider is None or name_of == provider
        )

    def report(self, provider: str) -> dict[str, dict[str, int]]:
        """``depth`` and each outcome of ``provider``, by priority."""
        snapshot = self._stats.snapshot()
        depth = self._depth_names.items()
        row = {"depth": {q: snapshot.gauges[name] for (p, q), name in depth if p == provider}}
        for outcome in OUTCOMES:
            row[outcome] = {
                q: snapshot.counters[name]
                for (p, q, o), name in self._outcome_names.items()
                if p == provider and o == outcome
            }
        return row


class PauseClock:
    """A provider's node-wide pause, kept in a shared token bucket so every worker sees it.

    The bucket is full when the provider is not paused; pausing for *s* seconds drains
    ``s * PAUSE_TICKS_PER_S`` tokens, which the bucket refills in exactly *s* seconds.
    """

    def __init__(self, bucket: TokenBucket) -> None:
        self._bucket = bucket

    def left_s(self) -> float:
        return max(self._bucket.burst - self._bucket.available(), 0.0) / PAUSE_TICKS_PER_S

    def pause(self, seconds: float) -> None:
        more = min(seconds, MAX_PAUSE_S) - self.left_s()
        if more > 0:
            self._bucket.try_acquire(more * PAUSE_TICKS_PER_S)


@dataclass(eq=False)
class _Waiter:
    priority: str
    future: asyncio.Future[None]
    latest_start: float  # on the event loop's clock: past it, the call's budget is unfair
    fallback: bool  # another target can take it: a pause is not worth waiting out
    tokens: int = 0  # the tokens it reserves of the provider's TPM (0: none)
    since: float = field(default_factory=time.monotonic)
    handle: int = -1


class ProviderGate:
    """One provider's bucket, pause clock and this worker's queue."""

    def __init__(
        self,
        name: str,
        bucket: TokenBucket,
        pause_clock: PauseClock,
        configured_rate: float,
        admission: Admission,
        tokens: TokenBucket | None = None,
    ) -> None:
        self.name = name
        self.bucket = bucket
        self.pause_clock = pause_clock
        self.configured_rate = configured_rate
        self._admission = admission
        self.tokens = tokens  # the TPM bucket (in every node's layout, used while tpm > 0)
        self.tpm = 0.0  # the live <PROVIDER>_TPM: 0, no token limit
        counters = admission.counters
        self._count_used: Callable[[int], None] = lambda n: counters.tokens_used(name, n)
        self._queue = PriorityQueue()
        self._waiting: dict[int, _Waiter] = {}
        self._pump: asyncio.Task[None] | None = None
        self._nudge: asyncio.Future[None] | None = None  # wakes a napping pump early
        self._last_change = 0.0
        self.adaptive = True  # off when the node agent owns the bucket's rate (leases)

    def reserve(self, priority: str) -> float:
        burst = self.bucket.burst
        return min(self._admission.reserves[priority] * burst, max(burst - 1.0, 0.0))

    async def admit(
        self,
        priority: str,
        deadline: float,
        fallback: bool = False,
        tokens: Estimate | None = None,
    ) -> Reservation:
        """Wait for this provider's turn; ``fallback``: another target can take the request
        if this one cannot now (paused) or not in time to leave the call a fair share of
        what is left until ``deadline``; ``tokens``: the request's estimate, reserved of the
        provider's TPM (the answer: the reservation to settle after the call)."""
        loop = asyncio.get_running_loop()
        rank = PRIORITY_RANK[priority]
        need = self._need(priority, tokens) if tokens is not None and self.tpm > 0.0 else 0
        # Straight on when nobody here would go first: an empty queue, or one whose most
        # urgent waiter is less urgent than this request.
        ahead = bool(self._queue) and self._queue.peek_priority() <= rank
        if not ahead and not self.paused() and self._take(priority, need) == 0.0:
            self._admission.count(self.name, priority, "admitted")
            return self._reserved(need)
        if need and self._short_of_tokens(priority, need):
            self._admission.counters.token_wait(self.name)
        if self._admission.closed(self.name):
            self._admission.count(self.name, priority, "shed")
            raise self._closed_error()
        now = loop.time()
        latest_start = now + WAIT_SHARE * max(deadline - now, 0.0)
        pause_s = self.pause_clock.left_s()
        if pause_s > 0.0 and (fallback or now + pause_s > latest_start):
            self._admission.count(self.name, priority, "timed_out")
            raise self._paused_error(pause_s)
        wait = self._estimated_wait(need)
        if now + wait > latest_start:
            self._admission.count(self.name, priority, "timed_out")
            raise self._cannot_start(wait)
        self._make_room(priority, wait)
        waiter = _Waiter(priority, loop.create_future(), latest_start, fallback, need)
        new_head = not self._queue or rank < self._queue.peek_priority()
        waiter.handle = self._queue.push(rank, waiter)
        self._waiting[waiter.handle] = waiter
        self._admission.queued(self.name, priority, +1, need)
        self._ensure_pump()
        if new_head and self._nudge is not None and not self._nudge.done():
            # The pump naps for the old head's token (a low one waits for more tokens
            # than a critical one): the new head must not wait out that nap.
            self._nudge.set_result(None)
        try:
            async with asyncio.timeout_at(latest_start):
                await waiter.future
        except TimeoutError:  # still no token, and the call would now start too late
            self._admission.count(self.name, priority, "timed_out")
            raise self._cannot_start(self._estimated_wait(need)) from None
        finally:
            if self._waiting.pop(waiter.handle, None) is not None:
                self._queue.cancel(waiter.handle)  # the client left, or the deadline passed
                self._admission.queued(self.name, priority, -1, need)
        self._admission.count(self.name, priority, "admitted")
        return self._reserved(need)

    def paused(self) -> bool:
        return self.pause_clock.left_s() > 0.0

    def rate_limited(self, retry_after_s: float | None) -> None:
        """The provider said 429: pause it for the node and slow down."""
        self.pause_clock.pause(retry_after_s if retry_after_s is not None else 1.0)
        if not self.adaptive:
            return
        now = time.monotonic()
        floor = self.configured_rate * MIN_RATE_FRACTION
        rate = max(self.bucket.rate_per_s / 2.0, floor)
        if rate < self.bucket.rate_per_s:
            self.bucket.set_rate(rate, self.bucket.burst)
            self._last_change = now

    def succeeded(self) -> None:
        if not self.adaptive:
            return
        rate = self.bucket.rate_per_s
        now = time.monotonic()
        if rate < self.configured_rate and now - self._last_change >= 1.0:
            step = self.configured_rate * MIN_RATE_FRACTION
            self.bucket.set_rate(min(rate + step, self.configured_rate), self.bucket.burst)
            self._last_change = now

    def depth(self) -> int:
        return len(self._waiting)

    def oldest_wait_s(self) -> float:
        if not self._waiting:
            return 0.0
        return time.monotonic() - min(w.since for w in self._waiting.values())

    # -- internals ----------------------------------------------------------------------

    def _take(self, priority: str, need: int = 0) -> float:
        """A token of the rate and ``need`` tokens of the TPM, both or neither: 0.0, or the
        seconds until they may be there."""
        wait = self.bucket.try_acquire(1.0, reserve=self.reserve(priority))
        if wait > 0.0 or not need:
            return wait
        tokens = self.tokens
        assert tokens is not None
        # A bucket smaller than the request (the node's part while Redis is gone) is taken
        # whole and the rest owed: the request goes when it is full.
        take = min(float(need), tokens.burst)
        wait = tokens.try_acquire(take, reserve=self._token_reserve(priority, take))
        if wait > 0.0:
            self.bucket.settle(-1.0)  # the rate's token back: neither
            return wait
        if take < need:
            tokens.settle(need - take)
        return 0.0

    def _token_reserve(self, priority: str, take: float) -> float:
        assert self.tokens is not None
        if not self.adaptive:  # a leased bucket holds what the node's requests asked for
            return 0.0
        burst = self.tokens.burst
        return min(self._admission.reserves[priority] * burst, max(burst - take, 0.0))

    def _need(self, priority: str, tokens: Estimate) -> int:
        """The tokens to reserve of ``tokens``; refused at once if they never fit."""
        if self.tokens is None:
            return 0
        _, burst = token_bucket_spec(self.tpm)
        if tokens.prompt + (tokens.output if tokens.explicit else 0) > burst:
            self._admission.count(self.name, priority, "shed")
            raise too_large(self.name, tokens, self.tpm, burst)
        return tokens.need(burst)

    def _short_of_tokens(self, priority: str, need: int) -> bool:
        tokens = self.tokens
        assert tokens is not None
        take = min(float(need), tokens.burst)
        return tokens.available() < take + self._token_reserve(priority, take)

    def _reserved(self, need: int) -> Reservation:
        if not need:
            return NO_RESERVATION
        self._admission.counters.tokens_reserved(self.name, need)
        return Reservation(self.tokens, need, self._count_used)

    def _estimated_wait(self, need: int = 0) -> float:
        ahead = self._admission.node_depth(self.name) + 1
        refill = max(ahead - self.bucket.available(), 0.0) / max(self.bucket.rate_per_s, 1e-9)
        tokens = self.tokens
        if need and tokens is not None:
            ahead_tokens = self._admission.counters.waiting_tokens(self.name)
            short = ahead_tokens + need - tokens.available()
            rate = tokens.rate_per_s
            if not self.adaptive:  # leased: the node cannot see the cluster's bucket, so
                # it counts on it at best, full (its burst), then the limit
                short -= token_bucket_spec(self.tpm)[1]
                rate = self.tpm / 60.0
            refill = max(refill, max(short, 0.0) / max(rate, 1e-9))
        return self.pause_clock.left_s() + refill

    def _make_room(self, priority: str, wait: float) -> None:
        if self._admission.node_depth() < self._admission.queue_size:
            return
        victim = max(
            (
                w
                for w in self._waiting.values()
                if PRIORITY_RANK[w.priority] > PRIORITY_RANK[priority]
            ),
            key=lambda w: (PRIORITY_RANK[w.priority], w.since),
            default=None,
        )
        if victim is None:
            self._admission.count(self.name, priority, "shed")
            # Raised unnamed: a local holding it would hold, through its traceback, this
            # frame and the request's (a cycle only the collector frees, per request).
            raise self._queue_full(wait)
        # A more urgent request displaces the least urgent, newest waiter of this worker.
        self._waiting.pop(victim.handle)
        self._queue.cancel(victim.handle)
        self._admission.queued(self.name, victim.priority, -1, victim.tokens)
        self._admission.count(self.name, victim.priority, "shed")
        if not victim.future.done():
            victim.future.set_exception(self._queue_full(wait))

    def _queue_full(self, wait: float) -> RateLimited:
        return RateLimited(
            f"the gateway's queue for {self.name} is full ({self._admission.queue_size} "
            "requests wait on this node); retry later",
            code="queue_full",
            retry_after_s=max(wait, 1.0),
        )

    def _cannot_start(self, wait: float) -> GatewayTimeout:
        """This provider cannot take the request in time for a fair call; the next target
        may."""
        return GatewayTimeout(
            f"{self.name} is at its rate limit: the request could not start in time to "
            f"leave the call half of its deadline (about {wait:.1f} s of queue)",
            code="queue_timeout",
            retry_after_s=wait,
            fault=Fault.RATE_LIMITED,
        )

    def _closed_error(self) -> ProviderUnavailable:
        """Redis is gone and the cluster's limits fail closed: no call until it is back
        (the provider's health is untouched, the next target may be tried)."""
        return ProviderUnavailable(
            f"{self.name}'s rate limit is shared through Redis, which is unavailable, and "
            "REDIS_LIMITS_ON_FAILURE=closed: provider calls are refused until it is back",
            code="limits_unavailable",
            retry_after_s=1.0,
            fault=Fault.RATE_LIMITED,
        )

    def _paused_error(self, pause_s: float) -> RateLimited:
        """A 429 paused this provider for longer than the request can fairly wait; the next
        target may take it, else the client retries after the pause."""
        return RateLimited(
            f"{self.name} is paused by its rate limit for another {pause_s:.1f} s; retry after it",
            retry_after_s=pause_s,
        )

    def _release_hopeless(self, pause_s: float) -> None:
        """Refuse now the waiters that have another target or whose latest start comes
        before the pause ends (a pause can begin or grow after they queued): they move on
        rather than wait it out."""
        until = asyncio.get_running_loop().time() + pause_s
        hopeless = [w for w in self._waiting.values() if w.fallback or w.latest_start < until]
        for waiter in hopeless:
            del self._waiting[waiter.handle]
            self._queue.cancel(waiter.handle)
            self._admission.queued(self.name, waiter.priority, -1, waiter.tokens)
            self._admission.count(self.name, waiter.priority, "timed_out")
            if not waiter.future.done():
                waiter.future.set_exception(self._paused_error(pause_s))

    def _release_all(self, error: GatewayError) -> None:
        for waiter in list(self._waiting.values()):
            del self._waiting[waiter.handle]
            self._queue.cancel(waiter.handle)
            self._admission.queued(self.name, waiter.priority, -1, waiter.tokens)
            self._admission.count(self.name, waiter.priority, "shed")
            if not waiter.future.done():
                waiter.future.set_exception(error)

    def _ensure_pump(self) -> None:
        if self._pump is None or self._pump.done():
            self._pump = asyncio.ensure_future(self._serve_queue())

    async def _serve_queue(self) -> None:
        """Hand tokens to waiters, most urgent first, as the shared bucket refills."""
        while self._queue:
            head: _Waiter = self._queue.peek()
            if head.handle not in self._waiting:  # cancelled, dropped lazily
                self._queue.pop()
                continue
            if self.paused():
                self._release_hopeless(self.pause_clock.left_s())
                await self._nap(min(max(self.pause_clock.left_s(), 0.001), MAX_POLL_S))
                continue
            wait = self._take(head.priority, head.tokens)
            if wait > 0.0:
                if self._admission.closed(self.name):
                    self._release_all(self._closed_error())
                    continue
                await self._nap(min(wait, MAX_POLL_S))
                continue
            self._queue.pop()
            del self._waiting[head.handle]
            self._admission.queued(self.name, head.priority, -1, head.tokens)
            if not head.future.done():
                head.future.set_result(None)

    async def _nap(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if a more urgent waiter arrives meanwhile."""
        nudge = self._nudge = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(seconds):
                await nudge
        except TimeoutError:
            pass
        finally:
            self._nudge = None


def _never(provider: str) -> bool:
    return False


class Admission:
    """The gates of every provider in this worker, and the node-wide numbers they share."""

    def __init__(
        self,
        buckets: Mapping[str, tuple[TokenBucket, TokenBucket]],
        rates: Mapping[str, float],
        queue_size: int,
        counters: NodeCounters | None = None,
        reserves: Mapping[str, float] | None = None,
        token_buckets: Mapping[str, TokenBucket] | None = None,
    ) -> None:
        """``buckets`` maps each provider to its rate bucket and its pause-clock bucket;
        ``token_buckets`` to its TPM bucket (used while its ``tpm`` is set)."""
        self.queue_size = queue_size
        self.reserves = dict(DEFAULT_RESERVES if reserves is None else reserves)
        self.counters = counters or NodeCounters(None, tuple(buckets))
        # Whether a provider's calls are refused now (the cluster's limits fail closed
        # while Redis is gone); asked only when a request finds no token at once.
        self.closed: Callable[[str], bool] = _never
        tokens = token_buckets or {}
        self.gates = {
            name: ProviderGate(name, rate, PauseClock(pause), rates[name], self, tokens.get(name))
            for name, (rate, pause) in buckets.items()
        }

    async def admit(
        self,
        provider: str,
        priority: str,
        deadline: float,
        fallback: bool = False,
        tokens: Estimate | None = None,
    ) -> Reservation:
        gate = self.gates.get(provider)
        if gate is None:
            return NO_RESERVATION
        return await gate.admit(priority, deadline, fallback, tokens)

    def token_limited(self, provider: str) -> bool:
        """Whether ``provider`` has a TPM now (its requests then bring an estimate)."""
        gate = self.gates.get(provider)
        return gate is not None and gate.tpm > 0.0 and gate.tokens is not None

    def gate(self, provider: str) -> ProviderGate | None:
        return self.gates.get(provider)

    # -- live settings (PUT /admin/config) ------------------------------------------------

    def apply_settings(self, old: Settings, new: Settings) -> None:
        """In every worker: queue size, priority reserves, the providers' configured rates
        (what a rate slowed by 429s climbs back to)."""
        self.queue_size = new.queue_size
        self.reserves = {**DEFAULT_RESERVES, **dict(new.priority_reserves)}
        rates = {p.name: p.rps for p in new.providers}
        tpms = {p.name: p.tpm for p in new.providers}
        for name, gate in self.gates.items():
            if name in rates:
                gate.configured_rate = rates[name]
                gate.tpm = tpms[name]

    def set_node_rates(self, old: Settings, new: Settings) -> None:
        """Once for the node (the buckets are shared): a provider whose rate changed gets
        its bucket moved to the new rate and burst."""
        before = {p.name: p for p in old.providers}
        for p in new.providers:
            gate = self.gates.get(p.name)
            was = before.get(p.name)
            if gate is not None and (was is None or was.rps != p.rps):
                spec = provider_bucket(p.name, p.rps)
                gate.bucket.set_rate(spec.rate_per_s, spec.burst)
            if gate is not None and gate.tokens is not None and (was is None or was.tpm != p.tpm):
                gate.tokens.set_rate(*token_bucket_spec(p.tpm))

    # -- node-wide numbers ----------------------------------------------------------------

    def queued(self, provider: str, priority: str, n: int, tokens: int = 0) -> None:
        self.counters.queued(provider, priority, n, tokens)

    def count(self, provider: str, priority: str, outcome: str) -> None:
        self.counters.count(provider, priority, outcome)

    def node_depth(self, provider: str | None = None) -> int:
        return self.counters.depth(provider)

    def report(self) -> dict[str, object]:
        providers = {}
        for name, gate in self.gates.items():
            row: dict[str, object] = {
                "rate_per_s": round(gate.bucket.rate_per_s, 3),
                "configured_rate_per_s": gate.configured_rate,
                "paused_for_s": round(gate.pause_clock.left_s(), 3),
                "tokens_per_minute": gate.tpm,
                "oldest_wait_s_this_worker": round(gate.oldest_wait_s(), 3),
                **self.counters.report(name),
            }
            if gate.tpm > 0.0 and gate.tokens is not None:
                row["token_budget_available"] = round(gate.tokens.available(), 1)
            providers[name] = row
        return {
            "queue_size": self.queue_size,
            "depth": self.counters.depth(),
            "reserves": self.reserves,
            "providers": providers,
        }
