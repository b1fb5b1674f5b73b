"""Every figure in :mod:`forecasting.charts` carries the one look the app draws it with."""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from factories import random_walk_candles
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting import charts
from forecasting.evaluation import BacktestSettings, score_by_horizon, walk_forward
from forecasting.features import compute_features, parse_features
from forecasting.models import Drift, Naive


@pytest.fixture(scope="module")
def figures() -> dict[str, go.Figure]:
    candles = random_walk_candles(160, seed=3)
    backtest = walk_forward(
        {"naive": Naive(), "drift": Drift()},
        candles,
        BacktestSettings(horizon=3, folds=2, test_size=20),
    )
    forecast = Naive().fit(candles).predict(3)
    features = compute_features(candles).dropna()
    builders: dict[str, Callable[[], go.Figure]] = {
        "candlestick": lambda: charts.candlestick_chart(candles),
        "features": lambda: charts.feature_chart(candles.loc[features.index], features),
        "correlation": lambda: charts.correlation_heatmap(features),
        "forecast": lambda: charts.forecast_chart(candles, [forecast]),
        "loss": lambda: charts.loss_chart({"loss": [0.3, 0.2], "val_loss": [0.4, 0.3]}),
        "backtest": lambda: charts.backtest_chart(backtest.forecasts),
        "horizon": lambda: charts.horizon_error_chart(score_by_horizon(backtest)),
        "residuals": lambda: charts.residual_histogram(backtest.forecasts),
        "acf": lambda: charts.residual_acf_chart(backtest.forecasts),
        "mood": lambda: charts.mood_chart(
            candles.assign(fear_greed=np.linspace(10, 90, len(candles)), funding_rate=1e-4)
        ),
    }
    return {name: build() for name, build in builders.items()}


def test_every_chart_function_is_covered(figures: dict[str, go.Figure]) -> None:
    functions = [
        name for name in charts.__all__ if name.endswith(("_chart", "_heatmap", "_histogram"))
    ]
    assert len(figures) == len(functions)


@pytest.mark.parametrize(
    "name",
    ["candlestick", "features", "correlation", "forecast", "loss", "backtest", "horizon",
     "residuals", "acf", "mood"],
)  # fmt: skip
def test_figures_carry_the_template(figures: dict[str, go.Figure], name: str) -> None:
    layout = figures[name].layout
    # The app draws figures with ``theme=None``: without the template they would fall back
    # to plotly.js's white background on a dark page.
    assert layout.template.layout.paper_bgcolor == charts.TEMPLATE.layout.paper_bgcolor
    assert layout.template.layout.plot_bgcolor == "rgba(0, 0, 0, 0)"
    assert layout.template.layout.font.color == charts.TEMPLATE.layout.font.color
    # No range slider anywhere: it draws every trace a second time.
    axes = [key for key in layout.to_plotly_json() if key.startswith("xaxis")] or ["xaxis"]
    for axis in axes:
        assert not layout[axis].rangeslider.visible


# --- candlestick range buttons --------------------------------------------------------


def _menu(figure: go.Figure) -> dict:
    (menu,) = figure.to_plotly_json()["layout"]["updatemenus"]
    return menu


def _buttons(figure: go.Figure) -> dict[str, dict]:
    return {button["label"]: button["args"][0] for button in _menu(figure)["buttons"]}


def _daily_ramp(n: int = 400) -> pd.DataFrame:
    """Candle i (from 2024-01-01) has low i, high i + 2 and volume i."""
    index = pd.date_range("2024-01-01", periods=n, freq="1D", tz="UTC", name="timestamp")
    i = np.arange(n, dtype="float64")
    return pd.DataFrame(
        {"open": i + 1, "high": i + 2, "low": i, "close": i + 1.5, "volume": i}, index=index
    )


def test_range_buttons_fit_the_price_axis_to_the_candles_in_view() -> None:
    # The issue: "1m" showed a month of candles on a year's price range (flat dashes).
    # 400 days from 2024-01-01 end on 2025-02-03; a month back from it is 2025-01-03, so
    # "1m" shows 2025-01-04 (candle 369, 2024 being a leap year) to 2025-02-03 (candle 399).
    buttons = _buttons(charts.candlestick_chart(_daily_ramp()))
    assert list(buttons) == ["1m", "3m", "6m", "1y", "all"]
    month = buttons["1m"]
    # half a candle of room either side of the first and last candle, on both time axes
    assert month["xaxis.range"] == ["2025-01-03 12:00:00", "2025-02-03 12:00:00"]
    assert month["xaxis2.range"] == month["xaxis.range"]
    # lowest low 369, highest high 401, 5 % of the 32 between them either side
    assert month["yaxis.range"] == pytest.approx([369 - 1.6, 401 + 1.6])
    # volume from zero to the highest volume in view (399), with 10 % room
    assert month["yaxis2.range"] == pytest.approx([0.0, 438.9])
    # a year back from 2025-02-03 is 2024-02-03: candles 34 (2024-02-04) to 399
    assert buttons["1y"]["yaxis.range"] == pytest.approx([34 - 18.35, 401 + 18.35])
    # "all" hands every axis back to autorange, as a double click does
    assert buttons["all"] == {
        "xaxis.autorange": True,
        "xaxis2.autorange": True,
        "yaxis.autorange": True,
        "yaxis2.autorange": True,
    }


def test_range_buttons_sit_where_the_mode_bar_is_not() -> None:
    # plotly's mode bar shows at the top right on hover and covered the buttons there
    figure = charts.candlestick_chart(_daily_ramp())
    menu = _menu(figure)
    assert (menu["x"], menu["xanchor"], menu["y"], menu["yanchor"]) == (0, "left", 1.0, "bottom")
    assert menu["type"] == "buttons"
    assert all(button["method"] == "relayout" for button in menu["buttons"])
    assert menu["active"] == len(menu["buttons"]) - 1  # "all" is what the chart opens on
    # the legend is not over the buttons (top left) nor under the mode bar (top right)
    legend = figure.layout.legend
    assert (legend.x, legend.xanchor) == (0.5, "center")
    # the range selector they replace only moved the time axis
    assert not figure.layout.xaxis.rangeselector.buttons
    # drag-zoom stays: box zoom over both axes
    assert figure.layout.dragmode in (None, "zoom")
    assert not figure.layout.yaxis.fixedrange


@st.composite
def _candles(draw) -> pd.DataFrame:
    """Random walks of 2 to 1500 candles at several timeframes, some with gaps."""
    n = draw(st.integers(2, 1500))
    freq = draw(st.sampled_from(["1h", "4h", "1D", "7D"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    index = pd.date_range("2021-03-01", periods=n, freq=freq, tz="UTC", name="timestamp")
    if draw(st.booleans()) and n > 10:  # drop a run of candles: a gap
        start = int(rng.integers(1, n - 5))
        index = index.delete(range(start, start + int(rng.integers(1, 5))))
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, len(index))))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, len(index)))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, len(index)))
    volume = rng.uniform(0, 1000, len(index))
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )


@settings(max_examples=60, deadline=None)
@given(_candles())
def test_every_range_button_fits_every_axis_to_the_candles_it_shows(
    candles: pd.DataFrame,
) -> None:
    times = candles.index.tz_convert("UTC").tz_localize(None)
    spacing = pd.Series(times).diff().median()
    buttons = _buttons(charts.candlestick_chart(candles))
    assert list(buttons)[-1] == "all"
    for label, ranges in buttons.items():
        if label == "all":
            continue
        start, end = (pd.Timestamp(t) for t in ranges["xaxis.range"])
        assert ranges["xaxis2.range"] == ranges["xaxis.range"]
        # the span ends half a candle after the last one
        assert end == times[-1] + spacing / 2
        shown = candles[(times >= start) & (times <= end)]
        # at least 10 candles and not all of them, else the button is pointless
        assert 10 <= len(shown) < len(candles), label
        # the first candle in view has half a candle of room before it
        assert start == times[(times >= start)][0] - spacing / 2
        # every candle in view lies inside the price range, which is no wider than the
        # candles' own range plus the pad
        low, high = ranges["yaxis.range"]
        bottom, top = shown["low"].min(), shown["high"].max()
        pad = charts.PRICE_PAD * (top - bottom)
        assert low == pytest.approx(bottom - pad)
        assert high == pytest.approx(top + pad)
        assert low < bottom
        assert top < high
        assert ranges["yaxis2.range"] == pytest.approx(
            [0.0, (1 + charts.VOLUME_PAD) * shown["volume"].max()]
        )


def test_range_buttons_with_a_flat_price_leave_room() -> None:
    # Equal lows and highs would make an empty range that plotly.js cannot draw.
    candles = _daily_ramp().assign(high=5.0, low=5.0, open=5.0, close=5.0)
    ranges = _buttons(charts.candlestick_chart(candles))["1m"]
    assert ranges["yaxis.range"] == pytest.approx([4.95, 5.05])


# --- zoom by box: the price axis fits the candles in a span of time ------------------


def test_fit_window_fits_the_candles_of_the_span() -> None:
    # The issue: zooming in time kept the whole series' price range (flat dashes). Candles
    # 369 (2025-01-04) to 399 (2025-02-03) of the ramp: lows from 369, highs up to 401.
    candles = _daily_ramp()
    fit = charts.fit_window(
        candles, pd.Timestamp("2025-01-04", tz="UTC"), pd.Timestamp("2025-02-03", tz="UTC")
    )
    # 5 % of the 32 between them either side; volume from zero to 399 with 10 % room
    assert fit.price == pytest.approx((369 - 1.6, 401 + 1.6))
    assert fit.volume == pytest.approx((0.0, 438.9))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2025-02-03", "2025-01-04"),  # dragged right to left
        ("2025-01-04 00:00", "2025-02-03 00:00"),  # naive times are UTC
        ("2025-01-03 23:00:00+00:00", "2025-02-03 12:00:00+00:00"),  # ends between candles
    ],
)
def test_fit_window_reads_the_span_either_way(start: str, end: str) -> None:
    fit = charts.fit_window(_daily_ramp(), pd.Timestamp(start), pd.Timestamp(end))
    assert fit.price == pytest.approx((369 - 1.6, 401 + 1.6))


def test_fit_window_without_candles_fits_nothing() -> None:
    # a span inside a gap, or off the series
    candles = _daily_ramp()
    fit = charts.fit_window(
        candles, pd.Timestamp("2030-01-01", tz="UTC"), pd.Timestamp("2030-02-01", tz="UTC")
    )
    assert fit == charts.Fit(None, None)


def test_fit_window_leaves_room_around_flat_prices() -> None:
    # equal lows and highs would make an empty range, which plotly.js cannot draw
    candles = _daily_ramp().assign(high=5.0, low=5.0, open=5.0, close=5.0, volume=0.0)
    fit = charts.fit_window(candles, candles.index[10], candles.index[20])
    assert fit.price == pytest.approx((4.95, 5.05))
    assert fit.volume == (0.0, 1.0)


@st.composite
def _candles_and_span(draw) -> tuple[pd.DataFrame, pd.Timestamp, pd.Timestamp]:
    """Random candles and a span of time from before the first to after the last."""
    candles = draw(_candles())
    first, last = candles.index[0], candles.index[-1]
    reach = (last - first) * 1.2 + pd.Timedelta(hours=1)
    a, b = (first - reach / 10 + reach * draw(st.floats(0, 1)) for _ in range(2))
    return candles, a, b


@settings(max_examples=100, deadline=None)
@given(_candles_and_span())
def test_fit_window_holds_every_candle_of_the_span_and_no_more_than_the_pad(
    drawn: tuple[pd.DataFrame, pd.Timestamp, pd.Timestamp],
) -> None:
    candles, a, b = drawn
    fit = charts.fit_window(candles, a, b)
    start, end = min(a, b), max(a, b)
    shown = candles[(candles.index >= start) & (candles.index <= end)]
    if shown.empty:
        assert fit == charts.Fit(None, None)
        return
    low, high = fit.price
    bottom, top = shown["low"].min(), shown["high"].max()
    # every candle of the span lies inside the price range, with room to spare ...
    assert (shown["low"] > low).all()
    assert (shown["high"] < high).all()
    # ... and the range is no wider than the candles' own plus the stated margin:
    # PRICE_PAD of their spread either side (1 % of the price for flat candles)
    margin = charts.PRICE_PAD * (top - bottom) or 0.01 * abs(top) or 1.0
    assert low >= bottom - margin * (1 + 1e-9)
    assert high <= top + margin * (1 + 1e-9)
    # the volume axis starts at zero and holds every volume, with at most VOLUME_PAD room
    assert fit.volume[0] == 0.0
    assert (shown["volume"] <= fit.volume[1]).all()
    assert fit.volume[1] <= max((1 + charts.VOLUME_PAD) * shown["volume"].max(), 1.0)


@settings(max_examples=30, deadline=None)
@given(_candles())
def test_range_buttons_fit_as_fit_window_does(candles: pd.DataFrame) -> None:
    # one fitting rule for the range buttons and for a box dragged across the chart
    for label, ranges in _buttons(charts.candlestick_chart(candles)).items():
        if label == "all":
            continue
        start, end = (pd.Timestamp(t, tz="UTC") for t in ranges["xaxis.range"])
        fit = charts.fit_window(candles, start, end)
        assert ranges["yaxis.range"] == list(fit.price)
        assert ranges["yaxis2.range"] == list(fit.volume)


def test_candlestick_chart_opens_on_a_window_with_fitted_axes() -> None:
    candles = _daily_ramp()
    start, end = pd.Timestamp("2025-01-04", tz="UTC"), pd.Timestamp("2025-02-03", tz="UTC")
    layout = charts.candlestick_chart(candles, window=(start, end)).layout
    assert list(layout.xaxis.range) == ["2025-01-04 00:00:00", "2025-02-03 00:00:00"]
    assert layout.xaxis2.range == layout.xaxis.range
    assert list(layout.yaxis.range) == pytest.approx([369 - 1.6, 401 + 1.6])
    assert list(layout.yaxis2.range) == pytest.approx([0.0, 438.9])
    # no range button shows that span, so none is lit ("all" would claim the whole series)
    assert layout.updatemenus[0].active == -1


def test_candlestick_chart_ignores_a_window_without_candles() -> None:
    candles = _daily_ramp()
    window = (pd.Timestamp("2030-01-01", tz="UTC"), pd.Timestamp("2030-02-01", tz="UTC"))
    layout = charts.candlestick_chart(candles, window=window).layout
    assert layout.xaxis.range is None
    assert layout.yaxis.range is None
    assert layout.updatemenus[0].active == len(layout.updatemenus[0].buttons) - 1


def test_select_to_zoom_makes_a_drag_select_a_span_of_time() -> None:
    layout = charts.candlestick_chart(_daily_ramp(), select_to_zoom=True).layout
    assert layout.dragmode == "select"
    assert layout.selectdirection == "h"  # the whole height: a span of time only
    # without it the chart zooms on a drag, as every other chart does
    assert charts.candlestick_chart(_daily_ramp()).layout.dragmode is None


# --- model colours --------------------------------------------------------------------


def _lab(color: str) -> np.ndarray:
    """CIE L*a*b* (D65) of a ``#rrggbb`` colour."""
    rgb = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    rgb = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
    ) @ rgb / np.array([0.95047, 1.0, 1.08883])  # fmt: skip
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _delta_e(a: str, b: str) -> float:
    """CIE76 colour difference: about 2 is just noticeable, above 20 reads as two colours."""
    return float(np.linalg.norm(_lab(a) - _lab(b)))


def test_delta_e_matches_known_values() -> None:
    assert _delta_e("#000000", "#ffffff") == pytest.approx(100, abs=0.01)
    assert _delta_e("#ff0000", "#ff0000") == 0
    # CIELAB of pure red is (53.24, 80.09, 67.20)
    assert _lab("#ff0000") == pytest.approx([53.24, 80.09, 67.20], abs=0.05)


PALETTE = {**charts.MODEL_COLORS, **{f"spare {i}": c for i, c in enumerate(charts.SPARE_COLORS)}}


@pytest.mark.parametrize(
    ("first", "second"),
    [(a, b) for i, a in enumerate(PALETTE) for b in list(PALETTE)[i + 1 :]],
)
def test_model_colours_differ_visibly(first: str, second: str) -> None:
    # naive, drift and seasonal naive were three greys 9 to 17 apart
    assert _delta_e(PALETTE[first], PALETTE[second]) > 20


@pytest.mark.parametrize(
    "background",
    [
        "#0e1117",  # Streamlit's dark page
        "#ffffff",  # and its light one
    ],
)
@pytest.mark.parametrize("name", list(PALETTE))
def test_model_colours_stand_off_the_page(name: str, background: str) -> None:
    assert _delta_e(PALETTE[name], background) > 20


def test_every_model_has_its_own_colour_in_every_chart() -> None:
    from forecasting.models import MODELS

    assert set(MODELS) <= set(charts.MODEL_COLORS)
    # unknown names get a spare colour, the same one each time (not ``hash``, which
    # changes between processes)
    assert charts.model_color("arima") in charts.SPARE_COLORS
    assert charts.model_color("arima") == charts.model_color("arima")
    assert charts.model_color("arima") == charts.SPARE_COLORS[zlib.crc32(b"arima") % 4]
    assert charts.model_color("naive") == charts.MODEL_COLORS["naive"]


def test_charts_draw_each_model_in_its_colour(figures: dict[str, go.Figure]) -> None:
    for name in ("backtest", "horizon"):
        lines = {t.name: t.line.color for t in figures[name].data if t.name in ("naive", "drift")}
        assert lines == {m: charts.MODEL_COLORS[m] for m in ("naive", "drift")}
    bars = {t.name: t.marker.color for t in figures["acf"].data}
    assert bars == {m: charts.MODEL_COLORS[m] for m in ("naive", "drift")}


# --- error by horizon: log scale --------------------------------------------------------


def _by_horizon(levels: dict[str, float], steps: int = 5) -> pd.DataFrame:
    """An error table (index ``model, step``) where each model's MAE grows from its level."""
    rows = {
        (model, step): level * (1 + 0.1 * step)
        for model, level in levels.items()
        for step in range(1, steps + 1)
    }
    frame = pd.DataFrame({"mae": rows.values()}, index=pd.MultiIndex.from_tuples(rows))
    frame.index.names = ["model", "step"]
    return frame


@pytest.mark.parametrize(
    ("levels", "scale", "title"),
    [
        # the issue: one model's error squashes the others into a line at zero
        ({"naive": 10.0, "drift": 12.0, "lstm": 4000.0}, "log",
         "mae (log scale: errors 400× apart)"),
        # close errors: linear reads best
        ({"naive": 10.0, "drift": 12.0, "lstm": 30.0}, "linear", "mae"),
        # exactly 10 times apart is not more than 10 times
        ({"naive": 1.0, "lstm": 10.0}, "linear", "mae"),
        ({"naive": 5.0}, "linear", "mae"),  # one model
    ],
)  # fmt: skip
def test_error_by_horizon_defaults_to_log_when_errors_differ_tenfold(
    levels: dict[str, float], scale: str, title: str
) -> None:
    figure = charts.horizon_error_chart(_by_horizon(levels))
    assert figure.layout.yaxis.type == scale
    assert figure.layout.yaxis.title.text == title
    menu = _menu(figure)
    assert [b["label"] for b in menu["buttons"]] == ["linear", "log"]
    assert menu["buttons"][menu["active"]]["label"] == scale
    assert menu["buttons"][0]["args"][0] == {"yaxis.type": "linear", "yaxis.title.text": "mae"}
    assert menu["buttons"][1]["args"][0]["yaxis.type"] == "log"
    assert menu["buttons"][1]["args"][0]["yaxis.title.text"].startswith("mae (log scale")
    # ticks on whole steps: there is no step 1.5
    assert (figure.layout.xaxis.tick0, figure.layout.xaxis.dtick) == (1, 1)


@pytest.mark.parametrize(
    "levels",
    [
        {"naive": 0.0, "lstm": 50.0},  # a perfect forecast: zero has no place on a log axis
        {"naive": float("nan"), "lstm": float("nan")},  # nothing to scale
    ],
)
def test_error_by_horizon_stays_linear_without_positive_errors(levels: dict[str, float]) -> None:
    figure = charts.horizon_error_chart(_by_horizon(levels))
    assert figure.layout.yaxis.type in (None, "linear")
    assert not figure.layout.updatemenus
    assert figure.layout.yaxis.title.text == "mae"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(1e-6, 1e6), min_size=1, max_size=7), st.integers(1, 10))
def test_log_scale_default_follows_the_ratio_of_model_errors(
    levels: list[float], steps: int
) -> None:
    by_horizon = _by_horizon({f"model {i}": level for i, level in enumerate(levels)}, steps)
    figure = charts.horizon_error_chart(by_horizon)
    # each model's mean error grows by the same factor, so their ratio is the levels'
    ratio = max(levels) / min(levels)
    assert charts.error_ratio(by_horizon["mae"]) == pytest.approx(ratio)
    log = figure.layout.yaxis.type == "log"
    if abs(ratio - charts.LOG_SCALE_RATIO) > 1e-6:
        assert log == (ratio > charts.LOG_SCALE_RATIO)
    assert ("log scale" in figure.layout.yaxis.title.text) == log


# --- feature chart ----------------------------------------------------------------------


def test_bollinger_percent_b_and_width_have_their_own_axes() -> None:
    candles = random_walk_candles(200, seed=5)
    features = compute_features(candles, parse_features("bollinger:20:2,macd:12:26:9")).dropna()
    figure = charts.feature_chart(candles.loc[features.index], features)
    axis = {trace.name: trace.yaxis for trace in figure.data}
    # %B is a position in the band (0 to 1 inside it), width a share of the price: one
    # axis for both squashed one of them
    assert axis["bb_pctb_20_2"] != axis["bb_width_20_2"]
    assert axis["close"] not in (axis["bb_pctb_20_2"], axis["bb_width_20_2"])
    # MACD's three lines share a unit and one axis
    assert axis["macd_12_26_9"] == axis["macd_signal_12_26_9"] == axis["macd_hist_12_26_9"]
    assert len(set(axis.values())) == 4
    titles = [
        figure.layout[f"yaxis{axis[name][1:]}"].title.text
        for name in ("bb_pctb_20_2", "bb_width_20_2")
    ]
    assert titles == ["BB %B", "BB width"]
