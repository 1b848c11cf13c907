"""The TOML configuration file: OpenAI-compatible servers, aliases, default provider."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigateway.config import (
    AliasTarget,
    ConfigError,
    load_settings,
    settings_from_worker_env,
    settings_to_worker_env,
)

GOOD = """
default_provider = "local"

[providers.local]
base_url = "http://127.0.0.1:8000/v1/"
api_key_env = "LOCAL_KEY"
max_connections = 5
rps = 10
models = ["llama-3.1-8b"]

[providers.claude-proxy]
type = "anthropic"
base_url = "https://proxy.example.com/v1"

[aliases]
fast = ["openai/gpt-4o-mini", "local/llama-3.1-8b"]
spread = [{ target = "openai/gpt-4o", weight = 3 }, { target = "local/llama", weight = 1 }]
"""


def _load(tmp_path: Path, text: str, **env: str) -> object:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return load_settings({"AI_GATEWAY_CONFIG": str(path), **env})


def test_a_good_file_adds_providers_aliases_and_a_default(tmp_path: Path) -> None:
    settings = _load(tmp_path, GOOD, LOCAL_KEY="sk-local")
    local, proxy = settings.extra_providers  # type: ignore[attr-defined]
    assert (local.name, local.kind, local.base_url) == (
        "local",
        "openai",
        "http://127.0.0.1:8000/v1",
    )
    assert (local.api_key, local.max_connections, local.rps) == ("sk-local", 5, 10.0)
    assert local.models == ("llama-3.1-8b",)
    assert (proxy.kind, proxy.api_key) == ("anthropic", None)
    aliases = dict(settings.aliases)  # type: ignore[attr-defined]
    assert aliases["fast"] == (AliasTarget("openai/gpt-4o-mini"), AliasTarget("local/llama-3.1-8b"))
    assert aliases["spread"][0] == AliasTarget("openai/gpt-4o", 3.0)
    assert settings.default_provider == "local"  # type: ignore[attr-defined]


def test_workers_get_the_file_settings_too(tmp_path: Path) -> None:
    settings = _load(tmp_path, GOOD)
    env = {"AIGATEWAY_WORKER_SETTINGS": settings_to_worker_env(settings)}  # type: ignore[arg-type]
    assert settings_from_worker_env(env) == settings


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[providers.local]\nbase_url = 'nope'\n", "providers.local.base_url"),
        ("[providers.local]\nrps = 1\n", "providers.local.base_url"),
        ("[providers.local]\nbase_url = 'http://x'\ntype = 'grpc'\n", "providers.local.type"),
        ("[providers.local]\nbase_url = 'http://x'\nrps = -1\n", "providers.local.rps"),
        ("[providers.local]\nbase_url = 'http://x'\ncolour = 1\n", "colour"),
        ("[providers.openai]\nbase_url = 'http://x'\n", "providers.openai"),
        ("[aliases]\nfast = ['nowhere/model']\n", "aliases.fast[0]"),
        ("[aliases]\nfast = []\n", "aliases.fast"),
        ("[aliases]\nfast = [{ target = 'openai/x', weight = -2 }]\n", "aliases.fast[0].weight"),
        ("default_provider = 'nowhere'\n", "default_provider"),
        ("this is not toml", "AI_GATEWAY_CONFIG"),
    ],
)
def test_a_bad_file_names_the_key(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert names in str(info.value)


def test_a_missing_file_is_refused() -> None:
    with pytest.raises(ConfigError, match="AI_GATEWAY_CONFIG"):
        load_settings({"AI_GATEWAY_CONFIG": "/no/such/file.toml"})
