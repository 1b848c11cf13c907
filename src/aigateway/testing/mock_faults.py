"""Fault injection for the mock provider: fault specs, OpenAI-style error bodies, the fault queue.

A fault is a JSON object; every key is optional:

``latency_ms``             extra wait (ms) before answering, added to the server's base latency
``status``                 answer with this HTTP error status (400..599) and an OpenAI error body
``retry_after``            value of the ``retry-after`` header (seconds) of the error answer
``retry_after_ms``         value of the ``retry-after-ms`` header of the error answer
``code`` / ``type`` / ``message``  override fields of the error body
``hang``                   never answer; the handler ends when the client disconnects
``drop``                   close the connection without sending any response
``stream_chunk_delay_ms``  streamed replies: wait this long between two events
``drop_after_chunks``      streamed replies: send this many events, then cut the connection
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

__all__ = [
    "Fault",
    "FaultQueue",
    "MockRequestError",
    "error_payload",
    "parse_fault",
    "parse_fault_text",
]

_JSON_HEADERS: Mapping[str, str] = {"Content-Type": "application/json"}

_FAULT_KEYS = frozenset(
    {
        "latency_ms",
        "status",
        "retry_after",
        "retry_after_ms",
        "code",
        "type",
        "message",
        "hang",
        "drop",
        "stream_chunk_delay_ms",
        "drop_after_chunks",
    }
)


def error_payload(
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class MockRequestError(Exception):
    """A request the mock answers with an OpenAI-style error (status + JSON error body)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type_ = type_
        self.param = param
        self.code = code

    def body(self) -> bytes:
        return orjson.dumps(error_payload(self.message, self.type_, self.param, self.code))


class FaultError(ValueError):
    """An invalid fault specification."""


@dataclass(frozen=True, slots=True)
class Fault:
    """A parsed fault. Build it with :func:`parse_fault`, which also precomputes the error body."""

    spec: dict[str, Any]
    latency_ms: float = 0.0
    status: int | None = None
    hang: bool = False
    drop: bool = False
    stream_chunk_delay_ms: float | None = None
    drop_after_chunks: int | None = None
    error_body: bytes = b""
    error_headers: Mapping[str, str] = field(default_factory=dict)


def _default_error(status: int, code: str | None) -> tuple[str, str | None, str]:
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


def _number(spec: Mapping[str, Any], key: str) -> float | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError(f"fault field {key!r} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise FaultError(f"fault field {key!r} must be a finite number >= 0, got {value!r}")
    return float(value)


def _flag(spec: Mapping[str, Any], key: str) -> bool:
    value = spec.get(key, False)
    if not isinstance(value, bool):
        raise FaultError(f"fault field {key!r} must be true or false, got {value!r}")
    return value


def _text(spec: Mapping[str, Any], key: str) -> str | None:
    value = spec.get(key)
    if value is not None and not isinstance(value, str):
        raise FaultError(f"fault field {key!r} must be a string, got {value!r}")
    return value


def _header_number(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def parse_fault(spec: Any) -> Fault:
    """Validate a fault object (parsed JSON) and precompute its error answer.

    Raises :class:`FaultError` on unknown keys or wrongly typed values.
    """
    if not isinstance(spec, dict):
        raise FaultError(f"a fault must be a JSON object, got {spec!r}")
    unknown = spec.keys() - _FAULT_KEYS
    if unknown:
        raise FaultError(
            f"unknown fault field(s) {sorted(unknown)}; allowed: {sorted(_FAULT_KEYS)}"
        )
    status_value = spec.get("status")
    status: int | None = None
    if status_value is not None:
        if isinstance(status_value, bool) or not isinstance(status_value, int):
            raise FaultError(f"fault field 'status' must be an integer, got {status_value!r}")
        if not 400 <= status_value <= 599:
            raise FaultError(f"fault field 'status' must be in 400..599, got {status_value}")
        status = status_value
    drop_after = spec.get("drop_after_chunks")
    if drop_after is not None and (
        isinstance(drop_after, bool) or not isinstance(drop_after, int) or drop_after < 0
    ):
        raise FaultError(f"fault field 'drop_after_chunks' must be an integer >= 0: {drop_after!r}")
    retry_after = _number(spec, "retry_after")
    retry_after_ms = _number(spec, "retry_after_ms")
    code = _text(spec, "code")
    type_ = _text(spec, "type")
    message = _text(spec, "message")

    body = b""
    headers: dict[str, str] = {}
    if status is not None:
        default_type, default_code, default_message = _default_error(status, code)
        body = orjson.dumps(
            error_payload(
                message if message is not None else default_message,
                type_ if type_ is not None else default_type,
                None,
                code if code is not None else default_code,
            )
        )
        headers.update(_JSON_HEADERS)
        if retry_after is not None:
            headers["retry-after"] = _header_number(retry_after)
        if retry_after_ms is not None:
            headers["retry-after-ms"] = _header_number(retry_after_ms)

    return Fault(
        spec=spec,
        latency_ms=_number(spec, "latency_ms") or 0.0,
        status=status,
        hang=_flag(spec, "hang"),
        drop=_flag(spec, "drop"),
        stream_chunk_delay_ms=_number(spec, "stream_chunk_delay_ms"),
        drop_after_chunks=drop_after,
        error_body=body,
        error_headers=headers,
    )


@lru_cache(maxsize=256)
def parse_fault_text(text: str) -> Fault:
    """Parse a fault given as JSON text (``x-mock-fault`` header, ``metadata.mock_fault``).

    Cached, so a load test sending the same fault on every request parses it once.
    """
    try:
        spec = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise FaultError(f"fault is not valid JSON: {exc}") from None
    return parse_fault(spec)


class FaultQueue:
    """The faults configured through ``POST /_mock/faults``.

    ``next`` is a FIFO: each /v1 call without a per-request fault takes one. When it is empty,
    ``default`` (if set) applies to every call.
    """

    __slots__ = ("_next", "default")

    def __init__(self) -> None:
        self._next: deque[Fault] = deque()
        self.default: Fault | None = None

    def take(self) -> Fault | None:
        if self._next:
            return self._next.popleft()
        return self.default

    def clear(self) -> None:
        self._next.clear()
        self.default = None

    def configure(self, payload: Any) -> None:
        """Apply ``{"next": [fault, ...], "default": fault | null}``.

        ``next`` replaces the queue; ``default`` replaces the default (null clears it). A key
        that is absent leaves that part unchanged. Nothing changes if any fault is invalid.
        """
        if not isinstance(payload, dict):
            raise FaultError('expected a JSON object like {"next": [...], "default": null}')
        unknown = payload.keys() - {"next", "default"}
        if unknown:
            raise FaultError(f"unknown field(s) {sorted(unknown)}; allowed: ['default', 'next']")
        queue: list[Fault] | None = None
        if "next" in payload:
            items = payload["next"]
            if not isinstance(items, list):
                raise FaultError("'next' must be a list of faults")
            queue = [parse_fault(item) for item in items]
        default: Fault | None = self.default
        if "default" in payload:
            spec = payload["default"]
            default = None if spec is None else parse_fault(spec)
        if queue is not None:
            self._next = deque(queue)
        self.default = default

    def describe(self) -> dict[str, Any]:
        return {
            "next": [fault.spec for fault in self._next],
            "default": None if self.default is None else self.default.spec,
        }
