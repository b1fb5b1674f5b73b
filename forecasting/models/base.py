"""The one small interface every model implements, and the forecast it returns.

A model follows scikit-learn's rules: ``__init__`` only stores settings (no logic, no
validation); everything learned in :meth:`Forecaster.fit` ends in ``_`` and a second
``fit`` overwrites it; inputs are never modified. ``fit`` returns the model, so
``Naive().fit(candles).predict(7)`` reads as it runs. Each model declares the valid
values of its settings (``parameter_ranges``, see :mod:`forecasting.ranges`);
:meth:`Forecaster.check_settings` checks them, from ``make_model`` and from ``fit``.

Forecasts are always in price units (the close), for the ``horizon`` candles after the
last candle the model saw, or after the last candle of ``history`` when given: step
``k`` is the candle ``k`` timeframes after that origin. The walk-forward evaluation fits
once per fold and then forecasts from every origin in the fold with exactly the actual
candles up to that origin. Models that can condition on new candles without refitting
(the baselines, the LSTM's input window) do so; a model that cannot (Prophet: its
forecast depends only on time) declares it in :class:`Capabilities` and is refitted on
the candles up to each origin, warm-started from its previous fit where it can be.
"""

from __future__ import annotations

import copy
import inspect
import numbers
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from forecasting.errors import (
    ConfigurationError,
    DataFormatError,
    InsufficientHistory,
    NotFittedError,
)
from forecasting.ohlcv import future_timestamps, infer_calendar, infer_timeframe
from forecasting.progress import ProgressCallback
from forecasting.ranges import HORIZON, Range, shown

__all__ = ["Capabilities", "Forecast", "Forecaster", "NotFittedError", "ProgressCallback"]


@dataclass(frozen=True)
class Capabilities:
    """What a model can do, declared by each model class (never inferred from its name).

    Attributes
    ----------
    conditions_on_history
        ``predict(horizon, history=)`` uses candles after the fit without refitting (a
        last close, an input window). When False the model's forecast depends only on
        what it was fitted on, so conditioning on later candles means refitting on them:
        :meth:`Forecaster.updated` does that, and ``predict(history=)`` calls it.
    warm_starts
        ``fit(candles, warm_start=other)`` starts its optimiser from ``other``'s fit
        (same answer up to the optimiser's tolerance, in a fraction of the time).
    seeded
        Has a ``seed`` setting; an experiment sets it.
    seed_changes_forecast
        Different seeds give different point forecasts (a random initialisation): an
        experiment can run the model over several seeds and report each.
    trained_horizon
        Has a ``horizon`` setting and forecasts at most that many candles ahead.
    interval_methods
        How its intervals are made, e.g. ``("normal",)``; empty for no interval.
    needs_positive_prices
        Takes logarithms of prices (or their ratios): every close must be above zero.
    definition
        What the forecast is, by the model's own rule, when the rule is fixed rather
        than learned ("the last close plus the average change per candle seen in
        training"). The copy check reports it instead of flagging a baseline for being
        what it is; empty for models that learn their forecast.
    """

    conditions_on_history: bool = True
    warm_starts: bool = False
    seeded: bool = False
    seed_changes_forecast: bool = False
    trained_horizon: bool = False
    interval_methods: tuple[str, ...] = ("normal",)
    needs_positive_prices: bool = False
    definition: str = ""


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
        Interval coverage aimed at, e.g. 0.9. A bound may be infinite: the interval is
        unbounded on that side (too little calibration data for the level).
    model
        The model's alias.
    notes
        What the reader must know about this forecast (a bound floored at zero, ...).
    """

    timestamps: pd.DatetimeIndex
    mean: np.ndarray
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    level: float | None = None
    model: str = ""
    notes: tuple[str, ...] = ()

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
        """JSON-ready rows ``{"timestamp": ISO, "mean": x, "lower": x, "upper": x}``.

        A bound that is missing or unbounded (infinite) is ``null``, and so is a mean
        that is not a finite number (its note says why).
        """
        frame = self.to_frame()
        return [
            {
                "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "mean": float(row.mean) if np.isfinite(row.mean) else None,
                "lower": float(row.lower) if np.isfinite(row.lower) else None,
                "upper": float(row.upper) if np.isfinite(row.upper) else None,
            }
            for ts, row in zip(frame.index, frame.itertuples(), strict=True)
        ]


class Forecaster:
    """Base class: ``fit(candles)`` returns the model, ``predict(horizon)`` a :class:`Forecast`.

    Subclasses set ``alias`` (the short name used in tables, files and the command
    line), declare their :class:`Capabilities`, and implement ``_fit`` and ``_predict``.
    The base class keeps the bookkeeping (timeframe, calendar, the fitted history,
    checks) in one place.
    """

    alias: ClassVar[str] = ""
    title: ClassVar[str] = ""
    min_history: ClassVar[int] = 2
    capabilities: ClassVar[Capabilities] = Capabilities()
    # The valid values of each setting (free text and true/false settings are checked
    # against their annotation only).
    parameter_ranges: ClassVar[Mapping[str, Range]] = {}

    # --- parameters (scikit-learn style) ------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        """The settings given to ``__init__``, by name."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p not in ("self",)]
        return {name: getattr(self, name) for name in names}

    def check_settings(self) -> None:
        """Check every setting against its declared range (or, without one, its annotation).

        ``fit`` calls it, and experiments and the command line call it before any data
        is read: the pages, links, scripts and the library refuse the same values with
        the same one-line message.

        Raises
        ------
        ConfigurationError
            For the first setting outside its range or of the wrong kind, naming it and
            what is valid: "LSTM units must be a whole number from 4 to 256, got 200000."
        """
        owner = self.title or self.alias
        params = self.get_params()
        for name, value in params.items():
            if name in self.parameter_ranges:
                self.parameter_ranges[name].check(value, name, owner)
        self._check_types({k: v for k, v in params.items() if k not in self.parameter_ranges})

    def _check_types(self, params: Mapping[str, Any]) -> None:
        """Each setting must have a type its annotation in ``__init__`` allows (``"x"`` is
        no feature list): a clear message here instead of a ``TypeError`` deep in a fit."""
        hints = typing.get_type_hints(type(self).__init__)
        for name, value in params.items():
            allowed = _allowed_types(hints.get(name))
            if allowed is None or value is None and type(None) in allowed:
                continue
            others = tuple(t for t in allowed if t not in (bool, int, float, str, type(None)))
            integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            ok = (
                (bool(others) and isinstance(value, others))
                or (bool in allowed and isinstance(value, bool | np.bool_))
                or (int in allowed and integral)
                or (
                    float in allowed
                    and isinstance(value, numbers.Real)
                    and not isinstance(value, bool)
                )
                or (str in allowed and isinstance(value, str))
            )
            if not ok:
                raise ConfigurationError(
                    f"{self.title or self.alias} {name} must be {_kind(allowed)}, "
                    f"got {shown(value)}."
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
        warm_start: Forecaster | None = None,
    ) -> Self:
        """Learn from ``candles`` (an OHLCV frame, not modified) and return the model.

        Parameters
        ----------
        candles
            The training window.
        progress
            Called as ``progress(stage, fraction_done, details)`` during long fits (see
            :mod:`forecasting.progress`).
        should_stop
            Polled during long fits; when it returns True the fit raises
            :class:`~forecasting.errors.Cancelled`.
        warm_start
            A fitted model of the same class and settings to start the optimiser from
            (models whose capabilities say ``warm_starts``; others ignore it).

        Raises
        ------
        ConfigurationError
            When a setting is invalid (checked here, not in ``__init__``).
        DataFormatError
            When a close is not a positive number and the model takes logarithms.
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
        self.check_settings()
        if len(candles) < self._required_history():
            raise InsufficientHistory(
                f"{self.title or self.alias} needs at least {self._required_history()} candles "
                f"with these settings; got {len(candles)}. Choose a longer date range."
            )
        self._check_prices(candles)
        if warm_start is not None and (
            type(warm_start) is not type(self) or not hasattr(warm_start, "history_")
        ):
            raise ConfigurationError(
                f"{self.title or self.alias}: warm_start must be a fitted {type(self).__name__}."
            )
        try:
            self.timeframe_ = infer_timeframe(candles.index)
            self.calendar_ = infer_calendar(candles.index, self.timeframe_)
            self.history_ = candles
            self._fit(
                candles,
                progress=progress,
                should_stop=should_stop,
                warm_start=warm_start if self.capabilities.warm_starts else None,
            )
        except BaseException:
            self._forget_fit()
            raise
        return self

    def updated(self, history: pd.DataFrame) -> Self:
        """This model as it forecasts from the last candle of ``history``.

        A model that conditions on history (see :class:`Capabilities`) is returned as it
        is. One that does not is refitted on ``history`` (warm-started from this fit
        where it can be) and the refitted copy is returned; this model is not changed.

        Parameters
        ----------
        history
            The candles up to the new origin: the fit's data followed by later candles.
        """
        if not hasattr(self, "history_"):
            raise NotFittedError(
                f"{self.title or type(self).__name__} is not fitted yet: call fit(candles) first."
            )
        if self.capabilities.conditions_on_history or _same_candles(history, self.history_):
            return self
        return self.clone().fit(history, warm_start=self)

    def predict(self, horizon: int, *, history: pd.DataFrame | None = None) -> Forecast:
        """Forecast the ``horizon`` closes after the last candle seen.

        Parameters
        ----------
        horizon
            How many candles ahead (at least 1).
        history
            Actual candles up to the forecast origin (the fit's data followed by later
            candles). Defaults to the data the model was fitted on. The forecast uses
            exactly these candles: models that condition on history read them without
            refitting; the others are refitted on them first (see :meth:`updated`).

        Returns
        -------
        Forecast
            Step ``k`` is the candle ``k`` timeframes after the last candle of
            ``history``.

        Raises
        ------
        NotFittedError
            When called before :meth:`fit`.
        DataFormatError
            When a close in ``history`` is not a positive number and the model takes
            logarithms.
        """
        if not hasattr(self, "history_"):
            raise NotFittedError(
                f"{self.title or type(self).__name__} is not fitted yet: call fit(candles) first."
            )
        HORIZON.check(horizon, "horizon")
        if history is not None and history is not self.history_:
            self._check_prices(history)
            if not self.capabilities.conditions_on_history:
                return self.updated(history).predict(horizon)
        history = self.history_ if history is None else history
        result = self._predict(int(horizon), history)
        mean, lower, upper = result[:3]
        notes = tuple(result[3]) if len(result) > 3 else ()
        mean = np.asarray(mean, dtype="float64")
        if not np.isfinite(mean).all():
            # Closes near the largest float overflow a sum or a product: say so, never
            # hand an infinity on as a price (JSON shows it as null).
            notes += (
                f"The forecast is not a finite number at {int((~np.isfinite(mean)).sum())} "
                f"of {len(mean)} steps: the prices are too large to compute with.",
            )
        timestamps = future_timestamps(
            history.index[-1], int(horizon), self.timeframe_, calendar=self.calendar_
        )
        return Forecast(
            timestamps=timestamps,
            mean=mean,
            lower=None if lower is None else np.asarray(lower, dtype="float64"),
            upper=None if upper is None else np.asarray(upper, dtype="float64"),
            level=getattr(self, "level", None) if lower is not None else None,
            model=self.alias,
            notes=notes,
        )

    def _check_prices(self, candles: pd.DataFrame) -> None:
        if not self.capabilities.needs_positive_prices or "close" not in candles:
            return
        close = candles["close"].to_numpy(dtype="float64")
        bad = ~(np.isfinite(close) & (close > 0))
        if bad.any():
            first = int(np.argmax(bad))
            raise DataFormatError(
                f"{self.title or self.alias} needs positive closes, but the close of the "
                f"candle at {candles.index[first]:%Y-%m-%d %H:%M} UTC is {close[first]:g} "
                f"({int(bad.sum())} such candle(s)). Remove those candles or choose a range "
                "without them."
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
        warm_start: Forecaster | None,
    ) -> None:
        raise NotImplementedError

    def _predict(self, horizon: int, history: pd.DataFrame) -> tuple:
        """``(mean, lower, upper)`` or ``(mean, lower, upper, notes)`` for ``horizon`` steps."""
        raise NotImplementedError


def _same_candles(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """True when two frames hold the same candles (cheap checks first)."""
    if a is b:
        return True
    return len(a) == len(b) and a.index.equals(b.index) and a.equals(b)


def _allowed_types(hint: Any) -> tuple[type, ...] | None:
    """The plain types an annotation allows (``bool | str`` gives ``(bool, str)``)."""
    if hint is None or hint is Any:
        return None
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(t for t in typing.get_args(hint))
    return (hint,) if isinstance(hint, type) else None


def _kind(allowed: tuple[type, ...]) -> str:
    words = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}
    named = [words[t] for t in allowed if t in words]
    return " or ".join(dict.fromkeys(named)) or "of another kind"
