"""A provider gate in one worker: who waits for a token and who goes straight on."""

from __future__ import annotations

import asyncio

import pytest

from aigateway.core.admission import Admission, pause_bucket_spec
from aigateway.errors import GatewayTimeout
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
    with pytest.raises(GatewayTimeout) as refused:
        await admission.admit("openai", "normal", deadline)
    # Refused without waiting, as the provider's side: the pipeline tries the next target.
    assert refused.value.code == "queue_timeout"
    assert refused.value.fault.fails_over
    assert refused.value.retry_after_s is not None and refused.value.retry_after_s > 5


@pytest.mark.anyio
async def test_a_waiter_is_let_go_when_a_new_pause_outlasts_its_deadline() -> None:
    admission = gate_with_tokens_left(0)
    deadline = asyncio.get_running_loop().time() + 5
    waiter = asyncio.ensure_future(admission.admit("openai", "normal", deadline))
    await asyncio.sleep(0)
    assert admission.gates["openai"].depth() == 1  # queued: a token comes within its deadline
    admission.gates["openai"].rate_limited(60.0)  # then a 429 pauses the provider for 60 s
    with pytest.raises(GatewayTimeout) as refused:
        await asyncio.wait_for(waiter, timeout=3)  # well before its own deadline
    assert refused.value.fault.fails_over
    assert admission.gates["openai"].depth() == 0


@pytest.mark.anyio
async def test_a_request_with_another_target_does_not_wait_out_even_a_short_pause() -> None:
    admission = gate_with_tokens_left(10)
    admission.gates["openai"].rate_limited(1.0)
    deadline = asyncio.get_running_loop().time() + 5  # long enough to wait the pause out
    with pytest.raises(GatewayTimeout) as refused:
        await admission.admit("openai", "normal", deadline, fallback=True)
    assert refused.value.fault.fails_over
    alone = asyncio.ensure_future(admission.admit("openai", "normal", deadline))
    await asyncio.sleep(0)
    assert not alone.done()  # without another target it waits for the pause to end
    await asyncio.wait_for(alone, timeout=4)
