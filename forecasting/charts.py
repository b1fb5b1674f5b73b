"""Plotly figures. Every function returns a ``go.Figure`` and draws nothing itself."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["candlestick_chart"]

UP_COLOR = "#26a69a"
DOWN_COLOR = "#ef5350"


def candlestick_chart(
    candles: pd.DataFrame,
    *,
    title: str = "",
    filled: pd.DatetimeIndex | None = None,
    gaps: pd.DataFrame | None = None,
) -> go.Figure:
    """Candlesticks over volume bars, sharing a time axis with a range slider.

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
    figure.add_trace(
        go.Candlestick(
            x=candles.index,
            open=candles["open"],
            high=candles["high"],
            low=candles["low"],
            close=candles["close"],
            name="price",
            increasing_line_color=UP_COLOR,
            decreasing_line_color=DOWN_COLOR,
        ),
        row=1,
        col=1,
    )
    rising = candles["close"] >= candles["open"]
    figure.add_trace(
        go.Bar(
            x=candles.index,
            y=candles["volume"],
            name="volume",
            marker_color=rising.map({True: UP_COLOR, False: DOWN_COLOR}).tolist(),
            showlegend=False,
        ),
        row=2,
        col=1,
    )
    if filled is not None and len(filled):
        figure.add_trace(
            go.Scatter(
                x=filled,
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
        half = pd.Timedelta(0)
        if len(candles) >= 2:
            half = pd.Series(candles.index).diff().median() / 2
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
        title=title,
        height=560,
        margin={"l": 10, "r": 10, "t": 50 if title else 20, "b": 10},
        xaxis_rangeslider_visible=False,
        legend={"orientation": "h", "y": 1.02, "x": 0},
        hovermode="x unified",
    )
    figure.update_xaxes(rangeslider={"visible": True, "thickness": 0.06}, row=2, col=1)
    figure.update_yaxes(title_text="price", row=1, col=1)
    figure.update_yaxes(title_text="volume", row=2, col=1)
    return figure
