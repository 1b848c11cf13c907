"""Reading request headers straight from an ASGI scope."""

from __future__ import annotations

from starlette.types import Scope

BEARER = "bearer "


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case bytes), decoded as Latin-1."""
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def presented_key(scope: Scope) -> str | None:
    """The API key a client presents: ``Authorization: Bearer <key>``, else ``x-api-key``
    (Anthropic's clients send it there). Authentication and the per-key cache scope both
    read it here, so they can never disagree about who is asking."""
    value = header(scope, b"authorization")
    if value is not None and value[: len(BEARER)].lower() == BEARER:
        return value[len(BEARER) :].strip() or None
    value = header(scope, b"x-api-key")
    if value is None:
        return None
    return value.strip() or None
