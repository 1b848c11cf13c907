"""``GET /admin/dashboard.json``: what the dashboard page shows, in one document.

Read from what the node already keeps, never from ``/metrics``' text: the node's numbers
(``stats.report.NodeNumbers``: shared stats, labelled series, cache counters, provider
health), the ring of samples (``dashboard.history``) for the charts and the last
minute, the admission gates for each provider's rate limit, and with ``REDIS_URL`` the
cluster's section of ``/admin/stats``.

``since``: the page asks for the chart points after the last one it has (the first
request, with ``since=0``, gets the whole fifteen minutes), so a poll a second carries
a point or two, not nine hundred.

``spend``: what the answers cost, in total, by model and by tenant key
(``dashboard.spend``), made by the caller from the key ring and store.
``cache.avoided.dollars`` is what the calls the cache and de-duplication avoided would
have cost (``avoided_usd``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from aigateway import __version__
from aigateway.dashboard.derive import WINDOW, between, charts, summary
from aigateway.dashboard.history import INTERVAL_S, History
from aigateway.stats.registry import METRICS, stats_samples
from aigateway.stats.report import NodeNumbers, cache_series
from aigateway.wire import PRIORITIES

__all__ = ("CHART_S", "Limit", "dashboard_document")

#: How far back the charts go.
CHART_S: Final = 900.0
_ADMISSION = METRICS["admission"]
_AVOIDED_USD = METRICS["avoided_usd"]
_QUEUE_DEPTH = METRICS["queue_depth"]


@dataclass(frozen=True, slots=True)
class Limit:
    """A provider's node-wide rate limit now (its admission gate)."""

    rate_per_s: float
    configured_rate_per_s: float
    paused_for_s: float


def dashboard_document(
    numbers: NodeNumbers,
    history: History,
    *,
    since: float = 0.0,
    usable: Mapping[str, bool],
    limits: Mapping[str, Limit],
    queue_size: int,
    cache_enabled: bool,
    cluster: dict[str, Any] | None = None,
    spend: dict[str, Any] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The page's document (``usable``: whether each provider is configured)."""
    now = time.time() if now is None else now
    columns = history.columns
    after = max(since, now - CHART_S)
    # The last minute's samples at least (the summary), and the window before the first
    # new point (its rates).
    rows = history.rows(after=min(after, now - 60.0), before=WINDOW)
    last_minute = summary(columns, rows)
    recent = None  # the last few seconds: how close each provider runs to its limit now
    if len(rows) >= 2:
        recent = between(columns, rows[max(0, len(rows) - 1 - WINDOW)], rows[-1])
    return {
        "version": __version__,
        "at": round(now, 3),
        "interval_s": INTERVAL_S,
        "window_s": CHART_S,
        "node": {
            "pid": numbers.pid,
            "workers": numbers.workers_live,
            "workers_configured": numbers.workers_configured,
            "worker_restarts": numbers.restarts,
            "started_at": numbers.started_at,
            "uptime_s": round(max(now - numbers.started_at, 0.0), 3),
            # Requests being handled besides this one.
            "in_flight": max(numbers.stat("requests_in_flight") - 1, 0),
        },
        "summary": _summary(numbers, last_minute, cluster),
        "providers": _providers(numbers, last_minute, recent, usable, limits),
        "cache": _cache(numbers, cache_enabled),
        "queue": _queue(numbers, queue_size),
        "spend": spend if spend is not None else {"available": False, "reason": "not read"},
        "cluster": cluster,
        "charts": charts(columns, rows, after),
    }


def _summary(
    numbers: NodeNumbers, minute: dict[str, Any] | None, cluster: dict[str, Any] | None
) -> dict[str, Any]:
    """The few numbers at the top of the page: the last minute's, and what stands now."""
    minute = minute or {}
    open_circuits = sum(1 for row in numbers.health.values() if row.get("state") == "open")
    return {
        "window_s": minute.get("seconds", 0.0),
        "requests_per_s": minute.get("requests_per_s", 0.0),
        "error_rate": minute.get("error_rate"),
        "latency_p50_ms": minute.get("latency_p50_ms"),
        "latency_p99_ms": minute.get("latency_p99_ms"),
        "ttft_p50_ms": minute.get("ttft_p50_ms"),
        "overhead_p50_ms": minute.get("overhead_p50_ms"),
        "cache_hit_rate": minute.get("cache_hit_rate"),
        "queue_depth": _depth(numbers),
        "circuits_open": open_circuits,
        "nodes": cluster.get("nodes", 1) if cluster else 1,
    }


def _providers(
    numbers: NodeNumbers,
    minute: dict[str, Any] | None,
    recent: dict[str, Any] | None,
    usable: Mapping[str, bool],
    limits: Mapping[str, Limit],
) -> list[dict[str, Any]]:
    rows = []
    for name in numbers.providers:
        health = numbers.health.get(name, {})
        figures = (minute or {}).get("providers", {}).get(name, {})
        now = (recent or {}).get("providers", {}).get(name, {})
        limit = limits.get(name)
        rate = limit.rate_per_s if limit is not None else 0.0
        calls_now = now.get("calls_per_s", 0.0)
        rows.append(
            {
                "name": name,
                "configured": usable.get(name, False),
                "state": health.get("state", "healthy"),
                "retry_after_s": health.get("retry_after_s"),
                "times_opened": health.get("times_opened", 0),
                "consecutive_failures": health.get("consecutive_failures", 0),
                "calls_per_s": figures.get("calls_per_s", 0.0),
                "errors_per_s": figures.get("errors_per_s", 0.0),
                "p50_ms": figures.get("p50_ms"),
                "p99_ms": figures.get("p99_ms"),
                "rate_limit_per_s": rate,
                "configured_rate_per_s": limit.configured_rate_per_s if limit else 0.0,
                "rate_use": round(calls_now / rate, 4) if rate > 0 else None,
                "paused_for_s": limit.paused_for_s if limit else 0.0,
                "queue_depth": _depth(numbers, name),
            }
        )
    return rows


def _depth(numbers: NodeNumbers, provider: str | None = None) -> dict[str, int]:
    """Requests waiting now, by priority (of one provider, or all)."""
    depth = dict.fromkeys(PRIORITIES, 0)
    for labels, value in stats_samples(_QUEUE_DEPTH, numbers.snapshot.gauges, numbers.providers):
        label = dict(labels)
        if provider is None or label["provider"] == provider:
            depth[label["priority"]] += max(int(value), 0)
    return depth


def _queue(numbers: NodeNumbers, queue_size: int) -> dict[str, Any]:
    outcomes: dict[str, dict[str, int]] = {
        outcome: dict.fromkeys(PRIORITIES, 0) for outcome in ("admitted", "shed", "timed_out")
    }
    counters = numbers.snapshot.counters
    for labels, value in stats_samples(_ADMISSION, counters, numbers.providers):
        label = dict(labels)
        outcomes[label["outcome"]][label["priority"]] += int(value)
    return {"queue_size": queue_size, "depth": _depth(numbers), **outcomes}


def _cache(numbers: NodeNumbers, enabled: bool) -> dict[str, Any]:
    """The cache's totals since the node started, and what it (with dedup and batching)
    saved, by how."""
    counters = numbers.cache or {}
    calls: dict[str, int] = {}
    tokens: dict[str, int] = {}
    dollars: dict[str, float] = {}
    avoided = [
        *cache_series(numbers.cache),
        *numbers.by_family("avoided_provider_calls"),
        *numbers.by_family("avoided_tokens"),
    ]
    for one in avoided:
        via = dict(one.labels).get("via", "other")
        if one.family == "avoided_usd":
            dollars[via] = dollars.get(via, 0.0) + one.value / _AVOIDED_USD.divisor
            continue
        into = calls if one.family == "avoided_provider_calls" else tokens
        into[via] = into.get(via, 0) + int(one.value)
    hits = counters.get(METRICS["cache_hits"].stored_as, 0)
    misses = counters.get(METRICS["cache_misses"].stored_as, 0)
    return {
        "enabled": enabled,
        "hits": hits,
        "misses": misses,
        "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        "entries": counters.get(METRICS["cache_entries"].stored_as, 0),
        "bytes": counters.get(METRICS["cache_bytes"].stored_as, 0),
        "budget_bytes": numbers.cache_budget_bytes,
        "avoided": {
            "calls": sum(calls.values()),
            "tokens": sum(tokens.values()),
            "calls_by_way": dict(sorted(calls.items())),
            "tokens_by_way": dict(sorted(tokens.items())),
            "dollars": round(sum(dollars.values()), 9),
            "dollars_by_way": {via: round(usd, 9) for via, usd in sorted(dollars.items())},
        },
    }
