"""Drift: the naive forecast plus the average change per candle seen in training."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.models._intervals import normal_interval, rms
from forecasting.models.base import Forecaster


class Drift(Forecaster):
    """Extend the line from the first to the last training close.

    Parameters
    ----------
    level
        Interval coverage, e.g. 0.9.
    """

    alias = "drift"
    title = "Drift"

    def __init__(self, level: float = 0.9) -> None:
        self.level = level

    def _fit(self, candles: pd.DataFrame, **_: object) -> None:
        close = candles["close"].to_numpy(dtype="float64")
        self.drift_ = float((close[-1] - close[0]) / (len(close) - 1))
        self.sigma_ = rms(np.diff(close) - self.drift_)
        self.n_ = len(close)

    def _predict(self, horizon: int, history: pd.DataFrame):
        steps = np.arange(1, horizon + 1)
        mean = float(history["close"].iloc[-1]) + self.drift_ * steps
        # Hyndman & Athanasopoulos, FPP3 5.5: the drift estimate's own error widens it.
        sigma = self.sigma_ * np.sqrt(steps * (1 + steps / (self.n_ - 1)))
        return (mean, *normal_interval(mean, sigma, self.level))
