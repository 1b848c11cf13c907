"""The soak scenario: the gateway alone under a steady mix of misses and hits, its workers'
resident memory sampled over the run."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from aigateway.bench import add_bench_arguments
from aigateway.bench.bodies import mixed_body_parts
from aigateway.bench.command import chosen_scenarios
from aigateway.bench.derive import derive, goals, soak_goals
from aigateway.bench.report import render_results
from aigateway.bench.scenarios import DEFAULT_SCENARIOS, SCENARIOS, PlanOptions, build_plan
from aigateway.bench.soak import Reading, RssRecorder, slope_per_minute, summarise_rss
from aigateway.bench.wrk import WrkError, ensure_wrk, lua_script, parse_wrk_output, wrk_command
from recording_http import recording_http_server

MB = 2**20


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aigateway bench")
    add_bench_arguments(parser)
    return parser.parse_args(list(argv))


# --- options and plan ---------------------------------------------------------------------


def test_soak_runs_only_when_named() -> None:
    assert "soak" in SCENARIOS and "soak" not in DEFAULT_SCENARIOS
    assert chosen_scenarios(None) == DEFAULT_SCENARIOS
    assert chosen_scenarios(["all"]) == DEFAULT_SCENARIOS
    assert chosen_scenarios(["soak"]) == ("soak",)
    assert chosen_scenarios(["soak", "overhead"]) == ("overhead", "soak")  # plan order
    assert chosen_scenarios(["all", "soak"]) == (*DEFAULT_SCENARIOS, "soak")


def test_soak_duration_is_an_option_of_whole_seconds() -> None:
    assert parse().soak_duration == 600
    assert parse("--scenario", "soak", "--soak-duration", "3").soak_duration == 3
    for bad in ("0", "1.5", "ten"):
        with pytest.raises(SystemExit):
            parse("--soak-duration", bad)


def test_the_soak_step_is_the_gateway_alone_at_64_connections_for_its_own_duration() -> None:
    (step,) = build_plan(PlanOptions(scenarios=("soak",)))
    assert (step.target, step.concurrency, step.workers, step.load) == ("gateway", 64, 2, "soak")
    assert step.duration_s == 600 and step.mock.latency_ms == 0.0
    assert step.key == "soak/gateway/soak/c64/w2/mock0ms"
    assert step.describe().endswith("for 600 s") and "every 4th request" in step.label
    (short,) = build_plan(
        PlanOptions(scenarios=("soak",), soak_duration_s=3, workers=4, concurrency=(8,))
    )
    assert (short.duration_s, short.workers, short.concurrency) == (3, 4, 8)
    # other steps keep the run's --duration (admission has a duration of its own too)
    assert all(s.duration_s == 0 for s in build_plan(PlanOptions()) if s.scenario != "admission")


# --- the load -----------------------------------------------------------------------------


def test_the_soak_script_repeats_every_4th_request_from_a_pool() -> None:
    script = lua_script(mixed_body_parts("n1", every=4, pool=100), "/v1/chat/completions")
    assert "counter % 4 == 0" in script and "% 100" in script
    assert "n1" in script and "repeated" in script and "thread:set" in script


@pytest.fixture
def recording_server() -> Iterator[tuple[str, list[bytes]]]:
    with recording_http_server() as server:
        yield server


def wrk_or_skip() -> str:
    try:
        return ensure_wrk()
    except WrkError as exc:
        pytest.skip(f"wrk is not installed and cannot be installed here: {exc}")


@pytest.mark.e2e
def test_wrk_sends_a_quarter_of_repeated_bodies_and_the_rest_unique(
    recording_server: tuple[str, list[bytes]], tmp_path: Path
) -> None:
    wrk = wrk_or_skip()
    url, received = recording_server
    script = tmp_path / "s.lua"
    script.write_text(lua_script(mixed_body_parts("t", every=4, pool=2), "/v1/chat/completions"))
    run = subprocess.run(
        wrk_command(wrk, url, str(script), 2, 1, threads=2),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert parse_wrk_output(run.stdout).requests > 40, run.stdout
    texts = Counter(orjson.loads(b)["messages"][0]["content"] for b in received)
    repeated = {t: n for t, n in texts.items() if "repeated" in t}
    # each thread sends its 4th, 8th, ... request from the same pool of two bodies
    assert set(repeated) == {"bench repeated request 0", "bench repeated request 1"}
    assert all(n > 1 for n in repeated.values())
    assert all(n == 1 for t, n in texts.items() if t not in repeated)
    # each thread repeats a quarter of what it sent; a thread's last request may be cut
    # when wrk stops, so the server can see one fewer body per thread than was counted
    assert len(received) / 4 - 2 <= sum(repeated.values()) <= len(received) / 4 + 2


# --- memory over time ---------------------------------------------------------------------


def test_the_slope_is_a_least_squares_line_per_minute() -> None:
    assert slope_per_minute([(0, 100.0), (30, 101.0), (60, 102.0)]) == pytest.approx(2.0)
    # noise around a flat line averages out; a single high sample barely tilts it
    flat = [(t, 80.0 + (0.5 if t % 20 else -0.5)) for t in range(0, 600, 10)]
    assert abs(slope_per_minute(flat) or 0.0) < 0.01
    assert slope_per_minute([(0, 50.0), (10, 40.0)]) == pytest.approx(-60.0)
    assert slope_per_minute([(5, 1.0)]) is None and slope_per_minute([]) is None
    assert slope_per_minute([(5, 1.0), (5, 2.0)]) is None


def test_the_recorder_samples_at_the_start_every_10_s_and_when_told() -> None:
    reads: list[int] = []

    def read() -> Reading:
        reads.append(1)
        return {7: {"VmRSS": len(reads) * MB}}

    recorder = RssRecorder(read)
    recorder.sample(0.0)
    for tick in range(1, 251):  # the load's progress ticks, every 0.1 s for 25 s
        recorder.tick(tick / 10)
    recorder.finish(25.3)
    assert [round(t) for t, _ in recorder.samples] == [0, 10, 20, 25]
    recorder.tick(30.0)
    recorder.finish(30.2)  # a tick has just sampled
    assert [round(t) for t, _ in recorder.samples] == [0, 10, 20, 25, 30]


def reading(*workers: tuple[int, float, float]) -> Reading:
    return {pid: {"VmRSS": int(rss * MB), "RssAnon": int(anon * MB)} for pid, rss, anon in workers}


def test_memory_is_summarised_per_worker_and_for_the_worst() -> None:
    # worker 20 grows 2 MB/min throughout; worker 10 grows in its first minute only
    samples = []
    for t in range(0, 190, 10):
        early = min(t, 60) / 6  # +10 MB over the first minute, then flat
        samples.append((float(t), reading((20, 60 + t / 30, 40), (10, 50 + early, 30 + early))))
    figures = summarise_rss(samples)
    w1, w2 = figures["rss_workers"]["w1"], figures["rss_workers"]["w2"]  # by pid: 10, 20
    assert figures["worker_pids"] == ["10", "20"]
    assert (w1["start_mb"], w1["end_mb"], w1["max_mb"]) == pytest.approx((50, 60, 60))
    assert w1["growth_after_settle_mb_per_min"] == pytest.approx(0.0)
    assert w1["anon_growth_after_settle_mb_per_min"] == pytest.approx(0.0)
    assert w2["growth_after_settle_mb_per_min"] == pytest.approx(2.0)
    assert w2["growth_mb_per_min"] == pytest.approx(2.0)
    assert figures["rss_max_mb"] == pytest.approx(66.0)  # worker 20 at 180 s
    assert figures["rss_growth_after_settle_mb_per_min"] == pytest.approx(2.0)
    assert figures["rss_anon_max_mb"] == pytest.approx(40.0)
    assert figures["rss_samples"][1] == {
        "t": 10.0,
        "rss_mb": {"w1": pytest.approx(51.667, abs=1e-3), "w2": pytest.approx(60.333, abs=1e-3)},
        "anon_mb": {"w1": pytest.approx(31.667, abs=1e-3), "w2": 40.0},
    }


def test_a_short_run_or_a_vanished_worker_leaves_growth_unjudged() -> None:
    short = summarise_rss([(0.0, reading((1, 50, 30))), (10.0, reading((1, 51, 30)))])
    assert short["rss_growth_mb_per_min"] == pytest.approx(6.0)
    assert short["rss_growth_after_settle_mb_per_min"] is None  # nothing after a minute
    gone = summarise_rss([(0.0, reading((1, 50, 30))), (10.0, {1: {}})])
    assert gone["rss_end_mb"] == 50 and gone["rss_growth_mb_per_min"] is None
    assert summarise_rss([])["rss_max_mb"] is None


def soak_row(private_mb: float, growth: float | None) -> dict[str, Any]:
    return {
        "key": "soak/gateway/soak/c64/w2/mock0ms", "scenario": "soak", "target": "gateway",
        "concurrency": 64, "workers": 2, "mock_latency_ms": 0.0, "mock_chunk_delay_ms": 0.0,
        "load": "soak", "label": "mixed", "requests": 600_000, "duration_s": 600.0,
        "rps": 1000.0, "p50_ms": 50.0, "p90_ms": 90.0, "p99_ms": 150.0, "errors": 0,
        "provider_calls": 450_100, "cpu_pct": {"target": 150.0, "mock": 20.0, "generator": 9.0},
        "machine_busy_pct": 95.0, "other_pct": 1.0, "rss_per_worker_mb": 200.0,
        "extra": {
            "rss_start_mb": 57.0, "rss_end_mb": 230.0, "rss_max_mb": 236.0,
            "rss_growth_mb_per_min": 30.0, "rss_growth_after_settle_mb_per_min": 20.0,
            "rss_anon_max_mb": private_mb, "rss_anon_growth_after_settle_mb_per_min": growth,
        },
    }  # fmt: skip


def test_soak_goals_judge_private_memory_not_the_shared_cache_pages_in_rss() -> None:
    # RSS grows with the shared cache (236 MB here); the goals look at private memory.
    assert [g["status"] for g in soak_goals([soak_row(36.0, 0.04)])] == ["met", "met"]
    missed = soak_goals([soak_row(151.0, 1.5)])
    assert [g["status"] for g in missed] == ["MISSED", "MISSED"]
    assert missed[0]["measured"] == "151.0 MB (RSS with shared cache pages 236.0)"
    assert missed[1]["measured"] == "+1.50 MB/min (RSS +20.00)"
    assert missed[1]["target"] == "< 1 MB/min"
    assert soak_goals([soak_row(36.0, None)])[1]["status"] == "n/a (run too short)"


def test_the_soak_figures_are_derived_and_its_goals_listed() -> None:
    rows = [soak_row(36.0, 0.04)]
    derived = {d["key"]: d["value"] for d in derive(rows)}
    assert derived["soak/c64/w2/mock0ms/rss-max"] == 236.0
    assert derived["soak/c64/w2/mock0ms/rss-growth-after-1min"] == 20.0
    assert "soak: memory flat over the run" in {g["goal"].split(" (")[0] for g in goals(rows, [])}


def test_the_soak_table_shows_memory_over_the_run() -> None:
    text = render_results([soak_row(90.0, 0.4)])
    assert text.startswith("== soak == (mixed)")
    header, _, line = text.splitlines()[2:5]
    assert "rss start" in header and "MB/min >1m" in header and "anon max" in header
    assert "57.0" in line and "90.0" in line and "0.40" in line and "600" in line


def test_a_disturbed_soak_is_not_measured_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    from aigateway.bench import runner
    from aigateway.bench.progress import Progress

    calls: list[int] = []

    def disturbed(*args: Any) -> dict[str, Any]:
        calls.append(1)
        return {**soak_row(90.0, 0.4), "other_pct": 80.0}

    monkeypatch.setattr(runner, "measure", disturbed)
    env = runner.Environment(runner.RunConfig(wrk="wrk", work_dir=Path()), Progress(1))
    (step,) = build_plan(PlanOptions(scenarios=("soak",)))
    assert runner.measure_undisturbed(step, env, Progress(1))["attempts"] == 1
    assert len(calls) == 1


# --- a real run ---------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_short_soak_samples_every_worker_and_serves_hits(tmp_path: Path) -> None:
    wrk_or_skip()
    out = tmp_path / "run.json"
    started = time.monotonic()
    bench = subprocess.run(
        [sys.executable, "-m", "aigateway.bench", "--scenario", "soak", "--soak-duration", "3",
         "--warmup", "1", "--json", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    assert time.monotonic() - started < 60
    document = orjson.loads(out.read_bytes())
    (row,) = document["results"]
    assert (row["scenario"], row["concurrency"], row["workers"]) == ("soak", 64, 2)
    assert row["errors"] == 0 and row["requests"] > 100
    assert 2.5 < row["duration_s"] < 4
    # a quarter of the requests repeat 100 bodies: the cache answers most of those
    assert row["provider_calls"] < 0.9 * row["requests"]
    extra = row["extra"]
    assert len(extra["worker_pids"]) == 2  # the workers, not Granian's resource tracker
    samples = extra["rss_samples"]
    assert samples[0]["t"] == 0.0 and 2.5 < samples[-1]["t"] < 5
    assert all(set(s["rss_mb"]) == {"w1", "w2"} for s in samples)
    assert 10 < extra["rss_start_mb"] <= extra["rss_max_mb"]
    assert extra["rss_anon_max_mb"] < extra["rss_max_mb"]
    assert extra["rss_growth_after_settle_mb_per_min"] is None
    assert "== soak ==" in bench.stdout and "n/a (run too short)" in bench.stdout
    for service in document["meta"]["services"]:
        assert not Path(f"/proc/{service['pid']}").exists(), f"{service} still runs"
