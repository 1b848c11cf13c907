"""Hostile client input is the client's problem: a 400 (or a 499 for a client that left),
never a 500, a traceback in the log or a 5xx in the metrics.

A real gateway (2 workers) and the bundled mock; bodies and headers sent as they were found
by an outside tester, some over a raw socket because no HTTP client sends them.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from aigateway.app import create_app
from aigateway.config import Settings
from servers import Gateway, MockProvider, chat_body

pytestmark = pytest.mark.e2e

CHAT_ROUTES = ["/v1/chat/completions", "/v1/chat", "/v1/batch"]
GOOD_ITEM = chat_body("the good item")


@pytest.fixture
def log_since(gateway: Gateway) -> Callable[[], str]:
    """The gateway's log written during the test."""
    start = len(gateway.log())
    return lambda: gateway.log()[start:]


def post(client: httpx.Client, path: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    if path == "/v1/batch":
        content = b'{"requests": [' + content + b", " + orjson.dumps(GOOD_ITEM) + b"]}"
    return client.post(path, content=content, headers={"content-type": "application/json"})


def refused(response: httpx.Response, path: str) -> dict[str, Any]:
    """The 400 of a bad body; in a batch, of the bad item alone, the good one served."""
    if path != "/v1/batch":
        assert response.status_code == 400, response.text
        error: dict[str, Any] = response.json()["error"]
        return error
    assert response.status_code == 200, response.text
    bad, good = response.json()["results"]
    assert bad["status"] == 400
    assert good["status"] == 200, "one bad item never fails the others"
    return dict(bad["error"])


@pytest.mark.parametrize("path", CHAT_ROUTES)
@pytest.mark.parametrize("role", [{}, [], ["user"], 1, True])
def test_a_role_that_is_not_a_string_is_a_400(
    client: httpx.Client, log_since: Any, path: str, role: Any
) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": role, "content": "hi"}]}
    error = refused(post(client, path, body), path)
    assert error["param"].endswith("messages[0].role")
    assert "Traceback" not in log_since()


@pytest.mark.parametrize("path", CHAT_ROUTES)
@pytest.mark.parametrize("depth", [129, 500, 1000])
@pytest.mark.parametrize("where", ["unknown field", "message"])
def test_json_nested_past_128_levels_is_a_400(
    client: httpx.Client, log_since: Any, path: str, depth: int, where: str
) -> None:
    nested = b"[" * depth + b"]" * depth
    if where == "unknown field":
        raw = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "x": '
    else:
        raw = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi", "x": '
    raw += nested + (b"}" if where == "unknown field" else b"}]}")
    if path == "/v1/chat" and where == "unknown field":
        raw = raw.replace(b'"x"', b'"metadata"')  # the native API refuses unknown fields
    error = refused(post(client, path, raw), path)
    assert error["code"] in ("too_deeply_nested", "unknown_parameter", "invalid_type")
    assert "Traceback" not in log_since()


def raw_exchange(gateway: Gateway, request: bytes, half_close: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):  # until the server closes
                answer += chunk
        except TimeoutError:
            pass
        return answer


def head(path: str, *headers: bytes) -> bytes:
    lines = [b"POST " + path.encode() + b" HTTP/1.1", b"host: gateway", *headers]
    return b"\r\n".join(lines) + b"\r\n"


BODY = orjson.dumps(chat_body("deadline header"))


@pytest.mark.parametrize("value", [b"\xb2", b"-1", b"0", b"1.5", b"12ms"])
def test_a_deadline_header_that_is_not_a_number_of_ms_is_a_400(
    gateway: Gateway, log_since: Any, value: bytes
) -> None:
    request = head(
        "/v1/chat/completions",
        b"x-aigateway-timeout-ms: " + value,
        b"connection: close",
        b"content-length: %d" % len(BODY),
    )
    answer = raw_exchange(gateway, request + b"\r\n" + BODY)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"x-aigateway-timeout-ms" in answer
    assert "Traceback" not in log_since()


@pytest.mark.parametrize("digits", [400, 5000])
def test_a_deadline_of_thousands_of_digits_is_just_long(client: httpx.Client, digits: int) -> None:
    response = client.post(
        "/v1/chat/completions",
        json=chat_body("a long deadline"),
        headers={"x-aigateway-timeout-ms": "9" * digits},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            head("/v1/chat/completions", b"content-length: 500") + b"\r\n" + BODY,
            id="shorter than its content-length, then a half-close",
        ),
        pytest.param(
            head("/v1/chat/completions", b"transfer-encoding: chunked")
            + b"\r\nzz\r\n"
            + BODY
            + b"\r\n0\r\n\r\n",
            id="an invalid chunk size",
        ),
    ],
)
def test_a_body_cut_short_is_a_client_disconnect_not_a_server_error(
    gateway: Gateway, log_since: Any, request_bytes: bytes
) -> None:
    answer = raw_exchange(gateway, request_bytes, half_close=True)
    assert not answer.startswith(b"HTTP/1.1 5"), answer[:200]
    with gateway.client() as client:  # the access line is written after the answer
        client.get("/health")
    log = log_since()
    assert "Traceback" not in log
    assert " status=5" not in log
    assert " status=499" in log


def test_slash_suffixed_paths_are_404_and_never_redirect_to_the_host_header(
    client: httpx.Client,
) -> None:
    response = client.get("/metrics/", headers={"host": "evil.example"})
    assert response.status_code == 404
    assert "location" not in response.headers


def test_an_error_in_an_openai_stream_relays_the_providers_message(
    client: httpx.Client, mock: MockProvider
) -> None:
    mock.faults({"stream_error_after_chunks": 2, "message": "the model is overloaded"})
    body = chat_body("stream then fail", stream=True)
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    error = orjson.loads(lines[-1][6:])["error"]
    assert error["message"].endswith(": the model is overloaded"), error
    assert "{'" not in error["message"]


def test_an_unexpected_error_is_a_500_with_the_request_id() -> None:
    """In process: the real middleware stack of ``create_app``, plus a route that fails."""

    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug")

    app: Starlette = create_app(Settings())
    app.router.routes.append(Route("/broken", broken))
    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: nothing to start
    response = client.get("/broken", headers={"x-request-id": "trace-me-42"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "trace-me-42"
    assert response.json()["error"] == {
        "message": "internal gateway error",
        "type": "server_error",
        "param": None,
        "code": "internal_error",
    }
