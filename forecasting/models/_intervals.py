"""Shared pieces of the simple baselines: residual spread, normal intervals, time steps."""

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
    finite = residuals[np.isfinite(residuals)]
    return float(np.sqrt(np.mean(finite**2))) if finite.size else 0.0


def normal_interval(
    mean: np.ndarray, sigma: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """``mean -/+ z * sigma`` per step."""
    half = z_value(level) * np.asarray(sigma, dtype="float64")
    return mean - half, mean + half


def one_step_changes(candles: pd.DataFrame, timeframe: str, calendar: str) -> np.ndarray:
    """Close-to-close changes between candles exactly one timeframe apart.

    A change across a gap spans several timeframes: counting it as one step would
    inflate the one-step spread, so it is left out.
    """
    close = candles["close"].to_numpy(dtype="float64")
    positions = grid_positions(candles.index, timeframe, calendar)
    return np.diff(close)[np.diff(positions) == 1]


def lagged_changes(candles: pd.DataFrame, lag: int, timeframe: str, calendar: str) -> np.ndarray:
    """``close(t) - close(t - lag timeframes)`` for every candle whose lagged candle exists."""
    close = candles["close"].to_numpy(dtype="float64")
    positions = grid_positions(candles.index, timeframe, calendar)
    earlier = np.searchsorted(positions, positions - lag)
    found = (earlier < len(positions)) & (
        positions[np.minimum(earlier, len(positions) - 1)] == positions - lag
    )
    return close[found] - close[earlier[found]]
