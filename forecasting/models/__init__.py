"""Forecasting models behind one interface (see :mod:`forecasting.models.base`).

Importing this package imports neither TensorFlow nor Prophet: the LSTM (and its other
network families: GRU, Conv-LSTM, LSTM + attention) and Prophet import them inside
``fit``.
"""

from __future__ import annotations

from typing import Any

from forecasting.errors import ConfigurationError
from forecasting.models.base import Forecast, Forecaster, NotFittedError
from forecasting.models.drift import Drift
from forecasting.models.families import GRU, ConvLSTM, LSTMAttention
from forecasting.models.lstm import LSTM
from forecasting.models.moving_average import MovingAverage
from forecasting.models.naive import Naive
from forecasting.models.prophet import ProphetModel
from forecasting.models.seasonal_naive import SeasonalNaive

__all__ = [
    "BASELINES",
    "GRU",
    "LSTM",
    "MODELS",
    "NETWORKS",
    "ConvLSTM",
    "Drift",
    "Forecast",
    "Forecaster",
    "LSTMAttention",
    "MovingAverage",
    "Naive",
    "NotFittedError",
    "ProphetModel",
    "SeasonalNaive",
    "make_model",
]

MODELS: dict[str, type[Forecaster]] = {
    cls.alias: cls
    for cls in (
        Naive,
        Drift,
        SeasonalNaive,
        MovingAverage,
        ProphetModel,
        LSTM,
        GRU,
        ConvLSTM,
        LSTMAttention,
    )
}
BASELINES: tuple[str, ...] = ("naive", "drift", "seasonal_naive", "moving_average")
#: The neural networks: the LSTM and its other families, one alias each (same settings).
NETWORKS: tuple[str, ...] = ("lstm", "gru", "conv_lstm", "lstm_attention")


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
