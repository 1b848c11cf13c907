"""What tracing adds to one request, in the worker's own code: the observer the request
middleware makes and the events a cache miss reports, with tracing off, on but the request
not sampled (a new trace, or a client's unsampled ``traceparent``: decided without the
SDK), sampled (spans handed to the batch processor, exported off the loop), and the mix of
``parentbased_traceidratio`` at 10%.

Run: ``pytest benchmarks/bench_tracing.py --benchmark-only``.  At a 10% sampling ratio,
the median request is an unsampled one; docs/benchmarks.md has the figures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from aigateway.core.accounting import Accounting
from aigateway.core.observer import RequestObserver, RequestRecord
from aigateway.tracing.otel import Tracing
from aigateway.wire import ApiRequest, Completed

SCOPE = {
    "type": "http",
    "method": "POST",
    "path": "/v1/chat/completions",
    "headers": [(b"content-type", b"application/json"), (b"authorization", b"Bearer x")],
}
CLIENT_UNSAMPLED = {
    **SCOPE,
    "headers": [
        *SCOPE["headers"],
        (b"traceparent", b"00-" + b"ab" * 16 + b"-" + b"cd" * 8 + b"-00"),
    ],
}
REQUEST = ApiRequest("chat", "gpt-4o-mini", {}, b"{}")
COMPLETION = {
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 12},
}


def _miss(key: bytes, request: ApiRequest) -> Completed | None:
    return None


def _request(make: Callable[[RequestRecord], RequestObserver]) -> None:
    """The events of one cache miss answered by its first provider attempt."""
    observer = make(RequestRecord("bench"))
    trace = observer.trace
    if trace is not None:
        trace.routed(REQUEST)
        trace.cache_lookup(_miss, b"k", REQUEST)
    observer.queue_wait("openai", "normal", 0.0)
    observer.provider_call("openai", "gpt-4o-mini", "ok", 0.001)
    observer.answered("openai", "gpt-4o-mini", COMPLETION)
    if trace is not None:
        trace.end(200, "miss")


@pytest.fixture(scope="module")
def accounting() -> Accounting:
    return Accounting.private(("openai",))


def _tracing(monkeypatch: pytest.MonkeyPatch, sampler: str, ratio: str = "") -> Iterator[Tracing]:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", ratio)
    tracing = Tracing(InMemorySpanExporter())
    yield tracing
    tracing.provider.shutdown()


@pytest.fixture
def sampled(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tracing]:
    yield from _tracing(monkeypatch, "always_on")


@pytest.fixture
def unsampled(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tracing]:
    yield from _tracing(monkeypatch, "always_off")


@pytest.fixture
def tenth(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tracing]:
    yield from _tracing(monkeypatch, "parentbased_traceidratio", "0.1")


def test_request_tracing_off(benchmark, accounting: Accounting) -> None:
    benchmark(_request, lambda record: RequestObserver(accounting, record))


def test_request_tracing_on_not_sampled(
    benchmark, accounting: Accounting, unsampled: Tracing
) -> None:
    benchmark(_request, lambda record: unsampled.observer(SCOPE, accounting, record))


def test_request_tracing_on_sampled(benchmark, accounting: Accounting, sampled: Tracing) -> None:
    benchmark(_request, lambda record: sampled.observer(SCOPE, accounting, record))


def test_request_tracing_on_client_not_sampled(
    benchmark, accounting: Accounting, tenth: Tracing
) -> None:
    benchmark(_request, lambda record: tenth.observer(CLIENT_UNSAMPLED, accounting, record))


def test_request_tracing_on_ten_percent(benchmark, accounting: Accounting, tenth: Tracing) -> None:
    """One round: ten requests, one of them sampled on average."""

    def ten() -> None:
        for _ in range(10):
            _request(lambda record: tenth.observer(SCOPE, accounting, record))

    benchmark(ten)
