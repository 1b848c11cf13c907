"""Built-in providers: one entry in a table of specs is all a new one needs.

A test-only provider, Acme, speaks OpenAI's wire format. Added to the table that settings
are built from (``load_settings(specs=...)``, no module patched), it gets its four
environment variables with their defaults and validation, its lines in ``--help`` and
``aigateway config``, its live settings, its model family in routing, and its route to
the bundled mock provider; a chat request for its model is answered through it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from aigateway.app import build_router, create_app
from aigateway.cli import build_parser
from aigateway.config import (
    WORKER_SETTINGS_ENV,
    ConfigError,
    Settings,
    apply_config_file,
    describe,
    load_settings,
    settings_from_worker_env,
    settings_to_worker_env,
)
from aigateway.errors import NotFound
from aigateway.provider_specs import BUILT_IN, WIRE_FORMATS, ProviderSpec
from aigateway.runtime import apply_overrides, effective, normalize_changes
from aigateway.server import MOCK_PATHS, route_to_mock, wants_mock_provider
from aigateway.wire import Target
from servers import MockProvider, chat_body

ACME = ProviderSpec(
    name="acme",
    wire_format="openai",
    label="Acme",
    env_prefix="ACME",
    key_variable="ACME_API_KEY",
    base_url_variable="ACME_BASE_URL",
    default_base_url="https://api.acme.example/v1",
    families=("acme-",),
    rps=5.0,
    max_connections=4,
)
TABLE = (*BUILT_IN, ACME)
KEY = "sk-acme-0123456789abcdef"


def acme_settings(**environ: str) -> Settings:
    return load_settings(environ, specs=TABLE, workers=1)


def test_a_new_spec_gets_its_variables_with_their_defaults() -> None:
    acme = acme_settings().provider("acme")
    assert (acme.base_url, acme.rps, acme.max_connections) == ("https://api.acme.example/v1", 5, 4)
    assert (acme.api_key, acme.kind, acme.key_variable) == (None, "openai", "ACME_API_KEY")
    assert [p.name for p in acme_settings().providers] == ["openai", "google", "anthropic", "acme"]


def test_a_new_spec_reads_and_validates_its_variables() -> None:
    settings = acme_settings(
        ACME_API_KEY=KEY, ACME_BASE_URL="http://acme.internal/v1/", ACME_RPS="7.5"
    )
    acme = settings.provider("acme")
    assert (acme.api_key, acme.base_url, acme.rps) == (KEY, "http://acme.internal/v1", 7.5)
    with pytest.raises(ConfigError, match="invalid ACME_MAX_CONNS='0'"):
        acme_settings(ACME_MAX_CONNS="0")
    with pytest.raises(ConfigError, match="invalid ACME_BASE_URL"):
        acme_settings(ACME_BASE_URL="acme.internal")


def test_a_new_spec_is_described_with_its_key_masked_and_reaches_the_workers() -> None:
    settings = acme_settings(ACME_API_KEY=KEY, ACME_RPS="7")
    rows = dict(describe(settings))
    assert (rows["ACME_API_KEY"], rows["ACME_RPS"], rows["ACME_MAX_CONNS"]) == (
        "****cdef", "7.0", "4",
    )  # fmt: skip
    environ = {WORKER_SETTINGS_ENV: settings_to_worker_env(settings)}
    assert settings_from_worker_env(environ) == settings


def test_a_new_spec_has_its_lines_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser(TABLE).parse_args(["serve", "--help"])
    lines = capsys.readouterr().out.splitlines()
    expected = {
        "ACME_API_KEY": "Acme API key [default: (not set)]",
        "ACME_BASE_URL": "Acme API base URL [default: https://api.acme.example/v1]",
        "ACME_MAX_CONNS": "pooled connections to Acme per worker [default: 4]",
        "ACME_RPS": "Acme requests per second (node) [default: 5.0]",
    }
    for name, text in expected.items():
        assert any(line.split() == [name, *text.split()] for line in lines), name
    assert any("ACME_API_KEY" in line and "mock provider" in line for line in lines)


def test_a_new_spec_routes_its_model_family() -> None:
    router = build_router(acme_settings())
    assert router.targets("acme-large") == [Target("acme", "acme-large")]
    assert router.targets("gpt-4o-mini") == [Target("openai", "gpt-4o-mini")]
    with pytest.raises(NotFound, match=r"acme-\*"):
        router.targets("unknown-model")


def test_a_new_spec_changes_live_like_the_built_in_ones() -> None:
    settings = acme_settings()
    changes = normalize_changes(settings, {"providers.acme.rps": 2, "ACME_MAX_CONNS": "8"})
    assert changes == {"ACME_RPS": "2", "ACME_MAX_CONNS": "8"}
    changed = apply_overrides(settings, {"ACME_RPS": "2", "ACME_MAX_CONNS": "8"})
    assert (changed.provider("acme").rps, changed.provider("acme").max_connections) == (2, 8)
    assert {"ACME_RPS", "ACME_MAX_CONNS"} <= set(effective(settings, {})["live"])


def test_a_new_spec_is_routed_to_the_mock_in_demo_mode() -> None:
    settings = acme_settings()
    assert wants_mock_provider(settings)
    assert not wants_mock_provider(acme_settings(ACME_API_KEY=KEY))
    assert not wants_mock_provider(acme_settings(ACME_BASE_URL="http://acme.internal/v1"))
    routed = route_to_mock(settings, "http://127.0.0.1:1234")
    assert routed.mock_provider
    assert routed.provider("acme").base_url == "http://127.0.0.1:1234/v1"
    assert routed.provider("google").base_url == "http://127.0.0.1:1234/gemini/v1beta"


def test_a_configuration_file_may_not_reuse_a_built_in_name(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("[providers.acme]\nbase_url = 'http://acme.internal/v1'\n")
    with pytest.raises(ConfigError, match=r"providers\.acme.*a new provider name"):
        apply_config_file(acme_settings(), str(path), {})


@pytest.fixture
def demo_gateway(mock_provider: MockProvider) -> Iterator[TestClient]:
    """A worker's app in demo mode: every built-in provider, Acme too, at the mock."""
    settings = dataclasses.replace(acme_settings(), max_retries=0, cache_enabled=False)
    app = create_app(route_to_mock(settings, mock_provider.url))
    with TestClient(app, client=("127.0.0.1", 40000)) as client:  # loopback: admin allowed
        yield client


def test_a_request_for_the_new_family_is_answered_through_it(
    demo_gateway: TestClient, mock_provider: MockProvider
) -> None:
    before = mock_provider.calls()
    response = demo_gateway.post("/v1/chat/completions", json=chat_body(model="acme-large"))
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "acme-large"
    assert mock_provider.calls() == before + 1
    providers = demo_gateway.get("/admin/config").json()["providers"]
    assert providers["acme"]["base_url"] == mock_provider.url + "/v1"


def test_every_built_in_speaks_a_wire_format_the_mock_serves() -> None:
    assert {spec.wire_format for spec in BUILT_IN} <= set(WIRE_FORMATS) == set(MOCK_PATHS)
    names = [spec.name for spec in BUILT_IN]
    assert len(set(names)) == len(names)
