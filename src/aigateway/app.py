"""The Starlette application of one worker process.

``create_app(settings)`` builds it from arguments; Granian loads
``create_worker_app`` by import string in each worker process, which reads the
settings the main process validated. Per-worker resources (one pooled upstream
client per provider) live in the ASGI lifespan.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from aigateway.api.http import error_response
from aigateway.api.openai_compat import OpenAIRoutes
from aigateway.api.ops import ops_routes
from aigateway.config import ProviderSettings, Settings, settings_from_worker_env
from aigateway.core.pipeline import Pipeline, Provider
from aigateway.core.retry import RetryPolicy
from aigateway.core.router import Router
from aigateway.errors import GatewayError, MethodNotAllowed, NotFound
from aigateway.providers.openai import OpenAIAdapter
from aigateway.upstream import PoolLimits, create_upstream_client

logger = logging.getLogger("aigateway")


def create_app(settings: Settings) -> Starlette:
    wired = [settings.openai]  # Gemini and Anthropic adapters arrive with the providers issue
    openai_routes = OpenAIRoutes(settings.max_body_bytes)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        providers = {p.name: _provider(p, settings) for p in wired}
        openai_routes.pipeline = Pipeline(
            providers,
            Router(providers, default_provider="openai"),
            RetryPolicy(
                settings.max_retries,
                settings.initial_delay_ms / 1000.0,
                settings.max_delay_ms / 1000.0,
            ),
            settings.request_timeout_s,
        )
        try:
            yield
        finally:
            openai_routes.pipeline = None
            for provider in providers.values():
                await provider.client.close()

    return Starlette(
        routes=[*openai_routes.routes(), *ops_routes(settings, wired)],
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        lifespan=lifespan,
    )


def create_worker_app() -> Starlette:
    """Factory Granian calls in each worker process."""
    settings = settings_from_worker_env()
    logging.getLogger("aigateway").setLevel(settings.log_level.upper())
    return create_app(settings)


def _provider(p: ProviderSettings, settings: Settings) -> Provider:
    limits = PoolLimits(
        max_connections=p.max_connections,
        connect_timeout_s=settings.connection_timeout_s,
        keepalive_expiry_s=settings.keepalive_expiry_s,
        read_idle_timeout_s=settings.request_timeout_s,
    )
    adapter = OpenAIAdapter(p.name, p.base_url, p.api_key, key_variable="OPENAI_API_KEY")
    return Provider(p.name, adapter, create_upstream_client(settings.upstream_client, limits))


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(NotFound(f"no such endpoint: {request.method} {request.url.path}"))
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        error = MethodNotAllowed(
            f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
        )
        return error_response(error, headers={"allow": allowed})
    return error_response(GatewayError(str(exc.detail), status=exc.status_code))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log only; the client gets no internals.
    logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(GatewayError("internal gateway error", code="internal_error"))
