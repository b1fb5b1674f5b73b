"""Prophet: trend plus seasonality, on log prices by default.

Prophet is imported inside :meth:`ProphetModel._fit`, never by ``import forecasting``.
It gets slow on long intraday histories (three years of 1h candles take over 30 s to
fit), so it is fitted on the last ``max_train_candles`` candles only: the screens say
so. Its ``algorithm='Newton'`` is a slower fallback, not a speed-up, so the default
L-BFGS stays.

Extra regressors come from the features, lagged by ``horizon`` candles: the value used
for a candle is the feature ``horizon`` candles earlier, so every regressor value needed
to forecast ``horizon`` candles ahead is already known at the origin.

New candles: Prophet's forecast depends only on time, so it cannot condition on candles
after its fit. ``predict(horizon, history=longer)`` refits it on exactly the candles up
to the new origin (see :meth:`Forecaster.updated`), and the walk-forward evaluation
chains such refits origin by origin. Each refit is warm-started: Stan's optimiser starts
from the previous fit's parameters (``k, m, sigma_obs, delta, beta``; Prophet's
"Updating fitted models" recipe) when their shapes match, else it starts cold. On the
last 3000 closed daily BTC/USDT candles (medians of CPU time, Stan included, on a busy
2-core machine) a cold fit takes 1.5-1.7 s and a chained warm-started refit 0.38 s, of
which about 0.25 s is Stan's optimiser; a 7-step predict takes 0.06 s. After 40 chained
refits the forecast is within 0.6 % of a cold fit's. The data goes to Stan as numpy
arrays, not the Python lists of Prophet's stock backend (the same numbers, so the same
fit bit for bit), and ``ujson`` (in requirements) writes stanio's JSON: the hand-off
takes about 26 ms, against 65 ms with the lists and 310 ms without ``ujson``.

Intervals
---------
Prophet's own interval (``interval="prophet"``) is the spread of its in-sample residuals
around its smooth trend, simulated forward. It is **not calibrated**: on a driftless
geometric random walk its 90 % interval covered about 52 % of the closes (10 runs x 24
origins, horizon 3, refitted at every origin). Prophet puts changepoints only in the
first 80 % of the history, so its trend is a straight line over the last 20 %; the
residual at the forecast origin (0.050 on average in log units, against an in-sample
spread of 0.031) carries into the forecast, and the simulation does not know it.

``interval="conformal"`` (the default) calibrates the interval on Prophet's own
out-of-sample errors by split conformal prediction (Vovk, Gammerman & Shafer,
*Algorithmic Learning in a Random World*, 2005; Lei, G'Sell, Rinaldo, Tibshirani &
Wasserman, "Distribution-free predictive inference for regression", JASA 2018) with
normalised scores (Papadopoulos, Gammerman & Vovk, "Normalized nonconformity measures
for regression conformal prediction", 2008; Lei et al. 2018, section 5.2, locally
weighted conformal inference). With ``H = horizon`` and ``C = calibration_origins``:

* A cold ``fit(candles)`` fits Prophet on the candles up to ``C H`` before the end,
  forecasts ``H`` steps, and refits (warm-started) ``H`` candles later, origin by
  origin: ``C`` origins ``H`` candles apart, so their targets do not overlap and the
  last target is the last candle given to ``fit`` (nothing after it is read). The fit on
  all the candles, warm-started from the last calibration refit, is the model's own.
  The refits use the same training window, denoising and lagged regressors as any fit.
* Each (origin, step ``k``) gives the score ``|y - yhat| / sigma_k`` on the modelled
  scale (log prices by default), for the real close ``y``. The ``C H`` scores are pooled
  and ``q`` is the ``k``-th smallest of the ``n`` there are, ``k = ceil((n + 1) level)``
  (:func:`pooled_conformal_quantile`); a target in a gap gives no score.
* The interval is ``exp(log yhat -/+ q sigma_k)`` in price (``yhat -/+ q sigma_k``
  without ``log_transform``, floored at 0 with a note): around Prophet's forecast,
  which it always contains.

The scale is ``sigma_k = sqrt(s_k^2 + r_0^2 + v_k)``, all known at the origin: ``s_k``
is Prophet's own predictive spread at step ``k``, ``(upper - lower) / (2 z)`` of its
simulated ``level`` interval (``z`` the standard normal's ``(1 + level) / 2`` quantile,
:func:`prophet_spread`); ``r_0`` is the fit's residual at the origin (the last close
minus Prophet's fitted value there), which carries into the forecast when prices are
persistent; ``v_k`` is the mean square of the ``k``-candle changes of the in-sample
residuals (:func:`residual_change_variance`): about ``k`` times the one-step variance
on a random walk, twice the residual variance for noise around the trend. Any scale
computed from the data up to the origin keeps the conformal guarantee; this one was
chosen by measurement. Pooled 90 % coverage (mean over runs, its SE) and mean
half-width in log units; horizon 3, ``C = 10``, 300 daily candles per run, one fold of
24 origins each refitted as in the walk-forward, each scale scored on the same fits:

========================================  ====================  ====================
process                                   ``s_k`` alone         ``sigma_k``
========================================  ====================  ====================
random walk, N(0, 0.02) (47 runs)         0.829 (0.033), 0.097  0.897 (0.016), 0.085
shuffled BTC daily returns (40 runs)      0.885 (0.032), 0.185  0.918 (0.016), 0.147
trend, weekly cycle, 1 % noise (24 runs)  0.900 (0.017), 0.018  0.901 (0.015), 0.019
========================================  ====================  ====================

With ``s_k`` alone the calibration is right only on average over runs, and then only
where errors are about the same size from one stretch to the next; ``r_0`` tracks the
stretch, so ``q`` varies less and the intervals are narrower. Per step, on the random
walk, coverage falls from 0.93 at step 1 to 0.86 at step 3 (the level holds pooled over
the steps, as calibrated); it is flat on the other two processes.

The guarantee assumes the calibration origins and the forecast's are exchangeable: a
change of regime after them breaks it, and so does a calibration made long before the
forecast. So the calibration is made once per walk-forward fold, at its cutoff, on the
errors just before it:

* Every ``fit(candles)`` calibrates on ``candles`` as above, **with or without**
  ``warm_start``: its ``q`` comes from the ``C`` origins before the end of ``candles``,
  the last target being their last candle (``calibration_end_``), and from nothing
  else. The walk-forward (:mod:`forecasting.evaluation.walkforward`) begins each fold
  with a cold ``fit(candles up to the cutoff)``, so each fold's interval is calibrated
  on Prophet's errors up to that fold's cutoff, never on an earlier fold's. Given a
  ``warm_start``, the chain still ignores it: its first fit is cold, because an
  optimum fitted on later candles would carry them into the forecast from an earlier
  calibration origin.
  Such a fit is therefore exactly the cold fit on the same candles (the one exception
  is below).
* A refit at a later origin, :meth:`updated` (``predict(horizon, history=longer)``,
  what the walk-forward does at every origin of a fold after its cutoff), does **not**
  recalibrate: it is one Prophet fit warm-started from the previous origin's, and it
  inherits the previous fit's ``q``, scores, origins and ``calibration_end_``, while
  ``s_k``, ``r_0`` and ``v_k`` are the refit's own. The calibration is paid once per
  fold, not per origin. ``fit`` has no argument saying "new fold": the signal is the
  call, ``fit`` at a cutoff and :meth:`updated` at the origins after it, as
  :mod:`forecasting.models.base` lays the walk-forward out.
* :meth:`updated` recalibrates instead (on its own candles, as ``fit`` does) when there
  is nothing usable to inherit, rather than carry it to the fold's end: other settings,
  a ``q`` of 0 or NaN (which no calibration here gives), or an unbounded ``q``. One
  unbounded for want of candles (the chain was not run: too few candles, or ``C H``
  below the scores the level needs) is recomputed at the next refit, for one Prophet
  fit as before (warm-started: the exception above), so an interval unbounded at a
  short cutoff is bounded from the first origin with enough candles. One from a chain
  that ran (targets in gaps, a zero scale, closes that never changed) is recomputed
  once the refit's candles reach ``C H`` past ``calibration_end_``, where every
  calibration target is new: a chain at every origin would cost ten times the fold (a
  stablecoin's closes may not change for months), and one a candle later would re-read
  mostly the same targets.

A ``q`` of zero (at least ``k`` of the errors were zero: closes that never changed)
would be an interval of zero width, which claims certainty: the interval is unbounded
instead (``q`` is stored as ``inf``), with a note saying why.

Cost, on the last 3000 closed daily BTC/USDT candles (medians of CPU time, Stan
included, on a busy 2-core machine; ``horizon`` 7): a cold fit with the calibration
takes about 11 s, against 1.6 s for Prophet's own interval (one cold fit, then ten
refits 7 candles apart at 0.7-1.3 s each, and a 0.1 s forecast at each origin); a warm
refit (0.57 s) and a 7-step predict (0.06 s) cost what they did. In a walk-forward the
calibration is one cold fit per fold (the fit at its cutoff): a fold of 120 origins
refitted at about 0.6 s each takes about 75 s, so about 13 % more. (Measured with
Stan's default L-BFGS memory; with :data:`LBFGS_HISTORY` a chain of 16 fits spends 38 %
less time in Stan, and a warm refit takes about 0.4 s: ``docs/benchmarks.md``.)

Too few candles: the chain needs Prophet's minimum (10 candles, more with regressors)
before its first origin. With fewer than that plus ``C H`` candles it uses as many
origins as fit, if their scores reach the level (:func:`calibration_windows_needed`: 9
for 90 %, 19 for 95 %); otherwise Prophet is fitted once and the interval is unbounded
(lower 0, upper ``inf``) with a note saying why and what to do. So is a step beyond
``horizon``, which was not calibrated.

Prophet's simulations draw from numpy's legacy generator. Each predict draws from its
own ``np.random.RandomState(seed)`` (the stream ``np.random.seed(seed)`` gives, so the
intervals are those of stock Prophet seeded globally), never from numpy's global
generator: predictions in other threads or sessions neither disturb it nor are
disturbed by it. The same seed gives the same interval, conformal or not.

With ``log_transform=False`` Prophet can forecast prices below zero; they are floored
at 0 and the forecast carries a note saying where.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import logging
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from statistics import NormalDist
from typing import Any, Self

import numpy as np
import pandas as pd

from forecasting.errors import Cancelled, ConfigurationError, InsufficientHistory, ModelFailed
from forecasting.features import compute_features, parse_features, warmup_length
from forecasting.models.base import Capabilities, Forecaster, ProgressCallback
from forecasting.models.lstm import calibration_windows_needed, conformal_quantile
from forecasting.ohlcv import future_timestamps
from forecasting.preprocessing import DENOISERS, denoise
from forecasting.ranges import HORIZON, LEVEL, SEED, Range

__all__ = ["INTERVALS", "ProphetModel", "normalised_scores", "pooled_conformal_quantile"]

#: How the interval is made: calibrated by split conformal, or Prophet's own simulation.
INTERVALS = ("conformal", "prophet")
# A seasonality is "auto" (Prophet decides from the data's span), on or off.
SEASONALITY = ("auto", True, False)

# The parameters Stan optimises, as Prophet names them.
_STAN_PARAMS = ("k", "m", "sigma_obs", "delta", "beta")
#: Past updates Stan's L-BFGS keeps (its ``history_size``; Stan's default is 5). Prophet's
#: posterior is flat along its changepoint terms (a Laplace prior), where a short memory
#: crawls: on 3000 daily candles a cold fit took 3494 iterations with 5 and 998 with 50,
#: and a chain of 15 warm refits 3 candles apart 9.3 s of Stan with 5 and 5.8 s with 50,
#: stopping at the same tolerance (Stan's relative-gradient test) with log densities
#: within 2.5 of each other either way (``bench/prophet_optimizer_bench.py``).
LBFGS_HISTORY = 50

# The model whose ``updated`` is running in this thread (or task): a fit warm-started from
# it is a refit at a later origin of its fold, which inherits its calibration.
_REFITTING: contextvars.ContextVar[Any] = contextvars.ContextVar("prophet_refitting", default=None)


def _quiet() -> None:
    # cmdstanpy logs every optimisation at INFO; the screens show progress instead.
    for name in ("cmdstanpy", "prophet", "prophet.plot"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("cmdstanpy").disabled = True
    # "Optimization terminated abnormally. Falling back to Newton." is Prophet retrying
    # its fit with another optimiser, which then succeeds (a failure still raises): on a
    # command line's stderr it reads as an error the user must act on, and there is none.
    logging.getLogger("prophet.models").setLevel(logging.ERROR)


# --- a local random generator for Prophet's simulations ----------------------------------
#
# Prophet draws its interval simulations with ``np.random.normal(...)``,
# ``np.random.poisson(...)`` and so on, looking ``np`` up in the globals of
# ``prophet.forecaster``. Seeding numpy's global generator around ``predict`` (as this
# model once did) is not thread-safe: a prediction in another thread (another Streamlit
# session) draws from, or reseeds, the same generator in between. So the Prophet
# subclass below rebuilds every method whose code mentions ``random`` from the same code
# object with a copy of the module's globals in which ``np`` is a proxy: numpy itself,
# except that ``np.random.<name>`` resolves, at each call, to the calling thread's
# ``RandomState`` when :func:`_local_random` has set one (and to numpy's own module
# otherwise, so a plain ``predict`` behaves exactly as stock Prophet). Rebuilding from
# the code objects changes no line of Prophet's and patches nothing global, and finding
# the methods by what their code mentions also covers any sibling a later Prophet adds.


class _ThreadRandom:
    """``np.random`` for the rebuilt methods: this thread's generator, when one is set."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        rng = getattr(_local, "rng", None)
        if rng is not None and hasattr(rng, name):
            return getattr(rng, name)
        return getattr(np.random, name)


class _NumpyWithThreadRandom:
    """numpy, except that ``.random`` is :class:`_ThreadRandom`."""

    __slots__ = ()
    random = _ThreadRandom()

    def __getattr__(self, name: str) -> Any:  # everything but ``random``
        return getattr(np, name)


_local = threading.local()


@contextmanager
def _local_random(seed: int) -> Iterator[None]:
    """Within this block, this thread's Prophet draws come from ``RandomState(seed)``."""
    previous = getattr(_local, "rng", None)
    _local.rng = np.random.RandomState(seed)  # noqa: NPY002 - Prophet's legacy stream
    try:
        yield
    finally:
        _local.rng = previous


def _mentions_random(code: types.CodeType) -> bool:
    """True when ``code`` (or code nested in it) reads an attribute or global ``random``."""
    return "random" in code.co_names or any(
        isinstance(const, types.CodeType) and _mentions_random(const) for const in code.co_consts
    )


def _with_globals(function: types.FunctionType, namespace: dict) -> types.FunctionType:
    rebuilt = types.FunctionType(
        function.__code__, namespace, function.__name__, function.__defaults__, function.__closure__
    )
    rebuilt.__kwdefaults__ = function.__kwdefaults__
    return functools.update_wrapper(rebuilt, function, updated=())


# --- a faster hand-off to Stan -------------------------------------------------------------


def _prepare_arrays(init: dict, data: dict) -> tuple[dict, dict]:
    """Prophet's ``prepare_data`` without ``.tolist()``: the same numbers, as arrays.

    ``stanio`` converts a numpy array with one ``tolist()`` call, but walks a list element
    by element in Python before ``ujson`` writes it: for 3000 daily candles (26
    seasonality columns) the hand-off takes about 26 ms this way and 65 ms with
    Prophet's lists (about 310 ms either way without ``ujson``).
    """
    stan_data = {name: data[name] for name in ("T", "S", "K", "tau", "trend_indicator", "sigmas")}
    for name in ("y", "t", "cap", "t_change", "s_a", "s_m"):
        stan_data[name] = np.asarray(data[name])
    stan_data["X"] = np.asarray(data["X"])
    stan_init = {
        "k": init["k"],
        "m": init["m"],
        "delta": np.asarray(init["delta"]),
        "beta": np.asarray(init["beta"]),
        "sigma_obs": init["sigma_obs"],
    }
    return stan_init, stan_data


@functools.cache
def _prophet_classes() -> dict[str, type]:
    """Build (once) the Prophet and Stan-backend subclasses this model uses.

    They subclass Prophet's own classes, so they are built on first use; the module's
    ``__getattr__`` hands them to ``pickle``.
    """
    import prophet.forecaster
    from prophet.models import CmdStanPyBackend

    class _ArrayBackend(CmdStanPyBackend):
        """Prophet's CmdStanPy backend with arrays handed to Stan, and a strict warm start.

        ``warm_started`` says whether the last fit started from the given ``init``.
        """

        warm_started = False
        prepare_data = staticmethod(_prepare_arrays)

        def fit(self, stan_init: dict, stan_data: dict, **kwargs: Any) -> Any:
            if "algorithm" not in kwargs and float(stan_data["T"]) >= 100:
                # Prophet's own choice of L-BFGS (Newton below 100 rows), with a longer
                # memory (LBFGS_HISTORY).
                kwargs.update(algorithm="LBFGS", history_size=LBFGS_HISTORY)
            try:
                return super().fit(stan_init, stan_data, **kwargs)
            except ValueError as exc:
                # L-BFGS failed and Prophet fell back to Newton, which takes no history.
                if "history_size" not in kwargs or "history_size" not in str(exc):
                    raise
                kwargs.pop("history_size")
                kwargs["algorithm"] = "Newton"
                return super().fit(stan_init, stan_data, **kwargs)

        def sanitize_custom_inits(self, default_inits: dict, custom_inits: dict) -> dict:
            # Prophet's own version keeps k, m and sigma_obs even when delta or beta
            # has another shape; here it is all of the warm start or none of it.
            usable = all(
                np.shape(default_inits[name]) == np.shape(custom_inits[name])
                for name in ("delta", "beta")
            ) and all(np.isfinite(custom_inits[name]).all() for name in _STAN_PARAMS)
            usable = usable and float(custom_inits["sigma_obs"]) > 0
            self.warm_started = bool(usable)
            if not usable:
                return default_inits
            return {
                "k": float(custom_inits["k"]),
                "m": float(custom_inits["m"]),
                "sigma_obs": float(custom_inits["sigma_obs"]),
                "delta": np.asarray(custom_inits["delta"], dtype="float64"),
                "beta": np.asarray(custom_inits["beta"], dtype="float64"),
            }

    namespace = dict(vars(prophet.forecaster))
    namespace["np"] = _NumpyWithThreadRandom()
    methods: dict[str, Any] = {}
    for name, attribute in vars(prophet.forecaster.Prophet).items():
        wrapper = type(attribute) if isinstance(attribute, staticmethod | classmethod) else None
        function = attribute.__func__ if wrapper else attribute
        if isinstance(function, types.FunctionType) and _mentions_random(function.__code__):
            rebuilt = _with_globals(function, namespace)
            methods[name] = wrapper(rebuilt) if wrapper else rebuilt

    def _load_stan_backend(self, stan_backend: str | None) -> None:
        self.stan_backend = _ArrayBackend()

    base_matrix = prophet.forecaster.Prophet.regressor_column_matrix
    matrices: dict[tuple, tuple[pd.DataFrame, dict]] = {}
    matrices_lock = threading.Lock()

    def regressor_column_matrix(self, seasonal_features: pd.DataFrame, modes: dict):
        # Which feature columns make up which component: a pure function of the
        # columns' names and the model's settings, which Prophet rebuilds with a
        # crosstab at every fit and predict (about a third of a refit's Python time).
        trained = self.train_component_cols
        key = (
            tuple(seasonal_features.columns),
            tuple((mode, tuple(names)) for mode, names in sorted(modes.items())),
            None if self.train_holiday_names is None else tuple(self.train_holiday_names),
            tuple((name, props["mode"]) for name, props in self.extra_regressors.items()),
            self.holidays_mode,
            None
            if trained is None
            else (tuple(trained.columns), tuple(trained.index), trained.to_numpy().tobytes()),
        )
        with matrices_lock:
            known = matrices.get(key)
        if known is None:
            known = base_matrix(self, seasonal_features, copy.deepcopy(modes))
            with matrices_lock:
                if len(matrices) >= 64:
                    matrices.clear()
                matrices[key] = known
        component_cols, updated = known
        modes.clear()  # Prophet's own version updates the dictionary it is given
        modes.update(copy.deepcopy(updated))
        return component_cols.copy(), modes

    def fourier_series(dates: pd.Series, period: float, series_order: int) -> np.ndarray:
        # Prophet's own, with the loop over orders on a numpy array rather than a
        # Series: the same float64 operations in the same order (bit-identical), at a
        # tenth of the time (it ran four times per refit and forecast).
        if not (series_order >= 1):
            raise ValueError("series_order must be >= 1")
        epoch = pd.Timestamp("1970-01-01", tz=dates.dt.tz)
        t = ((dates - epoch).dt.total_seconds() / (24 * 60 * 60)).to_numpy(dtype="float64")
        x_t = np.pi * 2 * t
        components = np.empty((dates.shape[0], 2 * series_order))
        for i in range(series_order):
            c = (i + 1) / period * x_t
            components[:, 2 * i] = np.sin(c)
            components[:, (2 * i) + 1] = np.cos(c)
        return components

    seeded = type(
        "_SeededProphet",
        (prophet.forecaster.Prophet,),
        {
            **methods,
            "_load_stan_backend": _load_stan_backend,
            "regressor_column_matrix": regressor_column_matrix,
            "fourier_series": staticmethod(fourier_series),
            "__module__": __name__,
            "__doc__": "Prophet drawing from the calling thread's generator (see module).",
        },
    )
    for cls in (seeded, _ArrayBackend):
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
    return {"_SeededProphet": seeded, "_ArrayBackend": _ArrayBackend}


def __getattr__(name: str) -> type:
    # pickle looks the subclasses up here (they are built when first needed).
    if name in ("_SeededProphet", "_ArrayBackend"):
        return _prophet_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ProphetModel(Forecaster):
    """Facebook/Meta Prophet behind the common interface.

    Parameters
    ----------
    changepoint_prior_scale
        Trend flexibility (Prophet's default 0.05); above 0.
    seasonality_prior_scale
        Seasonality flexibility (Prophet's default 10); above 0. Smaller values damp the
        weekly and yearly terms.
    weekly_seasonality, yearly_seasonality, daily_seasonality
        ``"auto"``, ``True`` or ``False`` as in Prophet.
    seasonality_mode
        ``"additive"`` or ``"multiplicative"``.
    log_transform
        Model log prices (multiplicative moves become additive), then exponentiate.
        Without it a forecast below zero is floored at 0, with a note.
    level
        Interval coverage aimed at (also Prophet's ``interval_width``).
    interval
        ``"conformal"`` (default): Prophet's simulated spread, scaled by split-conformal
        calibration on its own out-of-sample errors inside the training candles (see
        module docs), so that the interval covers ``level``. ``"prophet"``: Prophet's own
        simulated interval as it is, which is **not calibrated** (on a driftless random
        walk its 90 % interval covered about 52 % of closes).
    calibration_origins
        Origins of the conformal calibration (at least 1), ``horizon`` candles apart at
        the end of the training candles; each gives ``horizon`` scores.
    max_train_candles
        Fit on at most this many of the latest candles (speed; see module docs).
    regressors
        Feature specs used as extra regressors, lagged by ``horizon``; ``""`` for none.
    horizon
        The lag of the regressors, and so the longest forecast they allow; with the
        conformal interval also the steps calibrated (a step beyond it is unbounded).
    uncertainty_samples
        Simulations behind the interval (at least 1).
    seed
        Seed for those simulations: the same seed gives the same interval, whatever
        other threads do meanwhile.
    denoise, denoise_window
        Optional noise reduction (``"none"``, ``"hampel"``, ``"median"``) of the training
        prices over a trailing window (see :mod:`forecasting.preprocessing`); forecasts
        are still scored against the real closes.

    Attributes
    ----------
    model_
        The fitted ``prophet.Prophet``.
    train_candles_
        How many of the latest candles the fit used.
    regressor_columns_
        Prophet's names of the extra regressors.
    warm_started_
        Whether the optimiser started from ``warm_start``'s parameters (False for a cold
        fit, or when their shapes differ: other seasonalities, regressors or number of
        changepoints).
    interval_quantile_
        With ``interval="conformal"``: the conformal ``q`` (the interval is ``q`` times
        Prophet's spread either side of the forecast); infinite when the interval is
        unbounded (``interval_notes_`` says why; never zero, which would be an interval
        of zero width). Computed by every ``fit`` (warm-started or not); inherited by a
        refit at a later origin (:meth:`updated`), an unbounded one only for a while
        (module docs).
    calibration_scores_
        The normalised scores, one row per calibration origin and one column per step
        (NaN where the target candle is missing).
    calibration_origins_
        Open times of the last candle of each calibration fit (the origins).
    calibration_end_
        Open time of the last candle the calibration read: the last candle of the fit
        that calibrated (in a walk-forward, the fold's cutoff). A refit that inherits
        the calibration keeps it.
    interval_notes_
        Why the interval is unbounded, when it is.
    residuals_
        With ``interval="conformal"``: the real closes minus Prophet's fitted values on
        the candles fitted (modelled scale); the last is ``r_0``, their changes give
        ``v_k`` (module docs).
    """

    alias = "prophet"
    title = "Prophet"
    capabilities = Capabilities(
        conditions_on_history=False,
        warm_starts=True,
        seeded=True,
        seed_changes_forecast=False,
        trained_horizon=True,
        interval_methods=INTERVALS,
        needs_positive_prices=True,
    )
    # The upper bounds keep one fit within seconds and one comparison within minutes on a
    # shared server: Prophet refits at every origin and at every calibration origin.
    parameter_ranges = {
        # Prophet's own docs tune it within 0.001 .. 0.5; above 10 the trend is all noise.
        "changepoint_prior_scale": Range(0.0, 10.0, lo_open=True),
        # Prophet's docs tune it within 0.01 .. 10 (its default); above 100 it is unbounded.
        "seasonality_prior_scale": Range(0.0, 100.0, lo_open=True),
        "weekly_seasonality": Range(choices=SEASONALITY),
        "yearly_seasonality": Range(choices=SEASONALITY),
        "daily_seasonality": Range(choices=SEASONALITY),
        "seasonality_mode": Range(choices=("additive", "multiplicative")),
        "level": LEVEL,
        "interval": Range(choices=INTERVALS),
        "calibration_origins": Range(1, 100, integer=True),
        # iloc[-0:] is the whole frame, and Prophet needs a few candles to fit at all.
        "max_train_candles": Range(10, 20_000, integer=True),
        "horizon": HORIZON,
        # Its interval is simulated: at least one path.
        "uncertainty_samples": Range(1, 2000, integer=True),
        "seed": SEED,
        "denoise": Range(choices=DENOISERS),
        "denoise_window": Range(2, 1000, integer=True),
    }

    def __init__(
        self,
        changepoint_prior_scale: float = 0.05,
        weekly_seasonality: bool | str = "auto",
        yearly_seasonality: bool | str = "auto",
        daily_seasonality: bool | str = "auto",
        seasonality_mode: str = "additive",
        seasonality_prior_scale: float = 10.0,
        log_transform: bool = True,
        level: float = 0.9,
        interval: str = "conformal",
        calibration_origins: int = 10,
        max_train_candles: int = 3000,
        regressors: str = "",
        horizon: int = 7,
        uncertainty_samples: int = 300,
        seed: int = 42,
        denoise: str = "none",
        denoise_window: int = 7,
    ) -> None:
        self.changepoint_prior_scale = changepoint_prior_scale
        self.weekly_seasonality = weekly_seasonality
        self.yearly_seasonality = yearly_seasonality
        self.daily_seasonality = daily_seasonality
        self.seasonality_mode = seasonality_mode
        self.seasonality_prior_scale = seasonality_prior_scale
        self.log_transform = log_transform
        self.level = level
        self.interval = interval
        self.calibration_origins = calibration_origins
        self.max_train_candles = max_train_candles
        self.regressors = regressors
        self.horizon = horizon
        self.uncertainty_samples = uncertainty_samples
        self.seed = seed
        self.denoise = denoise
        self.denoise_window = denoise_window

    def _specs(self):
        return parse_features(self.regressors) if self.regressors else ()

    def _required_history(self) -> int:
        return 10 + (warmup_length(self._specs()) + int(self.horizon) if self.regressors else 0)

    def _regressor_frame(self, candles: pd.DataFrame) -> pd.DataFrame:
        features = compute_features(candles, self._specs(), drop_warmup=False)
        lagged = features.shift(int(self.horizon))
        lagged.columns = [f"reg_{c}" for c in lagged.columns]
        return lagged

    def _frame(self, candles: pd.DataFrame) -> pd.DataFrame:
        close = candles["close"].astype("float64")
        frame = pd.DataFrame(
            {
                "ds": candles.index.tz_convert("UTC").tz_localize(None),
                "y": (np.log(close) if self.log_transform else close).to_numpy(),
            }
        )
        if self.regressors:
            regressors = self._regressor_frame(candles).reset_index(drop=True)
            frame = pd.concat([frame, regressors], axis=1)
        return frame

    # --- fitting ------------------------------------------------------------------------

    def updated(self, history: pd.DataFrame) -> Self:
        """This model refitted on ``history`` (warm-started from this fit), keeping its
        conformal calibration when there is a usable one (module docs): a refit at a
        later origin of the same fold. A ``fit`` is a new calibration."""
        token = _REFITTING.set(self)
        try:
            return super().updated(history)
        finally:
            _REFITTING.reset(token)

    def _fit(
        self, candles: pd.DataFrame, *, progress=None, should_stop=None, warm_start=None
    ) -> None:
        _quiet()
        init_from = warm_start.model_ if warm_start is not None else None
        if self.interval == "prophet":
            self.warm_started_ = self._fit_prophet(candles, init_from, progress)
            return
        if warm_start is not None and _inherits_calibration(warm_start, self, candles):
            # A refit at a later origin of the fold keeps the fold's calibration.
            for name in _CALIBRATION:
                setattr(self, name, copy.copy(getattr(warm_start, name)))
            self.warm_started_ = self._fit_prophet(candles, init_from, progress)
            return
        # A fit at a (fold's) cutoff, or a refit with nothing usable to inherit.
        self.warm_started_ = self._calibrate(candles, progress, should_stop, init_from)

    def _training_frame(self, candles: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """What Prophet is fitted on (the latest ``max_train_candles``, every value
        defined, denoised), and the real closes of those rows on the modelled scale."""
        self.train_candles_ = min(len(candles), int(self.max_train_candles))
        frame = self._frame(candles).iloc[-self.train_candles_ :].dropna()
        actual = frame["y"].to_numpy()  # the real closes, whatever the denoising
        frame["y"] = denoise(frame[["y"]], self.denoise, self.denoise_window)["y"].to_numpy()
        usable = int(frame["y"].notna().sum())
        if usable < 2:  # Prophet's own minimum (the base class asks for 10 candles)
            undefined = f" ({self.regressors} undefined on the others)" if self.regressors else ""
            raise InsufficientHistory(
                f"Prophet needs at least 2 candles with every value defined; {usable} of "
                f"the last {self.train_candles_} have them{undefined}. Choose a longer date "
                "range or other regressors."
            )
        return frame, actual

    def _fit_prophet(
        self,
        candles: pd.DataFrame,
        init_from: Any,
        progress: ProgressCallback | None,
        span: tuple[float, float] = (0.0, 1.0),
    ) -> bool:
        """Fit Prophet on ``candles`` into ``model_`` (Stan starting from ``init_from``'s
        optimum when given); True when that warm start was used."""
        seeded_prophet = _prophet_classes()["_SeededProphet"]
        frame, actual = self._training_frame(candles)
        try:
            self.model_ = seeded_prophet(
                changepoint_prior_scale=float(self.changepoint_prior_scale),
                weekly_seasonality=_seasonality(self.weekly_seasonality),
                yearly_seasonality=_seasonality(self.yearly_seasonality),
                daily_seasonality=_seasonality(self.daily_seasonality),
                seasonality_mode=self.seasonality_mode,
                seasonality_prior_scale=float(self.seasonality_prior_scale),
                interval_width=float(self.level),
                uncertainty_samples=int(self.uncertainty_samples),
            )
        except ValueError as exc:  # Prophet checks its settings when constructed
            raise ConfigurationError(f"Prophet refused its settings: {exc}") from exc
        self.regressor_columns_ = [c for c in frame.columns if c.startswith("reg_")]
        for column in self.regressor_columns_:
            self.model_.add_regressor(column)
        # Prophet's "Updating fitted models": start Stan from the previous fit's optimum.
        init = {"init": _warm_init(init_from)} if init_from is not None else {}
        if progress is not None:
            progress("fit", span[0], {"candles": len(frame)})
        backend = self.model_.stan_backend
        try:
            self.model_.fit(frame, **init)
        except (ValueError, RuntimeError) as exc:
            raise _fit_error(exc, len(frame)) from exc
        finally:
            # Stan's output files are read into params_; a chain of refits (one per
            # origin) would otherwise pile them up in the temporary folder until exit.
            backend.cleanup()
        if self.interval == "conformal":  # Prophet fits the rows with a value, in order
            self.residuals_ = actual[frame["y"].notna().to_numpy()] - _in_sample(self.model_)
        if progress is not None:
            progress("fit", span[1], {"candles": len(frame)})
        return bool(init) and backend.warm_started

    def _calibrate(
        self,
        candles: pd.DataFrame,
        progress: ProgressCallback | None,
        should_stop: Callable[[], bool] | None,
        init_from: Any = None,
    ) -> bool:
        """The calibration chain, ending with the fit on all of ``candles`` (module docs).

        The chain reads ``candles`` only, and starts cold. ``init_from`` (a fitted
        Prophet) warm-starts only the single fit made when there are too few candles for
        the chain. Returns whether that warm start was used.
        """
        steps, wanted, level = int(self.horizon), int(self.calibration_origins), float(self.level)
        needed = calibration_windows_needed(level)
        origins = min(wanted, (len(candles) - self._required_history()) // steps)
        self.calibration_scores_ = np.empty((0, steps))
        self.calibration_origins_ = pd.DatetimeIndex([], tz="UTC", name="timestamp")
        self.calibration_end_ = candles.index[-1]
        self.interval_notes_ = ()
        if origins * steps < needed:  # the chain cannot reach the level: do not run it
            warm_started = self._fit_prophet(candles, init_from, progress)
            self.interval_quantile_ = np.inf
            self.interval_notes_ = (self._too_few_note(len(candles), needed, wanted, steps, level),)
            return warm_started
        self._training_frame(candles)  # unusable candles: say so for all of them
        ends = [len(candles) - (origins - j) * steps for j in range(origins)]
        scores = np.full((origins, steps), np.nan)
        previous = None
        for j, end in enumerate(ends):
            _stop_if_asked(should_stop)
            history = candles.iloc[:end]
            span = (j / (origins + 1), (j + 1) / (origins + 1))
            try:
                self._fit_prophet(history, previous, progress, span)
                timestamps, centre, scale = self._scaled_forecast(steps, history)
            except (InsufficientHistory, ModelFailed) as exc:
                raise type(exc)(
                    f"Prophet's interval calibration (a fit on the first {end} of the "
                    f"{len(candles)} candles) failed: {exc}"
                ) from (exc.__cause__ or exc)
            close = candles["close"].reindex(timestamps).to_numpy(dtype="float64")
            actual = np.log(close) if self.log_transform else close
            scores[j] = normalised_scores(actual, centre, scale)
            previous = self.model_
        _stop_if_asked(should_stop)
        self._fit_prophet(candles, previous, progress, (origins / (origins + 1), 1.0))
        self.calibration_scores_ = scores
        self.calibration_origins_ = candles.index[[end - 1 for end in ends]]
        quantile = pooled_conformal_quantile(scores, level)
        if not np.isfinite(quantile):
            self.interval_notes_ = (self._unbounded_scores_note(scores, needed),)
        elif not quantile > 0:  # a zero-width interval would claim certainty
            quantile = np.inf
            self.interval_notes_ = (self._zero_scores_note(scores),)
        self.interval_quantile_ = float(quantile)
        return False

    def _too_few_note(self, n: int, needed: int, wanted: int, steps: int, level: float) -> str:
        least = -(-needed // steps)  # origins for ``needed`` scores
        if wanted * steps < needed:
            return (
                f"Prophet's interval is unbounded: {wanted} calibration origin(s) x {steps} "
                f"step(s) give {wanted * steps} scores, fewer than the {needed} a "
                f"{level * 100:g} % interval needs (split-conformal rank ceil((n + 1) x "
                f"{level:g}) must not exceed n). Raise calibration_origins to at least {least}."
            )
        first = self._required_history()
        return (
            f"Prophet's interval is unbounded: calibrating a {level * 100:g} % interval needs "
            f"{needed} out-of-sample errors, from {least} origin(s) {steps} candle(s) apart "
            f"after Prophet's first {first} candles, so at least {first + least * steps} "
            f"candles; got {n}. Choose a longer date range."
        )

    def _zero_scores_note(self, scores: np.ndarray) -> str:
        known = scores[~np.isnan(scores)]
        return (
            f"Prophet's interval is unbounded: {int((known == 0).sum())} of its {known.size} "
            "calibration errors were zero (the closes did not change), and a zero-width "
            f"{float(self.level) * 100:g} % interval would claim certainty."
        )

    def _unbounded_scores_note(self, scores: np.ndarray, needed: int) -> str:
        level = float(self.level)
        n = int((~np.isnan(scores)).sum())
        if n < needed:
            return (
                f"Prophet's interval is unbounded: {n} of its {scores.size} calibration "
                f"targets are candles that exist, fewer than the {needed} a {level * 100:g} % "
                "interval needs (the others fall in gaps). Choose a range with fewer gaps "
                "or raise calibration_origins."
            )
        return (
            f"Prophet's interval is unbounded: its simulated spread was zero at "
            f"{int(np.isinf(scores).sum())} of {n} calibration steps, so no finite multiple "
            f"of it reaches a {level * 100:g} % interval. Raise uncertainty_samples (now "
            f"{self.uncertainty_samples})."
        )

    # --- forecasting --------------------------------------------------------------------

    def _simulate(self, horizon: int, history: pd.DataFrame):
        """Prophet's forecast from the end of ``history``: ``(timestamps, yhat,
        yhat_lower, yhat_upper)``, on the modelled scale (log prices by default)."""
        timestamps = future_timestamps(
            history.index[-1], horizon, self.timeframe_, calendar=self.calendar_
        )
        future = pd.DataFrame({"ds": timestamps.tz_convert("UTC").tz_localize(None)})
        if self.regressor_columns_:
            # Lagged features for the future candles come from candles up to the origin.
            specs = self._specs()
            features = compute_features(history, specs, drop_warmup=False)
            values = features.iloc[len(features) - int(self.horizon) :].iloc[:horizon]
            for column in features.columns:
                future[f"reg_{column}"] = values[column].to_numpy()
        try:
            with _local_random(int(self.seed)):  # never numpy's global generator
                predicted = self.model_.predict(future)
        except ValueError as exc:  # e.g. a regressor undefined at the origin
            raise ModelFailed(f"Prophet could not forecast from this origin: {exc}") from exc
        centre, lower, upper = (
            predicted[column].to_numpy() for column in ("yhat", "yhat_lower", "yhat_upper")
        )
        return timestamps, centre, lower, upper

    def _scaled_forecast(self, horizon: int, history: pd.DataFrame):
        """``(timestamps, yhat, scale)`` on the modelled scale, from the end of the fit:
        the centre of the conformal interval and the per-step scale of its scores,
        ``sqrt(s_k^2 + r_0^2 + v_k)`` (module docs)."""
        timestamps, centre, lower, upper = self._simulate(horizon, history)
        spread = prophet_spread(lower, upper, float(self.level))
        change = residual_change_variance(self.residuals_, horizon)
        scale = np.sqrt(spread**2 + self.residuals_[-1] ** 2 + change)
        return timestamps, centre, scale

    def _predict(self, horizon: int, history: pd.DataFrame):
        if self.regressors and horizon > int(self.horizon):
            raise ConfigurationError(
                f"Prophet's regressors are lagged {self.horizon} candles, so it can forecast "
                f"at most {self.horizon} ahead; asked for {horizon}."
            )
        notes: list[str] = []
        if self.interval == "conformal":
            _, centre, scale = self._scaled_forecast(horizon, history)
            lower, upper, notes = self._conformal_bounds(centre, scale)
        else:
            _, centre, lower, upper = self._simulate(horizon, history)
        if self.log_transform:
            with np.errstate(over="ignore"):  # an unbounded side is 0 or inf in price
                price_upper = np.exp(upper)
            if not notes and not np.isfinite(price_upper).all():
                # A finite bound on the log scale so wide that it overflows in price (a
                # calibration made on a nearly flat stretch): unbounded, and said so.
                notes = [
                    "Prophet's interval is unbounded: its calibrated width overflows in price "
                    "(the calibration errors were measured against a spread near zero)."
                ]
            return np.exp(centre), np.exp(lower), price_upper, tuple(notes)
        # An unbounded lower side is 0, as a price is bounded below; a finite bound or a
        # forecast below zero is floored with a note.
        notes += _below_zero_notes(centre, np.where(np.isfinite(lower), lower, 0.0))
        return np.maximum(centre, 0.0), np.maximum(lower, 0.0), np.maximum(upper, 0.0), tuple(notes)

    def _conformal_bounds(self, centre: np.ndarray, scale: np.ndarray):
        """``centre -/+ q scale`` per step, with the notes to show."""
        steps = np.arange(1, len(centre) + 1)
        calibrated = steps <= int(self.horizon)
        with np.errstate(invalid="ignore"):  # inf x 0 where the scale is zero
            half = np.where(calibrated & (scale > 0), self.interval_quantile_ * scale, np.inf)
        notes = []
        if not np.isfinite(self.interval_quantile_):
            notes.extend(self.interval_notes_)
        elif not calibrated.all() or not (scale > 0).all():
            if not calibrated.all():
                notes.append(
                    f"Prophet's interval is calibrated for {self.horizon} step(s) ahead (its "
                    f"horizon setting); steps {int(self.horizon) + 1}-{len(centre)} are "
                    f"unbounded. Set horizon to at least {len(centre)}."
                )
            zero = int((calibrated & ~(scale > 0)).sum())
            if zero:
                notes.append(
                    f"Prophet's simulated spread is zero at {zero} of {len(centre)} steps, "
                    "where the interval is unbounded. Raise uncertainty_samples (now "
                    f"{self.uncertainty_samples})."
                )
        return centre - half, centre + half, notes


#: The fitted attributes of the conformal interval, inherited by a refit at a later origin.
_CALIBRATION = (
    "interval_quantile_",
    "calibration_scores_",
    "calibration_origins_",
    "calibration_end_",
    "interval_notes_",
)


def _inherits_calibration(
    previous: ProphetModel, model: ProphetModel, candles: pd.DataFrame
) -> bool:
    """Whether ``model``, being fitted on ``candles`` warm-started from ``previous``,
    inherits its calibration instead of calibrating (module docs): only a refit at a
    later origin (``previous.updated``) with the same settings, of a ``q`` finite and
    above zero; or of an unbounded one (``inf``) from a chain that ran, until every
    calibration target would be new."""
    if _REFITTING.get() is not previous or previous.get_params() != model.get_params():
        return False
    if not all(hasattr(previous, name) for name in _CALIBRATION):
        return False
    q = float(previous.interval_quantile_)
    if 0.0 < q < np.inf:
        return True
    if q != np.inf or len(previous.calibration_scores_) == 0:
        return False  # 0 or NaN (no calibration gives them), or the chain was not run
    later = int((candles.index > previous.calibration_end_).sum())
    return later < int(model.calibration_origins) * int(model.horizon)


def _stop_if_asked(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled("Training was cancelled.")


def prophet_spread(lower: np.ndarray, upper: np.ndarray, level: float) -> np.ndarray:
    """Prophet's predictive spread per step: the width of its simulated ``level``
    interval over that of a standard normal's, ``(upper - lower) / (2 z)``."""
    z = NormalDist().inv_cdf(0.5 + float(level) / 2.0)
    return (np.asarray(upper, dtype="float64") - np.asarray(lower, dtype="float64")) / (2.0 * z)


def normalised_scores(actual: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``|actual - centre| / scale`` per step.

    NaN where the actual value is missing (no score); ``inf`` where the scale is not
    above zero (never a small score).
    """
    actual = np.asarray(actual, dtype="float64")
    scale = np.asarray(scale, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.abs(actual - np.asarray(centre, dtype="float64")) / scale
    scores = np.where(scale > 0, scores, np.inf)
    return np.where(np.isnan(actual), np.nan, scores)


def residual_change_variance(residuals: np.ndarray, horizon: int) -> np.ndarray:
    """``v_k``, ``k = 1 .. horizon``: the mean square of the ``k``-candle changes of the
    in-sample residuals (by position). Where fewer than two pairs of residuals are ``k``
    apart, it is extrapolated linearly in ``k`` from the longest defined (a random walk's
    growth)."""
    residuals = np.asarray(residuals, dtype="float64")
    longest = min(int(horizon), len(residuals) - 2)
    defined = [np.mean((residuals[k:] - residuals[:-k]) ** 2) for k in range(1, longest + 1)]
    if not defined:  # Prophet fits on two candles or more: only when called on fewer
        return np.full(int(horizon), np.inf)
    extrapolated = [defined[-1] * k / longest for k in range(longest + 1, int(horizon) + 1)]
    return np.asarray(defined + extrapolated, dtype="float64")


def _in_sample(model: Any) -> np.ndarray:
    """A fitted Prophet's fitted values on its own history (``predict()`` without the
    simulations: trend and seasonal terms only), on the modelled scale."""
    history = model.history.copy()
    trend = model.predict_trend(history)
    terms = model.predict_seasonal_components(history)
    fitted = trend * (1 + terms["multiplicative_terms"]) + terms["additive_terms"]
    return np.asarray(fitted, dtype="float64")


def pooled_conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal ``q`` of scores pooled over origins and steps.

    Missing scores (NaN) are left out; of the ``n`` others, ``q`` is the ``k``-th
    smallest with ``k = ceil((n + 1) level)`` (:func:`~forecasting.models.lstm.conformal_quantile`);
    ``inf`` when ``k > n``.
    """
    pooled = np.asarray(scores, dtype="float64").reshape(-1)
    return float(conformal_quantile(pooled[~np.isnan(pooled)], float(level)))


def _warm_init(fitted: Any) -> dict[str, Any]:
    """A fitted Prophet's optimum as Stan's init (Prophet docs' ``stan_init``)."""
    params = fitted.params
    init = {name: float(np.asarray(params[name]).reshape(-1)[0]) for name in ("k", "m")}
    init["sigma_obs"] = float(np.asarray(params["sigma_obs"]).reshape(-1)[0])
    for name in ("delta", "beta"):
        init[name] = np.asarray(params[name], dtype="float64")[0]
    return init


def _seasonality(value: bool | str) -> bool | str:
    # Prophet tests ``arg is True``: numpy's True would become a Fourier order of 1.
    return bool(value) if isinstance(value, np.bool_) else value


def _fit_error(exc: Exception, rows: int) -> Exception:
    """The error tree's version of a ValueError/RuntimeError from Prophet or cmdstanpy."""
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    if "less than 2 non-NaN rows" in first_line:
        return InsufficientHistory(
            f"Prophet needs at least 2 candles with a usable price; fewer of the {rows} given "
            "have one. Choose a longer date range."
        )
    what = "Prophet's optimiser failed" if isinstance(exc, RuntimeError) else "Prophet failed"
    return ModelFailed(
        f"{what} on these {rows} candles ({first_line}). Try another date range, a smaller "
        "changepoint_prior_scale or fewer regressors."
    )


def _below_zero_notes(mean: np.ndarray, lower: np.ndarray) -> tuple[str, ...]:
    """What to tell the reader when a forecast without logarithms falls below zero."""
    steps = len(mean)
    below_mean = int((mean < 0).sum())
    below_lower = int((lower < 0).sum())
    if below_mean:
        interval = (
            f" (the interval's lower bound at {below_lower})" if below_lower > below_mean else ""
        )
        return (
            f"Prophet forecast a price below zero at {below_mean} of {steps} steps{interval}; "
            "floored at 0 (log_transform is off).",
        )
    if below_lower:
        return (
            f"The lower bound of Prophet's interval fell below zero at {below_lower} of {steps} "
            "steps; floored at 0 (log_transform is off).",
        )
    return ()
