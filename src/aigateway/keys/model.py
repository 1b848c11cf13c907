"""What a tenant key is, and the budget periods its spend is counted in.

A key's secret is never kept: only its keyed hash (``secrets.py``).  Each key has a
``slot`` in the node's shared memory (``slots.py``) where its rate buckets, requests in
flight and budget live, and a ``tag`` (from its id) that says which key a slot holds.
"""

from __future__ import annotations

import calendar
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

__all__ = (
    "PERIODS",
    "KeySpend",
    "TenantKey",
    "period_index",
    "period_label",
    "period_resets_at",
    "rfc3339",
)

#: Budget periods: a UTC calendar day, a UTC calendar month, or the key's whole life.
PERIODS: Final = ("day", "month", "total")

#: The fields of a key an operator sets (POST and PATCH /admin/keys), in display order.
LIMIT_FIELDS: Final = (
    "rpm",
    "tpm",
    "max_parallel",
    "budget_usd",
    "budget_period",
    "models",
    "priority",
    "max_priority",
    "expires_at",
    "metadata",
)


@dataclass(frozen=True, slots=True)
class KeySpend:
    """What a key used, as the store knows it (what workers flushed)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0  # its whole life
    periods: tuple[tuple[str, float], ...] = ()  # period label -> USD, e.g. ("day:2026-12-07", 0.1)

    def in_period(self, label: str) -> float:
        if label == "total":
            return self.usd
        for name, usd in self.periods:
            if name == label:
                return usd
        return 0.0


@dataclass(frozen=True, slots=True)
class TenantKey:
    id: str
    name: str
    digest: bytes = field(repr=False)
    prefix: str  # the secret's first characters, to recognise it in a list
    slot: int
    created_at: float
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_usd: float | None = None
    budget_period: str = "total"
    models: tuple[str, ...] = ()  # empty: any model
    priority: str | None = None
    max_priority: str | None = None
    expires_at: float | None = None  # Unix time
    metadata: dict[str, Any] = field(default_factory=dict)
    revoked_at: float | None = None
    spend: KeySpend = KeySpend()

    @property
    def tag(self) -> int:
        """A non-zero 64-bit number naming this key in its shared-memory slot."""
        return int(self.id.removeprefix("key_"), 16) | 1

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def may_use(self, model: str, provider: str | None = None) -> bool:
        """Whether the key may ask for ``model`` (an alias counts as its own name)."""
        models = self.models
        if not models or model in models:
            return True
        return provider is not None and f"{provider}/{model}" in models

    def limits(self) -> dict[str, Any]:
        """The fields an operator set, as JSON (``None`` where unset)."""
        values = {name: getattr(self, name) for name in LIMIT_FIELDS}
        values["models"] = list(self.models)
        values["expires_at"] = rfc3339(self.expires_at)
        return values

    def public(self, live_period_usd: float | None = None) -> dict[str, Any]:
        """What ``GET /admin/keys`` shows of it: never the secret nor its hash."""
        spend = self.spend
        label = period_label(self.budget_period, time.time())
        period_usd = spend.in_period(label) if live_period_usd is None else live_period_usd
        return {
            "id": self.id,
            "object": "key",
            "name": self.name,
            "prefix": self.prefix,
            "created_at": rfc3339(self.created_at),
            "revoked_at": rfc3339(self.revoked_at),
            **self.limits(),
            "usage": {
                "requests": spend.requests,
                "prompt_tokens": spend.prompt_tokens,
                "completion_tokens": spend.completion_tokens,
            },
            "spend": {
                "total_usd": round(spend.usd, 9),
                "period": label,
                "period_usd": round(period_usd, 9),
                "budget_remaining_usd": (
                    None if self.budget_usd is None else round(self.budget_usd - period_usd, 9)
                ),
            },
        }


def rfc3339(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat().replace("+00:00", "Z")


def period_index(period: str, now: float) -> int:
    """A number for the budget period ``now`` falls in: days or months since 1970 (UTC),
    0 for ``total``; distinct kinds never share a number (a slot compares them)."""
    if period == "day":
        return 1_000_000 + int(now // 86400)
    if period == "month":
        day = time.gmtime(now)
        return 2_000_000 + (day.tm_year - 1970) * 12 + day.tm_mon - 1
    return 0


def period_label(period: str, now: float) -> str:
    """``day:2026-12-07``, ``month:2026-12`` or ``total``: the store's name for a period."""
    if period == "day":
        return time.strftime("day:%Y-%m-%d", time.gmtime(now))
    if period == "month":
        return time.strftime("month:%Y-%m", time.gmtime(now))
    return "total"


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """When the period ``now`` falls in began and ends (``total``: always)."""
    if period == "day":
        start = now // 86400 * 86400
        return start, start + 86400
    if period == "month":
        day = time.gmtime(now)
        start = float(calendar.timegm((day.tm_year, day.tm_mon, 1, 0, 0, 0)))
        ends = period_resets_at(period, now)
        assert ends is not None
        return start, ends
    return -math.inf, math.inf


def period_resets_at(period: str, now: float) -> float | None:
    """When the period ``now`` falls in ends (None: never)."""
    if period == "day":
        return (now // 86400 + 1) * 86400
    if period == "month":
        day = time.gmtime(now)
        year, month = (day.tm_year + 1, 1) if day.tm_mon == 12 else (day.tm_year, day.tm_mon + 1)
        return float(calendar.timegm((year, month, 1, 0, 0, 0)))
    return None


@dataclass(frozen=True, slots=True)
class SpendRow:
    """What one worker saw a key use since its last flush (``at``: when, for the periods)."""

    key_id: str
    at: float
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0
