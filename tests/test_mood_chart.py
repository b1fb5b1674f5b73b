"""The market mood chart: Fear & Greed over its bands, funding rates in basis points."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from factories import random_walk_candles

from forecasting import charts
from forecasting.errors import ConfigurationError


def mood_candles(days: int = 12) -> pd.DataFrame:
    """Daily candles with invented mood columns; the first candle saw no value yet."""
    candles = random_walk_candles(days, seed=4)
    fear_greed = np.linspace(10, 90, days).round()
    fear_greed[0] = np.nan
    funding = np.linspace(-2e-4, 3e-4, days)
    funding[0] = np.nan
    return candles.assign(fear_greed=fear_greed, funding_rate=funding)


def test_mood_chart_draws_each_column_on_the_candles_times() -> None:
    candles = mood_candles()
    figure = charts.mood_chart(candles)
    fear, funding = figure.data
    expected_times = candles.index.tz_convert("UTC").tz_localize(None).strftime("%Y-%m-%dT%H:%M:%S")
    for trace in (fear, funding):
        assert list(trace.x) == list(expected_times)
        assert trace.line.shape == "hv"  # a candle holds the value it saw at its close
    np.testing.assert_array_equal(fear.y, candles["fear_greed"].to_numpy())
    # Basis points per funding period: a fraction times 10,000.
    np.testing.assert_allclose(funding.y, candles["funding_rate"].to_numpy() * 10_000)
    assert np.isnan(fear.y[0])
    assert np.isnan(funding.y[0])
    # Two panels on one shared time axis, the index on its 0-100 scale.
    assert fear.yaxis == "y"
    assert funding.yaxis == "y2"
    assert figure.layout.xaxis.matches == "x2" or figure.layout.xaxis2.matches == "x"
    assert tuple(figure.layout.yaxis.range) == (0, 100)


def test_mood_chart_shades_fear_and_greed_bands_and_marks_zero_funding() -> None:
    figure = charts.mood_chart(mood_candles())
    rects = [s for s in figure.layout.shapes if s.type == "rect"]
    # Four shaded bands (neutral is not shaded), on the index's axis.
    assert sorted((s.y0, s.y1) for s in rects) == [(0, 25), (25, 47), (55, 76), (76, 100)]
    assert {s.yref for s in rects} == {"y"}
    fills = {(s.y0, s.y1): s.fillcolor for s in rects}
    assert fills[(0, 25)] == fills[(25, 47)] == charts.DOWN_COLOR
    assert fills[(55, 76)] == fills[(76, 100)] == charts.UP_COLOR
    lines = [s for s in figure.layout.shapes if s.type == "line"]
    assert len(lines) == 1
    assert (lines[0].y0, lines[0].y1, lines[0].yref) == (0, 0, "y2")


@pytest.mark.parametrize(
    ("value", "band"),
    [
        (0.0, "Extreme Fear"),
        (24.0, "Extreme Fear"),  # the last value of the band
        (25.0, "Fear"),
        (50.0, "Neutral"),
        (55.0, "Greed"),
        (76.0, "Extreme Greed"),
        (100.0, "Extreme Greed"),
    ],
)
def test_mood_chart_names_each_value_s_band_on_hover(value: float, band: str) -> None:
    candles = random_walk_candles(3, seed=1).assign(fear_greed=[np.nan, value, value])
    (trace,) = charts.mood_chart(candles).data
    assert list(trace.customdata) == ["", band, band]


def test_mood_chart_draws_only_the_columns_joined() -> None:
    candles = mood_candles().drop(columns="fear_greed")
    figure = charts.mood_chart(candles)
    assert [trace.name for trace in figure.data] == ["funding rate (bp)"]
    assert not [s for s in figure.layout.shapes if s.type == "rect"]


def test_mood_chart_carries_the_template() -> None:
    layout = charts.mood_chart(mood_candles()).layout
    assert layout.template.layout.paper_bgcolor == charts.TEMPLATE.layout.paper_bgcolor
    assert layout.template.layout.font.color == charts.TEMPLATE.layout.font.color
    assert not layout.xaxis.rangeslider.visible


def test_mood_chart_without_a_mood_column_says_what_to_do() -> None:
    with pytest.raises(ConfigurationError, match="attach_mood"):
        charts.mood_chart(random_walk_candles(5, seed=2))
