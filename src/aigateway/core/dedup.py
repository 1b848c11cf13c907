"""De-duplication: identical requests in flight at the same time share one provider call.

Within a worker, the first request with a key leads a *flight*: its provider call runs
in a task of its own, so a client that leaves does not cancel it for the others, and
every later request with the same key follows it. A streaming follower of a streaming
flight receives every chunk from the first; other followers wait for the whole answer
and get it in the form they asked for.

Across the workers of the node, the leader marks the key as in flight in the shared
cache store; a request in another worker that finds the mark polls the cache for the
entry the leader will write. A mark whose owner died or whose deadline passed is
ignored, so a crashed or cancelled leader never leaves others hanging: they fall back
to their own call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aigateway.cache.service import ResponseCache
from aigateway.core.types import ApiRequest, Completed, Streaming
from aigateway.errors import GatewayError, ProviderError

Fetch = Callable[[], Awaitable[Completed | Streaming]]
POLL_INTERVAL_S = 0.005


class Flight:
    def __init__(self, stream: bool, include_usage: bool) -> None:
        self.stream = stream
        self.include_usage = include_usage
        self.pieces: list[bytes] = []
        self.started = asyncio.Event()
        self.provider = ""
        self.model = ""
        self.streaming = False
        self.done = False
        self.body: bytes | None = None
        self.error: GatewayError | None = None
        self._changed = asyncio.Event()

    def begin(self, result: Completed | Streaming) -> None:
        self.provider, self.model = result.provider, result.model
        self.streaming = isinstance(result, Streaming)
        self.started.set()

    def append(self, piece: bytes) -> None:
        self.pieces.append(piece)
        self._wake()

    def finish(self, body: bytes | None) -> None:
        if not self.done:
            self.done, self.body = True, body
            self.started.set()
            self._wake()

    def fail(self, error: GatewayError) -> None:
        self.error = error
        self.finish(None)

    async def wait_done(self) -> None:
        while not self.done:
            await self._changed.wait()

    async def subscribe(self) -> AsyncIterator[bytes]:
        sent = 0
        while True:
            while sent < len(self.pieces):
                yield self.pieces[sent]
                sent += 1
            if self.done:
                return
            await self._changed.wait()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


class Coalescer:
    def __init__(self, cache: ResponseCache) -> None:
        self._cache = cache
        self._store = cache.store
        self._flights: dict[bytes, Flight] = {}
        self._tasks: set[asyncio.Future[Any]] = set()

    async def run(
        self, key: bytes, request: ApiRequest, fetch: Fetch, deadline: float
    ) -> Completed | Streaming:
        if not request.cache.read:  # no-cache: never joined, never joins
            return self._cache.remember(key, request, await fetch())
        flight = self._flights.get(key)
        if flight is not None:
            return await self._follow(flight, request)
        wall_deadline = time.time() + (deadline - asyncio.get_running_loop().time())
        if self._store.claim_flight(key, wall_deadline) is not None:
            answer = await self._wait_for_other_worker(key, request, deadline)
            if answer is not None:
                return answer
            self._store.claim_flight(key, wall_deadline)
        return await self._lead(key, request, fetch)

    async def _lead(self, key: bytes, request: ApiRequest, fetch: Fetch) -> Completed | Streaming:
        include_usage = bool((request.body.get("stream_options") or {}).get("include_usage"))
        flight = Flight(request.stream, include_usage)
        self._flights[key] = flight

        def landed(body: bytes | None) -> None:
            flight.finish(body)
            self._forget(key, flight)

        async def call() -> Completed | Streaming:
            try:
                fetched = await fetch()
                flight.begin(fetched)
                result = self._cache.remember(key, request, fetched, landed)
            except GatewayError as exc:
                flight.fail(exc)
                self._forget(key, flight)
                raise
            except BaseException:
                flight.fail(ProviderError("the shared provider call was cancelled"))
                self._forget(key, flight)
                raise
            if isinstance(result, Streaming):
                self._spawn(self._broadcast(flight, result.events))
                result.events = flight.subscribe()
            return result

        # Shielded: the leader's client may leave; the followers still need the answer.
        task = asyncio.ensure_future(call())
        self._tasks.add(task)
        task.add_done_callback(_settled)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def _follow(self, flight: Flight, request: ApiRequest) -> Completed | Streaming:
        await flight.started.wait()
        if flight.error is not None:
            raise flight.error
        live = request.stream and flight.streaming and not flight.done
        if live and flight.include_usage == bool(
            (request.body.get("stream_options") or {}).get("include_usage")
        ):
            self._store.count("dedup_joins")
            return Streaming(flight.subscribe(), flight.provider, flight.model, 0, cache="hit")
        await flight.wait_done()
        if flight.error is not None:
            raise flight.error
        if flight.body is None:
            raise ProviderError(f"{flight.provider} stream broke off before it completed")
        self._cache.count_joined(flight.provider, flight.model, flight.body)
        return self._cache.answer_from(flight.body, flight.provider, flight.model, request, "hit")

    async def _wait_for_other_worker(
        self, key: bytes, request: ApiRequest, deadline: float
    ) -> Completed | Streaming | None:
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            await asyncio.sleep(POLL_INTERVAL_S)
            entry = self._store.get(key)
            if entry is not None:
                self._cache.count_joined(entry.provider, entry.model, entry.body)
                return self._cache.answer_from(
                    entry.body, entry.provider, entry.model, request, "hit"
                )
            if self._store.flight_owner(key) is None:
                return None  # the leader finished without an answer, or died: our own call
        return None

    async def _broadcast(self, flight: Flight, events: AsyncIterator[bytes]) -> None:
        try:
            async for piece in events:
                flight.append(piece)
        finally:
            flight.finish(flight.body)

    def _forget(self, key: bytes, flight: Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        self._store.release_flight(key)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _settled(task: asyncio.Future[Completed | Streaming]) -> None:
    """Retrieve a failure nobody awaited (the leader left), so it is not reported as lost."""
    if not task.cancelled():
        task.exception()
