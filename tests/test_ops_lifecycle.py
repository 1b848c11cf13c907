"""Graceful drain on SIGTERM, and recovery from a worker killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from servers import Gateway, MockProvider, chat_body

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
COUNTED = ("_total", "_count", "_sum", "_bucket")
FRESH = httpx.Limits(max_keepalive_connections=0)  # a new connection, any worker, each time


async def until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll ``condition`` (blocking, so in a thread) until it holds."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise TimeoutError("the condition never held")
        await asyncio.sleep(0.02)


def test_sigterm_lets_200_in_flight_requests_finish_then_exits_0(mock: MockProvider) -> None:
    gateway = Gateway(
        mock, OPENAI_RPS="100000", OPENAI_MAX_CONNS="300", QUEUE_SIZE="5000",
        REQUEST_TIMEOUT_SEC="30",
    )  # fmt: skip
    mock.faults(default={"latency_ms": 1500})  # a slow provider

    async def scenario() -> tuple[list[int], type[BaseException] | None]:
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30, limits=limits) as client:
            requests = [
                asyncio.ensure_future(client.post(CHAT, json=chat_body(f"in flight {i}")))
                for i in range(200)
            ]
            await until(lambda: mock.calls() >= 200)  # all 200 reached the provider
            gateway.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            refused: type[BaseException] | None = None
            try:  # a new connection while draining
                await asyncio.to_thread(httpx.get, gateway.url + "/health", timeout=2)
            except httpx.HTTPError as exc:
                refused = type(exc)
            answers = await asyncio.gather(*requests)
        return [answer.status_code for answer in answers], refused

    try:
        statuses, refused = asyncio.run(scenario())
        assert statuses == [200] * 200
        assert refused is httpx.ConnectError
        assert gateway.process.wait(timeout=30) == 0
    finally:
        gateway.stop()


def test_the_drain_timeout_bounds_the_wait(mock: MockProvider) -> None:
    gateway = Gateway(mock, DRAIN_TIMEOUT_SEC="1", REQUEST_TIMEOUT_SEC="30")
    mock.faults(default={"hang": True})
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:

            async def hang() -> None:
                with pytest.raises(httpx.HTTPError):  # cut when the drain time is up
                    await asyncio.to_thread(client.post, CHAT, json=chat_body("forever"))

            async def scenario() -> float:
                pending = asyncio.ensure_future(hang())
                await until(lambda: mock.calls() >= 1)
                started = time.monotonic()
                gateway.process.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(gateway.process.wait, 20)
                assert code == 0
                await pending
                return time.monotonic() - started

            assert asyncio.run(scenario()) < 6
    finally:
        gateway.stop()


def worker_pids(gateway: Gateway) -> set[int]:
    pids: set[int] = set()
    deadline = time.monotonic() + 10
    while len(pids) < 2 and time.monotonic() < deadline:
        with httpx.Client() as fresh:  # a new connection: any worker may take it
            pids.add(fresh.get(gateway.url + "/health").json()["pid"])
    return pids


def counters(gateway: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with httpx.Client() as fresh:
        text = fresh.get(gateway.url + "/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.endswith(COUNTED)
    }


def chat_requests(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    key = ("aigateway_requests_total", (("method", "POST"), ("route", CHAT), ("status", "2xx")))
    return samples.get(key, 0.0)


def test_a_killed_worker_is_replaced_and_no_counter_goes_down(mock: MockProvider) -> None:
    gateway = Gateway(mock, CACHE_ENABLED="true", LOG_FORMAT="json")
    try:
        with httpx.Client(base_url=gateway.url, limits=FRESH) as c:
            for i in range(60):  # new connections: both workers serve and count
                assert c.post(CHAT, json=chat_body(f"before {i}")).status_code == 200
            assert c.put("/admin/config", json={"CACHE_TTL_MINUTES": 5}).status_code == 200
        time.sleep(0.7)  # the cache's counters are flushed every 0.5 s
        before = counters(gateway)
        assert chat_requests(before) == 60
        victim = min(worker_pids(gateway))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        stats: dict[str, object] = {}
        while time.monotonic() < deadline:
            try:
                stats = httpx.get(gateway.url + "/admin/stats").json()
            except httpx.HTTPError:
                continue
            if (stats["workers"], stats["worker_restarts"]) == (2, 1):
                break
            time.sleep(0.1)
        assert (stats["workers"], stats["worker_restarts"]) == (2, 1)
        assert victim not in worker_pids(gateway)
        after = counters(gateway)
        lowered = {key: (value, after.get(key)) for key, value in before.items()
                   if after.get(key, -1) < value}  # fmt: skip
        assert not lowered
        assert after[("aigateway_worker_restarts_total", ())] == 1
        with httpx.Client(base_url=gateway.url, limits=FRESH) as c:
            for i in range(40):
                assert c.post(CHAT, json=chat_body(f"after {i}")).status_code == 200
            # The new worker applied the node's live settings before it served.
            for _ in range(6):
                shown = c.get("/admin/config").json()
                assert shown["settings"]["CACHE_TTL_MINUTES"] == "5.0"
        assert chat_requests(counters(gateway)) == 100
        logged = [
            orjson.loads(line)
            for line in gateway.log().splitlines()
            if '"aigateway.access"' in line
        ]
        chats = [line for line in logged if line["route"] == CHAT]
        assert len(chats) == 100
        assert {"request_id", "status", "provider", "cached", "latency_ms"} <= set(chats[0])
    finally:
        assert gateway.stop() == 0
