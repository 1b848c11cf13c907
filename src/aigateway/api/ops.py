"""Operational endpoints: health, metrics, node stats and live configuration.

``GET /health``        open: 200 with each provider's state while the gateway can serve,
                       503 when no configured provider can (every circuit open)
``GET /metrics``       node totals in the Prometheus text format (admin rule unless
                       ``METRICS_PUBLIC=true``)
``GET /admin/stats``   the same numbers as JSON, with percentiles and request rate (with
                       ``REDIS_URL``, and the cluster's members, figures and totals)
``GET /admin/config``  the effective settings, secrets masked
``PUT /admin/config``  change the live settings for the node (see ``aigateway.runtime``)

What ``/health`` and ``/admin/config`` show passes through the node's scrubber as well:
no configured secret leaves in them, whatever field it might reach.
"""

from __future__ import annotations

import asyncio
import os
import time
from functools import partial
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigateway import __version__
from aigateway.api.admin import cache_report
from aigateway.api.http import json_response, read_body
from aigateway.api.validation import parse_json_object
from aigateway.cluster.figures import cluster_section, node_figures
from aigateway.operations import Operations
from aigateway.runtime import effective
from aigateway.stats.exposition import CONTENT_TYPE
from aigateway.stats.report import prometheus_text, stats_document

MAX_CONFIG_BODY = 64 * 1024
ACK_TIMEOUT_S = 1.0


class OpsRoutes:
    def __init__(self, operations: Operations) -> None:
        self.operations = operations

    def routes(self) -> list[Route]:
        return [
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/admin/stats", self.stats, methods=["GET"]),
            Route("/admin/config", self.config, methods=["GET", "PUT"]),
        ]

    async def health(self, request: Request) -> Response:
        operations = self.operations
        settings = operations.settings
        board = operations.health
        providers: dict[str, Any] = {}
        serving = False
        for p in settings.providers:
            provider = operations.providers.get(p.name)
            configured = provider.usable if provider is not None else bool(p.api_key)
            state = board.state(p.name) if board is not None else "healthy"
            if not configured:
                state = "unconfigured"
            serving = serving or state in ("healthy", "degraded")
            providers[p.name] = {
                # No base URL: /health is open to anyone, and a private deployment's
                # upstream host names are the operator's business (/admin/config shows them).
                "type": p.kind,
                "key_configured": bool(p.api_key),
                "mock": settings.mock_provider,
                "state": state,
            }
        cluster = operations.cluster.read()
        status = "ok" if serving else "unavailable"
        if serving and cluster.degraded:
            status = "degraded"  # serving, alone: Redis is down
        body: dict[str, Any] = {
            "status": status,
            "version": __version__,
            "workers": settings.workers,
            "pid": os.getpid(),
            "providers": providers,
        }
        if cluster.enabled:
            body["cluster"] = {
                "node": cluster.node_id,
                "redis": cluster.redis,
                "nodes": cluster.nodes,
                "since": cluster.since,
            }
            if cluster.degraded:
                body["cluster"]["reason"] = f"Redis unavailable: {cluster.reason}"
        return self._scrubbed(body, status=200 if serving else 503)

    async def metrics(self, request: Request) -> Response:
        text = prometheus_text(self.operations.numbers())
        return Response(text, media_type=CONTENT_TYPE)

    async def stats(self, request: Request) -> Response:
        operations = self.operations
        numbers = operations.numbers()
        document = stats_document(numbers, operations.per_second())
        if operations.cache is not None:
            document["cache"] = cache_report(operations.cache, numbers.cache)  # read once
        else:
            document["cache"] = {"enabled": False}
        if operations.admission is not None:
            document["admission"] = operations.admission.report()
        document["keys"] = [  # tenant keys, as flushed to their store
            {"name": name, "id": key_id, "requests": requests, "spend_usd": round(usd, 9)}
            for name, key_id, requests, usd in numbers.key_spend
        ]
        if operations.redis is not None:  # the members, their figures, the totals
            own = partial(node_figures, numbers.snapshot, numbers.series, numbers.cache)
            view = operations.cluster.read()
            document["cluster"] = await cluster_section(operations.redis, view, own)
        return json_response(document)

    async def config(self, request: Request) -> Response:
        operations = self.operations
        live = operations.live
        assert live is not None, "the app's lifespan has not started"
        if request.method == "GET":
            # This worker may not have polled a change made by another worker or node yet:
            # answer with the node's settings as they are now, not as last polled.
            live.refresh()
            shown = effective(live.current, live.overrides)
            return self._scrubbed({"version": live.version, "pid": os.getpid(), **shown})
        changes = parse_json_object(await read_body(request, MAX_CONFIG_BODY))
        new = live.update(changes)  # a bad value: 400, nothing changed; applied here at once
        version = live.version
        deadline = time.monotonic() + ACK_TIMEOUT_S
        applied, alive = live.acknowledged(version)
        while applied < alive and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            applied, alive = live.acknowledged(version)
        return self._scrubbed(
            {
                "version": version,
                "pid": os.getpid(),
                "changed": sorted(changes),
                "workers": {"applied": applied, "live": alive},
                **effective(new, live.overrides),
            }
        )

    def _scrubbed(self, document: dict[str, Any], status: int = 200) -> Response:
        body = self.operations.scrubber.data(orjson.dumps(document))
        return json_response(body, status=status)
