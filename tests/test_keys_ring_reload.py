"""A worker reloads its tenant keys off the event loop, and reads no spend history to do it.

Whenever the key set changes (a key made, changed or revoked, on any worker), every
worker reloads its keys from the store.  That read runs in a thread: the worker goes on
serving (its ``/v1`` requests wait for the read), and swaps in the new keys whole when
the read is done.  It reads the keys table and only the spend of the periods a budget
may count now (the key's life, today, this month), through the spend table's ``period``
index, never the table's history (a row per key and day): with 1,000 keys and a year of
spend, reading everything took half a second of every worker's loop on each change.

In-process, the app's lifespan run by Starlette's test client: "another worker" is the
test itself, writing the store and moving the node's generation as the admin endpoint
does.  Every statement the worker's store runs is traced, with whether it ran on a
thread that runs an event loop, and the plan of each spend read is asked of SQLite.
"""

from __future__ import annotations

import asyncio
import calendar
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from aigateway.api.ops import OpsRoutes
from aigateway.app import create_app
from aigateway.config import Settings
from aigateway.keys.model import SpendRow
from aigateway.keys.ring import KeyRing
from aigateway.keys.service import TenantKeys
from aigateway.keys.slots import KeySlots
from aigateway.keys.store import SqliteKeyStore
from servers import wait_for

NOON = float(calendar.timegm((2026, 12, 15, 12, 0, 0)))
DAY = 86400.0


class Trace:
    """The statements a store ran, on a thread with a running event loop or not."""

    def __init__(self) -> None:
        self.on_loop: list[str] = []
        self.off_loop: list[str] = []

    def __call__(self, statement: str) -> None:
        running = asyncio._get_running_loop() is not None
        (self.on_loop if running else self.off_loop).append(statement)

    def key_reads(self) -> list[str]:
        return [s for s in self.off_loop if "FROM keys ORDER BY created_at" in s]


def tenants_of(app: object) -> TenantKeys:
    routes = getattr(app, "routes", [])
    metrics = next(r for r in routes if isinstance(r, Route) and r.path == "/metrics")
    owner = metrics.endpoint.__self__  # type: ignore[attr-defined]
    assert isinstance(owner, OpsRoutes)
    return owner.operations.tenants


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[tuple[TestClient, TenantKeys]]:
    # A year of spend for a few keys, so a whole-table read would show in the plans.
    store = SqliteKeyStore(str(tmp_path))
    ids = [store.create({"name": f"old-{n}"})[0].id for n in range(3)]
    for day in range(365):
        store.add_spend([SpendRow(k, NOON - day * DAY, 1, 10, 10, 0.01) for k in ids])
    store.close()
    app = create_app(Settings(workers=1, data_dir=str(tmp_path), key_spend_flush_ms=50))
    with TestClient(app, client=("127.0.0.1", 40000)) as client:  # loopback: admin
        yield client, tenants_of(app)


def models(client: TestClient, secret: str) -> int:
    answer = client.get("/v1/models", headers={"authorization": f"Bearer {secret}"})
    return answer.status_code


def full_scans(path: str, statements: list[str]) -> list[str]:
    """The statements that read the spend table whole (SQLite's plan says SCAN spend)."""
    db = sqlite3.connect(path)
    try:
        return [
            statement
            for statement in statements
            if "spend" in statement
            and statement.lstrip().upper().startswith("SELECT")
            and any(
                "SCAN spend" in row[-1]
                for row in db.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()
            )
        ]
    finally:
        db.close()


def test_a_change_is_reloaded_in_a_thread_without_reading_the_spend_history(
    worker: tuple[TestClient, TenantKeys],
) -> None:
    client, tenants = worker
    store, ring = tenants.store, tenants.ring
    assert store is not None and ring is not None
    trace = Trace()
    store._db.set_trace_callback(trace)
    try:
        made = client.post("/admin/keys", json={"name": "made-here"})  # this worker
        assert made.status_code == 201, made.text
        assert made.json()["usage"]["in_flight"] == 0  # its answer shows the loaded key
        assert models(client, made.json()["key"]) == 200
        key, secret = store.create({"name": "made-elsewhere"})  # another worker
        ring.changed()
        assert models(client, secret) == 200  # the next request waited for the reload
        store.revoke(key.id)
        ring.changed()
        assert wait_for(lambda: models(client, secret) == 401, timeout_s=10)
    finally:
        store._db.set_trace_callback(None)
    assert trace.on_loop == []
    assert len(trace.key_reads()) >= 3  # one read of the keys per change
    assert full_scans(store.path, trace.off_loop) == []


def test_while_a_reload_waits_the_worker_serves_and_changes_made_meanwhile_coalesce(
    worker: tuple[TestClient, TenantKeys],
) -> None:
    """A read of the keys held up (as behind a slow store) stalls no endpoint but ``/v1``,
    which waits for it at most a second and then goes on with the keys it had."""
    client, tenants = worker
    store, ring = tenants.store, tenants.ring
    assert store is not None and ring is not None
    kept = client.post("/admin/keys", json={"name": "kept"}).json()["key"]
    trace = Trace()
    store._db.set_trace_callback(trace)
    try:
        with store._lock:  # the reload's read cannot start
            for _ in range(5):  # five changes in a row
                ring.changed()
                assert client.get("/admin/stats").status_code == 200
            assert models(client, kept) == 200  # waited, then served on the old keys
            assert ring._task is not None  # the read it started, still waiting
        assert wait_for(lambda: ring._task is None, timeout_s=10)
    finally:
        store._db.set_trace_callback(None)
    assert trace.on_loop == []
    assert 1 <= len(trace.key_reads()) <= 2  # one read, and one for changes during it


def test_the_reloaded_keys_carry_the_spend_of_their_budget_period_now(tmp_path: Path) -> None:
    """Only today, this month and the whole life are read: what a budget counts."""
    store = SqliteKeyStore(str(tmp_path), slots=4)
    try:
        made = {
            period: store.create({"name": period, "budget_usd": 9.0, "budget_period": period})
            for period in ("day", "month", "total")
        }
        for key, _ in made.values():  # today, yesterday (this month), last month
            store.add_spend(
                [
                    SpendRow(key.id, NOON, 1, 10, 5, 0.25),
                    SpendRow(key.id, NOON - DAY, 1, 10, 5, 0.5),
                    SpendRow(key.id, NOON - 30 * DAY, 1, 10, 5, 1.0),
                ]
            )
        ring = KeyRing(store, KeySlots.private(4), lambda: NOON)  # no loop: read at once
        spent = {}
        for period, (_, secret) in made.items():
            slot = ring.find(secret)
            assert slot is not None
            spent[period] = slot.spent(NOON)
            assert slot.key.spend.requests == 3 and slot.key.spend.prompt_tokens == 30
        assert spent == {
            "day": pytest.approx(0.25),
            "month": pytest.approx(0.75),
            "total": pytest.approx(1.75),
        }
    finally:
        store.close()
