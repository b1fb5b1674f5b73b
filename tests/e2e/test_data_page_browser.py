"""The Data page in a real browser: the first open shows the candlestick chart."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e

PLOT = ".js-plotly-plot"


def test_first_page_shows_candlestick_chart(browser_page, streamlit_url):
    page = browser_page
    page.goto(streamlit_url)
    page.wait_for_selector(PLOT, timeout=60_000)
    page.wait_for_function(
        f"document.querySelector('{PLOT}').data && document.querySelector('{PLOT}').data.length",
        timeout=30_000,
    )
    traces = page.evaluate(f"Array.from(document.querySelector('{PLOT}').data, t => t.type)")
    # candles over two stepped volume areas
    assert traces == ["candlestick", "scatter", "scatter"]
    # the times, sent as strings, are read as dates
    axis = page.evaluate(f"document.querySelector('{PLOT}')._fullLayout.xaxis.type")
    assert axis == "date"
    candles = page.evaluate(f"document.querySelector('{PLOT}')._fullData[0].close.length")
    assert 2900 <= candles <= 3001
    assert page.get_by_text("binance · BTC/USDT · 1d").first.is_visible()
    # The chart code, requested at the start of the run, was fetched once, and the
    # hidden element that asked for it leaves no gap above the title.
    fetched = page.evaluate(
        "performance.getEntriesByType('resource').filter(e => e.name.includes('/PlotlyChart.'))"
        ".length"
    )
    assert fetched == 1
    gap = page.evaluate(
        """(() => { const block = document.querySelector('[data-testid=stMainBlockContainer]');
        const title = document.querySelector('h1');
        return title.getBoundingClientRect().top - block.getBoundingClientRect().top
               - parseFloat(getComputedStyle(block).paddingTop); })()"""
    )
    assert abs(gap) < 1
    assert page.locator("[data-testid='stException']").count() == 0
    page.wait_for_timeout(500)
    shots = ROOT / "test-artifacts"
    shots.mkdir(exist_ok=True)
    page.screenshot(path=str(shots / "data-page.png"), full_page=True)


def test_first_page_requests_nothing_from_other_hosts(browser_page, streamlit_url):
    """Fonts, icons and scripts come from the app itself: no third party sees a visit, and
    the page works where only the app's host is reachable."""
    from urllib.parse import urlsplit

    page = browser_page
    hosts: set[str] = set()
    page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc))
    page.goto(streamlit_url)
    page.wait_for_function(
        f"document.querySelector('{PLOT}') && document.querySelector('{PLOT}')._fullData",
        timeout=60_000,
    )
    page.wait_for_timeout(1000)
    assert hosts == {urlsplit(streamlit_url).netloc}
