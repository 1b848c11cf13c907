"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` package, driven
by Playwright, never a browser of Playwright's own) against a real gateway process.

The page loads and renders with no console error, its numbers move when traffic flows,
its theme toggles, and with an admin key it asks for the key first: a wrong key is
refused, the right one shows the data.  Screenshots (laptop and phone widths, light and
dark, and the key prompt) are kept after the run in ``build/test-artifacts/dashboard/``
(or ``$AIGATEWAY_TEST_ARTIFACTS/dashboard/``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright import sync_api

from servers import ARTIFACTS_DIR, Gateway, MockProvider, chat_body

pytestmark = pytest.mark.e2e


CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = "the browser tests need Debian's chromium: apt-get install chromium (make test does)"
# Nothing but the page under test: no downloads, updates, sync or network of its own.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACTS = ARTIFACTS_DIR / "dashboard"
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
ADMIN = "sk-admin-dashboard-0123456789"
WAIT_MS = 30_000  # generous: CI has two cores, shared


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium") or CHROMIUM
    if not os.path.exists(executable):
        pytest.fail(INSTALL_HINT)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def cached_gateway(mock_provider: MockProvider) -> Iterator[Gateway]:
    gateway = Gateway(mock_provider, CACHE_ENABLED="true")
    yield gateway
    gateway.stop()


class Console:
    """What the page said on its console, and the errors it threw."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def _message(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)


def field(page: Any, name: str) -> str:
    text: str = page.locator(f'[data-field="{name}"]').first.inner_text()
    return text


def send_traffic(gateway: Gateway) -> None:
    """Clients' requests: repeated ones (cache hits), streams (a first token), two providers."""
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for n in range(24):
            assert client.post("/v1/chat/completions", json=chat_body(f"q{n % 6}")).is_success
        for n in range(3):
            body = chat_body(f"stream {n}", stream=True)
            assert client.post("/v1/chat/completions", json=body).is_success
        claude = {
            "model": "claude-3-5-haiku-latest",
            "messages": [{"role": "user", "content": "hi"}],
        }
        assert client.post("/v1/chat/completions", json=claude).is_success


def test_the_page_renders_live_numbers_with_no_console_error(
    browser: Any, cached_gateway: Gateway
) -> None:
    context = browser.new_context(viewport=LAPTOP, color_scheme="light")
    page = context.new_page()
    console = Console(page)
    try:
        page.goto(cached_gateway.url + "/dashboard")
        page.wait_for_selector("#board", state="visible", timeout=WAIT_MS)
        page.wait_for_selector('#status[data-state="live"]', timeout=WAIT_MS)
        assert page.locator("#login").is_hidden()  # loopback, no admin key: no prompt
        assert field(page, "nodes") == "1"
        assert field(page, "circuits") == "closed"

        send_traffic(cached_gateway)
        # The last minute's figures move within a few samples.
        page.wait_for_function(
            """() => {
                const value = name => document.querySelector(`[data-field="${name}"]`).textContent;
                return parseFloat(value("requests_per_s")) > 0 && value("latency") !== "\\u2013"
                    && value("cache_hit_rate").endsWith("%") && value("cache_hit_rate") !== "0%"
                    && value("ttft_p50_ms") !== "\\u2013";
            }""",
            timeout=WAIT_MS,
        )
        assert "calls avoided" in field(page, "avoided")
        assert not field(page, "avoided").startswith("0 ")
        openai = page.locator("#provider-rows tr", has_text="openai")
        assert openai.locator(".badge").inner_text() == "closed"
        assert page.locator(".uplot").count() == 5  # traffic, latency, providers, cache, queue
        page.wait_for_function(
            "() => document.querySelectorAll('.uplot canvas').length === 5", timeout=WAIT_MS
        )
        assert page.locator("#cluster-note").inner_text().startswith("One node")
        page.screenshot(path=str(ARTIFACTS / "laptop-light.png"), full_page=True)

        light = page.evaluate("getComputedStyle(document.body).backgroundColor")
        page.click("#theme")
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") != light
        assert page.locator(".uplot").count() == 5  # redrawn in the theme's colours
        page.screenshot(path=str(ARTIFACTS / "laptop-dark.png"), full_page=True)

        page.set_viewport_size(PHONE)
        page.wait_for_timeout(300)  # the charts follow the new width on the next frame
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], "the page scrolls sideways at phone width"
        page.screenshot(path=str(ARTIFACTS / "phone-dark.png"))
        page.click("#theme")
        page.screenshot(path=str(ARTIFACTS / "phone-light.png"))
        page.screenshot(path=str(ARTIFACTS / "phone-light-full.png"), full_page=True)
        assert console.errors == []
    finally:
        context.close()


def test_with_an_admin_key_the_page_asks_for_it_and_refuses_a_wrong_one(
    browser: Any, mock_provider: MockProvider
) -> None:
    gateway = Gateway(mock_provider, AI_GATEWAY_ADMIN_KEY=ADMIN)
    context = browser.new_context(viewport=LAPTOP, color_scheme="dark")
    page = context.new_page()
    console = Console(page)
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    try:
        page.goto(gateway.url + "/dashboard")
        page.wait_for_selector("#login", state="visible", timeout=WAIT_MS)
        assert page.locator("#board").is_hidden()
        assert not [url for url in asked if "dashboard.json" in url]  # no data asked yet
        page.screenshot(path=str(ARTIFACTS / "key-prompt.png"))

        page.fill("#key", "sk-admin-wrong")
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#login-error", state="visible", timeout=WAIT_MS)
        assert "refused" in page.locator("#login-error").inner_text()
        assert page.locator("#board").is_hidden()
        # The browser reports the 401 itself; nothing else may go wrong.
        assert all("401" in error for error in console.errors), console.errors
        console.errors.clear()

        page.fill("#key", ADMIN)
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#board", state="visible", timeout=WAIT_MS)
        page.wait_for_selector('#status[data-state="live"]', timeout=WAIT_MS)
        assert field(page, "nodes") == "1"
        data_requests = [url for url in asked if "dashboard.json" in url]
        assert data_requests

        page.reload()  # the key is kept for this tab
        page.wait_for_selector("#board", state="visible", timeout=WAIT_MS)
        page.click("#signout")
        page.wait_for_selector("#login", state="visible", timeout=WAIT_MS)
        assert page.evaluate("sessionStorage.length") == 0
        assert console.errors == []
    finally:
        context.close()
        gateway.stop()
    assert ADMIN not in gateway.log()
