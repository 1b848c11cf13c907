"""The mock provider answers a structured-output request with JSON that satisfies the schema.

Whatever wire format asks (OpenAI's ``response_format``, Gemini's ``responseJsonSchema`` or
``responseSchema``, Anthropic's ``output_config.format`` or a forced tool), the answer parses
and validates against the schema, so the gateway's structured-output translations are tested
end to end. The generator itself (``aigateway.testing.mock_schema.sample``) is checked here
against schemas of the shapes clients send, validated with ``jsonschema``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from aigateway.testing.mock_schema import sample
from servers import TEST_KEY, MockProvider

# What openai-python's parse() sends for a Pydantic model with a nested model, a list, an
# enum, an optional field and numbers (strict: every property required, nothing extra).
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 6},
        "temperature_c": {"type": "number", "minimum": -80, "maximum": 60},
        "rainy": {"type": "boolean"},
        "days": {"type": "integer", "exclusiveMinimum": 2},
        "sky": {"type": "string", "enum": ["clear", "cloudy"]},
        "outfit": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "note": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 3}]},
        "where": {"$ref": "#/$defs/Place"},
    },
    "required": ["city", "temperature_c", "rainy", "days", "sky", "outfit", "note", "where"],
    "additionalProperties": False,
    "$defs": {
        "Place": {
            "type": "object",
            "properties": {"lat": {"type": "number"}, "country": {"const": "FR"}},
            "required": ["lat", "country"],
            "additionalProperties": False,
        }
    },
}


@pytest.mark.parametrize(
    "schema",
    [
        WEATHER_SCHEMA,
        {"type": "array", "items": {"type": "integer", "minimum": 3}, "maxItems": 1},
        {"type": "string", "minLength": 11},
        {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}}]},
        {"type": ["string", "null"]},
        {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}},  # Gemini's spelling
    ],
)
def test_the_generator_makes_json_the_schema_accepts(schema: dict[str, Any]) -> None:
    value = sample(schema)
    jsonschema.validate(value, json.loads(json.dumps(schema).replace('"OBJECT"', '"object"')
                                          .replace('"INTEGER"', '"integer"')))  # fmt: skip
    assert sample(schema) == value  # deterministic


def test_a_reference_cycle_ends_instead_of_recursing_forever() -> None:
    schema = {"$ref": "#/$defs/Node", "$defs": {"Node": {"$ref": "#/$defs/Node"}}}
    assert sample(schema) is None


@pytest.fixture(scope="module")
def mock() -> Iterator[MockProvider]:
    server = MockProvider()
    yield server
    server.stop()


def _post(url: str, body: dict[str, Any], **headers: str) -> Any:
    answer = httpx.post(url, json=body, headers={"authorization": f"Bearer {TEST_KEY}", **headers})
    assert answer.status_code == 200, answer.text
    return answer.json()


USER = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_openai_response_format_json_schema_gets_schema_valid_content(mock: MockProvider) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": USER,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "Weather", "schema": WEATHER_SCHEMA, "strict": True},
        },
    }
    answer = _post(mock.url + "/v1/chat/completions", body)
    jsonschema.validate(json.loads(answer["choices"][0]["message"]["content"]), WEATHER_SCHEMA)
    assert answer["choices"][0]["finish_reason"] == "stop"


def test_openai_json_object_gets_a_json_object(mock: MockProvider) -> None:
    body = {"model": "gpt-4o-mini", "messages": USER, "response_format": {"type": "json_object"}}
    answer = _post(mock.url + "/v1/chat/completions", body)
    assert isinstance(json.loads(answer["choices"][0]["message"]["content"]), dict)


@pytest.mark.parametrize("key", ["responseJsonSchema", "responseSchema"])
def test_gemini_response_schema_gets_schema_valid_text(mock: MockProvider, key: str) -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": "Weather in Paris?"}]}],
        "generationConfig": {"responseMimeType": "application/json", key: WEATHER_SCHEMA},
    }
    url = mock.url + "/gemini/v1beta/models/gemini-2.5-flash:generateContent"
    answer = _post(url, body)
    text = answer["candidates"][0]["content"]["parts"][0]["text"]
    jsonschema.validate(json.loads(text), WEATHER_SCHEMA)


def test_anthropic_output_config_gets_one_schema_valid_text_block(mock: MockProvider) -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "messages": USER,
        "output_config": {"format": {"type": "json_schema", "schema": WEATHER_SCHEMA}},
    }
    answer = _post(mock.url + "/anthropic/v1/messages", body, **{"x-api-key": TEST_KEY})
    (block,) = answer["content"]
    assert block["type"] == "text"
    jsonschema.validate(json.loads(block["text"]), WEATHER_SCHEMA)
    assert answer["stop_reason"] == "end_turn"


def test_anthropic_forced_tool_gets_input_from_its_schema(mock: MockProvider) -> None:
    body = {
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 256,
        "messages": USER,
        "tools": [{"name": "Weather", "input_schema": WEATHER_SCHEMA}],
        "tool_choice": {"type": "tool", "name": "Weather", "disable_parallel_tool_use": True},
    }
    answer = _post(mock.url + "/anthropic/v1/messages", body, **{"x-api-key": TEST_KEY})
    (block,) = answer["content"]
    assert block["type"] == "tool_use" and block["name"] == "Weather"
    jsonschema.validate(block["input"], WEATHER_SCHEMA)


def test_a_weather_tool_still_gets_paris(mock: MockProvider) -> None:
    tool = {
        "name": "get_weather",
        "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
    }
    body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": USER, "tools": [tool]}
    answer = _post(mock.url + "/anthropic/v1/messages", body, **{"x-api-key": TEST_KEY})
    assert answer["content"][0]["input"] == {"location": "Paris"}
