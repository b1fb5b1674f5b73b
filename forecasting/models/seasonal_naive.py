"""Seasonal naive: the close one season ago (a week ago for daily candles)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.errors import ConfigurationError, InsufficientHistory
from forecasting.models._intervals import normal_interval, rms
from forecasting.models.base import Forecaster
from forecasting.ohlcv import season_length


class SeasonalNaive(Forecaster):
    """Repeat the last full season of closes.

    Parameters
    ----------
    season
        Candles per season; ``None`` takes it from the timeframe (7 for 1d, 24 for 1h,
        6 for 4h, 5 for business days, 52 for 1w).
    level
        Interval coverage, e.g. 0.9.
    """

    alias = "seasonal_naive"
    title = "Seasonal naive"

    def __init__(self, season: int | None = None, level: float = 0.9) -> None:
        self.season = season
        self.level = level

    def _required_history(self) -> int:
        # Without an explicit season it depends on the timeframe: _fit checks it again.
        return (self.season or 1) + 1

    def _fit(self, candles: pd.DataFrame, **_: object) -> None:
        self.season_ = int(self.season or season_length(self.timeframe_, self.calendar_))
        if self.season_ < 1:
            raise ConfigurationError(
                f"Seasonal naive: season must be at least 1, got {self.season}."
            )
        # One full season plus a candle, or the forecast would index before the data
        # (24 hourly candles per season need at least 25 candles, not 8).
        if len(candles) < self.season_ + 1:
            raise InsufficientHistory(
                f"{self.title} needs at least {self.season_ + 1} candles for a season of "
                f"{self.season_} {self.timeframe_} candles; got {len(candles)}. "
                "Choose a longer date range."
            )
        close = candles["close"].to_numpy(dtype="float64")
        self.sigma_ = rms(close[self.season_ :] - close[: -self.season_])

    def _predict(self, horizon: int, history: pd.DataFrame):
        close = history["close"].to_numpy(dtype="float64")
        m = self.season_
        if len(close) < m:
            raise InsufficientHistory(
                f"{self.title} forecasts from the last {m} candles; history has {len(close)}."
            )
        steps = np.arange(1, horizon + 1)
        # Step h repeats the close m - ((h - 1) mod m) candles before the origin.
        mean = close[len(close) - m + (steps - 1) % m]
        sigma = self.sigma_ * np.sqrt((steps - 1) // m + 1)
        return (mean, *normal_interval(mean, sigma, self.level))
