"""A Responses API request (``POST /v1/responses``) read and turned into an OpenAI chat body.

``read_request`` checks what the gateway reads itself, for every target; ``chat_body`` is
the translation for a target without OpenAI's Responses API (``providers/responses.py``).
What has no chat equivalent is either kept by the gateway (``store``,
``previous_response_id``, ``metadata``), dropped because it changes nothing there
(``truncation``, ``reasoning.summary``, obfuscation), or refused with a 400 naming the
field (built-in tools, files; ``background``, ``conversation`` and stored prompts on
every target). docs/api.md has the table. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aigateway.errors import InvalidRequest
from aigateway.providers._openai_format import JsonObject, invalid

MESSAGE_ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text", "text")
#: Fields refused: each needs state or a tool only OpenAI's own Responses API has.
REFUSED = {
    "background": "background responses are not supported by the gateway",
    "conversation": "conversations are not supported; use previous_response_id",
    "prompt": "stored prompt templates live in an OpenAI project, not in the gateway",
    "context_management": "server-side compaction is not supported by the gateway",
}
#: Chat fields of the same name and meaning, passed on as they are.
SAME_NAME = (
    "temperature",
    "top_p",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "service_tier",
    "parallel_tool_calls",
)
LOGPROBS_INCLUDE = "message.output_text.logprobs"
MAX_METADATA = 16


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A checked Responses body: what the gateway keeps, and the new input as items."""

    body: JsonObject
    model: str
    items: list[JsonObject]  # the new input, a string made one user message
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None


def read_request(body: JsonObject) -> ResponsesRequest:
    """Check the fields the gateway reads itself; a bad one is a 400 naming it."""
    for name, why in REFUSED.items():
        if body.get(name) not in (None, False):
            raise InvalidRequest(
                f"'{name}' is not supported: {why}", param=name, code="unsupported_parameter"
            )
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest(
            "missing required field 'model': expected a model name such as 'gpt-4o-mini'",
            param="model",
            code="missing_required_parameter",
        )
    items = input_items(body.get("input"))
    stream = _flag(body, "stream", False)
    store = _flag(body, "store", True)
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise invalid("previous_response_id", "expected a response id")
    if not items and previous is None:
        raise InvalidRequest(
            "missing required field 'input': expected a string or a list of input items",
            param="input",
            code="missing_required_parameter",
        )
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise invalid("instructions", "expected a string")
    metadata = body.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict)
        or len(metadata) > MAX_METADATA
        or not all(isinstance(v, str) for v in metadata.values())
    ):
        raise invalid("metadata", f"expected an object of at most {MAX_METADATA} strings")
    return ResponsesRequest(body, model, items, stream, store, previous)


def input_items(value: Any) -> list[JsonObject]:
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise invalid("input", "expected a string or a list of input items")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise invalid(f"input[{i}]", "expected an input item object")
    return value


def chat_body(request: ResponsesRequest, items: list[JsonObject]) -> JsonObject:
    """The chat body for ``items`` (the whole conversation, stored turns resolved)."""
    body = request.body
    messages: list[JsonObject] = []
    instructions = body.get("instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for i, item in enumerate(items):
        _add_item(messages, item, f"input[{i}]")
    if len(messages) == bool(instructions):  # reasoning items alone say nothing
        raise invalid("input", "expected at least one message or function call")
    chat: JsonObject = {"model": request.model, "messages": messages}
    for name in SAME_NAME:
        if body.get(name) is not None:
            chat[name] = body[name]
    tools, choice = _tools(body.get("tools"), body.get("tool_choice"))
    if tools:
        chat["tools"] = tools
    if choice is not None:
        chat["tool_choice"] = choice
    limit = body.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 1:
            raise invalid("max_output_tokens", "expected a whole number >= 1")
        if limit != int(limit):
            raise invalid("max_output_tokens", "expected a whole number >= 1")
        chat["max_completion_tokens"] = int(limit)
    _text(body.get("text"), chat)
    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise invalid("reasoning", "expected an object")
        effort = reasoning.get("effort")
        if effort is not None:
            if not isinstance(effort, str):
                raise invalid("reasoning.effort", "expected a string such as 'low'")
            chat["reasoning_effort"] = effort
    _logprobs(body, chat)
    if request.stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # usage is always in the last event
    return chat


# --- input items ----------------------------------------------------------------------------


def _add_item(messages: list[JsonObject], item: JsonObject, where: str) -> None:
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        messages.append(_message(item, where))
    elif kind == "function_call":
        call = {
            "id": _string(item, "call_id", where),
            "type": "function",
            "function": {
                "name": _string(item, "name", where),
                "arguments": _string(item, "arguments", where, empty=True),
            },
        }
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant" and "tool_calls" not in last:
            last["tool_calls"] = [call]  # the text said before the call, in one message
        elif last is not None and last["role"] == "assistant" and last.get("tool_calls"):
            last["tool_calls"].append(call)  # parallel calls: one assistant message
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        if not isinstance(output, str):
            output = _joined_text(output, f"{where}.output")
        messages.append(
            {"role": "tool", "tool_call_id": _string(item, "call_id", where), "content": output}
        )
    elif kind == "reasoning":
        return  # another model's reasoning: no chat field carries it
    elif kind == "item_reference":
        raise invalid(f"{where}.id", "no stored item with this id", code="not_found")
    else:
        raise InvalidRequest(
            f"input item type {kind!r} at '{where}' is not supported by the gateway "
            "(messages, function_call, function_call_output, reasoning and item_reference are)",
            param=f"{where}.type",
            code="unsupported_parameter",
        )


def _message(item: JsonObject, where: str) -> JsonObject:
    role = item.get("role")
    if role not in MESSAGE_ROLES:
        raise invalid(f"{where}.role", "expected one of " + ", ".join(MESSAGE_ROLES))
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise invalid(f"{where}.content", "expected a string or a list of content parts")
    if role != "user":  # system, developer, assistant: text only
        return {"role": role, "content": _joined_text(content, f"{where}.content")}
    parts = [_user_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return {"role": role, "content": parts[0]["text"]}
    return {"role": role, "content": parts}


def _user_part(part: Any, where: str) -> JsonObject:
    if not isinstance(part, dict):
        raise invalid(where, "expected a content part object")
    kind = part.get("type")
    if kind in TEXT_PARTS:
        return {"type": "text", "text": _string(part, "text", where, empty=True)}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise InvalidRequest(
                f"'{where}': only images given by 'image_url' (an https or data: URL) are "
                "supported; 'file_id' names a file stored at OpenAI",
                param=f"{where}.image_url",
                code="unsupported_parameter",
            )
        detail = part.get("detail") or "auto"
        if detail not in ("auto", "low", "high"):
            raise invalid(f"{where}.detail", "expected 'auto', 'low' or 'high'")
        return {"type": "image_url", "image_url": {"url": url, "detail": detail}}
    raise InvalidRequest(
        f"content part type {kind!r} at '{where}' is not supported by the gateway "
        "(input_text and input_image are)",
        param=f"{where}.type",
        code="unsupported_parameter",
    )


def _joined_text(content: Any, where: str) -> str:
    if not isinstance(content, list):
        raise invalid(where, "expected a string or a list of text parts")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in (*TEXT_PARTS, "refusal"):
            raise invalid(f"{where}[{j}]", "expected a text part (images go in user messages)")
        key = "refusal" if part.get("type") == "refusal" else "text"
        texts.append(_string(part, key, f"{where}[{j}]", empty=True))
    return "".join(texts)


def _string(item: JsonObject, name: str, where: str, empty: bool = False) -> str:
    value = item.get(name)
    if not isinstance(value, str) or (not value and not empty):
        raise invalid(f"{where}.{name}", "expected a string")
    return value


# --- tools, formats, logprobs ---------------------------------------------------------------


def _tools(tools: Any, choice: Any) -> tuple[list[JsonObject], Any]:
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise invalid("tools", "expected a list of tools")
    chat_tools: list[JsonObject] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise InvalidRequest(
                f"tool type {kind!r} at 'tools[{i}]' is not supported by the gateway: only "
                "function tools are (built-in tools run inside OpenAI's own Responses API)",
                param=f"tools[{i}].type",
                code="unsupported_parameter",
            )
        function: JsonObject = {"name": _string(tool, "name", f"tools[{i}]")}
        for name in ("description", "parameters", "strict"):
            if tool.get(name) is not None:
                function[name] = tool[name]
        chat_tools.append({"type": "function", "function": function})
    if choice is None or choice in ("none", "auto", "required"):
        return chat_tools, choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = _string(choice, "name", "tool_choice")
        return chat_tools, {"type": "function", "function": {"name": name}}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        mode = choice.get("mode", "auto")
        allowed = choice.get("tools")
        if mode not in ("auto", "required") or not isinstance(allowed, list):
            raise invalid("tool_choice", "expected mode 'auto' or 'required' and a list of tools")
        names = {t.get("name") for t in allowed if isinstance(t, dict)}
        kept = [t for t in chat_tools if t["function"]["name"] in names]
        return kept, mode
    raise invalid("tool_choice", "expected 'none', 'auto', 'required' or a function tool choice")


def _text(text: Any, chat: JsonObject) -> None:
    if text is None:
        return
    if not isinstance(text, dict):
        raise invalid("text", "expected an object")
    verbosity = text.get("verbosity")
    if verbosity is not None:
        chat["verbosity"] = verbosity
    fmt = text.get("format")
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return
    if kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
        return
    if kind != "json_schema":
        raise invalid("text.format.type", "expected 'text', 'json_object' or 'json_schema'")
    assert isinstance(fmt, dict)
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise invalid("text.format.schema", "expected a JSON Schema object")
    spec: JsonObject = {"name": _string(fmt, "name", "text.format"), "schema": schema}
    for name in ("description", "strict"):
        if fmt.get(name) is not None:
            spec[name] = fmt[name]
    chat["response_format"] = {"type": "json_schema", "json_schema": spec}


def _logprobs(body: JsonObject, chat: JsonObject) -> None:
    include = body.get("include")
    if include is not None and not (
        isinstance(include, list) and all(isinstance(i, str) for i in include)
    ):
        raise invalid("include", "expected a list of strings")
    top = body.get("top_logprobs")
    if top is not None and (type(top) is not int or not 0 <= top <= 20):
        raise invalid("top_logprobs", "expected a whole number from 0 to 20")
    if top or LOGPROBS_INCLUDE in (include or ()):
        chat["logprobs"] = True
        if top:
            chat["top_logprobs"] = top


def _flag(body: JsonObject, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(name, "expected true or false")
    return value
