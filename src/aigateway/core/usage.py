"""Token counts from a provider's ``usage``, whatever it holds.

A provider's answer is served as it came, but its ``usage`` is only trusted this far: a
count is a whole number of tokens from 0 to ``MAX_TOKENS``. An integral float (``12.0``)
counts as the integer it equals, a larger count is clamped, and anything else (a negative
number, a fraction, a string, a ``usage`` that is not an object) counts as 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

MAX_TOKENS: Final = 2**32 - 1


def token_count(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return min(max(value, 0), MAX_TOKENS)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return min(max(int(value), 0), MAX_TOKENS)
    return 0


def token_counts(usage: Any) -> tuple[int, int]:
    """(prompt tokens, completion tokens) of an OpenAI ``usage`` object."""
    if not isinstance(usage, Mapping):
        return 0, 0
    return token_count(usage.get("prompt_tokens")), token_count(usage.get("completion_tokens"))
