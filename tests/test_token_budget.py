"""A provider's tokens-per-minute limit (``<PROVIDER>_TPM``) in one worker's admission.

Before a call, admission reserves the request's estimated tokens (prompt characters / 4
plus its ``max_tokens``, or a default output allowance) from the provider's token bucket,
beside its token of the rate; after the call the reservation is settled by the usage the
provider reported: the difference taken or given back, everything given back when the
call failed before the provider counted anything. A request that could never fit is
refused at once with 400.

In-process, on real buckets whose rates are slow enough (a TPM of 60 is one token a
second) that the few milliseconds a test takes do not move them measurably.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aigateway.config import ConfigError, Settings, load_settings
from aigateway.core.admission import Admission, NodeCounters, pause_bucket_spec
from aigateway.core.token_budget import (
    DEFAULT_OUTPUT_TOKENS,
    Estimate,
    estimate,
    token_bucket_spec,
)
from aigateway.errors import Fault, GatewayTimeout, InvalidRequest
from aigateway.hotpath import TokenBucket
from aigateway.runtime import apply_overrides, normalize_changes
from aigateway.wire import ApiRequest


def chat(text: str, **fields: object) -> ApiRequest:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **fields}
    return ApiRequest("chat", "gpt-4o", body, b"")


def admission_with(tpm: float, rps: float = 100.0) -> Admission:
    rate = TokenBucket(rps, rps)
    pause = TokenBucket(*pause_bucket_spec())
    tokens = TokenBucket(*token_bucket_spec(tpm))
    admission = Admission(
        {"openai": (rate, pause)},
        {"openai": rps},
        100,
        NodeCounters(None, ("openai",)),
        token_buckets={"openai": tokens},
    )
    admission.gates["openai"].tpm = tpm  # as apply_settings sets it from OPENAI_TPM
    return admission


def level(admission: Admission) -> float:
    bucket = admission.gates["openai"].tokens
    assert bucket is not None
    return bucket.available()


def deadline(seconds: float = 30.0) -> float:
    return asyncio.get_running_loop().time() + seconds


# --- the estimate ------------------------------------------------------------------------


def test_the_estimate_is_the_prompt_characters_over_four_plus_max_tokens() -> None:
    assert estimate(chat("x" * 40, max_tokens=20)) == Estimate(10, 20, True)
    assert estimate(chat("x" * 41, max_completion_tokens=7)) == Estimate(11, 7, True)
    parts = [{"type": "text", "text": "y" * 8}, {"type": "image_url", "image_url": {}}]
    assert estimate(chat(parts)) == Estimate(2, DEFAULT_OUTPUT_TOKENS, False)  # type: ignore[arg-type]
    embeddings = ApiRequest("embeddings", "e", {"input": ["abcd", "efgh"]}, b"")
    assert estimate(embeddings) == Estimate(2, 0, False)


def test_what_is_reserved_is_the_estimate_at_most_the_burst() -> None:
    assert Estimate(10, 20, True).need(1000) == 30
    assert Estimate(10, DEFAULT_OUTPUT_TOKENS, False).need(100) == 100
    assert Estimate(0, 0, False).need(100) == 1  # a call is never free


# --- reserve and settle ------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_call_reserves_its_estimate_and_is_settled_by_what_it_used() -> None:
    admission = admission_with(tpm=60)  # 1 token a second, a burst of 60
    reservation = await admission.admit(
        "openai", "critical", deadline(), tokens=estimate(chat("x" * 40, max_tokens=20))
    )
    assert reservation.tokens == 30
    assert level(admission) == pytest.approx(30, abs=0.5)
    reservation.settle(12)  # the provider said 12: 18 come back
    assert level(admission) == pytest.approx(48, abs=0.5)
    reservation.settle(12)  # settled once, whatever the caller does
    assert level(admission) == pytest.approx(48, abs=0.5)
    report = admission.counters.token_demand("openai")
    assert report == (30, 0)  # tokens reserved in total, none waited for


@pytest.mark.anyio
async def test_a_call_that_used_more_than_its_estimate_leaves_a_debt() -> None:
    admission = admission_with(tpm=60)
    reservation = await admission.admit(
        "openai", "critical", deadline(), tokens=Estimate(10, 20, True)
    )
    reservation.settle_usage({"prompt_tokens": 50, "completion_tokens": 30})  # 80 used
    assert level(admission) == 0.0  # 20 owed: the next calls wait them out first
    bucket = admission.gates["openai"].tokens
    assert bucket is not None and bucket.try_acquire(1.0) == pytest.approx(21, abs=0.5)


@pytest.mark.anyio
async def test_a_call_that_failed_before_the_provider_counted_gives_everything_back() -> None:
    admission = admission_with(tpm=60)
    for fault in (Fault.SERVER, Fault.RATE_LIMITED, Fault.UNREACHABLE, Fault.REQUEST):
        reservation = await admission.admit(
            "openai", "critical", deadline(), tokens=Estimate(10, 20, True)
        )
        reservation.failed(fault)
        assert level(admission) == pytest.approx(60, abs=0.5)
    # A call that timed out may have been generating: its estimate stands.
    reservation = await admission.admit(
        "openai", "critical", deadline(), tokens=Estimate(10, 20, True)
    )
    reservation.failed(Fault.TIMEOUT)
    assert level(admission) == pytest.approx(30, abs=0.5)


@pytest.mark.anyio
async def test_without_a_tpm_nothing_is_reserved() -> None:
    admission = admission_with(tpm=0)
    assert not admission.token_limited("openai")
    reservation = await admission.admit("openai", "normal", deadline(), tokens=Estimate(9, 9, True))
    assert reservation.tokens == 0
    reservation.settle(1_000_000)  # nothing to settle
    assert admission.counters.token_demand("openai") == (0, 0)


# --- requests that cannot fit, or must wait ----------------------------------------------


@pytest.mark.anyio
async def test_a_request_larger_than_the_burst_is_refused_at_once_with_400() -> None:
    admission = admission_with(tpm=60)
    with pytest.raises(InvalidRequest) as refused:
        await admission.admit("openai", "normal", deadline(), tokens=Estimate(10, 51, True))
    error = refused.value
    assert error.status == 400 and error.code == "tokens_exceed_limit"
    assert error.param == "max_tokens" and "61 tokens" in error.message
    assert error.fault.fails_over  # a fallback target may take it; health untouched
    assert level(admission) == 60.0
    # Without a max_tokens of its own, the default output allowance is cut to fit.
    reservation = await admission.admit(
        "openai", "critical", deadline(), tokens=Estimate(40, 256, False)
    )
    assert reservation.tokens == 60


@pytest.mark.anyio
async def test_a_request_waits_for_token_budget_and_gives_its_rate_token_back_meanwhile() -> None:
    admission = admission_with(tpm=600, rps=10)  # 10 tokens a second, a burst of 600
    gate = admission.gates["openai"]
    first = await admission.admit("openai", "critical", deadline(), tokens=Estimate(595, 0, False))
    assert first.tokens == 595
    rate_tokens = gate.bucket.available()
    waiting = asyncio.ensure_future(
        admission.admit("openai", "critical", deadline(), tokens=Estimate(8, 0, False))
    )
    await asyncio.sleep(0)
    assert not waiting.done() and gate.depth() == 1
    assert admission.counters.waiting_tokens("openai") == 8
    # Both or neither: the request holds no token of the rate while it waits for tokens.
    assert gate.bucket.available() == pytest.approx(rate_tokens, abs=0.5)
    reservation = await asyncio.wait_for(waiting, timeout=10)
    assert reservation.tokens == 8
    assert admission.counters.waiting_tokens("openai") == 0
    assert admission.counters.report("openai")["admitted"]["critical"] == 2


@pytest.mark.anyio
async def test_a_wait_for_tokens_past_the_fair_start_is_a_504_queue_timeout() -> None:
    admission = admission_with(tpm=60)  # 1 token a second
    await admission.admit("openai", "critical", deadline(), tokens=Estimate(60, 0, False))
    with pytest.raises(GatewayTimeout) as refused:  # 30 tokens: 30 s, with 4 s to go
        await admission.admit("openai", "normal", deadline(4.0), tokens=Estimate(30, 0, False))
    assert refused.value.code == "queue_timeout" and refused.value.fault.fails_over
    assert refused.value.retry_after_s == pytest.approx(30, abs=1)


@pytest.mark.anyio
async def test_priority_reserves_keep_token_budget_for_urgent_requests() -> None:
    admission = admission_with(tpm=100)  # burst 100; low keeps 50 back, critical none
    await admission.admit("openai", "critical", deadline(), tokens=Estimate(40, 0, False))
    with pytest.raises(GatewayTimeout):  # 60 left: 20 for low would leave less than 50
        await admission.admit("openai", "low", deadline(1.0), tokens=Estimate(20, 0, False))
    urgent = await admission.admit("openai", "critical", deadline(), tokens=Estimate(20, 0, False))
    assert urgent.tokens == 20


@pytest.mark.anyio
async def test_live_settings_set_and_clear_the_limit() -> None:
    admission = admission_with(tpm=0)
    old = Settings()
    new = old.with_providers({"openai": {"tpm": 120.0}})
    admission.apply_settings(old, new)  # every worker
    admission.set_node_rates(old, new)  # once for the node: the shared bucket
    bucket = admission.gates["openai"].tokens
    assert bucket is not None and (bucket.rate_per_s, bucket.burst) == (2.0, 120.0)
    assert admission.token_limited("openai")
    admission.apply_settings(new, old)
    assert not admission.token_limited("openai")


# --- a stream is settled by its usage chunk ----------------------------------------------


@pytest.mark.anyio
async def test_a_stream_is_settled_by_its_usage_chunk_when_it_ends() -> None:
    admission = admission_with(tpm=60)
    reservation = await admission.admit(
        "openai", "critical", deadline(), tokens=Estimate(10, 20, True)
    )

    async def events() -> AsyncIterator[bytes]:
        yield b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
        yield b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":6}}\n\n'
        yield b"data: [DONE]\n\n"

    relayed = [piece async for piece in reservation.metered(events())]
    assert len(relayed) == 3  # passed on untouched
    assert level(admission) == pytest.approx(50, abs=0.5)  # 10 used of 30 reserved


@pytest.mark.anyio
async def test_a_stream_without_usage_keeps_its_estimate() -> None:
    admission = admission_with(tpm=60)
    reservation = await admission.admit(
        "openai", "critical", deadline(), tokens=Estimate(10, 20, True)
    )

    async def events() -> AsyncIterator[bytes]:
        yield b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'

    assert [piece async for piece in reservation.metered(events())]
    assert level(admission) == pytest.approx(30, abs=0.5)


# --- the setting -------------------------------------------------------------------------


def test_tpm_is_a_setting_of_every_provider_validated_like_the_others(tmp_path: Path) -> None:
    settings = load_settings({"OPENAI_TPM": "90000"})
    assert settings.provider("openai").tpm == 90000.0
    assert settings.provider("google").tpm == 0.0  # unset: no token limit
    with pytest.raises(ConfigError, match="GOOGLE_TPM"):
        load_settings({"GOOGLE_TPM": "lots"})
    with pytest.raises(ConfigError, match="ANTHROPIC_TPM"):
        load_settings({"ANTHROPIC_TPM": "-5"})
    path = tmp_path / "gateway.toml"
    path.write_text('[providers.local]\nbase_url = "http://127.0.0.1:9/v1"\ntpm = 5000\n')
    assert load_settings({"AI_GATEWAY_CONFIG": str(path)}).provider("local").tpm == 5000.0
    path.write_text('[providers.local]\nbase_url = "http://127.0.0.1:9/v1"\ntpm = "x"\n')
    with pytest.raises(ConfigError, match=r"providers\.local\.tpm"):
        load_settings({"AI_GATEWAY_CONFIG": str(path)})


def test_tpm_may_change_live_by_its_variable_or_the_provider_table() -> None:
    settings = load_settings({})
    changes = normalize_changes(settings, {"OPENAI_TPM": 1000, "providers.google.tpm": 0})
    assert changes == {"OPENAI_TPM": "1000", "GOOGLE_TPM": "0"}
    changed = apply_overrides(settings, {k: v for k, v in changes.items() if v is not None})
    assert changed.provider("openai").tpm == 1000.0
