"""Bad input gets a clear error in OpenAI's shape, naming what is wrong, and reaches no provider."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from servers import MockProvider, chat_body

pytestmark = pytest.mark.e2e


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in error["message"]
    return error


def _post(
    client: httpx.Client, content: bytes, path: str = "/v1/chat/completions"
) -> httpx.Response:
    return client.post(path, content=content, headers={"content-type": "application/json"})


def test_malformed_json(client: httpx.Client, mock: MockProvider) -> None:
    error = _error(_post(client, b'{"model": "gpt-4o",'), 400)
    assert "not valid JSON" in error["message"]
    assert mock.calls() == 0


def test_an_empty_body(client: httpx.Client) -> None:
    assert "empty" in _error(_post(client, b""), 400)["message"]


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"42", b"null"])
def test_a_body_that_is_not_an_object(client: httpx.Client, body: bytes) -> None:
    assert "must be a JSON object" in _error(_post(client, body), 400)["message"]


@pytest.mark.parametrize("field", ["model", "messages"])
def test_a_missing_required_field_is_named(client: httpx.Client, field: str) -> None:
    body = chat_body()
    del body[field]
    error = _error(client.post("/v1/chat/completions", json=body), 400)
    assert error["param"] == field
    assert field in error["message"]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"model": 42}, "model"),
        ({"model": ""}, "model"),
        ({"messages": "hello"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": ["hello"]}, "messages[0]"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages[0].content[0]"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"n": True}, "n"),
        ({"stream": "yes"}, "stream"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        (
            {"stream": True, "stream_options": {"include_usage": "yes"}},
            "stream_options.include_usage",
        ),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"tools": {"type": "function"}}, "tools"),
    ],
)
def test_a_wrong_type_is_named(
    client: httpx.Client, mock: MockProvider, change: dict[str, Any], param: str
) -> None:
    error = _error(client.post("/v1/chat/completions", json={**chat_body(), **change}), 400)
    assert error["param"] == param
    assert param in error["message"]
    assert mock.calls() == 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "text-embedding-3-small"}, "input"),
        ({"model": "text-embedding-3-small", "input": ""}, "input"),
        ({"model": "text-embedding-3-small", "input": [1, "a"]}, "input"),
        ({"model": "text-embedding-3-small", "input": "x", "dimensions": -1}, "dimensions"),
        ({"input": "x"}, "model"),
    ],
)
def test_bad_embeddings_requests(client: httpx.Client, body: dict[str, Any], param: str) -> None:
    assert _error(client.post("/v1/embeddings", json=body), 400)["param"] == param


def test_a_body_over_the_limit_is_413(client: httpx.Client, mock: MockProvider) -> None:
    big = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
    big += b"x" * (10 * 1024 * 1024) + b'"}]}'
    error = _error(_post(client, big), 413)
    assert "limit" in error["message"]
    assert mock.calls() == 0


def test_a_chunked_body_over_the_limit_is_413(client: httpx.Client) -> None:
    def chunks() -> Any:
        for _ in range(11):
            yield b"x" * (1024 * 1024)

    response = client.post(
        "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
    )
    _error(response, 413)


def test_an_unknown_path_is_404(client: httpx.Client) -> None:
    error = _error(client.get("/v1/nothing-here"), 404)
    assert "/v1/nothing-here" in error["message"]


def test_a_wrong_method_is_405_with_allow(client: httpx.Client) -> None:
    response = client.get("/v1/chat/completions")
    _error(response, 405)
    assert response.headers["allow"] == "POST"


def test_errors_never_show_the_provider_key(client: httpx.Client, mock: MockProvider) -> None:
    from servers import TEST_KEY

    mock.faults({"status": 401, "message": f"Incorrect API key provided: {TEST_KEY}"})
    response = client.post("/v1/chat/completions", json=chat_body())
    assert TEST_KEY not in response.text
