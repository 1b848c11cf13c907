"""The metric registry is the one list of metrics: what /metrics exports, what the shared
stats hold and what docs/operations.md lists all follow it (the end-to-end check, over a
real gateway, is in test_ops_metrics.py)."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from aigateway.cluster.state import ClusterView
from aigateway.core.accounting import Accounting
from aigateway.core.admission import NodeCounters
from aigateway.core.health import HealthBoard, HealthPolicy
from aigateway.hotpath import SharedStats
from aigateway.stats.registry import METRICS, exported_name, stats_schema
from aigateway.stats.report import NodeNumbers, prometheus_text
from aigateway.stats.series import SeriesTable

OPERATIONS_DOC = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
PROVIDERS = ("openai", "my-local")


def exported() -> dict[str, str]:
    """Family name (as prometheus_client names it: a counter without ``_total``) -> type."""
    return {f"aigateway_{m.name}": m.kind for m in METRICS.values() if m.exported}


def numbers(cache: dict[str, int] | None) -> NodeNumbers:
    stats = SharedStats(stats_schema(PROVIDERS))
    table = SeriesTable(memoryview(bytearray(SeriesTable.size(64, 1024, 1))),
                        {"series": 64, "cells": 1024, "slots": 1}, None)  # fmt: skip
    health = HealthBoard.private(list(PROVIDERS), HealthPolicy())
    Accounting(stats, table, PROVIDERS).provider_call("openai", "gpt-4o", "ok", 0.01)
    return NodeNumbers(
        snapshot=stats.snapshot(), series=table.read(), providers=PROVIDERS,
        health={name: health.report(name) for name in PROVIDERS}, workers_configured=1,
        workers_live=1, started_at=1.0, cache=cache, cache_budget_bytes=1024,
        cluster=ClusterView("up", 2, 1.0, 1.0, "", "node-a"),
    )  # fmt: skip


def test_metrics_exports_every_declared_metric_and_nothing_else() -> None:
    for cache in ({"hits": 1, "map_full": 2}, None):  # with the cache and without it
        text = prometheus_text(numbers(cache))
        families = {f.name: f.type for f in text_string_to_metric_families(text)}
        assert families == exported()


def test_counters_the_cache_keeps_are_reported() -> None:
    text = prometheus_text(numbers({"map_full": 2, "too_large": 3, "store_failures": 4}))
    assert "aigateway_cache_map_full_total 2\n" in text
    assert "aigateway_cache_too_large_total 3\n" in text
    assert "aigateway_cache_store_failures_total 4\n" in text


def test_the_shared_stats_hold_exactly_the_declared_stats_metrics() -> None:
    schema = stats_schema(PROVIDERS)
    names = {*schema.counters, *schema.gauges, *(h.name for h in schema.histograms)}
    assert "embedding_calls_saved" not in names  # was written, never read
    assert "queue_wait_seconds" not in names  # was declared here, never observed
    stored = {m.stored_as for m in METRICS.values() if "stats" in m.stores}
    assert {name.partition(":")[0] for name in names} == stored


def test_providers_whose_names_differ_only_in_punctuation_are_counted_apart() -> None:
    counters = NodeCounters(None, ("my-local", "my_local"))  # one slot each, no clash
    counters.queued("my-local", "high", 2)
    counters.count("my_local", "low", "shed")
    assert counters.depth("my-local") == 2 and counters.depth("my_local") == 0
    assert counters.report("my_local")["shed"]["low"] == 1
    assert counters.report("my-local")["shed"]["low"] == 0


def test_every_exported_metric_is_documented_with_its_type() -> None:
    text = OPERATIONS_DOC.read_text()
    section = text[text.index("\n## Metrics\n") :]
    section = section[: section.index("\n## ", 1)]
    rows = re.findall(r"^\| `(aigateway_[a-z_]+)` \| (\w+) \|", section, re.MULTILINE)
    documented = dict(rows)
    declared = {exported_name(m): m.kind for m in METRICS.values() if m.exported}
    assert documented == declared
