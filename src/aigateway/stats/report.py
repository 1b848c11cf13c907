"""The node's numbers, gathered once, as Prometheus text (``/metrics``) or JSON
(``/admin/stats``).

Everything comes from what the whole node shares, whichever worker answers: the shared
stats and the labelled series table (every worker's slot summed, a dead worker's
counts included), the response cache's totals (LMDB), provider health (shared memory),
and the admission counters admission keeps in the shared stats.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aigateway import __version__, hotpath
from aigateway.core.admission import OUTCOMES as ADMISSION_OUTCOMES
from aigateway.core.admission import PRIORITIES, outcome_name, queued_name
from aigateway.hotpath import HistogramSnapshot, StatsSnapshot
from aigateway.stats.exposition import Exposition, quantile
from aigateway.stats.families import FAMILIES
from aigateway.stats.series import COUNTER, HISTOGRAM, Series

__all__ = ("NodeNumbers", "prometheus_text", "stats_document")

CIRCUIT_STATES = {"healthy": 0, "degraded": 1, "half_open": 2, "open": 3}
# Unlabelled histograms of the shared stats: (stats name, exported name, help).
HISTOGRAMS = (
    ("request_seconds", "request_duration_seconds", "End-to-end latency of HTTP requests."),
    (
        "overhead_seconds",
        "gateway_overhead_seconds",
        "Latency the gateway adds: end to end (first byte, for streams) minus provider time.",
    ),
    ("ttfb_seconds", "stream_first_byte_seconds", "Time to the first byte of streamed answers."),
)
CACHE_COUNTERS = (
    ("hits", "cache_hits", "Requests answered from the response cache."),
    ("misses", "cache_misses", "Cache lookups that found nothing."),
    ("bypasses", "cache_bypasses", "Requests that skipped the cache (no-cache)."),
    ("evictions", "cache_evictions", "Entries evicted to stay within the cache budget."),
    ("expirations", "cache_expirations", "Expired entries swept from the cache."),
    ("dedup_joins", "dedup_requests", "Requests that shared an identical in-flight call."),
)


@dataclass(slots=True)
class NodeNumbers:
    """One reading of everything the node counts."""

    snapshot: StatsSnapshot
    series: list[Series]
    providers: tuple[str, ...]
    health: dict[str, dict[str, Any]]
    workers_configured: int
    workers_live: int
    started_at: float
    cache: dict[str, int] | None = None
    cache_budget_bytes: int = 0
    pid: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def by_family(self, family: str) -> list[Series]:
        return [series for series in self.series if series.family == family]

    @property
    def restarts(self) -> int:
        return max(0, self.snapshot.counters.get("worker_starts", 0) - self.workers_configured)


# -- Prometheus ---------------------------------------------------------------------------


def prometheus_text(numbers: NodeNumbers) -> str:
    out = Exposition()
    snapshot = numbers.snapshot
    build = (("version", __version__), ("implementation", hotpath.IMPLEMENTATION))
    uptime = max(time.time() - numbers.started_at, 0.0)
    in_flight = snapshot.gauges.get("in_flight", 0)
    _gauge(out, "build_info", "Version of the gateway and of its hot paths.", [(build, 1)])
    started = _one(numbers.started_at)
    _gauge(out, "start_time_seconds", "When the node started (Unix time).", started)
    _gauge(out, "uptime_seconds", "Seconds since the node started.", _one(uptime))
    _gauge(out, "workers", "Worker processes alive.", _one(numbers.workers_live))
    restarts = _one(numbers.restarts)
    _counter(out, "worker_restarts", "Workers started again after one ended.", restarts)
    _gauge(out, "requests_in_flight", "Requests being handled now.", _one(in_flight))
    for stats_name, name, help_text in HISTOGRAMS:
        histogram = snapshot.histograms.get(stats_name)
        if histogram is not None:
            out.family(f"aigateway_{name}", "histogram", help_text)
            out.histogram(
                f"aigateway_{name}", (), histogram.bounds, histogram.counts, histogram.sum
            )
    avoided = _avoided_from_cache(numbers.cache)
    for family in FAMILIES.values():
        series = numbers.by_family(family.name) + avoided.get(family.name, [])
        _family(out, family.name, family.kind, family.help, family.bounds, series)
    cache = numbers.cache
    if cache is not None:
        for key, name, help_text in CACHE_COUNTERS:
            _counter(out, name, help_text, _one(cache.get(key, 0)))
        entries = _one(cache.get("entries", 0))
        _gauge(out, "cache_entries", "Entries in the response cache.", entries)
        _gauge(out, "cache_bytes", "Bytes the response cache holds.", _one(cache.get("bytes", 0)))
        budget = _one(numbers.cache_budget_bytes)
        _gauge(out, "cache_budget_bytes", "The response cache's budget (CACHE_MAX_MB).", budget)
    health = numbers.health.items()
    states = [((("provider", n),), CIRCUIT_STATES.get(r["state"], 0)) for n, r in health]
    opened = [((("provider", n),), r["times_opened"]) for n, r in health]
    _gauge(out, "circuit_state", "Provider circuit: 0 healthy, 1 degraded, 2 half-open, 3 open.",
           states)  # fmt: skip
    _counter(out, "circuit_opened", "Times a provider's circuit opened.", opened)
    depth, outcomes = _admission(numbers)
    _gauge(out, "queue_depth", "Requests waiting for admission, by provider and priority.", depth)
    _counter(
        out,
        "admission",
        "Admission decisions, by provider, priority and outcome (admitted; shed: refused "
        "because the queue was full; timed_out: could not start before its deadline).",
        outcomes,
    )
    dropped = _one(snapshot.counters.get("series_dropped", 0))
    _counter(out, "metric_series_dropped", "Updates lost: the series table was full.", dropped)
    return out.text()


def _one(value: float) -> list[tuple[tuple[tuple[str, str], ...], float]]:
    return [((), value)]


def _gauge(out: Exposition, name: str, help_text: str, samples: Iterable[Any]) -> None:
    out.family(f"aigateway_{name}", "gauge", help_text)
    for labels, value in samples:
        out.sample(f"aigateway_{name}", labels, value)


def _counter(out: Exposition, name: str, help_text: str, samples: Iterable[Any]) -> None:
    out.family(f"aigateway_{name}_total", "counter", help_text)
    for labels, value in samples:
        out.sample(f"aigateway_{name}_total", labels, value)


def _family(
    out: Exposition,
    name: str,
    kind: int,
    help_text: str,
    bounds: tuple[float, ...],
    series: list[Series],
) -> None:
    if kind == HISTOGRAM:
        out.family(f"aigateway_{name}", "histogram", help_text)
        for one in series:
            out.histogram(f"aigateway_{name}", one.labels, bounds, one.values[:-1], one.values[-1])
    elif kind == COUNTER:
        merged: dict[tuple[tuple[str, str], ...], float] = defaultdict(float)
        for one in series:
            merged[one.labels] += one.value
        _counter(out, name, help_text, merged.items())
    else:
        _gauge(out, name, help_text, ((one.labels, one.value) for one in series))


def _avoided_from_cache(cache: Mapping[str, int] | None) -> dict[str, list[Series]]:
    """The cache's ``avoided:<how>:<provider>:<model>:<what>`` counters as series."""
    result: dict[str, list[Series]] = {"avoided_provider_calls": [], "avoided_tokens": []}
    for name, value in (cache or {}).items():
        if not name.startswith("avoided:"):
            continue
        _, how, provider, rest = name.split(":", 3)
        model, _, what = rest.rpartition(":")
        labels = (("provider", provider), ("model", model), ("via", how))
        if what == "calls":
            result["avoided_provider_calls"].append(
                Series("avoided_provider_calls", labels, COUNTER, (float(value),))
            )
        elif what in ("prompt_tokens", "completion_tokens"):
            direction = "in" if what == "prompt_tokens" else "out"
            result["avoided_tokens"].append(
                Series(
                    "avoided_tokens",
                    (*labels, ("direction", direction)),
                    COUNTER,
                    (float(value),),
                )
            )
    return result


def _admission(numbers: NodeNumbers) -> tuple[list[Any], list[Any]]:
    """Queue depths and admission outcomes from the names admission keeps in the stats."""
    counters, gauges = numbers.snapshot.counters, numbers.snapshot.gauges
    depth, outcomes = [], []
    for provider in numbers.providers:
        for priority in PRIORITIES:
            labels = (("provider", provider), ("priority", priority))
            name = queued_name(provider, priority)
            if name in gauges:
                depth.append((labels, gauges[name]))
            for outcome in ADMISSION_OUTCOMES:
                name = outcome_name(outcome, provider, priority)
                if name in counters:
                    outcomes.append(((*labels, ("outcome", outcome)), counters[name]))
    return depth, outcomes


# -- JSON (/admin/stats) --------------------------------------------------------------------


def _summary(bounds: tuple[float, ...], counts: tuple[float, ...], total: float) -> dict[str, Any]:
    count = sum(counts)

    def ms(q: float) -> float | None:
        value = quantile(q, bounds, counts)
        return None if value is None else round(value * 1000, 3)

    return {
        "count": int(count),
        "mean_ms": round(1000 * total / count, 3) if count else None,
        "p50_ms": ms(0.5),
        "p95_ms": ms(0.95),
        "p99_ms": ms(0.99),
    }


def _histogram_summary(histogram: HistogramSnapshot | None) -> dict[str, Any]:
    if histogram is None:
        return _summary((), (), 0.0)
    return _summary(histogram.bounds, histogram.counts, histogram.sum)


def stats_document(numbers: NodeNumbers, per_second: tuple[float, float]) -> dict[str, Any]:
    """``/admin/stats``: the same numbers as ``/metrics``, summed up for people."""
    snapshot = numbers.snapshot
    by_status: dict[str, int] = defaultdict(int)
    routes = []
    for one in numbers.by_family("requests"):
        labels = dict(one.labels)
        by_status[labels["status"]] += int(one.value)
        routes.append({**labels, "count": int(one.value)})
    rate, window = per_second
    document: dict[str, Any] = {
        "version": __version__,
        "implementation": hotpath.IMPLEMENTATION,
        "pid": numbers.pid,
        "started_at": numbers.started_at,
        "uptime_s": round(max(time.time() - numbers.started_at, 0.0), 3),
        "workers": numbers.workers_live,
        "workers_configured": numbers.workers_configured,
        "worker_restarts": numbers.restarts,
        "requests": {
            "total": sum(by_status.values()),
            "in_flight": snapshot.gauges.get("in_flight", 0),
            "per_second_1m": round(rate, 3),
            "rate_window_s": round(window, 3),
            "by_status": dict(sorted(by_status.items())),
            "by_route": sorted(routes, key=lambda r: (r["route"], r["method"], r["status"])),
        },
        "latency": {
            name: _histogram_summary(snapshot.histograms.get(stats_name))
            for stats_name, name, _ in HISTOGRAMS
        },
        "queue_wait": {
            dict(one.labels)["priority"]: _summary(
                FAMILIES["queue_wait_seconds"].bounds, one.values[:-1], one.values[-1]
            )
            for one in numbers.by_family("queue_wait_seconds")
        },
        "providers": _providers(numbers),
        "series_dropped": snapshot.counters.get("series_dropped", 0),
    }
    document.update(numbers.extra)
    return document


def _providers(numbers: NodeNumbers) -> dict[str, Any]:
    providers: dict[str, Any] = {
        name: {
            "state": numbers.health.get(name, {}).get("state", "healthy"),
            "health": numbers.health.get(name, {}),
            "calls": {},
            "latency": _summary((), (), 0.0),
            "retries": 0,
            "failovers": 0,
            "rate_limit_waits": 0,
            "tokens": {"in": 0, "out": 0},
            "models": {},
        }
        for name in numbers.providers
    }
    for one in numbers.series:
        labels = dict(one.labels)
        row = providers.get(labels.get("provider", ""))
        if row is None:
            continue
        if one.family == "provider_calls":
            calls = row["calls"]
            calls[labels["outcome"]] = calls.get(labels["outcome"], 0) + int(one.value)
            model = row["models"].setdefault(labels["model"], _model_row())
            model["calls"] += int(one.value)
        elif one.family == "provider_call_duration_seconds":
            bounds = FAMILIES[one.family].bounds
            row["latency"] = _summary(bounds, one.values[:-1], one.values[-1])
        elif one.family in ("retries", "failovers", "rate_limit_waits"):
            row[one.family] += int(one.value)
        elif one.family == "tokens":
            row["tokens"][labels["direction"]] += int(one.value)
            model = row["models"].setdefault(labels["model"], _model_row())
            model[f"tokens_{labels['direction']}"] += int(one.value)
    return providers


def _model_row() -> dict[str, int]:
    return {"calls": 0, "tokens_in": 0, "tokens_out": 0}
