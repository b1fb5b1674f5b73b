"""Shared links and several sessions at once, in real browser contexts."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.e2e.conftest import CHROMIUM_ARGS, E2E_SERIES, ROOT, wait_idle

pytestmark = pytest.mark.e2e

SMALL_COMPARE = (
    "compare.models=naive,drift,moving_average&compare.test_size=30&horizon=3&compare.folds=2"
)


def new_page(playwright, chromium_path, profile: Path, *, height: int = 1000):
    context = playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=str(chromium_path),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": height},
    )
    return context, context.new_page()


def metrics_text(page) -> str:
    table = page.locator("[data-testid='stTable']").first
    table.wait_for(timeout=120_000)
    return table.inner_text()


def run_comparison(page) -> None:
    wait_idle(page)
    page.get_by_role("button", name="Run comparison").click()
    page.get_by_text("Step by step").wait_for(timeout=120_000)
    wait_idle(page)


def test_shared_link_shows_the_same_metrics_in_a_fresh_browser(
    chromium_path, streamlit_url, tmp_path
):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        first_context, first = new_page(playwright, chromium_path, tmp_path / "a")
        first.goto(f"{streamlit_url}/compare?symbol=ETH/USDT&{SMALL_COMPARE}")
        run_comparison(first)
        original = metrics_text(first)
        link = first.locator("[data-testid='stCode']").first.inner_text().strip()
        assert link.startswith(f"{streamlit_url}/compare?")
        assert "symbol=ETH%2FUSDT" in link
        assert "compare.folds=2" in link
        first_context.close()

        second_context, second = new_page(playwright, chromium_path, tmp_path / "b")
        second.goto(link)
        if (
            second.get_by_role("button", name="Run comparison").count()
            and not second.locator("[data-testid='stTable']").count()
        ):
            run_comparison(second)
        assert metrics_text(second) == original
        assert second.get_by_text("binance · ETH/USDT · 1d").first.is_visible()
        second_context.close()


def test_invalid_link_falls_back_with_a_notice(browser_page, streamlit_url):
    page = browser_page
    page.goto(f"{streamlit_url}/?horizon=abc&symbol=ETH/USDT")
    page.get_by_text("were not valid").wait_for(timeout=60_000)
    assert page.get_by_text("horizon=abc").first.is_visible()
    # The notice is drawn before the data: on a busy machine the caption comes later.
    page.get_by_text("binance · ETH/USDT · 1d").first.wait_for(timeout=60_000)
    wait_idle(page)
    assert page.locator("[data-testid='stException']").count() == 0


def test_four_sessions_at_once(chromium_path, streamlit_url, tmp_path):
    from playwright.sync_api import sync_playwright

    symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    training = "XRP/USDT"
    with sync_playwright() as playwright:
        sessions = []
        for number, symbol in enumerate([*symbols, training]):
            context, page = new_page(playwright, chromium_path, tmp_path / f"s{number}")
            sessions.append((context, page, symbol))
        # All four load together; the last one trains a small LSTM while the others draw.
        for _, page, symbol in sessions[:3]:
            page.goto(f"{streamlit_url}/?symbol={symbol}", wait_until="commit")
        trainer = sessions[3][1]
        trainer.goto(
            f"{streamlit_url}/models?symbol={training}&lstm.epochs=3&lstm.units=8"
            "&prophet.enabled=false",
            wait_until="commit",
        )
        wait_idle(trainer)
        trainer.get_by_role("button", name="Train", exact=True).click(timeout=60_000)
        for _, page, symbol in sessions[:3]:
            page.get_by_text(f"binance · {symbol} · 1d").first.wait_for(timeout=90_000)
            page.wait_for_function(
                "document.querySelector('.js-plotly-plot') && "
                "document.querySelector('.js-plotly-plot')._fullData",
                timeout=60_000,
            )
            last_close = page.evaluate(
                "(() => { const c = document.querySelector('.js-plotly-plot')._fullData[0].close;"
                " return c[c.length - 1]; })()"
            )
            expected = float(E2E_SERIES[symbol]["close"].iloc[-1])
            assert last_close == pytest.approx(expected, rel=1e-9), symbol
            assert page.locator("[data-testid='stException']").count() == 0
        trainer.get_by_text(re.compile(r"Trained \d models")).wait_for(timeout=180_000)
        assert trainer.get_by_text(f"binance · {training} · 1d").first.is_visible()
        assert trainer.locator("[data-testid='stException']").count() == 0
        for context, _, _ in sessions:
            context.close()


PAGES = ["data", "features", "models", "compare"]


@pytest.mark.parametrize("page_name", PAGES)
def test_page_screenshots(chromium_path, streamlit_url, tmp_path, page_name):
    """Every page renders without an exception; its screenshot goes to the README's docs
    when CFL_UPDATE_SCREENSHOTS=1, else to test-artifacts/."""
    from playwright.sync_api import sync_playwright

    target = (
        ROOT / "docs" / "screenshots"
        if os.environ.get("CFL_UPDATE_SCREENSHOTS") == "1"
        else ROOT / "test-artifacts"
    )
    target.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        context, page = new_page(playwright, chromium_path, tmp_path / "p", height=1600)
        query = {"compare": SMALL_COMPARE, "models": "lstm.epochs=3&lstm.units=8"}
        page.goto(f"{streamlit_url}/{page_name}?{query.get(page_name, '')}")
        page.locator("h1").first.wait_for(timeout=60_000)
        if page_name == "compare":
            run_comparison(page)
        if page_name == "models":
            wait_idle(page)
            page.get_by_role("button", name="Train", exact=True).click()
            page.get_by_text(re.compile(r"Trained \d models")).wait_for(timeout=180_000)
        if page_name == "compare":
            page.locator("[data-testid='stTable']").first.wait_for(timeout=60_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        page.wait_for_function(
            "!document.querySelector('[data-testid=\"stSkeleton\"]')", timeout=60_000
        )
        wait_idle(page)
        if page_name == "compare":
            assert page.get_by_label("Folds").input_value() == "2"
        assert page.locator("[data-testid='stException']").count() == 0
        page.screenshot(path=str(target / f"{page_name}.png"))
        context.close()
