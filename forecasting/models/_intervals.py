"""Shared pieces of the simple baselines: residual spread, intervals, time steps.

Prices move in proportion to their level (a 2 % day is 2 % at 4,000 or at 100,000), so
the baselines measure their spread in log returns and draw their intervals on the log
scale: ``forecast * exp(-/+ z * sigma)``. A spread in price units, estimated over a
history whose price rose twentyfold, is far too narrow at today's price (the naive
90 % interval covered 67 % of daily BTC closes that way).
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd

from forecasting.ohlcv import grid_positions


def z_value(level: float) -> float:
    """Two-sided standard normal quantile for coverage ``level`` (0.9 gives 1.645)."""
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def rms(residuals: np.ndarray) -> float:
    """Root mean square of the finite residuals (0.0 when there are none)."""
    residuals = np.asarray(residuals, dtype="float64")
    finite = residuals[np.isfinite(residuals)]
    return float(np.sqrt(np.mean(finite**2))) if finite.size else 0.0


UNBOUNDED_NOTE = (
    "The interval is unbounded: there is no spread to draw it from (no change between "
    "training closes one timeframe apart, or a forecast of zero), and a zero-width interval "
    "would claim certainty."
)


def log_interval(
    mean: np.ndarray, sigma: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """``mean * exp(-/+ z * sigma)`` per step, for a spread ``sigma`` of log returns.

    Returns ``(lower, upper, notes)``. A step whose spread is zero or not finite (the
    training closes never changed: a stablecoin pegged at 1.0000), or whose forecast is
    zero, gets the unbounded
    interval ``[0, inf)`` and a note, not a zero-width interval that would cover only
    if the price never moves again.
    """
    half = z_value(level) * np.asarray(sigma, dtype="float64")
    mean = np.asarray(mean, dtype="float64")
    # A forecast of zero (drift floored there) has no log scale to spread around.
    known = np.isfinite(half) & (half > 0) & (mean > 0)
    with np.errstate(over="ignore", invalid="ignore"):
        lower = np.where(known, mean * np.exp(-np.where(known, half, 0.0)), 0.0)
        upper = np.where(known, mean * np.exp(np.where(known, half, 0.0)), np.inf)
    return lower, upper, (() if known.all() else (UNBOUNDED_NOTE,))


def one_step_changes(candles: pd.DataFrame, timeframe: str, calendar: str) -> np.ndarray:
    """Log returns between candles exactly one timeframe apart.

    A change across a gap spans several timeframes: counting it as one step would
    inflate the one-step spread, so it is left out.
    """
    return lagged_changes(candles, 1, timeframe, calendar)


def lagged_changes(candles: pd.DataFrame, lag: int, timeframe: str, calendar: str) -> np.ndarray:
    """``log close(t) - log close(t - lag timeframes)`` for each candle whose lagged one exists."""
    log_close = np.log(candles["close"].to_numpy(dtype="float64"))
    positions = grid_positions(candles.index, timeframe, calendar)
    earlier = np.searchsorted(positions, positions - lag)
    clipped = np.minimum(earlier, len(positions) - 1)
    found = (earlier < len(positions)) & (positions[clipped] == positions - lag)
    return log_close[found] - log_close[earlier[found]]
