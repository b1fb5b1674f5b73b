"""Naive: tomorrow's close is today's. The baseline every model has to beat."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.models._intervals import log_interval, one_step_changes, rms
from forecasting.models.base import Capabilities, Forecaster
from forecasting.ranges import LEVEL


class Naive(Forecaster):
    """Forecast the last observed close for every step ahead.

    Intervals are the random walk's, on log prices: the one-step spread times
    ``sqrt(step)`` (Hyndman & Athanasopoulos, *Forecasting: Principles and Practice*,
    3rd ed., 5.5), as ``close * exp(-/+ z sigma sqrt(step))``. The spread is the root
    mean square of the log returns between candles exactly one timeframe apart: a
    change across a gap is not a one-step change.

    Parameters
    ----------
    level
        Interval coverage, e.g. 0.9.
    """

    alias = "naive"
    title = "Naive"
    capabilities = Capabilities(
        interval_methods=("log-normal",),
        needs_positive_prices=True,
        definition="the last close",
    )
    parameter_ranges = {"level": LEVEL}

    def __init__(self, level: float = 0.9) -> None:
        self.level = level

    def _fit(self, candles: pd.DataFrame, **_: object) -> None:
        self.sigma_ = rms(one_step_changes(candles, self.timeframe_, self.calendar_))

    def _predict(self, horizon: int, history: pd.DataFrame):
        mean = np.full(horizon, float(history["close"].iloc[-1]))
        steps = np.arange(1, horizon + 1)
        return (mean, *log_interval(mean, self.sigma_ * np.sqrt(steps), self.level))
