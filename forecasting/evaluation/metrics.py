"""Error metrics of a backtest, per model and per horizon step, pooled over all folds.

Every metric is computed from the backtest's forecast rows with the plain textbook
formula (the tests recompute each one independently):

* ``mae``   mean |y - ŷ|
* ``rmse``  sqrt(mean (y - ŷ)²)
* ``mape``  100 · mean |y - ŷ| / |y| (undefined when an actual close is zero)
* ``smape`` 100 · mean 2|y - ŷ| / (|y| + |ŷ|)
* ``mase``  mean |y - ŷ| / s, with s the fold's in-sample one-step naive MAE (the mean
  absolute change between training candles one timeframe apart): below 1 beats the
  one-step naive forecast *as scaled in-sample*. Undefined when the training closes
  never change (s = 0: a stablecoin at its peg)
* ``mae_vs_naive`` the model's MAE over the naive forecast's MAE on the same pairs: below
  1 beats naive out of sample. MASE's in-sample one-step scale is smaller than
  multi-step errors at later, higher prices, so on long price histories even naive's
  MASE is well above 1; this ratio is the fair reading of "beats naive"
* ``directional_accuracy`` share of forecasts that call the direction of the move from
  the origin right, among those that call one (a forecast equal to the last close calls
  none, so naive has no directional accuracy). ``directional_pvalue`` tests whether the
  called and the actual direction are related at all (see
  :func:`~forecasting.evaluation.significance.directional_test`): per step on origins
  whose moves do not overlap, Bonferroni over the steps for the pooled value
* ``coverage`` share of actual closes inside the interval; ``width`` its mean width
  (infinite where the interval is unbounded)
* ``interval_score`` mean interval score (Gneiting & Raftery 2007, eq. 43; Winkler
  1972): ``(u - l) + (2 / α)(l - y)⁺ + (2 / α)(y - u)⁺`` for a central ``1 - α``
  interval. Lower is better, and unlike the width it cannot be won by an interval
  narrower than its coverage allows
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.evaluation.significance import directional_test
from forecasting.evaluation.walkforward import Backtest

__all__ = ["METRIC_COLUMNS", "UNDEFINED", "score", "score_by_horizon", "undefined_metrics"]

METRIC_COLUMNS = [
    "mae",
    "rmse",
    "mape",
    "smape",
    "mase",
    "directional_accuracy",
    "directional_pvalue",
    "direction_calls",
    "coverage",
    "width",
    "n",
    "mae_vs_naive",
    "interval_score",
]

# Why a metric has no value, in the words the screens and the JSON use.
UNDEFINED = {
    "mase": "undefined: the training closes never change",
    "mape": "undefined: an actual close is zero",
    "directional_accuracy": "undefined: the forecasts never call a direction",
    "directional_pvalue": (
        "undefined: no step has both directions called and seen on non-overlapping origins"
    ),
}


def _metrics(
    rows: pd.DataFrame, scale: pd.Series, level: float | None, *, pooled: bool
) -> dict[str, float]:
    y = rows["y"].to_numpy(dtype="float64")
    yhat = rows["yhat"].to_numpy(dtype="float64")
    error = y - yhat
    absolute = np.abs(error)
    scales = scale.to_numpy(dtype="float64")
    out: dict[str, float] = {
        "mae": float(absolute.mean()),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mape": float(100 * np.mean(absolute / np.abs(y))) if (y != 0).all() else np.nan,
        "smape": _smape(y, yhat),
        "mase": (
            float(np.mean(absolute / scales))
            if np.isfinite(scales).all() and (scales > 0).all()
            else np.nan
        ),
    }
    origin = rows["y_origin"].to_numpy(dtype="float64")
    called = np.sign(yhat - origin)
    calls = called != 0
    hits = int((called[calls] == np.sign(y - origin)[calls]).sum())
    n_calls = int(calls.sum())
    out["directional_accuracy"] = hits / n_calls if n_calls else np.nan
    out["directional_pvalue"] = directional_test(rows)
    out["direction_calls"] = n_calls
    lower = rows["lower"].to_numpy(dtype="float64")
    upper = rows["upper"].to_numpy(dtype="float64")
    # NaN: no interval. An infinite bound is an interval, unbounded on that side.
    if not (np.isnan(lower).any() or np.isnan(upper).any()) and len(rows):
        out["coverage"] = float(np.mean((y >= lower) & (y <= upper)))
        with np.errstate(invalid="ignore"):
            out["width"] = float(np.mean(upper - lower))
        out["interval_score"] = _interval_score(y, lower, upper, level)
    else:
        out["coverage"] = out["width"] = out["interval_score"] = np.nan
    out["n"] = len(rows)
    return out


def _smape(y: np.ndarray, yhat: np.ndarray) -> float:
    denominator = np.abs(y) + np.abs(yhat)
    terms = np.divide(
        2 * np.abs(y - yhat), denominator, out=np.zeros_like(y), where=denominator > 0
    )
    return float(100 * np.mean(terms))


def _interval_score(y: np.ndarray, lower: np.ndarray, upper: np.ndarray, level) -> float:
    if level is None:
        return np.nan
    alpha = 1.0 - float(level)
    with np.errstate(invalid="ignore"):
        penalty = (2 / alpha) * (np.clip(lower - y, 0, None) + np.clip(y - upper, 0, None))
        return float(np.mean((upper - lower) + penalty))


def _scale(backtest: Backtest, rows: pd.DataFrame) -> pd.Series:
    return rows["fold"].map(backtest.naive_scale)


def score(backtest: Backtest) -> pd.DataFrame:
    """Metrics per model, pooled over every fold and horizon step (one row per model).

    An undefined metric is NaN; :func:`undefined_metrics` says why.
    """
    forecasts = backtest.forecasts
    table = {
        model: _metrics(rows, _scale(backtest, rows), backtest.levels.get(model), pooled=True)
        for model, rows in forecasts.groupby("model", sort=False)
    }
    frame = pd.DataFrame.from_dict(table, orient="index", columns=METRIC_COLUMNS)
    if "naive" in frame.index:
        frame["mae_vs_naive"] = frame["mae"] / frame.loc["naive", "mae"]
    return frame.rename_axis("model")


def score_by_horizon(backtest: Backtest) -> pd.DataFrame:
    """Metrics per model and horizon step, pooled over folds (index: model, step)."""
    forecasts = backtest.forecasts
    table = {
        key: _metrics(rows, _scale(backtest, rows), backtest.levels.get(key[0]), pooled=False)
        for key, rows in forecasts.groupby(["model", "step"], sort=False)
    }
    frame = pd.DataFrame.from_dict(table, orient="index", columns=METRIC_COLUMNS)
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=["model", "step"])
    if "naive" in frame.index.get_level_values("model"):
        naive_mae = frame.xs("naive", level="model")["mae"]
        steps = frame.index.get_level_values("step")
        frame["mae_vs_naive"] = frame["mae"].to_numpy() / naive_mae.reindex(steps).to_numpy()
    return frame


def undefined_metrics(backtest: Backtest) -> dict[str, dict[str, str]]:
    """Why a model's pooled metric has no value: ``{model: {metric: reason}}``.

    Only metrics whose formula is undefined on these data are listed (a zero scale, a
    zero actual close, no direction ever called, a directional test with nothing to
    relate) and an interval's width and score where some intervals are unbounded
    (their mean is infinite; the coverage counts those intervals as covering); a metric
    the model simply does not have (no interval, so no coverage) is not.
    """
    out: dict[str, dict[str, str]] = {}
    zero_scale = {f for f, s in backtest.naive_scale.items() if not (np.isfinite(s) and s > 0)}
    for model, rows in backtest.forecasts.groupby("model", sort=False):
        reasons = {}
        if rows["fold"].isin(zero_scale).any():
            reasons["mase"] = UNDEFINED["mase"]
        if (rows["y"] == 0).any():
            reasons["mape"] = UNDEFINED["mape"]
        if model != "naive" and not (rows["yhat"] != rows["y_origin"]).any():
            reasons["directional_accuracy"] = UNDEFINED["directional_accuracy"]
        elif model != "naive" and np.isnan(directional_test(rows)):
            reasons["directional_pvalue"] = UNDEFINED["directional_pvalue"]
        bounds = rows[["lower", "upper"]].to_numpy(dtype="float64")
        unbounded = int((np.isinf(bounds).any(axis=1)).sum())
        if unbounded:
            reason = (
                f"unbounded: {unbounded} of {len(rows)} intervals are unbounded "
                "(the coverage counts them as covering)"
            )
            reasons["width"] = reasons["interval_score"] = reason
        if reasons:
            out[model] = reasons
    return out
