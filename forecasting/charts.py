"""Plotly figures. Every function returns a ``go.Figure`` and draws nothing itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "MODEL_COLORS",
    "TEMPLATE",
    "backtest_chart",
    "candlestick_chart",
    "correlation_heatmap",
    "feature_chart",
    "forecast_chart",
    "horizon_error_chart",
    "loss_chart",
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
) -> go.Figure:
    """Candlesticks over their volume, sharing a time axis with range buttons.

    Zoom and pan with the mouse or the range buttons (a day to a year, as far as the
    candles reach, and all). There is no range slider: it draws every trace a second
    time, which made a few thousand candles about three times slower to draw.

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
        # Fixed margins wide enough for price ticks ("12.5k", "0.0012") and the axis
        # titles: with automatic margins plotly draws every candle twice.
        margin={"l": 72, "r": 10, "t": 60 if title else 36, "b": 40},
        xaxis_rangeslider_visible=False,
        legend={"orientation": "h", "y": 1.02, "x": 0},
        hovermode="x unified",
    )
    figure.update_xaxes(automargin=False)
    figure.update_yaxes(automargin=False)
    figure.update_xaxes(rangeselector=_range_buttons(candles.index), row=1, col=1)
    figure.update_yaxes(title_text="price", row=1, col=1)
    figure.update_yaxes(title_text="volume", row=2, col=1)
    return figure


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


# Spans the range buttons offer, shortest first: (count, step, label).
_RANGE_SPANS = (
    (1, "day", "1d"),
    (7, "day", "1w"),
    (1, "month", "1m"),
    (3, "month", "3m"),
    (6, "month", "6m"),
    (1, "year", "1y"),
)
_SPAN_DAYS = {"day": 1, "month": 30.4, "year": 365.25}


def _range_buttons(index: pd.DatetimeIndex) -> dict:
    """Range buttons for the spans that hold at least 10 candles and less than all of them."""
    buttons: list[dict] = []
    if len(index) >= 2:
        total = (index[-1] - index[0]) / pd.Timedelta(days=1)
        spacing = _spacing(index) / pd.Timedelta(days=1)
        buttons = [
            {"count": count, "step": step, "stepmode": "backward", "label": label}
            for count, step, label in _RANGE_SPANS
            if 10 * spacing <= count * _SPAN_DAYS[step] < total
        ]
    return {
        "buttons": [*buttons, {"step": "all", "label": "all"}],
        "x": 1,
        "xanchor": "right",
        "y": 1.02,
        "yanchor": "bottom",
        "bgcolor": "rgba(128, 128, 128, 0.18)",
        "activecolor": "rgba(38, 166, 154, 0.45)",
    }


# Colours per model, stable across every chart so a model keeps its colour.
MODEL_COLORS = {
    "actual": "#e0e0e0",
    "naive": "#9e9e9e",
    "drift": "#bcaaa4",
    "seasonal_naive": "#90a4ae",
    "moving_average": "#ce93d8",
    "prophet": "#42a5f5",
    "lstm": "#ffb300",
}


def _color(name: str) -> str:
    return MODEL_COLORS.get(name, "#66bb6a")


def feature_chart(candles: pd.DataFrame, features: pd.DataFrame, *, title: str = "") -> go.Figure:
    """Close price on top, then one panel per feature group (MACD's three lines share one).

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
        key = "macd" if column.startswith("macd") else "bb" if column.startswith("bb_") else column
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
        figure.update_yaxes(title_text=key, row=row, col=1)
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
            line={"color": _color("actual"), "width": 1.5},
        )
    )
    for forecast in forecasts:
        color = _color(forecast.model)
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
            line={"color": _color("actual"), "width": 2},
        )
    )
    for model, group in rows.groupby("model", sort=False):
        group = group.sort_values("timestamp")
        color = _color(model)
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


def horizon_error_chart(
    by_horizon: pd.DataFrame, *, metric: str = "mae", title: str = ""
) -> go.Figure:
    """One line per model: ``metric`` at each horizon step (index ``model, step``)."""
    figure = go.Figure()
    for model, group in by_horizon[metric].groupby(level="model", sort=False):
        steps = group.index.get_level_values("step")
        figure.add_trace(
            go.Scatter(
                x=steps,
                y=group.to_numpy(),
                name=model,
                mode="lines+markers",
                line={"color": _color(model)},
            )
        )
    figure.update_layout(
        template=TEMPLATE,
        title=title or f"{metric.upper()} by horizon step",
        height=360,
        xaxis_title="steps ahead",
        yaxis_title=metric,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": 1.1, "x": 0},
    )
    return figure


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
                marker_color=_color(model),
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
            go.Bar(x=list(range(1, len(acf) + 1)), y=acf, name=model, marker_color=_color(model))
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
