from __future__ import annotations

import os
import shutil
import tempfile
import time
import types
from typing import Any

import pytest

from aigateway import hotpath


@pytest.fixture(scope="session", params=["python", "cython"], ids=["python", "cython"])
def hotpath_impl(request: pytest.FixtureRequest) -> types.ModuleType:
    """Each implementation of ``aigateway.hotpath`` in turn: the pure twins, then the compiled.

    The compiled one is skipped only when ``AIGATEWAY_NO_EXTENSIONS`` is set; otherwise a
    missing build fails the tests that use it.
    """
    name: str = request.param
    if name == "cython" and hotpath.NO_EXTENSIONS:
        pytest.skip("AIGATEWAY_NO_EXTENSIONS is set: the compiled twins are not used")
    try:
        return hotpath.load(name)
    except ImportError as exc:
        pytest.fail(f"{exc}\n(set AIGATEWAY_NO_EXTENSIONS=1 to test the pure twins only)")


# --- real processes: the bundled mock provider and the gateway ---------------------------

from collections.abc import Iterator  # noqa: E402

import httpx  # noqa: E402
import openai  # noqa: E402

from redis_servers import RedisCluster, RedisServer  # noqa: E402
from servers import ARTIFACTS_DIR, LOG_DIR, Gateway, MockProvider  # noqa: E402

# Every gateway the tests start, tests/servers.py's or a bare `aigateway serve`, keeps its
# tenant keys away from the developer's own data directory (~/.local/share/aigateway),
# where real keys would make the test gateways ask for them.
_DATA_DIR = tempfile.mkdtemp(prefix="aigateway-test-data-")
os.environ["AI_GATEWAY_DATA_DIR"] = _DATA_DIR


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_DATA_DIR, ignore_errors=True)
    if exitstatus == 0:
        shutil.rmtree(LOG_DIR, ignore_errors=True)
    else:
        print(f"\nthe test servers' logs are kept in {LOG_DIR}")


_STARTED = time.time()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say where this run's artifacts (the dashboard's screenshots) are."""
    made = [p for p in ARTIFACTS_DIR.rglob("*.png") if p.stat().st_mtime >= _STARTED]
    if made:
        terminalreporter.write_line(
            f"artifacts of this run ({len(made)} screenshots): {ARTIFACTS_DIR}"
        )


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server of the tests' own on a free port (a test flushes it first)."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied."""
    redis_server.client().flushall()
    return redis_server.url


@pytest.fixture(params=["single", "cluster"])
def each_redis(request: pytest.FixtureRequest) -> str:
    """A Redis of the tests' own, emptied: the single server, then the three-master cluster
    (for scripts and keys that must work on both)."""
    if request.param == "single":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.client().flushall()
        return server.url
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    cluster.flush()
    return cluster.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A real Redis Cluster of three masters, started on first use."""
    cluster = RedisCluster()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def mock_provider() -> Iterator[MockProvider]:
    provider = MockProvider()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def flaky_provider() -> Iterator[MockProvider]:
    """A second mock provider, for the first target of a fallback chain (faults set by
    each test module's own fixture)."""
    provider = MockProvider()
    yield provider
    provider.stop()


@pytest.fixture
def mock(mock_provider: MockProvider) -> MockProvider:
    """The session's mock provider with its counters and faults cleared."""
    mock_provider.reset()
    return mock_provider


@pytest.fixture(scope="session")
def gateway(mock_provider: MockProvider) -> Iterator[Gateway]:
    """A real gateway (Granian, 2 worker processes) in front of the mock provider."""
    server = Gateway(mock_provider)
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
def gateway_url(gateway: Gateway) -> str:
    return gateway.base_url


@pytest.fixture
def client(gateway: Gateway, mock: MockProvider) -> Iterator[httpx.Client]:
    with gateway.client() as http:
        yield http


@pytest.fixture
def openai_client(gateway: Gateway, mock: MockProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0) as sdk:
        yield sdk
