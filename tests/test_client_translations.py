"""The real openai-python client against a real gateway in front of the mock (issue 16).

``client.chat.completions.parse`` with a Pydantic model works on ``gpt-*``, ``gemini-*`` and
``claude-*`` (natively structured models and those answered through a forced tool), streamed
too; ``client.models.retrieve`` finds models and aliases and raises ``NotFoundError`` for the
rest; options other providers have equivalents for reach them instead of failing; a
conversation started on Gemini goes on with ``gpt-*`` (OpenAI refuses tool-call ids longer
than 40 characters, and so does the mock); an error inside an OpenAI stream reaches the client
as the provider's message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from pydantic import BaseModel

from servers import Gateway, MockProvider

STRUCTURED_MODELS = [
    "gpt-4o-mini",
    "gemini-2.5-flash",
    "gemini-3-pro-preview",
    "claude-sonnet-4-5",  # output_config.format
    "claude-sonnet-4-20250514",  # a forced tool whose input is the answer
]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}


class Place(BaseModel):
    city: str
    country_code: str


class Forecast(BaseModel):
    place: Place
    temperature_c: float
    rain_expected: bool
    days: int
    outfit: list[str]


@pytest.fixture(scope="module")
def gateway(
    mock_provider: MockProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config: Path = tmp_path_factory.mktemp("config") / "gateway.toml"
    config.write_text('[aliases]\nsmart = ["google/gemini-2.5-flash", "openai/gpt-4o-mini"]\n')
    server = Gateway(mock_provider, AI_GATEWAY_CONFIG=str(config))
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
def sdk(gateway: Gateway, mock: MockProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0) as client:
        yield client


ASK = [{"role": "user", "content": "What will the weather be in Paris this week?"}]


@pytest.mark.parametrize("model", STRUCTURED_MODELS)
def test_parse_returns_the_pydantic_model_on_every_provider(sdk: openai.OpenAI, model: str) -> None:
    completion = sdk.chat.completions.parse(model=model, messages=ASK, response_format=Forecast)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, Forecast)
    assert not choice.message.tool_calls


@pytest.mark.parametrize("model", STRUCTURED_MODELS)
def test_a_streamed_parse_ends_with_the_pydantic_model(sdk: openai.OpenAI, model: str) -> None:
    with sdk.chat.completions.stream(model=model, messages=ASK, response_format=Forecast) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "stop"
    assert isinstance(final.choices[0].message.parsed, Forecast)


def test_json_object_reaches_claude(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="claude-sonnet-4-5", messages=ASK, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)
    assert completion.choices[0].finish_reason == "stop"


def test_models_retrieve_finds_models_and_aliases(sdk: openai.OpenAI) -> None:
    model = sdk.models.retrieve("gpt-4o-mini")
    assert (model.id, model.object) == ("gpt-4o-mini", "model")
    assert sdk.models.retrieve("google/gemini-2.5-flash").id == "google/gemini-2.5-flash"
    alias = sdk.models.retrieve("smart")
    assert (alias.id, alias.owned_by) == ("smart", "aigateway")
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.models.retrieve("no-such-model")
    assert caught.value.code == "model_not_found"


def test_a_conversation_started_on_gemini_goes_on_with_gpt(sdk: openai.OpenAI) -> None:
    messages: list[dict[str, object]] = [{"role": "user", "content": "weather in Paris?"}]
    first = sdk.chat.completions.create(
        model="gemini-3-pro-preview",
        messages=messages,
        tools=[WEATHER_TOOL],  # type: ignore[arg-type]
    )
    message = first.choices[0].message
    (call,) = message.tool_calls or []
    assert len(call.id) <= 40
    messages += [
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 degrees"},
    ]
    for model in ("gpt-4o-mini", "gemini-3-pro-preview", "claude-sonnet-4-5"):
        answer = sdk.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])  # type: ignore[arg-type]
        assert answer.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    "model",
    ["gemini-2.5-flash", "gemini-3-pro-preview", "claude-sonnet-4-5", "claude-sonnet-4-20250514"],
)
def test_reasoning_effort_reaches_gemini_and_claude(sdk: openai.OpenAI, model: str) -> None:
    answer = sdk.chat.completions.create(model=model, messages=ASK, reasoning_effort="low")
    assert answer.choices[0].message.content


def test_logprobs_come_back_from_gemini(sdk: openai.OpenAI) -> None:
    answer = sdk.chat.completions.create(
        model="gemini-2.5-flash", messages=ASK, logprobs=True, top_logprobs=2
    )
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert len(logprobs.content[0].top_logprobs) == 2


def test_claude_gets_no_blank_stop_and_one_sampler(sdk: openai.OpenAI) -> None:
    answer = sdk.chat.completions.create(
        model="claude-sonnet-4-5", messages=ASK, stop=["\n", "END"], temperature=0.2, top_p=0.9
    )
    assert answer.choices[0].finish_reason == "stop"


def test_an_error_inside_an_openai_stream_is_raised_with_its_message(
    sdk: openai.OpenAI, mock: MockProvider
) -> None:
    mock.faults({"stream_error_after_chunks": 2, "message": "The engine overheated."})
    with pytest.raises(openai.APIError) as caught:
        for _ in sdk.chat.completions.create(model="gpt-4o-mini", messages=ASK, stream=True):
            pass
    assert "The engine overheated." in caught.value.message
    assert "{'" not in caught.value.message
