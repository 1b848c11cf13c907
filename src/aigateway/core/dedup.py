"""De-duplication: identical requests in flight at the same time share one provider call.

Within a worker, the first request with a key leads a *flight*: its provider call runs
in a task of its own, so a client that leaves does not cancel it for the others, and
every later request with the same key follows it. A streaming follower of a streaming
flight reads the same stream from its first chunk; other followers wait for the whole
answer and get it in the form they asked for.

Every wait is bounded by the waiter's own deadline (504 at that deadline, like any other
request). And a follower never waits for a whole answer the flight can no longer hand
over: as soon as its window has dropped the start of the stream, or the answer has
passed the cache's entry size limit (``on_give_up``), the flight is *partial*. Its
followers then make their own provider call at once, and its in-flight mark across the
node is cleared, so requests in other workers stop waiting for it too. Without this, a
follower would wait on a stream paced by a client that may never read it.

Listeners: the leader until it has its answer, every follower while it waits, and every
reader of the stream. When the last one leaves (its client hung up), nobody wants the
answer any more: the provider call is cancelled at once, and the partial answer is not
stored.

A shared stream is held in a window, never in full:

* the call reads the provider's stream only while its fastest reader is less than
  ``READ_AHEAD_BYTES`` behind, so a slow client slows the provider down (backpressure)
  instead of filling memory;
* the window keeps the start of the stream while it is at most ``max_lag`` bytes long (a
  follower arriving then still reads it from its first chunk; a later one waits for the
  whole answer), then only what its slowest reader has not read yet;
* a reader that falls more than ``max_lag`` bytes behind the head is dropped: it gets an
  error event and its stream ends, while the others go on.

Across the workers of the node, the leader marks the key as in flight in the shared
cache store; a request in another worker that finds the mark polls the cache for the
entry the leader will write. A mark whose owner died or whose deadline passed is
ignored, so a crashed or cancelled leader never leaves others hanging: they fall back
to their own call; they never wait past their own deadline either.

Across the nodes of a cluster (``REDIS_URL``), the node's leader asks the cache's second
tier before it calls the provider (``cluster.cache_tier``): the entry may be there, or
another node's leader may hold the claim on the call, and then this one waits for that
node's answer in the second tier. A streaming request on a waiting node gets the answer
replayed once the other node's stream ended (docs/cluster.md says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from aigateway.cache.service import ResponseCache
from aigateway.cache.store import CacheEntry
from aigateway.errors import GatewayError, GatewayTimeout, ProviderError
from aigateway.wire import ApiRequest, Completed, Streaming, close_events

if TYPE_CHECKING:  # redis is imported only by a node with REDIS_URL
    from aigateway.cluster.cache_tier import Lookup

#: Awaited by a fetch once it has prepared its provider call and before it spends anything
#: on it (a rate token, a tenant key's reservation): it returns when this worker is to make
#: the call, and raises ``ClusterAnswer`` when the cluster has the answer already.
Gate = Callable[[], Awaitable[None]]
#: The provider call; given the gate to await (None: nothing to wait for).
Fetch = Callable[[Gate | None], Awaitable[Completed | Streaming]]
POLL_INTERVAL_S = 0.005
READ_AHEAD_BYTES: Final = 64 * 1024
DEFAULT_MAX_LAG_BYTES: Final = 1024 * 1024


class ClusterAnswer(Exception):  # not an error: the answer, from elsewhere
    """Raised by the gate: the second tier had the answer, or another node's identical
    call gave it; no provider call is to be made."""

    def __init__(self, entry: CacheEntry) -> None:
        super().__init__()
        self.entry = entry


class Flight:
    """One provider call and everyone waiting for its answer, in this worker."""

    def __init__(
        self,
        max_lag: int,
        abandoned: Callable[[Flight], None],
        partial: Callable[[Flight], None] = lambda flight: None,
    ) -> None:
        self.started = asyncio.Event()
        self.provider = ""
        self.model = ""
        self.streaming = False
        self.done = False
        self.body: bytes | None = None
        self.error: GatewayError | None = None
        self.partial = False  # it will hand over no whole answer (see give_up_whole)
        self.listeners = 0
        self.followers = 0  # the listeners that are not the leader
        self.task: asyncio.Future[Any] | None = None  # cancelled when every listener left
        self._abandoned = abandoned
        self._partial = partial
        self._max_lag = max_lag
        # The window: pieces from index `_first` on, each with its offset in the stream.
        self._pieces: deque[bytes] = deque()
        self._offsets: deque[int] = deque()
        self._first = 0
        self._total = 0
        self._readers: set[Reader] = set()
        self._changed = asyncio.Event()  # a new piece, or the end: readers wait on it
        self._drained = asyncio.Event()  # a reader took a piece: the call waits on it

    # -- the answer --------------------------------------------------------------------

    def begin(self, result: Completed | Streaming) -> None:
        self.provider, self.model = result.provider, result.model
        self.streaming = isinstance(result, Streaming)
        self.started.set()

    def finish(self, body: bytes | None) -> None:
        if not self.done:
            self.done, self.body = True, body
            # Nothing left to cancel; a failed call's task keeps its error, whose traceback
            # holds the call's frame and so this flight: a cycle only the collector frees.
            self.task = None
            self.started.set()
            self._wake()

    def fail(self, error: GatewayError) -> None:
        if not self.done:
            # Kept for followers only: the error's traceback holds the leader's frames,
            # which hold this flight (a cycle, freed only by the collector, per failure).
            self.error = error if self.followers else None
            self.finish(None)

    def give_up_whole(self) -> None:
        """It can no longer hand over its whole answer (the window dropped the stream's
        start, or the answer grew past what the cache keeps): waiters for one go."""
        if not self.partial and not self.done:
            self.partial = True
            self._partial(self)
            self._wake()

    async def wait_whole(self) -> None:
        """Until the answer is complete, or known never to be whole."""
        while not self.done and not self.partial:
            await self._changed.wait()

    # -- listeners ---------------------------------------------------------------------

    def join(self) -> None:
        self.listeners += 1

    def leave(self) -> None:
        self.listeners -= 1
        if self.listeners <= 0 and not self.done:
            task = self.task  # failing lets go of it
            self.fail(ProviderError("every client of this provider call left"))
            self._abandoned(self)
            if task is not None:
                task.cancel()

    @property
    def joinable(self) -> bool:
        """Whether a new reader can still read the stream from its first chunk."""
        return self.streaming and not self.done and self._first == 0

    def reader(self) -> Reader:
        return Reader(self)

    # -- the stream window -------------------------------------------------------------

    def append(self, piece: bytes) -> None:
        self._pieces.append(piece)
        self._offsets.append(self._total)
        self._total += len(piece)
        # Behind by more than the window before this piece: one large piece alone (a
        # provider's burst) does not make a reader that kept up too slow.
        for reader in [r for r in self._readers if self._lag(r) - len(piece) > self._max_lag]:
            reader.drop()
        if self._total > self._max_lag:  # past the start kept for late followers
            lowest = min((r.index for r in self._readers), default=self._head)
            while self._first < lowest:
                self._pieces.popleft()
                self._offsets.popleft()
                self._first += 1
            if self._first > 0:  # a newcomer can no longer read it from its first chunk
                self.give_up_whole()
        self._wake()

    async def room(self) -> None:
        """Wait while every reader is ``READ_AHEAD_BYTES`` or more behind the head."""
        while self._readers and all(self._lag(r) >= READ_AHEAD_BYTES for r in self._readers):
            self._drained.clear()
            await self._drained.wait()

    @property
    def _head(self) -> int:
        return self._first + len(self._pieces)

    def _lag(self, reader: Reader) -> int:
        if reader.index >= self._head:
            return 0
        return self._total - self._offsets[reader.index - self._first]

    def _piece(self, index: int) -> bytes:
        self._drained.set()
        return self._pieces[index - self._first]

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


class Reader:
    """One client's view of a shared stream (an async iterator of its pieces); a listener
    from the moment it is made until it ends, is closed, is dropped or is collected."""

    __slots__ = ("_flight", "_left", "_told", "dropped", "index")

    def __init__(self, flight: Flight) -> None:
        self._flight = flight
        self.index = 0
        self.dropped = False
        self._told = False
        self._left = False
        flight.join()
        flight._readers.add(self)

    def __aiter__(self) -> Reader:
        return self

    async def __anext__(self) -> bytes:
        flight = self._flight
        try:
            while not self._left:
                if self.index < flight._head:
                    self.index += 1
                    return flight._piece(self.index - 1)
                if flight.done:
                    break
                await flight._changed.wait()
        except BaseException:  # cancelled: the client left
            self.close()
            raise
        self.close()
        if self.dropped and not self._told:
            self._told = True
            return _TOO_SLOW
        raise StopAsyncIteration

    def drop(self) -> None:
        """Too far behind: no longer a listener; its next read is an error event."""
        self.dropped = True
        self.close()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if not self._left:
            self._left = True
            self._flight._readers.discard(self)
            self._flight.leave()

    def __del__(self) -> None:
        # Never read to its end (its client left before the stream began): let go.
        with contextlib.suppress(Exception):
            self.close()


_TOO_SLOW = (
    b"data: "
    + GatewayError(
        "the client read this stream too slowly and fell too far behind it",
        code="client_too_slow",
    ).json()
    + b"\n\n"
)


class Coalescer:
    def __init__(self, cache: ResponseCache, max_lag_bytes: int = DEFAULT_MAX_LAG_BYTES) -> None:
        self._cache = cache
        self._store = cache.store
        self._max_lag = max_lag_bytes
        self._flights: dict[bytes, Flight] = {}
        self._tasks: set[asyncio.Future[Any]] = set()

    async def run(
        self, key: bytes, request: ApiRequest, fetch: Fetch, deadline: float
    ) -> Completed | Streaming:
        if not request.cache.read:  # no-cache: never joined, never joins
            return self._cache.remember(key, request, await fetch(None))
        flight = self._flights.get(key)
        if flight is not None:
            answer = await self._follow(flight, request, deadline)
            if answer is not None:
                return answer
        wall_deadline = time.time() + (deadline - asyncio.get_running_loop().time())
        if self._store.claim_flight(key, wall_deadline) is not None:
            answer = await self._wait_for_other_worker(key, request, deadline)
            if answer is not None:
                return answer
            self._store.claim_flight(key, wall_deadline)
        return await self._lead(key, request, fetch, deadline)

    async def _lead(
        self, key: bytes, request: ApiRequest, fetch: Fetch, deadline: float
    ) -> Completed | Streaming:
        flight = Flight(
            self._max_lag,
            lambda abandoned: self._forget(key, abandoned),
            lambda partial: self._release(key, partial),
        )
        self._flights[key] = flight
        flight.join()  # the leader, until it has its answer

        def landed(body: bytes | None) -> None:
            flight.finish(body)
            self._forget(key, flight)

        # Across nodes: the second tier's lookup is sent before the call's task is
        # scheduled, so its write leaves first in the next loop turn (with the others made
        # in this one), and the fetch prepares its provider call while Redis runs it; the
        # gate gives the lookup's answer before anything is spent on the call.
        tier = self._cache.shared
        lookup = tier.begin(key, deadline) if tier is not None else None

        async def call() -> Completed | Streaming:
            try:
                try:
                    fetched = await fetch(None if lookup is None else self._gate(key, lookup))
                finally:
                    if lookup is not None:
                        lookup.abandon()  # the gate was never reached (or it was: no-op)
                flight.begin(fetched)
                result = self._cache.remember(key, request, fetched, landed, flight.give_up_whole)
            except ClusterAnswer as answer:  # no provider call: followers share this answer
                provider, model, body = answer.entry.provider, answer.entry.model, answer.entry.body
                flight.begin(Completed(body, provider, model, 0))
                landed(body)
                return self._cache.answer_from(body, provider, model, request, "hit")
            except GatewayError as exc:
                flight.fail(exc)
                self._forget(key, flight)
                raise
            except BaseException:
                flight.fail(ProviderError("the shared provider call was cancelled"))
                self._forget(key, flight)
                raise
            if isinstance(result, Streaming):
                reader = flight.reader()  # the leader's, before the first piece
                flight.task = self._spawn(self._broadcast(flight, result.events))
                result.events = reader
            return result

        # Shielded: the leader's client may leave; the followers still need the answer.
        task = flight.task = asyncio.ensure_future(call())
        self._tasks.add(task)
        task.add_done_callback(_settled)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done() and not task.cancelled() and task.exception() is None:
                answer = task.result()
                if isinstance(answer, Streaming):  # it came, but nobody will read it
                    await close_events(answer.events)
            raise
        finally:
            flight.leave()
            # A failed call's error, raised here too, holds this frame in its traceback;
            # the task holds the error: without this, a cycle per failed call.
            del task

    async def _follow(
        self, flight: Flight, request: ApiRequest, deadline: float
    ) -> Completed | Streaming | None:
        """The flight's answer; None when it has none to share (then: our own call)."""
        flight.join()
        flight.followers += 1
        try:
            async with asyncio.timeout_at(deadline):
                await flight.started.wait()
                if flight.error is not None:
                    raise flight.error
                if request.stream and flight.joinable:
                    self._store.count("dedup_joins")
                    return Streaming(flight.reader(), flight.provider, flight.model, 0, cache="hit")
                await flight.wait_whole()
            if flight.error is not None:
                raise flight.error
            if flight.body is None:  # partial: too large to keep, or broke off
                return None
            self._cache.count_joined(flight.provider, flight.model, flight.body)
            return self._cache.answer_from(
                flight.body, flight.provider, flight.model, request, "hit"
            )
        except TimeoutError:
            raise _waited_too_long() from None
        finally:
            flight.followers -= 1
            flight.leave()

    def _gate(self, key: bytes, lookup: Lookup) -> Gate:
        """The answer of the cluster's lookup (see ``Gate``): the entry there already, or
        another node's identical call this worker waited for (``ClusterAnswer``); returns
        when this worker is to call the provider (it holds the cluster's claim, or Redis
        cannot be used now)."""

        async def gate() -> None:
            try:
                async with asyncio.timeout_at(lookup.deadline):
                    found = await lookup.answer()
            except TimeoutError:
                raise _waited_too_long() from None
            if found is not None:
                self._cache.keep(key, found.entry, joined=found.waited)
                raise ClusterAnswer(found.entry)

        return gate

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
                return None  # no whole answer is coming (or the leader died): our own call
        raise _waited_too_long()

    async def _broadcast(self, flight: Flight, events: AsyncIterator[bytes]) -> None:
        """Read the provider's stream into the flight's window, as fast as its fastest
        reader reads it."""
        try:
            async for piece in events:
                flight.append(piece)
                await flight.room()
        finally:
            await close_events(events)  # cancelled: this ends the provider call
            flight.finish(flight.body)

    def _forget(self, key: bytes, flight: Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        self._release(key, flight)

    def _release(self, key: bytes, flight: Flight) -> None:
        """Clear the node-wide in-flight mark, unless a newer flight of ours holds it."""
        if self._flights.get(key, flight) is flight:
            self._store.release_flight(key)
            if self._cache.shared is not None:  # and the cluster's claim, if it holds one
                self._cache.shared.release(key)

    def _spawn(self, coroutine: Awaitable[None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(_settled)
        task.add_done_callback(self._tasks.discard)
        return task


def _waited_too_long() -> GatewayTimeout:
    # The waiter's own deadline (Fault.DEADLINE): not a failure of the provider.
    return GatewayTimeout("the identical request in flight did not answer within the deadline")


def _settled(task: asyncio.Future[Any]) -> None:
    """Retrieve a failure nobody awaited (the leader left), so it is not reported as lost."""
    if not task.cancelled():
        task.exception()
