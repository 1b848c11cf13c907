"""Figures derived from a run (added latency, throughput ratios) and the goals they meet.

Each derived figure has a stable ``key`` so that ``--compare`` can follow it across runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aigateway.bench.cluster import cluster_derived, cluster_goals
from aigateway.bench.hostile import hostile_goals
from aigateway.bench.report import Row, fmt, table

Derived = dict[str, Any]

# Issue 19's goals (docs/benchmarks.md): against our own stack's floors, 2 workers.
GOAL_WORKERS = 2
ADDED_P50_MS = 0.10  # over passthrough, one connection
ADDED_P99_MS = 0.25
FLOOR_RATIO = 0.85  # misses over passthrough, hits over constant, 16/64/256 connections
GOAL_SLOW_MOCK_MS = 50.0
GOAL_SLOW_CONCURRENCY = 128
SLOW_MOCK_RATIO = 0.97  # over passthrough with the 50 ms mock at 128 connections
TRACE_BEFORE_RPS = 2523.0  # the trace scenario when issue 19 was filed
TRACE_GOAL_RPS = TRACE_BEFORE_RPS * 1.3
GOAL_PRIVATE_MB = 60.0  # every feature on, steady load


def _find(results: Sequence[Row], scenario: str, target: str, **where: Any) -> Row | None:
    for row in results:
        if row["scenario"] != scenario or row["target"] != target:
            continue
        if all(row.get(k) == v for k, v in where.items()):
            return row
    return None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def _where(row: Row) -> str:
    return f"c{row['concurrency']}/w{row['workers']}/mock{row['mock_latency_ms']:g}ms"


def derive(results: Sequence[Row]) -> list[Derived]:
    out: list[Derived] = []

    def add(key: str, text: str, value: float | None, unit: str) -> None:
        if value is not None:
            out.append({"key": key, "text": text, "value": value, "unit": unit})

    out.extend(cluster_derived(results))
    for gw in (r for r in results if r["target"] == "gateway" and r["scenario"] != "cluster"):
        scenario, where = gw["scenario"], _where(gw)
        same = {"concurrency": gw["concurrency"], "mock_latency_ms": gw["mock_latency_ms"]}
        if scenario in ("overhead", "stream"):
            for base in ("direct", "passthrough"):
                other = _find(results, scenario, base, **same)
                if other is None:
                    continue
                if scenario == "overhead":
                    for p in ("p50", "p99"):
                        value = _diff(gw[f"{p}_ms"], other[f"{p}_ms"])
                        add(
                            f"{scenario}/{where}/added-{p}-over-{base}",
                            f"gateway added {p} over {base}",
                            value,
                            "ms",
                        )
                    continue
                for figure in ("ttfb", "gap"):
                    for p in ("p50", "p99"):
                        mine = gw["extra"].get(f"{figure}_ms", {}).get(p)
                        theirs = other["extra"].get(f"{figure}_ms", {}).get(p)
                        add(
                            f"{scenario}/{where}/added-{figure}-{p}-over-{base}",
                            f"gateway added {figure} {p} over {base}",
                            _diff(mine, theirs),
                            "ms",
                        )
        elif scenario in ("miss-frontier", "hit-frontier", "workers"):
            base = "constant" if gw["load"] == "identical" else "passthrough"
            other = _find(results, scenario, base, workers=gw["workers"], load=gw["load"], **same)
            if other is not None:
                add(
                    f"{scenario}/{gw['load']}/{where}/rps-vs-{base}",
                    f"gateway req/s / {base} req/s ({gw['load']})",
                    _ratio(gw["rps"], other["rps"]),
                    "ratio",
                )
            direct = _find(results, scenario, "direct", **same)
            if direct is not None:
                add(
                    f"{scenario}/{where}/rps-vs-direct",
                    "gateway req/s / direct req/s",
                    _ratio(gw["rps"], direct["rps"]),
                    "ratio",
                )
        elif scenario == "trace":
            extra = gw["extra"]
            add(f"trace/{where}/hit-rate", "cache hit rate", extra.get("hit_rate"), "ratio")
            add(
                f"trace/{where}/calls-avoided",
                "provider calls avoided",
                extra.get("provider_calls_avoided"),
                "calls",
            )
        elif scenario == "admission":
            _derive_admission(gw, add)
        elif scenario == "soak":
            extra = gw["extra"]
            add(f"soak/{where}/rss-max", "largest RSS of a worker", extra.get("rss_max_mb"), "MB")
            add(
                f"soak/{where}/rss-growth-after-1min",
                "RSS growth of the worst worker after the first minute",
                extra.get("rss_growth_after_settle_mb_per_min"),
                "MB/min",
            )
            add(
                f"soak/{where}/private-max",
                "largest private memory (RssAnon) of a worker",
                extra.get("rss_anon_max_mb"),
                "MB",
            )
            add(
                f"soak/{where}/private-growth-after-1min",
                "private memory growth of the worst worker after the first minute",
                extra.get("rss_anon_growth_after_settle_mb_per_min"),
                "MB/min",
            )
    for pt in (r for r in results if r["target"] == "passthrough" and r["scenario"] == "overhead"):
        direct = _find(results, "overhead", "direct", mock_latency_ms=pt["mock_latency_ms"])
        if direct is not None:
            for p in ("p50", "p99"):
                add(
                    f"overhead/{_where(pt)}/passthrough-added-{p}-over-direct",
                    f"passthrough added {p} over direct",
                    _diff(pt[f"{p}_ms"], direct[f"{p}_ms"]),
                    "ms",
                )
    private = [r["private_per_worker_mb"] for r in results
               if r["target"] == "gateway" and r.get("private_per_worker_mb")]  # fmt: skip
    if private:
        add(
            "memory/gateway/private-max",
            "largest private memory (RssAnon) of a gateway worker, any scenario",
            max(private),
            "MB",
        )
    return out


def _derive_admission(row: Row, add: Any) -> None:
    extra, where = row["extra"], _where(row)
    add(
        f"admission/{where}/provider-rate-vs-limit",
        "provider calls/s (steady middle) / its limit",
        _ratio(extra.get("provider_observed_rps"), extra.get("provider_limit_rps")),
        "ratio",
    )
    for name, figures in extra.get("by_priority", {}).items():
        add(f"admission/{where}/{name}-p99", f"{name}: p99 of successes", figures["p99"], "ms")
        add(
            f"admission/{where}/{name}-shed-rate",
            f"{name}: 429 share",
            figures["shed_rate"],
            "ratio",
        )
        add(
            f"admission/{where}/{name}-timeout-rate",
            f"{name}: 504 share",
            figures["timeout_rate"],
            "ratio",
        )


def _loss(figures: dict[str, Any]) -> float | None:
    """Share of requests shed (429) or timed out (504)."""
    n = figures.get("requests") or 0
    return (figures["shed"] + figures["timeouts"]) / n if n else None


def admission_goals(results: Sequence[Row]) -> list[dict[str, str]]:
    """Goals of the admission scenario: the provider sees its limit, critical requests
    stay near the provider's latency, low priority absorbs the overload."""
    out: list[dict[str, str]] = []
    direct = next(
        (
            r
            for r in results
            if r["target"] == "direct" and r["mock_latency_ms"] == 0.0 and r.get("p50_ms")
        ),
        None,
    )
    for row in (r for r in results if r["scenario"] == "admission"):
        extra = row["extra"]
        limit = extra.get("provider_limit_rps")
        observed = extra.get("provider_observed_rps")
        off = None if not limit or observed is None else 100.0 * abs(observed / limit - 1)
        out.append(
            {
                "goal": f"admission: provider rate within 2% of its limit ({fmt(limit, 0)}/s)",
                "measured": "-" if off is None else f"{observed:.1f}/s ({off:.1f}% off)",
                "target": "<= 2%",
                "status": _status(None if off is None else off <= 2.0),
            }
        )
        by_priority = extra.get("by_priority", {})
        critical = by_priority.get("critical", {})
        if row["mock_latency_ms"] > 0:
            reference, what = row["mock_latency_ms"], f"mock latency {row['mock_latency_ms']:g} ms"
        elif direct is not None:
            reference, what = direct["p50_ms"], f"direct p50 {direct['p50_ms']:.3f} ms"
        else:
            reference, what = None, "0 ms mock and no direct row"
        p99 = critical.get("p99")
        ratio = _ratio(p99, reference)
        out.append(
            {
                "goal": f"admission: critical p99 within 2x the provider latency ({what})",
                "measured": "-" if ratio is None else f"{p99:.1f} ms ({ratio:.2f}x)",
                "target": "<= 2x",
                "status": _status(None if ratio is None else ratio <= 2.0),
            }
        )
        losses = {name: _loss(f) for name, f in by_priority.items()}
        low = losses.get("low")
        others = [v for k, v in losses.items() if k != "low" and v is not None]
        ok = None
        if low is not None and others:
            ok = low > 0 and low >= max(others) and (losses.get("critical") or 0.0) == 0.0
        out.append(
            {
                "goal": "admission: low absorbs the overload (429+504 share)",
                "measured": "-"
                if low is None
                else f"low {low:.0%}, others <= {max(others, default=0.0):.0%}",
                "target": "low most, critical 0",
                "status": _status(ok),
            }
        )
    return out


SOAK_RSS_LIMIT_MB = 150.0
SOAK_GROWTH_LIMIT_MB_PER_MIN = 1.0


def soak_goals(results: Sequence[Row]) -> list[dict[str, str]]:
    """Goals of the soak, judged on each worker's private memory (``RssAnon``): its
    largest sample stays under the limit, and its least-squares slope after the first
    minute under a MB per minute. ``VmRSS`` is shown beside it: it also counts the pages
    of the node's shared cache a worker has touched, which grow until the cache holds
    ``CACHE_MAX_MB`` and exist once for the node, not once per worker."""
    out: list[dict[str, str]] = []
    for row in (r for r in results if r["scenario"] == "soak" and r["target"] == "gateway"):
        extra = row["extra"]
        private, rss = extra.get("rss_anon_max_mb"), extra.get("rss_max_mb")
        shown = "" if rss is None else f" (RSS with shared cache pages {rss:.1f})"
        out.append(
            {
                "goal": "soak: private memory per worker at steady load (largest sample)",
                "measured": "-" if private is None else f"{private:.1f} MB{shown}",
                "target": f"< {SOAK_RSS_LIMIT_MB:g} MB",
                "status": _status(None if private is None else private < SOAK_RSS_LIMIT_MB),
            }
        )
        growth = extra.get("rss_anon_growth_after_settle_mb_per_min")
        rss_growth = extra.get("rss_growth_after_settle_mb_per_min")
        shown = "" if rss_growth is None else f" (RSS {rss_growth:+.2f})"
        out.append(
            {
                "goal": "soak: memory flat over the run (worst worker, after the first minute)",
                "measured": "-" if growth is None else f"{growth:+.2f} MB/min{shown}",
                "target": f"< {SOAK_GROWTH_LIMIT_MB_PER_MIN:g} MB/min",
                "status": "n/a (run too short)"
                if growth is None
                else _status(growth < SOAK_GROWTH_LIMIT_MB_PER_MIN),
            }
        )
    return out


def render_derived(derived: Sequence[Derived], markdown: bool = False) -> str:
    rows = [[d["key"], d["text"], fmt(d["value"], 3), d["unit"]] for d in derived]
    return table(["figure", "meaning", "value", "unit"], rows, markdown) if rows else ""


# --- goals --------------------------------------------------------------------------------


def _status(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def goals(results: Sequence[Row], derived: Sequence[Derived]) -> list[dict[str, str]]:
    """The project's performance goals, each with its measured value and status."""
    values = {d["key"]: d["value"] for d in derived}
    out: list[dict[str, str]] = []

    def goal(name: str, value: float | None, limit: float, unit: str, at_most: bool) -> None:
        ok = None if value is None else (value <= limit if at_most else value >= limit)
        bound = ("<= " if at_most else ">= ") + f"{limit:g}{unit}"
        out.append(
            {
                "goal": name,
                "measured": fmt(value, 3) + (unit if value is not None else ""),
                "target": bound,
                "status": _status(ok),
            }
        )

    w = f"w{GOAL_WORKERS}"
    for p, limit in (("p50", ADDED_P50_MS), ("p99", ADDED_P99_MS)):
        key = f"overhead/c1/{w}/mock0ms/added-{p}-over-passthrough"
        goal(f"added {p} over passthrough at concurrency 1", values.get(key), limit, " ms", True)
    for row in results:
        if (row["scenario"], row["target"], row["workers"], row["mock_latency_ms"]) == (
            "miss-frontier",
            "gateway",
            GOAL_WORKERS,
            0.0,
        ):
            key = f"miss-frontier/unique/{_where(row)}/rps-vs-passthrough"
            goal(
                f"miss req/s vs passthrough at c={row['concurrency']}",
                values.get(key),
                FLOOR_RATIO,
                "",
                False,
            )
    hit_rates = [v for k, v in values.items() if k.endswith("/hit-rate")]
    for row in results:
        if (row["scenario"], row["target"], row["workers"], row["mock_latency_ms"]) == (
            "hit-frontier",
            "gateway",
            GOAL_WORKERS,
            0.0,
        ):
            key = f"hit-frontier/identical/{_where(row)}/rps-vs-constant"
            name = f"hit req/s vs constant at c={row['concurrency']}"
            # Served from the cache when the provider saw far fewer calls than requests.
            cached = (
                row["provider_calls"] is not None and row["provider_calls"] * 2 < row["requests"]
            )
            if not cached and not any(hit_rates):
                value = values.get(key)
                out.append(
                    {
                        "goal": name,
                        "measured": fmt(value, 3),
                        "target": f">= {FLOOR_RATIO:g}",
                        "status": "n/a (no cache hits yet)",
                    }
                )
            else:
                goal(name, values.get(key), FLOOR_RATIO, "", False)
    slow = f"miss-frontier/unique/c{GOAL_SLOW_CONCURRENCY}/{w}/mock{GOAL_SLOW_MOCK_MS:g}ms"
    goal(
        f"req/s vs passthrough, {GOAL_SLOW_MOCK_MS:g} ms mock at c={GOAL_SLOW_CONCURRENCY}",
        values.get(f"{slow}/rps-vs-passthrough"),
        SLOW_MOCK_RATIO,
        "",
        False,
    )
    trace = _find(results, "trace", "gateway", workers=GOAL_WORKERS)
    goal(
        f"trace req/s (+30% over {TRACE_BEFORE_RPS:,.0f})",
        None if trace is None else trace["rps"],
        TRACE_GOAL_RPS,
        "",
        False,
    )
    for figure, limit in (("ttfb", 0.5), ("gap", 0.1)):  # the reference: passthrough
        found = [k for k in values if f"added-{figure}-p50-over-passthrough" in k and f"/{w}/" in k]
        value = values[found[0]] if found else None
        goal(f"stream added {figure} p50 over passthrough", value, limit, " ms", True)
    # Private memory (issue 19): VmRSS also counts the pages of the interpreter, its
    # libraries and the shared cache a worker touched (one copy serves every worker of the
    # node; the cache's up to CACHE_MAX_MB), shown beside it.
    gateway_rows = [r for r in results if r["target"] == "gateway"]
    private = [r["private_per_worker_mb"] for r in gateway_rows if r.get("private_per_worker_mb")]
    rss = [r["rss_per_worker_mb"] for r in gateway_rows if r.get("rss_per_worker_mb")]
    largest = max(private) if private else None
    out.append(
        {
            "goal": "gateway private memory per worker (largest seen)",
            "measured": "-"
            if largest is None
            else f"{largest:.1f} MB (RSS with shared cache pages {max(rss):.1f})",
            "target": f"<= {GOAL_PRIVATE_MB:g} MB",
            "status": _status(None if largest is None else largest <= GOAL_PRIVATE_MB),
        }
    )
    return (
        out
        + admission_goals(results)
        + soak_goals(results)
        + hostile_goals(results)
        + cluster_goals(results)
    )


def render_goals(rows: Sequence[dict[str, str]], markdown: bool = False) -> str:
    body = [[r["goal"], r["measured"], r["target"], r["status"]] for r in rows]
    return table(["goal (2 workers, 0 ms mock)", "measured", "target", "status"], body, markdown)
