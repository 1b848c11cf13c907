"""`aigateway bench --profile DIR`: py-spy's raw profile of one gateway worker, summarised."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from aigateway.bench import add_bench_arguments, run_bench
from aigateway.bench.procs import spawned_workers
from aigateway.bench.profile import (
    Stack,
    file_stem,
    function_of,
    is_main_thread,
    parse_raw,
    render_summary,
    summarise,
)
from aigateway.bench.pyspy import Profiler, find_pyspy

# A handmade `py-spy record --format raw --threads` file: 100 samples at 100/s, 80 of
# them on the main thread. handle() recurses once in one stack; a thread without Python
# frames and a line without a count are there too.
RAW = """\
thread (11): MainThread;<module> (x.py:1);run (asyncio/base_events.py:640);handle (aigateway/api/http.py:10);encode (orjson_like/enc.py:5) 30
thread (11): MainThread;<module> (x.py:1);run (asyncio/base_events.py:640);handle (aigateway/api/http.py:12) 20
thread (11): MainThread;<module> (x.py:1);run (asyncio/base_events.py:641);handle (aigateway/api/http.py:10);handle (aigateway/api/http.py:14);lookup (/srv/site-packages/aigateway/cache/store.py:7) 10
thread (11): MainThread;<module> (x.py:1);run (asyncio/base_events.py:640) 20
thread (12): ThreadPoolExecutor-0_0;work (concurrent/futures/thread.py:58) 15
thread (13) 5
a broken line
"""  # noqa: E501


def test_raw_lines_give_the_thread_its_frames_and_the_count() -> None:
    stacks = parse_raw(RAW)
    assert len(stacks) == 6 and sum(s.count for s in stacks) == 100
    first = stacks[0]
    assert first.thread == "thread (11): MainThread" and first.count == 30
    assert first.frames[0] == "<module> (x.py:1)" and first.frames[-1].startswith("encode")
    assert stacks[-1] == Stack("thread (13)", (), 5)
    assert is_main_thread("thread (11): MainThread") and is_main_thread("")
    assert not is_main_thread("thread (12): ThreadPoolExecutor-0_0")
    assert not is_main_thread("thread (13)")
    # without --threads every stack belongs to the one (main) thread
    assert parse_raw("<module> (x.py:1);f (y.py:2) 4") == [
        Stack("", ("<module> (x.py:1)", "f (y.py:2)"), 4)
    ]


def test_a_function_is_its_name_and_file_without_the_line() -> None:
    assert function_of("handle (aigateway/api/http.py:10)") == "handle (aigateway/api/http.py)"
    assert function_of("<module> (<string>:1)") == "<module> (<string>)"
    assert function_of("<native>") == "<native>"
    assert function_of("odd (no line)") == "odd (no line)"


def test_the_summary_counts_the_main_thread_its_self_time_and_our_inclusive_time() -> None:
    summary = summarise(parse_raw(RAW), rate_hz=100, requests=2000, covered=0.5)
    assert (summary.samples, summary.main_samples) == (100, 80)
    assert summary.main_share == pytest.approx(0.8)
    assert summary.main_cpu_s == pytest.approx(0.8)  # 80 samples at 100/s
    assert summary.main_us_per_request == pytest.approx(400.0)  # 0.8 s / 2000 requests
    assert summary.served == 1000  # half the gateway's CPU: half its requests
    assert summary.main_us_per_served == pytest.approx(800.0)
    by_self = {f.function: f for f in summary.by_self}
    assert [f.function for f in summary.by_self] == [
        "encode (orjson_like/enc.py)",
        "handle (aigateway/api/http.py)",
        "run (asyncio/base_events.py)",
        "lookup (/srv/site-packages/aigateway/cache/store.py)",
    ]
    assert by_self["encode (orjson_like/enc.py)"].share == pytest.approx(30 / 80)
    # 30 samples of 10 ms over 1000 requests
    assert by_self["encode (orjson_like/enc.py)"].us_per_request == pytest.approx(300.0)
    inclusive = {f.function: f.samples for f in summary.ours_inclusive}
    # the recursive stack counts once; the other thread's frames never count
    assert inclusive == {
        "handle (aigateway/api/http.py)": 60,
        "lookup (/srv/site-packages/aigateway/cache/store.py)": 10,
    }


def test_without_the_covered_share_figures_are_per_request_of_the_measurement() -> None:
    summary = summarise(parse_raw(RAW), rate_hz=100, requests=2000, top=1)
    assert summary.served is None and summary.main_us_per_served is None
    assert len(summary.by_self) == 1 and summary.by_self[0].us_per_request == 150.0
    empty = summarise([], rate_hz=250, requests=0)
    assert empty.main_share is None and empty.main_us_per_request is None
    assert "(no samples)" in render_summary(empty)


def test_the_summary_text_names_its_figures() -> None:
    summary = summarise(parse_raw(RAW), 100, 2000, covered=0.05, main_thread_cpu_s=0.75)
    text = render_summary(summary, ["py-spy profile of gateway worker 11"])
    assert text.startswith("py-spy profile of gateway worker 11\n")
    assert "samples: 100 at 100/s, 80 on the main thread (80.0%)" in text
    assert "0.80 s of CPU = 400.0 us per request of the measurement (2,000 requests" in text
    assert "the recording saw 5% of the gateway's CPU" in text and "little of the load" in text
    assert "from /proc over the recording: 0.75 s" in text
    assert "top 25 functions by self time (main thread)" in text
    assert "top 25 aigateway functions by inclusive time (main thread)" in text
    assert "handle (aigateway/api/http.py)" in text.split("inclusive time")[1]


def test_profile_files_are_named_after_the_measurement_key() -> None:
    assert file_stem("overhead/gateway/unique/c1/w2/mock0ms") == (
        "overhead_gateway_unique_c1_w2_mock0ms"
    )
    assert file_stem("admission/gateway/open-loop/c1/w2/OPENAI_RPS=100") == (
        "admission_gateway_open-loop_c1_w2_OPENAI_RPS=100"
    )
    assert file_stem("../x y") == "x_y" and file_stem("///") == "profile"


def test_a_repeated_measurement_gets_its_own_profile_file() -> None:
    from aigateway.bench.progress import Progress
    from aigateway.bench.runner import Environment, RunConfig

    env = Environment(RunConfig(wrk="wrk", work_dir=Path()), Progress(1))
    assert env.profile_stem("a/b") == "a_b"
    assert env.profile_stem("a/b") == "a_b.2"
    assert env.profile_stem("a/c") == "a_c"


# --- finding py-spy -----------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aigateway bench")
    add_bench_arguments(parser)
    return parser.parse_args(list(argv))


def test_py_spy_is_found_next_to_the_interpreter_of_a_venv_not_activated(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert find_pyspy() is None
    beside = tmp_path / "py-spy"
    beside.write_text("#!/bin/sh\n")
    beside.chmod(0o755)
    assert find_pyspy() == str(beside)


def test_profile_without_py_spy_stops_before_measuring_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert run_bench(parse("--scenario", "overhead", "--profile", str(tmp_path / "p"))) == 2
    err = capsys.readouterr().err
    assert "--profile needs py-spy" in err and "pip install 'aigateway[profile]'" in err
    assert not (tmp_path / "p").exists()


# --- a real run ---------------------------------------------------------------------------


@pytest.mark.e2e
def test_profile_records_the_gateway_measurement_only(tmp_path: Path) -> None:
    from aigateway.bench.wrk import WrkError, ensure_wrk

    try:
        ensure_wrk()
    except WrkError as exc:
        pytest.skip(f"wrk is not installed: {exc}")
    if find_pyspy() is None:
        pytest.skip("py-spy is not installed (pip install 'aigateway[profile]')")
    out, profiles = tmp_path / "run.json", tmp_path / "profiles"
    started = time.monotonic()
    bench = subprocess.run(
        [sys.executable, "-m", "aigateway.bench", "--scenario", "overhead", "--duration", "2",
         "--warmup", "1", "--retries", "0", "--profile", str(profiles), "--json", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert bench.returncode == 0, bench.stderr  # a failing py-spy never fails the run
    assert time.monotonic() - started < 60
    document = orjson.loads(out.read_bytes())
    rows = {r["target"]: r for r in document["results"]}
    assert set(rows) == {"direct", "passthrough", "gateway"}
    assert "profile" not in rows["direct"] and "profile" not in rows["passthrough"]
    profile = rows["gateway"]["profile"]
    if "error" in profile:
        assert "py-spy failed" in bench.stderr
        pytest.skip(f"py-spy cannot record here: {profile['error']}")
    summary = Path(profile["summary"])
    assert summary == profiles / "overhead_gateway_unique_c1_w2_mock0ms.txt"
    assert Path(profile["raw"]).stat().st_size > 0
    assert f"profile: {summary}" in bench.stderr
    assert profile["main_cpu_us_per_request"] > 0
    text = summary.read_text()
    assert f"gateway worker {profile['worker_pid']}" in text
    ours = text.split("aigateway functions by inclusive time")[1]
    assert "aigateway/" in ours and "(no samples)" not in ours
    for service in document["meta"]["services"]:
        assert not Path(f"/proc/{service['pid']}").exists(), f"{service} still runs"
    assert sorted(p.name for p in profiles.iterdir()) == [summary.with_suffix(".raw").name,
                                                          summary.name]  # fmt: skip


@pytest.fixture
def spawning_server(tmp_path: Path) -> Iterator[int]:
    """A process with one multiprocessing ``spawn`` child, like Granian's workers."""
    script = tmp_path / "server.py"
    script.write_text(
        "import multiprocessing, sys, time\n"
        "if __name__ == '__main__':\n"
        "    child = multiprocessing.get_context('spawn').Process(target=time.sleep, args=(60,))\n"
        "    child.start()\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    # On a loaded machine the child can still be starting: wait until it shows as a worker.
    deadline = time.monotonic() + 10
    while not spawned_workers(process.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    yield process.pid
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


def test_a_failing_py_spy_is_reported_in_the_profile_entry(
    spawning_server: int, tmp_path: Path
) -> None:
    fake = tmp_path / "py-spy"
    fake.write_text("#!/bin/sh\necho 'Error: Operation not permitted (os error 1)'\nexit 1\n")
    fake.chmod(0o755)
    (worker,) = spawned_workers(spawning_server)
    profiler = Profiler(str(fake), spawning_server, 1, tmp_path, "step")
    profiler.tick(0.1)
    assert profiler.process is None  # it waits to see which worker is busy
    profiler.tick(0.6)
    try:
        entry, _ = profiler.finish(requests=100, timeout_s=10)
    finally:
        profiler.stop()
    assert entry["worker_pid"] == str(worker)
    assert entry["error"] == (
        "py-spy exited with code 1: Error: Operation not permitted (os error 1)"
    )
    assert "summary" not in entry and not (tmp_path / "step.txt").exists()


def test_no_worker_or_a_load_too_short_is_reported_too(tmp_path: Path) -> None:
    alone = Profiler("py-spy", os.getpid(), 1, tmp_path, "step")  # pytest spawned no worker
    alone.tick(5.0)
    assert alone.process is None
    assert "no worker process" in alone.finish(requests=1, timeout_s=1)[0]["error"]
