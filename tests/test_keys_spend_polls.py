"""Polling the node's figures never queries the key store on the event loop.

``/metrics``, ``/admin/stats`` and the dashboard's feed (polled every second or two by an
open page) show each tenant key's spend.  They read it from the worker's last read of
the store, which a task refreshes in a thread every ``KEY_SPEND_FLUSH_MS``: a poll that
queried SQLite itself stalled every request of its worker for milliseconds (more with
many keys, and up to the store's busy timeout behind another worker's flush).

In-process, with the app's lifespan run by Starlette's test client: every statement the
worker's store runs is traced, with whether it ran on a thread that runs an event loop.
The spend table's ``period`` index, which keeps the reads short, is checked here too.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from aigateway.api.ops import OpsRoutes
from aigateway.app import create_app
from aigateway.config import Settings
from aigateway.keys.model import SpendRow
from aigateway.keys.store import SqliteKeyStore
from aigateway.operations import Operations
from servers import wait_for

POLLS = ("/metrics", "/admin/stats", "/admin/dashboard.json")


def operations_of(app: object) -> Operations:
    routes = getattr(app, "routes", [])
    metrics = next(r for r in routes if isinstance(r, Route) and r.path == "/metrics")
    owner = metrics.endpoint.__self__  # type: ignore[attr-defined]
    assert isinstance(owner, OpsRoutes)
    return owner.operations


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[tuple[TestClient, Operations]]:
    settings = Settings(workers=1, data_dir=str(tmp_path), key_spend_flush_ms=50)
    app = create_app(settings)
    with TestClient(app, client=("127.0.0.1", 40000)) as client:  # loopback: admin
        yield client, operations_of(app)


def key_spend(client: TestClient, name: str) -> float | None:
    prefix = f'aigateway_key_spend_usd_total{{key="{name}"}} '
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return None


def test_polls_show_each_keys_spend_without_a_query_on_the_event_loop(
    worker: tuple[TestClient, Operations],
) -> None:
    client, operations = worker
    made = client.post("/admin/keys", json={"name": "polled"})
    assert made.status_code == 201, made.text
    key_id = made.json()["id"]
    store = operations.tenants.store
    assert store is not None
    client.get(f"/admin/keys/{key_id}")  # the worker has loaded the new key set

    on_loop: list[str] = []
    off_loop: list[str] = []

    def traced(statement: str) -> None:
        running = asyncio._get_running_loop() is not None
        (on_loop if running else off_loop).append(statement)

    store._db.set_trace_callback(traced)
    try:
        # Spend another worker flushed: it shows within a refresh or two.
        store.add_spend([SpendRow(key_id, time.time(), 3, 100, 50, 0.25)])
        shown = wait_for(lambda: key_spend(client, "polled"), timeout_s=10)
        assert shown == pytest.approx(0.25)
        for path in POLLS * 5:
            assert client.get(path).status_code == 200, path
        stats = client.get("/admin/stats").json()
        assert stats["keys"] == [
            {"name": "polled", "id": key_id, "requests": 3, "spend_usd": pytest.approx(0.25)}
        ]
    finally:
        store._db.set_trace_callback(None)
    assert on_loop == []
    assert any("spend" in statement for statement in off_loop)  # read, in a thread


def test_the_spend_table_is_indexed_by_period_also_in_a_store_made_before_the_index(
    tmp_path: Path,
) -> None:
    """Totals and the dashboard's day and month read one period's rows, not the table."""
    old = sqlite3.connect(tmp_path / "keys.db")
    old.execute(
        "CREATE TABLE spend (key_id TEXT NOT NULL, period TEXT NOT NULL,"
        " requests INTEGER NOT NULL DEFAULT 0, prompt_tokens INTEGER NOT NULL DEFAULT 0,"
        " completion_tokens INTEGER NOT NULL DEFAULT 0, usd REAL NOT NULL DEFAULT 0,"
        " PRIMARY KEY (key_id, period))"
    )
    old.execute("INSERT INTO spend VALUES ('key_1', 'total', 1, 2, 3, 0.5)")
    old.commit()
    old.close()
    store = SqliteKeyStore(str(tmp_path))  # an existing database gains the index
    try:
        plan = store._db.execute(
            "EXPLAIN QUERY PLAN SELECT usd FROM spend WHERE period = 'total'"
        ).fetchall()
        assert "spend_period" in str(plan)
        assert store.spend_rows() == [("key_1", "total", 1, 2, 3, 0.5)]
    finally:
        store.close()
