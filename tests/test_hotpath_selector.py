"""aigateway.hotpath picks one implementation for every hot path, the same one for all."""

from __future__ import annotations

import importlib.machinery
import os
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


# The selector imports the compiled twins in order, the token bucket's first: a finder put
# in front of Python's stands in for that module as a build may leave it.
_STAND_IN = """
import importlib.abc, importlib.util, sys

class StandIn(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "aigateway.hotpath._bucket_c":
            return importlib.util.spec_from_file_location(name, sys.argv[1])
        return None

if sys.argv[1] == "absent":
    sys.modules["aigateway.hotpath._bucket_c"] = None  # as if it were never built
else:
    sys.meta_path.insert(0, StandIn())
from aigateway import hotpath
print(hotpath.IMPLEMENTATION)
"""


def _select_with(stand_in: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AIGATEWAY_NO_EXTENSIONS"}
    return subprocess.run(
        [sys.executable, "-c", _STAND_IN, stand_in],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_an_absent_compiled_module_falls_back_to_the_pure_twins():
    run = _select_with("absent")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["python"]


def test_a_compiled_module_that_is_present_but_broken_fails_loudly(tmp_path):
    broken = tmp_path / f"_bucket_c{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    broken.write_bytes(b"\x7fELF not really a shared object")
    run = _select_with(str(broken))
    assert run.returncode != 0
    assert run.stdout == ""  # never a silent fallback to the pure twins
    assert "ImportError" in run.stderr


def test_a_compiled_module_missing_a_dependency_fails_loudly_naming_it(tmp_path):
    needy = tmp_path / "_bucket_c.py"
    needy.write_text("import aigateway_test_no_such_dependency\n")
    run = _select_with(str(needy))
    assert run.returncode != 0
    assert run.stdout == ""
    assert "No module named 'aigateway_test_no_such_dependency'" in run.stderr
