"""Figures of a strategy backtest (forecasting/strategy_charts.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from factories import candles_from_close

from forecasting.charts import model_color
from forecasting.evaluation import BacktestSettings
from forecasting.experiment import ExperimentSettings, run_experiment
from forecasting.strategy import BUY_AND_HOLD, StrategySettings, run_strategy
from forecasting.strategy_charts import (
    LONG_FILL,
    SHORT_FILL,
    equity_chart,
    positions_chart,
)

# Always in the market, long or short: drift's forecast decides the side.
BOTH_SIDES = StrategySettings(threshold=0.0, threshold_unit="bps", allow_short=True)


@pytest.fixture(scope="module")
def traded():
    # Up for 240 candles, then down below the start: drift's forecast (the average change
    # since the first candle) turns from up to down inside the test folds.
    rng = np.random.default_rng(5)
    path = np.r_[np.linspace(1000, 1300, 240), np.linspace(1300, 850, 60)]
    candles = candles_from_close(path + rng.normal(0, 3, path.size))
    experiment = run_experiment(
        candles,
        ExperimentSettings(
            models=("naive", "drift"),
            backtest=BacktestSettings(horizon=3, folds=2, test_size=30, stride=3),
        ),
    )
    return candles, run_strategy(experiment.backtest, experiment.candles, BOTH_SIDES)


def test_equity_chart_draws_each_strategy_over_its_drawdown(traded) -> None:
    _, result = traded
    figure = equity_chart(result)
    equity, drawdown = result.equity_curves(), result.drawdown_curves()
    names = list(result.strategies)
    assert names[-1] == BUY_AND_HOLD
    upper = [t for t in figure.data if t.yaxis == "y"]
    lower = [t for t in figure.data if t.yaxis == "y2"]
    assert [t.name for t in upper] == names
    assert [t.name for t in lower] == names
    for top, bottom in zip(upper, lower, strict=True):
        np.testing.assert_array_equal(top.y, equity[top.name].to_numpy())
        np.testing.assert_array_equal(bottom.y, -drawdown[bottom.name].to_numpy())
        assert bottom.showlegend is False  # one legend entry per strategy
    # Every curve starts at 1 (no drawdown) at the first origin.
    assert all(t.y[0] == 1.0 for t in upper)
    assert all(t.y[0] == 0.0 for t in lower)
    # The model colours of every chart; buy-and-hold in the actual price's, dashed.
    assert upper[0].line.color == model_color("naive")
    assert upper[1].line.color == model_color("drift")
    assert upper[-1].line.color == model_color("actual")
    assert upper[-1].line.dash == "dash"
    assert figure.layout.yaxis.type == "linear"


def test_equity_chart_log_scale(traded) -> None:
    figure = equity_chart(traded[1], log_scale=True)
    assert figure.layout.yaxis.type == "log"
    assert "log" in figure.layout.yaxis.title.text
    assert figure.layout.yaxis2.type in (None, "linear")  # drawdowns stay linear


def test_positions_chart_shades_the_candles_held(traded) -> None:
    candles, result = traded
    figure = positions_chart(candles, result, "drift")
    rows = result.positions[result.positions["model"] == "drift"]
    position = rows["position"].to_numpy()
    by_name = {t.name: t for t in figure.data}
    assert {"long", "short", "close"} <= set(by_name)
    np.testing.assert_array_equal(by_name["long"].y, np.clip(position, 0, None))
    np.testing.assert_array_equal(by_name["short"].y, np.clip(-position, 0, None))
    assert by_name["long"].fillcolor == LONG_FILL
    assert by_name["short"].fillcolor == SHORT_FILL
    assert by_name["long"].line.shape == "hv"  # held from the candle on, until the next
    # The close from the first origin to the last candle held.
    close = by_name["close"]
    assert pd.Timestamp(close.x[0]) == result.start
    assert pd.Timestamp(close.x[-1]) == rows["timestamp"].iloc[-1]
    # A marker on the close of each signal origin where the position changes.
    changes = np.diff(np.r_[0.0, position])
    origins = pd.DatetimeIndex(rows["signal_origin"])[changes != 0]
    markers = [t for t in figure.data if t.mode == "markers"]
    marked = sorted(pd.Timestamp(x) for t in markers for x in t.x)
    assert marked == sorted(origins)
    up = next(t for t in markers if t.name == "move up")
    np.testing.assert_array_equal(
        up.y, candles.loc[pd.DatetimeIndex(up.x).tz_localize(None).tz_localize("UTC"), "close"]
    )


def test_positions_chart_of_a_flat_strategy_has_no_shading(traded) -> None:
    candles, result = traded
    figure = positions_chart(candles, result, "naive")  # naive never forecasts a move
    assert [t.name for t in figure.data] == ["close"]


def test_positions_chart_refuses_an_unknown_strategy(traded) -> None:
    candles, result = traded
    with pytest.raises(ValueError, match="No strategy named lstm"):
        positions_chart(candles, result, "lstm")
