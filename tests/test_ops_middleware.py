"""Request ids, request logs, authentication and CORS, in process (no provider is called)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import orjson
import pytest
from starlette.testclient import TestClient

from aigateway.app import create_app
from aigateway.config import Settings
from aigateway.logs import JsonFormatter, TextFormatter

KEYS = ("sk-client-one-0123456789", "sk-client-two-0123456789")
ADMIN = "sk-admin-0123456789abcdef"
ORIGIN = "https://app.example.com"


def client_for(settings: Settings, address: str = "127.0.0.1") -> TestClient:
    # Providers count as configured (as with the bundled mock); a call to one is refused
    # at once (nothing listens on port 9 of loopback) and never retried.
    nowhere = settings.with_providers({"openai": {"base_url": "http://127.0.0.1:9/v1"}})
    settings = dataclasses.replace(nowhere, mock_provider=True, max_retries=0)
    return TestClient(create_app(settings), client=(address, 40000))


@pytest.fixture
def guarded() -> Iterator[TestClient]:
    settings = Settings(api_keys=KEYS, cors_allow_origins=(ORIGIN,), workers=1)
    with client_for(settings) as client:
        yield client


def bad_chat() -> dict[str, object]:
    return {"model": "gpt-4o-mini"}  # no messages: a 400 from validation, past auth


def test_client_keys_guard_v1(guarded: TestClient) -> None:
    missing = guarded.post("/v1/chat/completions", json=bad_chat())
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = guarded.post(
        "/v1/chat/completions", json=bad_chat(), headers={"authorization": "Bearer sk-nope"}
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    for key in KEYS:
        ok = guarded.post(
            "/v1/chat/completions", json=bad_chat(), headers={"authorization": f"Bearer {key}"}
        )
        assert ok.status_code == 400  # through the gate, refused by validation
    assert guarded.get("/health").status_code == 200  # always open


def test_health_is_503_when_no_provider_can_serve() -> None:
    with TestClient(create_app(Settings(workers=1))) as client:  # no key, no base URL
        response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["providers"]["openai"]["state"] == "unconfigured"


@pytest.mark.parametrize(
    ("address", "status"),
    [("127.0.0.1", 200), ("127.5.6.7", 200), ("::1", 200), ("::ffff:127.0.0.1", 200),
     ("192.0.2.7", 403), ("10.1.2.3", 403), ("testclient", 403)],
)  # fmt: skip
def test_without_an_admin_key_admin_answers_loopback_only(address: str, status: int) -> None:
    with client_for(Settings(workers=1), address) as client:
        for path in ("/admin/stats", "/admin/config", "/metrics"):
            response = client.get(path)
            assert response.status_code == status, path
            if status == 403:
                assert response.json()["error"]["code"] == "admin_loopback_only"


def test_an_admin_key_guards_admin_from_everywhere() -> None:
    settings = Settings(workers=1, api_keys=KEYS, admin_key=ADMIN, metrics_public=True)
    with client_for(settings, "192.0.2.7") as client:
        assert client.get("/admin/stats").status_code == 401
        wrong = client.get("/admin/stats", headers={"authorization": "Bearer sk-wrong"})
        assert wrong.status_code == 401
        client_key = client.get("/admin/stats", headers={"authorization": f"Bearer {KEYS[0]}"})
        assert client_key.status_code == 403
        assert client_key.json()["error"]["type"] == "permission_error"
        assert client.get("/admin/stats", headers={"authorization": f"Bearer {ADMIN}"}).is_success
        assert client.get("/metrics").status_code == 200  # METRICS_PUBLIC
    with client_for(Settings(workers=1, admin_key=ADMIN)) as client:
        assert client.get("/metrics").status_code == 401  # the admin rule, even on loopback


def test_cors_preflight_for_an_allowed_and_a_refused_origin(guarded: TestClient) -> None:
    preflight = {
        "origin": ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    allowed = guarded.options("/v1/chat/completions", headers=preflight)
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert allowed.headers["access-control-allow-headers"] == "authorization, content-type"
    refused = guarded.options(
        "/v1/chat/completions", headers={**preflight, "origin": "https://evil.example"}
    )
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers
    assert refused.json()["error"]["code"] == "cors_refused"
    # Actual requests: the allowed origin may read even a 401; another origin gets nothing.
    answer = guarded.post("/v1/chat/completions", json=bad_chat(), headers={"origin": ORIGIN})
    assert answer.status_code == 401
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in answer.headers["access-control-expose-headers"]
    other = guarded.get("/health", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_no_origin_is_allowed_by_default() -> None:
    with client_for(Settings(workers=1)) as client:
        preflight = client.options(
            "/v1/chat/completions",
            headers={"origin": ORIGIN, "access-control-request-method": "POST"},
        )
        assert preflight.status_code == 405  # no CORS answer at all
        assert "access-control-allow-origin" not in preflight.headers


def test_request_ids_are_taken_or_made_and_every_request_is_logged(
    guarded: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aigateway.access")
    given = guarded.get("/health", headers={"x-request-id": "trace-42.a:b"})
    assert given.headers["x-request-id"] == "trace-42.a:b"
    unsafe = guarded.get("/health", headers={"x-request-id": "no spaces\tplease"})
    assert len(unsafe.headers["x-request-id"]) == 24
    guarded.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "secret plan"}]},
        headers={"authorization": f"Bearer {KEYS[0]}", "x-request-id": "req-7"},
        params={"x": "1"},
    )
    lines = [r for r in caplog.records if r.name == "aigateway.access"]
    fields = [r.fields for r in lines]  # type: ignore[attr-defined]
    assert [f["request_id"] for f in fields] == ["trace-42.a:b", unsafe.headers["x-request-id"],
                                                 "req-7"]  # fmt: skip
    chat = fields[-1]
    assert chat["route"] == "/v1/chat/completions" and chat["method"] == "POST"
    assert {"status", "provider", "model", "cached", "retries", "queue_ms", "latency_ms"} <= set(
        chat
    )
    text = "\n".join(TextFormatter("%(message)s").format(r) for r in lines)
    assert "request_id=req-7" in text
    assert KEYS[0] not in text and "secret plan" not in text  # no key, no prompt at info
    assert KEYS[0] not in caplog.text


def test_bodies_are_logged_at_debug_level_only(
    guarded: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aigateway.access")
    guarded.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": []},
        headers={"authorization": f"Bearer {KEYS[1]}"},
    )
    assert '"messages":[]' in caplog.text
    assert KEYS[1] not in caplog.text


def test_json_log_lines() -> None:
    record = logging.LogRecord("aigateway.access", logging.INFO, __file__, 1, "request", (), None)
    record.fields = {"request_id": "r1", "status": 200, "route": "/health"}
    line = orjson.loads(JsonFormatter().format(record))
    assert line["message"] == "request" and line["level"] == "info"
    assert (line["request_id"], line["status"], line["route"]) == ("r1", 200, "/health")
    assert line["time"].endswith("Z")
