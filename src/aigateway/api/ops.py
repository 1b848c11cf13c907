"""Operational endpoints: liveness and what this node is configured with."""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigateway import __version__
from aigateway.api.http import json_response
from aigateway.config import ProviderSettings, Settings


def ops_routes(settings: Settings, providers: list[ProviderSettings]) -> list[Route]:
    described = {
        p.name: {"base_url": p.base_url, "key_configured": bool(p.api_key)} for p in providers
    }
    if settings.mock_provider:
        described["openai"]["mock"] = True

    async def health(request: Request) -> Response:
        return json_response(
            {
                "status": "ok",
                "version": __version__,
                "workers": settings.workers,
                "pid": os.getpid(),
                "providers": described,
            }
        )

    return [Route("/health", health, methods=["GET"])]
