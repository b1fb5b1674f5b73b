"""Walk-forward evaluation, written once for every model.

The test period (the last ``test_size`` candles, or everything from ``test_start``) is
split into ``folds`` consecutive folds. For each fold every model is fitted on the
candles up to the fold's cutoff only (all earlier candles, or the last ``window`` of
them), then forecasts ``horizon`` candles ahead from every origin in the fold (every
``stride`` candles), conditioning on the actual candles up to that origin. Features,
scalers and intervals are the models' own, fitted inside ``fit`` on the training
candles: nothing after an origin is ever passed to a model.

Every model gets exactly the same (origin, target) pairs: the pairs are decided here,
from the data's index, before any model runs.

::

    candles:  [--------------- train ---------------][ fold 1 ][ fold 2 ][ fold 3 ]
                                              cutoff ^ origins: cutoff, cutoff+stride, ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from forecasting.errors import Cancelled, ConfigurationError, InsufficientHistory
from forecasting.models.base import Forecaster

__all__ = ["Backtest", "BacktestSettings", "Fold", "make_folds", "walk_forward"]

FORECAST_COLUMNS = [
    "fold",
    "cutoff",
    "origin",
    "timestamp",
    "step",
    "model",
    "y",
    "yhat",
    "lower",
    "upper",
    "y_origin",
]

# progress(done_fraction, message) after every model of every fold.
BacktestProgress = Callable[[float, str], None]


@dataclass(frozen=True)
class BacktestSettings:
    """How a walk-forward backtest is laid out.

    Parameters
    ----------
    horizon
        Candles ahead forecast from each origin.
    folds
        Consecutive folds the test period is split into; models are refitted per fold.
    test_size
        Candles in the test period (the last ones). Ignored when ``test_start`` is set.
    test_start
        First candle of the test period, instead of ``test_size`` (anything
        ``pd.Timestamp`` reads; a time without a zone is UTC).
    stride
        Candles between consecutive origins within a fold.
    window
        ``None`` for an expanding training window (all candles before the cutoff), or
        the number of most recent candles to train on (rolling; at least 2).
    """

    horizon: int = 7
    folds: int = 3
    test_size: int = 120
    test_start: pd.Timestamp | str | None = None
    stride: int = 1
    window: int | None = None

    def __post_init__(self) -> None:
        # A date typed as text, or without a time zone, means UTC as everywhere else in
        # the package: the candles' index is UTC, and comparing a naive timestamp with
        # it raises a TypeError (and a string has no ``isoformat`` for ``to_dict``).
        if self.test_start is not None:
            try:
                start = pd.Timestamp(self.test_start)
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(
                    f"The test period's start {self.test_start!r} is not a date."
                ) from exc
            start = start.tz_localize("UTC") if start.tz is None else start.tz_convert("UTC")
            object.__setattr__(self, "test_start", start)

    def to_dict(self) -> dict:
        """JSON-ready settings."""
        return {
            "horizon": self.horizon,
            "folds": self.folds,
            "test_size": self.test_size,
            "test_start": None if self.test_start is None else self.test_start.isoformat(),
            "stride": self.stride,
            "window": self.window,
        }


@dataclass(frozen=True)
class Fold:
    """One fold: where training stops and which origins forecast.

    Attributes
    ----------
    number
        1-based.
    train_start, cutoff
        Positions (in the candles) of the first and last training candle.
    origins
        Positions of the last candle observed at each forecast.
    end
        Position after the fold's last target-region candle.
    """

    number: int
    train_start: int
    cutoff: int
    origins: tuple[int, ...]
    end: int


@dataclass
class Backtest:
    """Every model's forecasts on the same (origin, target) pairs, and how they were made.

    Attributes
    ----------
    forecasts
        One row per model, origin and target: ``fold, cutoff, origin, timestamp, step,
        model, y, yhat, lower, upper, y_origin`` (prices; ``y_origin`` is the close at
        the origin).
    folds
        The folds.
    settings
        The layout used.
    naive_scale
        Per fold, the mean absolute one-step change of the training closes: MASE's scale.
    levels
        Interval level per model (``None`` where a model has no interval).
    """

    forecasts: pd.DataFrame
    folds: list[Fold]
    settings: BacktestSettings
    naive_scale: dict[int, float]
    levels: dict[str, float | None] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        """Model aliases in the order they were run."""
        return list(dict.fromkeys(self.forecasts["model"]))


def make_folds(index: pd.DatetimeIndex, settings: BacktestSettings) -> list[Fold]:
    """The folds of a backtest over candles with this index.

    Raises
    ------
    ConfigurationError
        For settings that cannot be laid out.
    InsufficientHistory
        When the test period leaves too few candles to train on.
    """
    n = len(index)
    horizon, folds, stride = int(settings.horizon), int(settings.folds), int(settings.stride)
    if horizon < 1 or folds < 1 or stride < 1:
        raise ConfigurationError("horizon, folds and stride must each be at least 1.")
    # A window of 0 would train on nothing (iloc[a:a]), and one candle has no one-step
    # change to scale MASE by.
    if settings.window is not None and int(settings.window) < 2:
        raise ConfigurationError(
            f"The rolling training window must be at least 2 candles, got {settings.window}. "
            "Leave it empty for an expanding window."
        )
    if settings.test_start is not None:
        start = int(index.searchsorted(settings.test_start))
        test_size = n - start
    else:
        test_size = int(settings.test_size)
    if test_size < folds * 2:
        raise ConfigurationError(
            f"A test period of {test_size} candles cannot hold {folds} folds of at least two "
            "candles. Lengthen the test period or use fewer folds."
        )
    first_target = n - test_size
    if first_target < 20:
        raise InsufficientHistory(
            f"The test period leaves {max(first_target, 0)} candles to train on. Shorten the "
            "test period or choose a longer date range."
        )
    bounds = np.linspace(first_target, n, folds + 1).round().astype(int)
    out = []
    # Plain ints, not numpy's: positions are compared, printed and serialised.
    for number, (a, b) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True), 1):
        cutoff = a - 1
        origins = tuple(range(cutoff, b - 1, stride))
        train_start = 0 if settings.window is None else max(0, a - int(settings.window))
        out.append(Fold(number, train_start, cutoff, origins, b))
    return out


def walk_forward(
    models: Mapping[str, Forecaster],
    candles: pd.DataFrame,
    settings: BacktestSettings | None = None,
    *,
    progress: BacktestProgress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Backtest:
    """Fit and forecast every model on every fold (see the module docs).

    Parameters
    ----------
    models
        Unfitted models by name; each is cloned per fold, never modified.
    candles
        The OHLCV frame; not modified.
    settings
        The backtest layout.
    progress
        Called as ``progress(fraction_done, message)`` after each model of each fold.
    should_stop
        Polled between steps (and passed to long fits); True raises ``Cancelled``.

    Returns
    -------
    Backtest
        The forecasts of every model on the same pairs.
    """
    settings = settings or BacktestSettings()
    folds = make_folds(candles.index, settings)
    close = candles["close"].to_numpy(dtype="float64")
    n, horizon = len(candles), int(settings.horizon)
    rows: list[dict] = []
    naive_scale: dict[int, float] = {}
    levels: dict[str, float | None] = {}
    steps_total = len(folds) * len(models)
    done = 0
    for fold in folds:
        train = candles.iloc[fold.train_start : fold.cutoff + 1]
        naive_scale[fold.number] = float(np.mean(np.abs(np.diff(train["close"].to_numpy()))))
        for name, template in models.items():
            if should_stop is not None and should_stop():
                raise Cancelled("The backtest was cancelled.")
            model = template.clone().fit(train, should_stop=should_stop)
            levels[name] = getattr(model, "level", None)
            for origin in fold.origins:
                # Forecasting from many origins (Prophet's sampling) takes long too.
                if should_stop is not None and should_stop():
                    raise Cancelled("The backtest was cancelled.")
                steps = min(horizon, n - 1 - origin)
                if steps < 1:
                    continue
                history = candles.iloc[fold.train_start : origin + 1]
                forecast = model.predict(steps, history=history)
                for step in range(1, steps + 1):
                    target = origin + step
                    rows.append(
                        {
                            "fold": fold.number,
                            "cutoff": candles.index[fold.cutoff],
                            "origin": candles.index[origin],
                            "timestamp": candles.index[target],
                            "step": step,
                            "model": name,
                            "y": close[target],
                            "yhat": forecast.mean[step - 1],
                            "lower": np.nan if forecast.lower is None else forecast.lower[step - 1],
                            "upper": np.nan if forecast.upper is None else forecast.upper[step - 1],
                            "y_origin": close[origin],
                        }
                    )
            done += 1
            if progress is not None:
                progress(done / steps_total, f"fold {fold.number}/{len(folds)}: {name}")
    frame = pd.DataFrame(rows, columns=FORECAST_COLUMNS)
    return Backtest(frame, folds, settings, naive_scale, levels)
