"""Admin endpoints: the node's response cache (report, empty) and its admission queue.

``DELETE /admin/cache`` empties this node's cache; in a cluster (``REDIS_URL``) also the
second tier in Redis and, through the cache's generation, every node's first tier
(docs/cluster.md). When Redis cannot be reached the node's own cache is still emptied, and
the answer is a 503 that says what was not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigateway.api.http import json_response
from aigateway.cache.service import ResponseCache
from aigateway.cluster.outage import RedisUnavailable
from aigateway.core.admission import Admission
from aigateway.errors import GatewayError
from aigateway.stats.registry import METRICS
from aigateway.stats.report import cache_series

# The fields of /admin/cache's ``avoided`` rows, by metric and direction.
_AVOIDED_FIELDS = {
    ("avoided_provider_calls", ""): "calls",
    ("avoided_tokens", "in"): "prompt_tokens",
    ("avoided_tokens", "out"): "completion_tokens",
    ("avoided_usd", ""): "usd",
}


class AdminRoutes:
    def __init__(self) -> None:
        self.cache: ResponseCache | None = None
        self.admission: Admission | None = None

    def routes(self) -> list[Route]:
        return [
            Route("/admin/cache", self.cache_endpoint, methods=["GET", "DELETE"]),
            Route("/admin/queue", self.queue_endpoint, methods=["GET"]),
        ]

    async def queue_endpoint(self, request: Request) -> Response:
        """Queue depth per provider and priority (node), and admission outcomes."""
        if self.admission is None:
            return json_response({"enabled": False})
        return json_response(self.admission.report())

    async def cache_endpoint(self, request: Request) -> Response:
        if self.cache is None:
            return json_response({"enabled": False})
        if request.method == "DELETE":
            return json_response(await clear_cache(self.cache))
        return json_response(cache_report(self.cache))


async def clear_cache(cache: ResponseCache) -> dict[str, Any]:
    """Empty the second tier first (so no node refills its first tier from it), then
    tell every node to empty its first, then empty this node's."""
    shared = cache.shared
    if shared is None:
        return {"cleared": cache.store.clear()}
    try:
        removed, generation = await shared.clear()
    except RedisUnavailable as exc:
        cleared = cache.store.clear()
        raise GatewayError(
            f"this node's cache was emptied ({cleared} entries), but Redis could not be "
            f"reached ({exc}): the shared cache and the other nodes' caches were not; "
            "try again",
            status=503,
            error_type="service_unavailable",
            code="redis_unavailable",
        ) from None
    return {"cleared": cache.store.clear(), "shared_cleared": removed, "generation": generation}


def cache_report(cache: ResponseCache, counters: Mapping[str, int] | None = None) -> dict[str, Any]:
    """``/admin/cache``; ``counters``: the store's, when the caller has just read them."""
    store = cache.store
    if counters is None:
        counters = store.counters()
    hits, misses = counters.get("hits", 0), counters.get("misses", 0)
    second = counters.get("second_tier_hits", 0)  # first-tier misses the second answered
    avoided: dict[str, dict[str, Any]] = {}
    for one in cache_series(counters):
        labels = dict(one.labels)
        provider, model, via = labels["provider"], labels["model"], labels["via"]
        field = _AVOIDED_FIELDS[one.family, labels.get("direction", "")]
        row = avoided.setdefault(f"{provider}/{model}", {"provider": provider, "model": model})
        metric = METRICS[one.family]
        value = one.value / metric.divisor if metric.divisor != 1 else int(one.value)
        row[f"{via}_{field}"] = value
    return {
        "enabled": True,
        "entries": counters.get("entries", 0),
        "bytes": counters.get("bytes", 0),
        "pages_bytes": store.footprint(),  # what the budget limits
        "budget_bytes": store.max_bytes,
        "hits": hits,
        "second_tier_hits": second,
        "repeat_hits": counters.get("repeat_hits", 0),  # of the hits: answered at once
        "misses": misses,
        "bypasses": counters.get("bypasses", 0),
        "hit_rate": round((hits + second) / (hits + misses), 4) if hits + misses else 0.0,
        "dedup_joins": counters.get("dedup_joins", 0),
        "evictions": counters.get("evictions", 0),
        "expirations": counters.get("expirations", 0),
        "store_failures": counters.get("store_failures", 0),  # answers served unstored
        "top_entries": store.top_entries(),
        "avoided": sorted(avoided.values(), key=lambda row: (row["provider"], row["model"])),
    }
