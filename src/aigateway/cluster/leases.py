"""Provider limits for the whole cluster: each node leases slices of a global bucket.

A provider's ``<PROVIDER>_RPS`` holds for every node sharing the Redis, and no request
waits on Redis for it: requests take tokens from the node's own bucket in shared memory
(``admission``, unchanged), and the node agent keeps that bucket supplied. Every
``LEASE_S`` it runs one script (``LEASE_V2``) for all the node's providers, which on
Redis, atomically and by Redis's own clock:

* charges what the node's bucket produced beyond what was paid for (a late round);
* records what the node wants (a rate, from its demand) beside the other nodes' wants;
* grants tokens for the coming ``LEASE_S`` from the provider's global bucket (GCRA at
  the limit, with a burst of ``GLOBAL_BURST_S`` of it): what the node asks, at most its
  part of the limit in proportion to the wants when the nodes want more than the limit
  together, and at most what the global bucket holds.

The node asks for the tokens of the next ``LEASE_S`` and a little more (``SLACK_S``: a
round may come late; what is left counts in the next one), and sets its bucket's rate so
that it spends what it holds over that time, a partial grant lowering it, with a small burst
(``LOCAL_BURST_S`` of it). So every token a node's bucket makes was taken from the global
bucket first (a round later than the slack pays for the excess at once), and the
provider sees the limit, plus at most the global burst and the nodes' small bursts.

The demand of a node is read from the admission counters in shared memory: requests
admitted since the last round and requests waiting now; it asks for half as much again
(``HEADROOM``) so that a share can grow, and an idle node keeps a standing lease of a
tenth of its even share (``IDLE_SHARE``) so its first requests need not wait a round.

The limit is the node's live one (``PUT /admin/config``: the live-settings region), so a
change reaches the global bucket at the next round; the script rescales the bucket's
state to the new rate.

Redis gone (the agent's guard open): each provider's bucket goes to the limit divided by
the live nodes last seen (``REDIS_LIMITS_ON_FAILURE=open``), or refuses its calls
(``closed``, 503) until a lease succeeds again. The lease board (``lease_board``) shows
the workers which.

A provider's tokens per minute (``<PROVIDER>_TPM``, ``core.token_budget``) are leased the
same way, in the same script call: a second global bucket per provider
(``Keys.token_limit``) at ``TPM / 60`` tokens a second, whose burst is the TPM's own
(``BURST_MINUTES`` of it, so a request as large as the limit allows can be granted), and
the node's token bucket spends what was paid for. Its demand is in tokens: those reserved
since the last round and those waiting now; a node asks for at least the tokens its
waiting requests reserve (however large one is) less what its bucket already holds, and
what it is granted goes into its bucket at once (the bucket itself refills at next to
nothing): a waiting request needs its tokens whole, not spread over the round. The bucket
may hold a whole burst (what it was paid for, no more), so a request as large as the limit
allows is granted over a round or a few, never refused for the node's small share.

Tenant keys' ``rpm`` and ``tpm`` (``key_leases``) are token limits of the same kind, in the
same call: a key's minute may be spent on one node, what is granted goes in at once. Three
differences. A round carries only the keys with recent demand (spent since their last
round, requests waiting, less than their standing lease held), and between rounds
(``TICK_S``) a call goes for the keys that requests wait on: a request finding its key's
bucket short waits for it rather than being refused (``keys.slots``). A key's node asks
ahead only in whole requests, and an idle node's standing lease is a tenth of its even
share of the minute in whole requests (none under one). And a key's nodes tell the script
no want: a split in proportion would cut the last request of a minute into parts that no
node can serve; the global bucket serves whoever asks first.

Rolling deploys: the state of a provider's global bucket is a hash (``v``, ``rate``,
``tat`` and one ``w:<node>`` per node) whose ``v`` is the format's version. A later
script must read this format (and keep writing it while nodes of this version run);
this one, meeting a newer format, grants nothing and the node limits the provider alone,
as if Redis were gone, rather than misread it. ``LEASE_V2`` (each key's burst its own, for
the token limits) reads and writes the same format 1 as ``LEASE_V1`` did, so nodes of
both run side by side on a provider's rate; only nodes with ``LEASE_V2`` know the token
limits' keys.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aigateway.cluster.key_leases import KeyLeases, KeyLimit
from aigateway.cluster.lease_board import ALONE, CLOSED, LEASED, LeaseBoard
from aigateway.cluster.sync import Agent
from aigateway.core.token_budget import BURST_MINUTES, token_bucket_name
from aigateway.hotpath import TokenBucket

__all__ = (
    "GLOBAL_BURST_S",
    "LEASE_S",
    "LEASE_V2",
    "LOCAL_BURST_S",
    "LeaseSync",
    "wanted_rate",
)

logger = logging.getLogger("aigateway.cluster")

LEASE_S: Final = 0.5  # how far ahead a lease pays (and how often the node asks)
TICK_S: Final = 0.1  # between rounds, a call for the keys that requests wait on
# A node's bucket spends what is paid for over this much longer than a round, so a round
# that comes late (the agent's rounds are 0.1 s apart) still finds it paid for.
SLACK_S: Final = 0.2
# The global bucket's burst, in seconds of the limit: a round and the agent's own tick
# (rounds come up to a tick late). With exactly a round (0.5 s), a round that came late
# found the bucket full and what it could not hold was lost: two busy nodes ran at 97.8%
# of the limit in the benchmark, ~91% in a simulation of rounds 0.55 s apart.
GLOBAL_BURST_S: Final = LEASE_S + 0.1
LOCAL_BURST_S: Final = 0.25  # a node bucket's burst, in seconds of its share (>= 1 token)
HEADROOM: Final = 1.5  # a node asks this much more than it used, so a share can grow
DRAIN_S: Final = 1.0  # waiting requests are asked for as if to be served within this
IDLE_SHARE: Final = 0.1  # an idle node's standing lease: this part of its even share
STALE_LEASES: Final = 3  # another node's want counts for this many of its rounds
KEY_TTL_MS: Final = 60_000  # an unused limit's state expires (it is a full bucket then)
CLOSED_RATE: Final = 1e-6  # a bucket that fails closed: no token for ~11 days
MIN_RATE: Final = 1e-3  # a bucket's rate may not be 0
KEYS_PER_CALL: Final = 200  # limits in one script call (more: several calls a round)
HEAD_ARGS, ARGS_PER_KEY = 4, 5  # LEASE_V2's ARGV: node, lease, stale, ttl; then per key

# v2 (state format 1, as v1; v1 took one burst for every key, ARGV[4]). KEYS: each
# limit's state (one slot). ARGV: node id, lease ms, stale ms, ttl ms; then for each key:
# limit (tokens/s), owed tokens, wanted tokens/s, asked tokens, burst (s of the limit).
# Answers each key's grant (tokens, as text), or "v<n>" for the state of a newer format,
# which this script leaves alone.
LEASE_V2: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now / 1000)
local node = ARGV[1]
local lease_s = tonumber(ARGV[2]) / 1000
local stale_ms = tonumber(ARGV[3])
local ttl_ms = tonumber(ARGV[4])
local out = {}
for i, key in ipairs(KEYS) do
  local a = 4 + (i - 1) * 5
  local limit = tonumber(ARGV[a + 1])
  local owed = tonumber(ARGV[a + 2])
  local want = tonumber(ARGV[a + 3])
  local ask = tonumber(ARGV[a + 4])
  local burst_s = tonumber(ARGV[a + 5])
  local state = redis.call('HMGET', key, 'v', 'rate', 'tat')
  local version = tonumber(state[1]) or 1
  if version > 1 then
    out[i] = 'v' .. version
  else
    local rate = tonumber(state[2]) or limit
    local tat = tonumber(state[3]) or now
    if tat < now then tat = now end
    if rate ~= limit then tat = now + (tat - now) * rate / limit end
    tat = tat + owed * 1000000 / limit
    redis.call('HSET', key, 'w:' .. node, ARGV[a + 3] .. ':' .. now_ms)
    local fields = redis.call('HGETALL', key)
    local total = 0
    for j = 1, #fields, 2 do
      if string.sub(fields[j], 1, 2) == 'w:' then
        local wanted, seen = string.match(fields[j + 1], '^([^:]+):(%d+)$')
        if seen == nil or now_ms - tonumber(seen) > stale_ms then
          redis.call('HDEL', key, fields[j])
        else
          total = total + tonumber(wanted)
        end
      end
    end
    local burst = math.max(1, limit * burst_s)
    local available = burst - (tat - now) * limit / 1000000
    -- wanted beyond the limit: each node its part of a round, or of what the bucket
    -- holds when that is more (a token limit's burst is a minute, not a round)
    local cap = ask
    if total > limit then
      cap = math.min(ask, math.max(limit * lease_s, available) * want / total)
    end
    local grant = math.max(0, math.min(cap, available))
    tat = tat + grant * 1000000 / limit
    redis.call('HSET', key, 'v', '1', 'rate', string.format('%.17g', limit),
      'tat', string.format('%.17g', tat))
    redis.call('PEXPIRE', key, ttl_ms)
    out[i] = string.format('%.17g', grant)
  end
end
return out
"""

#: What the node's demand of a provider is: (requests admitted in total, waiting now).
Demand = Callable[[], Mapping[str, tuple[int, int]]]


def wanted_rate(used_per_s: float, waiting: float, limit: float, nodes: int) -> float:
    """The rate a node asks for: what it used and what waits, with headroom to grow; a
    tenth of its even share when idle; never more than the whole limit."""
    idle = IDLE_SHARE * limit / max(nodes, 1)
    return min(limit, max(idle, (used_per_s + waiting / DRAIN_S) * HEADROOM))


def local_burst(rate: float) -> float:
    return max(1.0, rate * LOCAL_BURST_S)


def _token_burst(limit: float) -> float:
    """A token bucket's burst for a limit of ``limit`` tokens a second."""
    return max(1.0, limit * TOKEN_BURST_S)


def _token_rate(burst: float) -> float:
    """A token lease's own refill (next to nothing): a bucket's burst may be at most 1e9
    seconds of its rate, so a TPM past a million refills a little faster than MIN_RATE."""
    return max(MIN_RATE, burst / 1e8)


def token_lease(provider: str) -> str:
    """The name of a provider's token lease (``<PROVIDER>_TPM``) among the leases."""
    return token_bucket_name(provider)


TOKEN_BURST_S: Final = 60.0 * BURST_MINUTES  # a token limit's burst, in seconds of it


@dataclass(slots=True)
class _Lease:
    """One provider's lease on this node."""

    rate: float  # the bucket's rate as last set
    since: float  # when (the local clock)
    tokens: bool = False  # a token limit (TPM): bursts of its own, asks for its waiters
    balance: float = 0.0  # tokens paid for and not yet produced (< 0: produced unpaid)
    admitted: int = -1  # the admission counter at the last round (-1: none yet)
    leased: float = 0.0  # tokens granted in total
    mode: int = LEASED
    share: float = 0.0  # a token limit's: tokens a second granted over the last round
    key: KeyLimit | None = None  # a tenant key's rate (``key_leases``), not a provider's
    level: float = 0.0  # a key's: its bucket's level after the last round it was in
    limit: float = 0.0  # a key's: its limit then
    checked: float = 0.0  # a key's: when that round was (0: never)


class LeaseSync:
    """The node agent's leases of every provider's global limit (see the module)."""

    name = "leases"
    interval_s = TICK_S  # a full round every LEASE_S; between, only keys with waiters

    def __init__(
        self,
        buckets: Mapping[str, TokenBucket],
        board: LeaseBoard,
        *,
        limits: Callable[[], Mapping[str, float]],
        demand: Demand,
        nodes: Callable[[], int],
        fail_open: bool = True,
        clock: Callable[[], float] = time.monotonic,
        on_close: Callable[[], None] | None = None,
        tokens: Collection[str] = (),
        keys: KeyLeases | None = None,
    ) -> None:
        """``tokens``: which of ``buckets`` are token limits (``token_lease``): their limit
        in tokens a second (0: none, not leased), their demand in tokens. ``keys``: the
        tenant keys' rates, leased as token limits too."""
        self.buckets = dict(buckets)
        self.board = board
        self.limits = limits
        self.demand = demand
        self.nodes = nodes
        self.fail_open = fail_open
        self.clock = clock
        self.calls = 0
        self.asked = 0  # limits in the last call (keys with recent demand among them)
        self._on_close = on_close
        self._script: Any = None
        self._last = clock()
        self._due = 0.0  # the next full round
        self.keys = keys
        now = self._last
        self.leases: dict[str, _Lease] = {}
        limits_now = limits()
        for name, bucket in self.buckets.items():
            # Until the first lease: next to nothing (what it makes is charged then).
            token = name in tokens
            burst = _token_burst(limits_now.get(name, 0.0)) if token else 1.0
            bucket.set_rate(_token_rate(burst) if token else MIN_RATE, burst, now=now)
            if token:  # empty: a token bucket's burst is large, and none of it paid for
                bucket.try_acquire(bucket.available(now=now), now=now)
            self.leases[name] = _Lease(MIN_RATE, now, token)
            board.write(name, LEASED, 0.0 if token else MIN_RATE, limits_now.get(name, 0.0), 0.0)

    async def tick(self, agent: Agent) -> None:
        now = self.clock()
        full = now >= self._due
        if self.keys is not None and await self.keys.refresh():
            self._follow_keys(now)
        if not full and (self.keys is None or not self.keys.any_waiting()):
            return
        elapsed = 0.0
        if full:
            self._due = now + LEASE_S
            elapsed = max(now - self._last, 1e-3)
            self._last = now
        limits = self._all_limits(self.limits())
        nodes = self.nodes()
        demand = self.demand()
        alone = any(lease.mode != LEASED for lease in self.leases.values())
        if alone and full:  # Redis was gone: follow live limits and the node count meanwhile
            self._fall_back(limits, nodes, now)
        keys: list[str] = []
        args: list[str | float] = [
            agent.node_id,
            round(LEASE_S * 1000),
            round(STALE_LEASES * LEASE_S * 1000),
            KEY_TTL_MS,
        ]
        owed: dict[str, float] = {}
        leased: list[tuple[str, _Lease]] = []
        for name, lease in self.leases.items():
            limit = limits[name]
            if not limit > 0.0:  # a token limit that is not set: nothing to lease
                continue
            key = lease.key
            if key is not None:  # a tenant key's: only with recent demand
                asked = self._key_demand(lease, key, nodes, now, full)
                if asked is None:
                    continue
                used, waiting, standing = asked
            elif not full:
                continue
            else:
                admitted, waiting = demand.get(name, (0, 0))
                used = max(admitted - lease.admitted, 0) / elapsed if lease.admitted >= 0 else 0.0
                lease.admitted = admitted
            leased.append((name, lease))
            if lease.mode == LEASED:
                lease.balance -= lease.rate * (now - lease.since)
                lease.since = now
            else:  # rejoining: the time alone is not charged
                lease.balance = 0.0
            want = wanted_rate(used, waiting, limit, nodes)
            owed[name] = max(-lease.balance, 0.0)
            need = want * (LEASE_S + SLACK_S)
            held = max(lease.balance, 0.0)
            if key is not None:  # whole requests ahead only: a fraction serves no one
                need = max(need if need >= 1.0 else 0.0, float(waiting), standing)
            if lease.tokens:  # the waiters' tokens, however large one request is
                need = max(need, float(waiting))
                held += self.buckets[name].available(now=now)
            ask = max(need - held, 0.0)
            burst_s = TOKEN_BURST_S if lease.tokens else GLOBAL_BURST_S
            keys.append(self._key(agent, name, lease))
            # A key's nodes say no want: shared in proportion, the last request of a
            # minute would be cut in parts no node can serve; first asked, first served
            # (what a node asks is what waits, whole requests ahead and its standing lease).
            told = 0.0 if key is not None else want
            args += [repr(limit), repr(owed[name]), repr(told), repr(ask), repr(burst_s)]
        if not keys:
            return
        self.asked = len(keys)
        answers: list[Any] = []
        try:
            # A script's time on Redis grows faster than its keys (measured: ~10 us a key
            # at 100, ~60 at 1,000, ~90 at 3,000): many keys go in calls of a few hundred,
            # so that no call holds Redis for long.
            for start in range(0, len(keys), KEYS_PER_CALL):
                part = keys[start : start + KEYS_PER_CALL]
                first = HEAD_ARGS + ARGS_PER_KEY * start
                part_args = args[:HEAD_ARGS] + args[first : first + ARGS_PER_KEY * len(part)]
                answers += await self._call(agent, part, part_args)
                self.calls += 1
                self.board.add_call()
        finally:
            if self.keys is not None:
                self.keys.round_done()  # requests waiting on a lease look again
        now = self.clock()
        for (name, lease), answer in zip(leased, answers, strict=True):
            text = answer.decode() if isinstance(answer, bytes) else str(answer)
            if text.startswith("v"):
                self._alone(name, limits[name], nodes, now, f"format {text} of a newer version")
                continue
            granted = float(text)
            lease.leased += granted
            if lease.mode != LEASED:
                logger.debug("limits of %s leased from the cluster again", name)
            if lease.tokens:  # deposited at once: a waiting request needs them whole
                lease.balance += owed[name]
                if lease.key is None:  # a provider's, shown on the board (full rounds)
                    lease.share = granted / elapsed
                if granted > 0.0:
                    self.buckets[name].settle(-granted, now=now)
                self._set(name, lease, LEASED, MIN_RATE, limits[name], now)
                if lease.key is not None:
                    lease.level = self.buckets[name].available(now=now)
                continue
            lease.balance += owed[name] + granted
            rate = max(lease.balance / (LEASE_S + SLACK_S), MIN_RATE)  # what is paid for
            self._set(name, lease, LEASED, rate, limits[name], now)

    def redis_changed(self, up: bool) -> None:
        if not up:
            self._fall_back(self._all_limits(self.limits()), self.nodes(), self.clock())
            if self.keys is not None:
                self.keys.round_done()  # waiting requests take the node's part now

    def close(self) -> None:
        """Let go of the node's shared memory (the agent stops)."""
        self.board.close()
        if self.keys is not None:
            self.keys.close()
        if self._on_close is not None:
            self._on_close()

    # -- internals --------------------------------------------------------------------------

    async def _call(self, agent: Agent, keys: list[str], args: list[str | float]) -> Any:
        script = self._script
        if script is None:  # until one call went through: EVAL, one round trip (EVALSHA
            # would meet NOSCRIPT, load and call again); then Redis keeps it for EVALSHA
            redis = agent.redis
            answers = await agent.call(lambda: redis.eval(LEASE_V2, len(keys), *keys, *args))
            self._script = redis.register_script(LEASE_V2)
            return answers
        return await agent.call(lambda: script(keys=keys, args=args))

    def _all_limits(self, limits: Mapping[str, float]) -> dict[str, float]:
        """The providers' limits and the keys' (tokens a second)."""
        return dict(limits) | {
            name: lease.key.limit for name, lease in self.leases.items() if lease.key is not None
        }

    def _follow_keys(self, now: float) -> None:
        """The node's keys changed: lease the new ones, let go of the gone ones."""
        assert self.keys is not None
        current = self.keys.limits
        for name in [name for name, lease in self.leases.items() if lease.key is not None]:
            limit = current.get(name)
            old = self.leases[name].key
            if limit is None or old is None or old.tag != limit.tag:
                del self.leases[name]
                del self.buckets[name]
        nodes = self.nodes()
        for name, limit in current.items():
            lease = self.leases.get(name)
            if lease is not None:
                lease.key = limit
                if limit.limit != lease.limit:  # changed: the bucket's burst follows now
                    lease.limit = limit.limit
                    if lease.mode == LEASED:
                        self._set(name, lease, LEASED, MIN_RATE, limit.limit, now)
                    else:
                        self._alone(name, limit.limit, nodes, now, "Redis is gone")
                continue
            # A new lease: nothing of its bucket was paid for (a limit just set on a key
            # may find a full bucket of the one it had without).
            bucket = self.buckets[name] = limit.bucket
            burst = _token_burst(limit.limit)
            bucket.set_rate(_token_rate(burst), burst, now=now)
            bucket.try_acquire(bucket.available(now=now), now=now)
            lease = self.leases[name] = _Lease(MIN_RATE, now, True, key=limit, limit=limit.limit)
            if any(other.mode != LEASED for other in self.leases.values() if other is not lease):
                self._alone(name, limit.limit, nodes, now, "Redis is gone")
            else:
                self.keys.set_mode(limit, LEASED)

    def _key_demand(
        self, lease: _Lease, key: KeyLimit, nodes: int, now: float, full: bool
    ) -> tuple[float, float, float] | None:
        """A key's (used a second, waiting, standing lease), or None to leave it out of
        this call: in a call between rounds, a key nothing waits on; in a round, a key
        that spent nothing since its last one, nothing waits on, whose node holds its
        standing lease, leased (not rejoining)."""
        assert self.keys is not None
        waiting = self.keys.waiting(key)
        level = key.bucket.available(now=now)
        spent = max(lease.level - level, 0.0)
        standing = key.standing(nodes)
        quiet = (
            spent == 0.0 and lease.mode == LEASED and level + max(lease.balance, 0.0) >= standing
        )
        if waiting <= 0.0 and (quiet or not full):
            return None
        used = spent / max(now - lease.checked, 1e-3) if lease.checked else 0.0
        lease.checked = now
        return used, waiting, standing

    def _key(self, agent: Agent, name: str, lease: _Lease) -> str:
        if lease.key is not None:
            return agent.keys.key_limit(lease.key.key_id, lease.key.kind)
        if lease.tokens:
            return agent.keys.token_limit(name.removeprefix(token_lease("")))
        return agent.keys.limit(name)

    def _fall_back(self, limits: Mapping[str, float], nodes: int, now: float) -> None:
        for name in self.leases:
            if limits[name] > 0.0:
                self._alone(name, limits[name], nodes, now, "Redis is gone")

    def _alone(self, name: str, limit: float, nodes: int, now: float, why: str) -> None:
        """The provider limited by this node alone: its part of the limit, or nothing."""
        lease = self.leases[name]
        mode = ALONE if self.fail_open else CLOSED
        if lease.mode != mode:
            logger.debug(  # the guard says once that Redis is gone; this says what follows
                "limits of %s: %s, %s",
                name,
                why,
                f"the node takes 1/{nodes} of {limit:g}/s" if self.fail_open else "calls refused",
            )
        if self.fail_open:
            self._set(name, lease, ALONE, limit / max(nodes, 1), limit, now)
            return
        if lease.mode != CLOSED:
            bucket = self.buckets[name]
            bucket.set_rate(CLOSED_RATE, 1.0, now=now)
            bucket.try_acquire(1.0, now=now)  # empty: nothing until Redis is back
        lease.mode, lease.rate, lease.since = CLOSED, CLOSED_RATE, now
        self.board.write(name, CLOSED, 0.0, limit, lease.leased)
        if lease.key is not None and self.keys is not None:
            self.keys.set_mode(lease.key, CLOSED)

    def _set(
        self, name: str, lease: _Lease, mode: int, rate: float, limit: float, now: float
    ) -> None:
        if not (rate > 0.0 and math.isfinite(rate)):
            rate = MIN_RATE
        bucket = self.buckets[name]
        burst = local_burst(rate)
        if lease.tokens:  # a whole request must fit: the limit's burst (alone: the part)
            burst = _token_burst(limit if mode == LEASED else limit / max(self.nodes(), 1))
            rate = max(rate, _token_rate(burst))
        if rate != bucket.rate_per_s or burst != bucket.burst:
            bucket.set_rate(rate, burst, now=now)
        lease.mode, lease.rate, lease.since = mode, rate, now
        # A token lease's bucket barely refills (grants go in at once): its share is what
        # it was granted over the last round; alone, the limit over the live nodes.
        shown = lease.share if lease.tokens and mode == LEASED else rate
        self.board.write(name, mode, shown, limit, lease.leased)
        if lease.key is not None and self.keys is not None:
            self.keys.set_mode(lease.key, mode)
