"""Misbehaving providers and a full gateway, in process: what the pipeline decides.

* A provider that times a call out (408 or 504, in any wire format) is retried, then the
  next target of the fallback chain answers (on a virtual clock: tests/virtual_clock.py).
* After a 429 with an absurd ``Retry-After``, a lone target is paused for at most
  PROVIDER_PAUSE_MAX_SEC; its clients get a prompt 429 (never a 504 at their deadline),
  its circuit stays closed, and once the pause is over it serves again.
* Past QUEUE_SIZE waiting requests, more are shed at once with 429 and a wait to retry
  after; a request whose deadline ends before its turn gets 504 without a provider call.

Admission's buckets keep the node's time in shared memory, not the event loop's, so the
admission cases run on a real loop with rates high enough to take well under a second.
Over real HTTP (the headers a client sees, several workers sharing a node's buckets):
test_gateway_provider_faults.py and test_gateway_admission.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
import pytest

from aigateway.config import AliasTarget
from aigateway.core.accounting import Accounting
from aigateway.core.admission import Admission, pause_bucket_spec
from aigateway.core.health import HealthBoard, HealthPolicy
from aigateway.core.media import RemoteMedia
from aigateway.core.observer import RequestObserver, RequestRecord
from aigateway.core.pipeline import Pipeline
from aigateway.core.providers import Provider
from aigateway.core.registry import ProviderRegistry
from aigateway.core.retry import RetryPolicy
from aigateway.core.router import Router
from aigateway.errors import GatewayError, GatewayTimeout, RateLimited
from aigateway.hotpath import TokenBucket
from aigateway.providers.anthropic import AnthropicAdapter
from aigateway.providers.base import ChatAdapter
from aigateway.providers.gemini import GeminiAdapter
from aigateway.providers.openai import OpenAIAdapter
from aigateway.testing.mock_errors import anthropic_body, anthropic_type, gemini_body
from aigateway.wire import ApiRequest, Completed
from fake_upstream import FakeUpstream, Reply
from virtual_clock import run

# (wire format, model, the status it times a call out with)
TIMING_OUT = [
    ("openai", "gpt-4o-mini", 408),
    ("openai", "gpt-4o-mini", 504),
    ("anthropic", "claude-3-5-haiku-latest", 408),
    ("anthropic", "claude-3-5-haiku-latest", 504),
    ("gemini", "gemini-2.0-flash", 408),
    ("gemini", "gemini-2.0-flash", 504),
]


def adapter(kind: str, name: str) -> ChatAdapter:
    url = f"http://{name}.test"
    if kind == "anthropic":
        return AnthropicAdapter(name, url, "sk-test", key_variable="KEY")
    if kind == "gemini":
        return GeminiAdapter(name, url, "sk-test", key_variable="KEY")
    return OpenAIAdapter(name, url, "sk-test", "KEY")


def timed_out(kind: str, status: int) -> bytes | None:
    """The provider's own body for a call it timed out."""
    if kind == "anthropic":
        return anthropic_body("Request timed out", anthropic_type(status))
    if kind == "gemini":
        return gemini_body(status, "Deadline expired before operation could complete.")
    return None  # OpenAI's envelope


def pipeline(
    upstreams: dict[str, tuple[str, FakeUpstream]],
    aliases: dict[str, list[AliasTarget]] | None = None,
    admission: Admission | None = None,
    board: HealthBoard | None = None,
    max_retries: int = 3,
    timeout_s: float = 2.0,
    pause_max_s: float = 60.0,
) -> Pipeline:
    """A pipeline over fake providers: name -> (wire format, upstream)."""
    providers = {
        name: Provider(
            name,
            adapter(kind, name),
            upstream,
            usable=True,
            key_variable="KEY",
            circuit=board.circuit(name) if board is not None else None,
        )
        for name, (kind, upstream) in upstreams.items()
    }
    return Pipeline(
        ProviderRegistry(providers),
        Router(tuple(upstreams), aliases=aliases),
        RetryPolicy(max_retries, initial_delay_s=0.01, max_delay_s=0.05),
        timeout_s,
        RemoteMedia(FakeUpstream(), 1 << 20, 5.0, allow_private=False),
        admission=admission,
        provider_pause_max_s=pause_max_s,
    )


def observer() -> RequestObserver:
    return RequestObserver(Accounting.private(("openai", "late")), RequestRecord("req"))


def chat(model: str, timeout_s: float | None = None) -> ApiRequest:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return ApiRequest("chat", model, body, orjson.dumps(body), timeout_s=timeout_s)


@pytest.mark.parametrize(("kind", "model", "status"), TIMING_OUT, ids=str)
def test_a_provider_that_times_the_call_out_is_retried_then_the_next_target_answers(
    kind: str, model: str, status: int
) -> None:
    late = FakeUpstream(Reply(status=status, body=timed_out(kind, status)))
    fallback = FakeUpstream()
    chain = {"resilient": [AliasTarget(f"late/{model}"), AliasTarget("openai/gpt-4o-mini")]}
    gateway = pipeline({"late": (kind, late), "openai": ("openai", fallback)}, chain)

    result = run(gateway.chat(chat("resilient"), observer()))
    assert isinstance(result, Completed) and result.provider == "openai"
    assert len(late.calls) == 4  # the first try and 3 retries: a failure of the provider
    assert len(fallback.calls) == 1


def lone_admission(rate: float, queue_size: int = 100) -> Admission:
    """One provider, ``openai``, ``rate`` calls a second (burst: as many)."""
    buckets = {"openai": (TokenBucket(rate, rate), TokenBucket(*pause_bucket_spec()))}
    return Admission(buckets, {"openai": rate}, queue_size)


@pytest.mark.anyio
async def test_after_a_429_a_lone_target_gives_prompt_429s_and_its_circuit_stays_closed() -> None:
    # The pause is as long as the request's deadline, as with both defaults (60 s): waiting
    # it out would start the call with no time left, a timeout blamed on the provider.
    provider = FakeUpstream(Reply(status=429, headers={"retry-after": "600"}))
    policy = HealthPolicy(failure_threshold=3, cooldown_s=30.0, probe_interval_s=0)
    board = HealthBoard.private(["openai"], policy)
    gateway = pipeline(
        {"openai": ("openai", provider)},
        admission=lone_admission(rate=100.0),
        board=board,
        timeout_s=0.4,
        pause_max_s=0.4,
    )
    with pytest.raises(RateLimited) as first:
        await gateway.chat(chat("openai/gpt-4o-mini"), observer())
    assert 0 < (first.value.retry_after_s or 0) <= 0.4
    provider.reply = Reply()

    six = await asyncio.gather(
        *(gateway.chat(chat("openai/gpt-4o-mini"), observer()) for _ in range(6)),
        return_exceptions=True,
    )
    assert all(isinstance(e, RateLimited) for e in six), six  # not a 504 at the deadline
    assert all(0 < (e.retry_after_s or 0) <= 0.4 for e in six if isinstance(e, GatewayError))
    assert len(provider.calls) == 1  # nobody called the paused provider
    assert board.state("openai") in ("healthy", "degraded")  # not open

    await asyncio.sleep(0.45)  # the pause is over
    result = await gateway.chat(chat("openai/gpt-4o-mini"), observer())
    assert isinstance(result, Completed)


@pytest.mark.anyio
async def test_a_full_queue_sheds_at_once_with_429_and_a_wait_to_retry_after() -> None:
    provider = FakeUpstream()
    gateway = pipeline({"openai": ("openai", provider)}, admission=lone_admission(20.0, 5))
    results = await asyncio.gather(
        *(gateway.chat(chat("openai/gpt-4o-mini", timeout_s=5.0), observer()) for _ in range(40)),
        return_exceptions=True,
    )
    outcomes = Counter(type(r).__name__ for r in results)
    # 15 go at once (the burst of 20 less the quarter kept for more urgent requests), 5
    # wait for tokens, the other 20 are shed.
    assert outcomes == {"Completed": 20, "RateLimited": 20}
    shed = [r for r in results if isinstance(r, RateLimited)]
    assert {e.code for e in shed} == {"queue_full"}
    assert all((e.retry_after_s or 0) >= 1 for e in shed)
    assert len(provider.calls) == 20


@pytest.mark.anyio
async def test_a_deadline_shorter_than_the_wait_is_a_504_without_a_provider_call() -> None:
    provider = FakeUpstream()
    gateway = pipeline({"openai": ("openai", provider)}, admission=lone_admission(1.0))
    assert isinstance(await gateway.chat(chat("openai/gpt-4o-mini"), observer()), Completed)
    with pytest.raises(GatewayTimeout) as refused:
        await gateway.chat(chat("openai/gpt-4o-mini", timeout_s=0.2), observer())
    assert refused.value.code == "queue_timeout"  # the wait, not the provider
    assert len(provider.calls) == 1
