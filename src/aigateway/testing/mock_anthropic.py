"""Deterministic Anthropic Messages replies of the mock provider (no I/O here).

A request is checked the way Anthropic checks it (``max_tokens`` required, only ``user`` and
``assistant`` roles, no whitespace-only text blocks, every ``tool_result`` answering a
``tool_use`` of the previous assistant turn, ``temperature`` 0..1, no unknown fields, no
whitespace-only stop sequence, not ``temperature`` with ``top_p`` on Claude 4.5 / Opus 4.1 and
later, ``thinking.budget_tokens`` at least 1024 and below ``max_tokens``, no forced tool and no
sampling change with thinking on), then read as an OpenAI-shaped conversation and answered by
the OpenAI rules of :mod:`aigateway.testing.mock_replies`: same reply text, same tool-call rule,
same token counts. ``output_config.format`` (``json_schema``) is answered with one text block of
JSON that satisfies the schema; a forced tool gets input made from its ``input_schema``.
"""

from __future__ import annotations

from typing import Any

import orjson

from aigateway.testing.mock_faults import MockRequestError
from aigateway.testing.mock_replies import ChatPlan, plan_chat

__all__ = [
    "ANTHROPIC_MODEL_IDS",
    "count_tokens",
    "plan_messages",
    "render_message",
    "render_message_stream",
    "render_model",
    "render_models",
    "thinks",
]

_NAMES = {
    "claude-sonnet-4-5-20250929": "Claude Sonnet 4.5",
    "claude-haiku-4-5-20251001": "Claude Haiku 4.5",
    "claude-opus-4-1-20250805": "Claude Opus 4.1",
    "claude-sonnet-4-20250514": "Claude Sonnet 4",
}
ANTHROPIC_MODEL_IDS: tuple[str, ...] = tuple(_NAMES)
_MODELS = [
    {
        "type": "model",
        "id": model_id,
        "display_name": name,
        "created_at": f"{model_id[-8:-4]}-{model_id[-4:-2]}-{model_id[-2:]}T00:00:00Z",
    }
    for model_id, name in _NAMES.items()
]
_MODELS_BODY = orjson.dumps(
    {"data": _MODELS, "has_more": False, "first_id": _MODELS[0]["id"], "last_id": _MODELS[-1]["id"]}
)
_MODEL_BODIES = {model["id"]: orjson.dumps(model) for model in _MODELS}

_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
        "output_config",
    }
)
# Models that refuse temperature together with top_p (Claude 4.5, Opus 4.1, and later).
_ONE_SAMPLER = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1", "claude-opus-4-5")
_BLOCKS = frozenset(
    {"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"}
)
_COUNT_FIELDS = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "thinking", "output_config"}
)
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
THOUGHT = "The user wants a short answer; I will give one."
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_ARGUMENT_FRAGMENT = 6


def _bad(message: str) -> MockRequestError:
    return MockRequestError(400, message)


def _text_of(content: Any, where: str) -> str:
    """A text block's or tool result's text; whitespace-only text blocks are rejected."""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for j, block in enumerate(content if isinstance(content, list) else ()):
        if isinstance(block, dict) and block.get("type") == "text":
            text = block.get("text")
            if not isinstance(text, str) or not text.strip():
                raise _bad(f"{where}.{j}: text content blocks must contain non-whitespace text")
            texts.append(text)
    return " ".join(texts)


def _read_turn(i: int, message: Any, previous_calls: set[str]) -> tuple[list[Any], set[str]]:
    """OpenAI-shaped messages for one Anthropic turn, and the tool_use ids it holds."""
    if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
        raise _bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
    role: str = message["role"]
    content = message.get("content")
    if isinstance(content, str):
        if not content.strip():
            raise _bad(
                f"messages.{i}.content: text content blocks must contain non-whitespace text"
            )
        return [{"role": role, "content": content}], set()
    if not isinstance(content, list) or not content:
        raise _bad(f"messages.{i}.content: Input should be a valid list")
    results: list[Any] = []
    calls: set[str] = set()
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        where = f"messages.{i}.content.{j}"
        if kind not in _BLOCKS:
            raise _bad(f"{where}: Input tag {kind!r} found using 'type' does not match any tag")
        if kind == "image":
            source = block.get("source")
            if not isinstance(source, dict) or source.get("type") not in ("base64", "url"):
                raise _bad(f"{where}.source: Field required")
        elif kind == "thinking":
            if role != "assistant" or not isinstance(block.get("signature"), str):
                raise _bad(f"{where}.signature: Field required")
        elif kind == "tool_use":
            if role != "assistant" or not isinstance(block.get("input"), dict):
                raise _bad(f"{where}: tool_use blocks belong to assistant turns, with an input")
            calls.add(str(block.get("id")))
        elif kind == "tool_result":
            if block.get("tool_use_id") not in previous_calls:
                raise _bad(
                    f"{where}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{block.get('tool_use_id')}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
            results.append({"role": "tool", "content": _text_of(block.get("content"), where)})
    text = _text_of(content, f"messages.{i}.content")
    if text or not results:
        results.append({"role": role, "content": text})
    return results, calls


def plan_messages(body: Any) -> ChatPlan:
    """Validate a Messages request and decide the deterministic reply."""
    if not isinstance(body, dict):
        raise _bad("Invalid request body: expected a JSON object.")
    extra = sorted(body.keys() - _FIELDS)
    if extra:
        raise _bad(f"{extra[0]}: Extra inputs are not permitted")
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            raise _bad(f"{name}: Field required")
    max_tokens = body["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _bad("max_tokens: Input should be greater than or equal to 1")
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 1
    ):
        raise _bad("temperature: Input should be less than or equal to 1")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise _bad("messages: at least one message is required")
    _check_rules(body, max_tokens)

    view: list[Any] = []
    system = body.get("system")
    if system:
        view.append({"role": "system", "content": _text_of(system, "system")})
    calls: set[str] = set()
    for i, message in enumerate(messages):
        turn, calls = _read_turn(i, message, calls)
        view.extend(turn)
    request: dict[str, Any] = {
        "model": body["model"],
        "messages": view,
        "max_tokens": max_tokens,
        "stream": body.get("stream") is True,
    }
    tools = body.get("tools")
    if tools:
        if not all(isinstance(t, dict) and isinstance(t.get("input_schema"), dict) for t in tools):
            raise _bad("tools.0.input_schema: Field required")
        request["tools"] = tools
    output_format = _output_format(body.get("output_config"))
    if output_format is not None:
        request["response_format"] = {"type": "json_schema", "json_schema": output_format}
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        if choice.get("type") == "tool":
            request["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif choice.get("type") in _TOOL_CHOICES:
            request["tool_choice"] = _TOOL_CHOICES[choice["type"]]
        else:
            raise _bad("tool_choice: Input tag does not match any of the expected tags")
    return plan_chat(request)


def _check_rules(body: dict[str, Any], max_tokens: int) -> None:
    """Anthropic's rules on stop sequences, sampling and thinking."""
    stops = body.get("stop_sequences")
    if isinstance(stops, list) and any(not str(stop).strip() for stop in stops):
        raise _bad("stop_sequences: each stop sequence must contain non-whitespace")
    model = str(body.get("model"))
    both = body.get("temperature") is not None and body.get("top_p") is not None
    if both and model.startswith(_ONE_SAMPLER):
        raise _bad("`temperature` and `top_p` cannot both be specified for this model.")
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return
    budget = thinking.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1024:
        raise _bad("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
    if budget >= max_tokens:
        raise _bad("`max_tokens` must be greater than `thinking.budget_tokens`.")
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
        raise _bad("Thinking may not be enabled when tool_choice forces tool use.")
    if body.get("temperature") not in (None, 1) or body.get("top_k") is not None:
        raise _bad("`temperature` may only be set to 1 when thinking is enabled.")


def _output_format(config: Any) -> dict[str, Any] | None:
    if config is None:
        return None
    if not isinstance(config, dict) or config.keys() - {"format", "effort"}:
        raise _bad("output_config: Extra inputs are not permitted")
    output_format = config.get("format")
    if output_format is None:
        return None
    if not isinstance(output_format, dict) or output_format.get("type") != "json_schema":
        raise _bad("output_config.format.type: Input tag does not match 'json_schema'")
    if not isinstance(output_format.get("schema"), dict):
        raise _bad("output_config.format.schema: Field required")
    return {"schema": output_format["schema"]}


def count_tokens(body: Any) -> bytes:
    """``POST /v1/messages/count_tokens``: the Messages checks, without ``max_tokens`` (which
    is refused, as are the other fields only a generation takes); the prompt's token count
    is the one a reply to the same request reports."""
    if not isinstance(body, dict):
        raise _bad("Invalid request body: expected a JSON object.")
    extra = sorted(body.keys() - _COUNT_FIELDS)
    if extra:
        raise _bad(f"{extra[0]}: Extra inputs are not permitted")
    plan = plan_messages({**body, "max_tokens": 1})
    return orjson.dumps({"input_tokens": plan.usage["prompt_tokens"]})


def thinks(body: Any) -> bool:
    """Whether the request turned extended thinking on (the reply then opens with a
    thinking block and its signature)."""
    thinking = body.get("thinking") if isinstance(body, dict) else None
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


# --------------------------------------------------------------------------------------------
# answers


def _digest(plan: ChatPlan) -> str:
    return plan.completion_id.removeprefix("chatcmpl-mock-")


def _usage(plan: ChatPlan, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": plan.usage["prompt_tokens"],
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def _content(plan: ChatPlan) -> list[dict[str, Any]]:
    if plan.tool_call is not None:
        _, name, arguments = plan.tool_call
        call_id = "toolu_mock_" + _digest(plan)
        return [{"type": "tool_use", "id": call_id, "name": name, "input": orjson.loads(arguments)}]
    return [{"type": "text", "text": plan.content or ""}]


def _thought(plan: ChatPlan) -> dict[str, Any]:
    return {"type": "thinking", "thinking": THOUGHT, "signature": "mock-signature-" + _digest(plan)}


def _message(plan: ChatPlan, content: list[Any], stop: str | None, output: int) -> dict[str, Any]:
    return {
        "id": "msg_mock_" + _digest(plan),
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": _usage(plan, output),
    }


def render_message(plan: ChatPlan, thinking: bool = False) -> bytes:
    completion_tokens = plan.usage["completion_tokens"]
    stop = _STOP_REASONS[plan.finish_reason]
    content = [_thought(plan), *_content(plan)] if thinking else _content(plan)
    return orjson.dumps(_message(plan, content, stop, completion_tokens))


def _event(payload: dict[str, Any]) -> bytes:
    return (
        b"event: " + str(payload["type"]).encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
    )


def render_message_stream(plan: ChatPlan, thinking: bool = False) -> list[bytes]:
    """message_start, with ``thinking`` a thinking block (thinking_delta, signature_delta),
    one content block (text deltas one word each, or a tool_use with input_json_delta
    fragments), a ping, message_delta, message_stop."""
    events = [_event({"type": "message_start", "message": _message(plan, [], None, 1)})]
    index = 0
    if thinking:
        thought = _thought(plan)
        opening = {"type": "thinking", "thinking": "", "signature": ""}
        events.append(_event({"type": "content_block_start", "index": 0, "content_block": opening}))
        for delta in (
            {"type": "thinking_delta", "thinking": thought["thinking"]},
            {"type": "signature_delta", "signature": thought["signature"]},
        ):
            events.append(_event({"type": "content_block_delta", "index": 0, "delta": delta}))
        events.append(_event({"type": "content_block_stop", "index": 0}))
        index = 1
    (block,) = _content(plan)
    if block["type"] == "tool_use":
        start = {**block, "input": {}}
        arguments = orjson.dumps(block["input"]).decode()
        fragments = [""] + [
            arguments[i : i + _ARGUMENT_FRAGMENT]
            for i in range(0, len(arguments), _ARGUMENT_FRAGMENT)
        ]
        deltas = [{"type": "input_json_delta", "partial_json": f} for f in fragments]
    else:
        start = {"type": "text", "text": ""}
        words = block["text"].split(" ")
        deltas = [
            {"type": "text_delta", "text": word if n == 0 else " " + word}
            for n, word in enumerate(words)
        ]
    events.append(_event({"type": "content_block_start", "index": index, "content_block": start}))
    events.append(_event({"type": "ping"}))
    events.extend(
        _event({"type": "content_block_delta", "index": index, "delta": delta}) for delta in deltas
    )
    events.append(_event({"type": "content_block_stop", "index": index}))
    events.append(
        _event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": _STOP_REASONS[plan.finish_reason], "stop_sequence": None},
                "usage": {"output_tokens": plan.usage["completion_tokens"]},
            }
        )
    )
    events.append(_event({"type": "message_stop"}))
    return events


def render_models() -> bytes:
    return _MODELS_BODY


def render_model(model_id: str) -> bytes:
    body = _MODEL_BODIES.get(model_id)
    if body is None:
        raise MockRequestError(404, f"model: {model_id}")
    return body
