"""The cluster scenario: two gateway nodes and one Redis under a provider limit and on the
trace, and one node with Redis against the same node without it; its figures (the
provider's excess over the limit, Redis commands by class, cross-node hits) and goals."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from aigateway.bench import add_bench_arguments
from aigateway.bench.cluster import cluster_derived, cluster_goals, largest_excess
from aigateway.bench.command import chosen_scenarios
from aigateway.bench.derive import derive, goals
from aigateway.bench.loadclient import RepeatTracker, prompt_identity
from aigateway.bench.redis_counters import (
    CommandTally,
    commands_between,
    key_class,
    parse_commandstats,
    parse_monitor_line,
)
from aigateway.bench.report import render_results
from aigateway.bench.scenarios import DEFAULT_SCENARIOS, PlanOptions, build_plan
from aigateway.bench.wrk import WrkError, ensure_wrk
from aigateway.cluster.keys import Keys


def parse(*argv: str) -> Any:
    import argparse

    parser = argparse.ArgumentParser(prog="aigateway bench")
    add_bench_arguments(parser)
    return parser.parse_args(list(argv))


# --- the plan -----------------------------------------------------------------------------


def test_cluster_runs_only_when_named() -> None:
    assert "cluster" not in DEFAULT_SCENARIOS
    assert chosen_scenarios(["cluster"]) == ("cluster",)
    assert parse().cluster_duration == 30 and parse("--cluster-duration", "5").cluster_duration == 5


def test_two_nodes_go_over_the_limit_replay_the_trace_then_pairs_with_and_without_redis() -> None:
    steps = build_plan(PlanOptions(scenarios=("cluster",)))
    limit, trace, *pairs = steps
    assert (limit.target, limit.nodes, limit.load, limit.duration_s) == (
        "cluster",
        2,
        "open-loop",
        30,
    )
    assert limit.provider_rps == 100 and limit.offered_rps == 250  # over both nodes' limits
    assert limit.mock.latency_ms == 20 and "n2/" in limit.key
    assert (trace.target, trace.nodes, trace.load, trace.concurrency) == ("cluster", 2, "trace", 16)
    assert [(s.target, s.load, s.concurrency) for s in pairs] == [
        ("gateway", "unique", 1), ("gateway+redis", "unique", 1),
        ("gateway", "unique", 16), ("gateway+redis", "unique", 16),
        ("gateway", "identical", 16), ("gateway+redis", "identical", 16),
    ]  # fmt: skip
    assert len({s.key for s in steps}) == len(steps)
    short = build_plan(PlanOptions(scenarios=("cluster",), cluster_duration_s=5))
    assert short[0].duration_s == 5 and short[1].duration_s == 0  # the rest take --duration


# --- figures ------------------------------------------------------------------------------


def test_the_excess_is_the_most_calls_beyond_the_rate_in_any_window() -> None:
    assert largest_excess([], 10.0) is None
    assert largest_excess([5.0], 10.0) == 1
    # a burst of 10 at once, then the rate (10/s) for 5 s: never more than the burst
    calls = [0.0] * 10 + [0.1 * i for i in range(1, 51)]
    assert largest_excess(calls, 10.0) == pytest.approx(10.0)
    # twice the rate for 5 s: the excess grows by the rate each second
    twice = [0.05 * i for i in range(100)]
    assert largest_excess(twice, 10.0) == pytest.approx(100 - 10 * 4.95)


def test_monitor_lines_are_split_into_unescaped_arguments() -> None:
    line = rb'+1796656655.7 [0 127.0.0.1:43654] "SET" "k" "x y\"z\\\x41"'
    assert parse_monitor_line(line) == ("127.0.0.1:43654", [b"SET", b"k", b'x y"z\\A'])
    assert parse_monitor_line(b'+1.0 [0 lua] "get" "k"') == ("lua", [b"get", b"k"])
    assert parse_monitor_line(b"+OK") is None


def test_commands_are_classed_by_the_first_gateway_key_they_name() -> None:
    keys = Keys("bench")
    assert key_class([b"EVALSHA", b"ab", b"1", b"{aigw:bench}:limit:openai"], keys) == "limits"
    assert key_class([b"EVALSHA", b"ab", b"1", b"{aigw:bench}:nodes"], keys) == "membership"
    assert key_class([b"GET", keys.cache_entry(b"\x01").encode()], keys) == "cache"
    assert key_class([b"EVALSHA", b"ab", b"1", keys.in_flight(b"\x01").encode()], keys) == "cache"
    assert key_class([b"GET", b"{aigw:bench}:pause:openai"], keys) == "other coordination"
    assert key_class([b"SCRIPT", b"LOAD", b"return 1"], keys) == "other"
    assert key_class([b"GET", b"{aigw:other}:limit:openai"], keys) == "other"


def test_a_scripts_own_commands_count_in_its_class_and_the_bench_s_own_not_at_all() -> None:
    tally = CommandTally(Keys("bench"))
    for line in (
        b'+1.0 [0 127.0.0.1:1] "EVALSHA" "ab" "1" "{aigw:bench}:limit:openai"',
        b'+1.0 [0 lua] "hget" "{aigw:bench}:limit:openai" "tat"',
        b'+1.0 [0 lua] "hset" "{aigw:bench}:limit:openai" "tat" "5"',
        b'+1.1 [0 127.0.0.1:2] "GET" "aigw:bench:c:{01}"',
        b'+1.2 [0 127.0.0.1:3] "INFO" "commandstats"',
    ):
        tally.feed(line)
    summary = tally.summary()
    assert summary["sent"] == {"limits": 1, "cache": 1, "membership": 0,
                               "other coordination": 0, "other": 0}  # fmt: skip
    assert summary["run"]["limits"] == 3 and summary["run"]["cache"] == 1
    assert summary["sent_by_command"] == {"evalsha": 1, "get": 1}


def test_redis_counters_are_read_by_command_and_differenced() -> None:
    text = "# Commandstats\r\ncmdstat_get:calls=4,usec=9\r\ncmdstat_script|load:calls=1,usec=2\r\n"
    before = parse_commandstats(text)
    assert before == {"get": 4, "script|load": 1}
    after = {"get": 10, "script|load": 1, "evalsha": 3, "info": 7}
    assert commands_between(before, after) == {"get": 6, "evalsha": 3}


def test_repeats_are_counted_by_where_the_prompt_was_sent_before() -> None:
    tracker = RepeatTracker()
    plain = prompt_identity(b'{"model":"m","messages":[],"stream":false}')
    assert plain == prompt_identity(b'{"stream":true,"model":"m","messages":[]}')
    kinds = [tracker.sent(plain, 0), tracker.sent(plain, 0), tracker.sent(plain, 1)]
    assert kinds == ["first", "same_node", "cross_node"]
    tracker.answered("cross_node", True)
    assert tracker.counts["cross_node"] == {"requests": 1, "hits": 1}


# --- goals and report ---------------------------------------------------------------------


def _row(target: str, load: str, c: int, **extra: Any) -> dict[str, Any]:
    nodes = 2 if target == "cluster" else 1
    measured = {"requests": extra.pop("requests", 1000), "window_s": extra.pop("window_s", 1.0)}
    return {**measured,
        "scenario": "cluster", "target": target, "concurrency": c, "workers": 2,
        "nodes": nodes, "mock_latency_ms": 0.0, "mock_chunk_delay_ms": 0.0, "load": load,
        "label": "", "rps": extra.pop("rps", 1000.0), "p50_ms": extra.pop("p50", 1.0),
        "p90_ms": 2.0, "p99_ms": 3.0, "errors": 0, "provider_calls": 500,
        "cpu_pct": {"target": 50.0, "redis": 3.0}, "other_pct": 0.0, "machine_busy_pct": 40.0,
        "rss_per_worker_mb": 70.0, "extra": extra,
    }  # fmt: skip


def _redis(limits: int) -> dict[str, Any]:
    sent = {"limits": limits, "cache": 900, "membership": 40, "other coordination": 0,
            "other": 0}  # fmt: skip
    return {"sent": sent, "sent_per_request": 0.94 + limits / 1000,
            "limit_commands_per_request": limits / 1000, "run_per_request": 2.0,
            "sent_by_command": {"evalsha": 940}, "commands_run": 2000}  # fmt: skip


def _run(limits: int, observed: float, excess: float, cross: float) -> list[dict[str, Any]]:
    return [
        _row("cluster", "open-loop", 1, provider_limit_rps=100.0, provider_observed_rps=observed,
             provider_rate_window_s=[6.0, 24.0], provider_excess_calls=excess,
             redis=_redis(limits)),
        _row("cluster", "trace", 16, hit_rate=0.8, same_node_hit_rate=0.9,
             cross_node_hit_rate=cross, redis=_redis(limits),
             repeats={"first": {"requests": 10, "hits": 0}}),
        _row("gateway", "unique", 1, p50=1.00), _row("gateway+redis", "unique", 1, p50=1.08),
        _row("gateway", "unique", 16, rps=1000.0),
        _row("gateway+redis", "unique", 16, rps=920.0, redis={"run_per_request": 1.5}),
        _row("gateway", "identical", 16, rps=9000.0),
        _row("gateway+redis", "identical", 16, rps=8800.0, requests=40_000, window_s=5.0,
             redis={"run_per_request": 0.06, "sent": {**_redis(0)["sent"], "cache": 2}}),
    ]  # fmt: skip


def test_each_goal_of_the_issue_is_stated_and_judged() -> None:
    met = cluster_goals(_run(limits=20, observed=101.0, excess=100.0, cross=0.85))
    assert [g["status"] for g in met if not g["status"].startswith("n/a")] == ["met"] * (
        len(met) - 2
    )
    assert [g["goal"].removeprefix("cluster: ") for g in met] == [
        "provider rate within 2% of the limit (100/s) over both nodes",
        "provider never above the limit + one second's burst",
        "Redis commands for limits per request (over the limit)",
        "cross-node hit rate on the trace (vs the same-node rate)",
        "Redis commands for limits per request (on the trace)",
        "misses with Redis, added p50 at 1 connection",
        "misses with Redis, req/s vs without (c=16)",
        "hits with Redis, req/s vs without (c=16)",
        "hits: Redis commands on the request path (entries and claims) per request",
        "hits: the node agent's commands (heartbeat, leases, pauses, health, settings)",
        "hits: every command Redis ran per request, the agent's and scripts' own included",
    ]
    assert [g["status"] for g in met[-3:]] == [
        "met", "n/a (by the second, not per request)", "n/a (not a goal: see the two above)"
    ]  # fmt: skip
    assert met[-3]["measured"] == "0.0001 (2 commands, 40,000 requests)"
    assert met[-2]["measured"] == "8.0/s"  # 40 heartbeats in 5 s: not the hits'
    assert met[0]["measured"] == "101.0/s (1.0% off, 18 s)"


def test_per_node_limits_and_no_shared_tier_show_as_missed_and_no_lease_as_not_judged() -> None:
    today = cluster_goals(_run(limits=0, observed=200.0, excess=3100.0, cross=0.1))
    status = {g["goal"].removeprefix("cluster: "): g["status"] for g in today}
    assert status["provider rate within 2% of the limit (100/s) over both nodes"] == "MISSED"
    assert status["provider never above the limit + one second's burst"] == "MISSED"
    assert status["Redis commands for limits per request (over the limit)"] == (
        "n/a (no limit command seen: limits per node)"
    )
    assert status["cross-node hit rate on the trace (vs the same-node rate)"] == "MISSED"


def test_the_pairs_and_two_node_figures_are_derived_and_among_the_runs_goals() -> None:
    rows = _run(limits=20, observed=101.0, excess=100.0, cross=0.85)
    values = {d["key"]: d["value"] for d in cluster_derived(rows)}
    assert values["cluster/unique/c16/w2/mock0ms/rps-vs-without-redis"] == pytest.approx(0.92)
    assert values["cluster/unique/c1/w2/mock0ms/added-p50-with-redis"] == pytest.approx(0.08)
    assert values["cluster/open-loop/n2/c1/w2/mock0ms/provider-rate-vs-limit"] == 1.01
    assert values["cluster/trace/n2/c16/w2/mock0ms/cross-node-hit-rate"] == 0.85
    derived = derive(rows)
    assert sum(d["key"].startswith("cluster/") for d in derived) == len(values)
    assert sum(g["goal"].startswith("cluster: ") for g in goals(rows, derived)) == 11


def test_the_table_shows_both_groups_and_the_redis_commands_by_class() -> None:
    text = render_results(_run(limits=20, observed=101.0, excess=100.0, cross=0.85))
    assert "== cluster ==" in text and "x-node hit" in text and "redis run/req" in text
    assert "Redis commands sent, by key: limits 20, cache 900, membership 40" in text
    assert "gateway+redis" in text


# --- a real run ---------------------------------------------------------------------------


@pytest.mark.e2e
def test_smoke_cluster_runs_briefly_and_stops_everything(tmp_path: Path) -> None:
    try:
        ensure_wrk()
    except WrkError as exc:
        pytest.skip(f"wrk is not installed and cannot be installed here: {exc}")
    out = tmp_path / "run.json"
    started = time.monotonic()
    bench = subprocess.run(
        [sys.executable, "-m", "aigateway.bench", "--scenario", "cluster", "--duration", "1",
         "--cluster-duration", "2", "--warmup", "0", "--retries", "0", "--max-other-cpu", "0",
         "--mock-latency-ms", "0", "--concurrency", "2", "--json", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=110,
    )  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    assert time.monotonic() - started < 100
    document = orjson.loads(out.read_bytes())
    rows = document["results"]
    assert [(r["target"], r["load"]) for r in rows][:2] == [
        ("cluster", "open-loop"), ("cluster", "trace"),
    ]  # fmt: skip
    assert len(rows) == 6
    limit, trace = rows[0], rows[1]
    assert limit["nodes"] == 2 and limit["extra"]["nodes"] == 2 and trace["extra"]["nodes"] == 2
    assert limit["extra"]["provider_excess_calls"] is not None
    assert limit["extra"]["redis"]["sent"]["membership"] > 0  # heartbeats seen by MONITOR
    assert trace["extra"]["repeats"]["same_node"]["requests"] > 0
    for row in rows[2:]:
        assert row["errors"] == 0 and row["requests"] > 0
        assert ("redis" in row["extra"]) == (row["target"] == "gateway+redis")
    assert "cluster: provider rate within 2%" in bench.stdout
    assert any(s["name"] == "redis" for s in document["meta"]["services"])
    for service in document["meta"]["services"]:
        assert not Path(f"/proc/{service['pid']}").exists(), f"{service} still runs"
