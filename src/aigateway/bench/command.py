"""``aigateway bench``: its options (:func:`add_bench_arguments`) and its run (:func:`run_bench`).

Exit codes: 0 done; 1 a measurement failed (a process did not start, wrk failed); 2 bad
options, an unreadable ``--compare`` file, missing wrk, matplotlib or py-spy; 3 a goal figure
regressed beyond ``--fail-if-worse``; 130 interrupted (what was measured until then is still
printed and saved).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from aigateway.bench.scenarios import (
    ADMISSION_DURATION_S,
    CLUSTER_DURATION_S,
    DEFAULT_SCENARIOS,
    HOSTILE_IDLE,
    HOSTILE_SLOW_READERS,
    HOSTILE_SLOWLORIS,
    OPT_IN_SCENARIOS,
    SCENARIOS,
    SOAK_DURATION_S,
)

SCHEMA = 1
INTERRUPTED = "interrupted"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1000:
        raise argparse.ArgumentTypeError(f"must be a percentage above 0, got {value:g}")
    return value


def _non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else _positive_int(text)


def _int_list(text: str) -> list[int]:
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected N or N,N,...: {text!r}")
    return [_positive_int(part) for part in parts]


def _ms_list(text: str) -> list[float]:
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of milliseconds: {part!r}") from None
        if not 0 <= value < 60_000:
            raise argparse.ArgumentTypeError(f"must be within 0..60000 ms, got {part!r}")
        values.append(value)
    return values


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``aigateway bench`` to ``parser``."""
    parser.add_argument(
        "--scenario",
        action="append",
        choices=(*SCENARIOS, "all"),
        metavar="NAME",
        help=f"scenario to run, repeatable: {', '.join(SCENARIOS)} (default: all, which "
        f"leaves out the long {', '.join(OPT_IN_SCENARIOS)})",
    )
    parser.add_argument(
        "--duration",
        type=_positive_int,
        default=10,
        metavar="S",
        help="seconds of load per measurement (default: 10)",
    )
    parser.add_argument(
        "--concurrency",
        type=_int_list,
        action="append",
        metavar="N[,N...]",
        help="connections per measurement, replacing every scenario's list but overhead's "
        "(always 1); repeatable or comma-separated",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=2,
        help="worker processes of the gateway and the baselines (default: 2; the workers "
        "scenario uses 1, 2 and 4)",
    )
    parser.add_argument(
        "--mock-latency-ms",
        type=_ms_list,
        action="append",
        metavar="MS[,MS...]",
        help="mock provider latency, replacing every scenario's (default: 0, and 0 and 50 "
        "for miss-frontier)",
    )
    parser.add_argument(
        "--upstream-client",
        choices=("aiohttp", "httpx"),
        default="aiohttp",
        help="provider HTTP client of the gateway and the passthrough baseline",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="save every figure as JSON")
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="OLD.json",
        help="show the change of every figure against an earlier --json file",
    )
    parser.add_argument(
        "--fail-if-worse",
        type=_percent,
        metavar="PCT",
        help="with --compare: exit 3 when a goal figure (ratios to the floors, added latency, "
        "the trace's req/s, memory) is worse than the earlier run by more than PCT%%",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help="draw latency against throughput per target (needs matplotlib)",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="measure nothing: print (and compare, plot) an earlier --json file",
    )
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument(
        "--warmup",
        type=_non_negative_int,
        default=1,
        metavar="S",
        help="seconds of warm-up load before each measurement (default: 1)",
    )
    parser.add_argument(
        "--wrk-threads", type=_positive_int, default=2, help="wrk threads (default: 2)"
    )
    parser.add_argument(
        "--max-other-cpu",
        type=float,
        default=25.0,
        metavar="PCT",
        help="wait for a quiet machine before each measurement and repeat one during which "
        "processes outside the bench used more than PCT%% of a core (default: 25; 0: never)",
    )
    parser.add_argument(
        "--retries",
        type=_non_negative_int,
        default=1,
        help="repetitions of a disturbed measurement at most (default: 1)",
    )
    parser.add_argument(
        "--trace-seed", type=int, default=8, help="seed of the synthetic trace (default: 8)"
    )
    parser.add_argument(
        "--soak-duration",
        type=_positive_int,
        default=SOAK_DURATION_S,
        metavar="S",
        help=f"seconds of load of the soak scenario (default: {SOAK_DURATION_S})",
    )
    parser.add_argument(
        "--admission-duration",
        type=_positive_int,
        default=ADMISSION_DURATION_S,
        metavar="S",
        help="seconds of load of the admission scenario: a bucket may run ahead of its rate "
        f"by its burst, so a rate is judged over many seconds (default: {ADMISSION_DURATION_S})",
    )
    parser.add_argument(
        "--cluster-duration",
        type=_positive_int,
        default=CLUSTER_DURATION_S,
        metavar="S",
        help="seconds of load of the cluster scenario's step over the provider limit "
        f"(default: {CLUSTER_DURATION_S}); its other steps take --duration",
    )
    parser.add_argument(
        "--hostile-idle",
        type=_non_negative_int,
        default=HOSTILE_IDLE,
        metavar="N",
        help=f"hostile scenario: idle connections held (default: {HOSTILE_IDLE})",
    )
    parser.add_argument(
        "--hostile-slowloris",
        type=_non_negative_int,
        default=HOSTILE_SLOWLORIS,
        metavar="N",
        help="hostile scenario: connections sending a request head a byte a second "
        f"(default: {HOSTILE_SLOWLORIS})",
    )
    parser.add_argument(
        "--hostile-slow-readers",
        type=_non_negative_int,
        default=HOSTILE_SLOW_READERS,
        metavar="N",
        help="hostile scenario: clients reading a large stream at 16 KiB/s "
        f"(default: {HOSTILE_SLOW_READERS})",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record a py-spy profile of one gateway worker during each gateway measurement "
        "and write a summary per measurement into DIR (needs py-spy)",
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the work directory (server logs, wrk scripts) and print its path",
    )


def _flat(values: list[list[Any]] | None) -> tuple[Any, ...] | None:
    return None if values is None else tuple(v for group in values for v in group)


def _fail(message: str, code: int) -> int:
    print(f"aigateway bench: {message}", file=sys.stderr)
    return code


def _load_json(path: Path) -> dict[str, Any]:
    try:
        document = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        raise ValueError(f"{path} is not the --json output of aigateway bench")
    return document


def _versions(wrk: str | None) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("aigateway", "granian", "starlette", "aiohttp", "httpx", "uvloop", "orjson"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    if wrk is not None:
        from aigateway.bench.wrk import wrk_version

        out["wrk"] = wrk_version(wrk)
    return out


def _machine() -> dict[str, Any]:
    from aigateway.bench.procs import cpu_model, meminfo_mb

    return {
        "cores": os.cpu_count(),
        "memory_mb": round(meminfo_mb()),
        "cpu": cpu_model(),
        "kernel": platform.release(),
    }


def _source() -> dict[str, str]:
    """Where the measured gateway's code came from (its git commit, when there is one)."""
    import subprocess

    import aigateway

    where = Path(aigateway.__file__).resolve().parent
    out = {"path": str(where)}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        run = subprocess.run(
            ["git", "-C", str(where), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if run.returncode == 0:
            out["git"] = run.stdout.strip()
    return out


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the run like Ctrl-C: everything started is stopped on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def chosen_scenarios(names: list[str] | None) -> tuple[str, ...]:
    """The scenarios ``--scenario`` names, in plan order; "all" (the default) is every
    scenario but the opt-in ones, which run only when named."""
    chosen = set(names or ["all"])
    if "all" in chosen:
        chosen |= set(DEFAULT_SCENARIOS)
    return tuple(s for s in SCENARIOS if s in chosen)


def _measure(
    args: argparse.Namespace,
    wrk: str,
    work_dir: Path,
    started: list[dict[str, Any]],
    pyspy: str | None = None,
) -> tuple[list[Any], str | None]:
    """Run the plan: (result rows, why it stopped early or None). ``started`` receives
    every server the run started (name, pid, url); ``pyspy``: the py-spy of --profile."""
    from aigateway.bench.progress import Progress
    from aigateway.bench.runner import Environment, RunConfig, measure_undisturbed
    from aigateway.bench.scenarios import Hostile, PlanOptions, build_plan
    from aigateway.bench.trace import TraceSpec

    plan = build_plan(
        PlanOptions(
            scenarios=chosen_scenarios(args.scenario),
            workers=args.workers,
            concurrency=_flat(args.concurrency),
            mock_latency_ms=_flat(args.mock_latency_ms),
            soak_duration_s=args.soak_duration,
            admission_duration_s=args.admission_duration,
            cluster_duration_s=args.cluster_duration,
            hostile=Hostile(args.hostile_idle, args.hostile_slowloris, args.hostile_slow_readers),
        )
    )
    config = RunConfig(
        wrk=wrk,
        work_dir=work_dir,
        duration_s=args.duration,
        warmup_s=args.warmup,
        workers=args.workers,
        upstream_client=args.upstream_client,
        wrk_threads=args.wrk_threads,
        max_other_pct=args.max_other_cpu if args.max_other_cpu > 0 else None,
        retries=args.retries,
        trace=TraceSpec(seed=args.trace_seed),
        profile_dir=args.profile,
        pyspy=pyspy or "py-spy",
    )
    progress = Progress(len(plan))
    load_s = sum((step.duration_s or args.duration) + args.warmup + 1 for step in plan)
    progress.say(f"{len(plan)} measurements, about {load_s / 60:.1f} min of load")
    rows: list[Any] = []
    with _sigterm_as_interrupt(), Environment(config, progress, started) as env:
        try:
            for index, step in enumerate(plan, 1):
                progress.step(index, step.describe())
                row = measure_undisturbed(step, env, progress)
                rows.append(row)
                progress.finish(
                    f"{row['rps']:,.0f} req/s, p50 {row['p50_ms'] or 0:.3f} ms, "
                    f"p99 {row['p99_ms'] or 0:.3f} ms, {row['errors']} errors"
                )
        except KeyboardInterrupt:
            progress.say("interrupted: stopping every process the bench started")
            return rows, INTERRUPTED
        except Exception as exc:  # reported with what was measured until then
            progress.say("failed: stopping every process the bench started")
            return rows, f"{exc}\n(logs kept in {work_dir})"
    return rows, None


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def run_bench(args: argparse.Namespace) -> int:
    """Run ``aigateway bench`` with options from :func:`add_bench_arguments`; the exit code."""
    from aigateway.bench.compare import (
        Change,
        compare,
        regressions,
        render_comparison,
        render_regressions,
    )
    from aigateway.bench.derive import derive, goals, render_derived, render_goals
    from aigateway.bench.plot import PlotUnavailable, load_pyplot, write_plot
    from aigateway.bench.report import LEGEND, render_results
    from aigateway.bench.wrk import WrkError, ensure_wrk

    try:
        old = _load_json(args.compare) if args.compare else None
        saved = _load_json(args.from_json) if args.from_json else None
    except ValueError as exc:
        return _fail(str(exc), 2)
    if args.fail_if_worse is not None and old is None:
        return _fail("--fail-if-worse needs --compare OLD.json (e.g. benchmarks/baseline.json)", 2)
    if args.plot:
        try:
            load_pyplot()
        except PlotUnavailable as exc:
            return _fail(str(exc), 2)
    pyspy: str | None = None
    if args.profile and saved is None:
        from aigateway.bench.pyspy import MISSING, find_pyspy

        pyspy = find_pyspy()
        if pyspy is None:
            return _fail(MISSING, 2)
        try:
            args.profile.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return _fail(f"cannot create the --profile directory: {exc}", 2)

    stopped: str | None = None
    if saved is not None:
        document = saved
    else:
        try:
            wrk = ensure_wrk(say=lambda text: print(f"bench: {text}", file=sys.stderr))
        except WrkError as exc:
            return _fail(str(exc), 2)
        work_dir = Path(tempfile.mkdtemp(prefix="aigateway-bench-"))
        started = time.time()
        services: list[dict[str, Any]] = []
        rows, stopped = _measure(args, wrk, work_dir, services, pyspy)
        if args.keep_logs:
            print(f"bench: logs and scripts kept in {work_dir}", file=sys.stderr)
        elif stopped is None or stopped == INTERRUPTED:
            shutil.rmtree(work_dir, ignore_errors=True)
        derived = derive(rows)
        document = {
            "schema": SCHEMA,
            "meta": {
                "started": started,
                "finished": time.time(),
                "interrupted": stopped == INTERRUPTED,
                "error": None if stopped == INTERRUPTED else stopped,
                "machine": _machine(),
                "versions": _versions(wrk),
                "gateway_source": _source(),
                "services": services,
                "options": {k: _jsonable(v) for k, v in vars(args).items()},
            },
            "results": rows,
            "derived": derived,
            "goals": goals(rows, derived),
        }

    md = args.markdown
    results = document["results"]
    derived = document.get("derived") or derive(results)

    def section(title: str, body: str) -> None:
        print(f"\n## {title}\n" if md else f"\n== {title} ==\n")
        print(body)

    print(render_results(results, md))
    print("\n" + LEGEND)
    if derived:
        section("derived", render_derived(derived, md))
    section("goals", render_goals(goals(results, derived), md))
    worse: list[Change] = []
    if old is not None:
        comparison = compare(old, document)
        section(f"compared with {args.compare}", render_comparison(comparison, 0.05, md))
        if args.fail_if_worse is not None:
            threshold = args.fail_if_worse / 100
            worse = regressions(comparison, threshold)
            section("regression check", render_regressions(worse, threshold))
    if args.json and saved is None:
        args.json.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        print(f"\nbench: figures saved to {args.json}", file=sys.stderr)
    if args.plot:
        panels = write_plot(results, args.plot)
        print(f"bench: plot with {panels} panel(s) saved to {args.plot}", file=sys.stderr)
    if stopped == INTERRUPTED:
        return 130
    if stopped is not None:
        return _fail(stopped, 1)
    return 3 if worse else 0
