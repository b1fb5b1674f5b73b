"""Error metrics of a backtest, per model and per horizon step, pooled over all folds.

Every metric is computed from the backtest's forecast rows with the plain textbook
formula (the tests recompute each one independently):

* ``mae``   mean |y - ŷ|
* ``rmse``  sqrt(mean (y - ŷ)²)
* ``mape``  100 · mean |y - ŷ| / |y|
* ``smape`` 100 · mean 2|y - ŷ| / (|y| + |ŷ|)
* ``mase``  mean |y - ŷ| / s, with s the fold's in-sample one-step naive MAE (the mean
  absolute change of the training closes): below 1 beats the one-step naive forecast
  *as scaled in-sample*
* ``mae_vs_naive`` the model's MAE over the naive forecast's MAE on the same pairs: below
  1 beats naive out of sample. MASE's in-sample one-step scale is smaller than
  multi-step errors at later, higher prices, so on long price histories even naive's
  MASE is well above 1; this ratio is the fair reading of "beats naive"
* ``directional_accuracy`` share of forecasts that call the direction of the move from
  the origin right, among those that call one (a forecast equal to the last close calls
  none, so naive has no directional accuracy); ``directional_pvalue`` is the one-sided
  binomial test against 50 %
* ``coverage`` share of actual closes inside the interval; ``width`` its mean width
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.evaluation.walkforward import Backtest

__all__ = ["METRIC_COLUMNS", "score", "score_by_horizon"]

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
]


def _metrics(rows: pd.DataFrame, scale: pd.Series) -> dict[str, float]:
    y = rows["y"].to_numpy(dtype="float64")
    yhat = rows["yhat"].to_numpy(dtype="float64")
    error = y - yhat
    absolute = np.abs(error)
    out: dict[str, float] = {
        "mae": float(absolute.mean()),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mape": float(100 * np.mean(absolute / np.abs(y))),
        "smape": float(100 * np.mean(2 * absolute / (np.abs(y) + np.abs(yhat)))),
        "mase": float(np.mean(absolute / scale.to_numpy(dtype="float64"))),
    }
    # scipy.stats takes half a second to import: only scoring pays for it, not app start.
    from scipy import stats

    origin = rows["y_origin"].to_numpy(dtype="float64")
    called = np.sign(yhat - origin)
    calls = called != 0
    hits = int((called[calls] == np.sign(y - origin)[calls]).sum())
    n_calls = int(calls.sum())
    out["directional_accuracy"] = hits / n_calls if n_calls else np.nan
    out["directional_pvalue"] = (
        float(stats.binomtest(hits, n_calls, 0.5, alternative="greater").pvalue)
        if n_calls
        else np.nan
    )
    out["direction_calls"] = n_calls
    lower = rows["lower"].to_numpy(dtype="float64")
    upper = rows["upper"].to_numpy(dtype="float64")
    if np.isfinite(lower).all() and np.isfinite(upper).all():
        out["coverage"] = float(np.mean((y >= lower) & (y <= upper)))
        out["width"] = float(np.mean(upper - lower))
    else:
        out["coverage"] = out["width"] = np.nan
    out["n"] = len(rows)
    return out


def _scale(backtest: Backtest, rows: pd.DataFrame) -> pd.Series:
    return rows["fold"].map(backtest.naive_scale)


def score(backtest: Backtest) -> pd.DataFrame:
    """Metrics per model, pooled over every fold and horizon step (one row per model)."""
    forecasts = backtest.forecasts
    table = {
        model: _metrics(rows, _scale(backtest, rows))
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
        key: _metrics(rows, _scale(backtest, rows))
        for key, rows in forecasts.groupby(["model", "step"], sort=False)
    }
    frame = pd.DataFrame.from_dict(table, orient="index", columns=METRIC_COLUMNS)
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=["model", "step"])
    if "naive" in frame.index.get_level_values("model"):
        naive_mae = frame.xs("naive", level="model")["mae"]
        steps = frame.index.get_level_values("step")
        frame["mae_vs_naive"] = frame["mae"].to_numpy() / naive_mae.reindex(steps).to_numpy()
    return frame
