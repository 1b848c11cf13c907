"""The dashboard's endpoints: the page, its files, and its data.

``GET /dashboard``                the page (HTML); who may load it: see ``middleware.auth``
``GET /dashboard/static/<file>``  its script and styles, and the vendored chart library
``GET /admin/dashboard.json``     what it shows (``dashboard.document``), under the admin
                                  rule like every ``/admin`` endpoint; ``?since=<t>``: only
                                  the chart points after Unix time ``t``

The page's files ship in the package (``static/``) and are read once, when the app is
built: nothing is fetched from elsewhere, at build time or at run time.  The page is
sent with a content security policy that lets it load its own files and talk to its own
origin only, and never be framed.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from dataclasses import dataclass
from functools import partial
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigateway.api.http import json_response
from aigateway.cluster.figures import cluster_section, node_figures
from aigateway.dashboard.document import Limit, dashboard_document
from aigateway.dashboard.spend import LiveKey, spend_section
from aigateway.errors import InvalidRequest, NotFound
from aigateway.keys.model import period_label
from aigateway.stats.registry import METRICS
from aigateway.stats.report import NodeNumbers

if TYPE_CHECKING:
    from aigateway.operations import Operations

__all__ = ("DashboardRoutes",)

_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
#: The files the page may load, by their path under ``/dashboard/static/``.
STATIC: Final = (
    "dashboard.js",
    "dashboard.css",
    "vendor/uPlot.iife.min.js",
    "vendor/uPlot.min.css",
    "vendor/uPlot.LICENSE.txt",
)
_PAGE_HEADERS: Final = {
    # Its own files and its own origin only; inline script and style are refused, so a
    # value that ever reached the page's markup could not run.
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
#: How long a worker keeps all keys' spend today and this month (one scan of the store's
#: spend table) before it reads it again: every open page polls every second or two.
PERIODS_TTL_S: Final = 5.0
# Marks in the page's markup replaced when it is served.
_AUTH_MARK = "{{auth}}"


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    media_type: str
    etag: str


def _load(path: str, text: str | None = None) -> _File:
    body = text.encode() if text is not None else _static(path).read_bytes()
    suffix = "." + path.rsplit(".", 1)[-1]
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    return _File(body, _TYPES[suffix], etag)


def _static(path: str) -> Any:
    node = resources.files("aigateway.dashboard").joinpath("static")
    for part in path.split("/"):
        node = node.joinpath(part)
    return node


class DashboardRoutes:
    def __init__(self, operations: Operations) -> None:
        self.operations = operations
        # ``key``: the page asks for the admin key before it asks for data; ``loopback``:
        # no key exists, the page and its data answer this machine only.
        auth = "key" if operations.settings.admin_key else "loopback"
        page = _static("index.html").read_text(encoding="utf-8").replace(_AUTH_MARK, auth)
        self._page = _load("index.html", page)
        self._files = {path: _load(path) for path in STATIC}
        self._periods: tuple[float, tuple[str, str], dict[str, float]] | None = None

    def routes(self) -> list[Route]:
        return [
            Route("/dashboard", self.page, methods=["GET"]),
            Route("/dashboard/static/{path:path}", self.static, methods=["GET"]),
            Route("/admin/dashboard.json", self.data, methods=["GET"]),
        ]

    async def page(self, request: Request) -> Response:
        return _send(request, self._page, _PAGE_HEADERS)

    async def static(self, request: Request) -> Response:
        found = self._files.get(request.path_params["path"])
        if found is None:
            raise NotFound(f"no such file of the dashboard: {request.url.path}")
        return _send(request, found, {"x-content-type-options": "nosniff"})

    async def data(self, request: Request) -> Response:
        since = _since(request.query_params.get("since", "0"))
        operations = self.operations
        history = operations.history
        assert history is not None, "the app's lifespan has not started"
        numbers = operations.numbers()
        admission = operations.admission
        limits = {}
        if admission is not None:
            for name, gate in admission.gates.items():
                limits[name] = Limit(
                    round(gate.bucket.rate_per_s, 3),
                    gate.configured_rate,
                    round(gate.pause_clock.left_s(), 3),
                )
        cluster = None
        if operations.redis is not None:  # the members and their figures (as /admin/stats)
            own = partial(node_figures, numbers.snapshot, numbers.series, numbers.cache)
            cluster = await cluster_section(operations.redis, operations.cluster.read(), own)
        document = dashboard_document(
            numbers,
            history,
            since=since,
            usable={name: p.usable for name, p in operations.providers.items()},
            limits=limits,
            queue_size=admission.queue_size if admission is not None else 0,
            cache_enabled=operations.cache is not None,
            cluster=cluster,
            spend=await self._spend(numbers),
        )
        return json_response(document, headers={"cache-control": "no-store"})

    async def _spend(self, numbers: NodeNumbers) -> dict[str, Any]:
        """The ``spend`` section: counters and key slots read now, the store's totals by
        period at most ``PERIODS_TTL_S`` old (read in a thread: the store may be busy)."""
        tenants = self.operations.tenants
        now = tenants.now()
        wanted = (period_label("day", now), period_label("month", now))
        cached = self._periods
        if cached is None or cached[1] != wanted or now - cached[0] >= PERIODS_TTL_S:
            cached = self._periods = (
                now,
                wanted,
                await asyncio.to_thread(tenants.spend_in, wanted),
            )
        live = [LiveKey(slot.key, slot.spent(now), slot.in_flight()) for slot in tenants.live()]
        return spend_section(
            numbers.by_family("spend_usd"),
            METRICS["spend_usd"].divisor,
            live,
            numbers.key_spend,
            cached[2],
            today=wanted[0],
            month=wanted[1],
            now=now,
        )


def _since(value: str) -> float:
    try:
        since = float(value)
    except ValueError:
        since = math.nan
    if not math.isfinite(since) or since < 0:
        raise InvalidRequest(
            "since must be a Unix time in seconds (0 or more)", param="since", code="invalid_since"
        )
    return since


def _send(request: Request, found: _File, headers: dict[str, str]) -> Response:
    """The file, or 304 when the browser has this version (it asks again every time)."""
    common = {**headers, "etag": found.etag, "cache-control": "no-cache"}
    if request.headers.get("if-none-match") == found.etag:
        return Response(status_code=304, headers=common)
    return Response(found.body, headers=common, media_type=found.media_type)
