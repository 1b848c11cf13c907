"""One worker's OpenTelemetry tracing: a span per ``/v1/`` request and its children.

Imported only when tracing is on (``aigateway.tracing.start``).  The SDK reads the
standard variables itself: the service name (``OTEL_SERVICE_NAME``, else ``aigateway``)
and resource, the sampler (``OTEL_TRACES_SAMPLER`` / ``_ARG``), the exporter's endpoint,
headers and timeouts, the batch processor's delays, the propagators (``OTEL_PROPAGATORS``).

A request's spans (``RequestSpans``, the ``core.observer.RequestTrace`` of a sampled
request)::

    chat {model}            SERVER  the request, from the middleware to its last byte
      cache lookup          INTERNAL                          aigateway.cache.result
      queue wait            INTERNAL  admission               aigateway.priority
      chat {model}          CLIENT  each provider attempt     aigateway.outcome
      stream                INTERNAL  a provider stream relayed to its end

The queue wait, attempts and stream are reported to the observer when they are over,
with how long they took: their spans are written then, with their start put back.  The
parent is always the request's span, given explicitly (never the SDK's current context).

A request that is not sampled touches nothing of the SDK when the sampler is a standard
one (``tracing.sampling.QuickSampler`` decides, the same way the SDK would): it gets a
trace id for its log line and an observer without spans, as with tracing off.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.util.types import AttributeValue
from starlette.types import Scope

from aigateway import __version__
from aigateway.core.accounting import Accounting
from aigateway.core.observer import RequestObserver, RequestRecord, StreamRecord
from aigateway.providers.base import UpstreamCall
from aigateway.tracing.sampling import PresetTraceIds, QuickSampler
from aigateway.wire import ApiRequest, Completed, Streaming, token_counts

__all__ = ("RequestSpans", "Tracing")

SERVICE: Final = "aigateway"
TRACED_PREFIX: Final = "/v1/"  # the API; ops, admin and dashboard requests are not traced


class Tracing:
    """The worker's tracer provider, exporter and batch processor (after the fork: in
    the worker's lifespan), and the observers of its requests."""

    def __init__(self, exporter: str | SpanExporter = "otlp", *, propagate: bool = False) -> None:
        """``exporter``: ``otlp``, ``console``, or an exporter of the caller's (a benchmark)."""
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: SERVICE}))
        self._ids = PresetTraceIds()
        # the sampler from OTEL_*
        self.provider = TracerProvider(resource=resource, id_generator=self._ids)
        if isinstance(exporter, str):
            exporter = ConsoleSpanExporter() if exporter == "console" else OTLPSpanExporter()
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("aigateway", __version__)
        self.propagate = propagate
        self._fields = frozenset(f.lower().encode() for f in propagate_fields())
        # None: a sampler of the user's own, or the SDK disabled: the SDK decides each time
        self._quick = (
            None
            if self.provider._disabled
            else QuickSampler.of(self.provider.sampler, self._fields)
        )

    def observer(
        self, scope: Scope, accounting: Accounting, record: RequestRecord
    ) -> RequestObserver:
        """The request's observer: with spans when it is an API request and sampled."""
        path: str = scope.get("path", "")
        if not path.startswith(TRACED_PREFIX):
            return RequestObserver(accounting, record)
        parent = None
        decided = None if self._quick is None else self._quick.decide(scope.get("headers", ()))
        if decided is not None:
            trace_id, sampled = decided
            if not sampled:  # nine in ten at 10%: nothing of the SDK
                record.trace_id = format(trace_id, "032x")
                return RequestObserver(accounting, record)
            self._ids.next_trace_id = trace_id  # a new trace: the SDK samples this id too
        else:
            parent = self._parent(scope)
        return self._start(scope, path, parent, accounting, record)

    def _parent(self, scope: Scope) -> Context | None:
        """The client's trace context, from the headers the propagators read."""
        carrier = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope.get("headers", ())
            if key in self._fields
        }
        return propagate.extract(carrier) if carrier else None

    def _start(
        self,
        scope: Scope,
        path: str,
        parent: Context | None,
        accounting: Accounting,
        record: RequestRecord,
    ) -> RequestObserver:
        method: str = scope.get("method", "")
        span = self.tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": path[:200],
                "aigateway.request_id": record.request_id,
            },
        )
        self._ids.next_trace_id = 0  # used, or left by a tracer that started nothing
        record.trace_id = format(span.get_span_context().trace_id, "032x")
        if not span.is_recording():  # not sampled: nothing more to note
            return RequestObserver(accounting, record)
        return RequestObserver(accounting, record, RequestSpans(self, span, record, scope))

    async def shutdown(self) -> None:
        """Export what is buffered and stop (the SDK's shutdown blocks: off the loop)."""
        await asyncio.to_thread(self.provider.shutdown)


def propagate_fields() -> set[str]:
    """The headers the configured propagators read (``traceparent``, ``tracestate``...)."""
    return set(propagate.get_global_textmap().fields)


def _past(seconds: float) -> tuple[int, int]:
    """(start, end) in Unix nanoseconds of something that ended now after ``seconds``."""
    end = time.time_ns()
    return end - int(seconds * 1e9), end


class RequestSpans:
    """A sampled request's spans, written from its observer's events."""

    __slots__ = ("_attempts", "_context", "_tracer", "finish_reasons", "input_tokens",
                 "operation", "output_tokens", "propagate", "record", "request_model",
                 "response_model", "scope", "span")  # fmt: skip

    def __init__(self, tracing: Tracing, span: Span, record: RequestRecord, scope: Scope) -> None:
        self._tracer = tracing.tracer
        self.propagate = tracing.propagate
        self.span = span
        self._context = set_span_in_context(span)
        self.record = record
        self.scope = scope
        self.operation = ""
        self.request_model = ""
        self.response_model = ""
        self.finish_reasons: list[str] = []
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self._attempts: dict[str, int] = {}

    def routed(self, request: ApiRequest) -> None:
        if self.request_model:  # a batch routes several: the first names the request
            return
        self.operation = "embeddings" if request.operation == "embeddings" else "chat"
        self.request_model = request.model
        self.span.set_attributes(
            {
                "gen_ai.operation.name": self.operation,
                "gen_ai.request.model": request.model,
                "aigateway.priority": request.priority,
                "aigateway.stream": request.stream,
            }
        )

    def cache_lookup(
        self,
        lookup: Callable[[bytes, ApiRequest], Completed | Streaming | None],
        key: bytes,
        request: ApiRequest,
    ) -> Completed | Streaming | None:
        span = self._tracer.start_span("cache lookup", context=self._context)
        try:
            answer = lookup(key, request)
            result = "hit" if answer is not None else "miss" if request.cache.read else "bypass"
            span.set_attribute("aigateway.cache.result", result)
            return answer
        finally:
            span.end()

    def queue_wait(self, provider: str, priority: str, seconds: float) -> None:
        start, end = _past(seconds)
        attributes = {"gen_ai.provider.name": provider, "aigateway.priority": priority}
        span = self._tracer.start_span(
            "queue wait", context=self._context, start_time=start, attributes=attributes
        )
        span.end(end)

    def attempt(self, provider: str, model: str, outcome: str, seconds: float) -> None:
        number = self._attempts.get(provider, 0) + 1
        self._attempts[provider] = number
        start, end = _past(seconds)
        operation = self.operation or "chat"
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "aigateway.attempt": number,
            "aigateway.outcome": outcome,
        }
        span = self._tracer.start_span(
            f"{operation} {model}",
            context=self._context,
            kind=SpanKind.CLIENT,
            start_time=start,
            attributes=attributes,
        )
        if outcome != "ok":
            span.set_attribute("error.type", outcome)
            span.set_status(Status(StatusCode.ERROR, f"{provider}: {outcome}"))
        span.end(end)

    def retry(self, provider: str) -> None:
        self.span.add_event("retry", {"gen_ai.provider.name": provider})

    def failover(self, provider: str, model: str) -> None:
        attributes = {"gen_ai.provider.name": provider, "gen_ai.request.model": model}
        self.span.add_event("failover", attributes)

    def outgoing(self, call: UpstreamCall) -> UpstreamCall:
        """The call with the request's ``traceparent`` (OTEL_PROPAGATE_TO_PROVIDERS)."""
        if not self.propagate:
            return call
        headers = dict(call.headers)
        propagate.inject(headers, context=self._context)
        return dataclasses.replace(call, headers=headers)

    def answered(self, completion: dict[str, Any]) -> None:
        self._note(completion.get("model"), completion.get("usage"))
        choices = completion.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            reason = choice.get("finish_reason") if isinstance(choice, dict) else None
            if isinstance(reason, str):
                self.finish_reasons.append(reason)
        if isinstance(completion.get("stop_reason"), str):  # Anthropic's Messages format
            self.finish_reasons.append(completion["stop_reason"])

    def stream_ended(self, stream: StreamRecord) -> None:
        now = time.perf_counter()
        start, end = _past(now - stream.started)
        self._note(stream.response_model, None)
        if stream.input_tokens is not None or stream.output_tokens is not None:
            self.input_tokens, self.output_tokens = stream.input_tokens, stream.output_tokens
        self.finish_reasons.extend(stream.finish_reasons)
        attributes = {
            "gen_ai.provider.name": stream.provider,
            "aigateway.stream.outcome": stream.outcome,
            **self._answer_attributes(),
        }
        span = self._tracer.start_span(
            "stream", context=self._context, start_time=start, attributes=attributes
        )
        if stream.first_token is not None:
            span.add_event("first token", timestamp=end - int((now - stream.first_token) * 1e9))
        if stream.outcome in ("broken", "error"):
            span.set_status(Status(StatusCode.ERROR, f"stream {stream.outcome}"))
        span.end(end)

    def end(self, status: int, cache: str) -> None:
        """The request answered with ``status``; ``cache``: its x-aigateway-cache."""
        record, span = self.record, self.span
        route = getattr(self.scope.get("route"), "path", None)
        attributes: dict[str, AttributeValue] = {
            "http.response.status_code": status,
            "aigateway.retries": record.retries,
            "aigateway.failovers": record.failovers,
            **self._answer_attributes(),
        }
        optional = {
            "http.route": route,
            "aigateway.cache.result": cache,
            "gen_ai.provider.name": record.provider,
            "aigateway.key.name": record.key_name,
        }
        attributes.update((k, v) for k, v in optional.items() if v)
        span.set_attributes(attributes)
        if self.operation and self.request_model:
            span.update_name(f"{self.operation} {self.request_model}")
        elif route:
            span.update_name(f"{self.scope.get('method', '')} {route}")
        if status >= 500:
            span.set_attribute("error.type", str(status))
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def _note(self, model: object, usage: object) -> None:
        if isinstance(model, str) and model:
            self.response_model = model
        if isinstance(usage, Mapping):
            self.input_tokens, self.output_tokens = token_counts(usage)

    def _answer_attributes(self) -> dict[str, AttributeValue]:
        attributes: dict[str, AttributeValue] = {}
        if self.response_model:
            attributes["gen_ai.response.model"] = self.response_model
        if self.input_tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = self.input_tokens
        if self.output_tokens is not None:
            attributes["gen_ai.usage.output_tokens"] = self.output_tokens
        if self.finish_reasons:
            attributes["gen_ai.response.finish_reasons"] = tuple(self.finish_reasons)
        return attributes
