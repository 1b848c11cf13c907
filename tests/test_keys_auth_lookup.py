"""Which key a token is, whichever order authentication looks in.

A token shaped like a tenant key's secret (``sk-agw-``) is looked up among the tenant
keys first, so a tenant key's request skips the digests of the flat keys; a flat key
(``AI_GATEWAY_API_KEYS``) of that same shape still opens ``/v1``, and an unknown token of
either shape is a 401.  In-process, the app as served (no provider is called: the only
provider is a closed port, so an accepted request is a 502, a refused one a 401).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from aigateway.app import create_app
from aigateway.config import Settings

FLAT = "sk-client-0123456789abcdef"
FLAT_LIKE_A_TENANT = "sk-agw-this-is-a-flat-key-0123456789"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = Settings(api_keys=(FLAT, FLAT_LIKE_A_TENANT), workers=1)
    nowhere = settings.with_providers({"openai": {"base_url": "http://127.0.0.1:9/v1"}})
    settings = dataclasses.replace(nowhere, mock_provider=True, max_retries=0)
    with TestClient(create_app(settings), client=("127.0.0.1", 40000)) as served:
        yield served


def status_with(client: TestClient, token: str) -> int:
    headers = {"authorization": f"Bearer {token}"}
    return client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code


def test_tenant_keys_and_flat_keys_of_either_shape_are_all_let_through(
    client: TestClient,
) -> None:
    made = client.post("/admin/keys", json={"name": "team"})
    assert made.status_code == 201
    tenant = made.json()["key"]
    assert tenant.startswith("sk-agw-")
    for token in (tenant, FLAT, FLAT_LIKE_A_TENANT):
        assert status_with(client, token) == 502  # let through, to a provider that is down


def test_an_unknown_token_is_a_401_whether_or_not_it_looks_like_a_tenant_key(
    client: TestClient,
) -> None:
    assert client.post("/admin/keys", json={"name": "team"}).status_code == 201
    for token in ("sk-agw-not-a-key-at-all-0123456789", "sk-client-unknown"):
        assert status_with(client, token) == 401


def test_a_revoked_tenant_key_is_a_401_and_the_flat_keys_keep_working(
    client: TestClient,
) -> None:
    made = client.post("/admin/keys", json={"name": "gone"}).json()
    assert client.delete(f"/admin/keys/{made['id']}").status_code == 200
    assert status_with(client, made["key"]) == 401
    assert status_with(client, FLAT_LIKE_A_TENANT) == 502
