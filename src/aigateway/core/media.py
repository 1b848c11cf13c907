"""Fetch remote images for providers that only take inline data (Gemini).

Translators do no I/O, so this step runs before the adapter builds its request: every
``image_url`` part with an http(s) URL is downloaded (size limit, timeout, image types
only) and replaced by a ``data:`` URL. Addresses on loopback or private networks are
refused unless allowed, so clients cannot make the gateway probe its own network.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import orjson

from aigateway.errors import InvalidRequest
from aigateway.providers.base import ChatAdapter
from aigateway.upstream import UpstreamClient, UpstreamFailure
from aigateway.wire import ApiRequest


class RemoteMedia:
    def __init__(
        self, client: UpstreamClient, max_bytes: int, timeout_s: float, allow_private: bool
    ) -> None:
        self._client = client
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._allow_private = allow_private

    async def prepare(
        self, request: ApiRequest, adapter: ChatAdapter, deadline: float
    ) -> ApiRequest:
        """``request`` with remote images inlined when ``adapter`` needs that; else unchanged."""
        if not getattr(adapter, "inline_remote_images", False):
            return request
        kind = request.operation  # where its images sit: parts, Anthropic blocks, items
        find = {"chat": _remote_images, "messages": _remote_blocks, "responses": _remote_inputs}
        if kind not in find:
            return request
        spots = find[kind](request.body)
        if not spots:
            return request
        budget = min(self._timeout_s, deadline - asyncio.get_running_loop().time())
        body = orjson.loads(request.raw)  # a private copy to rewrite
        total = 0
        for i, j, url in spots:
            param = _PARAMS[kind].format(i=i, j=j)
            mime, data = await self._fetch(url, param, budget, self._max_bytes - total)
            total += len(data)
            encoded = base64.b64encode(data).decode()
            if kind == "messages":
                part = body["messages"][i]["content"][j]
                part["source"] = {"type": "base64", "media_type": mime, "data": encoded}
            elif kind == "responses":
                body["input"][i]["content"][j]["image_url"] = f"data:{mime};base64,{encoded}"
            else:
                body["messages"][i]["content"][j]["image_url"]["url"] = (
                    f"data:{mime};base64,{encoded}"
                )
        # Everything else the client asked for (scope, deadline, cache controls) stays.
        return dataclasses.replace(request, body=body, raw=orjson.dumps(body))

    async def _fetch(self, url: str, param: str, timeout_s: float, limit: int) -> tuple[str, bytes]:
        await self._check_address(url, param)
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._client.send(
                    "GET", url, headers={}, body=None, timeout_s=timeout_s
                )
                try:
                    if response.status != 200:
                        raise _bad(param, f"fetching the image gave HTTP {response.status}")
                    mime = response.headers.get("content-type", "").split(";")[0].strip()
                    if not mime.startswith("image/"):
                        raise _bad(param, f"the URL is not an image (content-type {mime!r})")
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.iter_chunks():
                        size += len(chunk)
                        if size > limit:
                            raise _bad(param, f"the images are larger than {self._max_bytes} bytes")
                        chunks.append(chunk)
                    return mime, b"".join(chunks)
                finally:
                    await response.close()
        except TimeoutError:
            raise _bad(param, f"fetching the image took longer than {timeout_s:.1f} s") from None
        except UpstreamFailure as exc:
            raise _bad(param, f"the image could not be fetched: {exc}") from None

    async def _check_address(self, url: str, param: str) -> None:
        host = urlsplit(url).hostname or ""
        if self._allow_private:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM
            )
        except OSError:
            raise _bad(param, f"the image host {host!r} cannot be resolved") from None
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if not address.is_global:
                raise _bad(param, "the image URL points into a private network")


def _remote_images(body: dict[str, Any]) -> list[tuple[int, int, str]]:
    spots = []
    for i, message in enumerate(body.get("messages") or ()):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "image_url":
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else None
                if isinstance(url, str) and url.startswith(("http://", "https://")):
                    spots.append((i, j, url))
    return spots


_PARAMS = {
    "chat": "messages[{i}].content[{j}].image_url.url",
    "messages": "messages.{i}.content.{j}.source.url",
    "responses": "input[{i}].content[{j}].image_url",
}


def _remote_inputs(body: dict[str, Any]) -> list[tuple[int, int, str]]:
    """The URL images of a Responses body's input items (``input_image`` parts)."""
    items = body.get("input")
    spots = []
    for i, item in enumerate(items if isinstance(items, list) else ()):
        content = item.get("content") if isinstance(item, dict) else None
        for j, part in enumerate(content if isinstance(content, list) else ()):
            url = part.get("image_url") if isinstance(part, dict) else None
            if part.get("type") == "input_image" and isinstance(url, str) and _remote(url):
                spots.append((i, j, url))
    return spots


def _remote_blocks(body: dict[str, Any]) -> list[tuple[int, int, str]]:
    """The URL image blocks of a Messages body (``/v1/messages`` to such a target)."""
    spots = []
    for i, message in enumerate(body.get("messages") or ()):
        content = message.get("content") if isinstance(message, dict) else None
        for j, block in enumerate(content if isinstance(content, list) else ()):
            source = block.get("source") if isinstance(block, dict) else None
            if block.get("type") == "image" and isinstance(source, dict):
                url = source.get("url")
                if source.get("type") == "url" and isinstance(url, str) and _remote(url):
                    spots.append((i, j, url))
    return spots


def _remote(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def _bad(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_image_url")
