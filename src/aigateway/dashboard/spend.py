"""The dashboard's ``spend`` section: what the answers cost, in total, by model and by key.

Each figure comes from where it is already kept, and says so:

- ``since_start_usd`` and ``by_model``: the node's ``spend_usd`` counters (shared memory),
  every priced answer since the node started, with a key or without.
- ``keys.today_usd``, ``keys.month_usd`` and ``keys.total_usd``: what tenant keys spent,
  as the key store has it (across restarts; at most one ``KEY_SPEND_FLUSH_MS`` behind).
- each key's ``period_usd``: its spend in its own budget period, from its slot in shared
  memory (what its budget is checked against, flushed or not); its ``total_usd`` from the
  store.

Bounded: the ``TOP_KEYS`` keys that spent most are listed (``keys.count`` says how many
there are); revoked keys appear only while they rank among them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aigateway.keys.model import TenantKey, period_resets_at, rfc3339
from aigateway.stats.series import Series

__all__ = ("TOP_KEYS", "LiveKey", "spend_section")

#: Keys listed at most (by spend), so the document stays small however many keys exist.
TOP_KEYS: Final = 20


@dataclass(frozen=True, slots=True)
class LiveKey:
    """A key not revoked, read now: its settings and its slot's figures."""

    key: TenantKey
    period_usd: float
    in_flight: int


def spend_section(
    spend_series: Iterable[Series],
    divisor: float,
    live: Sequence[LiveKey],
    stored: Sequence[tuple[str, str, int, float]],
    periods: Mapping[str, float],
    *,
    today: str,
    month: str,
    now: float,
    top: int = TOP_KEYS,
) -> dict[str, Any]:
    """``spend_series``: the ``spend_usd`` counters; ``stored``: (name, id, requests, USD)
    of every key with spend in the store; ``periods``: all keys' USD by period label."""
    by_model: dict[tuple[str, str], float] = {}
    for one in spend_series:
        labels = dict(one.labels)
        where = (labels.get("provider", ""), labels.get("model", ""))
        by_model[where] = by_model.get(where, 0.0) + one.value / divisor
    models = [
        {"provider": provider, "model": model, "usd": round(usd, 9)}
        for (provider, model), usd in sorted(by_model.items(), key=lambda item: -item[1])
        if usd > 0
    ]
    totals = {key_id: (requests, usd) for _, key_id, requests, usd in stored}
    seen = {one.key.id for one in live}
    revoked = [row for row in stored if row[1] not in seen]
    # Ranked on two numbers first, rows made for the top ones only (thousands of keys).
    ranked: list[tuple[float, str, LiveKey | tuple[str, str, int, float]]] = [
        (-max(one.period_usd, totals.get(one.key.id, (0, 0.0))[1]), one.key.name, one)
        for one in live
    ]
    ranked += [(-row[3], row[0], row) for row in revoked]
    ranked.sort(key=lambda item: item[:2])
    rows = [
        _live_row(one, totals.get(one.key.id, (0, 0.0)), now)
        if isinstance(one, LiveKey)
        else _revoked_row(*one)
        for _, _, one in ranked[:top]
    ]
    return {
        "available": True,
        "since_start_usd": round(sum(by_model.values()), 9),
        "by_model": models,
        "keys": {
            "count": len(live),
            "revoked_with_spend": len(revoked),
            "today_usd": round(periods.get(today, 0.0), 9),
            "month_usd": round(periods.get(month, 0.0), 9),
            "total_usd": round(sum(usd for *_, usd in stored), 9),
            "top": rows[:top],
        },
    }


def _live_row(one: LiveKey, stored: tuple[int, float], now: float) -> dict[str, Any]:
    key = one.key
    requests, total = stored
    budget = key.budget_usd
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "state": "expired" if key.expired(now) else "active",
        "requests": requests,
        "total_usd": round(total, 9),
        "period": key.budget_period,
        "period_usd": round(one.period_usd, 9),
        "budget_usd": budget,
        "budget_use": round(one.period_usd / budget, 4) if budget else None,
        "resets_at": rfc3339(period_resets_at(key.budget_period, now)) if budget else None,
        "expires_at": rfc3339(key.expires_at),
        "rpm": key.rpm,
        "tpm": key.tpm,
        "max_parallel": key.max_parallel,
        "in_flight": one.in_flight,
    }


def _revoked_row(name: str, key_id: str, requests: int, usd: float) -> dict[str, Any]:
    return {
        "id": key_id,
        "name": name,
        "prefix": None,
        "state": "revoked",
        "requests": requests,
        "total_usd": round(usd, 9),
        "period": None,
        "period_usd": None,
        "budget_usd": None,
        "budget_use": None,
        "resets_at": None,
        "expires_at": None,
        "rpm": None,
        "tpm": None,
        "max_parallel": None,
        "in_flight": 0,
    }
