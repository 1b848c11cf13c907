"""OpenAI's Responses API: ``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``.

Every provider is reached through the chat path: the Responses request becomes the
gateway's chat request (``providers/_responses_request.py``), goes through the one
pipeline (cache, de-duplication, admission, retries, failover) like any chat request, and
the chat answer or stream comes back as a Response object or as Responses events
(``_responses_answer.py``, ``_responses_stream.py``). docs/api.md says why OpenAI targets
go through chat completions too, and how each field reaches each provider.

A response stored (``store``, true by default) keeps its output and the input that led
to it under the client's key (``cache/response_store.py``): ``previous_response_id`` and
``item_reference`` items read it back; ``GET`` and ``DELETE`` see only the caller's own.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigateway.api.builder import RequestBuilder
from aigateway.api.http import (
    STREAM_HEADERS,
    EventStream,
    answer_headers,
    json_response,
    observer_of,
    read_body,
)
from aigateway.api.validation import check_depth, parse_chat_request, parse_json_object
from aigateway.cache.response_store import ResponseStore, StoredResponse
from aigateway.core.pipeline import Pipeline
from aigateway.errors import InvalidRequest, NotFound
from aigateway.hotpath import SSEDecoder
from aigateway.providers._responses_answer import ResponseShell, from_completion
from aigateway.providers._responses_request import ResponsesRequest, chat_body, read_request
from aigateway.providers._responses_stream import ResponsesEvents
from aigateway.wire import ApiRequest, Streaming, close_events

logger = logging.getLogger("aigateway.responses")

JsonObject = dict[str, Any]


class ResponsesRoutes:
    """Handlers bound to the worker's pipeline and response store (set by the lifespan)."""

    def __init__(self, max_body_bytes: int, builder: RequestBuilder) -> None:
        self.max_body_bytes = max_body_bytes
        self.builder = builder
        self.pipeline: Pipeline | None = None
        self.store: ResponseStore | None = None

    def routes(self) -> list[Route]:
        return [
            Route("/v1/responses", self.create, methods=["POST"]),
            Route("/v1/responses/{response_id}", self.retrieve, methods=["GET"]),
            Route("/v1/responses/{response_id}", self.delete, methods=["DELETE"]),
        ]

    def _ready(self) -> tuple[Pipeline, ResponseStore]:
        assert self.pipeline is not None and self.store is not None, "lifespan not started"
        return self.pipeline, self.store

    async def create(self, request: Request) -> Response:
        pipeline, store = self._ready()
        parsed = parse_responses_request(await read_body(request, self.max_body_bytes))
        owner = self.builder.owner(request)
        items = _conversation(store, owner, parsed)
        api_request = self.builder.build(request, chat_request(parsed, items))
        result = await pipeline.chat(api_request, observer_of(request))
        shell = ResponseShell(parsed.body, parsed.model)
        headers = answer_headers(result)
        keep = _Keeper(store, owner, items) if parsed.store else None
        if isinstance(result, Streaming):
            events = _events(result.events, ResponsesEvents(shell), keep)
            return EventStream(
                events, media_type="text/event-stream", headers={**STREAM_HEADERS, **headers}
            )
        completion = result.completion
        if completion is None:
            completion = orjson.loads(result.body)
        answer = from_completion(shell, completion)
        if keep is not None:
            keep(answer)
        return json_response(answer, headers=headers)

    async def retrieve(self, request: Request) -> Response:
        _, store = self._ready()
        response_id = request.path_params["response_id"]
        record = store.get(self.builder.owner(request), response_id)
        if record is None:
            raise _not_found(response_id)
        return json_response(record.response)

    async def delete(self, request: Request) -> Response:
        _, store = self._ready()
        response_id = request.path_params["response_id"]
        if not store.delete(self.builder.owner(request), response_id):
            raise _not_found(response_id)
        return json_response({"id": response_id, "object": "response", "deleted": True})


def parse_responses_request(raw: bytes) -> ResponsesRequest:
    """A Responses body checked (400 naming the field), before any stored turn is read."""
    return read_request(parse_json_object(raw))


def chat_request(parsed: ResponsesRequest, items: list[JsonObject]) -> ApiRequest:
    """The chat request for the conversation ``items``, checked like any chat request."""
    chat = chat_body(parsed, items)
    check_depth(chat)
    return parse_chat_request(orjson.dumps(chat))


def _conversation(store: ResponseStore, owner: str, parsed: ResponsesRequest) -> list[JsonObject]:
    """The whole conversation as input items: the stored turns ``previous_response_id``
    names (their input and output), then the new items, references resolved."""
    items: list[JsonObject] = []
    if parsed.previous_response_id is not None:
        previous = store.get(owner, parsed.previous_response_id)
        if previous is None:
            raise InvalidRequest(
                f"Previous response with id '{parsed.previous_response_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        items.extend(previous.input)
        items.extend(previous.response.get("output") or ())
    for i, item in enumerate(parsed.items):
        if item.get("type") == "item_reference":
            found = store.item(owner, str(item.get("id")))
            if found is None:
                raise InvalidRequest(
                    f"Item with id '{item.get('id')}' not found.",
                    param=f"input[{i}].id",
                    code="not_found",
                )
            item = found
        items.append(item)
    return items


class _Keeper:
    """Stores a finished response with the conversation that led to it; a store that
    cannot write never fails the answer (the client has it already)."""

    def __init__(self, store: ResponseStore, owner: str, items: list[JsonObject]) -> None:
        self.store, self.owner, self.items = store, owner, items

    def __call__(self, response: JsonObject) -> None:
        try:
            self.store.put(self.owner, StoredResponse(response, self.items))
        except Exception as exc:
            logger.warning("could not store response %s: %r", response.get("id"), exc)


async def _events(
    chat: AsyncIterator[bytes], translator: ResponsesEvents, keep: _Keeper | None
) -> AsyncIterator[bytes]:
    """The chat stream's events as Responses events; the response is stored once it ended
    well."""
    decoder = SSEDecoder()
    try:
        yield translator.start()
        async for piece in chat:
            out = b"".join([translator.feed(data) for data in decoder.feed(piece)])
            if out:
                yield out
        out = b"".join([translator.feed(data) for data in decoder.flush()])
        if translator.final is None:  # the chat stream ended without [DONE] or an error
            out += translator.fail({"code": "server_error", "message": "the stream broke off"})
        yield out
        if keep is not None and translator.final is not None:
            keep(translator.final)
    finally:
        await close_events(chat)


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param="response_id")
