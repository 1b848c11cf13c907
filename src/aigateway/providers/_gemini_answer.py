"""Reading Gemini answers and errors (pure functions shared by the adapter and its stream)."""

from __future__ import annotations

from typing import Any

from aigateway.providers._gemini_calls import CallIds
from aigateway.providers._openai_format import JsonObject, tool_call, usage

__all__ = [
    "blocked",
    "candidate_logprobs",
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


def read_candidate(
    candidate: Any, position: int, ids: CallIds
) -> tuple[int, str, list[JsonObject], str | None]:
    """(choice index, text, OpenAI tool calls, Gemini finish reason) of one candidate; each
    call gets its id from ``ids``."""
    if not isinstance(candidate, dict):
        return position, "", [], None
    index = candidate.get("index")
    if not isinstance(index, int):
        index = position
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
            args = call.get("args") or {}
            call_id = ids.new(index, call["name"], args, part)
            calls.append(tool_call(call_id, call["name"], args))
    reason = candidate.get("finishReason")
    return (
        index,
        "".join(texts),
        calls,
        reason if isinstance(reason, str) else None,
    )


def candidate_logprobs(candidate: Any) -> JsonObject | None:
    """Gemini's ``logprobsResult`` as an OpenAI choice's ``logprobs`` (``bytes`` are the
    token's UTF-8 bytes, which Gemini does not send); None without one."""
    result = candidate.get("logprobsResult") if isinstance(candidate, dict) else None
    if not isinstance(result, dict):
        return None
    chosen = result.get("chosenCandidates")
    tops = result.get("topCandidates")
    content: list[JsonObject] = []
    for i, token in enumerate(chosen if isinstance(chosen, list) else ()):
        top = tops[i].get("candidates") if isinstance(tops, list) and i < len(tops) else None
        entry = _token_logprob(token)
        entry["top_logprobs"] = [_token_logprob(t) for t in top or () if isinstance(t, dict)]
        content.append(entry)
    return {"content": content, "refusal": None}


def _token_logprob(token: Any) -> JsonObject:
    text = token.get("token") if isinstance(token, dict) else None
    value = token.get("logProbability") if isinstance(token, dict) else None
    text = text if isinstance(text, str) else ""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return {"token": text, "logprob": value if number else 0.0, "bytes": list(text.encode())}


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
