"""OpenTelemetry traces of the gateway's requests, off unless the OTEL_* variables ask.

``config.tracing_wanted`` decides from the standard variables (an OTLP endpoint, or
``OTEL_TRACES_EXPORTER``), and refuses to start without the ``otel`` extra; ``start``
then builds one worker's ``Tracing`` in its lifespan (after the worker process started:
nothing of the SDK crosses a fork or a spawn).  This module imports nothing of
OpenTelemetry: with tracing off, the gateway loads nothing of its tracing, and a request's
observer has no trace (``core.observer.RequestObserver.trace`` is None).

The spans, their attributes and how to look at them: docs/observability.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aigateway.config import Settings
    from aigateway.tracing.otel import Tracing

__all__ = ("start",)


def start(settings: Settings) -> Tracing | None:
    """This worker's tracing, when the settings turn it on."""
    if not settings.tracing:
        return None
    from aigateway.tracing.otel import Tracing

    return Tracing(settings.tracing, propagate=settings.propagate_trace)
