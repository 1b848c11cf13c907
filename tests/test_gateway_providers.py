"""One gateway URL, every provider: the official OpenAI SDK reaches Gemini and Anthropic.

The gateway translates OpenAI's format to each provider's and back; the bundled mock
speaks all three formats and gives the same reply to the same conversation.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest

from servers import Gateway, MockProvider

pytestmark = pytest.mark.e2e

MODELS = [
    ("gpt-4o-mini", "openai"),
    ("gemini-2.0-flash", "google"),
    ("claude-sonnet-4", "anthropic"),
]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}


@pytest.mark.parametrize(("model", "provider"), MODELS)
def test_chat_reaches_every_provider(
    openai_client: openai.OpenAI, mock: MockProvider, model: str, provider: str
) -> None:
    raw = openai_client.chat.completions.with_raw_response.create(
        model=model,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Which provider is this?"},
        ],
        max_tokens=50,
    )
    completion = raw.parse()
    assert raw.headers["x-aigateway-provider"] == provider
    assert completion.choices[0].message.content == "Mock reply to: Which provider is this?"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (
        completion.usage.total_tokens
        == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert completion.created > 0


@pytest.mark.parametrize(("model", "provider"), MODELS)
def test_streaming_reaches_every_provider(
    openai_client: openai.OpenAI, model: str, provider: str
) -> None:
    stream = openai_client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Stream it from afar"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Mock reply to: Stream it from afar"
    assert len(chunks) > 3
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize(("model", "provider"), MODELS)
def test_a_tool_call_round_trip_through_every_provider(
    openai_client: openai.OpenAI, model: str, provider: str
) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = openai_client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER_TOOL]
    )
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert '"Paris"' in call.function.arguments  # type: ignore[union-attr]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
    ]
    second = openai_client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER_TOOL]
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content


@pytest.mark.parametrize(("model", "provider"), MODELS)
def test_streamed_tool_calls_from_every_provider(
    openai_client: openai.OpenAI, model: str, provider: str
) -> None:
    stream = openai_client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    name, arguments, finish = "", "", None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                assert delta.index == 0
                name += (delta.function.name or "") if delta.function else ""
                arguments += (delta.function.arguments or "") if delta.function else ""
            finish = choice.finish_reason or finish
    assert name == "get_weather"
    assert '"Paris"' in arguments
    assert finish == "tool_calls"


def test_gemini_embeddings_through_the_openai_sdk(openai_client: openai.OpenAI) -> None:
    result = openai_client.embeddings.create(model="text-embedding-004", input=["a", "b"])
    assert [d.index for d in result.data] == [0, 1]
    assert result.model


def test_models_of_every_provider_in_one_list(gateway: Gateway) -> None:
    models = httpx.get(gateway.base_url + "/models").json()["data"]
    assert {m["provider"] for m in models} == {"openai", "google", "anthropic"}
    assert all(not m["id"].startswith("models/") for m in models)


def test_a_value_the_provider_cannot_take_is_a_400(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(
            model="claude-sonnet-4", messages=[{"role": "user", "content": "hi"}], temperature=1.5
        )
    assert info.value.body["param"] == "temperature"  # type: ignore[index]


def test_a_provider_error_is_an_openai_shaped_error(
    openai_client: openai.OpenAI, mock: MockProvider
) -> None:
    mock.faults({"status": 400, "message": "bad request for gemini"})
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(
            model="gemini-2.0-flash", messages=[{"role": "user", "content": "hi"}]
        )
    assert "bad request for gemini" in str(info.value)


def test_anthropic_overload_is_retried(openai_client: openai.OpenAI, mock: MockProvider) -> None:
    mock.faults({"status": 529})
    completion = openai_client.chat.completions.create(
        model="claude-sonnet-4", messages=[{"role": "user", "content": "retry"}]
    )
    assert completion.choices[0].message.content == "Mock reply to: retry"
    assert mock.calls() == 2


# --- remote images for Gemini: fetched by the gateway and inlined ----------------------

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    class Images(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/cat.png":
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.send_header("content-length", str(len(PNG)))
                self.end_headers()
                self.wfile.write(PNG)
            else:
                self.send_response(404)
                self.send_header("content-length", "0")
                self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def image_gateway(mock_provider: MockProvider) -> Iterator[Gateway]:
    gateway = Gateway(mock_provider, IMAGE_FETCH_ALLOW_PRIVATE="true")
    yield gateway
    gateway.stop()


def _image_chat(url: str) -> dict[str, Any]:
    content = [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return {"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": content}]}


def test_an_image_url_for_gemini_is_fetched_and_inlined(
    image_gateway: Gateway, image_server: str, mock: MockProvider
) -> None:
    with image_gateway.client() as client:
        response = client.post("/v1/chat/completions", json=_image_chat(image_server + "/cat.png"))
    assert response.status_code == 200, response.text
    sent = mock.stats()["last_requests"][-1]["body"]["contents"][-1]["parts"]
    inline = next(p for p in sent if "inline_data" in p or "inlineData" in p)
    data = inline.get("inline_data") or inline.get("inlineData")
    assert base64.b64decode(data["data"]) == PNG


def test_an_image_that_cannot_be_fetched_is_a_400_naming_it(
    image_gateway: Gateway, image_server: str, mock: MockProvider
) -> None:
    with image_gateway.client() as client:
        response = client.post(
            "/v1/chat/completions", json=_image_chat(image_server + "/missing.png")
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[0].content[1].image_url.url"
    assert mock.calls() == 0


def test_private_image_addresses_are_refused_by_default(
    gateway: Gateway, image_server: str, mock: MockProvider
) -> None:
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json=_image_chat(image_server + "/cat.png"))
    assert response.status_code == 400
    assert "private network" in response.json()["error"]["message"]


def test_an_image_url_block_on_v1_messages_is_fetched_and_inlined_for_gemini(
    image_gateway: Gateway, image_server: str, mock: MockProvider
) -> None:
    image = {"type": "image", "source": {"type": "url", "url": image_server + "/cat.png"}}
    body = {
        "model": "gemini-2.0-flash",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What?"}, image]}],
    }
    with image_gateway.client() as client:
        response = client.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"
    sent = mock.stats()["last_requests"][-1]["body"]["contents"][-1]["parts"]
    inline = next(p for p in sent if "inline_data" in p or "inlineData" in p)
    data = inline.get("inline_data") or inline.get("inlineData")
    assert base64.b64decode(data["data"]) == PNG
