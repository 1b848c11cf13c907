"""Operational endpoints: liveness and what this node is configured with."""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigateway import __version__
from aigateway.api.http import json_response
from aigateway.config import Settings


def ops_routes(settings: Settings) -> list[Route]:
    described = {
        p.name: {
            "type": p.kind,
            "base_url": p.base_url,
            "key_configured": bool(p.api_key),
            "mock": settings.mock_provider,
        }
        for p in settings.providers
    }

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
