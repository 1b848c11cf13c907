"""The providers of one worker process, by name, and the pooled clients they call through.

The registry is the one owner of name -> ``Provider``: the pipeline routes through it,
the health probes read it, operations shows it, and only the registry changes it.  A
``Provider`` is immutable; a change (its circuit once the node's health board is there,
a new pooled client when ``<PREFIX>_MAX_CONNS`` changes live) swaps in a new one, so a
request that already holds a provider keeps a consistent one.

Replacing a provider's client retires the old pool without cutting anyone off: each
client the registry hands out counts its calls in flight (a call ends when its answer
has been read, or closed), and a retired one is closed once its last call ends.  A
request already sending or streaming through the old pool finishes there; every new
call takes the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from aigateway.core.providers import Provider, build_providers, make_client
from aigateway.upstream import UpstreamClient, UpstreamResponse

if TYPE_CHECKING:
    from aigateway.config import ProviderSettings, Settings
    from aigateway.core.health import Circuit

__all__ = ("CountedClient", "ProviderRegistry")

ClientFactory = Callable[["ProviderSettings", "Settings"], UpstreamClient]


class ProviderRegistry(Mapping[str, Provider]):
    """This worker's providers by name (read as a mapping), and their pooled clients."""

    def __init__(
        self, providers: Mapping[str, Provider], client_factory: ClientFactory = make_client
    ) -> None:
        """``client_factory(provider_settings, settings)`` makes a provider's pooled client
        when its connection limit changes (``core.providers.make_client`` by default)."""
        self._providers = {
            name: dataclasses.replace(provider, client=CountedClient(provider.client))
            for name, provider in providers.items()
        }
        self._client_factory = client_factory
        self._retired: set[CountedClient] = set()
        self._closing: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderRegistry:
        return cls(build_providers(settings))

    # -- read by the pipeline, the probes and operations ---------------------------------

    def __getitem__(self, name: str) -> Provider:
        return self._providers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._providers)

    def __len__(self) -> int:
        return len(self._providers)

    # -- changes -------------------------------------------------------------------------

    def set_circuit(self, name: str, circuit: Circuit) -> None:
        """Provider ``name`` reports to, and is routed around by, ``circuit``."""
        self._providers[name] = dataclasses.replace(self._providers[name], circuit=circuit)

    def replace_client(self, name: str, client: UpstreamClient) -> None:
        """New calls of provider ``name`` go through ``client``; the old pool is closed
        once the calls in flight on it end."""
        current = self._providers[name]
        self._providers[name] = dataclasses.replace(current, client=CountedClient(client))
        old = current.client
        assert isinstance(old, CountedClient)
        self._retired.add(old)
        old.when_idle(lambda: self._close_retired(old))

    def apply_settings(self, old: Settings, new: Settings) -> None:
        """Live settings (every worker): a provider whose connection limit changed gets a
        new pool of that size."""
        before = {p.name: p.max_connections for p in old.providers}
        for p in new.providers:
            if p.name in self._providers and before.get(p.name) != p.max_connections:
                self.replace_client(p.name, self._client_factory(p, new))

    @property
    def retired(self) -> int:
        """Replaced clients not closed yet (calls still in flight on them)."""
        return len(self._retired)

    async def close(self) -> None:
        """Close every pool, current and retired (the worker stops)."""
        for task in list(self._closing):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in [*self._retired, *(p.client for p in self._providers.values())]:
            await client.close()
        self._retired.clear()

    def _close_retired(self, client: CountedClient) -> None:
        if client not in self._retired:
            return
        self._retired.discard(client)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a response collected at exit): nothing to close with
            return
        task = loop.create_task(client.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


class CountedClient:
    """An ``UpstreamClient`` that knows how many of its calls are in flight.

    A call is in flight from ``send`` until its answer has been read whole, or closed (a
    stream), or dropped unread."""

    __slots__ = ("_client", "_idle", "in_flight")

    def __init__(self, client: UpstreamClient) -> None:
        self._client = client
        self._idle: Callable[[], None] | None = None
        self.in_flight = 0

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout_s: float | None,
    ) -> UpstreamResponse:
        self.in_flight += 1
        try:
            response = await self._client.send(
                method, url, headers=headers, body=body, timeout_s=timeout_s
            )
        except BaseException:
            self._ended()
            raise
        return _CountedResponse(response, self)

    async def close(self) -> None:
        await self._client.close()

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once no call is in flight (now, if none is)."""
        if self.in_flight == 0:
            callback()
        else:
            self._idle = callback

    def _ended(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            idle, self._idle = self._idle, None
            idle()


class _CountedResponse:
    """An answer of a ``CountedClient``: its call ends when it is read, closed or dropped."""

    __slots__ = ("_client", "_response", "headers", "status")

    def __init__(self, response: UpstreamResponse, client: CountedClient) -> None:
        self.status = response.status
        self.headers = response.headers
        self._response = response
        self._client: CountedClient | None = client

    async def read(self, timeout_s: float | None) -> bytes:
        try:
            return await self._response.read(timeout_s)
        finally:
            self._end()

    def iter_chunks(self) -> AsyncIterator[bytes]:
        return self._response.iter_chunks()  # a stream ends when it is closed

    async def close(self) -> None:
        try:
            await self._response.close()
        finally:
            self._end()

    def _end(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client._ended()

    def __del__(self) -> None:  # dropped unread: the call is over all the same
        self._end()
