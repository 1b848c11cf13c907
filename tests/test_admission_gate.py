"""A provider gate in one worker: who waits for a token and who goes straight on.

A request waits here only while the provider call keeps at least half of the time its
deadline left it (``WAIT_SHARE``): the gateway's own queue must never eat the call's time
and have the provider blamed for the timeout. Past that it is refused at once, as the
provider's side, so the next target is tried: 429 with the pause left while the provider
is paused, 504 ``queue_timeout`` when the wait is for a token.
"""

from __future__ import annotations

import asyncio

import pytest

from aigateway.core.admission import Admission, pause_bucket_spec
from aigateway.errors import GatewayTimeout, RateLimited
from aigateway.hotpath import TokenBucket


def gate_with_tokens_left(left: float) -> Admission:
    """10/s with a burst of 10 (reserves: low keeps 5 back, critical none), ``left`` in it."""
    rate = TokenBucket(10, 10)
    assert rate.try_acquire(10 - left) == 0.0
    pause = TokenBucket(*pause_bucket_spec())
    return Admission({"openai": (rate, pause)}, {"openai": 10.0}, 100)


@pytest.mark.anyio
async def test_a_critical_request_does_not_queue_behind_waiting_low_ones() -> None:
    admission = gate_with_tokens_left(3)  # enough for critical, below low's reserve
    deadline = asyncio.get_running_loop().time() + 5
    low = asyncio.ensure_future(admission.admit("openai", "low", deadline))
    await asyncio.sleep(0)
    assert not low.done() and admission.gates["openai"].depth() == 1  # low waits its turn
    critical = asyncio.ensure_future(admission.admit("openai", "critical", deadline))
    await asyncio.sleep(0)
    # A token is there for it and nobody here would go first: admitted at once, while the
    # queue's pump still naps for the token the low request needs.
    assert critical.done() and critical.exception() is None
    assert not low.done()
    low.cancel()
    await asyncio.gather(low, return_exceptions=True)


@pytest.mark.anyio
async def test_a_request_waits_behind_a_more_urgent_one_already_queued() -> None:
    admission = gate_with_tokens_left(0)
    deadline = asyncio.get_running_loop().time() + 5
    high = asyncio.ensure_future(admission.admit("openai", "high", deadline))
    await asyncio.sleep(0)
    low = asyncio.ensure_future(admission.admit("openai", "low", deadline))
    await asyncio.sleep(0)
    assert admission.gates["openai"].depth() == 2  # low queued behind high, not beside it
    await asyncio.wait_for(high, timeout=5)
    assert not low.done()
    low.cancel()
    await asyncio.gather(low, return_exceptions=True)


@pytest.mark.anyio
async def test_a_request_that_cannot_start_before_its_deadline_moves_on_at_once() -> None:
    admission = gate_with_tokens_left(10)
    admission.gates["openai"].rate_limited(60.0)  # a provider's 429 paused it for 60 s
    deadline = asyncio.get_running_loop().time() + 5
    with pytest.raises(RateLimited) as refused:
        await admission.admit("openai", "normal", deadline)
    # Refused without waiting, as the provider's side: the pipeline tries the next target,
    # or, with none left, the client gets 429 and the pause left as its Retry-After.
    assert refused.value.status == 429
    assert refused.value.fault.fails_over
    assert refused.value.retry_after_s is not None and refused.value.retry_after_s > 5


@pytest.mark.anyio
async def test_a_pause_as_long_as_the_deadline_is_not_waited_out_by_a_lone_request() -> None:
    # PROVIDER_PAUSE_MAX_SEC and REQUEST_TIMEOUT_SEC are both 60 by default: a request
    # arriving just after the 429 could start a few ms before its deadline, and time out.
    admission = gate_with_tokens_left(10)
    admission.gates["openai"].rate_limited(60.0)
    await asyncio.sleep(0.01)  # the request arrives just after the 429
    deadline = asyncio.get_running_loop().time() + 60
    with pytest.raises(RateLimited) as refused:
        await asyncio.wait_for(admission.admit("openai", "normal", deadline), timeout=2)
    assert refused.value.headers() == {"retry-after": "60"}  # the pause left, whole seconds
    assert admission.gates["openai"].depth() == 0


@pytest.mark.anyio
async def test_a_pause_that_would_leave_the_call_under_half_its_time_is_refused_at_once() -> None:
    admission = gate_with_tokens_left(10)
    admission.gates["openai"].rate_limited(3.0)  # ends before the deadline, past its half
    deadline = asyncio.get_running_loop().time() + 5
    with pytest.raises(RateLimited) as refused:
        await asyncio.wait_for(admission.admit("openai", "normal", deadline), timeout=1)
    assert refused.value.fault.fails_over
    assert refused.value.retry_after_s is not None and 2 < refused.value.retry_after_s <= 3
    assert refused.value.headers() == {"retry-after": "3"}


@pytest.mark.anyio
async def test_a_token_wait_past_half_the_deadline_is_refused_at_once() -> None:
    rate = TokenBucket(0.5, 1)  # drained: the next token comes in 2 s
    assert rate.try_acquire(1) == 0.0
    pause = TokenBucket(*pause_bucket_spec())
    admission = Admission({"openai": (rate, pause)}, {"openai": 0.5}, 100)
    deadline = asyncio.get_running_loop().time() + 3  # 2 s of queue would leave the call 1 s
    with pytest.raises(GatewayTimeout) as refused:
        await asyncio.wait_for(admission.admit("openai", "normal", deadline), timeout=1)
    assert refused.value.code == "queue_timeout"
    assert refused.value.fault.fails_over


@pytest.mark.anyio
async def test_a_waiter_still_without_a_token_at_half_its_deadline_is_let_go_to_fail_over() -> None:
    admission = gate_with_tokens_left(0)  # a token within 0.1 s: worth queueing for
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1
    waiter = asyncio.ensure_future(admission.admit("openai", "normal", deadline))
    await asyncio.sleep(0)
    assert admission.gates["openai"].depth() == 1
    gate = admission.gates["openai"]
    gate.bucket.set_rate(0.01, gate.bucket.burst)  # then the tokens all but stop
    with pytest.raises(GatewayTimeout) as refused:
        await asyncio.wait_for(waiter, timeout=5)
    # Let go while half its time is left, as the provider's side: the next target gets a
    # fair chance, and no call starts with the deadline all but spent.
    assert loop.time() < deadline
    assert refused.value.code == "queue_timeout"
    assert refused.value.fault.fails_over
    assert gate.depth() == 0


@pytest.mark.anyio
async def test_a_waiter_is_let_go_when_a_new_pause_outlasts_its_deadline() -> None:
    admission = gate_with_tokens_left(0)
    deadline = asyncio.get_running_loop().time() + 5
    waiter = asyncio.ensure_future(admission.admit("openai", "normal", deadline))
    await asyncio.sleep(0)
    assert admission.gates["openai"].depth() == 1  # queued: a token comes within its deadline
    admission.gates["openai"].rate_limited(60.0)  # then a 429 pauses the provider for 60 s
    with pytest.raises(RateLimited) as refused:
        await asyncio.wait_for(waiter, timeout=3)  # well before its own deadline
    assert refused.value.fault.fails_over
    assert admission.gates["openai"].depth() == 0


@pytest.mark.anyio
async def test_a_request_with_another_target_does_not_wait_out_even_a_short_pause() -> None:
    admission = gate_with_tokens_left(10)
    admission.gates["openai"].rate_limited(1.0)
    deadline = asyncio.get_running_loop().time() + 5  # long enough to wait the pause out
    with pytest.raises(RateLimited) as refused:
        await admission.admit("openai", "normal", deadline, fallback=True)
    assert refused.value.fault.fails_over
    alone = asyncio.ensure_future(admission.admit("openai", "normal", deadline))
    await asyncio.sleep(0)
    # Without another target it waits for the pause to end: the call keeps over half its time.
    assert not alone.done()
    await asyncio.wait_for(alone, timeout=4)
