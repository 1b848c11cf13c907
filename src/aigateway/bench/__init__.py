"""``aigateway bench``: load scenarios against the gateway and its baselines.

It starts what it measures (the bundled mock provider, the gateway, the passthrough and
constant baselines) on free loopback ports, drives them with wrk (and a small asyncio
client for streams and the replayed trace), records throughput, latency percentiles,
errors, provider calls, CPU and memory, and stops everything it started. See
``docs/benchmarks.md``.

This package is cheap to import: the heavy modules load when a run starts.
"""

from __future__ import annotations

from aigateway.bench.command import add_bench_arguments, run_bench

__all__ = ["add_bench_arguments", "run_bench"]
