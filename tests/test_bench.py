"""`aigateway bench`: its own logic (options, plan, wrk output, comparison, trace), and runs."""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from aigateway.bench import add_bench_arguments, run_bench
from aigateway.bench import wrk as wrk_module
from aigateway.bench.baselines import constant_reply
from aigateway.bench.bodies import identical_body, unique_body_parts
from aigateway.bench.compare import (
    CompareError,
    compare,
    direction_of,
    is_goal_figure,
    regressions,
    render_comparison,
    render_regressions,
)
from aigateway.bench.derive import derive, goals
from aigateway.bench.loadclient import (
    PRIORITY_MIX,
    observed_rate,
    open_loop_schedule,
    parse_output,
    percentile,
    priority_sequence,
    priority_summary,
    steady_window,
)
from aigateway.bench.report import cpu_per_request, render_results, saturation
from aigateway.bench.scenarios import (
    DEFAULT_SCENARIOS,
    SCENARIOS,
    MockConfig,
    PlanOptions,
    build_plan,
)
from aigateway.bench.trace import PRIORITIES, TraceSpec, describe_trace, generate_trace
from aigateway.bench.wrk import (
    JSON_MARKER,
    WrkError,
    lua_script,
    lua_string,
    parse_wrk_output,
    wrk_command,
)
from recording_http import recording_http_server

# --- options ------------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aigateway bench")
    add_bench_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_match_the_documented_ones() -> None:
    args = parse()
    assert args.scenario is None  # all
    assert (args.duration, args.workers, args.warmup) == (10, 2, 1)
    assert (args.max_other_cpu, args.retries) == (25.0, 1)
    assert args.upstream_client == "aiohttp"
    assert args.concurrency is None and args.mock_latency_ms is None
    assert args.json is None and args.compare is None and args.plot is None


def test_lists_are_repeatable_and_comma_separated() -> None:
    args = parse(
        "--scenario", "overhead", "--scenario", "stream", "--concurrency", "16,64",
        "--concurrency", "8", "--mock-latency-ms", "0,12.5", "--upstream-client", "httpx",
        "--json", "out.json", "--duration", "3",
    )  # fmt: skip
    assert args.scenario == ["overhead", "stream"]
    assert args.concurrency == [[16, 64], [8]]
    assert args.mock_latency_ms == [[0.0, 12.5]]
    assert args.json == Path("out.json") and args.duration == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["--duration", "0"],
        ["--duration", "1.5"],
        ["--scenario", "nope"],
        ["--concurrency", "0"],
        ["--concurrency", ","],
        ["--mock-latency-ms", "-1"],
        ["--mock-latency-ms", "abc"],
        ["--workers", "0"],
        ["--upstream-client", "requests"],
    ],
)
def test_bad_options_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_the_plan_covers_every_default_scenario_and_starts_each_mock_once() -> None:
    plan = build_plan(PlanOptions())
    opt_in = {"soak", "hostile", "cluster"}
    assert {s.scenario for s in plan} == set(DEFAULT_SCENARIOS) == set(SCENARIOS) - opt_in
    assert len({s.key for s in plan}) == len(plan)  # keys name measurements uniquely
    mocks = [s.mock for s in plan]
    changes = sum(1 for a, b in itertools.pairwise(mocks) if a != b)
    assert changes == len(set(mocks)) - 1  # grouped: each mock configuration in one run
    overhead = [s for s in plan if s.scenario == "overhead"]
    assert [(s.target, s.concurrency) for s in overhead] == [
        ("direct", 1), ("passthrough", 1), ("gateway", 1),
    ]  # fmt: skip
    slow = {s.concurrency for s in plan if s.mock == MockConfig(50.0)}
    assert slow == {16, 64, 128, 256}
    hit = [s for s in plan if s.scenario == "hit-frontier"]
    assert {s.target for s in hit} == {"constant", "gateway"}
    assert all(s.load == "identical" and "cache hits" in s.label for s in hit)
    assert {s.workers for s in plan if s.scenario == "workers"} == {1, 2, 4}
    assert all(s.mock.chunk_delay_ms > 0 for s in plan if s.scenario == "stream")


def test_overrides_replace_the_lists_but_overhead_stays_at_one_connection() -> None:
    plan = build_plan(
        PlanOptions(
            scenarios=("overhead", "miss-frontier"),
            workers=3,
            concurrency=(8,),
            mock_latency_ms=(5.0,),
        )
    )
    assert {s.concurrency for s in plan if s.scenario == "overhead"} == {1}
    assert {s.concurrency for s in plan if s.scenario == "miss-frontier"} == {8}
    assert {s.mock.latency_ms for s in plan} == {5.0}
    assert {s.workers for s in plan if s.target != "direct"} == {3}


def test_the_admission_step_limits_the_provider_and_sends_over_the_limit() -> None:
    plan = build_plan(PlanOptions(scenarios=("admission",)))
    assert len(plan) == 1
    step = plan[0]
    assert (step.target, step.workers, step.load) == ("gateway", 2, "open-loop")
    assert step.provider_rps == 100.0 and step.offered_rps == 150.0
    assert dict(step.gateway_env)["QUEUE_SIZE"] == "100"
    assert "offered150" in step.key and "OPENAI_RPS=100" in step.key
    assert "open loop" in step.describe()
    # a rate is judged over many seconds: 30 of load unless --admission-duration says
    assert step.duration_s == 30 and "for 30 s" in step.describe()
    # the other scenarios keep an unlimited provider (no settings of their own)
    assert all(s.provider_rps is None for s in build_plan(PlanOptions()) if s is not step
               and s.scenario != "admission")  # fmt: skip


# --- open loop ----------------------------------------------------------------------------


def test_the_open_loop_schedule_is_a_fixed_rate_bounded_in_time_and_count() -> None:
    assert open_loop_schedule(4, 1.0, 100) == [0.0, 0.25, 0.5, 0.75]
    assert len(open_loop_schedule(150, 5, 100_000)) == 750
    assert len(open_loop_schedule(150, 5, 10)) == 10
    assert open_loop_schedule(0, 5, 10) == [] and open_loop_schedule(10, 0, 10) == []
    times = open_loop_schedule(3, 1.1, 100)
    assert times == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0]) and max(times) < 1.1


def test_the_priority_mix_is_exact_and_deterministic_for_a_seed() -> None:
    sequence = priority_sequence(1000, seed=8)
    assert Counter(sequence) == {"critical": 100, "high": 200, "normal": 400, "low": 300}
    assert sequence == priority_sequence(1000, seed=8)
    assert sequence != priority_sequence(1000, seed=9)
    assert sequence[:10] != sorted(sequence[:10], key=[n for n, _ in PRIORITY_MIX].index)
    odd = Counter(priority_sequence(7, seed=1))
    assert sum(odd.values()) == 7 and odd["normal"] == 3  # largest remainders
    assert priority_sequence(0, seed=1) == []


def test_the_priority_summary_counts_sheds_timeouts_and_success_latency() -> None:
    records = [
        ("critical", 200, 10.0), ("critical", 200, 30.0),
        ("low", 200, 5.0), ("low", 429, 1.0), ("low", 504, 1000.0), ("low", 0, 2.0),
        ("odd", 200, 1.0),
    ]  # fmt: skip
    summary = priority_summary(records, ("critical", "high", "normal", "low"))
    assert list(summary) == ["critical", "high", "normal", "low", "odd"]
    assert summary["critical"]["p50"] == 20.0 and summary["critical"]["shed"] == 0
    assert summary["high"] == {
        "requests": 0, "ok": 0, "p50": None, "p99": None, "shed": 0, "shed_rate": None,
        "timeouts": 0, "timeout_rate": None, "other_errors": 0,
    }  # fmt: skip
    low = summary["low"]
    assert (low["requests"], low["ok"], low["shed"], low["timeouts"]) == (4, 1, 1, 1)
    assert low["shed_rate"] == 0.25 and low["timeout_rate"] == 0.25
    assert low["other_errors"] == 1 and low["p99"] == 5.0  # failures are not latency


def test_the_provider_rate_is_counted_over_the_steady_middle() -> None:
    assert steady_window(10, skip_start_s=1.0) == (2.0, 8.0)
    assert steady_window(5, skip_start_s=2.0) == (2.0, 4.0)
    assert steady_window(3, skip_start_s=2.5) == (1.5, 3)  # nothing left: second half
    assert steady_window(0, skip_start_s=1.0) == (0.0, 0.0)
    start = 1_000.0
    # a burst of 150/s for the first 2 s, then 100/s
    times = [start + i / 150 for i in range(300)]
    times += [start + 2 + i / 100 for i in range(300)]
    rate, calls = observed_rate(times, start, (2.0, 4.0))
    assert (rate, calls) == (100.0, 200)
    assert observed_rate(times, start, (1.0, 1.0)) == (None, 0)
    assert observed_rate([], start, (0.0, 1.0)) == (0.0, 0)


def admission_row(critical_p99: float, observed: float, mock_ms: float = 20.0) -> dict[str, Any]:
    def prio(requests: int, p99: float, shed: int, timeouts: int) -> dict[str, Any]:
        return {"requests": requests, "ok": requests - shed - timeouts, "p50": p99 / 2,
                "p99": p99, "shed": shed, "shed_rate": shed / requests, "timeouts": timeouts,
                "timeout_rate": timeouts / requests, "other_errors": 0}  # fmt: skip

    return {
        "key": "admission/gateway/open-loop/c1/w2", "scenario": "admission",
        "target": "gateway", "concurrency": 1, "workers": 2, "mock_latency_ms": mock_ms,
        "mock_chunk_delay_ms": 0.0, "load": "open-loop", "label": "", "rps": 140.0,
        "requests": 700, "p50_ms": 30.0, "p90_ms": 60.0, "p99_ms": 900.0, "errors": 150,
        "provider_calls": 520, "cpu_pct": {"target": 20.0, "mock": 5.0, "generator": 10.0},
        "machine_busy_pct": 10.0, "other_pct": 1.0, "rss_per_worker_mb": 40.0,
        "extra": {
            "offered_rps": 150.0, "provider_limit_rps": 100.0,
            "provider_observed_rps": observed, "provider_rate_calls": 200,
            "provider_rate_window_s": [2.0, 4.0], "schedule_s": 5.0,
            "by_priority": {
                "critical": prio(70, critical_p99, 0, 0), "high": prio(140, 50.0, 0, 0),
                "normal": prio(280, 100.0, 0, 5), "low": prio(210, 900.0, 40, 100),
            },
        },
    }  # fmt: skip


def test_admission_goals_are_reported_against_the_limit_and_the_mock_latency() -> None:
    rows = [admission_row(critical_p99=35.0, observed=101.0)]
    derived = derive(rows)
    keys = {d["key"]: d["value"] for d in derived}
    assert keys["admission/c1/w2/mock20ms/provider-rate-vs-limit"] == pytest.approx(1.01)
    assert keys["admission/c1/w2/mock20ms/low-shed-rate"] == pytest.approx(40 / 210)
    found = {g["goal"]: g for g in goals(rows, derived) if g["goal"].startswith("admission")}
    rate, critical, low = found.values()
    assert rate["status"] == "met" and "1.0% off" in rate["measured"]
    assert critical["status"] == "met" and "mock latency 20 ms" in critical["goal"]
    assert low["status"] == "met"
    missed = [admission_row(critical_p99=80.0, observed=95.0)]
    statuses = [g["status"] for g in goals(missed, derive(missed)) if "admission" in g["goal"]]
    assert statuses == ["MISSED", "MISSED", "met"]


def test_admission_with_a_0_ms_mock_compares_critical_with_the_direct_p50() -> None:
    direct = {"scenario": "overhead", "target": "direct", "mock_latency_ms": 0.0,
              "p50_ms": 0.2, "concurrency": 1, "workers": 0}  # fmt: skip
    rows = [admission_row(critical_p99=0.3, observed=100.0, mock_ms=0.0)]
    found = [g for g in goals([*rows, direct], []) if "critical p99" in g["goal"]]
    assert "direct p50 0.200 ms" in found[0]["goal"] and found[0]["status"] == "met"
    alone = [g for g in goals(rows, []) if "critical p99" in g["goal"]]
    assert alone[0]["status"] == "n/a"


def test_the_admission_table_shows_the_rate_and_every_priority() -> None:
    text = render_results([admission_row(critical_p99=35.0, observed=101.0)])
    assert "== admission ==" in text and "provider/s" in text and "101.0" in text
    for name in ("critical", "high", "normal", "low"):
        assert name in text
    assert "19.0%" in text  # low: 40 of 210 shed
    assert "| priority |" in render_results([admission_row(35.0, 101.0)], markdown=True)


# --- wrk ----------------------------------------------------------------------------------

WRK_TEXT = """\
Running 2s test @ http://127.0.0.1:8090
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     7.78ms    2.01ms    1.24s    91.11%
    Req/Sec     4.12k   300.12     4.60k    70.00%
  Latency Distribution
     50%  950.00us
     75%    8.20ms
     90%    8.94ms
     99%    1.24s
  16380 requests in 2.00s, 9.58MB read
  Socket errors: connect 1, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:   8190.12
Transfer/sec:      4.79MB
"""


def json_line(**overrides: Any) -> str:
    data: dict[str, Any] = {
        "requests": 5000,
        "duration_us": 2_000_000,
        "bytes": 1,
        "errors": {"connect": 0, "read": 1, "write": 0, "status": 4, "timeout": 0},
        "latency_us": {
            "min": 90.0,
            "max": 9000.0,
            "mean": 400.0,
            "stdev": 50.0,
            "percentiles": {"50.0": 350.0, "75.0": 420.0, "90.0": 510.0, "99.0": 1200.0},
        },
    }
    data.update(overrides)
    return JSON_MARKER + orjson.dumps(data).decode()


def test_the_done_hook_json_line_wins_over_the_text() -> None:
    result = parse_wrk_output(WRK_TEXT + json_line() + "\n")
    assert result.source == "json" and not result.notes
    assert result.requests == 5000 and result.duration_s == 2.0 and result.rps == 2500.0
    assert result.latency_ms["p50"] == pytest.approx(0.35)
    assert result.latency_ms["p90"] == pytest.approx(0.51)
    assert result.latency_ms["p99"] == pytest.approx(1.2)
    assert result.error_count == 5


def test_wrk_text_is_read_when_the_json_line_is_missing() -> None:
    result = parse_wrk_output(WRK_TEXT)
    assert result.source == "text" and "no JSON line" in result.notes[0]
    assert result.requests == 16380 and result.duration_s == pytest.approx(2.0)
    assert result.latency_ms["p50"] == pytest.approx(0.95)  # us
    assert result.latency_ms["p90"] == pytest.approx(8.94)  # ms
    assert result.latency_ms["p99"] == pytest.approx(1240.0)  # s
    assert result.latency_ms["max"] == pytest.approx(1240.0)
    assert result.errors == {"connect": 1, "read": 3, "write": 0, "timeout": 2, "status": 7}


@pytest.mark.parametrize(
    "broken",
    [
        JSON_MARKER + "{not json",
        JSON_MARKER + "[1, 2]",
        json_line(requests=-1),
        json_line(duration_us=0),
        json_line(errors={"connect": 0}),
    ],
)
def test_a_broken_json_line_falls_back_to_the_text(broken: str) -> None:
    result = parse_wrk_output(WRK_TEXT + broken + "\n")
    assert result.source == "text" and "unreadable JSON" in result.notes[0]
    assert result.requests == 16380


def test_no_requests_means_no_percentiles_and_nan_is_null() -> None:
    line = json_line(requests=0)
    line = line.replace('"mean":400.0', '"mean":null')
    result = parse_wrk_output(line)
    assert result.requests == 0 and result.latency_ms == {} and result.rps == 0.0


def test_output_without_any_result_is_an_error() -> None:
    with pytest.raises(WrkError, match="cannot read wrk's output"):
        parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_lua_strings_escape_quotes_backslashes_and_bytes() -> None:
    assert lua_string(b'a"b\\c') == '"a\\"b\\\\c"'
    assert lua_string("é\n".encode()) == '"\\195\\169\\010"'


def test_the_lua_script_sends_fixed_or_unique_bodies_and_reports_json() -> None:
    fixed = lua_script(identical_body(), "/v1/chat/completions", {"Authorization": "Bearer k"})
    assert "wrk.body = " in fixed and "function request()" not in fixed
    assert 'wrk.headers["Authorization"] = "Bearer k"' in fixed
    assert JSON_MARKER in fixed and "latency:percentile(p)" in fixed
    unique = lua_script(unique_body_parts("n1"), "/v1/chat/completions")
    assert "function request()" in unique and "thread:set" in unique
    command = wrk_command("wrk", "http://127.0.0.1:1", "s.lua", 1, 2, threads=4)
    assert command[1:4] == ["-t1", "-c1", "-d2s"] and "--latency" in command


def test_unique_body_parts_wrap_a_request_id_into_valid_json() -> None:
    prefix, suffix = unique_body_parts("abc")
    body = orjson.loads(prefix + b"3-17" + suffix)
    assert body["messages"][0]["content"] == "bench abc request 3-17"


def test_missing_wrk_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(WrkError, match="apt-get install wrk"):
        wrk_module.ensure_wrk()


def test_bench_exits_2_with_the_install_hint_when_wrk_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert run_bench(parse("--scenario", "overhead")) == 2
    assert "wrk is not installed" in capsys.readouterr().err


def test_an_unreadable_compare_file_stops_before_measuring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "old.json"
    bad.write_text('{"something": "else"}')
    assert run_bench(parse("--compare", str(bad))) == 2
    assert "not the --json output" in capsys.readouterr().err


def test_plot_without_matplotlib_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    assert run_bench(parse("--plot", str(tmp_path / "p.png"))) == 2
    assert "pip install 'aigateway[plot]'" in capsys.readouterr().err


def test_a_failed_measurement_keeps_what_was_measured_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from aigateway.bench import runner

    calls: list[str] = []

    def fake_measure(step: Any, env: Any, progress: Any) -> dict[str, Any]:
        calls.append(step.target)
        if len(calls) == 2:
            raise runner.ServiceError("passthrough-w2-1 exited with code 1 before it was ready")
        return row(step.target)

    monkeypatch.setattr(wrk_module, "ensure_wrk", lambda **kwargs: "/usr/bin/wrk")
    monkeypatch.setattr(runner, "measure", fake_measure)
    out = tmp_path / "run.json"
    assert run_bench(parse("--scenario", "overhead", "--json", str(out))) == 1
    captured = capsys.readouterr()
    assert "exited with code 1 before it was ready" in captured.err
    assert "logs kept in" in captured.err
    shutil.rmtree(captured.err.split("logs kept in ")[1].split(")")[0])
    assert "== overhead ==" in captured.out  # the first measurement is still shown
    document = orjson.loads(out.read_bytes())
    assert [r["target"] for r in document["results"]] == ["direct"]
    assert "before it was ready" in document["meta"]["error"]
    assert calls == ["direct", "passthrough"]


# --- derived figures, comparison, report --------------------------------------------------


def row(target: str, scenario: str = "overhead", **figures: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "key": f"{scenario}/{target}/unique/c1/w2/mock0ms", "scenario": scenario,
        "target": target, "concurrency": 1, "workers": 0 if target == "direct" else 2,
        "mock_latency_ms": 0.0, "mock_chunk_delay_ms": 0.0, "load": "unique", "label": "",
        "requests": 1000, "duration_s": 2.0, "rps": 500.0, "p50_ms": 0.2, "p90_ms": 0.3,
        "p99_ms": 0.5, "errors": 0, "provider_calls": 1000, "window_s": 2.1,
        "cpu_s": {}, "cpu_pct": {"mock": 20.0, "generator": 5.0, "target": 60.0},
        "machine_busy_pct": 40.0, "other_pct": 2.0, "rss_mb": 80.0, "rss_per_worker_mb": 40.0,
        "private_per_worker_mb": 30.0, "extra": {},
    }  # fmt: skip
    base.update(figures)
    return base


def test_streaming_goals_are_judged_against_the_passthrough_floor() -> None:
    def stream_row(target: str, ttfb: float, gap: float) -> dict[str, Any]:
        figures = {"ttfb_ms": {"p50": ttfb, "p99": ttfb * 2}, "gap_ms": {"p50": gap, "p99": gap}}
        found = row(target, "stream", concurrency=4, load="stream", extra=figures)
        found["key"] = f"stream/{target}/stream/c4/w2/mock0ms"
        return found

    rows = [
        stream_row("direct", 1.0, 2.0),
        stream_row("passthrough", 2.7, 2.05),
        stream_row("gateway", 2.9, 2.06),
    ]
    status = {g["goal"]: (g["measured"], g["status"]) for g in goals(rows, derive(rows))}
    # 1.9 ms over direct, but the issue's goal is what our features add over the floor
    assert status["stream added ttfb p50 over passthrough"] == ("0.200 ms", "met")
    assert status["stream added gap p50 over passthrough"] == ("0.010 ms", "met")


def test_overhead_is_derived_against_both_baselines_and_checked_against_goals() -> None:
    rows = [
        row("direct", p50_ms=0.15, p99_ms=0.3),
        row("passthrough", p50_ms=0.6, p99_ms=1.0),
        row("gateway", p50_ms=0.7, p99_ms=1.2),
    ]
    derived = {d["key"]: d["value"] for d in derive(rows)}
    assert derived["overhead/c1/w2/mock0ms/added-p50-over-passthrough"] == pytest.approx(0.1)
    assert derived["overhead/c1/w2/mock0ms/added-p99-over-direct"] == pytest.approx(0.9)
    status = {g["goal"]: g["status"] for g in goals(rows, derive(rows))}
    assert status["added p50 over passthrough at concurrency 1"] == "met"
    assert status["added p99 over passthrough at concurrency 1"] == "met"
    # Issue 19 judges what the gateway adds over its own stack's floor, not over the mock.
    assert "added p99 over direct at concurrency 1" not in status
    assert status["gateway private memory per worker (largest seen)"] == "met"
    assert "overhead" in render_results(rows) and "| direct |" in render_results(rows, True)


def test_issue_19s_goals_are_judged_against_the_floors_of_our_own_stack() -> None:
    rows = [
        row("passthrough", p50_ms=0.6, p99_ms=1.0),
        row("gateway", p50_ms=0.75, p99_ms=1.2),
        row("passthrough", scenario="miss-frontier", concurrency=128, mock_latency_ms=50.0,
            rps=2000.0),
        row("gateway", scenario="miss-frontier", concurrency=128, mock_latency_ms=50.0,
            rps=1960.0),
        row("gateway", scenario="trace", concurrency=16, rps=3000.0),
    ]  # fmt: skip
    found = {g["goal"]: g for g in goals(rows, derive(rows))}
    added = found["added p50 over passthrough at concurrency 1"]
    assert (added["target"], added["status"]) == ("<= 0.1 ms", "MISSED")  # 0.15 ms
    slow = found["req/s vs passthrough, 50 ms mock at c=128"]
    assert (slow["measured"], slow["target"], slow["status"]) == ("0.980", ">= 0.97", "met")
    trace = found["trace req/s (+30% over 2,523)"]
    assert (trace["target"], trace["status"]) == (">= 3279.9", "MISSED")


def test_saturation_names_the_busiest_process() -> None:
    busy = {"mock": 30.0, "generator": 10.0, "target": 140.0}
    assert saturation(row("gateway", machine_busy_pct=92.0, cpu_pct=busy)) == (
        "all cores (gateway 140%)"
    )
    assert saturation(row("direct", cpu_pct={"mock": 97.0, "generator": 20.0})) == "mock (1 core)"
    assert saturation(row("gateway")) == "none (waits)"
    assert saturation(row("gateway", other_pct=60.0)) == "disturbed (other 60%)"
    assert cpu_per_request(row("gateway")) == pytest.approx(1.2)  # 60% of a core / 500 req/s


@pytest.mark.parametrize(
    ("others", "kept", "attempts"), [([80.0, 10.0], 10.0, 2), ([90.0, 70.0], 70.0, 2)]
)
def test_a_disturbed_measurement_is_repeated_and_the_quietest_kept(
    monkeypatch: pytest.MonkeyPatch, others: list[float], kept: float, attempts: int
) -> None:
    from aigateway.bench import runner
    from aigateway.bench.progress import Progress
    from aigateway.bench.scenarios import Step

    queue = list(others)
    monkeypatch.setattr(runner, "measure", lambda *a: row("gateway", other_pct=queue.pop(0)))
    env = runner.Environment(runner.RunConfig(wrk="wrk", work_dir=Path()), Progress(1))
    step = Step("overhead", "gateway", 1, 2, MockConfig(), "unique")
    result = runner.measure_undisturbed(step, env, Progress(1))
    assert (result["other_pct"], result["attempts"]) == (kept, attempts)
    assert not queue


def doc(*rows: dict[str, Any]) -> dict[str, Any]:
    return {"results": list(rows), "derived": derive(list(rows))}


def test_comparison_shows_every_figure_with_its_direction() -> None:
    old = doc(row("direct"), row("gateway", rps=1000.0, p99_ms=1.0))
    new = doc(row("direct"), row("gateway", rps=800.0, p99_ms=0.5, errors=0))
    result = compare(old, new)
    changes = {c.figure: c for c in result.changes}
    rps = changes["overhead/gateway/unique/c1/w2/mock0ms rps"]
    assert rps.relative == pytest.approx(-0.2) and rps.verdict(0.05) == "worse"
    p99 = changes["overhead/gateway/unique/c1/w2/mock0ms p99_ms"]
    assert p99.verdict(0.05) == "better"
    assert changes["overhead/gateway/unique/c1/w2/mock0ms cpu_pct.target"].verdict(0.05) == ""
    assert "derived overhead/c1/w2/mock0ms/added-p99-over-direct" in changes
    text = render_comparison(result)
    assert "-20.0%" in text and "worse" in text


def test_comparison_lists_figures_only_one_run_has_and_refuses_other_files() -> None:
    result = compare(doc(row("direct")), doc(row("direct"), row("gateway", scenario="trace")))
    assert result.only_new and not result.only_old
    assert "only in this one" in render_comparison(result)
    with pytest.raises(CompareError):
        compare({"rows": []}, doc())


@pytest.mark.parametrize(
    ("figure", "direction"),
    [
        ("k rps", 1),
        ("derived miss-frontier/unique/c16/w2/mock0ms/rps-vs-passthrough", 1),
        ("derived trace/c16/w2/mock0ms/hit-rate", 1),
        ("k p99_ms", -1),
        ("k extra.ttfb_ms.p50", -1),
        ("k rss_per_worker_mb", -1),
        ("k private_per_worker_mb", -1),
        ("derived memory/gateway/private-max", -1),
        ("k provider_calls", 0),
        ("k requests", 0),
    ],
)
def test_figure_directions(figure: str, direction: int) -> None:
    assert direction_of(figure) == direction


def test_percentiles_interpolate() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)


def test_load_client_output_is_found_among_other_lines() -> None:
    assert parse_output('noise\nAIGATEWAY_BENCH_JSON {"requests": 3}\n') == {"requests": 3}
    with pytest.raises(RuntimeError, match="printed no result"):
        parse_output("Traceback ...")


def test_the_constant_baseline_answers_what_the_mock_answers() -> None:
    reply = orjson.loads(constant_reply())
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["content"].startswith("Mock reply to: Say hello")


# --- the trace ----------------------------------------------------------------------------


def test_the_trace_is_deterministic_for_a_seed() -> None:
    spec = TraceSpec(seed=42, requests=3000)
    assert generate_trace(spec) == generate_trace(spec)
    assert generate_trace(spec) != generate_trace(TraceSpec(seed=43, requests=3000))
    first = generate_trace(spec)[0].to_json()
    assert first == generate_trace(spec)[0].to_json()
    assert orjson.loads(first["body"])["model"] == "gpt-4o-mini"


def test_the_trace_repeats_prompts_zipf_like() -> None:
    trace = generate_trace(TraceSpec(seed=1, requests=20_000, prompts=2_000))
    counts = Counter(r.prompt for r in trace)
    assert counts[0] > counts[1] > counts[9] > counts[99]
    assert counts[0] / len(trace) == pytest.approx(0.17, abs=0.03)  # 1 / H(2000, 1.1)
    top_1_percent = sum(counts[rank] for rank in range(20))
    assert top_1_percent / len(trace) > 0.4
    shape = describe_trace(trace)
    assert 0.85 < shape["repeated_fraction"] < 0.97


def test_the_trace_mixes_streams_temperatures_and_four_priorities() -> None:
    trace = generate_trace(TraceSpec(seed=7, requests=20_000))
    shape = describe_trace(trace)
    assert shape["stream_fraction"] == pytest.approx(0.2, abs=0.015)
    assert set(shape["priorities"]) == set(PRIORITIES) and len(PRIORITIES) == 4
    assert all(count > 1000 for count in shape["priorities"].values())
    assert len({r.temperature for r in trace}) >= 3
    bodies = [orjson.loads(r.to_json()["body"]) for r in trace[:200]]
    assert all(b["stream"] is r.stream for b, r in zip(bodies, trace, strict=False))


def test_a_trace_spec_is_checked() -> None:
    with pytest.raises(ValueError, match="stream_fraction"):
        TraceSpec(stream_fraction=1.5)
    with pytest.raises(ValueError, match="at least one"):
        TraceSpec(requests=0)


# --- real processes -----------------------------------------------------------------------


def wrk_or_skip() -> str:
    try:
        return wrk_module.ensure_wrk()
    except WrkError as exc:
        pytest.skip(f"wrk is not installed and cannot be installed here: {exc}")


@pytest.fixture
def recording_server() -> Iterator[tuple[str, list[bytes]]]:
    with recording_http_server(fail_every=10) as server:
        yield server


@pytest.mark.e2e
def test_wrk_sends_unique_bodies_and_its_json_line_counts_errors(
    recording_server: tuple[str, list[bytes]], tmp_path: Path
) -> None:
    wrk = wrk_or_skip()
    url, bodies = recording_server
    script = tmp_path / "s.lua"
    script.write_text(lua_script(unique_body_parts("t"), "/v1/chat/completions"))
    run = subprocess.run(
        wrk_command(wrk, url, str(script), 2, 1, threads=2),
        capture_output=True,
        text=True,
        timeout=30,
    )
    result = parse_wrk_output(run.stdout)
    assert result.source == "json", run.stdout
    assert len(bodies) >= result.requests > 0
    texts = [orjson.loads(b)["messages"][0]["content"] for b in bodies]
    assert len(set(texts)) == len(texts)  # every body unique, across both threads
    assert {t.split()[-1].split("-")[0] for t in texts} == {"1", "2"}
    assert result.errors["status"] == pytest.approx(result.requests / 10, abs=2)
    assert result.latency_ms["p50"] > 0


def run_bench_process(tmp_path: Path, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "aigateway.bench", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )


def assert_all_stopped(document: dict[str, Any]) -> None:
    services = document["meta"]["services"]
    assert services, "the run recorded no service"
    for service in services:
        assert not Path(f"/proc/{service['pid']}").exists(), f"{service} still runs"


@pytest.mark.e2e
def test_smoke_overhead_runs_end_to_end_and_stops_everything(tmp_path: Path) -> None:
    wrk_or_skip()
    out = tmp_path / "run.json"
    bench = run_bench_process(tmp_path, "--duration", "2", "--scenario", "overhead",
                              "--json", str(out))  # fmt: skip
    # a bound on a hang, not a timing: the run takes ~40 s quiet, twice that under load
    stdout, stderr = bench.communicate(timeout=240)
    assert bench.returncode == 0, stderr
    document = orjson.loads(out.read_bytes())
    rows = {r["target"]: r for r in document["results"]}
    assert set(rows) == {"direct", "passthrough", "gateway"}
    for target, result in rows.items():
        assert result["errors"] == 0, target
        assert result["rps"] > 50, target
        assert 0 < result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"], target
        assert abs(result["provider_calls"] - result["requests"]) <= 2, target
        assert result["cpu_pct"]["generator"] > 0, target
    assert rows["gateway"]["rss_per_worker_mb"] > 10
    gateway = rows["gateway"]
    assert 10 < gateway["private_per_worker_mb"] <= gateway["rss_per_worker_mb"]
    # the rest of the resident memory: the interpreter's and libraries' pages, the cache's
    assert gateway["mapped_per_worker_mb"] > 1
    private_and_mapped = gateway["private_per_worker_mb"] + gateway["mapped_per_worker_mb"]
    assert private_and_mapped == pytest.approx(gateway["rss_per_worker_mb"], rel=0.1)
    assert rows["gateway"]["cpu_pct"]["target"] > 0
    assert rows["gateway"]["cpu_ms_per_request"]["target"] > 0
    assert "== overhead ==" in stdout and "added p50 over passthrough" in stdout
    assert "[3/3]" in stderr
    assert_all_stopped(document)
    compared = run_bench_process(tmp_path, "--from-json", str(out), "--compare", str(out))
    stdout, stderr = compared.communicate(timeout=60)
    assert compared.returncode == 0, stderr
    assert "0 worse, 0 better" in stdout


@pytest.mark.e2e
def test_smoke_admission_runs_open_loop_against_the_rate_limit(tmp_path: Path) -> None:
    wrk_or_skip()
    out = tmp_path / "run.json"
    started = time.monotonic()
    bench = run_bench_process(tmp_path, "--admission-duration", "3", "--scenario", "admission",
                              "--warmup", "0", "--retries", "0", "--json", str(out))  # fmt: skip
    stdout, stderr = bench.communicate(timeout=60)
    assert bench.returncode == 0, stderr
    assert time.monotonic() - started < 30
    document = orjson.loads(out.read_bytes())
    (row,) = document["results"]
    extra = row["extra"]
    assert extra["scheduled"] == 450 and row["requests"] == 450
    assert extra["unfinished"] == 0 and not extra["error_samples"]
    assert set(extra["by_priority"]) == {"critical", "high", "normal", "low"}
    assert extra["by_priority"]["critical"]["ok"] == extra["by_priority"]["critical"]["requests"]
    # the provider never sees more than its limit (and the 1 s burst)
    assert row["provider_calls"] <= 100 * 3 + 100 + 5
    assert 80 <= extra["provider_observed_rps"] <= 120
    assert "== admission ==" in stdout and "admission: provider rate" in stdout
    assert_all_stopped(document)


@pytest.mark.e2e
def test_ctrl_c_stops_every_process_and_keeps_what_was_measured(tmp_path: Path) -> None:
    wrk_or_skip()
    out = tmp_path / "run.json"
    bench = run_bench_process(tmp_path, "--duration", "3", "--scenario", "overhead",
                              "--json", str(out))  # fmt: skip
    assert bench.stderr is not None
    for line in bench.stderr:  # wait until the second measurement runs
        if line.startswith("[2/3]"):
            break
    time.sleep(1.5)
    bench.send_signal(signal.SIGINT)
    _, stderr = bench.communicate(timeout=60)
    assert bench.returncode == 130, stderr
    assert "interrupted" in stderr
    document = orjson.loads(out.read_bytes())
    assert document["meta"]["interrupted"] is True
    assert [r["target"] for r in document["results"]] == ["direct"]
    assert_all_stopped(document)


# --- regression check (--fail-if-worse) ---------------------------------------------------


def frontier(target: str, rps: float, load: str = "unique") -> dict[str, Any]:
    return row(target, scenario="miss-frontier", concurrency=16, load=load, rps=rps)


def test_only_goal_figures_are_judged_by_the_regression_check() -> None:
    assert is_goal_figure("derived miss-frontier/unique/c16/w2/mock0ms/rps-vs-passthrough")
    assert is_goal_figure("derived overhead/c1/w2/mock0ms/added-p50-over-passthrough")
    assert is_goal_figure("trace/gateway/trace/c16/w2/mock0ms rps")
    assert not is_goal_figure("derived overhead/c1/w2/mock0ms/added-p50-over-direct")
    assert not is_goal_figure("miss-frontier/gateway/unique/c16/w2/mock0ms rps")
    assert not is_goal_figure("trace/gateway/trace/c16/w2/mock0ms p99_ms")


def test_a_ratio_that_fell_beyond_the_threshold_is_a_regression() -> None:
    old = doc(frontier("passthrough", 1000.0), frontier("gateway", 800.0))
    new = doc(frontier("passthrough", 1000.0), frontier("gateway", 700.0))
    worse = regressions(compare(old, new), 0.10)
    assert [c.figure for c in worse] == [
        "derived miss-frontier/unique/c16/w2/mock0ms/rps-vs-passthrough"
    ]
    assert "0.800 -> 0.700 (-12.5%)" in render_regressions(worse, 0.10)
    assert regressions(compare(old, new), 0.20) == []


def test_a_faster_machine_alone_is_no_regression() -> None:
    """Both sides of a ratio fell together: the raw rates are worse, the goal is not."""
    old = doc(frontier("passthrough", 1000.0), frontier("gateway", 800.0))
    new = doc(frontier("passthrough", 500.0), frontier("gateway", 400.0))
    assert regressions(compare(old, new), 0.05) == []
    assert "no goal figure is worse" in render_regressions([], 0.05)


def test_fail_if_worse_exits_3_on_a_regression_and_0_otherwise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline = tmp_path / "baseline.json"
    baseline.write_bytes(
        orjson.dumps(doc(frontier("passthrough", 1000.0), frontier("gateway", 800.0)))
    )
    slower = tmp_path / "slower.json"
    slower.write_bytes(
        orjson.dumps(doc(frontier("passthrough", 1000.0), frontier("gateway", 600.0)))
    )
    argv = ("--from-json", str(slower), "--compare", str(baseline), "--fail-if-worse")
    assert run_bench(parse(*argv, "10")) == 3
    assert "goal figure(s) worse by more than 10%" in capsys.readouterr().out
    assert run_bench(parse(*argv, "30")) == 0


def test_fail_if_worse_needs_an_earlier_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_bench(parse("--fail-if-worse", "10")) == 2
    assert "needs --compare" in capsys.readouterr().err


def test_the_largest_private_memory_of_a_worker_is_a_goal_figure_that_may_not_grow() -> None:
    def memory_row(private_mb: float) -> dict[str, Any]:
        return frontier("gateway", 700.0) | {"private_per_worker_mb": private_mb}

    old = doc(frontier("passthrough", 1000.0), memory_row(48.0))
    new = doc(frontier("passthrough", 1000.0), memory_row(81.6))
    assert is_goal_figure("derived memory/gateway/private-max")
    worse = regressions(compare(old, new), 0.15)
    assert [c.figure for c in worse] == ["derived memory/gateway/private-max"]
    status = {g["goal"]: g for g in goals(new["results"], new["derived"])}
    judged = status["gateway private memory per worker (largest seen)"]
    assert (judged["target"], judged["status"]) == ("<= 60 MB", "MISSED")


def test_tables_show_private_memory_and_mapped_pages_apart() -> None:
    recorded = row("gateway", private_per_worker_mb=48.0, mapped_per_worker_mb=42.0)
    older = row("gateway", rss_per_worker_mb=90.0, private_per_worker_mb=50.0)  # before map/w
    text = render_results([recorded, older], True)
    assert "| anon/w MB | map/w MB |" in text
    assert "| 48 | 42 |" in text and "| 50 | 40 |" in text
