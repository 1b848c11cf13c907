"""Coalesced embedding batches: requests that arrive together share one provider call.

Embedding requests for the same model (and dimensions, encoding and provider) are merged
into one upstream call with a list ``input`` (OpenAI's list; Gemini's
``batchEmbedContents`` through its adapter), up to ``BATCH_SIZE`` inputs, and the vectors
are split back to each caller in order. When a batch leaves:

- at once when it is full;
- while a call of its group is in flight, newcomers gather for the next call, which
  leaves when one of those calls ends: a slow provider gets fewer, fuller calls however
  the requests are spread in time;
- with nothing in flight, as soon as no other request has arrived for ``IDLE_S`` (10 ms),
  so a lone request goes (almost) at once. (Measured on loopback, 32 concurrent clients
  reach a worker spread over more than 5 ms; 10 ms lets them share the first call.)
- in any case ``BATCH_TIMEOUT_MS`` after its first request.

Each caller keeps its own deadline: it gets 504 when its deadline passes, whether it is
still gathering (it leaves the batch) or in a call that goes on for the others. A call's
deadline is the latest of its callers'; once every caller of a call has left, the call is
cancelled. A failed merged call fails only the callers in it, each with the provider's
error.

Each caller brings its own observer (whatever the pipeline hands in; opaque here). A
merged call runs in a task of its own, as its first caller still waiting when it leaves:
that caller's observer hears the call and its saved calls, and its context names the
call's log lines; the other callers' records note no provider call (they made none).

Each caller's answer carries its part of the call's usage and cost, by its inputs' share
of the prompt tokens (estimated as ``core.token_budget.estimate`` does: characters / 4),
the parts summing to the call's; the pipeline charges each caller's tenant key that part.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson

from aigateway.core.token_budget import estimate
from aigateway.errors import GatewayError, GatewayTimeout, ProviderError
from aigateway.wire import ApiRequest, Completed

IDLE_S = 0.01
PRIORITY_ORDER = ("critical", "high", "normal", "low")

Obs = TypeVar("Obs")  # a caller's observer

# One provider call for a request, within a deadline on the event loop's clock.
Embed = Callable[[ApiRequest, float, Obs], Awaitable[Completed]]


@dataclass(eq=False)
class _Caller(Generic[Obs]):
    request: ApiRequest
    inputs: list[Any]
    deadline: float
    future: asyncio.Future[Completed]
    observer: Obs
    context: contextvars.Context  # the caller's own (its request id in log lines)
    weight: int  # its inputs' estimated prompt tokens: its share of the call's usage


@dataclass(eq=False)
class _Batch(Generic[Obs]):
    callers: list[_Caller[Obs]] = field(default_factory=list)
    size: int = 0
    idle: asyncio.TimerHandle | None = None
    cap: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None  # set once sent


@dataclass(eq=False)
class _Group:
    """The requests of one (model, provider, dimensions, encoding)."""

    gathering: _Batch[Any] | None = None
    in_flight: set[_Batch[Any]] = field(default_factory=set)


class EmbeddingBatcher(Generic[Obs]):
    def __init__(
        self,
        embed: Embed[Obs],
        max_inputs: int,
        max_wait_s: float,
        on_saved: Callable[[Obs, str, str, int], None],
        idle_s: float = IDLE_S,
    ) -> None:
        self._embed = embed
        self._max_inputs = max_inputs
        self._max_wait_s = max_wait_s
        self._idle_s = min(idle_s, max_wait_s)
        self._on_saved = on_saved
        self._groups: dict[tuple[Any, ...], _Group] = {}

    def merges(self, request: ApiRequest) -> bool:
        """Whether ``embed`` would coalesce ``request`` with others (texts, fewer than a
        batch's worth); token arrays and full batches go as they are."""
        return self._inputs(request) is not None

    def _inputs(self, request: ApiRequest) -> list[str] | None:
        value = request.body.get("input")
        inputs = [value] if isinstance(value, str) else value
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            return None
        return inputs if len(inputs) < self._max_inputs else None

    async def embed(self, request: ApiRequest, deadline: float, observer: Obs) -> Completed:
        """The answer to ``request`` alone; ``observer`` hears the provider call if this
        request is the first of its batch still waiting when the batch leaves."""
        inputs = self._inputs(request)
        if inputs is None:
            return await self._embed(request, deadline, observer)
        loop = asyncio.get_running_loop()
        key = _group_key(request)
        group = self._groups.setdefault(key, _Group())
        batch = group.gathering
        if batch is not None and batch.size + len(inputs) > self._max_inputs:
            self._send(key, batch)
            batch = None
        if batch is None:
            batch = group.gathering = _Batch()
            batch.cap = loop.call_later(self._max_wait_s, self._send, key, batch)
        future = loop.create_future()
        weight = estimate(request).prompt
        context = contextvars.copy_context()
        caller = _Caller(request, inputs, deadline, future, observer, context, weight)
        batch.callers.append(caller)
        batch.size += len(inputs)
        if batch.idle is not None:
            batch.idle.cancel()
            batch.idle = None
        if batch.size >= self._max_inputs:
            self._send(key, batch)
        elif not group.in_flight:
            batch.idle = loop.call_later(self._idle_s, self._send, key, batch)
        # else: it leaves when a call of its group ends (or at the cap)
        try:
            async with asyncio.timeout_at(deadline):
                return await caller.future
        except TimeoutError:
            raise GatewayTimeout(
                "the embedding call did not finish within the request's deadline"
            ) from None
        finally:
            if not caller.future.done():
                caller.future.cancel()  # the deadline passed, or the client left
            self._leave(key, batch, caller)

    def _leave(self, key: tuple[Any, ...], batch: _Batch[Obs], caller: _Caller[Obs]) -> None:
        """A caller is done: drop it from a batch still gathering; cancel a sent call
        that nobody waits for any more."""
        if batch.task is None:
            if caller in batch.callers:
                batch.callers.remove(caller)
                batch.size -= len(caller.inputs)
            if not batch.callers:
                group = self._groups.get(key)
                if group is not None and group.gathering is batch:
                    group.gathering = None
                    _stop_timers(batch)
                    self._forget_if_idle(key, group)
        elif all(c.future.done() for c in batch.callers):
            batch.task.cancel()

    def _send(self, key: tuple[Any, ...], batch: _Batch[Obs]) -> None:
        group = self._groups.get(key)
        if group is None or group.gathering is not batch:
            return  # already sent (a timer raced the full batch)
        group.gathering = None
        _stop_timers(batch)
        batch.callers = [c for c in batch.callers if not c.future.done()]
        if not batch.callers:
            self._forget_if_idle(key, group)
            return
        batch.size = sum(len(c.inputs) for c in batch.callers)
        group.in_flight.add(batch)
        deadline = max(c.deadline for c in batch.callers)
        # As its first caller still waiting: see the module's docstring.
        task = asyncio.get_running_loop().create_task(
            self._call(batch, deadline), context=batch.callers[0].context
        )
        # A callback, not a `finally`: a task cancelled before its first step never runs.
        task.add_done_callback(lambda _: self._ended(key, group, batch))
        batch.task = task

    def _ended(self, key: tuple[Any, ...], group: _Group, batch: _Batch[Obs]) -> None:
        group.in_flight.discard(batch)
        if group.gathering is not None:
            self._send(key, group.gathering)  # the next call was waiting for this one
        self._forget_if_idle(key, group)

    def _forget_if_idle(self, key: tuple[Any, ...], group: _Group) -> None:
        if group.gathering is None and not group.in_flight and self._groups.get(key) is group:
            del self._groups[key]

    async def _call(self, batch: _Batch[Obs], deadline: float) -> None:
        callers = batch.callers
        observer = callers[0].observer
        try:
            if len(callers) == 1:
                merged = callers[0].request
            else:
                first = callers[0].request
                body = {**first.body, "input": [i for c in callers for i in c.inputs]}
                priority = min((c.request.priority for c in callers), key=PRIORITY_ORDER.index)
                # The call runs to its latest caller's deadline: the gateway's own when
                # any caller set none, so its timeout is not blamed on a client.
                timeouts = [c.request.timeout_s for c in callers]
                timeout_s = None if None in timeouts else max(t for t in timeouts if t is not None)
                merged = dataclasses.replace(
                    first,
                    body=body,
                    raw=orjson.dumps(body),
                    priority=priority,
                    timeout_s=timeout_s,
                )
            result = await self._embed(merged, deadline, observer)
            if len(callers) > 1:
                self._on_saved(observer, result.provider, result.model, len(callers) - 1)
                _split(result, callers, batch.size)
            elif not callers[0].future.done():
                callers[0].future.set_result(result)
        except GatewayError as exc:
            _fail(callers, exc)
        except Exception as exc:
            error = ProviderError(f"the batched embedding call failed: {type(exc).__name__}")
            _fail(callers, error)


def _stop_timers(batch: _Batch[Any]) -> None:
    for timer in (batch.idle, batch.cap):
        if timer is not None:
            timer.cancel()
    batch.idle = batch.cap = None


def _fail(callers: list[_Caller[Any]], error: GatewayError) -> None:
    for caller in callers:
        if not caller.future.done():
            caller.future.set_exception(error)


def _group_key(request: ApiRequest) -> tuple[Any, ...]:
    body = request.body
    return (request.model, request.provider, body.get("dimensions"), body.get("encoding_format"))


def _split(result: Completed, callers: list[_Caller[Any]], total: int) -> None:
    answer = orjson.loads(result.body)
    data = sorted(answer.get("data") or (), key=lambda item: item.get("index", 0))
    if len(data) != total:
        error = ProviderError(f"{result.provider} answered {len(data)} embeddings for {total}")
        _fail(callers, error)
        return
    usage = answer.get("usage") or {}
    prompt_tokens = usage.get("prompt_tokens") or 0
    weights = [caller.weight for caller in callers]
    shares = _shares(int(prompt_tokens), weights)
    whole = sum(weights)
    offset = 0
    for caller, share in zip(callers, shares, strict=True):
        n = len(caller.inputs)
        mine = [{**item, "index": i} for i, item in enumerate(data[offset : offset + n])]
        offset += n
        body = {**answer, "data": mine, "usage": {"prompt_tokens": share, "total_tokens": share}}
        part = caller.weight / whole if whole else 1 / len(callers)
        cost = None if result.cost is None else result.cost * part  # its prompt's share
        if not caller.future.done():
            caller.future.set_result(
                Completed(
                    orjson.dumps(body), result.provider, result.model, result.attempts, cost=cost
                )
            )


def _shares(total: int, weights: list[int]) -> list[int]:
    """``total`` in whole parts in proportion to ``weights``, summing to ``total`` (the
    largest remainders get the units left); equal parts when every weight is 0."""
    if not any(weights):
        weights = [1] * len(weights)
    whole = sum(weights)
    parts = [total * w // whole for w in weights]
    left = total - sum(parts)
    by_remainder = sorted(range(len(weights)), key=lambda i: -(total * weights[i] % whole))
    for i in by_remainder[:left]:
        parts[i] += 1
    return parts
