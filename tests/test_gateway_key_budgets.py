"""Tenant key budgets in dollars over real HTTP: reserved before each call, settled by the
answer's usage, kept in the store across restarts and kills.

The mock provider's ``usage`` fault makes every answer report 10 prompt and 1,000
completion tokens; the configuration file prices the mock's model at $10 and $20 per
million, so every answer costs exactly $0.0201, and a request with ``max_tokens=1000``
is estimated at about $0.02 before the call.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from servers import Gateway, MockProvider, chat_body, wait_for

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
USAGE = {"prompt_tokens": 10, "completion_tokens": 1000, "total_tokens": 1010}
INPUT, OUTPUT = 10.0, 20.0  # USD per million tokens
COST = (10 * INPUT + 1000 * OUTPUT) / 1e6  # $0.0201 an answer
ESTIMATE = (3 * INPUT + 1000 * OUTPUT) / 1e6  # a short prompt and max_tokens=1000
PRICES = f'[prices."gpt-4o-mini"]\ninput = {INPUT}\noutput = {OUTPUT}\n'


@pytest.fixture(scope="module")
def mock() -> Iterator[MockProvider]:
    provider = MockProvider()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "gateway.toml"
    path.write_text(PRICES)
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


def start(mock: MockProvider, config: Path, data_dir: Path, **env: str) -> Gateway:
    return Gateway(
        mock,
        AI_GATEWAY_CONFIG=str(config),
        AI_GATEWAY_DATA_DIR=str(data_dir),
        CACHE_ENABLED="true",
        KEY_BUDGET_CUT_STREAMS="true",
        **env,
    )


@pytest.fixture(scope="module")
def gateway(mock: MockProvider, config: Path, data_dir: Path) -> Iterator[Gateway]:
    node = start(mock, config, data_dir, MAX_WORKERS="2")
    yield node
    node.stop()


@pytest.fixture(autouse=True)
def _priced_answers(mock: MockProvider) -> None:
    mock.reset()
    mock.faults(default={"usage": USAGE})


def make_key(gateway: Gateway, **fields: Any) -> tuple[str, str]:
    answer = httpx.post(gateway.url + "/admin/keys", json=fields, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"], answer.json()["key"]


def key_of(gateway: Gateway, key_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{gateway.url}/admin/keys/{key_id}", timeout=10).json())


def chat(gateway: Gateway, secret: str, text: str, **extra: Any) -> httpx.Response:
    body = chat_body(text, max_tokens=1000, **extra)
    headers = {"authorization": f"Bearer {secret}"}
    return httpx.post(gateway.url + CHAT, json=body, headers=headers, timeout=30)


def test_a_budget_of_a_few_cents_is_used_up_and_the_next_request_is_told_which_and_when(
    gateway: Gateway,
) -> None:
    key_id, secret = make_key(gateway, name="five-cents", budget_usd=0.05)
    statuses = [chat(gateway, secret, f"budget {n}").status_code for n in range(3)]
    assert statuses == [200, 200, 200]  # $0.0402 spent before the third: some was left
    refused = chat(gateway, secret, "one too many")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert "'five-cents'" in error["message"] and "total budget of $0.0500" in error["message"]
    assert "does not reset" in error["message"]
    assert key_of(gateway, key_id)["spend"]["period_usd"] == pytest.approx(3 * COST)

    day_id, day_secret = make_key(gateway, name="daily", budget_usd=0.01, budget_period="day")
    assert chat(gateway, day_secret, "daily 1").status_code == 200
    daily = chat(gateway, day_secret, "daily 2")
    tomorrow = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() + 86400))
    assert daily.json()["error"]["code"] == "budget_exceeded"
    assert "daily budget of $0.0100" in daily.json()["error"]["message"]
    assert f"resets at {tomorrow}" in daily.json()["error"]["message"]
    assert int(daily.headers["retry-after"]) >= 1
    # Raising the budget lets the key go on at once, on every worker.
    httpx.patch(f"{gateway.url}/admin/keys/{day_id}", json={"budget_usd": 1}, timeout=10)
    assert chat(gateway, day_secret, "daily 3").status_code == 200


def test_concurrent_requests_near_the_budget_never_overshoot_by_more_than_one_estimate(
    gateway: Gateway, mock: MockProvider
) -> None:
    budget = 0.10
    key_id, secret = make_key(gateway, name="crowded", budget_usd=budget)
    mock.faults(default={"usage": USAGE, "latency_ms": 300})

    async def crowd() -> list[int]:
        headers = {"authorization": f"Bearer {secret}"}
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        gateway.url + CHAT,
                        json=chat_body(f"crowd {n}", max_tokens=1000),
                        headers=headers,
                    )
                    for n in range(30)
                )
            )
        return [a.status_code for a in answers]

    statuses = asyncio.run(crowd())
    answered = statuses.count(200)
    assert statuses.count(429) == 30 - answered
    spent = key_of(gateway, key_id)["spend"]["period_usd"]
    assert spent == pytest.approx(answered * COST)
    assert spent <= budget + ESTIMATE + 1e-9
    assert chat(gateway, secret, "after the crowd").status_code == 429


def test_the_reported_spend_is_the_sum_of_usage_times_price_and_cache_hits_cost_nothing(
    gateway: Gateway, mock: MockProvider
) -> None:
    mock.faults(default={})  # the mock's own counts: words of the prompt and the reply
    key_id, secret = make_key(gateway, name="reported")
    expected = 0.0
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    for n, text in enumerate(["one", "two words", "three more words", "and a fourth one here"]):
        answer = chat(gateway, secret, f"{text} {n} reported")
        reported = answer.json()["usage"]
        expected += (
            reported["prompt_tokens"] * INPUT + reported["completion_tokens"] * OUTPUT
        ) / 1e6
        usage["prompt_tokens"] += reported["prompt_tokens"]
        usage["completion_tokens"] += reported["completion_tokens"]
    hit = chat(gateway, secret, "one 0 reported")
    assert hit.headers["x-aigateway-cache"] == "hit"
    stream = httpx.post(
        gateway.url + CHAT,
        json=chat_body("a streamed answer", stream=True, stream_options={"include_usage": True}),
        headers={"authorization": f"Bearer {secret}"},
        timeout=30,
    )
    chunks = [
        orjson.loads(line[6:]) for line in stream.text.splitlines() if line.startswith("data: {")
    ]
    streamed = chunks[-1]["usage"]
    expected += (streamed["prompt_tokens"] * INPUT + streamed["completion_tokens"] * OUTPUT) / 1e6
    usage["prompt_tokens"] += streamed["prompt_tokens"]
    usage["completion_tokens"] += streamed["completion_tokens"]

    assert key_of(gateway, key_id)["spend"]["period_usd"] == pytest.approx(expected)

    def flushed() -> dict[str, Any] | None:
        shown = key_of(gateway, key_id)
        return shown if shown["usage"]["requests"] == 6 else None

    shown = wait_for(flushed, timeout_s=10)
    assert shown is not None, key_of(gateway, key_id)
    assert shown["spend"]["total_usd"] == pytest.approx(expected)
    assert shown["usage"]["prompt_tokens"] == usage["prompt_tokens"]
    assert shown["usage"]["completion_tokens"] == usage["completion_tokens"]

    # /metrics and /admin/stats read each worker's last read of the store, refreshed in a
    # thread every flush interval: the same totals, a refresh later.
    def reported() -> tuple[str, float, dict[str, Any]] | None:
        metrics = httpx.get(gateway.url + "/metrics", timeout=10).text
        lines = [
            m
            for m in metrics.splitlines()
            if m.startswith('aigateway_key_spend_usd_total{key="reported"}')
        ]
        stats = httpx.get(gateway.url + "/admin/stats", timeout=10).json()
        rows = [row for row in stats["keys"] if row["name"] == "reported"]
        if not lines or not rows or rows[0]["requests"] != 6:
            return None
        usd = float(lines[0].rsplit(" ", 1)[1])
        return (metrics, usd, rows[0]) if usd == pytest.approx(expected) else None

    found = wait_for(reported, timeout_s=10)
    assert found is not None
    metrics, usd, row = found
    assert usd == pytest.approx(expected)
    assert secret not in metrics
    assert row["spend_usd"] == pytest.approx(expected) and row["requests"] == 6


def test_a_stream_that_crosses_the_budget_is_cut_with_budget_exceeded(
    gateway: Gateway, mock: MockProvider
) -> None:
    key_id, secret = make_key(gateway, name="cut", budget_usd=0.001)
    # 200 events "chunk 0 ", "chunk 1 ", ... (2-3 tokens each), a few ms apart: about 50
    # output tokens ($0.001 at $20 a million) are out when the stream is cut.
    mock.faults(default={"stream_chunks": 200, "stream_chunk_delay_ms": 3})
    answer = httpx.post(
        gateway.url + CHAT,
        json=chat_body("a long story", stream=True),
        headers={"authorization": f"Bearer {secret}"},
        timeout=30,
    )
    events = [line[6:] for line in answer.text.splitlines() if line.startswith("data: ")]
    assert "budget_exceeded" in events[-1]
    assert 10 < len(events) < 100, len(events)
    # Charged what it had cost when cut (about the budget), not its whole estimate (256
    # output tokens: $0.005).
    assert 0.0009 < key_of(gateway, key_id)["spend"]["period_usd"] < 0.002


def test_spend_survives_a_restart_and_a_kill_9_under_load_loses_at_most_one_flush_interval(
    mock: MockProvider, config: Path, tmp_path: Path
) -> None:
    flush_s = 1.0  # KEY_SPEND_FLUSH_MS's default
    node = start(mock, config, tmp_path, MAX_WORKERS="2")
    try:
        key_id, secret = make_key(node, name="durable")
        for n in range(3):
            assert chat(node, secret, f"before the restart {n}").status_code == 200
    finally:
        node.stop()

    # A restart keeps the spend, in the store and in the budget.
    node = start(mock, config, tmp_path, MAX_WORKERS="2")
    try:
        kept = key_of(node, key_id)
        assert kept["spend"]["total_usd"] == pytest.approx(3 * COST)
        assert kept["spend"]["period_usd"] == pytest.approx(3 * COST)  # what budgets count
        assert kept["usage"]["requests"] == 3
        # Then load, and every process of the gateway killed at once with SIGKILL.
        answered = load_until_killed(node, secret, 2.5 * flush_s)
    finally:
        node.stop()
    killed_at = answered.pop()
    last_interval = [t for t in answered if t > killed_at - flush_s - 0.25]

    node = start(mock, config, tmp_path, MAX_WORKERS="2")
    try:
        stored = key_of(node, key_id)["spend"]["total_usd"]
    finally:
        node.stop()
    lost = (3 + len(answered)) * COST - stored
    assert len(answered) > len(last_interval) > 0
    assert lost <= len(last_interval) * COST + 1e-9, (lost / COST, len(last_interval))


def load_until_killed(node: Gateway, secret: str, seconds: float) -> list[float]:
    """Four clients send requests for ``seconds``, then every process of the gateway is
    killed at once with SIGKILL: when each answer came (``time.monotonic``), and last,
    when the kill was."""
    answered: list[float] = []
    stop = threading.Event()
    headers = {"authorization": f"Bearer {secret}"}

    def load(worker: int) -> None:
        with httpx.Client(timeout=30) as client:
            n = 0
            while not stop.is_set():
                n += 1
                body = chat_body(f"load {worker} {n}", max_tokens=1000)
                try:
                    answer = client.post(node.url + CHAT, json=body, headers=headers)
                except httpx.HTTPError:
                    return
                if answer.status_code == 200:
                    answered.append(time.monotonic())

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    processes = [node.process.pid, *descendants(node.process.pid)]
    killed_at = time.monotonic()
    for pid in processes:
        os.kill(pid, signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join()
    node.process.wait()
    return [*(t for t in answered if t <= killed_at), killed_at]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Granian's workers), from /proc."""
    found = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    for child in map(int, children):
        found += [child, *descendants(child)]
    return found
