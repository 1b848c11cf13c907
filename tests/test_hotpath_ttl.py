"""compute_ttl: how long to cache an answer, by the rules of a TTLPolicy.

Behaviour tests run against both twins (``hotpath_impl``); the differential test at the
end feeds generated bodies and policies to both and requires the same TTL.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aigateway import hotpath

DEFAULT = 1800.0  # CACHE_TTL_MINUTES=30
HOUR = 3600.0
MINUTE = 60.0


def user(text: str = "hi") -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str = "hello") -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def body(messages: list[Any], **fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": messages, **fields}


def ttl(impl: Any, request: dict[str, Any], provider: str = "openai", **kwargs: Any) -> float:
    result = impl.compute_ttl(request, provider, DEFAULT, **kwargs)
    assert type(result) is float
    return result


# --- each rule ------------------------------------------------------------------------


def test_no_rule_gives_the_default(hotpath_impl):
    assert ttl(hotpath_impl, body([user(), assistant(), user()], temperature=0.5)) == DEFAULT
    assert ttl(hotpath_impl, {"temperature": 0.5}) == DEFAULT
    assert hotpath_impl.compute_ttl({"temperature": 0.5}, "openai", 90) == 90.0


def test_a_single_question_is_kept_two_hours(hotpath_impl):
    assert ttl(hotpath_impl, body([user()], temperature=0.5)) == 2 * HOUR


def test_system_and_developer_messages_do_not_count_as_questions(hotpath_impl):
    system = {"role": "system", "content": "Be terse."}
    developer = {"role": "developer", "content": "Answer in French."}
    assert ttl(hotpath_impl, body([system, developer, user()], temperature=0.5)) == 2 * HOUR
    assert ttl(hotpath_impl, body([system], temperature=0.5)) == DEFAULT


def test_a_long_conversation_is_kept_fifteen_minutes(hotpath_impl):
    ten = [user(), assistant()] * 5
    assert ttl(hotpath_impl, body(ten, temperature=0.5)) == DEFAULT
    assert ttl(hotpath_impl, body([*ten, user()], temperature=0.5)) == 15 * MINUTE


@pytest.mark.parametrize(
    ("temperature", "expected"),
    [
        (0.0, 4 * HOUR),
        (0.2, 4 * HOUR),
        (0.21, DEFAULT),
        (0.79, DEFAULT),
        (0.8, 10 * MINUTE),
        (2, 10 * MINUTE),
        (1, 10 * MINUTE),
        (0, 4 * HOUR),
    ],
)
def test_temperature_rules(hotpath_impl, temperature, expected):
    assert ttl(hotpath_impl, body([user(), assistant(), user()], temperature=temperature)) == (
        expected
    )


@pytest.mark.parametrize("temperature", [None, "hot", True, [0.1], {"t": 0.1}])
def test_an_absent_or_unusable_temperature_is_the_provider_default(hotpath_impl, temperature):
    request = body([user(), assistant(), user()])
    if temperature is not None:
        request["temperature"] = temperature
    assert ttl(hotpath_impl, request) == 10 * MINUTE  # default 1.0: high
    policy = hotpath_impl.TTLPolicy(provider_temperatures={"gemini": 0.5})
    assert ttl(hotpath_impl, request, "gemini", policy=policy) == DEFAULT
    assert ttl(hotpath_impl, request, "openai", policy=policy) == 10 * MINUTE


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "file", "file": {"file_id": "f"}},
        {"text": "no type"},
        ["not", "an", "object"],
        42,
    ],
)
def test_an_attachment_is_kept_twenty_minutes(hotpath_impl, part):
    message = {"role": "user", "content": [{"type": "text", "text": "what is this?"}, part]}
    request = body([message, assistant(), user()], temperature=0.5)
    assert ttl(hotpath_impl, request) == 20 * MINUTE


def test_text_parts_are_not_attachments(hotpath_impl):
    content = [{"type": "text", "text": "a"}, "bare string", {"type": "input_text", "text": "b"}]
    request = body([{"role": "user", "content": content}, assistant(), user()], temperature=0.5)
    assert ttl(hotpath_impl, request) == DEFAULT


# --- combining rules ------------------------------------------------------------------


def test_the_shortest_applicable_ttl_wins(hotpath_impl):
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}
    assert ttl(hotpath_impl, body([user()], temperature=0.1)) == 2 * HOUR  # 2 h < 4 h
    assert ttl(hotpath_impl, body([user()])) == 10 * MINUTE  # 10 min < 2 h
    assert ttl(hotpath_impl, body([image], temperature=0.1)) == 20 * MINUTE
    long = [user(), assistant()] * 6
    assert ttl(hotpath_impl, body(long, temperature=0.9)) == 10 * MINUTE
    assert ttl(hotpath_impl, body(long, temperature=0.1)) == 15 * MINUTE


def test_a_rule_may_give_more_than_the_default(hotpath_impl):
    assert ttl(hotpath_impl, body([user(), assistant(), user()], temperature=0)) == 4 * HOUR


def test_the_provider_factor_scales_the_result(hotpath_impl):
    policy = hotpath_impl.TTLPolicy(provider_factors={"openai": 2.0, "local": 0.0})
    request = body([user()], temperature=0.5)
    assert ttl(hotpath_impl, request, "openai", policy=policy) == 4 * HOUR
    assert ttl(hotpath_impl, request, "local", policy=policy) == 0.0
    assert ttl(hotpath_impl, request, "google", policy=policy) == 2 * HOUR
    no_rule = body([user(), assistant(), user()], temperature=0.5)
    assert ttl(hotpath_impl, no_rule, "openai", policy=policy) == 2 * DEFAULT


# --- the policy -----------------------------------------------------------------------


def test_every_threshold_and_ttl_is_configurable(hotpath_impl):
    policy = hotpath_impl.TTLPolicy(
        single_message_ttl_s=1,
        long_conversation_messages=2,
        long_conversation_ttl_s=2,
        high_temperature=1.5,
        high_temperature_ttl_s=3,
        low_temperature=0.6,
        low_temperature_ttl_s=4,
        attachment_ttl_s=5,
        default_temperature=1.0,
        system_roles=frozenset({"system", "narrator"}),
        text_part_types=frozenset({"text", "image_url"}),
    )
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}
    audio = {"role": "user", "content": [{"type": "input_audio"}]}
    narrator = {"role": "narrator", "content": "Once upon a time"}
    assert ttl(hotpath_impl, body([narrator, user()], temperature=1.0), policy=policy) == 1.0
    assert ttl(hotpath_impl, body([user()] * 3, temperature=1.0), policy=policy) == 2.0
    assert ttl(hotpath_impl, body([user()] * 2, temperature=1.5), policy=policy) == 3.0
    assert ttl(hotpath_impl, body([user()] * 2, temperature=0.6), policy=policy) == 4.0
    assert ttl(hotpath_impl, body([audio, user()], temperature=1.0), policy=policy) == 5.0
    assert ttl(hotpath_impl, body([image, user()], temperature=1.0), policy=policy) == DEFAULT


def test_the_default_policy_is_the_specification(hotpath_impl):
    policy = hotpath_impl.DEFAULT_TTL_POLICY
    assert policy == hotpath_impl.TTLPolicy()
    assert (policy.single_message_ttl_s, policy.long_conversation_ttl_s) == (7200.0, 900.0)
    assert (policy.high_temperature, policy.high_temperature_ttl_s) == (0.8, 600.0)
    assert (policy.low_temperature, policy.low_temperature_ttl_s) == (0.2, 14400.0)
    assert (policy.attachment_ttl_s, policy.long_conversation_messages) == (1200.0, 10)
    assert policy.default_temperature == 1.0


def test_policies_can_alternate(hotpath_impl):
    short = hotpath_impl.TTLPolicy(single_message_ttl_s=1)
    request = body([user()], temperature=0.5)
    for _ in range(3):
        assert ttl(hotpath_impl, request, policy=short) == 1.0
        assert ttl(hotpath_impl, request) == 2 * HOUR
        assert ttl(hotpath_impl, request, policy=hotpath_impl.TTLPolicy()) == 2 * HOUR


def test_policies_are_immutable():
    policy = hotpath.TTLPolicy(provider_factors={"openai": 2})
    with pytest.raises(AttributeError):
        policy.attachment_ttl_s = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.provider_factors["openai"] = 3.0  # type: ignore[index]
    assert policy.provider_factors == {"openai": 2.0}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attachment_ttl_s": -1},
        {"single_message_ttl_s": math.inf},
        {"low_temperature_ttl_s": math.nan},
        {"high_temperature": math.nan},
        {"long_conversation_messages": -1},
        {"long_conversation_messages": 2.5},
        {"provider_factors": {"openai": -1}},
        {"provider_factors": {"openai": math.inf}},
        {"provider_temperatures": {"openai": math.nan}},
    ],
)
def test_bad_policies_are_rejected(kwargs):
    with pytest.raises(ValueError, match="TTLPolicy"):
        hotpath.TTLPolicy(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attachment_ttl_s": "1"},
        {"provider_factors": {"openai": "2"}},
        {"provider_factors": {1: 2.0}},
        {"system_roles": frozenset({1})},
    ],
)
def test_policies_with_wrong_types_are_rejected(kwargs):
    with pytest.raises(TypeError):
        hotpath.TTLPolicy(**kwargs)


def test_a_policy_must_be_a_ttl_policy(hotpath_impl):
    with pytest.raises((TypeError, AttributeError)):
        hotpath_impl.compute_ttl(body([user()]), "openai", DEFAULT, {"attachment_ttl_s": 1})


def test_odd_bodies_do_not_break_the_rules(hotpath_impl):
    assert ttl(hotpath_impl, {"messages": "not a list", "temperature": 0.5}) == DEFAULT
    assert ttl(hotpath_impl, {"messages": [None, 3], "temperature": 0.5}) == DEFAULT
    assert ttl(hotpath_impl, {"messages": ["one"], "temperature": 0.5}) == 2 * HOUR
    assert ttl(hotpath_impl, {"messages": ({"role": "user"},), "temperature": 0.5}) == 2 * HOUR
    assert ttl(hotpath_impl, {"messages": [{"role": ["system"]}], "temperature": 0.5}) == 2 * HOUR
    assert ttl(hotpath_impl, {"temperature": float("nan")}) == DEFAULT
    assert ttl(hotpath_impl, {"temperature": 10**400}) == 10 * MINUTE


# --- differential test ----------------------------------------------------------------

_PARTS = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image_url", "input_audio", "file", "refusal"])}
    ),
    st.text(max_size=3),
    st.none(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_MESSAGE = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "role": st.one_of(
                st.sampled_from(["system", "developer", "user", "assistant", "tool"]), st.none()
            ),
            "content": st.one_of(st.text(max_size=5), st.lists(_PARTS, max_size=3), st.none()),
        },
    ),
    st.none(),
    st.text(max_size=3),
)
_TEMPERATURE = st.one_of(
    st.floats(min_value=-0.5, max_value=2.5),
    st.sampled_from([0.2, 0.8, 0, 1, 2]),
    st.floats(allow_nan=True),
    st.none(),
    st.booleans(),
    st.text(max_size=2),
)
_REQUESTS = st.fixed_dictionaries(
    {"messages": st.lists(_MESSAGE, max_size=14)},
    optional={"temperature": _TEMPERATURE},
)
_SECONDS = st.floats(min_value=0, max_value=1e6)
_POLICIES = st.one_of(
    st.none(),
    st.builds(
        hotpath.TTLPolicy,
        single_message_ttl_s=_SECONDS,
        long_conversation_messages=st.integers(0, 12),
        long_conversation_ttl_s=_SECONDS,
        high_temperature=st.floats(0, 2),
        high_temperature_ttl_s=_SECONDS,
        low_temperature=st.floats(0, 2),
        low_temperature_ttl_s=_SECONDS,
        attachment_ttl_s=_SECONDS,
        default_temperature=st.floats(0, 2),
        provider_temperatures=st.dictionaries(st.sampled_from(["a", "b"]), st.floats(0, 2)),
        provider_factors=st.dictionaries(st.sampled_from(["a", "b"]), st.floats(0, 10)),
    ),
)


@settings(max_examples=200, deadline=None, database=None)
@given(
    request=_REQUESTS,
    provider=st.sampled_from(["a", "b", "c"]),
    default=st.one_of(_SECONDS, st.integers(0, 10**6)),
    policy=_POLICIES,
)
def test_twins_agree(hotpath_impl, request, provider, default, policy):
    expected = hotpath.load("python").compute_ttl(request, provider, default, policy)
    assert hotpath_impl.compute_ttl(request, provider, default, policy) == expected
