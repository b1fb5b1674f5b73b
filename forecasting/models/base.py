"""The one small interface every model implements, and the forecast it returns.

A model follows scikit-learn's rules: ``__init__`` only stores settings (no logic, no
validation); everything learned in :meth:`Forecaster.fit` ends in ``_`` and a second
``fit`` overwrites it; inputs are never modified. ``fit`` returns the model, so
``Naive().fit(candles).predict(7)`` reads as it runs.

Forecasts are always in price units (the close), for the ``horizon`` candles after the
last candle the model saw, or after the last candle of ``history`` when given: the
walk-forward evaluation fits once per fold and then forecasts from every origin in the
fold with the actual candles up to that origin.
"""

from __future__ import annotations

import copy
import inspect
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from forecasting.errors import ConfigurationError, ForecastingError, InsufficientHistory
from forecasting.ohlcv import future_timestamps, infer_calendar, infer_timeframe

__all__ = ["Forecast", "Forecaster", "NotFittedError", "ProgressCallback"]

# progress(stage, fraction_done, details) where details carries e.g. loss and val_loss.
ProgressCallback = Any


class NotFittedError(ForecastingError):
    """``predict`` was called before ``fit``."""


@dataclass(frozen=True)
class Forecast:
    """Forecast of the next ``horizon`` closes, in price units.

    Attributes
    ----------
    timestamps
        Open times of the forecast candles (UTC).
    mean
        Point forecast per candle.
    lower, upper
        Interval bounds at ``level`` (``None`` when the model gives no interval).
    level
        Interval coverage aimed at, e.g. 0.9.
    model
        The model's alias.
    """

    timestamps: pd.DatetimeIndex
    mean: np.ndarray
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    level: float | None = None
    model: str = ""

    @property
    def horizon(self) -> int:
        """How many candles ahead."""
        return len(self.mean)

    def to_frame(self) -> pd.DataFrame:
        """``mean``, ``lower``, ``upper`` on the forecast timestamps."""
        nan = np.full(self.horizon, np.nan)
        return pd.DataFrame(
            {
                "mean": self.mean,
                "lower": nan if self.lower is None else self.lower,
                "upper": nan if self.upper is None else self.upper,
            },
            index=self.timestamps.rename("timestamp"),
        )

    def to_records(self) -> list[dict[str, Any]]:
        """JSON-ready rows ``{"timestamp": ISO, "mean": x, "lower": x, "upper": x}``."""
        frame = self.to_frame()
        return [
            {
                "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "mean": float(row.mean),
                "lower": None if np.isnan(row.lower) else float(row.lower),
                "upper": None if np.isnan(row.upper) else float(row.upper),
            }
            for ts, row in zip(frame.index, frame.itertuples(), strict=True)
        ]


class Forecaster:
    """Base class: ``fit(candles)`` returns the model, ``predict(horizon)`` a :class:`Forecast`.

    Subclasses set ``alias`` (the short name used in tables, files and the command
    line) and implement ``_fit`` and ``_predict``. The base class keeps the bookkeeping
    (timeframe, calendar, the fitted history, checks) in one place.
    """

    alias: ClassVar[str] = ""
    title: ClassVar[str] = ""
    min_history: ClassVar[int] = 2

    # --- parameters (scikit-learn style) ------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        """The settings given to ``__init__``, by name."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p not in ("self",)]
        return {name: getattr(self, name) for name in names}

    def _check_types(self) -> None:
        """Each setting must have the kind of value its default has (``"x"`` is no epoch
        count): a clear message here instead of a ``TypeError`` deep inside a fit."""
        signature = inspect.signature(type(self).__init__).parameters
        for name, value in self.get_params().items():
            default = signature[name].default
            if default is inspect.Parameter.empty or default is None or value is None:
                continue
            if isinstance(default, bool):
                allowed: tuple[type, ...] = (bool, str) if isinstance(value, str) else (bool,)
            elif isinstance(default, int):
                allowed = (numbers.Integral,)
            elif isinstance(default, float):
                allowed = (numbers.Real,)
            elif isinstance(default, str):
                allowed = (
                    (str, bool) if name.endswith("seasonality") or name == "jit_compile" else (str,)
                )
            else:
                continue
            numeric_bool = (
                isinstance(value, bool)
                and isinstance(default, int | float)
                and not isinstance(default, bool)
            )
            if not isinstance(value, allowed) or numeric_bool:
                raise ConfigurationError(
                    f"{self.title or self.alias}: {name} must be {_kind(default)}, got {value!r}."
                )

    def clone(self) -> Self:
        """A new, unfitted model with the same settings."""
        return type(self)(**copy.deepcopy(self.get_params()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # --- the interface ------------------------------------------------------------------

    def fit(
        self,
        candles: pd.DataFrame,
        *,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Self:
        """Learn from ``candles`` (an OHLCV frame, not modified) and return the model.

        Parameters
        ----------
        candles
            The training window.
        progress
            Called as ``progress(stage, fraction_done, details)`` during long fits.
        should_stop
            Polled during long fits; when it returns True the fit raises
            :class:`~forecasting.errors.Cancelled`.

        Raises
        ------
        ConfigurationError
            When a setting is invalid (checked here, not in ``__init__``).
        InsufficientHistory
            When there are too few candles for the settings.
        Cancelled
            When ``should_stop`` asked to stop. A fit that raises leaves the model
            unfitted, even if it was fitted before.
        """
        # A fit that fails half-way (cancelled, too little data for the timeframe) would
        # otherwise leave this fit's history beside the previous fit's learned state, and
        # predict would silently mix the two: any failed fit leaves the model unfitted.
        self._forget_fit()
        self._check_types()
        level = getattr(self, "level", None)
        if level is not None and not 0 < level < 1:
            raise ConfigurationError(
                f"{self.title or self.alias}: level is an interval coverage between 0 and 1 "
                f"(e.g. 0.9), got {level}."
            )
        if len(candles) < self._required_history():
            raise InsufficientHistory(
                f"{self.title or self.alias} needs at least {self._required_history()} candles "
                f"with these settings; got {len(candles)}. Choose a longer date range."
            )
        try:
            self.timeframe_ = infer_timeframe(candles.index)
            self.calendar_ = infer_calendar(candles.index, self.timeframe_)
            self.history_ = candles
            self._fit(candles, progress=progress, should_stop=should_stop)
        except BaseException:
            self._forget_fit()
            raise
        return self

    def predict(self, horizon: int, *, history: pd.DataFrame | None = None) -> Forecast:
        """Forecast the ``horizon`` closes after the last candle seen.

        Parameters
        ----------
        horizon
            How many candles ahead (at least 1).
        history
            Actual candles up to the forecast origin (the fit's data followed by later
            candles). Models condition on it without refitting. Defaults to the data
            the model was fitted on.

        Raises
        ------
        NotFittedError
            When called before :meth:`fit`.
        """
        if not hasattr(self, "history_"):
            raise NotFittedError(
                f"{self.title or type(self).__name__} is not fitted yet: call fit(candles) first."
            )
        if int(horizon) < 1:
            raise ConfigurationError(f"horizon must be at least 1, got {horizon}.")
        history = self.history_ if history is None else history
        mean, lower, upper = self._predict(int(horizon), history)
        timestamps = future_timestamps(
            history.index[-1], int(horizon), self.timeframe_, calendar=self.calendar_
        )
        return Forecast(
            timestamps=timestamps,
            mean=np.asarray(mean, dtype="float64"),
            lower=None if lower is None else np.asarray(lower, dtype="float64"),
            upper=None if upper is None else np.asarray(upper, dtype="float64"),
            level=getattr(self, "level", None) if lower is not None else None,
            model=self.alias,
        )

    def _forget_fit(self) -> None:
        """Drop everything learned (the attributes ending in ``_``): back to unfitted."""
        for name in [n for n in vars(self) if n.endswith("_") and not n.startswith("_")]:
            delattr(self, name)

    # --- for subclasses -----------------------------------------------------------------

    def _required_history(self) -> int:
        return self.min_history

    def _fit(
        self,
        candles: pd.DataFrame,
        *,
        progress: ProgressCallback | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        raise NotImplementedError

    def _predict(
        self, horizon: int, history: pd.DataFrame
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        raise NotImplementedError


def _kind(default: object) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "a whole number"
    if isinstance(default, float):
        return "a number"
    return "text"
