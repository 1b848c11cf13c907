"""Backoff: exponential, full jitter, capped, and the provider's retry-after wins."""

from __future__ import annotations

import pytest

from aigateway.core.retry import RetryPolicy
from aigateway.errors import RateLimited
from aigateway.providers.failures import is_retryable_status
from aigateway.wire import retry_after_from_headers

POLICY = RetryPolicy(max_retries=3, initial_delay_s=1.0, max_delay_s=5.0)


def test_delay_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    ceilings = [POLICY.delay_before_retry(n, rand=lambda: 1.0) for n in range(3)]
    assert ceilings == [1.0, 2.0, 4.0]
    capped = RetryPolicy(10, 1.0, 5.0)
    assert capped.delay_before_retry(5, rand=lambda: 1.0) == 5.0


def test_full_jitter_spreads_the_delay_between_zero_and_the_ceiling() -> None:
    assert POLICY.delay_before_retry(2, rand=lambda: 0.0) == 0.0
    assert POLICY.delay_before_retry(2, rand=lambda: 0.5) == 2.0


def test_no_delay_once_the_retries_are_used_up() -> None:
    assert POLICY.delay_before_retry(3) is None
    assert RetryPolicy(0, 1.0, 5.0).delay_before_retry(0) is None


def test_the_providers_retry_after_replaces_the_backoff() -> None:
    assert POLICY.delay_before_retry(0, retry_after_s=2.5) == 2.5


def test_a_retry_after_longer_than_the_cap_stops_retrying() -> None:
    assert POLICY.delay_before_retry(0, retry_after_s=60) is None


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_transient_statuses_are_retryable(status: int) -> None:
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_client_errors_are_not_retryable(status: int) -> None:
    assert not is_retryable_status(status)


def test_retry_after_ms_is_preferred_over_retry_after() -> None:
    assert retry_after_from_headers({"retry-after-ms": "250", "retry-after": "3"}) == 0.25


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert retry_after_from_headers({"retry-after": "2"}) == 2.0
    date = "Wed, 21 Oct 2015 07:28:10 GMT"
    assert retry_after_from_headers({"retry-after": date}, now=lambda: 1445412480.0) == 10.0


def test_unusable_retry_after_values_are_ignored() -> None:
    assert retry_after_from_headers({}) is None
    assert retry_after_from_headers({"retry-after": "soon"}) is None
    assert retry_after_from_headers({"retry-after": "-3"}) is None
    assert retry_after_from_headers({"retry-after-ms": "x", "retry-after": "1"}) == 1.0


@pytest.mark.parametrize(
    ("seconds", "told"),
    [(0.2, "1"), (2.5, "3"), (1e12, "3600"), (float("inf"), "3600"), (float("nan"), "1")],
)
def test_a_client_is_told_whole_seconds_never_zero_nor_an_absurd_wait(
    seconds: float, told: str
) -> None:
    assert RateLimited("slow down", retry_after_s=seconds).headers() == {"retry-after": told}
