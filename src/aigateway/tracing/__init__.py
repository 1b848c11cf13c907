"""OpenTelemetry traces of the gateway's requests, off unless the OTEL_* variables ask.

``config.tracing_wanted`` decides from the standard variables (an OTLP endpoint, or
``OTEL_TRACES_EXPORTER``); ``start`` then builds one worker's ``Tracing`` in its lifespan
(after the worker process started: nothing of the SDK crosses a fork or a spawn).  This
module imports nothing of OpenTelemetry: with tracing off, nothing of it is ever loaded,
and a request's observer has no trace (``core.observer.RequestObserver.trace`` is None).

The spans, their attributes and how to look at them: docs/observability.md.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aigateway.config import Settings
    from aigateway.tracing.otel import Tracing

__all__ = ("missing_packages", "start")

# What the ``otel`` extra installs, as the modules the gateway imports from it.
_NEEDED = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter")


def missing_packages() -> bool:
    """Whether a package of the ``otel`` extra is missing (looked up, not imported)."""
    for name in _NEEDED:
        try:
            if importlib.util.find_spec(name) is None:
                return True
        except (ImportError, ValueError):  # a parent package missing or hidden
            return True
    return False


def start(settings: Settings) -> Tracing | None:
    """This worker's tracing, when the settings turn it on."""
    if not settings.tracing:
        return None
    from aigateway.tracing.otel import Tracing

    return Tracing(settings.tracing, propagate=settings.propagate_trace)
