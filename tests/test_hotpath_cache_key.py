"""cache_key: the 16-byte response-cache key of an OpenAI-format chat body.

Behaviour tests run against both twins (``hotpath_impl``); the differential tests at the
end check on generated bodies that both twins give the same key, that key order never
matters and that numerically equal numbers give equal keys.
"""

from __future__ import annotations

import copy
import json
import os
import random
import struct
import subprocess
import sys
import types
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from aigateway import hotpath


def chat(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is 2 + 2?"},
        ],
        "temperature": 0.2,
    }
    body.update(fields)
    return body


# A request whose key is pinned: a change of the canonical form must be deliberate (bump
# the format version byte), since it empties every node's cache on upgrade.
GOLDEN_REQUEST = chat(
    tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    stop=["\n\n", "END"],
    seed=7,
    logit_bias={"50256": -100},
    max_tokens=256,
)
GOLDEN_KEY = "7ed49a15e0913e5acfb69e07da8137b9"


def test_a_key_is_16_bytes_and_the_same_every_time(hotpath_impl):
    key = hotpath_impl.cache_key(chat())
    assert type(key) is bytes
    assert len(key) == 16
    assert hotpath_impl.cache_key(chat()) == key


def test_the_golden_key_is_stable(hotpath_impl):
    assert hotpath_impl.cache_key(GOLDEN_REQUEST, provider="openai").hex() == GOLDEN_KEY


def test_the_key_is_the_digest_of_the_documented_encoding(hotpath_impl):
    def s(text: str) -> bytes:
        return b"S" + struct.pack("<I", len(text.encode())) + text.encode()

    body = {
        "stream": True,
        "temperature": 1.0,
        "model": "m",
        "messages": [{"role": "user", "content": "hi", "cache_control": {}}],
    }
    message = b"M" + struct.pack("<I", 2) + s("content") + s("hi") + s("role") + s("user")
    canonical = (
        b"\x01"
        + s("scope")
        + s("openai")
        + s("m")
        + b"M"
        + struct.pack("<I", 2)
        + s("messages")
        + b"L"
        + struct.pack("<I", 1)
        + message
        + s("temperature")
        + b"I"
        + struct.pack("<q", 1)
    )
    expected = xxhash.xxh3_128_digest(canonical)
    assert hotpath_impl.cache_key(body, "scope", provider="openai") == expected


def test_keys_do_not_depend_on_the_hash_seed_or_the_process():
    code = (
        "import json, sys\n"
        "from aigateway import hotpath\n"
        "request = json.loads(sys.argv[1])\n"
        "impls = ['python'] if hotpath.NO_EXTENSIONS else ['python', 'cython']\n"
        "print(json.dumps([hotpath.load(i).cache_key(request, 's', provider='p').hex()"
        " for i in impls]))\n"
    )
    request = json.dumps(GOLDEN_REQUEST)
    keys = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code, request], env=env, capture_output=True, check=True
        )
        keys.append(json.loads(out.stdout))
    assert keys[0] == keys[1]
    assert keys[0][0] == hotpath.load("python").cache_key(GOLDEN_REQUEST, "s", provider="p").hex()
    assert len(set(keys[0])) == 1


# --- what does not change the key -----------------------------------------------------


def test_key_order_does_not_matter_at_any_depth(hotpath_impl):
    body = chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "a": 1}})
    reordered = {key: body[key] for key in reversed(list(body))}
    reordered["messages"] = [dict(reversed(list(m.items()))) for m in body["messages"]]
    reordered["response_format"] = {
        "json_schema": {"a": 1, "name": "x"},
        "type": "json_schema",
    }
    assert hotpath_impl.cache_key(reordered) == hotpath_impl.cache_key(body)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"temperature": 1}, {"temperature": 1.0}),
        ({"max_tokens": 100}, {"max_tokens": 100.0}),
        ({"seed": 0}, {"seed": -0.0}),
        ({"seed": 10**20}, {"seed": 1e20}),
        ({"seed": -(2**63)}, {"seed": -9.223372036854775808e18}),
        ({"logit_bias": {"1": -100}}, {"logit_bias": {"1": -100.0}}),
    ],
)
def test_numerically_equal_numbers_give_the_same_key(hotpath_impl, one, other):
    assert hotpath_impl.cache_key(chat(**one)) == hotpath_impl.cache_key(chat(**other))


@pytest.mark.parametrize(
    "field",
    [
        "stream",
        "stream_options",
        "user",
        "metadata",
        "priority",
        "request_id",
        "store",
        "service_tier",
        "cache",
        "cache_control",
        "prompt_cache_key",
        "safety_identifier",
    ],
)
def test_fields_that_do_not_change_the_answer_are_left_out(hotpath_impl, field):
    assert field in hotpath_impl.EXCLUDED_FIELDS
    with_field = chat(**{field: {"any": ["value", 1]}})
    assert hotpath_impl.cache_key(with_field) == hotpath_impl.cache_key(chat())


def test_cache_control_markers_in_messages_parts_tools_and_system_are_left_out(hotpath_impl):
    def body(marker: dict[str, Any]) -> dict[str, Any]:
        return chat(
            messages=[
                {"role": "system", "content": "Be terse.", **marker},
                {"role": "user", "content": [{"type": "text", "text": "Hi", **marker}]},
            ],
            tools=[{"type": "function", "function": {"name": "f"}, **marker}],
            system=[{"type": "text", "text": "policy", **marker}],
        )

    marked = body({"cache_control": {"type": "ephemeral"}})
    assert hotpath_impl.cache_key(marked) == hotpath_impl.cache_key(body({}))


def test_cache_control_is_kept_where_it_is_data(hotpath_impl):
    # A property of a tool's JSON schema named cache_control is part of the tool.
    def tool(properties: dict[str, Any]) -> dict[str, Any]:
        schema = {"type": "object", "properties": properties}
        return chat(tools=[{"type": "function", "function": {"name": "f", "parameters": schema}}])

    with_property = tool({"cache_control": {"type": "string"}})
    assert hotpath_impl.cache_key(with_property) != hotpath_impl.cache_key(tool({}))


def test_a_model_override_equal_to_the_body_model_changes_nothing(hotpath_impl):
    assert hotpath_impl.cache_key(chat(), model="gpt-4o-mini") == hotpath_impl.cache_key(chat())


def test_tuples_encode_like_lists_and_mappings_like_dicts(hotpath_impl):
    body = chat()
    frozen = types.MappingProxyType(
        {**body, "messages": tuple(types.MappingProxyType(m) for m in body["messages"])}
    )
    assert hotpath_impl.cache_key(frozen) == hotpath_impl.cache_key(body)


# --- what changes the key -------------------------------------------------------------

CHANGES = {
    "temperature": {"temperature": 0.3},
    "top_p": {"top_p": 0.9},
    "top_k": {"top_k": 40},
    "max_tokens": {"max_tokens": 10},
    "max_completion_tokens": {"max_completion_tokens": 10},
    "stop": {"stop": ["x"]},
    "n": {"n": 2},
    "seed": {"seed": 1},
    "presence_penalty": {"presence_penalty": 0.5},
    "frequency_penalty": {"frequency_penalty": 0.5},
    "tools": {"tools": [{"type": "function", "function": {"name": "g"}}]},
    "tool_choice": {"tool_choice": "required"},
    "response_format": {"response_format": {"type": "json_object"}},
    "logit_bias": {"logit_bias": {"1": 5}},
    "logprobs": {"logprobs": True},
    "an unknown field": {"reasoning_effort": "high"},
    "role": {"messages": [{"role": "assistant", "content": "What is 2 + 2?"}]},
    "content": {"messages": [{"role": "user", "content": "What is 2 + 3?"}]},
    "content parts": {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]}]
    },
    "name": {"messages": [{"role": "user", "content": "What is 2 + 2?", "name": "bob"}]},
    "tool calls": {
        "messages": [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            }
        ]
    },
    "tool call id": {"messages": [{"role": "tool", "content": "4", "tool_call_id": "c1"}]},
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_fields_that_decide_the_answer_change_the_key(hotpath_impl, change):
    assert hotpath_impl.cache_key(chat(**change)) != hotpath_impl.cache_key(chat())


def test_every_change_gives_a_different_key(hotpath_impl):
    keys = {hotpath_impl.cache_key(chat(**change)) for change in CHANGES.values()}
    assert len(keys) == len(CHANGES)


def test_list_order_matters(hotpath_impl):
    body = chat()
    swapped = chat(messages=body["messages"][::-1])
    assert hotpath_impl.cache_key(swapped) != hotpath_impl.cache_key(body)
    assert hotpath_impl.cache_key(chat(stop=["a", "b"])) != hotpath_impl.cache_key(
        chat(stop=["b", "a"])
    )


def test_scope_provider_and_model_separate_keys(hotpath_impl):
    key = hotpath_impl.cache_key
    base = key(chat(), "tenant-a", provider="openai")
    assert key(chat(), "tenant-b", provider="openai") != base
    assert key(chat(), "tenant-a", provider="azure") != base
    assert key(chat(), "tenant-a", provider="openai", model="gpt-4o") != base
    assert key(chat(model="gpt-4o"), "tenant-a", provider="openai") != base
    # A resolved model replaces the body's: an alias and its target share a key.
    assert key(chat(model="fast"), "tenant-a", provider="openai", model="gpt-4o-mini") == base


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"seed": True}, {"seed": 1}),
        ({"seed": False}, {"seed": 0}),
        ({"seed": None}, {"seed": 0}),
        ({"seed": None}, {}),
        ({"stop": "x"}, {"stop": ["x"]}),
        ({"stop": "1"}, {"stop": 1}),
        ({"seed": 0.5}, {"seed": 1}),
        ({"seed": 2**63}, {"seed": 2**63 - 1}),
        ({"logit_bias": {}}, {"logit_bias": []}),
        ({"stop": ["ab"]}, {"stop": ["a", "b"]}),
        ({"metadata_": 1}, {"metadat": 1}),
    ],
)
def test_values_of_different_types_or_shapes_differ(hotpath_impl, one, other):
    assert hotpath_impl.cache_key(chat(**one)) != hotpath_impl.cache_key(chat(**other))


def test_nan_and_infinities_have_keys(hotpath_impl):
    keys = {
        hotpath_impl.cache_key(chat(temperature=value))
        for value in (float("nan"), -float("nan"), float("inf"), -float("inf"))
    }
    assert len(keys) == 3  # every NaN is one NaN


def test_strings_with_lone_surrogates_and_non_ascii_text(hotpath_impl):
    key = hotpath_impl.cache_key
    text = "caf\u00e9 \u4e2d\u6587 \U0001f600"
    assert key(chat(messages=[{"role": "user", "content": text}])) != key(chat())
    lone = chat(messages=[{"role": "user", "content": "a\ud800b"}], **{"x\udc00": 1})
    assert key(lone) == key(copy.deepcopy(lone))
    assert key(lone) != key(chat(messages=[{"role": "user", "content": "a\ufffdb"}]))


def test_big_bodies_and_wide_objects(hotpath_impl):
    wide = chat(logit_bias={str(i): i % 7 for i in range(500)})
    long = chat(messages=[{"role": "user", "content": "x" * 100_000}])
    assert hotpath_impl.cache_key(wide) == hotpath_impl.cache_key(copy.deepcopy(wide))
    assert hotpath_impl.cache_key(wide) != hotpath_impl.cache_key(long)
    shuffled = list(wide["logit_bias"].items())
    random.Random(3).shuffle(shuffled)
    assert hotpath_impl.cache_key(chat(logit_bias=dict(shuffled))) == hotpath_impl.cache_key(wide)


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        chat(seed={1, 2}),
        chat(seed=b"bytes"),
        chat(seed=object()),
        chat(logit_bias={1: 2}),
    ],
    ids=["set", "bytes", "object", "int key"],
)
def test_values_json_cannot_hold_are_rejected(hotpath_impl, body):
    with pytest.raises(TypeError):
        hotpath_impl.cache_key(body)


def test_bad_arguments_are_rejected(hotpath_impl):
    with pytest.raises(TypeError):
        hotpath_impl.cache_key([("model", "x")])
    with pytest.raises(TypeError):
        hotpath_impl.cache_key(chat(), 5)
    with pytest.raises(TypeError):
        hotpath_impl.cache_key(chat(), provider=None)


def test_deep_nesting_and_cycles_are_rejected(hotpath_impl):
    deep: Any = "leaf"
    for _ in range(hotpath_impl.MAX_DEPTH):
        deep = [deep]
    with pytest.raises(ValueError, match="nested deeper"):
        hotpath_impl.cache_key(chat(seed=deep))
    hotpath_impl.cache_key(chat(seed=deep[0]))  # one level less is fine
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    with pytest.raises(ValueError, match="nested deeper"):
        hotpath_impl.cache_key(chat(seed=cyclic))


def test_a_mapping_that_is_not_a_dict_works(hotpath_impl):
    class Body(Mapping[str, Any]):
        def __init__(self, data: dict[str, Any]) -> None:
            self._data = data

        def __getitem__(self, key: str) -> Any:
            return self._data[key]

        def __iter__(self) -> Iterator[str]:
            return iter(self._data)

        def __len__(self) -> int:
            return len(self._data)

    assert hotpath_impl.cache_key(Body(chat())) == hotpath_impl.cache_key(chat())


# --- differential tests ---------------------------------------------------------------

_NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**60), max_value=2**60).map(float),
)
_SCALARS = st.one_of(st.none(), st.booleans(), _NUMBERS, st.text(max_size=12))
_KEYS = st.one_of(
    st.sampled_from(["role", "content", "type", "text", "cache_control", "stream", "model"]),
    st.text(max_size=6),
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(_KEYS, children, max_size=6)
    ),
    max_leaves=25,
)
_MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "tool"])},
        optional={
            "content": st.one_of(
                st.text(max_size=20),
                st.lists(
                    st.fixed_dictionaries(
                        {"type": st.sampled_from(["text", "image_url"])},
                        optional={"text": st.text(max_size=8), "cache_control": _JSON},
                    ),
                    max_size=3,
                ),
            ),
            "name": st.text(max_size=5),
            "cache_control": _JSON,
        },
    ),
    max_size=5,
)
_BODIES = st.fixed_dictionaries(
    {"model": st.text(max_size=10), "messages": _MESSAGES},
    optional={
        "temperature": _NUMBERS,
        "stream": st.booleans(),
        "tools": st.lists(_JSON, max_size=2),
        "stop": _JSON,
        "extra": _JSON,
    },
)


def _reordered(value: Any, rng: random.Random) -> Any:
    """The same value with every object's keys in another order."""
    if isinstance(value, dict):
        items = [(key, _reordered(item, rng)) for key, item in value.items()]
        rng.shuffle(items)
        return dict(items)
    if isinstance(value, list):
        return [_reordered(item, rng) for item in value]
    return value


def _as_floats(value: Any) -> Any:
    """The same value with every integer that a float holds exactly written as a float."""
    if isinstance(value, dict):
        return {key: _as_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_floats(item) for item in value]
    if type(value) is int and float(value) == value:
        return float(value)
    return value


@settings(max_examples=200, deadline=None, database=None)
@given(body=_BODIES, scope=st.text(max_size=5), seed=st.integers(0, 1000))
def test_twins_agree_and_keys_ignore_key_order_and_number_types(hotpath_impl, body, scope, seed):
    key = hotpath.load("python").cache_key(body, scope, provider="openai")
    assert hotpath_impl.cache_key(body, scope, provider="openai") == key
    assert (
        hotpath_impl.cache_key(_reordered(body, random.Random(seed)), scope, provider="openai")
        == key
    )
    assert hotpath_impl.cache_key(_as_floats(body), scope, provider="openai") == key


@settings(max_examples=200, deadline=None, database=None)
@given(value=_JSON, other=_JSON)
def test_twins_agree_on_any_json_value(hotpath_impl, value, other):
    body = {"messages": [], "x": value}
    pure = hotpath.load("python").cache_key
    assert hotpath_impl.cache_key(body) == pure(body)
    if pure(body) == pure({"messages": [], "x": other}):
        assert _canonical_json(value) == _canonical_json(other)


def _canonical_json(value: Any) -> str:
    """A reference equality for JSON values as cache keys see them (numbers by value)."""

    def normal(item: Any) -> Any:
        if isinstance(item, bool) or item is None or isinstance(item, str):
            return [type(item).__name__, item]
        if isinstance(item, int | float):
            if item != item:
                return ["nan"]
            if isinstance(item, float) and item.is_integer():
                return ["number", str(int(item))]
            return ["number", repr(item) if isinstance(item, float) else str(item)]
        if isinstance(item, dict):
            return ["object", sorted((key, normal(v)) for key, v in item.items())]
        return ["list", [normal(v) for v in item]]

    return json.dumps(normal(value))
