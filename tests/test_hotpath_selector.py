"""aigateway.hotpath picks one implementation for every hot path, the same one for all."""

from __future__ import annotations

import subprocess
import sys

from aigateway import hotpath


def test_every_hot_path_comes_from_the_selected_implementation():
    selected = hotpath.load(hotpath.IMPLEMENTATION)
    names = [name for name in vars(selected) if not name.startswith("__")]
    assert {"cache_key", "compute_ttl", "PriorityQueue", "TokenBucket", "SharedStats"} <= set(names)
    for name in names:
        if name != "IMPLEMENTATION":
            assert getattr(hotpath, name) is getattr(selected, name), name


def test_the_environment_variable_forces_the_pure_twins():
    code = "from aigateway import hotpath; print(hotpath.IMPLEMENTATION, hotpath.TokenBucket)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"AIGATEWAY_NO_EXTENSIONS": "1", "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split()[0] == "python"
    assert "_bucket_py" in out.stdout


def test_shared_data_types_are_the_same_objects_in_both_twins(hotpath_impl):
    pure = hotpath.load("python")
    for name in ("TTLPolicy", "StatsSchema", "Histogram", "StatsSnapshot", "EXCLUDED_FIELDS"):
        assert getattr(hotpath_impl, name) is getattr(pure, name)
