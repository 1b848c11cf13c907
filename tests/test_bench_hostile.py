"""The hostile scenario: normal load on the gateway, quiet and then while an attacker holds
idle and slowloris connections and a slow reader drains a stream; its goals compare the
two runs and bound each worker's memory."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from aigateway.bench import add_bench_arguments
from aigateway.bench.command import chosen_scenarios
from aigateway.bench.derive import goals
from aigateway.bench.hostile import hostile_goals
from aigateway.bench.report import render_results
from aigateway.bench.scenarios import DEFAULT_SCENARIOS, Hostile, PlanOptions, build_plan
from aigateway.bench.wrk import WrkError, ensure_wrk


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aigateway bench")
    add_bench_arguments(parser)
    return parser.parse_args(list(argv))


def test_hostile_runs_only_when_named() -> None:
    assert "hostile" not in DEFAULT_SCENARIOS
    assert chosen_scenarios(["hostile"]) == ("hostile",)


def test_the_attack_defaults_to_ten_thousand_idle_and_two_thousand_slowloris() -> None:
    args = parse()
    assert (args.hostile_idle, args.hostile_slowloris, args.hostile_slow_readers) == (
        10_000, 2_000, 1,
    )  # fmt: skip
    args = parse("--hostile-idle", "0", "--hostile-slowloris", "5", "--hostile-slow-readers", "2")
    assert (args.hostile_idle, args.hostile_slowloris, args.hostile_slow_readers) == (0, 5, 2)
    with pytest.raises(SystemExit):
        parse("--hostile-idle", "-1")


def test_the_same_load_runs_quiet_first_then_under_attack_on_the_same_gateway() -> None:
    quiet, attacked = build_plan(PlanOptions(scenarios=("hostile",), hostile=Hostile(7, 3, 0)))
    assert quiet.hostile is None and attacked.hostile == Hostile(7, 3, 0)
    same = ("target", "concurrency", "workers", "mock", "load", "gateway_env")
    assert all(getattr(quiet, name) == getattr(attacked, name) for name in same)
    assert quiet.key != attacked.key and "idle7+slow3" in attacked.key


def _row(
    p99: float, errors: int = 0, attacker: dict[str, Any] | None = None, rss: float = 60.0
) -> dict[str, Any]:
    return {
        "scenario": "hostile", "target": "gateway", "concurrency": 16, "workers": 2,
        "mock_latency_ms": 20.0, "mock_chunk_delay_ms": 0.0, "load": "unique", "label": "",
        "rps": 500.0, "p50_ms": p99 / 2, "p90_ms": p99 / 1.5, "p99_ms": p99, "errors": errors,
        "requests": 1000, "provider_calls": 1000, "cpu_pct": {"target": 50.0},
        "other_pct": 0.0, "machine_busy_pct": 30.0, "rss_per_worker_mb": rss,
        "extra": {"attacker": attacker, "rss_max_mb": rss + 80, "rss_anon_max_mb": rss,
                  "rss_workers": {"w1": {"max_mb": rss + 80, "anon_max_mb": rss},
                                  "w2": {"max_mb": rss + 79, "anon_max_mb": rss - 1}}},
    }  # fmt: skip


ATTACK = {"idle": 100, "slowloris": 10, "fewest_open": 110, "closed_by_server": 4,
          "slow_bytes": 4096}  # fmt: skip


def test_the_goals_compare_p99_with_the_quiet_run_and_bound_errors_and_memory() -> None:
    met = hostile_goals([_row(40.0), _row(70.0, attacker=ATTACK)])
    assert [g["status"] for g in met] == ["met", "met", "met"]
    assert "1.75x" in met[0]["measured"]
    assert met[2]["measured"] == "60.0 MB (RSS with shared cache pages 140.0)"
    missed = hostile_goals([_row(40.0), _row(90.0, errors=3, attacker=ATTACK, rss=151.0)])
    assert [g["status"] for g in missed] == ["MISSED", "MISSED", "MISSED"]
    assert hostile_goals([_row(40.0)]) == []  # no attacked run: nothing to judge


def test_the_table_shows_what_was_held_and_each_workers_memory() -> None:
    text = render_results([_row(40.0), _row(70.0, attacker=ATTACK)])
    assert "== hostile ==" in text and "quiet" in text and "100+10" in text
    assert "60/59" in text and "140/139" in text  # private, and with shared cache pages


def test_the_hostile_goals_are_among_the_runs_goals() -> None:
    rows = [_row(40.0), _row(70.0, attacker=ATTACK)]
    assert sum(g["goal"].startswith("hostile: ") for g in goals(rows, [])) == 3


# --- a real run ---------------------------------------------------------------------------


def wrk_or_skip() -> str:
    try:
        return ensure_wrk()
    except WrkError as exc:
        pytest.skip(f"wrk is not installed and cannot be installed here: {exc}")


@pytest.mark.e2e
def test_smoke_hostile_runs_briefly_and_stops_everything(tmp_path: Path) -> None:
    wrk_or_skip()
    out = tmp_path / "run.json"
    started = time.monotonic()
    bench = subprocess.Popen(
        [sys.executable, "-m", "aigateway.bench", "--scenario", "hostile", "--duration", "2",
         "--warmup", "0", "--retries", "0", "--max-other-cpu", "0", "--hostile-idle", "300",
         "--hostile-slowloris", "50", "--json", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    stdout, stderr = bench.communicate(timeout=120)
    assert bench.returncode == 0, stderr
    assert time.monotonic() - started < 60
    document = orjson.loads(out.read_bytes())
    quiet, attacked = document["results"]
    assert quiet["extra"].get("attacker") is None
    attack = attacked["extra"]["attacker"]
    assert (attack["idle"], attack["slowloris"], attack["slow_readers"]) == (300, 50, 1)
    assert attack["fewest_open"] >= 350 and attack["connect_errors"] == 0
    assert attack["slow_streams"] >= 1 and attack["slow_bytes"] > 0
    for row in (quiet, attacked):
        assert row["errors"] == 0 and row["requests"] > 0
        assert len(row["extra"]["rss_workers"]) == 2
        assert row["extra"]["rss_max_mb"] >= row["extra"]["rss_anon_max_mb"] > 10
    assert "attacker" in attacked["cpu_s"]
    assert "hostile: normal clients' p99" in stdout and "== hostile ==" in stdout
    for service in document["meta"]["services"]:
        assert not Path(f"/proc/{service['pid']}").exists(), f"{service} still runs"
    assert not _attackers_running(), "the attacker still runs"


def _attackers_running() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"aigateway.bench.attacker" in cmdline and int(entry) != os.getpid():
                found.append(int(entry))
    return found
