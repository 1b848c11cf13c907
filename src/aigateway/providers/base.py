"""What a provider adapter must do. Adapters translate; they do no I/O.

Each adapter turns the gateway's request into the provider's HTTP request and the
provider's answers (whole bodies, stream events, errors) back into OpenAI's
format. Optional capabilities are separate small interfaces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from aigateway.errors import GatewayError
from aigateway.wire import ApiRequest


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class ProviderFailure:
    """A provider's error answer, classified: its error's ``fault`` (see ``errors.Fault``)
    decides retry, failover and the provider's health."""

    error: GatewayError  # what the client gets if no retry succeeds
    retry_after_s: float | None = None  # the wait the provider asked for

    @property
    def retryable(self) -> bool:
        return self.error.fault.retryable


class StreamTranslator(Protocol):
    """Turns one provider stream into OpenAI chunk payloads; one instance per stream."""

    def event(self, data: bytes) -> list[bytes]:
        """One provider event's data as zero or more OpenAI ``chat.completion.chunk`` JSON.

        Raises :class:`GatewayError` for an error the provider reports inside the stream.
        """
        ...

    def end(self) -> list[bytes]:
        """Called once the provider's stream ended cleanly: any last chunks to send.

        Raises :class:`GatewayError` when the stream ended before the answer was complete.
        """
        ...


class ChatAdapter(Protocol):
    name: str

    def chat_call(self, request: ApiRequest, model: str) -> UpstreamCall:
        """The provider request for ``request`` (streaming when ``request.stream``)."""
        ...

    def chat_response(self, body: bytes, request: ApiRequest, model: str) -> bytes:
        """A whole provider answer as OpenAI ``chat.completion`` JSON."""
        ...

    def chat_stream(self, request: ApiRequest, model: str) -> StreamTranslator: ...

    def classify_error(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> ProviderFailure: ...


@runtime_checkable
class EmbeddingsAdapter(Protocol):
    def embeddings_call(self, request: ApiRequest, model: str) -> UpstreamCall: ...

    def embeddings_response(self, body: bytes, request: ApiRequest, model: str) -> bytes:
        """A provider's embeddings answer as OpenAI's ``list`` of embeddings."""
        ...


@runtime_checkable
class ModelListAdapter(Protocol):
    def models_call(self) -> UpstreamCall: ...

    def models_response(self, body: bytes) -> list[dict[str, Any]]: ...


@runtime_checkable
class MessagesAdapter(Protocol):
    """A provider that speaks Anthropic's Messages API: ``/v1/messages`` passes through."""

    def messages_call(self, request: ApiRequest, model: str) -> UpstreamCall: ...

    def messages_response(self, body: bytes, request: ApiRequest, model: str) -> bytes:
        """A whole answer, as the provider sent it (a Messages ``message``)."""
        ...

    def messages_stream(self, request: ApiRequest, model: str) -> StreamTranslator:
        """Its events as Messages event payloads (``data`` of each server-sent event)."""
        ...

    def count_tokens_call(self, request: ApiRequest, model: str) -> UpstreamCall:
        """``/v1/messages/count_tokens``: the answer is ``{"input_tokens": N}``."""
        ...


@runtime_checkable
class ResponsesAdapter(Protocol):
    """A provider that speaks OpenAI's Responses API: ``/v1/responses`` passes through."""

    def responses_call(self, request: ApiRequest, model: str) -> UpstreamCall: ...

    def responses_response(self, body: bytes, request: ApiRequest, model: str) -> bytes:
        """A whole answer, as the provider sent it (a ``response`` object)."""
        ...

    def responses_stream(self, request: ApiRequest, model: str) -> StreamTranslator:
        """Its events as Responses event payloads (``data`` of each server-sent event)."""
        ...

    def responses_delete_call(self, response_id: str) -> UpstreamCall:
        """Forget a response the provider keeps (``DELETE /v1/responses/{id}``)."""
        ...
