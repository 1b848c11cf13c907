"""Google's Gemini API (Generative Language API v1beta) behind OpenAI's wire format.

Chat goes to ``models/{model}:generateContent`` (``:streamGenerateContent?alt=sse`` when
streaming), embeddings to ``:embedContent`` (one string) or ``:batchEmbedContents`` (a list),
the model list to ``GET models``; the key travels in ``x-goog-api-key``. Requests are built by
:mod:`aigateway.providers._gemini_request`; answers, streams and errors are read here.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from aigateway.errors import (
    GatewayError,
    ProviderError,
)
from aigateway.providers._gemini_answer import (
    blocked,
    candidate_logprobs,
    error_detail,
    finish_reason,
    gemini_usage,
    model_name,
    out_of_quota,
    read_candidate,
    retry_delay,
)
from aigateway.providers._gemini_calls import CallIds, SignatureStore, ThoughtSignatures
from aigateway.providers._gemini_request import PROVIDER, build_request
from aigateway.providers._openai_format import (
    ChunkWriter,
    JsonObject,
    choice,
    completion,
    completion_id,
    include_usage,
    load_any,
    load_object,
    unsupported,
)
from aigateway.providers.base import ProviderFailure, StreamTranslator, UpstreamCall
from aigateway.providers.failures import ErrorBody, Said, classify
from aigateway.wire import ApiRequest

__all__ = ["GeminiAdapter"]

MAX_BATCH_EMBEDDINGS = 100  # "at most 100 requests can be in one batch"
MODELS_PAGE_SIZE = 1000  # the API's maximum: one page lists every model


class GeminiAdapter:
    # Gemini takes images only inline: the pipeline downloads http(s) image URLs first.
    inline_remote_images = True

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None,
        *,
        key_variable: str = "GOOGLE_AI_API_KEY",
        signatures: SignatureStore | None = None,
    ) -> None:
        self.name = name
        # Thought signatures by tool-call id (see providers._gemini_calls): the node's store
        # when the app has one (set by its lifespan), else this worker's own map.
        self.signatures: SignatureStore = (
            signatures if signatures is not None else ThoughtSignatures()
        )
        self._base_url = base_url.rstrip("/")
        self._key_variable = key_variable
        headers = {"content-type": "application/json", "accept": "application/json"}
        if api_key:
            headers["x-goog-api-key"] = api_key
        self._headers: Mapping[str, str] = headers
        self._stream_headers: Mapping[str, str] = {**headers, "accept": "text/event-stream"}
        self._get_headers: Mapping[str, str] = {
            k: v for k, v in headers.items() if k != "content-type"
        }

    def __repr__(self) -> str:  # never show the key
        return f"GeminiAdapter(name={self.name!r}, base_url={self._base_url!r})"

    def _model_url(self, model: str) -> str:
        path = model if model.startswith(("models/", "tunedModels/")) else "models/" + model
        return f"{self._base_url}/{quote(path, safe='/-._~')}"

    # chat ------------------------------------------------------------------------------

    def chat_call(self, request: ApiRequest, model: str) -> UpstreamCall:
        body = orjson.dumps(build_request(request.body, model, self.signatures))
        url = self._model_url(model)
        if request.stream:
            return UpstreamCall(
                "POST", url + ":streamGenerateContent?alt=sse", self._stream_headers, body
            )
        return UpstreamCall("POST", url + ":generateContent", self._headers, body)

    def chat_response(self, body: bytes, request: ApiRequest, model: str) -> bytes:
        data = load_object(self.name, body)
        candidates = data.get("candidates")
        choices: list[JsonObject] = []
        ids = CallIds(data.get("responseId"), self.signatures)
        if isinstance(candidates, list) and candidates:
            for position, candidate in enumerate(candidates):
                index, text, calls, reason = read_candidate(candidate, position, ids)
                text_or_none = text if text or not calls else None
                finish = finish_reason(reason, bool(calls))
                logprobs = candidate_logprobs(candidate)
                choices.append(choice(index, text_or_none, calls, finish, logprobs))
        elif blocked(data):
            choices.append(choice(0, "", [], "content_filter"))
        else:
            raise ProviderError(f"{self.name} answered without any candidate")
        return completion(
            completion_id(data.get("responseId")),
            model_name(data, model),
            choices,
            gemini_usage(data.get("usageMetadata")),
        )

    def chat_stream(self, request: ApiRequest, model: str) -> StreamTranslator:
        return _GeminiStream(self, model, include_usage(request.body))

    # embeddings -----------------------------------------------------------------------

    def embeddings_call(self, request: ApiRequest, model: str) -> UpstreamCall:
        value = request.body.get("input")
        resource = self._model_url(model)[len(self._base_url) + 1 :]
        extra: JsonObject = {}
        dimensions = request.body.get("dimensions")
        if dimensions is not None:
            extra["outputDimensionality"] = dimensions
        if isinstance(value, str):
            body = {"model": resource, "content": {"parts": [{"text": value}]}, **extra}
            return self._post(model, ":embedContent", body)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            if len(value) > MAX_BATCH_EMBEDDINGS:
                raise unsupported(
                    PROVIDER, "input", f"Gemini embeds at most {MAX_BATCH_EMBEDDINGS} inputs"
                )
            requests = [
                {"model": resource, "content": {"parts": [{"text": text}]}, **extra}
                for text in value
            ]
            return self._post(model, ":batchEmbedContents", {"requests": requests})
        raise unsupported(PROVIDER, "input", "Gemini embeds text, not token arrays")

    def _post(self, model: str, method: str, body: JsonObject) -> UpstreamCall:
        return UpstreamCall(
            "POST", self._model_url(model) + method, self._headers, orjson.dumps(body)
        )

    def embeddings_response(self, body: bytes, request: ApiRequest, model: str) -> bytes:
        data = load_object(self.name, body)
        single = data.get("embedding")
        items = [single] if isinstance(single, dict) else data.get("embeddings")
        if not isinstance(items, list):
            raise ProviderError(f"{self.name} answered without embeddings")
        base64_wanted = request.body.get("encoding_format") == "base64"
        result: list[JsonObject] = []
        for index, item in enumerate(items):
            values = item.get("values") if isinstance(item, dict) else None
            if not isinstance(values, list):
                raise ProviderError(f"{self.name} answered with an embedding without values")
            embedding: Any = values
            if base64_wanted:  # what OpenAI sends: little-endian float32, base64-encoded
                try:
                    packed = struct.pack(f"<{len(values)}f", *values)
                except struct.error:
                    raise ProviderError(
                        f"{self.name} answered with a non-numeric embedding"
                    ) from None
                embedding = base64.b64encode(packed).decode("ascii")
            result.append({"object": "embedding", "index": index, "embedding": embedding})
        return orjson.dumps(
            {
                "object": "list",
                "data": result,
                "model": model,
                "usage": {"prompt_tokens": 0, "total_tokens": 0},  # Gemini does not count them
            }
        )

    # models ---------------------------------------------------------------------------

    def models_call(self) -> UpstreamCall:
        url = f"{self._base_url}/models?pageSize={MODELS_PAGE_SIZE}"
        return UpstreamCall("GET", url, self._get_headers)

    def models_response(self, body: bytes) -> list[dict[str, Any]]:
        models = load_object(self.name, body).get("models")
        if not isinstance(models, list):
            raise ProviderError(f"{self.name} listed its models in an unexpected shape")
        return [
            {
                "id": item["name"].removeprefix("models/"),
                "object": "model",
                "created": 0,
                "owned_by": "google",
            }
            for item in models
            if isinstance(item, dict) and isinstance(item.get("name"), str)
        ]

    # errors ---------------------------------------------------------------------------

    def classify_error(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> ProviderFailure:
        return classify(self.name, self._key_variable, status, headers, _error_body(status, body))

    def stream_error(self, payload: JsonObject, data: bytes) -> GatewayError:
        """The error for an ``{"error": ...}`` object that arrived inside a stream."""
        code = payload["error"].get("code") if isinstance(payload["error"], dict) else None
        status = code if isinstance(code, int) and 400 <= code <= 599 else 500
        return self.classify_error(status, {}, data).error


class _GeminiStream:
    """Each Gemini event is a whole ``GenerateContentResponse`` holding only the new parts."""

    __slots__ = (
        "_adapter",
        "_finished",
        "_ids",
        "_include_usage",
        "_model",
        "_tools",
        "_usage",
        "_writer",
    )

    def __init__(self, adapter: GeminiAdapter, model: str, include_usage: bool) -> None:
        self._adapter = adapter
        self._model = model
        self._include_usage = include_usage
        self._writer: ChunkWriter | None = None
        self._tools: dict[int, int] = {}  # choice index -> tool calls sent so far
        self._finished: set[int] = set()
        self._usage: Any = None
        self._ids: CallIds | None = None

    def event(self, data: bytes) -> list[bytes]:
        payload = load_any(data)
        if not isinstance(payload, dict):
            raise ProviderError(f"{self._adapter.name} sent a stream event that is not JSON")
        if "error" in payload:
            raise self._adapter.stream_error(payload, data)
        writer = self._writer
        if writer is None:
            writer = self._writer = ChunkWriter(
                completion_id(payload.get("responseId")),
                model_name(payload, self._model),
                self._include_usage,
            )
            self._ids = CallIds(payload.get("responseId"), self._adapter.signatures)
        assert self._ids is not None
        if "usageMetadata" in payload:
            self._usage = payload["usageMetadata"]
        out: list[bytes] = []
        candidates = payload.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            if blocked(payload) and 0 not in self._tools:
                self._tools[0] = 0
                self._finished.add(0)
                out.append(writer.chunk(0, {"role": "assistant", "content": ""}))
                out.append(writer.chunk(0, {}, "content_filter"))
            return out
        for position, candidate in enumerate(candidates):
            index, text, calls, reason = read_candidate(candidate, position, self._ids)
            sent = self._tools.get(index)
            if sent is None:
                sent = self._tools[index] = 0
                out.append(writer.chunk(index, {"role": "assistant", "content": ""}))
            if text:
                logprobs = candidate_logprobs(candidate)
                out.append(writer.chunk(index, {"content": text}, logprobs=logprobs))
            if calls:
                deltas = [{"index": sent + n, **call} for n, call in enumerate(calls)]
                sent = self._tools[index] = sent + len(calls)
                out.append(writer.chunk(index, {"tool_calls": deltas}))
            if reason is not None and index not in self._finished:
                self._finished.add(index)
                out.append(writer.chunk(index, {}, finish_reason(reason, sent > 0)))
        return out

    def end(self) -> list[bytes]:
        if not self._finished or self._finished != self._tools.keys():
            raise ProviderError(f"{self._adapter.name} stream ended before the answer was complete")
        if self._writer is not None:  # always: the gateway needs it (see core.streaming)
            return [self._writer.usage_chunk(gemini_usage(self._usage))]
        return []


# What Gemini's RPC statuses say beyond the HTTP status (see ``providers.failures``).
_SAID = {
    "UNAUTHENTICATED": Said.AUTH,
    "PERMISSION_DENIED": Said.AUTH,
    "RESOURCE_EXHAUSTED": Said.RATE_LIMITED,
    "UNAVAILABLE": Said.OVERLOADED,
    "DEADLINE_EXCEEDED": Said.TIMED_OUT,
    "FAILED_PRECONDITION": Said.ACCOUNT,  # billing or region: the gateway's account, not you
}


def _error_body(status: int, body: bytes) -> ErrorBody:
    """``{"error": {"code", "message", "status", "details"}}``: an invalid key is a 400 with
    ``API_KEY_INVALID``; a quota per day is spent (no retry cures it), a quota per minute
    asks for a wait (``RetryInfo``)."""
    detail = error_detail(load_any(body))
    rpc = str(detail.get("status") or "")
    details = [d for d in detail.get("details") or () if isinstance(d, dict)]
    said = _SAID.get(rpc)
    if any(d.get("reason") == "API_KEY_INVALID" for d in details):
        said = Said.AUTH
    elif (status == 429 or said is Said.RATE_LIMITED) and out_of_quota(details):
        said = Said.QUOTA
    return ErrorBody(
        str(detail.get("message") or ""),
        rpc,
        said,
        retry_after_s=retry_delay(details),
        code=rpc.lower() or None,
    )
