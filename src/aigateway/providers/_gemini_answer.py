"""Reading Gemini answers and errors (pure functions shared by the adapter and its stream)."""

from __future__ import annotations

from typing import Any

from aigateway.providers._gemini_request import encode_call_id
from aigateway.providers._openai_format import JsonObject, tool_call, usage

__all__ = [
    "blocked",
    "error_detail",
    "finish_reason",
    "gemini_usage",
    "model_name",
    "out_of_quota",
    "read_candidate",
    "retry_delay",
]

_FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "LANGUAGE",
    }
)
_TYPE_PREFIX = "type.googleapis.com/google.rpc."


# --- reading answers -----------------------------------------------------------------------


def read_candidate(candidate: Any, position: int) -> tuple[int, str, list[JsonObject], str | None]:
    """(choice index, text, OpenAI tool calls, Gemini finish reason) of one candidate."""
    if not isinstance(candidate, dict):
        return position, "", [], None
    index = candidate.get("index")
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    texts: list[str] = []
    calls: list[JsonObject] = []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict) or part.get("thought") is True:
            continue  # thought summaries are not part of the answer
        text = part.get("text")
        if isinstance(text, str):
            texts.append(text)
            continue
        call = part.get("functionCall")
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            call_id = encode_call_id(call["name"], call.get("id"), part.get("thoughtSignature"))
            calls.append(tool_call(call_id, call["name"], call.get("args") or {}))
    reason = candidate.get("finishReason")
    return (
        index if isinstance(index, int) else position,
        "".join(texts),
        calls,
        reason if isinstance(reason, str) else None,
    )


def finish_reason(reason: str | None, has_calls: bool) -> str:
    """Gemini has no tool-call finish reason: a candidate with a call finished with one."""
    if has_calls:
        return "tool_calls"
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return "stop"  # STOP, and reasons OpenAI has no word for (OTHER, MALFORMED_FUNCTION_CALL…)


def blocked(data: JsonObject) -> bool:
    feedback = data.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def model_name(data: JsonObject, model: str) -> str:
    version = data.get("modelVersion")
    return version if isinstance(version, str) and version else model


def _count(meta: JsonObject, key: str) -> int:
    value = meta.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def gemini_usage(meta: Any) -> JsonObject:
    """OpenAI counts thoughts as completion tokens; Gemini counts them apart."""
    if not isinstance(meta, dict):
        meta = {}
    thoughts = _count(meta, "thoughtsTokenCount")
    return usage(
        _count(meta, "promptTokenCount") + _count(meta, "toolUsePromptTokenCount"),
        _count(meta, "candidatesTokenCount") + thoughts,
        cached=_count(meta, "cachedContentTokenCount"),
        reasoning=thoughts,
    )


# --- reading errors ------------------------------------------------------------------------


def error_detail(parsed: Any) -> JsonObject:
    if isinstance(parsed, list) and len(parsed) == 1:  # the JSON-array stream framing
        parsed = parsed[0]
    inner = parsed.get("error") if isinstance(parsed, dict) else None
    return inner if isinstance(inner, dict) else {}


def _detail_type(detail: JsonObject) -> str:
    kind = detail.get("@type")
    return kind.removeprefix(_TYPE_PREFIX) if isinstance(kind, str) else ""


def retry_delay(details: list[JsonObject]) -> float | None:
    """``RetryInfo.retryDelay`` (a protobuf Duration such as "26s" or "1.5s") in seconds."""
    for detail in details:
        delay = detail.get("retryDelay")
        if _detail_type(detail) == "RetryInfo" and isinstance(delay, str) and delay[-1:] == "s":
            try:
                seconds = float(delay[:-1])
            except ValueError:
                return None
            return seconds if 0 <= seconds < float("inf") else None
    return None


def out_of_quota(details: list[JsonObject]) -> bool:
    """A daily quota, or a quota of zero, will not come back by retrying now."""
    for detail in details:
        if _detail_type(detail) != "QuotaFailure":
            continue
        for violation in detail.get("violations") or ():
            if not isinstance(violation, dict):
                continue
            if "PerDay" in str(violation.get("quotaId", "")) or violation.get("quotaValue") in (
                "0",
                0,
            ):
                return True
    return False
