"""A chat completion written as a Responses API ``Response`` object (no I/O).

The Response echoes the request's settings (``instructions``, ``tools``, ``text``,
``metadata``...) as OpenAI does; its ``output`` holds one assistant ``message`` item for
the text and one ``function_call`` item per tool call, in that order. Finish reasons map
as the wire notes say: ``length`` and ``content_filter`` make the response
``incomplete``, everything else ``completed``.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aigateway.providers._openai_format import JsonObject
from aigateway.wire import token_count

INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: ``resp_``, ``msg_``, ``fc_`` and 48 hex digits."""
    return prefix + secrets.token_hex(24)


@dataclass(slots=True)
class ResponseShell:
    """What every form of one response shares: its id, the request it answers, its time."""

    request: JsonObject  # the client's Responses body
    model: str
    id: str = field(default_factory=lambda: new_id("resp_"))
    created_at: int = field(default_factory=lambda: int(time.time()))

    def response(
        self,
        status: str,
        output: list[JsonObject],
        usage: JsonObject | None = None,
        error: JsonObject | None = None,
        incomplete: str | None = None,
    ) -> JsonObject:
        body = self.request
        reasoning = _object(body.get("reasoning"))
        text = _object(body.get("text"))
        done = status in ("completed", "incomplete")
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "completed_at": int(time.time()) if done else None,
            "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "model": self.model,
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": body.get("prompt_cache_key"),
            "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
            "safety_identifier": body.get("safety_identifier"),
            "service_tier": body.get("service_tier", "default"),
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {
                "format": text.get("format") or {"type": "text"},
                "verbosity": text.get("verbosity", "medium"),
            },
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_logprobs": body.get("top_logprobs", 0),
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": usage,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }


def response_usage(usage: Any) -> JsonObject | None:
    """A chat ``usage`` in the Responses names (input/output tokens, their details)."""
    if not isinstance(usage, dict):
        return None
    prompt = token_count(usage.get("prompt_tokens"))
    completion = token_count(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, dict) else {}
    completion_details = completion_details if isinstance(completion_details, dict) else {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": token_count(prompt_details.get("cached_tokens")),
            "cache_write_tokens": token_count(prompt_details.get("cache_write_tokens")),
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": token_count(completion_details.get("reasoning_tokens"))
        },
        "total_tokens": prompt + completion,
    }


def message_item(
    item_id: str, text: str, status: str, logprobs: list[Any] | None = None,
    refusal: str | None = None,
) -> JsonObject:  # fmt: skip
    content: list[JsonObject] = []
    if text or not refusal:
        content.append(output_text(text, logprobs))
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": item_id, "type": "message", "status": status, "content": content,
            "role": "assistant"}  # fmt: skip


def output_text(text: str, logprobs: list[Any] | None = None) -> JsonObject:
    return {"type": "output_text", "annotations": [], "logprobs": logprobs or [], "text": text}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> JsonObject:
    return {"id": item_id, "type": "function_call", "status": status, "arguments": arguments,
            "call_id": call_id, "name": name}  # fmt: skip


def from_completion(shell: ResponseShell, completion: JsonObject) -> JsonObject:
    """The Response for a whole chat completion (its first choice: Responses has no ``n``)."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    reason = choice.get("finish_reason") if isinstance(choice, dict) else None
    incomplete = INCOMPLETE.get(reason) if isinstance(reason, str) else None
    status = "incomplete" if incomplete else "completed"
    output: list[JsonObject] = []
    text, refusal = message.get("content"), message.get("refusal")
    text = text if isinstance(text, str) else _text_of(text)
    if text or refusal:
        logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
        content = logprobs.get("content") if isinstance(logprobs, dict) else None
        output.append(
            message_item(new_id("msg_"), text, status,
                         content if isinstance(content, list) else None,
                         refusal if isinstance(refusal, str) else None)
        )  # fmt: skip
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        arguments = function.get("arguments")
        output.append(
            call_item(new_id("fc_"), str(call.get("id") or new_id("call_")),
                      str(function.get("name") or ""),
                      arguments if isinstance(arguments, str) else "", "completed")
        )  # fmt: skip
    if isinstance(completion.get("model"), str) and completion["model"]:
        shell.model = completion["model"]
    return shell.response(status, output, response_usage(completion.get("usage")),
                          incomplete=incomplete)  # fmt: skip


def _text_of(content: Any) -> str:
    """A content given as parts (some providers' answers): their text joined."""
    if not isinstance(content, list):
        return ""
    return "".join(
        p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
    )


def _object(value: Any) -> JsonObject:
    return value if isinstance(value, dict) else {}
