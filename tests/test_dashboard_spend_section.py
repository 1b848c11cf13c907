"""The dashboard's ``spend`` section, in-process: which figure comes from where, how keys
are ranked and bounded, and what a revoked or expired key shows.

Its inputs are what the route reads (the ``spend_usd`` counters, the live keys with their
slots' figures, the store's totals per key and per period), given here as plain values
with a fixed clock: nothing in it needs a process.
"""

from __future__ import annotations

from typing import Any

import pytest

from aigateway.dashboard.spend import LiveKey, spend_section
from aigateway.keys.model import TenantKey
from aigateway.stats.series import COUNTER, Series

NOW = 1_796_601_600.0  # 2026-12-07T00:00:00Z
NANOS = 1e9
TODAY, MONTH = "day:2026-12-07", "month:2026-12"


def key(n: int, **fields: Any) -> TenantKey:
    return TenantKey(
        id=f"key_{n:016x}", name=f"team-{n}", digest=b"", prefix=f"agk_{n}", slot=n,
        created_at=NOW - 3600, **fields,
    )  # fmt: skip


def series(provider: str, model: str, usd: float) -> Series:
    return Series("spend_usd", (("provider", provider), ("model", model)), COUNTER, (usd * NANOS,))


def section(live: list[LiveKey], stored: list[tuple[str, str, int, float]], **extra: Any) -> Any:
    return spend_section(
        extra.pop("counters", []), NANOS, live, stored, extra.pop("periods", {}),
        today=TODAY, month=MONTH, now=NOW, **extra,
    )  # fmt: skip


def test_totals_come_from_the_counters_and_the_keys_totals_from_the_store() -> None:
    counters = [
        series("openai", "gpt-4o-mini", 0.25),
        series("anthropic", "claude-3-5-haiku-latest", 0.5),
        series("openai", "gpt-4o", 0.0),  # called, unpriced: not listed
    ]
    found = section(
        [], [("a", "key_a", 3, 0.1), ("b", "key_b", 1, 0.2)],
        counters=counters, periods={TODAY: 0.05, MONTH: 0.3},
    )  # fmt: skip
    assert found["since_start_usd"] == pytest.approx(0.75)
    assert found["by_model"] == [
        {"provider": "anthropic", "model": "claude-3-5-haiku-latest", "usd": 0.5},
        {"provider": "openai", "model": "gpt-4o-mini", "usd": 0.25},
    ]
    keys = found["keys"]
    assert (keys["today_usd"], keys["month_usd"]) == (0.05, 0.3)
    assert keys["total_usd"] == pytest.approx(0.3)


def test_a_live_key_shows_its_budget_period_spend_from_its_slot_against_its_budget() -> None:
    limited = key(1, budget_usd=2.0, budget_period="month", rpm=60, tpm=1000, max_parallel=2)
    found = section([LiveKey(limited, 0.5, 1)], [("team-1", limited.id, 7, 0.4)])
    [row] = found["keys"]["top"]
    assert row["name"] == "team-1" and row["state"] == "active"
    assert (row["period"], row["period_usd"], row["total_usd"]) == ("month", 0.5, 0.4)
    assert (row["budget_usd"], row["budget_use"]) == (2.0, 0.25)
    assert row["resets_at"] == "2027-01-01T00:00:00Z"
    assert (row["rpm"], row["tpm"], row["max_parallel"], row["in_flight"]) == (60, 1000, 2, 1)
    assert row["requests"] == 7


def test_a_key_without_a_budget_has_no_budget_use_and_an_expired_key_says_so() -> None:
    expired = key(2, expires_at=NOW - 1)
    [row] = section([LiveKey(expired, 0.0, 0)], [])["keys"]["top"]
    assert row["state"] == "expired"
    assert row["budget_use"] is None and row["resets_at"] is None


def test_a_revoked_key_is_listed_with_what_the_store_kept_while_it_ranks() -> None:
    live = LiveKey(key(3), 0.01, 0)
    found = section([live], [("old", "key_gone", 4, 0.9), ("team-3", live.key.id, 1, 0.01)])
    top = found["keys"]["top"]
    assert [row["name"] for row in top] == ["old", "team-3"]
    assert top[0]["state"] == "revoked" and top[0]["total_usd"] == 0.9
    assert top[0]["period_usd"] is None and top[0]["budget_use"] is None
    assert (found["keys"]["count"], found["keys"]["revoked_with_spend"]) == (1, 1)


def test_only_the_keys_that_spent_most_are_listed_by_their_larger_figure() -> None:
    live = [LiveKey(key(n), n / 100, 0) for n in range(1, 51)]
    stored = [("team-7", key(7).id, 1, 5.0)]  # its total outranks every period figure
    found = section(live, stored, top=5)
    names = [row["name"] for row in found["keys"]["top"]]
    assert names == ["team-7", "team-50", "team-49", "team-48", "team-47"]
    assert found["keys"]["count"] == 50
