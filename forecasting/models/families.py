"""The LSTM's other network families as models of their own: GRU, Conv-LSTM, LSTM + attention.

Each is :class:`~forecasting.models.lstm.LSTM` with its ``family`` setting fixed (the
networks are described under *Network families* in :mod:`forecasting.models.lstm`):
the same settings, targets, scalers, validation tail, conformal intervals, pooled
networks, save/load and checks, with an alias of its own, so that each is listed, fitted,
compared and tracked beside the LSTM wherever models are (``MODELS``, ``--model gru``,
``compare --models naive,lstm,gru``).

``family`` stays a setting (``get_params()["family"]`` is ``"gru"`` for a
:class:`GRU`), so it is recorded in saved files and in the settings hash like any other;
a different value is refused by :meth:`~forecasting.models.base.Forecaster.check_settings`
("GRU family must be one of gru, got 'lstm'.").

TensorFlow is imported only when a network is built (as for the LSTM).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from forecasting.models.lstm import LSTM
from forecasting.ranges import Range

__all__ = ["GRU", "ConvLSTM", "LSTMAttention"]


def _fixed_family(family: str) -> Any:
    """``LSTM.__init__`` with ``family`` defaulting to ``family``: the same signature
    (read by ``get_params``, ``clone`` and the settings checks), another default."""
    base = inspect.signature(LSTM.__init__)
    signature = base.replace(
        parameters=[
            p.replace(default=family) if name == "family" else p
            for name, p in base.parameters.items()
        ]
    )

    @functools.wraps(LSTM.__init__)
    def __init__(self: LSTM, *args: Any, **settings: Any) -> None:
        bound = signature.bind(self, *args, **settings)
        bound.apply_defaults()
        LSTM.__init__(*bound.args, **bound.kwargs)

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    return __init__


class _Family(LSTM):
    """An LSTM whose ``family`` is fixed to :attr:`family_name`."""

    family_name = "lstm"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__init__ = _fixed_family(cls.family_name)  # type: ignore[method-assign]
        cls.parameter_ranges = {
            **LSTM.parameter_ranges,
            "family": Range(choices=(cls.family_name,)),
        }


class GRU(_Family):
    """Stacked GRU layers with the LSTM's dense direct multi-step head.

    The settings, attributes and errors are the LSTM's (:class:`LSTM`), with
    ``family="gru"``: ``keras.layers.GRU`` in place of each LSTM layer.
    """

    alias = "gru"
    capabilities = LSTM.capabilities  # seeded, trained horizon, intervals
    title = "GRU"
    family_name = "gru"


class ConvLSTM(_Family):
    """Causal 1-D convolutions, then the LSTM stack and its dense direct multi-step head.

    The settings, attributes and errors are the LSTM's (:class:`LSTM`), with
    ``family="conv_lstm"``: two ``keras.layers.Conv1D`` layers (``units`` filters,
    kernel 3, ReLU, ``padding="causal"``: a step reads no later candle) before the LSTM.
    """

    alias = "conv_lstm"
    capabilities = LSTM.capabilities  # seeded, trained horizon, intervals
    title = "Conv-LSTM"
    family_name = "conv_lstm"


class LSTMAttention(_Family):
    """The LSTM stack with attention over its outputs, then the dense multi-step head.

    The settings, attributes and errors are the LSTM's (:class:`LSTM`), with
    ``family="attention"``: the last step's output queries every step's output through
    ``keras.layers.MultiHeadAttention``; the context and the last output feed the head.
    """

    alias = "lstm_attention"
    capabilities = LSTM.capabilities  # seeded, trained horizon, intervals
    title = "LSTM + attention"
    family_name = "attention"
