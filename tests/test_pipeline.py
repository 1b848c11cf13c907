"""The pipeline in-process: routing, retries, failover, circuit breaking, de-duplication,
embedding batches.

No HTTP and no middleware: a ``Pipeline`` is built here from its parts, its providers (a
``ProviderRegistry``, as in the app) are fakes behind ``upstream.UpstreamClient`` (the
gateway's one transport seam, see tests/fake_upstream.py), and each
request brings its own observer, as a route hands it in.  Everything runs on a virtual
clock (tests/virtual_clock.py), so backoff, provider latency and deadlines cost no time
and the tests read exact times.  What only real processes show (the shared-memory health
board seen by every worker, ``/health`` and ``/metrics``) stays in test_ops_health.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from aigateway.cache.service import ResponseCache
from aigateway.cache.store import LmdbStore
from aigateway.config import AliasTarget
from aigateway.core.accounting import Accounting
from aigateway.core.health import HealthBoard, HealthPolicy
from aigateway.core.media import RemoteMedia
from aigateway.core.observer import RequestObserver, RequestRecord
from aigateway.core.pipeline import Pipeline
from aigateway.core.providers import Provider
from aigateway.core.registry import ProviderRegistry
from aigateway.core.retry import RetryPolicy
from aigateway.core.router import Router
from aigateway.errors import GatewayTimeout, ProviderError, ProviderUnavailable
from aigateway.hotpath import TTLPolicy
from aigateway.providers.openai import OpenAIAdapter
from aigateway.wire import ApiRequest, Completed, Streaming
from fake_upstream import FakeUpstream, Reply
from virtual_clock import run

PROVIDERS = ("openai", "backup")
THRESHOLD = 3  # consecutive failures that open a circuit
GATEWAY_TIMEOUT_S = 60.0  # REQUEST_TIMEOUT_SEC


@dataclass
class Gateway:
    """A pipeline over fake providers, its health board and the worker's accounting."""

    pipeline: Pipeline
    upstreams: dict[str, FakeUpstream]
    board: HealthBoard
    accounting: Accounting

    def observer(self) -> RequestObserver:
        """What the request middleware makes for each request."""
        return RequestObserver(self.accounting, RequestRecord("req"))

    def counted(self, family: str) -> dict[tuple[str, ...], float]:
        """The worker's counts of ``family``, by label values."""
        return {
            tuple(value for _, value in s.labels): s.value
            for s in self.accounting.table.read()
            if s.family == family
        }


def gateway(
    max_retries: int = 2, cache_dir: Path | None = None, embedding_batches: bool = False
) -> Gateway:
    upstreams = {name: FakeUpstream() for name in PROVIDERS}
    policy = HealthPolicy(failure_threshold=THRESHOLD, cooldown_s=30.0, probe_interval_s=0)
    board = HealthBoard.private(list(PROVIDERS), policy)
    providers = ProviderRegistry(
        {
            name: Provider(
                name,
                OpenAIAdapter(name, f"http://{name}.test/v1", "sk-test", f"{name.upper()}_API_KEY"),
                upstreams[name],
                usable=True,
                key_variable=f"{name.upper()}_API_KEY",
                circuit=board.circuit(name, probe_able=True),
            )
            for name in PROVIDERS
        }
    )
    router = Router(
        PROVIDERS,
        aliases={
            "resilient": [AliasTarget("openai/gpt-4o-mini"), AliasTarget("backup/gpt-4o-mini")]
        },
    )
    cache = None
    if cache_dir is not None:
        store = LmdbStore(str(cache_dir), 16 << 20)
        cache = ResponseCache(store, 600.0, TTLPolicy())
    pipeline = Pipeline(
        providers,
        router,
        RetryPolicy(max_retries, initial_delay_s=1.0, max_delay_s=30.0),
        GATEWAY_TIMEOUT_S,
        RemoteMedia(FakeUpstream(), 1 << 20, 5.0, allow_private=False),
        cache,
        embedding_batches=(10, 1.0) if embedding_batches else None,  # BATCH_SIZE, _TIMEOUT
    )
    return Gateway(pipeline, upstreams, board, Accounting.private(PROVIDERS))


def chat(
    model: str = "openai/gpt-4o-mini", timeout_s: float | None = None, stream: bool = False
) -> ApiRequest:
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    raw = orjson.dumps(body)
    return ApiRequest("chat", model, body, raw, stream=stream, timeout_s=timeout_s)


async def answer(gw: Gateway, request: ApiRequest, observer: RequestObserver) -> str:
    result = await gw.pipeline.chat(request, observer)
    assert isinstance(result, Completed)
    return f"{result.provider}: {orjson.loads(result.body)['choices'][0]['message']['content']}"


def test_the_circuit_opens_after_enough_failures_with_no_http_layer_at_all() -> None:
    gw = gateway(max_retries=0)
    gw.upstreams["openai"].reply = Reply(status=500)

    async def scenario() -> None:
        for _ in range(THRESHOLD):
            with pytest.raises(ProviderError):
                await gw.pipeline.chat(chat(), gw.observer())
        # Open: the provider is not called again; the client gets 503 with Retry-After.
        with pytest.raises(ProviderUnavailable) as refused:
            await gw.pipeline.chat(chat(), gw.observer())
        assert refused.value.code == "circuit_open"
        assert refused.value.retry_after_s == pytest.approx(30.0, abs=1.0)

    run(scenario())
    assert gw.board.state("openai") == "open"
    assert len(gw.upstreams["openai"].calls) == THRESHOLD
    assert gw.board.state("backup") == "healthy"


def test_an_open_circuit_sends_a_chain_straight_to_its_fallback() -> None:
    gw = gateway(max_retries=2)
    gw.upstreams["openai"].reply = Reply(unreachable=True)

    async def scenario() -> tuple[list[str], RequestRecord, RequestRecord]:
        first, second = gw.observer(), gw.observer()
        answers = [await answer(gw, chat("resilient"), first)]
        answers.append(await answer(gw, chat("resilient"), second))
        return answers, first.record, second.record

    answers, first, second = run(scenario())
    assert answers == ["backup: hello", "backup: hello"]
    # Three attempts (two retries, 1 s and 2 s of backoff at most), then the fallback.
    assert (first.attempts, first.retries, first.failovers) == (4, 2, 1)
    assert (first.provider, first.model) == ("backup", "gpt-4o-mini")
    assert gw.board.state("openai") == "open"
    assert (second.attempts, second.retries, second.failovers) == (1, 0, 0)  # skipped at once
    assert len(gw.upstreams["openai"].calls) == 3
    assert gw.counted("provider_calls") == {
        ("openai", "gpt-4o-mini", "unreachable"): 3,
        ("backup", "gpt-4o-mini", "ok"): 2,
    }
    assert gw.counted("failovers") == {("openai",): 1}


def test_the_clients_own_deadline_is_not_the_providers_failure_the_gateways_is() -> None:
    gw = gateway(max_retries=0)
    gw.upstreams["openai"].reply = Reply(latency_s=120.0)

    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        ended = []
        for _ in range(2 * THRESHOLD):  # the client gives up after 0.3 s
            started = loop.time()
            with pytest.raises(GatewayTimeout):
                await gw.pipeline.chat(chat(timeout_s=0.3), gw.observer())
            ended.append(loop.time() - started)
        assert gw.board.state("openai") in ("healthy", "degraded")
        for _ in range(THRESHOLD):  # REQUEST_TIMEOUT_SEC passes: the provider is too slow
            with pytest.raises(GatewayTimeout):
                await gw.pipeline.chat(chat(), gw.observer())
        return ended

    assert run(scenario()) == [pytest.approx(0.3)] * (2 * THRESHOLD)
    assert gw.board.state("openai") == "open"
    assert gw.counted("provider_calls") == {
        ("openai", "gpt-4o-mini", "deadline"): 2 * THRESHOLD,
        ("openai", "gpt-4o-mini", "timeout"): THRESHOLD,
    }


def test_identical_concurrent_requests_share_one_call_noted_in_the_leaders_record(
    tmp_path: Path,
) -> None:
    gw = gateway(cache_dir=tmp_path)
    gw.upstreams["openai"].reply = Reply(latency_s=1.0)

    async def scenario() -> list[tuple[str, str, RequestRecord]]:
        observers = [gw.observer() for _ in range(3)]
        results = await asyncio.gather(*(gw.pipeline.chat(chat(), o) for o in observers))
        return [(r.provider, r.cache, o.record) for r, o in zip(results, observers, strict=True)]

    results = run(scenario())
    assert len(gw.upstreams["openai"].calls) == 1
    assert [(provider, cache) for provider, cache, _ in results] == [
        ("openai", "miss"),
        ("openai", "hit"),
        ("openai", "hit"),
    ]
    # The shared call runs in a task of its own; it reports to the leader's observer.
    assert [record.attempts for _, _, record in results] == [1, 0, 0]
    assert results[0][2].provider_s == pytest.approx(1.0)


def test_a_leader_whose_client_leaves_does_not_cancel_the_call_its_followers_share(
    tmp_path: Path,
) -> None:
    gw = gateway(cache_dir=tmp_path)
    gw.upstreams["openai"].reply = Reply(latency_s=1.0)

    async def scenario() -> list[str]:
        leader = asyncio.ensure_future(answer(gw, chat(), gw.observer()))
        await asyncio.sleep(0.1)
        followers = [asyncio.ensure_future(answer(gw, chat(), gw.observer())) for _ in range(2)]
        await asyncio.sleep(0.1)
        leader.cancel()  # its client hung up
        with pytest.raises(asyncio.CancelledError):
            await leader
        return list(await asyncio.gather(*followers))

    assert run(scenario()) == ["openai: hello", "openai: hello"]
    assert (len(gw.upstreams["openai"].calls), gw.upstreams["openai"].cancelled) == (1, [])


def test_when_every_client_of_a_shared_call_leaves_the_provider_call_is_cancelled_at_once(
    tmp_path: Path,
) -> None:
    gw = gateway(cache_dir=tmp_path)
    gw.upstreams["openai"].reply = Reply(latency_s=5.0)

    async def scenario() -> None:
        waiting = [asyncio.ensure_future(answer(gw, chat(), gw.observer())) for _ in range(3)]
        await asyncio.sleep(0.5)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await asyncio.sleep(0)  # the shared call's task notices

    run(scenario())
    assert gw.upstreams["openai"].cancelled == [pytest.approx(0.5)]


def test_a_failed_shared_call_fails_every_follower_and_the_next_request_calls_again(
    tmp_path: Path,
) -> None:
    gw = gateway(max_retries=0, cache_dir=tmp_path)
    gw.upstreams["openai"].reply = Reply(status=500, latency_s=1.0)

    async def scenario() -> str:
        failed = await asyncio.gather(
            *(answer(gw, chat(), gw.observer()) for _ in range(3)), return_exceptions=True
        )
        assert [type(e) for e in failed] == [ProviderError] * 3
        gw.upstreams["openai"].reply = Reply()
        return await answer(gw, chat(), gw.observer())

    assert run(scenario()) == "openai: hello"  # the error was not stored
    assert len(gw.upstreams["openai"].calls) == 2


def test_embeddings_arriving_together_share_one_call_noted_in_the_first_callers_record() -> None:
    gw = gateway(embedding_batches=True)
    gw.upstreams["openai"].reply = Reply(latency_s=0.1)

    async def scenario() -> list[tuple[list[float], RequestObserver]]:
        observers = [gw.observer() for _ in range(3)]
        texts = ["a", "bb", "ccc"]
        results = await asyncio.gather(
            *(
                gw.pipeline.embeddings(embed("openai/text-embedding-3-small", t), o)
                for t, o in zip(texts, observers, strict=True)
            )
        )
        vectors = [orjson.loads(r.body)["data"][0]["embedding"] for r in results]
        return list(zip(vectors, observers, strict=True))

    results = run(scenario())
    assert [vector for vector, _ in results] == [[1.0], [2.0], [3.0]]
    assert gw.upstreams["openai"].calls == [pytest.approx(0.01)]  # after the idle window
    assert [o.record.attempts for _, o in results] == [1, 0, 0]
    assert gw.counted("avoided_provider_calls") == {
        ("openai", "text-embedding-3-small", "batch"): 2
    }


def embed(model: str, text: str) -> ApiRequest:
    body = {"model": model, "input": text}
    return ApiRequest("embeddings", model, body, orjson.dumps(body))


def test_identical_concurrent_streams_share_one_call_and_each_reader_gets_every_event(
    tmp_path: Path,
) -> None:
    gw = gateway(cache_dir=tmp_path)
    gw.upstreams["openai"].reply = Reply(text="one two three", gap_s=0.2)

    async def read(request: ApiRequest) -> tuple[str, str]:
        result = await gw.pipeline.chat(request, gw.observer())
        assert isinstance(result, Streaming)
        events = b"".join([event async for event in result.events]).decode()
        chunks = [orjson.loads(e[len("data: ") :]) for e in events.split("\n\n")
                  if e.startswith("data: {")]  # fmt: skip
        words = [c["delta"].get("content") or "" for d in chunks for c in d["choices"]]
        return result.cache, " ".join(w for w in words if w)

    async def scenario() -> list[tuple[str, str]]:
        return list(await asyncio.gather(*(read(chat(stream=True)) for _ in range(3))))

    assert run(scenario()) == [("miss", "one two three")] + [("hit", "one two three")] * 2
    assert len(gw.upstreams["openai"].calls) == 1
