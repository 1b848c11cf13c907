"""Dollars from tokens: what a model's answer costs, from its ``usage`` and a price table.

The table ships in ``prices.toml`` beside this module (list prices of the built-in
providers' common models, taken on :data:`PRICES_TAKEN`, sources in its header); the
configuration file overrides or adds models with ``[prices."<model>"]`` (``config.py``).
A model found in neither costs 0: a self-hosted model is free unless priced.

Token counts are read by ``wire.token_counts`` and clamped by its rules, so a cost always
agrees with the tokens the gateway counts; the only extra field read here is the number
of prompt tokens the provider served from its own prompt cache (billed at
``cached_input``).

A leaf like ``wire``: it imports nothing from the core, the API or the cache, so the
accounting, the admission of tenant keys and the routes all price the same way.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from aigateway.wire import token_count, token_counts

if TYPE_CHECKING:
    from aigateway.config import Settings

__all__ = (
    "NANOS_PER_USD",
    "PRICES_TAKEN",
    "Price",
    "PriceTable",
    "format_usd",
    "to_nanos",
)

#: When the shipped list prices (``prices.toml``) were taken from the providers' pages.
PRICES_TAKEN: Final = "2026-12-07"

#: Shared counters hold whole numbers: dollars are counted in nano-dollars, so that one
#: call of the cheapest model (a few tokens at $0.02 per million) still counts.
NANOS_PER_USD: Final = 1_000_000_000

_PER_TOKEN: Final = 1e-6  # prices are per million tokens
# A dated snapshot of a model: gpt-4o-2024-08-06, claude-sonnet-4-5-20250929.
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens: prompt, completion, and prompt tokens read from the
    provider's own prompt cache."""

    input: float
    output: float
    cached_input: float


class PriceTable:
    """Prices by model name; ``price`` looks a model up, ``cost`` and ``estimate`` price
    an answer and a request."""

    __slots__ = ("_prices",)

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._prices = dict(prices)

    @classmethod
    def shipped(cls) -> PriceTable:
        """The list prices shipped with the gateway, nothing overridden."""
        return cls(_shipped())

    @classmethod
    def from_settings(cls, settings: Settings) -> PriceTable:
        """The shipped prices with the configuration file's ``[prices."<model>"]`` on top."""
        return cls.shipped().with_prices(
            (model, Price(*figures)) for model, *figures in settings.prices
        )

    def with_prices(self, prices: Iterable[tuple[str, Price]]) -> PriceTable:
        """This table with ``prices`` added, replacing models of the same name."""
        merged = dict(self._prices)
        merged.update(prices)
        return PriceTable(merged)

    def price(self, model: str) -> Price | None:
        """The price of ``model``: its own name first, then the name without a dated
        snapshot suffix; ``None`` for a model nobody priced (it costs 0)."""
        found = self._prices.get(model)
        if found is None:
            base = _SNAPSHOT.sub("", model)
            if base != model:
                found = self._prices.get(base)
        return found

    def cost(self, model: str, usage: Mapping[str, Any] | None) -> float:
        """USD of an answer of ``model`` from its ``usage``: OpenAI's shape (Chat
        Completions, embeddings, Responses) or Anthropic's. Cached prompt tokens
        (``prompt_tokens_details.cached_tokens``, ``input_tokens_details.cached_tokens``,
        ``cache_read_input_tokens``) are billed at ``cached_input``."""
        if type(usage) is not dict and not isinstance(usage, Mapping):  # a dict: no ABC check
            return 0.0
        prompt, completion = token_counts(usage)
        return self.tokens_cost(model, prompt, completion, cached_tokens(usage))

    def tokens_cost(self, model: str, prompt: int, completion: int, cached: int = 0) -> float:
        """USD of ``prompt`` and ``completion`` tokens of ``model``, ``cached`` of the prompt
        tokens read from the provider's prompt cache (counts as ``wire.token_counts``
        gives them)."""
        price = self.price(model)
        if price is None:
            return 0.0
        cached = min(cached, prompt)
        dollars = (
            (prompt - cached) * price.input
            + cached * price.cached_input
            + completion * price.output
        )
        return dollars * _PER_TOKEN

    def estimate(self, model: str, prompt_tokens: int, max_output_tokens: int) -> float:
        """An upper bound of what a request can cost, to reserve before the call: every
        prompt token at the input price (none assumed cached), ``max_output_tokens`` at
        the output price."""
        price = self.price(model)
        if price is None:
            return 0.0
        prompt, completion = token_count(prompt_tokens), token_count(max_output_tokens)
        return (prompt * price.input + completion * price.output) * _PER_TOKEN

    def __len__(self) -> int:
        return len(self._prices)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.price(model) is not None


def cached_tokens(usage: Mapping[str, Any]) -> int:
    """Prompt tokens served from the provider's prompt cache, by ``wire.token_count``'s
    rules (0 when the usage does not say)."""
    if "cache_read_input_tokens" in usage:  # Anthropic
        return token_count(usage.get("cache_read_input_tokens"))
    for name in ("prompt_tokens_details", "input_tokens_details"):  # Chat, Responses
        details = usage.get(name)
        if details is not None and isinstance(details, Mapping):
            return token_count(details.get("cached_tokens"))
    return 0


def to_nanos(usd: float) -> int:
    """Whole nano-dollars of ``usd``, for the shared counters."""
    return max(round(usd * NANOS_PER_USD), 0)


def format_usd(usd: float) -> str:
    """A plain decimal string (``0.000123``, ``0``): the ``x-aigateway-cost`` header and
    the request log's ``cost``; nano-dollar precision, never an exponent."""
    return f"{max(usd, 0.0):.9f}".rstrip("0").rstrip(".")


@cache
def _shipped() -> dict[str, Price]:
    text = resources.files("aigateway").joinpath("prices.toml").read_text(encoding="utf-8")
    models = tomllib.loads(text)["models"]
    return {
        name: Price(
            float(entry["input"]),
            float(entry["output"]),
            float(entry.get("cached_input", entry["input"])),
        )
        for name, entry in models.items()
    }
