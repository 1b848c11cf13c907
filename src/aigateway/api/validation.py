"""Parse and check OpenAI-format request bodies; a bad one is a 400 naming the field.

Only the fields the gateway relies on, or that providers would reject late and
expensively, are checked; unknown fields pass through to the provider. Whatever the
body holds (any JSON value in any field, nesting up to JSON's limit), the outcome is a
request or an ``InvalidRequest``, never another exception. ``openapi.py`` states the same
rules as JSON schemas; tests/test_api_schema_mirror.py keeps the two in step.
"""

from __future__ import annotations

from typing import Any

import orjson

from aigateway.errors import InvalidRequest
from aigateway.hotpath import MAX_DEPTH
from aigateway.wire import ApiRequest

CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# The integers orjson reads as integers (a larger literal becomes a float): the schemas'
# bounds of whole-number fields.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
MAX_CHOICES = 128  # OpenAI's bound on n
MAX_DIMENSIONS = 8192  # more than any embedding model offers
WHOLE_NUMBERS = (("max_tokens", INT_MAX), ("max_completion_tokens", INT_MAX), ("n", MAX_CHOICES))


def parse_json_object(raw: bytes, check_nesting: bool = True) -> dict[str, Any]:
    """The body as a JSON object; ``check_nesting=False`` leaves the depth to the caller
    (a batch checks each item alone, so one deep item fails only itself)."""
    if not raw.strip():
        raise InvalidRequest("the request body is empty; send a JSON object", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"the request body must be a JSON object, not {_kind(body)}", code="invalid_json"
        )
    if check_nesting:
        check_depth(body, raw)
    return body


def check_depth(value: Any, raw: bytes | None = None) -> None:
    """400 for lists and objects nested deeper than ``MAX_DEPTH`` (the body is depth 1):
    the cache key, the re-encoding for other providers and the providers themselves all
    stop somewhere, so the gateway states one limit up front."""
    if raw is not None and raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return  # too few brackets to nest that deep: the common case costs two scans
    if _deeper_than(value, MAX_DEPTH):
        raise InvalidRequest(
            f"the request is nested deeper than {MAX_DEPTH} levels of lists and objects",
            code="too_deeply_nested",
        )


def _deeper_than(container: Any, room: int) -> bool:
    """Whether lists and objects nest more than ``room`` levels, ``container`` the first
    (recursion is bounded by ``room``; orjson's own limit is 1024)."""
    if room == 0:
        return True
    for item in container.values() if type(container) is dict else container:
        kind = type(item)
        if (kind is dict or kind is list) and _deeper_than(item, room - 1):
            return True
    return False


def parse_chat_request(raw: bytes) -> ApiRequest:
    body = parse_json_object(raw)
    model = _model(body)
    messages = body.get("messages")
    if messages is None:
        raise _missing("messages", "a list of {role, content} objects")
    if not isinstance(messages, list) or not messages:
        raise _wrong("messages", "a non-empty list of {role, content} objects", messages)
    for i, message in enumerate(messages):
        _check_message(i, message)
    stream = _optional(body, "stream", bool, "true or false")
    _check_stream_options(body, bool(stream))
    _number_in(body, "temperature", 0.0, 2.0)
    _number_in(body, "top_p", 0.0, 1.0)
    _number_in(body, "presence_penalty", -2.0, 2.0)
    _number_in(body, "frequency_penalty", -2.0, 2.0)
    changed = False
    for name, most in WHOLE_NUMBERS:
        changed |= _whole_number(body, name, most)
    _check_stop(body)
    for name in ("tools", "functions"):
        _optional(body, name, list, "a list")
    choice = body.get("tool_choice")
    if choice is not None and not isinstance(choice, str | dict):
        raise _wrong("tool_choice", "a string or an object", choice)
    if changed:  # a whole number written as 5.0 goes on as 5, as providers expect
        raw = orjson.dumps(body)
    return ApiRequest("chat", model, body, raw, stream=bool(stream))


def parse_embeddings_request(raw: bytes) -> ApiRequest:
    body = parse_json_object(raw)
    model = _model(body)
    if "input" not in body:
        raise _missing("input", "a string or a list of strings")
    value = body["input"]
    tokens = _embedding_input(value)
    if tokens is None:
        raise _wrong(
            "input", "a non-empty string, list of non-empty strings, or list of token lists", value
        )
    changed = tokens is not value
    if changed:
        body["input"] = tokens
    changed |= _whole_number(body, "dimensions", MAX_DIMENSIONS)
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise _wrong("encoding_format", "'float' or 'base64'", fmt)
    if changed:
        raw = orjson.dumps(body)
    return ApiRequest("embeddings", model, body, raw)


# --- field checks ------------------------------------------------------------------------


def _model(body: dict[str, Any]) -> str:
    if "model" not in body:
        raise _missing("model", "a model name such as 'gpt-4o-mini'")
    model = body["model"]
    if not isinstance(model, str) or not model.strip():
        raise _wrong("model", "a string with more than white space", model)
    return model


def _check_message(i: int, message: Any) -> None:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise _wrong(where, "an object with 'role' and 'content'", message)
    role = message.get("role")
    if role is None:
        raise _missing(f"{where}.role", "one of " + ", ".join(sorted(CHAT_ROLES)))
    if not isinstance(role, str) or role not in CHAT_ROLES:
        raise _wrong(f"{where}.role", "one of " + ", ".join(sorted(CHAT_ROLES)), role)
    calls = None
    if len(message) > 2 or "content" not in message:  # the other fields the schema names
        for name in ("name", "tool_call_id"):
            _optional(message, name, str, "a string", prefix=f"{where}.")
        tool_calls = _optional(message, "tool_calls", list, "a list", prefix=f"{where}.")
        function_call = _optional(message, "function_call", dict, "an object", prefix=f"{where}.")
        calls = tool_calls or function_call
    content = message.get("content")
    if content is None:
        if role == "assistant" and calls:
            return
        if "content" not in message:
            raise _missing(f"{where}.content", "a string or a list of content parts")
        raise _wrong(f"{where}.content", "a string or a list of content parts", content)
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _wrong(f"{where}.content", "a string or a list of content parts", content)
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _wrong(f"{where}.content[{j}]", "an object with a 'type'", part)


def _check_stream_options(body: dict[str, Any], stream: bool) -> None:
    options = body.get("stream_options")
    if options is None:
        return
    if not isinstance(options, dict):
        raise _wrong("stream_options", "an object", options)
    if not stream:
        raise InvalidRequest(
            "stream_options is only allowed when stream is true", param="stream_options"
        )
    _optional(options, "include_usage", bool, "true or false", prefix="stream_options.")


def _check_stop(body: dict[str, Any]) -> None:
    stop = body.get("stop")
    if stop is None or isinstance(stop, str):
        return
    if (
        not isinstance(stop, list)
        or not 1 <= len(stop) <= 4
        or not all(isinstance(s, str) for s in stop)
    ):
        raise _wrong("stop", "a string or a list of 1 to 4 strings", stop)


def _embedding_input(value: Any) -> Any:
    """``value`` if it is a valid input (token ids written as 5.0 made ints), else None."""
    if isinstance(value, str):
        return value if value else None
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(item, str) and item for item in value):
        return value
    if all(isinstance(item, list) for item in value):
        lists = [_token_ids(item) for item in value]
        if not all(lists):
            return None
        return value if all(a is b for a, b in zip(lists, value, strict=True)) else lists
    return _token_ids(value)


def _token_ids(items: list[Any]) -> list[Any] | None:
    if not items:
        return None
    if all(_is_int(t) and INT_MIN <= t <= INT_MAX for t in items):
        return items
    ids = [_as_whole(t) for t in items]
    return ids if all(t is not None and INT_MIN <= t <= INT_MAX for t in ids) else None


def _number_in(body: dict[str, Any], name: str, lo: float, hi: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _wrong(name, f"a number from {lo:g} to {hi:g}", value)


def _whole_number(body: dict[str, Any], name: str, most: int) -> bool:
    """Check a whole-number field from 1 to ``most``; whether it had to be made an int
    (JSON Schema counts 5.0 as an integer, so the gateway does too)."""
    value = body.get(name)
    if value is None:
        return False
    number = _as_whole(value)
    if number is None or not 1 <= number <= most:
        raise _wrong(name, f"a whole number from 1 to {most}", value)
    body[name] = number
    return number is not value


def _as_whole(value: Any) -> int | None:
    if _is_int(value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _optional(body: dict[str, Any], name: str, kind: type, expected: str, prefix: str = "") -> Any:
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise _wrong(prefix + name, expected, value)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _missing(param: str, expected: str) -> InvalidRequest:
    return InvalidRequest(
        f"missing required field '{param}': expected {expected}",
        param=param,
        code="missing_required_parameter",
    )


def _wrong(param: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"invalid field '{param}': expected {expected}, got {_kind(value)}",
        param=param,
        code="invalid_type",
    )
