"""Honest comparison: walk-forward backtests, metrics, significance tests and the verdict."""

from forecasting.evaluation.metrics import (
    METRIC_COLUMNS,
    score,
    score_by_horizon,
    undefined_metrics,
)
from forecasting.evaluation.significance import (
    DMResult,
    copy_check,
    diebold_mariano,
    directional_test,
    dm_table,
    joint_test,
)
from forecasting.evaluation.verdict import Verdict, verdicts
from forecasting.evaluation.walkforward import (
    Backtest,
    BacktestSettings,
    Fold,
    Pairs,
    default_workers,
    make_folds,
    walk_forward,
)

__all__ = [
    "METRIC_COLUMNS",
    "Backtest",
    "BacktestSettings",
    "DMResult",
    "Fold",
    "Pairs",
    "Verdict",
    "copy_check",
    "default_workers",
    "diebold_mariano",
    "directional_test",
    "dm_table",
    "joint_test",
    "make_folds",
    "score",
    "score_by_horizon",
    "undefined_metrics",
    "verdicts",
    "walk_forward",
]
