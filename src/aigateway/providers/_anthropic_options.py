"""OpenAI chat options that Anthropic takes in its own way: structured output, reasoning
effort, stop sequences and sampling. The choices made here are listed in docs/api.md.

Structured output (``response_format``):
    ``json_schema`` on a model with native structured outputs (Claude 4.5 and later, Opus 4.1
    and later) goes as ``output_config.format`` with the schema rewritten to Anthropic's subset
    (:mod:`aigateway.providers._json_schema`); the answer is a text block holding the JSON.
    On other models, and for ``json_object`` (no native mode without a schema), one tool named
    after the schema (``json`` for json_object) is forced (``tool_choice: {type: tool}``) and
    the call's input becomes the message content, finish reason ``stop``. A forced tool cannot
    share the request with the client's own tools: that is a 400.
Reasoning effort (``reasoning_effort``):
    ``none`` sends no thinking. Claude 4.6 and later: ``thinking: {type: adaptive}`` with
    ``output_config.effort`` (minimal -> low, xhigh and max -> high). Earlier models:
    ``thinking: {type: enabled, budget_tokens}`` from :data:`THINKING_BUDGETS`, added to
    ``max_tokens`` so that the answer keeps the room the client gave it. Thinking rules out
    sampling changes (``temperature``, ``top_p`` and ``top_k`` are dropped) and is not sent
    when the request forces a tool call (Anthropic refuses the pair).
Stop sequences: whitespace-only ones are dropped (Anthropic refuses them; ``"\\n"`` is common).
Sampling: Claude 4.5, Opus 4.1 and later refuse ``temperature`` with ``top_p``: ``temperature``
    is kept and ``top_p`` dropped. Opus 4.7 and Claude 5 take no sampling parameters at all:
    all three are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aigateway.providers._json_schema import ANTHROPIC_KEYWORDS, restrict
from aigateway.providers._openai_format import JsonObject, invalid

__all__ = [
    "EFFORTS",
    "THINKING_BUDGETS",
    "JsonAnswer",
    "apply_thinking",
    "claude_version",
    "drop_blank_stops",
    "json_answer",
    "one_sampler",
    "sampling_allowed",
]

EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
THINKING_BUDGETS = {
    "minimal": 1024,  # Anthropic's minimum
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 24576,
    "max": 32768,
}
_ADAPTIVE_EFFORT = {"minimal": "low", "xhigh": "high", "max": "high"}
_VERSION = re.compile(
    r"claude-(?:(?P<family>opus|sonnet|haiku)-(?P<major>\d+)(?:-(?P<minor>\d)(?!\d))?"
    r"|(?P<old_major>\d+)(?:-(?P<old_minor>\d)(?!\d))?-(?P<old_family>opus|sonnet|haiku))"
)
JSON_TOOL = "json"


@dataclass(frozen=True, slots=True)
class ClaudeVersion:
    family: str
    major: int
    minor: int

    def at_least(self, major: int, minor: int) -> bool:
        return (self.major, self.minor) >= (major, minor)


def claude_version(model: str) -> ClaudeVersion | None:
    """``claude-sonnet-4-5-20250929`` -> sonnet 4.5; ``claude-3-5-haiku`` -> haiku 3.5."""
    found = _VERSION.search(model)
    if found is None:
        return None
    family = found["family"] or found["old_family"]
    major = found["major"] or found["old_major"]
    minor = found["minor"] or found["old_minor"] or "0"
    return ClaudeVersion(family, int(major), int(minor))


def _recent(version: ClaudeVersion | None) -> bool:
    """Claude 4.5 and later, Opus 4.1 and later; an id we cannot read counts as recent."""
    if version is None:
        return True
    return version.at_least(4, 5) or (version.family == "opus" and version.at_least(4, 1))


def sampling_allowed(model: str) -> bool:
    """Opus 4.7 and Claude 5 refuse temperature, top_p and top_k."""
    version = claude_version(model)
    if version is None:
        return True
    return not (version.major >= 5 or (version.family == "opus" and version.at_least(4, 7)))


def one_sampler(model: str) -> bool:
    """Whether ``temperature`` and ``top_p`` may not go together."""
    return _recent(claude_version(model))


# --- structured output ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    """How a structured answer is asked for: natively, or by the forced tool ``tool``."""

    output_format: JsonObject | None = None
    tool: JsonObject | None = None

    @property
    def tool_name(self) -> str | None:
        return self.tool["name"] if self.tool is not None else None


def json_answer(body: JsonObject, model: str) -> JsonAnswer | None:
    """None for plain text (no ``response_format``, or ``text``)."""
    value = body.get("response_format")
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return JsonAnswer(tool=_tool(JSON_TOOL, "Respond with a JSON object.", {"type": "object"}))
    if kind != "json_schema":
        raise invalid("response_format.type", "expected 'text', 'json_object' or 'json_schema'")
    spec = value.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise invalid("response_format.json_schema.schema", "expected a JSON Schema object")
    version = claude_version(model)
    if version is not None and _recent(version):
        return JsonAnswer(
            output_format={
                "type": "json_schema",
                "schema": restrict(schema, ANTHROPIC_KEYWORDS, closed=True, min_items=1),
            }
        )
    name = spec.get("name") if isinstance(spec, dict) else None
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        name = JSON_TOOL
    description = spec.get("description") if isinstance(spec, dict) else None
    if not isinstance(description, str) or not description:
        description = "Respond with a JSON object in this schema."
    return JsonAnswer(tool=_tool(name, description, schema))


def _tool(name: str, description: str, schema: JsonObject) -> JsonObject:
    return {"name": name, "description": description, "input_schema": schema}


# --- reasoning effort -----------------------------------------------------------------------


def effort(body: JsonObject) -> str | None:
    value = body.get("reasoning_effort")
    if value is None:
        return None
    if value not in EFFORTS:
        raise invalid("reasoning_effort", "expected one of " + ", ".join(EFFORTS))
    return str(value)


def apply_thinking(body: JsonObject, request: JsonObject, model: str) -> None:
    """Thinking for ``reasoning_effort``; call after tools and sampling are in ``request``."""
    level = effort(body)
    if level is None or level == "none":
        return
    choice = request.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
        return  # Anthropic refuses thinking with a forced tool call: the call wins
    for name in ("temperature", "top_p", "top_k"):
        request.pop(name, None)
    version = claude_version(model)
    if version is not None and version.at_least(4, 6):
        request["thinking"] = {"type": "adaptive"}
        config = request.setdefault("output_config", {})
        config["effort"] = _ADAPTIVE_EFFORT.get(level, level)
        return
    budget = THINKING_BUDGETS[level]
    request["thinking"] = {"type": "enabled", "budget_tokens": budget}
    request["max_tokens"] = request["max_tokens"] + budget


def drop_blank_stops(stops: list[str] | None) -> list[str]:
    return [stop for stop in stops or () if stop.strip()]
