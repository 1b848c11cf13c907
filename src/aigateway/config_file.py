"""The optional TOML configuration file (``AI_GATEWAY_CONFIG``): providers, aliases, routing.

    default_provider = "local"        # bare model names that no rule matches go here

    [providers.local]                 # any OpenAI-compatible server (vLLM, Ollama, ...)
    type = "openai"                   # wire format: openai (default), gemini, anthropic
    base_url = "http://127.0.0.1:8000/v1"
    api_key_env = "LOCAL_API_KEY"     # the variable holding its key (optional)
    max_connections = 20
    rps = 10
    models = ["llama-3.1-8b"]         # bare model names routed to this provider

    [aliases]                         # a name for an ordered fallback chain
    fast = ["openai/gpt-4o-mini", "google/gemini-2.0-flash"]
    spread = [{ target = "openai/gpt-4o", weight = 3 }, { target = "local/llama", weight = 1 }]

Validated with the same rule as the environment: the first bad value is a
:class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Collection, Mapping
from typing import Any

from aigateway.config import (
    AliasTarget,
    ConfigError,
    ProviderSettings,
    Settings,
    _int,
    _number,
    _url,
)
from aigateway.provider_specs import WIRE_FORMATS

TOP_LEVEL_KEYS = {"default_provider", "providers", "aliases"}
PROVIDER_KEYS = {"type", "base_url", "api_key_env", "max_connections", "rps", "models"}


def apply_config_file(settings: Settings, path: str, env: Mapping[str, str]) -> Settings:
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("AI_GATEWAY_CONFIG", path, f"a readable TOML file ({exc})") from None
    where = f"{path}:"
    _no_unknown_keys(where, data, TOP_LEVEL_KEYS)
    built_in = {p.name for p in settings.built_in}
    extra = tuple(
        _provider(f"{where} providers.{name}", name, table, env, built_in)
        for name, table in _table(where, data, "providers").items()
    )
    known = built_in | {p.name for p in extra}
    aliases = tuple(
        (name, _alias(f"{where} aliases.{name}", name, entries, known))
        for name, entries in _table(where, data, "aliases").items()
    )
    default = data.get("default_provider")
    if default is not None and default not in known:
        expected = "the name of a provider: " + ", ".join(sorted(known))
        raise ConfigError(f"{where} default_provider", str(default), expected)
    return dataclasses.replace(
        settings, extra_providers=extra, aliases=aliases, default_provider=default
    )


def _table(where: str, data: dict[str, Any], key: str) -> dict[str, Any]:
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where} {key}", repr(table), "a table")
    return table


def _no_unknown_keys(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{where} {key}", "", "one of the keys " + ", ".join(sorted(allowed)))


def _provider(
    where: str, name: str, table: Any, env: Mapping[str, str], built_in: Collection[str]
) -> ProviderSettings:
    if name in built_in:
        raise ConfigError(
            where, name, "a new provider name (built-in providers are set by environment)"
        )
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(where, name, "a name of letters, digits, '-' and '_'")
    if not isinstance(table, dict):
        raise ConfigError(where, repr(table), "a table")
    _no_unknown_keys(where, table, PROVIDER_KEYS)
    kind = table.get("type", "openai")
    if kind not in WIRE_FORMATS:
        raise ConfigError(f"{where}.type", str(kind), "one of " + ", ".join(WIRE_FORMATS))
    if "base_url" not in table:
        raise ConfigError(f"{where}.base_url", "", "the provider's base URL")
    base_url = _url(f"{where}.base_url", str(table["base_url"]))
    key_variable = str(table.get("api_key_env", ""))
    api_key = ((env.get(key_variable) or "").strip() or None) if key_variable else None
    raw_connections = str(table.get("max_connections", 20))
    max_connections = _int(1, 10000)(f"{where}.max_connections", raw_connections)
    rps = _number(0, strict=True)(f"{where}.rps", str(table.get("rps", 50)))
    models = table.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise ConfigError(f"{where}.models", repr(models), "a list of model names")
    return ProviderSettings(
        name, base_url, api_key, max_connections, rps, kind, key_variable, tuple(models)
    )


def _alias(where: str, name: str, entries: Any, known: set[str]) -> tuple[AliasTarget, ...]:
    if "/" in name:
        raise ConfigError(where, name, "an alias name without '/'")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(where, repr(entries), "a non-empty list of 'provider/model' targets")
    targets = []
    for i, entry in enumerate(entries):
        spot = f"{where}[{i}]"
        weight: Any = 0.0
        if isinstance(entry, dict):
            target, weight = entry.get("target"), entry.get("weight", 1.0)
        else:
            target = entry
        if not isinstance(target, str) or target.partition("/")[0] not in known:
            expected = "'provider/model' with a provider among " + ", ".join(sorted(known))
            raise ConfigError(spot, repr(target), expected)
        if not target.partition("/")[2]:
            raise ConfigError(spot, target, "'provider/model' with a model after the '/'")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ConfigError(f"{spot}.weight", repr(weight), "a number >= 0")
        targets.append(AliasTarget(target, float(weight)))
    return tuple(targets)
