"""The OpenAPI document served at ``/openapi.json``: what the gateway accepts and answers.

The request schemas mirror the checks in ``validation.py`` and ``native.py``; tests
validate accepted and refused requests against them so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from aigateway import __version__

_STRING = {"type": "string"}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": _STRING,
                "type": _STRING,
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_CONTENT_PART = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": _STRING},
}
_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant", "tool", "function"]},
        "content": {
            "oneOf": [_STRING, {"type": "array", "items": _CONTENT_PART}, {"type": "null"}]
        },
        "name": _STRING,
        "tool_calls": {"type": "array"},
        "tool_call_id": _STRING,
    },
}
_STOP = {"oneOf": [_STRING, {"type": "array", "items": _STRING, "minItems": 1, "maxItems": 4}]}
_SAMPLING: dict[str, Any] = {
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "max_tokens": {"type": "integer", "minimum": 1},
    "stop": _STOP,
    "stream": {"type": "boolean"},
    "tools": {"type": "array"},
    "tool_choice": {"oneOf": [_STRING, {"type": "object"}]},
}
CHAT_COMPLETION_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "messages": {"type": "array", "items": _MESSAGE, "minItems": 1},
        **_SAMPLING,
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "n": {"type": "integer", "minimum": 1},
        "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "stream_options": {
            "type": "object",
            "properties": {"include_usage": {"type": "boolean"}},
        },
    },
}
EMBEDDINGS_REQUEST = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "input": {
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": _STRING, "minItems": 1},
                {"type": "array", "items": {"type": "integer"}, "minItems": 1},
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
                },
            ]
        },
        "dimensions": {"type": "integer", "minimum": 1},
        "encoding_format": {"enum": ["float", "base64"]},
    },
}
NATIVE_CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "additionalProperties": False,
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "messages": {"type": "array", "items": _MESSAGE, "minItems": 1},
        "provider": {"type": "string", "minLength": 1},
        **_SAMPLING,
        "priority": {"enum": ["critical", "high", "normal", "low"]},
        "attachments": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"const": "image"},
                    "url": _STRING,
                    "data": _STRING,
                    "mime_type": _STRING,
                },
            },
        },
        "cache": {"type": "object"},
        "metadata": {"type": "object"},
    },
}
NATIVE_CHAT_RESPONSE = {
    "type": "object",
    "required": ["id", "provider", "model", "content", "finish_reason", "usage", "cached"],
    "properties": {
        "id": _STRING,
        "provider": _STRING,
        "model": _STRING,
        "content": {"type": ["string", "null"]},
        "tool_calls": {"type": "array"},
        "finish_reason": {"type": ["string", "null"]},
        "usage": {"type": ["object", "null"]},
        "cached": {"type": "boolean"},
        "latency_ms": {"type": "number"},
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    error = _json({"$ref": "#/components/schemas/Error"})
    return {str(s): {"description": "error", **error} for s in statuses}


def openapi_document() -> dict[str, Any]:
    ref = "#/components/schemas/"
    sse = {"text/event-stream": {"schema": {"type": "string"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "aigateway", "version": __version__},
        "paths": {
            "/v1/chat/completions": {
                "post": {
                    "summary": "OpenAI-compatible chat completion (streaming with stream: true)",
                    "requestBody": {
                        "required": True,
                        **_json({"$ref": ref + "ChatCompletionRequest"}),
                    },
                    "responses": {
                        "200": {
                            "description": "chat.completion or SSE chunks",
                            "content": {"application/json": {"schema": {"type": "object"}}, **sse},
                        },
                        **_errors(400, 413, 429, 502, 503, 504),
                    },
                }
            },
            "/v1/embeddings": {
                "post": {
                    "summary": "OpenAI-compatible embeddings",
                    "requestBody": {"required": True, **_json({"$ref": ref + "EmbeddingsRequest"})},
                    "responses": {
                        "200": {"description": "embedding list", **_json({"type": "object"})},
                        **_errors(400, 413, 429, 502, 503, 504),
                    },
                }
            },
            "/v1/chat": {
                "post": {
                    "summary": "Native chat for every provider",
                    "requestBody": {"required": True, **_json({"$ref": ref + "NativeChatRequest"})},
                    "responses": {
                        "200": {
                            "description": "the answer, or SSE events with stream: true",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": ref + "NativeChatResponse"}
                                },
                                **sse,
                            },
                        },
                        **_errors(400, 413, 429, 502, 503, 504),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "summary": "Models of every configured provider",
                    "responses": {
                        "200": {"description": "model list", **_json({"type": "object"})}
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "Liveness and each provider's state",
                    "responses": {
                        "200": {
                            "description": "the gateway can serve",
                            **_json({"type": "object"}),
                        },
                        "503": {
                            "description": "no provider can serve",
                            **_json({"type": "object"}),
                        },
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Node totals in the Prometheus text format (admin rule)",
                    "responses": {"200": {"description": "text/plain; version=0.0.4"}},
                }
            },
            "/admin/stats": {
                "get": {
                    "summary": "Node totals as JSON: percentiles, request rate, providers",
                    "responses": {"200": {"description": "stats", **_json({"type": "object"})}},
                }
            },
            "/admin/config": {
                "get": {
                    "summary": "Effective settings, secrets masked",
                    "responses": {"200": {"description": "settings", **_json({"type": "object"})}},
                },
                "put": {
                    "summary": "Change live settings for the whole node",
                    "requestBody": {
                        "content": {"application/json": {"schema": {"type": "object"}}}
                    },
                    "responses": {
                        "200": {"description": "applied", **_json({"type": "object"})},
                        "400": {"description": "refused; nothing changed", **_json(_ERROR)},
                    },
                },
            },
        },
        "components": {
            "schemas": {
                "ChatCompletionRequest": CHAT_COMPLETION_REQUEST,
                "EmbeddingsRequest": EMBEDDINGS_REQUEST,
                "NativeChatRequest": NATIVE_CHAT_REQUEST,
                "NativeChatResponse": NATIVE_CHAT_RESPONSE,
                "Error": _ERROR,
            }
        },
    }
