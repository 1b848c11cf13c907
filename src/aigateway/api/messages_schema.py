"""The OpenAPI description of the Messages API (``/v1/messages``, ``count_tokens``).

The request schemas say what every target takes: the blocks and fields a translated
target (gpt-*, gemini-*) can be given, which ``messages_request.py`` checks and
``providers/_messages_chat.py`` translates. An Anthropic target takes more (block kinds
and fields this gateway does not know are passed on to it); docs/api.md lists both.
"""

from __future__ import annotations

from typing import Any

from aigateway.api.messages_request import INT_MAX

_STRING = {"type": "string"}
_OBJECT = {"type": "object"}
_CACHE = {"cache_control": {"type": ["object", "null"]}}


def _block(kind: str, required: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", *required],
        "properties": {"type": {"const": kind}, **required, **_CACHE},
    }


_TEXT = _block("text", {"text": _STRING})
_IMAGE = _block(
    "image",
    {
        "source": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["type", "media_type", "data"],
                    "properties": {
                        "type": {"const": "base64"},
                        "media_type": {
                            "enum": ["image/jpeg", "image/png", "image/gif", "image/webp"]
                        },
                        "data": {"type": "string", "pattern": "^[A-Za-z0-9+/]+={0,2}$"},
                    },
                },
                {
                    "type": "object",
                    "required": ["type", "url"],
                    "properties": {
                        "type": {"const": "url"},
                        "url": {"type": "string", "pattern": "^https://"},
                    },
                },
            ]
        }
    },
)
_DOCUMENT = _block(
    "document",
    {
        "source": {
            "type": "object",
            "required": ["type", "media_type", "data"],
            "properties": {
                "type": {"const": "text"},
                "media_type": {"const": "text/plain"},
                "data": _STRING,
            },
        }
    },
)
_TOOL_RESULT = _block(
    "tool_result",
    {"tool_use_id": _STRING},
)
_TOOL_RESULT["properties"]["content"] = {"anyOf": [_STRING, {"type": "array", "items": _TEXT}]}
_TOOL_RESULT["properties"]["is_error"] = {"type": ["boolean", "null"]}
_TOOL_USE = _block("tool_use", {"id": _STRING, "name": _STRING, "input": _OBJECT})
_THINKING = _block("thinking", {"thinking": _STRING, "signature": _STRING})
_REDACTED = _block("redacted_thinking", {"data": _STRING})


def _turn(role: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {"const": role},
            "content": {
                "anyOf": [_STRING, {"type": "array", "minItems": 1, "items": {"oneOf": blocks}}]
            },
        },
    }


_USER = _turn("user", [_TEXT, _IMAGE, _DOCUMENT, _TOOL_RESULT])
_ASSISTANT = _turn("assistant", [_TEXT, _TOOL_USE, _THINKING, _REDACTED])
_TOOL = {
    "type": "object",
    "required": ["name", "input_schema"],
    "properties": {
        "type": {"const": "custom"},
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"},
        "description": _STRING,
        "input_schema": _OBJECT,
        **_CACHE,
    },
}
_TOOL_CHOICE = {
    "type": ["object", "null"],
    "required": ["type"],
    "properties": {
        "type": {"enum": ["auto", "any", "tool", "none"]},
        "name": _STRING,
        "disable_parallel_tool_use": {"type": "boolean"},
    },
    "if": {"properties": {"type": {"const": "tool"}}},
    "then": {"required": ["type", "name"]},
}


def _range(high: float) -> dict[str, Any]:
    return {"type": ["number", "null"], "minimum": 0, "maximum": high}


_COMMON: dict[str, Any] = {
    "model": {"type": "string", "pattern": r"\S"},
    # The first turn is the user's: a translated target has nothing to answer otherwise.
    "messages": {
        "type": "array",
        "minItems": 1,
        "prefixItems": [_USER],
        "items": {"oneOf": [_USER, _ASSISTANT]},
    },
    "system": {
        "anyOf": [{"type": ["string", "null"]}, {"type": "array", "items": _TEXT}],
    },
    "tools": {"type": ["array", "null"], "items": _TOOL},
    "tool_choice": _TOOL_CHOICE,
    "thinking": {"type": ["object", "null"]},
    "output_config": {
        "type": ["object", "null"],
        "properties": {
            "format": {
                "type": "object",
                "required": ["type", "schema"],
                "properties": {"type": {"const": "json_schema"}, "schema": _OBJECT},
            },
            "effort": _STRING,
        },
    },
}
MESSAGES_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model", "max_tokens", "messages"],
    "additionalProperties": False,
    "properties": {
        **_COMMON,
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": INT_MAX},
        "stream": {"type": ["boolean", "null"]},
        "temperature": _range(1),
        "top_p": _range(1),
        "top_k": {"type": ["integer", "null"], "minimum": 0, "maximum": INT_MAX},
        "stop_sequences": {"type": ["array", "null"], "items": _STRING, "maxItems": 4},
        "metadata": {
            "type": ["object", "null"],
            "properties": {"user_id": {"type": ["string", "null"]}},
        },
        "service_tier": {"enum": ["auto", "standard_only", None]},
    },
}
COUNT_TOKENS_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages"],
    "additionalProperties": False,
    "properties": _COMMON,
}
MESSAGE: dict[str, Any] = {
    "type": "object",
    "required": ["id", "type", "role", "model", "content", "stop_reason", "usage"],
    "properties": {
        "id": _STRING,
        "type": {"const": "message"},
        "role": {"const": "assistant"},
        "model": _STRING,
        "content": {"type": "array", "items": {"type": "object", "required": ["type"]}},
        "stop_reason": {"type": ["string", "null"]},
        "stop_sequence": {"type": ["string", "null"]},
        "usage": {
            "type": "object",
            "required": ["input_tokens", "output_tokens"],
            "properties": {
                "input_tokens": {"type": "integer"},
                "output_tokens": {"type": "integer"},
            },
        },
    },
}
TOKEN_COUNT: dict[str, Any] = {
    "type": "object",
    "required": ["input_tokens"],
    "properties": {"input_tokens": {"type": "integer", "minimum": 0}},
}
ANTHROPIC_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": _STRING, "message": _STRING},
        },
    },
}


def messages_paths(ref: str) -> dict[str, Any]:
    """The two paths, their schemas named under ``ref`` (see ``messages_schemas``)."""

    def json(name: str) -> dict[str, Any]:
        return {"content": {"application/json": {"schema": {"$ref": ref + name}}}}

    errors = {
        str(status): {"description": "error, in Anthropic's shape", **json("AnthropicError")}
        for status in (400, 404, 413, 429, 502, 503, 504)
    }
    event = {"type": "object", "required": ["event", "data"], "properties": {"data": _STRING}}
    return {
        "/v1/messages": {
            "post": {
                "summary": "Anthropic Messages API (streaming with stream: true)",
                "requestBody": {"required": True, **json("MessagesRequest")},
                "responses": {
                    "200": {
                        "description": "a message, or its named server-sent events",
                        "content": {
                            "application/json": {"schema": {"$ref": ref + "Message"}},
                            "text/event-stream": {"schema": event},
                        },
                    },
                    **errors,
                },
            }
        },
        "/v1/messages/count_tokens": {
            "post": {
                "summary": "Input tokens of a Messages request (Anthropic's count, or an estimate)",
                "requestBody": {"required": True, **json("CountTokensRequest")},
                "responses": {
                    "200": {"description": "the count", **json("TokenCount")},
                    **errors,
                },
            }
        },
    }


def messages_schemas() -> dict[str, Any]:
    return {
        "MessagesRequest": MESSAGES_REQUEST,
        "CountTokensRequest": COUNT_TOKENS_REQUEST,
        "Message": MESSAGE,
        "TokenCount": TOKEN_COUNT,
        "AnthropicError": ANTHROPIC_ERROR,
    }
