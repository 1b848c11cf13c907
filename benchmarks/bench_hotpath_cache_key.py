"""cache_key on realistic chat bodies, for each twin, against baselines.

Run: ``pytest benchmarks/bench_hotpath_cache_key.py --benchmark-only``.  Baselines:
``json_sha256`` (the standard library: sorted-key JSON, SHA-256) and ``orjson_xxh3``
(orjson with sorted keys, XXH3-128) are not canonical keys (no number normalisation, no
excluded fields), only what a quick implementation would do; ``orjson_normalised`` adds
the normalisation in Python (integral floats to ints, excluded fields dropped), the
alternative to a hand-written serializer.
"""

from __future__ import annotations

import hashlib
import json
import types
from typing import Any

import orjson
import pytest
import xxhash

from aigateway import hotpath

SMALL = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": "Summarise the plot of Hamlet in two sentences, please."},
    ],
    "temperature": 0.7,
    "max_tokens": 256,
    "stream": False,
    "user": "user-1234",
}

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
LARGE = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You are a meticulous travel agent. " * 10},
        *[
            {"role": "user" if i % 2 == 0 else "assistant", "content": f"Turn {i}: " + "word " * 60}
            for i in range(12)
        ],
    ],
    "tools": [TOOL, {**TOOL, "function": {**TOOL["function"], "name": "get_time"}}],
    "tool_choice": "auto",
    "temperature": 0.2,
    "top_p": 0.95,
    "seed": 42,
    "response_format": {"type": "json_object"},
    "stream": True,
    "stream_options": {"include_usage": True},
}
BODIES = {"2 messages": SMALL, "13 messages + 2 tools": LARGE}


def _sha256_json(body: dict[str, Any]) -> bytes:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).digest()


def _xxh3_orjson(body: dict[str, Any]) -> bytes:
    return xxhash.xxh3_128_digest(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))


_EXCLUDED = hotpath.EXCLUDED_FIELDS | {"model"}


def _normalised(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {key: _normalised(item) for key, item in value.items()}
    if kind is list:
        return [_normalised(item) for item in value]
    if kind is float and value.is_integer():
        return int(value)
    return value


def _xxh3_orjson_normalised(body: dict[str, Any]) -> bytes:
    kept = {key: _normalised(item) for key, item in body.items() if key not in _EXCLUDED}
    canonical = orjson.dumps(["openai", body.get("model"), kept], option=orjson.OPT_SORT_KEYS)
    return xxhash.xxh3_128_digest(canonical)


@pytest.mark.parametrize("size", BODIES)
def test_cache_key(benchmark, hotpath_impl: types.ModuleType, size: str) -> None:
    benchmark.group = f"cache_key: {size}"
    body = BODIES[size]
    assert len(benchmark(hotpath_impl.cache_key, body, "", provider="openai")) == 16


@pytest.mark.parametrize("size", BODIES)
def test_cache_key_baseline_json_sha256(benchmark, size: str) -> None:
    benchmark.group = f"cache_key: {size}"
    assert len(benchmark(_sha256_json, BODIES[size])) == 32


@pytest.mark.parametrize("size", BODIES)
def test_cache_key_baseline_orjson_xxh3(benchmark, size: str) -> None:
    benchmark.group = f"cache_key: {size}"
    assert len(benchmark(_xxh3_orjson, BODIES[size])) == 16


@pytest.mark.parametrize("size", BODIES)
def test_cache_key_baseline_orjson_normalised(benchmark, size: str) -> None:
    benchmark.group = f"cache_key: {size}"
    assert len(benchmark(_xxh3_orjson_normalised, BODIES[size])) == 16
