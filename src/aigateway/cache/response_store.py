"""Stored Responses (``store: true``): what ``previous_response_id`` and
``GET /v1/responses/{id}`` read.

A record is the Response object the client received and the conversation that led to it
(every input item, the earlier turns included), so a later request names only the id and
its new items. Records belong to an owner, a hash of the client's key (``client_scope``):
an id is found only by the key that created it, so tenants never read each other's
conversations whatever ``CACHE_SCOPE`` says.

``ResponseStore`` is the seam: one node keeps its records in an LMDB environment of their
own (every worker process shares it); a store shared by several nodes (Redis) is another
implementation of the same four methods.

Lifetime: a record lives ``ttl_s`` (RESPONSES_STORE_DAYS, 30 days by default) unless the
size budget (RESPONSES_STORE_MB) is reached first, when the oldest records go first. By
default the environment lives in the node's directory on tmpfs and goes away with the
server; RESPONSES_STORE_DIR keeps it on a disk of your choice, across restarts.

Databases inside the environment::

    records  owner NUL response id -> expires_at (f64), created (u64 ns) + JSON
             {"response", "input", "holder"}
    items    owner NUL item id     -> response id   (``item_reference`` lookups)
    order    created (u64 ns, big-endian) + owner NUL response id -> b""   (oldest first)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import lmdb
import orjson

from aigateway.cache.lmdb_order import CREATED as _CREATED
from aigateway.cache.lmdb_order import HEAD as _HEAD
from aigateway.cache.lmdb_order import expired_oldest_first

LOW_WATER = 0.9  # a full store sheds its oldest records down to this share of the budget
SWEEP_BATCH = 64  # expired records removed per write, oldest first


@dataclass(slots=True)
class StoredResponse:
    response: dict[str, Any]  # the Response object, as GET /v1/responses/{id} returns it
    input: list[dict[str, Any]]  # the conversation's input items before ``response.output``
    # The provider that keeps this response too (OpenAI's Responses API, store on): it is
    # sent ``previous_response_id``; None: only the gateway has it (see api/responses.py).
    holder: str | None = None


class ResponseStore(Protocol):
    """Where stored responses live. Implementations never raise for a missing record."""

    def put(self, owner: str, record: StoredResponse) -> None: ...

    def get(self, owner: str, response_id: str) -> StoredResponse | None: ...

    def item(self, owner: str, item_id: str) -> dict[str, Any] | None: ...

    def delete(self, owner: str, response_id: str) -> bool: ...


class LmdbResponseStore:
    """The node's stored responses, shared by its worker processes."""

    def __init__(
        self, path: str, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        os.makedirs(path, exist_ok=True)
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._env = lmdb.open(
            path, map_size=max(4 * max_bytes + (64 << 20), 128 << 20), max_dbs=3,
            subdir=True, sync=False, metasync=False, lock=True, readahead=False,
        )  # fmt: skip
        self._page_size: int = self._env.stat()["psize"]
        self._records = self._env.open_db(b"records")
        self._items = self._env.open_db(b"items")
        self._order = self._env.open_db(b"order")

    def close(self) -> None:
        self._env.close()

    def put(self, owner: str, record: StoredResponse) -> None:
        response_id = str(record.response["id"])
        key = _key(owner, response_id)
        now = self._clock()
        created = int(now * 1e9)
        value = _HEAD.pack(now + self.ttl_s, created) + orjson.dumps(
            {"response": record.response, "input": record.input, "holder": record.holder}
        )
        with self._env.begin(write=True) as txn:
            self._sweep(txn, now)
            old = txn.get(key, db=self._records)
            if old is not None:  # the same id again: its older copy goes
                self._remove(txn, key, old)
            txn.put(key, value, db=self._records)
            txn.put(_CREATED.pack(created) + key, b"", db=self._order)
            for item in record.response.get("output") or ():
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    txn.put(_key(owner, item["id"]), response_id.encode(), db=self._items)
            if self._footprint(txn) > self.max_bytes:
                self._shed(txn)

    def get(self, owner: str, response_id: str) -> StoredResponse | None:
        with self._env.begin(db=self._records, buffers=True) as txn:
            raw = txn.get(_key(owner, response_id))
            if raw is None or _HEAD.unpack_from(raw)[0] <= self._clock():
                return None
            data = orjson.loads(bytes(raw[_HEAD.size :]))
        return StoredResponse(data["response"], data["input"], data.get("holder"))

    def item(self, owner: str, item_id: str) -> dict[str, Any] | None:
        with self._env.begin(db=self._items) as txn:
            response_id = txn.get(_key(owner, item_id))
        if response_id is None:
            return None
        record = self.get(owner, response_id.decode())
        if record is None:
            return None
        for item in record.response.get("output") or ():
            if isinstance(item, dict) and item.get("id") == item_id:
                return item
        return None

    def delete(self, owner: str, response_id: str) -> bool:
        key = _key(owner, response_id)
        with self._env.begin(write=True) as txn:
            raw = txn.get(key, db=self._records)
            if raw is None:
                return False
            alive: bool = _HEAD.unpack_from(raw)[0] > self._clock()
            self._remove(txn, key, raw)
        return alive

    def count(self) -> int:
        with self._env.begin(db=self._records) as txn:
            entries: int = txn.stat(self._records)["entries"]
            return entries

    # -- internals ----------------------------------------------------------------------

    def _sweep(self, txn: lmdb.Transaction, now: float) -> None:
        """Remove a few expired records, oldest first (the lifetime is the same for all)."""
        for key, raw in expired_oldest_first(txn, self._order, self._records, now, SWEEP_BATCH):
            if raw is not None:
                self._remove(txn, key, raw, ordered=False)

    def _shed(self, txn: lmdb.Transaction) -> None:
        """Over the budget: the oldest records go until the pages fit ``LOW_WATER`` of it."""
        cursor = txn.cursor(db=self._order)
        while self._footprint(txn) > self.max_bytes * LOW_WATER and cursor.first():
            key = bytes(cursor.key())[_CREATED.size :]
            cursor.delete()
            raw = txn.get(key, db=self._records)
            if raw is not None:
                self._remove(txn, key, raw, ordered=False)

    def _remove(self, txn: lmdb.Transaction, key: bytes, raw: Any, ordered: bool = True) -> None:
        owner = key.partition(b"\x00")[0].decode()
        created = _HEAD.unpack_from(raw)[1]
        data = orjson.loads(bytes(raw[_HEAD.size :]))
        for item in data["response"].get("output") or ():
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                txn.delete(_key(owner, item["id"]), db=self._items)
        txn.delete(key, db=self._records)
        if ordered:
            txn.delete(_CREATED.pack(created) + key, db=self._order)

    def _footprint(self, txn: lmdb.Transaction) -> int:
        pages = 0
        for db in (self._records, self._items, self._order):
            stat = txn.stat(db)
            pages += stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
        return pages * self._page_size


MAX_ID_CHARS = 200  # LMDB keys stop at 511 bytes; no id the gateway makes is this long


def _key(owner: str, name: str) -> bytes:
    return f"{owner}\x00{name[:MAX_ID_CHARS]}".encode()


class MemoryResponseStore:
    """A worker's own stored responses, for an app run without a node directory (tests,
    embedding ``create_app``): the same lifetime, at most ``max_records``, oldest first out.
    """

    def __init__(
        self, ttl_s: float, max_records: int = 1000, clock: Callable[[], float] = time.time
    ) -> None:
        self.ttl_s = ttl_s
        self.max_records = max_records
        self._clock = clock
        self._records: dict[tuple[str, str], tuple[float, StoredResponse]] = {}

    def put(self, owner: str, record: StoredResponse) -> None:
        key = (owner, str(record.response["id"]))
        self._records.pop(key, None)
        self._records[key] = (self._clock() + self.ttl_s, record)
        while len(self._records) > self.max_records:
            del self._records[next(iter(self._records))]

    def get(self, owner: str, response_id: str) -> StoredResponse | None:
        found = self._records.get((owner, response_id))
        if found is None or found[0] <= self._clock():
            return None
        return found[1]

    def item(self, owner: str, item_id: str) -> dict[str, Any] | None:
        now = self._clock()
        for (who, _), (expires_at, record) in self._records.items():
            if who != owner or expires_at <= now:
                continue
            for item in record.response.get("output") or ():
                if isinstance(item, dict) and item.get("id") == item_id:
                    return item
        return None

    def delete(self, owner: str, response_id: str) -> bool:
        return self.get(owner, response_id) is not None and bool(
            self._records.pop((owner, response_id), None)
        )

    def close(self) -> None:
        self._records.clear()


class NodeResponses:
    """What ``/v1/responses`` uses, without Redis: the node's store, awaited like the
    cluster's (``cluster/response_tier.py``)."""

    def __init__(self, local: ResponseStore) -> None:
        self.local = local

    async def put(self, owner: str, record: StoredResponse) -> None:
        self.local.put(owner, record)

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        return self.local.get(owner, response_id)

    async def item(self, owner: str, item_id: str) -> dict[str, Any] | None:
        return self.local.item(owner, item_id)

    async def delete(self, owner: str, response_id: str) -> bool:
        return self.local.delete(owner, response_id)


class Responses(Protocol):
    """The stored responses of ``/v1/responses``: the node's, or the cluster's."""

    async def put(self, owner: str, record: StoredResponse) -> None: ...

    async def get(self, owner: str, response_id: str) -> StoredResponse | None: ...

    async def item(self, owner: str, item_id: str) -> dict[str, Any] | None: ...

    async def delete(self, owner: str, response_id: str) -> bool: ...
