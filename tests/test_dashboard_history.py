"""The dashboard's history: one sample of the node a second in shared memory, and the rates
and percentiles read from the differences between samples.

In process, with the clock handed in: a sample is a row of running totals taken from the
node's real counters (``Accounting.private``), written into the ring whichever worker
finds it due, and read back by whichever worker answers the page.
"""

from __future__ import annotations

from aigateway.core.accounting import Accounting
from aigateway.dashboard.derive import WINDOW, between, charts, summary
from aigateway.dashboard.history import Columns, History
from aigateway.stats.report import NodeNumbers

PROVIDERS = ("openai", "anthropic")


def numbers_of(accounting: Accounting, cache: dict[str, int] | None = None) -> NodeNumbers:
    return NodeNumbers(
        snapshot=accounting.stats.snapshot(),
        series=accounting.table.read(),
        providers=PROVIDERS,
        health={},
        workers_configured=1,
        workers_live=1,
        started_at=0.0,
        cache=cache,
    )


def row(columns: Columns, t: float, **values: float) -> list[float]:
    """A sample by column name (the rest zero)."""
    sample = [0.0] * len(columns)
    sample[0] = t
    for name, value in values.items():
        sample[columns.index[name.replace("__", ":")]] = value
    return sample


def test_one_sample_a_second_whichever_worker_finds_it_due() -> None:
    region = bytearray(History.size(len(Columns(PROVIDERS)), 16))
    params = History.params(PROVIDERS, 16)
    first, second = History(region, params, None), History(region, params, None)  # two workers
    taken: list[str] = []

    def take(who: str) -> list[float]:
        taken.append(who)
        return row(first.columns, 0.0)

    assert first.record(100.0, lambda: take("first"))
    assert not second.record(100.4, lambda: take("second"))  # not due: nothing read
    assert second.record(101.0, lambda: take("second"))
    assert not first.record(101.2, lambda: take("first"))
    assert taken == ["first", "second"]
    assert first.count == second.count == 2


def test_the_ring_keeps_the_latest_samples_oldest_first() -> None:
    history = History.private(PROVIDERS, capacity=8)
    for second in range(20):
        history.record(1000.0 + second, lambda s=second: row(history.columns, 1000.0 + s))
    times = [sample[0] for sample in history.rows()]
    # The row the next sample overwrites is never read: capacity - 1 samples.
    assert times == [1013.0 + n for n in range(7)]
    assert [r[0] for r in history.rows(after=1017.0)] == [1018.0, 1019.0]
    assert [r[0] for r in history.rows(after=1017.0, before=2)] == [1016.0, 1017.0, 1018.0, 1019.0]
    assert history.rows(after=1019.0) == []


def test_a_clock_that_went_back_makes_a_sample_due() -> None:
    history = History.private(PROVIDERS)
    assert history.record(500.0, lambda: row(history.columns, 500.0))
    assert history.record(400.0, lambda: row(history.columns, 400.0))


def test_a_sample_holds_the_clients_requests_but_not_the_operators_polls() -> None:
    accounting = Accounting.private(PROVIDERS)
    for status in (200, 200, 200, 502, 400):
        accounting.request_finished("/v1/chat/completions", "POST", status, 0.1, provider_s=0.08)
    accounting.request_finished("/admin/dashboard.json", "GET", 200, 0.002)
    accounting.request_finished("/health", "GET", 200, 0.001)
    accounting.provider_call("openai", "gpt-4o-mini", "ok", 0.08)
    accounting.provider_call("openai", "gpt-4o-mini", "server_error", 0.3)
    accounting.provider_call("anthropic", "claude", "cancelled", 1.0)  # not the provider's error
    accounting.avoided("openai", "gpt-4o-mini", "batch", calls=2, prompt=10)
    cache = {
        "hits": 7,
        "misses": 3,
        "avoided_provider_calls\x1fprovider=openai\x1fmodel=m\x1fvia=cache": 7,
    }
    columns = Columns(PROVIDERS)
    sample = dict(
        zip(columns.names, columns.sample(numbers_of(accounting, cache), 42.0), strict=True)
    )
    assert sample["time"] == 42.0
    assert (sample["api_requests"], sample["api_errors"], sample["api_client_errors"]) == (5, 1, 1)
    assert (sample["calls:openai"], sample["errors:openai"]) == (2, 1)
    assert (sample["calls:anthropic"], sample["errors:anthropic"]) == (1, 0)
    assert (sample["cache_hits"], sample["cache_misses"]) == (7, 3)
    assert (sample["avoided_calls"], sample["avoided_tokens"]) == (9, 10)  # batch 2, cache 7
    assert sum(v for k, v in sample.items() if k.startswith("latency:openai:")) == 2


def test_rates_and_percentiles_come_from_the_difference_between_two_samples() -> None:
    columns = Columns(PROVIDERS)
    # 40 calls to openai in 10 s: 20 in the 0.05-0.1 s bucket, 20 in the 0.25-0.5 s one
    # (percentiles interpolated within the bucket: p99 = 0.25 + 0.25 * 19.6 / 20 s).
    before = row(columns, 100.0, api_requests=1000, cache_hits=10, cache_misses=10)
    after = row(
        columns, 110.0, api_requests=1050, api_errors=5, cache_hits=40, cache_misses=20,
        calls__openai=40, errors__openai=2, latency__openai__4=20, latency__openai__6=20,
        queue__high=3,
    )  # fmt: skip
    figures = between(columns, before, after)
    assert figures["requests_per_s"] == 5.0
    assert figures["errors_per_s"] == 0.5
    assert figures["error_rate"] == 0.1
    assert figures["cache_hit_rate"] == 0.75  # 30 hits of 40 lookups in the span
    assert figures["providers"]["openai"] == {
        "calls_per_s": 4.0, "errors_per_s": 0.2, "p50_ms": 100.0, "p99_ms": 495.0,
    }  # fmt: skip
    assert figures["providers"]["anthropic"]["p50_ms"] is None  # no calls: no percentile
    assert figures["latency_p50_ms"] == 100.0  # every provider's calls together
    assert figures["queue"]["high"] == 3  # a gauge: as it stands at the later sample
    assert figures["ttft_p50_ms"] is None


def test_chart_points_cover_the_seconds_before_them_and_the_summary_the_last_minute() -> None:
    columns = Columns(PROVIDERS)
    # 120 s of samples, 2 requests a second for the first minute, then 10 a second.
    rows, total = [], 0.0
    for second in range(121):
        rows.append(row(columns, 1000.0 + second, api_requests=total))
        total += 2 if second < 60 else 10
    points = charts(columns, rows, after=1115.0)
    assert points["t"] == [1116.0, 1117.0, 1118.0, 1119.0, 1120.0]
    assert points["requests_per_s"] == [10.0] * 5
    assert set(points["providers"]) == set(PROVIDERS)
    assert len(points["queue"]["normal"]) == 5
    ramp = charts(columns, rows, after=1060.0)["requests_per_s"][:WINDOW]
    assert ramp == [(8 * (n + 1) + 2 * WINDOW) / WINDOW for n in range(WINDOW)]  # 2/s to 10/s
    last_minute = summary(columns, rows)
    assert last_minute is not None
    assert last_minute["seconds"] == 60.0
    assert last_minute["requests_per_s"] == 10.0
    assert summary(columns, rows[:1]) is None


def test_each_chart_point_says_what_the_summary_would_say_of_its_span() -> None:
    columns = Columns(PROVIDERS)
    rows = []
    for second in range(30):
        n = float(second * second)  # traffic that grows, spread over buckets and providers
        rows.append(
            row(
                columns, 2000.0 + second, api_requests=3 * n, api_errors=n // 7,
                cache_hits=n, cache_misses=n // 2, calls__openai=n, calls__anthropic=n // 3,
                latency__openai__3=n, latency__openai__7=n // 4, latency__anthropic__9=n // 3,
                ttft__2=n // 2, ttft__5=n // 5, queue__low=second % 4, shed=n // 9,
            )
        )  # fmt: skip
    points = charts(columns, rows, after=2010.0)
    for k, t in enumerate(points["t"]):
        i = int(t - 2000.0)
        span = between(columns, rows[i - WINDOW], rows[i])
        for name in ("requests_per_s", "latency_p50_ms", "latency_p99_ms", "ttft_p99_ms",
                     "cache_hit_rate", "shed_per_s"):  # fmt: skip
            assert points[name][k] == span[name], (name, t)
        assert points["queue"]["low"][k] == span["queue"]["low"]
        for provider in PROVIDERS:
            assert (
                points["providers"][provider]["calls_per_s"][k]
                == (span["providers"][provider]["calls_per_s"])
            )
