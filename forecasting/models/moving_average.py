"""Moving average: the mean of the last ``window`` closes, flat ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.models._intervals import log_interval, one_step_changes, rms
from forecasting.models.base import Capabilities, Forecaster
from forecasting.ranges import LEVEL, Range


class MovingAverage(Forecaster):
    """Forecast the average of the last ``window`` closes for every step.

    The window is the last ``window`` candles that exist (a missing candle is not
    averaged as anything).

    Intervals are drawn on the log scale. On a random walk the error ``h`` steps ahead
    is the walk's ``h`` steps from the last close plus the distance from the last close
    to the average, so the spread is ``sqrt(h * s1**2 + d**2)``: ``s1`` the RMS of
    one-step log returns, ``d`` the RMS of ``log(close / mean of the window)`` over the
    training candles. An approximation for other series, stated as such.

    Parameters
    ----------
    window
        Closes averaged.
    level
        Interval coverage, e.g. 0.9.
    """

    alias = "moving_average"
    title = "Moving average"
    capabilities = Capabilities(
        interval_methods=("log-normal",),
        needs_positive_prices=True,
        definition="the mean of the last closes over its window, flat ahead",
    )
    parameter_ranges = {"window": Range(1, 10_000, integer=True), "level": LEVEL}

    def __init__(self, window: int = 7, level: float = 0.9) -> None:
        self.window = window
        self.level = level

    def _required_history(self) -> int:
        return max(int(self.window), 1) + 1

    def _fit(self, candles: pd.DataFrame, **_: object) -> None:
        self.window_ = int(self.window)
        close = candles["close"].astype("float64")
        window_mean = close.rolling(self.window_).mean()
        self.step_sigma_ = rms(one_step_changes(candles, self.timeframe_, self.calendar_))
        self.distance_sigma_ = rms(np.log(close / window_mean).to_numpy(dtype="float64"))

    def _predict(self, horizon: int, history: pd.DataFrame):
        mean = np.full(horizon, float(history["close"].iloc[-self.window_ :].mean()))
        steps = np.arange(1, horizon + 1)
        sigma = np.sqrt(steps * self.step_sigma_**2 + self.distance_sigma_**2)
        return (mean, *log_interval(mean, sigma, self.level))
