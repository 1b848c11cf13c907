"""The native /v1/chat API and the OpenAPI document that describes it."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import orjson
import pytest

from servers import Gateway, MockProvider

pytestmark = pytest.mark.e2e


def native(text: str = "Hello native", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


def test_a_native_chat_answers_in_the_native_shape(client: httpx.Client) -> None:
    response = client.post("/v1/chat", json=native(temperature=0.2, priority="high"))
    assert response.status_code == 200
    body = response.json()
    assert body["content"] == "Mock reply to: Hello native"
    assert body["provider"] == "openai"
    assert body["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] > 0
    assert body["cached"] is False
    assert body["latency_ms"] > 0
    assert response.headers["x-aigateway-provider"] == "openai"


def test_the_provider_field_routes_explicitly(client: httpx.Client) -> None:
    response = client.post("/v1/chat", json=native(model="any-model-name", provider="openai"))
    assert response.status_code == 200
    assert response.json()["model"] == "any-model-name"


def test_a_native_stream_carries_deltas_then_finish_and_usage(client: httpx.Client) -> None:
    with client.stream("POST", "/v1/chat", json=native("stream natively", stream=True)) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    parsed = [orjson.loads(e) for e in events[:-1]]
    assert "".join(e.get("content", "") for e in parsed) == "Mock reply to: stream natively"
    assert any(e.get("finish_reason") == "stop" for e in parsed)
    assert parsed[-1]["usage"]["total_tokens"] > 0
    assert all(e["provider"] == "openai" for e in parsed)


def test_attachments_become_image_parts(client: httpx.Client, mock: MockProvider) -> None:
    attachment = {"type": "image", "data": "iVBORw0KGgo=", "mime_type": "image/png"}
    response = client.post("/v1/chat", json=native("what is this", attachments=[attachment]))
    assert response.status_code == 200
    sent = mock.stats()["last_requests"][-1]["body"]["messages"][-1]["content"]
    assert sent[0] == {"type": "text", "text": "what is this"}
    assert sent[1]["image_url"]["url"] == "data:image/png;base64,iVBORw0KGgo="


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"priority": "urgent"}, "priority"),
        ({"colour": "blue"}, "colour"),
        ({"provider": ""}, "provider"),
        ({"attachments": [{"type": "video"}]}, "attachments[0]"),
        ({"cache": "off"}, "cache"),
        ({"messages": []}, "messages"),
    ],
)
def test_bad_native_requests_name_the_field(
    client: httpx.Client, change: dict[str, Any], param: str
) -> None:
    response = client.post("/v1/chat", json={**native(), **change})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_an_unknown_provider_is_a_404_as_openai_answers_an_unknown_model(
    client: httpx.Client,
) -> None:
    response = client.post("/v1/chat", json=native(provider="nowhere"))
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "provider"
    assert response.json()["error"]["code"] == "provider_not_found"


# --- the OpenAPI document matches what the server accepts ------------------------------


@pytest.fixture(scope="module")
def openapi(gateway: Gateway) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(gateway.url + "/openapi.json").json()
    return document


def _schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    return {**document["components"]["schemas"][name], "components": document["components"]}


ACCEPTED = [
    ("/v1/chat", "NativeChatRequest", native(priority="low", temperature=0.5)),
    ("/v1/chat/completions", "ChatCompletionRequest", native(stop=["x"], max_tokens=5)),
    ("/v1/embeddings", "EmbeddingsRequest", {"model": "text-embedding-3-small", "input": ["a"]}),
]
REFUSED = [
    ("/v1/chat", "NativeChatRequest", native(priority="urgent")),
    ("/v1/chat/completions", "ChatCompletionRequest", native(temperature=3)),
    ("/v1/embeddings", "EmbeddingsRequest", {"model": "text-embedding-3-small"}),
]


def test_openapi_lists_every_endpoint(openapi: dict[str, Any]) -> None:
    for path in ("/v1/chat", "/v1/chat/completions", "/v1/embeddings", "/v1/models", "/health"):
        assert path in openapi["paths"]


@pytest.mark.parametrize(("path", "schema", "body"), ACCEPTED)
def test_requests_the_schema_accepts_are_served(
    client: httpx.Client, openapi: dict[str, Any], path: str, schema: str, body: dict[str, Any]
) -> None:
    jsonschema.validate(body, _schema(openapi, schema))
    assert client.post(path, json=body).status_code == 200


@pytest.mark.parametrize(("path", "schema", "body"), REFUSED)
def test_requests_the_schema_refuses_are_refused(
    client: httpx.Client, openapi: dict[str, Any], path: str, schema: str, body: dict[str, Any]
) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, _schema(openapi, schema))
    assert client.post(path, json=body).status_code == 400


def test_native_answers_match_the_response_schema(
    client: httpx.Client, openapi: dict[str, Any]
) -> None:
    jsonschema.validate(
        client.post("/v1/chat", json=native()).json(), _schema(openapi, "NativeChatResponse")
    )
