"""One experiment: models, settings and data in; backtest, metrics, tests and forecasts out.

The Compare page and ``python -m forecasting compare`` both run :func:`run_experiment`,
so a number on the screen and the same number in a script come from the same code.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from forecasting.errors import Cancelled, ConfigurationError
from forecasting.evaluation import (
    Backtest,
    BacktestSettings,
    copy_check,
    dm_table,
    score,
    score_by_horizon,
    walk_forward,
)
from forecasting.models import MODELS, Forecast, make_model

__all__ = [
    "DEFAULT_MODELS",
    "ExperimentResult",
    "ExperimentSettings",
    "data_hash",
    "dumps",
    "parse_models",
    "run_experiment",
]

DEFAULT_MODELS: tuple[str, ...] = (
    "naive",
    "drift",
    "seasonal_naive",
    "moving_average",
    "prophet",
    "lstm",
)


@dataclass(frozen=True)
class ExperimentSettings:
    """Everything that decides an experiment's numbers, apart from the data.

    Parameters
    ----------
    models
        Model aliases to compare; naive is always added (every comparison needs it).
    model_settings
        Per alias, settings passed to the model (``{"lstm": {"epochs": 20}}``).
    backtest
        The walk-forward layout (horizon, folds, test size, stride, window).
    seed
        Seed for every model that has one.
    """

    models: tuple[str, ...] = DEFAULT_MODELS
    model_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    backtest: BacktestSettings = field(default_factory=BacktestSettings)
    seed: int = 42

    def build_models(self) -> dict[str, Any]:
        """Unfitted models by alias, with the horizon and seed applied where they exist.

        Raises
        ------
        ConfigurationError
            For an unknown alias, or settings a model does not have.
        """
        aliases = list(dict.fromkeys(["naive", *self.models]))
        built = {}
        for alias in aliases:
            given = self.model_settings.get(alias)
            given = {} if given is None else given  # JSON null: the defaults
            # Settings arrive as JSON from the command line: {"lstm": 5} is a user's
            # mistake to report, not a TypeError to crash on.
            if not isinstance(given, Mapping):
                raise ConfigurationError(
                    f"Settings for {alias} must be an object of name: value pairs, e.g. "
                    f'{{"{alias}": {{"level": 0.8}}}}; got {given!r}.'
                )
            settings = dict(given)
            params = MODELS[alias]().get_params() if alias in MODELS else {}
            if "horizon" in params:
                settings["horizon"] = max(int(settings.get("horizon", 0)), self.backtest.horizon)
            if "seed" in params:
                settings["seed"] = self.seed
            built[alias] = make_model(alias, **settings)
        return built

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings, with every model's full parameter set."""
        return {
            "models": {alias: model.get_params() for alias, model in self.build_models().items()},
            "backtest": self.backtest.to_dict(),
            "seed": self.seed,
        }


@dataclass
class ExperimentResult:
    """What an experiment produced."""

    settings: ExperimentSettings
    backtest: Backtest
    metrics: pd.DataFrame
    by_horizon: pd.DataFrame
    dm_tests: pd.DataFrame
    copy: pd.DataFrame
    future: dict[str, Forecast]
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The ``compare --json`` document."""
        # to_dict(orient="index") keeps each column's type; iterrows would turn a row of
        # mixed columns into floats, and counts (n, direction_calls) would read 39.0.
        by_horizon: dict[str, dict[str, Any]] = {}
        for (model, step), row in self.by_horizon.to_dict(orient="index").items():
            by_horizon.setdefault(model, {})[str(step)] = _clean(row)
        return {
            "settings": self.settings.to_dict(),
            "data": self.data,
            "metrics": {m: _clean(r) for m, r in self.metrics.to_dict(orient="index").items()},
            "by_horizon": by_horizon,
            "dm_tests": [_clean(r) for r in self.dm_tests.to_dict(orient="records")],
            "copy_check": {m: _clean(r) for m, r in self.copy.to_dict(orient="index").items()},
            "future": {alias: f.to_records() for alias, f in self.future.items()},
        }

    def forecasts_table(self) -> pd.DataFrame:
        """``fold, cutoff, origin, timestamp, model, y, yhat, lower, upper, step`` rows."""
        columns = ["fold", "cutoff", "origin", "timestamp", "model", "y", "yhat", "lower", "upper"]
        table = self.backtest.forecasts[[*columns, "step"]].copy()
        for column in ("cutoff", "origin", "timestamp"):
            table[column] = table[column].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        return table


def data_hash(candles: pd.DataFrame) -> str:
    """SHA-256 of the candles' timestamps and values, as they are used."""
    hashed = pd.util.hash_pandas_object(candles, index=True).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def run_experiment(
    candles: pd.DataFrame,
    settings: ExperimentSettings,
    *,
    source: Mapping[str, Any] | None = None,
    progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    future: bool = True,
) -> ExperimentResult:
    """Backtest every model on the same folds, score them, test them, forecast the future.

    Parameters
    ----------
    candles
        The OHLCV frame.
    settings
        Models, their settings, the backtest layout and the seed.
    source
        Where the data came from (exchange, symbol, ...), recorded in the result.
    progress
        ``progress(fraction, message)``: the backtest takes 90 % of the bar, the final
        refit on all data the rest.
    should_stop
        Polled between steps; True raises :class:`~forecasting.errors.Cancelled`.
    future
        Also refit every model on all the data and forecast the next ``horizon`` candles.
    """
    models = settings.build_models()

    def backtest_progress(fraction: float, message: str) -> None:
        if progress is not None:
            progress(0.9 * fraction if future else fraction, message)

    backtest = walk_forward(
        models, candles, settings.backtest, progress=backtest_progress, should_stop=should_stop
    )
    forecasts: dict[str, Forecast] = {}
    if future:
        for position, (alias, template) in enumerate(models.items()):
            # Only the LSTM polls should_stop inside its fit: ask between models too.
            if should_stop is not None and should_stop():
                raise Cancelled("The experiment was cancelled.")
            model = template.clone().fit(candles, should_stop=should_stop)
            forecasts[alias] = model.predict(settings.backtest.horizon)
            if progress is not None:
                progress(0.9 + 0.1 * (position + 1) / len(models), f"refit on all data: {alias}")
    data = {
        **dict(source or {}),
        "candles": len(candles),
        "first": candles.index[0].isoformat(),
        "last": candles.index[-1].isoformat(),
        "sha256": data_hash(candles),
    }
    return ExperimentResult(
        settings=settings,
        backtest=backtest,
        metrics=score(backtest),
        by_horizon=score_by_horizon(backtest),
        dm_tests=dm_table(backtest),
        copy=copy_check(backtest),
        future=forecasts,
        data=data,
    )


def parse_models(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Model aliases from ``"naive,prophet,lstm"``; ``None`` gives every model."""
    if text is None:
        return DEFAULT_MODELS
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(dict.fromkeys(item.strip() for item in items if item.strip()))


def _clean(record: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe values: NaN and infinities become null, numpy scalars plain Python."""
    out = {}
    for key, value in record.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out


def dumps(document: Any) -> str:
    """JSON text of a document from :meth:`ExperimentResult.to_json`."""
    return json.dumps(document, indent=2, allow_nan=False, default=str)
