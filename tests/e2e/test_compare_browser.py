"""The Compare page in a real browser: a deep link, a run, and the metrics table."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import ROOT, wait_idle

pytestmark = pytest.mark.e2e


def test_compare_deep_link_runs_and_shows_metrics(browser_page, streamlit_url):
    page = browser_page
    # A deep link to a page is the first request this session makes.
    page.goto(f"{streamlit_url}/compare")
    page.get_by_role("button", name="Run comparison").wait_for(timeout=60_000)
    wait_idle(page)
    for model in ("lstm", "prophet", "seasonal_naive"):
        page.get_by_role("button", name=f"Remove {model}").click()
    page.get_by_label("Test candles").fill("30")
    page.get_by_role("button", name="Run comparison").click()
    page.get_by_text("Step by step").wait_for(timeout=120_000)
    wait_idle(page)
    # The verdict opens the results, before any table.
    verdict = page.get_by_role("heading", name="Verdict")
    table = page.locator("[data-testid='stTable']").first
    table.wait_for(timeout=30_000)
    assert verdict.bounding_box()["y"] < table.bounding_box()["y"]
    assert page.get_by_text("absolute error ratio").first.is_visible()
    text = table.inner_text()
    assert "against naive" in text
    assert "mae_vs_naive" in text
    # The other metrics are behind "All metrics".
    page.get_by_text("All metrics").first.click()
    every = page.locator("[data-testid='stTable']").nth(1)
    every.wait_for(timeout=30_000)
    assert "interval_score" in every.inner_text()
    assert "mase" in every.inner_text()
    for model in ("naive", "drift", "moving_average"):
        assert page.get_by_text(model).first.is_visible()
    assert page.get_by_text("at the 5 % level").first.is_visible()
    # The form still shows what was run (a fresh server's first deep link once reset it).
    assert page.get_by_label("Test candles").input_value() == "30"
    assert page.get_by_role("button", name="Remove lstm").count() == 0
    assert page.locator("[data-testid='stException']").count() == 0
    shots = ROOT / "test-artifacts"
    shots.mkdir(exist_ok=True)
    page.screenshot(path=str(shots / "compare-page.png"), full_page=True)
