"""OpenAI chat requests as Anthropic Messages API bodies.

System and developer messages move to the top-level ``system``; ``tool`` messages become
``tool_result`` blocks of a user turn; consecutive turns of one role are merged (as Anthropic
would do itself); ``max_tokens``, which Anthropic requires, gets the adapter's default when the
client gave none. Structured output, reasoning effort, stop sequences and sampling follow the
rules of :mod:`aigateway.providers._anthropic_options`. Any other parameter Anthropic cannot take
is a 400 naming it, never dropped silently.
"""

from __future__ import annotations

import re
from typing import Any

from aigateway.providers._anthropic_options import (
    apply_thinking,
    drop_blank_stops,
    json_answer,
    one_sampler,
    sampling_allowed,
)
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

__all__ = ["PROVIDER", "build_request"]

PROVIDER = "Anthropic"
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}\Z")
_UNSUPPORTED = (
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "audio",
    "prediction",
    "web_search_options",
)


def build_request(
    body: JsonObject, model: str, default_max_tokens: int, stream: bool
) -> JsonObject:
    reject_set(body, PROVIDER, _UNSUPPORTED, "Anthropic has no equivalent")
    system: list[str] = []
    messages: list[JsonObject] = []
    for i, message in enumerate(body.get("messages") or ()):
        where = f"messages[{i}]"
        role = message.get("role")
        if role in ("system", "developer"):
            text = plain_text(message.get("content"), where, PROVIDER)
            if text.strip():
                system.append(text)
        elif role == "user":
            blocks = _user_blocks(message.get("content"), where)
            if not blocks:
                raise invalid(f"{where}.content", "Anthropic does not accept an empty message")
            _append(messages, "user", blocks)
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
            if blocks:
                _append(messages, "assistant", blocks)
        elif role == "tool":
            _append(messages, "user", [_tool_result(message, where)])
        else:
            raise unsupported(PROVIDER, f"{where}.role", f"the {role!r} role; use tools")
    if not messages:
        raise invalid("messages", "Anthropic needs at least one user or assistant message")

    request: JsonObject = {
        "model": model,
        "max_tokens": max_output_tokens(body) or default_max_tokens,
        "messages": messages,
    }
    if len(system) == 1:
        request["system"] = system[0]
    elif system:
        request["system"] = [{"type": "text", "text": text} for text in system]
    _add_tools(body, request)
    _add_json_answer(body, request, model)
    _add_sampling(body, request, model)
    apply_thinking(body, request, model)
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        request["metadata"] = {"user_id": user}
    if stream:
        request["stream"] = True
    return request


def _append(messages: list[JsonObject], role: str, blocks: list[JsonObject]) -> None:
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _text_block(text: Any, param: str) -> JsonObject | None:
    """A text block, or None for empty text (Anthropic rejects whitespace-only blocks)."""
    if not isinstance(text, str):
        raise invalid(param, "expected a string")
    return {"type": "text", "text": text} if text.strip() else None


def _user_blocks(content: Any, where: str) -> list[JsonObject]:
    blocks: list[JsonObject] = []
    for param, part in text_parts(content, where):
        kind = part.get("type")
        if kind == "text":
            block = _text_block(part.get("text"), f"{param}.text")
            if block is not None:
                blocks.append(block)
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url"), param))
        elif kind == "file":
            blocks.append(_document(part.get("file"), param))
        else:
            raise unsupported(PROVIDER, f"{param}.type", f"content parts of type {kind!r}")
    return blocks


def _image(image: Any, param: str) -> JsonObject:
    url = image.get("url") if isinstance(image, dict) else image
    param = f"{param}.image_url.url"
    if not isinstance(url, str) or not url:
        raise invalid(param, "expected an image URL")
    inline = data_url(url, param)
    if inline is not None:
        media_type = "image/jpeg" if inline.mime_type == "image/jpg" else inline.mime_type
        if media_type not in _IMAGE_TYPES:
            raise unsupported(
                PROVIDER, param, f"images must be jpeg, png, gif or webp, not {media_type}"
            )
        source: JsonObject = {"type": "base64", "media_type": media_type, "data": inline.data}
    elif url.startswith(("https://", "http://")):
        source = {"type": "url", "url": url}
    else:
        raise invalid(param, "expected an https:// or data: URL")
    return {"type": "image", "source": source}


def _document(file: Any, param: str) -> JsonObject:
    data = file.get("file_data") if isinstance(file, dict) else None
    inline = data_url(data, f"{param}.file.file_data") if isinstance(data, str) else None
    if inline is None or inline.mime_type != "application/pdf":
        raise unsupported(PROVIDER, f"{param}.file", "only PDF files sent inline as data: URLs")
    source = {"type": "base64", "media_type": inline.mime_type, "data": inline.data}
    return {"type": "document", "source": source}


def _assistant_blocks(message: JsonObject, where: str) -> list[JsonObject]:
    blocks: list[JsonObject] = []
    for param, part in text_parts(message.get("content"), where):
        kind = part.get("type")
        if kind not in ("text", "refusal"):
            raise unsupported(PROVIDER, f"{param}.type", f"assistant parts of type {kind!r}")
        block = _text_block(part.get(kind), f"{param}.{kind}")
        if block is not None:
            blocks.append(block)
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise invalid(f"{where}.tool_calls", "expected a list")
    for k, call in enumerate(calls):
        param = f"{where}.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid(f"{param}.function", "expected {name, arguments}")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise invalid(f"{param}.id", "Anthropic needs the id of every tool call")
        arguments = tool_arguments(function.get("arguments"), f"{param}.function.arguments")
        blocks.append(
            {"type": "tool_use", "id": call_id, "name": function["name"], "input": arguments}
        )
    return blocks


def _tool_result(message: JsonObject, where: str) -> JsonObject:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise invalid(f"{where}.tool_call_id", "expected the id of the tool call answered")
    content = plain_text(message.get("content"), where, PROVIDER)
    return {"type": "tool_result", "tool_use_id": call_id, "content": content}


def _add_tools(body: JsonObject, request: JsonObject) -> None:
    tools: list[JsonObject] = []
    for i, tool in enumerate(function_tools(body, PROVIDER)):
        if not _NAME.match(tool.name):
            raise unsupported(
                PROVIDER,
                f"tools[{i}].function.name",
                "tool names hold only letters, digits, '_' or '-' (at most 128 characters)",
            )
        declaration: JsonObject = {"name": tool.name}
        if tool.description:
            declaration["description"] = tool.description
        declaration["input_schema"] = tool.parameters or {"type": "object", "properties": {}}
        tools.append(declaration)
    if not tools:
        tool_choice(body, False)  # still a 400 if a call was forced without tools
        return
    request["tools"] = tools
    choice = tool_choice(body, True)
    serial = body.get("parallel_tool_calls") is False
    if choice is None:
        if serial:
            request["tool_choice"] = {"type": "auto", "disable_parallel_tool_use": True}
        return
    mode, name = choice
    if mode == "none":
        request["tool_choice"] = {"type": "none"}
        return
    if mode == "function":
        anthropic_choice: JsonObject = {"type": "tool", "name": name}
    else:
        anthropic_choice = {"type": "any" if mode == "required" else "auto"}
    if serial:
        anthropic_choice["disable_parallel_tool_use"] = True
    request["tool_choice"] = anthropic_choice


def _add_json_answer(body: JsonObject, request: JsonObject, model: str) -> None:
    answer = json_answer(body, model)
    if answer is None:
        return
    if answer.output_format is not None:
        request["output_config"] = {"format": answer.output_format}
        return
    if "tools" in request:
        raise unsupported(
            PROVIDER,
            "response_format",
            f"{model} answers in JSON through a forced tool call, which cannot be combined "
            "with 'tools'",
        )
    request["tools"] = [answer.tool]
    request["tool_choice"] = {
        "type": "tool",
        "name": answer.tool_name,
        "disable_parallel_tool_use": True,
    }


def _add_sampling(body: JsonObject, request: JsonObject, model: str) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise unsupported(PROVIDER, "n", "Anthropic answers with one message per request")
    for name, high in (("temperature", 1.0), ("top_p", 1.0)):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid(name, "expected a number")
        if not 0 <= value <= high:
            raise unsupported(PROVIDER, name, f"Anthropic takes 0 to {high:g}, not {value}")
        request[name] = value
    top_k = body.get("top_k")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise invalid("top_k", "expected a whole number >= 0")
        request["top_k"] = top_k
    if "temperature" in request and "top_p" in request and one_sampler(model):
        del request["top_p"]  # "cannot both be specified for this model"
    if not sampling_allowed(model):
        for name in ("temperature", "top_p", "top_k"):
            request.pop(name, None)
    stop = drop_blank_stops(stop_sequences(body))
    if stop:
        request["stop_sequences"] = stop
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise unsupported(PROVIDER, "modalities", "this gateway relays text answers only")
