"""Who hears what one request's provider calls did: the node's metrics and its own record.

The request middleware makes one ``RequestObserver`` per request and hands it to the
route (``api.http.observer_of``), which passes it to the pipeline; the pipeline passes it
to dispatch and admission.  Nothing finds it in a context variable: code that calls a
provider without a request (a health probe, a test) passes what should hear it, and
where nothing should be kept, a ``RequestObserver`` over ``Accounting.private()`` does.

Dispatch needs only ``CallObserver``, which the worker's ``Accounting`` also satisfies
(node metrics, no per-request record).  The provider's circuit breaker is not fed from
here: dispatch feeds it itself (``core.health.Circuit.record``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from aigateway.core.accounting import Accounting

__all__ = ("CallObserver", "RequestObserver", "RequestRecord")


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


class RequestObserver:
    """One request's observer: each event counted in the worker's ``accounting`` (node-wide)
    and noted in the request's ``record``."""

    __slots__ = ("accounting", "record")

    def __init__(self, accounting: Accounting, record: RequestRecord) -> None:
        self.accounting = accounting
        self.record = record

    def provider_call(self, provider: str, model: str, outcome: str, seconds: float) -> None:
        self.accounting.provider_call(provider, model, outcome, seconds)
        record = self.record
        record.attempts += 1
        record.provider_s += seconds
        if outcome == "ok":
            record.provider, record.model = provider, model

    def retry(self, provider: str) -> None:
        self.accounting.retry(provider)
        self.record.retries += 1

    def failover(self, provider: str, model: str) -> None:
        """The request leaves ``provider`` (failed after its retries) for the next target."""
        self.accounting.failover(provider)
        self.record.failovers += 1

    def queue_wait(self, provider: str, priority: str, seconds: float) -> None:
        """Once per admitted request: how long it waited (0 when it went straight on)."""
        self.accounting.queue_wait(provider, priority, seconds)
        self.record.queue_wait_s += seconds

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
