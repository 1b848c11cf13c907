"""OpenAI-compatible endpoints: official OpenAI SDKs work by changing only base_url."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigateway.api.http import apply_headers, event_stream, json_response, read_body
from aigateway.api.validation import parse_chat_request, parse_embeddings_request
from aigateway.cache.service import client_scope
from aigateway.core.pipeline import Pipeline
from aigateway.core.types import Streaming


class OpenAIRoutes:
    """Handlers bound to the worker's pipeline (set when the lifespan starts)."""

    def __init__(self, max_body_bytes: int, scope_by_key: bool = False) -> None:
        self.max_body_bytes = max_body_bytes
        self.scope_by_key = scope_by_key
        self.pipeline: Pipeline | None = None

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
        ]

    def _pipeline(self) -> Pipeline:
        assert self.pipeline is not None, "the app's lifespan has not started"
        return self.pipeline

    async def chat_completions(self, request: Request) -> Response:
        chat = parse_chat_request(await read_body(request, self.max_body_bytes))
        apply_headers(request, chat)
        if self.scope_by_key:
            chat.cache_scope = client_scope(request.headers.get("authorization"))
        result = await self._pipeline().chat(chat)
        headers = {"x-aigateway-provider": result.provider, "x-aigateway-cache": result.cache}
        if isinstance(result, Streaming):
            return event_stream(result, chat, headers)
        return json_response(result.body, headers=headers)

    async def embeddings(self, request: Request) -> Response:
        embed = parse_embeddings_request(await read_body(request, self.max_body_bytes))
        apply_headers(request, embed)
        result = await self._pipeline().embeddings(embed)
        return json_response(result.body, headers={"x-aigateway-provider": result.provider})

    async def models(self, request: Request) -> Response:
        models = await self._pipeline().models()
        return json_response({"object": "list", "data": models})
