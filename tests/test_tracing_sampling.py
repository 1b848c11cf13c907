"""Sampling decided without the SDK: an unsampled request costs nothing of OpenTelemetry.

With a standard sampler (``always_on``, ``always_off``, ``traceidratio`` and their
``parentbased_`` forms), the gateway decides each request itself, by the SDK's own rule,
and only a sampled request goes through the SDK (with the trace id the decision was made
on).  In-process: an injected exporter keeps the spans; nothing here needs a server (the
spans' export over OTLP/HTTP is tests/test_tracing.py's).
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aigateway.core.accounting import Accounting
from aigateway.core.observer import RequestObserver, RequestRecord
from aigateway.tracing.otel import Tracing
from aigateway.tracing.sampling import QuickSampler

FIELDS = frozenset({b"traceparent", b"tracestate", b"baggage"})
HEADERS = [(b"host", b"gateway"), (b"content-type", b"application/json")]


def scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/v1/chat/completions",
            "headers": [*HEADERS, *headers]}  # fmt: skip


def traceparent(flags: str) -> tuple[str, tuple[bytes, bytes]]:
    trace_id = os.urandom(16).hex()
    return trace_id, (b"traceparent", f"00-{trace_id}-{os.urandom(8).hex()}-{flags}".encode())


@pytest.fixture
def tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    exporter = InMemorySpanExporter()
    traced = Tracing(exporter)
    yield traced, exporter
    traced.provider.shutdown()


def observe(traced: Tracing, request_scope: dict[str, Any]) -> RequestObserver:
    return traced.observer(request_scope, Accounting.private(("openai",)), RequestRecord("r"))


@pytest.mark.parametrize(
    "sampler",
    [
        sampling.ALWAYS_ON,
        sampling.ALWAYS_OFF,
        sampling.TraceIdRatioBased(0.25),
        sampling.ParentBasedTraceIdRatio(0.1),
        sampling.DEFAULT_ON,
        sampling.DEFAULT_OFF,
    ],
    ids=lambda s: s.get_description(),
)
def test_the_quick_decision_is_the_sdks_for_the_same_trace_id(sampler: sampling.Sampler) -> None:
    quick = QuickSampler.of(sampler, FIELDS)
    assert quick is not None
    random.seed(18)
    for _ in range(2000):
        decided = quick.decide(HEADERS)
        assert decided is not None
        trace_id, sampled = decided
        sdk = sampler.should_sample(None, trace_id, "chat").decision.is_sampled()
        assert sampled == sdk


def test_samplers_the_gateway_cannot_read_are_left_to_the_sdk() -> None:
    class Mine(sampling.Sampler):
        def should_sample(self, *args: Any, **kwargs: Any) -> sampling.SamplingResult:
            return sampling.SamplingResult(sampling.Decision.RECORD_AND_SAMPLE)

        def get_description(self) -> str:
            return "mine"

    assert QuickSampler.of(Mine(), FIELDS) is None
    assert QuickSampler.of(sampling.ParentBased(Mine()), FIELDS) is None
    assert QuickSampler.of(sampling.StaticSampler(sampling.Decision.RECORD_ONLY), FIELDS) is None


def test_a_clients_unsampled_parent_is_decided_quickly_and_keeps_its_trace_id() -> None:
    quick = QuickSampler.of(sampling.ParentBasedTraceIdRatio(1.0), FIELDS)
    assert quick is not None
    trace_id, header = traceparent("00")
    assert quick.decide([*HEADERS, header, (b"tracestate", b"k=v")]) == (int(trace_id, 16), False)
    # A sampled parent, a header we do not read exactly as the SDK does, or another
    # propagator's header: the SDK decides.
    assert quick.decide([*HEADERS, traceparent("01")[1]]) is None
    assert quick.decide([*HEADERS, (b"traceparent", header[1].upper())]) is None
    assert quick.decide([*HEADERS, header, header]) is None
    b3 = QuickSampler.of(sampling.DEFAULT_ON, FIELDS | {b"b3"})
    assert b3 is not None and b3.decide([*HEADERS, (b"b3", b"1")]) is None
    # traceidratio (not parent based) decides on the parent's trace id: the SDK's part.
    plain = QuickSampler.of(sampling.TraceIdRatioBased(1.0), FIELDS)
    assert plain is not None and plain.decide([*HEADERS, header]) is None


def test_a_sampled_request_is_traced_under_the_trace_id_it_was_decided_on(
    tracing: tuple[Tracing, InMemorySpanExporter],
) -> None:
    traced, exporter = tracing
    observers = [observe(traced, scope()) for _ in range(200)]
    sampled = [o for o in observers if o.trace is not None]
    assert 40 < len(sampled) < 160  # half of them, give or take
    for observer in sampled:
        assert observer.trace is not None
        observer.trace.end(200, "miss")
    traced.provider.force_flush()
    exported = {format(s.context.trace_id, "032x") for s in exporter.get_finished_spans()}
    assert exported == {o.record.trace_id for o in sampled}
    # Every request, sampled or not, has a trace id of its own for its log line.
    assert len({o.record.trace_id for o in observers}) == 200


def test_an_unsampled_request_calls_nothing_of_the_sdk(
    tracing: tuple[Tracing, InMemorySpanExporter],
) -> None:
    traced, _ = tracing
    sdk_calls: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and "opentelemetry" in frame.f_code.co_filename:
            sdk_calls.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

    client_trace, header = traceparent("00")
    unsampled: list[RequestObserver] = []
    sys.setprofile(profile)
    try:
        for _ in range(50):
            before = len(sdk_calls)
            observer = observe(traced, scope())
            if observer.trace is None:
                assert len(sdk_calls) == before
                unsampled.append(observer)
            else:  # the probe sees the SDK when it is used
                assert len(sdk_calls) > before
        before = len(sdk_calls)
        client = observe(traced, scope(header))  # the client's trace, not sampled
        assert len(sdk_calls) == before
    finally:
        sys.setprofile(None)
    assert 0 < len(unsampled) < 50
    assert client.trace is None and client.record.trace_id == client_trace
