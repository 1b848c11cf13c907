"""Send one provider call, retrying what is worth retrying, within the request's deadline.

A retry happens only before the client has seen a byte: for a stream, the first
chunk of the provider's answer is read here, so a stream that fails before it
starts is retried like any other call, and one that fails later is not.

Whether a failure is retried, and how it counts for the provider's health, follows
from its ``errors.Fault`` alone (the adapter's ``classify_error`` sets it for an error
answer). A deadline the client chose is the client's: running out of it is not the
provider's failure, whereas the gateway's own limits (``REQUEST_TIMEOUT_SEC``, the
connect timeout) are.

Every attempt is reported to the caller's observer (metrics, the request's record) and
fed to the provider's circuit breaker, here, by dispatch itself: the breaker works
wherever calls are sent, with or without the HTTP layer around them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from aigateway.core.health import Circuit
from aigateway.core.observer import CallObserver
from aigateway.core.retry import RetryPolicy
from aigateway.errors import Fault, GatewayTimeout, ProviderError, ProviderUnreachable
from aigateway.providers.base import ProviderFailure, UpstreamCall
from aigateway.upstream import (
    UpstreamBrokenBody,
    UpstreamClient,
    UpstreamConnectError,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamTooLarge,
)

Classifier = Callable[[int, Mapping[str, str], bytes], ProviderFailure]


@dataclass(slots=True)
class Answer:
    """A provider's successful answer: the whole body, or an open stream."""

    response: UpstreamResponse
    body: bytes  # the whole body, or a stream's first chunk
    rest: AsyncIterator[bytes] | None  # a stream's remaining chunks
    attempts: int


async def send_with_retries(
    client: UpstreamClient,
    call: UpstreamCall,
    classify: Classifier,
    policy: RetryPolicy,
    deadline: float,
    *,
    provider: str,
    observer: CallObserver,
    circuit: Circuit | None = None,
    stream: bool = False,
    model: str = "",
    clients_deadline: bool = False,
) -> Answer:
    """The provider's 2xx answer, or the error the client should get.

    ``deadline`` is on the event loop's clock; it bounds every attempt and every wait.
    ``clients_deadline``: it is the client's own, shorter than the gateway's timeout.
    Every attempt and retry is reported to ``observer``; every attempt's outcome feeds
    ``circuit``, the provider's health.
    """
    loop = asyncio.get_running_loop()
    # Whose deadline it is decides whether running out of it is the provider's failure.
    deadline_fault = Fault.DEADLINE if clients_deadline else Fault.TIMEOUT
    retries = 0
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise _deadline_error(provider, retries, deadline_fault)
        started = loop.time()
        outcome = "error"
        try:
            # One timer bounds the whole attempt (headers, then the body or first event).
            async with asyncio.timeout_at(deadline):
                response = await client.send(
                    call.method, call.url, headers=call.headers, body=call.body, timeout_s=None
                )
                if 200 <= response.status < 300:
                    answer = await _take_answer(response, stream, retries + 1)
                    outcome = "ok"
                    return answer
                error_body = await response.read(None)
            failure = classify(response.status, response.headers, error_body)
            outcome = failure.error.fault.outcome
        except TimeoutError:  # the request's deadline
            outcome = deadline_fault.outcome
            raise _deadline_error(provider, retries, deadline_fault) from None
        except UpstreamTimeout as exc:  # the gateway's own timer (connect, read silence)
            outcome = Fault.TIMEOUT.outcome
            message = f"{provider} did not answer in time: {exc}"
            raise GatewayTimeout(message, fault=Fault.TIMEOUT) from None
        except UpstreamTooLarge as exc:  # the same answer again would be as large: no retry
            failure = ProviderFailure(ProviderError(f"{provider}: {exc}", fault=Fault.UNUSABLE))
            outcome = failure.error.fault.outcome
        except (UpstreamConnectError, UpstreamBrokenBody) as exc:
            failure = ProviderFailure(ProviderUnreachable(f"{provider}: {exc}"))
            outcome = failure.error.fault.outcome
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            seconds = loop.time() - started
            if circuit is not None:
                circuit.record(outcome, seconds)
            observer.provider_call(provider, model, outcome, seconds)

        delay = (
            policy.delay_before_retry(retries, failure.retry_after_s) if failure.retryable else None
        )
        if delay is None or loop.time() + delay >= deadline:
            try:
                raise failure.error
            finally:
                del failure  # this frame, in the error's traceback, would hold it: a cycle
        await asyncio.sleep(delay)
        retries += 1
        observer.retry(provider)


async def _take_answer(response: UpstreamResponse, stream: bool, attempts: int) -> Answer:
    """The body, or for a stream its first event (the caller bounds the time)."""
    if not stream:
        return Answer(response, await response.read(None), None, attempts)
    chunks = response.iter_chunks()
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        await response.close()
        raise UpstreamBrokenBody("provider closed the stream before its first event") from None
    except BaseException:
        await response.close()
        raise
    return Answer(response, first, chunks, attempts)


def _deadline_error(provider: str, retries: int, fault: Fault) -> GatewayTimeout:
    tries = f" after {retries + 1} attempts" if retries else ""
    return GatewayTimeout(
        f"{provider} did not answer within the request's deadline{tries}", fault=fault
    )
