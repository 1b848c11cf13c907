"""The pipeline's routes are answered in front of Starlette's middleware stack, alike.

A ``POST`` to ``/v1/chat/completions`` and its peers goes through one flat function
(``middleware.hot_path``) instead of eleven layers; everything else goes through the
stack. Both ways must answer every request the same: here each request is sent both
ways, in process, and the answers compared (no provider is called: the only provider
is a closed port).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from aigateway.app import create_app
from aigateway.config import Settings
from aigateway.middleware.hot_path import HOT_PATHS, HotPath

KEY = "sk-client-one-0123456789"
ORIGIN = "https://app.example.com"
VARYING = {"x-request-id", "date"}  # new each request


@dataclasses.dataclass
class BothWays:
    hot: TestClient  # the app as served: the hot path in front
    stack: TestClient  # the same app's middleware stack alone
    path: HotPath


STACK_ONLY = b"x-test-stack-only"  # sent to the stack alone; removed before the app sees it


@pytest.fixture
def both() -> Iterator[BothWays]:
    settings = Settings(api_keys=(KEY,), cors_allow_origins=(ORIGIN,), workers=1)
    nowhere = settings.with_providers({"openai": {"base_url": "http://127.0.0.1:9/v1"}})
    settings = dataclasses.replace(nowhere, mock_provider=True, max_retries=0, max_body_bytes=4096)
    app = create_app(settings)

    # One app, one event loop (its provider pools belong to the loop that opened them):
    # a marked request goes to the middleware stack alone, the others as served.
    async def either_way(scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope.get("headers", [])
        if scope["type"] == "http" and any(name == STACK_ONLY for name, _ in headers):
            scope["headers"] = [(n, v) for n, v in headers if n != STACK_ONLY]
            scope["app"] = app  # as Starlette sets it
            stack = app.middleware_stack
            assert isinstance(stack, HotPath)
            await stack.app(scope, receive, send)
        else:
            await app(scope, receive, send)

    with TestClient(either_way, client=("127.0.0.1", 40000)) as hot:
        hot.get("/health")  # builds the stack
        path = app.middleware_stack
        assert isinstance(path, HotPath)
        stack = TestClient(either_way, client=("127.0.0.1", 40000))
        stack.headers[STACK_ONLY.decode()] = "1"
        stack.portal = hot.portal  # the same loop as the served app's
        yield BothWays(hot, stack, path)


def answer(
    client: TestClient, method: str, url: str, **kwargs: Any
) -> tuple[int, Any, dict[str, str]]:
    response = client.request(method, url, **kwargs)
    headers = {k: v for k, v in response.headers.items() if k not in VARYING}
    assert response.headers["x-request-id"]
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return response.status_code, body, headers


def test_every_post_route_of_the_pipeline_takes_the_hot_path(both: BothWays) -> None:
    assert set(both.path.routes) == set(HOT_PATHS)
    assert all("POST" in (route.methods or ()) for route in both.path.routes.values())


AUTH = {"authorization": f"Bearer {KEY}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/chat/completions", {"json": CHAT}),  # no key: 401
    ("POST", "/v1/chat/completions", {"json": CHAT, "headers": {"authorization": "Bearer no"}}),
    ("POST", "/v1/chat/completions", {"json": {"model": "m"}, "headers": AUTH}),  # 400
    ("POST", "/v1/chat/completions", {"content": b"{", "headers": AUTH}),  # not JSON
    ("POST", "/v1/chat/completions", {"content": b"x" * 5000, "headers": AUTH}),  # 413
    ("POST", "/v1/chat/completions", {"json": CHAT, "headers": AUTH}),  # provider down
    ("POST", "/v1/chat/completions", {"json": CHAT, "headers": {**AUTH, "origin": ORIGIN}}),
    ("POST", "/v1/chat/completions", {"json": CHAT, "headers": {"origin": ORIGIN}}),
    ("POST", "/v1/chat/completions", {"json": CHAT, "headers": {**AUTH, "origin": "https://x"}}),
    (
        "POST",
        "/v1/chat/completions",
        {"json": CHAT, "headers": {**AUTH, "x-aigateway-priority": "urgent"}},
    ),
    ("POST", "/v1/messages", {"json": {"model": "m"}, "headers": AUTH}),  # Anthropic's shape
    ("POST", "/v1/messages", {"json": CHAT}),  # 401 in Anthropic's shape
    ("POST", "/v1/embeddings", {"json": {"model": "m"}, "headers": AUTH}),
    ("POST", "/v1/responses", {"json": {"model": "m"}, "headers": AUTH}),
    ("POST", "/v1/chat", {"json": {}, "headers": AUTH}),
    ("POST", "/v1/batch", {"json": {}, "headers": AUTH}),
    ("GET", "/v1/chat/completions", {"headers": AUTH}),  # 405: through the stack
    ("POST", "/v1/chat/completions/", {"json": CHAT, "headers": AUTH}),  # 404: the stack
]


@pytest.mark.parametrize(("method", "url", "kwargs"), REQUESTS)
def test_the_hot_path_answers_like_the_stack(
    both: BothWays, method: str, url: str, kwargs: dict[str, Any]
) -> None:
    assert answer(both.hot, method, url, **kwargs) == answer(both.stack, method, url, **kwargs)


def test_a_client_request_id_comes_back_either_way(both: BothWays) -> None:
    for client in (both.hot, both.stack):
        sent = {**AUTH, "x-request-id": "req-42"}
        response = client.post("/v1/chat/completions", json={"model": "m"}, headers=sent)
        assert response.headers["x-request-id"] == "req-42"


def test_a_refused_request_counts_as_unmatched_as_before(both: BothWays) -> None:
    def refused() -> float:
        text = both.hot.get("/metrics").text
        label = 'route="unmatched"'
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("aigateway_requests_total") and label in line
            and 'status="4xx"' in line
        )  # fmt: skip

    before = refused()
    assert both.hot.post("/v1/chat/completions", json=CHAT).status_code == 401
    assert refused() == before + 1
