"""The bundled mock provider speaks OpenAI's Responses API, so the official SDK runs against
it as against OpenAI: plain answers, streams with every lifecycle event, and a function
call when tools are given and the user asks about the weather (as its chat answers do).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest

from servers import MockProvider

pytestmark = pytest.mark.e2e

TOOL: Any = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


@pytest.fixture
def sdk(mock: MockProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=mock.base_url, api_key="unused", max_retries=0) as client:
        yield client


def test_a_plain_answer(sdk: openai.OpenAI, mock: MockProvider) -> None:
    response = sdk.responses.create(model="gpt-4o-mini", input="Hello mock")
    assert response.output_text == "Mock reply to: Hello mock"
    assert response.usage is not None and response.usage.output_tokens == 5
    assert mock.stats()["by_path"] == {"/v1/responses": 1}


def test_a_streamed_answer_ends_with_response_completed(sdk: openai.OpenAI) -> None:
    with sdk.responses.stream(model="gpt-4o-mini", input="stream from the mock") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert final.output_text == "Mock reply to: stream from the mock"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_tools_and_weather_make_a_function_call(sdk: openai.OpenAI, stream: bool) -> None:
    ask = {"model": "gpt-4o-mini", "input": "weather in Paris?", "tools": [TOOL]}
    if stream:
        with sdk.responses.stream(**ask) as events:
            response = events.get_final_response()
    else:
        response = sdk.responses.create(**ask)
    call = response.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert orjson.loads(call.arguments) == {"location": "Paris"}


def test_a_request_without_input_is_refused_as_openai_would(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="gpt-4o-mini", input=[])
    assert caught.value.body["param"] == "input"  # type: ignore[index]
