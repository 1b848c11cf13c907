"""compute_ttl on realistic chat bodies, for each twin.

Run: ``pytest benchmarks/bench_hotpath_ttl.py --benchmark-only``.
"""

from __future__ import annotations

import types

import pytest

from bench_hotpath_cache_key import BODIES


@pytest.mark.parametrize("size", BODIES)
def test_compute_ttl(benchmark, hotpath_impl: types.ModuleType, size: str) -> None:
    benchmark.group = f"compute_ttl: {size}"
    assert benchmark(hotpath_impl.compute_ttl, BODIES[size], "openai", 1800.0) > 0
