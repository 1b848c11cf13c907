"""The OpenAPI document served at ``/openapi.json``: what the gateway accepts and answers.

The request schemas mirror the checks in ``validation.py``, ``native.py`` and
``builder.py``: a request a schema accepts passes the checks, and one the checks pass
fits the schema (tests/test_api_schema_mirror.py generates both from hypothesis, and
tests/test_adversarial_schemathesis.py runs schemathesis against a live gateway). What a
schema cannot say: a model must be routable (else 404 ``model_not_found``), lists and
objects nest at most 128 deep, and a live setting's value is checked like its
environment variable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from aigateway import __version__
from aigateway.api.batch import MAX_BATCH_ITEMS
from aigateway.api.messages_schema import messages_paths, messages_schemas
from aigateway.api.openapi_keys import key_paths, key_schemas
from aigateway.api.openapi_responses import RESPONSE_OBJECT, RESPONSES_REQUEST
from aigateway.api.validation import (
    CHAT_ROLES,
    INT_MAX,
    INT_MIN,
    MAX_CHOICES,
    MAX_DIMENSIONS,
)
from aigateway.provider_specs import BUILT_IN
from aigateway.runtime import LIVE_VARIABLES, MAPPING_VARIABLES
from aigateway.wire import PRIORITIES

_BUILT_IN_NAMES = tuple(spec.name for spec in BUILT_IN)
_STRING = {"type": "string"}
_ERROR_DETAIL = {
    "type": "object",
    "required": ["message", "type", "param", "code"],
    "properties": {
        "message": _STRING,
        "type": _STRING,
        "param": {"type": ["string", "null"]},
        "code": {"type": ["string", "null"]},
    },
}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": _ERROR_DETAIL}}
# Optional fields may be null: the checks treat null as absent, as OpenAI does.
_BOOL = {"type": ["boolean", "null"]}
_COUNT = {"type": ["integer", "null"], "minimum": 1, "maximum": INT_MAX}
_CHOICES = {**_COUNT, "maximum": MAX_CHOICES}
_DIMENSIONS = {**_COUNT, "maximum": MAX_DIMENSIONS}
_TOKEN = {"type": "integer", "minimum": INT_MIN, "maximum": INT_MAX}
_MODEL = {"type": "string", "pattern": r"\S"}  # more than white space


def _range(lo: float, hi: float) -> dict[str, Any]:
    return {"type": ["number", "null"], "minimum": lo, "maximum": hi}


_CONTENT_PART = {"type": "object", "required": ["type"], "properties": {"type": _STRING}}
_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": sorted(CHAT_ROLES)},
        "content": {"type": ["string", "array", "null"], "items": _CONTENT_PART},
        "name": {"type": ["string", "null"]},
        "tool_calls": {"type": ["array", "null"]},
        "tool_call_id": {"type": ["string", "null"]},
        "function_call": {"type": ["object", "null"]},
    },
    # Content, unless an assistant message calls tools (or a function) instead.
    "anyOf": [
        {"required": ["content"], "properties": {"content": {"type": ["string", "array"]}}},
        {
            "required": ["tool_calls"],
            "properties": {
                "role": {"const": "assistant"},
                "tool_calls": {"type": "array", "minItems": 1},
            },
        },
        {
            "required": ["function_call"],
            "properties": {
                "role": {"const": "assistant"},
                "function_call": {"type": "object", "minProperties": 1},
            },
        },
    ],
}
_MESSAGES = {"type": "array", "items": _MESSAGE, "minItems": 1}
_STOP = {
    "anyOf": [
        {"type": ["string", "null"]},
        {"type": "array", "items": _STRING, "minItems": 1, "maxItems": 4},
    ]
}
_SAMPLING: dict[str, Any] = {
    "temperature": _range(0, 2),
    "top_p": _range(0, 1),
    "max_tokens": _COUNT,
    "stop": _STOP,
    "stream": _BOOL,
    "tools": {"type": ["array", "null"]},
    "tool_choice": {"type": ["string", "object", "null"]},
}
CHAT_COMPLETION_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": _MODEL,
        "messages": _MESSAGES,
        **_SAMPLING,
        "max_completion_tokens": _COUNT,
        "n": _CHOICES,
        "presence_penalty": _range(-2, 2),
        "frequency_penalty": _range(-2, 2),
        "functions": {"type": ["array", "null"]},
        "stream_options": {"type": ["object", "null"], "properties": {"include_usage": _BOOL}},
    },
    # stream_options only with "stream": true
    "anyOf": [
        {"not": {"required": ["stream_options"]}},
        {"properties": {"stream_options": {"type": "null"}}},
        {"required": ["stream"], "properties": {"stream": {"const": True}}},
    ],
}
EMBEDDINGS_REQUEST = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": _MODEL,
        "input": {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
                {"type": "array", "items": _TOKEN, "minItems": 1},
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "array", "items": _TOKEN, "minItems": 1},
                },
            ]
        },
        "dimensions": _DIMENSIONS,
        "encoding_format": {"enum": ["float", "base64"]},  # OpenAI refuses null here
    },
}
_ATTACHMENT = {
    "type": "object",
    "properties": {
        "type": {"const": "image"},
        "url": _STRING,
        "data": _STRING,
        "mime_type": _STRING,
    },
    "anyOf": [{"required": ["url"]}, {"required": ["data", "mime_type"]}],
}
NATIVE_CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "additionalProperties": False,
    "properties": {
        "model": _MODEL,
        "messages": _MESSAGES,
        "provider": {"type": ["string", "null"], "minLength": 1},
        **_SAMPLING,
        "priority": {"enum": list(PRIORITIES)},
        "attachments": {"type": ["array", "null"], "items": _ATTACHMENT},
        "cache": {
            "type": ["object", "null"],
            "properties": {
                "no_cache": _BOOL,
                "no_store": _BOOL,
                "ttl": {"type": ["number", "null"], "minimum": 0},
            },
        },
        "metadata": {"type": ["object", "null"]},
    },
    # attachments go to the last user message: there must be one
    "if": {"required": ["attachments"], "properties": {"attachments": {"minItems": 1}}},
    "then": {
        "properties": {
            "messages": {
                "contains": {
                    "type": "object",
                    "required": ["role"],
                    "properties": {"role": {"const": "user"}},
                }
            }
        }
    },
}
BATCH_REQUEST = {
    "type": "object",
    "required": ["requests"],
    "properties": {
        "requests": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_BATCH_ITEMS,
            # An item that fits neither gets its own error in the results.
            "items": {
                "anyOf": [
                    {"$ref": "#/components/schemas/NativeChatRequest"},
                    {"$ref": "#/components/schemas/ChatCompletionRequest"},
                ]
            },
        }
    },
}
BATCH_RESPONSE = {
    "type": "object",
    "required": ["object", "results"],
    "properties": {
        "object": {"const": "batch"},
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "status"],
                "properties": {
                    "index": {"type": "integer"},
                    "status": {"type": "integer"},
                    "provider": _STRING,
                    "response": {"type": "object"},
                    "error": _ERROR_DETAIL,
                },
            },
        },
    },
}


def config_change_schema(
    providers: Sequence[str], live_variables: Sequence[str] = LIVE_VARIABLES
) -> dict[str, Any]:
    """``PUT /admin/config``: live settings by name, each value checked like the
    environment variable of that name (a bad one is a 400 naming it)."""
    names = "|".join(re.escape(name) for name in providers) or "(?!)"
    return {
        "type": "object",
        "minProperties": 1,
        "propertyNames": {
            "anyOf": [
                {"enum": list(live_variables)},
                {"pattern": rf"^providers\.({names})\.(rps|max_connections)$"},
            ]
        },
        "properties": {name: {"type": ["string", "number", "object", "null"]}
                       for name in MAPPING_VARIABLES},
        "additionalProperties": {"type": ["string", "number", "null"]},
    }  # fmt: skip


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


def openapi_document(
    providers: Sequence[str] = _BUILT_IN_NAMES,
    live_variables: Sequence[str] = LIVE_VARIABLES,
) -> dict[str, Any]:
    """The document for a gateway whose configured providers are ``providers`` and whose
    live settings are ``live_variables``."""
    ref = "#/components/schemas/"
    # One server-sent event: its data is a JSON chunk, or [DONE] last.
    event = {"type": "object", "required": ["data"], "properties": {"data": _STRING}}
    sse = {"text/event-stream": {"schema": event}}
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
                        **_errors(400, 404, 413, 429, 502, 503, 504),
                    },
                }
            },
            "/v1/embeddings": {
                "post": {
                    "summary": "OpenAI-compatible embeddings",
                    "requestBody": {"required": True, **_json({"$ref": ref + "EmbeddingsRequest"})},
                    "responses": {
                        "200": {"description": "embedding list", **_json({"type": "object"})},
                        **_errors(400, 404, 413, 429, 502, 503, 504),
                    },
                }
            },
            "/v1/responses": {
                "post": {
                    "summary": "OpenAI's Responses API, for every provider "
                    "(events with stream: true)",
                    "description": "OpenAI targets get OpenAI's own Responses API, the others "
                    "a translation through chat (docs/api.md). The schema is what every target "
                    "takes; an OpenAI target also takes what only OpenAI's Responses API "
                    "knows (built-in tools, file inputs...), which others refuse with a 400.",
                    "requestBody": {"required": True, **_json({"$ref": ref + "ResponsesRequest"})},
                    "responses": {
                        "200": {
                            "description": "a response object, or Responses events",
                            "content": {
                                "application/json": {"schema": {"$ref": ref + "Response"}},
                                "text/event-stream": {"schema": {"type": "object"}},
                            },
                        },
                        **_errors(400, 404, 413, 429, 502, 503, 504),
                    },
                }
            },
            "/v1/responses/{response_id}": {
                "parameters": [
                    {"name": "response_id", "in": "path", "required": True, "schema": _STRING}
                ],
                "get": {
                    "summary": "A stored response (the caller's key's own)",
                    "responses": {
                        "200": {"description": "the response", **_json({"$ref": ref + "Response"})},
                        **_errors(404),
                    },
                },
                "delete": {
                    "summary": "Delete a stored response",
                    "responses": {
                        "200": {"description": "deleted", **_json({"type": "object"})},
                        **_errors(404),
                    },
                },
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
                        **_errors(400, 404, 413, 429, 502, 503, 504),
                    },
                }
            },
            "/v1/batch": {
                "post": {
                    "summary": "Many chat requests in one call; one bad item fails only itself",
                    "requestBody": {"required": True, **_json({"$ref": ref + "BatchRequest"})},
                    "responses": {
                        "200": {
                            "description": "one result per item, in order",
                            **_json({"$ref": ref + "BatchResponse"}),
                        },
                        **_errors(400, 413),
                    },
                }
            },
            **messages_paths(ref),
            "/v1/models": {
                "get": {
                    "summary": "Models of every configured provider",
                    "responses": {
                        "200": {"description": "model list", **_json({"type": "object"})}
                    },
                }
            },
            "/v1/models/{model_id}": {
                "get": {
                    "summary": "One model (a provider's, as 'provider/model' too) or an alias",
                    "parameters": [
                        {
                            "name": "model_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "OpenAI's model object",
                            **_json(
                                {
                                    "type": "object",
                                    "required": ["id", "object", "created", "owned_by"],
                                }
                            ),
                        },
                        **_errors(404),
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
                        "required": True,
                        **_json({"$ref": ref + "ConfigChange"}),
                    },
                    "responses": {
                        "200": {"description": "applied", **_json({"type": "object"})},
                        "400": {"description": "refused; nothing changed", **_json(_ERROR)},
                    },
                },
            },
            "/admin/cache": {
                "get": {
                    "summary": "The node's response cache: size, hit rate, top entries",
                    "responses": {"200": {"description": "report", **_json({"type": "object"})}},
                },
                "delete": {
                    "summary": "Empty the node's response cache",
                    "responses": {"200": {"description": "cleared", **_json({"type": "object"})}},
                },
            },
            "/admin/queue": {
                "get": {
                    "summary": "Admission: queue depth per provider and priority, outcomes",
                    "responses": {"200": {"description": "report", **_json({"type": "object"})}},
                }
            },
            **key_paths(),
        },
        "components": {
            "schemas": {
                "ChatCompletionRequest": CHAT_COMPLETION_REQUEST,
                "ResponsesRequest": RESPONSES_REQUEST,
                "Response": RESPONSE_OBJECT,
                "EmbeddingsRequest": EMBEDDINGS_REQUEST,
                "NativeChatRequest": NATIVE_CHAT_REQUEST,
                "NativeChatResponse": NATIVE_CHAT_RESPONSE,
                "BatchRequest": BATCH_REQUEST,
                "BatchResponse": BATCH_RESPONSE,
                "ConfigChange": config_change_schema(providers, live_variables),
                "Error": _ERROR,
                **messages_schemas(),
                **key_schemas(),
            }
        },
    }
