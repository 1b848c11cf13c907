"""The tenant key endpoints in ``/openapi.json`` (``api/keys.py``; fields: ``keys.fields``)."""

from __future__ import annotations

from typing import Any, Final

from aigateway.keys.fields import (
    MAX_LIMIT,
    MAX_METADATA_BYTES,
    MAX_MODELS,
    MAX_NAME_CHARS,
    MAX_USD,
)
from aigateway.keys.model import PERIODS
from aigateway.wire import PRIORITIES

__all__ = ("key_paths", "key_schemas")

_REF: Final = "#/components/schemas/"
_LIMIT: Final = {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_LIMIT}
_PRIORITY: Final = {"type": ["string", "null"], "enum": [*PRIORITIES, None]}

# The fields of a key an operator sets; null clears one.
_FIELDS: Final[dict[str, Any]] = {
    "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
    "rpm": {**_LIMIT, "description": "requests a minute, node-wide"},
    "tpm": {**_LIMIT, "description": "tokens a minute (prompt + completion)"},
    "max_parallel": {**_LIMIT, "description": "requests in flight at once"},
    "budget_usd": {
        "type": ["number", "null"],
        "minimum": 0,
        "exclusiveMaximum": MAX_USD,
        "description": "USD per period",
    },
    "budget_period": {"type": ["string", "null"], "enum": [*PERIODS, None]},
    "models": {
        "type": ["array", "null"],
        "maxItems": MAX_MODELS,
        "items": {"type": "string", "minLength": 1, "maxLength": 200},
        "description": "models and aliases the key may use (empty: any)",
    },
    "priority": {**_PRIORITY, "description": "its requests' default priority"},
    "max_priority": {**_PRIORITY, "description": "the most urgent priority it may ask for"},
    "expires_at": {"type": ["string", "null"], "format": "date-time"},
    "metadata": {"type": ["object", "null"], "description": f"at most {MAX_METADATA_BYTES} bytes"},
}

KEY_OBJECT: Final = {
    "type": "object",
    "required": ["id", "object", "name", "created_at", "usage", "spend"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "key"},
        "prefix": {"type": "string", "description": "the secret's first characters"},
        "created_at": {"type": "string", "format": "date-time"},
        "revoked_at": {"type": ["string", "null"], "format": "date-time"},
        **_FIELDS,
        "usage": {"type": "object"},
        "spend": {
            "type": "object",
            "properties": {
                "total_usd": {"type": "number"},
                "period": {"type": "string"},
                "period_usd": {"type": "number"},
                "budget_remaining_usd": {"type": ["number", "null"]},
                "reserved_usd": {"type": "number"},
            },
        },
    },
}


def key_schemas() -> dict[str, Any]:
    return {
        "KeyCreate": {
            "type": "object",
            "required": ["name"],
            "properties": _FIELDS,
            "additionalProperties": False,
        },
        "KeyChange": {
            "type": "object",
            "minProperties": 1,
            "properties": _FIELDS,
            "additionalProperties": False,
        },
        "Key": KEY_OBJECT,
        "KeyCreated": {
            "allOf": [
                {"$ref": _REF + "Key"},
                {
                    "type": "object",
                    "required": ["key"],
                    "properties": {"key": {"type": "string", "description": "shown once"}},
                },
            ]
        },
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    error = _json({"$ref": _REF + "Error"})
    return {str(s): {"description": "error", **error} for s in statuses}


def key_paths() -> dict[str, Any]:
    key = _json({"$ref": _REF + "Key"})
    one = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/admin/keys": {
            "get": {
                "summary": "Tenant keys (revoked too): limits, usage and spend, no secrets",
                "responses": {
                    "200": {
                        "description": "keys",
                        **_json(
                            {
                                "type": "object",
                                "properties": {
                                    "object": {"const": "list"},
                                    "data": {"type": "array", "items": {"$ref": _REF + "Key"}},
                                },
                            }
                        ),
                    }
                },
            },
            "post": {
                "summary": "Make a tenant key; its secret is in this answer only",
                "requestBody": {"required": True, **_json({"$ref": _REF + "KeyCreate"})},
                "responses": {
                    "201": {"description": "made", **_json({"$ref": _REF + "KeyCreated"})},
                    **_errors(400, 409),
                },
            },
        },
        "/admin/keys/{id}": {
            "parameters": [one],
            "get": {
                "summary": "One tenant key",
                "responses": {"200": {"description": "the key", **key}, **_errors(404)},
            },
            "patch": {
                "summary": "Change a tenant key's name or limits (null clears a limit)",
                "requestBody": {"required": True, **_json({"$ref": _REF + "KeyChange"})},
                "responses": {
                    "200": {"description": "changed", **key},
                    **_errors(400, 404, 409),
                },
            },
            "delete": {
                "summary": "Revoke a tenant key, on every worker within a second",
                "responses": {"200": {"description": "revoked", **key}, **_errors(404)},
            },
        },
    }
