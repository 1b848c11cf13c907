"""No configured secret leaves the gateway: not in what it relays, logs or shows.

Provider base URLs may not carry credentials (refused at start-up, the secret masked in
the message); every other secret (provider keys, client keys, the admin key) is scrubbed
from providers' error messages, in-stream errors, log lines and the admin documents.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from aigateway.config import ConfigError, load_settings, mask_url
from aigateway.errors import InvalidRequest
from aigateway.logs import JsonFormatter, TextFormatter
from aigateway.runtime import normalize_changes
from aigateway.scrub import MIN_LENGTH, Scrubber, SecretFilter, secrets_of
from servers import TEST_KEY, Gateway, MockProvider, chat_body

PASSWORD = "hunter2-very-secret-pw"
CLIENT_KEY = "gw-client-key-0123456789-abcdef"
ADMIN_KEY = "gw-admin-key-0123456789-zyxwvu"


# --- credentials in a base URL: refused at start-up ----------------------------------


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "GOOGLE_", "ANTHROPIC_", "AI_GATEWAY_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "aigateway.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("command", "name", "url"),
    [
        ("serve", "OPENAI_BASE_URL", f"http://user:{PASSWORD}@127.0.0.1:9/v1"),
        ("config", "GOOGLE_AI_BASE_URL", f"https://{PASSWORD}@gemini.example.com/v1beta"),
        ("serve", "ANTHROPIC_BASE_URL", f"https://proxy.example.com/v1?key={PASSWORD}"),
    ],
)
def test_a_base_url_with_credentials_is_refused_at_startup_with_the_secret_masked(
    command: str, name: str, url: str
) -> None:
    result = _cli(command, **{name: url})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert name in lines[0] and "****" in lines[0]
    assert PASSWORD not in result.stderr + result.stdout


@pytest.mark.parametrize("password", ["s3cr?etpass", "s3cr#etpass", "s3cr/et?pa#ss"])
def test_a_password_with_unescaped_url_characters_is_masked_whole(password: str) -> None:
    masked = mask_url(f"http://u:{password}@proxy.example.com/v1")
    assert masked == "http://****@proxy.example.com/v1"


def test_a_base_url_in_the_configuration_file_is_held_to_the_same_rule(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[providers.local]\nbase_url = "http://me:{PASSWORD}@10.0.0.1:8000/v1"\n')
    with pytest.raises(ConfigError) as info:
        load_settings({"AI_GATEWAY_CONFIG": str(path)})
    assert "providers.local.base_url" in str(info.value)
    assert PASSWORD not in str(info.value)
    result = _cli("config", AI_GATEWAY_CONFIG=str(path))
    assert result.returncode == 2
    assert "providers.local.base_url" in result.stderr
    assert PASSWORD not in result.stderr


def test_a_base_url_cannot_be_changed_while_the_gateway_runs() -> None:
    with pytest.raises(InvalidRequest) as info:
        normalize_changes(load_settings({}), {"OPENAI_BASE_URL": "http://u:p@host/v1"})
    assert info.value.code == "not_live"


def test_a_plain_base_url_is_still_accepted() -> None:
    settings = load_settings({"OPENAI_BASE_URL": "http://10.0.0.1:8000/v1/"})
    assert settings.provider("openai").base_url == "http://10.0.0.1:8000/v1"


# --- the scrubber ---------------------------------------------------------------------


def test_the_scrubber_knows_every_secret_of_the_settings(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[providers.local]\nbase_url = "http://10.0.0.1/v1"\napi_key_env = "LK"\n')
    settings = load_settings(
        {
            "OPENAI_API_KEY": TEST_KEY,
            "AI_GATEWAY_API_KEYS": f"{CLIENT_KEY},another-client-key-42",
            "AI_GATEWAY_ADMIN_KEY": ADMIN_KEY,
            "AI_GATEWAY_CONFIG": str(path),
            "LK": "sk-local-provider-key-77",
        }
    )
    assert sorted(secrets_of(settings)) == sorted(
        [TEST_KEY, CLIENT_KEY, "another-client-key-42", ADMIN_KEY, "sk-local-provider-key-77"]
    )


def test_the_scrubber_masks_each_secret_like_the_config_command_shows_it() -> None:
    scrub = Scrubber(["sk-abcdefgh-1234567", "sk-abcdefgh-1234567-longer", "tiny"])
    text = "keys sk-abcdefgh-1234567-longer, sk-abcdefgh-1234567 and tiny"
    assert scrub.text(text) == "keys ****nger, ****4567 and tiny"
    assert scrub.data(text.encode()) == b"keys ****nger, ****4567 and tiny"
    assert scrub.data(b"\xff not utf-8 sk-abcdefgh-1234567") == b"\xff not utf-8 ****4567"
    assert len("tiny") < MIN_LENGTH  # too short to find without masking ordinary words


def test_without_a_secret_in_sight_the_text_is_returned_as_it_is() -> None:
    line = "request status=200 provider=openai"
    assert Scrubber([]).text(line) is line
    assert not Scrubber([])
    assert Scrubber([TEST_KEY]).data(line.encode()) == line.encode()


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_log_lines_carry_no_secret_in_message_fields_or_traceback(
    formatter: logging.Formatter,
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(SecretFilter([TEST_KEY, ADMIN_KEY]))
    logger = logging.getLogger("aigateway.test-secrets")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("provider said: %s", f"bad key {TEST_KEY}")
        logger.warning("request", extra={"fields": {"path": f"/x?k={ADMIN_KEY}", "n": 1}})
        try:
            raise ValueError(f"echoed {TEST_KEY}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert TEST_KEY not in output and ADMIN_KEY not in output
    assert output.count("****") >= 3
    assert "ValueError" in output


def test_a_log_call_with_bad_arguments_still_passes_the_filter() -> None:
    record = logging.LogRecord("aigateway", logging.INFO, __file__, 1, "%s %s", ("one",), None)
    assert SecretFilter([TEST_KEY]).filter(record)


# --- through a real gateway -------------------------------------------------------------


@pytest.fixture(scope="module")
def leaky(mock_provider: MockProvider) -> Iterator[Gateway]:
    """A gateway logging at debug, with client and admin keys, in front of the mock."""
    gateway = Gateway(
        mock_provider,
        LOG_LEVEL="debug",
        AI_GATEWAY_API_KEYS=CLIENT_KEY,
        AI_GATEWAY_ADMIN_KEY=ADMIN_KEY,
        MAX_WORKERS="1",
    )
    yield gateway
    gateway.stop()


def _echo(secret: str) -> dict[str, str]:
    return {"message": f"Incorrect API key provided: {secret}. Find your key at ..."}


def test_a_provider_error_echoing_the_key_reaches_neither_client_nor_log(
    leaky: Gateway, mock: MockProvider
) -> None:
    mock.faults({"status": 400, **_echo(TEST_KEY)}, {"status": 404, **_echo(CLIENT_KEY)})
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    with leaky.client(headers=auth) as client:
        first = client.post("/v1/chat/completions", json=chat_body("echo the key"))
        second = client.post(
            "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}
        )
    assert (first.status_code, second.status_code) == (400, 404)
    assert first.json()["error"]["message"].startswith("Incorrect API key provided: ****")
    assert TEST_KEY[-4:] in first.json()["error"]["message"]
    assert TEST_KEY not in first.text and CLIENT_KEY not in second.text
    log = leaky.log()
    assert "Incorrect API key provided: ****" in log  # the debug log saw the answer
    assert TEST_KEY not in log and CLIENT_KEY not in log


def test_an_error_inside_a_stream_echoing_the_key_is_scrubbed(
    leaky: Gateway, mock: MockProvider
) -> None:
    mock.faults({"stream_error_after_chunks": 2, **_echo(TEST_KEY)})
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    with leaky.client(headers=auth) as client:
        response = client.post("/v1/chat/completions", json=chat_body("stream", stream=True))
    assert response.status_code == 200
    errors = [
        orjson.loads(line[6:])
        for line in response.text.splitlines()
        if line.startswith("data: {") and '"error"' in line
    ]
    assert errors and "****" in errors[0]["error"]["message"]
    assert TEST_KEY not in response.text
    assert TEST_KEY not in leaky.log()


def test_health_and_admin_config_show_no_secret(leaky: Gateway) -> None:
    health = httpx.get(leaky.url + "/health")
    config = httpx.get(
        leaky.url + "/admin/config", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert (health.status_code, config.status_code) == (200, 200)
    for secret in (TEST_KEY, CLIENT_KEY, ADMIN_KEY):
        assert secret not in health.text and secret not in config.text
