"""A key's budget in its shared-memory slot (``keys.slots``, ``hotpath.BudgetWords``):
what the two workers of a node agree on when a key is revoked and its slot goes to the
next key, in-process with an injected clock.

Two ``KeyRing``\\ s over one ``KeySlots`` region stand for two workers of a node.  The
compiled twin changes a budget without the region's lock; tests/test_hotpath_budget.py
shows both twins' words, and processes reserving from one budget at once.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from pathlib import Path

import pytest

from aigateway.keys.ring import KeyRing
from aigateway.keys.slots import KeySlots
from aigateway.keys.store import SqliteKeyStore

NOON = float(calendar.timegm((2026, 12, 7, 12, 0, 0)))


def clock() -> float:
    return NOON


@pytest.fixture
def store(tmp_path: Path) -> Iterable[SqliteKeyStore]:
    opened = SqliteKeyStore(str(tmp_path), slots=1)  # one slot: the next key takes it
    yield opened
    opened.close()


def test_a_revoked_keys_late_settlement_never_lands_on_the_slots_next_key(
    store: SqliteKeyStore,
) -> None:
    slots = KeySlots.private(1)
    first, second = KeyRing(store, slots, clock), KeyRing(store, slots, clock)
    old, old_secret = store.create({"name": "old", "budget_usd": 1.0})
    late = first.find(old_secret)  # a worker's call of the old key, still in flight
    assert late is not None and late.reserve(1.0, 0.4, NOON) is None
    store.revoke(old.id)
    first.changed()
    new, new_secret = store.create({"name": "new", "budget_usd": 1.0})
    assert new.slot == old.slot
    now_held = second.find(new_secret)
    assert now_held is not None
    assert now_held.spent(NOON) == 0.0 and now_held.reserved() == 0.0
    late.settle(0.4, 0.9, NOON)  # the old key's answer arrives: counted nowhere here
    assert late.reserve(1.0, 0.4, NOON) is None  # not refused for the new key's spend
    assert now_held.spent(NOON) == 0.0 and now_held.reserved() == 0.0
    assert now_held.reserve(1.0, 0.6, NOON) is None
    now_held.settle(0.6, 0.5, NOON)
    assert now_held.spent(NOON) == pytest.approx(0.5)


def test_both_workers_count_against_one_budget(store: SqliteKeyStore) -> None:
    slots = KeySlots.private(1)
    secret = store.create({"name": "shared", "budget_usd": 1.0})[1]
    first = KeyRing(store, slots, clock).find(secret)
    second = KeyRing(store, slots, clock).find(secret)
    assert first is not None and second is not None
    assert first.reserve(1.0, 0.6, NOON) is None
    assert second.reserve(1.0, 0.6, NOON) is None  # 0.6 < 1.0: let through, 1.2 used
    assert first.reserve(1.0, 0.1, NOON) == pytest.approx(1.2)  # refused on either
    first.settle(0.6, 0.3, NOON)
    second.settle(0.6, 0.0, NOON)  # failed before the provider counted anything
    assert second.spent(NOON) == pytest.approx(0.3) and first.reserved() == 0.0
