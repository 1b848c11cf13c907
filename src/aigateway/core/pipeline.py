"""The request pipeline: every step a request goes through, in order, on one screen.

route      model -> ordered targets (provider, model)
cache      (response cache: a later issue)
dedup      (identical in-flight requests: a later issue)
admission  (priority queue, node-wide rate limits: a later issue)
dispatch   provider adapter -> pooled upstream client, retries with backoff
account    (shared-memory stats: a later issue)
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aigateway.core.dispatch import send_with_retries
from aigateway.core.retry import RetryPolicy
from aigateway.core.router import Router
from aigateway.core.streaming import relay_stream
from aigateway.core.types import ApiRequest, Completed, Streaming, Target
from aigateway.errors import InvalidRequest
from aigateway.providers.base import (
    ChatAdapter,
    EmbeddingsAdapter,
    ModelListAdapter,
    UpstreamCall,
)
from aigateway.upstream import UpstreamClient


@dataclass(frozen=True, slots=True)
class Provider:
    """A configured provider in this worker: its adapter and its pooled client."""

    name: str
    adapter: ChatAdapter
    client: UpstreamClient


class Pipeline:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        router: Router,
        retry: RetryPolicy,
        request_timeout_s: float,
    ) -> None:
        self._providers = providers
        self._router = router
        self._retry = retry
        self._timeout_s = request_timeout_s

    async def chat(self, request: ApiRequest) -> Completed | Streaming:
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        target = self._router.targets(request.model)[0]  # route
        provider = self._providers[target.provider]
        adapter = provider.adapter
        answer = await send_with_retries(  # dispatch
            provider.client,
            adapter.chat_call(request, target.model),
            adapter.classify_error,
            self._retry,
            deadline,
            provider=provider.name,
            stream=request.stream,
        )
        if request.stream:
            translator = adapter.chat_stream(request, target.model)
            events = relay_stream(answer, adapter, translator)
            return Streaming(events, provider.name, answer.attempts)
        body = adapter.chat_response(answer.body, request, target.model)
        return Completed(body, provider.name, answer.attempts)

    async def embeddings(self, request: ApiRequest) -> Completed:
        target = self._router.targets(request.model)[0]
        provider = self._providers[target.provider]
        adapter = provider.adapter
        if not isinstance(adapter, EmbeddingsAdapter):
            raise _unsupported(target, "embeddings")
        body = await self._call(provider, adapter.embeddings_call(request, target.model))
        return Completed(adapter.embeddings_response(body), provider.name, 1)

    async def models(self) -> list[dict[str, Any]]:
        models: list[dict[str, Any]] = []
        for provider in self._providers.values():
            adapter = provider.adapter
            if isinstance(adapter, ModelListAdapter):
                body = await self._call(provider, adapter.models_call())
                models.extend(adapter.models_response(body))
        return models

    async def _call(self, provider: Provider, call: UpstreamCall) -> bytes:
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        answer = await send_with_retries(
            provider.client,
            call,
            provider.adapter.classify_error,
            self._retry,
            deadline,
            provider=provider.name,
        )
        return answer.body


def _unsupported(target: Target, operation: str) -> InvalidRequest:
    return InvalidRequest(
        f"provider {target.provider!r} does not offer {operation}",
        param="model",
        code="unsupported_operation",
    )
