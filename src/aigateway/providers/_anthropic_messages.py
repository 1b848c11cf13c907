"""``/v1/messages`` passed through to Anthropic: the client's body and events as they are.

The body goes on with only its ``model`` set to the target's (thinking blocks and their
signatures, ``cache_control`` markers, tools, images, ``system`` blocks, ``metadata``,
``stop_sequences``, ``top_k`` and fields this gateway has never heard of all reach
Anthropic), with the client's ``anthropic-beta`` header. Answers come back unchanged;
stream events too, except that ``message_delta``'s usage also carries the input counts
of ``message_start`` (cumulative counts, as Anthropic itself may send them), so the
gateway's accounting and cache see the whole usage in one event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from aigateway.errors import GatewayError, ProviderError
from aigateway.providers._openai_format import JsonObject, load_any, load_object
from aigateway.providers.base import UpstreamCall
from aigateway.wire import ApiRequest

__all__ = ["NativeMessagesStream", "count_tokens_call", "messages_call", "messages_response"]

# Messages fields the count_tokens endpoint does not take (it refuses unknown fields).
_NOT_COUNTED = ("max_tokens", "stream", "metadata", "stop_sequences", "temperature", "top_p",
                "top_k", "service_tier")  # fmt: skip


def _headers(base: Mapping[str, str], request: ApiRequest) -> Mapping[str, str]:
    if not request.provider_headers:
        return base
    return {**base, **dict(request.provider_headers)}


def messages_call(
    url: str, headers: Mapping[str, str], request: ApiRequest, model: str
) -> UpstreamCall:
    same = model == request.model
    body = request.raw if same else orjson.dumps({**request.body, "model": model})
    return UpstreamCall("POST", url + "/messages", _headers(headers, request), body)


def count_tokens_call(
    url: str, headers: Mapping[str, str], request: ApiRequest, model: str
) -> UpstreamCall:
    body = {k: v for k, v in request.body.items() if k not in _NOT_COUNTED}
    body["model"] = model
    call_headers = _headers(headers, request)
    return UpstreamCall("POST", url + "/messages/count_tokens", call_headers, orjson.dumps(body))


def messages_response(provider: str, body: bytes) -> bytes:
    """The answer as Anthropic sent it, once known to be a message."""
    answer = load_object(provider, body)
    if not isinstance(answer.get("content"), list):
        raise ProviderError(f"{provider} answered with a message in an unexpected shape")
    return body


class _StreamErrors(Protocol):
    name: str

    def stream_error(self, payload: JsonObject, data: bytes) -> GatewayError: ...


class NativeMessagesStream:
    """Anthropic's events, passed on; an ``error`` event raises (the relay ends the stream
    with it), and a stream cut before its ``message_delta`` is an error too."""

    __slots__ = ("_adapter", "_finished", "_stopped", "_usage")

    def __init__(self, adapter: _StreamErrors) -> None:
        self._adapter = adapter
        self._usage: dict[str, Any] = {}
        self._finished = False  # message_delta seen
        self._stopped = False  # message_stop seen

    def event(self, data: bytes) -> list[bytes]:
        payload = load_any(data)
        if not isinstance(payload, dict):
            raise ProviderError(f"{self._adapter.name} sent a stream event that is not JSON")
        if self._stopped:
            return []
        kind = payload.get("type")
        if kind == "error":
            raise self._adapter.stream_error(payload, data)
        if kind == "message_start":
            message = payload.get("message")
            if isinstance(message, dict):
                self._add(message.get("usage"))
        elif kind == "message_delta":
            self._finished = True
            self._add(payload.get("usage"))
            return [orjson.dumps({**payload, "usage": dict(self._usage)})]
        elif kind == "message_stop":
            self._stopped = True
        return [data]

    def _add(self, counts: Any) -> None:
        if isinstance(counts, dict):
            self._usage.update((k, v) for k, v in counts.items() if v is not None)

    def end(self) -> list[bytes]:
        if self._stopped:
            return []
        if not self._finished:
            raise ProviderError(f"{self._adapter.name} stream ended before the answer was complete")
        return [b'{"type":"message_stop"}']  # finished, only message_stop went missing
