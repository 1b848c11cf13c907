"""The providers of one worker process: adapter, pooled client, and whether it can serve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aigateway.config import ProviderSettings, Settings
from aigateway.core.health import Circuit
from aigateway.errors import InvalidRequest, ProviderUnavailable
from aigateway.providers.base import ChatAdapter
from aigateway.upstream import PoolLimits, UpstreamClient, create_upstream_client
from aigateway.wire import Target


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    adapter: ChatAdapter
    client: UpstreamClient
    # False when it has no key and no base URL of its own: routing skips it.
    usable: bool
    key_variable: str
    # The node-wide circuit breaker (core.health): routing skips the provider while open.
    circuit: Circuit | None = None

    def available(self) -> bool:
        """Configured, and its circuit lets requests through."""
        return self.usable and (self.circuit is None or self.circuit.allows())


def build_providers(settings: Settings) -> dict[str, Provider]:
    return {p.name: _provider(p, settings) for p in settings.providers}


def _provider(p: ProviderSettings, settings: Settings) -> Provider:
    usable = bool(p.api_key) or not p.default_base_url or settings.mock_provider
    return Provider(p.name, make_adapter(p), make_client(p, settings), usable, p.key_variable)


def make_client(p: ProviderSettings, settings: Settings) -> UpstreamClient:
    """A pooled upstream client for provider ``p`` (``OPENAI_MAX_CONNS``... connections)."""
    limits = PoolLimits(
        max_connections=p.max_connections,
        connect_timeout_s=settings.connection_timeout_s,
        keepalive_expiry_s=settings.keepalive_expiry_s,
        read_idle_timeout_s=settings.request_timeout_s,
        max_response_bytes=settings.max_response_bytes,
    )
    return create_upstream_client(settings.upstream_client, limits)


def make_adapter(p: ProviderSettings) -> ChatAdapter:
    if p.kind == "gemini":
        from aigateway.providers.gemini import GeminiAdapter

        return GeminiAdapter(p.name, p.base_url, p.api_key, key_variable=p.key_variable)
    if p.kind == "anthropic":
        from aigateway.providers.anthropic import AnthropicAdapter

        return AnthropicAdapter(p.name, p.base_url, p.api_key, key_variable=p.key_variable)
    from aigateway.providers.openai import OpenAIAdapter
    from aigateway.providers.openai_responses import OpenAIResponsesAdapter

    kind = OpenAIResponsesAdapter if p.responses_api else OpenAIAdapter
    return kind(p.name, p.base_url, p.api_key, key_variable=p.key_variable or "its key")


def usable_targets(
    targets: Sequence[Target], providers: Mapping[str, Provider]
) -> list[tuple[Provider, str]]:
    """The targets whose provider can serve, in order.

    None left: a 503 with ``Retry-After`` when circuits are open, else a 400 naming the key.
    """
    candidates = [(providers[t.provider], t.model) for t in targets]
    usable = [(provider, model) for provider, model in candidates if provider.available()]
    if usable:
        return usable
    broken = {t.provider: providers[t.provider] for t in targets if providers[t.provider].usable}
    if broken:
        circuits = [p.circuit for p in broken.values() if p.circuit is not None]
        reasons = "; ".join(f"{c.name}: {c.describe()}" for c in circuits)
        raise ProviderUnavailable(
            f"no provider can serve this request now ({reasons}); retry later",
            code="circuit_open",
            retry_after_s=min((c.retry_after_s() for c in circuits), default=1.0),
        )
    missing = sorted({providers[t.provider].key_variable or t.provider for t in targets})
    names = ", ".join(f"{t.provider}/{t.model}" for t in targets)
    raise InvalidRequest(
        f"no configured provider can serve {names}: set {' or '.join(missing)}",
        param="model",
        code="provider_not_configured",
    )
