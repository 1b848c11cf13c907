"""``POST /v1/responses``: its checks and its schema in ``/openapi.json`` say the same thing.

For generated bodies (valid ones bent in every field), reading a Responses request and
making its chat request either succeeds or raises ``InvalidRequest`` (a 400), never
anything else, and succeeds exactly for the bodies the schema accepts. Bodies here carry no
``previous_response_id`` and no ``item_reference``: those name stored responses, and one
that does not exist is a 400 as at OpenAI, whatever the schema says (which is why the live
schemathesis run allows a 400 on this operation).
"""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from aigateway.api.openapi import openapi_document
from aigateway.api.responses import chat_request, parse_responses_request
from aigateway.errors import InvalidRequest

DOCUMENT = openapi_document()
SCHEMA = jsonschema.Draft202012Validator(
    {**DOCUMENT["components"]["schemas"]["ResponsesRequest"], "components": DOCUMENT["components"]}
)

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=6)
leaves = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(-3, 3), text)
anything = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(text, inner, max_size=2),
    max_leaves=6,
)


TEXT = {"type": "input_text", "text": "hi"}
IMAGE = {"type": "input_image", "image_url": "https://example.com/a.png"}
PARTS = [TEXT, IMAGE, {"type": "output_text", "text": ""}, {"type": "input_file"},
         {**IMAGE, "detail": "original"}, {"type": "input_image"}, "hi"]  # fmt: skip
parts = st.lists(st.sampled_from(PARTS), max_size=2)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "user", "assistant", "system", "developer", "robot"])},
    optional={"type": st.just("message"), "content": st.one_of(text, parts)},
)
item = st.one_of(
    message,
    st.fixed_dictionaries(
        {"type": st.just("function_call")},
        optional={"call_id": st.sampled_from(["c1", ""]), "name": st.just("f"),
                  "arguments": st.sampled_from(["{}", ""])},
    ),
    st.fixed_dictionaries(
        {"type": st.just("function_call_output")},
        optional={"call_id": st.just("c1"), "output": st.one_of(text, parts)},
    ),
    st.sampled_from([{"type": "reasoning", "summary": []}, {"type": "web_search_call"}]),
)  # fmt: skip
# Each field's candidates: mostly good, some refused.
FIELDS: dict[str, list[Any]] = {
    "instructions": ["be brief", 3],
    "stream": [True, False, "yes"],
    "store": [True, False, 1],
    "tools": [[], [{"type": "function", "name": "f"}], [{"type": "web_search"}],
              [{"type": "function"}]],
    "tool_choice": ["auto", "none", {"type": "function", "name": "f"},
                    {"type": "allowed_tools", "mode": "auto", "tools": []},
                    {"type": "web_search"}],
    "text": [{"format": {"type": "json_object"}}, {"verbosity": "low"},
             {"format": {"type": "json_schema", "name": "x", "schema": {}}},
             {"format": {"type": "json_schema", "schema": {}}}],
    "max_output_tokens": [16, 16.0, 0, 2.5],
    "temperature": [0, 2, 2.5],
    "top_p": [1, 1.5],
    "top_logprobs": [0, 5, 21],
    "include": [[], ["message.output_text.logprobs"], [1]],
    "reasoning": [{"effort": "low"}, {}, {"effort": 1}],
    "metadata": [{"a": "b"}, {"a": 1}],
    "user": ["u"],
    "parallel_tool_calls": [False],
    "background": [False, True],
    "conversation": ["conv_1"],
}  # fmt: skip


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": draw(st.sampled_from(["gpt-4o-mini"] * 5 + [" "]))}
    body["input"] = draw(st.one_of(text, st.lists(item, min_size=1, max_size=3),
                                   st.just([]), anything))  # fmt: skip
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=4, unique=True)):
        body[name] = draw(st.sampled_from(FIELDS[name]))
    if draw(st.integers(0, 4)) == 0:  # now and then, one field bent out of shape
        body[draw(st.sampled_from(["input", *FIELDS]))] = draw(anything)
    return body


def accepted(body: dict[str, Any]) -> bool:
    try:
        parsed = parse_responses_request(orjson.dumps(body))
        chat_request(parsed, parsed.items)
    except InvalidRequest:
        return False
    return True


@settings(max_examples=400, deadline=None, derandomize=True)
@given(body=bodies())
def test_the_checks_accept_exactly_what_the_schema_accepts(body: dict[str, Any]) -> None:
    assert accepted(body) == SCHEMA.is_valid(body)
