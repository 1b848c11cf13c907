"""The cache-TTL policy: thresholds and TTLs of the rules of ``compute_ttl``.

One plain frozen dataclass shared by both twins of ``compute_ttl`` (it is data, not a hot
path).  Its mappings are frozen too (read-only views of private copies), so a policy never
changes once built; the compiled twin relies on that to convert a policy to C values once
and reuse them while the same policy object comes back.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ("DEFAULT_TTL_POLICY", "TTLPolicy")


def _frozen(values: Mapping[str, float], what: str) -> Mapping[str, float]:
    copied: dict[str, float] = {}
    for name, value in values.items():
        if not isinstance(name, str):
            raise TypeError(f"{what}: provider names must be strings, not {name!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{what}[{name!r}] must be a number, not {value!r}")
        copied[name] = float(value)
    return types.MappingProxyType(copied)


@dataclass(frozen=True, slots=True)
class TTLPolicy:
    """How long ``compute_ttl`` keeps a cached answer (seconds), rule by rule.

    Each rule that applies to a request proposes a TTL and the shortest one wins; when no
    rule applies the caller's default TTL is used.  The result is then multiplied by the
    provider's factor (``provider_factors``, 1.0 when the provider is not listed).
    """

    #: Exactly one message whose role is not in ``system_roles`` (a single question).
    single_message_ttl_s: float = 2 * 3600.0
    #: More than this many messages make a long conversation.
    long_conversation_messages: int = 10
    long_conversation_ttl_s: float = 15 * 60.0
    #: Temperature >= this is high (a creative answer: another one would differ anyway).
    high_temperature: float = 0.8
    high_temperature_ttl_s: float = 10 * 60.0
    #: Temperature <= this is low (a near-deterministic answer).
    low_temperature: float = 0.2
    low_temperature_ttl_s: float = 4 * 3600.0
    #: Any content part whose type is not in ``text_part_types`` (an image, audio, a file).
    attachment_ttl_s: float = 20 * 60.0
    #: The temperature of a request that sets none: the provider's default.
    default_temperature: float = 1.0
    provider_temperatures: Mapping[str, float] = field(default_factory=dict)
    provider_factors: Mapping[str, float] = field(default_factory=dict)
    system_roles: frozenset[str] = frozenset({"system", "developer"})
    text_part_types: frozenset[str] = frozenset({"text", "input_text", "output_text", "refusal"})

    def __post_init__(self) -> None:
        for name in (
            "single_message_ttl_s",
            "long_conversation_ttl_s",
            "high_temperature_ttl_s",
            "low_temperature_ttl_s",
            "attachment_ttl_s",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"TTLPolicy.{name} must be a number, not {value!r}")
            if not (0.0 <= value < math.inf):
                raise ValueError(f"TTLPolicy.{name} must be finite and >= 0, not {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("high_temperature", "low_temperature", "default_temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"TTLPolicy.{name} must be a number, not {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"TTLPolicy.{name} must be finite, not {value!r}")
            object.__setattr__(self, name, float(value))
        count = self.long_conversation_messages
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count < 2**31:
            raise ValueError(
                f"TTLPolicy.long_conversation_messages must be a whole number >= 0, not {count!r}"
            )
        temperatures = _frozen(self.provider_temperatures, "TTLPolicy.provider_temperatures")
        if not all(math.isfinite(value) for value in temperatures.values()):
            raise ValueError("TTLPolicy.provider_temperatures must be finite")
        factors = _frozen(self.provider_factors, "TTLPolicy.provider_factors")
        if not all(0.0 <= value < math.inf for value in factors.values()):
            raise ValueError("TTLPolicy.provider_factors must be finite and >= 0")
        object.__setattr__(self, "provider_temperatures", temperatures)
        object.__setattr__(self, "provider_factors", factors)
        for name in ("system_roles", "text_part_types"):
            names = frozenset(getattr(self, name))
            if not all(isinstance(item, str) for item in names):
                raise TypeError(f"TTLPolicy.{name} must hold strings")
            object.__setattr__(self, name, names)


#: The rules of the original specification, with a factor of 1.0 for every provider.
DEFAULT_TTL_POLICY = TTLPolicy()
