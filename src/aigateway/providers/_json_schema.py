"""A client's JSON Schema rewritten to the subset a provider's constrained decoding takes.

OpenAI strict schemas may hold keywords Anthropic's structured outputs and Gemini's
``responseJsonSchema`` do not enforce (``minLength``, ``maximum``, ``pattern``...). A keyword
outside the provider's subset is moved into the schema's ``description`` (``"minLength: 6"``),
as Anthropic's own SDK does: the model still reads it, the provider does not reject it, and
the answer may break it (validate if it matters). Keywords starting with ``$`` (``$ref``,
``$defs``) are kept. Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from aigateway.providers._openai_format import JsonObject

__all__ = ["ANTHROPIC_KEYWORDS", "GEMINI_KEYWORDS", "restrict"]

_COMMON = frozenset(
    {"type", "title", "description", "enum", "properties", "required", "items", "anyOf",
     "additionalProperties", "format", "definitions"}
)  # fmt: skip
# platform.claude.com structured outputs, "JSON Schema limitations": no numeric or length
# constraints, additionalProperties only false, minItems only 0 or 1.
ANTHROPIC_KEYWORDS = _COMMON | {"const", "allOf", "default", "pattern", "minItems"}
# generative_service.proto GenerationConfig.response_json_schema: the keywords it lists.
GEMINI_KEYWORDS = _COMMON | {
    "prefixItems", "minItems", "maxItems", "minimum", "maximum", "oneOf", "propertyOrdering",
}  # fmt: skip
_MAPS = ("properties", "$defs", "definitions")  # name -> schema
_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")  # schemas


def restrict(
    schema: JsonObject, keywords: frozenset[str], *, closed: bool = False, min_items: int = 0
) -> JsonObject:
    """``schema`` with only ``keywords``; ``closed``: every object gets
    ``additionalProperties: false`` (Anthropic takes no other value); ``min_items``: the
    largest ``minItems`` kept (Anthropic: 1), 0 for any."""
    result: JsonObject = _node(schema, _Rules(keywords, closed, min_items))
    return result


@dataclass(frozen=True, slots=True)
class _Rules:
    keywords: frozenset[str]
    closed: bool
    min_items: int


def _node(schema: Any, rules: _Rules) -> Any:
    keywords, closed = rules.keywords, rules.closed
    if not isinstance(schema, dict):
        return schema
    out: JsonObject = {}
    moved: list[str] = []
    for key, value in schema.items():
        if key in _MAPS and isinstance(value, dict):
            out[key] = {name: _node(sub, rules) for name, sub in value.items()}
        elif key in _LISTS and isinstance(value, list):
            kept = [_node(sub, rules) for sub in value]
            if key in keywords:
                out[key] = kept
            elif key == "oneOf" and "anyOf" in keywords:
                out["anyOf"] = kept  # the same answers, for an answer that matches one branch
            else:
                moved.append(f"{key}: {_text(value)}")
        elif key == "items" or key == "additionalProperties":
            out[key] = _node(value, rules)
        elif key == "const" and key not in keywords:
            out["enum"] = [value]
        elif key == "minItems" and rules.min_items and value not in range(rules.min_items + 1):
            moved.append(f"minItems: {_text(value)}")
        elif key in keywords or key.startswith("$"):
            out[key] = value
        else:
            moved.append(f"{key}: {_text(value)}")
    if closed and (out.get("type") == "object" or "properties" in out):
        out["additionalProperties"] = False
    if moved:
        description = out.get("description")
        lines = [description] if isinstance(description, str) and description else []
        out["description"] = "\n".join([*lines, *moved])
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()
