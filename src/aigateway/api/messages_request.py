"""Parse and check Anthropic Messages request bodies; a bad one is a 400 naming the field.

The same rules as Anthropic's for the fields every target relies on (``model``,
``max_tokens``, ``messages`` and their blocks, sampling ranges, ``system``, tools); any
other field passes on: to an Anthropic target as sent, to a translated target by the
rules of ``providers/_messages_chat.py`` (dropped with a documented reason, or a 400).
``api/messages_schema.py`` states the checked rules as JSON schemas.
"""

from __future__ import annotations

from typing import Any

import orjson

from aigateway.api.validation import check_depth, parse_json_object
from aigateway.errors import InvalidRequest
from aigateway.wire import ApiRequest

ROLES = ("user", "assistant")
TOOL_CHOICES = ("auto", "any", "tool", "none")
# The fields each kind of content block must have, and their JSON type.
BLOCK_FIELDS: dict[str, tuple[tuple[str, type], ...]] = {
    "text": (("text", str),),
    "image": (("source", dict),),
    "document": (("source", dict),),
    "tool_use": (("id", str), ("name", str), ("input", dict)),
    "tool_result": (("tool_use_id", str),),
    "thinking": (("thinking", str), ("signature", str)),
    "redacted_thinking": (("data", str),),
}
INT_MAX = 2**63 - 1


Headers = tuple[tuple[str, str], ...]


def parse_messages_request(raw: bytes, provider_headers: Headers = ()) -> ApiRequest:
    """A ``POST /v1/messages`` body: ``max_tokens`` required, as Anthropic requires it.
    ``provider_headers``: what the client sent for Anthropic (``anthropic-beta``)."""
    body, model = _common(raw)
    if "max_tokens" not in body:
        raise _missing("max_tokens", "the most tokens to generate, a whole number >= 1")
    if _whole(body, "max_tokens", 1) | _whole(body, "top_k", 0):
        raw = orjson.dumps(body)  # 5.0 goes on as 5, as providers expect
    stream = _optional(body, "stream", bool, "true or false")
    return ApiRequest(
        "messages", model, body, raw, stream=bool(stream), provider_headers=provider_headers
    )


def parse_count_tokens_request(raw: bytes, provider_headers: Headers = ()) -> ApiRequest:
    """A ``POST /v1/messages/count_tokens`` body: a Messages body without ``max_tokens``."""
    body, model = _common(raw)
    return ApiRequest("messages", model, body, raw, provider_headers=provider_headers)


def _common(raw: bytes) -> tuple[dict[str, Any], str]:
    body = parse_json_object(raw, check_nesting=False)
    check_depth(body, raw)
    model = body.get("model")
    if model is None:
        raise _missing("model", "a model name such as 'claude-sonnet-4-5'")
    if not isinstance(model, str) or not model.strip():
        raise _wrong("model", "a string with more than white space")
    messages = body.get("messages")
    if messages is None:
        raise _missing("messages", "a list of {role, content} objects")
    if not isinstance(messages, list) or not messages:
        raise _wrong("messages", "a non-empty list of {role, content} objects")
    for i, message in enumerate(messages):
        _check_message(f"messages.{i}", message)
    _check_system(body.get("system"))
    for name, high in (("temperature", 1.0), ("top_p", 1.0)):
        value = body.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high
        ):
            raise _wrong(name, f"a number from 0 to {high:g}")
    stop = body.get("stop_sequences")
    if stop is not None and (
        not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)
    ):
        raise _wrong("stop_sequences", "a list of strings")
    _check_tools(body)
    for name in ("metadata", "thinking"):
        _optional(body, name, dict, "an object")
    return body, model


def _check_message(where: str, message: Any) -> None:
    if not isinstance(message, dict):
        raise _wrong(where, "an object with 'role' and 'content'")
    role = message.get("role")
    if role is None:
        raise _missing(f"{where}.role", "'user' or 'assistant'")
    if role not in ROLES:
        raise _wrong(f"{where}.role", "'user' or 'assistant'")
    if "content" not in message:
        raise _missing(f"{where}.content", "a string or a list of content blocks")
    content = message["content"]
    if isinstance(content, str):
        return
    if not isinstance(content, list) or not content:
        raise _wrong(f"{where}.content", "a string or a non-empty list of content blocks")
    for j, block in enumerate(content):
        check_block(f"{where}.content.{j}", block)


def check_block(where: str, block: Any) -> None:
    """A content block: an object with a string ``type``, and the fields its kind needs
    (kinds this gateway does not know pass on; only Anthropic may take them)."""
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise _wrong(where, "a content block: an object with a 'type'")
    for name, kind in BLOCK_FIELDS.get(block["type"], ()):
        if not isinstance(block.get(name), kind):
            expected = "a string" if kind is str else "an object"
            raise _wrong(f"{where}.{name}", f"{expected} in a {block['type']!r} block")


def _check_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _wrong("system", "a string or a list of text blocks")
    for j, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _wrong(f"system.{j}", "a text block: {'type': 'text', 'text': ...}")
        if not isinstance(block.get("text"), str):
            raise _wrong(f"system.{j}.text", "a string")


def _check_tools(body: dict[str, Any]) -> None:
    tools = _optional(body, "tools", list, "a list of tools")
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _wrong(f"tools.{i}", "a tool: an object with a 'name'")
    choice = _optional(body, "tool_choice", dict, "an object with a 'type'")
    if choice is None:
        return
    kind = choice.get("type")
    if kind not in TOOL_CHOICES:
        raise _wrong("tool_choice.type", "one of " + ", ".join(TOOL_CHOICES))
    if kind == "tool" and not isinstance(choice.get("name"), str):
        raise _missing("tool_choice.name", "the name of the tool to call")


def _whole(body: dict[str, Any], name: str, least: int) -> bool:
    """Check a whole-number field; whether it had to be made an int (JSON Schema counts
    5.0 as an integer, so the gateway does too)."""
    value = body.get(name)
    if value is None:
        return False
    number = value if isinstance(value, int) else None
    if isinstance(value, float) and value.is_integer():
        number = int(value)
    if isinstance(value, bool) or number is None or not least <= number <= INT_MAX:
        raise _wrong(name, f"a whole number >= {least}")
    body[name] = number
    return number is not value


def _optional(body: dict[str, Any], name: str, kind: type, expected: str) -> Any:
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise _wrong(name, expected)
    return value


def _missing(param: str, expected: str) -> InvalidRequest:
    return InvalidRequest(
        f"{param}: Field required ({expected})", param=param, code="missing_required_parameter"
    )


def _wrong(param: str, expected: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: expected {expected}", param=param, code="invalid_type")
