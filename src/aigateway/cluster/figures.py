"""Each node's figures, and the cluster's section of ``/admin/stats``.

A node publishes a few figures with its heartbeat (``FIGURES``: requests answered,
errors (5xx answers), cache hits, provider calls, requests in flight), read by the node
agent from the node's shared stats, series table and cache counters. ``/admin/stats`` on
any node lists the live members with their figures and the cluster's totals, read from
Redis through the worker's own link (at most ``REDIS_TIMEOUT_MS``); while Redis cannot be
reached the section says so and shows this node alone, from its own numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from aigateway import __version__
from aigateway.cluster.outage import RedisUnavailable
from aigateway.cluster.state import ClusterView
from aigateway.hotpath import StatsSnapshot
from aigateway.stats.registry import METRICS
from aigateway.stats.series import Series

if TYPE_CHECKING:  # redis-py only with REDIS_URL (cluster/outage.py)
    from aigateway.cluster.worker import WorkerRedis

__all__ = ("FIGURES", "cluster_section", "node_figures", "totals")

FIGURES: Final = ("requests", "errors", "cache_hits", "provider_calls", "in_flight")
_ANSWERED = METRICS["requests_answered"].stored_as
_IN_FLIGHT = METRICS["requests_in_flight"].stored_as
_HITS = METRICS["cache_hits"].stored_as


def node_figures(
    snapshot: StatsSnapshot, series: Iterable[Series], cache: Mapping[str, int] | None
) -> dict[str, int]:
    """A node's ``FIGURES`` from its numbers."""
    errors = calls = 0
    for one in series:
        if one.family == "requests" and dict(one.labels).get("status") == "5xx":
            errors += int(one.value)
        elif one.family == "provider_calls":
            calls += int(one.value)
    return {
        "requests": snapshot.counters.get(_ANSWERED, 0),
        "errors": errors,
        "cache_hits": (cache or {}).get(_HITS, 0),
        "provider_calls": calls,
        "in_flight": max(snapshot.gauges.get(_IN_FLIGHT, 0), 0),
    }


def totals(figures: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The cluster's totals of ``FIGURES`` over the members' figures."""
    summed = dict.fromkeys(FIGURES, 0)
    for one in figures:
        for name in FIGURES:
            value = one.get(name, 0)
            summed[name] += value if isinstance(value, int) else 0
    return summed


async def cluster_section(
    redis: WorkerRedis, view: ClusterView, own: Callable[[], dict[str, int]]
) -> dict[str, Any]:
    """``/admin/stats``'s ``cluster``: the members, each with its figures, and the totals;
    ``own()``: this node's figures, shown alone when Redis cannot be reached."""
    section: dict[str, Any] = {
        "name": redis.settings.cluster_name,
        "node": view.node_id,
        "redis": view.redis,
    }
    from aigateway.cluster.membership import members  # with REDIS_URL only: redis-py

    try:
        found = await redis.call(lambda client: members(client, redis.keys))
    except RedisUnavailable as exc:
        reason = view.reason or str(exc) or "no answer in time"
        figures = own()
        me = {"id": view.node_id, "version": __version__, "figures": figures, "seen_ms_ago": 0}
        section.update(
            redis="down",
            reason=f"Redis unavailable: {reason}; showing this node only",
            nodes=1,
            members=[me],
            totals=totals([figures]),
            at=time.time(),
        )
        return section
    found.sort(key=lambda document: str(document.get("id", "")))
    section.update(
        nodes=len(found),
        members=found,
        totals=totals(document.get("figures", {}) for document in found),
        at=time.time(),
    )
    return section
