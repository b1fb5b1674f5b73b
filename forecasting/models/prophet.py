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

Intervals are simulated by Prophet from numpy's legacy generator. Each predict draws
from its own ``np.random.RandomState(seed)`` (the stream ``np.random.seed(seed)`` gives,
so the intervals are those of stock Prophet seeded globally), never from numpy's global
generator: predictions in other threads or sessions neither disturb it nor are
disturbed by it.

With ``log_transform=False`` Prophet can forecast prices below zero; they are floored
at 0 and the forecast carries a note saying where.
"""

from __future__ import annotations

import functools
import logging
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from forecasting.errors import ConfigurationError, InsufficientHistory, ModelFailed
from forecasting.features import compute_features, parse_features, warmup_length
from forecasting.models.base import Capabilities, Forecaster
from forecasting.preprocessing import denoise

__all__ = ["ProphetModel"]

# The parameters Stan optimises, as Prophet names them.
_STAN_PARAMS = ("k", "m", "sigma_obs", "delta", "beta")


def _quiet() -> None:
    # cmdstanpy logs every optimisation at INFO; the screens show progress instead.
    for name in ("cmdstanpy", "prophet", "prophet.plot"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("cmdstanpy").disabled = True


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

    seeded = type(
        "_SeededProphet",
        (prophet.forecaster.Prophet,),
        {
            **methods,
            "_load_stan_backend": _load_stan_backend,
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
    weekly_seasonality, yearly_seasonality, daily_seasonality
        ``"auto"``, ``True`` or ``False`` as in Prophet.
    seasonality_mode
        ``"additive"`` or ``"multiplicative"``.
    log_transform
        Model log prices (multiplicative moves become additive), then exponentiate.
        Without it a forecast below zero is floored at 0, with a note.
    level
        Interval width (Prophet's ``interval_width``).
    max_train_candles
        Fit on at most this many of the latest candles (speed; see module docs).
    regressors
        Feature specs used as extra regressors, lagged by ``horizon``; ``""`` for none.
    horizon
        The lag of the regressors, and so the longest forecast they allow.
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
    """

    alias = "prophet"
    title = "Prophet"
    capabilities = Capabilities(
        conditions_on_history=False,
        warm_starts=True,
        seeded=True,
        seed_changes_forecast=False,
        trained_horizon=True,
        interval_methods=("simulation",),
        needs_positive_prices=True,
    )

    def __init__(
        self,
        changepoint_prior_scale: float = 0.05,
        weekly_seasonality: bool | str = "auto",
        yearly_seasonality: bool | str = "auto",
        daily_seasonality: bool | str = "auto",
        seasonality_mode: str = "additive",
        log_transform: bool = True,
        level: float = 0.9,
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
        self.log_transform = log_transform
        self.level = level
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

    def _check_settings(self) -> None:
        if self.seasonality_mode not in ("additive", "multiplicative"):
            raise ConfigurationError("Prophet seasonality_mode is additive or multiplicative.")
        if int(self.max_train_candles) < 10:
            # iloc[-0:] is the whole frame: 0 would silently train on everything.
            raise ConfigurationError(
                f"Prophet max_train_candles must be at least 10, got {self.max_train_candles}."
            )
        if self.regressors and int(self.horizon) < 1:
            raise ConfigurationError(f"Prophet horizon must be at least 1, got {self.horizon}.")
        if not float(self.changepoint_prior_scale) > 0:
            raise ConfigurationError(
                "Prophet changepoint_prior_scale must be above 0 (0.05 is Prophet's default), "
                f"got {self.changepoint_prior_scale}."
            )
        for name in ("weekly_seasonality", "yearly_seasonality", "daily_seasonality"):
            value = getattr(self, name)
            if not (value == "auto" or isinstance(value, bool | np.bool_)):
                raise ConfigurationError(f'Prophet {name} is "auto", true or false, got {value!r}.')
        if int(self.uncertainty_samples) < 1:
            raise ConfigurationError(
                "Prophet uncertainty_samples must be at least 1 (its interval is simulated), "
                f"got {self.uncertainty_samples}."
            )

    def _fit(
        self, candles: pd.DataFrame, *, progress=None, should_stop=None, warm_start=None
    ) -> None:
        self._check_settings()
        _quiet()
        seeded_prophet = _prophet_classes()["_SeededProphet"]

        self.train_candles_ = min(len(candles), int(self.max_train_candles))
        frame = self._frame(candles).iloc[-self.train_candles_ :].dropna()
        frame["y"] = denoise(frame[["y"]], self.denoise, self.denoise_window)["y"].to_numpy()
        usable = int(frame["y"].notna().sum())
        if usable < 2:  # Prophet's own minimum (the base class asks for 10 candles)
            undefined = f" ({self.regressors} undefined on the others)" if self.regressors else ""
            raise InsufficientHistory(
                f"Prophet needs at least 2 candles with every value defined; {usable} of "
                f"the last {self.train_candles_} have them{undefined}. Choose a longer date "
                "range or other regressors."
            )
        try:
            self.model_ = seeded_prophet(
                changepoint_prior_scale=float(self.changepoint_prior_scale),
                weekly_seasonality=_seasonality(self.weekly_seasonality),
                yearly_seasonality=_seasonality(self.yearly_seasonality),
                daily_seasonality=_seasonality(self.daily_seasonality),
                seasonality_mode=self.seasonality_mode,
                interval_width=float(self.level),
                uncertainty_samples=int(self.uncertainty_samples),
            )
        except ValueError as exc:  # Prophet checks its settings when constructed
            raise ConfigurationError(f"Prophet refused its settings: {exc}") from exc
        self.regressor_columns_ = [c for c in frame.columns if c.startswith("reg_")]
        for column in self.regressor_columns_:
            self.model_.add_regressor(column)
        # Prophet's "Updating fitted models": start Stan from the previous fit's optimum.
        init = {"init": _warm_init(warm_start.model_)} if warm_start is not None else {}
        if progress is not None:
            progress("fit", 0.0, {"candles": len(frame)})
        backend = self.model_.stan_backend
        try:
            self.model_.fit(frame, **init)
        except (ValueError, RuntimeError) as exc:
            raise _fit_error(exc, len(frame)) from exc
        finally:
            # Stan's output files are read into params_; a chain of refits (one per
            # origin) would otherwise pile them up in the temporary folder until exit.
            backend.cleanup()
        self.warm_started_ = bool(init) and backend.warm_started
        if progress is not None:
            progress("fit", 1.0, {"candles": len(frame)})

    def _predict(self, horizon: int, history: pd.DataFrame):
        if self.regressors and horizon > int(self.horizon):
            raise ConfigurationError(
                f"Prophet's regressors are lagged {self.horizon} candles, so it can forecast "
                f"at most {self.horizon} ahead; asked for {horizon}."
            )
        from forecasting.ohlcv import future_timestamps

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
        back = np.exp if self.log_transform else (lambda v: v)
        mean, lower, upper = (
            back(predicted[column].to_numpy()) for column in ("yhat", "yhat_lower", "yhat_upper")
        )
        if self.log_transform:
            return mean, lower, upper
        notes = _below_zero_notes(mean, lower)
        return np.maximum(mean, 0.0), np.maximum(lower, 0.0), np.maximum(upper, 0.0), notes


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
