"""``python -m aigateway.bench [options]``: the same as ``aigateway bench``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aigateway.bench.command import add_bench_arguments, run_bench


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aigateway.bench",
        description="Measure the gateway against its baselines under load (see "
        "docs/benchmarks.md).",
    )
    add_bench_arguments(parser)
    return run_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
