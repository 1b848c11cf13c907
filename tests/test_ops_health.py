"""Provider health over real HTTP: a failing provider's circuit opens, its chain's fallback
serves, and it closes again once the provider recovers; with nothing left, 503."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from servers import Gateway, MockProvider, chat_body, wait_for

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
CIRCUIT = {
    "CIRCUIT_FAILURE_THRESHOLD": "3",
    "CIRCUIT_COOLDOWN_SEC": "0.5",
    "MAX_RETRIES": "1",
}


@pytest.fixture
def flaky(flaky_provider: MockProvider) -> MockProvider:
    flaky_provider.reset()
    return flaky_provider


@pytest.fixture(scope="module")
def chained(
    mock_provider: MockProvider,
    flaky_provider: MockProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    config = tmp_path_factory.mktemp("health") / "gateway.toml"
    config.write_text(
        f"""
[providers.flaky]
base_url = "{flaky_provider.base_url}"

[aliases]
resilient = ["flaky/gpt-4o-mini", "openai/gpt-4o-mini"]
only-flaky = ["flaky/gpt-4o-mini"]
"""
    )
    gateway = Gateway(mock_provider, AI_GATEWAY_CONFIG=str(config), **CIRCUIT)
    yield gateway
    gateway.stop()


def state(gateway: Gateway, provider: str) -> str:
    with httpx.Client() as fresh:
        return str(fresh.get(gateway.url + "/health").json()["providers"][provider]["state"])


def test_a_failing_provider_opens_its_fallback_serves_and_it_closes_on_recovery(
    chained: Gateway, flaky: MockProvider, mock: MockProvider
) -> None:
    flaky.faults(default={"status": 503})
    with chained.client() as client:
        for _ in range(2):  # two attempts each: the third failure opens the circuit
            response = client.post(CHAT, json=chat_body(model="resilient"))
            assert response.headers["x-aigateway-provider"] == "openai"
        assert flaky.calls() == 4
        assert state(chained, "flaky") in ("open", "half_open")
        metrics = client.get("/metrics").text
        assert 'aigateway_circuit_state{provider="flaky"} 3' in metrics
        # Open: routing skips it; its fallback answers at once, on every worker.
        for _ in range(6):
            with httpx.Client() as fresh:
                skipped = fresh.post(chained.url + CHAT, json=chat_body(model="resilient"))
            assert skipped.headers["x-aigateway-provider"] == "openai"
        assert flaky.calls() <= 4 + 2  # at most the trial probes (models) after cool-downs
        flaky.faults(default=None)  # the provider recovers
        assert wait_for(lambda: state(chained, "flaky") == "healthy")
        assert "/v1/models" in flaky.stats()["by_path"]  # closed by a probe
        back = client.post(CHAT, json=chat_body(model="resilient"))
        assert back.headers["x-aigateway-provider"] == "flaky"
        stats = client.get("/admin/stats").json()["providers"]["flaky"]
        assert stats["health"]["times_opened"] >= 1
        assert stats["calls"]["server_error"] == 4


def test_with_every_target_open_the_answer_is_503_with_retry_after(
    chained: Gateway, flaky: MockProvider, mock: MockProvider
) -> None:
    flaky.faults(default={"status": 500})
    with chained.client() as client:
        for _ in range(2):
            assert client.post(CHAT, json=chat_body(model="only-flaky")).status_code == 502
        refused = client.post(CHAT, json=chat_body(model="only-flaky"))
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "circuit_open"
        assert "flaky" in refused.json()["error"]["message"]
        assert int(refused.headers["retry-after"]) >= 1
        assert client.get("/health").status_code == 200  # openai, google, anthropic serve
    flaky.faults(default=None)
    assert wait_for(lambda: state(chained, "flaky") == "healthy")


def test_health_is_503_while_no_provider_can_serve(flaky: MockProvider) -> None:
    gateway = Gateway(
        None,
        OPENAI_BASE_URL=flaky.base_url,
        OPENAI_API_KEY="sk-test",
        **CIRCUIT,
    )
    try:
        with gateway.client() as client:
            health = client.get("/health").json()
            assert health["providers"]["google"]["state"] == "unconfigured"
            # open to anyone, so it names no upstream host
            assert flaky.base_url not in client.get("/health").text
            flaky.faults(default={"status": 503})
            for _ in range(2):
                client.post(CHAT, json=chat_body())
            down = client.get("/health")
            assert down.status_code == 503
            assert down.json()["status"] == "unavailable"
            assert down.json()["providers"]["openai"]["state"] in ("open", "half_open")
            flaky.faults(default=None)
            assert wait_for(lambda: client.get("/health").status_code == 200)
    finally:
        gateway.stop()
