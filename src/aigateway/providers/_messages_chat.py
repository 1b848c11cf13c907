"""Anthropic Messages requests as OpenAI chat bodies, and OpenAI answers as Messages.

For a ``/v1/messages`` request whose target does not speak Anthropic's format (gpt-*,
gemini-*): the body becomes the gateway's chat body, which the target's own adapter
then translates as it translates any chat request. What cannot reach such a target is
dropped when the answer keeps its meaning without it, and refused (400 naming the field)
when it would not; docs/api.md lists every field. Pure functions, no I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

from aigateway.providers._openai_format import JsonObject, invalid, load_object, unsupported
from aigateway.wire import token_count

__all__ = ["STOP_REASONS", "chat_body", "message_from_completion", "message_id", "messages_usage"]

TARGET = "a model that does not speak Anthropic's format"
# Fields a translated target does without, the answer still meaning what was asked:
#   thinking        the target reasons (or not) as its model does; there is no budget to map
#   service_tier    Anthropic's capacity tier
#   cache_control   prompt-caching markers (on blocks, tools, system): providers cache alone
#   citations       on text blocks: the cited sources are Anthropic's to return
DROPPED = frozenset({"thinking", "service_tier", "cache_control", "inference_geo"})
KNOWN = frozenset(
    {
        "model", "messages", "max_tokens", "system", "stream", "temperature", "top_p",
        "top_k", "stop_sequences", "metadata", "tools", "tool_choice", "output_config",
        "output_format", *DROPPED,
    }
)  # fmt: skip
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
_MEDIA = frozenset({"base64", "url"})


def chat_body(body: JsonObject, *, top_k: bool) -> JsonObject:
    """The chat body of a Messages request; ``top_k``: whether the target takes it."""
    unknown = sorted(body.keys() - KNOWN)
    if unknown:
        raise unsupported(TARGET, unknown[0], "the gateway cannot say what it would mean there")
    messages: list[JsonObject] = []
    system = _system(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for i, message in enumerate(body["messages"]):
        where = f"messages.{i}"
        if message["role"] == "user":
            messages.extend(_user(message["content"], where))
        else:
            assistant = _assistant(message["content"], where)
            if assistant is not None:
                messages.append(assistant)
    chat: JsonObject = {"model": body["model"], "messages": messages}
    if body.get("max_tokens") is not None:
        chat["max_completion_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p", *(("top_k",) if top_k else ())):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    _tools(body, chat)
    _output_format(body, chat)
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _system(system: Any) -> str:
    if isinstance(system, str):
        return system
    return "\n".join(block["text"] for block in system or ())


def _user(content: Any, where: str) -> list[JsonObject]:
    """A user turn: its tool results first (each a ``tool`` message, as OpenAI wants them
    right after the calls), then the rest as one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results: list[JsonObject] = []
    parts: list[JsonObject] = []
    for j, block in enumerate(content):
        param = f"{where}.content.{j}"
        kind = block["type"]
        if kind == "tool_result":
            results.append(_tool_result(block, param))
        elif kind == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image(block["source"], param))
        elif kind == "document":
            parts.append(_document(block["source"], param))
        else:
            raise unsupported(TARGET, f"{param}.type", f"{kind!r} blocks in a user turn")
    if parts:
        results.append({"role": "user", "content": parts})
    return results


def _image(source: JsonObject, param: str) -> JsonObject:
    kind = source.get("type")
    if kind == "base64" and isinstance(source.get("data"), str):
        media = source.get("media_type")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{source['data']}"}}
    if kind == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise unsupported(TARGET, f"{param}.source", "images go as base64 data or an https URL")


def _document(source: JsonObject, param: str) -> JsonObject:
    kind = source.get("type")
    if kind == "text" and isinstance(source.get("data"), str):
        return {"type": "text", "text": source["data"]}
    if kind == "base64" and source.get("media_type") == "application/pdf":
        data = f"data:application/pdf;base64,{source.get('data')}"
        return {"type": "file", "file": {"filename": "document.pdf", "file_data": data}}
    raise unsupported(TARGET, f"{param}.source", "documents go as base64 PDF or plain text")


def _tool_result(block: JsonObject, param: str) -> JsonObject:
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for k, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise unsupported(
                    TARGET, f"{param}.content.{k}", "tool results carry text only there"
                )
            texts.append(str(part.get("text") or ""))
        text = "\n".join(texts)
    else:
        raise invalid(f"{param}.content", "expected a string or a list of text blocks")
    if block.get("is_error") is True:  # OpenAI has no flag for it: the text says it
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}


def _assistant(content: Any, where: str) -> JsonObject | None:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[JsonObject] = []
    for j, block in enumerate(content):
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            arguments = orjson.dumps(block["input"]).decode()
            function = {"name": block["name"], "arguments": arguments}
            calls.append({"id": block["id"], "type": "function", "function": function})
        elif kind in ("thinking", "redacted_thinking"):
            continue  # Anthropic's own reasoning, signed for Anthropic: no other model reads it
        else:
            raise unsupported(TARGET, f"{where}.content.{j}.type", f"{kind!r} blocks")
    if not texts and not calls:
        return None
    message: JsonObject = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(body: JsonObject, chat: JsonObject) -> None:
    tools = body.get("tools")
    if tools:
        functions = []
        for i, tool in enumerate(tools):
            if tool.get("type") not in (None, "custom"):
                raise unsupported(TARGET, f"tools.{i}.type", f"Anthropic's {tool['type']!r} tool")
            function: JsonObject = {"name": tool["name"]}
            if isinstance(tool.get("description"), str):
                function["description"] = tool["description"]
            schema = tool.get("input_schema")
            function["parameters"] = schema if isinstance(schema, dict) else {"type": "object"}
            functions.append({"type": "function", "function": function})
        chat["tools"] = functions
    choice = body.get("tool_choice")
    if choice is None or not tools:  # without tools a choice among them means nothing
        return
    kind = choice["type"]
    if kind == "tool":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    if choice.get("disable_parallel_tool_use") is True and tools:
        chat["parallel_tool_calls"] = False


def _output_format(body: JsonObject, chat: JsonObject) -> None:
    """Structured output (``output_config.format``, or the older beta ``output_format``)
    as OpenAI's ``response_format``; the effort setting has nothing to map to."""
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else body.get("output_format")
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise unsupported(TARGET, "output_config.format", "only the 'json_schema' format")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise invalid("output_config.format.schema", "expected a JSON Schema object")
    chat["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


# --- answers ---------------------------------------------------------------------------


def message_id(source: Any) -> str:
    text = str(source or "")
    return text if text.startswith("msg_") else "msg_" + text.removeprefix("chatcmpl-")


def messages_usage(usage: Any) -> JsonObject:
    """OpenAI's usage as Anthropic's: ``input_tokens`` leaves out cache reads."""
    if not isinstance(usage, dict):
        usage = {}
    details = usage.get("prompt_tokens_details")
    cached = token_count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    prompt = token_count(usage.get("prompt_tokens"))
    return {
        "input_tokens": max(prompt - cached, 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": token_count(usage.get("completion_tokens")),
    }


def message_from_completion(provider: str, body: bytes, model: str) -> bytes:
    """A chat completion (already checked by the target's adapter) as a Message."""
    answer = load_object(provider, body)
    choice = answer["choices"][0]
    message = choice["message"]
    content: list[JsonObject] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": str(call.get("id")),
                "name": str(function.get("name")),
                "input": tool_input(function.get("arguments")),
            }
        )
    return orjson.dumps(
        {
            "id": message_id(answer.get("id")),
            "type": "message",
            "role": "assistant",
            "model": answer.get("model") or model,
            "content": content,
            "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "", "end_turn"),
            "stop_sequence": None,
            "usage": messages_usage(answer.get("usage")),
        }
    )


def tool_input(arguments: Any) -> Any:
    """OpenAI's JSON-string arguments as Anthropic's input object; arguments that are not
    a JSON object (a model may send broken JSON) go as ``{"arguments": <the text>}``."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        value = orjson.loads(arguments)
    except (orjson.JSONDecodeError, TypeError):
        value = None
    return value if isinstance(value, dict) else {"arguments": str(arguments)}
