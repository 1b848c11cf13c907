"""Deterministic OpenAI-format replies of the mock provider (no I/O here).

Chat: the reply is ``"Mock reply to: <last user message, whitespace-collapsed, cut at 60 chars>"``.
If the request has ``tools``, ``tool_choice`` is not ``"none"``, the last message is not already a
tool result, and the last user message contains the word "weather" (or ``tool_choice`` forces a
call), the reply is a call of the first tool (or the forced one) with arguments
``{"location": "Paris"}``. Token counts are word counts: ``prompt_tokens`` = words of all message
texts + 3 per message, ``completion_tokens`` = words of the reply (per choice).

Structured output: a ``response_format`` of type ``json_schema`` is answered with JSON that
satisfies the schema (:mod:`aigateway.testing.mock_schema`), ``json_object`` with
``{"reply": "<the reply text>"}``. A tool call's arguments are ``{"location": "Paris"}`` when
the tool declares no parameters or a ``location`` parameter, and JSON made from the tool's
schema otherwise (so a tool forced to carry a structured answer gets schema-valid input).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
import xxhash

from aigateway.testing.mock_faults import MockRequestError
from aigateway.testing.mock_schema import sample

__all__ = [
    "CREATED",
    "ChatPlan",
    "plan_chat",
    "positive_int_field",
    "render_chat",
    "render_chat_stream",
    "require_model",
]

CREATED = 1_735_689_600  # fixed "created" timestamp (2025-01-01T00:00:00Z): replies are repeatable
SYSTEM_FINGERPRINT = "fp_mock"
REPLY_PREFIX = "Mock reply to: "
SNIPPET_CHARS = 60
TOOL_ARGUMENTS = '{"location": "Paris"}'
_TOOL_ARGUMENT_FRAGMENT = 6
MAX_CHOICES = 128
MAX_CALL_ID = 40
_WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)

# --------------------------------------------------------------------------------------------
# request helpers


def _message_text(message: dict[str, Any]) -> str:
    """Text of a message: a string content, or the text parts of a list content, space-joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def positive_int_field(body: dict[str, Any], key: str, maximum: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MockRequestError(
            400,
            f"Invalid '{key}': expected an integer >= 1, but got {value!r} instead.",
            param=key,
            code="invalid_value",
        )
    if maximum is not None and value > maximum:
        raise MockRequestError(
            400,
            f"Invalid '{key}': {value} is greater than the maximum of {maximum}.",
            param=key,
            code="integer_above_max_value",
        )
    return value


def require_model(body: Any) -> str:
    if not isinstance(body, dict):
        raise MockRequestError(
            400, "Invalid request body: expected a JSON object.", code="invalid_type"
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise MockRequestError(400, "you must provide a model parameter", param="model")
    return model


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if messages is None:
        raise MockRequestError(
            400,
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list) or not messages:
        raise MockRequestError(
            400,
            "Invalid 'messages': expected a non-empty array of message objects.",
            param="messages",
            code="invalid_value",
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise MockRequestError(
                400,
                f"Invalid 'messages[{index}]': expected an object with a string 'role'.",
                param=f"messages[{index}]",
                code="invalid_type",
            )
        _check_call_ids(message, index)
    return messages


def _check_call_ids(message: dict[str, Any], index: int) -> None:
    """OpenAI refuses tool-call ids longer than 40 characters."""
    calls = message.get("tool_calls")
    ids = [
        (f"tool_calls[{k}].id", c.get("id"))
        for k, c in enumerate(calls or ())
        if isinstance(c, dict)
    ]
    ids.append(("tool_call_id", message.get("tool_call_id")))
    for where, call_id in ids:
        if isinstance(call_id, str) and len(call_id) > MAX_CALL_ID:
            param = f"messages[{index}].{where}"
            raise MockRequestError(
                400,
                f"Invalid '{param}': string too long. Expected a string with maximum length "
                f"{MAX_CALL_ID}, but got a string with length {len(call_id)} instead.",
                param=param,
                code="string_above_max_length",
            )


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _forced_tool(tool_choice: Any) -> tuple[bool, str | None]:
    """(tool call forced?, forced function name) from ``tool_choice``."""
    if tool_choice == "required":
        return True, None
    if isinstance(tool_choice, dict):
        function = tool_choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return True, function["name"]
        return True, None
    return False, None


def _first_tool_name(tools: list[Any]) -> str:
    first = tools[0]
    if isinstance(first, dict):
        function = first.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return str(function["name"])
        if isinstance(first.get("name"), str):
            return str(first["name"])
    return "tool"


# --------------------------------------------------------------------------------------------
# chat completions


@dataclass(frozen=True, slots=True)
class ChatPlan:
    """Everything needed to render one chat completion, streamed or not."""

    completion_id: str
    model: str
    n: int
    content: str | None
    tool_call: tuple[str, str, str] | None  # (call id, function name, arguments)
    finish_reason: str
    usage: dict[str, Any]
    stream: bool
    include_usage: bool


def plan_chat(body: Any) -> ChatPlan:
    """Validate a chat completions request and decide the deterministic reply.

    Raises :class:`MockRequestError` (400) for requests OpenAI would reject.
    """
    model = require_model(body)
    messages = _messages(body)
    n = positive_int_field(body, "n", MAX_CHOICES) or 1
    max_completion = positive_int_field(body, "max_completion_tokens")
    if max_completion is None:
        max_completion = positive_int_field(body, "max_tokens")

    prompt_tokens = 0
    user_text: str | None = None
    for message in messages:
        text = _message_text(message)
        prompt_tokens += len(text.split()) + 3
        if message["role"] == "user":
            user_text = text
    if user_text is None:  # no user message at all: answer the last message
        user_text = _message_text(messages[-1])

    digest = xxhash.xxh3_64_hexdigest(orjson.dumps(messages) + model.encode())
    completion_id = "chatcmpl-mock-" + digest
    stream = body.get("stream") is True
    options = body.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True

    tools = body.get("tools")
    tool_choice = body.get("tool_choice")
    if isinstance(tools, list) and tools and tool_choice != "none":
        forced, forced_name = _forced_tool(tool_choice)
        answering_tool_result = messages[-1]["role"] == "tool"
        if forced or (not answering_tool_result and _WEATHER.search(user_text)):
            name = forced_name or _first_tool_name(tools)
            arguments = _tool_arguments(tools, name)
            completion_tokens = len(name.split()) + len(arguments.split())
            return ChatPlan(
                completion_id=completion_id,
                model=model,
                n=n,
                content=None,
                tool_call=("call_mock_" + digest, name, arguments),
                finish_reason="tool_calls",
                usage=_usage(prompt_tokens, completion_tokens * n),
                stream=stream,
                include_usage=include_usage,
            )

    snippet = " ".join(user_text.split())
    if len(snippet) > SNIPPET_CHARS:
        snippet = snippet[:SNIPPET_CHARS].rstrip() + "..."
    words = (REPLY_PREFIX + snippet).split()
    structured = _structured(body.get("response_format"), " ".join(words))
    if structured is not None:
        words = structured.split(" ")
    finish_reason = "stop"
    if structured is None and max_completion is not None and max_completion < len(words):
        words = words[:max_completion]
        finish_reason = "length"
    return ChatPlan(
        completion_id=completion_id,
        model=model,
        n=n,
        content=" ".join(words),
        tool_call=None,
        finish_reason=finish_reason,
        usage=_usage(prompt_tokens, len(words) * n),
        stream=stream,
        include_usage=include_usage,
    )


def _tool_schema(tools: list[Any], name: str) -> Any:
    """The parameters of tool ``name``, in OpenAI's, Anthropic's or Gemini's spelling."""
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        inner = tool.get("function")
        function: dict[str, Any] = inner if isinstance(inner, dict) else tool
        if function.get("name") == name:
            for key in ("parameters", "input_schema", "parametersJsonSchema"):
                if isinstance(function.get(key), dict):
                    return function[key]
    return None


def _tool_arguments(tools: list[Any], name: str) -> str:
    schema = _tool_schema(tools, name)
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict) or not properties or "location" in properties:
        return TOOL_ARGUMENTS
    return orjson.dumps(sample(schema)).decode()


def _structured(response_format: Any, reply: str) -> str | None:
    """The JSON answer a ``response_format`` asks for; None for plain text."""
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        return orjson.dumps({"reply": reply}).decode()
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise MockRequestError(
                400,
                "Missing required parameter: 'response_format.json_schema.schema'.",
                param="response_format.json_schema.schema",
                code="missing_required_parameter",
            )
        return orjson.dumps(sample(schema)).decode()
    return None


def _tool_calls(plan: ChatPlan) -> list[dict[str, Any]]:
    assert plan.tool_call is not None
    call_id, name, arguments = plan.tool_call
    return [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]


def render_chat(plan: ChatPlan) -> bytes:
    """The ``chat.completion`` JSON body."""
    if plan.tool_call is not None:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "tool_calls": _tool_calls(plan),
            "refusal": None,
        }
    else:
        message = {"role": "assistant", "content": plan.content, "refusal": None}
    return orjson.dumps(
        {
            "id": plan.completion_id,
            "object": "chat.completion",
            "created": CREATED,
            "model": plan.model,
            "choices": [
                {
                    "index": index,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": plan.finish_reason,
                }
                for index in range(plan.n)
            ],
            "usage": plan.usage,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
    )


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def render_chat_stream(plan: ChatPlan) -> list[bytes]:
    """The server-sent events of a streamed reply, one ``data: ...\\n\\n`` frame per item.

    Per choice: a role delta, content deltas (one word each) or tool-call deltas (the call,
    then argument fragments), a finish delta. Then the usage chunk if ``include_usage``, then
    ``data: [DONE]``.
    """
    head: dict[str, Any] = {
        "id": plan.completion_id,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": plan.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    events: list[bytes] = []

    def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> None:
        payload = dict(head)
        payload["choices"] = [
            {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        ]
        if plan.include_usage:
            payload["usage"] = None
        events.append(_event(payload))

    for index in range(plan.n):
        if plan.tool_call is not None:
            call_id, name, arguments = plan.tool_call
            first_call = {
                "index": 0,
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            chunk(index, {"role": "assistant", "content": None, "tool_calls": [first_call]})
            for start in range(0, len(arguments), _TOOL_ARGUMENT_FRAGMENT):
                fragment = arguments[start : start + _TOOL_ARGUMENT_FRAGMENT]
                chunk(index, {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]})
        else:
            chunk(index, {"role": "assistant", "content": ""})
            for position, word in enumerate((plan.content or "").split(" ")):
                chunk(index, {"content": word if position == 0 else " " + word})
        chunk(index, {}, plan.finish_reason)

    if plan.include_usage:
        payload = dict(head)
        payload["choices"] = []
        payload["usage"] = plan.usage
        events.append(_event(payload))
    events.append(b"data: [DONE]\n\n")
    return events
