"""Which adapter answers a ``/v1/responses`` request, target by target.

    a provider speaking OpenAI's Responses API  ->  the body and events pass through
      (``ResponsesAdapter``: OpenAI itself,        (``openai_responses.py``); nothing
      a server configured with responses_api)      is lost in translation
    any other provider                          ->  the body becomes a chat body for the
                                                   target's own adapter
                                                   (``_responses_request.chat_body``); its
                                                   OpenAI answer and chunks become a
                                                   Response and Responses events

So one alias may fail over from OpenAI to Gemini, and the client still reads Responses.
A field or item only OpenAI's Responses API knows (a built-in tool, a file input) reaches
an OpenAI target; a translated target refuses it with a 400 naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import orjson

from aigateway.providers._passthrough import PassedThrough
from aigateway.providers._responses_answer import ResponseShell, from_completion
from aigateway.providers._responses_request import chat_body, read_request
from aigateway.providers._responses_stream import ResponsesEvents, payloads
from aigateway.providers.base import (
    ChatAdapter,
    ProviderFailure,
    ResponsesAdapter,
    StreamTranslator,
    UpstreamCall,
)
from aigateway.wire import ApiRequest

__all__ = ["answering"]


def answering(request: ApiRequest, adapter: ChatAdapter) -> ChatAdapter:
    """The adapter that answers a Responses ``request`` through ``adapter``."""
    if isinstance(adapter, ResponsesAdapter):
        return PassedThrough(
            adapter, adapter.responses_call, adapter.responses_response, adapter.responses_stream
        )
    return _Translated(adapter)


class _Translated:
    """A Responses request as the chat request of ``inner``, translated once per target."""

    def __init__(self, inner: ChatAdapter) -> None:
        self.name = inner.name
        self._inner = inner
        # Gemini takes images inline only: core.media fetches URL images first.
        self.inline_remote_images = bool(getattr(inner, "inline_remote_images", False))
        self._last: tuple[ApiRequest, ApiRequest] | None = None

    def _chat(self, request: ApiRequest) -> ApiRequest:
        if self._last is not None and self._last[0] is request:
            return self._last[1]
        parsed = read_request(request.body)
        body = chat_body(parsed, parsed.items)  # the body's input is the whole conversation
        chat = dataclasses.replace(
            request, operation="chat", body=body, raw=orjson.dumps(body), held=None
        )
        self._last = (request, chat)
        return chat

    def chat_call(self, request: ApiRequest, model: str) -> UpstreamCall:
        return self._inner.chat_call(self._chat(request), model)

    def chat_response(self, body: bytes, request: ApiRequest, model: str) -> bytes:
        completion = orjson.loads(self._inner.chat_response(body, self._chat(request), model))
        shell = ResponseShell(request.body, model)
        return orjson.dumps(from_completion(shell, completion))

    def chat_stream(self, request: ApiRequest, model: str) -> StreamTranslator:
        inner = self._inner.chat_stream(self._chat(request), model)
        return _EventsFromChunks(inner, ResponsesEvents(ResponseShell(request.body, model)))

    def classify_error(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> ProviderFailure:
        return self._inner.classify_error(status, headers, body)


class _EventsFromChunks:
    """A provider's stream as chat chunks (its own translator), then as Responses events."""

    __slots__ = ("_events", "_inner", "_started")

    def __init__(self, inner: StreamTranslator, events: ResponsesEvents) -> None:
        self._inner = inner
        self._events = events
        self._started = False

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        return payloads(self._events.start())

    def event(self, data: bytes) -> list[bytes]:
        out = self._start()
        for chunk in self._inner.event(data):
            out.extend(payloads(self._events.feed(chunk)))
        return out

    def end(self) -> list[bytes]:
        out = self._start()
        for chunk in self._inner.end():
            out.extend(payloads(self._events.feed(chunk)))
        out.extend(payloads(self._events.end()))
        return out
