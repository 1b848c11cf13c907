"""The OpenAI side of every translation: reading OpenAI chat requests, writing OpenAI answers.

Adapters for other wire formats share these helpers so that every provider reads a client's
request the same way and answers in exactly the same shape. Pure functions, no I/O.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from aigateway.errors import InvalidRequest, ProviderError

JsonObject = dict[str, Any]


# --- reading provider answers ------------------------------------------------------------


def load_object(provider: str, body: bytes) -> JsonObject:
    """A provider answer that must be a JSON object; anything else is the provider's fault."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ProviderError(f"{provider} answered with a body that is not a JSON object")
    return parsed


def check_completion(provider: str, answer: JsonObject) -> None:
    """A chat completion must hold a list of choices, each an object with a message object:
    anything else is the provider's fault, not something to hand to a client."""
    choices = answer.get("choices")
    if (
        not isinstance(choices, list)
        or not choices
        or not all(isinstance(c, dict) and isinstance(c.get("message"), dict) for c in choices)
    ):
        raise ProviderError(f"{provider} answered with a completion in an unexpected shape")


def load_any(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


# --- reading OpenAI chat requests ------------------------------------------------------------


def unsupported(provider: str, param: str, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"'{param}' cannot be sent to {provider}: {why}",
        param=param,
        code="unsupported_parameter",
    )


def invalid(param: str, why: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(f"invalid '{param}': {why}", param=param, code=code)


def text_parts(content: Any, where: str) -> Iterator[tuple[str, JsonObject]]:
    """``(param path, part)`` for each content part; a string content is one text part."""
    if isinstance(content, str):
        yield f"{where}.content", {"type": "text", "text": content}
    elif isinstance(content, list):
        for j, part in enumerate(content):
            if not isinstance(part, dict):
                raise invalid(f"{where}.content[{j}]", "expected a content part object")
            yield f"{where}.content[{j}]", part
    elif content is not None:
        raise invalid(f"{where}.content", "expected a string or a list of content parts")


def plain_text(content: Any, where: str, provider: str) -> str:
    """The text of a content that may only hold text (system, developer and tool messages)."""
    texts: list[str] = []
    for param, part in text_parts(content, where):
        kind = part.get("type")
        if kind != "text":
            raise unsupported(provider, param, f"only text parts are allowed here, not {kind!r}")
        text = part.get("text")
        if not isinstance(text, str):
            raise invalid(f"{param}.text", "expected a string")
        texts.append(text)
    return "\n".join(texts)


@dataclass(frozen=True, slots=True)
class InlineData:
    mime_type: str
    data: str  # standard base64, as the client sent it


def data_url(url: str, param: str) -> InlineData | None:
    """The media type and base64 payload of a ``data:`` URL; None for any other URL."""
    if not url.startswith("data:"):
        return None
    header, comma, data = url[5:].partition(",")
    mime_type = header.split(";", 1)[0].strip().lower()
    if not comma or not header.endswith(";base64") or not mime_type or not data:
        raise invalid(param, "a data URL must look like data:<media type>;base64,<data>")
    return InlineData(mime_type, data)


def tool_arguments(arguments: Any, param: str) -> JsonObject:
    """OpenAI's JSON-string arguments as the object the other formats want."""
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str):
        raise invalid(param, "expected a JSON string")
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise invalid(param, "the arguments are not valid JSON") from None
    if not isinstance(value, dict):
        raise invalid(param, "the arguments must be a JSON object")
    return value


def stop_sequences(body: JsonObject) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise invalid("stop", "expected a string or a list of strings")


def max_output_tokens(body: JsonObject) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise invalid(name, "expected a whole number >= 1")
            return value
    return None


def include_usage(body: JsonObject) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


@dataclass(frozen=True, slots=True)
class FunctionTool:
    name: str
    description: str | None
    parameters: JsonObject | None


def function_tools(body: JsonObject, provider: str) -> list[FunctionTool]:
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise unsupported(provider, "functions", "the deprecated functions API; use 'tools'")
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid("tools", "expected a list")
    result: list[FunctionTool] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise unsupported(provider, f"tools[{i}].type", f"only function tools, not {kind!r}")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise invalid(f"tools[{i}].function", "expected an object")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise invalid(f"tools[{i}].function.name", "expected a non-empty string")
        description = function.get("description")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise invalid(f"tools[{i}].function.parameters", "expected a JSON Schema object")
        result.append(
            FunctionTool(name, description if isinstance(description, str) else None, parameters)
        )
    return result


def tool_choice(body: JsonObject, has_tools: bool) -> tuple[str, str | None] | None:
    """``(mode, function name)``: mode is none, auto, required or function; None if unset."""
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if choice in ("none", "auto", "required"):
        mode: tuple[str, str | None] = (choice, None)
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if not isinstance(name, str) or not name:
            raise invalid("tool_choice.function.name", "expected a non-empty string")
        mode = ("function", name)
    else:
        raise invalid("tool_choice", "expected 'none', 'auto', 'required' or a function")
    if not has_tools and mode[0] in ("required", "function"):
        raise invalid("tool_choice", "a tool call was asked for but no 'tools' were given")
    return mode


def reject_set(body: JsonObject, provider: str, params: tuple[str, ...], why: str) -> None:
    """A 400 for the first of ``params`` set to anything but its neutral value."""
    for param in params:
        value = body.get(param)
        if value is None or value is False or value == 0 or value == {} or value == []:
            continue
        raise unsupported(provider, param, why)


# --- writing OpenAI answers ------------------------------------------------------------------


def completion_id(source: Any = None) -> str:
    if isinstance(source, str) and source:
        return "chatcmpl-" + source
    return "chatcmpl-" + uuid.uuid4().hex


def created_now() -> int:
    return int(time.time())


def usage(
    prompt: int, completion: int, *, cached: int | None = None, reasoning: int | None = None
) -> JsonObject:
    result: JsonObject = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        result["prompt_tokens_details"] = {"cached_tokens": cached}
    if reasoning is not None:
        result["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return result


def tool_call(call_id: str, name: str, arguments: Any) -> JsonObject:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
    }


def choice(
    index: int,
    text: str | None,
    tool_calls: list[JsonObject],
    finish_reason: str,
    logprobs: JsonObject | None = None,
) -> JsonObject:
    message: JsonObject = {"role": "assistant", "content": text, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "index": index,
        "message": message,
        "logprobs": logprobs,
        "finish_reason": finish_reason,
    }


def completion(
    completion_id: str, model: str, choices: list[JsonObject], usage: JsonObject
) -> bytes:
    return orjson.dumps(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created_now(),
            "model": model,
            "choices": choices,
            "usage": usage,
        }
    )


class ChunkWriter:
    """Serializes ``chat.completion.chunk`` payloads of one stream (same id, created, model)."""

    __slots__ = ("_head", "include_usage")

    def __init__(self, completion_id: str, model: str, include_usage: bool) -> None:
        self._head: JsonObject = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created_now(),
            "model": model,
        }
        self.include_usage = include_usage

    def chunk(
        self,
        index: int,
        delta: JsonObject,
        finish_reason: str | None = None,
        logprobs: JsonObject | None = None,
    ) -> bytes:
        payload = dict(self._head)
        payload["choices"] = [
            {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        ]
        if self.include_usage:
            payload["usage"] = None
        return orjson.dumps(payload)

    def usage_chunk(self, usage: JsonObject) -> bytes:
        payload = dict(self._head)
        payload["choices"] = []
        payload["usage"] = usage
        return orjson.dumps(payload)
