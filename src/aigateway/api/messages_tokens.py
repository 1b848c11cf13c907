"""The estimate ``/v1/messages/count_tokens`` gives for a target that cannot count itself.

Models of other vendors have tokenizers of their own that no provider exposes as a count
endpoint the gateway can call, so the count is estimated, the same way for every such
target (docs/api.md says so):

    ceil(characters / 4)   of every text: system, text and thinking blocks, tool results,
                           tool inputs and tool definitions written as JSON
    + 3                    per message (its role and framing)
    + 1,600                per image or document (what Anthropic counts for an image
                           of about 1,000 x 1,000 pixels)

Roughly four characters make a token in English text for the tokenizers of all three
vendors; the answer is an estimate, never a bill.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3
TOKENS_PER_MEDIA = 1600


def estimate_input_tokens(body: dict[str, Any]) -> int:
    chars = 0
    media = 0
    system = body.get("system")
    if isinstance(system, str):
        chars += len(system)
    elif isinstance(system, list):
        chars += sum(len(str(block.get("text") or "")) for block in system)
    for tool in body.get("tools") or ():
        chars += len(orjson.dumps(tool))
    messages = body.get("messages") or ()
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
            continue
        for block in content:
            counted, images = _block(block)
            chars += counted
            media += images
    return (
        math.ceil(chars / CHARS_PER_TOKEN)
        + TOKENS_PER_MESSAGE * len(messages)
        + TOKENS_PER_MEDIA * media
    )


def _block(block: dict[str, Any]) -> tuple[int, int]:
    """(characters, images or documents) of one content block."""
    kind = block.get("type")
    if kind in ("image", "document"):
        return 0, 1
    if kind == "text":
        return len(str(block.get("text") or "")), 0
    if kind == "thinking":
        return len(str(block.get("thinking") or "")), 0
    if kind == "tool_use":
        return len(orjson.dumps(block.get("input"))) + len(str(block.get("name") or "")), 0
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            counts = [_block(part) for part in content if isinstance(part, dict)]
            return sum(c for c, _ in counts), sum(m for _, m in counts)
        return len(str(content or "")), 0
    return 0, 0
