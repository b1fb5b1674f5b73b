"""Drift: the naive forecast plus the average change per timeframe seen in training."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.models._intervals import log_interval, one_step_changes, rms
from forecasting.models.base import Capabilities, Forecaster
from forecasting.ohlcv import grid_positions
from forecasting.ranges import LEVEL


class Drift(Forecaster):
    """Extend the line from the first to the last training close.

    The slope is per timeframe, not per row: ``(last - first) / T`` where ``T`` is the
    number of timeframes between the first and last training candle, so missing
    candles do not steepen it. The interval is FPP3's drift interval (5.5) drawn on the
    log scale around the forecast: the spread of one-step log returns about their mean,
    widened for the drift's own estimation error.

    Parameters
    ----------
    level
        Interval coverage, e.g. 0.9.
    """

    alias = "drift"
    title = "Drift"
    capabilities = Capabilities(
        interval_methods=("log-normal",),
        needs_positive_prices=True,
        definition="the last close plus the average change per candle seen in training",
    )
    parameter_ranges = {"level": LEVEL}

    def __init__(self, level: float = 0.9) -> None:
        self.level = level

    def _fit(self, candles: pd.DataFrame, **_: object) -> None:
        close = candles["close"].to_numpy(dtype="float64")
        elapsed = int(grid_positions(candles.index, self.timeframe_, self.calendar_)[-1])
        self.drift_ = float((close[-1] - close[0]) / max(elapsed, 1))
        changes = one_step_changes(candles, self.timeframe_, self.calendar_)
        self.sigma_ = rms(changes - changes.mean()) if changes.size else 0.0
        self.n_ = elapsed + 1

    def _predict(self, horizon: int, history: pd.DataFrame):
        steps = np.arange(1, horizon + 1)
        mean = float(history["close"].iloc[-1]) + self.drift_ * steps
        # Hyndman & Athanasopoulos, FPP3 5.5: the drift estimate's own error widens it.
        sigma = self.sigma_ * np.sqrt(steps * (1 + steps / max(self.n_ - 1, 1)))
        # A falling line can cross zero: a price cannot, and the reader is told.
        below = int((mean < 0).sum())
        mean = np.maximum(mean, 0.0)
        notes = (
            (f"Drift forecast a price below zero at {below} of {horizon} steps; floored at 0.",)
            if below
            else ()
        )
        lower, upper, interval_notes = log_interval(mean, sigma, self.level)
        return mean, lower, upper, notes + interval_notes
