"""Normal prediction intervals from residual spread, shared by the simple baselines."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np


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
