"""Configuration: every variable is validated once at startup, with a clear error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from aigateway.config import (
    ConfigError,
    Settings,
    describe,
    load_settings,
    settings_from_worker_env,
    settings_to_worker_env,
)


def test_defaults_follow_the_specification() -> None:
    settings = load_settings({})
    assert (settings.host, settings.port, settings.log_level) == ("127.0.0.1", 8081, "info")
    assert settings.workers == (os.cpu_count() or 1)
    assert settings.queue_size == 1000
    assert settings.cache_ttl_minutes == 30
    assert (settings.batch_size, settings.batch_timeout_ms) == (10, 1000)
    assert (settings.max_retries, settings.initial_delay_ms, settings.max_delay_ms) == (
        3, 1000, 30000,
    )  # fmt: skip
    assert (settings.connection_timeout_s, settings.request_timeout_s) == (30, 60)
    assert settings.max_body_bytes == 10 * 1024 * 1024
    assert settings.upstream_client == "aiohttp"
    openai, google = settings.provider("openai"), settings.provider("google")
    assert openai.base_url == "https://api.openai.com/v1"
    assert (openai.max_connections, openai.rps) == (20, 50)
    assert (google.max_connections, google.rps) == (20, 30)
    assert openai.api_key is None


def test_values_are_read_from_the_environment() -> None:
    settings = load_settings(
        {
            "AI_GATEWAY_PORT": "9000",
            "MAX_WORKERS": "4",
            "LOG_LEVEL": "DEBUG",
            "OPENAI_API_KEY": "sk-abc",
            "OPENAI_BASE_URL": "http://localhost:8000/v1/",
            "OPENAI_RPS": "12.5",
            "REQUEST_TIMEOUT_SEC": "2.5",
            "UPSTREAM_CLIENT": "httpx",
        }
    )
    assert (settings.port, settings.workers, settings.log_level) == (9000, 4, "debug")
    openai = settings.provider("openai")
    assert openai.api_key == "sk-abc"
    assert openai.base_url == "http://localhost:8000/v1"  # trailing slash dropped
    assert openai.rps == 12.5
    assert settings.request_timeout_s == 2.5
    assert settings.upstream_client == "httpx"


BAD_VALUES = [
    ("AI_GATEWAY_PORT", "eighty", "a whole number >= 1 and <= 65535"),
    ("AI_GATEWAY_PORT", "70000", "a whole number >= 1 and <= 65535"),
    ("MAX_WORKERS", "0", "a whole number >= 1"),
    ("QUEUE_SIZE", "-5", "a whole number >= 1"),
    ("CACHE_TTL_MINUTES", "-1", "a number >= 0"),
    ("OPENAI_RPS", "abc", "a number > 0"),
    ("OPENAI_RPS", "0", "a number > 0"),
    ("OPENAI_RPS", "nan", "a number > 0"),
    ("GOOGLE_MAX_CONNS", "1.5", "a whole number >= 1"),
    ("MAX_RETRIES", "-1", "a whole number >= 0"),
    ("REQUEST_TIMEOUT_SEC", "0", "a number > 0"),
    ("CONNECTION_TIMEOUT_SEC", "soon", "a number > 0"),
    ("LOG_LEVEL", "verbose", "one of debug, info, warning, error, critical"),
    ("UPSTREAM_CLIENT", "requests", "one of aiohttp, httpx"),
    ("OPENAI_BASE_URL", "api.openai.com/v1", "an http:// or https:// URL with a host"),
    ("OPENAI_BASE_URL", "ftp://example.com", "an http:// or https:// URL with a host"),
    ("OPENAI_BASE_URL", "http://example.com:99999", "valid port"),
    ("PROVIDER_PAUSE_MAX_SEC", "3601", "a number >= 0 and <= 3600"),
    ("PROVIDER_PAUSE_MAX_SEC", "forever", "a number >= 0 and <= 3600"),
]


@pytest.mark.parametrize(("name", "value", "expected"), BAD_VALUES)
def test_a_bad_value_names_the_variable_the_value_and_what_is_expected(
    name: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({name: value})
    message = str(info.value)
    assert message.startswith(f"invalid {name}={value!r}: expected ")
    assert expected in message


def test_max_delay_below_initial_delay_is_refused() -> None:
    with pytest.raises(ConfigError, match="MAX_DELAY_MS"):
        load_settings({"INITIAL_DELAY_MS": "500", "MAX_DELAY_MS": "100"})


def test_empty_variables_mean_the_default() -> None:
    assert load_settings({"AI_GATEWAY_PORT": "", "OPENAI_API_KEY": ""}) == load_settings({})


def test_workers_receive_exactly_the_validated_settings() -> None:
    settings = load_settings({"OPENAI_API_KEY": "sk-x", "MAX_WORKERS": "3"})
    env = {"AIGATEWAY_WORKER_SETTINGS": settings_to_worker_env(settings)}
    assert settings_from_worker_env(env) == settings


def test_secrets_are_masked_when_described() -> None:
    key = "sk-proj-verysecretvalue-1234"
    rows = dict(describe(load_settings({"OPENAI_API_KEY": key})))
    assert rows["OPENAI_API_KEY"] == "****1234"
    assert rows["GOOGLE_AI_API_KEY"] == "(not set)"
    assert key not in repr(load_settings({"OPENAI_API_KEY": key}))


# --- through the real command ----------------------------------------------------------


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AI_GATEWAY_"))}
    return subprocess.run(
        [sys.executable, "-m", "aigateway.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("name", "value", "expected"), BAD_VALUES[::3])
def test_serve_with_a_bad_value_exits_2_with_one_line(name: str, value: str, expected: str) -> None:
    result = _run("serve", **{name: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert name in lines[0] and repr(value) in lines[0] and expected in lines[0]


def test_a_bad_flag_value_is_refused_like_the_variable() -> None:
    result = _run("serve", "--port", "0")
    assert result.returncode == 2
    assert "AI_GATEWAY_PORT" in result.stderr


def test_config_command_prints_every_variable_with_secrets_masked() -> None:
    key = "sk-live-abcdefghijklmnop9876"
    result = _run("config", OPENAI_API_KEY=key, OPENAI_RPS="7")
    assert result.returncode == 0, result.stderr
    assert key not in result.stdout
    assert "****9876" in result.stdout
    for line in ("OPENAI_RPS", "AI_GATEWAY_PORT", "REQUEST_TIMEOUT_SEC", "MAX_WORKERS"):
        assert line in result.stdout
    assert "7.0" in result.stdout


@pytest.mark.parametrize("command", ["serve", "mock-upstream", "config"])
def test_help_explains_every_option(command: str) -> None:
    result = _run(command, "--help")
    assert result.returncode == 0
    assert "--help" in result.stdout
    if command != "mock-upstream":
        for name in ("AI_GATEWAY_PORT", "OPENAI_API_KEY", "MAX_RETRIES", "UPSTREAM_CLIENT"):
            assert name in result.stdout


def test_settings_defaults_match_a_bare_dataclass() -> None:
    assert load_settings({}, workers=1) == Settings(workers=1)
