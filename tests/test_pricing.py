"""Dollars from tokens: the price table, its overrides, and what an answer costs.

Prices are USD per million tokens. A model is looked up by its own name, then by its
name without a dated snapshot suffix; a model nobody priced (a self-hosted one) costs 0.
The configuration file overrides or adds any model as ``[prices."<model>"]``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from aigateway.api.ops import OpsRoutes
from aigateway.app import create_app
from aigateway.config import (
    ConfigError,
    Settings,
    load_settings,
    settings_from_worker_env,
    settings_to_worker_env,
)
from aigateway.pricing import PRICES_TAKEN, Price, PriceTable, format_usd, to_nanos

TABLE = PriceTable.shipped().with_prices(
    [("house-model", Price(input=2.0, output=8.0, cached_input=0.5))]
)


def _settings(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return load_settings({"AI_GATEWAY_CONFIG": str(path)})


# -- the shipped table -----------------------------------------------------------------


def test_the_shipped_table_says_when_it_was_taken() -> None:
    assert dt.date.fromisoformat(PRICES_TAKEN) <= dt.datetime.now(dt.UTC).date()


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "o3",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "text-embedding-3-small",
        "claude-haiku-4-5",
        "claude-sonnet-4-5",
        "claude-opus-4-1",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-3-pro-preview",
        "gemini-embedding-001",
    ],
)
def test_the_built_in_providers_common_models_are_priced(model: str) -> None:
    price = PriceTable.shipped().price(model)
    assert price is not None
    assert price.input > 0
    assert 0 <= price.cached_input <= price.input


def test_a_list_price_as_published() -> None:
    assert PriceTable.shipped().price("gpt-4o-mini") == Price(0.15, 0.60, 0.075)


# -- lookup ------------------------------------------------------------------------------


def test_a_dated_snapshot_is_priced_as_its_model() -> None:
    table = PriceTable.shipped()
    assert table.price("gpt-4o-2024-08-06") == table.price("gpt-4o")
    assert table.price("claude-sonnet-4-5-20250929") == table.price("claude-sonnet-4-5")


def test_an_exact_name_wins_over_the_stripped_one() -> None:
    table = TABLE.with_prices([("gpt-4o-2024-05-13", Price(5.0, 15.0, 5.0))])
    assert table.price("gpt-4o-2024-05-13") == Price(5.0, 15.0, 5.0)
    assert table.price("gpt-4o-2024-08-06") == table.price("gpt-4o")


def test_an_unknown_or_self_hosted_model_has_no_price_and_costs_nothing() -> None:
    assert TABLE.price("llama-3.1-8b") is None
    assert TABLE.cost("llama-3.1-8b", {"prompt_tokens": 1000, "completion_tokens": 1000}) == 0
    assert TABLE.estimate("llama-3.1-8b", 1000, 1000) == 0


# -- cost of an answer -------------------------------------------------------------------


def test_an_openai_usage_costs_prompt_and_completion_tokens_at_their_prices() -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
    assert TABLE.cost("house-model", usage) == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6)


def test_cached_prompt_tokens_are_billed_at_the_cached_input_price() -> None:
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "prompt_tokens_details": {"cached_tokens": 800},
    }
    expected = (200 * 2.0 + 800 * 0.5 + 500 * 8.0) / 1e6
    assert TABLE.cost("house-model", usage) == pytest.approx(expected)


def test_a_responses_usage_reads_its_cached_tokens_too() -> None:
    usage = {
        "input_tokens": 1000,
        "output_tokens": 500,
        "input_tokens_details": {"cached_tokens": 800},
    }
    expected = (200 * 2.0 + 800 * 0.5 + 500 * 8.0) / 1e6
    assert TABLE.cost("house-model", usage) == pytest.approx(expected)


def test_an_anthropic_usage_counts_cache_reads_at_the_cached_price_and_writes_as_input() -> None:
    # input_tokens counts neither cache reads nor cache writes (wire.token_counts)
    usage = {
        "input_tokens": 100,
        "cache_creation_input_tokens": 300,
        "cache_read_input_tokens": 600,
        "output_tokens": 50,
    }
    expected = ((100 + 300) * 2.0 + 600 * 0.5 + 50 * 8.0) / 1e6
    assert TABLE.cost("house-model", usage) == pytest.approx(expected)


def test_an_embeddings_usage_costs_its_prompt() -> None:
    usage = {"prompt_tokens": 10_000, "total_tokens": 10_000}
    assert PriceTable.shipped().cost("text-embedding-3-small", usage) == pytest.approx(0.0002)


@pytest.mark.parametrize(
    "usage",
    [
        None,
        "lots",
        {},
        {"prompt_tokens": -5, "completion_tokens": "9"},
        {"prompt_tokens": 1.5, "completion_tokens": True},
    ],
)
def test_odd_counts_cost_what_the_gateway_counts_them_as_nothing(usage: Any) -> None:
    assert TABLE.cost("house-model", usage) == 0


def test_more_cached_tokens_than_prompt_tokens_never_make_a_cost_negative() -> None:
    usage = {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 10**9}}
    assert TABLE.cost("house-model", usage) == pytest.approx(10 * 0.5 / 1e6)


# -- estimate before the call -----------------------------------------------------------


def test_an_estimate_prices_every_prompt_token_as_uncached_and_the_whole_max_output() -> None:
    assert TABLE.estimate("house-model", 1000, 256) == pytest.approx((1000 * 2.0 + 256 * 8) / 1e6)


def test_an_estimate_bounds_the_cost_of_any_answer_within_it() -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 256}
    assert TABLE.cost("house-model", usage) <= TABLE.estimate("house-model", 1000, 256)


# -- dollars as the gateway shows and counts them ---------------------------------------


@pytest.mark.parametrize(
    ("usd", "shown"),
    [(0.0, "0"), (0.000123, "0.000123"), (1.5, "1.5"), (2e-9, "0.000000002"), (-1.0, "0")],
)
def test_a_cost_is_shown_as_a_plain_decimal(usd: float, shown: str) -> None:
    assert format_usd(usd) == shown


def test_counters_hold_whole_nano_dollars() -> None:
    assert to_nanos(0.000123) == 123_000
    assert to_nanos(1.5e-9) == 2


# -- the configuration file --------------------------------------------------------------

PRICES = """
[prices."llama-3.1-8b"]
input = 0.1
output = 0.2

[prices."gpt-4o"]
input = 1
output = 4
cached_input = 0.25
"""


def test_the_configuration_file_prices_a_self_hosted_model(tmp_path: Path) -> None:
    table = PriceTable.from_settings(_settings(tmp_path, PRICES))
    assert table.price("llama-3.1-8b") == Price(0.1, 0.2, 0.1)  # cached_input = input


def test_the_configuration_file_overrides_a_shipped_price_and_its_snapshots(
    tmp_path: Path,
) -> None:
    table = PriceTable.from_settings(_settings(tmp_path, PRICES))
    assert table.price("gpt-4o") == Price(1.0, 4.0, 0.25)
    assert table.price("gpt-4o-2024-08-06") == Price(1.0, 4.0, 0.25)
    assert table.price("gpt-4o-mini") == PriceTable.shipped().price("gpt-4o-mini")


def test_workers_get_the_same_prices(tmp_path: Path) -> None:
    settings = _settings(tmp_path, PRICES)
    env = {"AIGATEWAY_WORKER_SETTINGS": settings_to_worker_env(settings)}
    assert settings_from_worker_env(env).prices == settings.prices


def test_without_a_file_the_shipped_prices_hold() -> None:
    table = PriceTable.from_settings(Settings())
    assert table.price("gpt-4o") == PriceTable.shipped().price("gpt-4o")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[prices."m"]\ninput = -1\noutput = 1', 'prices."m".input'),
        ('[prices."m"]\ninput = "cheap"\noutput = 1', 'prices."m".input'),
        ('[prices."m"]\ninput = 1\noutput = true', 'prices."m".output'),
        ('[prices."m"]\ninput = 1\noutput = nan', 'prices."m".output'),
        ('[prices."m"]\ninput = 1\noutput = 1\ncached_input = -0.1', 'prices."m".cached_input'),
        ('[prices."m"]\ninput = 1', 'prices."m".output'),
        ('[prices."m"]\ninput = 1\noutput = 1\nwrite = 2', 'prices."m" write'),
        ("[prices]\nm = 3", 'prices."m"'),
        ("prices = 3", "prices"),
    ],
)
def test_a_bad_price_is_refused_naming_its_key(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, text)
    assert names in str(caught.value)


# -- one table a worker ----------------------------------------------------------------


def test_a_worker_reads_its_price_table_once_and_every_part_prices_from_it(
    tmp_path: Path,
) -> None:
    """Accounting, the tenant keys' budgets and the cache's savings share one table, so
    they can never disagree (and the configuration's prices are parsed once a worker)."""
    settings = Settings(workers=1, cache_path=str(tmp_path / "cache"))
    app = create_app(settings)
    metrics = next(r for r in app.routes if isinstance(r, Route) and r.path == "/metrics")
    owner = metrics.endpoint.__self__  # type: ignore[attr-defined]
    assert isinstance(owner, OpsRoutes)
    operations = owner.operations
    with TestClient(app):
        assert operations.cache is not None
        assert operations.tenants.pricing is operations.prices
        assert operations.cache.prices is operations.prices
        assert operations.accounting.prices is operations.prices
