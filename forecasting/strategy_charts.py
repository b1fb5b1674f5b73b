"""Plotly figures of a strategy backtest (:mod:`forecasting.strategy`).

Every function returns a ``go.Figure`` and draws nothing itself. Each model's strategy is
drawn in the model's colour (:func:`forecasting.charts.model_color`); buy-and-hold, the
market itself, in the colour of the actual price, dashed.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from forecasting.charts import DOWN_COLOR, TEMPLATE, UP_COLOR, model_color
from forecasting.strategy import BUY_AND_HOLD, StrategyResult

__all__ = [
    "LONG_FILL",
    "SHORT_FILL",
    "equity_chart",
    "positions_chart",
    "strategy_color",
]

#: Shading of the candles held long, and short (the up and down colours of the candles).
LONG_FILL = "rgba(38, 166, 154, 0.18)"
SHORT_FILL = "rgba(239, 83, 80, 0.18)"


def strategy_color(name: str) -> str:
    """The colour of a strategy: its model's, or the actual price's for buy-and-hold."""
    return model_color("actual") if name == BUY_AND_HOLD else model_color(name)


def _line(name: str) -> dict:
    style = {"color": strategy_color(name), "width": 1.8}
    if name == BUY_AND_HOLD:
        style["dash"] = "dash"
    return style


def equity_chart(result: StrategyResult, *, log_scale: bool = False, title: str = "") -> go.Figure:
    """Equity of every strategy (1 at the first origin) above its drawdown.

    Parameters
    ----------
    result
        The backtest; one line per strategy (:meth:`StrategyResult.equity_curves`), in the
        order of its metrics table, buy-and-hold last.
    log_scale
        Draw the equity on a log axis (equal distances are equal percentage moves).
    title
        Figure title.

    The lower panel is :meth:`StrategyResult.drawdown_curves`, drawn downwards as a
    negative percentage (``-0.25`` is 25 % below the running peak).
    """
    equity = result.equity_curves()
    drawdown = result.drawdown_curves()
    figure = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.04
    )
    for name in equity.columns:
        figure.add_trace(
            go.Scatter(
                x=equity.index,
                y=equity[name].to_numpy(),
                name=name,
                legendgroup=name,
                mode="lines",
                line=_line(name),
            ),
            row=1,
            col=1,
        )
        figure.add_trace(
            go.Scatter(
                x=drawdown.index,
                y=-drawdown[name].to_numpy(),
                name=name,
                legendgroup=name,
                showlegend=False,
                mode="lines",
                line=_line(name),
                hovertemplate="%{y:.1%}",
            ),
            row=2,
            col=1,
        )
    figure.update_layout(
        template=TEMPLATE,
        title=title,
        height=560,
        margin={"l": 10, "r": 10, "t": 50 if title else 20, "b": 10},
        legend={"orientation": "h", "y": 1.02, "x": 0, "yanchor": "bottom"},
        hovermode="x unified",
    )
    figure.update_yaxes(
        title_text="equity (log scale)" if log_scale else "equity",
        type="log" if log_scale else "linear",
        row=1,
        col=1,
    )
    figure.update_yaxes(title_text="drawdown", tickformat=".0%", row=2, col=1)
    return figure


def positions_chart(
    candles: pd.DataFrame, result: StrategyResult, model: str, *, title: str = ""
) -> go.Figure:
    """The close over the backtest, shaded where ``model``'s strategy is long or short.

    Parameters
    ----------
    candles
        The candles the backtest ran on; the chart shows the candles scored (from the
        first origin to the last forecast target).
    result
        The backtest.
    model
        The strategy shown (a name in ``result.strategies``).
    title
        Figure title.

    A candle is shaded when a position is held over it (its return is earned by the
    position): green long, red short, none flat; the shading's height is the share of
    equity held. A marker on the close of the signal's origin shows each change: an
    upward triangle for a move up (into long, or out of short), a downward one for a
    move down.
    """
    rows = result.positions[result.positions["model"] == model]
    if rows.empty:
        raise ValueError(f"No strategy named {model} in the result.")
    start = result.start if result.start is not None else rows["timestamp"].iloc[0]
    shown = candles.loc[start : rows["timestamp"].iloc[-1]]
    held = pd.Series(rows["position"].to_numpy(), index=pd.DatetimeIndex(rows["timestamp"]))
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    # One filled step per side on a hidden 0..1 axis: any number of runs in two traces.
    for name, fill, values in (
        ("long", LONG_FILL, held.clip(lower=0)),
        ("short", SHORT_FILL, (-held).clip(lower=0)),
    ):
        if not (values > 0).any():
            continue
        figure.add_trace(
            go.Scatter(
                x=values.index,
                y=values.to_numpy(),
                name=name,
                mode="lines",
                line={"width": 0, "shape": "hv"},
                fill="tozeroy",
                fillcolor=fill,
                hoverinfo="skip",
            ),
            secondary_y=True,
        )
    figure.add_trace(
        go.Scatter(
            x=shown.index,
            y=shown["close"].to_numpy(),
            name="close",
            mode="lines",
            line={"color": model_color("actual"), "width": 1.5},
        ),
        secondary_y=False,
    )
    change = held.diff().fillna(held.iloc[0])
    moved = rows[change.to_numpy() != 0]
    origins = pd.DatetimeIndex(moved["signal_origin"])
    known = origins.notna() & origins.isin(candles.index)
    origins = origins[known]
    steps = change.to_numpy()[change.to_numpy() != 0][known]
    for name, up, color, symbol in (
        ("move up", True, UP_COLOR, "triangle-up"),
        ("move down", False, DOWN_COLOR, "triangle-down"),
    ):
        chosen = origins[(steps > 0) == up]
        if not len(chosen):
            continue
        figure.add_trace(
            go.Scatter(
                x=chosen,
                y=candles.loc[chosen, "close"].to_numpy(),
                name=name,
                mode="markers",
                marker={"symbol": symbol, "size": 9, "color": color},
            ),
            secondary_y=False,
        )
    figure.update_layout(
        template=TEMPLATE,
        title=title or f"{model}'s positions",
        height=420,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": 1.02, "x": 0, "yanchor": "bottom"},
        hovermode="x unified",
    )
    figure.update_yaxes(title_text="close", secondary_y=False)
    figure.update_yaxes(range=[0, 1], visible=False, showgrid=False, secondary_y=True)
    return figure
