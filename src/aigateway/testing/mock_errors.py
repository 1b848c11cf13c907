"""Error bodies of the mock provider in each wire format it speaks (no I/O here).

* OpenAI: ``{"error": {"message", "type", "param", "code"}}``
* Anthropic: ``{"type": "error", "error": {"type", "message"}, "request_id"}``, the error type
  following the HTTP status (529 ``overloaded_error``, 429 ``rate_limit_error``, ...)
* Gemini: ``{"error": {"code", "message", "status", "details"?}}`` (google.rpc.Status), with
  ``ErrorInfo`` for a bad key, ``QuotaFailure`` and ``RetryInfo`` for 429s

and the error each format sends inside a stream that already answered 200.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from aigateway.providers.anthropic import ERROR_STATUS

__all__ = [
    "DIALECTS",
    "Dialect",
    "ErrorAnswer",
    "error_payload",
    "fault_answers",
    "request_error_body",
    "stream_error_events",
]

Dialect = Literal["openai", "anthropic", "gemini"]
DIALECTS: tuple[Dialect, ...] = ("openai", "anthropic", "gemini")

REQUEST_ID = "req_mock_0123456789"
_JSON = "application/json"
_RPC = "type.googleapis.com/google.rpc."

_ANTHROPIC_TYPES = {status: kind for kind, status in ERROR_STATUS.items()}
_ANTHROPIC_MESSAGES = {
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "Not found",
    429: "This request would exceed the rate limit for your organization of 50 requests per "
    "minute. Please try again later.",
    500: "Internal server error",
    504: "Request timed out",
    529: "Overloaded",
}
_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_GEMINI_MESSAGES = {
    401: "Request had invalid authentication credentials.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "You exceeded your current quota, please check your plan and billing details.",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
API_KEY_INVALID_MESSAGE = "API key not valid. Please pass a valid API key."


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    body: bytes
    headers: Mapping[str, str]


def error_payload(
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def anthropic_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def gemini_status(status: int) -> str:
    return _GEMINI_STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")


def anthropic_body(message: str, type_: str, error_code: str | None = None) -> bytes:
    error: dict[str, Any] = {"type": type_, "message": message}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    return orjson.dumps({"type": "error", "error": error, "request_id": REQUEST_ID})


def gemini_body(
    status: int,
    message: str,
    rpc: str | None = None,
    *,
    reason: str | None = None,
    per_day: bool = False,
    retry_delay: str | None = None,
) -> bytes:
    details: list[dict[str, Any]] = []
    if reason is not None:
        details.append({"@type": _RPC + "ErrorInfo", "reason": reason, "domain": "googleapis.com"})
    if status == 429:
        period = "PerDay" if per_day else "PerMinute"
        violation = {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": f"GenerateRequests{period}PerProjectPerModel-FreeTier",
            "quotaValue": "250" if per_day else "10",
        }
        details.append({"@type": _RPC + "QuotaFailure", "violations": [violation]})
    if retry_delay is not None:
        details.append({"@type": _RPC + "RetryInfo", "retryDelay": retry_delay})
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": rpc or gemini_status(status),
    }
    if details:
        error["details"] = details
    return orjson.dumps({"error": error})


def request_error_body(
    dialect: Dialect,
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> bytes:
    """The body of an error about the request itself (validation, auth, unknown path)."""
    if dialect == "anthropic":
        return anthropic_body(message, anthropic_type(status))
    if dialect == "gemini":
        reason = code if code == "API_KEY_INVALID" else None
        return gemini_body(status, message, reason=reason)
    return orjson.dumps(error_payload(message, type_, param, code))


def _openai_default(status: int, code: str | None) -> tuple[str, str | None, str]:
    """(type, code, message) that OpenAI would send for this status."""
    if status == 429:
        if code == "insufficient_quota":
            return (
                "insufficient_quota",
                "insufficient_quota",
                "You exceeded your current quota, please check your plan and billing details.",
            )
        return (
            "requests",
            "rate_limit_exceeded",
            "Rate limit reached for requests per min (RPM) in organization org-mock: "
            "Limit 60, Used 60, Requested 1. Please try again in 1s.",
        )
    if status == 401:
        return (
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided: sk-...mock.",
        )
    if status == 404:
        return (
            "invalid_request_error",
            "model_not_found",
            "The model does not exist or you do not have access to it.",
        )
    if status == 503:
        return (
            "service_unavailable_error",
            "server_is_overloaded",
            "The server is overloaded or not ready yet.",
        )
    if status >= 500:
        return (
            "server_error",
            None,
            "The server had an error while processing your request. Sorry about that!",
        )
    return ("invalid_request_error", None, f"Mock fault: HTTP {status}.")


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def fault_answers(
    status: int,
    *,
    message: str | None,
    type_: str | None,
    code: str | None,
    retry_after: float | str | None,
    retry_after_ms: float | None,
) -> dict[Dialect, ErrorAnswer]:
    """The error answer of a fault with this ``status``, in each format (a ``retry_after``
    string, such as an HTTP date, goes into the header as it is)."""
    retry_headers: dict[str, str] = {}
    if isinstance(retry_after, str):
        retry_headers["retry-after"] = retry_after
        retry_after = None  # Gemini's RetryInfo takes seconds only
    elif retry_after is not None:
        retry_headers["retry-after"] = _number(retry_after)
    if retry_after_ms is not None:
        retry_headers["retry-after-ms"] = _number(retry_after_ms)

    default_type, default_code, default_message = _openai_default(status, code)
    openai = orjson.dumps(
        error_payload(
            message if message is not None else default_message,
            type_ if type_ is not None else default_type,
            None,
            code if code is not None else default_code,
        )
    )
    spend_code = "enforced_spend_limit_reached" if code == "insufficient_quota" else code
    anthropic = anthropic_body(
        message or _ANTHROPIC_MESSAGES.get(status, f"Mock fault: HTTP {status}."),
        type_ or anthropic_type(status),
        spend_code,
    )
    delay_s = retry_after if retry_after is not None else None
    if delay_s is None and retry_after_ms is not None:
        delay_s = retry_after_ms / 1000
    reason = code if code not in (None, "insufficient_quota") else None
    gemini = gemini_body(
        status,
        message
        or (API_KEY_INVALID_MESSAGE if reason == "API_KEY_INVALID" else None)
        or _GEMINI_MESSAGES.get(status, f"Mock fault: HTTP {status}."),
        type_,
        reason=reason,
        per_day=code == "insufficient_quota",
        retry_delay=None if delay_s is None else _number(delay_s) + "s",
    )
    json_headers = {"Content-Type": _JSON}
    return {
        "openai": ErrorAnswer(openai, {**json_headers, **retry_headers}),
        "anthropic": ErrorAnswer(
            anthropic, {**json_headers, "request-id": REQUEST_ID, **retry_headers}
        ),
        "gemini": ErrorAnswer(gemini, {"Content-Type": "application/json; charset=UTF-8"}),
    }


def stream_error_events(message: str | None, type_: str | None) -> dict[Dialect, bytes]:
    """The event that reports an error inside a stream that already answered 200."""
    openai = error_payload(
        message or "The server had an error while processing your request.",
        type_ or "server_error",
    )
    anthropic = anthropic_body(message or "Overloaded", type_ or "overloaded_error")
    gemini = gemini_body(500, message or _GEMINI_MESSAGES[500], type_)
    return {
        "openai": b"data: " + orjson.dumps(openai) + b"\n\n",
        "anthropic": b"event: error\ndata: " + anthropic + b"\n\n",
        # Gemini sends the bare JSON, without a "data:" prefix
        "gemini": gemini + b"\r\n\r\n",
    }
