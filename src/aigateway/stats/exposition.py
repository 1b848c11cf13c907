"""The Prometheus text exposition format (version 0.0.4), written by hand.

exposition = Exposition()
exposition.family("aigateway_requests", "counter", "HTTP requests answered.")
exposition.sample("aigateway_requests_total", (("route", "/v1/chat"),), 12)
exposition.histogram("aigateway_request_duration_seconds", (), bounds, counts, total)
body = exposition.text()
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ("CONTENT_TYPE", "Exposition", "quantile")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = Sequence[tuple[str, str]]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _bound(value: float) -> str:
    return repr(float(value))


class Exposition:
    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        """Start a family (in this format a counter's family name ends in ``_total``)."""
        self._lines.append(f"# HELP {name} {help_text.replace(chr(92), chr(92) * 2)}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: Labels, value: float) -> None:
        if labels:
            rendered = ",".join(f'{key}="{_escape(val)}"' for key, val in labels)
            self._lines.append(f"{name}{{{rendered}}} {_number(value)}")
        else:
            self._lines.append(f"{name} {_number(value)}")

    def histogram(
        self,
        name: str,
        labels: Labels,
        bounds: Sequence[float],
        counts: Sequence[float],
        total: float,
    ) -> None:
        """One histogram's samples: ``counts`` per bucket (not cumulative), +Inf last."""
        running = 0.0
        for bound, count in zip((*bounds, math.inf), counts, strict=True):
            running += count
            le = "+Inf" if math.isinf(bound) else _bound(bound)
            self.sample(f"{name}_bucket", (*labels, ("le", le)), running)
        self.sample(f"{name}_sum", labels, total)
        self.sample(f"{name}_count", labels, running)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """The ``q`` quantile of a histogram, interpolated within its bucket (as Prometheus'
    ``histogram_quantile``); the largest finite bound when it falls in +Inf; None when empty."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    running = 0.0
    lower = 0.0
    for bound, count in zip(bounds, counts, strict=False):
        if count and running + count >= rank:
            return lower + (bound - lower) * (rank - running) / count
        running += count
        lower = bound
    return float(bounds[-1]) if bounds else None
