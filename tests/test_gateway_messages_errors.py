"""Every error under ``/v1/messages`` is in Anthropic's shape, whatever failed, so the
anthropic SDK raises the class it would raise for Anthropic itself: an unknown sub-path
(404), a method the path does not take (405), a body that stops arriving (408), a body
over the limit (413). ``{"type": "error", "error": {"type", "message"}}``, the error type
following the status as Anthropic's do; other paths keep OpenAI's shape.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from servers import Gateway, MockProvider

pytestmark = pytest.mark.e2e

MAX_BODY_BYTES = 20_000


@pytest.fixture(scope="module")
def gateway(mock_provider: MockProvider) -> Iterator[Gateway]:
    server = Gateway(
        mock_provider, MAX_BODY_BYTES=str(MAX_BODY_BYTES), CLIENT_BODY_TIMEOUT_SEC="0.5"
    )
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
def sdk(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0) as client:
        yield client


def _anthropic_shaped(body: Any, kind: str) -> None:
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == kind and body["error"]["message"]


def test_an_unknown_sub_path_is_anthropics_not_found(sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        sdk.messages.batches.retrieve("msgbatch_nope")
    _anthropic_shaped(caught.value.body, "not_found_error")
    assert "not_found_error" in str(caught.value)


def test_a_method_the_path_does_not_take_is_a_405_in_anthropics_shape(
    sdk: anthropic.Anthropic, gateway: Gateway
) -> None:
    response = httpx.get(gateway.url + "/v1/messages", timeout=10)
    assert response.status_code == 405 and "POST" in response.headers["allow"]
    _anthropic_shaped(response.json(), "invalid_request_error")
    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk.get("/v1/messages/count_tokens", cast_to=object)
    assert caught.value.status_code == 405
    _anthropic_shaped(caught.value.body, "invalid_request_error")


def test_a_body_over_the_limit_is_anthropics_request_too_large(sdk: anthropic.Anthropic) -> None:
    text = "x" * (MAX_BODY_BYTES + 1)
    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk.messages.create(model="claude-sonnet-4-5", max_tokens=10,
                            messages=[{"role": "user", "content": text}])  # fmt: skip
    assert caught.value.status_code == 413
    _anthropic_shaped(caught.value.body, "request_too_large")


def test_a_body_that_stops_arriving_is_a_408_in_anthropics_shape(gateway: Gateway) -> None:
    head = (
        "POST /v1/messages HTTP/1.1\r\nHost: gateway\r\ncontent-type: application/json\r\n"
        'content-length: 100\r\n\r\n{"model": '
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as conn:
        conn.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            piece = conn.recv(65536)
            if not piece:
                break
            answer += piece
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 408 " in status_line
    body = rest.partition(b"\r\n\r\n")[2]
    assert b'"type":"error"' in body and b'"invalid_request_error"' in body


def test_other_paths_keep_openais_shape(gateway: Gateway) -> None:
    response = httpx.get(gateway.url + "/v1/chat/completions", timeout=10)
    assert response.status_code == 405
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
