"""Stored Responses shared by every node (``store: true`` on ``/v1/responses``, with REDIS_URL).

A conversation's next turn may land on any node, so the cache's Redis (REDIS_CACHE_URL,
else REDIS_URL) holds every stored response for its lifetime (RESPONSES_STORE_DAYS, the
key's TTL), and the node's own store (``cache/response_store.py``) keeps a copy for when
Redis cannot be reached:

=======  ==================================================================================
put      the node's store, then Redis: the record and one index key per output item
         (``item_reference``), in one pipelined round trip, awaited so the next turn finds
         it on any node (bounded by REDIS_TIMEOUT_MS like every call)
get      Redis first: a record is the answer, a tombstone says deleted, nothing at all
         falls back to the node's store (a record written while Redis was away)
delete   the node's copy, and in Redis a tombstone for the rest of the lifetime, so a node
         still holding a copy never serves it again
=======  ==================================================================================

When Redis is slow or gone (the worker's guard, ``cluster/worker.py``) every call falls back
to the node's store: a node serves the responses it stored itself, and a response
created on another node is not found until Redis is back. A value that is not ours
(another format, corrupt) reads as missing, never as an error.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import orjson
from redis import exceptions as redis_errors

from aigateway.cache.response_store import MAX_ID_CHARS, ResponseStore, StoredResponse
from aigateway.cluster.connect import RedisClient
from aigateway.cluster.guard import RedisUnavailable
from aigateway.cluster.worker import WorkerRedis

__all__ = ("MAGIC", "TOMBSTONE", "SharedResponses")

logger = logging.getLogger("aigateway.responses")

MAGIC: Final = b"aigw-response-1\n"
TOMBSTONE: Final = MAGIC + b"deleted"
_UNUSABLE = (RedisUnavailable, redis_errors.RedisError)
_GONE = object()  # a tombstone's reading


class SharedResponses:
    """The cluster's stored responses, the node's store as the tier without Redis."""

    def __init__(self, local: ResponseStore, redis: WorkerRedis, ttl_s: float) -> None:
        self.local = local
        self.redis = redis
        self.keys = redis.keys
        self.ttl_ms = max(1, int(ttl_s * 1000))

    async def put(self, owner: str, record: StoredResponse) -> None:
        self.local.put(owner, record)
        response_id = _id(record.response.get("id"))
        value = MAGIC + orjson.dumps(
            {"response": record.response, "input": record.input, "holder": record.holder}
        )
        items = [
            self.keys.stored_item(owner, _id(item["id"]))
            for item in record.response.get("output") or ()
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        ]
        record_key = self.keys.stored_response(owner, response_id)

        async def write(client: RedisClient) -> None:
            pipe = client.pipeline(transaction=False)
            pipe.set(record_key, value, px=self.ttl_ms)
            for key in items:
                pipe.set(key, response_id, px=self.ttl_ms)
            await pipe.execute()

        try:
            await self.redis.cache_call(write)
        except _UNUSABLE as exc:  # kept on this node all the same
            logger.debug("stored response %s kept on this node only: %r", response_id, exc)

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        key = self.keys.stored_response(owner, _id(response_id))
        try:
            raw = await self.redis.cache_call(lambda client: client.get(key))
        except _UNUSABLE:
            return self.local.get(owner, response_id)
        found = _record(raw)
        if found is _GONE:  # deleted on some node: this node's copy goes too
            self.local.delete(owner, response_id)
            return None
        if isinstance(found, StoredResponse):
            return found
        return self.local.get(owner, response_id)

    async def item(self, owner: str, item_id: str) -> dict[str, Any] | None:
        key = self.keys.stored_item(owner, _id(item_id))
        try:
            response_id = await self.redis.cache_call(lambda client: client.get(key))
        except _UNUSABLE:
            return self.local.item(owner, item_id)
        if response_id is None:
            return self.local.item(owner, item_id)
        found_id = response_id.decode() if isinstance(response_id, bytes) else str(response_id)
        record = await self.get(owner, found_id)
        for item in record.response.get("output") or () if record is not None else ():
            if isinstance(item, dict) and item.get("id") == item_id:
                return item
        return None

    async def delete(self, owner: str, response_id: str) -> bool:
        here = self.local.delete(owner, response_id)
        key = self.keys.stored_response(owner, _id(response_id))

        try:
            old = await self.redis.cache_call(
                lambda client: client.set(key, TOMBSTONE, px=self.ttl_ms, get=True)
            )
        except _UNUSABLE as exc:
            logger.warning("stored response %s deleted on this node only: %r", response_id, exc)
            return here
        found = _record(old)
        if found is None:  # Redis never had it: this node's own (stored while Redis was away)
            return here
        return found is not _GONE


def _id(value: Any) -> str:
    return str(value)[:MAX_ID_CHARS]


def _record(raw: Any) -> StoredResponse | object | None:
    """A record, ``_GONE`` for a tombstone, None for nothing (or a value not ours)."""
    if not isinstance(raw, bytes) or not raw.startswith(MAGIC):
        return None
    if raw == TOMBSTONE:
        return _GONE
    try:
        data = orjson.loads(raw[len(MAGIC) :])
        return StoredResponse(data["response"], data["input"], data.get("holder"))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
