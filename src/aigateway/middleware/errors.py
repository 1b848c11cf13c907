"""The innermost middleware: an unexpected exception becomes a clean 500 here.

Starlette answers an exception that nothing handled from its outermost layer, outside
the request middleware, so such a 500 went out without ``x-request-id`` and without
the client's CORS headers. Caught here, inside them, it gets both like any other
answer; the traceback goes to the log, the client gets OpenAI's error shape and no
internals. An exception after the answer started cannot be answered any more: it goes
on up, and the server ends the connection.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aigateway.api.http import error_response
from aigateway.errors import GatewayError

logger = logging.getLogger("aigateway")


class UnexpectedErrorMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if started:
                raise
            path = scope.get("path", "")[:200]
            logger.error("unexpected error on %s %s", scope.get("method"), path, exc_info=exc)
            error = GatewayError("internal gateway error", code="internal_error")
            await error_response(error, path=path)(scope, receive, send)
