"""Fault injection for the mock provider: fault specs, their error answers, the fault queue.

A fault is a JSON object; every key is optional:

``latency_ms``             extra wait (ms) before answering, added to the server's base latency
``status``                 answer with this HTTP error status (400..599) and an OpenAI error body
``retry_after``            value of the ``retry-after`` header of the error answer: seconds (any
                           size), or a string sent as it is (an HTTP date, garbage)
``retry_after_ms``         value of the ``retry-after-ms`` header of the error answer
``code`` / ``type`` / ``message``  override fields of the error body
``hang``                   never answer; the handler ends when the client disconnects
``drop``                   close the connection without sending any response
``stream_chunk_delay_ms``  streamed replies: wait this long between two events
``drop_after_chunks``      streamed replies: send this many events, then cut the connection
``stream_error_after_chunks``  streamed replies: send this many events, then the format's
                           in-stream error event (after the 200), then end the stream

Provider answers that misbehave (OpenAI chat completions only; see
:mod:`aigateway.testing.mock_bodies`):

``reply_mb``               the reply's text is this many MB (1e6 bytes), streamed or not; the
                           body is written piece by piece, so the mock itself stays small
``stream_chunks``          streamed replies: this many content events (``chunk 0 ``,
                           ``chunk 1 ``, ...) instead of the usual reply; with
                           ``stream_chunk_delay_ms`` a long slow stream. Every stream's
                           progress (events sent, and whether the client cut it) is in
                           ``GET /_mock/stats`` under ``streams``
``usage``                  any JSON value: the answer's ``usage`` (and the stream's usage
                           chunk) holds it instead of the real counts
``answer_patch``           an object merged into the top level of a non-stream answer, e.g.
                           ``{"choices": [null]}``
``raw_event``              streamed replies: an event ``data: <raw_event>`` sent as is (e.g.
                           ``{not json``) after ``raw_event_after_chunks`` events (default 0)

The error answer of a fault follows the wire format of the endpoint called (OpenAI, Anthropic or
Gemini; see :mod:`aigateway.testing.mock_errors`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from aigateway.testing.mock_errors import (
    Dialect,
    ErrorAnswer,
    error_payload,
    fault_answers,
    request_error_body,
    stream_error_events,
)

__all__ = [
    "Fault",
    "FaultQueue",
    "MockRequestError",
    "error_payload",
    "parse_fault",
    "parse_fault_text",
]

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
        "stream_error_after_chunks",
        "reply_mb",
        "stream_chunks",
        "usage",
        "answer_patch",
        "raw_event",
        "raw_event_after_chunks",
    }
)
_UNSET: Any = object()


class MockRequestError(Exception):
    """A request the mock answers with an error: a status and the endpoint's error body."""

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

    def body(self, dialect: Dialect = "openai") -> bytes:
        return request_error_body(
            dialect, self.status, self.message, self.type_, self.param, self.code
        )


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
    stream_error_after_chunks: int | None = None
    errors: Mapping[Dialect, ErrorAnswer] = field(default_factory=dict)  # when ``status`` is set
    stream_errors: Mapping[Dialect, bytes] = field(default_factory=dict)
    reply_mb: float | None = None
    stream_chunks: int | None = None
    usage: Any = _UNSET  # unset: the real counts
    answer_patch: Mapping[str, Any] | None = None
    raw_event: str | None = None
    raw_event_after_chunks: int = 0

    @property
    def shapes_answer(self) -> bool:
        """Whether the fault changes the body of an answer (see ``mock_bodies``)."""
        return (
            self.reply_mb is not None
            or self.stream_chunks is not None
            or self.usage is not _UNSET
            or self.answer_patch is not None
            or self.raw_event is not None
        )

    @property
    def has_usage(self) -> bool:
        return self.usage is not _UNSET


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


def _count(spec: Mapping[str, Any], key: str) -> int | None:
    value = spec.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise FaultError(f"fault field {key!r} must be an integer >= 0: {value!r}")
    return value


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
    drop_after = _count(spec, "drop_after_chunks")
    error_after = _count(spec, "stream_error_after_chunks")
    retry_after: float | str | None = spec.get("retry_after")
    if not isinstance(retry_after, str):
        retry_after = _number(spec, "retry_after")
    retry_after_ms = _number(spec, "retry_after_ms")
    code = _text(spec, "code")
    type_ = _text(spec, "type")
    message = _text(spec, "message")

    errors = (
        {}
        if status is None
        else fault_answers(
            status,
            message=message,
            type_=type_,
            code=code,
            retry_after=retry_after,
            retry_after_ms=retry_after_ms,
        )
    )
    stream_errors = {} if error_after is None else stream_error_events(message, type_)
    answer_patch = spec.get("answer_patch")
    if answer_patch is not None and not isinstance(answer_patch, dict):
        raise FaultError(f"fault field 'answer_patch' must be an object, got {answer_patch!r}")

    return Fault(
        spec=spec,
        latency_ms=_number(spec, "latency_ms") or 0.0,
        status=status,
        hang=_flag(spec, "hang"),
        drop=_flag(spec, "drop"),
        stream_chunk_delay_ms=_number(spec, "stream_chunk_delay_ms"),
        drop_after_chunks=drop_after,
        stream_error_after_chunks=error_after,
        errors=errors,
        stream_errors=stream_errors,
        reply_mb=_number(spec, "reply_mb"),
        stream_chunks=_count(spec, "stream_chunks"),
        usage=spec.get("usage", _UNSET),
        answer_patch=answer_patch,
        raw_event=_text(spec, "raw_event"),
        raw_event_after_chunks=_count(spec, "raw_event_after_chunks") or 0,
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
