"""Tenant keys over real HTTP: made, shown, changed and revoked at run time, and held to
their limits by every worker of a node.

One gateway of four workers in front of the mock provider for the module, its keys in a
temporary ``AI_GATEWAY_DATA_DIR``, with a flat key in ``AI_GATEWAY_API_KEYS`` beside
them.  Requests that must land on different workers go on fresh connections (Granian
spreads connections over its workers).
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from servers import Gateway, MockProvider, chat_body, free_port, gateway_env

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
FLAT_KEY = "flat-key-0123456789abcdef"


@pytest.fixture(scope="module")
def mock() -> Iterator[MockProvider]:
    provider = MockProvider()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def gateway(mock: MockProvider, data_dir: Path) -> Iterator[Gateway]:
    node = Gateway(
        mock, MAX_WORKERS="4", AI_GATEWAY_DATA_DIR=str(data_dir), AI_GATEWAY_API_KEYS=FLAT_KEY
    )
    yield node
    node.stop()


@pytest.fixture(autouse=True)
def _clean_mock(mock: MockProvider) -> None:
    mock.reset()


def make_key(gateway: Gateway, **fields: Any) -> dict[str, Any]:
    answer = httpx.post(gateway.url + "/admin/keys", json=fields, timeout=10)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def chat(gateway: Gateway, key: str, **extra: Any) -> httpx.Response:
    """One chat request on a connection of its own (so any worker may take it)."""
    body = chat_body(extra.pop("text", "Hello there"), **extra)
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(gateway.url + CHAT, json=body, headers=headers, timeout=30)


def test_a_new_key_is_answered_once_with_its_secret_and_only_its_hash_is_stored(
    gateway: Gateway, data_dir: Path
) -> None:
    made = make_key(gateway, name="once", rpm=100, metadata={"team": "search"})
    secret = made["key"]
    assert made["id"].startswith("key_") and secret.startswith("sk-agw-")
    assert made["rpm"] == 100 and made["metadata"] == {"team": "search"}
    shown = httpx.get(f"{gateway.url}/admin/keys/{made['id']}", timeout=10).json()
    listed = httpx.get(gateway.url + "/admin/keys", timeout=10).text
    assert "key" not in shown and secret not in listed and secret[:20] not in listed
    assert shown["prefix"] == secret[:12]
    database = sqlite3.connect(data_dir / "keys.db")
    dump = "\n".join(database.iterdump())
    database.close()
    assert secret not in dump and secret[7:30] not in dump
    assert chat(gateway, secret).status_code == 200


def test_a_name_is_unique_among_live_keys_and_free_again_once_revoked(gateway: Gateway) -> None:
    first = make_key(gateway, name="unique")
    again = httpx.post(gateway.url + "/admin/keys", json={"name": "unique"}, timeout=10)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "key_name_taken"
    assert httpx.delete(f"{gateway.url}/admin/keys/{first['id']}", timeout=10).status_code == 200
    make_key(gateway, name="unique")


def test_unknown_fields_are_a_400_naming_them(gateway: Gateway) -> None:
    answer = httpx.post(
        gateway.url + "/admin/keys", json={"name": "x", "rmp": 5, "budget": 1}, timeout=10
    )
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert "'rmp'" in message and "'budget'" in message


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"name": ""},
        {"name": "bad-rpm", "rpm": 0},
        {"name": "bad-rpm", "rpm": 1.5},
        {"name": "bad-tpm", "tpm": "100"},
        {"name": "bad-parallel", "max_parallel": True},
        {"name": "bad-budget", "budget_usd": -1},
        {"name": "bad-period", "budget_usd": 1, "budget_period": "week"},
        {"name": "bad-models", "models": "gpt-4o"},
        {"name": "bad-priority", "priority": "urgent"},
        {"name": "bad-ceiling", "max_priority": "top"},
        {"name": "bad-expiry", "expires_at": "tomorrow"},
        {"name": "bad-expiry", "expires_at": "2030-01-01T00:00:00"},
        {"name": "bad-metadata", "metadata": [1, 2]},
    ],
)
def test_every_field_is_validated_and_nothing_is_stored_on_a_bad_one(
    gateway: Gateway, fields: dict[str, Any]
) -> None:
    answer = httpx.post(gateway.url + "/admin/keys", json=fields, timeout=10)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    listed = httpx.get(gateway.url + "/admin/keys", timeout=10).json()["data"]
    assert not [key for key in listed if key["name"].startswith("bad-")]


def test_a_patch_changes_limits_and_an_unknown_key_is_a_404(gateway: Gateway) -> None:
    made = make_key(gateway, name="patched", rpm=10)
    url = f"{gateway.url}/admin/keys/{made['id']}"
    changed = httpx.patch(
        url, json={"rpm": None, "tpm": 5000, "models": ["gpt-4o-mini"]}, timeout=10
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["rpm"] is None and changed.json()["tpm"] == 5000
    assert httpx.patch(url, json={"colour": "red"}, timeout=10).status_code == 400
    assert (
        httpx.get(f"{gateway.url}/admin/keys/key_0000000000000000", timeout=10).status_code == 404
    )
    assert (
        httpx.delete(f"{gateway.url}/admin/keys/key_0000000000000000", timeout=10).status_code
        == 404
    )


def test_a_tenant_key_works_as_a_bearer_token_and_in_x_api_key_and_flat_keys_keep_working(
    gateway: Gateway,
) -> None:
    secret = make_key(gateway, name="both-ways")["key"]
    assert chat(gateway, secret).status_code == 200
    messages = httpx.post(
        gateway.url + "/v1/messages",
        json={
            "model": "claude-sonnet-4-5",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "Hi"}],
        },
        headers={"x-api-key": secret, "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert messages.status_code == 200, messages.text
    assert chat(gateway, FLAT_KEY).status_code == 200
    assert chat(gateway, "sk-agw-not-a-key").status_code == 401
    assert httpx.post(gateway.url + CHAT, json=chat_body(), timeout=10).status_code == 401
    admin = httpx.get(
        gateway.url + "/admin/keys", headers={"authorization": f"Bearer {secret}"}, timeout=10
    )
    assert admin.status_code == 200  # loopback: the admin rule, not the tenant key, decides


def test_a_model_the_key_may_not_use_is_a_403_and_an_alias_counts_as_its_own_name(
    gateway: Gateway,
) -> None:
    secret = make_key(gateway, name="mini-only", models=["gpt-4o-mini"])["key"]
    assert chat(gateway, secret).status_code == 200
    refused = chat(gateway, secret, model="gpt-4o")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_not_allowed"
    assert "gpt-4o-mini" in refused.json()["error"]["message"]


def test_an_expired_key_is_a_401_on_every_worker(gateway: Gateway) -> None:
    past = make_key(gateway, name="expired", expires_at="2020-01-01T00:00:00Z")["key"]
    answer = chat(gateway, past)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "expired_api_key"
    soon = time.time() + 1.5
    made = make_key(
        gateway,
        name="expiring",
        expires_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(soon + 1)),
    )
    assert chat(gateway, made["key"]).status_code == 200
    time.sleep(max(0.0, soon + 1.2 - time.time()))
    assert {chat(gateway, made["key"]).status_code for _ in range(8)} == {401}


def test_a_key_with_rpm_5_gets_its_sixth_request_refused_across_4_workers(gateway: Gateway) -> None:
    secret = make_key(gateway, name="five-a-minute", rpm=5)["key"]
    statuses = [chat(gateway, secret, text=f"request {n}").status_code for n in range(6)]
    assert statuses == [200] * 5 + [429]
    refused = chat(gateway, secret)
    assert refused.json()["error"]["code"] == "key_rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    workers = {httpx.get(gateway.url + "/health", timeout=10).json()["pid"] for _ in range(24)}
    assert len(workers) > 1  # the requests above were spread over several workers


def test_requests_past_max_parallel_are_refused_until_one_ends(
    gateway: Gateway, mock: MockProvider
) -> None:
    secret = make_key(gateway, name="two-at-once", max_parallel=2)["key"]
    mock.faults(default={"latency_ms": 600})

    async def burst() -> Counter[int]:
        headers = {"authorization": f"Bearer {secret}"}
        async with httpx.AsyncClient(timeout=30) as client:
            answers = await asyncio.gather(
                *(
                    client.post(gateway.url + CHAT, json=chat_body(f"p {n}"), headers=headers)
                    for n in range(5)
                )
            )
        codes = {a.json()["error"]["code"] for a in answers if a.status_code == 429}
        assert codes <= {"key_parallel_limit"}
        return Counter(a.status_code for a in answers)

    statuses = asyncio.run(burst())
    assert statuses[200] == 2 and statuses[429] == 3
    mock.faults(default={})
    assert chat(gateway, secret).status_code == 200  # the places were let go
    shown = httpx.get(gateway.url + "/admin/keys", timeout=10).json()["data"]
    assert [k["usage"]["in_flight"] for k in shown if k["name"] == "two-at-once"] == [0]


def test_a_revocation_holds_on_every_worker_within_a_second(gateway: Gateway) -> None:
    made = make_key(gateway, name="revoked-soon")
    assert chat(gateway, made["key"]).status_code == 200
    revoked = httpx.delete(f"{gateway.url}/admin/keys/{made['id']}", timeout=10)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    started = time.monotonic()
    statuses = []
    while time.monotonic() - started < 1.0:
        statuses.append(chat(gateway, made["key"]).status_code)
    assert statuses and set(statuses) == {401}


def test_a_data_directory_that_cannot_be_written_stops_the_server_with_exit_2(
    tmp_path: Path,
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    env = gateway_env(
        None, AI_GATEWAY_DATA_DIR=str(blocked / "keys"), AI_GATEWAY_PORT=str(free_port())
    )
    done = subprocess.run(
        [sys.executable, "-m", "aigateway.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "AI_GATEWAY_DATA_DIR" in done.stderr and "Traceback" not in done.stderr
