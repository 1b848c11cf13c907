"""OpenAI's Responses API: ``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``.

The request goes through the one pipeline (cache, de-duplication, admission, retries,
failover) as a Responses request whose input is the whole conversation; target by target
(``providers/responses.py``) an OpenAI target gets it on its own Responses API, any other
the chat translation (``providers/_responses_request.py``), and the answer comes back a
Response object or Responses events either way. Here the events get their ``event:``
names, a gateway error after the 200 becomes ``error`` + ``response.failed``, and an
answer not fresh from a provider (a cache hit, a shared call) gets an id of its own.
docs/api.md has how each field reaches each provider.

A response stored (``store``, true by default) keeps its output and the input that led
to it under the client's key (``cache/response_store.py``, shared by the nodes with Redis:
``cluster/response_tier.py``): ``previous_response_id`` and ``item_reference`` items read
it back; ``GET`` and ``DELETE`` see only the caller's own. A response OpenAI answered with
``store`` on is kept by OpenAI too: its next turn there is sent by id (``HeldTurn``).
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
from aigateway.cache.response_store import Responses, StoredResponse
from aigateway.core.pipeline import Pipeline
from aigateway.errors import GatewayError, InvalidRequest, NotFound
from aigateway.hotpath import SSEDecoder
from aigateway.providers._openai_format import load_any
from aigateway.providers._responses_answer import new_id
from aigateway.providers._responses_request import ResponsesRequest, chat_body, read_request
from aigateway.wire import ApiRequest, HeldTurn, Streaming, close_events

logger = logging.getLogger("aigateway.responses")

JsonObject = dict[str, Any]


class ResponsesRoutes:
    """Handlers bound to the worker's pipeline and response store (set by the lifespan)."""

    def __init__(
        self, max_body_bytes: int, builder: RequestBuilder, keepers: frozenset[str] = frozenset()
    ) -> None:
        """``keepers``: the providers whose Responses API keeps a stored response itself."""
        self.max_body_bytes = max_body_bytes
        self.builder = builder
        self.keepers = keepers
        self.pipeline: Pipeline | None = None
        self.store: Responses | None = None

    def routes(self) -> list[Route]:
        return [
            Route("/v1/responses", self.create, methods=["POST"]),
            Route("/v1/responses/{response_id}", self.retrieve, methods=["GET"]),
            Route("/v1/responses/{response_id}", self.delete, methods=["DELETE"]),
        ]

    def _ready(self) -> tuple[Pipeline, Responses]:
        assert self.pipeline is not None and self.store is not None, "lifespan not started"
        return self.pipeline, self.store

    async def create(self, request: Request) -> Response:
        pipeline, store = self._ready()
        parsed = parse_responses_request(await read_body(request, self.max_body_bytes))
        owner = self.builder.owner(request)
        previous, items = await _conversation(store, owner, parsed)
        check_translatable(parsed, items)
        api_request = self.builder.build(request, responses_request(parsed, previous, items))
        result = await pipeline.chat(api_request, observer_of(request))
        headers = answer_headers(result)
        # A fresh answer of a provider that keeps responses itself (OpenAI, store on) is
        # kept there too; an answer the gateway made or served again is the gateway's own.
        fresh = result.cache == "miss"
        holder = result.provider if fresh and result.provider in self.keepers else None
        finish = _Finisher(parsed, fresh)
        keep = _Keeper(store, owner, items, holder) if parsed.store else None
        if isinstance(result, Streaming):
            events = _events(result.events, finish, keep)
            return EventStream(
                events, media_type="text/event-stream", headers={**STREAM_HEADERS, **headers}
            )
        answer = finish(orjson.loads(result.body))
        if keep is not None:
            await keep(answer)
        return json_response(answer, headers=headers)

    async def retrieve(self, request: Request) -> Response:
        _, store = self._ready()
        response_id = request.path_params["response_id"]
        record = await store.get(self.builder.owner(request), response_id)
        if record is None:
            raise _not_found(response_id)
        return json_response(record.response)

    async def delete(self, request: Request) -> Response:
        """The gateway's copy goes, and the provider's when it keeps one (OpenAI)."""
        pipeline, store = self._ready()
        response_id = request.path_params["response_id"]
        owner = self.builder.owner(request)
        record = await store.get(owner, response_id)
        if not await store.delete(owner, response_id):
            raise _not_found(response_id)
        if record is not None and record.holder is not None:
            try:
                await pipeline.forget_response(record.holder, response_id, observer_of(request))
            except GatewayError as exc:  # gone there already, or unreachable: said in the log
                logger.warning("%s kept response %s: %s", record.holder, response_id, exc)
        return json_response({"id": response_id, "object": "response", "deleted": True})


def parse_responses_request(raw: bytes) -> ResponsesRequest:
    """A Responses body checked (400 naming the field), before any stored turn is read."""
    return read_request(parse_json_object(raw))


def chat_request(parsed: ResponsesRequest, items: list[JsonObject]) -> ApiRequest:
    """The chat request for the conversation ``items``, checked like any chat request."""
    chat = chat_body(parsed, items)
    check_depth(chat)
    return parse_chat_request(orjson.dumps(chat))


def check_translatable(parsed: ResponsesRequest, items: list[JsonObject]) -> None:
    """A 400 at once for what no target could take; what only OpenAI's Responses API
    supports (``unsupported_parameter``: a built-in tool, a file input) goes on, to be
    refused by a target that needs the translation."""
    try:
        chat_request(parsed, items)
    except InvalidRequest as exc:
        if exc.code != "unsupported_parameter":
            raise


def responses_request(
    parsed: ResponsesRequest, previous: StoredResponse | None, items: list[JsonObject]
) -> ApiRequest:
    """The pipeline's request: the client's body with the whole conversation as its input
    (so the cache key is the conversation's, whoever keeps it), and the previous turn when
    its provider keeps it (that provider is sent ``previous_response_id`` instead)."""
    body = {k: v for k, v in parsed.body.items() if k != "previous_response_id"}
    body["input"] = items
    held = None
    if previous is not None and previous.holder is not None:
        response_id = str(previous.response.get("id"))
        held = HeldTurn(previous.holder, response_id, len(parsed.items))
    raw = orjson.dumps(body)
    return ApiRequest("responses", parsed.model, body, raw, stream=parsed.stream, held=held)


async def _conversation(
    store: Responses, owner: str, parsed: ResponsesRequest
) -> tuple[StoredResponse | None, list[JsonObject]]:
    """The previous response ``previous_response_id`` names, and the whole conversation as
    input items: its turns (their input and output), then the new items, references
    resolved."""
    items: list[JsonObject] = []
    previous = None
    if parsed.previous_response_id is not None:
        previous = await store.get(owner, parsed.previous_response_id)
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
            found = await store.item(owner, str(item.get("id")))
            if found is None:
                raise InvalidRequest(
                    f"Item with id '{item.get('id')}' not found.",
                    param=f"input[{i}].id",
                    code="not_found",
                )
            item = found
        items.append(item)
    return previous, items


class _Finisher:
    """The client's view of an answer, whoever made it: the ``previous_response_id`` and
    ``store`` it asked for, and a new id when the answer was not fresh from a provider (a
    cache hit or a shared call), so no two clients hold one response id."""

    def __init__(self, parsed: ResponsesRequest, fresh: bool) -> None:
        self.previous = parsed.previous_response_id
        self.store = parsed.store
        self.new_id = None if fresh else new_id("resp_")

    def __call__(self, response: JsonObject) -> JsonObject:
        response["previous_response_id"] = self.previous
        response["store"] = self.store
        if self.new_id is not None:
            response["id"] = self.new_id
        return response


class _Keeper:
    """Stores a finished response with the conversation that led to it; a store that
    cannot write never fails the answer (the client has it already)."""

    def __init__(
        self, store: Responses, owner: str, items: list[JsonObject], holder: str | None
    ) -> None:
        self.store, self.owner, self.items, self.holder = store, owner, items, holder

    async def __call__(self, response: JsonObject) -> None:
        if response.get("status") not in ("completed", "incomplete"):
            return
        try:
            await self.store.put(self.owner, StoredResponse(response, self.items, self.holder))
        except Exception as exc:
            logger.warning("could not store response %s: %r", response.get("id"), exc)


async def _events(
    pipeline_events: AsyncIterator[bytes], finish: _Finisher, keep: _Keeper | None
) -> AsyncIterator[bytes]:
    """The pipeline's ``data:`` events as Responses server-sent events (``event: <type>``
    named); a gateway error (OpenAI's error shape, the stream having started) becomes an
    ``error`` event then ``response.failed``; the response is stored once it ended well."""
    decoder = SSEDecoder()
    state = _StreamState()
    kept = False
    try:
        async for piece in pipeline_events:
            out = b"".join([state.event(data, finish) for data in decoder.feed(piece)])
            if keep is not None and state.final is not None and not kept:
                kept = True
                await keep(state.final)  # before its last event: the next turn may follow
            if out:
                yield out
        out = b"".join([state.event(data, finish) for data in decoder.flush()])
        if state.final is None and not state.failed:  # ended without its last event
            out += state.fail({"code": "server_error", "message": "the stream broke off"})
        if keep is not None and state.final is not None and not kept:
            await keep(state.final)
        if out:
            yield out
    finally:
        await close_events(pipeline_events)


class _StreamState:
    """What the route tracks of one stream: the last sequence number, the response as
    last seen, the final one."""

    def __init__(self) -> None:
        self.sequence = -1
        self.response: JsonObject | None = None
        self.final: JsonObject | None = None
        self.failed = False

    def event(self, data: bytes, finish: _Finisher) -> bytes:
        if data == b"[DONE]" or self.failed or self.final is not None:
            return b""
        payload = load_any(data)
        if not isinstance(payload, dict):
            return b""
        kind = payload.get("type")
        if not isinstance(kind, str):
            error = payload.get("error")
            return self.fail(error if isinstance(error, dict) else {}) if error else b""
        number = payload.get("sequence_number")
        if isinstance(number, int):
            self.sequence = number
        response = payload.get("response")
        if isinstance(response, dict):
            payload["response"] = self.response = finish(response)
            if kind in ("response.completed", "response.incomplete"):
                self.final = self.response
            data = orjson.dumps(payload)
        return _frame(kind, data)

    def fail(self, error: JsonObject) -> bytes:
        """OpenAI's ``error`` event, then ``response.failed``."""
        self.failed = True
        code = str(error.get("code") or error.get("type") or "server_error")
        message = str(error.get("message") or "the provider failed")
        head = {"type": "error", "code": code, "message": message, "param": error.get("param"),
                "sequence_number": self.sequence + 1}  # fmt: skip
        response = dict(self.response or {"object": "response", "output": []})
        response.update(status="failed", error={"code": code, "message": message})
        failed = {"type": "response.failed", "response": response,
                  "sequence_number": self.sequence + 2}  # fmt: skip
        return _frame("error", orjson.dumps(head)) + _frame("response.failed", orjson.dumps(failed))


def _frame(kind: str, data: bytes) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param="response_id")
