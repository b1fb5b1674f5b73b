"""The candlestick chart in a real browser: each range button is clickable with the mode bar
showing, and shows its span with the price and volume axes fitted to it; a box dragged
across the chart does the same for the span it covers."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from forecasting.charts import PRICE_PAD, VOLUME_PAD
from tests.e2e.conftest import ROOT, wait_idle

pytestmark = pytest.mark.e2e

PLOT = ".js-plotly-plot"
# Calendar days each button shows, at most (a month of 31 days, a leap year).
SPAN_DAYS = {"1w": 7, "1m": 31, "3m": 92, "6m": 184, "1y": 366}


def _box(locator) -> dict:
    box = locator.bounding_box()
    assert box is not None
    return box


def _overlap(a: dict, b: dict) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


def _axes(page) -> dict:
    return page.evaluate(
        f"""(() => {{ const layout = document.querySelector('{PLOT}')._fullLayout;
        return {{x: layout.xaxis.range, y: layout.yaxis.range, volume: layout.yaxis2.range}};
        }})()"""
    )


def test_range_buttons_show_their_span_with_fitted_price_axis(browser_page, streamlit_url):
    page = browser_page
    page.goto(streamlit_url)
    page.wait_for_function(
        f"document.querySelector('{PLOT}') && document.querySelector('{PLOT}')._fullData",
        timeout=60_000,
    )
    wait_idle(page)
    data = page.evaluate(
        f"""(() => {{ const trace = document.querySelector('{PLOT}')._fullData[0];
        return {{x: Array.from(trace.x), low: Array.from(trace.low),
                 high: Array.from(trace.high)}}; }})()"""
    )
    candles = pd.DataFrame(
        {"low": data["low"], "high": data["high"]}, index=pd.DatetimeIndex(data["x"])
    )
    volume = page.evaluate(
        f"Array.from(document.querySelector('{PLOT}')._fullData[1].y).reduce((a, b) => "
        "Math.max(a, b), 0)"
    )
    plot = page.locator(PLOT).first
    buttons = plot.locator(".updatemenu-button")
    labels = [buttons.nth(i).text_content().strip() for i in range(buttons.count())]
    # three thousand daily candles: a week is under 10 of them, every longer span fits
    assert labels == ["1m", "3m", "6m", "1y", "all"]
    whole = _axes(page)

    for i, label in enumerate(labels):
        # The pointer on the chart brings up plotly's mode bar and Streamlit's toolbar:
        # neither may cover a button, or a click lands on "Zoom" or "Download".
        plot.hover(position={"x": 400, "y": 300})
        page.locator(".modebar").first.wait_for(state="visible")
        covers = [_box(page.locator(".modebar").first)]
        toolbar = page.locator("[data-testid='stElementToolbar']")
        if toolbar.count() and toolbar.first.is_visible():
            covers.append(_box(toolbar.first))
        for j in range(len(labels)):
            for cover in covers:
                assert not _overlap(_box(buttons.nth(j)), cover), labels[j]
        buttons.nth(i).click()
        page.wait_for_timeout(300)
        axes = _axes(page)
        start, end = pd.Timestamp(axes["x"][0]), pd.Timestamp(axes["x"][1])
        low, high = axes["y"]
        if label == "all":
            # back to the whole series, as a double click does
            assert axes == whole
            assert start <= candles.index[0]
            assert end >= candles.index[-1]
            assert low <= candles["low"].min()
            assert high >= candles["high"].max()
            continue
        # the span ends at the last candle and reaches back as far as the label says
        assert end - candles.index[-1] == pd.Timedelta(hours=12)
        days = (end - start) / pd.Timedelta(days=1)
        assert SPAN_DAYS[label] - 3 <= days <= SPAN_DAYS[label] + 1, (label, days)
        # the price axis fits the candles in view: their lowest low and highest high, a
        # little room either side, not the whole series' range
        shown = candles[(candles.index >= start) & (candles.index <= end)]
        span = shown["high"].max() - shown["low"].min()
        assert low == pytest.approx(shown["low"].min() - PRICE_PAD * span)
        assert high == pytest.approx(shown["high"].max() + PRICE_PAD * span)
        assert high - low < whole["y"][1] - whole["y"][0]
        # and the volume axis too
        assert axes["volume"][0] == 0
        assert axes["volume"][1] <= (1 + VOLUME_PAD) * volume
        if label == "3m":
            shots = ROOT / "test-artifacts"
            shots.mkdir(exist_ok=True)
            page.screenshot(path=str(shots / "data-page-3m.png"))
    assert page.locator("[data-testid='stException']").count() == 0


def _drag_across(page, start: float, end: float) -> None:
    """Drag across the candles from ``start`` to ``end`` (shares of the plot's width)."""
    area = _box(page.locator(f"{PLOT} .nsewdrag").first)
    y = area["y"] + area["height"] / 2
    page.mouse.move(area["x"] + start * area["width"], y)
    page.mouse.down()
    page.mouse.move(area["x"] + (start + end) / 2 * area["width"], y + 30, steps=8)
    page.mouse.move(area["x"] + end * area["width"], y + 60, steps=8)
    page.mouse.up()


def _redrawn(page, before: dict) -> dict:
    """The axes once the app has drawn the chart again (they differ from ``before``)."""
    page.wait_for_function(
        f"""(() => {{ const plot = document.querySelector('{PLOT}');
        return plot && plot._fullLayout &&
               JSON.stringify(plot._fullLayout.xaxis.range) !== '{_json(before["x"])}'; }})()""",
        timeout=30_000,
    )
    wait_idle(page)
    page.wait_for_timeout(300)
    return _axes(page)


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def test_a_box_dragged_across_the_chart_zooms_with_the_price_axis_fitted(
    browser_page, streamlit_url
):
    # The issue: zooming in time kept the price axis at the whole series' range, so the
    # candles in view were flat dashes.
    page = browser_page
    page.goto(streamlit_url)
    page.wait_for_function(
        f"document.querySelector('{PLOT}') && document.querySelector('{PLOT}')._fullData",
        timeout=60_000,
    )
    wait_idle(page)
    assert page.get_by_text(
        "Drag across the chart to zoom; the price axis fits the candles shown."
    ).is_visible()
    whole_series = page.get_by_role("button", name="Whole series")
    assert whole_series.is_disabled()  # nothing to zoom out of yet
    # a drag selects a span of time; plotly's zoom tool stays in the mode bar
    assert page.evaluate(f"document.querySelector('{PLOT}')._fullLayout.dragmode") == "select"
    assert page.locator(f"{PLOT} .modebar-btn[data-val='zoom']").count() == 1
    candles = page.evaluate(
        f"""(() => {{ const data = document.querySelector('{PLOT}')._fullData;
        return {{x: Array.from(data[0].x), low: Array.from(data[0].low),
                 high: Array.from(data[0].high), volume_x: Array.from(data[1].x),
                 volume: Array.from(data[1].y)}}; }})()"""
    )
    times = pd.DatetimeIndex(candles["x"])
    whole = _axes(page)
    first, last = (pd.Timestamp(t) for t in whole["x"])

    _drag_across(page, 0.40, 0.55)
    zoomed = _redrawn(page, whole)

    # the time axis shows the span dragged across: 40 % to 55 % of the way along
    start, end = (pd.Timestamp(t) for t in zoomed["x"])
    pixel = (last - first) / _box(page.locator(f"{PLOT} .nsewdrag").first)["width"]
    assert abs(start - (first + 0.40 * (last - first))) <= 3 * pixel
    assert abs(end - (first + 0.55 * (last - first))) <= 3 * pixel
    assert zoomed["x"] == page.evaluate(
        f"document.querySelector('{PLOT}')._fullLayout.xaxis2.range"
    )
    # the price axis fits the candles in that span, not the whole series
    inside = (times >= start) & (times <= end)
    bottom = min(low for low, keep in zip(candles["low"], inside, strict=True) if keep)
    top = max(high for high, keep in zip(candles["high"], inside, strict=True) if keep)
    pad = PRICE_PAD * (top - bottom)
    assert zoomed["y"] == pytest.approx([bottom - pad, top + pad], rel=1e-9)
    assert zoomed["y"][1] - zoomed["y"][0] < (whole["y"][1] - whole["y"][0]) / 2
    # and the volume axis fits the volume in it
    volume_times = pd.DatetimeIndex(candles["volume_x"])
    shown = [v for t, v in zip(volume_times, candles["volume"], strict=True) if start <= t <= end]
    assert zoomed["volume"] == pytest.approx([0, (1 + VOLUME_PAD) * max(shown)], rel=1e-9)
    shots = ROOT / "test-artifacts"
    shots.mkdir(exist_ok=True)
    page.screenshot(path=str(shots / "data-page-box-zoom.png"))

    # "Whole series" goes back to every candle on the whole price range
    assert whole_series.is_enabled()
    whole_series.click()
    assert _redrawn(page, zoomed) == whole
    assert page.get_by_role("button", name="Whole series").is_disabled()
    assert page.locator("[data-testid='stException']").count() == 0
