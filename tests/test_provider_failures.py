"""One classification of provider error answers (``providers.failures``) for every adapter.

Each adapter only reads its provider's error body; the status and what the body says
decide the error, and through its fault retry, failover and health, the same way for
every wire format.  Each format's own bodies are tested with recorded samples in
test_provider_<format>.py.
"""

from __future__ import annotations

import orjson
import pytest

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
from aigateway.providers.anthropic import AnthropicAdapter
from aigateway.providers.base import ChatAdapter
from aigateway.providers.gemini import GeminiAdapter
from aigateway.providers.openai import OpenAIAdapter

ADAPTERS: dict[str, ChatAdapter] = {
    "openai": OpenAIAdapter("openai", "http://openai.test/v1", "sk-test", "OPENAI_API_KEY"),
    "anthropic": AnthropicAdapter(
        "anthropic", "http://anthropic.test/v1", "sk-ant", key_variable="ANTHROPIC_API_KEY"
    ),
    "gemini": GeminiAdapter(
        "gemini", "http://gemini.test/v1beta", "AIza", key_variable="GOOGLE_AI_API_KEY"
    ),
}

# status -> (error class, status the client gets, fault) when the body says nothing more
BY_STATUS: dict[int, tuple[type[GatewayError], int, Fault]] = {
    400: (InvalidRequest, 400, Fault.REQUEST),
    401: (ProviderAuthFailed, 502, Fault.AUTH),
    403: (ProviderAuthFailed, 502, Fault.AUTH),
    404: (InvalidRequest, 404, Fault.REQUEST),
    408: (GatewayTimeout, 504, Fault.SERVER),  # the provider timed out: its failure
    409: (ProviderError, 502, Fault.SERVER),
    422: (InvalidRequest, 422, Fault.REQUEST),
    429: (RateLimited, 429, Fault.RATE_LIMITED),
    500: (ProviderError, 502, Fault.SERVER),
    502: (ProviderError, 502, Fault.SERVER),
    503: (ProviderUnavailable, 503, Fault.SERVER),
    504: (GatewayTimeout, 504, Fault.SERVER),
    529: (ProviderUnavailable, 503, Fault.SERVER),
}


@pytest.mark.parametrize("body", [b"", b"<html>bad gateway</html>", b"{}"])
@pytest.mark.parametrize("status", sorted(BY_STATUS))
@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_a_status_means_the_same_failure_in_every_wire_format(
    name: str, status: int, body: bytes
) -> None:
    failure = ADAPTERS[name].classify_error(status, {"retry-after": "2"}, body)
    kind, client_status, fault = BY_STATUS[status]
    assert (type(failure.error), failure.error.status, failure.error.fault) == (
        kind,
        client_status,
        fault,
    )
    waits = kind in (RateLimited, ProviderUnavailable)
    assert failure.error.retry_after_s == (2.0 if waits else None)


def test_credentials_rejected_name_the_variable_to_check() -> None:
    for name, adapter in ADAPTERS.items():
        error = adapter.classify_error(401, {}, b"").error
        assert error.message.startswith(f"{name} rejected the gateway's credentials (HTTP 401")
        assert {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY",
                "gemini": "GOOGLE_AI_API_KEY"}[name] in error.message  # fmt: skip


def test_openai_says_an_exhausted_quota_in_its_body() -> None:
    body = orjson.dumps(
        {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                   "code": "insufficient_quota"}}
    )  # fmt: skip
    failure = ADAPTERS["openai"].classify_error(429, {"retry-after": "2"}, body)
    assert type(failure.error) is QuotaExceeded
    assert (failure.retryable, failure.error.fault.fails_over) == (False, True)


def test_a_providers_verdict_on_the_request_is_passed_on_as_it_gave_it() -> None:
    body = orjson.dumps(
        {"error": {"message": "Unknown parameter: 'foo'.", "type": "invalid_request_error",
                   "param": "foo", "code": "unknown_parameter"}}
    )  # fmt: skip
    error = ADAPTERS["openai"].classify_error(400, {}, body).error
    assert (error.message, error.param, error.code, error.error_type, error.status) == (
        "Unknown parameter: 'foo'.",
        "foo",
        "unknown_parameter",
        "invalid_request_error",
        400,
    )
