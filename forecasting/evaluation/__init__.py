"""Honest comparison: walk-forward backtests, metrics and significance tests."""

from forecasting.evaluation.metrics import METRIC_COLUMNS, score, score_by_horizon
from forecasting.evaluation.significance import DMResult, copy_check, diebold_mariano, dm_table
from forecasting.evaluation.walkforward import (
    Backtest,
    BacktestSettings,
    Fold,
    make_folds,
    walk_forward,
)

__all__ = [
    "METRIC_COLUMNS",
    "Backtest",
    "BacktestSettings",
    "DMResult",
    "Fold",
    "copy_check",
    "diebold_mariano",
    "dm_table",
    "make_folds",
    "score",
    "score_by_horizon",
    "walk_forward",
]
