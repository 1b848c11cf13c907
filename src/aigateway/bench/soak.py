"""The soak scenario's memory figures: resident memory of each worker over time (no I/O
here; the caller hands in a function that reads /proc).

:class:`RssRecorder` samples at the start of the load, every ``SAMPLE_EVERY_S`` seconds
while it runs and at its end. :func:`summarise_rss` gives, per worker, the memory at the
start, at the end, the largest, and the growth per minute: the slope of a least-squares
line over the samples, once over all of them and once over those from ``SETTLE_S`` on
(allocator arenas, connection pools and the cache's pages settle in the first minute).

``VmRSS`` counts the pages of the shared cache segment (LMDB in /dev/shm) a worker has
touched, which grow until the cache is full; the private part (``RssAnon``: the heap) is
summarised beside it, as that is where a leak shows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

SAMPLE_EVERY_S = 10.0
SETTLE_S = 60.0  # growth that counts: from this many seconds into the load
MIN_SETTLED_SAMPLES = 3  # fewer samples after SETTLE_S: too short a run to judge growth
MB = 2**20

# one reading: pid -> {"VmRSS": bytes, "RssAnon": bytes, ...} (procs.memory_bytes)
Reading = dict[int, dict[str, int]]


def slope_per_minute(points: Sequence[tuple[float, float]]) -> float | None:
    """Slope of the least-squares line through (seconds, value) points, per minute;
    None with fewer than two distinct times."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return None
    covariance = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return 60.0 * covariance / spread


class RssRecorder:
    """Samples the memory of a server's workers when due; feed it the load's elapsed time."""

    def __init__(self, read: Callable[[], Reading], every_s: float = SAMPLE_EVERY_S) -> None:
        self.read = read
        self.every_s = every_s
        self.samples: list[tuple[float, Reading]] = []
        self._due = 0.0

    def sample(self, at_s: float) -> None:
        self.samples.append((at_s, self.read()))
        while self._due <= at_s:
            self._due += self.every_s

    def tick(self, elapsed_s: float) -> None:
        if elapsed_s >= self._due:
            self.sample(elapsed_s)

    def finish(self, at_s: float) -> None:
        """The sample at the end of the load, unless a tick just took one."""
        if not self.samples or at_s - self.samples[-1][0] >= 1.0:
            self.sample(at_s)


def _growth(points: Sequence[tuple[float, float]], settle_s: float) -> float | None:
    settled = [(t, v) for t, v in points if t >= settle_s]
    return slope_per_minute(settled) if len(settled) >= MIN_SETTLED_SAMPLES else None


def _largest(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def summarise_rss(
    samples: Sequence[tuple[float, Reading]], settle_s: float = SETTLE_S
) -> dict[str, Any]:
    """Per worker (``w1``, ``w2``... by pid order) and for the worst worker: RSS at the
    start, at the end, the largest, its growth (MB/min) over the run and after
    ``settle_s``, and the growth of its private (anonymous) memory after ``settle_s``."""
    labels: dict[int, str] = {}
    for _, reading in samples:
        for pid in sorted(reading):
            labels.setdefault(pid, f"w{len(labels) + 1}")
    series: dict[str, list[tuple[float, float]]] = {label: [] for label in labels.values()}
    anon: dict[str, list[tuple[float, float]]] = {label: [] for label in labels.values()}
    table: list[dict[str, Any]] = []
    for at, reading in samples:
        rss_mb = {labels[p]: m["VmRSS"] / MB for p, m in sorted(reading.items()) if "VmRSS" in m}
        anon_mb = {
            labels[p]: m["RssAnon"] / MB for p, m in sorted(reading.items()) if "RssAnon" in m
        }
        for label, value in rss_mb.items():
            series[label].append((at, value))
        for label, value in anon_mb.items():
            anon[label].append((at, value))
        table.append({"t": round(at, 2), "rss_mb": rss_mb, "anon_mb": anon_mb})
    workers: dict[str, dict[str, float | None]] = {}
    for label, points in series.items():
        if not points:
            continue
        workers[label] = {
            "start_mb": points[0][1],
            "end_mb": points[-1][1],
            "max_mb": max(v for _, v in points),
            "growth_mb_per_min": slope_per_minute(points),
            "growth_after_settle_mb_per_min": _growth(points, settle_s),
            "anon_max_mb": _largest([v for _, v in anon[label]]),
            "anon_growth_after_settle_mb_per_min": _growth(anon[label], settle_s),
        }

    def worst(name: str) -> float | None:
        return _largest([figures[name] for figures in workers.values()])

    return {
        "rss_start_mb": worst("start_mb"),
        "rss_end_mb": worst("end_mb"),
        "rss_max_mb": worst("max_mb"),
        "rss_growth_mb_per_min": worst("growth_mb_per_min"),
        "rss_growth_after_settle_mb_per_min": worst("growth_after_settle_mb_per_min"),
        "rss_anon_max_mb": worst("anon_max_mb"),
        "rss_anon_growth_after_settle_mb_per_min": worst("anon_growth_after_settle_mb_per_min"),
        "rss_workers": workers,
        "worker_pids": [str(pid) for pid in labels],
        "rss_samples": table,
    }
