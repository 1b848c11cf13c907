"""A request's admission by its tenant key: what the pipeline asks before and after a call.

Two steps, each one line of the pipeline (``core.pipeline``):

``admit(request)``, once per request, before the cache
    the key is still live and not expired (401), may use the model (403), has a
    request left this minute (``rpm``) and a place among its requests in flight
    (``max_parallel``); else 429 ``key_rate_limited`` with ``Retry-After``.  The
    ``Grant`` it returns lets go of the place when the answer is complete (a stream:
    when it ends).
``reserve(request, model)``, before each provider call
    the call's tokens from the key's ``tpm`` (429 ``key_rate_limited`` when they are
    not there) and its estimated price from the key's budget (429 ``budget_exceeded``
    when nothing is left of the budget's period: the message says which budget and
    when it resets).  The ``KeyReservation`` it returns is settled like the provider's
    own (``core.token_budget.Reservation``, which it wraps): by the answer's usage (a
    stream's when it ends), given back in full when the call failed before the
    provider could count anything, the estimate kept when it may have.

On a node whose agent leases the keys' rates from the cluster (REDIS_URL), a request
that finds its key's bucket short waits for the agent's next lease call instead of being
refused at once (``Grant.around``, ``KeyReservation.lease``; see ``keys.slots``): the
bucket holds only what was leased, so it is short whenever this node has not been asked
for the key lately, though the cluster's minute may have plenty left.

The estimate is ``token_budget.estimate``'s (prompt characters / 4, plus ``max_tokens``
or the default) priced by ``Pricing.estimate``; a call is let through while anything is
left of the budget, so concurrent calls overshoot it by at most one call's estimate
(and by what a call costs beyond its estimate, which ``max_tokens`` bounds).  Cache hits
and answers shared with an identical request in flight reserve nothing and cost
nothing.  With ``KEY_BUDGET_CUT_STREAMS=true`` a stream whose running cost (its output
so far, estimated the same way) would cross the budget is cut there with a
``budget_exceeded`` error event.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final, Protocol, TypeVar

from aigateway.core.streaming import carries_usage
from aigateway.core.token_budget import (
    CHARS_PER_TOKEN,
    Estimate,
    Reservation,
    estimate,
    stream_usage,
)
from aigateway.errors import (
    AuthenticationFailed,
    Fault,
    GatewayError,
    PermissionDenied,
    ProviderUnavailable,
    RateLimited,
)
from aigateway.keys.model import TenantKey, period_resets_at, rfc3339
from aigateway.keys.ring import KeyRing
from aigateway.keys.slots import CLOSED, LEASED, KeySlot, retry_after
from aigateway.keys.spend import SpendLog
from aigateway.providers._openai_format import load_any
from aigateway.wire import ApiRequest, Completed, Streaming, close_events, token_counts

__all__ = ("NO_GRANT", "NO_KEYS", "Grant", "KeyGate", "KeyReservation", "NoKeys", "Pricing")

Answer = TypeVar("Answer", Completed, Streaming, Completed | Streaming)

_PERIOD_WORDS: Final = {"day": "daily", "month": "monthly", "total": "total"}


class Pricing(Protocol):
    """USD for a model's tokens (``aigateway.pricing.PriceTable``)."""

    def cost(self, model: str, usage: Mapping[str, Any] | None) -> float: ...

    def estimate(self, model: str, prompt_tokens: int, max_output_tokens: int) -> float: ...


class Free:
    """Prices of a gateway that prices nothing: every call costs 0."""

    def cost(self, model: str, usage: Mapping[str, Any] | None) -> float:
        return 0.0

    def estimate(self, model: str, prompt_tokens: int, max_output_tokens: int) -> float:
        return 0.0


def _nothing(used: int) -> None:
    return None


def _refused(message: str, code: str, wait_s: float | None = None) -> GatewayError:
    # Not the provider's failure: no fallback target would take it either.
    return RateLimited(message, code=code, retry_after_s=wait_s, fault=Fault.REQUEST)


def _over_rate(slot: KeySlot, tpm: bool, amount: float, wait: float) -> GatewayError:
    """The key is over its requests (``tpm``: tokens) a minute: 429 with ``Retry-After``
    (a leased rate's wait is unknown here: the time the limit takes to make ``amount``);
    503 while Redis is gone and the cluster's limits fail closed."""
    key = slot.key
    limit = key.tpm if tpm else key.rpm
    what = "tokens" if tpm else "requests"
    if slot.mode == CLOSED:
        return ProviderUnavailable(
            f"the key {key.name!r}'s {what} a minute are shared through Redis, which is "
            "unavailable, and REDIS_LIMITS_ON_FAILURE=closed: refused until it is back",
            code="limits_unavailable",
            retry_after_s=1.0,
            fault=Fault.REQUEST,
        )
    if math.isinf(wait) and limit:
        wait = min(max(amount * 60.0 / limit, 1.0), 60.0)
    return _refused(
        f"the key {key.name!r} is over its limit of {limit} {what} a minute",
        "key_rate_limited",
        retry_after(wait),
    )


class KeyGate:
    def __init__(
        self,
        ring: KeyRing,
        spend: SpendLog,
        pricing: Pricing | None = None,
        *,
        cut_streams: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ring = ring
        self.spend = spend
        self.pricing = pricing or Free()
        self.cut_streams = cut_streams
        self._clock = clock

    def admit(self, request: ApiRequest) -> Grant:
        if not request.tenant:
            return NO_GRANT
        slot = self.ring.get(request.tenant)
        now = self._clock()
        if slot is None or slot.key.expired(now):
            raise AuthenticationFailed(
                "this API key was revoked or has expired", code="invalid_api_key"
            )
        key = slot.key
        if not key.may_use(request.model, request.provider):
            raise PermissionDenied(
                f"the key {key.name!r} may not use the model {request.model!r}; it may use "
                + ", ".join(repr(m) for m in key.models),
                param="model",
                code="model_not_allowed",
            )
        if key.rpm is not None:
            wait = slot.rpm.try_acquire(1.0)
            if wait > 0.0:
                if slot.mode == LEASED:  # the agent asks the cluster for it: wait for that
                    return _Leasing(self, slot)
                raise _over_rate(slot, False, 1.0, wait)
        return self.admitted(slot, now)

    def admitted(self, slot: KeySlot, now: float | None = None) -> Grant:
        """The rest of ``admit`` once the key's request a minute is taken (``now``: the
        gate's clock, if the caller read it)."""
        key = slot.key
        if key.max_parallel is not None and not slot.enter():
            if key.rpm is not None:
                slot.rpm.settle(-1.0)  # this request was not let through after all
            raise _refused(
                f"the key {key.name!r} has {key.max_parallel} requests in flight already, "
                "its limit",
                "key_parallel_limit",
                1.0,
            )
        self.spend.add(key.id, 1, now=now)
        return Grant(slot if key.max_parallel is not None else None)

    def reserve(self, request: ApiRequest, model: str) -> KeyReservation | None:
        """The key's share of one provider call to ``model`` (None: no key, or one
        without token limit and budget)."""
        if not request.tenant:
            return None
        slot = self.ring.get(request.tenant)
        if slot is None:
            raise AuthenticationFailed("this API key was revoked", code="invalid_api_key")
        key = slot.key
        if key.tpm is None and key.budget_usd is None:
            return KeyReservation(self, slot, model, 0, 0, 0.0)
        guess = estimate(request)
        tokens = 0
        if key.tpm is not None:
            tokens = guess.need(key.tpm)
            wait = slot.tpm.try_acquire(float(tokens))
            if wait > 0.0:
                if slot.mode == LEASED:  # ``KeyReservation.lease`` waits for the agent's
                    return KeyReservation(self, slot, model, guess.prompt, tokens, 0.0, guess)
                raise _over_rate(slot, True, float(tokens), wait)
        return self.reserved(slot, model, guess, tokens)

    def reserved(self, slot: KeySlot, model: str, guess: Estimate, tokens: int) -> KeyReservation:
        """The rest of ``reserve`` once the call's tokens are taken: its budget."""
        key = slot.key
        usd = 0.0
        if key.budget_usd is not None:
            usd = self.pricing.estimate(model, guess.prompt, guess.output)
            now = self._clock()
            used = slot.reserve(key.budget_usd, usd, now)
            if used is not None:
                if tokens:
                    slot.tpm.settle(-float(tokens))
                raise budget_exceeded(key, used, now)
        return KeyReservation(self, slot, model, guess.prompt, tokens, usd)

    def settled(
        self, slot: KeySlot, reserved: float, cost: float, counts: tuple[int, int] | None
    ) -> None:
        """A call that reserved ``reserved`` cost ``cost``; ``counts``: its (prompt,
        completion) tokens as its usage said (None: no usage)."""
        now = self._clock()
        slot.settle(reserved, cost, now)
        prompt, completion = counts if counts is not None else (0, 0)
        self.spend.add(slot.key.id, 0, prompt, completion, cost, now)

    def over_budget(self, slot: KeySlot, mine: float, running: float) -> bool:
        """Whether a stream that reserved ``mine`` and has cost ``running`` so far takes
        the key past its budget."""
        budget = slot.key.budget_usd
        if budget is None:
            return False
        return slot.spent(self._clock()) + slot.reserved() - mine + running > budget

    def cut_event(self, slot: KeySlot, running: float) -> bytes:
        """The error event that ends a stream cut at its key's budget."""
        now = self._clock()
        return budget_exceeded(slot.key, slot.spent(now) + running, now).json()


def budget_exceeded(key: TenantKey, used: float, now: float) -> GatewayError:
    period = key.budget_period
    resets = period_resets_at(period, now)
    when = f"it resets at {rfc3339(resets)}" if resets is not None else "it does not reset"
    return _refused(
        f"the key {key.name!r} has used ${used:.4f} of its {_PERIOD_WORDS[period]} budget "
        f"of ${key.budget_usd:.4f}; {when}",
        "budget_exceeded",
        None if resets is None else max(resets - now, 1.0),
    )


class Grant:
    """A request's place among its key's requests in flight, let go exactly once."""

    __slots__ = ("_slot",)

    def __init__(self, slot: KeySlot | None) -> None:
        self._slot = slot

    def release(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            slot.leave()

    async def around(self, answer: Awaitable[Answer]) -> Answer:
        """``answer``, holding the place until it is complete (a stream: until it ends)."""
        if self._slot is None:
            return await answer
        try:
            result = await answer
        except BaseException:
            self.release()
            raise
        if isinstance(result, Streaming):
            result.events = _Releasing(result.events, self)
        else:
            self.release()
        return result


NO_GRANT: Final = Grant(None)


class _Leasing(Grant):
    """A request whose key's bucket was short of a request a minute on a node that leases
    it from the cluster: ``around`` waits for the lease first (see ``KeySlot.lease``)."""

    __slots__ = ("_gate", "_waiting")

    def __init__(self, gate: KeyGate, slot: KeySlot) -> None:
        super().__init__(None)
        self._gate = gate
        self._waiting = slot

    async def around(self, answer: Awaitable[Answer]) -> Answer:
        slot = self._waiting
        try:
            wait = await slot.lease(False, 1.0)
            if wait > 0.0:
                raise _over_rate(slot, False, 1.0, wait)
            grant = self._gate.admitted(slot)
        except BaseException:
            if inspect.iscoroutine(answer):
                answer.close()  # never started
            raise
        return await grant.around(answer)


class NoKeys:
    """The gate of a pipeline without tenant keys: every request goes on."""

    def admit(self, request: ApiRequest) -> Grant:
        return NO_GRANT

    def reserve(self, request: ApiRequest, model: str) -> KeyReservation | None:
        return None


NO_KEYS: Final = NoKeys()


class _Releasing:
    """A stream's events that let the grant go when they end, are closed or dropped."""

    __slots__ = ("_events", "_grant")

    def __init__(self, events: AsyncIterator[bytes], grant: Grant) -> None:
        self._events = events
        self._grant = grant

    def __aiter__(self) -> _Releasing:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._events.__anext__()
        except BaseException:
            self._grant.release()
            raise

    async def aclose(self) -> None:
        self._grant.release()
        await close_events(self._events)

    def __del__(self) -> None:
        # A safety net: a stream dropped unread still lets go. Here, not on ``Grant``:
        # ``around`` lets go of every other answer's place itself, and a ``__del__`` on
        # every request's grant cost a call per request.
        self._grant.release()


class KeyReservation(Reservation):
    """One provider call's share of its key's tokens a minute and budget, wrapping the
    provider's own reservation; settled once (see module)."""

    __slots__ = ("_gate", "_inner", "_leasing", "_slot", "model", "pending", "prompt", "usd")

    def __init__(
        self,
        gate: KeyGate,
        slot: KeySlot,
        model: str,
        prompt: int,
        tokens: int,
        usd: float,
        pending: Estimate | None = None,
    ) -> None:
        super().__init__(None, tokens, _nothing)
        self._gate = gate
        self._inner: Reservation | None = None
        self.model = model
        self.prompt = prompt  # estimated prompt tokens
        self.usd = usd  # reserved of its budget
        #: Not reserved yet: the key's tokens wait for the cluster's lease (``lease``).
        self.pending = pending
        self._slot: KeySlot | None = slot if pending is None else None
        self._leasing = slot

    async def lease(self) -> KeyReservation:
        """A pending reservation's tokens, once the node agent leased them from the
        cluster (429 ``key_rate_limited`` when its lease call brought too few)."""
        slot, guess = self._leasing, self.pending
        assert guess is not None, "only a pending reservation waits for a lease"
        wait = await slot.lease(True, float(self.tokens))
        if wait > 0.0:
            raise _over_rate(slot, True, float(self.tokens), wait)
        return self._gate.reserved(slot, self.model, guess, self.tokens)

    def joined(self, inner: Reservation) -> KeyReservation:
        self._inner = inner
        return self

    @property
    def metering(self) -> bool:
        return True

    def settle(self, used: int) -> None:
        """``used`` tokens, no usage object: priced as prompt tokens (0: nothing)."""
        if self._inner is not None:
            self._inner.settle(used)
        self._done(used, self._gate.pricing.estimate(self.model, used, 0) if used else 0.0, None)

    def settle_usage(self, usage: Any) -> None:
        if self._inner is not None:
            self._inner.settle_usage(usage)
        if type(usage) is dict or isinstance(usage, Mapping):  # a dict: no ABC check
            counts = token_counts(usage)  # once, for the tokens and the spend log
            cost = self._gate.pricing.cost(self.model, usage)
            self._done(counts[0] + counts[1], cost, counts)
        else:  # nothing to settle by: the estimate stands
            self._done(self.tokens, self.usd, None)

    def failed(self, fault: Fault) -> None:
        if self._inner is not None:
            self._inner.failed(fault)
        if fault in (Fault.TIMEOUT, Fault.DEADLINE):
            self._done(self.tokens, self.usd, None)  # the provider may have charged it
        else:
            self._done(0, 0.0, None)

    def cancel(self) -> None:
        """The call was never made: everything back."""
        self._done(0, 0.0, None)

    async def metered(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """A stream's events, settled by its usage chunk when it ends (cut at the budget
        with ``KEY_BUDGET_CUT_STREAMS``: then settled by what it had cost when cut)."""
        gate, slot = self._gate, self._slot
        watch = gate.cut_streams and slot is not None and slot.key.budget_usd is not None
        usage: Any = None
        chars = 0
        cut: tuple[int, float] | None = None  # (tokens, USD) so far, when cut
        try:
            async for piece in events:
                if carries_usage(piece):
                    usage = stream_usage(piece) or usage
                if watch and slot is not None:
                    chars += _output_chars(piece)
                    output = -(-chars // CHARS_PER_TOKEN)
                    running = gate.pricing.estimate(self.model, self.prompt, output)
                    if gate.over_budget(slot, self.usd, running):
                        cut = (self.prompt + output, running)
                        yield b"data: " + gate.cut_event(slot, running) + b"\n\n"
                        break
                yield piece
        finally:
            await close_events(events)
            if cut is not None and usage is None:
                if self._inner is not None:
                    self._inner.settle(cut[0])
                self._done(*cut, None)
            else:
                self.settle_usage(usage)

    def _done(self, tokens: int, cost: float, counts: tuple[int, int] | None) -> None:
        slot, self._slot = self._slot, None
        if slot is None:
            return
        if self.tokens and tokens != self.tokens:
            slot.tpm.settle(float(tokens - self.tokens))
        self._gate.settled(slot, self.usd, cost, counts)

    def __del__(self) -> None:
        # A safety net: a call abandoned unsettled (its client left) keeps its estimate.
        if self._slot is not None:
            self._done(self.tokens, self.usd, None)


def _output_chars(piece: bytes) -> int:
    """The characters of generated text in a piece of an OpenAI stream."""
    chars = 0
    for event in piece.split(b"\n\n"):
        if not event.startswith(b"data: {"):
            continue
        chunk = load_any(event[6:])
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        for choice in choices if isinstance(choices, list) else ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                for part in ("content", "reasoning_content", "refusal"):
                    text = delta.get(part)
                    if isinstance(text, str):
                        chars += len(text)
    return chars
