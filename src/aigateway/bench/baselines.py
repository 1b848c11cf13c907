"""Baseline servers the gateway is measured against: the floors of our own stack.

Both are Starlette apps served by Granian exactly like the gateway (same worker count,
uvloop, ASGI, backlog); Granian loads them in each worker by import string with
``factory=True``. Their configuration comes in one JSON environment variable,
``AIGATEWAY_BENCH_BASELINE``.

* ``passthrough_app``: forwards the request body to the provider with one pooled client
  per worker (aiohttp, or httpx) and relays the answer (streams chunk by chunk), with no
  validation, routing, retries or any other feature: the floor for cache misses.
* ``constant_app``: answers every chat completion with one fixed reply, the one the mock
  provider gives for the benchmark's identical request: the floor for cache hits.

Run one with ``python -m aigateway.bench.baselines {passthrough,constant} --port P``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from aigateway.bench.bodies import CHAT_PATH, IDENTICAL_TEXT, chat_body

CONFIG_ENV = "AIGATEWAY_BENCH_BASELINE"
JSON = "application/json"
SSE = "text/event-stream"


def _config() -> dict[str, Any]:
    raw = os.environ.get(CONFIG_ENV)
    if not raw:
        raise RuntimeError(f"{CONFIG_ENV} is not set: start the baselines through the bench")
    config: dict[str, Any] = orjson.loads(raw)
    return config


async def _health(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type=JSON)


# --- passthrough --------------------------------------------------------------------------


class _Relay(Protocol):
    async def forward(self, body: bytes) -> Response: ...

    async def close(self) -> None: ...


class _AiohttpRelay:
    def __init__(self, url: str, headers: dict[str, str], max_connections: int) -> None:
        import aiohttp

        self._url = url
        self._headers = headers
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=30),
            skip_auto_headers=("User-Agent",),
        )

    async def forward(self, body: bytes) -> Response:
        resp = await self._session.post(self._url, data=body, headers=self._headers)
        media_type = resp.headers.get("content-type", JSON)
        if media_type.startswith(SSE):

            async def chunks() -> AsyncIterator[bytes]:
                try:
                    async for chunk in resp.content.iter_any():
                        yield chunk
                finally:
                    resp.release()

            return StreamingResponse(chunks(), resp.status, media_type=SSE)
        try:
            data = await resp.read()
        finally:
            resp.release()
        return Response(data, resp.status, media_type=media_type)

    async def close(self) -> None:
        await self._session.close()


class _HttpxRelay:
    def __init__(self, url: str, headers: dict[str, str], max_connections: int) -> None:
        import httpx

        self._url = url
        self._headers = headers
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = httpx.AsyncClient(limits=limits, timeout=60.0)

    async def forward(self, body: bytes) -> Response:
        request = self._client.build_request("POST", self._url, content=body, headers=self._headers)
        resp = await self._client.send(request, stream=True)
        media_type = resp.headers.get("content-type", JSON)
        if media_type.startswith(SSE):

            async def chunks() -> AsyncIterator[bytes]:
                try:
                    async for chunk in resp.aiter_raw():
                        yield chunk
                finally:
                    await resp.aclose()

            return StreamingResponse(chunks(), resp.status_code, media_type=SSE)
        try:
            data = await resp.aread()
        finally:
            await resp.aclose()
        return Response(data, resp.status_code, media_type=media_type)

    async def close(self) -> None:
        await self._client.aclose()


def passthrough_app() -> Starlette:
    """Factory Granian calls in each worker: forward chat completions to the provider."""
    config = _config()
    url = str(config["upstream"]).rstrip("/") + "/chat/completions"
    headers = {"content-type": JSON, "authorization": f"Bearer {config.get('api_key', '')}"}
    max_connections = int(config.get("max_connections", 1024))
    kind = config.get("client", "aiohttp")
    if kind not in ("aiohttp", "httpx"):
        raise RuntimeError(f"unknown upstream client {kind!r}")
    relay: _Relay | None = None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal relay
        # made inside the worker's running loop, one per worker
        relay_type = _AiohttpRelay if kind == "aiohttp" else _HttpxRelay
        relay = relay_type(url, headers, max_connections)
        try:
            yield
        finally:
            await relay.close()

    async def chat(request: Request) -> Response:
        assert relay is not None, "the lifespan has not started"
        return await relay.forward(await request.body())

    routes = [Route(CHAT_PATH, chat, methods=["POST"]), Route("/health", _health)]
    return Starlette(routes=routes, lifespan=lifespan)


# --- constant -----------------------------------------------------------------------------


def constant_reply() -> bytes:
    """The mock provider's answer to the benchmark's identical request."""
    from aigateway.testing.mock_replies import plan_chat, render_chat

    return render_chat(plan_chat(chat_body(IDENTICAL_TEXT)))


def constant_app() -> Starlette:
    """Factory Granian calls in each worker: one fixed chat completion for every request."""
    reply = constant_reply()

    async def chat(request: Request) -> Response:
        await request.body()
        return Response(reply, media_type=JSON)

    routes = [Route(CHAT_PATH, chat, methods=["POST"]), Route("/health", _health)]
    return Starlette(routes=routes)


# --- running one --------------------------------------------------------------------------

APPS = ("passthrough", "constant")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aigateway.bench.baselines")
    parser.add_argument("app", choices=APPS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels
    from granian.server import Server

    server = Server(
        f"aigateway.bench.baselines:{args.app}_app",
        factory=True,
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=args.workers,
        loop=Loops.uvloop,
        backlog=2048,
        log_level=LogLevels.warning,
    )
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
