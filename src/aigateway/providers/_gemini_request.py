"""OpenAI chat requests as Gemini ``generateContent`` bodies (v1beta), and Gemini's call ids.

Gemini often leaves ``functionCall.id`` out, and its ``functionResponse`` needs the function's
name, which an OpenAI ``tool`` message does not carry. So the OpenAI tool-call ids this adapter
hands out are ``call_`` + unpadded base64url of a small JSON object: the function name (``n``),
Gemini's own id if it sent one (``i``), the part's ``thoughtSignature`` if any (``s``; Gemini 3
rejects a replayed call without it) and a random nonce (``r``) so that equal calls get distinct
ids. When the history comes back, the name is taken from the assistant message that made the
call (any id works), else decoded from the id; id and signature are restored from the id.
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from aigateway.errors import InvalidRequest
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

__all__ = ["PROVIDER", "CallRef", "build_request", "decode_call_id", "encode_call_id"]

PROVIDER = "Gemini"
MAX_STOP_SEQUENCES = 5
MAX_CANDIDATES = 8
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]{0,127}\Z")
_ID_PREFIX = "call_"
_MODES = {"none": "NONE", "auto": "AUTO", "required": "ANY", "function": "ANY"}
_AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}
_UNSUPPORTED = (
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "audio",
    "prediction",
    "reasoning_effort",
    "web_search_options",
)


# --- call ids ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallRef:
    name: str
    gemini_id: str | None
    signature: str | None


def encode_call_id(name: str, gemini_id: Any = None, signature: Any = None) -> str:
    payload: JsonObject = {"n": name, "r": uuid.uuid4().hex[:8]}
    if isinstance(gemini_id, str) and gemini_id:
        payload["i"] = gemini_id
    if isinstance(signature, str) and signature:
        payload["s"] = signature
    token = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode("ascii")
    return _ID_PREFIX + token


def decode_call_id(call_id: Any) -> CallRef | None:
    """What an id made by :func:`encode_call_id` holds; None for any other id."""
    if not isinstance(call_id, str) or not call_id.startswith(_ID_PREFIX):
        return None
    token = call_id[len(_ID_PREFIX) :]
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, orjson.JSONDecodeError):  # binascii.Error is a ValueError
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("n"), str):
        return None
    gemini_id, signature = payload.get("i"), payload.get("s")
    return CallRef(
        payload["n"],
        gemini_id if isinstance(gemini_id, str) else None,
        signature if isinstance(signature, str) else None,
    )


# --- the request ---------------------------------------------------------------------------


def build_request(body: JsonObject) -> JsonObject:
    """The ``generateContent`` body for an OpenAI chat request (the model goes in the URL)."""
    reject_set(body, PROVIDER, _UNSUPPORTED, "Gemini has no equivalent through this gateway")
    system: list[JsonObject] = []
    contents: list[JsonObject] = []
    names: dict[str, str] = {}  # OpenAI tool-call id -> function name, from assistant turns
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
            parts = _model_parts(message, where, names)
            if parts:
                _append(contents, "model", parts)
        elif role == "tool":
            _append(contents, "user", [_function_response(message, where, names)])
        else:
            raise unsupported(PROVIDER, f"{where}.role", f"the {role!r} role; use tools")
    if not contents:
        raise invalid("messages", "Gemini needs at least one user or assistant message")
    request: JsonObject = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    _add_tools(body, request)
    config = _generation_config(body)
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


def _model_parts(message: JsonObject, where: str, names: dict[str, str]) -> list[JsonObject]:
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
    for k, call in enumerate(calls):
        param = f"{where}.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid(f"{param}.function", "expected {name, arguments}")
        name: str = function["name"]
        args = tool_arguments(function.get("arguments"), f"{param}.function.arguments")
        call_id = call.get("id")
        ref = decode_call_id(call_id)
        function_call: JsonObject = {"name": name, "args": args}
        if ref is not None and ref.gemini_id:
            function_call["id"] = ref.gemini_id
        gemini_part: JsonObject = {"functionCall": function_call}
        if ref is not None and ref.signature:
            gemini_part["thoughtSignature"] = ref.signature
        parts.append(gemini_part)
        if isinstance(call_id, str):
            names[call_id] = name
    return parts


def _function_response(message: JsonObject, where: str, names: dict[str, str]) -> JsonObject:
    call_id = message.get("tool_call_id")
    ref = decode_call_id(call_id)
    name = names.get(call_id) if isinstance(call_id, str) else None
    if name is None and ref is not None:
        name = ref.name
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
    if ref is not None and ref.gemini_id:
        response["id"] = ref.gemini_id
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
    return config


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
        config["responseJsonSchema"] = schema
        return
    raise invalid("response_format.type", "expected 'text', 'json_object' or 'json_schema'")
