"""OpenAI-compatible endpoints: official OpenAI SDKs work by changing only base_url."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigateway.api.http import (
    answer_headers,
    answer_response,
    json_response,
    observer_of,
    read_body,
)
from aigateway.api.repeats import RepeatedHits
from aigateway.api.routes import PipelineRoutes
from aigateway.api.validation import parse_chat_request, parse_embeddings_request
from aigateway.errors import NotFound


class OpenAIRoutes(PipelineRoutes):
    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", self.model, methods=["GET"]),
        ]

    repeats: RepeatedHits | None = None  # set while the lifespan runs, with the cache on

    async def chat_completions(self, request: Request) -> Response:
        raw = await read_body(request, self.max_body_bytes)
        repeats, fingerprint = self.repeats, None
        if repeats is not None:
            fingerprint = repeats.fingerprint(request.scope, raw)
            answer = await repeats.answer(fingerprint) if fingerprint is not None else None
            if answer is not None:
                return answer
        chat = self.builder.build(request, parse_chat_request(raw))
        result = await self._pipeline().chat(chat, observer_of(request))
        if fingerprint is not None and repeats is not None:
            repeats.learn(fingerprint, chat, result)
        return answer_response(result, chat)

    async def embeddings(self, request: Request) -> Response:
        parsed = parse_embeddings_request(await read_body(request, self.max_body_bytes))
        embed = self.builder.build(request, parsed)
        result = await self._pipeline().embeddings(embed, observer_of(request))
        headers = answer_headers(result)
        del headers["x-aigateway-cache"]  # embeddings do not go through the cache
        return json_response(result.body, headers=headers)

    async def models(self, request: Request) -> Response:
        models = await self._pipeline().models(observer_of(request))
        return json_response({"object": "list", "data": models})

    async def model(self, request: Request) -> Response:
        """One model object (``client.models.retrieve``); 404 as OpenAI answers it."""
        model_id: str = request.path_params["model_id"]
        model = await self._pipeline().model(model_id, observer_of(request))
        if model is None:
            raise NotFound(
                f"The model '{model_id}' does not exist", param="model", code="model_not_found"
            )
        return json_response(model)
