"""The official OpenAI SDK works through the gateway with only base_url changed."""

from __future__ import annotations

import openai
import pytest

from servers import MockProvider

pytestmark = pytest.mark.e2e


def test_chat_completion(openai_client: openai.OpenAI, mock: MockProvider) -> None:
    completion = openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "What is a gateway?"}]
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Mock reply to: What is a gateway?"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert mock.calls() == 1


def test_the_provider_receives_the_request_and_the_key(
    openai_client: openai.OpenAI, mock: MockProvider
) -> None:
    openai_client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], temperature=0.3
    )
    seen = mock.stats()["last_requests"][-1]
    assert seen["path"] == "/v1/chat/completions"
    assert seen["headers"]["authorization"] == "present"
    assert seen["body"]["model"] == "gpt-4o"
    assert seen["body"]["temperature"] == 0.3


def test_streaming_chat_arrives_in_several_chunks(openai_client: openai.OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Tell me about streams please"}],
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Mock reply to: Tell me about streams please"
    assert len(chunks) > 3
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_streaming_with_include_usage_ends_with_a_usage_chunk(
    openai_client: openai.OpenAI,
) -> None:
    stream = openai_client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "count my tokens"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_tool_calls_pass_through(openai_client: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
            },
        }
    ]
    completion = openai_client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=tools,  # type: ignore[arg-type]
    )
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert completion.choices[0].finish_reason == "tool_calls"


def test_embeddings(openai_client: openai.OpenAI) -> None:
    single = openai_client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert len(single.data) == 1 and len(single.data[0].embedding) > 0
    batch = openai_client.embeddings.create(
        model="text-embedding-3-small", input=["a", "b", "c"], dimensions=4
    )
    assert [d.index for d in batch.data] == [0, 1, 2]
    assert all(len(d.embedding) == 4 for d in batch.data)
    again = openai_client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert again.data[0].embedding == single.data[0].embedding


def test_models(openai_client: openai.OpenAI) -> None:
    ids = {model.id for model in openai_client.models.list()}
    assert "gpt-4o-mini" in ids


def test_a_bad_request_raises_the_matching_sdk_error(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert info.value.status_code == 400
    assert "messages" in str(info.value)


@pytest.mark.anyio
async def test_the_async_sdk_streams_too(gateway_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=gateway_url, api_key="unused", max_retries=0)
    async with client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "async"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Mock reply to: async"
