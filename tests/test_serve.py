"""`aigateway serve` as a user runs it: real Granian workers, clean start and stop."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import httpx
import pytest

from servers import TEST_KEY, Gateway, MockProvider, chat_body

pytestmark = pytest.mark.e2e


def test_without_a_key_it_routes_to_the_bundled_mock_and_says_so_first() -> None:
    gateway = Gateway(None)
    try:
        first_line = gateway.log().splitlines()[0]
        assert "mock provider" in first_line
        response = httpx.post(gateway.base_url + "/chat/completions", json=chat_body("demo"))
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "Mock reply to: demo"
        health = httpx.get(gateway.url + "/health").json()
        assert health["providers"]["openai"]["mock"] is True
    finally:
        assert gateway.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_it_stops_cleanly_on_a_signal(mock_provider: MockProvider, sig: int) -> None:
    gateway = Gateway(mock_provider, MAX_WORKERS="2")
    assert httpx.get(gateway.url + "/health").status_code == 200
    assert gateway.stop(sig) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(gateway.url + "/health")


def test_requests_are_served_by_several_worker_processes(gateway: Gateway) -> None:
    pids = set()
    for _ in range(40):
        with httpx.Client() as fresh:  # a new connection each time
            pids.add(fresh.get(gateway.url + "/health").json()["pid"])
    assert len(pids) == 2


def test_the_logs_never_contain_the_provider_key(gateway: Gateway, mock: MockProvider) -> None:
    mock.faults({"status": 401}, {"drop": True})
    with gateway.client() as client:
        client.post("/v1/chat/completions", json=chat_body())
        client.post("/v1/chat/completions", json=chat_body())
    assert TEST_KEY not in gateway.log()


def test_the_httpx_upstream_client_serves_too(mock_provider: MockProvider) -> None:
    gateway = Gateway(mock_provider, UPSTREAM_CLIENT="httpx")
    try:
        mock_provider.reset()
        mock_provider.faults({"status": 500})
        with gateway.client() as client:
            response = client.post("/v1/chat/completions", json=chat_body("via httpx"))
            assert response.json()["choices"][0]["message"]["content"] == "Mock reply to: via httpx"
            body = chat_body("streamed via httpx", stream=True)
            with client.stream("POST", "/v1/chat/completions", json=body) as stream:
                lines = [line for line in stream.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        assert mock_provider.calls() == 3
    finally:
        gateway.stop()


def test_a_port_in_use_is_one_line_and_exit_code_2() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "aigateway.cli", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "AI_GATEWAY_PORT" in lines[0]
