"""Seasonal naive: the close one season ago (a week ago for daily candles)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.errors import InsufficientHistory
from forecasting.models._intervals import lagged_changes, log_interval, rms
from forecasting.models.base import Capabilities, Forecaster
from forecasting.ohlcv import grid_positions, season_length
from forecasting.ranges import LEVEL, Range


class SeasonalNaive(Forecaster):
    """Repeat the last full season of closes, looking back by time.

    Step ``h`` repeats the close at the same phase of the last season: ``h - m *
    ceil(h / m)`` timeframes from the origin, for a season of ``m`` timeframes (FPP3
    5.2). Seasons are counted in time, not rows: where that candle is missing, the last
    candle before it stands in (the newest close known at that time). The interval is
    FPP3's (5.5) on the log scale: the spread of season-apart log differences times
    ``sqrt(full seasons ahead + 1)``.

    Parameters
    ----------
    season
        Timeframes per season; ``None`` takes it from the timeframe (7 for 1d, 24 for
        1h, 6 for 4h, 5 for business days, 52 for 1w).
    level
        Interval coverage, e.g. 0.9.
    """

    alias = "seasonal_naive"
    title = "Seasonal naive"
    capabilities = Capabilities(
        interval_methods=("log-normal",),
        needs_positive_prices=True,
        definition="the close one season earlier",
    )
    parameter_ranges = {
        # A week of one-minute candles is 10,080; anything longer has no data behind it.
        "season": Range(1, 10_000, integer=True, optional=True),
        "level": LEVEL,
    }

    def __init__(self, season: int | None = None, level: float = 0.9) -> None:
        self.season = season
        self.level = level

    def _required_history(self) -> int:
        # Without an explicit season it depends on the timeframe: _fit checks it again.
        return (self.season or 1) + 1

    def _fit(self, candles: pd.DataFrame, **_: object) -> None:
        self.season_ = int(self.season or season_length(self.timeframe_, self.calendar_))
        # One full season plus a candle, or the forecast would look back before the data
        # (24 hourly candles per season need at least 25 candles, not 8).
        if len(candles) < self.season_ + 1:
            raise InsufficientHistory(
                f"{self.title} needs at least {self.season_ + 1} candles for a season of "
                f"{self.season_} {self.timeframe_} candles; got {len(candles)}. "
                "Choose a longer date range."
            )
        self.sigma_ = rms(lagged_changes(candles, self.season_, self.timeframe_, self.calendar_))

    def _predict(self, horizon: int, history: pd.DataFrame):
        m = self.season_
        close = history["close"].to_numpy(dtype="float64")
        positions = grid_positions(history.index, self.timeframe_, self.calendar_)
        steps = np.arange(1, horizon + 1)
        source = positions[-1] + steps - m * np.ceil(steps / m).astype("int64")
        if source.min() < 0:
            raise InsufficientHistory(
                f"{self.title} forecasts from the last {m} timeframes; the history before "
                f"the origin spans {positions[-1] + 1}."
            )
        # As of each source time: the last candle at or before it.
        mean = close[np.searchsorted(positions, source, side="right") - 1]
        sigma = self.sigma_ * np.sqrt((steps - 1) // m + 1)
        return (mean, *log_interval(mean, sigma, self.level))
