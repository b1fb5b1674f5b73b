"""The Strategy and Live pages in a real browser: reached from the navigation in the
session that ran a comparison, drawn without an exception."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import wait_idle

pytestmark = pytest.mark.e2e

SMALL_COMPARE = "compare.models=naive,drift&compare.test_size=30&horizon=3&compare.folds=2"


def test_strategy_trades_the_comparison_and_live_shows_the_ledger(browser_page, streamlit_url):
    page = browser_page
    page.goto(f"{streamlit_url}/compare?{SMALL_COMPARE}")
    page.get_by_role("button", name="Run comparison").wait_for(timeout=60_000)
    wait_idle(page)
    page.get_by_role("button", name="Run comparison").click()
    page.get_by_text("Step by step").wait_for(timeout=120_000)
    wait_idle(page)

    page.get_by_role("link", name="Strategy").click()
    page.get_by_role("heading", name="Strategy").first.wait_for(timeout=60_000)
    wait_idle(page)
    # The verdict against buy-and-hold, the timing convention, and the metrics table.
    page.get_by_text("buy-and-hold").first.wait_for(timeout=60_000)
    assert page.get_by_text("earns from candle t+1 on").first.is_visible()
    grid = page.get_by_test_id("stDataFrame").first
    grid.wait_for(timeout=30_000)
    grid.scroll_into_view_if_needed()
    # The grid draws on a canvas; its accessible copy holds the cells (once drawn).
    expect(grid.locator("[role='columnheader']").first).to_be_attached(timeout=30_000)
    cells = grid.locator("[role='gridcell'], [role='rowheader'], td, th").all_inner_texts()
    assert {"naive", "drift", "buy_and_hold"} <= {cell.strip() for cell in cells}, cells
    assert page.locator("[data-testid='stException']").count() == 0

    page.get_by_role("link", name="Live").click()
    page.get_by_role("heading", name="Live").first.wait_for(timeout=60_000)
    wait_idle(page)
    start = page.get_by_role("button", name="Start tracking")
    start.wait_for(timeout=30_000)
    # Trackers are off unless the server turns them on (CFL_START_TRACKERS).
    assert start.is_disabled()
    assert page.get_by_text("CFL_START_TRACKERS").first.is_visible()
    assert page.locator("[data-testid='stException']").count() == 0
