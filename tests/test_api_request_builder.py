"""Every route builds its request the same way: the cache scope and the deadline arrive.

A real gateway with ``CACHE_SCOPE=key`` and two tenants' keys, in front of the bundled
mock. For each route that reaches the cache, walked from one table that must cover every
``POST /v1/*`` operation of ``/openapi.json``: a tenant's answer is a hit for that tenant
and never for the other (who may present its key as ``x-api-key``), and the client's
``x-aigateway-timeout-ms`` ends a slow provider call with 504.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from servers import Gateway, MockProvider, chat_body

pytestmark = pytest.mark.e2e

TENANT_A = {"authorization": "Bearer tenant-a-key"}
# The second tenant presents its key either way a client may.
TENANT_B = {
    "bearer": {"authorization": "Bearer tenant-b-key"},
    "x-api-key": {"x-api-key": "tenant-b-key"},
}


@pytest.fixture(scope="module")
def tenants_gateway(mock_provider: MockProvider) -> Iterator[Gateway]:
    server = Gateway(
        mock_provider,
        CACHE_ENABLED="true",
        CACHE_SCOPE="key",
        AI_GATEWAY_API_KEYS="tenant-a-key,tenant-b-key",
    )
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
def client(tenants_gateway: Gateway, mock: MockProvider) -> Iterator[httpx.Client]:
    with tenants_gateway.client() as http:
        yield http


# One way to ask each route; each returns (status, the answer's cache status or None).
Ask = Callable[[httpx.Client, str, dict[str, str]], tuple[int, Any]]


def _completions(client: httpx.Client, text: str, headers: dict[str, str]) -> tuple[int, Any]:
    response = client.post("/v1/chat/completions", json=chat_body(text), headers=headers)
    return response.status_code, response.headers.get("x-aigateway-cache")


def _completions_stream(
    client: httpx.Client, text: str, headers: dict[str, str]
) -> tuple[int, Any]:
    body = chat_body(text, stream=True)
    with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        response.read()
        return response.status_code, response.headers.get("x-aigateway-cache")


def _native(client: httpx.Client, text: str, headers: dict[str, str]) -> tuple[int, Any]:
    response = client.post("/v1/chat", json=chat_body(text), headers=headers)
    return response.status_code, response.headers.get("x-aigateway-cache")


def _responses(stream: bool) -> Ask:
    def ask(client: httpx.Client, text: str, headers: dict[str, str]) -> tuple[int, Any]:
        body = {"model": "gpt-4o-mini", "input": text, "stream": stream}
        with client.stream("POST", "/v1/responses", json=body, headers=headers) as response:
            response.read()
            return response.status_code, response.headers.get("x-aigateway-cache")

    return ask


def _batch(item: dict[str, Any]) -> Ask:
    def ask(client: httpx.Client, text: str, headers: dict[str, str]) -> tuple[int, Any]:
        body = {"requests": [{**item, "messages": [{"role": "user", "content": text}]}]}
        response = client.post("/v1/batch", json=body, headers=headers)
        assert response.status_code == 200, response.text
        result = response.json()["results"][0]
        if result["status"] != 200:
            return result["status"], None
        answer = result["response"]
        # A native answer says "cached"; an OpenAI one is counted by the mock's calls.
        return 200, ("hit" if answer.get("cached") else "miss") if "cached" in answer else None

    return ask


ROUTES_THROUGH_THE_CACHE: dict[str, tuple[str, Ask]] = {
    "chat completions": ("/v1/chat/completions", _completions),
    "chat completions, streamed": ("/v1/chat/completions", _completions_stream),
    "native chat": ("/v1/chat", _native),
    "batch, native item": ("/v1/batch", _batch({"model": "gpt-4o-mini"})),
    "batch, OpenAI item": ("/v1/batch", _batch({"model": "gpt-4o-mini", "n": 1})),
    "responses": ("/v1/responses", _responses(stream=False)),
    "responses, streamed": ("/v1/responses", _responses(stream=True)),
}
NOT_THROUGH_THE_CACHE = {"/v1/embeddings"}


def test_the_walk_covers_every_api_operation(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    posts = {path for path, ops in document["paths"].items() if path.startswith("/v1/")}
    posts = {path for path in posts if "post" in document["paths"][path]}
    walked = {path for path, _ in ROUTES_THROUGH_THE_CACHE.values()}
    assert posts == walked | NOT_THROUGH_THE_CACHE


@pytest.mark.parametrize("presented", TENANT_B)
@pytest.mark.parametrize("route", ROUTES_THROUGH_THE_CACHE)
def test_a_tenants_answer_is_never_served_to_another_tenant(
    client: httpx.Client, mock: MockProvider, route: str, presented: str
) -> None:
    _, ask = ROUTES_THROUGH_THE_CACHE[route]
    text = f"tenant isolation through {route}, the other key as {presented}"
    tenant_b = TENANT_B[presented]
    assert ask(client, text, TENANT_A)[0] == 200
    assert mock.calls() == 1
    status, cache = ask(client, text, TENANT_A)
    assert status == 200
    assert mock.calls() == 1, "the same tenant asking again is a hit"
    assert cache in ("hit", None)
    status, cache = ask(client, text, tenant_b)
    assert status == 200
    assert mock.calls() == 2, "another tenant must not get the first tenant's answer"
    assert cache in ("miss", None)
    ask(client, text, tenant_b)
    assert mock.calls() == 2, "and the second tenant has its own entry"


@pytest.mark.parametrize("route", [*ROUTES_THROUGH_THE_CACHE, "embeddings"])
def test_the_clients_deadline_reaches_the_provider_call(
    client: httpx.Client, mock: MockProvider, route: str
) -> None:
    mock.faults(default={"latency_ms": 5000})  # REQUEST_TIMEOUT_SEC is 10 in the tests
    headers = {**TENANT_A, "x-aigateway-timeout-ms": "300"}
    if route == "embeddings":
        body = {"model": "text-embedding-3-small", "input": "deadline"}
        status = client.post("/v1/embeddings", json=body, headers=headers).status_code
    else:
        status, _ = ROUTES_THROUGH_THE_CACHE[route][1](client, f"deadline {route}", headers)
    assert status == 504
