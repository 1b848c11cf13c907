"""The OpenAI SDK's Responses API works through the gateway with only base_url changed:
``client.responses.create`` plain, streamed and with function tools, continued with
``previous_response_id``, on OpenAI, Gemini and Anthropic targets alike (OpenAI gets its own
Responses endpoint, the others a translation through chat); stored responses are read back
and deleted; bad input is a 400 in OpenAI's shape; and the chat path's cache,
de-duplication and failover work on ``/v1/responses`` as they do on chat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from servers import Gateway, MockProvider

pytestmark = pytest.mark.e2e

MODELS = {"openai": "gpt-4o-mini", "google": "gemini-2.0-flash", "anthropic": "claude-sonnet-4-5"}
PATHS = {"openai": "/v1/responses", "google": "/gemini/", "anthropic": "/anthropic/"}
WEATHER_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
}


def _last_path(mock: MockProvider) -> str:
    return str(mock.stats()["last_requests"][-1]["path"])


@pytest.mark.parametrize("provider", MODELS)
def test_a_plain_response_from_every_provider(
    openai_client: openai.OpenAI, mock: MockProvider, provider: str
) -> None:
    response = openai_client.responses.create(
        model=MODELS[provider], input="What is a gateway?", instructions="Answer briefly."
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == "Mock reply to: What is a gateway?"
    assert response.instructions == "Answer briefly."
    assert response.usage is not None and response.usage.total_tokens > 0
    assert _last_path(mock).startswith(PATHS[provider])
    assert mock.calls() == 1


@pytest.mark.parametrize("provider", MODELS)
def test_a_streamed_response_sends_every_event_with_gap_free_numbers(
    openai_client: openai.OpenAI, provider: str
) -> None:
    stream = openai_client.responses.create(
        model=MODELS[provider], input="Tell me about streams", stream=True
    )
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Mock reply to: Tell me about streams"
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.usage is not None and completed.response.usage.output_tokens > 0


def test_the_sdks_stream_helper_assembles_the_final_response(openai_client: openai.OpenAI) -> None:
    with openai_client.responses.stream(model="gpt-4o-mini", input="helper stream") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Mock reply to: helper stream"


@pytest.mark.parametrize("provider", MODELS)
def test_a_tool_call_then_its_output_with_previous_response_id(
    openai_client: openai.OpenAI, mock: MockProvider, provider: str
) -> None:
    model = MODELS[provider]
    first = openai_client.responses.create(
        model=model, input="What is the weather in Paris?", tools=[WEATHER_TOOL]
    )
    call = first.output[-1]
    assert call.type == "function_call"
    assert call.name == "get_weather" and orjson.loads(call.arguments) == {"location": "Paris"}
    second = openai_client.responses.create(
        model=model, previous_response_id=first.id, tools=[WEATHER_TOOL],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )  # fmt: skip
    assert second.status == "completed" and second.output_text
    assert second.previous_response_id == first.id
    body = mock.stats()["last_requests"][-1]["body"]
    if provider == "openai":  # OpenAI keeps the first turn itself: its id and the new item go
        assert body["previous_response_id"] == first.id
        assert [item["type"] for item in body["input"]] == ["function_call_output"]
    else:  # the gateway kept it: the whole conversation goes
        sent = orjson.dumps(body).decode()
        assert "What is the weather in Paris?" in sent, "the stored turn went to the provider"
        assert "sunny" in sent


def test_a_streamed_tool_call(openai_client: openai.OpenAI) -> None:
    with openai_client.responses.stream(
        model="gpt-4o-mini", input="weather in Paris?", tools=[WEATHER_TOOL]
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    call = final.output[0]
    assert call.type == "function_call" and orjson.loads(call.arguments) == {"location": "Paris"}


def test_a_stored_response_is_read_back_and_deleted(
    openai_client: openai.OpenAI, gateway: Gateway
) -> None:
    created = openai_client.responses.create(model="gpt-4o-mini", input="keep me")
    assert openai_client.responses.retrieve(created.id).output_text == created.output_text
    other = openai.OpenAI(base_url=gateway.base_url, api_key="another-key", max_retries=0)
    with other, pytest.raises(openai.NotFoundError):
        other.responses.retrieve(created.id)  # another key never sees it
    openai_client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client.responses.retrieve(created.id)
    assert caught.value.body["code"] == "not_found"  # type: ignore[index]


def test_store_false_keeps_nothing(openai_client: openai.OpenAI) -> None:
    created = openai_client.responses.create(model="gpt-4o-mini", input="forget", store=False)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(created.id)


def test_an_unknown_previous_response_is_a_400(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.responses.create(
            model="gpt-4o-mini", input="hi", previous_response_id="resp_nope"
        )
    assert caught.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-4o-mini"}, "input"),
        ({"model": "claude-sonnet-4-5", "input": "x", "tools": [{"type": "web_search"}]},
         "tools[0].type"),
        ({"model": "gpt-4o-mini", "input": [{"type": "message", "role": "robot",
                                             "content": "x"}]}, "input[0].role"),
        ({"model": "gpt-4o-mini", "input": "x", "temperature": 5}, "temperature"),
    ],
)  # fmt: skip
def test_bad_input_is_a_400_in_openais_shape(
    client: httpx.Client, mock: MockProvider, body: dict[str, Any], param: str
) -> None:
    response = client.post("/v1/responses", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert mock.calls() == 0


def test_an_error_after_the_200_ends_the_stream_with_error_and_response_failed(
    client: httpx.Client, mock: MockProvider
) -> None:
    mock.faults({"stream_error_after_chunks": 2})
    body = {"model": "gpt-4o-mini", "input": "break please", "stream": True}
    with client.stream("POST", "/v1/responses", json=body) as response:
        assert response.status_code == 200
        names = [line[7:] for line in response.iter_lines() if line.startswith("event: ")]
    assert names[0] == "response.created"
    assert names[-2:] == ["error", "response.failed"]


# --- the chat path's cache, de-duplication and failover --------------------------------------


@pytest.fixture(scope="module")
def resilient_gateway(
    mock_provider: MockProvider,
    flaky_provider: MockProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    config = tmp_path_factory.mktemp("config") / "gateway.toml"
    config.write_text(
        f"""
[providers.flaky]
base_url = "{flaky_provider.base_url}"

[providers.chatonly]  # OpenAI-compatible, chat completions only: Responses translated
base_url = "{mock_provider.base_url}"

[aliases]
resilient = ["flaky/gpt-4o-mini", "anthropic/claude-sonnet-4-5"]
"""
    )
    gateway = Gateway(mock_provider, AI_GATEWAY_CONFIG=str(config), CACHE_ENABLED="true")
    yield gateway
    gateway.stop()


@pytest.fixture
def resilient(resilient_gateway: Gateway, mock: MockProvider) -> Iterator[openai.OpenAI]:
    httpx.delete(resilient_gateway.url + "/admin/cache").raise_for_status()
    with openai.OpenAI(base_url=resilient_gateway.base_url, api_key="k", max_retries=0) as sdk:
        yield sdk


def test_the_same_request_is_a_cache_hit_with_a_new_response_id(
    resilient: openai.OpenAI, mock: MockProvider
) -> None:
    first = resilient.responses.with_raw_response.create(model="gpt-4o-mini", input="cache me")
    second = resilient.responses.with_raw_response.create(model="gpt-4o-mini", input="cache me")
    assert first.headers["x-aigateway-cache"] == "miss"
    assert second.headers["x-aigateway-cache"] == "hit"
    assert mock.calls() == 1
    one, two = first.parse(), second.parse()
    assert one.output_text == two.output_text and one.id != two.id
    streamed = resilient.responses.create(model="gpt-4o-mini", input="cache me", stream=True)
    assert [e.type for e in streamed][-1] == "response.completed"
    assert mock.calls() == 1, "a stream is served from the same entry"


def test_identical_concurrent_requests_share_one_provider_call(
    resilient_gateway: Gateway, resilient: openai.OpenAI, mock: MockProvider
) -> None:
    mock.faults(default={"latency_ms": 500})
    body = {"model": "gpt-4o-mini", "input": "all at once"}

    async def one() -> str:
        async with httpx.AsyncClient(timeout=30) as http:  # a connection of its own
            response = await http.post(resilient_gateway.base_url + "/responses", json=body)
            return str(response.json()["output"][0]["content"][0]["text"])

    async def all_of_them() -> list[str]:
        return list(await asyncio.gather(*(one() for _ in range(10))))

    assert asyncio.run(all_of_them()) == ["Mock reply to: all at once"] * 10
    assert mock.calls() == 1


def test_an_alias_fails_over_to_its_next_target(
    resilient: openai.OpenAI, mock: MockProvider, flaky_provider: MockProvider
) -> None:
    flaky_provider.reset()
    flaky_provider.faults(default={"status": 503})
    raw = resilient.responses.with_raw_response.create(model="resilient", input="fail over")
    assert raw.headers["x-aigateway-provider"] == "anthropic"
    assert raw.parse().output_text == "Mock reply to: fail over"
    assert flaky_provider.calls() >= 1 and mock.calls() == 1


def test_instructions_and_settings_reach_a_translated_provider_as_chat_fields(
    resilient: openai.OpenAI, mock: MockProvider
) -> None:
    resilient.responses.create(
        model="chatonly/gpt-4o-mini", input="settings please", instructions="Be terse.",
        temperature=0.3, max_output_tokens=64, reasoning={"effort": "low"}, user="u-1",
        metadata={"team": "search"},
    )  # fmt: skip
    seen = mock.stats()["last_requests"][-1]["body"]
    assert seen["messages"][0] == {"role": "system", "content": "Be terse."}
    assert seen["temperature"] == 0.3
    assert seen["max_completion_tokens"] == 64
    assert seen["reasoning_effort"] == "low"
    assert seen["user"] == "u-1"
    assert "metadata" not in seen, "metadata is the gateway's, echoed in the response"
