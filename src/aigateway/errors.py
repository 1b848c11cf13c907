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
"""

from __future__ import annotations

from typing import ClassVar

import orjson


class GatewayError(Exception):
    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
        status: int | None = None,
        error_type: str | None = None,
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
        # Retry-After takes whole seconds; never tell a client 0.
        return {"retry-after": str(max(1, int(-(-self.retry_after_s // 1))))}


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


class QuotaExceeded(GatewayError):
    status = 429
    error_type = "insufficient_quota"
    default_code = "insufficient_quota"


class ProviderAuthFailed(GatewayError):
    status = 502
    error_type = "provider_authentication_error"
    default_code = "provider_auth_failed"


class ProviderError(GatewayError):
    status = 502
    error_type = "provider_error"
    default_code = "provider_error"


class ProviderUnreachable(GatewayError):
    status = 502
    error_type = "provider_error"
    default_code = "provider_unreachable"


class ProviderUnavailable(GatewayError):
    status = 503
    error_type = "provider_unavailable"
    default_code = "provider_overloaded"


class GatewayTimeout(GatewayError):
    status = 504
    error_type = "timeout_error"
    default_code = "request_timeout"
