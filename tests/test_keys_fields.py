"""The fields of a tenant key (``POST`` and ``PATCH /admin/keys``): each one checked, and
the checks never accept what the schema in ``/openapi.json`` refuses.

In-process: parsing a body needs no server (tests/test_gateway_keys.py sends them over
HTTP).
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aigateway.api.builder import tenant_priority
from aigateway.api.openapi import openapi_document
from aigateway.errors import InvalidRequest
from aigateway.keys.fields import parse_changes, parse_new
from aigateway.keys.model import TenantKey

DOCUMENT = openapi_document()


def validator(name: str) -> jsonschema.protocols.Validator:
    schema = {**DOCUMENT["components"]["schemas"][name], "components": DOCUMENT["components"]}
    return jsonschema.Draft202012Validator(schema)


def test_a_full_key_is_parsed_field_by_field() -> None:
    fields = parse_new(
        {
            "name": " search-team ",
            "rpm": 60,
            "tpm": 100_000,
            "max_parallel": 4,
            "budget_usd": 25,
            "budget_period": "month",
            "models": ["gpt-4o-mini", "fast", "gpt-4o-mini"],
            "priority": "low",
            "max_priority": "normal",
            "expires_at": "2027-01-31T00:00:00+01:00",
            "metadata": {"owner": "search"},
        }
    )
    assert fields["name"] == "search-team"
    assert fields["budget_usd"] == 25.0 and fields["budget_period"] == "month"
    assert fields["models"] == ("gpt-4o-mini", "fast")
    assert fields["expires_at"] == 1801350000.0  # 2027-01-30T23:00:00Z


def test_a_patch_may_clear_a_limit_with_null_but_must_change_something() -> None:
    assert parse_changes({"rpm": None, "budget_period": None}) == {
        "rpm": None,
        "budget_period": "total",
    }
    with pytest.raises(InvalidRequest, match="nothing to change"):
        parse_changes({})


def test_unknown_fields_are_named_in_the_error() -> None:
    with pytest.raises(InvalidRequest, match="'colour'") as caught:
        parse_new({"name": "x", "colour": "red"})
    assert caught.value.param == "colour"


def test_a_tenant_key_sets_the_default_priority_and_caps_what_a_request_may_ask() -> None:
    key = TenantKey(
        "key_00000000000000ab", "k", b"", "", 0, 0.0, priority="low", max_priority="normal"
    )
    assert tenant_priority(key, None) == "low"
    assert tenant_priority(key, "critical") == "normal"  # lowered to the ceiling
    assert tenant_priority(key, "low") == "low"
    free = TenantKey("key_00000000000000cd", "f", b"", "", 1, 0.0)
    assert (
        tenant_priority(free, None) == "normal" and tenant_priority(free, "critical") == "critical"
    )


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**13),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["day", "month", "total", "week", "low", "critical", "2030-01-01T00:00:00Z"]),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
bodies = st.dictionaries(
    st.sampled_from(
        ["name", "rpm", "tpm", "max_parallel", "budget_usd", "budget_period", "models",
         "priority", "max_priority", "expires_at", "metadata", "extra"]
    ),
    values,
)  # fmt: skip


@settings(max_examples=400, deadline=None, derandomize=True)
@given(bodies)
def test_the_checks_raise_only_400s_and_accept_nothing_the_schema_refuses(
    body: dict[str, Any],
) -> None:
    for parse, schema in ((parse_new, "KeyCreate"), (parse_changes, "KeyChange")):
        try:
            parse(body)
        except InvalidRequest:
            continue
        assert validator(schema).is_valid(body), (schema, body)
