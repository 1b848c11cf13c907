"""Every Redis call under a timeout and a circuit breaker.

Redis is never trusted to be fast: a call that takes longer than ``timeout_s`` is
abandoned (``RedisUnavailable``), and after ``failures_to_open`` failed calls in a row
the guard stops calling at all for a cool-down (1 s, doubling up to ``max_cooldown_s``)
and answers ``RedisUnavailable`` at once, so a Redis that is slow or gone costs each
request nothing once it is noticed. After the cool-down one call goes through as a probe;
its success closes the breaker, its failure opens it again.

Each change of state is logged once (down with the reason, up again) and reported to
``on_change``. Errors that are Redis's answer (a wrong type, a script error) are not
outages: they reach the caller as they are and leave the breaker alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis import exceptions as redis_errors

from aigateway.cluster.outage import RedisUnavailable

__all__ = ("OUTAGES", "RedisGuard", "RedisUnavailable")

logger = logging.getLogger("aigateway.cluster")

T = TypeVar("T")

#: What says Redis cannot be used now (as opposed to an answer it gave).
OUTAGES: tuple[type[BaseException], ...] = (
    TimeoutError,
    OSError,
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,  # a replica promoted away under us: a failover
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.MasterDownError,
    redis_errors.ClusterError,
)


class RedisGuard:
    """A timeout for each call and a breaker over all of them (one per client)."""

    def __init__(
        self,
        timeout_s: float,
        *,
        name: str = "redis",
        failures_to_open: int = 2,
        cooldown_s: float = 1.0,
        max_cooldown_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool, str], None] | None = None,
        log: bool = True,
    ) -> None:
        self.timeout_s = timeout_s
        self.name = name
        self.failures_to_open = failures_to_open
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.clock = clock
        self.on_change = on_change
        self.log = log  # a worker's guard stays quiet: the node agent's says it for the node
        self.up = True
        self.reason = ""
        self.failures = 0  # in a row
        self.calls = 0  # every call made (the benchmark's "commands per request")
        self.refused = 0  # calls not made because the breaker was open
        self._cooldown_s = cooldown_s
        self._retry_at = 0.0
        self._probing = False

    def allows(self) -> bool:
        """Whether a call would be made now (not refused by the open breaker)."""
        if self.up:
            return True
        return not self._probing and self.clock() >= self._retry_at

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """``await make()`` within the timeout; ``RedisUnavailable`` when Redis is down,
        slow or unreachable."""
        if not self.allows():
            self.refused += 1
            raise RedisUnavailable(self.reason)
        probe = not self.up
        self._probing = probe
        self.calls += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await make()
        except OUTAGES as exc:
            self._failed(_describe(exc, self.timeout_s))
            raise RedisUnavailable(self.reason) from exc
        finally:
            if probe:
                self._probing = False
        self._succeeded()
        return result

    def _failed(self, reason: str) -> None:
        self.failures += 1
        now = self.clock()
        if not self.up:  # a failed probe: wait longer before the next one
            self._cooldown_s = min(self._cooldown_s * 2, self.max_cooldown_s)
            self._retry_at = now + self._cooldown_s
            self.reason = reason
            return
        if self.failures >= self.failures_to_open:
            self.up = False
            self.reason = reason
            self._cooldown_s = self.base_cooldown_s
            self._retry_at = now + self._cooldown_s
            if self.log:
                logger.warning("%s is unavailable (%s): going on without it", self.name, reason)
            if self.on_change is not None:
                self.on_change(False, reason)

    def _succeeded(self) -> None:
        self.failures = 0
        if self.up:
            return
        self.up = True
        self.reason = ""
        self._cooldown_s = self.base_cooldown_s
        if self.log:
            logger.warning("%s is back: rejoining", self.name)
        if self.on_change is not None:
            self.on_change(True, "")

    def down(self, reason: str) -> None:
        """Mark Redis down from outside (the node starts without it, say)."""
        self.failures = max(self.failures, self.failures_to_open - 1)
        self._failed(reason)


def _describe(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError | redis_errors.TimeoutError):
        return f"no answer within {timeout_s * 1000:g} ms"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:160]
