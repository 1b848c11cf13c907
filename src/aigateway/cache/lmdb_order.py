"""Records kept in LMDB with one lifetime for all, and an ``order`` table oldest first.

Both the stored Responses (``cache.response_store``) and Gemini's thought signatures
(``cache.signatures``) keep each record behind a head (``HEAD``: when it expires, when it
was made) and index it in an ``order`` table keyed by the creation time (``CREATED``,
big-endian so the keys sort oldest first) followed by the record's key. Since every record
lives as long as the others, the expired ones are always the oldest: a sweep reads from
the front of ``order`` and stops at the first record still alive.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import lmdb

__all__ = ("CREATED", "HEAD", "expired_oldest_first")

HEAD = struct.Struct("<dQ")  # expires_at (s), created (ns)
CREATED = struct.Struct(">Q")  # big-endian: `order` sorts oldest first


def expired_oldest_first(
    txn: lmdb.Transaction, order: lmdb._Database, records: lmdb._Database, now: float, most: int
) -> Iterator[tuple[bytes, bytes | memoryview | None]]:
    """Up to ``most`` expired records, oldest first, each as (key, its raw record or None
    when only its ``order`` entry was left); their ``order`` entries are deleted, the
    records are the caller's to remove."""
    cursor = txn.cursor(db=order)
    for _ in range(most):
        if not cursor.first():
            return
        key = bytes(cursor.key())[CREATED.size :]
        raw = txn.get(key, db=records)
        if raw is not None and HEAD.unpack_from(raw)[0] > now:
            return
        cursor.delete()
        yield key, raw
