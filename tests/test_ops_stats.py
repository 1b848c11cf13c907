"""Labelled series in shared memory, their Prometheus exposition, and accounting."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aigateway import shm
from aigateway.config import Settings
from aigateway.core.accounting import Accounting
from aigateway.hotpath import SharedStats
from aigateway.operations import node_regions
from aigateway.stats.exposition import Exposition, quantile
from aigateway.stats.registry import labelled_key, stats_schema
from aigateway.stats.report import NodeNumbers, prometheus_text, stats_document
from aigateway.stats.series import COUNTER, GAUGE, HISTOGRAM, SeriesTable, series_key

PARAMS = {"series": 8, "cells": 64, "slots": 3}


def private_table(region: memoryview | None = None) -> SeriesTable:
    if region is None:
        region = memoryview(bytearray(SeriesTable.size(8, 64, 3)))
    return SeriesTable(region, PARAMS, None)


def test_series_are_summed_over_the_slots_of_every_writer() -> None:
    region = memoryview(bytearray(SeriesTable.size(8, 64, 3)))
    first, second = private_table(region), private_table(region)
    assert (first.slot, second.slot) == (0, 1)
    key = series_key("provider_calls", (("provider", "openai"), ("outcome", "ok")))
    cell = first.cell(COUNTER, key)
    assert second.cell(COUNTER, key) == cell  # one series, found by its key
    first.add(cell, 3)
    second.add(cell, 4)
    depth = second.cell(GAUGE, series_key("depth", ()))
    first.add(depth, 2)
    second.add(depth, -1)
    latency = first.cell(HISTOGRAM, series_key("latency", ()), 4)
    first.observe(latency, (0.1, 1.0), 0.05)
    second.observe(latency, (0.1, 1.0), 5.0)
    read = {(s.family, s.labels): s.values for s in second.read()}
    assert read["provider_calls", (("provider", "openai"), ("outcome", "ok"))] == (7.0,)
    assert read["depth", ()] == (1.0,)
    assert read["latency", ()] == (1.0, 0.0, 1.0, 5.05)
    first.close()  # counters stay for the node's totals; gauges go with their worker
    read = {(s.family, s.labels): s.values for s in second.read()}
    assert read["provider_calls", (("provider", "openai"), ("outcome", "ok"))] == (7.0,)
    assert read["depth", ()] == (-1.0,)
    second.close()


def test_a_full_table_takes_no_more_series() -> None:
    table = private_table()
    cells = [table.cell(COUNTER, series_key("c", (("n", str(i)),))) for i in range(10)]
    assert cells[:8] == list(range(8))
    assert cells[8:] == [-1, -1]
    table.add(-1)  # a dropped series is ignored, not an error
    assert table.cell(HISTOGRAM, "too-wide", 100) == -1
    assert table.cell(COUNTER, "k" * 200) == -1
    table.close()


def test_a_dead_workers_counts_stay_and_its_slot_is_taken_over() -> None:
    name = f"{shm.segment_name()}.test-series"
    regions = node_regions(Settings(workers=1), 4)
    segment = shm.create_segment(shm.NodeLayout(regions=regions), name)
    try:
        code = """
            import os
            from aigateway import shm
            from aigateway.stats.series import COUNTER, SeriesTable
            segment = shm.attach_segment()
            table = SeriesTable(segment.region("series"), segment.region_params("series"),
                                segment.region_lock_path("series"))
            table.add(table.cell(COUNTER, "requests"), 41)
            print(table.slot, flush=True)
            os._exit(0)  # dies without giving its slot back
        """
        env = {**os.environ, shm.SHM_ENV: name}
        run = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert run.stdout.strip() == "0"
        table = SeriesTable(
            segment.region("series"),
            segment.region_params("series"),
            segment.region_lock_path("series"),
        )
        assert table.slot == 0  # the dead worker's slot, with its counts
        table.add(table.cell(COUNTER, "requests"))
        assert [s.value for s in table.read()] == [42.0]
        table.close()
    finally:
        segment.close()
        segment.unlink()


def test_quantiles_are_interpolated_within_buckets() -> None:
    bounds = (0.1, 0.5, 1.0)
    assert quantile(0.5, bounds, (0, 10, 0, 0)) == pytest.approx(0.3)
    assert quantile(0.99, bounds, (0, 0, 0, 5)) == 1.0  # in +Inf: the largest bound
    assert quantile(0.5, bounds, (0, 0, 0, 0)) is None


def accounting() -> Accounting:
    stats = SharedStats(stats_schema(("openai", "my-local")))
    return Accounting(stats, private_table_large(), ("openai", "my-local"))


def private_table_large() -> SeriesTable:
    params = {"series": 256, "cells": 4096, "slots": 1}
    return SeriesTable(memoryview(bytearray(SeriesTable.size(256, 4096, 1))), params, None)


def test_the_exposition_parses_and_labels_stay_bounded() -> None:
    acc = accounting()
    acc.request_started()
    acc.request_finished("/v1/chat/completions", "POST", 200, 0.02)
    acc.request_started()
    acc.request_finished("unmatched", "BREW", 404, 0.001)
    acc.provider_call("openai", "gpt-4o", "ok", 0.01)
    acc.provider_call("my-local", 'weird"model\nname', "server_error", 0.5)
    acc.provider_call("not-configured", "x", "ok", 0.1)
    acc.avoided("openai", "text-embedding-3-small", "batch", calls=3, prompt=30)
    for i in range(80):  # a flood of model names is capped per provider
        acc.provider_call("openai", f"model-{i}", "ok", 0.01)
    acc.tokens("openai", "gpt-4o", 12, 5)
    acc.usage_from_body("openai", "", b'{"model":"gpt-4o","usage":{"prompt_tokens":3}}')
    acc.retry("openai")
    acc.failover("my-local")
    acc.queue_wait("openai", "high", 0.2)
    numbers = NodeNumbers(
        snapshot=acc.stats.snapshot(),
        series=acc.table.read(),
        providers=("openai", "my-local"),
        health={"openai": {"state": "healthy", "times_opened": 0}},
        workers_configured=2,
        workers_live=2,
        started_at=1.0,
        cache={"hits": 4, "misses": 6, "entries": 2, "bytes": 900,
               labelled_key("avoided_provider_calls", "openai", "gpt-4o", "cache"): 4,
               labelled_key("avoided_tokens", "openai", "gpt-4o", "cache", "in"): 40},
    )  # fmt: skip
    text = prometheus_text(numbers)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    requests = families["aigateway_requests"]
    assert requests.type == "counter"
    assert sum(s.value for s in requests.samples if s.name.endswith("_total")) == 2
    assert samples["aigateway_requests_total", (("method", "OTHER"), ("route", "unmatched"),
                                                ("status", "4xx"))] == 1  # fmt: skip
    calls = [s for s in families["aigateway_provider_calls"].samples if s.name.endswith("total")]
    models = {s.labels["model"] for s in calls if s.labels["provider"] == "openai"}
    assert len(models) == 50 and "other" in models  # at most 50 names, then "other"
    assert {s.labels["provider"] for s in calls} == {"openai", "my-local", "other"}
    assert any(s.labels["model"] == "weird_model_name" for s in calls)
    key = (("direction", "in"), ("model", "gpt-4o"), ("provider", "openai"))
    assert samples["aigateway_tokens_total", key] == 15
    assert samples["aigateway_retries_total", (("provider", "openai"),)] == 1
    assert samples["aigateway_failovers_total", (("provider", "my-local"),)] == 1
    assert samples["aigateway_cache_hits_total", ()] == 4
    avoided = "aigateway_avoided_provider_calls_total"
    assert samples[avoided, (("model", "gpt-4o"), ("provider", "openai"), ("via", "cache"))] == 4
    via_batch = (("model", "text-embedding-3-small"), ("provider", "openai"), ("via", "batch"))
    assert samples[avoided, via_batch] == 3
    assert samples["aigateway_queue_wait_seconds_count", (("priority", "high"),)] == 1
    assert families["aigateway_provider_call_duration_seconds"].type == "histogram"
    assert samples["aigateway_circuit_state", (("provider", "openai"),)] == 0
    document = stats_document(numbers, (1.5, 60.0))
    assert document["requests"]["total"] == 2
    assert document["providers"]["openai"]["calls"]["ok"] == 81
    assert document["providers"]["openai"]["retries"] == 1
    assert document["providers"]["openai"]["latency"]["p50_ms"] is not None


def test_an_exposition_escapes_label_values() -> None:
    out = Exposition()
    out.family("aigateway_x_total", "counter", "help with a \\ backslash")
    out.sample("aigateway_x_total", (("a", 'quote " back \\ newline \n'),), 1.5)
    family = next(iter(text_string_to_metric_families(out.text())))
    assert family.samples[0].labels["a"] == 'quote " back \\ newline \n'
    assert family.samples[0].value == 1.5
