"""When and how long to wait before calling a provider again.

Exponential backoff with full jitter: before retry ``n`` (0-based) wait a random
time in ``[0, min(max_delay, initial_delay * 2**n)]``. A provider's own
``retry-after-ms`` or ``retry-after`` (``wire.retry_after_from_headers``) replaces the
computed delay; when it asks for longer than ``max_delay`` the gateway stops retrying
and passes the wait on to the client instead of holding the request.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aigateway.config import Settings


@dataclass(slots=True)
class RetryPolicy:
    """A worker's retry policy; ``PUT /admin/config`` may change its fields live."""

    max_retries: int
    initial_delay_s: float
    max_delay_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """MAX_RETRIES, INITIAL_DELAY_MS and MAX_DELAY_MS."""
        return cls(
            settings.max_retries, settings.initial_delay_ms / 1000.0, settings.max_delay_ms / 1000.0
        )

    def apply_settings(self, old: Settings, new: Settings) -> None:
        """Live settings: the same three, in this worker (its requests share the policy)."""
        changed = self.from_settings(new)
        self.max_retries = changed.max_retries
        self.initial_delay_s = changed.initial_delay_s
        self.max_delay_s = changed.max_delay_s

    def delay_before_retry(
        self,
        retry_number: int,
        retry_after_s: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float | None:
        """Seconds to wait before retry ``retry_number``; None when no retry is allowed."""
        if retry_number >= self.max_retries:
            return None
        if retry_after_s is not None:
            return retry_after_s if retry_after_s <= self.max_delay_s else None
        ceiling = min(self.max_delay_s, self.initial_delay_s * (2.0**retry_number))
        return ceiling * rand()
