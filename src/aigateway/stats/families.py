"""The labelled metric families the gateway keeps in its series table.

Label values are bounded: providers come from the configuration, models from the
configuration or the providers' answers (at most ``MAX_MODELS_PER_PROVIDER`` per provider
per worker, the rest counted as ``other``), routes from the app's route table, outcomes
and priorities from fixed lists.  Never prompt text, keys or request ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aigateway.stats.series import COUNTER, HISTOGRAM

__all__ = ("FAMILIES", "LATENCY_BOUNDS", "QUEUE_BOUNDS", "Family")

LATENCY_BOUNDS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
QUEUE_BOUNDS: Final = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family: exported as ``aigateway_<name>`` (counters with ``_total``)."""

    name: str
    kind: int
    help: str
    labels: tuple[str, ...]
    bounds: tuple[float, ...] = ()

    @property
    def width(self) -> int:
        """Value cells of one series: a histogram's buckets, +Inf and its sum."""
        return len(self.bounds) + 2 if self.kind == HISTOGRAM else 1


FAMILIES: Final = {
    family.name: family
    for family in (
        Family(
            "requests",
            COUNTER,
            "HTTP requests answered, by route template, method and status class.",
            ("route", "method", "status"),
        ),
        Family(
            "provider_calls",
            COUNTER,
            "Calls to providers (every attempt), by provider, model and outcome.",
            ("provider", "model", "outcome"),
        ),
        Family(
            "provider_call_duration_seconds",
            HISTOGRAM,
            "Duration of provider calls (to the whole answer, or a stream's first chunk).",
            ("provider",),
            LATENCY_BOUNDS,
        ),
        Family("retries", COUNTER, "Provider calls retried after a failure.", ("provider",)),
        Family(
            "failovers",
            COUNTER,
            "Requests passed on to the next target after this provider failed.",
            ("provider",),
        ),
        Family(
            "tokens",
            COUNTER,
            "Tokens providers reported, by provider, model and direction (in: prompt, "
            "out: completion).",
            ("provider", "model", "direction"),
        ),
        Family(
            "queue_wait_seconds",
            HISTOGRAM,
            "Time requests waited for admission (rate limits, queue), by priority.",
            ("priority",),
            QUEUE_BOUNDS,
        ),
        Family(
            "rate_limit_waits",
            COUNTER,
            "Requests that had to wait for a provider's node-wide rate limit.",
            ("provider",),
        ),
        Family(
            "avoided_provider_calls",
            COUNTER,
            "Provider calls avoided, by provider, model and how (cache, dedup, batch).",
            ("provider", "model", "via"),
        ),
        Family(
            "avoided_tokens",
            COUNTER,
            "Tokens not spent thanks to avoided calls, by provider, model, how and direction.",
            ("provider", "model", "via", "direction"),
        ),
        Family(
            "health_probes",
            COUNTER,
            "Active health probes of providers, by outcome.",
            ("provider", "outcome"),
        ),
    )
}
