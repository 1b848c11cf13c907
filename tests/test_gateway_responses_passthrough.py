"""A ``/v1/responses`` request for an OpenAI model reaches OpenAI's own Responses endpoint:
what the gateway could not translate (built-in tools, reasoning items, ``include``) arrives
as the client sent it, answers and events come back as OpenAI sent them, and a response
OpenAI keeps is continued there by ``previous_response_id`` and deleted there with the
gateway's copy. Through the same pipeline as
chat: a streamed answer is cached and served again, and an alias fails over from OpenAI to
Gemini, translated for Gemini, the stored conversation included.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from servers import Gateway, MockProvider

pytestmark = pytest.mark.e2e

WEATHER_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
}


def _last(mock: MockProvider) -> dict[str, Any]:
    request: dict[str, Any] = mock.stats()["last_requests"][-1]
    return request


def test_fields_the_gateway_cannot_translate_reach_openai_as_sent(
    openai_client: openai.OpenAI, mock: MockProvider
) -> None:
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"}
    response = openai_client.responses.create(
        model="gpt-4o-mini",
        input=[reasoning, {"type": "message", "role": "user", "content": "What is new?"}],
        tools=[{"type": "web_search"}], include=["reasoning.encrypted_content"],
        truncation="auto", reasoning={"effort": "low", "summary": "auto"},
    )  # fmt: skip
    assert response.output_text == "Mock reply to: What is new?"
    seen = _last(mock)
    assert seen["path"] == "/v1/responses"
    body = seen["body"]
    assert body["input"][0] == reasoning, "the reasoning item reached OpenAI whole"
    assert body["tools"] == [{"type": "web_search"}]
    assert body["include"] == ["reasoning.encrypted_content"]
    assert body["truncation"] == "auto" and body["reasoning"]["summary"] == "auto"


def test_a_stream_from_openai_keeps_its_events_and_names(
    client: httpx.Client, mock: MockProvider
) -> None:
    body = {"model": "gpt-4o-mini", "input": "Stream it please", "stream": True}
    with client.stream("POST", "/v1/responses", json=body) as response:
        assert response.status_code == 200
        lines = list(response.iter_lines())
    names = [line[7:] for line in lines if line.startswith("event: ")]
    events = [orjson.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert names == [e["type"] for e in events], "every event is named by its type"
    assert names[0] == "response.created" and names[-1] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "[DONE]" not in "".join(lines)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "Mock reply to: Stream it please"
    assert _last(mock)["path"] == "/v1/responses"


def test_a_streamed_tool_call_from_openai_then_its_output(
    openai_client: openai.OpenAI, mock: MockProvider
) -> None:
    with openai_client.responses.stream(
        model="gpt-4o-mini", input="The weather in Paris?", tools=[WEATHER_TOOL]
    ) as stream:
        kinds = [e.type for e in stream]
        first = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    call = first.output[0]
    assert call.type == "function_call" and orjson.loads(call.arguments) == {"location": "Paris"}
    second = openai_client.responses.create(
        model="gpt-4o-mini", previous_response_id=first.id, tools=[WEATHER_TOOL],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )  # fmt: skip
    assert second.previous_response_id == first.id and second.output_text
    sent = _last(mock)["body"]
    assert sent["previous_response_id"] == first.id, "OpenAI keeps the first turn itself"
    assert len(sent["input"]) == 1
    assert openai_client.responses.retrieve(second.id).output_text == second.output_text


def test_deleting_a_response_openai_keeps_deletes_it_there_too(
    openai_client: openai.OpenAI, mock: MockProvider
) -> None:
    kept = openai_client.responses.create(model="gpt-4o-mini", input="forget me everywhere")
    openai_client.responses.delete(kept.id)
    seen = _last(mock)
    assert (seen["method"], seen["path"]) == ("DELETE", f"/v1/responses/{kept.id}")
    ours = openai_client.responses.create(model="gemini-2.0-flash", input="only ours")
    calls = mock.calls()
    openai_client.responses.delete(ours.id)
    assert mock.calls() == calls, "a response only the gateway keeps needs no provider call"


# --- the pipeline: cache, failover ------------------------------------------------------------


@pytest.fixture(scope="module")
def alias_gateway(
    mock_provider: MockProvider,
    flaky_provider: MockProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    config = tmp_path_factory.mktemp("config") / "gateway.toml"
    config.write_text(
        f"""
[providers.flakyai]  # an OpenAI-compatible server that speaks the Responses API too
base_url = "{flaky_provider.base_url}"
responses_api = true

[aliases]
smart = ["flakyai/gpt-4o-mini", "google/gemini-2.0-flash"]
"""
    )
    gateway = Gateway(mock_provider, AI_GATEWAY_CONFIG=str(config), CACHE_ENABLED="true")
    yield gateway
    gateway.stop()


@pytest.fixture
def sdk(
    alias_gateway: Gateway, mock: MockProvider, flaky_provider: MockProvider
) -> Iterator[openai.OpenAI]:
    httpx.delete(alias_gateway.url + "/admin/cache").raise_for_status()
    flaky_provider.reset()
    with openai.OpenAI(base_url=alias_gateway.base_url, api_key="k", max_retries=0) as client:
        yield client


def test_a_streamed_passthrough_answer_is_cached_and_served_again(
    sdk: openai.OpenAI, mock: MockProvider
) -> None:
    first = list(sdk.responses.create(model="gpt-4o-mini", input="cache a stream", stream=True))
    raw = sdk.responses.with_raw_response.create(model="gpt-4o-mini", input="cache a stream")
    assert raw.headers["x-aigateway-cache"] == "hit"
    assert mock.calls() == 1
    again = raw.parse()
    assert again.output_text == "Mock reply to: cache a stream"
    assert again.id != first[-1].response.id, "a hit is a response of its own"  # type: ignore[union-attr]
    replayed = list(sdk.responses.create(model="gpt-4o-mini", input="cache a stream", stream=True))
    assert [e.type for e in replayed][-1] == "response.completed"
    assert mock.calls() == 1


def test_an_alias_fails_over_from_openai_to_gemini_with_the_stored_conversation(
    sdk: openai.OpenAI, mock: MockProvider, flaky_provider: MockProvider
) -> None:
    first = sdk.responses.create(model="smart", input="What is the weather in Paris?",
                                 tools=[WEATHER_TOOL])  # fmt: skip
    assert flaky_provider.stats()["last_requests"][-1]["path"] == "/v1/responses"
    call = first.output[0]
    assert call.type == "function_call"
    flaky_provider.faults(default={"status": 503})
    raw = sdk.responses.with_raw_response.create(
        model="smart", previous_response_id=first.id, tools=[WEATHER_TOOL],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )  # fmt: skip
    assert raw.headers["x-aigateway-provider"] == "google"
    second = raw.parse()
    assert second.status == "completed" and second.previous_response_id == first.id
    seen = _last(mock)
    assert seen["path"].startswith("/gemini/")
    sent = orjson.dumps(seen["body"]).decode()
    assert "What is the weather in Paris?" in sent and "sunny" in sent, (
        "Gemini got the whole conversation, translated"
    )


def test_a_json_schema_answer_from_openai_parses(
    openai_client: openai.OpenAI, mock: MockProvider
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"},
              "sunny": {"type": "boolean"}}, "required": ["city", "sunny"],
              "additionalProperties": False}  # fmt: skip
    response = openai_client.responses.create(
        model="gpt-4o-mini", input="Describe Paris",
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
    )  # fmt: skip
    assert _last(mock)["path"] == "/v1/responses"
    answer = orjson.loads(response.output_text)
    assert isinstance(answer["city"], str) and isinstance(answer["sunny"], bool)
