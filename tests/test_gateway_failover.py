"""Fallback chains: when a target fails after its retries, the next one answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from servers import Gateway, MockProvider, chat_body

pytestmark = pytest.mark.e2e


@pytest.fixture
def flaky(flaky_provider: MockProvider) -> MockProvider:
    flaky_provider.reset()
    flaky_provider.faults(default={"status": 503})
    return flaky_provider


@pytest.fixture(scope="module")
def chain_gateway(
    mock_provider: MockProvider,
    flaky_provider: MockProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    config = tmp_path_factory.mktemp("config") / "gateway.toml"
    config.write_text(
        f"""
[providers.flaky]
base_url = "{flaky_provider.base_url}"

[aliases]
resilient = ["flaky/gpt-4o-mini", "openai/gpt-4o-mini"]
unconfigured-first = ["google/gemini-2.0-flash", "openai/gpt-4o-mini"]
only-unconfigured = ["google/gemini-2.0-flash"]
"""
    )
    # Google has neither a key nor a base URL of its own here: not configured.
    gateway = Gateway(
        mock_provider, AI_GATEWAY_CONFIG=str(config), GOOGLE_AI_API_KEY="", GOOGLE_AI_BASE_URL=""
    )
    yield gateway
    gateway.stop()


def _chat(gateway: Gateway, model: str, **extra: object) -> httpx.Response:
    with gateway.client() as client:
        return client.post(
            "/v1/chat/completions", json={**chat_body("fail over"), "model": model, **extra}
        )


def test_the_second_target_answers_while_the_first_returns_503(
    chain_gateway: Gateway, flaky: MockProvider, mock: MockProvider
) -> None:
    response = _chat(chain_gateway, "resilient")
    assert response.status_code == 200
    assert response.headers["x-aigateway-provider"] == "openai"
    assert flaky.calls() == 4  # the first try and 3 retries
    assert mock.calls() == 1


def test_a_stream_fails_over_before_its_first_byte(
    chain_gateway: Gateway, flaky: MockProvider, mock: MockProvider
) -> None:
    with chain_gateway.client() as client:
        body = {**chat_body("stream over"), "model": "resilient", "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            assert response.headers["x-aigateway-provider"] == "openai"
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert flaky.calls() == 4
    assert mock.calls() == 1


def test_a_client_error_does_not_fail_over(
    chain_gateway: Gateway, flaky: MockProvider, mock: MockProvider
) -> None:
    flaky.faults(default={"status": 400, "message": "your request is wrong"})
    response = _chat(chain_gateway, "resilient")
    assert response.status_code == 400
    assert mock.calls() == 0


def test_a_provider_without_a_key_is_skipped(chain_gateway: Gateway, mock: MockProvider) -> None:
    response = _chat(chain_gateway, "unconfigured-first")
    assert response.status_code == 200
    assert response.headers["x-aigateway-provider"] == "openai"


def test_no_usable_target_says_which_key_to_set(chain_gateway: Gateway) -> None:
    response = _chat(chain_gateway, "only-unconfigured")
    assert response.status_code == 400
    assert "GOOGLE_AI_API_KEY" in response.json()["error"]["message"]


def test_the_last_failure_is_reported_when_every_target_fails(
    chain_gateway: Gateway, flaky: MockProvider, mock: MockProvider
) -> None:
    mock.faults(default={"status": 503})
    response = _chat(chain_gateway, "resilient")
    assert response.status_code == 503
    assert mock.calls() == 4


def test_an_unknown_model_is_a_404_model_not_found(chain_gateway: Gateway) -> None:
    response = _chat(chain_gateway, "no-such-model")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert "provider/model" in response.json()["error"]["message"]


def test_a_bad_config_file_stops_the_server(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "bad.toml"
    config.write_text("[aliases]\nfast = ['nowhere/x']\n")
    result = subprocess.run(
        [sys.executable, "-m", "aigateway.cli", "serve"],
        env={"AI_GATEWAY_CONFIG": str(config), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "aliases.fast[0]" in result.stderr
