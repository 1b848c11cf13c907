"""Fake providers behind ``upstream.UpstreamClient``, the gateway's one transport seam, for
in-process tests on a virtual clock (tests/virtual_clock.py).

``FakeUpstream`` answers every call with its ``reply`` after ``reply.latency_s`` (virtual)
seconds, in OpenAI's format: a completion, a stream of one event per word (``gap_s``
apart), or a list of embeddings.  It keeps the time of each call and whether it was
closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import orjson

from aigateway.upstream import UpstreamConnectError


@dataclass
class Reply:
    """One answer of a fake provider, ``latency_s`` (virtual) seconds after the call; a
    stream's events come ``gap_s`` apart."""

    status: int = 200
    text: str = "hello"
    latency_s: float = 0.01
    unreachable: bool = False
    gap_s: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None  # an error's body in the provider's format (else OpenAI's)


@dataclass
class FakeResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    gap_s: float = 0.0
    closed: bool = False

    async def read(self, timeout_s: float | None) -> bytes:
        return self.body

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        for i, chunk in enumerate(self.chunks or [self.body]):
            if i:
                await asyncio.sleep(self.gap_s)
            yield chunk

    async def close(self) -> None:
        self.closed = True


@dataclass
class FakeUpstream:
    """A provider behind ``UpstreamClient``: every call gets ``reply``; ``calls`` keeps
    the (virtual) time of each."""

    reply: Reply = field(default_factory=Reply)
    calls: list[float] = field(default_factory=list)
    cancelled: list[float] = field(default_factory=list)
    closed: bool = False

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout_s: float | None,
    ) -> FakeResponse:
        assert not self.closed, "a call through a closed pool"
        loop = asyncio.get_running_loop()
        self.calls.append(loop.time())
        reply = self.reply
        try:
            await asyncio.sleep(reply.latency_s)
        except asyncio.CancelledError:
            self.cancelled.append(loop.time())
            raise
        if reply.unreachable:
            raise UpstreamConnectError("connection refused")
        if reply.status != 200:
            error = {"error": {"message": "boom", "type": "server_error"}}
            return FakeResponse(reply.status, reply.body or orjson.dumps(error), reply.headers)
        request = orjson.loads(body or b"{}")
        if url.endswith("/embeddings"):
            return FakeResponse(200, embeddings(request["input"]))
        if request.get("stream"):
            events = stream_events(reply.text)
            return FakeResponse(200, b"", chunks=events, gap_s=reply.gap_s)
        return FakeResponse(200, completion(reply.text))

    async def close(self) -> None:
        self.closed = True


def completion(text: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text},
                 "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
    )  # fmt: skip


def stream_events(text: str) -> list[bytes]:
    """A chat stream, one network chunk per word, then the usage and ``[DONE]``."""
    chunks = []
    for word in text.split():
        delta = {"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        chunks.append(_event({"id": "chatcmpl-1", "object": "chat.completion.chunk", **delta}))
    end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    chunks.append(_event({"id": "chatcmpl-1", "object": "chat.completion.chunk", **end}))
    chunks.append(_event({"id": "chatcmpl-1", "choices": [], "usage": usage}))
    return [*chunks, b"data: [DONE]\n\n"]


def _event(data: object) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def embeddings(inputs: str | list[str]) -> bytes:
    """One vector per input, [its length]."""
    texts = [inputs] if isinstance(inputs, str) else inputs
    data = [{"object": "embedding", "index": i, "embedding": [float(len(t))]}
            for i, t in enumerate(texts)]  # fmt: skip
    usage = {"prompt_tokens": len(texts), "total_tokens": len(texts)}
    return orjson.dumps({"object": "list", "data": data, "model": "m", "usage": usage})
