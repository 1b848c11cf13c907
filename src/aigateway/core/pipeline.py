"""The request pipeline: every step a request goes through, in order, on one screen.

key        the tenant key's models, requests a minute and in flight (keys.gate); its
           tokens a minute and budget reserved with each provider call, settled with it
route      model -> ordered targets (provider, model): aliases are fallback chains; an
           open circuit (core.health) takes its provider out
cache      key -> a stored answer (cache.service), served at once
dedup      identical requests in flight share one provider call (core.dedup); embeddings
           arriving together share one call (core.batching)
admission  priority queue, node-wide rate limits and pauses (core.admission); a
           provider's tokens per minute reserved by estimate, settled by the answer's
           usage (core.token_budget)
dispatch   provider adapter -> pooled upstream client, retries with backoff (core.dispatch,
           which also feeds the provider's circuit); on a provider-side failure (its
           ``errors.Fault``) the next target is tried
store      the answer kept for later hits (cache.service)
account    every step reports to the request's observer (core.observer), handed in by
           the caller: the node's metrics, the request's own record and, when the
           request is traced, its spans (aigateway.tracing)

Each request's observer is an argument, never found in a context variable, so the whole
pipeline runs in-process, without the HTTP layer (see tests/test_pipeline.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from aigateway.cache.service import ResponseCache
from aigateway.core.admission import Admission, ProviderGate
from aigateway.core.batching import EmbeddingBatcher
from aigateway.core.dedup import DEFAULT_MAX_LAG_BYTES, Coalescer, Gate
from aigateway.core.dispatch import Answer, Classifier, send_with_retries
from aigateway.core.media import RemoteMedia
from aigateway.core.observer import CallObserver, RequestObserver, RequestTrace
from aigateway.core.providers import Provider, usable_targets
from aigateway.core.retry import RetryPolicy
from aigateway.core.router import Router
from aigateway.core.streaming import relay_stream
from aigateway.core.token_budget import NO_RESERVATION, Reservation, estimate
from aigateway.errors import Fault, GatewayError, NotFound
from aigateway.keys.gate import NO_KEYS, Grant, KeyGate, NoKeys
from aigateway.providers._openai_format import load_any
from aigateway.providers.answering import answering
from aigateway.providers.base import (
    EmbeddingsAdapter,
    MessagesAdapter,
    ModelListAdapter,
    ProviderFailure,
    ResponsesAdapter,
    UpstreamCall,
)
from aigateway.scrub import Scrubber
from aigateway.wire import ApiRequest, Completed, Streaming, Target

logger = logging.getLogger("aigateway.pipeline")

# The longest wait a provider's Retry-After may impose by default (PROVIDER_PAUSE_MAX_SEC).
PROVIDER_PAUSE_MAX_S = 60.0


class Pipeline:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        router: Router,
        retry: RetryPolicy,
        request_timeout_s: float,
        media: RemoteMedia,
        cache: ResponseCache | None = None,
        admission: Admission | None = None,
        embedding_batches: tuple[int, float] | None = None,
        scrubber: Scrubber | None = None,
        stream_max_lag_bytes: int = DEFAULT_MAX_LAG_BYTES,
        provider_pause_max_s: float = PROVIDER_PAUSE_MAX_S,
        keys: KeyGate | None = None,
    ) -> None:
        """``embedding_batches`` is (most inputs per call, longest wait in seconds);
        ``scrubber`` takes the node's secrets out of what providers say in errors;
        ``stream_max_lag_bytes`` how far a reader of a shared stream may fall behind;
        ``provider_pause_max_s`` bounds every wait a provider asks for (``retry-after``);
        ``keys`` admits the requests of tenant keys."""
        self._providers = providers
        self._router = router
        self._retry = retry
        self._timeout_s = request_timeout_s
        self._media = media
        self._cache = cache
        self._admission = admission
        self._scrubber = scrubber or Scrubber(())
        self._pause_max_s = provider_pause_max_s
        self._keys: KeyGate | NoKeys = keys or NO_KEYS
        self._classifiers: dict[str, tuple[object, ProviderGate | None, Classifier]] = {}
        self._batcher = None
        if embedding_batches is not None:
            self._batcher = EmbeddingBatcher[RequestObserver](
                self._embed, *embedding_batches, _saved_calls
            )
        self._dedup = Coalescer(cache, stream_max_lag_bytes) if cache is not None else None

    async def chat(self, request: ApiRequest, observer: RequestObserver) -> Completed | Streaming:
        grant = self._keys.admit(request)  # key: its models, requests a minute, in flight
        return await grant.around(self._chat(request, observer))

    async def _chat(self, request: ApiRequest, observer: RequestObserver) -> Completed | Streaming:
        targets = self._route(request, observer)  # route
        if self._cache is None or self._dedup is None:
            return await self._dispatch(request, targets, self._deadline(request), observer)
        provider, model = targets[0]
        key = self._cache.key(request, provider.name, model)
        if key is None:  # the cache cannot serve this request: straight to the provider
            return await self._dispatch(request, targets, self._deadline(request), observer)
        # cache (the lookup in a span of its own when the request is traced)
        trace, lookup = observer.trace, self._cache.lookup
        hit = lookup(key, request) if trace is None else trace.cache_lookup(lookup, key, request)
        if hit is not None:
            return hit
        # A hit needs no deadline (asking for the loop's time is a getpid() on 3.11).
        deadline = self._deadline(request)
        # dedup, then dispatch and store. The shared call runs in a task of its own and
        # reports to its leader's observer (followers made no provider call of their own);
        # it may go on after the leader's client left, noting into a finished record.
        result = await self._dedup.run(
            key, request, lambda gate: self._dispatch(request, targets, deadline, observer, gate),
            deadline,
        )  # fmt: skip
        if not request.cache.read:
            result.cache = "bypass"
        return result

    async def _dispatch(
        self,
        request: ApiRequest,
        targets: list[tuple[Provider, str]],
        deadline: float,
        observer: RequestObserver,
        gate: Gate | None = None,
    ) -> Completed | Streaming:
        """``gate``: the cluster's lookup under way (core.dedup), awaited once the first
        call is built and before anything is spent on it: a second-tier hit or a follower
        of another node's call takes no rate token and reserves nothing (it raises
        ``ClusterAnswer`` through here)."""
        failure: GatewayError | None = None
        clients = self._clients_deadline(request)
        for i, (provider, model) in enumerate(targets):  # dispatch, failing over
            adapter = answering(request, provider.adapter)  # in the client's API
            more = i + 1 < len(targets)
            reservation = NO_RESERVATION
            try:
                if gate is not None and getattr(adapter, "inline_remote_images", False):
                    wait, gate = gate, None  # no image fetched for an answer already there
                    await wait()
                prepared = await self._media.prepare(request, adapter, deadline)
                call = adapter.chat_call(prepared, model)
                if gate is not None:
                    wait, gate = gate, None  # awaited once, before the first admission
                    await wait()
                reservation = await self._admit(provider, model, request, deadline, observer, more)
                answer = await self._send(
                    provider, call, deadline, observer, request.stream, model, clients,
                    observer.trace,
                )  # fmt: skip
            except GatewayError as exc:
                reservation.failed(exc.fault)  # its tokens back, unless the provider counted
                failure = _fail_over(provider, model, exc, deadline, more, observer)
                continue
            if request.stream:
                translator = self._scrubber.translator(adapter.chat_stream(prepared, model))
                events = relay_stream(answer, adapter, translator, observer, model=model)
                if reservation.metering:
                    events = reservation.metered(events)  # settled when the stream ends
                return Streaming(events, provider.name, model, answer.attempts)
            body = adapter.chat_response(answer.body, prepared, model)
            completion = _parsed(body)  # once, for the accounting and the cache
            cost = observer.answered(provider.name, model, completion)
            reservation.settle_usage(completion.get("usage"))
            return Completed(
                body, provider.name, model, answer.attempts, completion=completion, cost=cost
            )
        assert failure is not None
        try:
            raise failure
        finally:
            del failure  # as in _fail_over: this frame would hold its own error

    async def embeddings(self, request: ApiRequest, observer: RequestObserver) -> Completed:
        grant = self._keys.admit(request)  # key: its models, requests a minute, in flight
        return await grant.around(self._embeddings(request, observer))

    async def _embeddings(self, request: ApiRequest, observer: RequestObserver) -> Completed:
        deadline = self._deadline(request)
        batcher = self._batcher
        if batcher is None or not batcher.merges(request):
            return await self._embed(request, deadline, observer)
        # Coalesced with its neighbours: a merged call reports to the observer of its
        # first caller still waiting when it leaves (see core.batching). The merged call
        # carries no key: each caller's own key reserves here (refused alone) and is
        # charged its own part of the call's usage.
        first = usable_targets(
            self._router.targets(request.model, request.provider), self._providers
        )
        held = self._keys.reserve(request, first[0][1])
        try:
            answer = await batcher.embed(replace(request, tenant=""), deadline, observer)
        except GatewayError as exc:
            if held is not None:
                held.failed(exc.fault)
            raise
        except BaseException:  # the client left: the call may have been made
            if held is not None:
                held.failed(Fault.DEADLINE)
            raise
        if held is not None:
            held.model = answer.model  # priced as answered (a fallback's model, say)
            held.settle_usage(_parsed(answer.body).get("usage"))
        return answer

    async def _embed(
        self, request: ApiRequest, deadline: float, observer: RequestObserver
    ) -> Completed:
        clients = self._clients_deadline(request)
        failure: GatewayError | None = None
        targets = self._route(request, observer)
        for i, (provider, model) in enumerate(targets):
            adapter = provider.adapter
            more = i + 1 < len(targets)
            if not isinstance(adapter, EmbeddingsAdapter):
                failure = NotFound(  # like OpenAI's answer for a model of another kind
                    f"provider {provider.name!r} does not offer embeddings",
                    param="model",
                    code="unsupported_operation",
                )
                continue
            reservation = NO_RESERVATION
            try:
                reservation = await self._admit(provider, model, request, deadline, observer, more)
                call = adapter.embeddings_call(request, model)
                answer = await self._send(
                    provider, call, deadline, observer, model=model, clients=clients,
                    trace=observer.trace,
                )  # fmt: skip
            except GatewayError as exc:
                reservation.failed(exc.fault)
                failure = _fail_over(provider, model, exc, deadline, more, observer)
                continue
            body = adapter.embeddings_response(answer.body, request, model)
            cost = observer.usage_from_body(provider.name, model, body)
            if reservation.metering:
                reservation.settle_usage(_parsed(body).get("usage"))
            return Completed(body, provider.name, model, answer.attempts, cost=cost)
        assert failure is not None
        raise failure

    async def count_tokens(self, request: ApiRequest, observer: RequestObserver) -> bytes | None:
        """The first target's own count of a Messages request (``{"input_tokens": N}``),
        or None when that target cannot count (the caller estimates)."""
        deadline = self._deadline(request)
        provider, model = self._route(request, observer)[0]
        adapter = provider.adapter
        if not isinstance(adapter, MessagesAdapter):
            return None
        reservation = await self._admit(provider, model, request, deadline, observer)
        reservation.settle(0)  # counting generates nothing: the estimate goes back
        call = adapter.count_tokens_call(request, model)
        clients = self._clients_deadline(request)
        answer = await self._send(
            provider, call, deadline, observer, model=model, clients=clients, trace=observer.trace
        )
        return answer.body

    async def forget_response(
        self, provider_name: str, response_id: str, observer: CallObserver
    ) -> None:
        """``DELETE /v1/responses/{id}`` of a response its provider keeps too (OpenAI's
        Responses API): forgotten there as well. Raises the provider's error."""
        provider = self._providers.get(provider_name)
        if provider is None or not isinstance(provider.adapter, ResponsesAdapter):
            return
        call = provider.adapter.responses_delete_call(response_id)
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        await self._send(provider, call, deadline, observer)

    async def models(self, observer: CallObserver) -> list[dict[str, Any]]:
        """Every usable provider's models in one list, each naming its provider."""
        usable = [
            p
            for p in self._providers.values()
            if p.usable and isinstance(p.adapter, ModelListAdapter)
        ]
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        results = await asyncio.gather(
            *(self._models_of(p, deadline, observer) for p in usable), return_exceptions=True
        )
        models: list[dict[str, Any]] = []
        for provider, result in zip(usable, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, GatewayError):
                    raise result
                logger.warning("could not list the models of %s: %s", provider.name, result)
                continue
            models.extend(result)
        return models

    async def model(self, model_id: str, observer: CallObserver) -> dict[str, Any] | None:
        """``GET /v1/models/{id}``: an alias, or a model some provider lists (as
        ``provider/model`` too); None when neither."""
        if self._router.is_alias(model_id):
            return {"id": model_id, "object": "model", "created": 0, "owned_by": "aigateway"}
        for model in await self.models(observer):
            if model_id in (model.get("id"), f"{model.get('provider')}/{model.get('id')}"):
                return {**model, "id": model_id}
        return None

    async def _models_of(
        self, provider: Provider, deadline: float, observer: CallObserver
    ) -> list[dict[str, Any]]:
        adapter = provider.adapter
        assert isinstance(adapter, ModelListAdapter)
        answer = await self._send(provider, adapter.models_call(), deadline, observer)
        return [
            {**model, "provider": provider.name} for model in adapter.models_response(answer.body)
        ]

    def _deadline(self, request: ApiRequest) -> float:
        """REQUEST_TIMEOUT_SEC, or the client's shorter ``x-aigateway-timeout-ms``."""
        timeout = self._timeout_s
        if request.timeout_s is not None:
            timeout = min(timeout, request.timeout_s)
        return asyncio.get_running_loop().time() + timeout

    def _clients_deadline(self, request: ApiRequest) -> bool:
        """Whether the deadline is the client's own: running out of it is not the provider's
        failure (the gateway's own REQUEST_TIMEOUT_SEC is)."""
        return request.timeout_s is not None and request.timeout_s < self._timeout_s

    def admit(self, request: ApiRequest) -> Grant:
        """The tenant key's admission of ``request``, as ``chat`` makes it (``KeyGate``)."""
        return self._keys.admit(request)

    def first_target(self, model: str, provider: str | None) -> tuple[str, str] | None:
        """(provider, model) a chat request for ``model`` goes to first now, as ``_route``
        picks it; None when it would be refused (the whole path says why)."""
        try:
            targets = usable_targets(self._router.targets(model, provider), self._providers)
        except GatewayError:
            return None
        chosen, target_model = targets[0]
        return chosen.name, target_model

    def _route(self, request: ApiRequest, observer: RequestObserver) -> list[tuple[Provider, str]]:
        if observer.trace is not None:
            observer.trace.routed(request)
        targets: list[Target] = self._router.targets(request.model, request.provider)
        return usable_targets(targets, self._providers)

    async def _admit(
        self,
        provider: Provider,
        model: str,
        request: ApiRequest,
        deadline: float,
        observer: RequestObserver,
        more: bool = False,
    ) -> Reservation:
        """``more``: a later target can take the request, so a paused provider is skipped.
        The answer: the tokens reserved of the provider's TPM (and of the tenant key's
        TPM and budget, for ``model``), to settle after the call."""
        held = self._keys.reserve(request, model)  # the key's tokens a minute, budget
        if held is not None and held.pending is not None:
            held = await held.lease()  # its tokens leased from the cluster first
        try:
            reservation = await self._admit_provider(provider, request, deadline, observer, more)
        except BaseException:
            if held is not None:
                held.cancel()  # no call was made
            raise
        return reservation if held is None else held.joined(reservation)

    async def _admit_provider(
        self,
        provider: Provider,
        request: ApiRequest,
        deadline: float,
        observer: RequestObserver,
        more: bool,
    ) -> Reservation:
        admission = self._admission
        if admission is None:
            return NO_RESERVATION
        name, priority = provider.name, request.priority
        tokens = estimate(request) if admission.token_limited(name) else None
        started = time.perf_counter()
        reservation = await admission.admit(name, priority, deadline, more, tokens)
        observer.queue_wait(name, priority, time.perf_counter() - started)
        return reservation

    async def _send(
        self,
        provider: Provider,
        call: UpstreamCall,
        deadline: float,
        observer: CallObserver,
        stream: bool = False,
        model: str = "",
        clients: bool = False,
        trace: RequestTrace | None = None,
    ) -> Answer:
        """``trace``: the request's, which may add its ``traceparent`` to the call."""
        if trace is not None:
            call = trace.outgoing(call)
        gate = self._admission.gate(provider.name) if self._admission is not None else None
        classify = self._classifier(provider, gate)
        answer = await send_with_retries(
            provider.client, call, classify, self._retry, deadline,
            provider=provider.name, observer=observer, circuit=provider.circuit, stream=stream,
            model=model, clients_deadline=clients,
        )  # fmt: skip
        if gate is not None:
            gate.succeeded()
        return answer

    def _classifier(self, provider: Provider, gate: ProviderGate | None) -> Classifier:
        """The provider's error classifier, scrubbed and bounded, built once per adapter
        rather than per call (it is used only when a call fails)."""
        adapter = provider.adapter
        known = self._classifiers.get(provider.name)
        if known is not None and known[0] is adapter and known[1] is gate:
            return known[2]
        classify = self._scrubber.classifier(adapter.classify_error)
        classify = _bounded_waits(classify, gate, self._pause_max_s)
        self._classifiers[provider.name] = (adapter, gate, classify)
        return classify


def _bounded_waits(classify: Classifier, gate: ProviderGate | None, longest_s: float) -> Classifier:
    """A provider's ``retry-after`` bounded by PROVIDER_PAUSE_MAX_SEC, for the retry policy
    and the client's ``Retry-After`` alike; a rate limit also pauses and slows the provider
    for the whole node (see admission), for that bounded time."""

    def bounded(status: int, headers: Mapping[str, str], body: bytes) -> ProviderFailure:
        failure = classify(status, headers, body)
        error = failure.error
        if error.retry_after_s is not None and not error.retry_after_s <= longest_s:
            error.retry_after_s = longest_s
        wait = failure.retry_after_s
        if wait is not None and not wait <= longest_s:
            failure = ProviderFailure(error, longest_s)
        if gate is not None and error.fault is Fault.RATE_LIMITED:
            gate.rate_limited(failure.retry_after_s)
        return failure

    return bounded


def _parsed(body: bytes) -> dict[str, Any]:
    """An adapter's OpenAI-format answer as a dict (empty if it somehow is not one)."""
    parsed = load_any(body)
    return parsed if isinstance(parsed, dict) else {}


def _saved_calls(observer: RequestObserver, provider: str, model: str, n: int) -> None:
    observer.accounting.avoided(provider, model, "batch", calls=n)


def _fail_over(
    provider: Provider,
    model: str,
    error: GatewayError,
    deadline: float,
    more: bool,
    observer: RequestObserver,
) -> GatewayError:
    """The failure to report if no later target answers; raised at once when it is not the
    provider's (see ``errors.Fault``), no target is left, or no time for one."""
    if not (error.fault.fails_over and more) or asyncio.get_running_loop().time() >= deadline:
        try:
            raise error
        finally:
            del error  # this frame, in the error's traceback, would hold it: a cycle
    observer.failover(provider.name, model)
    logger.warning("%s/%s failed, trying the next target: %s", provider.name, model, error.message)
    # Kept while the next target is tried: without its traceback, which holds this frame,
    # the request's frames and the error would form a cycle only the collector frees.
    return error.with_traceback(None)
