"""Errors the gateway answers with, in OpenAI's shape.

Every error a client sees is a :class:`GatewayError`; its body is
``{"error": {"message", "type", "param", "code"}}`` so OpenAI SDKs raise the
matching exception class from the status alone.

    GatewayError
    ├── InvalidRequest          400  the client's body or parameters
    ├── AuthenticationFailed    401  no API key, or not one of the gateway's keys
    ├── PermissionDenied        403  a key (or a client address) not allowed here
    ├── NotFound                404  unknown path
    ├── MethodNotAllowed        405
    ├── RequestTimeout          408  the client sent its body too slowly
    ├── PayloadTooLarge         413
    ├── RateLimited             429  provider still rate limiting after retries
    ├── QuotaExceeded           429  provider quota exhausted (never retried)
    ├── ProviderAuthFailed      502  provider rejected the gateway's credentials
    ├── ProviderError           502  provider failed (5xx, unusable answer)
    ├── ProviderUnreachable     502  no connection to the provider
    ├── ProviderUnavailable     503  provider overloaded
    └── GatewayTimeout          504  the request's deadline passed

Each error also says whose failure it is (:class:`Fault`): the one classification that
decides whether a provider call is retried, whether the next target of a fallback chain
is tried, and whether the failure counts against the provider's health.  The class gives
the usual fault; an adapter may set another (a provider's 408 is a ``GatewayTimeout`` for
the client, but the provider's failure).
"""

from __future__ import annotations

from enum import Enum
from typing import ClassVar

import orjson

# The longest Retry-After a client is ever told: a guard against absurd values.
MAX_RETRY_AFTER_S = 3600


class Fault(Enum):
    """Whose failure an error is, by its nature, and what follows from it::

        fault            outcome          retry  failover  provider health
        REQUEST          client_error     no     no        success: it answered
        DEADLINE         deadline         no     no        not evidence either way
        RATE_LIMITED     rate_limited     yes    yes       not evidence (admission slows it)
        ACCOUNT          account_error    no     yes       not evidence
        AUTH             auth_error       no     yes       failure
        SERVER           server_error     yes    yes       failure
        UNUSABLE         server_error     no     yes       failure
        UNREACHABLE      unreachable      yes    yes       failure
        TIMEOUT          timeout          no     yes       failure

    ``REQUEST`` covers everything no other provider would change: bad input, a provider's
    verdict on it (4xx), the gateway's own errors.  ``ACCOUNT`` is the gateway's account
    (quota, billing, region): another provider may serve, this one will not for a while.
    ``DEADLINE`` is the request's deadline passing while nothing failed, notably the
    client's shorter ``x-aigateway-timeout-ms``: the client's choice, not the provider's
    failure; a provider too slow for the gateway's own limits (``REQUEST_TIMEOUT_SEC``, the
    connect timeout) is ``TIMEOUT``.  ``outcome`` labels ``aigateway_provider_calls_total``;
    ``health`` is True for a failure, False for a success and None when the call says
    nothing about the provider.
    """

    REQUEST = ("client_error", False, False, False)
    DEADLINE = ("deadline", False, False, None)
    RATE_LIMITED = ("rate_limited", True, True, None)
    ACCOUNT = ("account_error", False, True, None)
    AUTH = ("auth_error", False, True, True)
    SERVER = ("server_error", True, True, True)
    UNUSABLE = ("server_error", False, True, True)  # e.g. too large: a retry would be too
    UNREACHABLE = ("unreachable", True, True, True)
    TIMEOUT = ("timeout", False, True, True)

    def __init__(self, outcome: str, retryable: bool, fails_over: bool, health: bool | None):
        self.outcome = outcome
        self.retryable = retryable
        self.fails_over = fails_over  # the next target may well succeed
        self.health = health


class GatewayError(Exception):
    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None
    fault: ClassVar[Fault] = Fault.REQUEST

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
        status: int | None = None,
        error_type: str | None = None,
        fault: Fault | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.retry_after_s = retry_after_s
        if status is not None:
            self.status = status  # type: ignore[misc]
        if error_type is not None:
            self.error_type = error_type  # type: ignore[misc]
        if fault is not None:
            self.fault = fault  # type: ignore[misc]

    def body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def json(self) -> bytes:
        return orjson.dumps(self.body())

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        # Retry-After takes whole seconds; never tell a client 0, nor an absurd wait.
        seconds = self.retry_after_s
        seconds = min(seconds, MAX_RETRY_AFTER_S) if seconds >= 1.0 else 1.0  # NaN: 1
        return {"retry-after": str(int(-(-seconds // 1)))}


class InvalidRequest(GatewayError):
    status = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    status = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        return {"www-authenticate": 'Bearer realm="aigateway"'}


class PermissionDenied(GatewayError):
    status = 403
    error_type = "permission_error"
    default_code = "forbidden"


class NotFound(GatewayError):
    status = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


class RequestTimeout(GatewayError):
    status = 408
    error_type = "invalid_request_error"
    default_code = "request_body_timeout"

    def headers(self) -> dict[str, str]:
        # the rest of the body may still come: it must not be read as the next request
        return {"connection": "close"}


class PayloadTooLarge(GatewayError):
    status = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"
    fault = Fault.RATE_LIMITED


class QuotaExceeded(GatewayError):
    status = 429
    error_type = "insufficient_quota"
    default_code = "insufficient_quota"
    fault = Fault.ACCOUNT


class ProviderAuthFailed(GatewayError):
    status = 502
    error_type = "provider_authentication_error"
    default_code = "provider_auth_failed"
    fault = Fault.AUTH


class ProviderError(GatewayError):
    status = 502
    error_type = "provider_error"
    default_code = "provider_error"
    fault = Fault.SERVER


class ProviderUnreachable(GatewayError):
    status = 502
    error_type = "provider_error"
    default_code = "provider_unreachable"
    fault = Fault.UNREACHABLE


class ProviderUnavailable(GatewayError):
    status = 503
    error_type = "provider_unavailable"
    default_code = "provider_overloaded"
    fault = Fault.SERVER


class GatewayTimeout(GatewayError):
    status = 504
    error_type = "timeout_error"
    default_code = "request_timeout"
    fault = Fault.DEADLINE
