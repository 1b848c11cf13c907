"""The OpenAPI schemas of OpenAI's Responses API as the gateway serves it (``/v1/responses``):
the request mirrors the checks of ``providers/_responses_request.py``, i.e. what every
target takes. A field the chat path cannot carry (built-in tools, files) reaches an OpenAI
target (the passthrough) and is a 400 on the others; background, conversation and stored
prompts are a 400 everywhere.
"""

from __future__ import annotations

from typing import Any

from aigateway.api.validation import INT_MAX

_STRING = {"type": "string"}
_BOOL = {"type": ["boolean", "null"]}
_COUNT = {"type": ["integer", "null"], "minimum": 1, "maximum": INT_MAX}
_MODEL = {"type": "string", "pattern": r"\S"}  # more than white space


def _range(lo: float, hi: float) -> dict[str, Any]:
    return {"type": ["number", "null"], "minimum": lo, "maximum": hi}


_TEXT_PART = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"enum": ["input_text", "output_text", "text"]}, "text": _STRING},
}
_IMAGE_PART = {
    "type": "object",
    "required": ["type", "image_url"],
    "properties": {
        "type": {"const": "input_image"},
        "image_url": {"type": "string", "minLength": 1},
        "detail": {"enum": ["auto", "low", "high", None]},
    },
}
_RESPONSES_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "type": {"const": "message"},
        "role": {"enum": ["user", "assistant", "system", "developer"]},
        "content": {"type": ["string", "array"], "items": _TEXT_PART},
    },
    # images only in a user's message
    "anyOf": [
        {"properties": {"content": {"type": "string"}}},
        {"properties": {"content": {"items": _TEXT_PART}}},
        {
            "properties": {
                "role": {"const": "user"},
                "content": {"items": {"anyOf": [_TEXT_PART, _IMAGE_PART]}},
            }
        },
    ],
}
_NAMED = {"type": "string", "minLength": 1}
_REASONING = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"const": "reasoning"}},
}
_RESPONSES_ITEM = {
    "anyOf": [
        _RESPONSES_MESSAGE,
        {
            "type": "object",
            "required": ["type", "call_id", "name", "arguments"],
            "properties": {
                "type": {"const": "function_call"},
                "call_id": _NAMED,
                "name": _NAMED,
                "arguments": _STRING,
            },
        },
        {
            "type": "object",
            "required": ["type", "call_id", "output"],
            "properties": {
                "type": {"const": "function_call_output"},
                "call_id": _NAMED,
                "output": {"type": ["string", "array"], "items": _TEXT_PART},
            },
        },
        _REASONING,
        {
            "type": "object",
            "required": ["type", "id"],
            "properties": {"type": {"const": "item_reference"}, "id": _STRING},
        },
    ]
}
_FUNCTION_TOOL = {
    "type": "object",
    "required": ["type", "name"],
    "properties": {
        "type": {"const": "function"},
        "name": _NAMED,
        "description": {"type": ["string", "null"]},
        "parameters": {"type": ["object", "null"]},
        "strict": _BOOL,
    },
}
RESPONSES_REQUEST = {
    "type": "object",
    "required": ["model"],
    "properties": {
        "model": _MODEL,
        "input": {"type": ["string", "array"], "items": _RESPONSES_ITEM},
        "instructions": {"type": ["string", "null"]},
        "previous_response_id": {"type": ["string", "null"], "minLength": 1},
        "store": _BOOL,
        "stream": _BOOL,
        "tools": {"type": ["array", "null"], "items": _FUNCTION_TOOL},
        "tool_choice": {
            "anyOf": [
                {"enum": ["none", "auto", "required", None]},
                {
                    "type": "object",
                    "required": ["type", "name"],
                    "properties": {"type": {"const": "function"}, "name": _NAMED},
                },
                {
                    "type": "object",
                    "required": ["type", "tools"],
                    "properties": {
                        "type": {"const": "allowed_tools"},
                        "mode": {"enum": ["auto", "required"]},
                        "tools": {"type": "array"},
                    },
                },
            ]
        },
        "text": {
            "type": ["object", "null"],
            "properties": {
                "format": {
                    "anyOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "required": ["type"],
                            "properties": {"type": {"enum": ["text", "json_object"]}},
                        },
                        {
                            "type": "object",
                            "required": ["type", "name", "schema"],
                            "properties": {
                                "type": {"const": "json_schema"},
                                "name": _NAMED,
                                "schema": {"type": "object"},
                                "description": {"type": ["string", "null"]},
                                "strict": _BOOL,
                            },
                        },
                    ]
                },
                "verbosity": {"enum": ["low", "medium", "high", None]},
            },
        },
        "max_output_tokens": _COUNT,
        "temperature": _range(0, 2),
        "top_p": _range(0, 1),
        "top_logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
        "include": {"type": ["array", "null"], "items": _STRING},
        "reasoning": {
            "type": ["object", "null"],
            "properties": {"effort": {"type": ["string", "null"]}, "summary": {}},
        },
        "metadata": {
            "type": ["object", "null"],
            "maxProperties": 16,
            "additionalProperties": _STRING,
        },
        "user": {"type": ["string", "null"]},
        "parallel_tool_calls": _BOOL,
        "background": {"enum": [False, None]},
        "conversation": {"type": "null"},
        "prompt": {"type": "null"},
    },
    # input may be left out only when continuing a stored response
    "anyOf": [
        {
            "required": ["input"],
            "properties": {
                "input": {
                    "anyOf": [
                        {"type": "string"},
                        {"type": "array", "contains": {"not": _REASONING}},
                    ]
                }
            },
        },
        {"required": ["previous_response_id"], "properties": {"previous_response_id": _NAMED}},
    ],
}
RESPONSE_OBJECT = {
    "type": "object",
    "required": ["id", "object", "created_at", "status", "model", "output"],
    "properties": {
        "id": _STRING,
        "object": {"const": "response"},
        "created_at": {"type": "integer"},
        "status": {"enum": ["completed", "incomplete", "failed", "in_progress"]},
        "model": _STRING,
        "output": {"type": "array", "items": {"type": "object"}},
        "usage": {"type": ["object", "null"]},
    },
}
