"""What operators see and steer, wired for one worker process.

``create_app`` makes one ``Operations`` from the settings: its middleware (request id,
metrics and log line, CORS, authentication), and what the operators' endpoints read
(``api.ops``: ``/health``, ``/metrics``, ``/admin/stats``, ``/admin/config``).  The
worker's lifespan then attaches it to the node's shared-memory segment before the
pipeline is built, starts it once the rest is ready, and stops it before the segment is
closed::

    operations.attach(segment, providers)   # accounting, provider health, live settings
    pipeline = Pipeline(providers, ..., operations.retry, ...)  # providers with circuits
    operations.subscribe(cache.apply_settings)   # each subsystem follows its own settings
    operations.start(cache=cache, admission=admission)   # probes, live-settings watcher
    ...
    await operations.stop()

Live settings reach each subsystem through the handler it subscribed (the provider
registry its connection limits, admission its rates and queue, the cache its TTLs, the
retry policy and the log level theirs): nothing here knows what a setting does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.middleware import Middleware
from starlette.routing import Router
from starlette.types import ASGIApp

from aigateway import shm, tracing
from aigateway.cluster.lease_board import REGION_NAME as LEASE_REGION
from aigateway.cluster.lease_board import LeaseBoard
from aigateway.cluster.state import LAYOUTS as CLUSTER_LAYOUTS
from aigateway.cluster.state import REGION_NAME as CLUSTER_REGION
from aigateway.cluster.state import ClusterState
from aigateway.config import Settings
from aigateway.core.accounting import Accounting
from aigateway.core.health import HealthBoard, HealthPolicy
from aigateway.core.probe import probe_loop
from aigateway.core.providers import Provider
from aigateway.core.retry import RetryPolicy
from aigateway.dashboard.history import History
from aigateway.hotpath import SharedStats
from aigateway.keys.service import TenantKeys
from aigateway.logs import apply_log_level
from aigateway.middleware.auth import AuthMiddleware
from aigateway.middleware.body_timeout import BodyTimeoutMiddleware
from aigateway.middleware.cors import CORSMiddleware
from aigateway.middleware.hot_path import ExceptionHandler, HotPath, hot_routes
from aigateway.middleware.requests import RequestMiddleware, RequestTracing
from aigateway.pricing import PriceTable
from aigateway.providers.base import ModelListAdapter
from aigateway.runtime import Applier, LiveSettings, region_size
from aigateway.scrub import Scrubber
from aigateway.stats.registry import METRICS, slot_table, stats_schema
from aigateway.stats.report import NodeNumbers
from aigateway.stats.series import SeriesTable

if TYPE_CHECKING:
    from aigateway.cache.service import ResponseCache
    from aigateway.cluster.worker import WorkerRedis  # redis-py: only with REDIS_URL
    from aigateway.core.admission import Admission
    from aigateway.core.registry import ProviderRegistry

logger = logging.getLogger("aigateway.operations")

__all__ = ("Operations", "node_regions")

SERIES_REGION = "series"
HEALTH_REGION = "health"
LIVE_REGION = "live"
HISTORY_REGION = "dashboard history"
SERIES_CAPACITY = 4096
CELL_CAPACITY = 16384
RATE_WINDOW_S = 60.0
_ANSWERED = METRICS["requests_answered"].stored_as  # the request rate's source


def node_regions(settings: Settings, slots: int) -> tuple[shm.RegionSpec, ...]:
    """The shared-memory regions operations needs in the node's segment."""
    providers = [p.name for p in settings.providers]
    series = {"series": SERIES_CAPACITY, "cells": CELL_CAPACITY, "slots": slots}
    return (
        shm.RegionSpec(
            SERIES_REGION,
            SeriesTable.size(SERIES_CAPACITY, CELL_CAPACITY, slots),
            series,
            SeriesTable.LAYOUTS,
        ),
        shm.RegionSpec(
            HEALTH_REGION,
            HealthBoard.size(len(providers)),
            {"providers": providers},
            HealthBoard.LAYOUTS,
        ),
        shm.RegionSpec(LIVE_REGION, region_size(slots), {"slots": slots}, LiveSettings.LAYOUTS),
        _history_region(providers),
    )


def _history_region(providers: list[str]) -> shm.RegionSpec:
    """The dashboard's ring of samples (``dashboard.history``)."""
    params = History.params(providers)
    size = History.size(params["columns"], params["capacity"])
    return shm.RegionSpec(HISTORY_REGION, size, params, History.LAYOUTS)


def health_policy(settings: Settings) -> HealthPolicy:
    return HealthPolicy(
        failure_threshold=settings.circuit_failure_threshold,
        cooldown_s=settings.circuit_cooldown_s,
        probe_interval_s=settings.health_check_interval_s,
        slow_s=settings.request_timeout_s / 2,
        probe_timeout_s=min(10.0, settings.request_timeout_s),
    )


class Operations:
    """One worker's accounting, provider health, live settings and ops middleware."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.scrubber = Scrubber.from_settings(settings)  # the node's secrets
        self.prices = PriceTable.from_settings(settings)  # what answers cost
        # Private counters until attached to the node's segment (and after): a request
        # that comes before or after the lifespan is counted where nobody reads it.
        self.accounting = Accounting.private(
            tuple(p.name for p in settings.providers), prices=self.prices
        )
        self.health: HealthBoard | None = None
        self.live: LiveSettings | None = None
        self.table: SeriesTable | None = None
        self.history: History | None = None  # the dashboard's samples of the node
        self.cluster = ClusterState.private()  # "off" unless the node's segment says more
        self.redis: WorkerRedis | None = None  # this worker's Redis link, with REDIS_URL
        self.leases: LeaseBoard | None = None  # the node's leases of cluster-wide limits
        self.stats: SharedStats | None = None
        self.providers: Mapping[str, Provider] = {}  # the worker's registry, once attached
        self.cache: ResponseCache | None = None
        self.admission: Admission | None = None
        self.tenants = TenantKeys(settings, self.prices)  # opened in the lifespan (see app)
        self.retry = RetryPolicy.from_settings(settings)
        self.tracing: RequestTracing | None = None  # with OTEL_* set, from start to stop
        self.started_at = time.time()
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._tasks: list[asyncio.Task[Any]] = []

    # -- building the app ----------------------------------------------------------------

    def middleware(self) -> list[Middleware]:
        """Outermost first: request id, metrics and log line; CORS; authentication."""
        settings = self.settings
        stack = [Middleware(RequestMiddleware, source=self)]
        if settings.cors_allow_origins:
            stack.append(Middleware(CORSMiddleware, allow_origins=settings.cors_allow_origins))
        stack.append(Middleware(AuthMiddleware, **self._auth_options()))
        return stack

    def hot_path(
        self, app: ASGIApp, router: Router, handlers: Mapping[Any, ExceptionHandler]
    ) -> HotPath:
        """The pipeline's routes in front of ``app`` (the whole stack), doing what
        ``middleware()`` and the body's deadline do, in one function (``HotPath``)."""
        settings = self.settings
        cors = None
        if settings.cors_allow_origins:
            cors = CORSMiddleware(app, allow_origins=settings.cors_allow_origins)
        return HotPath(
            app, router, hot_routes(router), self,
            AuthMiddleware(app, **self._auth_options()), cors,
            BodyTimeoutMiddleware(app, timeout_s=settings.client_body_timeout_s), handlers,
        )  # fmt: skip

    def _auth_options(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "api_keys": settings.api_keys,
            "admin_key": settings.admin_key,
            "metrics_public": settings.metrics_public,
            "tenants": self.tenants,
        }

    # -- the worker's lifespan -----------------------------------------------------------

    def attach(self, segment: shm.Segment | None, providers: ProviderRegistry) -> None:
        """Accounting, health and live settings on the node's segment (private ones
        without it), and the providers' circuits; before the pipeline is built."""
        settings = self.settings
        names = [p.name for p in settings.providers]
        slots = 2 * settings.workers + 2
        regions = segment.region_names if segment is not None else ()
        if segment is not None and not all(
            r in regions for r in (SERIES_REGION, HEALTH_REGION, LIVE_REGION)
        ):
            logger.warning("the node's segment has no operations regions: metrics are per worker")
        if segment is not None and SERIES_REGION in regions:
            self.stats = segment.stats()
            self.table = SeriesTable(
                segment.region(SERIES_REGION, *SeriesTable.LAYOUTS),
                segment.region_params(SERIES_REGION),
                segment.region_lock_path(SERIES_REGION),
            )
            self.health = HealthBoard(
                segment.region(HEALTH_REGION, *HealthBoard.LAYOUTS),
                segment.region_params(HEALTH_REGION)["providers"],
                health_policy(settings),
                segment.region_lock_path(HEALTH_REGION),
            )
            self.live = LiveSettings(
                settings,
                segment.region(LIVE_REGION, *LiveSettings.LAYOUTS),
                segment.region_params(LIVE_REGION)["slots"],
                segment.region_lock_path(LIVE_REGION),
            )
            if HISTORY_REGION in regions:
                self.history = History(
                    segment.region(HISTORY_REGION, *History.LAYOUTS),
                    segment.region_params(HISTORY_REGION),
                    segment.region_lock_path(HISTORY_REGION),
                )
            if CLUSTER_REGION in regions:
                self.cluster = ClusterState(segment.region(CLUSTER_REGION, *CLUSTER_LAYOUTS))
            if LEASE_REGION in regions:
                self.leases = LeaseBoard(
                    segment.region(LEASE_REGION, *LeaseBoard.LAYOUTS),
                    segment.region_params(LEASE_REGION)["providers"],
                )
            self.started_at = segment.created_at or self.started_at
        else:
            self.stats = SharedStats(stats_schema(names))
            params = {"series": SERIES_CAPACITY, "cells": CELL_CAPACITY, "slots": 1}
            private = bytearray(SeriesTable.size(SERIES_CAPACITY, CELL_CAPACITY, 1))
            self.table = SeriesTable(memoryview(private), params, None)
            self.health = HealthBoard.private(names, health_policy(settings))
            self.live = LiveSettings(settings, bytearray(region_size(slots)), slots)
        if self.history is None:  # without the node's segment: this worker's own samples
            self.history = History.private(names)
        self.accounting = Accounting(self.stats, self.table, tuple(names), self.prices)
        self.stats.incr(slot_table(self.stats.schema, "worker_starts", ())[()])
        self.providers = providers
        for name, provider in providers.items():
            probe_able = isinstance(provider.adapter, ModelListAdapter)
            providers.set_circuit(name, self.health.circuit(name, probe_able))
        self.subscribe(apply_log_level)
        self.subscribe(self.retry.apply_settings)

    def subscribe(self, applier: Applier, *, node_wide: bool = False) -> None:
        """Call ``applier(old, new)`` whenever the live settings change (see
        ``runtime.LiveSettings.subscribe``); from ``attach`` on, before ``start``."""
        assert self.live is not None, "operations are not attached yet"
        self.live.subscribe(applier, node_wide=node_wide)

    def start(self, cache: ResponseCache | None = None, admission: Admission | None = None) -> None:
        """Apply the node's live settings (a respawned worker's changes), then watch them;
        probe providers; sample rates."""
        self.cache, self.admission = cache, admission
        assert self.live is not None and self.health is not None
        if admission is not None and self.settings.redis_url is not None and self.leases:
            _leased(admission, self.leases)
        self.live.refresh()
        self.tracing = tracing.start(self.settings)  # in the worker: the SDK's own threads
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.live.watch()),
            loop.create_task(probe_loop(self.health, self.providers, self.accounting.probe)),
            loop.create_task(self._sample_rates()),
        ]

    async def stop(self) -> None:
        """Stop the tasks and let go of the shared memory (before the segment closes)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.tracing is not None:  # the spans still buffered go out
            traced, self.tracing = self.tracing, None
            await traced.shutdown()
        self.accounting = Accounting.private(
            tuple(p.name for p in self.settings.providers), prices=self.prices
        )
        closables = (self.table, self.health, self.live, self.cluster, self.leases, self.history)
        for closable in closables:
            if closable is not None:
                closable.close()
        self.table = self.health = self.live = self.leases = None
        self.history = None
        self.cluster = ClusterState.private()

    # -- what the endpoints read ---------------------------------------------------------

    def numbers(self) -> NodeNumbers:
        """Everything the node counts, read now."""
        assert self.stats is not None and self.table is not None
        health = {}
        if self.health is not None:
            health = {name: self.health.report(name) for name in self.health.providers}
        cache = self.cache
        return NodeNumbers(
            snapshot=self.stats.snapshot(),
            series=self.table.read(),
            providers=tuple(p.name for p in self.current.providers),
            health=health,
            workers_configured=self.settings.workers,
            workers_live=max(self.table.live_slots(), 1),
            started_at=self.started_at,
            cache=cache.store.counters() if cache is not None else None,
            cache_budget_bytes=cache.store.max_bytes if cache is not None else 0,
            pid=os.getpid(),
            cluster=self.cluster.read(),
            leases=self.leases,
            key_spend=self.tenants.spend_by_name(),
        )

    @property
    def current(self) -> Settings:
        """The settings in force now (the startup ones plus live changes)."""
        return self.live.current if self.live is not None else self.settings

    def per_second(self) -> tuple[float, float]:
        """Requests a second over the last minute (node-wide), and the window it covers.

        From this worker's samples of the node's total; while the node is younger than a
        minute, over its whole life."""
        if self.stats is None:
            return 0.0, 0.0
        now, total = time.monotonic(), self.stats.snapshot().counters.get(_ANSWERED, 0)
        uptime = max(time.time() - self.started_at, 1e-3)
        if uptime <= RATE_WINDOW_S:
            return total / uptime, uptime
        past = [(t, n) for t, n in self._samples if now - t <= RATE_WINDOW_S + 0.5]
        if not past or now - past[0][0] < 1.0:
            return 0.0, 0.0
        then, before = past[0]
        return (total - before) / (now - then), now - then

    # -- internals -----------------------------------------------------------------------

    async def _sample_rates(self, every_s: float = 1.0) -> None:
        while True:
            if self.stats is not None:
                total = self.stats.snapshot().counters.get(_ANSWERED, 0)
                self._samples.append((time.monotonic(), total))
                while self._samples and time.monotonic() - self._samples[0][0] > RATE_WINDOW_S:
                    self._samples.popleft()
            self._sample_history()
            await asyncio.sleep(every_s)

    def _sample_history(self) -> None:
        """The dashboard's sample of the node, when due (one worker a second takes it)."""
        history = self.history
        if history is None or self.stats is None or self.table is None:
            return
        now = time.time()
        try:
            history.record(now, lambda: history.columns.sample(self.numbers(), now))
        except Exception:  # the charts miss a second; requests must not notice
            logger.exception("the dashboard's sample of the node failed")


def _leased(admission: Admission, leases: LeaseBoard) -> None:
    """The node agent sets the buckets' rates (its leases): the gates leave them alone,
    and refuse calls while the agent says a provider's limit fails closed."""
    for gate in admission.gates.values():
        gate.adaptive = False
    admission.closed = leases.closed
