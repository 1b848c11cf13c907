"""OpenAI's own Responses API (``POST /responses``) behind ``/v1/responses``.

The adapter of OpenAI itself, and of an OpenAI-compatible server whose configuration says
``responses_api = true`` (most such servers have chat completions only, so the others stay
on the chat path). The body goes on as the gateway holds it: every field the client sent
(built-in tools, reasoning items, ``include``, ``truncation``... all reach OpenAI), its
``model`` set to the target's and the whole conversation as input items; or, when this very
provider keeps the previous response itself (``ApiRequest.held``), ``previous_response_id``
and only the new items, so what OpenAI keeps server-side (reasoning, built-in tool state)
carries on. Answers and events come back unchanged; an ``error`` or ``response.failed``
event is the provider's failure (the relay ends the stream with it), and so is a stream
that stops before its last event.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from aigateway.errors import ProviderError
from aigateway.providers._openai_format import load_any, load_object
from aigateway.providers.base import StreamTranslator, UpstreamCall
from aigateway.providers.openai import OpenAIAdapter
from aigateway.wire import ApiRequest

__all__ = ["OpenAIResponsesAdapter", "ResponsesPassThroughStream"]

FINAL_EVENTS = frozenset({"response.completed", "response.incomplete"})


class OpenAIResponsesAdapter(OpenAIAdapter):
    """An OpenAI-format provider that also speaks the Responses API."""

    def responses_call(self, request: ApiRequest, model: str) -> UpstreamCall:
        body: dict[str, Any] = request.body
        held = request.held
        if held is not None and held.provider == self.name:
            items = body.get("input") or []
            body = {k: v for k, v in body.items() if k != "input"}
            body["previous_response_id"] = held.response_id
            if held.new_items:
                body["input"] = items[len(items) - held.new_items :]
        elif model == request.model:
            return UpstreamCall("POST", self._base_url + "/responses", self._headers, request.raw)
        encoded = orjson.dumps({**body, "model": model})
        return UpstreamCall("POST", self._base_url + "/responses", self._headers, encoded)

    def responses_response(self, body: bytes, request: ApiRequest, model: str) -> bytes:
        answer = load_object(self.name, body)
        if answer.get("object") != "response" or not isinstance(answer.get("output"), list):
            raise ProviderError(f"{self.name} answered with a response in an unexpected shape")
        return body

    def responses_stream(self, request: ApiRequest, model: str) -> StreamTranslator:
        return ResponsesPassThroughStream(self.name)

    def responses_delete_call(self, response_id: str) -> UpstreamCall:
        """``DELETE /responses/{id}``: a response this provider keeps, forgotten there."""
        url = f"{self._base_url}/responses/{quote(response_id, safe='')}"
        return UpstreamCall("DELETE", url, self._get_headers)


class ResponsesPassThroughStream:
    """Responses events as they come; the provider's errors inside the stream raise."""

    __slots__ = ("_done", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._done = False

    def event(self, data: bytes) -> list[bytes]:
        payload = load_any(data)
        if not isinstance(payload, dict):
            raise ProviderError(f"{self._name} sent a stream event that is not a JSON object")
        if self._done:
            return []
        kind = payload.get("type")
        if kind == "error":
            raise _failure(self._name, payload)
        if kind == "response.failed":
            response = payload.get("response")
            error = response.get("error") if isinstance(response, dict) else None
            raise _failure(self._name, error if isinstance(error, dict) else {})
        if kind in FINAL_EVENTS:
            self._done = True
        return [data]

    def end(self) -> list[bytes]:
        if not self._done:
            raise ProviderError(f"{self._name} stream ended before the answer was complete")
        return []


def _failure(name: str, detail: dict[str, Any]) -> ProviderError:
    message = detail.get("message")
    text = message if isinstance(message, str) and message else "no message"
    code = detail.get("code")
    return ProviderError(
        f"{name} reported an error mid-stream: {text}",
        code=code if isinstance(code, str) and code else None,
    )
