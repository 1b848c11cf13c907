"""Live settings reach each subsystem through the handler it subscribed, in process.

A worker's subsystems are wired as the app's lifespan wires them (``Operations.attach``,
then ``app.follow_live_settings``), without shared memory or HTTP: a change made with
``LiveSettings.update`` (what ``PUT /admin/config`` calls) must reach the provider
registry (a new pool for a new connection limit), admission (queue size, reserves,
rates), the cache (TTLs), the retry policy and the log level.  State the workers share
(the rate buckets) is moved once for the node, by the worker that took the change.
Over real HTTP and several workers: test_ops_config.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from aigateway.app import build_admission, follow_live_settings, open_cache
from aigateway.cache.service import ResponseCache
from aigateway.config import ProviderSettings, Settings
from aigateway.core.providers import build_providers
from aigateway.core.registry import ProviderRegistry
from aigateway.operations import Operations
from aigateway.runtime import LiveSettings, region_size
from aigateway.upstream import UpstreamClient
from aigateway.wire import ApiRequest, Completed
from fake_upstream import FakeUpstream, completion
from virtual_clock import run


@pytest.fixture
def quiet_logger() -> Iterator[None]:
    """The tests change the gateway's log level, as LOG_LEVEL would; it is put back."""
    logger = logging.getLogger("aigateway")
    level = logger.level
    yield
    logger.setLevel(level)


class Worker:
    """One worker's subsystems, wired to its live settings as the app wires them."""

    def __init__(self, settings: Settings) -> None:
        self.pools: list[tuple[str, int]] = []  # (provider, max connections) of new pools
        self.operations = Operations(settings)
        self.providers = ProviderRegistry(build_providers(settings), self._new_pool)
        self.operations.attach(None, self.providers)
        self.admission = build_admission(settings, None, self.operations.stats)
        cache = open_cache(settings)
        assert cache is not None
        self.cache: ResponseCache = cache
        follow_live_settings(self.operations, self.providers, self.admission, self.cache)

    @property
    def live(self) -> LiveSettings:
        assert self.operations.live is not None
        return self.operations.live

    def _new_pool(self, p: ProviderSettings, settings: Settings) -> UpstreamClient:
        self.pools.append((p.name, p.max_connections))
        return FakeUpstream()

    def cache_ttl(self, provider: str) -> float:
        """How long the cache now keeps an answer of ``provider``."""
        # No rule of the TTL policy applies (two questions, a middling temperature):
        # CACHE_TTL_MINUTES times the provider's factor.
        messages = [{"role": "user", "content": provider}, {"role": "user", "content": "?"}]
        body = {"model": "m", "messages": messages, "temperature": 0.5}
        request = ApiRequest("chat", "m", body, orjson.dumps(body))
        key = self.cache.key(request, provider, "m")
        assert key is not None
        self.cache.remember(key, request, Completed(completion("hi"), provider, "m", 1))
        entry = self.cache.store.get(key)
        assert entry is not None
        return entry.expires_at - entry.created

    def close(self) -> None:
        self.cache.store.close()
        run(self.operations.stop())
        run(self.providers.close())


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    one = Worker(Settings(cache_path=str(tmp_path / "cache")))
    yield one
    one.close()


def test_a_live_change_reaches_every_subsystem_through_its_own_handler(
    worker: Worker, quiet_logger: None
) -> None:
    assert (worker.cache_ttl("openai"), worker.cache_ttl("google")) == (
        1800.0,
        1800.0,
    )  # 30 minutes
    worker.live.update(
        {
            "OPENAI_MAX_CONNS": 3,
            "OPENAI_RPS": 7,
            "QUEUE_SIZE": 9,
            "PRIORITY_RESERVES": "low=0.6",
            "CACHE_TTL_MINUTES": 10,
            "CACHE_PROVIDER_TTL_FACTORS": {"google": 0.5},
            "MAX_RETRIES": 0,
            "INITIAL_DELAY_MS": 20,
            "MAX_DELAY_MS": 40,
            "LOG_LEVEL": "error",
        }
    )
    assert worker.pools == [("openai", 3)]  # the registry: a new pool of 3 connections
    assert worker.providers.retired == 0  # the old pool had no call in flight: closed
    gate = worker.admission.gates["openai"]
    assert (worker.admission.queue_size, worker.admission.reserves["low"]) == (9, 0.6)
    assert (gate.configured_rate, gate.bucket.rate_per_s, gate.bucket.burst) == (7.0, 7.0, 7.0)
    assert (worker.cache_ttl("openai"), worker.cache_ttl("google")) == (600.0, 300.0)
    retry = worker.operations.retry
    assert (retry.max_retries, retry.initial_delay_s, retry.max_delay_s) == (0, 0.02, 0.04)
    assert logging.getLogger("aigateway").level == logging.ERROR


def test_a_change_back_to_the_startup_value_is_applied_the_same_way(
    worker: Worker, quiet_logger: None
) -> None:
    worker.live.update({"OPENAI_MAX_CONNS": 3, "QUEUE_SIZE": 9})
    worker.live.update({"OPENAI_MAX_CONNS": None, "QUEUE_SIZE": None})
    assert worker.pools == [("openai", 3), ("openai", 20)]
    assert worker.admission.queue_size == Settings().queue_size


def test_priority_reserves_hold_from_the_start_without_a_change(tmp_path: Path) -> None:
    settings = Settings(
        cache_path=str(tmp_path / "cache"), priority_reserves=(("low", 0.6), ("normal", 0.3))
    )
    worker = Worker(settings)
    try:
        assert worker.admission.reserves == {
            "critical": 0.0,
            "high": 0.1,
            "normal": 0.3,
            "low": 0.6,
        }
    finally:
        worker.close()


def test_node_wide_handlers_run_once_in_the_worker_that_took_the_change() -> None:
    region = bytearray(region_size(4))
    base = Settings(workers=2)
    first, second = LiveSettings(base, region, 4), LiveSettings(base, region, 4)
    seen: list[tuple[str, str, float]] = []
    for name, live in (("first", first), ("second", second)):
        live.subscribe(lambda old, new, n=name: seen.append((n, "worker", new.queue_size)))
        live.subscribe(
            lambda old, new, n=name: seen.append((n, "node", new.queue_size)), node_wide=True
        )
    first.update({"QUEUE_SIZE": 9})
    second.refresh()  # the other worker's watcher
    assert seen == [("first", "worker", 9), ("first", "node", 9), ("second", "worker", 9)]
    first.close()
    second.close()


def test_a_failing_handler_does_not_keep_the_change_from_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    live = LiveSettings(Settings(), bytearray(region_size(1)), 1)
    applied: list[int] = []

    def broken(old: Settings, new: Settings) -> None:
        raise RuntimeError("a subsystem's bug")

    live.subscribe(broken)
    live.subscribe(lambda old, new: applied.append(new.queue_size))
    with caplog.at_level(logging.ERROR, logger="aigateway.runtime"):
        live.update({"QUEUE_SIZE": 9})
    assert applied == [9]
    assert "applying live settings failed" in caplog.text
    live.close()
