"""One way to build a request: every route's ``ApiRequest`` is finished here.

A route parses its body (``validation.py``, ``native.py``), then hands the parsed request
to ``RequestBuilder.build``, which applies what the client may ask for besides the body,
once and the same way for every route::

    /v1/chat/completions     parse_chat_request          -> build(request, parsed)
    /v1/embeddings           parse_embeddings_request    -> build(request, parsed)
    /v1/chat                 parse_native_request        -> build(request, parsed, native)
    /v1/batch, each item     either of the two above     -> build(request, parsed, native)
    /v1/responses            read_request + responses_request -> build(request, parsed)
    /v1/messages             parse_messages_request      -> build(request, parsed)
    /v1/messages/count_tokens  parse_count_tokens_request -> build(request, parsed)

=========  ==============================================================================
scope      ``CACHE_SCOPE=key``: a cache namespace derived from the key the client
           presented (``Authorization: Bearer`` or ``x-api-key``), so tenants never share
           answers; ``global``: one namespace
priority   ``x-aigateway-priority``, else the native body's ``priority``, else the tenant
           key's ``priority``, else ``normal``; never more urgent than the key's
           ``max_priority`` (a higher ask is lowered to it)
tenant     the id of the tenant key the client presented (``middleware.auth``)
deadline   ``x-aigateway-timeout-ms``, when shorter than ``REQUEST_TIMEOUT_SEC``
cache      ``Cache-Control: no-cache / no-store``, ``x-aigateway-cache-ttl``, and the
           native body's ``cache`` object (``no_cache``, ``no_store``, ``ttl``)
=========  ==============================================================================
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from aigateway.api.http import whole_number
from aigateway.cache.service import client_scope
from aigateway.errors import InvalidRequest
from aigateway.keys.model import TenantKey
from aigateway.middleware._headers import presented_key
from aigateway.middleware.auth import TENANT_KEY
from aigateway.wire import PRIORITIES, ApiRequest, CacheControl

_DEFAULT_CONTROL = CacheControl()
# The order ``RequestBuilder.build`` passes an ``ApiRequest``'s fields in: a field added
# or moved there fails here, at import, rather than silently in a request.
_FIELDS = (
    "operation", "model", "body", "raw", "stream", "provider", "priority", "cache",
    "cache_scope", "timeout_s", "provider_headers", "held", "tenant",
)  # fmt: skip
if tuple(f.name for f in dataclasses.fields(ApiRequest)) != _FIELDS:
    raise ImportError("ApiRequest's fields changed: update RequestBuilder.build")


@dataclass(frozen=True, slots=True)
class NativeControls:
    """What a native body says besides the chat itself (None: it says nothing)."""

    priority: str | None = None
    cache: dict[str, Any] | None = None


NO_NATIVE = NativeControls()


@dataclass(frozen=True, slots=True)
class RequestBuilder:
    scope_by_key: bool = False  # CACHE_SCOPE=key

    def build(
        self, request: Request, parsed: ApiRequest, native: NativeControls = NO_NATIVE
    ) -> ApiRequest:
        """``parsed`` with the client's scope, priority, deadline and cache controls."""
        scope = ""
        if self.scope_by_key:
            scope = client_scope(presented_key(request.scope))
        tenant: TenantKey | None = request.scope.get(TENANT_KEY)
        if tenant is None:
            priority = priority_of(request, native.priority)
        else:
            priority = tenant_priority(tenant, asked_priority(request, native.priority))
        cache = cache_control(request, native.cache)
        timeout_s = timeout_of(request)
        tenant_id = tenant.id if tenant is not None else ""
        if (
            priority == parsed.priority
            and cache == parsed.cache
            and scope == parsed.cache_scope
            and timeout_s == parsed.timeout_s
            and tenant_id == parsed.tenant
        ):
            # The usual request asks for nothing special: ``parsed`` as it is (frozen, so
            # the same object is as good as a copy; a copy cost ~4 us).
            return parsed
        # The constructor, not ``dataclasses.replace`` (which cost ~2.6 us more: every
        # tenant key's request comes here); ``_FIELDS`` checks the order at import.
        return ApiRequest(
            parsed.operation, parsed.model, parsed.body, parsed.raw, parsed.stream,
            parsed.provider, priority, cache, scope, timeout_s, parsed.provider_headers,
            parsed.held, tenant_id,
        )  # fmt: skip

    def owner(self, request: Request) -> str:
        """Whose stored state a request reads (stored Responses): a hash of the key the
        client presented, whatever ``CACHE_SCOPE`` says, so tenants never see each
        other's conversations ("" without a key)."""
        return client_scope(presented_key(request.scope))

    def check_headers(self, request: Request) -> None:
        """400 for a bad priority, deadline or cache header (before any work starts)."""
        priority_of(request)
        timeout_of(request)
        cache_control(request)


def tenant_priority(key: TenantKey, asked: str | None) -> str:
    """What a tenant key's request runs at: what it asked, else the key's default, never
    more urgent than the key's ceiling."""
    priority = asked or key.priority or "normal"
    ceiling = key.max_priority
    if ceiling is not None and PRIORITIES.index(priority) < PRIORITIES.index(ceiling):
        return ceiling
    return priority


def priority_of(request: Request, body_priority: str | None = None) -> str:
    """``x-aigateway-priority`` (any case), else the body's, else ``normal``."""
    return asked_priority(request, body_priority) or "normal"


def asked_priority(request: Request, body_priority: str | None = None) -> str | None:
    """``x-aigateway-priority`` (any case), else the body's (None: neither says)."""
    value = request.headers.get("x-aigateway-priority")
    if value is None:
        return body_priority or None
    value = value.strip().lower()
    if value not in PRIORITIES:
        raise InvalidRequest(
            "invalid x-aigateway-priority: expected one of " + ", ".join(PRIORITIES),
            param="x-aigateway-priority",
        )
    return value


def timeout_of(request: Request) -> float | None:
    """The client's deadline from ``x-aigateway-timeout-ms``, in seconds."""
    value = request.headers.get("x-aigateway-timeout-ms")
    if value is None:
        return None
    ms = whole_number(value)
    if ms is None or ms < 1:
        raise InvalidRequest(
            "invalid x-aigateway-timeout-ms: expected a whole number of milliseconds >= 1",
            param="x-aigateway-timeout-ms",
        )
    return ms / 1000.0


def cache_control(request: Request, native: dict[str, Any] | None = None) -> CacheControl:
    """The client's cache instructions: ``Cache-Control`` and ``x-aigateway-cache-ttl``
    headers, or the native body's ``cache`` object (``no_cache``, ``no_store``, ``ttl``)."""
    directives = {d.strip().lower() for d in request.headers.get("cache-control", "").split(",")}
    read, write = "no-cache" not in directives, "no-store" not in directives
    ttl = _seconds(request.headers.get("x-aigateway-cache-ttl"), "x-aigateway-cache-ttl")
    if native is not None:
        read = read and not _flag(native, "no_cache")
        write = write and not _flag(native, "no_store")
        native_ttl = native.get("ttl")
        if native_ttl is not None:
            if isinstance(native_ttl, bool) or not isinstance(native_ttl, int | float):
                raise _bad_ttl("cache.ttl")
            ttl = _seconds(native_ttl, "cache.ttl")
    if read and write and ttl is None:
        return _DEFAULT_CONTROL
    return CacheControl(read, write, ttl)


def _flag(native: dict[str, Any], name: str) -> bool:
    value = native.get(name)
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest(
            f"invalid field 'cache.{name}': expected true or false", param=f"cache.{name}"
        )
    return bool(value)


def _seconds(raw: str | float | None, param: str) -> float | None:
    if raw is None:
        return None
    try:
        ttl = float(raw)
    except (ValueError, OverflowError):
        raise _bad_ttl(param) from None
    if not 0 <= ttl < math.inf:
        raise _bad_ttl(param)
    return ttl


def _bad_ttl(param: str) -> InvalidRequest:
    return InvalidRequest(f"invalid {param}: expected a number of seconds >= 0", param=param)
