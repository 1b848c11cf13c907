"""CORS with an explicit allow-list of origins (``CORS_ALLOW_ORIGINS``; none by default).

* A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) from an
  allowed origin is answered here with 204: the origin, the methods, the headers it asked
  for, and ``Access-Control-Max-Age``.  From any other origin, or for another method, it
  gets 403 in OpenAI's error shape and no ``Access-Control-Allow-Origin``, so the browser
  stops there.  Preflights never need a key: browsers send none.
* Other requests from an allowed origin get ``Access-Control-Allow-Origin`` (and the
  gateway's own response headers exposed); from other origins they get nothing extra, so
  a browser does not let the page read the answer.
* ``*`` allows every origin: only when set explicitly.  Credentials (cookies) are never
  allowed: the gateway's keys travel in ``Authorization``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aigateway.api.http import error_response
from aigateway.errors import PermissionDenied
from aigateway.middleware._headers import header

ALLOW_METHODS = ("GET", "POST", "PUT", "DELETE", "OPTIONS")
EXPOSE_HEADERS = (
    "x-request-id",
    "x-aigateway-provider",
    "x-aigateway-cache",
    "x-aigateway-cost",
    "x-aigateway-token-count",
    "retry-after",
)
_EXPOSED = ", ".join(EXPOSE_HEADERS).encode()
MAX_AGE_S = 600
_TOKENS = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


class CORSMiddleware:
    def __init__(self, app: ASGIApp, allow_origins: Sequence[str]) -> None:
        self.app = app
        self.allow_all = "*" in allow_origins
        self.origins = frozenset(origin.lower() for origin in allow_origins if origin != "*")

    def allowed(self, origin: str) -> bool:
        return self.allow_all or origin.lower() in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = header(scope, b"origin") if scope["type"] == "http" else None
        if origin is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and header(scope, b"access-control-request-method"):
            await self.preflight(scope, receive, send, origin)
            return
        if not self.allowed(origin):
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, self.answering(origin, send))

    def answering(self, origin: str, send: Send) -> Send:
        """``send`` adding the CORS headers of an allowed ``origin`` to the answer's head."""
        added = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-expose-headers", _EXPOSED),
            (b"vary", b"Origin"),
        ]

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *added]}
            await send(message)

        return with_cors

    async def preflight(self, scope: Scope, receive: Receive, send: Send, origin: str) -> None:
        method = (header(scope, b"access-control-request-method") or "").strip().upper()
        requested = header(scope, b"access-control-request-headers") or ""
        names = [name.strip().lower() for name in requested.split(",") if name.strip()]
        if not self.allowed(origin):
            refusal = PermissionDenied(
                f"origin {origin!r} is not allowed (CORS_ALLOW_ORIGINS)", code="cors_refused"
            )
        elif method not in ALLOW_METHODS or not all(_TOKENS.fullmatch(n) for n in names):
            refusal = PermissionDenied(
                f"CORS preflight refused for method {method!r}", code="cors_refused"
            )
        else:
            headers = {
                "access-control-allow-origin": origin,
                "access-control-allow-methods": ", ".join(ALLOW_METHODS),
                "access-control-max-age": str(MAX_AGE_S),
                "vary": "Origin",
            }
            if names:
                headers["access-control-allow-headers"] = ", ".join(names)
            await send({"type": "http.response.start", "status": 204, "headers": _raw(headers)})
            await send({"type": "http.response.body", "body": b""})
            return
        path = scope.get("path", "")
        await error_response(refusal, {"vary": "Origin"}, path)(scope, receive, send)


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode("latin-1")) for name, value in headers.items()]
