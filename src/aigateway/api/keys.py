"""Admin endpoints of tenant keys (the admin rule of ``middleware.auth`` applies).

``POST /admin/keys``           make a key: 201 with its ``id`` and, this once, its
                               secret as ``key`` (fields: ``keys.fields``)
``GET /admin/keys``            every key, revoked ones too: limits, usage and spend
``GET /admin/keys/{id}``       one key
``PATCH /admin/keys/{id}``     change its name or limits (null clears a limit)
``DELETE /admin/keys/{id}``    revoke it, for good

No answer carries a secret but the 201, nor any hash of one.  A change is written to the
store, then every worker is told (``KeyRing.changed``), and the answer waits until this
worker has reloaded its keys: it holds on every worker from its next request (see
``keys.ring``).  ``spend.period_usd`` is the node's live figure (shared memory);
``spend.total_usd`` and ``usage`` are the store's, at most one flush interval
(``KEY_SPEND_FLUSH_MS``) behind.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigateway.api.http import json_response, read_body
from aigateway.api.validation import parse_json_object
from aigateway.errors import GatewayError
from aigateway.keys.fields import parse_changes, parse_new
from aigateway.keys.model import TenantKey
from aigateway.keys.service import TenantKeys
from aigateway.keys.store import StoreUnavailable, key_not_found

__all__ = ("KeyRoutes", "key_document")

MAX_KEY_BODY: Final = 64 * 1024


class KeyRoutes:
    def __init__(self, tenants: TenantKeys, max_body_bytes: int = MAX_KEY_BODY) -> None:
        self.tenants = tenants
        self._limit = min(max_body_bytes, MAX_KEY_BODY)

    def routes(self) -> list[Route]:
        return [
            Route("/admin/keys", self.collection, methods=["GET", "POST"]),
            Route("/admin/keys/{id}", self.one, methods=["GET", "PATCH", "DELETE"]),
        ]

    async def collection(self, request: Request) -> Response:
        tenants = self._open()
        store = tenants.store
        assert store is not None
        if request.method == "GET":
            keys = await _stored(store.keys)
            await _current(tenants)
            return json_response(
                {"object": "list", "data": [key_document(tenants, key) for key in keys]}
            )
        fields = parse_new(parse_json_object(await read_body(request, self._limit)))
        key, secret = await _stored(store.create, fields)
        await self._changed(tenants)
        return json_response({**key_document(tenants, key), "key": secret}, status=201)

    async def one(self, request: Request) -> Response:
        tenants = self._open()
        store = tenants.store
        assert store is not None
        key_id: str = request.path_params["id"]
        if request.method == "GET":
            key = await _stored(store.get, key_id)
            if key is None:
                raise key_not_found(key_id)
            await _current(tenants)
        elif request.method == "PATCH":
            changes = parse_changes(parse_json_object(await read_body(request, self._limit)))
            key = await _stored(store.update, key_id, changes)
            await self._changed(tenants)
        else:
            key = await _stored(store.revoke, key_id)
            await self._changed(tenants)
        return json_response(key_document(tenants, key))

    def _open(self) -> TenantKeys:
        if self.tenants.store is None:
            raise _unavailable("the key store is not open (the worker is starting or stopping)")
        return self.tenants

    @staticmethod
    async def _changed(tenants: TenantKeys) -> None:
        """Tell every worker, and answer once this one has the new keys (read in a
        thread): the answer's live figures are the key's, and so is the next request."""
        ring = tenants.ring
        if ring is not None:
            ring.changed()
            await ring.refresh()


def key_document(tenants: TenantKeys, key: TenantKey) -> dict[str, Any]:
    """A key as the endpoints show it, with the node's live figures while it is live."""
    ring = tenants.ring
    slot = ring.get(key.id) if ring is not None and key.revoked_at is None else None
    if slot is None:
        return key.public()
    document = key.public(slot.spent(tenants.now()))
    document["usage"]["in_flight"] = slot.in_flight()
    document["spend"]["reserved_usd"] = round(slot.reserved(), 9)
    return document


async def _current(tenants: TenantKeys) -> None:
    """Wait for this worker's keys to follow a change made on another (the live figures
    shown are of the key set as it is now)."""
    if tenants.ring is not None:
        await tenants.ring.refresh()


async def _stored(call: Any, *args: Any) -> Any:
    """A store call, in a thread (it may wait for another worker's write)."""
    try:
        return await asyncio.to_thread(call, *args)
    except StoreUnavailable as exc:
        raise _unavailable(str(exc)) from None


def _unavailable(message: str) -> GatewayError:
    return GatewayError(
        message, status=503, error_type="service_unavailable", code="key_store_unavailable"
    )
