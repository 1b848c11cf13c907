"""Keys, the admin rule and CORS over real HTTP, including a client off loopback."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from servers import Gateway, MockProvider, chat_body

pytestmark = pytest.mark.e2e

KEYS = ("sk-team-a-4f1c2b7e9d", "sk-team-b-8a3e6c1f0b")
ORIGIN = "https://app.example.com"
CHAT = "/v1/chat/completions"


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (None if it has none)."""
    candidates: list[str] = []
    with contextlib.suppress(OSError):
        candidates += subprocess.run(
            ["hostname", "-I"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.split()
    with contextlib.suppress(OSError):
        candidates += [str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)]
    for candidate in candidates:
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if address.version == 4 and not address.is_loopback and not address.is_link_local:
            return candidate
    return None


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text("# client keys\n" + "\n".join(KEYS) + "\n")
    return path


@pytest.fixture(scope="module")
def guarded(mock_provider: MockProvider, keys_file: Path) -> Iterator[Gateway]:
    gateway = Gateway(mock_provider, AI_GATEWAY_API_KEYS=f"@{keys_file}", CORS_ALLOW_ORIGINS=ORIGIN)
    yield gateway
    gateway.stop()


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_v1_needs_one_of_the_keys(guarded: Gateway, mock: MockProvider) -> None:
    with guarded.client() as client:
        missing = client.post(CHAT, json=chat_body())
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "missing_api_key"
        wrong = client.post(CHAT, json=chat_body(), headers=bearer("sk-team-c-0000000000"))
        assert wrong.status_code == 401
        assert wrong.json()["error"] == {
            "message": "invalid API key: it is not one of the gateway's keys",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
        for key in KEYS:
            assert client.post(CHAT, json=chat_body(), headers=bearer(key)).status_code == 200
        assert client.get("/health").status_code == 200
        assert client.get("/metrics").status_code == 200  # loopback, no admin key: allowed
        assert client.get("/admin/stats").status_code == 200
    assert mock.calls() == 2  # refused requests never reached the provider
    log = guarded.log()
    assert not any(key in log for key in KEYS)
    assert "sk-team-c-0000000000" not in log


@pytest.mark.parametrize("path", [CHAT, "/v1/messages", "/v1/nothing-here"])
def test_a_key_in_x_api_key_counts_like_a_bearer_token(
    guarded: Gateway, mock: MockProvider, path: str
) -> None:
    """Anthropic's clients send the key in ``x-api-key``: a wrong one is a 401 on every
    ``/v1`` path, known or not (in Anthropic's shape on ``/v1/messages``); a right one is
    let through (to a 400 there: a chat body lacks ``max_tokens``)."""
    with guarded.client() as client:
        wrong = client.post(path, json=chat_body(), headers={"x-api-key": "sk-team-c-0000000000"})
        assert wrong.status_code == 401
        if path == "/v1/messages":
            assert wrong.json()["error"]["type"] == "authentication_error"
        else:
            assert wrong.json()["error"]["code"] == "invalid_api_key"
        right = client.post(path, json=chat_body(), headers={"x-api-key": KEYS[0]})
        assert right.status_code == {CHAT: 200, "/v1/messages": 400}.get(path, 404)


def test_cors_preflight_for_an_allowed_and_a_refused_origin(guarded: Gateway) -> None:
    asked = {"access-control-request-method": "POST",
             "access-control-request-headers": "authorization, content-type"}  # fmt: skip
    with guarded.client() as client:
        allowed = client.options(CHAT, headers={"origin": ORIGIN, **asked})
        assert allowed.status_code == 204
        assert allowed.headers["access-control-allow-origin"] == ORIGIN
        assert "authorization" in allowed.headers["access-control-allow-headers"]
        refused = client.options(CHAT, headers={"origin": "https://evil.example", **asked})
        assert refused.status_code == 403
        assert "access-control-allow-origin" not in refused.headers
        answer = client.post(CHAT, json=chat_body(), headers={"origin": ORIGIN, **bearer(KEYS[0])})
        assert answer.headers["access-control-allow-origin"] == ORIGIN


def test_admin_from_off_loopback_needs_the_admin_key(
    mock_provider: MockProvider, keys_file: Path
) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to test from")
    # Bound to that address only: the client's address is then that one too, not loopback.
    gateway = Gateway(mock_provider, host=address, AI_GATEWAY_API_KEYS=f"@{keys_file}")
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            for path in ("/admin/stats", "/admin/config", "/admin/cache", "/metrics"):
                refused = client.get(path, headers=bearer(KEYS[0]))
                assert refused.status_code == 403, path
                assert refused.json()["error"]["code"] == "admin_loopback_only"
            put = client.put("/admin/config", json={"LOG_LEVEL": "debug"})
            assert put.status_code == 403
            assert client.post(CHAT, json=chat_body(), headers=bearer(KEYS[1])).status_code == 200
            assert client.get("/health").status_code == 200
    finally:
        gateway.stop()
    admin = "sk-admin-5b9d0e7a2c4f6e8a"
    gateway = Gateway(mock_provider, host=address, AI_GATEWAY_ADMIN_KEY=admin)
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            assert client.get("/admin/stats").status_code == 401
            assert client.get("/admin/stats", headers=bearer("sk-admin-wrong")).status_code == 401
            assert client.get("/admin/stats", headers=bearer(admin)).status_code == 200
            assert client.get("/metrics", headers=bearer(admin)).status_code == 200
        assert admin not in gateway.log()
    finally:
        gateway.stop()
