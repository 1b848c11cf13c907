"""One classification of a provider's error answer, shared by every adapter.

An adapter reads its provider's error body (its one hook: ``ErrorBody``, what the body
says in the provider's own terms) and hands it here with the status; this module decides
the error the client gets, and through its ``errors.Fault`` retry, failover and the
provider's health.  The status decides unless the body says more (``Said``), checked in
this order::

    401, 403       or Said.AUTH           ProviderAuthFailed   502  (check <key variable>)
                      Said.QUOTA          QuotaExceeded        429  the account is spent
    429            or Said.RATE_LIMITED   RateLimited          429  with the wait asked for
    503, 529       or Said.OVERLOADED     ProviderUnavailable  503  with the wait asked for
    408, 504       or Said.TIMED_OUT      GatewayTimeout       504  the provider's failure
    409, other 5xx                        ProviderError        502
                      Said.ACCOUNT        ProviderError        502  billing, region
    anything else                         the provider's verdict on the request, passed on

A provider that timed the call out (408, 504) is not the request's deadline passing
(``Fault.DEADLINE``, decided in dispatch): it is the provider's failure (``Fault.SERVER``,
retried, failed over, counted against its health).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from aigateway.errors import (
    Fault,
    GatewayError,
    GatewayTimeout,
    InvalidRequest,
    ProviderAuthFailed,
    ProviderError,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
)
from aigateway.providers.base import ProviderFailure
from aigateway.wire import retry_after_from_headers

__all__ = ("RETRYABLE_STATUSES", "ErrorBody", "Said", "classify", "is_retryable_status")

# Statuses worth another try: the request may succeed unchanged a moment later.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


class Said(Enum):
    """What an error body says beyond its status, in the gateway's terms."""

    AUTH = "auth"  # the credentials were rejected
    QUOTA = "quota"  # the account's quota or spend limit is exhausted: no retry cures it
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    TIMED_OUT = "timed_out"  # the provider gave up on the call
    ACCOUNT = "account"  # the account cannot be served here (billing, region)


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """A provider's error body as its adapter read it."""

    message: str  # the provider's own message ("" when it gave none)
    label: str = ""  # the provider's name for the error (type, RPC status), for messages
    said: Said | None = None
    retry_after_s: float | None = None  # a wait the body asks for (a header's wins)
    # The provider's verdict on the request, passed on as it gave it:
    code: str | None = None
    param: str | None = None
    error_type: str = "invalid_request_error"


def classify(
    provider: str, key_variable: str, status: int, headers: Mapping[str, str], body: ErrorBody
) -> ProviderFailure:
    """The failure an error answer is (see the table above)."""
    said = body.said
    label = f" {body.label}" if body.label else ""
    message = body.message or f"HTTP {status}"
    if status in (401, 403) or said is Said.AUTH:
        return ProviderFailure(
            ProviderAuthFailed(
                f"{provider} rejected the gateway's credentials (HTTP {status}{label}); "
                f"check {key_variable}"
            )
        )
    if said is Said.QUOTA:
        return ProviderFailure(QuotaExceeded(f"{provider}: {message}"))
    retry_after = retry_after_from_headers(headers)
    if retry_after is None:
        retry_after = body.retry_after_s
    error: GatewayError
    if status == 429 or said is Said.RATE_LIMITED:
        error = RateLimited(
            f"{provider} is rate limiting requests: {message}", retry_after_s=retry_after
        )
    elif status in (503, 529) or said is Said.OVERLOADED:
        error = ProviderUnavailable(
            f"{provider} is unavailable (HTTP {status}{label}): {message}",
            retry_after_s=retry_after,
        )
    elif status in (408, 504) or said is Said.TIMED_OUT:
        error = GatewayTimeout(
            f"{provider} timed out the request (HTTP {status})", fault=Fault.SERVER
        )
    elif is_retryable_status(status):
        error = ProviderError(f"{provider} failed (HTTP {status}{label}): {message}")
    elif said is Said.ACCOUNT:
        return ProviderFailure(
            ProviderError(f"{provider} cannot serve this account: {message}", fault=Fault.ACCOUNT)
        )
    else:
        return ProviderFailure(
            InvalidRequest(
                message,
                param=body.param,
                code=body.code,
                status=status if 400 <= status < 500 else 502,
                error_type=body.error_type,
            )
        )
    return ProviderFailure(error, retry_after)


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500
