"""OpenAI's wire format: OpenAI itself and any OpenAI-compatible server.

The gateway speaks this format to clients too, so requests are forwarded as the
client sent them (re-encoded only when the model name changes, or to ask a stream for
its usage) and answers are relayed unchanged once they are known to be in OpenAI's
shape: an answer that is not is the provider's failure (502), and a stream event that
is not a JSON object ends the stream with an error event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from aigateway.errors import (
    ProviderError,
)
from aigateway.providers._openai_format import (
    JsonObject,
    check_completion,
    include_usage,
    load_any,
    load_object,
)
from aigateway.providers.base import ProviderFailure, StreamTranslator, UpstreamCall
from aigateway.providers.failures import ErrorBody, Said, classify
from aigateway.wire import ApiRequest


class OpenAIAdapter:
    def __init__(self, name: str, base_url: str, api_key: str | None, key_variable: str) -> None:
        self.name = name
        self._base_url = base_url.rstrip("/")
        self._key_variable = key_variable
        headers = {"content-type": "application/json", "accept": "application/json"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._headers: Mapping[str, str] = headers
        self._get_headers: Mapping[str, str] = {
            k: v for k, v in headers.items() if k != "content-type"
        }

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIAdapter(name={self.name!r}, base_url={self._base_url!r})"

    def _forward(
        self, path: str, request: ApiRequest, model: str, changes: JsonObject | None = None
    ) -> UpstreamCall:
        if model == request.model and not changes:
            body = request.raw
        else:
            body = orjson.dumps({**request.body, "model": model, **(changes or {})})
        return UpstreamCall("POST", self._base_url + path, self._headers, body)

    # chat ------------------------------------------------------------------------------

    def chat_call(self, request: ApiRequest, model: str) -> UpstreamCall:
        changes = None
        if request.stream and not include_usage(request.body):
            # Every stream reports its usage: the accounting and the cache need it (the
            # usage chunk is taken out of the client's stream again, see core.streaming).
            options = request.body.get("stream_options")
            changes = {"stream_options": {**_object(options), "include_usage": True}}
        return self._forward("/chat/completions", request, model, changes)

    def chat_response(self, body: bytes, request: ApiRequest, model: str) -> bytes:
        check_completion(self.name, load_object(self.name, body))
        return body

    def chat_stream(self, request: ApiRequest, model: str) -> StreamTranslator:
        return _PassThroughStream(self.name, include_usage(request.body))

    # embeddings -----------------------------------------------------------------------

    def embeddings_call(self, request: ApiRequest, model: str) -> UpstreamCall:
        return self._forward("/embeddings", request, model)

    def embeddings_response(self, body: bytes, request: ApiRequest, model: str) -> bytes:
        load_object(self.name, body)
        return body

    # models ---------------------------------------------------------------------------

    def models_call(self) -> UpstreamCall:
        return UpstreamCall("GET", self._base_url + "/models", self._get_headers)

    def models_response(self, body: bytes) -> list[dict[str, Any]]:
        data = load_object(self.name, body).get("data")
        if not isinstance(data, list):
            raise ProviderError(f"{self.name} listed its models in an unexpected shape")
        return [item for item in data if isinstance(item, dict) and "id" in item]

    # errors ---------------------------------------------------------------------------

    def classify_error(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> ProviderFailure:
        return classify(self.name, self._key_variable, status, headers, _error_body(status, body))


class _PassThroughStream:
    """OpenAI chunks stay as they are; an error object inside the stream is the provider's,
    and so is an event that is not a JSON object. The ``"usage":null`` every chunk carries
    once usage is asked for goes when the client did not ask."""

    __slots__ = ("_asked", "_name")

    def __init__(self, name: str, include_usage: bool) -> None:
        self._name = name
        self._asked = include_usage

    def event(self, data: bytes) -> list[bytes]:
        payload = load_any(data)
        if not isinstance(payload, dict):
            raise ProviderError(f"{self._name} sent a stream event that is not a JSON object")
        if payload.get("error"):  # wherever the key sits, as openai-python decides
            message = _message(_error_detail(data)) or "no message"
            raise ProviderError(f"{self._name} reported an error mid-stream: {message}")
        if not self._asked:
            data = data.replace(b',"usage":null', b"")
        return [data]

    def end(self) -> list[bytes]:
        return []


def _error_body(status: int, body: bytes) -> ErrorBody:
    """What an OpenAI-format error body says (the status decides the rest, see
    ``providers.failures``)."""
    detail = _error_detail(body)
    code, kind = detail.get("code"), detail.get("type")
    quota = status == 429 and "insufficient_quota" in (code, kind)
    return ErrorBody(
        _message(detail),
        said=Said.QUOTA if quota else None,
        code=_str_or_none(code),
        param=_str_or_none(detail.get("param")),
        error_type=_str_or_none(kind) or "invalid_request_error",
    )


def _error_detail(body: bytes) -> dict[str, Any]:
    parsed = load_any(body)
    if isinstance(parsed, dict):
        inner = parsed.get("error")
        if isinstance(inner, dict):
            return inner
        if isinstance(inner, str):
            return {"message": inner}
    return {}


def _message(detail: dict[str, Any]) -> str:
    """The provider's own message: a string, never the repr of whatever it sent."""
    message = detail.get("message")
    return message if isinstance(message, str) else ""


def _object(value: Any) -> JsonObject:
    return value if isinstance(value, dict) else {}


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
