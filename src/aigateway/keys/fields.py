"""The JSON of ``POST /admin/keys`` and ``PATCH /admin/keys/{id}``, validated field by field.

=================  ===============================================================
``name``           required on POST; 1 to 100 printable characters, unique among
                   the keys not revoked
``rpm``            requests per minute, a whole number >= 1 (null: no limit)
``tpm``            tokens per minute (prompt + completion), a whole number >= 1
``max_parallel``   requests in flight at once, a whole number >= 1
``budget_usd``     USD the key may spend per ``budget_period``, a number >= 0
``budget_period``  ``day`` or ``month`` (UTC calendar) or ``total`` (the default)
``models``         model names or aliases the key may use (empty or null: any)
``priority``       the key's default priority, one of ``wire.PRIORITIES``
``max_priority``   the most urgent priority its requests may ask for
``expires_at``     RFC 3339 time after which the key is refused (null: never)
``metadata``       any JSON object, kept and shown as given
=================  ===============================================================

Any other field is a 400 naming it; so is a bad value, with nothing stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import orjson

from aigateway.errors import InvalidRequest
from aigateway.keys.model import LIMIT_FIELDS, PERIODS
from aigateway.wire import PRIORITIES

__all__ = ("MAX_LIMIT", "MAX_MODELS", "MAX_USD", "parse_changes", "parse_new")

MAX_NAME_CHARS: Final = 100
MAX_MODELS: Final = 256
MAX_METADATA_BYTES: Final = 16 * 1024
MAX_LIMIT: Final = 10**12
MAX_USD: Final = 1e12


def parse_new(body: dict[str, Any]) -> dict[str, Any]:
    """A new key's fields (``name`` and whichever limits it sets)."""
    _known(body, ("name", *LIMIT_FIELDS))
    if "name" not in body:
        raise InvalidRequest("missing field 'name': every key needs a name", param="name")
    fields = {"name": _name(body["name"])}
    fields.update(_limits(body))
    return fields


def parse_changes(body: dict[str, Any]) -> dict[str, Any]:
    """The fields a PATCH changes (``name`` included); null clears a limit."""
    _known(body, ("name", *LIMIT_FIELDS))
    fields = _limits(body)
    if "name" in body:
        fields["name"] = _name(body["name"])
    if not fields:
        raise InvalidRequest(
            "nothing to change: send at least one of " + ", ".join(("name", *LIMIT_FIELDS))
        )
    return fields


def _known(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise InvalidRequest(
            "unknown field(s): "
            + ", ".join(repr(name) for name in unknown)
            + "; a key takes "
            + ", ".join(allowed),
            param=unknown[0],
            code="unknown_field",
        )


def _limits(body: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in ("rpm", "tpm", "max_parallel"):
        if name in body:
            fields[name] = _positive_int(body[name], name)
    if "budget_usd" in body:
        fields["budget_usd"] = _usd(body["budget_usd"])
    if "budget_period" in body:
        fields["budget_period"] = _choice(body["budget_period"], "budget_period", PERIODS, "total")
    if "models" in body:
        fields["models"] = _models(body["models"])
    for name in ("priority", "max_priority"):
        if name in body:
            fields[name] = _choice(body[name], name, PRIORITIES, None)
    if "expires_at" in body:
        fields["expires_at"] = _time(body["expires_at"])
    if "metadata" in body:
        fields["metadata"] = _metadata(body["metadata"])
    return fields


def _bad(name: str, expected: str) -> InvalidRequest:
    return InvalidRequest(f"invalid field '{name}': expected {expected}", param=name)


def _name(value: Any) -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value.strip()) <= MAX_NAME_CHARS
        or not value.isprintable()
    ):
        raise _bad("name", f"1 to {MAX_NAME_CHARS} printable characters")
    return value.strip()


def _positive_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_LIMIT:
        raise _bad(name, "a whole number >= 1, or null for no limit")
    return value


def _usd(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad("budget_usd", "a number of US dollars >= 0, or null for no budget")
    usd = float(value)
    if not 0.0 <= usd < MAX_USD:
        raise _bad("budget_usd", "a number of US dollars >= 0, or null for no budget")
    return usd


def _choice(value: Any, name: str, choices: tuple[str, ...], default: str | None) -> Any:
    if value is None:
        return default
    if not isinstance(value, str) or value not in choices:
        raise _bad(name, "one of " + ", ".join(choices))
    return value


def _models(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if (
        not isinstance(value, list)
        or len(value) > MAX_MODELS
        or not all(
            isinstance(m, str) and 0 < len(m) <= 200 and m.strip() == m and m.isprintable()
            for m in value
        )
    ):
        raise _bad("models", f"a list of at most {MAX_MODELS} model names or aliases")
    return tuple(dict.fromkeys(value))


def _time(value: Any) -> float | None:
    if value is None:
        return None
    expected = "an RFC 3339 time with its offset, e.g. 2027-01-31T00:00:00Z, or null"
    if not isinstance(value, str) or "T" not in value.upper():
        raise _bad("expires_at", expected)
    try:
        when = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise _bad("expires_at", expected) from None
    if when.tzinfo is None:
        raise _bad("expires_at", expected)
    return when.timestamp()


def _metadata(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(orjson.dumps(value)) > MAX_METADATA_BYTES:
        raise _bad("metadata", f"a JSON object of at most {MAX_METADATA_BYTES} bytes")
    return value
