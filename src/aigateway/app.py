"""The Starlette application of one worker process.

``create_app(settings)`` builds it from arguments; Granian loads
``create_worker_app`` by import string in each worker process, which reads the
settings the main process validated. Per-worker resources (one pooled upstream
client per provider) live in the ASGI lifespan.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import lmdb
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from aigateway import shm
from aigateway.api.admin import AdminRoutes
from aigateway.api.batch import BatchRoutes
from aigateway.api.builder import RequestBuilder
from aigateway.api.http import error_response, json_response
from aigateway.api.keys import KeyRoutes
from aigateway.api.messages import MessagesRoutes
from aigateway.api.native import NativeRoutes
from aigateway.api.openai_compat import OpenAIRoutes
from aigateway.api.openapi import openapi_document
from aigateway.api.ops import OpsRoutes
from aigateway.api.repeats import RepeatedHits
from aigateway.api.responses import ResponsesRoutes
from aigateway.cache.response_store import LmdbResponseStore, MemoryResponseStore, NodeResponses
from aigateway.cache.service import ResponseCache
from aigateway.cache.signatures import LmdbSignatures
from aigateway.cache.store import FLUSH_INTERVAL_S, LmdbStore
from aigateway.config import Settings, settings_from_worker_env
from aigateway.core.admission import (
    Admission,
    NodeCounters,
    pause_bucket_name,
    pause_bucket_spec,
)
from aigateway.core.media import RemoteMedia
from aigateway.core.pipeline import Pipeline
from aigateway.core.registry import ProviderRegistry
from aigateway.core.router import Router
from aigateway.core.token_budget import token_bucket_name, token_bucket_spec
from aigateway.dashboard.routes import DashboardRoutes
from aigateway.errors import GatewayError, MethodNotAllowed, NotFound
from aigateway.hotpath import SharedStats, TokenBucket, TTLPolicy
from aigateway.middleware.body_timeout import BodyTimeoutMiddleware
from aigateway.middleware.errors import UnexpectedErrorMiddleware
from aigateway.operations import Operations
from aigateway.pricing import PriceTable
from aigateway.provider_specs import families
from aigateway.providers.gemini import GeminiAdapter
from aigateway.runtime import live_variables
from aigateway.upstream import PoolLimits, create_upstream_client

if TYPE_CHECKING:  # redis-py is imported only with REDIS_URL (see worker_redis)
    from aigateway.cluster.state import ClusterState
    from aigateway.cluster.worker import WorkerRedis

logger = logging.getLogger("aigateway")

SWEEP_EVERY_FLUSHES = 20  # expired entries are swept every 10 s


def create_app(settings: Settings) -> Starlette:
    builder = RequestBuilder(scope_by_key=settings.cache_scope == "key")
    openai_routes = OpenAIRoutes(settings.max_body_bytes, builder)
    native_routes = NativeRoutes(settings.max_body_bytes, builder)
    admin_routes = AdminRoutes()
    batch_routes = BatchRoutes(settings.max_body_bytes, builder)
    keepers = frozenset(p.name for p in settings.providers if p.responses_api)
    responses_routes = ResponsesRoutes(settings.max_body_bytes, builder, keepers)
    messages_routes = MessagesRoutes(settings.max_body_bytes, builder)
    document = openapi_document(
        [p.name for p in settings.providers], live_variables(settings.specs)
    )
    operations = Operations(settings)  # metrics, health, live settings, auth, CORS, logs
    scrubber = operations.scrubber  # the node's secrets, out of what is relayed

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        providers = ProviderRegistry.from_settings(settings)
        media_client = create_upstream_client(
            settings.upstream_client,
            PoolLimits(
                max_connections=8,
                connect_timeout_s=settings.image_fetch_timeout_s,
                keepalive_expiry_s=settings.keepalive_expiry_s,
                read_idle_timeout_s=settings.image_fetch_timeout_s,
            ),
        )
        # Node-wide token buckets and stats (used by admission and metrics).
        segment = shm.attach_segment(settings.shm_name) if settings.shm_name else None
        app.state.segment = segment
        operations.attach(segment, providers)
        # With REDIS_URL: this worker's own link to the cluster (shared cache, claims).
        redis = worker_redis(settings, operations.cluster)
        operations.redis = redis
        signatures = share_signatures(settings, providers)
        if signatures is not None and redis is not None:  # to the other nodes' stores
            from aigateway.cluster.signature_sync import SignatureFeed

            signatures.published = SignatureFeed(redis).publish
        admission = build_admission(settings, segment, operations.stats)
        tenants = operations.tenants  # tenant keys: the store, the node's key slots
        tenants.open(segment)
        admin_routes.admission = admission
        cache = open_cache(settings, operations.prices)
        if cache is not None and redis is not None:  # the cluster's cache: a second tier
            from aigateway.cluster.cache_tier import SecondTier

            cache.shared = SecondTier(redis, on_lost=cache.shared_write_lost)
        pipeline = Pipeline(
            providers,
            build_router(settings),
            operations.retry,
            settings.request_timeout_s,
            RemoteMedia(
                media_client,
                settings.image_fetch_max_bytes,
                settings.image_fetch_timeout_s,
                settings.image_fetch_allow_private,
            ),
            cache,
            admission,
            embedding_batches=(settings.batch_size, settings.batch_timeout_ms / 1000.0),
            scrubber=scrubber,
            stream_max_lag_bytes=settings.stream_max_lag_bytes,
            provider_pause_max_s=settings.provider_pause_max_s,
            keys=tenants.gate,
        )
        openai_routes.pipeline = native_routes.pipeline = batch_routes.pipeline = pipeline
        responses_routes.pipeline = pipeline
        responses_store = open_response_store(settings)
        responses_routes.store = NodeResponses(responses_store)
        if redis is not None:  # shared by every node, the node's store when Redis is away
            ttl_s = settings.responses_store_days * 86400.0
            from aigateway.cluster.response_tier import SharedResponses

            responses_routes.store = SharedResponses(responses_store, redis, ttl_s)
        messages_routes.pipeline = pipeline
        admin_routes.cache = cache
        upkeep = asyncio.create_task(cache_upkeep(cache)) if cache is not None else None
        follow_live_settings(operations, providers, admission, cache)
        operations.start(cache=cache, admission=admission)
        if cache is not None:  # a request that was a hit, sent again: answered at once
            openai_routes.repeats = RepeatedHits(
                pipeline, cache, lambda: operations.current, lambda: operations.tracing is not None
            )
        tenants.start()  # spend flushed every KEY_SPEND_FLUSH_MS
        try:
            yield
        finally:
            if cache is not None and cache.shared is not None:
                await cache.shared.settle()  # the answers' writes held back (~1 ms)
            await tenants.stop()
            await operations.stop()
            openai_routes.pipeline = native_routes.pipeline = batch_routes.pipeline = None
            openai_routes.repeats = None
            responses_routes.pipeline = responses_routes.store = None
            responses_store.close()
            if signatures is not None:
                signatures.close()
            messages_routes.pipeline = None
            if upkeep is not None:
                upkeep.cancel()
            if cache is not None:
                cache.store.close()
            if segment is not None:
                segment.close()
            await providers.close()
            await media_client.close()
            if redis is not None:
                await redis.close()

    async def openapi(request: Request) -> Response:
        return json_response(document)

    app = _GatewayApp(
        operations,
        routes=[
            *openai_routes.routes(),
            *responses_routes.routes(),
            Route("/v1/chat", native_routes.chat, methods=["POST"]),
            Route("/v1/batch", batch_routes.batch, methods=["POST"]),
            *messages_routes.routes(),
            *OpsRoutes(operations).routes(),
            *DashboardRoutes(operations).routes(),
            *admin_routes.routes(),
            *KeyRoutes(operations.tenants, settings.max_body_bytes).routes(),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        middleware=[
            *operations.middleware(),
            # inside the request middleware: a slow body's 408 is counted and logged
            Middleware(BodyTimeoutMiddleware, timeout_s=settings.client_body_timeout_s),
            Middleware(UnexpectedErrorMiddleware),
        ],
        lifespan=lifespan,
    )
    # No redirect from /path/ to /path: Starlette builds its Location from the Host
    # header, which the client chose; an unknown path is a 404.
    app.router.redirect_slashes = False
    return app


class _GatewayApp(Starlette):
    """Starlette with the pipeline's routes answered in front of its middleware stack
    (``middleware.hot_path``); everything else goes through the stack as before."""

    def __init__(self, operations: Operations, **options: Any) -> None:
        super().__init__(**options)
        self._operations = operations

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return self._operations.hot_path(stack, self.router, self.exception_handlers)


def worker_redis(settings: Settings, cluster: ClusterState) -> WorkerRedis | None:
    """This worker's own link to the cluster, with REDIS_URL; only then is redis-py
    imported (and with it OpenTelemetry, when installed): a worker without REDIS_URL
    would pay their start-up time and memory for nothing."""
    if not settings.redis_url:
        return None
    from aigateway.cluster.worker import WorkerRedis

    return WorkerRedis(settings, cluster)


def follow_live_settings(
    operations: Operations,
    providers: ProviderRegistry,
    admission: Admission,
    cache: ResponseCache | None,
) -> None:
    """Each subsystem follows the live settings it owns (``PUT /admin/config``) through
    its own handler; operations subscribed the log level and the retry policy."""
    operations.subscribe(providers.apply_settings)  # connection limits: new pools
    operations.subscribe(admission.apply_settings)
    if operations.settings.redis_url is None:  # else the node agent leases the rates
        operations.subscribe(admission.set_node_rates, node_wide=True)  # the shared buckets
    if cache is not None:
        operations.subscribe(cache.apply_settings)


def build_admission(
    settings: Settings, segment: shm.Segment | None, stats: SharedStats | None
) -> Admission:
    """Node-wide buckets and counters from the shared segment (``stats`` is this worker's
    slot of the node's stats); private ones without it."""
    rates = {p.name: p.rps for p in settings.providers}
    if segment is None:
        rate, burst = pause_bucket_spec()
        buckets = {
            name: (TokenBucket(r, max(1.0, r)), TokenBucket(rate, burst))
            for name, r in rates.items()
        }
        tokens = {p.name: TokenBucket(*token_bucket_spec(p.tpm)) for p in settings.providers}
        admission = Admission(buckets, rates, settings.queue_size, token_buckets=tokens)
    else:
        buckets = {
            name: (segment.bucket(name), segment.bucket(pause_bucket_name(name))) for name in rates
        }
        tokens = {name: segment.bucket(token_bucket_name(name)) for name in rates}
        counters = NodeCounters(stats, tuple(rates))
        admission = Admission(buckets, rates, settings.queue_size, counters, token_buckets=tokens)
    admission.apply_settings(settings, settings)  # PRIORITY_RESERVES from the start
    return admission


def open_cache(settings: Settings, prices: PriceTable | None = None) -> ResponseCache | None:
    """The node's response cache (None when off); ``prices``: the worker's one table."""
    if not settings.cache_enabled or settings.cache_path is None:
        return None
    store = LmdbStore(settings.cache_path, int(settings.cache_max_mb * 1024 * 1024))
    policy = TTLPolicy(provider_factors=dict(settings.cache_ttl_factors))
    return ResponseCache(
        store,
        settings.cache_ttl_minutes * 60.0,
        policy,
        settings.cache_max_entry_bytes,
        prices if prices is not None else PriceTable.from_settings(settings),
    )


def share_signatures(settings: Settings, providers: ProviderRegistry) -> LmdbSignatures | None:
    """Gemini's thought signatures in the node's store, so a conversation's next turn finds
    them on whichever worker it lands (``cache/signatures.py``); None without a node
    directory (each adapter keeps its worker's own)."""
    if settings.signatures_path is None:
        return None
    gemini = [p.adapter for p in providers.values() if isinstance(p.adapter, GeminiAdapter)]
    if not gemini:
        return None
    signatures = LmdbSignatures(settings.signatures_path)
    for adapter in gemini:
        adapter.signatures = signatures
    return signatures


def open_response_store(settings: Settings) -> LmdbResponseStore | MemoryResponseStore:
    """The node's stored Responses; a worker's own when run without a node directory."""
    ttl_s = settings.responses_store_days * 86400.0
    if settings.responses_path is None:
        return MemoryResponseStore(ttl_s)
    budget = int(settings.responses_store_mb * 1024 * 1024)
    return LmdbResponseStore(settings.responses_path, budget, ttl_s)


async def cache_upkeep(cache: ResponseCache) -> None:
    """Flush this worker's hit counts often; sweep expired entries now and then."""
    rounds = 0
    while True:
        await asyncio.sleep(FLUSH_INTERVAL_S)
        rounds += 1
        try:
            cache.store.flush()
            if rounds % SWEEP_EVERY_FLUSHES == 0:
                cache.store.sweep()
        except lmdb.Error as exc:  # keep going: the next round may well succeed
            logging.getLogger("aigateway.cache").warning("cache upkeep failed: %s", exc)


def build_router(settings: Settings) -> Router:
    models = {model: p.name for p in settings.providers for model in p.models}
    return Router(
        [p.name for p in settings.providers],
        aliases=dict(settings.aliases),
        models=models,
        default_provider=settings.default_provider,
        families=families(settings.specs),
    )


def create_worker_app() -> Starlette:
    """Factory Granian calls in each worker process."""
    settings = settings_from_worker_env()
    logging.getLogger("aigateway").setLevel(settings.log_level.upper())
    app = create_app(settings)
    _settle_collector()
    return app


# A request allocates thousands of objects, nearly all freed by reference counting, yet
# the cyclic collector ran every 700 allocations and its older generations rescanned
# everything the imports left behind. Freezing the start-up objects and collecting less
# often cut a worker's main-thread time per cache miss by 8-10% (379-390 -> 348-350 us,
# py-spy, 1 worker, 16 connections); memory stays flat (see docs/benchmarks.md, soak).
GC_THRESHOLDS = (20_000, 20, 20)


def _settle_collector() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc, path=request.url.path)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if exc.status_code == 404:
        return error_response(NotFound(f"no such endpoint: {request.method} {path}"), path=path)
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        error = MethodNotAllowed(f"{request.method} is not allowed on {path}; allowed: {allowed}")
        return error_response(error, headers={"allow": allowed}, path=path)
    return error_response(GatewayError(str(exc.detail), status=exc.status_code), path=path)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # Only what fails outside UnexpectedErrorMiddleware (in the outer middleware) lands
    # here. The traceback goes to the log only; the client gets no internals.
    logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    error = GatewayError("internal gateway error", code="internal_error")
    return error_response(error, path=request.url.path)
