"""Synthetic OHLCV frames for the feature and model tests (plain functions, not fixtures).

Every frame follows the package's OHLCV contract: a UTC ``DatetimeIndex`` named
``timestamp`` (candle open times, in milliseconds like fetched data), float columns
``open, high, low, close, volume``, with ``high >= max(open, close)`` and
``low <= min(open, close)`` on every row. Each candle opens at the previous close, so
the frames look like real exchange candles (a gap-free 24/7 market).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "candle_index",
    "candles_from_close",
    "random_walk_candles",
    "sine_trend_candles",
    "with_mood_columns",
]

_FREQ = {"1d": "1D", "4h": "4h", "1h": "1h", "1b": "B"}


def candle_index(
    n: int, timeframe: str = "1d", start: str | pd.Timestamp = "2022-01-03"
) -> pd.DatetimeIndex:
    """``n`` candle open times from ``start`` (UTC); timeframe ``"1b"`` gives business days.

    2022-01-03 is a Monday, so business-day frames start on a full week.
    """
    first = pd.Timestamp(start)
    first = first.tz_localize("UTC") if first.tz is None else first.tz_convert("UTC")
    index = pd.date_range(first, periods=n, freq=_FREQ[timeframe], name="timestamp").as_unit("ms")
    index.freq = None  # a fetched frame never carries a frequency
    return index


def candles_from_close(
    close: np.ndarray,
    timeframe: str = "1d",
    *,
    start: str | pd.Timestamp = "2022-01-03",
    seed: int = 0,
) -> pd.DataFrame:
    """A valid OHLCV frame around the given closes (wicks and volume are random).

    Parameters
    ----------
    close
        The closes, all positive.
    timeframe
        ``"1d"``, ``"4h"``, ``"1h"`` or ``"1b"`` (business days: no weekend rows).
    start
        Open time of the first candle.
    seed
        Seed for the wicks and the volume.
    """
    rng = np.random.default_rng(seed)
    close = np.asarray(close, dtype="float64")
    n = len(close)
    open_ = np.r_[close[0], close[:-1]]
    body_top = np.maximum(open_, close)
    body_bottom = np.minimum(open_, close)
    wick = np.abs(close) * 0.004 * rng.random((2, n))
    return pd.DataFrame(
        {
            "open": open_,
            "high": body_top + wick[0],
            "low": body_bottom - wick[1],
            "close": close,
            "volume": 100.0 + 50.0 * rng.random(n),
        },
        index=candle_index(n, timeframe, start),
    )


def sine_trend_candles(
    n: int,
    timeframe: str = "1d",
    *,
    noise: float = 0.002,
    seed: int = 0,
    cycles: tuple[tuple[float, float], ...] = ((7.0, 0.03), (30.0, 0.05)),
    trend: float = 0.001,
    start: str | pd.Timestamp = "2022-01-03",
) -> pd.DataFrame:
    """A learnable series: an upward trend times a weekly and a monthly cycle, plus noise.

    The log close is ``log(100) + trend t + sum(amplitude sin(2 pi t / period))`` over
    ``cycles`` (by default a weekly cycle of 0.03 and a 30-candle one of 0.05) plus
    Gaussian noise of standard deviation ``noise`` (in log units), for candle number
    ``t``: the cycles are counted in candles, whatever the timeframe.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype="float64")
    log_close = np.log(100.0) + trend * t + noise * rng.standard_normal(n)
    for period, amplitude in cycles:
        log_close += amplitude * np.sin(2 * np.pi * t / period)
    return candles_from_close(np.exp(log_close), timeframe, start=start, seed=seed + 1)


def random_walk_candles(
    n: int,
    timeframe: str = "1d",
    *,
    step: float = 1.0,
    seed: int = 0,
    start: str | pd.Timestamp = "2022-01-03",
) -> pd.DataFrame:
    """Closes following a Gaussian random walk in price (steps of standard deviation ``step``).

    It starts high enough (1000 + 10 step sqrt(n)) to stay positive.
    """
    rng = np.random.default_rng(seed)
    close = 1000.0 + 10.0 * step * np.sqrt(n) + np.cumsum(step * rng.standard_normal(n))
    return candles_from_close(close, timeframe, start=start, seed=seed + 1)


def with_mood_columns(
    candles: pd.DataFrame, timeframe: str = "1d", *, seed: int = 0
) -> pd.DataFrame:
    """``candles`` with invented ``fear_greed`` and ``funding_rate`` columns joined as the
    app joins them (:func:`forecasting.data.mood.as_of`, each value from the first candle
    closing after it was published), starting early enough that every candle has both."""
    from forecasting.data.mood import as_of, fear_greed_published, funding_published

    rng = np.random.default_rng(seed)
    first = candles.index[0].normalize() - pd.Timedelta(days=3)
    last = candles.index[-1] + pd.Timedelta(days=2)
    days = pd.date_range(first, last, freq="D")
    index = pd.Series(rng.integers(5, 95, len(days)).astype("float64"), index=days)
    times = pd.date_range(first, last, freq="8h")
    funding = pd.Series(rng.normal(1e-4, 2e-4, len(times)), index=times)
    return candles.assign(
        fear_greed=as_of(
            index, candles.index, timeframe, published_at=fear_greed_published
        ).to_numpy(),
        funding_rate=as_of(
            funding, candles.index, timeframe, published_at=funding_published
        ).to_numpy(),
    )
