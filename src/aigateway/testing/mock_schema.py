"""JSON that satisfies a JSON Schema: the mock's answer to a structured-output request.

Deterministic and small: an object gets every property it declares (required or not, so a
strict schema with ``additionalProperties: false`` is met), a string its first ``enum`` value,
``const``, or ``"mock"`` stretched or cut to ``minLength``/``maxLength``, a number or integer
the smallest value its bounds allow (``1`` without bounds), a boolean ``true``, an array
``minItems`` items (at least one, at most ``maxItems``), ``anyOf``/``oneOf`` their first
branch that is not ``null``, ``allOf`` its branches merged, ``$ref`` the definition it points
at (``#/$defs/...`` or ``#/definitions/...``; a reference cycle ends in ``null``). Types may be
written in Gemini's upper case (``"OBJECT"``). Pure functions, no I/O.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["sample"]

_MAX_DEPTH = 32
_TEXT = "mock"


def sample(schema: Any) -> Any:
    """A value that ``schema`` accepts (within the keywords listed above)."""
    root = schema if isinstance(schema, dict) else {}
    return _value(root, root, 0)


def _resolve(root: dict[str, Any], ref: str) -> Any:
    node: Any = root
    for name in ref.removeprefix("#/").split("/") if ref != "#" else ():
        node = (
            node.get(name.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
        )
    return node


def _type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the first that is not null
        kind = next((k for k in kind if isinstance(k, str) and k.lower() != "null"), "null")
    if isinstance(kind, str):
        return kind.lower()
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return None


def _value(root: dict[str, Any], schema: Any, depth: int) -> Any:
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _value(root, _resolve(root, ref), depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            usable = [b for b in branches if not (isinstance(b, dict) and _type(b) == "null")]
            return _value(root, (usable or branches)[0], depth + 1)
    branches = schema.get("allOf")
    if isinstance(branches, list) and branches:
        merged: dict[str, Any] = {}
        for branch in branches:
            if isinstance(branch, dict):
                merged.update(branch)
        return _value(root, merged, depth + 1)
    kind = _type(schema)
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {name: _value(root, sub, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        low = _int(schema.get("minItems"), 0)
        high = _int(schema.get("maxItems"), max(low, 1))
        count = min(max(low, 1), high)
        items = schema.get("items")
        return [_value(root, items, depth + 1) for _ in range(count)]
    if kind == "string":
        low = _int(schema.get("minLength"), 0)
        high = _int(schema.get("maxLength"), max(low, len(_TEXT)))
        return (_TEXT * (low // len(_TEXT) + 1))[: max(low, min(len(_TEXT), high))]
    if kind in ("number", "integer"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _TEXT  # no type at all: any value will do


def _int(value: Any, default: int) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
    )


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    low = schema.get("minimum")
    exclusive = schema.get("exclusiveMinimum")
    value: float = 1.0
    if isinstance(low, int | float) and not isinstance(low, bool):
        value = float(low)
    if isinstance(exclusive, int | float) and not isinstance(exclusive, bool):
        value = max(value, exclusive + (1 if integer else 0.5))
    high = schema.get("maximum")
    if isinstance(high, int | float) and not isinstance(high, bool) and value > high:
        value = float(high)
    if integer:
        return math.ceil(value) if value == value else 1
    return value
