"""Deterministic embeddings and the model list of the mock provider (no I/O here).

An embedding is a unit vector whose components come from xxhash of the input (component i is
hashed with seed i), so equal inputs always get equal vectors. ``dimensions`` defaults to 8.
Token counts: words of a string input (at least 1), length of a token array.
"""

from __future__ import annotations

import base64
import math
import struct
from functools import lru_cache
from typing import Any

import orjson
import xxhash

from aigateway.testing.mock_faults import MockRequestError
from aigateway.testing.mock_replies import CREATED, positive_int_field, require_model

__all__ = [
    "DEFAULT_EMBEDDING_DIMENSIONS",
    "MAX_EMBEDDING_DIMENSIONS",
    "MODEL_IDS",
    "float_embedding",
    "render_embeddings",
    "render_model",
    "render_models",
]

DEFAULT_EMBEDDING_DIMENSIONS = 8
MAX_EMBEDDING_DIMENSIONS = 8192

MODEL_IDS: tuple[str, ...] = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-mini",
    "o3-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
)
_MODELS: dict[str, dict[str, Any]] = {
    model_id: {"id": model_id, "object": "model", "created": CREATED, "owned_by": "mock"}
    for model_id in MODEL_IDS
}
_MODELS_BODY = orjson.dumps({"object": "list", "data": list(_MODELS.values())})
_MODEL_BODIES = {model_id: orjson.dumps(model) for model_id, model in _MODELS.items()}


# --------------------------------------------------------------------------------------------
# embeddings


def _vector(data: bytes, dimensions: int) -> list[float]:
    """A unit vector derived from xxhash of ``data`` (component i hashes with seed i)."""
    raw = [
        xxhash.xxh3_64_intdigest(data, seed=i) / 9_223_372_036_854_775_808.0 - 1.0
        for i in range(dimensions)
    ]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


@lru_cache(maxsize=4096)
def _embedding(data: bytes, dimensions: int, encoding: str) -> orjson.Fragment | str:
    """The serialized embedding (cached: load tests repeat their inputs)."""
    vector = _vector(data, dimensions)
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode("ascii")
    return orjson.Fragment(orjson.dumps(vector))


def float_embedding(text: str, dimensions: int) -> orjson.Fragment:
    """The embedding of ``text`` as serialized floats: equal for every wire format."""
    result = _embedding(text.encode(), dimensions, "float")
    assert isinstance(result, orjson.Fragment)
    return result


def _embedding_inputs(value: Any) -> list[tuple[bytes, int]]:
    """(hash key, token count) per input: a string, list of strings, token array(s)."""

    def is_tokens(item: Any) -> bool:
        return (
            isinstance(item, list)
            and bool(item)
            and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
        )

    if isinstance(value, str):
        items: list[Any] = [value]
    elif is_tokens(value):
        items = [value]
    elif isinstance(value, list) and value:
        items = value
    else:
        items = []
    result: list[tuple[bytes, int]] = []
    for item in items:
        if isinstance(item, str) and item:
            result.append((item.encode(), max(1, len(item.split()))))
        elif is_tokens(item):
            result.append((orjson.dumps(item), len(item)))
        else:
            raise MockRequestError(
                400,
                "Invalid 'input': expected a non-empty string, an array of non-empty strings, "
                "an array of integers, or an array of integer arrays.",
                param="input",
                code="invalid_value",
            )
    return result


def render_embeddings(body: Any) -> bytes:
    """Validate an embeddings request and render its deterministic answer."""
    model = require_model(body)
    if "input" not in body:
        raise MockRequestError(
            400,
            "Missing required parameter: 'input'.",
            param="input",
            code="missing_required_parameter",
        )
    inputs = _embedding_inputs(body["input"])
    dimensions = (
        positive_int_field(body, "dimensions", MAX_EMBEDDING_DIMENSIONS)
        or DEFAULT_EMBEDDING_DIMENSIONS
    )
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise MockRequestError(
            400,
            f"Invalid 'encoding_format': expected 'float' or 'base64', got {encoding!r}.",
            param="encoding_format",
            code="invalid_value",
        )
    data: list[dict[str, Any]] = []
    tokens = 0
    for index, (key, count) in enumerate(inputs):
        tokens += count
        embedding = _embedding(key, dimensions, encoding)
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


# --------------------------------------------------------------------------------------------
# models


def render_models() -> bytes:
    return _MODELS_BODY


def render_model(model_id: str) -> bytes:
    body = _MODEL_BODIES.get(model_id)
    if body is None:
        raise MockRequestError(
            404,
            f"The model '{model_id}' does not exist",
            param="model",
            code="model_not_found",
        )
    return body
