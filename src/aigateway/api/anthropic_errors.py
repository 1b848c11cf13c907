"""Errors in Anthropic's shape, for the Messages API (``/v1/messages*``).

``{"type": "error", "error": {"type", "message"}}`` with the gateway's status; the error
type follows the status the way Anthropic's do, so the anthropic SDK raises the class it
would raise for Anthropic itself. Headers (``retry-after``) are the gateway error's own.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from aigateway.errors import GatewayError
from aigateway.providers.anthropic import ERROR_STATUS

__all__ = ["anthropic_error_body", "anthropic_error_response", "speaks_anthropic"]

PREFIX = "/v1/messages"
# Anthropic's own table read backwards; the gateway's 503 (no provider can serve now) is
# what Anthropic calls being overloaded.
_BY_STATUS = {status: kind for kind, status in ERROR_STATUS.items()} | {503: "overloaded_error"}
ERROR_TYPES = frozenset(_BY_STATUS.values())


def speaks_anthropic(path: str) -> bool:
    """Whether errors on ``path`` go in Anthropic's shape."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def error_type(status: int, code: str | None = None) -> str:
    """Anthropic's error type for a status; ``code`` wins when it already is one (an error
    Anthropic reported, relayed as it came)."""
    if code in ERROR_TYPES:
        return str(code)
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return "invalid_request_error" if status < 500 else "api_error"


def anthropic_error_body(error: GatewayError) -> dict[str, Any]:
    kind = error_type(error.status, error.code)
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def anthropic_error_response(
    error: GatewayError, headers: dict[str, str] | None = None
) -> Response:
    all_headers = error.headers()
    if headers:
        all_headers.update(headers)
    body = orjson.dumps(anthropic_error_body(error))
    return Response(body, error.status, all_headers, media_type="application/json")
