"""Naive: tomorrow's close is today's. The baseline every model has to beat."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.models._intervals import normal_interval, rms
from forecasting.models.base import Forecaster


class Naive(Forecaster):
    """Forecast the last observed close for every step ahead.

    Intervals are the random walk's: the one-step residual spread times ``sqrt(step)``.

    Parameters
    ----------
    level
        Interval coverage, e.g. 0.9.
    """

    alias = "naive"
    title = "Naive"

    def __init__(self, level: float = 0.9) -> None:
        self.level = level

    def _fit(self, candles: pd.DataFrame, **_: object) -> None:
        close = candles["close"].to_numpy(dtype="float64")
        self.sigma_ = rms(np.diff(close))

    def _predict(self, horizon: int, history: pd.DataFrame):
        mean = np.full(horizon, float(history["close"].iloc[-1]))
        steps = np.arange(1, horizon + 1)
        return (mean, *normal_interval(mean, self.sigma_ * np.sqrt(steps), self.level))
