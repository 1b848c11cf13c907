"""The dashboard's spend panel in a real browser: what tenant keys spent, against their
budgets, read from a real gateway with priced answers.

A gateway of its own (once a tenant key exists every ``/v1`` request needs one), whose
configuration file prices the mock's model at $1,000 and $2,000 per million tokens, so
every answer costs a few cents.  A key with a budget is made through ``/admin/keys``,
traffic is sent with it, and the page shows the key with its spend, the share of its
budget used as a bar, its limits, and the spend tile; revoked keys with spend say so.
Screenshots (laptop light, phone dark) are kept in ``build/test-artifacts/dashboard/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from servers import Gateway, MockProvider, chat_body, wait_for
from test_dashboard_browser import ARTIFACTS, LAPTOP, PHONE, WAIT_MS, Console, browser, field

pytestmark = pytest.mark.e2e
__all__ = ("browser",)  # the module's browser fixture, shared

PRICES = '[prices."gpt-4o-mini"]\ninput = 1000.0\noutput = 2000.0\n'
BUDGET = 5.0


@pytest.fixture(scope="module")
def priced_gateway(
    mock_provider: MockProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config: Path = tmp_path_factory.mktemp("spend") / "gateway.toml"
    config.write_text(PRICES)
    gateway = Gateway(
        mock_provider,
        AI_GATEWAY_CONFIG=str(config),
        AI_GATEWAY_DATA_DIR=str(config.parent / "data"),
        KEY_SPEND_FLUSH_MS="200",
    )
    yield gateway
    gateway.stop()


def make_key(gateway: Gateway, **fields: Any) -> dict[str, Any]:
    answer = httpx.post(gateway.url + "/admin/keys", json=fields, timeout=10)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


@pytest.fixture(scope="module")
def spent(priced_gateway: Gateway) -> float:
    """Two keys spent: ``team-search`` (a monthly budget, limits) five answers, and
    ``old-batch`` one before it was revoked. What ``team-search`` spent, as /admin/keys
    says."""
    team = make_key(
        priced_gateway, name="team-search", budget_usd=BUDGET, budget_period="month",
        rpm=600, max_parallel=4,
    )  # fmt: skip
    gone = make_key(priced_gateway, name="old-batch")
    with httpx.Client(base_url=priced_gateway.url, timeout=30) as client:
        for secret, n in [(team["key"], n) for n in range(5)] + [(gone["key"], 5)]:
            answer = client.post(
                "/v1/chat/completions",
                json=chat_body(f"spend {n}"),
                headers={"authorization": f"Bearer {secret}"},
            )
            assert answer.status_code == 200, answer.text
            assert float(answer.headers["x-aigateway-cost"]) > 0
        assert client.delete(f"/admin/keys/{gone['id']}").status_code == 200
        usd: float = client.get(f"/admin/keys/{team['id']}").json()["spend"]["period_usd"]
    assert usd > 0
    return usd


def figure(text: str) -> float:
    """``$0.153`` or ``3.1%``, as a number."""
    return float(text.strip().lstrip("$").split("%")[0].split()[0].replace(",", ""))


def test_the_spend_panel_shows_each_keys_spend_against_its_budget(
    browser: Any, priced_gateway: Gateway, spent: float
) -> None:
    context = browser.new_context(viewport=LAPTOP, color_scheme="light")
    page = context.new_page()
    console = Console(page)
    try:
        page.goto(priced_gateway.url + "/dashboard")
        page.wait_for_selector('#status[data-state="live"]', timeout=WAIT_MS)
        row = page.locator('#spend-rows tr[data-key="team-search"]')
        row.wait_for(timeout=WAIT_MS)
        assert row.locator(".badge").inner_text() == "active"
        assert figure(row.locator("td").nth(2).inner_text()) == pytest.approx(spent, abs=1e-4)
        share = spent / BUDGET
        meter = row.locator(".meter").inner_text()
        assert figure(meter) == pytest.approx(share * 100, abs=0.1)
        assert "of $5 this month" in meter
        width = float(row.locator(".meter .fill").evaluate("el => parseFloat(el.style.width)"))
        assert width == pytest.approx(share * 100, abs=0.1) and width > 0
        assert "600 rpm" in row.inner_text() and "0/4 parallel" in row.inner_text()
        # The revoked key's spend reaches the store within a flush; the page shows it.
        revoked = page.locator('#spend-rows tr[data-key="old-batch"]')
        revoked.wait_for(timeout=WAIT_MS)
        assert revoked.locator(".badge").inner_text() == "revoked"
        assert field(page, "spend").startswith("$") and field(page, "spend") != "$0"
        assert page.locator("#model-rows tr", has_text="gpt-4o-mini").count() == 1
        page.locator("#spend").screenshot(path=str(ARTIFACTS / "spend-laptop-light.png"))

        page.click("#theme")
        page.set_viewport_size(PHONE)
        page.wait_for_timeout(300)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.locator("#spend").screenshot(path=str(ARTIFACTS / "spend-phone-dark.png"))
        assert console.errors == []
    finally:
        context.close()


def test_the_document_lists_spend_totals_by_model_and_by_key(
    priced_gateway: Gateway, spent: float
) -> None:
    def document() -> dict[str, Any]:
        found = httpx.get(priced_gateway.url + "/admin/dashboard.json").json()
        return dict(found["spend"])

    # The store's totals lag by a flush (200 ms here) and are kept 5 s by each worker.
    spend = wait_for(lambda: (s := document())["keys"]["month_usd"] > spent and s, 15.0)
    assert spend["available"] is True
    assert spend["since_start_usd"] > 0
    assert [m["model"] for m in spend["by_model"]] == ["gpt-4o-mini"]
    keys = spend["keys"]
    assert keys["count"] == 1 and keys["revoked_with_spend"] == 1
    assert keys["today_usd"] == pytest.approx(keys["month_usd"])
    assert keys["total_usd"] == pytest.approx(spend["since_start_usd"])
    team = next(k for k in keys["top"] if k["name"] == "team-search")
    assert team["state"] == "active" and team["period"] == "month"
    assert team["budget_usd"] == BUDGET
    assert team["period_usd"] == pytest.approx(spent)
    assert team["budget_use"] == pytest.approx(spent / BUDGET, abs=1e-4)
    assert (team["rpm"], team["tpm"], team["max_parallel"]) == (600, None, 4)
