"""Accounting: what the gateway did, counted for the whole node.

One ``Accounting`` per worker writes this worker's slot of the node's shared stats
(unlabelled metrics, ``hotpath.SharedStats``) and of its labelled series table
(``stats.series``); ``/metrics`` and ``/admin/stats`` sum every slot.  It is handed to
whoever counts, never found in a context variable; what one request did (its log line,
the overhead metric) is noted besides by that request's ``core.observer.RequestObserver``.

Who calls what::

    middleware      request_started / request_finished    (routes, statuses, latency)
    dispatch        provider_call, retry                  (every attempt, via the observer)
    pipeline        failover, usage / usage_from_body     (per target, per answer: tokens
                                                           and their cost in dollars)
                    queue_wait                            (around admission, via the observer)
                    avoided                               (calls batching saved)
    streaming       usage_from_body                       (usage of a streamed answer)
    health probes   probe                                 (core.probe, handed it by operations)

Calls the cache and de-duplication saved are counted by the cache, in its own store.

Every method is cheap and never raises.  Code that must count somewhere but should keep
nothing (a tool, a test) uses ``Accounting.private()``: real counters in private memory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import orjson

from aigateway.hotpath import SharedStats
from aigateway.pricing import PriceTable, to_nanos
from aigateway.stats.registry import SERIES, slot_table, stats_schema
from aigateway.stats.series import SeriesTable, series_key
from aigateway.wire import token_counts

__all__ = ("Accounting",)

MAX_MODELS_PER_PROVIDER: Final = 50
MAX_LABEL_CHARS: Final = 64
METHODS: Final = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
_UNSAFE = re.compile(r"[^A-Za-z0-9._:/@+\-]")


class Accounting:
    """This worker's writer of the node's metrics."""

    def __init__(
        self,
        stats: SharedStats,
        table: SeriesTable,
        providers: tuple[str, ...] = (),
        prices: PriceTable | None = None,
    ) -> None:
        self.stats = stats
        self.table = table
        self.prices = PriceTable.shipped() if prices is None else prices
        # Slot indices of the shared stats, resolved once (see ``stats.registry``).
        schema = stats.schema
        self._requests = slot_table(schema, "requests_answered", ())[()]
        self._dropped = slot_table(schema, "metric_series_dropped", ())[()]
        self._in_flight = slot_table(schema, "requests_in_flight", ())[()]
        self._request_s = slot_table(schema, "request_duration_seconds", ())[()]
        self._overhead_s = slot_table(schema, "gateway_overhead_seconds", ())[()]
        self._ttfb_s = slot_table(schema, "stream_first_byte_seconds", ())[()]
        self._cells: dict[tuple[str, ...], int] = {}
        self._providers = frozenset(providers)
        self._models: dict[str, set[str]] = {}

    @classmethod
    def private(
        cls,
        providers: tuple[str, ...] = (),
        series: int = 256,
        cells: int = 4096,
        prices: PriceTable | None = None,
    ) -> Accounting:
        """Counters in this process's own memory, read by nobody but its caller (a worker
        before its lifespan starts, a tool, a test)."""
        params = {"series": series, "cells": cells, "slots": 1}
        table = SeriesTable(memoryview(bytearray(SeriesTable.size(series, cells, 1))), params, None)
        return cls(SharedStats(stats_schema(providers)), table, providers, prices)

    # -- requests (middleware) -----------------------------------------------------------

    def request_started(self) -> None:
        self.stats.gauge_add(self._in_flight, 1)

    def request_finished(
        self,
        route: str,
        method: str,
        status: int,
        seconds: float,
        provider_s: float | None = None,
        first_byte_s: float | None = None,
    ) -> None:
        """Count one answered request (call it before its last byte goes out);
        ``provider_s``: the time its provider calls took, if it made any."""
        stats = self.stats
        stats.gauge_add(self._in_flight, -1)
        stats.incr(self._requests)
        stats.observe(self._request_s, seconds)
        method = method if method in METHODS else "OTHER"
        status_class = _status_class(status)
        self._add(("requests", route, method, status_class))
        if first_byte_s is not None:
            stats.observe(self._ttfb_s, first_byte_s)
        if provider_s is not None:
            end = first_byte_s if first_byte_s is not None else seconds
            stats.observe(self._overhead_s, max(end - provider_s, 0.0))

    # -- providers (dispatch, pipeline, streaming) --------------------------------------

    def provider_call(self, provider: str, model: str, outcome: str, seconds: float) -> None:
        """One attempt of a provider call: ok, cancelled, or the ``outcome`` of its failure's
        ``errors.Fault`` (see ``core.health.OUTCOMES``)."""
        provider = self._provider(provider)
        self._add(("provider_calls", provider, self._model(provider, model), outcome))
        self._observe(("provider_call_duration_seconds", provider), seconds)

    def retry(self, provider: str) -> None:
        self._add(("retries", self._provider(provider)))

    def failover(self, provider: str) -> None:
        """A request leaves ``provider`` (failed after its retries) for the next target."""
        self._add(("failovers", self._provider(provider)))

    def tokens(
        self, provider: str, model: str, prompt: int, completion: int, usd: float = 0.0
    ) -> None:
        """Tokens a provider reported, and what they cost (``usd``)."""
        provider_label = self._provider(provider)
        model_label = self._model(provider_label, model)
        if prompt > 0:
            self._add(("tokens", provider_label, model_label, "in"), prompt)
        if completion > 0:
            self._add(("tokens", provider_label, model_label, "out"), completion)
        nanos = to_nanos(usd)
        if nanos > 0:
            self._add(("spend_usd", provider_label, model_label), nanos)

    def usage(self, provider: str, model: str, usage: Any) -> float | None:
        """Tokens from an OpenAI ``usage`` object (odd counts clamped: ``wire.token_counts``)
        and their cost; returns the cost in USD, None when there is no usage."""
        if not isinstance(usage, Mapping):
            return None
        usd = self.prices.cost(model, usage)
        self.tokens(provider, model, *token_counts(usage), usd)
        return usd

    def usage_from_body(self, provider: str, model: str, body: bytes) -> float | None:
        """Tokens from an OpenAI-format answer body (chat completion or embeddings), and
        their cost in USD (None: the body carries no usage)."""
        if b'"usage"' not in body:
            return None
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(answer, dict):
            return None
        return self.usage(provider, model or str(answer.get("model") or ""), answer.get("usage"))

    # -- admission and batching ----------------------------------------------------------

    def queue_wait(self, provider: str, priority: str, seconds: float) -> None:
        """Once per admitted request: how long it waited (0 when it went straight on)."""
        self._observe(("queue_wait_seconds", _label(priority)), seconds)
        if seconds > 0:
            self._add(("rate_limit_waits", self._provider(provider)))

    def avoided(
        self,
        provider: str,
        model: str,
        via: str,
        calls: int = 1,
        prompt: int = 0,
        completion: int = 0,
    ) -> None:
        """Provider calls (and their tokens) saved, e.g. by coalescing (``via="batch"``)."""
        provider = self._provider(provider)
        model = self._model(provider, model)
        via = _label(via)
        self._add(("avoided_provider_calls", provider, model, via), calls)
        if prompt > 0:
            self._add(("avoided_tokens", provider, model, via, "in"), prompt)
        if completion > 0:
            self._add(("avoided_tokens", provider, model, via, "out"), completion)

    def probe(self, provider: str, outcome: str) -> None:
        self._add(("health_probes", self._provider(provider), outcome))

    # -- internals -----------------------------------------------------------------------

    def _cell(self, labels: tuple[str, ...]) -> int:
        cell = self._cells.get(labels)
        if cell is None:
            family = SERIES[labels[0]]
            key = series_key(family.name, tuple(zip(family.labels, labels[1:], strict=True)))
            cell = self.table.cell(family.series_kind, key, family.width)
            if cell < 0:
                self.stats.incr(self._dropped)
                return -1  # not remembered: a later call may find room after all
            self._cells[labels] = cell
        return cell

    def _add(self, labels: tuple[str, ...], n: int = 1) -> None:
        self.table.add(self._cell(labels), n)

    def _observe(self, labels: tuple[str, ...], value: float) -> None:
        self.table.observe(self._cell(labels), SERIES[labels[0]].bounds, value)

    def _provider(self, provider: str) -> str:
        if provider in self._providers or not self._providers:
            return _label(provider)
        return "other"

    def _model(self, provider: str, model: str) -> str:
        model = _label(model)
        seen = self._models.setdefault(provider, set())
        if model in seen:
            return model
        if len(seen) >= MAX_MODELS_PER_PROVIDER:
            return "other"
        seen.add(model)
        return model


def _status_class(status: int) -> str:
    """``2xx``...; 499 (the client left before its answer was complete) stands apart."""
    if status == 499:
        return "499"
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


def _label(value: str) -> str:
    """A label value: at most 64 characters of a safe set (others become ``_``)."""
    return _UNSAFE.sub("_", value[:MAX_LABEL_CHARS]) or "unknown"
