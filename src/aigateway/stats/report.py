"""The node's numbers, gathered once, as Prometheus text (``/metrics``) or JSON
(``/admin/stats``).

Everything comes from what the whole node shares, whichever worker answers: the shared
stats and the labelled series table (every worker's slot summed, a dead worker's
counts included), the response cache's totals (LMDB), provider health (shared memory).
Which metrics there are, their names, help, labels and where each is kept come from
the metric registry (``aigateway.stats.registry``); this module only reads the stores.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aigateway import __version__, hotpath
from aigateway.cluster.lease_board import LeaseBoard
from aigateway.cluster.state import ClusterView
from aigateway.hotpath import HistogramSnapshot, StatsSnapshot
from aigateway.stats.exposition import Exposition, quantile
from aigateway.stats.registry import METRICS, SERIES, Metric, exported_name, stats_samples
from aigateway.stats.series import COUNTER, HISTOGRAM, Series, split_key

__all__ = ("NodeNumbers", "cache_series", "prometheus_text", "stats_document")

CIRCUIT_STATES = {"healthy": 0, "degraded": 1, "half_open": 2, "open": 3}
Labels = tuple[tuple[str, str], ...]


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
    cluster: ClusterView | None = None
    leases: LeaseBoard | None = None
    key_spend: list[tuple[str, str, int, float]] = field(default_factory=list)  # tenant keys
    extra: dict[str, Any] = field(default_factory=dict)

    def by_family(self, family: str) -> list[Series]:
        return [series for series in self.series if series.family == family]

    def stat(self, name: str) -> int:
        """An unlabelled counter or gauge of the shared stats, by its registry name."""
        metric = METRICS[name]
        values = self.snapshot.counters if metric.kind == "counter" else self.snapshot.gauges
        return values.get(metric.stored_as, 0)

    @property
    def restarts(self) -> int:
        return max(0, self.stat("worker_starts") - self.workers_configured)


# -- reading each store -----------------------------------------------------------------------


def _one(metric: Metric, value: float, labels: Labels = ()) -> Series:
    return Series(metric.name, labels, COUNTER, (float(value),))


def _from_node(metric: Metric, numbers: NodeNumbers) -> list[Series]:
    """Figures computed when read (each ``node`` metric of the registry has one here)."""
    if metric.name == "build_info":
        build = (("version", __version__), ("implementation", hotpath.IMPLEMENTATION))
        return [_one(metric, 1, build)]
    if metric.name == "cache_budget_bytes":
        return [] if numbers.cache is None else [_one(metric, numbers.cache_budget_bytes)]
    if metric.name in ("redis_up", "cluster_nodes"):
        cluster = numbers.cluster
        if cluster is None or not cluster.enabled:
            return []  # one node, no Redis
        up = 1 if cluster.redis == "up" else 0
        return [_one(metric, up if metric.name == "redis_up" else cluster.nodes)]
    if metric.name in LEASE_METRICS:
        return _from_leases(metric, numbers)
    if metric.name == "key_spend_usd":
        return [_one(metric, usd, (("key", name),)) for name, _, _, usd in numbers.key_spend]
    value = {
        "start_time_seconds": numbers.started_at,
        "uptime_seconds": max(time.time() - numbers.started_at, 0.0),
        "workers": numbers.workers_live,
        "worker_restarts": numbers.restarts,
    }[metric.name]
    return [_one(metric, value)]


LEASE_METRICS = (
    "limit_share", "limit_leased", "limit_token_share", "limit_tokens_leased", "limit_lease_calls",
)  # fmt: skip
TOKEN_LEASE = "tpm:"  # the board's row of a provider's tokens (cluster.leases.token_lease)


def _from_leases(metric: Metric, numbers: NodeNumbers) -> list[Series]:
    """The node's leases of cluster-wide limits (none without REDIS_URL): each provider's
    rate (requests/s) and, where it has a TPM, its tokens (a minute)."""
    board = numbers.leases
    cluster = numbers.cluster
    if board is None or cluster is None or not cluster.enabled:
        return []
    if metric.name == "limit_lease_calls":
        return [_one(metric, board.calls)]
    tokens = metric.name in ("limit_token_share", "limit_tokens_leased")
    found = []
    for name in board.providers:
        row = board.row(name)
        if row is None or name.startswith(TOKEN_LEASE) != tokens:
            continue
        if tokens and not row.limit > 0.0:
            continue  # no TPM for this provider
        if metric.name == "limit_share":
            value = row.share
        elif metric.name == "limit_token_share":
            value = row.share * 60.0
        else:
            value = row.leased
        found.append(_one(metric, value, (("provider", name.removeprefix(TOKEN_LEASE)),)))
    return found


def limit_shares(numbers: NodeNumbers) -> dict[str, dict[str, Any]]:
    """``/admin/stats``: each provider's part of its cluster-wide limits on this node."""
    board, cluster = numbers.leases, numbers.cluster
    if board is None or cluster is None or not cluster.enabled:
        return {}
    shares: dict[str, dict[str, Any]] = {}
    for name in board.providers:
        row = board.row(name)
        if row is None:
            continue
        provider = name.removeprefix(TOKEN_LEASE)
        entry = shares.setdefault(provider, {})
        if name.startswith(TOKEN_LEASE):
            if row.limit > 0.0:
                entry["tpm"] = {
                    "mode": row.mode, "share_per_min": round(row.share * 60.0, 3),
                    "limit": round(row.limit * 60.0, 3), "leased": round(row.leased, 3),
                }  # fmt: skip
        else:
            entry["rps"] = {
                "mode": row.mode, "share": round(row.share, 3), "limit": row.limit,
                "leased": round(row.leased, 3),
            }  # fmt: skip
    return shares


def _from_stats(metric: Metric, snapshot: StatsSnapshot, providers: Sequence[str]) -> list[Series]:
    if metric.kind == "histogram":
        histogram = snapshot.histograms.get(metric.stored_as)
        if histogram is None:
            return []
        return [Series(metric.name, (), HISTOGRAM, (*histogram.counts, histogram.sum))]
    values = snapshot.counters if metric.kind == "counter" else snapshot.gauges
    return [_one(metric, v, labels) for labels, v in stats_samples(metric, values, providers)]


def _from_health(metric: Metric, health: Mapping[str, Mapping[str, Any]]) -> list[Series]:
    if metric.name == "circuit_state":
        pairs = [(name, CIRCUIT_STATES.get(row["state"], 0)) for name, row in health.items()]
    else:  # circuit_opened
        pairs = [(name, row["times_opened"]) for name, row in health.items()]
    return [_one(metric, value, (("provider", name),)) for name, value in pairs]


def cache_series(counters: Mapping[str, int] | None) -> list[Series]:
    """The cache's labelled counters (kept under their ``series_key``) as series."""
    result = []
    for name, value in (counters or {}).items():
        if "\x1f" in name:
            family, labels = split_key(name)
            metric = METRICS.get(family)
            if metric is not None and "cache" in metric.stores:
                result.append(Series(family, labels, COUNTER, (float(value),)))
    return result


def _read(metric: Metric, numbers: NodeNumbers, cached: list[Series]) -> list[Series]:
    """Every series of ``metric`` from each store the registry says it is kept in."""
    found: list[Series] = []
    for store in metric.stores:
        if store == "node":
            found += _from_node(metric, numbers)
        elif store == "stats":
            found += _from_stats(metric, numbers.snapshot, numbers.providers)
        elif store == "series":
            found += numbers.by_family(metric.name)
        elif store == "health":
            found += _from_health(metric, numbers.health)
        elif metric.labels:  # cache, labelled
            found += [one for one in cached if one.family == metric.name]
        elif numbers.cache is not None:  # cache
            found.append(_one(metric, numbers.cache.get(metric.stored_as, 0)))
    return found


# -- Prometheus ---------------------------------------------------------------------------


def prometheus_text(numbers: NodeNumbers) -> str:
    """Every exported metric of the registry, in its order, read from where it is kept."""
    out = Exposition()
    cached = cache_series(numbers.cache)  # the LMDB counters, parsed once
    for metric in METRICS.values():
        if metric.exported:
            _family(out, metric, _read(metric, numbers, cached))
    return out.text()


def _family(out: Exposition, metric: Metric, series: list[Series]) -> None:
    name = exported_name(metric)
    out.family(name, metric.kind, metric.help)
    if metric.kind == "histogram":
        for one in series:
            out.histogram(name, one.labels, metric.bounds, one.values[:-1], one.values[-1])
    elif metric.kind == "counter":
        merged: dict[Labels, float] = defaultdict(float)  # e.g. avoided: series and cache
        for one in series:
            merged[one.labels] += one.value
        for labels, value in merged.items():
            out.sample(name, labels, value / metric.divisor if metric.divisor != 1 else value)
    else:
        for one in series:
            out.sample(name, one.labels, one.value)


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
            "in_flight": numbers.stat("requests_in_flight"),
            "per_second_1m": round(rate, 3),
            "rate_window_s": round(window, 3),
            "by_status": dict(sorted(by_status.items())),
            "by_route": sorted(routes, key=lambda r: (r["route"], r["method"], r["status"])),
        },
        "latency": {  # the unlabelled histograms of the shared stats
            m.name: _histogram_summary(snapshot.histograms.get(m.stored_as))
            for m in METRICS.values()
            if m.kind == "histogram" and m.stores == ("stats",) and not m.labels
        },
        "queue_wait": {
            dict(one.labels)["priority"]: _summary(
                SERIES["queue_wait_seconds"].bounds, one.values[:-1], one.values[-1]
            )
            for one in numbers.by_family("queue_wait_seconds")
        },
        "providers": _providers(numbers),
        "series_dropped": numbers.stat("metric_series_dropped"),
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
            "spend_usd": 0.0,
            "models": {},
        }
        for name in numbers.providers
    }
    for name, shares in limit_shares(numbers).items():  # with REDIS_URL
        if name in providers:
            providers[name]["cluster_limit"] = shares
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
            bounds = SERIES[one.family].bounds
            row["latency"] = _summary(bounds, one.values[:-1], one.values[-1])
        elif one.family in ("retries", "failovers", "rate_limit_waits"):
            row[one.family] += int(one.value)
        elif one.family == "tokens":
            row["tokens"][labels["direction"]] += int(one.value)
            model = row["models"].setdefault(labels["model"], _model_row())
            model[f"tokens_{labels['direction']}"] += int(one.value)
        elif one.family == "spend_usd":
            usd = one.value / SERIES[one.family].divisor
            row["spend_usd"] += usd
            model = row["models"].setdefault(labels["model"], _model_row())
            model["spend_usd"] += usd
    return providers


def _model_row() -> dict[str, Any]:
    return {"calls": 0, "tokens_in": 0, "tokens_out": 0, "spend_usd": 0.0}
