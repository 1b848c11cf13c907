"""When and how long to wait before calling a provider again.

Exponential backoff with full jitter: before retry ``n`` (0-based) wait a random
time in ``[0, min(max_delay, initial_delay * 2**n)]``. A provider's own
``retry-after-ms`` or ``retry-after`` replaces the computed delay; when it asks
for longer than ``max_delay`` the gateway stops retrying and passes the wait on
to the client instead of holding the request.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from time import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aigateway.config import Settings

# Statuses worth another try: the request may succeed unchanged a moment later.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


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


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


def retry_after_from_headers(
    headers: Mapping[str, str], now: Callable[[], float] = time
) -> float | None:
    """The wait a provider asked for, in seconds, from ``retry-after-ms`` or ``retry-after``.

    ``headers`` must have lower-case names. Unparseable values are ignored.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms)
        except ValueError:
            value = -1.0
        if 0 <= value < float("inf"):
            return value / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:  # an HTTP date; the caller bounds a wait that lasts until 2099
            seconds = max(0.0, parsedate_to_datetime(raw).timestamp() - now())
        except (TypeError, ValueError, IndexError, OverflowError, OSError):
            return None
    return seconds if 0 <= seconds < float("inf") else None
