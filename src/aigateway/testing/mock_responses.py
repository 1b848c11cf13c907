"""The mock provider's Responses API (``POST /v1/responses``), as OpenAI answers it (no I/O).

The reply is decided exactly as for chat completions (``mock_replies.plan_chat``): the
request's ``instructions`` and ``input`` are read as chat messages, its flat function tools
as chat tools, so "weather" in the last user message with tools given is a call of the
first tool with ``{"location": "Paris"}``, and a ``text.format`` of ``json_schema`` is
answered with JSON that satisfies the schema. Streams carry every lifecycle event with a
gap-free ``sequence_number`` and end at ``response.completed`` (no ``[DONE]``).

Like OpenAI, the mock keeps what it answered unless ``store`` is false (the last
``KEPT_RESPONSES``, in memory): ``previous_response_id`` continues one (its input and
output come before the new input), and an id it does not know is OpenAI's 400
``previous_response_not_found``. Items and tools it cannot act on (reasoning items,
built-in tools) are accepted and left alone, as OpenAI would run them.
"""

from __future__ import annotations

from typing import Any

import orjson

from aigateway.testing.mock_faults import MockRequestError
from aigateway.testing.mock_replies import CREATED, ChatPlan, plan_chat, require_model

__all__ = ["KEPT_RESPONSES", "ResponsesMemory", "plan_responses", "render_response",
           "render_response_stream"]  # fmt: skip

KEPT_RESPONSES = 1000

_TEXT_PARTS = ("input_text", "output_text", "text")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p["text"]) for p in content if isinstance(p, dict) and p.get("type") in _TEXT_PARTS
        )
    return ""


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise MockRequestError(400, "Missing required parameter: 'input'.", param="input",
                               code="missing_required_parameter")  # fmt: skip
    for item in items:
        if not isinstance(item, dict):
            raise MockRequestError(400, "Invalid 'input': expected objects.", param="input")
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": str(item.get("role")), "content": _text(item.get("content"))})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "content": str(item.get("output"))})
        elif kind == "function_call":
            messages.append({"role": "assistant", "content": ""})
    return messages


class ResponsesMemory:
    """The responses the mock keeps (``store``), oldest forgotten first."""

    def __init__(self, limit: int = KEPT_RESPONSES) -> None:
        self.limit = limit
        self._kept: dict[str, list[Any]] = {}  # response id -> the conversation it ends

    def expand(self, body: Any) -> Any:
        """``body`` with the conversation ``previous_response_id`` names before its input."""
        previous = body.get("previous_response_id") if isinstance(body, dict) else None
        if previous is None:
            return body
        kept = self._kept.get(str(previous))
        if kept is None:
            raise MockRequestError(
                400, f"Previous response with id '{previous}' not found.",
                param="previous_response_id", code="previous_response_not_found",
            )  # fmt: skip
        items = body.get("input") or []
        items = [{"type": "message", "role": "user", "content": items}] if isinstance(
            items, str) else list(items)  # fmt: skip
        return {**body, "input": [*kept, *items]}

    def forget(self, response_id: str) -> bool:
        """``DELETE /v1/responses/{id}``: whether it was kept."""
        return self._kept.pop(response_id, None) is not None

    def keep(self, body: dict[str, Any], answer: dict[str, Any]) -> None:
        if body.get("store") is False:
            return
        items = body.get("input")
        items = [{"type": "message", "role": "user", "content": items}] if isinstance(
            items, str) else list(items or [])  # fmt: skip
        self._kept[str(answer["id"])] = [*items, *answer["output"]]
        while len(self._kept) > self.limit:
            del self._kept[next(iter(self._kept))]


def plan_responses(body: Any) -> tuple[ChatPlan, dict[str, Any]]:
    """The reply to a Responses request, and the request (checked as OpenAI would)."""
    require_model(body)
    chat: dict[str, Any] = {"model": body["model"], "messages": _messages(body)}
    tools = body.get("tools")
    functions = [t for t in tools or () if isinstance(t, dict) and t.get("type") == "function"]
    if functions:  # built-in tools (web_search...) run at OpenAI: the mock never calls them
        chat["tools"] = [{"type": "function", "function": {"name": t.get("name")}}
                         for t in functions]  # fmt: skip
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        choice = {"type": "function", "function": {"name": choice.get("name")}}
    if choice is not None:
        chat["tool_choice"] = choice
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    text = body.get("text")
    form = text.get("format") if isinstance(text, dict) else None
    if isinstance(form, dict) and form.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif isinstance(form, dict) and form.get("type") == "json_schema":  # flat, as Responses has it
        spec = {k: v for k, v in form.items() if k != "type"}
        chat["response_format"] = {"type": "json_schema", "json_schema": spec}
    chat["stream"] = body.get("stream") is True
    return plan_chat(chat), body


def _ids(plan: ChatPlan) -> tuple[str, str, str]:
    digest = plan.completion_id.rsplit("-", 1)[-1]
    return "resp_mock_" + digest, "msg_mock_" + digest, "fc_mock_" + digest


def _usage(plan: ChatPlan) -> dict[str, Any]:
    prompt, completion = plan.usage["prompt_tokens"], plan.usage["completion_tokens"]
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def _output(plan: ChatPlan) -> list[dict[str, Any]]:
    _, message_id, call_item_id = _ids(plan)
    if plan.tool_call is not None:
        call_id, name, arguments = plan.tool_call
        return [{"id": call_item_id, "type": "function_call", "status": "completed",
                 "arguments": arguments, "call_id": call_id, "name": name}]  # fmt: skip
    status = "incomplete" if plan.finish_reason == "length" else "completed"
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": plan.content or ""}
    return [{"id": message_id, "type": "message", "status": status, "content": [part],
             "role": "assistant"}]  # fmt: skip


def _response(plan: ChatPlan, body: dict[str, Any], done: bool) -> dict[str, Any]:
    incomplete = done and plan.finish_reason == "length"
    status = "incomplete" if incomplete else "completed" if done else "in_progress"
    return {
        "id": _ids(plan)[0],
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "completed_at": CREATED if done else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": plan.model,
        "output": _output(plan) if done else [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "usage": _usage(plan) if done else None,
        "metadata": body.get("metadata") or {},
    }


def render_response(plan: ChatPlan, body: dict[str, Any]) -> bytes:
    return orjson.dumps(_response(plan, body, done=True))


def render_response_stream(plan: ChatPlan, body: dict[str, Any]) -> list[bytes]:
    """``event:`` + ``data:`` frames, from ``response.created`` to ``response.completed``."""
    events: list[bytes] = []

    def event(kind: str, **fields: Any) -> None:
        payload = {"type": kind, **fields, "sequence_number": len(events)}
        events.append(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n")

    started = _response(plan, body, done=False)
    event("response.created", response=started)
    event("response.in_progress", response=started)
    item = _output(plan)[0]
    if plan.tool_call is not None:
        arguments = item["arguments"]
        event("response.output_item.added", output_index=0,
              item={**item, "status": "in_progress", "arguments": ""})  # fmt: skip
        for start in range(0, len(arguments), 6):
            event("response.function_call_arguments.delta", item_id=item["id"], output_index=0,
                  delta=arguments[start : start + 6])  # fmt: skip
        event("response.function_call_arguments.done", item_id=item["id"], output_index=0,
              name=item["name"], arguments=arguments)  # fmt: skip
    else:
        text = item["content"][0]["text"]
        where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        event("response.output_item.added", output_index=0,
              item={**item, "status": "in_progress", "content": []})  # fmt: skip
        empty = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        event("response.content_part.added", **where, part=empty)
        for position, word in enumerate(text.split(" ")):
            event("response.output_text.delta", **where,
                  delta=word if position == 0 else " " + word, logprobs=[])  # fmt: skip
        event("response.output_text.done", **where, text=text, logprobs=[])
        event("response.content_part.done", **where, part=item["content"][0])
    event("response.output_item.done", output_index=0, item=item)
    final = _response(plan, body, done=True)
    event("response.incomplete" if final["status"] == "incomplete" else "response.completed",
          response=final)  # fmt: skip
    return events
