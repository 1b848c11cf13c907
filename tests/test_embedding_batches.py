"""When coalesced embedding requests leave, and how each keeps its own deadline.

In process, on a virtual clock (tests/virtual_clock.py): the provider is a coroutine that
takes ``latency`` seconds of virtual time, so the tests read exact times.  Each caller's
observer (opaque to the batcher; the pipeline's ``RequestObserver``) is here its name.
BATCH_SIZE is 10, BATCH_TIMEOUT_MS 1000 and the idle window 10 ms, as by default.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from aigateway.core.batching import EmbeddingBatcher
from aigateway.errors import GatewayTimeout, ProviderError
from aigateway.wire import ApiRequest, Completed
from virtual_clock import run

NO_DEADLINE = 1e9


@dataclass
class Call:
    at: float
    inputs: list[str]
    deadline: float
    observer: str
    ended: float | None = None


@dataclass
class FakeProvider:
    """Answers each text with a vector naming it, after ``latency`` s; honours the
    deadline it is given like the real dispatch does."""

    latency: float = 0.1
    calls: list[Call] = field(default_factory=list)
    fail: bool = False

    async def embed(self, request: ApiRequest, deadline: float, observer: str) -> Completed:
        loop = asyncio.get_running_loop()
        value = request.body["input"]
        inputs = [value] if isinstance(value, str) else list(value)
        call = Call(loop.time(), inputs, deadline, observer)
        self.calls.append(call)
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.sleep(self.latency)
        except TimeoutError:
            raise GatewayTimeout("the provider did not answer in time") from None
        finally:
            call.ended = loop.time()
        if self.fail:
            raise ProviderError("the provider failed")
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(text))], "text": text}
            for i, text in enumerate(inputs)
        ]
        usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
        body = orjson.dumps({"object": "list", "data": data, "model": "m", "usage": usage})
        return Completed(body, "openai", "m", 1)


def _batcher(provider: FakeProvider, max_inputs: int = 10, max_wait_s: float = 1.0) -> Any:
    """The batcher, and the calls it saved: (whose observer heard it, how many)."""
    saved: list[tuple[str, int]] = []
    batcher = EmbeddingBatcher[str](
        provider.embed,
        max_inputs,
        max_wait_s,
        lambda observer, provider, model, n: saved.append((observer, n)),
    )
    return batcher, saved


def _request(text: str | list[str]) -> ApiRequest:
    body = {"model": "text-embedding-3-small", "input": text}
    return ApiRequest("embeddings", "text-embedding-3-small", body, orjson.dumps(body))


async def _embed_at(
    batcher: EmbeddingBatcher[str],
    at: float,
    text: str | list[str],
    deadline: float = NO_DEADLINE,
) -> tuple[float, Any]:
    """Send at virtual time ``at`` (observed as ``text``); (when it ended, the texts it got
    back or the error)."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(at - loop.time())
    try:
        result = await batcher.embed(_request(text), deadline, str(text))
    except Exception as exc:  # the test looks at which error
        return loop.time(), exc
    return loop.time(), [item["text"] for item in orjson.loads(result.body)["data"]]


def test_a_lone_request_goes_after_the_idle_window_alone() -> None:
    provider = FakeProvider(latency=0.1)
    batcher, _ = _batcher(provider)
    ended, texts = run(_embed_at(batcher, 0.0, "alone"))
    assert texts == ["alone"]
    assert [(c.at, c.inputs) for c in provider.calls] == [(0.01, ["alone"])]
    assert ended == pytest.approx(0.11)


def test_requests_arriving_while_a_call_is_in_flight_gather_for_the_next_call() -> None:
    # 40 ms apart, far beyond the idle window: without waiting on the call in flight
    # each would go alone.
    provider = FakeProvider(latency=0.1)
    batcher, saved = _batcher(provider)

    async def scenario() -> list[tuple[float, Any]]:
        return list(
            await asyncio.gather(*(_embed_at(batcher, i * 0.04, f"t{i}") for i in range(8)))
        )

    results = run(scenario())
    assert [texts for _, texts in results] == [[f"t{i}"] for i in range(8)]
    assert [(round(c.at, 3), c.inputs) for c in provider.calls] == [
        (0.01, ["t0"]),  # alone, after the idle window
        (0.11, ["t1", "t2"]),  # came while t0's call was in flight
        (0.21, ["t3", "t4", "t5"]),
        (0.31, ["t6", "t7"]),
    ]
    assert sum(n for _, n in saved) == 8 - 4


def test_a_full_batch_leaves_at_once_even_while_a_call_is_in_flight() -> None:
    provider = FakeProvider(latency=0.5)
    batcher, _ = _batcher(provider, max_inputs=4)

    async def scenario() -> None:
        await asyncio.gather(*(_embed_at(batcher, i * 0.02, f"t{i}") for i in range(7)))

    run(scenario())
    assert [(round(c.at, 3), c.inputs) for c in provider.calls] == [
        (0.01, ["t0"]),
        (0.08, ["t1", "t2", "t3", "t4"]),  # full when t4 arrived
        (0.51, ["t5", "t6"]),  # when t0's call ended
    ]


def test_batch_timeout_bounds_the_wait_behind_a_slow_call() -> None:
    provider = FakeProvider(latency=5.0)
    batcher, _ = _batcher(provider, max_wait_s=1.0)

    async def scenario() -> list[tuple[float, Any]]:
        return list(
            await asyncio.gather(_embed_at(batcher, 0.0, "slow"), _embed_at(batcher, 0.2, "next"))
        )

    run(scenario())
    assert [(round(c.at, 3), c.inputs) for c in provider.calls] == [
        (0.01, ["slow"]),
        (1.2, ["next"]),  # BATCH_TIMEOUT_MS after it arrived, the slow call still running
    ]


def test_each_caller_of_a_merged_call_keeps_its_own_deadline() -> None:
    provider = FakeProvider(latency=2.0)
    batcher, _ = _batcher(provider)

    async def scenario() -> list[tuple[float, Any]]:
        return list(
            await asyncio.gather(
                _embed_at(batcher, 0.0, "hurried", deadline=0.3),
                _embed_at(batcher, 0.0, "patient", deadline=10.0),
            )
        )

    (hurried_at, hurried), (patient_at, patient) = run(scenario())
    assert isinstance(hurried, GatewayTimeout)
    assert hurried.status == 504
    assert hurried_at == pytest.approx(0.3)
    assert patient == ["patient"]
    assert patient_at == pytest.approx(2.01)
    # One shared call, with the latest of its callers' deadlines.
    assert [(c.inputs, c.deadline) for c in provider.calls] == [(["hurried", "patient"], 10.0)]


def test_merged_callers_with_the_same_short_deadline_all_get_504_at_it() -> None:
    provider = FakeProvider(latency=2.0)
    batcher, _ = _batcher(provider)

    async def scenario() -> list[tuple[float, Any]]:
        hurried = (_embed_at(batcher, 0.0, f"t{i}", deadline=0.3) for i in range(2))
        return list(await asyncio.gather(*hurried))

    results = run(scenario())
    assert [type(error) for _, error in results] == [GatewayTimeout] * 2
    assert [at for at, _ in results] == [pytest.approx(0.3)] * 2
    assert len(provider.calls) == 1
    assert provider.calls[0].ended == pytest.approx(0.3)  # nobody left to wait for it


def test_a_caller_whose_deadline_passes_while_gathering_leaves_the_batch() -> None:
    provider = FakeProvider(latency=1.0)
    batcher, _ = _batcher(provider, max_wait_s=5.0)

    async def scenario() -> list[tuple[float, Any]]:
        return list(
            await asyncio.gather(
                _embed_at(batcher, 0.0, "first"),
                _embed_at(batcher, 0.1, "hurried", deadline=0.4),
                _embed_at(batcher, 0.2, "patient"),
            )
        )

    results = run(scenario())
    assert isinstance(results[1][1], GatewayTimeout)
    assert results[1][0] == pytest.approx(0.4)
    assert results[2][1] == ["patient"]
    assert [c.inputs for c in provider.calls] == [["first"], ["patient"]]


def test_a_merged_call_reports_to_its_first_caller_still_waiting_when_it_leaves() -> None:
    # "hurried" came first to the second batch but left before it was sent: the call and
    # the calls it saved are noted in "patient"'s record, not in a record already closed.
    provider = FakeProvider(latency=1.0)
    batcher, saved = _batcher(provider, max_wait_s=5.0)

    async def scenario() -> None:
        await asyncio.gather(
            _embed_at(batcher, 0.0, "first"),
            _embed_at(batcher, 0.1, "hurried", deadline=0.4),
            _embed_at(batcher, 0.2, "patient"),
            _embed_at(batcher, 0.3, "late"),
        )

    run(scenario())
    assert [(c.observer, c.inputs) for c in provider.calls] == [
        ("first", ["first"]),
        ("patient", ["patient", "late"]),
    ]
    assert saved == [("patient", 1)]


def test_a_batch_whose_callers_all_left_is_never_sent() -> None:
    provider = FakeProvider(latency=1.0)
    batcher, _ = _batcher(provider, max_wait_s=5.0)

    async def scenario() -> list[tuple[float, Any]]:
        return list(
            await asyncio.gather(
                _embed_at(batcher, 0.0, "first"),
                _embed_at(batcher, 0.1, "gone", deadline=0.3),
            )
        )

    run(scenario())
    assert [c.inputs for c in provider.calls] == [["first"]]
    assert batcher._groups == {}  # nothing left behind


def test_a_failed_merged_call_fails_each_of_its_callers_with_the_providers_error() -> None:
    provider = FakeProvider(latency=0.1, fail=True)
    batcher, _ = _batcher(provider)

    async def scenario() -> list[tuple[float, Any]]:
        return list(await asyncio.gather(*(_embed_at(batcher, 0.0, f"t{i}") for i in range(3))))

    results = run(scenario())
    assert all(isinstance(error, ProviderError) for _, error in results)
    assert len(provider.calls) == 1


def test_lists_token_arrays_and_big_inputs_go_their_own_way() -> None:
    provider = FakeProvider(latency=0.1)
    batcher, _ = _batcher(provider, max_inputs=3)

    async def scenario() -> list[tuple[float, Any]]:
        return list(
            await asyncio.gather(
                _embed_at(batcher, 0.0, ["a", "b"]),
                _embed_at(batcher, 0.0, "c"),
                _embed_at(batcher, 0.0, ["d", "e", "f"]),  # a whole batch by itself
            )
        )

    results = run(scenario())
    assert [texts for _, texts in results] == [["a", "b"], ["c"], ["d", "e", "f"]]
    assert sorted(c.inputs for c in provider.calls) == [["a", "b", "c"], ["d", "e", "f"]]


@pytest.mark.parametrize(
    ("timeouts", "merged"),
    [((0.3, None), None), ((0.3, 0.5), 0.5)],
    ids=["one-without-its-own-deadline", "all-with-their-own"],
)
def test_a_merged_call_carries_its_latest_callers_own_deadline(
    timeouts: tuple[float | None, ...], merged: float | None
) -> None:
    # Whether a timeout is the client's or the provider's fault follows the request's
    # timeout_s: a merged call must not borrow its first caller's short one.
    seen: list[float | None] = []
    provider = FakeProvider(latency=0.1)

    async def embed(request: ApiRequest, deadline: float, observer: str) -> Completed:
        seen.append(request.timeout_s)
        return await provider.embed(request, deadline, observer)

    batcher = EmbeddingBatcher[str](embed, 10, 1.0, lambda observer, provider, model, n: None)

    async def one(text: str, timeout_s: float | None) -> None:
        request = dataclasses.replace(_request(text), timeout_s=timeout_s)
        await batcher.embed(request, NO_DEADLINE, text)

    async def scenario() -> None:
        await asyncio.gather(*(one(f"t{i}", t) for i, t in enumerate(timeouts)))

    run(scenario())
    assert seen == [merged]


def test_each_answer_carries_its_share_of_the_calls_usage_and_cost_by_its_prompt() -> None:
    """A merged call's usage and cost are split by each caller's estimated prompt tokens
    (characters / 4), in whole tokens that add up to what the provider counted."""

    async def embed(request: ApiRequest, deadline: float, observer: str) -> Completed:
        usage = {"prompt_tokens": 101, "total_tokens": 101}
        data = [{"object": "embedding", "index": i, "embedding": [0.0]} for i in range(3)]
        body = orjson.dumps({"object": "list", "data": data, "model": "m", "usage": usage})
        return Completed(body, "openai", "m", 1, cost=1.01)

    batcher = EmbeddingBatcher[str](embed, 10, 1.0, lambda observer, provider, model, n: None)
    texts = ["x" * 40, "y" * 400, "z" * 4]  # 10, 100 and 1 estimated tokens

    async def together() -> list[Completed]:
        return list(
            await asyncio.gather(*(batcher.embed(_request(t), NO_DEADLINE, t) for t in texts))
        )

    answers = run(together())
    used = [orjson.loads(a.body)["usage"]["prompt_tokens"] for a in answers]
    assert used == [9, 91, 1]  # 101 tokens as 10 : 100 : 1, the units left to the largest
    assert [a.cost for a in answers] == pytest.approx([1.01 * w / 111 for w in (10, 100, 1)])
