"""``--plot out.png``: latency against throughput, one line per target (matplotlib optional)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aigateway.bench.report import Row

PLOT_SCENARIOS = ("miss-frontier", "hit-frontier", "workers")
MISSING = (
    "--plot needs matplotlib, which is not installed: "
    "pip install 'aigateway[plot]' (or: pip install matplotlib)"
)


class PlotUnavailable(RuntimeError):
    pass


def load_pyplot() -> Any:
    """matplotlib's pyplot on a file-only backend; :class:`PlotUnavailable` if missing."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise PlotUnavailable(MISSING) from None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def _panels(results: Sequence[Row]) -> dict[str, dict[str, list[Row]]]:
    """panel title -> series name -> rows (in concurrency order)."""
    panels: dict[str, dict[str, list[Row]]] = {}
    for row in results:
        if row["scenario"] not in PLOT_SCENARIOS or row["p50_ms"] is None:
            continue
        title = f"{row['scenario']}, mock {row['mock_latency_ms']:g} ms"
        if row["scenario"] == "workers":  # one panel per load, or it is unreadable
            title += f", {row['load']} requests"
        series = row["target"] + (f" w={row['workers']}" if row["workers"] else "")
        panels.setdefault(title, {}).setdefault(series, []).append(row)
    for by_series in panels.values():
        for rows in by_series.values():
            rows.sort(key=lambda r: r["concurrency"])
    return panels


def write_plot(results: Sequence[Row], path: Path) -> int:
    """Draw the frontier scenarios of ``results`` into ``path``; the number of panels."""
    plt = load_pyplot()
    panels = _panels(results)
    if not panels:
        return 0
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(9, 4.2 * len(panels)), squeeze=False, layout="constrained"
    )
    for ax, (title, by_series) in zip(axes[:, 0], sorted(panels.items()), strict=True):
        for name, rows in sorted(by_series.items()):
            rps = [r["rps"] for r in rows]
            (line,) = ax.plot(rps, [r["p50_ms"] for r in rows], marker="o", label=f"{name} p50")
            ax.plot(
                rps,
                [r["p99_ms"] for r in rows],
                marker="x",
                linestyle="--",
                color=line.get_color(),
                label=f"{name} p99",
            )
            for r in rows:
                ax.annotate(
                    f"c{r['concurrency']}",
                    (r["rps"], r["p50_ms"]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                )
        ax.set_title(title)
        ax.set_xlabel("throughput (requests/s)")
        ax.set_ylabel("latency (ms)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return len(panels)
