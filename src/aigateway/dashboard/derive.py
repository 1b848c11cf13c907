"""Rates and percentiles from the ring's samples (``dashboard.history``).

A sample holds running totals, so what happened between two samples is their
difference: requests a second are the requests between them over the seconds between
them, a percentile is read off the difference of two histograms (interpolated within
its bucket, as ``/admin/stats`` does).  Each point of a chart covers the ``WINDOW``
samples before it (about five seconds: one second of traffic is too few calls for a
p99); the summary covers the last minute.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, Final

from aigateway.dashboard.history import Columns
from aigateway.stats.exposition import quantile
from aigateway.stats.registry import FAST_BOUNDS, LATENCY_BOUNDS
from aigateway.wire import PRIORITIES

__all__ = ("SUMMARY_S", "WINDOW", "between", "charts", "summary")

WINDOW: Final = 5
SUMMARY_S: Final = 60.0

Row = Sequence[float]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


class _Span:
    """What happened between samples ``a`` and ``b`` (``a`` the earlier)."""

    def __init__(self, columns: Columns, a: Row, b: Row) -> None:
        self.columns, self.a, self.b = columns, a, b
        self.seconds = b[0] - a[0]

    def delta(self, name: str) -> float:
        at = self.columns.index[name]
        return max(self.b[at] - self.a[at], 0.0)  # a counter never goes down; a reset did

    def rate(self, name: str) -> float:
        return round(self.delta(name) / self.seconds, 3) if self.seconds > 0 else 0.0

    def counts(self, prefix: str, bounds: Sequence[float]) -> list[float]:
        """A histogram's bucket counts in the span (histograms never go down)."""
        span = self.columns.span(prefix, bounds)
        return list(map(operator.sub, self.b[span], self.a[span]))

    def latency(self, providers: Sequence[str]) -> list[float]:
        """The providers' call-latency buckets, summed."""
        total = [0.0] * (len(LATENCY_BOUNDS) + 1)
        for provider in providers:
            total = list(
                map(operator.add, total, self.counts(f"latency:{provider}", LATENCY_BOUNDS))
            )
        return total

    def gauge(self, name: str) -> float:
        return self.b[self.columns.index[name]]


def _quantiles(counts: Sequence[float], bounds: Sequence[float]) -> tuple[Any, Any]:
    return _ms(quantile(0.5, bounds, counts)), _ms(quantile(0.99, bounds, counts))


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


def between(columns: Columns, a: Row, b: Row) -> dict[str, Any]:
    """The figures of the span from sample ``a`` to sample ``b``."""
    span = _Span(columns, a, b)
    p50, p99 = _quantiles(span.latency(columns.providers), LATENCY_BOUNDS)
    ttft_p50, ttft_p99 = _quantiles(span.counts("ttft", LATENCY_BOUNDS), LATENCY_BOUNDS)
    overhead_p50, _ = _quantiles(span.counts("overhead", FAST_BOUNDS), FAST_BOUNDS)
    hits, misses = span.delta("cache_hits"), span.delta("cache_misses")
    providers = {}
    for provider in columns.providers:
        counts = span.counts(f"latency:{provider}", LATENCY_BOUNDS)
        provider_p50, provider_p99 = _quantiles(counts, LATENCY_BOUNDS)
        providers[provider] = {
            "calls_per_s": span.rate(f"calls:{provider}"),
            "errors_per_s": span.rate(f"errors:{provider}"),
            "p50_ms": provider_p50,
            "p99_ms": provider_p99,
        }
    return {
        "seconds": round(span.seconds, 3),
        "requests_per_s": span.rate("api_requests"),
        "errors_per_s": span.rate("api_errors"),
        "client_errors_per_s": span.rate("api_client_errors"),
        "error_rate": _ratio(span.delta("api_errors"), span.delta("api_requests")),
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
        "ttft_p50_ms": ttft_p50,
        "ttft_p99_ms": ttft_p99,
        "overhead_p50_ms": overhead_p50,
        "cache_hit_rate": _ratio(hits, hits + misses),
        "avoided_calls_per_s": span.rate("avoided_calls"),
        "avoided_tokens_per_s": span.rate("avoided_tokens"),
        "shed_per_s": span.rate("shed"),
        "timed_out_per_s": span.rate("timed_out"),
        "in_flight": span.gauge("in_flight"),
        "queue": {priority: span.gauge(f"queue:{priority}") for priority in PRIORITIES},
        "providers": providers,
    }


def summary(columns: Columns, rows: Sequence[Row]) -> dict[str, Any] | None:
    """The figures of the last minute (or of the samples there are), None before two."""
    if len(rows) < 2:
        return None
    last = rows[-1]
    first = next(row for row in rows if row[0] >= last[0] - SUMMARY_S)
    if first is last:
        first = rows[-2]
    return between(columns, first, last)


def charts(columns: Columns, rows: Sequence[Row], after: float) -> dict[str, Any]:
    """The charts' points for the samples taken after ``after``, each over the ``WINDOW``
    samples before it (``rows``: those samples and the ones before them), one list per
    figure as the page's charts take them.

    The same figures as ``between`` gives for each span, computed a column at a time: a
    first load draws nine hundred points, in a few milliseconds."""
    table = list(zip(*rows, strict=True)) if rows else []
    points = [i for i in range(1, len(rows)) if rows[i][0] > after]
    spans = [(i, max(0, i - WINDOW)) for i in points]
    t = table[0] if table else ()
    seconds = [t[i] - t[j] for i, j in spans]

    def column(name: str) -> Sequence[float]:
        return table[columns.index[name]]

    def rate(name: str) -> list[float]:
        c = column(name)
        return [
            round(max(c[i] - c[j], 0.0) / s, 3) if s > 0 else 0.0
            for (i, j), s in zip(spans, seconds, strict=True)
        ]

    def gauge(name: str) -> list[float]:
        c = column(name)
        return [c[i] for i in points]

    def percentiles(merged: list[list[float]]) -> tuple[list[Any], list[Any]]:
        low, high = [], []
        for i, j in spans:
            counts = list(map(operator.sub, merged[i], merged[j]))
            p50, p99 = _quantiles(counts, LATENCY_BOUNDS)
            low.append(p50)
            high.append(p99)
        return low, high

    def buckets(prefixes: Sequence[str]) -> list[list[float]]:
        """Each sample's buckets of these histograms, summed."""
        spans_of = [columns.span(prefix, LATENCY_BOUNDS) for prefix in prefixes]
        merged = []
        for row in rows:
            total = [0.0] * (len(LATENCY_BOUNDS) + 1)
            for span in spans_of:
                total = list(map(operator.add, total, row[span]))
            merged.append(total)
        return merged

    latency_p50, latency_p99 = percentiles(buckets([f"latency:{p}" for p in columns.providers]))
    ttft_p50, ttft_p99 = percentiles(buckets(["ttft"]))
    hits, misses = column("cache_hits") if table else (), column("cache_misses") if table else ()
    hit_rate = []
    for i, j in spans:
        found, missed = max(hits[i] - hits[j], 0.0), max(misses[i] - misses[j], 0.0)
        hit_rate.append(_ratio(found, found + missed))
    return {
        "t": [round(t[i], 3) for i in points],
        "requests_per_s": rate("api_requests"),
        "errors_per_s": rate("api_errors"),
        "client_errors_per_s": rate("api_client_errors"),
        "latency_p50_ms": latency_p50,
        "latency_p99_ms": latency_p99,
        "ttft_p50_ms": ttft_p50,
        "ttft_p99_ms": ttft_p99,
        "cache_hit_rate": hit_rate,
        "avoided_calls_per_s": rate("avoided_calls"),
        "shed_per_s": rate("shed"),
        "queue": {priority: gauge(f"queue:{priority}") for priority in PRIORITIES},
        "providers": {
            provider: {
                "calls_per_s": rate(f"calls:{provider}"),
                "errors_per_s": rate(f"errors:{provider}"),
            }
            for provider in columns.providers
        },
    }
