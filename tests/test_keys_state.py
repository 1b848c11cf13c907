"""Tenant keys in-process, with an injected clock: the store, the node's key slots, a
worker's ring and spend log, and the gate's budget rule.

Two ``KeyRing``\\ s over one ``KeySlots`` region stand for two workers of a node (the
region is the same bytes either way; tests/test_gateway_keys.py shows it across real
worker processes).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from pathlib import Path

import pytest

from aigateway.errors import Fault, GatewayError
from aigateway.keys.gate import KeyGate, budget_exceeded
from aigateway.keys.model import SpendRow
from aigateway.keys.ring import KeyRing
from aigateway.keys.slots import KeySlots
from aigateway.keys.spend import SpendLog
from aigateway.keys.store import SqliteKeyStore, StoreUnavailable
from aigateway.wire import ApiRequest

NOON = float(calendar.timegm((2026, 12, 7, 12, 0, 0)))  # a Monday, UTC
MIDNIGHT = float(calendar.timegm((2026, 12, 8, 0, 0, 0)))


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterable[SqliteKeyStore]:
    opened = SqliteKeyStore(str(tmp_path), slots=4)
    yield opened
    opened.close()


def test_the_store_keeps_a_keyed_hash_never_the_secret(
    store: SqliteKeyStore, tmp_path: Path
) -> None:
    key, secret = store.create({"name": "a", "rpm": 5})
    assert key.digest == store.hasher.digest(secret) and key.rpm == 5
    assert secret.encode() not in (tmp_path / "keys.db").read_bytes()
    other = SqliteKeyStore(str(tmp_path))  # another worker: the same pepper, the same hash
    try:
        assert other.hasher.digest(secret) == key.digest
    finally:
        other.close()


def test_names_and_slots_are_taken_by_live_keys_only(store: SqliteKeyStore) -> None:
    made = [store.create({"name": f"k{n}"})[0] for n in range(4)]
    assert sorted(key.slot for key in made) == [0, 1, 2, 3]
    with pytest.raises(GatewayError) as full:
        store.create({"name": "k4"})
    assert full.value.status == 409 and full.value.code == "key_capacity_reached"
    with pytest.raises(GatewayError) as taken:
        store.update(made[1].id, {"name": "k0"})
    assert taken.value.code == "key_name_taken"
    store.revoke(made[2].id)
    again = store.create({"name": "k2"})[0]
    assert again.slot == made[2].slot and again.id != made[2].id


def test_spend_is_kept_per_key_for_its_whole_life_and_each_day_and_month(
    store: SqliteKeyStore,
) -> None:
    key = store.create({"name": "spender"})[0]
    store.add_spend([SpendRow(key.id, NOON, 2, 100, 50, 0.25)])
    store.add_spend([SpendRow(key.id, MIDNIGHT + 60, 1, 10, 5, 0.5)])
    spend = store.get(key.id).spend  # type: ignore[union-attr]
    assert (spend.requests, spend.prompt_tokens, spend.completion_tokens) == (3, 110, 55)
    assert spend.usd == pytest.approx(0.75)
    assert spend.in_period("day:2026-12-07") == pytest.approx(0.25)
    assert spend.in_period("day:2026-12-08") == pytest.approx(0.5)
    assert spend.in_period("month:2026-12") == pytest.approx(0.75)
    assert store.spend_by_name() == [("spender", key.id, 3, pytest.approx(0.75))]


def test_a_change_made_by_one_worker_holds_on_the_next_request_of_another(
    store: SqliteKeyStore,
) -> None:
    slots = KeySlots.private(4)
    first, second = KeyRing(store, slots, Clock()), KeyRing(store, slots, Clock())
    key, secret = store.create({"name": "shared", "rpm": 2})
    first.changed()
    assert second.find(secret) is not None and second.find("sk-agw-wrong") is None
    for ring in (first, second):  # two requests a minute, for both workers together
        assert ring.find(secret).rpm.try_acquire() == 0.0  # type: ignore[union-attr]
    assert second.find(secret).rpm.try_acquire() > 20.0  # type: ignore[union-attr]
    store.update(key.id, {"rpm": 600})  # ten a second: the next one in a tenth of a second
    first.changed()
    assert 0.0 <= second.find(secret).rpm.try_acquire() <= 0.1  # type: ignore[union-attr]
    store.revoke(key.id)
    first.changed()
    assert second.find(secret) is None and first.find(secret) is None
    assert bool(second)  # a key was made once: /v1/* keeps asking for keys


def test_a_budget_lets_calls_through_while_anything_is_left_and_resets_at_utc_midnight(
    store: SqliteKeyStore,
) -> None:
    clock = Clock()
    key, secret = store.create({"name": "daily", "budget_usd": 1.0, "budget_period": "day"})
    store.add_spend([SpendRow(key.id, NOON - 3600, 1, 0, 0, 0.6)])  # spent this morning
    slot = KeyRing(store, KeySlots.private(4), clock).find(secret)
    assert slot is not None
    assert slot.spent(clock.now) == pytest.approx(0.6)
    assert slot.reserve(1.0, 0.3, clock.now) is None  # 0.6 + 0.3 reserved
    assert slot.reserve(1.0, 0.3, clock.now) is None  # 0.9 < 1.0: still some left
    assert slot.reserve(1.0, 0.3, clock.now) == pytest.approx(1.2)  # refused: 1.2 used
    slot.settle(0.3, 0.25, clock.now)  # answered for less than its estimate
    slot.settle(0.3, 0.0, clock.now)  # failed before the provider counted anything
    assert slot.spent(clock.now) == pytest.approx(0.85) and slot.reserved() == 0.0
    clock.now = MIDNIGHT + 1
    assert slot.spent(clock.now) == 0.0
    assert slot.reserve(1.0, 0.3, clock.now) is None


def test_a_monthly_budget_resets_on_the_first_of_the_month_for_a_slot_in_use(
    store: SqliteKeyStore,
) -> None:
    """A slot works out its period's bounds once and counts within them; the first call
    past the end starts the next period's count, on whichever worker makes it."""
    clock = Clock()
    secret = store.create({"name": "monthly", "budget_usd": 1.0, "budget_period": "month"})[1]
    slots = KeySlots.private(4)
    first = KeyRing(store, slots, clock).find(secret)
    second = KeyRing(store, slots, clock).find(secret)
    assert first is not None and second is not None
    first.settle(0.0, 0.7, clock.now)
    clock.now = float(calendar.timegm((2026, 12, 31, 23, 59, 59)))
    assert second.spent(clock.now) == pytest.approx(0.7)  # the same month, either worker
    assert second.reserve(1.0, 0.2, clock.now) is None
    clock.now = float(calendar.timegm((2027, 1, 1, 0, 0, 1)))
    first.settle(0.2, 0.1, clock.now)  # settled in the new month: counts there
    assert second.spent(clock.now) == pytest.approx(0.1)
    assert first.spent(clock.now) == pytest.approx(0.1) and first.reserved() == 0.0


def test_the_refusal_says_which_budget_and_when_it_resets(store: SqliteKeyStore) -> None:
    key = store.create({"name": "team", "budget_usd": 5, "budget_period": "month"})[0]
    error = budget_exceeded(key, 5.25, NOON)
    assert error.status == 429 and error.code == "budget_exceeded"
    assert error.message == (
        "the key 'team' has used $5.2500 of its monthly budget of $5.0000; "
        "it resets at 2027-01-01T00:00:00Z"
    )
    assert error.retry_after_s == pytest.approx(calendar.timegm((2027, 1, 1, 0, 0, 0)) - NOON)


def test_the_gate_reserves_the_estimate_and_a_failed_call_gives_it_back(
    store: SqliteKeyStore,
) -> None:
    class Prices:
        def cost(self, model: str, usage: object) -> float:
            return 0.01

        def estimate(self, model: str, prompt_tokens: int, max_output_tokens: int) -> float:
            return (prompt_tokens + max_output_tokens) / 1000.0

    clock = Clock()
    key, _ = store.create({"name": "gated", "budget_usd": 1.0, "tpm": 10_000})
    ring = KeyRing(store, KeySlots.private(4), clock)
    spend = SpendLog(store, 1.0, clock)
    gate = KeyGate(ring, spend, Prices(), clock=clock)
    request = ApiRequest(
        "chat", "m", {"messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 90},
        b"", tenant=key.id,
    )  # fmt: skip
    held = gate.reserve(request, "m")
    assert held is not None and held.usd == pytest.approx(0.1) and held.tokens == 100
    slot = ring.get(key.id)
    assert slot is not None and slot.reserved() == pytest.approx(0.1)
    held.failed(Fault.UNREACHABLE)
    assert slot.reserved() == 0.0 and slot.spent(clock.now) == 0.0
    held = gate.reserve(request, "m")
    assert held is not None
    held.settle_usage({"prompt_tokens": 10, "completion_tokens": 20})
    assert slot.spent(clock.now) == pytest.approx(0.01)
    assert spend.flush() == 1
    assert store.get(key.id).spend.usd == pytest.approx(0.01)  # type: ignore[union-attr]


def test_spend_a_flush_could_not_write_is_kept_for_the_next(store: SqliteKeyStore) -> None:
    key = store.create({"name": "flushed"})[0]

    class Broken:
        hasher = store.hasher
        calls = 0

        def add_spend(self, rows: Iterable[SpendRow]) -> None:
            self.calls += 1
            if self.calls == 1:
                raise StoreUnavailable("database is locked")
            store.add_spend(rows)

    clock = Clock()
    log = SpendLog(Broken(), 1.0, clock)  # type: ignore[arg-type]
    log.add(key.id, 1, 10, 20, 0.5)
    with pytest.raises(StoreUnavailable):
        log.flush()
    log.add(key.id, 1, 1, 2, 0.25)
    clock.now = MIDNIGHT + 5  # another day: an entry of its own
    log.add(key.id, 0, 0, 0, 0.125)
    assert log.pending() == 2 and log.flush() == 2 and log.pending() == 0
    spend = store.get(key.id).spend  # type: ignore[union-attr]
    assert spend.requests == 2 and spend.usd == pytest.approx(0.875)
    assert spend.in_period("day:2026-12-08") == pytest.approx(0.125)
