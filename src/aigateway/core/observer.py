"""Who hears what one request's provider calls did: the node's metrics and its own record.

The request middleware makes one ``RequestObserver`` per request and hands it to the
route (``api.http.observer_of``), which passes it to the pipeline; the pipeline passes it
to dispatch and admission.  Nothing finds it in a context variable: code that calls a
provider without a request (a health probe, a test) passes what should hear it, and
where nothing should be kept, a ``RequestObserver`` over ``Accounting.private()`` does.

Dispatch needs only ``CallObserver``, which the worker's ``Accounting`` also satisfies
(node metrics, no per-request record).  The provider's circuit breaker is not fed from
here: dispatch feeds it itself (``core.health.Circuit.record``).

With tracing on (``aigateway.tracing``), a sampled request's observer also has a
``RequestTrace``, which turns the same events into spans; without one (tracing off, or the
request not sampled) each event costs one ``if`` more than its counting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aigateway.core.accounting import Accounting

if TYPE_CHECKING:
    from aigateway.providers.base import UpstreamCall
    from aigateway.wire import ApiRequest, Completed, Streaming

__all__ = ("CallObserver", "RequestObserver", "RequestRecord", "RequestTrace", "StreamRecord")


class CallObserver(Protocol):
    """What dispatch reports: every attempt of a provider call, and every retry."""

    def provider_call(self, provider: str, model: str, outcome: str, seconds: float) -> None:
        """One attempt: ok, cancelled, or the ``outcome`` of its failure's ``errors.Fault``."""
        ...

    def retry(self, provider: str) -> None: ...


@dataclass(slots=True)
class RequestRecord:
    """What happened to one request, for its log line and the overhead metric."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)
    provider: str = ""
    model: str = ""
    attempts: int = 0
    retries: int = 0
    failovers: int = 0
    provider_s: float = 0.0
    queue_wait_s: float = 0.0
    cost: float | None = None  # USD of the answer's usage, once it is known
    trace_id: str = ""  # with tracing on: the request's trace, for its log line
    # The tenant key's name, for the trace (``aigateway.key.name``); authentication
    # (``middleware.auth``) notes it.
    key_name: str = ""


@dataclass(slots=True)
class StreamRecord:
    """What one relayed provider stream did (``core.streaming.relay_stream`` fills it)."""

    provider: str
    model: str
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None  # when the first event with generated content came
    input_tokens: int | None = None  # as the provider reported them, if it did
    output_tokens: int | None = None
    response_model: str = ""
    finish_reasons: list[str] = field(default_factory=list)
    outcome: str = "complete"  # complete, broken, error or cancelled (the client left)


class RequestTrace(Protocol):
    """A sampled request's spans (``aigateway.tracing.otel`` builds them from the events)."""

    def routed(self, request: ApiRequest) -> None: ...

    def cache_lookup(
        self,
        lookup: Callable[[bytes, ApiRequest], Completed | Streaming | None],
        key: bytes,
        request: ApiRequest,
    ) -> Completed | Streaming | None: ...

    def queue_wait(self, provider: str, priority: str, seconds: float) -> None: ...

    def attempt(self, provider: str, model: str, outcome: str, seconds: float) -> None: ...

    def retry(self, provider: str) -> None: ...

    def failover(self, provider: str, model: str) -> None: ...

    def outgoing(self, call: UpstreamCall) -> UpstreamCall: ...

    def answered(self, completion: dict[str, Any]) -> None: ...

    def stream_ended(self, stream: StreamRecord) -> None: ...

    def end(self, status: int, cache: str) -> None: ...


class RequestObserver:
    """One request's observer: each event counted in the worker's ``accounting`` (node-wide)
    and noted in the request's ``record``."""

    __slots__ = ("accounting", "record", "trace")

    def __init__(
        self, accounting: Accounting, record: RequestRecord, trace: RequestTrace | None = None
    ) -> None:
        self.accounting = accounting
        self.record = record
        self.trace = trace

    def provider_call(self, provider: str, model: str, outcome: str, seconds: float) -> None:
        self.accounting.provider_call(provider, model, outcome, seconds)
        record = self.record
        record.attempts += 1
        record.provider_s += seconds
        if outcome == "ok":
            record.provider, record.model = provider, model
        if self.trace is not None:
            self.trace.attempt(provider, model, outcome, seconds)

    def retry(self, provider: str) -> None:
        self.accounting.retry(provider)
        self.record.retries += 1
        if self.trace is not None:
            self.trace.retry(provider)

    def failover(self, provider: str, model: str) -> None:
        """The request leaves ``provider`` (failed after its retries) for the next target."""
        self.accounting.failover(provider)
        self.record.failovers += 1
        if self.trace is not None:
            self.trace.failover(provider, model)

    def queue_wait(self, provider: str, priority: str, seconds: float) -> None:
        """Once per admitted request: how long it waited (0 when it went straight on)."""
        self.accounting.queue_wait(provider, priority, seconds)
        self.record.queue_wait_s += seconds
        if self.trace is not None:
            self.trace.queue_wait(provider, priority, seconds)

    def answered(self, provider: str, model: str, completion: dict[str, Any]) -> float | None:
        """A whole answer (in OpenAI's format, parsed): its usage counted and its cost
        returned (``usage``)."""
        cost = self.usage(provider, model, completion.get("usage"))
        if self.trace is not None:
            self.trace.answered(completion)
        return cost

    def stream_ended(self, stream: StreamRecord) -> None:
        """A provider stream relayed to its end (or broken off, or left by the client): time
        to its first token (from the request's start) and its tokens per second."""
        if stream.first_token is not None:
            first = stream.first_token
            tokens = stream.output_tokens
            seconds = time.perf_counter() - first
            rate = tokens / seconds if tokens and seconds > 0 else None
            self.accounting.stream(stream.provider, first - self.record.started, rate)
        if self.trace is not None:
            self.trace.stream_ended(stream)

    def usage(self, provider: str, model: str, usage: Any) -> float | None:
        """The answer's tokens and cost counted (``Accounting.usage``); the cost noted for
        the request's log line, and returned (None: no usage)."""
        return self._noted(self.accounting.usage(provider, model, usage))

    def usage_from_body(self, provider: str, model: str, body: bytes) -> float | None:
        """As ``usage``, from an OpenAI-format answer or stream chunk."""
        return self._noted(self.accounting.usage_from_body(provider, model, body))

    def _noted(self, usd: float | None) -> float | None:
        if usd is not None:
            record = self.record
            record.cost = usd if record.cost is None else record.cost + usd
        return usd
