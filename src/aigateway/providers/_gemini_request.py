"""OpenAI chat requests as Gemini ``generateContent`` bodies (v1beta).

Tool-call ids and the thought signatures behind them: :mod:`aigateway.providers._gemini_calls`
(a tool message's function name is taken from the assistant turn that made the call).
``reasoning_effort`` becomes ``thinkingConfig`` (:func:`thinking_config`), ``logprobs`` and
``top_logprobs`` become ``responseLogprobs`` and ``logprobs``, a ``json_schema`` response format
``responseJsonSchema`` restricted to the keywords Gemini lists (:mod:`._json_schema`).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from aigateway.errors import InvalidRequest
from aigateway.providers._gemini_calls import (
    PLACEHOLDER_SIGNATURE,
    SignatureStore,
    needs_signatures,
)
from aigateway.providers._json_schema import GEMINI_KEYWORDS, restrict
from aigateway.providers._openai_format import (
    JsonObject,
    data_url,
    function_tools,
    invalid,
    max_output_tokens,
    plain_text,
    reject_set,
    stop_sequences,
    text_parts,
    tool_arguments,
    tool_choice,
    unsupported,
)

__all__ = ["PROVIDER", "THINKING_BUDGETS", "build_request", "thinking_config"]

PROVIDER = "Gemini"
MAX_STOP_SEQUENCES = 5
MAX_CANDIDATES = 8
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]{0,127}\Z")
_MODES = {"none": "NONE", "auto": "AUTO", "required": "ANY", "function": "ANY"}
_AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}
_UNSUPPORTED = ("logit_bias", "audio", "prediction", "web_search_options")
MAX_TOP_LOGPROBS = 20
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
# Google's OpenAI-compatible endpoint maps low/medium/high to these budgets on Gemini 2.5;
# minimal and xhigh/max are this gateway's choice (2.5 Flash takes at most 24576).
THINKING_BUDGETS = {
    "none": 0,
    "minimal": 512,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": 24576,
    "max": 24576,
}
PRO_MIN_BUDGET = 128  # 2.5 Pro cannot switch thinking off
# Gemini 3 levels (3 Pro takes only low and high; thinking cannot be switched off).
_LEVELS = {"none": "low", "minimal": "low", "low": "low", "medium": "high"}


# --- the request ---------------------------------------------------------------------------


def build_request(
    body: JsonObject, model: str = "", signatures: SignatureStore | None = None
) -> JsonObject:
    """The ``generateContent`` body for an OpenAI chat request (the model goes in the URL);
    ``signatures``: the thought signatures kept for the calls in the history."""
    reject_set(body, PROVIDER, _UNSUPPORTED, "Gemini has no equivalent through this gateway")
    system: list[JsonObject] = []
    contents: list[JsonObject] = []
    names: dict[str, str] = {}  # OpenAI tool-call id -> function name, from assistant turns
    ids: dict[str, str] = {}  # OpenAI tool-call id -> Gemini's own call id, where it sent one
    for i, message in enumerate(body.get("messages") or ()):
        where = f"messages[{i}]"
        role = message.get("role")
        if role in ("system", "developer"):
            text = plain_text(message.get("content"), where, PROVIDER)
            if text:
                system.append({"text": text})
        elif role == "user":
            parts = _user_parts(message.get("content"), where)
            if not parts:
                raise invalid(f"{where}.content", "Gemini does not accept an empty message")
            _append(contents, "user", parts)
        elif role == "assistant":
            signed = needs_signatures(model)
            parts = _model_parts(message, where, (names, ids), signatures, signed)
            if parts:
                _append(contents, "model", parts)
        elif role == "tool":
            response = _function_response(message, where, names, ids, signatures)
            _append(contents, "user", [response])
        else:
            raise unsupported(PROVIDER, f"{where}.role", f"the {role!r} role; use tools")
    if not contents:
        raise invalid("messages", "Gemini needs at least one user or assistant message")
    request: JsonObject = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    _add_tools(body, request)
    config = _generation_config(body)
    thinking = thinking_config(body, model)
    if thinking is not None:
        config["thinkingConfig"] = thinking
    if config:
        request["generationConfig"] = config
    return request


def _append(contents: list[JsonObject], role: str, parts: list[JsonObject]) -> None:
    """Consecutive turns of one role become one content (tool results after a call, ...)."""
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _user_parts(content: Any, where: str) -> list[JsonObject]:
    parts: list[JsonObject] = []
    for param, part in text_parts(content, where):
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid(f"{param}.text", "expected a string")
            if text:
                parts.append({"text": text})
        elif kind == "image_url":
            parts.append(_image(part.get("image_url"), param))
        elif kind == "input_audio":
            parts.append(_audio(part.get("input_audio"), param))
        elif kind == "file":
            parts.append(_file(part.get("file"), param))
        else:
            raise unsupported(PROVIDER, f"{param}.type", f"content parts of type {kind!r}")
    return parts


def _image(image: Any, param: str) -> JsonObject:
    url = image.get("url") if isinstance(image, dict) else image
    param = f"{param}.image_url.url"
    if not isinstance(url, str) or not url:
        raise invalid(param, "expected an image URL")
    inline = data_url(url, param)
    if inline is None:
        raise InvalidRequest(
            f"'{param}' must be a data: URL (data:<media type>;base64,<data>): Gemini cannot "
            "fetch images from URLs",
            param=param,
            code="unsupported_image_url",
        )
    return {"inlineData": {"mimeType": inline.mime_type, "data": inline.data}}


def _audio(audio: Any, param: str) -> JsonObject:
    if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
        raise invalid(f"{param}.input_audio", "expected {data, format}")
    audio_format = audio.get("format")
    mime_type = _AUDIO_TYPES.get(audio_format) if isinstance(audio_format, str) else None
    if mime_type is None:
        raise invalid(f"{param}.input_audio.format", "expected 'wav' or 'mp3'")
    return {"inlineData": {"mimeType": mime_type, "data": audio["data"]}}


def _file(file: Any, param: str) -> JsonObject:
    data = file.get("file_data") if isinstance(file, dict) else None
    inline = data_url(data, f"{param}.file.file_data") if isinstance(data, str) else None
    if inline is None:
        raise unsupported(PROVIDER, f"{param}.file", "only files sent inline as data: URLs")
    return {"inlineData": {"mimeType": inline.mime_type, "data": inline.data}}


def _model_parts(
    message: JsonObject,
    where: str,
    seen: tuple[dict[str, str], dict[str, str]],
    signatures: SignatureStore | None,
    signed: bool,
) -> list[JsonObject]:
    """The model turn; ``seen``: (names, Gemini ids) by OpenAI call id, filled in here."""
    names, ids = seen
    parts: list[JsonObject] = []
    for param, part in text_parts(message.get("content"), where):
        kind = part.get("type")
        if kind not in ("text", "refusal"):
            raise unsupported(PROVIDER, f"{param}.type", f"assistant parts of type {kind!r}")
        text = part.get(kind)
        if isinstance(text, str) and text:
            parts.append({"text": text})
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise invalid(f"{where}.tool_calls", "expected a list")
    call_parts: list[JsonObject] = []
    for k, call in enumerate(calls):
        param = f"{where}.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid(f"{param}.function", "expected {name, arguments}")
        name: str = function["name"]
        args = tool_arguments(function.get("arguments"), f"{param}.function.arguments")
        call_id = call.get("id")
        kept = signatures.recall(call_id) if signatures is not None else None
        function_call: JsonObject = {"name": name, "args": args}
        if kept is not None and kept.gemini_id and isinstance(call_id, str):
            function_call["id"] = ids[call_id] = kept.gemini_id
        gemini_part: JsonObject = {"functionCall": function_call}
        if kept is not None and kept.signature:
            gemini_part["thoughtSignature"] = kept.signature
        call_parts.append(gemini_part)
        if isinstance(call_id, str):
            names[call_id] = name
    if signed and call_parts and not any("thoughtSignature" in p for p in call_parts):
        # a turn Gemini did not make (or whose signature is gone): Google's placeholder
        call_parts[0]["thoughtSignature"] = PLACEHOLDER_SIGNATURE
    return parts + call_parts


def _function_response(
    message: JsonObject,
    where: str,
    names: dict[str, str],
    ids: dict[str, str],
    signatures: SignatureStore | None,
) -> JsonObject:
    call_id = message.get("tool_call_id")
    name = names.get(call_id) if isinstance(call_id, str) else None
    gemini_id = ids.get(call_id) if isinstance(call_id, str) else None
    if name is None and signatures is not None:  # the assistant turn was left out
        kept = signatures.recall(call_id)
        if kept is not None:
            name, gemini_id = kept.name, kept.gemini_id
    if name is None:
        raise invalid(
            f"{where}.tool_call_id",
            "no earlier assistant tool call has this id, and Gemini needs the function's name",
        )
    text = plain_text(message.get("content"), where, PROVIDER)
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    response: JsonObject = {"name": name, "response": _struct(parsed, text)}
    if gemini_id is not None:
        response["id"] = gemini_id
    return {"functionResponse": response}


def _struct(parsed: Any, text: str) -> JsonObject:
    """Gemini wants a JSON object as the result: a JSON-object result as is, else wrapped."""
    return parsed if isinstance(parsed, dict) else {"content": text}


def _add_tools(body: JsonObject, request: JsonObject) -> None:
    tools = function_tools(body, PROVIDER)
    declarations: list[JsonObject] = []
    for i, tool in enumerate(tools):
        if not _NAME.match(tool.name):
            raise unsupported(
                PROVIDER,
                f"tools[{i}].function.name",
                "Gemini function names start with a letter or '_' and hold only letters, "
                "digits, '_', '.', ':' or '-' (at most 128 characters)",
            )
        declaration: JsonObject = {"name": tool.name}
        if tool.description:
            declaration["description"] = tool.description
        if tool.parameters:
            declaration["parametersJsonSchema"] = tool.parameters
        declarations.append(declaration)
    if declarations:
        request["tools"] = [{"functionDeclarations": declarations}]
    choice = tool_choice(body, bool(declarations))
    if choice is not None and declarations:
        mode, name = choice
        config: JsonObject = {"mode": _MODES[mode]}
        if name is not None:
            config["allowedFunctionNames"] = [name]
        request["toolConfig"] = {"functionCallingConfig": config}


def _generation_config(body: JsonObject) -> JsonObject:
    config: JsonObject = {}
    for source, target in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        value = body.get(source)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise invalid(source, "expected a number")
            config[target] = value
    temperature = config.get("temperature")
    if temperature is not None and not 0 <= temperature <= 2:
        raise unsupported(PROVIDER, "temperature", f"Gemini takes 0 to 2, not {temperature}")
    limit = max_output_tokens(body)
    if limit is not None:
        config["maxOutputTokens"] = limit
    stop = stop_sequences(body)
    if stop:
        if len(stop) > MAX_STOP_SEQUENCES:
            raise unsupported(PROVIDER, "stop", f"Gemini takes at most {MAX_STOP_SEQUENCES}")
        config["stopSequences"] = stop
    n = body.get("n")
    if n is not None and n != 1:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CANDIDATES:
            raise unsupported(PROVIDER, "n", f"Gemini answers with 1 to {MAX_CANDIDATES} choices")
        config["candidateCount"] = n
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise unsupported(PROVIDER, "modalities", "this gateway relays text answers only")
    _response_format(body.get("response_format"), config)
    _logprobs(body, config)
    return config


def _logprobs(body: JsonObject, config: JsonObject) -> None:
    """OpenAI ``logprobs`` + ``top_logprobs`` are Gemini ``responseLogprobs`` + ``logprobs``."""
    wanted = body.get("logprobs")
    top = body.get("top_logprobs")
    if wanted is not None and not isinstance(wanted, bool):
        raise invalid("logprobs", "expected true or false")
    if top is not None:
        if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP_LOGPROBS:
            raise invalid("top_logprobs", f"expected a whole number from 0 to {MAX_TOP_LOGPROBS}")
        if wanted is not True:
            raise invalid("top_logprobs", "'logprobs' must be true to ask for top_logprobs")
    if wanted:
        config["responseLogprobs"] = True
        if top:
            config["logprobs"] = top


def thinking_config(body: JsonObject, model: str) -> JsonObject | None:
    """``reasoning_effort`` as Gemini 3's ``thinkingLevel`` or Gemini 2.5's ``thinkingBudget``;
    None when not asked for, or for models that do not think (Gemini 2.0 and older)."""
    effort = body.get("reasoning_effort")
    if effort is None:
        return None
    if effort not in EFFORTS:
        raise invalid("reasoning_effort", "expected one of " + ", ".join(EFFORTS))
    name = model.removeprefix("models/")
    if name.startswith(("gemini-1", "gemini-2.0")):
        return None
    if name.startswith("gemini-3"):
        return {"thinkingLevel": _LEVELS.get(effort, "high")}
    budget = THINKING_BUDGETS[effort]
    if "-pro" in name:
        budget = max(budget, PRO_MIN_BUDGET)
    return {"thinkingBudget": budget}


def _response_format(value: Any, config: JsonObject) -> None:
    if value is None:
        return
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
        return
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise invalid("response_format.json_schema.schema", "expected a JSON Schema object")
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = restrict(schema, GEMINI_KEYWORDS)
        return
    raise invalid("response_format.type", "expected 'text', 'json_object' or 'json_schema'")
