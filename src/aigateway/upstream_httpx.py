"""The httpx client behind ``upstream.UpstreamClient`` (``UPSTREAM_CLIENT=httpx``).

A module of its own so that a worker on the default aiohttp client never imports httpx
(and the command-line tools httpx imports with it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import httpx

from aigateway.upstream import (
    PoolLimits,
    UpstreamBrokenBody,
    UpstreamConnectError,
    UpstreamResponse,
    UpstreamTimeout,
    _describe,
    _read_bounded,
    _within,
)


class _HttpxResponse:
    __slots__ = ("_limit", "_resp", "headers", "status")

    def __init__(self, resp: httpx.Response, limit: int | None) -> None:
        self._resp = resp
        self._limit = limit
        self.status = resp.status_code
        self.headers: Mapping[str, str] = resp.headers  # case-insensitive already

    async def read(self, timeout_s: float | None) -> bytes:
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
