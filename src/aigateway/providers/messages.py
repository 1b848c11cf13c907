"""Which adapter answers a ``/v1/messages`` request, target by target.

The pipeline asks every target the same four questions (``ChatAdapter``); for a Messages
request the answers must be Messages shapes whatever the target speaks:

    a provider speaking Anthropic's format  ->  the body and events pass through
                                               (``MessagesAdapter``, _anthropic_messages)
    any other provider                      ->  the body becomes a chat body for the
                                               target's own adapter; its OpenAI answer
                                               and chunks become a message and events
                                               (_messages_chat, _messages_stream)

So one alias may fail over from Claude to GPT, and the client still reads Messages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import orjson

from aigateway.providers._messages_chat import chat_body, message_from_completion
from aigateway.providers._messages_stream import MessagesFromChunks
from aigateway.providers._passthrough import PassedThrough
from aigateway.providers.base import (
    ChatAdapter,
    MessagesAdapter,
    ProviderFailure,
    StreamTranslator,
    UpstreamCall,
)
from aigateway.providers.gemini import GeminiAdapter
from aigateway.wire import ApiRequest

__all__ = ["answering"]


def answering(request: ApiRequest, adapter: ChatAdapter) -> ChatAdapter:
    """The adapter that answers ``request`` in its client's API through ``adapter``."""
    if request.operation != "messages":
        return adapter
    if isinstance(adapter, MessagesAdapter):
        return PassedThrough(
            adapter, adapter.messages_call, adapter.messages_response, adapter.messages_stream
        )
    return _Translated(adapter)


class _Translated:
    """A Messages request as the chat request of ``inner``, translated once per target."""

    def __init__(self, inner: ChatAdapter) -> None:
        self.name = inner.name
        self._inner = inner
        self._top_k = isinstance(inner, GeminiAdapter)  # OpenAI's format has no top_k
        # Gemini takes images inline only: core.media fetches URL image blocks first.
        self.inline_remote_images = bool(getattr(inner, "inline_remote_images", False))
        self._last: tuple[ApiRequest, ApiRequest] | None = None

    def _chat(self, request: ApiRequest) -> ApiRequest:
        if self._last is not None and self._last[0] is request:
            return self._last[1]
        body = chat_body(request.body, top_k=self._top_k)
        chat = dataclasses.replace(request, operation="chat", body=body, raw=orjson.dumps(body))
        self._last = (request, chat)
        return chat

    def chat_call(self, request: ApiRequest, model: str) -> UpstreamCall:
        return self._inner.chat_call(self._chat(request), model)

    def chat_response(self, body: bytes, request: ApiRequest, model: str) -> bytes:
        completion = self._inner.chat_response(body, self._chat(request), model)
        return message_from_completion(self.name, completion, model)

    def chat_stream(self, request: ApiRequest, model: str) -> StreamTranslator:
        inner = self._inner.chat_stream(self._chat(request), model)
        return MessagesFromChunks(inner, self.name, model)

    def classify_error(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> ProviderFailure:
        return self._inner.classify_error(status, headers, body)
