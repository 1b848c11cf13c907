"""Gemini's thought signatures for the whole node: every worker process reads what any of
them kept (``providers/_gemini_calls.py`` says what is kept and why).

A conversation's next turn may reach another worker than the one that served the call;
with a map per worker it would lose the signature and fall back to Google's placeholder
(Gemini then reasons without its earlier thoughts). So the node keeps them in an LMDB
environment of their own, in the node's directory, with the rules of the per-worker map:

* each entry lives ``ttl_s`` (``SIGNATURE_TTL_S``, six hours);
* at most ``max_entries``: past it the oldest go first, and a few expired ones are swept on
  every write (the lifetime is the same for all, so the oldest expire first).

Databases::

    calls  call id -> expires_at (f64), created (u64 ns) + JSON [name, signature, gemini id]
    order  created (u64 ns, big-endian) + call id -> b""   (oldest first)

A store that cannot read or write never fails a request: the call is then sent as if its
signature were unknown (the placeholder).
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Callable
from typing import Any

import lmdb
import orjson

from aigateway.cache.lmdb_order import CREATED as _CREATED
from aigateway.cache.lmdb_order import HEAD as _HEAD
from aigateway.cache.lmdb_order import expired_oldest_first
from aigateway.providers._gemini_calls import MAX_SIGNATURES, SIGNATURE_TTL_S, Kept

__all__ = ["LmdbSignatures"]

logger = logging.getLogger("aigateway.gemini")

SWEEP_BATCH = 32
MAX_KEY_BYTES = 256  # the gateway's ids are 29 characters; LMDB's limit is 511 bytes


class LmdbSignatures:
    """The node's signatures by OpenAI tool-call id; the same methods as the per-worker
    ``ThoughtSignatures``."""

    def __init__(
        self,
        path: str,
        ttl_s: float = SIGNATURE_TTL_S,
        max_entries: int = MAX_SIGNATURES,
        clock: Callable[[], float] = time.time,
        map_bytes: int = 256 << 20,
    ) -> None:
        os.makedirs(path, exist_ok=True)
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._env = lmdb.open(
            path, map_size=map_bytes, max_dbs=2, subdir=True, sync=False, metasync=False,
            lock=True, readahead=False,
        )  # fmt: skip
        self._calls = self._env.open_db(b"calls")
        self._order = self._env.open_db(b"order")
        # With REDIS_URL: each signature kept is also handed to the cluster (a worker's
        # ``cluster/signature_sync.SignatureFeed``), for the other nodes' stores.
        self.published: Callable[[str, bytes], None] | None = None

    def close(self) -> None:
        self._env.close()

    def __len__(self) -> int:
        with self._env.begin() as txn:
            entries: int = txn.stat(self._calls)["entries"]
            return entries

    def keep(self, call_id: str, name: str, signature: Any, gemini_id: Any) -> None:
        key = call_id.encode()[:MAX_KEY_BYTES]
        now = self._clock()
        created = int(now * 1e9)
        value = _HEAD.pack(now + self._ttl_s, created) + orjson.dumps(
            [
                name,
                signature if isinstance(signature, str) and signature else None,
                gemini_id if isinstance(gemini_id, str) and gemini_id else None,
            ]
        )
        self._put(key, value, now)
        if self.published is not None:
            self.published(call_id, value)

    def add(self, call_id: str, value: bytes) -> bool:
        """A signature another node kept (``value`` as ``keep`` encodes it), unless this
        node has it already or it expired; whether it was added."""
        key = call_id.encode()[:MAX_KEY_BYTES]
        now = self._clock()
        try:
            expires_at = _HEAD.unpack_from(value)[0]
            with self._env.begin(db=self._calls) as txn:
                if expires_at <= now or txn.get(key) is not None:
                    return False
        except (lmdb.Error, struct.error):
            return False
        # stamped with this node's clock: the order of eviction is this node's
        value = _HEAD.pack(expires_at, int(now * 1e9)) + value[_HEAD.size :]
        return self._put(key, value, now)

    def _put(self, key: bytes, value: bytes, now: float) -> bool:
        created = _HEAD.unpack_from(value)[1]
        try:
            with self._env.begin(write=True) as txn:
                self._sweep(txn, now)
                old = txn.get(key, db=self._calls)
                if old is not None:
                    txn.delete(_CREATED.pack(_HEAD.unpack_from(old)[1]) + key, db=self._order)
                txn.put(key, value, db=self._calls)
                txn.put(_CREATED.pack(created) + key, b"", db=self._order)
                self._shed(txn)
        except lmdb.Error as exc:
            logger.warning("could not keep a thought signature: %r", exc)
            return False
        return True

    def recall(self, call_id: Any) -> Kept | None:
        if not isinstance(call_id, str) or not call_id:
            return None
        try:
            with self._env.begin(db=self._calls, buffers=True) as txn:
                raw = txn.get(call_id.encode()[:MAX_KEY_BYTES])
                if raw is None or _HEAD.unpack_from(raw)[0] <= self._clock():
                    return None
                name, signature, gemini_id = orjson.loads(bytes(raw[_HEAD.size :]))
        except (lmdb.Error, orjson.JSONDecodeError, ValueError) as exc:
            logger.warning("could not read a thought signature: %r", exc)
            return None
        return Kept(str(name), signature, gemini_id)

    def _sweep(self, txn: lmdb.Transaction, now: float) -> None:
        for key, raw in expired_oldest_first(txn, self._order, self._calls, now, SWEEP_BATCH):
            if raw is not None:
                txn.delete(key, db=self._calls)

    def _shed(self, txn: lmdb.Transaction) -> None:
        cursor = txn.cursor(db=self._order)
        while txn.stat(self._calls)["entries"] > self._max_entries and cursor.first():
            key = bytes(cursor.key())[_CREATED.size :]
            cursor.delete()
            txn.delete(key, db=self._calls)
