"""Real market data that works with no network: the S&P 500 daily sample of ``arch``.

The ``arch`` package ships daily S&P 500 index candles (1999-2018) inside its wheel.
They are not crypto prices and the index has no traded volume of its own (the column
is the exchange's share volume), so every screen labels them as the offline sample.
Like every loader, it drops candles with a zero or negative price (the sample has none).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pandas as pd

from forecasting.data.quality import drop_nonpositive
from forecasting.errors import DataUnavailable
from forecasting.ohlcv import normalize_ohlcv

__all__ = ["SAMPLE_CALENDAR", "SAMPLE_LABEL", "SAMPLE_TIMEFRAME", "load_sample"]

SAMPLE_LABEL = "S&P 500 index, daily, 1999-2018 (offline sample shipped with the arch package)"
SAMPLE_TIMEFRAME = "1d"
SAMPLE_CALENDAR = "business"


@functools.cache
def _load() -> pd.DataFrame:
    # The file is read where the arch wheel put it, without importing arch: its package
    # imports scipy and statsmodels (about 2 s), which the offline page would wait for.
    spec = importlib.util.find_spec("arch")
    if spec is None or spec.origin is None:  # pragma: no cover - arch is a requirement
        raise DataUnavailable("The offline sample needs the arch package: pip install arch.")
    path = Path(spec.origin).parent / "data" / "sp500" / "sp500.csv.gz"
    raw = pd.read_csv(path, index_col="Date", parse_dates=["Date"])
    frame = raw.rename(columns=str.lower).loc[:, ["open", "high", "low", "close", "volume"]]
    frame = frame.apply(pd.to_numeric, errors="coerce")
    frame.index = pd.DatetimeIndex(frame.index).tz_localize("UTC")
    return drop_nonpositive(normalize_ohlcv(frame))


def load_sample() -> pd.DataFrame:
    """The offline sample as an OHLCV frame (a fresh copy each call)."""
    return _load().copy()
