"""How long a request waits on an identical request's provider call, and when it stops.

In process, on a virtual clock (tests/virtual_clock.py), with the real de-duplication
(``Coalescer``), the real response cache on a temporary LMDB store, and a fake provider
whose stream is as long as a test wants. The leader's client reads as much of its stream
as the test says, then stops reading and holds it, like a client that never reads on:
the shared stream is then paced by that client (backpressure).

* A follower waits for the leader's whole answer only while the flight can hand one over;
  once its window has dropped the stream's start, or the answer passed the cache's entry
  size limit, the follower makes its own provider call at once (a streaming follower
  still reads the live stream while it can), and the node-wide in-flight mark is cleared
  so that requests in other workers stop waiting too.
* Every wait on another request's call ends at the waiter's own deadline: a 504 then.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from aigateway.cache.service import ResponseCache
from aigateway.cache.store import LmdbStore
from aigateway.core.dedup import Coalescer
from aigateway.errors import GatewayTimeout
from aigateway.hotpath import TTLPolicy
from aigateway.wire import ApiRequest, Completed, Streaming
from virtual_clock import run

KEY = b"the same request"
LATENCY = 0.2  # the provider's time to its first byte, in virtual seconds
KB = 1024


@dataclass
class FakeProvider:
    """Answers after ``LATENCY``: a stream of ``pieces`` content chunks of about ``piece``
    bytes each (then usage and ``[DONE]``), or the same answer whole."""

    pieces: int = 4000
    piece: int = KB
    calls: int = 0

    async def fetch(self, request: ApiRequest) -> Completed | Streaming:
        self.calls += 1
        await asyncio.sleep(LATENCY)
        if request.stream:
            return Streaming(self._events(), "openai", "gpt-test", 1)
        text = "x" * (self.pieces * self.piece)
        completion = {
            "id": "c",
            "object": "chat.completion",
            "model": "gpt-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        return Completed(orjson.dumps(completion), "openai", "gpt-test", 1)

    async def _events(self) -> AsyncIterator[bytes]:
        head = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-test"}
        for _ in range(self.pieces):
            delta = {"index": 0, "delta": {"content": "x" * self.piece}}
            yield b"data: " + orjson.dumps({**head, "choices": [delta]}) + b"\n\n"
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        yield b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n"
        yield b"data: [DONE]\n\n"


def request(stream: bool) -> ApiRequest:
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    return ApiRequest("chat", "gpt-test", body, orjson.dumps(body), stream=stream)


def coalescer(tmp_path: Path, max_lag: int, max_entry: int) -> tuple[Coalescer, LmdbStore]:
    store = LmdbStore(str(tmp_path / "cache"), 64 << 20)
    cache = ResponseCache(store, 300.0, TTLPolicy(), max_entry_bytes=max_entry)
    return Coalescer(cache, max_lag), store


async def stalled_leader(
    dedup: Coalescer, provider: FakeProvider, read_bytes: int
) -> AsyncIterator[bytes]:
    """Send the streaming request, read ``read_bytes`` of its stream, then stop reading:
    the stream it holds is returned (the caller closes it, as the client would by leaving)."""
    loop = asyncio.get_running_loop()
    result = await dedup.run(
        KEY, request(True), lambda _gate: provider.fetch(request(True)), loop.time() + 60
    )
    assert isinstance(result, Streaming)
    got = 0
    while got < read_bytes:
        got += len(await anext(result.events))
    await asyncio.sleep(1.0)  # the provider's stream runs until the stalled client holds it
    return result.events


async def follow(
    dedup: Coalescer, provider: FakeProvider, stream: bool, timeout_s: float = 5.0
) -> tuple[float, Completed | Streaming | Exception]:
    """An identical request with a deadline ``timeout_s`` from now: (when its answer came,
    the answer or its error)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        answer = await dedup.run(
            KEY, request(stream), lambda _gate: provider.fetch(request(stream)), started + timeout_s
        )
    except GatewayTimeout as exc:
        return loop.time() - started, exc
    return loop.time() - started, answer


async def drain(events: AsyncIterator[bytes]) -> bytes:
    return b"".join([piece async for piece in events])


async def leave(events: AsyncIterator[bytes]) -> None:
    """The stalled client hangs up: the shared call ends, no task is left behind."""
    await events.aclose()  # type: ignore[attr-defined]
    await asyncio.sleep(1.0)


def test_a_follower_arriving_after_the_stream_start_left_the_window_makes_its_own_call(
    tmp_path: Path,
) -> None:
    # The stalled client read 512 KB, past the 256 KB window: the start is gone.
    dedup, store = coalescer(tmp_path, max_lag=256 * KB, max_entry=64 << 20)
    provider = FakeProvider()

    async def scenario() -> tuple[Any, Any, Any]:
        held = await stalled_leader(dedup, provider, read_bytes=512 * KB)
        mark = store.flight_owner(KEY)
        waited, answer = await follow(dedup, provider, stream=False)
        streamed = await follow(dedup, provider, stream=True)
        assert isinstance(streamed[1], Streaming)
        text = await drain(streamed[1].events)
        await leave(held)
        return (mark, (waited, answer), (streamed[0], text))

    mark, (waited, answer), (waited_stream, text) = run(scenario())
    assert mark is None  # the other workers do not wait for this flight either
    assert isinstance(answer, Completed), answer
    assert answer.cache == "miss"  # its own provider call...
    assert waited == pytest.approx(LATENCY)  # ...at once, not after the stalled stream
    assert waited_stream == pytest.approx(LATENCY)
    assert text.endswith(b"data: [DONE]\n\n")  # the whole stream, from its own call
    assert provider.calls == 3


def test_a_follower_stops_waiting_once_the_answer_is_past_the_cache_entry_limit(
    tmp_path: Path,
) -> None:
    # The stalled client read nothing, so the window still holds the start; but the
    # answer outgrew the 16 KB the cache keeps, so no whole answer will ever be handed over.
    dedup, store = coalescer(tmp_path, max_lag=4 << 20, max_entry=16 * KB)
    provider = FakeProvider()

    async def scenario() -> tuple[Any, Any, Any]:
        held = await stalled_leader(dedup, provider, read_bytes=0)
        mark = store.flight_owner(KEY)
        live = await follow(dedup, provider, stream=True)
        whole = await follow(dedup, provider, stream=False)
        if isinstance(live[1], Streaming):
            await live[1].events.aclose()  # type: ignore[attr-defined]
        await leave(held)
        return mark, whole, live

    mark, (waited, answer), (waited_live, live) = run(scenario())
    assert mark is None
    assert isinstance(answer, Completed), answer
    assert answer.cache == "miss"
    assert waited == pytest.approx(LATENCY)
    # A streaming follower can still read the live stream from its start: it joins it.
    assert isinstance(live, Streaming) and live.cache == "hit"
    assert waited_live == 0.0
    assert provider.calls == 2


def test_a_follower_waiting_for_a_whole_answer_gets_504_at_its_own_deadline(
    tmp_path: Path,
) -> None:
    # Nothing tells the flight it cannot finish: its answer fits the cache and its start
    # is still in the window, but its only reader never reads, so it never ends.
    dedup, _ = coalescer(tmp_path, max_lag=4 << 20, max_entry=64 << 20)
    provider = FakeProvider()

    async def scenario() -> tuple[float, Any]:
        held = await stalled_leader(dedup, provider, read_bytes=0)
        outcome = await follow(dedup, provider, stream=False, timeout_s=2.0)
        await leave(held)
        return outcome

    waited, error = run(scenario())
    assert isinstance(error, GatewayTimeout), error
    assert error.status == 504
    assert waited == pytest.approx(2.0)
    assert provider.calls == 1


def test_a_follower_of_a_flight_that_completes_still_shares_its_answer(tmp_path: Path) -> None:
    # The bounds above take nothing from de-duplication: a small answer is shared.
    dedup, _ = coalescer(tmp_path, max_lag=4 << 20, max_entry=64 << 20)
    provider = FakeProvider(pieces=8)

    async def scenario() -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        leader = asyncio.ensure_future(
            dedup.run(
                KEY, request(True), lambda _gate: provider.fetch(request(True)), loop.time() + 5
            )
        )
        await asyncio.sleep(LATENCY / 2)
        follower = asyncio.ensure_future(follow(dedup, provider, stream=False))
        streamed = await leader
        assert isinstance(streamed, Streaming)
        await drain(streamed.events)
        return await follower

    _, answer = run(scenario())
    assert isinstance(answer, Completed) and answer.cache == "hit"
    assert orjson.loads(answer.body)["usage"]["total_tokens"] == 2
    assert provider.calls == 1
