"""A provider gate in one worker: who waits for a token and who goes straight on."""

from __future__ import annotations

import asyncio

import pytest

from aigateway.core.admission import Admission
from aigateway.hotpath import TokenBucket


def gate_with_tokens_left(left: float) -> Admission:
    """10/s with a burst of 10 (reserves: low keeps 5 back, critical none), ``left`` in it."""
    rate = TokenBucket(10, 10)
    assert rate.try_acquire(10 - left) == 0.0
    return Admission({"openai": (rate, TokenBucket(1000, 1000))}, {"openai": 10.0}, 100)


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
