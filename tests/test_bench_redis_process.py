"""The bench's scratch ``redis-server`` cleans up only what it made itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aigateway.bench.cluster_demo import RedisProcess


def _idle_process() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_stopping_leaves_a_directory_it_was_handed(tmp_path: Path) -> None:
    kept = tmp_path / "someone-elses"
    kept.mkdir()
    (kept / "precious").write_text("keep me")
    RedisProcess(_idle_process(), 0, kept).stop()
    assert (kept / "precious").read_text() == "keep me"


@pytest.mark.e2e
def test_stopping_a_server_it_started_removes_its_own_directory() -> None:
    redis = RedisProcess.start()
    assert redis.directory.is_dir()
    redis.stop()
    assert not redis.alive() and not redis.directory.exists()
