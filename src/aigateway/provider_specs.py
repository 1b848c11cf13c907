"""The built-in providers, one entry each: the only place that names them.

Everything else derives from :data:`BUILT_IN`: the provider settings, their
environment variables and the names the configuration file may not reuse (``config``),
what may change live (``runtime``), the bundled mock provider's routes at start-up
(``server``), model routing by name family (``app``, ``core.router``) and the ``--help``
text (``cli``). A built-in provider that speaks an existing wire
format is one more entry here (and its tests); a new wire format also needs an adapter
(``providers/``, chosen in ``core/providers.py``) and the mock's routes for it.

A leaf module: it imports nothing of the gateway, so every layer may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ("BUILT_IN", "WIRE_FORMATS", "ProviderSpec", "families")

# The wire formats the gateway has an adapter for (``core/providers.py``).
WIRE_FORMATS: Final = ("openai", "gemini", "anthropic")


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """What the gateway knows of a built-in provider before any configuration."""

    name: str  # in targets ("openai/gpt-4o"), metrics, /admin/config, live settings
    wire_format: str  # one of WIRE_FORMATS
    label: str  # how help texts name it ("pooled connections to Gemini per worker")
    env_prefix: str  # <PREFIX>_RPS, <PREFIX>_TPM and <PREFIX>_MAX_CONNS
    key_variable: str  # the variable holding its API key
    base_url_variable: str  # the variable that points it elsewhere
    default_base_url: str
    families: tuple[str, ...] = ()  # model-name prefixes routed to it ("gpt-")
    rps: float = 50.0  # default requests per second for the node
    max_connections: int = 20  # default pooled connections per worker
    key_label: str = ""  # how the key's help text names it, when not by its label
    responses_api: bool = False  # it speaks OpenAI's Responses API: /v1/responses passes

    @property
    def rps_variable(self) -> str:
        return f"{self.env_prefix}_RPS"

    @property
    def tpm_variable(self) -> str:
        return f"{self.env_prefix}_TPM"

    @property
    def max_connections_variable(self) -> str:
        return f"{self.env_prefix}_MAX_CONNS"


BUILT_IN: Final[tuple[ProviderSpec, ...]] = (
    ProviderSpec(
        name="openai",
        wire_format="openai",
        label="OpenAI",
        env_prefix="OPENAI",
        key_variable="OPENAI_API_KEY",
        base_url_variable="OPENAI_BASE_URL",
        default_base_url="https://api.openai.com/v1",
        families=("gpt-", "chatgpt-", "o1", "o3", "o4", "text-embedding-3", "text-embedding-ada"),
        rps=50.0,
        responses_api=True,
    ),
    ProviderSpec(
        name="google",
        wire_format="gemini",
        label="Gemini",
        env_prefix="GOOGLE",
        key_variable="GOOGLE_AI_API_KEY",
        base_url_variable="GOOGLE_AI_BASE_URL",
        default_base_url="https://generativelanguage.googleapis.com/v1beta",
        families=("gemini-", "gemma-", "text-embedding-004", "embedding-"),
        rps=30.0,
        key_label="Google AI (Gemini)",
    ),
    ProviderSpec(
        name="anthropic",
        wire_format="anthropic",
        label="Anthropic",
        env_prefix="ANTHROPIC",
        key_variable="ANTHROPIC_API_KEY",
        base_url_variable="ANTHROPIC_BASE_URL",
        default_base_url="https://api.anthropic.com/v1",
        families=("claude-",),
        rps=50.0,
    ),
)


def families(specs: tuple[ProviderSpec, ...]) -> tuple[tuple[str, str], ...]:
    """(model-name prefix, provider) pairs of ``specs``, in the order to match them."""
    return tuple((prefix, spec.name) for spec in specs for prefix in spec.families)
