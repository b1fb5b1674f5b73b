"""Metrics per model and per horizon step, recomputed independently of the package.

The recomputation reads only the forecast rows and the candles (the MASE scale and the
close at each origin come from the candles, not from the backtest), with plain loops;
the directional test's Fisher p-value is summed from the hypergeometric distribution
by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from factories import random_walk_candles
from independent import directional_pvalue

from forecasting.evaluation import (
    METRIC_COLUMNS,
    Backtest,
    BacktestSettings,
    score,
    score_by_horizon,
    walk_forward,
)
from forecasting.models import Drift, Forecaster, MovingAverage, Naive, SeasonalNaive


class Wobble(Forecaster):
    """Last close plus a deterministic wiggle, with no interval: both directions get called."""

    alias = "wobble"
    title = "Wobble"

    def __init__(self, amplitude: float = 0.8) -> None:
        self.amplitude = amplitude

    def _fit(self, candles: pd.DataFrame, **_: object) -> None:
        pass

    def _predict(self, horizon: int, history: pd.DataFrame):
        last = float(history["close"].iloc[-1])
        steps = np.arange(1, horizon + 1)
        return last + self.amplitude * np.sin(len(history) + steps), None, None


MODELS = {
    "naive": Naive(),
    "drift": Drift(),
    "seasonal_naive": SeasonalNaive(),
    "moving_average": MovingAverage(window=5),
    "wobble": Wobble(),
}
HORIZON = 3


@pytest.fixture(scope="module", params=[None, 40], ids=["expanding", "rolling-40"])
def run(request) -> tuple[Backtest, pd.DataFrame, int | None]:
    """A backtest of every model above on a random walk, with the candles and the window."""
    candles = random_walk_candles(150, seed=3)
    settings = BacktestSettings(horizon=HORIZON, folds=3, test_size=36, window=request.param)
    return walk_forward(MODELS, candles, settings), candles, request.param


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _recompute(
    rows: pd.DataFrame, candles: pd.DataFrame, window: int | None, level: float | None = 0.9
) -> dict[str, float]:
    """Every metric from the rows, the textbook way, one row at a time."""
    closes = candles["close"].tolist()
    position = {stamp: i for i, stamp in enumerate(candles.index)}
    scales: dict[pd.Timestamp, float] = {}
    abs_errors, squared, ape, sape, scaled = [], [], [], [], []
    hits = calls = inside = 0
    widths, scores = [], []
    intervals = True
    for row in rows.itertuples():
        error = row.y - row.yhat
        abs_errors.append(abs(error))
        squared.append(error * error)
        ape.append(abs(error) / abs(row.y))
        sape.append(2 * abs(error) / (abs(row.y) + abs(row.yhat)))
        if row.cutoff not in scales:
            # In-sample one-step naive MAE of the fold's training closes.
            end = position[row.cutoff]
            start = 0 if window is None else max(0, end + 1 - window)
            train = closes[start : end + 1]
            changes = [abs(train[i] - train[i - 1]) for i in range(1, len(train))]
            scales[row.cutoff] = sum(changes) / len(changes)
        scaled.append(abs(error) / scales[row.cutoff])
        last = closes[position[row.origin]]
        called = _sign(row.yhat - last)
        if called != 0:
            calls += 1
            hits += called == _sign(row.y - last)
        if math.isnan(row.lower) or math.isnan(row.upper):
            intervals = False
        else:
            inside += row.lower <= row.y <= row.upper
            widths.append(row.upper - row.lower)
            alpha = 1 - level
            below, above = max(row.lower - row.y, 0.0), max(row.y - row.upper, 0.0)
            scores.append(row.upper - row.lower + 2 / alpha * (below + above))
    n = len(abs_errors)
    return {
        "mae": sum(abs_errors) / n,
        "rmse": math.sqrt(sum(squared) / n),
        "mape": 100 * sum(ape) / n,
        "smape": 100 * sum(sape) / n,
        "mase": sum(scaled) / n,
        "directional_accuracy": hits / calls if calls else math.nan,
        "directional_pvalue": directional_pvalue(rows),
        "direction_calls": calls,
        "coverage": inside / n if intervals else math.nan,
        "width": sum(widths) / n if intervals else math.nan,
        "interval_score": sum(scores) / n if intervals else math.nan,
        "n": n,
    }


def _assert_row_matches(actual: pd.Series, expected: dict[str, float]) -> None:
    for name, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(actual[name]), name
        else:
            assert actual[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_score_matches_an_independent_recomputation(run) -> None:
    backtest, candles, window = run
    table = score(backtest)

    assert list(table.columns) == METRIC_COLUMNS
    assert list(table.index) == list(MODELS)
    assert table.index.name == "model"
    for model, rows in backtest.forecasts.groupby("model"):
        _assert_row_matches(table.loc[model], _recompute(rows, candles, window))


def test_score_by_horizon_has_a_row_per_model_and_step(run) -> None:
    backtest, candles, window = run
    table = score_by_horizon(backtest)

    assert list(table.index) == [(m, s) for m in MODELS for s in range(1, HORIZON + 1)]
    assert list(table.index.names) == ["model", "step"]
    assert list(table.columns) == METRIC_COLUMNS
    for (model, step), rows in backtest.forecasts.groupby(["model", "step"]):
        _assert_row_matches(table.loc[(model, step)], _recompute(rows, candles, window))
    # Pooled over folds: each step's rows add up to the model's.
    counts = table["n"].groupby(level="model").sum()
    assert counts.to_dict() == score(backtest)["n"].to_dict()


def test_the_recomputation_exercises_every_metric(run) -> None:
    # Guards the two tests above against comparing NaN with NaN everywhere.
    table = score(run[0])
    assert table.loc["naive", "direction_calls"] == 0  # naive never calls a direction
    assert math.isnan(table.loc["naive", "directional_accuracy"])
    assert table.loc["wobble", "direction_calls"] == table.loc["wobble", "n"]
    assert 0 < table.loc["wobble", "directional_accuracy"] < 1
    assert math.isnan(table.loc["wobble", "coverage"])  # no interval
    assert 0 < table.loc["drift", "coverage"] <= 1
    assert table[["mae", "rmse", "mape", "smape", "mase"]].gt(0).all().all()


def _tiny_backtest(**columns: list) -> Backtest:
    n = len(columns["y"])
    stamps = pd.date_range("2024-01-10", periods=n, freq="D", tz="UTC")
    frame = pd.DataFrame(
        {
            "fold": columns.get("fold", [1] * n),
            "cutoff": pd.Timestamp("2024-01-09", tz="UTC"),
            "origin": stamps - pd.Timedelta(days=1),
            "timestamp": stamps,
            "step": columns.get("step", [1] * n),
            "model": columns.get("model", ["a"] * n),
            "y": columns["y"],
            "yhat": columns["yhat"],
            "lower": columns.get("lower", [np.nan] * n),
            "upper": columns.get("upper", [np.nan] * n),
            "y_origin": columns["y_origin"],
        }
    )
    return Backtest(
        forecasts=frame,
        folds=[],
        settings=BacktestSettings(),
        naive_scale=columns.get("scale", {1: 2.0}),
        levels={"a": 0.9},
    )


def test_metrics_of_a_hand_built_backtest() -> None:
    backtest = _tiny_backtest(
        y=[100.0, 200.0, 50.0, 100.0, 100.0],
        yhat=[101.0, 198.0, 50.0, 102.0, 100.0],  # errors -1, 2, 0, -2, 0
        y_origin=[99.0, 199.0, 51.0, 103.0, 100.0],
        lower=[100.0, 195.0, 52.0, 99.0, 99.0],
        upper=[103.0, 205.0, 55.0, 101.0, 101.0],
        step=[1, 2, 1, 2, 1],
    )
    row = score(backtest).loc["a"]

    assert row["n"] == 5
    assert row["mae"] == pytest.approx(5 / 5)  # |errors| 1 + 2 + 0 + 2 + 0
    assert row["rmse"] == pytest.approx(math.sqrt(9 / 5))  # squares 1 + 4 + 0 + 4 + 0
    assert row["mape"] == pytest.approx(100 * (1 / 100 + 2 / 200 + 2 / 100) / 5)  # 0.8
    assert row["smape"] == pytest.approx(100 * (2 / 201 + 4 / 398 + 4 / 202) / 5)
    assert row["mase"] == pytest.approx(1.0 / 2.0)  # MAE over the fold's scale of 2
    # Calls: up (right), down (wrong: it rose), down (right), down (right); the last
    # forecast equals the origin's close and calls no direction.
    assert row["direction_calls"] == 4
    assert row["directional_accuracy"] == pytest.approx(3 / 4)
    # Step 1 (origins 9, 11 and 13 Jan, moves that do not overlap): calls up, down, none;
    # moves up, down, down: the table [[1, 0], [0, 1]] gives P = 1/2. Step 2 (origins 10
    # and 12 Jan): calls down, down, only one direction called: no test. Bonferroni over
    # one step: 1/2.
    assert row["directional_pvalue"] == pytest.approx(0.5)
    # Interval scores (alpha = 0.1): widths 3, 10, 3, 2, 2; 50 lies 2 below [52, 55].
    assert row["interval_score"] == pytest.approx((3 + 10 + (3 + 20 * 2) + 2 + 2) / 5)
    # 50 lies below [52, 55]; 100 on the bound 100 of [100, 103] is inside.
    assert row["coverage"] == pytest.approx(4 / 5)
    assert row["width"] == pytest.approx((3 + 10 + 3 + 2 + 2) / 5)

    by_step = score_by_horizon(backtest)
    assert list(by_step.index) == [("a", 1), ("a", 2)]
    assert by_step.loc[("a", 1), "n"] == 3
    assert by_step.loc[("a", 1), "mae"] == pytest.approx(1 / 3)  # |errors| 1, 0, 0
    assert by_step.loc[("a", 2), "mae"] == pytest.approx(2.0)  # |errors| 2, 2
    assert by_step.loc[("a", 2), "directional_accuracy"] == pytest.approx(1 / 2)
    assert by_step.loc[("a", 1), "coverage"] == pytest.approx(2 / 3)  # 50 is outside
    assert by_step.loc[("a", 2), "coverage"] == pytest.approx(1.0)


def test_mase_scales_each_row_by_its_own_folds_scale() -> None:
    backtest = _tiny_backtest(
        y=[10.0, 10.0],
        yhat=[12.0, 12.0],  # |error| 2 in both folds
        y_origin=[10.0, 10.0],
        fold=[1, 2],
        scale={1: 2.0, 2: 4.0},
    )
    # mean(2 / 2, 2 / 4), not MAE / mean scale = 2 / 3
    assert score(backtest).loc["a", "mase"] == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("y", "yhat", "origin", "accuracy", "calls"),
    [
        # an actual close unchanged from the origin: a call of "up" is wrong
        ([10.0, 11.0], [11.0, 12.0], [10.0, 10.0], 0.5, 2),
        # forecasts equal to the origin's close call nothing
        ([11.0, 9.0], [10.0, 10.0], [10.0, 10.0], math.nan, 0),
        # every call right
        ([11.0, 9.0, 12.0], [10.5, 9.5, 10.1], [10.0, 10.0, 10.0], 1.0, 3),
    ],
)
def test_directional_accuracy_counts_only_calls(y, yhat, origin, accuracy, calls) -> None:
    row = score(_tiny_backtest(y=y, yhat=yhat, y_origin=origin)).loc["a"]
    assert row["direction_calls"] == calls
    if calls:
        assert row["directional_accuracy"] == pytest.approx(accuracy)
    else:
        assert math.isnan(row["directional_accuracy"])
        assert math.isnan(row["directional_pvalue"])


def test_a_partial_interval_has_no_coverage() -> None:
    # One row without bounds: a coverage over the other rows only would flatter it.
    row = score(
        _tiny_backtest(
            y=[10.0, 10.0],
            yhat=[10.0, 10.0],
            y_origin=[9.0, 9.0],
            lower=[9.0, np.nan],
            upper=[11.0, np.nan],
        )
    ).loc["a"]
    assert math.isnan(row["coverage"])
    assert math.isnan(row["width"])
