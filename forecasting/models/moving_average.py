"""Moving average: the mean of the last ``window`` closes, flat ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.errors import ConfigurationError
from forecasting.models._intervals import normal_interval, rms
from forecasting.models.base import Capabilities, Forecaster


class MovingAverage(Forecaster):
    """Forecast the average of the last ``window`` closes for every step.

    The window is the last ``window`` candles that exist (a missing candle is not
    averaged as anything).

    Intervals scale the one-step residual spread by ``sqrt(step)``, as for a random
    walk: an approximation, stated as such.

    Parameters
    ----------
    window
        Closes averaged.
    level
        Interval coverage, e.g. 0.9.
    """

    alias = "moving_average"
    title = "Moving average"
    capabilities = Capabilities(interval_methods=("normal",))

    def __init__(self, window: int = 7, level: float = 0.9) -> None:
        self.window = window
        self.level = level

    def _required_history(self) -> int:
        return max(int(self.window), 1) + 1

    def _fit(self, candles: pd.DataFrame, **_: object) -> None:
        if int(self.window) < 1:
            raise ConfigurationError(
                f"Moving average: window must be at least 1, got {self.window}."
            )
        self.window_ = int(self.window)
        close = candles["close"]
        previous_mean = close.rolling(self.window_).mean().shift(1)
        self.sigma_ = rms((close - previous_mean).to_numpy(dtype="float64"))

    def _predict(self, horizon: int, history: pd.DataFrame):
        mean = np.full(horizon, float(history["close"].iloc[-self.window_ :].mean()))
        steps = np.arange(1, horizon + 1)
        return (mean, *normal_interval(mean, self.sigma_ * np.sqrt(steps), self.level))
