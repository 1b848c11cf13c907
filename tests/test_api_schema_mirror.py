"""The request checks and the OpenAPI schemas say the same thing, and the checks never break.

For generated bodies (valid ones bent in every field: wrong types, nulls, deep nesting,
unhashable values where strings belong, odd unicode, huge numbers), each parser either
returns a request or raises ``InvalidRequest`` (a 400), never anything else; it accepts
exactly the bodies its schema in ``/openapi.json`` accepts; and every accepted chat gets a
cache key from both twins of the hot path. In-process: no server adds anything here (the
live side is tests/test_adversarial_schemathesis.py).
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from aigateway.api.builder import cache_control, priority_of, timeout_of
from aigateway.api.native import parse_native_request
from aigateway.api.openapi import openapi_document
from aigateway.api.validation import (
    CHAT_ROLES,
    parse_chat_request,
    parse_embeddings_request,
    parse_json_object,
)
from aigateway.config import Settings
from aigateway.errors import InvalidRequest
from aigateway.hotpath import MAX_DEPTH
from aigateway.runtime import normalize_changes

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True)
DOCUMENT = openapi_document()


def validator(name: str) -> jsonschema.protocols.Validator:
    schema = {**DOCUMENT["components"]["schemas"][name], "components": DOCUMENT["components"]}
    return jsonschema.Draft202012Validator(schema)


def accepted(parse: Callable[[bytes], Any], body: Any) -> bool:
    """Whether ``parse`` takes the body; any exception but a 400 fails the test."""
    try:
        parse(orjson.dumps(body))
    except InvalidRequest:
        return False
    return True


# --- generated values ----------------------------------------------------------------------

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)  # JSON has no lone halves
numbers = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 2, -1, 0.5, 5.0, 1e19, 2.0**64, 128, 129, 8192, 8193, 1e308]),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, text, st.sampled_from(["", " ", "\u2003"]))
anything = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


def some(*good: Any) -> st.SearchStrategy[Any]:
    """A field's value: one of the good ones, or anything at all."""
    return st.one_of(st.sampled_from(good), anything)


parts = st.lists(
    st.one_of(st.fixed_dictionaries({"type": some("text", "image_url")}), anything), max_size=2
)
message = st.fixed_dictionaries(
    {"role": some(*sorted(CHAT_ROLES), "wizard")},
    optional={
        "content": st.one_of(text, parts, anything),
        "name": some("bob"),
        "tool_calls": some([{"id": "c1"}], []),
        "tool_call_id": some("c1"),
        "function_call": some({"name": "f"}, {}),
    },
)
messages = st.one_of(st.lists(message, min_size=1, max_size=3), anything)
sampling = {
    "temperature": some(0, 0.7, 2, 2.5),
    "top_p": some(0, 1, 1.5),
    "max_tokens": some(1, 16, 0, 2.5),
    "stop": some("x", ["a"], ["a", "b", "c", "d", "e"], []),
    "stream": some(True, False),
    "tools": some([], [{"type": "function"}]),
    "tool_choice": some("auto", {"type": "function"}),
}
chat_bodies = st.fixed_dictionaries(
    {"model": some("gpt-4o-mini", " ", ""), "messages": messages},
    optional={
        **sampling,
        "n": some(1, 128, 129),
        "max_completion_tokens": some(5),
        "presence_penalty": some(-2, 2, 3),
        "frequency_penalty": some(0.5),
        "functions": some([]),
        "stream_options": some({"include_usage": True}, {}, {"include_usage": "yes"}),
        "user": anything,  # unknown to the checks: passed on as it is
    },
)
native_bodies = st.fixed_dictionaries(
    {"model": some("gpt-4o-mini", ""), "messages": messages},
    optional={
        **sampling,
        "provider": some("openai", ""),
        "priority": some("critical", "low", "urgent"),
        "attachments": some(
            [{"url": "https://example.com/cat.png"}],
            [{"type": "image", "data": "AAAA", "mime_type": "image/png"}],
            [{}],
            [{"type": "video", "url": "x"}],
            [{"data": "AAAA"}],
            [],
        ),
        "cache": some({"no_cache": True, "ttl": 5}, {"ttl": -1}, {"no_store": "yes"}, {}),
        "metadata": some({"user": "42"}),
        "colour": anything,
    },
)
tokens = st.lists(st.one_of(st.integers(0, 2**20), numbers), min_size=0, max_size=3)
embedding_bodies = st.fixed_dictionaries(
    {"model": some("text-embedding-3-small", "")},
    optional={
        "input": st.one_of(
            text,
            st.lists(text, max_size=3),
            tokens,
            st.lists(tokens, max_size=2),
            anything,
        ),
        "dimensions": some(1, 8192, 8193, 0, 3.0),
        "encoding_format": some("float", "base64", "hex"),
    },
)


# --- the checks never break, and every accepted chat has a cache key ------------------------


@SETTINGS
@given(body=chat_bodies)
def test_chat_checks_accept_exactly_what_the_schema_accepts(body: dict[str, Any]) -> None:
    assert accepted(parse_chat_request, body) == CHAT.is_valid(body)


@SETTINGS
@given(body=native_bodies)
def test_native_checks_accept_exactly_what_the_schema_accepts(body: dict[str, Any]) -> None:
    assert accepted(parse_native_request, body) == NATIVE.is_valid(body)


@SETTINGS
@given(body=embedding_bodies)
def test_embedding_checks_accept_exactly_what_the_schema_accepts(body: dict[str, Any]) -> None:
    assert accepted(parse_embeddings_request, body) == EMBEDDINGS.is_valid(body)


CHAT = validator("ChatCompletionRequest")
NATIVE = validator("NativeChatRequest")
EMBEDDINGS = validator("EmbeddingsRequest")


setting_names = st.one_of(
    st.sampled_from(
        [
            "OPENAI_RPS",
            "MAX_RETRIES",
            "providers.openai.rps",
            "providers.x.rps",
            "PORT",
            "CACHE_PROVIDER_TTL_FACTORS",
        ]
    ),
    text,
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(changes=st.one_of(st.dictionaries(setting_names, anything, max_size=3), anything))
def test_live_setting_names_follow_the_schema(changes: Any) -> None:
    try:
        normalize_changes(Settings(), changes)
        taken = True
    except InvalidRequest:
        taken = False
    assert taken == validator("ConfigChange").is_valid(changes)


def test_an_object_is_a_value_only_for_a_setting_that_takes_a_mapping() -> None:
    refused = {"providers.google.rps": {}}
    with pytest.raises(InvalidRequest, match=r"invalid providers\.google\.rps"):
        normalize_changes(Settings(), refused)
    assert not validator("ConfigChange").is_valid(refused)
    taken = {"CACHE_PROVIDER_TTL_FACTORS": {"google": 0.5}}
    assert normalize_changes(Settings(), taken) == {"CACHE_PROVIDER_TTL_FACTORS": "google=0.5"}
    assert validator("ConfigChange").is_valid(taken)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(body=chat_bodies)
def test_every_accepted_chat_has_a_cache_key_in_both_twins(
    hotpath_impl: types.ModuleType, body: dict[str, Any]
) -> None:
    try:
        request = parse_chat_request(orjson.dumps(body))
    except InvalidRequest:
        return
    assert len(hotpath_impl.cache_key(request.body, "scope", provider="openai")) == 16


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 200, 1000])
@pytest.mark.parametrize("where", ["unknown field", "message", "content part"])
def test_nesting_past_the_limit_is_a_400_wherever_it_is(where: str, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    text_ = {
        "unknown field": '{"model": "m", "messages": [{"role": "user", "content": "hi"}], "x": %s}',
        "message": '{"model": "m", "messages": [{"role": "user", "content": "hi", "x": %s}]}',
        "content part": '{"model": "m", "messages": [{"role": "user", "content": [{"type": "t",'
        ' "x": %s}]}]}',
    }[where]
    for parse in (parse_chat_request, parse_native_request):
        with pytest.raises(InvalidRequest) as info:
            parse((text_ % nested).encode())
        assert info.value.status == 400


def test_nesting_up_to_the_limit_is_served_and_keyed(hotpath_impl: types.ModuleType) -> None:
    depth = MAX_DEPTH - 1  # the body itself is the first level
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "x": '
    raw += b"[" * depth + b"]" * depth + b"}"
    request = parse_chat_request(raw)
    assert len(hotpath_impl.cache_key(request.body, "", provider="openai")) == 16


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}',  # lone half
        b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe"}]}',  # not UTF-8
        b'{"model": "m", "messages": [], "x": 1e400}',  # infinity
        b"\xef\xbb\xbf{}",  # a byte-order mark
    ],
)
def test_odd_bytes_are_a_400(raw: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse_json_object(raw)


# --- headers -------------------------------------------------------------------------------

latin1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40)
numeric = st.one_of(
    latin1,
    st.integers(-5, 10**30).map(str),
    st.sampled_from(["\xb2", "9" * 400, "9" * 5000, "0" * 5000 + "1", " 5 ", "1e3", "nan"]),
)


def request_with(**headers: str) -> Request:
    raw = [
        (name.replace("_", "-").encode(), value.encode("latin-1"))
        for name, value in headers.items()
    ]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw})


@settings(max_examples=300, deadline=None, derandomize=True)
@given(value=numeric)
def test_header_values_are_a_request_or_a_400(value: str) -> None:
    request = request_with(
        x_aigateway_timeout_ms=value, x_aigateway_cache_ttl=value, x_aigateway_priority=value
    )
    for read in (timeout_of, cache_control, priority_of):
        with contextlib.suppress(InvalidRequest):  # a 400; anything else fails the test
            read(request)


@pytest.mark.parametrize("value", ["9" * 400, "9" * 5000, "0" * 5000 + "1"])
def test_a_deadline_of_any_length_is_a_deadline(value: str) -> None:
    seconds = timeout_of(request_with(x_aigateway_timeout_ms=value))
    assert seconds is not None and seconds > 0


@pytest.mark.parametrize("value", ["\xb2", "0", "-5", "1.5", "", "\u0661"[:0] + "x"])
def test_a_deadline_that_is_not_a_whole_number_of_ms_is_a_400(value: str) -> None:
    with pytest.raises(InvalidRequest):
        timeout_of(request_with(x_aigateway_timeout_ms=value))
