"""Optional noise reduction of model inputs, causal by construction.

Both filters look only backwards: the value at a candle is decided from that candle and
the ``window - 1`` before it, so filtering a prefix gives the same values as filtering
the whole series (no look-ahead; the test suite checks it). They have no parameters
learned from data, so nothing is fitted outside the training window. They are applied
to model *inputs* only, never to the prices forecasts are scored against.

* ``"hampel"``: a value further than ``n_sigmas`` robust standard deviations
  (1.4826 x the median absolute deviation) from the trailing median is replaced by
  that median; everything else is kept as it is.
* ``"median"``: every value is replaced by the trailing median.
"""

from __future__ import annotations

import pandas as pd

from forecasting.errors import ConfigurationError

__all__ = ["DENOISERS", "denoise", "hampel", "rolling_median"]

DENOISERS = ("none", "hampel", "median")


def rolling_median(frame: pd.DataFrame, window: int) -> pd.DataFrame:
    """Trailing median over ``window`` rows (fewer at the start)."""
    return frame.rolling(int(window), min_periods=1).median()


def hampel(frame: pd.DataFrame, window: int, n_sigmas: float = 3.0) -> pd.DataFrame:
    """Replace trailing-window outliers by the trailing median (see the module docs)."""
    window = int(window)
    median = frame.rolling(window, min_periods=1).median()
    deviation = (frame - median).abs()
    mad = deviation.rolling(window, min_periods=1).median()
    # With MAD 0 (a constant stretch) any value that differs from it is an outlier.
    outlier = deviation > n_sigmas * 1.4826 * mad
    return frame.mask(outlier, median)


def denoise(frame: pd.DataFrame, method: str, window: int) -> pd.DataFrame:
    """Apply one of :data:`DENOISERS` to every column.

    Raises
    ------
    ConfigurationError
        For an unknown method or a window below 2.
    """
    if method in ("", "none", None):
        return frame
    if method not in DENOISERS:
        raise ConfigurationError(f"Noise reduction must be one of {', '.join(DENOISERS)}.")
    if int(window) < 2:
        raise ConfigurationError("The noise-reduction window must be at least 2 candles.")
    if method == "median":
        return rolling_median(frame, window)
    return hampel(frame, window)
