"""Forecasting models behind one interface (see :mod:`forecasting.models.base`).

Importing this package imports neither TensorFlow nor Prophet: the LSTM and Prophet
import them inside ``fit``.
"""

from __future__ import annotations

from typing import Any

from forecasting.errors import ConfigurationError
from forecasting.models.base import Forecast, Forecaster, NotFittedError
from forecasting.models.drift import Drift
from forecasting.models.lstm import LSTM
from forecasting.models.moving_average import MovingAverage
from forecasting.models.naive import Naive
from forecasting.models.prophet import ProphetModel
from forecasting.models.seasonal_naive import SeasonalNaive

__all__ = [
    "BASELINES",
    "LSTM",
    "MODELS",
    "Drift",
    "Forecast",
    "Forecaster",
    "MovingAverage",
    "Naive",
    "NotFittedError",
    "ProphetModel",
    "SeasonalNaive",
    "make_model",
]

MODELS: dict[str, type[Forecaster]] = {
    cls.alias: cls for cls in (Naive, Drift, SeasonalNaive, MovingAverage, ProphetModel, LSTM)
}
BASELINES: tuple[str, ...] = ("naive", "drift", "seasonal_naive", "moving_average")


def make_model(alias: str, **settings: Any) -> Forecaster:
    """A model by its alias (``"naive"``, ``"lstm"``, ...) with the given settings.

    Raises
    ------
    ConfigurationError
        For an unknown alias or a setting the model does not have.
    """
    if alias not in MODELS:
        raise ConfigurationError(f"Unknown model '{alias}'. Choose from: {', '.join(MODELS)}.")
    cls = MODELS[alias]
    try:
        return cls(**settings)
    except TypeError as exc:
        raise ConfigurationError(f"{cls.title}: {exc}") from exc
