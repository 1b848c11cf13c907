"""The gateway's own request and result types, shared by the API layer and the core."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

Operation = Literal["chat", "embeddings"]


@dataclass(slots=True)
class ApiRequest:
    """One validated client request in OpenAI's format.

    ``raw`` keeps the exact bytes the client sent, so a provider that speaks the
    same format gets them forwarded without a re-encode.
    """

    operation: Operation
    model: str
    body: dict[str, Any]
    raw: bytes
    stream: bool = False
    provider: str | None = None  # the native API's explicit provider
    priority: str = "normal"


@dataclass(frozen=True, slots=True)
class Target:
    """One place that can answer a request: a configured provider and its model name."""

    provider: str
    model: str


@dataclass(slots=True)
class Completed:
    """A whole answer, already in OpenAI's JSON format."""

    body: bytes
    provider: str
    model: str
    attempts: int


@dataclass(slots=True)
class Streaming:
    """An answer that streams: ``events`` yields OpenAI SSE bytes, ``data: [DONE]`` last."""

    events: AsyncIterator[bytes]
    provider: str
    model: str
    attempts: int
