"""``--compare old.json``: the change of every figure against an earlier run (no I/O here).

Figures are matched by name: ``<measurement key> <figure>`` for the measured rows (every
number in a row, nested ones included) and ``derived <key>`` for derived figures. A change
is called ``better`` or ``worse`` when it moves more than ``threshold`` (relative) in a
figure's good or bad direction; figures without a direction (request counts, provider
calls) are shown without a verdict.

``--fail-if-worse PCT`` judges only the goal figures (``is_goal_figure``): the ones the
performance goals are stated in, each a ratio to a floor measured in the same run, an added
latency, the trace's rate or a worker's memory. Raw rates move with the machine's mood;
ratios from one run move much less, so they are what a regression check can trust.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aigateway.bench.report import fmt, table

SKIP = frozenset(
    {
        "concurrency", "workers", "mock_latency_ms", "mock_chunk_delay_ms", "window_s",
        # open loop: when it started, its seed and schedule are settings, not figures
        "started_wall", "seed", "schedule_s", "sent_s", "offered_rps", "provider_limit_rps",
    }
)  # fmt: skip
HIGHER_IS_BETTER = (
    "rps",
    "hit_rate",
    "hit-rate",
    "calls-avoided",
    "provider_calls_avoided",
    "rps-vs-",
)
LOWER_IS_BETTER = (
    "_ms", "errors", "cpu_", "rss", "private", "added-", "busy", ".p50", ".p90", ".p99",
    "commands-per-request", "commands-run-per-request", "provider-excess",
)  # fmt: skip


# Goal figures: derived ratios and added latencies, the trace's rate, the largest private
# memory of a worker (of the run, and of the soak).
GOAL_DERIVED = (
    "/rps-vs-passthrough",
    "/rps-vs-constant",
    "/added-p50-over-passthrough",
    "/added-p99-over-passthrough",
    "/private-max",
)


class CompareError(ValueError):
    """The earlier file is not a bench result."""


@dataclass(frozen=True, slots=True)
class Change:
    figure: str
    old: float
    new: float

    @property
    def delta(self) -> float:
        return self.new - self.old

    @property
    def relative(self) -> float | None:
        if self.old == 0:
            return None if self.new == 0 else math.copysign(math.inf, self.new)
        return self.delta / abs(self.old)

    def verdict(self, threshold: float) -> str:
        direction = direction_of(self.figure)
        rel = self.relative
        if direction == 0 or rel is None or abs(rel) <= threshold:
            return ""
        return "better" if rel * direction > 0 else "worse"


def direction_of(figure: str) -> int:
    """+1 if a higher value is better, -1 if lower is better, 0 if neither."""
    name = figure.rsplit(" ", 1)[-1]
    if any(marker in name for marker in HIGHER_IS_BETTER):
        return 1
    if any(marker in name for marker in LOWER_IS_BETTER):
        return -1
    return 0


def is_goal_figure(figure: str) -> bool:
    """Whether ``figure`` (a name from ``flatten``) is one the performance goals use."""
    if figure.startswith("derived "):
        return figure.endswith(GOAL_DERIVED)
    key, _, name = figure.rpartition(" ")
    return name == "rps" and key.startswith("trace/gateway/")


def regressions(comparison: Comparison, threshold: float) -> list[Change]:
    """The goal figures that moved in their bad direction by more than ``threshold``."""
    return [
        c
        for c in comparison.changes
        if is_goal_figure(c.figure) and c.verdict(threshold) == "worse"
    ]


def render_regressions(worse: Sequence[Change], threshold: float) -> str:
    if not worse:
        return f"no goal figure is worse by more than {threshold:.0%}"
    lines = [f"{len(worse)} goal figure(s) worse by more than {threshold:.0%}:"]
    lines += [f"  {c.figure}: {fmt(c.old, 3)} -> {fmt(c.new, 3)} ({_pct(c)})" for c in worse]
    return "\n".join(lines)


def _numbers(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        if math.isfinite(value):
            out[prefix] = float(value)
    elif isinstance(value, Mapping):
        for name, inner in value.items():
            if name not in SKIP:
                _numbers(f"{prefix}.{name}" if prefix else str(name), inner, out)


def flatten(document: Mapping[str, Any]) -> dict[str, float]:
    """Every figure of a --json document, by name."""
    if not isinstance(document.get("results"), list):
        raise CompareError("not a result of `aigateway bench --json`: no 'results' list")
    out: dict[str, float] = {}
    for row in document["results"]:
        figures: dict[str, float] = {}
        _numbers("", {k: v for k, v in row.items() if k != "cpu_s"}, figures)
        for name, value in figures.items():
            out[f"{row['key']} {name}"] = value
    for derived in document.get("derived", []):
        value = derived.get("value")
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[f"derived {derived['key']}"] = float(value)
    return out


@dataclass(frozen=True, slots=True)
class Comparison:
    changes: list[Change]
    only_old: list[str]
    only_new: list[str]


def compare(old: Mapping[str, Any], new: Mapping[str, Any]) -> Comparison:
    before, after = flatten(old), flatten(new)
    changes = [Change(name, before[name], after[name]) for name in after if name in before]
    return Comparison(
        changes,
        sorted(set(before) - set(after)),
        sorted(set(after) - set(before)),
    )


def _pct(change: Change) -> str:
    rel = change.relative
    if rel is None:
        return "0%"
    if math.isinf(rel):
        return "new"
    return f"{rel * 100:+.1f}%"


def render_comparison(
    comparison: Comparison, threshold: float = 0.05, markdown: bool = False
) -> str:
    rows = [
        [c.figure, fmt(c.old, 3), fmt(c.new, 3), _pct(c), c.verdict(threshold)]
        for c in comparison.changes
    ]
    text = table(["figure", "old", "new", "change", "verdict"], rows, markdown) if rows else ""
    worse = sum(c.verdict(threshold) == "worse" for c in comparison.changes)
    better = sum(c.verdict(threshold) == "better" for c in comparison.changes)
    summary = (
        f"{len(comparison.changes)} figures compared: {worse} worse, {better} better "
        f"(beyond {threshold:.0%})"
    )
    notes: Sequence[str] = []
    if comparison.only_old or comparison.only_new:
        notes = [
            f"{len(comparison.only_old)} figures only in the old run, "
            f"{len(comparison.only_new)} only in this one"
        ]
    return "\n".join(filter(None, [text, summary, *notes]))
