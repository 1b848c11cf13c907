"""Every metric of the gateway, declared once: name, kind, labels, help and where it is kept.

Everything else derives from ``METRICS``: the node's shared-stats schema
(``stats_schema``), the families of the labelled series table (``SERIES``), what
``/metrics`` exports and in which order, what ``/admin/stats`` sums up, and the metric
list of docs/operations.md (a test checks each against the other).  A metric is exported
as ``aigateway_<name>`` (a counter as ``aigateway_<name>_total``).

Where a metric is kept (``stores``):

``stats``   ``hotpath.SharedStats`` in the node's segment, one slot per worker: the hot
            path's store.  Names are resolved to slot indices once per worker, never per
            request.  A labelled one (``queue_depth``, ``admission``) takes one slot per
            combination of label values, all known at start: providers from the
            configuration, the other labels from ``values``.
``series``  ``stats.series.SeriesTable``: labels whose values show up at run time
            (route, model, outcome).
``cache``   the response cache's LMDB counters (each worker flushes its share every
            0.5 s); a labelled one is kept under its ``series_key``.
``health``  the providers' health board.
``node``    computed when read (build, uptime, workers alive, cache budget).

``exported=False`` marks a stored number that only feeds other figures (the request
rate of ``/admin/stats``, the restart count).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from aigateway.hotpath import Histogram, StatsSchema
from aigateway.stats.series import COUNTER, GAUGE, HISTOGRAM, series_key
from aigateway.wire import PRIORITIES

__all__ = (
    "ADMISSION_OUTCOMES",
    "FAST_BOUNDS",
    "LATENCY_BOUNDS",
    "METRICS",
    "QUEUE_BOUNDS",
    "SERIES",
    "TOKEN_RATE_BOUNDS",
    "Metric",
    "exported_name",
    "label_combinations",
    "labelled_key",
    "slot_name",
    "slot_table",
    "stats_schema",
)

Kind = Literal["counter", "gauge", "histogram"]
Store = Literal["stats", "series", "cache", "health", "node"]

LATENCY_BOUNDS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
# Gateway overhead: sub-millisecond resolution matters there.
FAST_BOUNDS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
QUEUE_BOUNDS: Final = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
# Tokens per second of a stream, from its first token to its end.
TOKEN_RATE_BOUNDS: Final = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0)
ADMISSION_OUTCOMES: Final = ("admitted", "shed", "timed_out")
_SERIES_KINDS: Final = {"counter": COUNTER, "gauge": GAUGE, "histogram": HISTOGRAM}


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    stores: tuple[Store, ...] = ("series",)
    key: str = ""  # its name in the store, when not ``name``
    bounds: tuple[float, ...] = ()  # a histogram's bucket bounds
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # fixed label values
    exported: bool = True
    divisor: int = 1  # exported = stored / divisor (dollars are kept in nano-dollars)

    @property
    def stored_as(self) -> str:
        return self.key or self.name

    @property
    def series_kind(self) -> int:
        """The kind as the series table stores it."""
        return _SERIES_KINDS[self.kind]

    @property
    def width(self) -> int:
        """Values of one series: a histogram's buckets, +Inf and its sum."""
        return len(self.bounds) + 2 if self.kind == "histogram" else 1


def _declare(*metrics: Metric) -> dict[str, Metric]:
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise ValueError("metric names must be unique")
    for m in metrics:
        if (m.kind == "histogram") != bool(m.bounds):
            raise ValueError(f"{m.name}: histograms, and only they, have bounds")
        if "stats" in m.stores and set(m.labels) - {"provider", *m.values}:
            raise ValueError(f"{m.name}: a stats metric's label values must be known at start")
    return {m.name: m for m in metrics}


_ROUTE = ("route", "method", "status")
_PROVIDER = ("provider",)
_MODEL = ("provider", "model")
_STATS: Final[tuple[Store, ...]] = ("stats",)
_CACHE: Final[tuple[Store, ...]] = ("cache",)
_NODE: Final[tuple[Store, ...]] = ("node",)
_HEALTH: Final[tuple[Store, ...]] = ("health",)
_NANOS: Final = 1_000_000_000  # dollars are counted in whole nano-dollars (pricing)

#: Every metric, in the order ``/metrics`` exports them.
METRICS: Final = _declare(
    Metric("build_info", "gauge", "Version of the gateway and of its hot paths.",
           ("version", "implementation"), _NODE),
    Metric("start_time_seconds", "gauge", "When the node started (Unix time).", (), _NODE),
    Metric("uptime_seconds", "gauge", "Seconds since the node started.", (), _NODE),
    Metric("workers", "gauge", "Worker processes alive.", (), _NODE),
    Metric("worker_restarts", "counter", "Workers started again after one ended.", (), _NODE),
    Metric("worker_starts", "counter", "Workers started (feeds worker_restarts).", (), _STATS,
           exported=False),
    Metric("requests_answered", "counter", "Requests answered (feeds the request rate of "
           "/admin/stats).", (), _STATS, key="requests", exported=False),
    Metric("requests_in_flight", "gauge", "Requests being handled now.", (), _STATS,
           key="in_flight"),
    Metric("request_duration_seconds", "histogram", "End-to-end latency of HTTP requests.",
           (), _STATS, key="request_seconds", bounds=LATENCY_BOUNDS),
    Metric("gateway_overhead_seconds", "histogram", "Latency the gateway adds: end to end "
           "(first byte, for streams) minus provider time.", (), _STATS,
           key="overhead_seconds", bounds=FAST_BOUNDS),
    Metric("stream_first_byte_seconds", "histogram", "Time to the first byte of streamed "
           "answers.", (), _STATS, key="ttfb_seconds", bounds=LATENCY_BOUNDS),
    Metric("requests", "counter", "HTTP requests answered, by route template, method and "
           "status class.", _ROUTE),
    Metric("provider_calls", "counter", "Calls to providers (every attempt), by provider, "
           "model and outcome.", (*_MODEL, "outcome")),
    Metric("provider_call_duration_seconds", "histogram", "Duration of provider calls (to "
           "the whole answer, or a stream's first chunk).", _PROVIDER, bounds=LATENCY_BOUNDS),
    Metric("stream_first_token_seconds", "histogram", "Time to the first token of provider "
           "streams (from the request's arrival to the first event with generated content), "
           "by provider.", _PROVIDER, bounds=LATENCY_BOUNDS),
    Metric("stream_tokens_per_second", "histogram", "Output tokens per second of provider "
           "streams (from the first token to the end; streams that report usage), by "
           "provider.", _PROVIDER, bounds=TOKEN_RATE_BOUNDS),
    Metric("retries", "counter", "Provider calls retried after a failure.", _PROVIDER),
    Metric("failovers", "counter", "Requests passed on to the next target after this "
           "provider failed.", _PROVIDER),
    Metric("tokens", "counter", "Tokens providers reported, by provider, model and direction "
           "(in: prompt, out: completion).", (*_MODEL, "direction")),
    Metric("spend_usd", "counter", "USD the providers' answers cost, by provider and model "
           "(their usage at the price table's prices; unpriced models cost 0).", _MODEL,
           divisor=_NANOS),
    Metric("queue_wait_seconds", "histogram", "Time requests waited for admission (rate "
           "limits, queue), by priority.", ("priority",), bounds=QUEUE_BOUNDS),
    Metric("rate_limit_waits", "counter", "Requests that had to wait for a provider's "
           "node-wide rate limit.", _PROVIDER),
    Metric("avoided_provider_calls", "counter", "Provider calls avoided, by provider, model "
           "and how (cache, dedup, batch).", (*_MODEL, "via"), ("series", "cache")),
    Metric("avoided_tokens", "counter", "Tokens not spent thanks to avoided calls, by "
           "provider, model, how and direction.", (*_MODEL, "via", "direction"),
           ("series", "cache")),
    Metric("avoided_usd", "counter", "USD not spent thanks to answers from the cache or a "
           "shared identical call, by provider, model and how (cache, dedup).",
           (*_MODEL, "via"), _CACHE, divisor=_NANOS),
    Metric("health_probes", "counter", "Active health probes of providers, by outcome.",
           (*_PROVIDER, "outcome")),
    Metric("cache_hits", "counter", "Requests answered from the response cache.", (), _CACHE,
           key="hits"),
    Metric("cache_repeat_hits", "counter", "Cache hits of a request a worker had seen be a "
           "hit before, byte for byte, answered without working it out again (counted in "
           "cache_hits too).", (), _CACHE, key="repeat_hits"),
    Metric("cache_misses", "counter", "Cache lookups that found nothing.", (), _CACHE,
           key="misses"),
    Metric("cache_second_tier_hits", "counter", "First-tier misses answered from the "
           "cluster's second tier in Redis (counted in cache_misses too).", (), _CACHE,
           key="second_tier_hits"),
    Metric("cache_bypasses", "counter", "Requests that skipped the cache (no-cache).", (),
           _CACHE, key="bypasses"),
    Metric("cache_evictions", "counter", "Entries evicted to stay within the cache budget.",
           (), _CACHE, key="evictions"),
    Metric("cache_expirations", "counter", "Expired entries swept from the cache.", (),
           _CACHE, key="expirations"),
    Metric("cache_store_failures", "counter", "Answers served without the cache: a key, a "
           "read or a write failed.", (), _CACHE, key="store_failures"),
    Metric("cache_too_large", "counter", "Answers not cached: larger than "
           "CACHE_MAX_ENTRY_BYTES.", (), _CACHE, key="too_large"),
    Metric("cache_map_full", "counter", "Writes that found the cache's map full (half of "
           "the entries were evicted to make room).", (), _CACHE, key="map_full"),
    Metric("dedup_requests", "counter", "Requests that shared an identical in-flight call.",
           (), _CACHE, key="dedup_joins"),
    Metric("cache_entries", "gauge", "Entries in the response cache.", (), _CACHE,
           key="entries"),
    Metric("cache_bytes", "gauge", "Bytes the response cache holds.", (), _CACHE,
           key="bytes"),
    Metric("cache_budget_bytes", "gauge", "The response cache's budget (CACHE_MAX_MB).", (),
           _NODE),
    Metric("circuit_state", "gauge", "Provider circuit: 0 healthy, 1 degraded, 2 half-open, "
           "3 open.", _PROVIDER, _HEALTH),
    Metric("circuit_opened", "counter", "Times a provider's circuit opened.", _PROVIDER,
           _HEALTH),
    Metric("queue_depth", "gauge", "Requests waiting for admission, by provider and "
           "priority.", (*_PROVIDER, "priority"), _STATS, values={"priority": PRIORITIES}),
    Metric("admission", "counter", "Admission decisions, by provider, priority and outcome "
           "(admitted; shed: refused because the queue was full; timed_out: could not "
           "start before its deadline).", (*_PROVIDER, "priority", "outcome"), _STATS,
           values={"priority": PRIORITIES, "outcome": ADMISSION_OUTCOMES}),
    Metric("token_budget_reserved", "counter", "Tokens reserved of a provider's "
           "<PROVIDER>_TPM before its calls (estimates).", _PROVIDER, _STATS),
    Metric("token_budget_used", "counter", "Tokens the provider reported (prompt + "
           "completion) that settled reservations of its <PROVIDER>_TPM.", _PROVIDER, _STATS),
    Metric("token_budget_waiting", "gauge", "Tokens that requests waiting for admission "
           "reserve of a provider's <PROVIDER>_TPM (estimates).", _PROVIDER, _STATS),
    Metric("token_budget_waits", "counter", "Requests that had to wait for a provider's "
           "token budget (<PROVIDER>_TPM).", _PROVIDER, _STATS),
    Metric("redis_up", "gauge", "Whether this node reaches the cluster's Redis (1) or goes "
           "on alone (0); absent without REDIS_URL.", (), _NODE),
    Metric("cluster_nodes", "gauge", "Live nodes of the cluster last seen, this one "
           "included; absent without REDIS_URL.", (), _NODE),
    Metric("limit_share", "gauge", "This node's share of a provider's cluster-wide rate "
           "limit (requests/s its bucket refills at: leased, or the limit / live nodes while "
           "Redis is gone, 0 when limits fail closed); absent without REDIS_URL.", _PROVIDER,
           _NODE),
    Metric("limit_leased", "counter", "Tokens (provider calls) this node leased of a "
           "provider's cluster-wide limit; absent without REDIS_URL.", _PROVIDER, _NODE),
    Metric("limit_token_share", "gauge", "This node's share of a provider's cluster-wide "
           "<PROVIDER>_TPM (tokens a minute: granted over the last lease round, or the limit "
           "/ live nodes while Redis is gone, 0 when limits fail closed); absent without "
           "REDIS_URL or a TPM.", _PROVIDER, _NODE),
    Metric("limit_tokens_leased", "counter", "Tokens of a provider's cluster-wide "
           "<PROVIDER>_TPM this node leased; absent without REDIS_URL or a TPM.", _PROVIDER,
           _NODE),
    Metric("limit_lease_calls", "counter", "Redis calls this node made for limits (one "
           "lease script per round for every provider); absent without REDIS_URL.", (),
           _NODE),
    Metric("key_spend_usd", "counter", "USD each tenant key spent (by its name; revoked "
           "keys included), as flushed to the key store (KEY_SPEND_FLUSH_MS).", ("key",),
           _NODE),
    Metric("metric_series_dropped", "counter", "Updates lost: the series table was full.",
           (), _STATS, key="series_dropped"),
)  # fmt: skip

#: The families of the labelled series table, by name.
SERIES: Final = {name: m for name, m in METRICS.items() if "series" in m.stores}


def exported_name(metric: Metric) -> str:
    """The family name in the Prometheus text format (a counter's ends in ``_total``)."""
    suffix = "_total" if metric.kind == "counter" else ""
    return f"aigateway_{metric.name}{suffix}"


def labelled_key(name: str, *values: str) -> str:
    """The key of metric ``name`` with these label values (in declared order) in a store
    kept by name: the series table, or the cache's LMDB counters."""
    return series_key(name, tuple(zip(METRICS[name].labels, values, strict=True)))


# -- the shared stats ------------------------------------------------------------------------


def label_combinations(metric: Metric, providers: Sequence[str]) -> Iterator[tuple[str, ...]]:
    """Every combination of a stats metric's label values, in slot order."""
    domains = [providers if name == "provider" else metric.values[name] for name in metric.labels]
    return itertools.product(*domains)


def slot_name(metric: Metric, position: int | None = None) -> str:
    """A stats slot's name: the metric's, or ``<name>:<n>`` for the n-th label combination
    (by position: provider names may hold characters a slot name may not)."""
    return metric.stored_as if position is None else f"{metric.stored_as}:{position}"


def _slots(metric: Metric, providers: Sequence[str]) -> Iterator[tuple[tuple[str, ...], str]]:
    if not metric.labels:
        yield (), slot_name(metric)
        return
    for position, labels in enumerate(label_combinations(metric, providers)):
        yield labels, slot_name(metric, position)


def stats_schema(providers: Sequence[str]) -> StatsSchema:
    """The node's shared stats: every ``stats`` metric, a slot per label combination."""
    counters: list[str] = []
    gauges: list[str] = []
    histograms: list[Histogram] = []
    for metric in METRICS.values():
        if "stats" not in metric.stores:
            continue
        for _, name in _slots(metric, providers):
            if metric.kind == "histogram":
                histograms.append(Histogram(name, metric.bounds))
            else:
                (counters if metric.kind == "counter" else gauges).append(name)
    return StatsSchema(tuple(counters), tuple(gauges), tuple(histograms))


def slot_table(
    schema: StatsSchema, name: str, providers: Sequence[str]
) -> dict[tuple[str, ...], int]:
    """Label values -> slot index of stats metric ``name``: resolved once, at start.

    An unlabelled metric's one slot is under ``()``.  ``KeyError`` when ``schema`` was laid
    out without the metric or for other providers."""
    metric = METRICS[name]
    lookup = {"counter": schema.counter, "gauge": schema.gauge, "histogram": schema.histogram}
    index = lookup[metric.kind]
    return {labels: index(slot) for labels, slot in _slots(metric, providers)}


def stats_samples(
    metric: Metric, values: Mapping[str, float], providers: Sequence[str]
) -> list[tuple[tuple[tuple[str, str], ...], float]]:
    """A counter's or gauge's samples out of a snapshot's ``values`` (missing slots: none)."""
    samples = []
    for labels, slot in _slots(metric, providers):
        if slot in values:
            samples.append((tuple(zip(metric.labels, labels, strict=True)), values[slot]))
    return samples
