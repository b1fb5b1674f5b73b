"""Plotly figures. Every function returns a ``go.Figure`` and draws nothing itself."""

from __future__ import annotations

import math
import zlib
from typing import NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from forecasting.errors import ConfigurationError

__all__ = [
    "BASIS_POINTS",
    "FEAR_GREED_BANDS",
    "MODEL_COLORS",
    "SPARE_COLORS",
    "TEMPLATE",
    "backtest_chart",
    "candlestick_chart",
    "correlation_heatmap",
    "Fit",
    "error_ratio",
    "feature_chart",
    "fit_window",
    "forecast_chart",
    "horizon_error_chart",
    "loss_chart",
    "model_color",
    "mood_chart",
    "residual_acf_chart",
    "residual_histogram",
]

UP_COLOR = "#26a69a"
DOWN_COLOR = "#ef5350"

_GRID = "rgba(128, 128, 128, 0.22)"
# ``automargin`` makes room for tick labels and axis titles inside the tight margins.
_AXIS = {
    "automargin": True,
    "gridcolor": _GRID,
    "zerolinecolor": "rgba(128, 128, 128, 0.4)",
    "linecolor": _GRID,
}

#: The look of every figure here: transparent backgrounds, grey text and faint grids, which
#: read on a dark or a light page alike. The app draws figures with it as they are instead
#: of with Streamlit's theme, whose colour rewriting of the whole figure in the browser
#: doubled the time to draw a few thousand candles.
TEMPLATE = go.layout.Template(
    layout={
        "paper_bgcolor": "rgba(0, 0, 0, 0)",
        "plot_bgcolor": "rgba(0, 0, 0, 0)",
        "font": {"family": '"Source Sans", "Source Sans Pro", sans-serif', "color": "#9aa0aa"},
        "colorway": ["#42a5f5", "#ffb300", "#66bb6a", "#ef5350", "#ab47bc", "#26c6da",
                     "#ff7043", "#8d6e63", "#d4e157", "#78909c"],
        "xaxis": _AXIS,
        "yaxis": _AXIS,
        "legend": {"bgcolor": "rgba(0, 0, 0, 0)"},
        "hoverlabel": {"font": {"family": '"Source Sans", "Source Sans Pro", sans-serif'}},
    }
)  # fmt: skip


def candlestick_chart(
    candles: pd.DataFrame,
    *,
    title: str = "",
    filled: pd.DatetimeIndex | None = None,
    gaps: pd.DataFrame | None = None,
    window: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    select_to_zoom: bool = False,
) -> go.Figure:
    """Candlesticks over their volume, sharing a time axis with range buttons.

    Zoom and pan with the mouse or the range buttons at the top left (a day to a year,
    as far as the candles reach, and all); a button also fits the price and volume axes
    to the candles it shows, and a double click returns to all. There is no range
    slider: it draws every trace a second time, which made a few thousand candles about
    three times slower to draw.

    Plotly cannot fit the price axis to the candles a drag-zoom leaves in view (plotly.js
    issue #1876). With ``select_to_zoom`` a drag across the chart selects a span of time
    instead (plotly's zoom tool stays in the mode bar), for the app to draw the figure
    again with that span as ``window``.

    Parameters
    ----------
    candles
        An OHLCV frame.
    title
        Figure title.
    filled
        Open times of candles that were inserted to fill gaps: drawn as markers so
        they are never mistaken for traded candles.
    gaps
        Missing-candle runs (``start``, ``end``) from the quality report, shaded.
    window
        A span of time (``start``, ``end``) to open on instead of the whole series, with
        the price and volume axes fitted to the candles in it (:func:`fit_window`). A
        span holding no candle is ignored: the chart opens on the whole series.
    select_to_zoom
        Dragging across the chart selects a span of time (plotly's box select, across
        the whole height) instead of zooming.
    """
    figure = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.03, row_heights=[0.75, 0.25]
    )
    times = _times(candles.index)
    figure.add_trace(
        go.Candlestick(
            x=times,
            open=candles["open"],
            high=candles["high"],
            low=candles["low"],
            close=candles["close"],
            hovertext="volume: " + candles["volume"].map("{:,.6g}".format),
            name="price",
            increasing_line_color=UP_COLOR,
            decreasing_line_color=DOWN_COLOR,
        ),
        row=1,
        col=1,
    )
    # Volume as two stepped areas instead of a bar per candle: a few thousand bars are
    # thinner than a pixel yet are each a shape to draw, which took about 40% of the
    # chart's drawing time. The steps change halfway between candles (``hvh``), so each
    # candle's volume sits under it: all volume in the falling colour, the volume of
    # rising candles in the rising colour over it. The volume is read in the candles'
    # hover, as the areas are zero over gaps, where there is no volume to show.
    rising = candles["close"] >= candles["open"]
    x, (volume, rising_volume) = _zero_over_gaps(
        times,
        candles.index,
        candles["volume"].to_numpy(float),
        candles["volume"].where(rising, 0.0).to_numpy(float),
    )
    for name, y, color in (("volume", volume, DOWN_COLOR), ("volume up", rising_volume, UP_COLOR)):
        figure.add_trace(
            go.Scatter(
                x=x,
                y=y,
                name=name,
                mode="lines",
                line={"shape": "hvh", "width": 0},
                fill="tozeroy",
                fillcolor=color,
                hoverinfo="skip",
                showlegend=False,
            ),
            row=2,
            col=1,
        )
    if filled is not None and len(filled):
        figure.add_trace(
            go.Scatter(
                x=_times(filled),
                y=candles.loc[filled, "close"],
                mode="markers",
                name="filled (not traded)",
                marker={"symbol": "x", "size": 7, "color": "#ff9800"},
            ),
            row=1,
            col=1,
        )
    if gaps is not None and len(gaps):
        # ``start`` and ``end`` are the first and last missing open times, so a one-candle
        # gap has start == end and would shade nothing: widen each run by half a candle
        # on both sides so it covers the slots of the missing candles.
        half = _spacing(candles.index) / 2
        # One layout update with every shape: add_vrect per gap re-validates the whole
        # figure each time, which takes about a minute for a few hundred gaps.
        shade = {
            "type": "rect",
            "xref": "x",
            "yref": "paper",
            "y0": 0,
            "y1": 1,
            "fillcolor": "#ff9800",
            "opacity": 0.15,
            "line": {"width": 0},
            "layer": "below",
        }
        figure.update_layout(
            shapes=[{**shade, "x0": g.start - half, "x1": g.end + half} for g in gaps.itertuples()]
        )
    figure.update_layout(
        template=TEMPLATE,
        title=title,
        height=560,
        # Fixed margins wide enough for price ticks ("12.5k", "0.0012"), the axis titles
        # and the range buttons above the plot: with automatic margins plotly draws every
        # candle twice.
        margin={"l": 72, "r": 10, "t": 76 if title else 44, "b": 40},
        xaxis_rangeslider_visible=False,
        # The range buttons take the top left and plotly's mode bar the top right (over
        # anything there while the pointer is on the chart): the legend goes between them.
        legend={"orientation": "h", "x": 0.5, "xanchor": "center", "y": 1.0, "yanchor": "bottom"},
        updatemenus=[_range_buttons(candles)],
        hovermode="x unified",
    )
    figure.update_xaxes(automargin=False)
    figure.update_yaxes(automargin=False)
    figure.update_yaxes(title_text="price", row=1, col=1)
    figure.update_yaxes(title_text="volume", row=2, col=1)
    if select_to_zoom:
        # "h": the box spans the whole height, so a drag picks a span of time only.
        figure.update_layout(
            dragmode="select",
            selectdirection="h",
            newselection={"line": {"color": "#9aa0aa", "dash": "dot", "width": 1}},
        )
    if window is not None:
        _open_on(figure, candles, window)
    return figure


def _open_on(
    figure: go.Figure, candles: pd.DataFrame, window: tuple[pd.Timestamp, pd.Timestamp]
) -> None:
    """Set ``figure``'s axes to show ``window`` with the price and volume axes fitted to
    its candles, unless it holds none."""
    start, end = sorted(_naive_utc(pd.DatetimeIndex(window)))
    fit = fit_window(candles, start, end)
    if fit.price is None:
        return
    x = [_plotly_time(start), _plotly_time(end)]
    figure.update_layout(
        xaxis_range=x,
        xaxis2_range=x,
        yaxis_range=list(fit.price),
        yaxis2_range=list(fit.volume),
    )
    # no range button shows this span: none is lit (plotly.js reads -1 as none)
    figure.layout.updatemenus[0].active = -1


class Fit(NamedTuple):
    """The axis ranges that fit a span of candles (see :func:`fit_window`)."""

    price: tuple[float, float] | None
    """Lowest low to highest high with room either side; ``None`` when no candle (or no
    price) is in the span."""
    volume: tuple[float, float] | None
    """Zero to the highest volume with room above; ``None`` when no candle is in it."""


def fit_window(candles: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> Fit:
    """The price and volume axis ranges that fit the candles opening from ``start`` to
    ``end`` (both included), so that a span of time shows its candles at full height.

    The price range runs from the lowest low to the highest high of those candles, with
    :data:`PRICE_PAD` of that spread added below and above; when the spread is zero (flat
    candles) the room is 1 % of the price instead (1.0 at a price of zero), as plotly.js
    cannot draw an empty range. The volume range runs from zero to the highest volume
    with :data:`VOLUME_PAD` of it above (to 1.0 when every volume is zero).

    Parameters
    ----------
    candles
        An OHLCV frame.
    start, end
        The span; naive times are read as UTC, and the order of the two does not matter.
    """
    times = _naive_utc(candles.index)
    start, end = sorted(_naive_utc(pd.DatetimeIndex([start, end])))
    inside = candles[(times >= start) & (times <= end)]
    if inside.empty:
        return Fit(None, None)
    low, high = float(inside["low"].min()), float(inside["high"].max())
    price = None
    if np.isfinite(low) and np.isfinite(high):
        pad = PRICE_PAD * (high - low) or 0.01 * abs(high) or 1.0
        price = (low - pad, high + pad)
    volume = float(inside["volume"].max())
    top = (1 + VOLUME_PAD) * volume if np.isfinite(volume) and volume > 0 else 1.0
    return Fit(price, (0.0, top))


def _naive_utc(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """``index`` in UTC without a time zone (naive times are taken as UTC already)."""
    return index.tz_convert("UTC").tz_localize(None) if index.tz is not None else index


def _times(index: pd.DatetimeIndex) -> np.ndarray:
    """Times as ISO strings in UTC, the way plotly.js reads them.

    Timestamps would be stored as objects, and Streamlit deep-copies and encodes a figure
    object by object before sending it: about 0.1 s on the server for a few thousand
    candles, against next to nothing for strings.
    """
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return np.datetime_as_string(index.to_numpy(), unit="s")


def _zero_over_gaps(
    times: np.ndarray, index: pd.DatetimeIndex, *columns: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``times`` and each of ``columns`` with zeros in the first and last slot of every gap
    in ``index``, so that a stepped area falls to zero over missing candles. (Plotly fills
    an area across a missing value, so a gap cannot be left out instead.)"""
    spacing = _spacing(index)
    if len(index) < 2 or spacing <= pd.Timedelta(0):
        return times, list(columns)
    after = np.flatnonzero(np.asarray(index[1:] - index[:-1]) > 1.5 * spacing.to_timedelta64())
    if not len(after):
        return times, list(columns)
    first, last = _times(index[after] + spacing), _times(index[after + 1] - spacing)
    at = np.repeat(after + 1, 2)
    return (
        np.insert(times, at, np.column_stack([first, last]).ravel()),
        [np.insert(values, at, 0.0) for values in columns],
    )


def _spacing(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The median time between candles (zero for fewer than two)."""
    return pd.Series(index).diff().median() if len(index) >= 2 else pd.Timedelta(0)


# A row of buttons (``updatemenus``) over the top left of the plot: plotly's mode bar takes
# the top right while the pointer is on the chart, covering whatever is there. plotly.js
# paints the active and the hovered button near-white whatever the theme, so the buttons
# are light grey with dark text, which reads on a dark page and on a light one.
_BUTTONS = {
    "type": "buttons",
    "direction": "right",
    "showactive": True,
    "x": 0,
    "xanchor": "left",
    "y": 1.0,
    "yanchor": "bottom",
    "pad": {"b": 4},
    "bgcolor": "#c4c9d1",
    "bordercolor": "rgba(128, 128, 128, 0.6)",
    "font": {"color": "#1f2329", "size": 12},
}

# Spans the range buttons offer, shortest first: (label, calendar span).
_RANGE_SPANS = (
    ("1d", pd.DateOffset(days=1)),
    ("1w", pd.DateOffset(days=7)),
    ("1m", pd.DateOffset(months=1)),
    ("3m", pd.DateOffset(months=3)),
    ("6m", pd.DateOffset(months=6)),
    ("1y", pd.DateOffset(years=1)),
)
#: Room left above and below the visible candles, as a share of their price range.
PRICE_PAD = 0.05
#: Room left above the highest visible volume, as a share of it.
VOLUME_PAD = 0.1


def _range_buttons(candles: pd.DataFrame) -> dict:
    """Buttons that show the last day to year of candles (the spans that hold at least 10
    candles and not all of them) and all of them, at the top left of the plot.

    Each button sets the time axis and also the price and volume axes to the candles in
    view: plotly.js cannot rescale an axis to the data visible along another (its issue
    #1876), and a year of prices on the price axis draws a month of candles as dashes.
    Plotly's own range selector only moves the time axis, so these are ``updatemenus``
    buttons whose ranges are computed here. "all" returns every axis to autorange, as a
    double click does.
    """
    index = candles.index
    buttons: list[dict] = []
    if len(index) >= 2:
        if index.tz is not None:
            index = index.tz_convert("UTC").tz_localize(None)
        spacing = _spacing(candles.index)
        last = index[-1]
        for label, span in _RANGE_SPANS:
            inside = index > last - span
            count = int(inside.sum())
            if 10 <= count < len(index):
                buttons.append(
                    {
                        "label": label,
                        "method": "relayout",
                        "args": [_visible_ranges(candles[inside], index[inside], spacing)],
                    }
                )
    buttons.append(
        {
            "label": "all",
            "method": "relayout",
            "args": [
                {f"{axis}.autorange": True for axis in ("xaxis", "xaxis2", "yaxis", "yaxis2")}
            ],
        }
    )
    return {
        "buttons": buttons,
        "active": len(buttons) - 1,
        **_BUTTONS,
    }


def _visible_ranges(
    candles: pd.DataFrame, times: pd.DatetimeIndex, spacing: pd.Timedelta
) -> dict[str, list | bool]:
    """``relayout`` arguments that show ``candles`` (open times ``times``, naive UTC): the
    time axis from the first to the last candle (half a candle's room on either side),
    the price axis from their lowest low to their highest high, and the volume axis from
    zero to their highest volume, each with a little room."""
    half = spacing / 2
    x = [_plotly_time(times[0] - half), _plotly_time(times[-1] + half)]
    ranges: dict[str, list | bool] = {"xaxis.range": x, "xaxis2.range": x}
    fit = fit_window(candles, times[0], times[-1])
    if fit.price is not None:
        ranges["yaxis.range"] = list(fit.price)
    else:  # no prices in view: leave the axis to plotly
        ranges["yaxis.autorange"] = True
    ranges["yaxis2.range"] = list(fit.volume or (0.0, 1.0))
    return ranges


def _plotly_time(stamp: pd.Timestamp) -> str:
    """A time as plotly.js reads a date axis range."""
    return stamp.strftime("%Y-%m-%d %H:%M:%S")


#: Colours per model, the same in every chart on every page so a model keeps its colour.
#: Distinct hues: every pair differs by a CIE76 colour difference above 20 (about the
#: difference between two named colours), and each stands off a dark page and a light one.
MODEL_COLORS = {
    "actual": "#bdbdbd",
    "naive": "#f06292",
    "drift": "#66bb6a",
    "seasonal_naive": "#26c6da",
    "moving_average": "#ba68c8",
    "prophet": "#42a5f5",
    "lstm": "#ffb300",
    "gru": "#ffcc80",
    "conv_lstm": "#00897b",
    "lstm_attention": "#b39ddb",
}
#: Colours for models without their own, picked by name so each keeps one everywhere;
#: distinct from the ones above and from each other.
SPARE_COLORS = ("#ff7043", "#8d6e63", "#d4e157", "#5c6bc0")


def model_color(name: str) -> str:
    """The colour ``name`` is drawn in: its own, else a spare one chosen by the name (a
    checksum, the same in every process, unlike ``hash``)."""
    if name in MODEL_COLORS:
        return MODEL_COLORS[name]
    return SPARE_COLORS[zlib.crc32(name.encode()) % len(SPARE_COLORS)]


# Short axis titles for a panel 140 px high; the legend names the full column.
_FEATURE_TITLES = {"bb_pctb": "BB %B", "bb_width": "BB width"}


def _feature_title(column: str) -> str:
    """An axis title for a feature column: ``bb_pctb_20_2`` reads "BB %B"."""
    for prefix, words in _FEATURE_TITLES.items():
        if column == prefix or column.startswith(prefix + "_"):
            return words
    return column


def feature_chart(candles: pd.DataFrame, features: pd.DataFrame, *, title: str = "") -> go.Figure:
    """Close price on top, then one panel per feature group: MACD's three lines share one,
    as they share a unit; Bollinger %B (a position in the band) and width (a share of the
    price) each get their own axis.

    Parameters
    ----------
    candles
        The OHLCV frame.
    features
        Feature columns as :func:`forecasting.features.compute_features` names them.
    title
        Figure title.
    """
    groups: dict[str, list[str]] = {}
    for column in features.columns:
        key = "macd" if column.startswith("macd") else column
        groups.setdefault(key, []).append(column)
    rows = 1 + len(groups)
    figure = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.02,
        row_heights=[3.0] + [1.0] * len(groups),
    )
    figure.add_trace(
        go.Scatter(x=_times(candles.index), y=candles["close"], name="close", line={"width": 1.2}),
        row=1,
        col=1,
    )
    times = _times(features.index)
    for row, (key, columns) in enumerate(groups.items(), start=2):
        for column in columns:
            kind = "bar" if column.startswith("macd_hist") else "line"
            trace = (
                go.Bar(x=times, y=features[column], name=column)
                if kind == "bar"
                else go.Scatter(x=times, y=features[column], name=column, mode="lines",
                                line={"width": 1})
            )  # fmt: skip
            figure.add_trace(trace, row=row, col=1)
        figure.update_yaxes(title_text=_feature_title(key), row=row, col=1)
    figure.update_layout(
        template=TEMPLATE,
        title=title,
        height=300 + 140 * len(groups),
        margin={"l": 10, "r": 10, "t": 50 if title else 20, "b": 10},
        legend={"orientation": "h", "y": 1.02, "x": 0},
        hovermode="x unified",
    )
    return figure


def correlation_heatmap(frame: pd.DataFrame, *, title: str = "") -> go.Figure:
    """Pearson correlations between the columns of ``frame``, annotated."""
    corr = frame.corr()
    figure = go.Figure(
        go.Heatmap(
            z=corr.to_numpy(),
            x=list(corr.columns),
            y=list(corr.index),
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            reversescale=True,
            text=corr.round(2).to_numpy(),
            texttemplate="%{text}",
        )
    )
    figure.update_layout(
        template=TEMPLATE,
        title=title,
        height=120 + 34 * len(corr),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return figure


#: The Crypto Fear & Greed Index's bands as alternative.me names them: (lowest value,
#: value after the highest, name). Fear is shaded in the falling colour, greed in the
#: rising one, neutral not at all.
FEAR_GREED_BANDS = (
    (0, 25, "Extreme Fear"),
    (25, 47, "Fear"),
    (47, 55, "Neutral"),
    (55, 76, "Greed"),
    (76, 100, "Extreme Greed"),
)
_BAND_FILL = {
    "Extreme Fear": (DOWN_COLOR, 0.16),
    "Fear": (DOWN_COLOR, 0.07),
    "Greed": (UP_COLOR, 0.07),
    "Extreme Greed": (UP_COLOR, 0.16),
}
_MOOD_COLORS = {"fear_greed": "#ffb300", "funding_rate": "#42a5f5"}
BASIS_POINTS = 10_000


def mood_chart(candles: pd.DataFrame, *, title: str = "") -> go.Figure:
    """The market mood joined to the candles, one panel per column, on the candles' times.

    ``fear_greed`` (0-100) is drawn over alternative.me's bands
    (:data:`FEAR_GREED_BANDS`: extreme fear below 25, extreme greed from 76);
    ``funding_rate`` (a fraction per funding period) in basis points per period
    (x 10,000), with a zero line. Both as steps: each candle holds the value it saw at
    its close, NaN (a gap) where nothing was published yet.

    Parameters
    ----------
    candles
        Candles with a ``fear_greed`` and/or a ``funding_rate`` column, as
        :func:`forecasting.data.mood.attach_mood` joins them.
    title
        Figure title.

    Raises
    ------
    ConfigurationError
        When ``candles`` has neither column.
    """
    columns = [c for c in ("fear_greed", "funding_rate") if c in candles.columns]
    if not columns:
        raise ConfigurationError(
            "No market mood column to draw: join fear_greed or funding_rate to the candles "
            "first (forecasting.data.mood.attach_mood)."
        )
    figure = make_subplots(rows=len(columns), cols=1, shared_xaxes=True, vertical_spacing=0.06)
    times = _times(candles.index)
    for row, column in enumerate(columns, start=1):
        values = candles[column].to_numpy(dtype="float64")
        if column == "fear_greed":
            for low, high, name in FEAR_GREED_BANDS:
                if name in _BAND_FILL:
                    color, opacity = _BAND_FILL[name]
                    figure.add_hrect(
                        y0=low, y1=high, fillcolor=color, opacity=opacity, line_width=0,
                        layer="below", row=row, col=1,
                        exclude_empty_subplots=False,  # drawn before the line
                    )  # fmt: skip
            words = np.array([_band_name(v) for v in values], dtype=object)
            figure.add_trace(
                go.Scatter(
                    x=times, y=values, name="Fear & Greed", mode="lines", line_shape="hv",
                    line={"width": 1.4, "color": _MOOD_COLORS[column]}, customdata=words,
                    hovertemplate="%{y:.0f} (%{customdata})<extra>Fear & Greed</extra>",
                ),
                row=row, col=1,
            )  # fmt: skip
            figure.update_yaxes(
                title_text="Fear & Greed", range=[0, 100], tickvals=[0, 25, 47, 55, 76, 100],
                row=row, col=1,
            )  # fmt: skip
        else:
            figure.add_trace(
                go.Scatter(
                    x=times, y=values * BASIS_POINTS, name="funding rate (bp)", mode="lines",
                    line_shape="hv", line={"width": 1.2, "color": _MOOD_COLORS[column]},
                    hovertemplate="%{y:.2f} bp per period<extra>funding rate</extra>",
                ),
                row=row, col=1,
            )  # fmt: skip
            figure.add_hline(y=0, line_width=1, line_color=_GRID, row=row, col=1)
            figure.update_yaxes(title_text="funding (bp)", row=row, col=1)
    figure.update_layout(
        template=TEMPLATE,
        title=title,
        height=90 + 200 * len(columns),
        margin={"l": 10, "r": 10, "t": 50 if title else 20, "b": 10},
        legend={"orientation": "h", "y": 1.02, "x": 0},
        hovermode="x unified",
    )
    return figure


def _band_name(value: float) -> str:
    """alternative.me's name of a Fear & Greed value's band ("" for NaN)."""
    if np.isnan(value):
        return ""
    for _, high, name in FEAR_GREED_BANDS:
        if value < high:
            return name
    return FEAR_GREED_BANDS[-1][2]


def forecast_chart(
    candles: pd.DataFrame, forecasts: list, *, last: int = 120, title: str = ""
) -> go.Figure:
    """The last ``last`` closes and every model's forecast, with its interval shaded.

    Parameters
    ----------
    candles
        The OHLCV frame the forecasts start after.
    forecasts
        :class:`forecasting.models.Forecast` objects, one per model.
    last
        How many recent candles to show for context.
    title
        Figure title.
    """
    recent = candles.iloc[-last:]
    figure = go.Figure(
        go.Scatter(
            x=recent.index,
            y=recent["close"],
            name="actual",
            mode="lines",
            line={"color": model_color("actual"), "width": 1.5},
        )
    )
    for forecast in forecasts:
        color = model_color(forecast.model)
        x = [recent.index[-1], *forecast.timestamps]
        y = [float(recent["close"].iloc[-1]), *forecast.mean]
        # An unbounded interval (too little calibration data) has no band to draw.
        bounded = (
            forecast.lower is not None
            and np.isfinite(forecast.lower).all()
            and np.isfinite(forecast.upper).all()
        )
        if bounded:
            figure.add_trace(
                go.Scatter(
                    x=[*forecast.timestamps, *forecast.timestamps[::-1]],
                    y=[*forecast.upper, *forecast.lower[::-1]],
                    fill="toself",
                    fillcolor=color,
                    opacity=0.15,
                    line={"width": 0},
                    name=f"{forecast.model} {int(round((forecast.level or 0) * 100))}% interval",
                    legendgroup=forecast.model,
                    showlegend=False,
                    hoverinfo="skip",
                )
            )
        figure.add_trace(
            go.Scatter(
                x=x,
                y=y,
                name=forecast.model,
                mode="lines+markers",
                legendgroup=forecast.model,
                line={"color": color, "width": 2},
                marker={"size": 4},
            )
        )
    figure.update_layout(
        template=TEMPLATE,
        title=title,
        height=480,
        margin={"l": 10, "r": 10, "t": 50 if title else 20, "b": 10},
        legend={"orientation": "h", "y": 1.02, "x": 0},
        hovermode="x unified",
        yaxis_title="close",
    )
    return figure


def loss_chart(loss_history: dict[str, list[float]], *, title: str = "Training loss") -> go.Figure:
    """Training and validation loss per epoch."""
    figure = go.Figure()
    for name, values in loss_history.items():
        figure.add_trace(
            go.Scatter(x=list(range(1, len(values) + 1)), y=values, name=name, mode="lines+markers")
        )
    figure.update_layout(
        template=TEMPLATE,
        title=title,
        height=300,
        xaxis_title="epoch",
        yaxis_title="MSE (scaled)",
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": 1.1, "x": 0},
    )
    return figure


def backtest_chart(forecasts: pd.DataFrame, *, step: int = 1, title: str = "") -> go.Figure:
    """Actual closes over the test folds and every model's ``step``-ahead forecasts.

    Parameters
    ----------
    forecasts
        A backtest's forecast rows (``timestamp, step, model, y, yhat, lower, upper,
        fold, cutoff``).
    step
        Which horizon step to draw (1 = one candle ahead).
    title
        Figure title.
    """
    rows = forecasts[forecasts["step"] == step]
    actual = rows.drop_duplicates("timestamp").sort_values("timestamp")
    figure = go.Figure(
        go.Scatter(
            x=actual["timestamp"],
            y=actual["y"],
            name="actual",
            mode="lines",
            line={"color": model_color("actual"), "width": 2},
        )
    )
    for model, group in rows.groupby("model", sort=False):
        group = group.sort_values("timestamp")
        color = model_color(model)
        bounds = group[["lower", "upper"]].to_numpy(dtype="float64")
        if np.isfinite(bounds).all():
            figure.add_trace(
                go.Scatter(
                    x=[*group["timestamp"], *group["timestamp"][::-1]],
                    y=[*group["upper"], *group["lower"][::-1]],
                    fill="toself",
                    fillcolor=color,
                    opacity=0.12,
                    line={"width": 0},
                    legendgroup=model,
                    showlegend=False,
                    hoverinfo="skip",
                    name=f"{model} interval",
                )
            )
        figure.add_trace(
            go.Scatter(
                x=group["timestamp"],
                y=group["yhat"],
                name=model,
                legendgroup=model,
                mode="lines",
                line={"color": color, "width": 1.3},
            )
        )
    for cutoff in forecasts["cutoff"].drop_duplicates():
        figure.add_vline(x=cutoff, line={"dash": "dot", "width": 1, "color": "#888"})
    figure.update_layout(
        template=TEMPLATE,
        title=title or f"Actual and {step}-step-ahead forecasts over the test folds",
        height=480,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": 1.02, "x": 0},
        hovermode="x unified",
        yaxis_title="close",
    )
    return figure


#: Error levels further apart than this (largest model over smallest) default the error
#: by horizon chart to a log scale.
LOG_SCALE_RATIO = 10.0


def horizon_error_chart(
    by_horizon: pd.DataFrame, *, metric: str = "mae", title: str = ""
) -> go.Figure:
    """One line per model: ``metric`` at each horizon step (index ``model, step``).

    Buttons on the chart switch the error axis between a linear and a log scale. The log
    scale is the default when the models' errors (each model's mean over the steps)
    differ by more than :data:`LOG_SCALE_RATIO` times, as then a linear axis squashes
    every model but the worst into a flat line at zero; the axis title says so. Errors
    at or below zero have no place on a log axis: then the axis stays linear.
    """
    figure = go.Figure()
    for model, group in by_horizon[metric].groupby(level="model", sort=False):
        steps = group.index.get_level_values("step")
        figure.add_trace(
            go.Scatter(
                x=steps,
                y=group.to_numpy(),
                name=model,
                mode="lines+markers",
                line={"color": model_color(model)},
            )
        )
    steps = by_horizon.index.get_level_values("step")
    ratio = error_ratio(by_horizon[metric])
    layout: dict = {"yaxis_title": metric}
    if ratio is not None:
        log_title = f"{metric} (log scale)"
        if ratio > LOG_SCALE_RATIO:
            log_title = f"{metric} (log scale: errors {ratio:,.0f}× apart)"
        scales = [("linear", metric), ("log", log_title)]
        default = 1 if ratio > LOG_SCALE_RATIO else 0
        layout = {
            "yaxis_type": scales[default][0],
            "yaxis_title": scales[default][1],
            "updatemenus": [
                {
                    "buttons": [
                        {
                            "label": scale,
                            "method": "relayout",
                            "args": [{"yaxis.type": scale, "yaxis.title.text": axis_title}],
                        }
                        for scale, axis_title in scales
                    ],
                    "active": default,
                    **_BUTTONS,
                }
            ],
        }
    figure.update_layout(
        template=TEMPLATE,
        title=title or f"{metric.upper()} by horizon step",
        height=380,
        xaxis_title="steps ahead",
        # whole steps only (plotly.js would mark 1.5 steps ahead), at most about 12 ticks
        xaxis_tick0=1,
        xaxis_dtick=max(1, math.ceil(steps.max() / 12)) if len(steps) else 1,
        margin={"l": 10, "r": 10, "t": 80, "b": 10},
        # under the plot: the scale buttons take the top left, the mode bar the top right
        legend={"orientation": "h", "x": 0, "y": -0.18, "yanchor": "top"},
        **layout,
    )
    return figure


def error_ratio(errors: pd.Series) -> float | None:
    """How many times the largest model's error exceeds the smallest one's (each model's
    mean over the steps of ``errors``, index ``model, step``); ``None`` when some error
    is zero or negative, or none is finite, as a log axis cannot show them."""
    values = errors.to_numpy(dtype="float64")
    finite = values[np.isfinite(values)]
    if not len(finite) or (finite <= 0).any():
        return None
    levels = errors[np.isfinite(values)].groupby(level="model", sort=False).mean()
    return float(levels.max() / levels.min())


def residual_histogram(forecasts: pd.DataFrame, *, step: int = 1, title: str = "") -> go.Figure:
    """Overlaid histograms of ``y - yhat`` per model at one horizon step."""
    rows = forecasts[forecasts["step"] == step]
    figure = go.Figure()
    for model, group in rows.groupby("model", sort=False):
        figure.add_trace(
            go.Histogram(
                x=group["y"] - group["yhat"],
                name=model,
                opacity=0.55,
                marker_color=model_color(model),
                nbinsx=40,
            )
        )
    figure.update_layout(
        template=TEMPLATE,
        barmode="overlay",
        title=title or f"Residuals (actual − forecast), {step} step ahead",
        height=360,
        xaxis_title="residual",
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": 1.1, "x": 0},
    )
    return figure


def residual_acf_chart(
    forecasts: pd.DataFrame, *, step: int = 1, lags: int = 20, title: str = ""
) -> go.Figure:
    """Autocorrelation of each model's residuals at one step, with ±1.96/√n bands.

    Residual autocorrelation outside the band means the model leaves predictable
    structure unused.
    """
    rows = forecasts[forecasts["step"] == step]
    figure = go.Figure()
    n = 0
    for model, group in rows.groupby("model", sort=False):
        residual = group.sort_values("timestamp")["y"] - group.sort_values("timestamp")["yhat"]
        values = residual.to_numpy(dtype="float64")
        values = values - values.mean()
        n = max(n, len(values))
        denominator = float(np.dot(values, values)) or 1.0
        acf = [float(np.dot(values[k:], values[: len(values) - k]) / denominator)
               for k in range(1, min(lags, len(values) - 1) + 1)]  # fmt: skip
        figure.add_trace(
            go.Bar(
                x=list(range(1, len(acf) + 1)), y=acf, name=model, marker_color=model_color(model)
            )
        )
    if n:
        band = 1.96 / np.sqrt(n)
        for y in (band, -band):
            figure.add_hline(y=y, line={"dash": "dash", "width": 1, "color": "#888"})
    figure.update_layout(
        template=TEMPLATE,
        barmode="group",
        title=title or f"Residual autocorrelation, {step} step ahead",
        height=360,
        xaxis_title="lag",
        yaxis_title="autocorrelation",
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": 1.1, "x": 0},
    )
    return figure
