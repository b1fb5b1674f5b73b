"""Monte Carlo helpers for ``test_calibration.py``: null processes, two test-only forecasters,
and the rates, coverages and standard errors the calibration tests assert on.

Null processes (no model can have skill on them):

* :func:`random_walk_closes`: a driftless geometric random walk, log returns iid
  ``N(0, sigma)``.
* :func:`shuffled_closes`: the daily log returns of real BTC/USDT candles, demeaned and
  randomly permuted, turned back into closes: the fat tails and the volatility level are
  real, any order (trend, momentum, volatility clustering) is gone.

Test-only forecasters (they follow :class:`~forecasting.models.base.Forecaster`):

* :class:`NoisyNaive`: the last close times ``exp(scale * sigma * sqrt(step) * z)``, ``z``
  standard normal, drawn from a generator seeded by the model's ``seed`` and the origin.
  Two of them with different seeds are exchangeable: their expected losses are exactly
  equal, so any test comparing them is under an exact null.
* :class:`AutoRegressive`: an AR(p) with intercept on log returns, fitted by least
  squares on each fold's training candles and iterated ahead: a real fitted model with
  estimation noise and, on these series, no skill.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from factories import candles_from_close

from forecasting.models.base import Capabilities, Forecaster

__all__ = [
    "AutoRegressive",
    "NoisyNaive",
    "Rate",
    "Mean",
    "demeaned_log_returns",
    "random_walk_closes",
    "rate",
    "mean_with_se",
    "shuffled_closes",
    "to_candles",
]


# --- null processes ----------------------------------------------------------------------


def random_walk_closes(n: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` closes of a driftless geometric random walk from 100 (log returns N(0, sigma))."""
    returns = rng.normal(0.0, sigma, n - 1)
    return 100.0 * np.exp(np.r_[0.0, np.cumsum(returns)])


def demeaned_log_returns(candles: pd.DataFrame) -> np.ndarray:
    """Log returns of the closes, minus their mean (so that no drift is left to learn)."""
    returns = np.diff(np.log(candles["close"].to_numpy(dtype="float64")))
    return returns - returns.mean()


def shuffled_closes(n: int, returns: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``n`` closes from 100 whose log returns are ``n - 1`` of ``returns`` in random order.

    The first ``n - 1`` of a random permutation: a draw without replacement, so within a
    run no return repeats and the order carries no information.
    """
    drawn = rng.permutation(returns)[: n - 1]
    return 100.0 * np.exp(np.r_[0.0, np.cumsum(drawn)])


def to_candles(close: np.ndarray, seed: int) -> pd.DataFrame:
    """Daily candles (gap-free) around the closes."""
    return candles_from_close(close, "1d", seed=seed)


# --- test-only forecasters ---------------------------------------------------------------


class NoisyNaive(Forecaster):
    """The last close with independent log-normal noise per origin and step (see module).

    Parameters
    ----------
    scale
        Noise standard deviation in units of the fitted one-step log-return spread
        times ``sqrt(step)``.
    seed
        With the origin's open time, seeds the noise: the same origin always gets the
        same forecast, two seeds give independent ones.
    """

    alias = "noisy_naive"
    title = "Noisy naive (test)"
    capabilities = Capabilities(interval_methods=(), needs_positive_prices=True)

    def __init__(self, scale: float = 1.0, seed: int = 0) -> None:
        self.scale = scale
        self.seed = seed

    def _fit(self, candles: pd.DataFrame, **_: object) -> None:
        returns = np.diff(np.log(candles["close"].to_numpy(dtype="float64")))
        self.sigma_ = float(np.sqrt(np.mean(returns**2)))

    def _predict(self, horizon: int, history: pd.DataFrame):
        origin = int(history.index[-1].value)
        rng = np.random.default_rng([int(self.seed), origin])
        steps = np.arange(1, horizon + 1)
        noise = float(self.scale) * self.sigma_ * np.sqrt(steps) * rng.standard_normal(horizon)
        last = float(history["close"].iloc[-1])
        return last * np.exp(noise), None, None


class AutoRegressive(Forecaster):
    """AR(``order``) with intercept on one-step log returns, least squares, iterated ahead.

    Parameters
    ----------
    order
        Lags.
    """

    alias = "ar"
    title = "AR (test)"
    capabilities = Capabilities(interval_methods=(), needs_positive_prices=True)

    def __init__(self, order: int = 5) -> None:
        self.order = order

    def _required_history(self) -> int:
        return 3 * int(self.order) + 10

    def _fit(self, candles: pd.DataFrame, **_: object) -> None:
        p = int(self.order)
        returns = np.diff(np.log(candles["close"].to_numpy(dtype="float64")))
        lags = np.lib.stride_tricks.sliding_window_view(returns[:-1], p)[:, ::-1]
        design = np.column_stack([np.ones(len(lags)), lags])
        self.coef_, *_ = np.linalg.lstsq(design, returns[p:], rcond=None)

    def _predict(self, horizon: int, history: pd.DataFrame):
        p = int(self.order)
        close = history["close"].to_numpy(dtype="float64")[-(p + 1) :]
        recent = list(np.diff(np.log(close))[::-1])  # newest first
        path = []
        for _ in range(horizon):
            nxt = float(self.coef_[0] + np.dot(self.coef_[1:], recent[:p]))
            path.append(nxt)
            recent.insert(0, nxt)
        return close[-1] * np.exp(np.cumsum(path)), None, None


# --- Monte Carlo summaries ---------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    """A rejection rate over ``runs`` Monte Carlo runs and its binomial standard error."""

    hits: int
    runs: int
    nominal: float

    @property
    def value(self) -> float:
        return self.hits / self.runs

    @property
    def se(self) -> float:
        """``sqrt(a (1 - a) / R)`` at the nominal rate ``a``: the null's own spread."""
        return math.sqrt(self.nominal * (1 - self.nominal) / self.runs)

    def limit(self, k: float = 3.0) -> float:
        return self.nominal + k * self.se

    def __str__(self) -> str:
        return (
            f"{self.value:.3f} ({self.hits}/{self.runs}; nominal {self.nominal:g}, "
            f"MC SE {self.se:.4f}, limit {self.limit():.3f})"
        )


def rate(flags, nominal: float) -> Rate:
    """The rate of True among ``flags`` (one per run)."""
    flags = np.asarray(flags, dtype=bool)
    return Rate(int(flags.sum()), int(flags.size), nominal)


@dataclass(frozen=True)
class Mean:
    """A mean over runs of a per-run value, with the standard error from their spread."""

    value: float
    se: float
    runs: int

    def __str__(self) -> str:
        return f"{self.value:.4f} (MC SE {self.se:.4f}, {self.runs} runs)"


def mean_with_se(values) -> Mean:
    """Mean of per-run values and ``sd / sqrt(R)`` (runs are independent; origins within
    a run are not, so the per-run value is the unit)."""
    values = np.asarray(values, dtype="float64")
    values = values[np.isfinite(values)]
    sd = float(values.std(ddof=1)) if values.size > 1 else float("nan")
    return Mean(float(values.mean()), sd / math.sqrt(values.size), int(values.size))
