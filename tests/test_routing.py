"""Routing: how a request's model (or provider) picks the targets to try, in order."""

from __future__ import annotations

import pytest

from aigateway.config import AliasTarget
from aigateway.core.router import Router
from aigateway.errors import NotFound
from aigateway.wire import Target

PROVIDERS = ["openai", "google", "anthropic", "local"]


def router(**kwargs: object) -> Router:
    return Router(PROVIDERS, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4o-mini", "openai"),
        ("chatgpt-4o-latest", "openai"),
        ("o1", "openai"),
        ("o3-mini", "openai"),
        ("o4-mini", "openai"),
        ("text-embedding-3-small", "openai"),
        ("gemini-2.0-flash", "google"),
        ("text-embedding-004", "google"),
        ("claude-sonnet-4", "anthropic"),
    ],
)
def test_known_families_go_to_their_provider(model: str, provider: str) -> None:
    assert router().targets(model) == [Target(provider, model)]


def test_provider_slash_model_names_the_target() -> None:
    assert router().targets("local/llama-3.1-8b") == [Target("local", "llama-3.1-8b")]
    assert router().targets("google/gemini-2.0-flash") == [Target("google", "gemini-2.0-flash")]


def test_a_slash_in_a_model_of_an_unknown_provider_is_part_of_the_name() -> None:
    r = router(default_provider="local")
    assert r.targets("meta-llama/Llama-3-8B") == [Target("local", "meta-llama/Llama-3-8B")]


def test_the_native_provider_field_wins() -> None:
    assert router().targets("gpt-4o", provider="local") == [Target("local", "gpt-4o")]


def test_an_alias_is_an_ordered_fallback_chain() -> None:
    chain = (AliasTarget("openai/gpt-4o-mini"), AliasTarget("google/gemini-2.0-flash"))
    assert router(aliases={"fast": chain}).targets("fast") == [
        Target("openai", "gpt-4o-mini"),
        Target("google", "gemini-2.0-flash"),
    ]


def test_weighted_alias_entries_spread_the_first_choice() -> None:
    chain = (AliasTarget("openai/gpt-4o", 3.0), AliasTarget("local/llama", 1.0))
    low = router(aliases={"spread": chain}, rand=lambda: 0.1).targets("spread")
    high = router(aliases={"spread": chain}, rand=lambda: 0.9).targets("spread")
    assert low == [Target("openai", "gpt-4o"), Target("local", "llama")]
    assert high == [Target("local", "llama"), Target("openai", "gpt-4o")]


def test_models_listed_under_a_provider_route_there() -> None:
    assert router(models={"llama-3.1-8b": "local"}).targets("llama-3.1-8b") == [
        Target("local", "llama-3.1-8b")
    ]


def test_an_unknown_model_is_a_404_that_says_how_to_name_one() -> None:
    with pytest.raises(NotFound) as info:
        router().targets("mystery-model")
    assert info.value.param == "model"
    assert "provider/model" in info.value.message
    assert "gpt-*" in info.value.message


def test_an_unknown_provider_is_a_404() -> None:
    with pytest.raises(NotFound) as info:
        router().targets("gpt-4o", provider="nope")
    assert info.value.param == "provider"
    assert "local" in info.value.message


def test_a_provider_without_a_model_is_a_404() -> None:
    with pytest.raises(NotFound, match="no model"):
        router().targets("openai/")
