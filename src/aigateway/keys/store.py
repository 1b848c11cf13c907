"""Where keys and their spend are kept: the ``KeyStore`` protocol, and SQLite for one node.

Callers (the admin endpoints, each worker's ``KeyRing`` and ``SpendLog``) know only
``KeyStore``, so a store shared through Redis can take SQLite's place for several nodes
without touching them.  Reads happen when the key set changed, writes when an operator
changes a key and when a worker flushes its spend: never per request, and in a thread
(``asyncio.to_thread``), never on a serving worker's event loop.

``SqliteKeyStore`` keeps ``keys.db`` in ``AI_GATEWAY_DATA_DIR`` (with the pepper of the
secrets' hash beside it, ``keys.pepper``), from the standard library's ``sqlite3``:

* WAL mode, so the workers' reads never wait for a writer, and ``synchronous=NORMAL``:
  a committed flush survives the process being killed (it is in the WAL); only a crash
  of the operating system or the power may lose the last few.
* Every worker opens its own connection; writers wait up to ``BUSY_TIMEOUT_S`` for each
  other (``busy_timeout``) and run in a thread (``asyncio.to_thread``), never on the
  event loop.
* Spend is kept per key and period (``total``, ``day:YYYY-MM-DD``, ``month:YYYY-MM``):
  a flush adds to all three rows in one transaction, so a changed ``budget_period``
  finds its period's spend already counted.

Tables::

    keys   (id, name, digest, prefix, slot, fields JSON, created_at, revoked_at)
    spend  (key_id, period, requests, prompt_tokens, completion_tokens, usd), by period

The schema is applied on every opening (``IF NOT EXISTS``), so a database made by an
older version gains what it lacks (the ``spend_period`` index) when a worker opens it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol

import orjson

from aigateway.errors import GatewayError, NotFound
from aigateway.keys.model import KeySpend, SpendRow, TenantKey, period_label
from aigateway.keys.secrets import SecretHasher, load_pepper, new_id, new_secret, shown_prefix

__all__ = (
    "BUSY_TIMEOUT_S",
    "KEY_SLOTS",
    "KeyStore",
    "SqliteKeyStore",
    "StoreUnavailable",
    "key_not_found",
)

#: Keys not revoked that a node holds at once: each takes one slot of shared memory.
KEY_SLOTS: Final = 4096
BUSY_TIMEOUT_S: Final = 5.0
DATABASE: Final = "keys.db"
PEPPER: Final = "keys.pepper"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    digest BLOB NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    slot INTEGER NOT NULL,
    fields TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS keys_live_name ON keys (name) WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS keys_live_slot ON keys (slot) WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS spend (
    key_id TEXT NOT NULL,
    period TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, period)
);
-- One period's rows (every key's total, today, this month) without scanning the table,
-- which grows by a row per key and day (made on opening a database that lacks it).
CREATE INDEX IF NOT EXISTS spend_period ON spend (period);
CREATE TABLE IF NOT EXISTS outbox (
    key_id TEXT NOT NULL,
    period TEXT NOT NULL,
    requests INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    usd REAL NOT NULL
);
"""
# With REDIS_URL: spend not yet sent to Redis (the node agent sends it, then deletes it).
_ADD_OUTBOX = "INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?)"
_ADD_SPEND = """
INSERT INTO spend (key_id, period, requests, prompt_tokens, completion_tokens, usd)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (key_id, period) DO UPDATE SET
    requests = requests + excluded.requests,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens,
    usd = usd + excluded.usd
"""
_KEY_COLUMNS = "id, name, digest, prefix, slot, fields, created_at, revoked_at"


class StoreUnavailable(Exception):
    """The store could not be read or written (the message says why)."""


class KeyStore(Protocol):
    """What the gateway needs of wherever keys are kept."""

    hasher: SecretHasher

    def create(self, fields: Mapping[str, Any]) -> tuple[TenantKey, str]:
        """A new key and, this once, its secret; 409 when the name is taken or every
        slot is."""
        ...

    def keys(self) -> list[TenantKey]:
        """Every key, revoked ones too, with its spend in its life, today and this month."""
        ...

    def keys_in(self, periods: Iterable[str]) -> list[TenantKey]:
        """Every key, revoked ones too, with its spend in ``periods`` only (labels such
        as ``total`` and ``day:2026-12-07``; usage counts come with ``total``)."""
        ...

    def get(self, key_id: str) -> TenantKey | None: ...

    def update(self, key_id: str, fields: Mapping[str, Any]) -> TenantKey:
        """The key with ``fields`` changed (404 unknown or revoked, 409 name taken)."""
        ...

    def revoke(self, key_id: str) -> TenantKey:
        """Revoke the key for good (404 unknown or already revoked)."""
        ...

    def add_spend(self, rows: Iterable[SpendRow]) -> None:
        """Add what workers saw keys use, all rows or none."""
        ...

    def spend_by_name(self) -> list[tuple[str, str, int, float]]:
        """(name, id, requests, USD) of every key's whole life, revoked ones too."""
        ...

    def close(self) -> None: ...


def key_not_found(key_id: str) -> NotFound:
    return NotFound(f"no key {key_id!r} (or it was revoked)", param="id", code="key_not_found")


def _conflict(message: str, code: str) -> GatewayError:
    return GatewayError(message, status=409, error_type="invalid_request_error", code=code)


class SqliteKeyStore:
    """Keys and spend in ``<directory>/keys.db`` (see module)."""

    def __init__(self, directory: str, slots: int = KEY_SLOTS, *, outbox: bool = False) -> None:
        self.path = os.path.join(directory, DATABASE)
        self.slots = slots
        self.outbox = outbox  # also queue spend for the node agent (REDIS_URL)
        self._lock = threading.Lock()  # one connection, used from threads in turn
        try:
            self.hasher = SecretHasher(load_pepper(os.path.join(directory, PEPPER)))
            self._db = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,  # transactions are explicit
                check_same_thread=False,
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._write() as db:
                for statement in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                    db.execute(statement)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"cannot open the key store {self.path}: {exc}") from exc

    # -- keys ----------------------------------------------------------------------------

    def create(self, fields: Mapping[str, Any]) -> tuple[TenantKey, str]:
        secret = new_secret()
        key_id = new_id()
        limits = {name: value for name, value in fields.items() if name != "name"}
        with self._write() as db:
            self._check_name(db, str(fields["name"]), None)
            taken = {row[0] for row in db.execute("SELECT slot FROM keys WHERE revoked_at IS NULL")}
            slot = next((i for i in range(self.slots) if i not in taken), None)
            if slot is None:
                raise _conflict(
                    f"every one of the node's {self.slots} key slots is taken: revoke a key first",
                    "key_capacity_reached",
                )
            db.execute(
                f"INSERT INTO keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    key_id,
                    fields["name"],
                    self.hasher.digest(secret),
                    shown_prefix(secret),
                    slot,
                    orjson.dumps(limits).decode(),
                    time.time(),
                ),
            )
        key = self.get(key_id)
        assert key is not None
        return key, secret

    def keys(self) -> list[TenantKey]:
        now = time.time()
        return self.keys_in(("total", period_label("day", now), period_label("month", now)))

    def keys_in(self, periods: Iterable[str]) -> list[TenantKey]:
        # One period's rows each, by the spend_period index: never the table's history,
        # which grows by a row per key and day.
        wanted = tuple(periods)
        marks = ", ".join("?" * len(wanted))
        with self._read() as db:
            spend = _spend_by_key(
                db.execute(f"SELECT * FROM spend WHERE period IN ({marks})", wanted)
                if wanted
                else ()
            )
            rows = db.execute(f"SELECT {_KEY_COLUMNS} FROM keys ORDER BY created_at").fetchall()
        return [_key(row, spend.get(row[0], KeySpend())) for row in rows]

    def get(self, key_id: str) -> TenantKey | None:
        with self._read() as db:
            row = db.execute(f"SELECT {_KEY_COLUMNS} FROM keys WHERE id = ?", (key_id,)).fetchone()
            if row is None:
                return None
            spend = _spend_by_key(db.execute("SELECT * FROM spend WHERE key_id = ?", (key_id,)))
        return _key(row, spend.get(key_id, KeySpend()))

    def update(self, key_id: str, fields: Mapping[str, Any]) -> TenantKey:
        with self._write() as db:
            row = db.execute(
                "SELECT fields FROM keys WHERE id = ? AND revoked_at IS NULL", (key_id,)
            ).fetchone()
            if row is None:
                raise key_not_found(key_id)
            limits = orjson.loads(row[0])
            limits.update({name: value for name, value in fields.items() if name != "name"})
            if "name" in fields:
                self._check_name(db, str(fields["name"]), key_id)
                db.execute("UPDATE keys SET name = ? WHERE id = ?", (fields["name"], key_id))
            db.execute(
                "UPDATE keys SET fields = ? WHERE id = ?", (orjson.dumps(limits).decode(), key_id)
            )
        key = self.get(key_id)
        assert key is not None
        return key

    def revoke(self, key_id: str) -> TenantKey:
        with self._write() as db:
            done = db.execute(
                "UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), key_id),
            )
            if done.rowcount != 1:
                raise key_not_found(key_id)
        key = self.get(key_id)
        assert key is not None
        return key

    # -- spend ---------------------------------------------------------------------------

    def add_spend(self, rows: Iterable[SpendRow]) -> None:
        values = []
        for row in rows:
            counts = (row.requests, row.prompt_tokens, row.completion_tokens, row.usd)
            for period in ("total", period_label("day", row.at), period_label("month", row.at)):
                values.append((row.key_id, period, *counts))
        if values:
            with self._write() as db:
                db.executemany(_ADD_SPEND, values)
                if self.outbox:
                    db.executemany(_ADD_OUTBOX, values)

    def spend_by_name(self) -> list[tuple[str, str, int, float]]:
        with self._read() as db:
            rows = db.execute(
                "SELECT keys.name, keys.id, spend.requests, spend.usd FROM keys"
                " JOIN spend ON spend.key_id = keys.id AND spend.period = 'total'"
                " ORDER BY keys.name, keys.created_at"
            ).fetchall()
        return [(name, key_id, requests, usd) for name, key_id, requests, usd in rows]

    def spend_in(self, periods: Iterable[str]) -> dict[str, float]:
        """USD every key (revoked ones too) spent in each of ``periods`` (labels such as
        ``day:2026-12-07``): read-only, one scan of the spend table (a row per key and
        day, month and life), so callers polling it keep the answer a few seconds."""
        wanted = tuple(periods)
        if not wanted:
            return {}
        marks = ", ".join("?" * len(wanted))
        with self._read() as db:
            rows = db.execute(
                f"SELECT period, SUM(usd) FROM spend WHERE period IN ({marks}) GROUP BY period",
                wanted,
            ).fetchall()
        found = dict.fromkeys(wanted, 0.0)
        found.update({period: usd or 0.0 for period, usd in rows})
        return found

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- the node's copy of a shared store (cluster/key_store.py) -------------------------

    def rows(self) -> list[tuple[Any, ...]]:
        """Every key as its row (``id, name, digest, prefix, slot, fields, created_at,
        revoked_at``)."""
        with self._read() as db:
            return db.execute(f"SELECT {_KEY_COLUMNS} FROM keys").fetchall()

    def put_rows(self, rows: Iterable[tuple[Any, ...]], *, replace: bool = False) -> None:
        """Write keys as the shared store has them (``replace``: and only those); a live
        key here that holds another's name or slot there gives way."""
        with self._write() as db:
            if replace:
                db.execute("DELETE FROM keys")
            for row in rows:
                if row[7] is None:
                    db.execute(
                        "DELETE FROM keys WHERE id != ? AND revoked_at IS NULL"
                        " AND (name = ? OR slot = ?)",
                        (row[0], row[1], row[4]),
                    )
                db.execute(
                    f"INSERT OR REPLACE INTO keys ({_KEY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)", row
                )

    def spend_rows(self) -> list[tuple[Any, ...]]:
        """(key id, period, requests, prompt, completion, USD) of every key and period."""
        with self._read() as db:
            return db.execute("SELECT * FROM spend").fetchall()

    def take_outbox(self) -> tuple[int, list[tuple[Any, ...]]]:
        """The spend not yet sent (summed by key and period) and the last row it covers."""
        with self._read() as db:
            last = db.execute("SELECT coalesce(max(rowid), 0) FROM outbox").fetchone()[0]
            rows = db.execute(
                "SELECT key_id, period, sum(requests), sum(prompt_tokens),"
                " sum(completion_tokens), sum(usd) FROM outbox WHERE rowid <= ?"
                " GROUP BY key_id, period",
                (last,),
            ).fetchall()
        return int(last), rows

    def settle_outbox(self, last: int, totals: Iterable[tuple[Any, ...]]) -> None:
        """The outbox up to ``last`` was sent; the shared totals (key id, period, requests,
        prompt, completion, USD) become this copy's, plus what is still to send."""
        with self._write() as db:
            db.execute("DELETE FROM outbox WHERE rowid <= ?", (last,))
            for key_id, period, *counts in totals:
                left = db.execute(
                    "SELECT coalesce(sum(requests), 0), coalesce(sum(prompt_tokens), 0),"
                    " coalesce(sum(completion_tokens), 0), coalesce(sum(usd), 0)"
                    " FROM outbox WHERE key_id = ? AND period = ?",
                    (key_id, period),
                ).fetchone()
                db.execute(
                    "INSERT OR REPLACE INTO spend VALUES (?, ?, ?, ?, ?, ?)",
                    (key_id, period, *(a + b for a, b in zip(counts, left, strict=True))),
                )

    # -- internals -----------------------------------------------------------------------

    def _check_name(self, db: sqlite3.Connection, name: str, key_id: str | None) -> None:
        row = db.execute(
            "SELECT id FROM keys WHERE name = ? AND revoked_at IS NULL", (name,)
        ).fetchone()
        if row is not None and row[0] != key_id:
            raise _conflict(f"a key named {name!r} exists already", "key_name_taken")

    def _read(self) -> _Transaction:
        return _Transaction(self._db, self._lock, "BEGIN")

    def _write(self) -> _Transaction:
        # IMMEDIATE: the write lock is taken up front, so two writers never deadlock
        # upgrading their read locks; the busy timeout orders them.
        return _Transaction(self._db, self._lock, "BEGIN IMMEDIATE")


class _Transaction:
    """One transaction on the store's connection (committed unless it raised)."""

    __slots__ = ("_begin", "_db", "_lock")

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock, begin: str) -> None:
        self._db, self._lock, self._begin = db, lock, begin

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._db.execute(self._begin)
        except sqlite3.Error as exc:
            self._lock.release()
            raise StoreUnavailable(f"the key store is unavailable: {exc}") from exc
        return self._db

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        try:
            self._db.execute("COMMIT" if kind is None else "ROLLBACK")
        except sqlite3.Error as exc:
            if kind is None:
                raise StoreUnavailable(f"the key store could not commit: {exc}") from exc
        finally:
            self._lock.release()


def _spend_by_key(rows: Iterable[tuple[Any, ...]]) -> dict[str, KeySpend]:
    found: dict[str, dict[str, Any]] = {}
    for key_id, period, requests, prompt, completion, usd in rows:
        entry = found.setdefault(key_id, {"periods": []})
        if period == "total":
            entry.update(
                requests=requests, prompt_tokens=prompt, completion_tokens=completion, usd=usd
            )
        else:
            entry["periods"].append((period, usd))
    return {
        key_id: KeySpend(**{**entry, "periods": tuple(entry["periods"])})
        for key_id, entry in found.items()
    }


def _key(row: tuple[Any, ...], spend: KeySpend) -> TenantKey:
    key_id, name, digest, prefix, slot, fields, created_at, revoked_at = row
    limits = orjson.loads(fields)
    if "models" in limits:
        limits["models"] = tuple(limits["models"] or ())
    return TenantKey(
        id=key_id,
        name=name,
        digest=bytes(digest),
        prefix=prefix,
        slot=slot,
        created_at=created_at,
        revoked_at=revoked_at,
        spend=spend,
        **limits,
    )
