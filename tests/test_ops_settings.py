"""Operations settings: keys, origins and the other new variables; live changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigateway.config import ConfigError, Settings, describe, load_settings
from aigateway.errors import InvalidRequest
from aigateway.runtime import LiveSettings, apply_overrides, normalize_changes, region_size


def test_api_keys_come_from_a_list_or_a_file(tmp_path: Path) -> None:
    assert load_settings({"AI_GATEWAY_API_KEYS": " k-one , k-two,k-one"}).api_keys == (
        "k-one",
        "k-two",
    )
    keys = tmp_path / "keys"
    keys.write_text("# the team's keys\nk-alpha\n\nk-beta, k-gamma  # ops\n")
    settings = load_settings({"AI_GATEWAY_API_KEYS": f"@{keys}"})
    assert settings.api_keys == ("k-alpha", "k-beta", "k-gamma")
    shown = dict(describe(settings))
    assert shown["AI_GATEWAY_API_KEYS"] == "(3 keys)"
    assert "k-alpha" not in repr(settings)


@pytest.mark.parametrize("raw", ["@/no/such/file", " , ", "@{empty}", "has space,x"])
def test_bad_key_lists_are_refused_without_showing_a_key(tmp_path: Path, raw: str) -> None:
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="AI_GATEWAY_API_KEYS") as caught:
        load_settings({"AI_GATEWAY_API_KEYS": raw.format(empty=empty)})
    assert "has space" not in str(caught.value)


def test_origins_are_an_explicit_list() -> None:
    settings = load_settings(
        {"CORS_ALLOW_ORIGINS": "https://App.example.com, http://localhost:3000"}
    )
    assert settings.cors_allow_origins == ("https://app.example.com", "http://localhost:3000")
    assert Settings().cors_allow_origins == ()  # none by default
    for bad in ("app.example.com", "https://app.example.com/path", "ftp://x"):
        with pytest.raises(ConfigError, match="CORS_ALLOW_ORIGINS"):
            load_settings({"CORS_ALLOW_ORIGINS": bad})


@pytest.mark.parametrize(
    ("name", "raw"),
    [("LOG_FORMAT", "xml"), ("DRAIN_TIMEOUT_SEC", "0"), ("CIRCUIT_FAILURE_THRESHOLD", "-1"),
     ("HEALTH_CHECK_INTERVAL_SEC", "soon"), ("METRICS_PUBLIC", "maybe")],
)  # fmt: skip
def test_other_operations_variables_are_validated(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: raw})


def test_live_changes_are_validated_like_the_environment() -> None:
    base = Settings()
    assert normalize_changes(base, {"OPENAI_RPS": 5, "providers.google.rps": "2.5"}) == {
        "OPENAI_RPS": "5",
        "GOOGLE_RPS": "2.5",
    }
    changed = apply_overrides(base, {"OPENAI_RPS": "5", "GOOGLE_MAX_CONNS": "3"})
    assert (changed.provider("openai").rps, changed.provider("google").max_connections) == (5.0, 3)
    with pytest.raises(ConfigError, match=r"invalid OPENAI_RPS='abc': expected a number > 0"):
        apply_overrides(base, {"OPENAI_RPS": "abc"})
    with pytest.raises(ConfigError, match="MAX_DELAY_MS"):
        apply_overrides(base, {"INITIAL_DELAY_MS": "50000"})
    with pytest.raises(InvalidRequest, match="cannot be changed while the gateway runs"):
        normalize_changes(base, {"AI_GATEWAY_PORT": 9000})
    with pytest.raises(InvalidRequest, match="expected a string or a number"):
        normalize_changes(base, {"OPENAI_RPS": True})


def test_a_change_reaches_every_worker_and_a_bad_one_changes_nothing() -> None:
    region = bytearray(region_size(4))
    base = Settings(workers=2)
    first, second = LiveSettings(base, region, 4), LiveSettings(base, region, 4)
    seen: list[tuple[float, float]] = []
    second.subscribe(
        lambda old, new: seen.append((old.provider("openai").rps, new.provider("openai").rps))
    )
    first.update({"OPENAI_RPS": 7, "LOG_LEVEL": "debug"})
    assert first.current.provider("openai").rps == 7.0
    assert second.refresh() and seen == [(50.0, 7.0)]
    assert second.current.log_level == "debug"
    assert first.acknowledged(first.version) == (2, 2)
    with pytest.raises(InvalidRequest, match="OPENAI_RPS") as caught:
        first.update({"LOG_LEVEL": "warning", "OPENAI_RPS": "-1"})
    assert caught.value.param == "OPENAI_RPS"
    assert not second.refresh()  # nothing was published
    assert first.current.log_level == "debug"
    first.update({"OPENAI_RPS": None})  # back to the startup value
    second.refresh()
    assert second.current.provider("openai").rps == 50.0 and second.overrides == {
        "LOG_LEVEL": "debug"
    }
    late = LiveSettings(base, region, 4)  # a worker started later (respawned)
    late.refresh()
    assert late.current.log_level == "debug"
    for live in (first, second, late):
        live.close()


def test_priority_reserves_reach_admission() -> None:
    from aigateway.core.admission import Admission
    from aigateway.hotpath import TokenBucket

    settings = load_settings({"PRIORITY_RESERVES": "low=0.6, normal=0.3", "QUEUE_SIZE": "7"})
    assert settings.priority_reserves == (("low", 0.6), ("normal", 0.3))
    with pytest.raises(ConfigError, match="PRIORITY_RESERVES"):
        load_settings({"PRIORITY_RESERVES": "urgent=0.1"})
    buckets = {"openai": (TokenBucket(10, 10), TokenBucket(1000, 1000))}
    admission = Admission(buckets, {"openai": 10.0}, 100)
    admission.apply_settings(settings, settings.with_providers({"openai": {"rps": 3.0}}))
    assert admission.queue_size == 7
    assert admission.reserves == {"critical": 0.0, "high": 0.1, "normal": 0.3, "low": 0.6}
    assert admission.gates["openai"].configured_rate == 3.0
