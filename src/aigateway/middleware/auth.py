"""Who may call what: client keys for ``/v1/*``, the admin rule for ``/admin/*``.

======================  ===================================================================
``/v1/*``               with ``AI_GATEWAY_API_KEYS`` set or any tenant key ever made
                        (``POST /admin/keys``): one of those keys as a Bearer token (or
                        in ``x-api-key``, as Anthropic's clients send it); an expired
                        tenant key is a 401
``/admin/*``            with ``AI_GATEWAY_ADMIN_KEY`` set: that key, presented the same way;
                        without it: clients on a loopback address only
``/metrics``            the admin rule, unless ``METRICS_PUBLIC=true``
``/dashboard``          with ``AI_GATEWAY_ADMIN_KEY`` set: open (the page and its files hold
                        no data; it asks for the key and sends it on its own requests to
                        ``/admin/dashboard.json``); without it: loopback only
``/health``, others     open
======================  ===================================================================

No key or an unknown one is a 401 (on any path under these prefixes, known or not), a
known key where it is not enough (a client key on ``/admin``) or a client off loopback
without an admin key a 403, both in OpenAI's error shape (Anthropic's on
``/v1/messages``).  Keys are compared in constant time: the token's SHA-256 digest
against every key's, with ``hmac.compare_digest``, all of them every time; a tenant key
is found by its keyed hash (``keys.secrets``), which says nothing of near misses.  A token
shaped like a tenant key's secret (``sk-agw-``) is looked up among the tenant keys first
(one keyed hash and a dictionary lookup instead of the flat keys' digests as well); a flat
key of that shape is still found after them.  The
tenant key a request presented is left in its scope (``TENANT_KEY``) for the request
builder (its id, default and highest priority).  While the worker reloads its tenant
keys (in a thread, after a change on any worker), a ``/v1`` request or a refused one
waits for the new keys (up to a second) and is checked again: a key made, changed or
revoked holds from the next request.  The client
address is the TCP peer's: behind a proxy on the same host, set an admin key.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Sequence
from typing import Final, Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

from aigateway.api.http import error_response
from aigateway.errors import AuthenticationFailed, GatewayError, PermissionDenied
from aigateway.keys.model import TenantKey, rfc3339
from aigateway.keys.secrets import PREFIX as TENANT_PREFIX
from aigateway.middleware._headers import presented_key
from aigateway.middleware.requests import OBSERVER_KEY

#: Where the tenant key a request presented is left in its scope.
TENANT_KEY: Final = "aigateway.tenant_key"


class TenantLookup(Protocol):
    """The worker's tenant keys (``keys.service.TenantKeys``)."""

    def __bool__(self) -> bool: ...

    def find(self, secret: str) -> TenantKey | None: ...

    def reloading(self) -> Awaitable[None] | None: ...

    def now(self) -> float: ...


def _v1_call(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    return path == "/v1" or path.startswith("/v1/")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeySet:
    """Keys compared in constant time: whether a token is one of them says nothing about
    which one, nor how close a wrong one came."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._digests = tuple(_digest(key) for key in keys)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __contains__(self, token: object) -> bool:
        if not isinstance(token, str):
            return False
        return self.has_digest(_digest(token))

    def has_digest(self, presented: bytes) -> bool:
        """Whether a token whose SHA-256 digest is ``presented`` is one of the keys."""
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(presented, digest)
        return found


def is_loopback(scope: Scope) -> bool:
    client = scope.get("client")
    if not client:
        return False
    try:
        address = ipaddress.ip_address(str(client[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class AuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        api_keys: Sequence[str] = (),
        admin_key: str | None = None,
        metrics_public: bool = False,
        tenants: TenantLookup | None = None,
    ) -> None:
        self.app = app
        self.tenants = tenants
        self.client_keys = KeySet(api_keys)
        self.admin_keys = KeySet([admin_key] if admin_key else [])
        self.metrics_public = metrics_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.check(scope)
            reloading = self.reloading(scope, refusal)
            if reloading is not None:
                await reloading
                refusal = self.check(scope)
            if refusal is not None:
                path = scope.get("path", "")
                await error_response(refusal, path=path)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> GatewayError | None:
        """Why this request may not go on (None: it may)."""
        path: str = scope.get("path", "")
        if path == "/v1" or path.startswith("/v1/"):
            if self.client_keys or (self.tenants is not None and self.tenants):
                return self._client(scope)
            return None
        if path == "/admin" or path.startswith("/admin/"):
            return self._admin(scope)
        if path == "/metrics" and not self.metrics_public:
            return self._admin(scope)
        if path == "/dashboard" or path.startswith("/dashboard/"):
            return None if self.admin_keys else self._admin(scope)
        return None

    def reloading(self, scope: Scope, refusal: GatewayError | None) -> Awaitable[None] | None:
        """What to wait for before checking ``scope`` again (None: the check stands):
        tenant keys being reloaded (in a thread) may add, change or revoke the key, so a
        ``/v1`` call or a refusal waits for them rather than be decided on the old set."""
        tenants = self.tenants
        if tenants is None or (refusal is None and not _v1_call(scope)):
            return None
        return tenants.reloading()

    def _client(self, scope: Scope) -> GatewayError | None:
        token = presented_key(scope)
        if token is None:
            return AuthenticationFailed(
                "missing API key: send one of the gateway's keys as 'Authorization: Bearer <key>'"
                " or 'x-api-key: <key>'",
                code="missing_api_key",
            )
        tenants = self.tenants
        tenant = None
        # A tenant key's secret says it is one (``sk-agw-``): looked up first, it skips
        # the digests of the flat keys; a flat key of that shape is found after all.
        looked_up = tenants is not None and token.startswith(TENANT_PREFIX)
        if looked_up and tenants is not None:
            tenant = tenants.find(token)
        if tenant is None:
            presented = _digest(token)
            if self.client_keys.has_digest(presented) or self.admin_keys.has_digest(presented):
                return None
            if not looked_up and tenants is not None:
                tenant = tenants.find(token)
        if tenant is not None and tenants is not None:
            if tenant.expired(tenants.now()):
                return AuthenticationFailed(
                    f"this API key expired at {rfc3339(tenant.expires_at)}", code="expired_api_key"
                )
            scope[TENANT_KEY] = tenant
            observer = scope.get(OBSERVER_KEY)  # absent when auth runs alone (its tests)
            if observer is not None:  # the key's name for the request's trace
                observer.record.key_name = tenant.name
            return None
        return AuthenticationFailed("invalid API key: it is not one of the gateway's keys")

    def _admin(self, scope: Scope) -> GatewayError | None:
        if not self.admin_keys:
            if is_loopback(scope):
                return None
            return PermissionDenied(
                "admin endpoints answer only clients on this machine (loopback) unless "
                "AI_GATEWAY_ADMIN_KEY is set",
                code="admin_loopback_only",
            )
        token = presented_key(scope)
        if token is None:
            return AuthenticationFailed(
                "missing admin key: send AI_GATEWAY_ADMIN_KEY as 'Authorization: Bearer <key>'",
                code="missing_api_key",
            )
        if token in self.admin_keys:
            return None
        if token in self.client_keys or (
            self.tenants is not None and self.tenants.find(token) is not None
        ):
            return PermissionDenied("this API key may not use admin endpoints")
        return AuthenticationFailed("invalid admin key")
