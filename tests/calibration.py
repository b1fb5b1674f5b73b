"""Monte Carlo helpers for ``test_calibration.py``: null processes, two test-only forecasters,
what one run computes, and the rates and means (with their standard errors) asserted on.

Null processes (no model can have skill on them):

* :func:`random_walk_closes`: a driftless geometric random walk, log returns iid
  ``N(0, sigma)``.
* :func:`shuffled_closes`: real daily log returns (demeaned by :func:`demeaned_log_returns`),
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

One run: :func:`pair_run` (the exchangeable pair's joint and per-step p-values) and
:func:`judged_run` (verdicts against naive, directional p-values, coverages).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from factories import candles_from_close

from forecasting.evaluation.significance import diebold_mariano, directional_test, joint_test
from forecasting.evaluation.verdict import verdicts
from forecasting.evaluation.walkforward import (
    FORECAST_COLUMNS,
    Backtest,
    BacktestSettings,
    make_folds,
    walk_forward,
)
from forecasting.models import Drift, MovingAverage, Naive, SeasonalNaive
from forecasting.models.base import Capabilities, Forecaster

__all__ = [
    "AutoRegressive",
    "DIRECTIONAL",
    "JUDGED_MODELS",
    "LOSSES",
    "PAIR",
    "WITH_INTERVALS",
    "Mean",
    "NoisyNaive",
    "Rate",
    "judged_models",
    "demeaned_log_returns",
    "interval_coverage",
    "judged_run",
    "mean_with_se",
    "origin_noise",
    "pair_backtest",
    "pair_run",
    "random_walk_closes",
    "rate",
    "shuffled_closes",
    "summarise_judged",
    "to_candles",
]


LOSSES = ("absolute", "squared")
#: The models judged against naive, those with an interval, and those that call directions.
JUDGED_MODELS = ("drift", "seasonal_naive", "moving_average", "ar")
WITH_INTERVALS = ("naive", "drift", "seasonal_naive", "moving_average")
DIRECTIONAL = ("drift", "moving_average", "ar")
#: The exchangeable pair: ``noisy_a`` is tested against ``noisy_b``.
PAIR = ("noisy_a", "noisy_b")
_TIMES = ("cutoff", "origin", "timestamp")


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
        last = float(history["close"].iloc[-1])
        z = origin_noise(int(self.seed), history.index[-1], horizon)
        steps = np.arange(1, horizon + 1)
        return last * np.exp(float(self.scale) * self.sigma_ * np.sqrt(steps) * z), None, None


def origin_noise(seed: int, origin: pd.Timestamp, horizon: int) -> np.ndarray:
    """The standard normal draws of :class:`NoisyNaive` with ``seed`` at ``origin``."""
    return np.random.default_rng([seed, int(origin.value)]).standard_normal(horizon)


def pair_backtest(
    candles: pd.DataFrame,
    settings: BacktestSettings,
    seeds: tuple[int, int],
    *,
    scale: float = 1.0,
) -> Backtest:
    """The backtest ``walk_forward`` gives for two :class:`NoisyNaive` models, ``noisy_a``
    and ``noisy_b`` with ``seeds``, on gap-free candles: built directly, in a fraction of
    the time (``test_calibration`` checks that the rows are identical).

    The noise is seeded by the origin's time, and every run's candles start on the same
    day: each run needs seeds of its own, or every run would reuse the same noise.
    """
    folds = make_folds(candles.index, settings)
    close = candles["close"].to_numpy(dtype="float64")
    index = candles.index
    horizon, last = int(settings.horizon), len(candles) - 1
    columns: dict[str, list] = {name: [] for name in FORECAST_COLUMNS}
    for fold in folds:
        train = np.log(close[fold.train_start : fold.cutoff + 1])
        sigma = float(np.sqrt(np.mean(np.diff(train) ** 2)))
        origins = np.array([o for o in fold.origins if o < last])
        n_steps = np.minimum(horizon, last - origins)
        origin = np.repeat(origins, n_steps)
        step = np.concatenate([np.arange(1, k + 1) for k in n_steps])
        target = origin + step
        for name, seed in zip(PAIR, seeds, strict=True):
            draws = zip(origins, n_steps, strict=True)
            z = np.concatenate([origin_noise(seed, index[o], int(k)) for o, k in draws])
            columns["fold"].append(np.full(len(origin), fold.number))
            columns["cutoff"].append(np.repeat(index[[fold.cutoff]], len(origin)))
            columns["origin"].append(index[origin])
            columns["timestamp"].append(index[target])
            columns["step"].append(step)
            columns["model"].append(np.full(len(origin), name, dtype=object))
            columns["y"].append(close[target])
            columns["yhat"].append(close[origin] * np.exp(scale * sigma * np.sqrt(step) * z))
            columns["lower"].append(np.full(len(origin), np.nan))
            columns["upper"].append(np.full(len(origin), np.nan))
            columns["y_origin"].append(close[origin])
    forecasts = pd.DataFrame(
        {
            name: parts[0].append(parts[1:]) if name in _TIMES else np.concatenate(parts)
            for name, parts in columns.items()
        }
    )
    return Backtest(forecasts, folds, settings, naive_scale={}, levels=dict.fromkeys(PAIR))


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


# --- what one run computes -----------------------------------------------------------


def judged_models() -> dict[str, Forecaster]:
    """Naive and the models judged against it: the other baselines and the AR stand-in."""
    return {
        "naive": Naive(level=0.9),
        "drift": Drift(level=0.9),
        "seasonal_naive": SeasonalNaive(level=0.9),
        "moving_average": MovingAverage(level=0.9),
        "ar": AutoRegressive(order=5),
    }


def interval_coverage(rows: pd.DataFrame) -> float:
    """Share of actual closes inside ``[lower, upper]`` (metrics' ``coverage``)."""
    y = rows["y"].to_numpy(dtype="float64")
    inside = (y >= rows["lower"].to_numpy()) & (y <= rows["upper"].to_numpy())
    return float(inside.mean())


def pair_run(candles: pd.DataFrame, settings: BacktestSettings, seeds: tuple[int, int]) -> dict:
    """The exchangeable pair's p-values on one series, as the Compare page computes them.

    Returns ``("joint", loss)``: the two-sided p-value of :func:`joint_test` of
    ``noisy_a`` against ``noisy_b`` over steps 1..H (the verdict's test), and
    ``("step", loss, k)``: the step-``k`` Diebold-Mariano p-value, from
    :func:`diebold_mariano` with the arguments ``dm_table`` passes (the targets in time
    order, ``horizon=ceil(k / stride)``). ``test_calibration`` checks both against
    ``verdicts`` and ``dm_table`` themselves, which take longer (pandas pivots).
    """
    forecasts = pair_backtest(candles, settings, seeds).forecasts
    rows = {name: forecasts[forecasts["model"] == name] for name in PAIR}
    by_step = {
        name: {
            int(k): group.sort_values("timestamp")[["y", "yhat"]].to_numpy(dtype="float64")
            for k, group in frame.groupby("step")
        }
        for name, frame in rows.items()
    }
    stride = max(int(settings.stride), 1)
    out: dict = {}
    for loss in LOSSES:
        joint = joint_test(*rows.values(), loss=loss, stride=stride)
        out["joint", loss] = joint.pvalue
        for k, a in by_step["noisy_a"].items():
            b = by_step["noisy_b"][k]
            found = diebold_mariano(
                a[:, 0], a[:, 1], b[:, 1], horizon=math.ceil(k / stride), loss=loss, method="ewc"
            )
            out["step", loss, k] = found.pvalue
    return out


def judged_run(candles: pd.DataFrame, settings: BacktestSettings) -> dict:
    """One walk-forward of :func:`judged_models` and what the Compare page shows of it.

    Returns a flat dict of per-run values:

    * ``("reading", loss, model)``: each judged model's verdict against naive.
    * ``("dir", model)``: ``directional_test`` of the model's rows (the pooled
      ``directional_pvalue`` of ``score``) and ``("dir_step", model, k)`` of its step-``k``
      rows (the per-step one of ``score_by_horizon``).
    * ``("coverage", model)`` and ``("coverage_step", model, k)``: the share of closes
      inside the interval (``score``'s and ``score_by_horizon``'s ``coverage``).

    ``test_calibration`` checks these against ``score`` and ``score_by_horizon``, which
    compute every other metric too.
    """
    return summarise_judged(walk_forward(judged_models(), candles, settings, workers=1))


def summarise_judged(backtest: Backtest) -> dict:
    """The per-run values of :func:`judged_run` from its backtest."""
    out: dict = {}
    for loss in LOSSES:
        for model, found in verdicts(backtest, loss=loss).items():
            out["reading", loss, model] = found.reading
    forecasts = backtest.forecasts
    for model in DIRECTIONAL:
        rows = forecasts[forecasts["model"] == model]
        out["dir", model] = directional_test(rows)
        for k, at_step in rows.groupby("step"):
            out["dir_step", model, int(k)] = directional_test(at_step)
    for model in WITH_INTERVALS:
        rows = forecasts[forecasts["model"] == model]
        out["coverage", model] = interval_coverage(rows)
        for k, at_step in rows.groupby("step"):
            out["coverage_step", model, int(k)] = interval_coverage(at_step)
    return out
