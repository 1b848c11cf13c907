"""The pipeline's routes without Starlette's middleware stack: one flat ASGI function.

A ``POST`` to a route of the pipeline (``/v1/chat/completions`` and its peers, see
``HOT_PATHS``) went through eleven layers before its handler ran: Starlette's
``ServerErrorMiddleware``, the request middleware, CORS, authentication, the body's
deadline, ``UnexpectedErrorMiddleware``, Starlette's ``ExceptionMiddleware``, the router,
the route, ``request_response`` and its exception wrapper, each an ``await`` and most a
wrapper of ``send`` that every message passed through again. :class:`HotPath` sits in
front of that stack and does the same things for these routes in one function, inside
the request middleware (kept as it is: request id, metrics, log line, tracing, the
client's disconnect), the only layer left around it:

1. CORS: an allowed ``Origin`` gets its headers on the answer (``CORSMiddleware``'s own
   ``answering``); preflights are ``OPTIONS`` and never come here;
2. authentication: ``AuthMiddleware.check`` (again after ``reloading``, as the middleware
   does), the refusal answered as the middleware does;
3. the route, as Starlette's router would have picked it (``scope["route"]`` and the rest
   set at the same point, after authentication: a refused request counts as unmatched);
4. the body read against its deadline (``BodyTimeoutMiddleware``'s ``timed``);
5. the handler; an exception it raises answered like Starlette's exception handlers (the
   app's own, passed in) and ``UnexpectedErrorMiddleware`` did: a ``GatewayError`` in its
   shape, anything else a logged 500 with no internals;
6. the answer sent.

Everything else (other methods, other paths, a ``root_path``, lifespan) goes to the
Starlette app unchanged. The tests of the whole app are the specification: they pass
with the hot path in front, and ``tests/test_hot_path.py`` checks that both ways answer
alike.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from aigateway.api.http import error_response
from aigateway.errors import GatewayError
from aigateway.middleware._headers import header
from aigateway.middleware.auth import AuthMiddleware
from aigateway.middleware.body_timeout import BodyTimeoutMiddleware
from aigateway.middleware.cors import CORSMiddleware
from aigateway.middleware.requests import LOOP_KEY, AccountingSource, RequestMiddleware

logger = logging.getLogger("aigateway")

#: The routes worth a path of their own: every request to the pipeline.
HOT_PATHS = (
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/chat",
    "/v1/batch",
)

_SERVED = "aigateway.hot_path"  # in the scope once the flat function has the request
ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


def hot_routes(router: Router, paths: Iterable[str] = HOT_PATHS) -> dict[str, Route]:
    """For each path, the route Starlette's router picks for a ``POST`` to it, when that
    is a plain ``Route`` without path parameters (others stay with the router)."""
    found: dict[str, Route] = {}
    for path in paths:
        scope = {"type": "http", "method": "POST", "path": path, "root_path": ""}
        for route in router.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:  # the router's choice: the first full match
                if isinstance(route, Route) and child.get("path_params") == {}:
                    found[path] = route
                break
    return found


class HotPath:
    def __init__(
        self,
        app: ASGIApp,
        router: Router,
        routes: Mapping[str, Route],
        source: AccountingSource,
        auth: AuthMiddleware,
        cors: CORSMiddleware | None,
        body: BodyTimeoutMiddleware,
        handlers: Mapping[Any, ExceptionHandler],
    ) -> None:
        """``app``: the whole Starlette stack, for everything else; ``handlers``: the
        app's exception handlers (Starlette's ``exception_handlers``)."""
        self.app = app
        self.router = router
        self.routes = dict(routes)
        self.auth = auth
        self.cors = cors
        self.body = body
        self.handlers = {
            kind: handler
            for kind, handler in handlers.items()
            if kind not in (500, Exception)  # those are for what escapes everything
        }
        self.request = RequestMiddleware(self._serve, source)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in self.routes
            and not scope.get("root_path")
        ):
            await self._guarded(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """What Starlette's outermost layer did: a failure of the request middleware itself,
        before any answer, is a logged 500 (the server ends the connection otherwise)."""
        try:
            await self.request(scope, receive, send)
        except Exception as exc:
            if _SERVED in scope:  # the answer is out, or going out: nothing more to say
                raise
            _log_unexpected(scope, exc)
            error = GatewayError("internal gateway error", code="internal_error")
            await error_response(error, path=scope["path"])(scope, receive, send)
            raise

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_SERVED] = True
        path: str = scope["path"]
        cors = self.cors
        if cors is not None:
            origin = header(scope, b"origin")
            if origin is not None and cors.allowed(origin):
                send = cors.answering(origin, send)
        request: Request | None = None
        try:
            refusal = self.auth.check(scope)
            reloading = self.auth.reloading(scope, refusal)
            if reloading is not None:  # the worker's tenant keys are being reloaded
                await reloading
                refusal = self.auth.check(scope)
            if refusal is not None:
                response = error_response(refusal, path=path)
            else:
                route = self.routes[path]
                scope.setdefault("router", self.router)  # what the router sets
                scope["route"] = route
                scope["endpoint"] = route.endpoint
                scope["path_params"] = {}
                timed = self.body.timed(receive, scope.get(LOOP_KEY))
                request = Request(scope, timed, send)
                response = await route.endpoint(request)
        except Exception as exc:  # nothing was sent yet: every failure gets its answer
            response = await self._failure(request or Request(scope, receive, send), exc)
        # A failure while sending goes on up (the answer has started): the server ends
        # the connection, as it did through the stack.
        await response(scope, receive if request is None else request.receive, send)

    async def _failure(self, request: Request, exc: Exception) -> Response:
        """The answer to a handler's exception, as the app's handlers give it."""
        for kind in type(exc).__mro__:
            handler = self.handlers.get(kind)
            if handler is not None:
                return await handler(request, exc)
        _log_unexpected(request.scope, exc)
        error = GatewayError("internal gateway error", code="internal_error")
        return error_response(error, path=request.scope["path"][:200])


def _log_unexpected(scope: Scope, exc: Exception) -> None:
    # The traceback goes to the log only; the client gets no internals.
    path = scope.get("path", "")[:200]
    logger.error("unexpected error on %s %s", scope.get("method"), path, exc_info=exc)
