"""Tables of a run's results, as plain text or Markdown (no I/O here).

Results are the JSON-ready rows :func:`aigateway.bench.runner.measure` makes, so the same
code prints a fresh run and one read back from ``--json`` output.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from aigateway.bench.scenarios import SCENARIOS

Row = dict[str, Any]


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


_NUMERIC = re.compile(r"^(?:-|[-+]?[\d,]*\.?\d+(?:%| ms| MB)?|[\d/-]+)$")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    """Columns aligned for a terminal, or a Markdown table; numeric columns align right."""
    numeric = [i > 0 and all(_NUMERIC.match(row[i]) for row in rows) for i in range(len(headers))]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |"]
        lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


BUSY_PCT = 80.0  # of all cores: above it, the run took what the machine had
DISTURBED_PCT = 25.0  # of one core, used by other processes during a measurement


def saturation(row: Row) -> str:
    """Which process limits the measurement, read from the CPU figures.

    A measurement during which other processes took a quarter of a core is "disturbed".
    With the machine's cores nearly all busy (``BUSY_PCT``), the largest consumer is named;
    otherwise a single-process server (the mock) or the generator near one full core is the
    limit; else no process is CPU-bound (the load waits on latency).
    """
    pct: dict[str, float] = row.get("cpu_pct", {})
    names = {"target": row["target"], "mock": "mock", "generator": "generator"}
    names["attacker"] = "attacker"  # hostile: the process holding the hostile connections
    ranked = sorted(pct.items(), key=lambda kv: kv[1], reverse=True)
    if not ranked:
        return "-"
    top, top_pct = ranked[0]
    if row.get("other_pct", 0.0) > DISTURBED_PCT:
        return f"disturbed (other {row['other_pct']:.0f}%)"
    if row.get("machine_busy_pct", 0.0) >= BUSY_PCT:
        return f"all cores ({names[top]} {top_pct:.0f}%)"
    if pct.get("mock", 0.0) >= 90.0:
        return "mock (1 core)"
    if pct.get("generator", 0.0) >= 90.0:
        return "generator"
    target_pct = pct.get("target", 0.0)
    if row["workers"] and target_pct >= 90.0 * row["workers"]:
        return f"{row['target']} (all workers)"
    return "none (waits)"


def _cpu(row: Row) -> str:
    pct = row.get("cpu_pct", {})
    parts = [fmt(pct.get(name), 0) for name in ("target", "mock", "generator")]
    return "/".join([*parts, fmt(row.get("other_pct"), 0)])


def cpu_per_request(row: Row) -> float | None:
    """CPU milliseconds the target spent per request (steadier than req/s on a busy box)."""
    saved = row.get("cpu_ms_per_request", {}).get("target")
    if saved is not None:
        return float(saved)
    pct = row.get("cpu_pct", {}).get("target")
    return None if pct is None or not row["rps"] else 10.0 * pct / row["rps"]


def _mock(row: Row) -> str:
    text = f"{row['mock_latency_ms']:g}"
    if row.get("mock_chunk_delay_ms"):
        text += f"+{row['mock_chunk_delay_ms']:g}/ch"
    return text


_BASE_HEADERS = ["target", "conc", "w", "mock ms", "req/s", "p50 ms", "p90 ms", "p99 ms"]
_TAIL_HEADERS = [
    "errors", "calls", "cpu% t/m/g/o", "t cpu/req ms", "busy%", "anon/w MB", "map/w MB",
    "saturates",
]  # fmt: skip


def _base(row: Row) -> list[str]:
    return [
        row["target"],
        str(row["concurrency"]),
        str(row["workers"] or "-"),
        _mock(row),
        fmt(row["rps"], 0),
        fmt(row["p50_ms"], 3),
        fmt(row["p90_ms"], 3),
        fmt(row["p99_ms"], 3),
    ]


def _tail(row: Row) -> list[str]:
    return [
        fmt(row["errors"]),
        fmt(row["provider_calls"]),
        _cpu(row),
        fmt(cpu_per_request(row), 3),
        fmt(row["machine_busy_pct"], 0),
        fmt(row.get("private_per_worker_mb"), 0),
        fmt(mapped_per_worker(row), 0),
        saturation(row),
    ]


def mapped_per_worker(row: Row) -> float | None:
    """A worker's resident pages of mapped files and shared segments, in MB (rows saved
    before it was recorded: its resident memory less its private part)."""
    mapped = row.get("mapped_per_worker_mb")
    if mapped is not None:
        return float(mapped)
    rss, private = row.get("rss_per_worker_mb"), row.get("private_per_worker_mb")
    return None if rss is None or private is None else float(rss) - float(private)


def scenario_table(scenario: str, rows: Sequence[Row], markdown: bool = False) -> str:
    if scenario == "stream":
        headers = [*_BASE_HEADERS, "ttfb p50", "ttfb p99", "gap p50", "gap p99", *_TAIL_HEADERS]
        body = []
        for row in rows:
            extra = row.get("extra", {})
            ttfb, gap = extra.get("ttfb_ms", {}), extra.get("gap_ms", {})
            figures = [fmt(ttfb.get("p50"), 3), fmt(ttfb.get("p99"), 3)]
            figures += [fmt(gap.get("p50"), 3), fmt(gap.get("p99"), 3)]
            body.append([*_base(row), *figures, *_tail(row)])
        return table(headers, body, markdown)
    if scenario == "trace":
        headers = [*_BASE_HEADERS, "hit rate", "requests", "avoided", *_TAIL_HEADERS]
        body = []
        for row in rows:
            extra = row.get("extra", {})
            figures = [
                fmt(extra.get("hit_rate"), 3),
                fmt(row["requests"]),
                fmt(extra.get("provider_calls_avoided")),
            ]
            body.append([*_base(row), *figures, *_tail(row)])
        text = table(headers, body, markdown)
        for row in rows:
            by_priority = row.get("extra", {}).get("by_priority", {})
            prio_rows = [
                [name, fmt(v.get("requests")), fmt(v.get("p50"), 3), fmt(v.get("p99"), 3)]
                for name, v in by_priority.items()
            ]
            if prio_rows:
                text += "\n\n" + table(
                    ["priority", "requests", "p50 ms", "p99 ms"], prio_rows, markdown
                )
        return text
    if scenario == "admission":
        return admission_table(rows, markdown)
    if scenario == "soak":
        return soak_table(rows, markdown)
    if scenario == "hostile":
        return hostile_table(rows, markdown)
    if scenario == "cluster":
        return cluster_table(rows, markdown)
    headers = [*_BASE_HEADERS, *_TAIL_HEADERS]
    return table(headers, [[*_base(row), *_tail(row)] for row in rows], markdown)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100.0 * value:.1f}%"


def admission_table(rows: Sequence[Row], markdown: bool = False) -> str:
    """The open-loop runs: the usual row, the provider's rate against its limit, and
    per priority the successes' latency, 429s (shed) and 504s (timed out)."""
    headers = [*_BASE_HEADERS, "offered/s", "limit/s", "provider/s", *_TAIL_HEADERS]
    body = []
    for row in rows:
        extra = row.get("extra", {})
        figures = [
            fmt(extra.get("offered_rps"), 0),
            fmt(extra.get("provider_limit_rps"), 0),
            fmt(extra.get("provider_observed_rps"), 1),
        ]
        body.append([*_base(row), *figures, *_tail(row)])
    text = table(headers, body, markdown)
    for row in rows:
        extra = row.get("extra", {})
        window = extra.get("provider_rate_window_s")
        if window:
            text += (
                f"\n\nprovider/s: {fmt(extra.get('provider_rate_calls'))} calls the mock saw "
                f"from {window[0]:g} s to {window[1]:g} s of the "
                f"{fmt(extra.get('schedule_s'), 0)} s schedule (its steady middle)"
            )
        prio_rows = [
            [
                name,
                fmt(v.get("requests")),
                fmt(v.get("ok")),
                fmt(v.get("p50"), 1),
                fmt(v.get("p99"), 1),
                fmt(v.get("shed")),
                _pct(v.get("shed_rate")),
                fmt(v.get("timeouts")),
                _pct(v.get("timeout_rate")),
                fmt(v.get("other_errors")),
            ]
            for name, v in extra.get("by_priority", {}).items()
        ]
        if prio_rows:
            headers = [
                "priority", "requests", "ok", "p50 ms", "p99 ms", "429", "shed",
                "504", "timed out", "other errors",
            ]  # fmt: skip
            text += "\n\n" + table(headers, prio_rows, markdown)
    return text


def soak_table(rows: Sequence[Row], markdown: bool = False) -> str:
    """The usual row and the workers' resident memory over the run (the worst worker's
    figures; each worker's are in the JSON)."""
    headers = [*_BASE_HEADERS, "secs", "rss start", "rss end", "rss max", "MB/min",
               "MB/min >1m", "anon max", "anon MB/min >1m", *_TAIL_HEADERS]  # fmt: skip
    body = []
    for row in rows:
        extra = row.get("extra", {})
        figures = [
            fmt(row.get("duration_s"), 0),
            fmt(extra.get("rss_start_mb"), 1),
            fmt(extra.get("rss_end_mb"), 1),
            fmt(extra.get("rss_max_mb"), 1),
            fmt(extra.get("rss_growth_mb_per_min"), 2),
            fmt(extra.get("rss_growth_after_settle_mb_per_min"), 2),
            fmt(extra.get("rss_anon_max_mb"), 1),
            fmt(extra.get("rss_anon_growth_after_settle_mb_per_min"), 2),
        ]
        body.append([*_base(row), *figures, *_tail(row)])
    return table(headers, body, markdown)


def hostile_table(rows: Sequence[Row], markdown: bool = False) -> str:
    """The usual row, what the attacker held (the fewest open at any sampled second, how
    many the gateway closed and it opened again, what its slow reader got) and each
    worker's largest private memory (``RssAnon``) and resident memory while the load ran."""
    headers = [*_BASE_HEADERS, "held idle+slow", "fewest open", "reopened", "slow KB",
               "anon max/w", "rss max/w", *_TAIL_HEADERS]  # fmt: skip
    body = []
    for row in rows:
        extra = row.get("extra", {})
        attack = extra.get("attacker") or {}
        workers = extra.get("rss_workers", {})
        figures = [
            f"{attack['idle']}+{attack['slowloris']}" if attack else "quiet",
            fmt(attack.get("fewest_open")),
            fmt(attack.get("closed_by_server")),
            fmt(attack["slow_bytes"] / 1024, 0) if attack else "-",
            "/".join(fmt(w.get("anon_max_mb"), 0) for w in workers.values()) or "-",
            "/".join(fmt(w.get("max_mb"), 0) for w in workers.values()) or "-",
        ]
        body.append([*_base(row), *figures, *_tail(row)])
    return table(headers, body, markdown)


def _redis(row: Row) -> dict[str, Any]:
    redis: dict[str, Any] = row.get("extra", {}).get("redis") or {}
    return redis


def cluster_table(rows: Sequence[Row], markdown: bool = False) -> str:
    """Two nodes on Redis (the provider's rate against the limit, the largest excess over
    it in any window, hit rates, Redis commands sent per request and the limits' share),
    then one node with and without Redis, pair by pair (Redis commands run per request)."""
    groups = [r for r in rows if r.get("nodes", 1) > 1], [r for r in rows if r.get("nodes", 1) <= 1]
    parts = []
    if groups[0]:
        headers = [
            *_BASE_HEADERS, "nodes", "limit/s", "provider/s", "excess", "hit rate",
            "x-node hit", "redis/req", "limits/req", "redis cpu%", *_TAIL_HEADERS,
        ]  # fmt: skip
        body = []
        for row in groups[0]:
            extra, redis = row.get("extra", {}), _redis(row)
            figures = [
                str(row["nodes"]),
                fmt(extra.get("provider_limit_rps"), 0),
                fmt(extra.get("provider_observed_rps"), 1),
                fmt(extra.get("provider_excess_calls"), 0),
                fmt(extra.get("hit_rate"), 3),
                fmt(extra.get("cross_node_hit_rate"), 3),
                fmt(redis.get("sent_per_request"), 3),
                fmt(redis.get("limit_commands_per_request"), 4),
                fmt(row.get("cpu_pct", {}).get("redis"), 0),
            ]
            body.append([*_base(row), *figures, *_tail(row)])
        text = table(headers, body, markdown)
        for row in groups[0]:
            text += _cluster_notes(row)
        parts.append(text)
    if groups[1]:
        headers = [*_BASE_HEADERS, "redis run/req", "redis cpu%", *_TAIL_HEADERS]
        body = [
            [
                *_base(row),
                fmt(_redis(row).get("run_per_request"), 3),
                fmt(row.get("cpu_pct", {}).get("redis"), 0),
                *_tail(row),
            ]
            for row in groups[1]
        ]
        parts.append(table(headers, body, markdown))
    return "\n\n".join(parts)


def _cluster_notes(row: Row) -> str:
    extra, redis, text = row.get("extra", {}), _redis(row), ""
    window = extra.get("provider_rate_window_s")
    if window:
        text += (
            f"\n\n{row['load']}: provider/s from {fmt(extra.get('provider_rate_calls'))} calls "
            f"the mock saw from {window[0]:g} s to {window[1]:g} s of the "
            f"{fmt(extra.get('schedule_s'), 0)} s schedule; excess: the most calls beyond "
            "limit x window in any window of the load"
        )
    repeats = extra.get("repeats")
    if repeats:
        shown = ", ".join(
            f"{kind.replace('_', ' ')} {fmt(v.get('hits'))}/{fmt(v.get('requests'))}"
            for kind, v in repeats.items()
        )
        text += f"\n\n{row['load']}: hits/requests by where the prompt was sent before: {shown}"
    sent = redis.get("sent")
    if sent:
        by_class = ", ".join(f"{name} {fmt(count)}" for name, count in sent.items())
        commands = ", ".join(
            f"{name} {fmt(count)}" for name, count in list(redis["sent_by_command"].items())[:6]
        )
        text += (
            f"\n\n{row['load']}: Redis commands sent, by key: {by_class} (by name: {commands}); "
            f"run, scripts' own included: {fmt(redis.get('commands_run'))}"
        )
    return text


def render_results(results: Sequence[Row], markdown: bool = False) -> str:
    parts = []
    for scenario in SCENARIOS:
        rows = [r for r in results if r["scenario"] == scenario]
        if not rows:
            continue
        labels = sorted({r["label"] for r in rows if r.get("label")})
        title = f"## {scenario}" if markdown else f"== {scenario} =="
        if labels:
            loads = sorted({r["load"] for r in rows if r.get("label")})
            partial = not all(r.get("label") for r in rows)
            prefix = f"{'/'.join(loads)} rows: " if partial else ""
            title += f" ({prefix}{'; '.join(labels)})"
        parts.append(title + "\n\n" + scenario_table(scenario, rows, markdown))
    return "\n\n".join(parts)


LEGEND = (
    "conc: connections (wrk) or requests in flight (load client); w: worker processes;\n"
    "calls: provider calls counted by the mock; errors: non-2xx answers + socket errors;\n"
    "cpu% t/m/g/o: CPU of the target, the mock, the load generator and of other processes\n"
    "on the machine, in % of one core; t cpu/req: CPU time of the target per request;\n"
    "busy%: the whole machine, in % of all its cores;\n"
    "anon/w: private memory per worker process of the target (RssAnon: its heap);\n"
    "map/w: the rest of its resident memory (RssFile + RssShmem): pages of the interpreter,\n"
    "libraries and the node's shared cache, one copy serving every worker that maps them;\n"
    "soak: rss start/end/max in MB of the worst worker (VmRSS), MB/min: growth from a\n"
    "least-squares line over all samples or those after the first minute (>1m); anon: the\n"
    "private (heap) part of it (RssAnon), without the pages of the shared cache segment."
)
