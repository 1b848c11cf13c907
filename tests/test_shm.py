"""aigateway.shm: the node's shared-memory segment, with real processes.

The main process creates the segment; workers find it through AIGATEWAY_SHM and attach;
the creator unlinks it; a crashed server's segment is cleaned on the next start.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from aigateway import hotpath, shm
from aigateway.config import Settings
from aigateway.stats.registry import stats_schema

STATS = hotpath.StatsSchema(counters=("requests",), gauges=("in_flight",))
LAYOUT = shm.NodeLayout(
    buckets=(shm.BucketSpec("openai", 50.0, 10.0), shm.BucketSpec("google", 30.0, 30.0)),
    stats=STATS,
    stats_slots=4,
)


@pytest.fixture
def segment(request: pytest.FixtureRequest) -> Iterator[shm.Segment]:
    name = f"{shm.segment_name()}.test-{request.node.name}"[:200].replace("[", "-").replace("]", "")
    created = shm.create_segment(LAYOUT, name)
    yield created
    created.close()
    created.unlink()


def run_worker(code: str, segment_name: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new Python process that finds the segment as a worker does."""
    env = {**os.environ, shm.SHM_ENV: segment_name}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_worker_process_attaches_through_the_environment(segment):
    worker = run_worker(
        """
        from aigateway import shm
        segment = shm.attach_segment()
        bucket = segment.bucket("openai")
        stats = segment.stats()
        print(sum(bucket.try_acquire(now=1000.0) == 0.0 for _ in range(4)), stats.slot)
        stats.incr(stats.schema.counter("requests"), 5)
        segment.close()
        """,
        segment.name,
    )
    assert worker.returncode == 0, worker.stderr
    assert worker.stdout.split() == ["4", "0"]
    assert worker.stderr == ""  # no resource-tracker warning at exit
    # The worker's exit removed nothing: the segment and its values are still there.
    assert os.path.exists(segment.path)
    assert segment.bucket("openai").available(now=1000.0) == pytest.approx(6)
    stats = segment.stats()
    assert stats.snapshot().counters == {"requests": 5}
    assert stats.slot == 0  # the worker gave its slot back, keeping its counts


def test_the_segment_lists_what_it_holds(segment):
    assert segment.bucket_names == ("openai", "google")
    assert segment.stats_schema == STATS
    assert segment.creator_pid == os.getpid()
    assert segment.size % 64 == 0
    assert segment.bucket("google").rate_per_s == 30.0
    with pytest.raises(KeyError, match="no bucket named 'anthropic'"):
        segment.bucket("anthropic")
    with pytest.raises(ValueError, match="another schema"):
        segment.stats(hotpath.StatsSchema(counters=("other",)))
    assert stat.S_IMODE(os.stat(segment.path).st_mode) == 0o600


def test_a_segment_without_stats(tmp_path):
    layout = shm.NodeLayout(buckets=(shm.BucketSpec("only", 1.0, 1.0),))
    segment = shm.create_segment(layout, f"{shm.segment_name()}.test-no-stats")
    try:
        assert segment.stats_schema is None
        with pytest.raises(LookupError):
            segment.stats()
    finally:
        segment.close()
        segment.unlink()


def test_closing_the_segment_closes_what_it_handed_out(segment):
    bucket = segment.bucket("openai")
    stats = segment.stats()
    segment.close()
    with pytest.raises(ValueError, match="closed"):
        bucket.try_acquire()
    with pytest.raises(ValueError, match="closed"):
        stats.incr(0)


def test_closing_while_other_objects_use_the_mapping_is_an_error(segment):
    bucket = hotpath.TokenBucket.attach(segment.bucket_region("openai"))
    with pytest.raises(BufferError, match="still in use"):
        segment.close()
    bucket.close()
    segment.close()


def test_unlink_removes_the_segment_and_the_pure_twins_lock_files(segment):
    bucket = hotpath.load("python").TokenBucket.attach(segment.bucket_region("openai"))
    assert bucket.try_acquire(now=1000.0) == 0.0
    assert os.path.exists(segment.lock_paths[0])  # the pure twin's flock file
    bucket.close()
    segment.unlink()
    assert not os.path.exists(segment.path)
    assert not any(os.path.exists(path) for path in segment.lock_paths)
    segment.unlink()  # twice is fine


def test_attach_errors(segment, monkeypatch, tmp_path):
    monkeypatch.delenv(shm.SHM_ENV, raising=False)
    with pytest.raises(LookupError, match=shm.SHM_ENV):
        shm.attach_segment()
    with pytest.raises(ValueError, match="invalid"):
        shm.attach_segment("../etc/passwd")
    with pytest.raises(FileNotFoundError):
        shm.attach_segment(f"{shm.segment_name()}.test-missing")
    junk = f"{shm.segment_name()}.test-junk"
    with open(os.path.join(shm.SHM_DIR, junk), "wb") as file:
        file.write(b"x" * 100)
    try:
        with pytest.raises(ValueError, match="not an aigateway"):
            shm.attach_segment(junk)
    finally:
        os.unlink(os.path.join(shm.SHM_DIR, junk))
    attached = shm.attach_segment(segment.name)
    assert attached.bucket_names == segment.bucket_names
    attached.close()


def test_a_leftover_under_our_own_name_is_replaced():
    first = shm.create_segment(LAYOUT)
    assert first.name == shm.segment_name()
    pure = hotpath.load("python").TokenBucket.attach(first.bucket_region("openai"))
    pure.try_acquire(5, now=1000.0)
    pure.close()
    assert os.path.exists(first.lock_paths[0])
    second = shm.create_segment(LAYOUT)  # e.g. a restarted container's pid 1
    try:
        assert not os.path.exists(first.lock_paths[0])  # the leftover's lock files go too
        assert second.bucket("openai").available(now=1000.0) == 10.0
        attached = shm.attach_segment(second.name)
        assert attached.size == second.size
        attached.close()
    finally:
        first.close()
        second.close()
        second.unlink()


def test_another_name_is_never_replaced(segment):
    with pytest.raises(FileExistsError):
        shm.create_segment(LAYOUT, segment.name)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_clean_stale_segments_removes_only_dead_servers_files(tmp_path):
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        names = {
            f"aigateway-{dead}": False,
            f"aigateway-{dead}.lock-00000000000000ff": False,
            f"aigateway-{dead}.test-x": False,
            f"aigateway-{os.getpid()}": True,
            f"aigateway-{live.pid}": True,
            f"aigateway-{live.pid}.lock-0000000000000001": True,
            "aigateway-notapid": True,
            "other-123": True,
        }
        for name in names:
            (tmp_path / name).write_bytes(b"")
        removed = shm.clean_stale_segments(str(tmp_path))
    finally:
        live.kill()
        live.wait()
    assert sorted(removed) == sorted(str(tmp_path / n) for n, kept in names.items() if not kept)
    assert sorted(os.listdir(tmp_path)) == sorted(n for n, kept in names.items() if kept)


def test_a_crashed_servers_segment_is_cleaned_on_the_next_start(segment):
    crashed = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import os, sys
                from aigateway import hotpath, shm
                segment = shm.create_segment(shm.NodeLayout(buckets=(shm.BucketSpec("x", 1, 1),)))
                hotpath.load("python").TokenBucket.attach(segment.bucket_region("x")).try_acquire()
                print(segment.path, *segment.lock_paths, flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert crashed.stdout is not None
    paths = crashed.stdout.readline().split()
    assert all(os.path.exists(path) for path in paths)
    os.kill(crashed.pid, signal.SIGKILL)
    crashed.wait()
    crashed.stdout.close()
    assert crashed.stdin is not None
    crashed.stdin.close()
    assert all(os.path.exists(path) for path in paths)  # left behind by the crash
    removed = shm.clean_stale_segments()
    assert set(paths) <= set(removed)
    assert not any(os.path.exists(path) for path in paths)
    assert os.path.exists(segment.path)  # ours is alive: never touched


def test_the_gateway_layout_has_a_bucket_per_provider_and_slots_to_spare():
    settings = Settings(workers=3)
    layout = shm.node_layout(settings)
    assert [(b.name, b.rate_per_s, b.burst) for b in layout.buckets] == [
        ("openai", 50.0, 50.0),
        ("google", 30.0, 30.0),
        ("anthropic", 50.0, 50.0),
    ]
    assert layout.stats == stats_schema(("openai", "google", "anthropic"))
    assert layout.stats_slots == 8
    segment = shm.create_segment(layout, f"{shm.segment_name()}.test-gateway")
    try:
        assert segment.bucket_names == ("openai", "google", "anthropic")
        assert segment.stats().snapshot().counters["requests"] == 0
    finally:
        segment.close()
        segment.unlink()


def test_bad_layouts_are_rejected():
    with pytest.raises(ValueError, match="unique"):
        shm.NodeLayout(buckets=(shm.BucketSpec("a", 1, 1), shm.BucketSpec("a", 2, 2)))
    with pytest.raises(ValueError, match="slot"):
        shm.NodeLayout(stats=STATS, stats_slots=0)
    with pytest.raises(ValueError, match="invalid"):
        shm.create_segment(LAYOUT, "bad/name")
