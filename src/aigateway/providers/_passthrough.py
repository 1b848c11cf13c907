"""A target that speaks the client's own API (Anthropic's Messages, OpenAI's Responses):
the body and the answers pass through the target's methods for that API, while its errors
are classified as for any call of that provider."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aigateway.providers.base import ChatAdapter, ProviderFailure, StreamTranslator, UpstreamCall
from aigateway.wire import ApiRequest

__all__ = ["PassedThrough"]


class PassedThrough:
    """``adapter`` answering in the client's API through its ``call``, ``response`` and
    ``stream`` methods for that API."""

    def __init__(
        self,
        adapter: ChatAdapter,
        call: Callable[[ApiRequest, str], UpstreamCall],
        response: Callable[[bytes, ApiRequest, str], bytes],
        stream: Callable[[ApiRequest, str], StreamTranslator],
    ) -> None:
        self.name = adapter.name
        self._adapter = adapter
        self._call, self._response, self._stream = call, response, stream

    def chat_call(self, request: ApiRequest, model: str) -> UpstreamCall:
        return self._call(request, model)

    def chat_response(self, body: bytes, request: ApiRequest, model: str) -> bytes:
        return self._response(body, request, model)

    def chat_stream(self, request: ApiRequest, model: str) -> StreamTranslator:
        return self._stream(request, model)

    def classify_error(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> ProviderFailure:
        return self._adapter.classify_error(status, headers, body)
