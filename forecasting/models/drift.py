"""Drift: the naive forecast plus the average change per timeframe seen in training."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.models._intervals import normal_interval, one_step_changes, rms
from forecasting.models.base import Capabilities, Forecaster
from forecasting.ohlcv import grid_positions


class Drift(Forecaster):
    """Extend the line from the first to the last training close.

    The slope is per timeframe, not per row: ``(last - first) / T`` where ``T`` is the
    number of timeframes between the first and last training candle, so missing
    candles do not steepen it.

    Parameters
    ----------
    level
        Interval coverage, e.g. 0.9.
    """

    alias = "drift"
    title = "Drift"
    capabilities = Capabilities(interval_methods=("normal",))

    def __init__(self, level: float = 0.9) -> None:
        self.level = level

    def _fit(self, candles: pd.DataFrame, **_: object) -> None:
        close = candles["close"].to_numpy(dtype="float64")
        elapsed = int(grid_positions(candles.index, self.timeframe_, self.calendar_)[-1])
        self.drift_ = float((close[-1] - close[0]) / max(elapsed, 1))
        changes = one_step_changes(candles, self.timeframe_, self.calendar_)
        self.sigma_ = rms(changes - self.drift_)
        self.n_ = elapsed + 1

    def _predict(self, horizon: int, history: pd.DataFrame):
        steps = np.arange(1, horizon + 1)
        mean = float(history["close"].iloc[-1]) + self.drift_ * steps
        # Hyndman & Athanasopoulos, FPP3 5.5: the drift estimate's own error widens it.
        sigma = self.sigma_ * np.sqrt(steps * (1 + steps / max(self.n_ - 1, 1)))
        return (mean, *normal_interval(mean, sigma, self.level))
