"""The upstream HTTP client: the one module that talks to providers over the network.

Nothing else in the gateway imports aiohttp's or httpx's client (the load benchmark's
own clients aside). The interface is
narrow on purpose: send a request and get the status and headers, then read the
whole body or iterate over it as it arrives, then close. Each worker process holds
one pooled client per provider (created in the ASGI lifespan).

aiohttp is the default: measured on a 2-core machine, its client costs about
0.2 ms of CPU per request against 1.3 ms for httpx. httpx stays selectable with
``UPSTREAM_CLIENT=httpx``, and is imported only then: its package imports its command
line (click, rich, pygments), ~150 modules and 5-8 MB in every worker that would never
use them.

Failures are reported as the exceptions below, whatever the library:

    UpstreamFailure
    ├── UpstreamConnectError    no connection, or it dropped before an answer
    ├── UpstreamTimeout         the caller's time budget ran out
    ├── UpstreamBrokenBody      the answer started, then its body broke off
    └── UpstreamTooLarge        the whole body would pass ``PoolLimits.max_response_bytes``

A whole body is read up to ``max_response_bytes`` and no further (a declared length past
it fails at once), so a provider cannot make a worker hold more than that.  A stream is
read as the caller consumes it: the libraries stop reading the socket while their small
buffer is full, so a slow client slows the provider down instead of filling memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import aiohttp

if TYPE_CHECKING:
    import httpx


class UpstreamFailure(Exception):
    """A provider call that did not produce a complete HTTP answer."""


class UpstreamConnectError(UpstreamFailure):
    pass


class UpstreamTimeout(UpstreamFailure):
    pass


class UpstreamBrokenBody(UpstreamFailure):
    pass


class UpstreamTooLarge(UpstreamFailure):
    pass


@dataclass(frozen=True, slots=True)
class PoolLimits:
    max_connections: int
    connect_timeout_s: float
    keepalive_expiry_s: float
    # Longest silence between two body chunks (streams can outlive any total deadline).
    read_idle_timeout_s: float
    # Largest whole body read into memory (None: no limit).
    max_response_bytes: int | None = None


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]  # names looked up case-insensitively

    async def read(self, timeout_s: float | None) -> bytes:
        """The whole body, within ``timeout_s`` (None: the caller bounds the time)."""
        ...

    def iter_chunks(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


class UpstreamClient(Protocol):
    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout_s: float | None,
    ) -> UpstreamResponse:
        """Send a request and wait, at most ``timeout_s``, for the status line and headers
        (None: the caller bounds the time, e.g. one deadline over sending and reading)."""
        ...

    async def close(self) -> None: ...


def _too_large(limit: int) -> UpstreamTooLarge:
    return UpstreamTooLarge(f"provider answer is larger than the limit of {limit} bytes")


async def _read_bounded(
    chunks: AsyncIterator[bytes], declared: int | None, limit: int | None
) -> bytes | None:
    """The whole body from ``chunks``, at most ``limit`` bytes; None when unlimited."""
    if limit is None:
        return None
    if declared is not None and declared > limit:
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def create_upstream_client(kind: str, limits: PoolLimits) -> UpstreamClient:
    if kind == "aiohttp":
        return AiohttpClient(limits)
    if kind == "httpx":
        return HttpxClient(limits)
    raise ValueError(f"unknown upstream client {kind!r}: expected aiohttp or httpx")


# --- aiohttp -----------------------------------------------------------------------------

_AIOHTTP_CONNECT_ERRORS = (aiohttp.ClientConnectionError, OSError)


class _AiohttpResponse:
    __slots__ = ("_limit", "_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse, limit: int | None) -> None:
        self._resp = resp
        self._limit = limit
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers  # case-insensitive already

    async def read(self, timeout_s: float | None) -> bytes:
        resp = self._resp
        try:
            async with _within(timeout_s):
                body = await _read_bounded(
                    resp.content.iter_any(), resp.content_length, self._limit
                )
                return await resp.read() if body is None else body
        except UpstreamTooLarge:
            resp.close()  # the rest is never read: the connection cannot be reused
            raise
        except TimeoutError:
            raise UpstreamTimeout("provider answer did not complete in time") from None
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamBrokenBody(f"provider answer broke off: {exc}") from None
        except _AIOHTTP_CONNECT_ERRORS as exc:
            raise UpstreamBrokenBody(f"provider connection lost: {exc}") from None
        finally:
            self._resp.release()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except TimeoutError:
            raise UpstreamTimeout("provider stream went silent") from None
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamBrokenBody(f"provider stream broke off: {exc}") from None
        except _AIOHTTP_CONNECT_ERRORS as exc:
            raise UpstreamBrokenBody(f"provider connection lost: {exc}") from None

    async def close(self) -> None:
        # A body not read to its end cannot go back to the pool: drop that connection.
        if not self._resp.closed:
            self._resp.close()


class AiohttpClient:
    def __init__(self, limits: PoolLimits) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession must be made inside the running loop.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections,
                limit_per_host=0,
                keepalive_timeout=self._limits.keepalive_expiry_s,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=self._limits.connect_timeout_s,
                    sock_read=self._limits.read_idle_timeout_s,
                ),
                skip_auto_headers=("User-Agent",),
                raise_for_status=False,
            )
        return self._session

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout_s: float | None,
    ) -> UpstreamResponse:
        session = self._get_session()
        try:
            async with _within(timeout_s):
                resp = await session.request(method, url, headers=headers, data=body)
        except TimeoutError:
            raise UpstreamTimeout("provider did not answer in time") from None
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamConnectError(f"provider connection failed: {exc}") from None
        except _AIOHTTP_CONNECT_ERRORS as exc:
            raise UpstreamConnectError(_describe(exc)) from None
        return _AiohttpResponse(resp, self._limits.max_response_bytes)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# --- httpx (imported where used: only by a worker that chose it) --------------------------


class _HttpxResponse:
    __slots__ = ("_limit", "_resp", "headers", "status")

    def __init__(self, resp: httpx.Response, limit: int | None) -> None:
        self._resp = resp
        self._limit = limit
        self.status = resp.status_code
        self.headers: Mapping[str, str] = resp.headers  # case-insensitive already

    async def read(self, timeout_s: float | None) -> bytes:
        import httpx

        resp = self._resp
        try:
            async with _within(timeout_s):
                declared = resp.headers.get("content-length")
                length = int(declared) if declared is not None and declared.isdigit() else None
                body = await _read_bounded(resp.aiter_bytes(), length, self._limit)
                return await resp.aread() if body is None else body
        except TimeoutError:
            raise UpstreamTimeout("provider answer did not complete in time") from None
        except httpx.TimeoutException:
            raise UpstreamTimeout("provider answer went silent") from None
        except httpx.TransportError as exc:
            raise UpstreamBrokenBody(f"provider answer broke off: {exc}") from None
        finally:
            await self._resp.aclose()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        import httpx

        try:
            async for chunk in self._resp.aiter_raw():
                yield chunk
        except httpx.TimeoutException:
            raise UpstreamTimeout("provider stream went silent") from None
        except httpx.TransportError as exc:
            raise UpstreamBrokenBody(f"provider stream broke off: {exc}") from None

    async def close(self) -> None:
        await self._resp.aclose()


class HttpxClient:
    def __init__(self, limits: PoolLimits) -> None:
        import httpx

        self._limit = limits.max_response_bytes
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_connections,
                keepalive_expiry=limits.keepalive_expiry_s,
            ),
            timeout=httpx.Timeout(
                connect=limits.connect_timeout_s,
                read=limits.read_idle_timeout_s,
                write=limits.read_idle_timeout_s,
                pool=None,
            ),
            follow_redirects=False,
        )

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout_s: float | None,
    ) -> UpstreamResponse:
        import httpx

        request = self._client.build_request(method, url, headers=headers, content=body)
        try:
            async with _within(timeout_s):
                resp = await self._client.send(request, stream=True)
        except TimeoutError:
            raise UpstreamTimeout("provider did not answer in time") from None
        except httpx.TimeoutException as exc:
            # httpx's own connect timeout is a connection failure, worth a retry.
            raise UpstreamConnectError(f"provider connection timed out: {exc!r}") from None
        except httpx.TransportError as exc:
            raise UpstreamConnectError(_describe(exc)) from None
        return _HttpxResponse(resp, self._limit)

    async def close(self) -> None:
        await self._client.aclose()


def _within(timeout_s: float | None) -> contextlib.AbstractAsyncContextManager[object]:
    """A bound of ``timeout_s`` seconds, or none when the caller already keeps one: every
    ``asyncio.timeout`` schedules (and cancels) a timer on the event loop."""
    return contextlib.nullcontext() if timeout_s is None else asyncio.timeout(timeout_s)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"provider connection failed: {text}"
