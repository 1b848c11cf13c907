"""Deterministic Gemini (v1beta) replies of the mock provider (no I/O here).

A ``generateContent`` request is checked the way the API checks it (unknown fields, roles
``user``/``model`` only, no empty parts, at most 5 stop sequences and 8 candidates, temperature
0..2, function responses named; for ``gemini-3*`` models replayed function calls must carry their
``thoughtSignature``), then read as an OpenAI-shaped conversation and answered by the OpenAI rules
of :mod:`aigateway.testing.mock_replies`: same reply text, same tool-call rule, same counts.
Function calls come back without an id (as Gemini often does) and with a ``thoughtSignature``;
a replayed one must carry that signature or Google's placeholder (``skip_thought_signature_
validator``), anything else is a 400 as on Gemini. ``responseJsonSchema``/``responseSchema`` are
answered with JSON that satisfies the schema, ``responseMimeType: application/json`` alone with
a JSON object; ``responseLogprobs`` adds a ``logprobsResult`` (one entry per word, ``logprobs``
alternatives each); ``thinkingLevel`` is refused on models before Gemini 3 and together with
``thinkingBudget``.
Streams (``?alt=sse``) are CRLF-framed ``data:`` events, one word each, the finish reason and
full usage on the last one, no terminator. Embeddings use the OpenAI mock's vectors.
"""

from __future__ import annotations

from typing import Any

import orjson

from aigateway.testing.mock_embeddings import (
    DEFAULT_EMBEDDING_DIMENSIONS,
    MAX_EMBEDDING_DIMENSIONS,
    float_embedding,
)
from aigateway.testing.mock_faults import MockRequestError
from aigateway.testing.mock_replies import ChatPlan, plan_chat

__all__ = [
    "GEMINI_MODEL_IDS",
    "THOUGHT_SIGNATURE",
    "plan_generate",
    "render_batch_embed",
    "render_embed",
    "render_generate",
    "render_generate_stream",
    "render_model",
    "render_models",
]

GEMINI_MODEL_IDS: tuple[str, ...] = (
    "gemini-2.0-flash",
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "gemini-3-pro-preview",
    "gemini-embedding-001",
    "text-embedding-004",
)
THOUGHT_SIGNATURE = "bW9jay10aG91Z2h0LXNpZ25hdHVyZQ=="  # base64 of "mock-thought-signature"
PLACEHOLDER_SIGNATURE = "skip_thought_signature_validator"  # Google's, for foreign histories
MAX_BATCH = 100


def _model(model_id: str) -> dict[str, Any]:
    embedding = "embedding" in model_id
    return {
        "name": "models/" + model_id,
        "version": "001",
        "displayName": model_id.replace("-", " ").title(),
        "inputTokenLimit": 2048 if embedding else 1048576,
        "outputTokenLimit": 1 if embedding else 65536,
        "supportedGenerationMethods": (
            ["embedContent", "countTokens"] if embedding else ["generateContent", "countTokens"]
        ),
    }


_MODELS_BODY = orjson.dumps({"models": [_model(m) for m in GEMINI_MODEL_IDS]})
_MODEL_BODIES = {m: orjson.dumps(_model(m)) for m in GEMINI_MODEL_IDS}


def _camel_and_snake(*names: str) -> frozenset[str]:
    snake = ("".join("_" + c.lower() if c.isupper() else c for c in name) for name in names)
    return frozenset(names) | frozenset(snake)


_FIELDS = _camel_and_snake(
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "safetySettings",
    "cachedContent",
    "labels",
    "model",
)
_CONFIG_FIELDS = _camel_and_snake(
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
    "mediaResolution",
    "responseModalities",
)
_PART_DATA = _camel_and_snake(
    "text", "inlineData", "functionCall", "functionResponse", "fileData", "executableCode"
)
_CHOICES = {"NONE": "none", "AUTO": "auto", "ANY": "required", "VALIDATED": "auto"}
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}


def _bad(message: str, status: int = 400) -> MockRequestError:
    return MockRequestError(status, message)


def _get(obj: dict[str, Any], camel: str) -> Any:
    if camel in obj:
        return obj[camel]
    return obj.get("".join("_" + c.lower() if c.isupper() else c for c in camel))


def _unknown(obj: dict[str, Any], known: frozenset[str], at: str = "") -> None:
    extra = sorted(obj.keys() - known)
    if extra:
        where = f" at '{at}'" if at else ""
        raise _bad(
            f'Invalid JSON payload received. Unknown name "{extra[0]}"{where}: Cannot find field.'
        )


def _read_content(i: int, content: Any, signed: bool) -> list[dict[str, Any]]:
    """OpenAI-shaped messages for one Gemini content."""
    where = f"* GenerateContentRequest.contents[{i}]"
    if not isinstance(content, dict):
        raise _bad(f"{where}: expected an object")
    role = content.get("role", "user")
    if role not in ("user", "model"):
        raise _bad("Please use a valid role: user, model.")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise _bad(f"{where}.parts: contents.parts must not be empty.")
    texts: list[str] = []
    results: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        data = [key for key in part if key in _PART_DATA] if isinstance(part, dict) else []
        if len(data) != 1:
            raise _bad(
                f"{where}.parts[{j}].data: required oneof field 'data' must have one "
                "initialized field"
            )
        value = part[data[0]]
        if data[0] == "text":
            texts.append(str(value))
        elif data[0] in ("functionResponse", "function_response"):
            if not isinstance(value, dict) or not value.get("name"):
                raise _bad(f"{where}.parts[{j}].function_response.name: Name cannot be empty.")
            response = orjson.dumps(value.get("response")).decode()
            results.append({"role": "tool", "content": response})
        elif data[0] in ("functionCall", "function_call"):
            signature = _get(part, "thoughtSignature")
            if signature is None and signed:
                raise _bad(
                    f"Function call is missing a thought_signature in functionCall parts "
                    f"(content {i}, part {j})."
                )
            if signature not in (None, THOUGHT_SIGNATURE, PLACEHOLDER_SIGNATURE):
                raise _bad(f"* contents[{i}].parts[{j}].thought_signature: Base64 decoding failed")
    if texts or not results:
        results.append(
            {"role": "assistant" if role == "model" else "user", "content": " ".join(texts)}
        )
    return results


def _number_in(value: Any, low: float, high: float) -> bool:
    """True for an absent value or a number in [low, high]."""
    if value is None:
        return True
    return not isinstance(value, bool) and isinstance(value, int | float) and low <= value <= high


def _tool_choice(tool_config: Any) -> Any:
    config = _get(tool_config, "functionCallingConfig") if isinstance(tool_config, dict) else None
    if not isinstance(config, dict):
        return None
    names = _get(config, "allowedFunctionNames")
    mode = config.get("mode", "AUTO")
    if mode == "ANY" and isinstance(names, list) and len(names) == 1:
        return {"type": "function", "function": {"name": names[0]}}
    return _CHOICES.get(mode, "auto")


def plan_generate(model: str, body: Any, stream: bool) -> ChatPlan:
    """Validate a generateContent request for ``model`` and decide the deterministic reply."""
    if not isinstance(body, dict):
        raise _bad("Invalid JSON payload received. Expected an object.")
    _unknown(body, _FIELDS)
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _bad("* GenerateContentRequest.contents: contents is not specified")
    view: list[dict[str, Any]] = []
    system = _get(body, "systemInstruction")
    if isinstance(system, dict):
        texts = [str(p.get("text", "")) for p in system.get("parts") or () if isinstance(p, dict)]
        view.append({"role": "system", "content": " ".join(texts)})
    signed = model.startswith("gemini-3")
    for i, content in enumerate(contents):
        view.extend(_read_content(i, content, signed))
    request: dict[str, Any] = {"model": model, "messages": view, "stream": stream}

    config = _get(body, "generationConfig") or {}
    if not isinstance(config, dict):
        raise _bad("* GenerateContentRequest.generation_config: expected an object")
    _unknown(config, _CONFIG_FIELDS, "generation_config")
    stops = _get(config, "stopSequences") or []
    if not isinstance(stops, list) or len(stops) > 5:
        raise _bad("* GenerateContentRequest.generation_config.stop_sequences: at most 5 allowed")
    if not _number_in(config.get("temperature"), 0, 2):
        raise _bad("* GenerateContentRequest.generation_config.temperature: must be in [0, 2]")
    count = _get(config, "candidateCount")
    if not _number_in(count, 1, 8) or isinstance(count, float):
        raise _bad("* GenerateContentRequest.generation_config.candidate_count: must be 1 to 8")
    request["n"] = count
    request["max_tokens"] = _get(config, "maxOutputTokens")
    _check_thinking(model, _get(config, "thinkingConfig"))
    response_format = _response_format(config)
    if response_format is not None:
        request["response_format"] = response_format

    names: list[dict[str, Any]] = []
    tools = body.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise _bad("* GenerateContentRequest.tools: expected a list of objects")
    for tool in tools:
        for declaration in _get(tool, "functionDeclarations") or ():
            if not isinstance(declaration, dict):
                raise _bad("* GenerateContentRequest.tools.function_declarations: bad entry")
            if "parameters" in declaration and _get(declaration, "parametersJsonSchema"):
                raise _bad("parameters and parameters_json_schema are mutually exclusive")
            schema = _get(declaration, "parametersJsonSchema") or declaration.get("parameters")
            names.append({"name": declaration.get("name", ""), "parameters": schema})
    if names:
        request["tools"] = names
        request["tool_choice"] = _tool_choice(_get(body, "toolConfig"))
    return plan_chat(request)


def _check_thinking(model: str, thinking: Any) -> None:
    if not isinstance(thinking, dict):
        return
    level, budget = _get(thinking, "thinkingLevel"), _get(thinking, "thinkingBudget")
    if level is not None and budget is not None:
        raise _bad("thinking_level and thinking_budget cannot be set together.")
    if level is not None and not model.startswith("gemini-3"):
        raise _bad("Thinking level is not supported for this model.")


def _response_format(config: dict[str, Any]) -> dict[str, Any] | None:
    schema = _get(config, "responseJsonSchema")
    legacy = _get(config, "responseSchema")
    if schema is not None and legacy is not None:
        raise _bad("response_schema and response_json_schema cannot be set together.")
    schema = schema if schema is not None else legacy
    json_mime = _get(config, "responseMimeType") == "application/json"
    if schema is not None:
        if not json_mime:
            raise _bad("response_mime_type must be application/json with a response schema.")
        return {"type": "json_schema", "json_schema": {"schema": schema}}
    return {"type": "json_object"} if json_mime else None


def logprobs_config(body: Any) -> int | None:
    """How many alternatives each token's logprobs list; None when none were asked for."""
    config = _get(body, "generationConfig") if isinstance(body, dict) else None
    if not isinstance(config, dict) or _get(config, "responseLogprobs") is not True:
        return None
    count = config.get("logprobs")
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


# --------------------------------------------------------------------------------------------
# answers


def _logprobs_result(parts: list[Any], alternatives: int) -> dict[str, Any]:
    """One chosen candidate per word of the parts' text: log probability -0.5 per word,
    then ``alternatives`` others below it."""
    words = " ".join(str(p.get("text", "")) for p in parts).split()
    chosen = [{"token": word, "logProbability": -0.5} for word in words]
    top = [
        {
            "candidates": [
                c,
                *({"token": f"alt{k}", "logProbability": -2.0 - k} for k in range(1, alternatives)),
            ]
        }
        for c in chosen
    ]
    return {
        "topCandidates": top if alternatives else [],
        "chosenCandidates": chosen,
        "logProbabilitySum": -0.5 * len(words),
    }


def _response(
    plan: ChatPlan, parts: list[Any], finish: str | None, final: bool, logprobs: int | None = None
) -> bytes:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
    if finish is not None:
        candidate["finishReason"] = finish
    if logprobs is not None:
        candidate["logprobsResult"] = _logprobs_result(parts, logprobs)
        candidate["avgLogprobs"] = -0.5
    prompt = plan.usage["prompt_tokens"]
    usage: dict[str, int] = {"promptTokenCount": prompt, "totalTokenCount": prompt}
    if final:
        completion = plan.usage["completion_tokens"]
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": completion,
            "totalTokenCount": prompt + completion,
        }
    return orjson.dumps(
        {
            "candidates": [{**candidate, "index": index} for index in range(plan.n)],
            "usageMetadata": usage,
            "modelVersion": plan.model,
            "responseId": "mock-" + plan.completion_id.removeprefix("chatcmpl-mock-"),
        }
    )


def _call_part(plan: ChatPlan) -> dict[str, Any]:
    assert plan.tool_call is not None
    _, name, arguments = plan.tool_call
    call = {"name": name, "args": orjson.loads(arguments)}
    return {"functionCall": call, "thoughtSignature": THOUGHT_SIGNATURE}


def render_generate(plan: ChatPlan, logprobs: int | None = None) -> bytes:
    if plan.tool_call is not None:
        return _response(plan, [_call_part(plan)], "STOP", final=True)
    parts = [{"text": plan.content or ""}]
    return _response(plan, parts, _FINISH[plan.finish_reason], final=True, logprobs=logprobs)


def render_generate_stream(plan: ChatPlan, logprobs: int | None = None) -> list[bytes]:
    """The ``?alt=sse`` events; ``b"[" + b",".join(payloads) + b"]"`` without ``alt=sse``."""
    if plan.tool_call is not None:
        payloads = [_response(plan, [_call_part(plan)], "STOP", final=True)]
    else:
        words = (plan.content or "").split(" ")
        last = len(words) - 1
        payloads = [
            _response(
                plan,
                [{"text": word if n == 0 else " " + word}],
                _FINISH[plan.finish_reason] if n == last else None,
                final=n == last,
                logprobs=logprobs,
            )
            for n, word in enumerate(words)
        ]
    return [b"data: " + payload + b"\r\n\r\n" for payload in payloads]


def _embed_one(request: Any, where: str) -> orjson.Fragment:
    content = request.get("content") if isinstance(request, dict) else None
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise _bad(f"* {where}.content: content is not specified")
    text = " ".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
    dimensions = _get(request, "outputDimensionality") or DEFAULT_EMBEDDING_DIMENSIONS
    if not isinstance(dimensions, int) or not 1 <= dimensions <= MAX_EMBEDDING_DIMENSIONS:
        raise _bad(f"* {where}.output_dimensionality: must be 1 to {MAX_EMBEDDING_DIMENSIONS}")
    return float_embedding(text, dimensions)


def render_embed(body: Any) -> bytes:
    values = _embed_one(body, "EmbedContentRequest")
    return orjson.dumps({"embedding": {"values": values}})


def render_batch_embed(model: str, body: Any) -> bytes:
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not requests:
        raise _bad("* BatchEmbedContentsRequest.requests: requests is not specified")
    if len(requests) > MAX_BATCH:
        raise _bad(
            f"* BatchEmbedContentsRequest.requests: at most {MAX_BATCH} requests can be "
            "in one batch"
        )
    embeddings = []
    for i, request in enumerate(requests):
        if not isinstance(request, dict) or request.get("model") != "models/" + model:
            raise _bad(
                f"* BatchEmbedContentsRequest.requests[{i}].model: the model of every "
                f"request must be models/{model}"
            )
        values = _embed_one(request, f"BatchEmbedContentsRequest.requests[{i}]")
        embeddings.append({"values": values})
    return orjson.dumps({"embeddings": embeddings})


def render_models() -> bytes:
    return _MODELS_BODY


def render_model(model_id: str) -> bytes:
    body = _MODEL_BODIES.get(model_id)
    if body is None:
        raise MockRequestError(404, f"models/{model_id} is not found for API version v1beta.")
    return body
