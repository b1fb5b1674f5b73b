"""Real market data that works with no network: the S&P 500 daily sample of ``arch``.

The ``arch`` package ships daily S&P 500 index candles (1999-2018) inside its wheel.
They are not crypto prices and the index has no traded volume of its own (the column
is the exchange's share volume), so every screen labels them as the offline sample.
Like every loader, it drops candles with a zero or negative price (the sample has none).
"""

from __future__ import annotations

import functools

import pandas as pd

from forecasting.data.quality import drop_nonpositive
from forecasting.ohlcv import normalize_ohlcv

__all__ = ["SAMPLE_CALENDAR", "SAMPLE_LABEL", "SAMPLE_TIMEFRAME", "load_sample"]

SAMPLE_LABEL = "S&P 500 index, daily, 1999-2018 (offline sample shipped with the arch package)"
SAMPLE_TIMEFRAME = "1d"
SAMPLE_CALENDAR = "business"


@functools.cache
def _load() -> pd.DataFrame:
    from arch.data import sp500  # imported here: only the offline path pays for it

    raw = sp500.load()
    frame = raw.rename(columns=str.lower).loc[:, ["open", "high", "low", "close", "volume"]]
    frame.index = pd.DatetimeIndex(frame.index).tz_localize("UTC")
    return drop_nonpositive(normalize_ohlcv(frame))


def load_sample() -> pd.DataFrame:
    """The offline sample as an OHLCV frame (a fresh copy each call)."""
    return _load().copy()
