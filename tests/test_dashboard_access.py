"""The dashboard's page, files and data endpoint, in process: who may load what, the data's
shape, and that the page ships whole in the package (nothing fetched from elsewhere).

Who may load what:

* without ``AI_GATEWAY_ADMIN_KEY``: the page, its files and its data answer loopback only;
* with it: the page and its files are open (they hold no data; the page asks for the
  key), its data (``/admin/dashboard.json``) wants the key like every ``/admin`` endpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
from importlib import resources

import pytest
from starlette.testclient import TestClient

from aigateway.app import create_app
from aigateway.config import Settings
from aigateway.dashboard.routes import STATIC
from aigateway.wire import PRIORITIES

ADMIN = "sk-admin-0123456789abcdef"
CLIENT_KEY = "sk-client-0123456789abcdef"
DATA = "/admin/dashboard.json"
FILES = ["/dashboard", *(f"/dashboard/static/{path}" for path in STATIC)]
# The release files of uPlot 1.6.32 as published (tag 1.6.32, npm uplot@1.6.32).
UPLOT = {
    "vendor/uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
    "vendor/uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
    "vendor/uPlot.LICENSE.txt": "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd",
}


def client_for(settings: Settings, address: str = "127.0.0.1") -> TestClient:
    # Providers count as configured (as with the bundled mock); nothing is called.
    nowhere = settings.with_providers({"openai": {"base_url": "http://127.0.0.1:9/v1"}})
    settings = dataclasses.replace(nowhere, mock_provider=True, max_retries=0)
    return TestClient(create_app(settings), client=(address, 40000))


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.mark.parametrize(("address", "status"), [("127.0.0.1", 200), ("192.0.2.7", 403)])
def test_without_an_admin_key_the_dashboard_answers_loopback_only(
    address: str, status: int
) -> None:
    with client_for(Settings(workers=1), address) as client:
        for path in [*FILES, DATA]:
            response = client.get(path)
            assert response.status_code == status, path
            if status == 403:
                assert response.json()["error"]["code"] == "admin_loopback_only"


def test_with_an_admin_key_the_page_is_open_and_its_data_wants_the_key() -> None:
    settings = Settings(workers=1, admin_key=ADMIN, api_keys=(CLIENT_KEY,))
    with client_for(settings, "192.0.2.7") as client:
        for path in FILES:
            assert client.get(path).status_code == 200, path
        page = client.get("/dashboard").text
        assert 'data-auth="key"' in page  # the page asks for the key before any data
        assert ADMIN not in page
        missing = client.get(DATA)
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "missing_api_key"
        assert client.get(DATA, headers=bearer("sk-admin-wrong")).status_code == 401
        client_key = client.get(DATA, headers=bearer(CLIENT_KEY))
        assert client_key.status_code == 403
        assert client_key.json()["error"]["type"] == "permission_error"
        assert client.get(DATA, headers=bearer(ADMIN)).status_code == 200


def test_the_data_holds_every_panel_of_the_page() -> None:
    with client_for(Settings(workers=1)) as client:
        response = client.get(DATA)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    document = response.json()
    assert set(document) >= {
        "version", "at", "interval_s", "window_s", "node", "summary", "providers", "cache",
        "queue", "spend", "cluster", "charts",
    }  # fmt: skip
    assert set(document["summary"]) >= {
        "requests_per_s", "error_rate", "latency_p50_ms", "latency_p99_ms", "ttft_p50_ms",
        "cache_hit_rate", "queue_depth", "circuits_open", "nodes",
    }  # fmt: skip
    openai = next(row for row in document["providers"] if row["name"] == "openai")
    assert openai["configured"] is True
    assert openai["state"] == "healthy"
    assert set(openai) >= {
        "calls_per_s", "errors_per_s", "p50_ms", "p99_ms", "rate_limit_per_s", "rate_use",
        "paused_for_s", "queue_depth",
    }  # fmt: skip
    assert openai["rate_limit_per_s"] == 50.0  # OPENAI_RPS
    assert set(document["queue"]["depth"]) == set(PRIORITIES)
    assert set(document["queue"]) >= {"queue_size", "shed", "timed_out"}
    avoided = document["cache"]["avoided"]
    assert {"calls", "tokens"} <= set(avoided)
    assert avoided["dollars"] == 0  # nothing avoided yet, in USD
    spend = document["spend"]  # no key yet, nothing priced spent: empty, but there
    assert spend["available"] is True
    assert spend["keys"]["top"] == [] and spend["keys"]["count"] == 0
    assert document["cluster"] is None  # one node: no REDIS_URL
    charts = document["charts"]
    assert {"t", "requests_per_s", "latency_p99_ms", "cache_hit_rate", "queue", "providers"} <= (
        set(charts)
    )
    assert all(len(values) == len(charts["t"]) for values in charts["queue"].values())


@pytest.mark.parametrize("since", ["yesterday", "-1", "nan", "inf"])
def test_a_bad_since_is_a_clear_400(since: str) -> None:
    with client_for(Settings(workers=1)) as client:
        response = client.get(DATA, params={"since": since})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_since"
    assert response.json()["error"]["param"] == "since"


def test_points_after_since_only() -> None:
    with client_for(Settings(workers=1)) as client:
        later = client.get(DATA, params={"since": "4102444800"}).json()  # the year 2100
    assert later["charts"]["t"] == []


def test_the_page_loads_its_own_files_only_under_a_strict_policy() -> None:
    with client_for(Settings(workers=1)) as client:
        page = client.get("/dashboard")
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert page.headers["content-type"].startswith("text/html")
        assert 'data-auth="loopback"' in page.text
        ours = [page.text] + [
            client.get(f"/dashboard/static/{path}").text
            for path in ("dashboard.js", "dashboard.css")
        ]
        for text in ours:
            assert "http://" not in text
            assert "https://" not in text
        script = client.get("/dashboard/static/dashboard.js")
        assert script.headers["content-type"].startswith("text/javascript")
        again = client.get(
            "/dashboard/static/dashboard.js", headers={"if-none-match": script.headers["etag"]}
        )
        assert again.status_code == 304
        unknown = client.get("/dashboard/static/../app.py")
        assert unknown.status_code == 404
        assert client.get("/dashboard/static/secrets.txt").json()["error"]["code"] == "not_found"


def test_the_vendored_chart_library_is_uplot_1_6_32_unchanged_with_its_licence() -> None:
    static = resources.files("aigateway.dashboard").joinpath("static")
    for path, digest in UPLOT.items():
        data = static.joinpath(*path.split("/")).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, path
    assert "MIT License" in static.joinpath("vendor", "uPlot.LICENSE.txt").read_text()
