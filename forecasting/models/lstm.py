"""LSTM (Keras 3 on TensorFlow): direct multi-step forecasts of log returns or prices.

Inputs and targets
------------------
* The network reads a window of ``lookback`` rows of inputs (the target series itself
  plus the chosen features) that ends at the forecast origin ``t``, the last candle of
  the history, and outputs the next ``horizon`` target values at once (direct
  multi-step). The window always ends at ``t``: a row whose inputs are undefined is
  never skipped to make a window fit. A training window holding such a row is not
  trained on, and a forecast whose window holds one is refused with
  :class:`~forecasting.errors.InsufficientHistory` naming the input (see
  :meth:`LSTM.input_window`): never a silent, earlier window.
* Steps are time, not rows. Step ``k`` is the candle ``k`` timeframes after the
  origin, as :func:`forecasting.ohlcv.future_timestamps` stamps it (business days for
  daily stock data), and the training target for step ``k`` is that candle's close,
  found by timestamp (:func:`step_targets`). The default target is the per-step log
  return ``log c(t + k) - log c(t + k - 1)`` by time (a price-level target mostly
  learns to copy the last price); ``target="price"`` uses ``c(t + k)`` itself. A
  window whose target candles are not all in the data (a gap: missing candles) is
  neither trained on nor used for calibration, so no target spans a gap. Forecasts
  are turned back into prices from the close at the origin:
  ``c(t) exp(r_1 + ... + r_k)``.
* Features and the scalers are computed and fitted on the data given to ``fit`` only
  (the training window), and forecasting from a later origin recomputes the features
  on the candles up to that origin: nothing after the origin is ever read.
* Early stopping watches a chronological validation tail: the last
  ``validation_fraction`` of the usable windows. Training windows whose targets reach
  into the tail's targets (the last ``horizon - 1`` before it) are left out, so no
  close the tail is scored on was trained on.

Intervals
---------
Both methods are split-conformal on the validation tail (Vovk, Gammerman & Shafer,
*Algorithmic Learning in a Random World*, 2005; Lei, G'Sell, Rinaldo, Tibshirani &
Wasserman, "Distribution-free predictive inference for regression", JASA 2018;
Angelopoulos & Bates, "A gentle introduction to conformal prediction", 2021). Each of
the ``n`` tail windows gives a score per step; ``q`` is the ``k``-th smallest score
with the textbook rank ``k = ceil((n + 1) level)`` (:func:`conformal_quantile`). When
the tail's windows and the forecast's are exchangeable, the target falls inside the
interval with probability at least ``level`` (marginally, per step, on average over
origins; a change of regime after the tail breaks the assumption).

* ``"conformal"``: the score is the absolute error of the forecast path (cumulative
  log return, or price), and the interval is ``forecast -/+ q``.
* ``"mc_dropout"``: ``mc_samples`` forward passes with dropout on give a spread
  ``sd`` per step (the standard deviation of the sampled paths). That spread is only
  the network's own uncertainty: as a 90 % interval, the raw sample quantiles covered
  about 6 % of the targets. So it is conformalised with the normalised score
  ``|y - forecast| / sd`` (locally weighted split conformal: Papadopoulos, Gammerman &
  Vovk, "Normalized nonconformity measures for regression conformal prediction", 2008;
  Lei et al. 2018, locally weighted conformal inference), and the interval is
  ``forecast -/+ q sd``: at the level, and wider where the dropout samples disagree.
  The centre is the network's forecast without dropout (the point shown), so the
  interval always contains it.

When ``k > n`` (fewer than ``level / (1 - level)`` tail windows: 9 for 90 %, 19 for
95 %) no finite score reaches the rank: ``q`` is infinite and the interval is
unbounded, lower 0 and upper ``inf`` in price (with either target: a price is never
below zero), and the forecast carries a note saying how many windows the level needs.
A ``q`` of zero (at least ``k`` of the tail's errors were zero: closes that never
changed there) would be an interval of zero width, a claim of certainty: it is stored
as ``inf`` too, and the note says why. The tail also chooses the early-stopping epoch, a selection
among at most ``epochs`` networks; its effect on the residuals is small but makes the
guarantee approximate.

Closes that never change
------------------------
When the training targets never change (a stablecoin pegged at exactly 1.0000: every
close the same, so every log return 0; or a spread of the targets within a few rounding
errors of their level, :data:`FLAT_TOLERANCE`), there is nothing to learn and no scale
to standardise the targets by (their standard deviation is 0). No network is trained:
the model forecasts no change (the last close of the history, for every step, also
from a later origin given with ``history=``), with a note. Its interval is unbounded
(lower 0, upper ``inf``) with that note: a series that never moved in training gives no
errors to calibrate on, and a zero-width interval would claim a certainty the model
cannot back. An input column that is constant in training keeps a scale of 1 (it is
centred to 0), so no division by a zero or rounding-noise scale happens anywhere.

Network families
----------------
``family`` chooses the network between the input window and the dense head; the
targets, scalers, validation tail, intervals and the rest above are the same for all:

* ``"lstm"`` (default): stacked LSTM layers, the last one's final state to the head.
* ``"gru"``: the same stack of ``keras.layers.GRU`` layers (Cho et al., "Learning phrase
  representations using RNN encoder-decoder", 2014): two gates instead of three.
* ``"conv_lstm"``: :data:`CONV_LAYERS` ``keras.layers.Conv1D`` layers (``units``
  filters, kernel :data:`CONV_KERNEL`, ReLU) before the LSTM stack, with
  ``padding="causal"``: each step's convolution reads that candle and the ones before
  it, never a later one, so every step of the sequence the LSTM reads is a function of
  the past only (the CNN-LSTM of Livieris, Pintelas & Pintelas, "A CNN-LSTM model for
  gold price time-series forecasting", Neural Computing and Applications, 2020).
* ``"attention"``: the LSTM stack returns every step's output; the last step's output
  queries all of them through ``keras.layers.MultiHeadAttention`` (one head, ``units``
  wide: Luong, Pham & Manning, "Effective approaches to attention-based neural machine
  translation", 2015), and the attention context beside the last output goes to the head.
  The keys and values end at the last candle of the window, so no mask is needed.

Engineering
-----------
* The recurrent layer of the ``"lstm"`` family is
  :class:`~forecasting.models.fused_lstm.FusedLSTM`, Keras' LSTM (same gates,
  initialisers and weights layout, outputs and gradients equal to float32 rounding)
  over TensorFlow's fused CPU op ``BlockLSTM``, and training runs its batch loop
  inside one traced graph (:class:`~forecasting.models._graph_training.GraphTrainer`:
  the same loss, optimizer, shuffling per epoch and early-stopping rule as
  ``keras.Model.fit``). Keras on TensorFlow runs an LSTM as a loop of small ops per time
  step, and ``fit`` adds its own per-batch machinery: together about three times the
  time of the arithmetic (``bench/lstm_kernel_bench.py``). ``jit_compile=True`` keeps
  Keras' own layer and ``fit``, with a note. The other families run Keras' own layers
  (the fused kernel is an LSTM only) under the same in-graph loop, or under ``fit`` with
  ``jit_compile=True``.
* Every trainable and non-trainable weight of every family gets the seed's initial value
  from Keras' own initializers for its layer (:meth:`_Network.initial_weights`), so one
  seed gives bit-identical forecasts, and a network with a weight no rule covers is
  refused when it is built.
* TensorFlow is imported inside the methods that need it, never by ``import forecasting``.
* Keras leaks about 11 MB per freshly built model, so compiled networks are kept in a
  small pool keyed by architecture (not seed) and reset (the seed's initial weights,
  zeroed optimizer, the seed's dropout RNG)
  before each fit; a fitted model keeps its own weights as arrays, so models sharing a
  network never see each other's weights.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecasting.errors import (
    Cancelled,
    ConfigurationError,
    DataFormatError,
    InsufficientHistory,
    NotFittedError,
)
from forecasting.features import compute_features, parse_features, warmup_length
from forecasting.models.base import Capabilities, Forecaster, ProgressCallback
from forecasting.ohlcv import timeframe_offset
from forecasting.preprocessing import DENOISERS, denoise
from forecasting.ranges import HORIZON, LEVEL, SEED, Range

__all__ = ["LSTM", "conformal_quantile", "conformal_rank", "step_positions", "step_targets"]

TARGETS = ("log_return", "price")
KERAS_KERNEL_NOTE = (
    "The LSTM trained on Keras' own LSTM layer under Keras' fit, not the fused kernel: "
    "jit_compile=True asks for XLA, which the fused kernel has no form of. Same "
    "mathematics, a different order of the training rows, about twice the time."
)
# Candles read before a forecast window so recursive features have converged:
# (13/14) ** 600 is about 5e-20 for RSI(14), and slower EMAs are far inside that too.
TAIL_EXTRA = 600
INTERVALS = ("conformal", "mc_dropout")
FAMILIES = ("lstm", "gru", "conv_lstm", "attention")
#: Each family's model alias and title (the classes of :mod:`forecasting.models.families`
#: carry them; an ``LSTM(family=...)`` built in the library takes the same ones, so both
#: are named and coloured alike in tables, charts and files).
FAMILY_NAMES = {
    "lstm": ("lstm", "LSTM"),
    "gru": ("gru", "GRU"),
    "conv_lstm": ("conv_lstm", "Conv-LSTM"),
    "attention": ("lstm_attention", "LSTM + attention"),
}
# The conv_lstm family's convolutions before the LSTM: layers, and candles per kernel
# (two layers of 3 see 5 candles per step; the smallest lookback is 5).
CONV_LAYERS = 2
CONV_KERNEL = 3
# Rows per forward pass when drawing MC-dropout samples for the calibration windows.
MC_CHUNK = 4096
# A spread of at most this many times the level (a few rounding errors) is no movement:
# standardising by it would blow rounding noise up to unit size.
FLAT_TOLERANCE = 8 * float(np.finfo("float64").eps)


def _keras():
    # Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    # Defines and registers FusedLSTM with Keras' serialisation, so that a saved model
    # loads in safe mode in a process that has not trained one.
    from forecasting.models.fused_lstm import fused_lstm_class

    fused_lstm_class()

    if not getattr(_keras, "deterministic", False):
        # Same seed, same forecast: deterministic kernels (a small cost on the CPU).
        tf.config.experimental.enable_op_determinism()
        _keras.deterministic = True
    return keras


class _Network:
    """One compiled Keras model per architecture, reset to any seed's fresh start.

    The seed is not part of the architecture: building and tracing a network for every
    seed leaks memory in TensorFlow (each traced training step stays registered), so
    one network serves every seed and :meth:`reset` draws that seed's initial weights.
    """

    def __init__(self, keras: Any, spec: tuple) -> None:
        lookback, n_inputs, horizon, layers, units, dropout, learning_rate, jit, family = spec
        self.keras = keras
        self.family = family
        # The fused kernel is an LSTM with no XLA form: the plain LSTM family uses it
        # unless jit_compile=True asks for Keras' own layer.
        self.fused = family == "lstm" and jit is not True
        # The in-graph training loop serves every family; jit_compile=True keeps fit.
        self.graph_trained = jit is not True
        if family == "attention":
            # Two inputs to one layer (query and values): the functional API.
            inputs = keras.Input((lookback, n_inputs))
            hidden = self._attention(inputs, layers, units, dropout)
            self.model = keras.Model(inputs, keras.layers.Dense(horizon)(hidden))
        else:
            stack: list[Any] = [keras.Input((lookback, n_inputs))]
            if family == "conv_lstm":
                # Causal padding: step t's convolution reads candles up to t only.
                stack += [
                    keras.layers.Conv1D(units, CONV_KERNEL, padding="causal", activation="relu")
                    for _ in range(CONV_LAYERS)
                ]
            stack += self._stack(layers, units, dropout, sequences=False)
            stack.append(keras.layers.Dense(horizon))
            self.model = keras.Sequential(stack)
        self.learning_rate = learning_rate
        self.model.compile(
            optimizer=keras.optimizers.Adam(learning_rate), loss="mse", jit_compile=jit
        )
        weights = {id(w) for w in self.model.weights}
        # The variables that are not weights are the random-generator states of dropout.
        self.rng_variables = [v for v in self.model.variables if id(v) not in weights]
        # Every weight must have a rule in initial_weights, or a seed would not fix it.
        self.initial_weights(0)
        self.lock = threading.Lock()
        self._sampler: Any = None
        self._trainer: Any = None

    def _stack(self, layers: int, units: int, dropout: float, *, sequences: bool) -> list:
        """``layers`` recurrent layers of the family, each followed by dropout; the last
        returns every step's output when ``sequences``, else its final output."""
        keras = self.keras
        if self.family == "gru":
            recurrent = keras.layers.GRU
        elif self.fused:
            from forecasting.models.fused_lstm import FusedLSTM

            recurrent = FusedLSTM
        else:
            recurrent = keras.layers.LSTM
        stack: list[Any] = []
        for layer in range(layers):
            stack.append(recurrent(units, return_sequences=sequences or layer < layers - 1))
            if dropout > 0:
                stack.append(keras.layers.Dropout(dropout))
        return stack

    def _attention(self, x: Any, layers: int, units: int, dropout: float) -> Any:
        """The LSTM stack's every output, attended to by the last one; the context and
        the last output side by side, shape ``(batch, 2 units)``."""
        keras = self.keras
        for layer in self._stack(layers, units, dropout, sequences=True):
            x = layer(x)
        # The last step's output (the origin's) queries every step's output.
        last = keras.layers.Cropping1D((int(x.shape[1]) - 1, 0))(x)
        context = keras.layers.MultiHeadAttention(num_heads=1, key_dim=units)(last, x)
        return keras.layers.Flatten()(keras.layers.Concatenate()([context, last]))

    @property
    def trainer(self) -> Any:
        """The in-graph training loop for this network (traced once, reused by every fit)."""
        if self._trainer is None:
            from forecasting.models._graph_training import GraphTrainer

            self._trainer = GraphTrainer(self.model)
        return self._trainer

    def sample(self, batch: np.ndarray) -> np.ndarray:
        """One forward pass with dropout on (an MC-dropout sample per row).

        A traced graph: calling the model eagerly loops over the time steps in Python
        (about 60 ms against 1.5 ms for 30 rows). Traced once per network, not per
        call, and ``reduce_retracing`` keeps it to one or two traces for any batch size.
        """
        if self._sampler is None:
            import tensorflow as tf

            model = self.model
            self._sampler = tf.function(lambda x: model(x, training=True), reduce_retracing=True)
        return np.asarray(self._sampler(batch))

    def initial_weights(self, seed: int) -> dict[int, np.ndarray]:
        """Each weight's starting value for ``seed``, drawn with Keras' own initializers
        for these layers: Glorot-uniform kernels (dense, convolution, attention
        projections), orthogonal recurrent kernels, zero biases with the LSTM's
        forget-gate bias at one.

        Raises
        ------
        RuntimeError
            When the network holds a weight none of these rules covers (a layer added
            without one): its start would not be fixed by the seed.
        """
        keras = self.keras
        draws = iter(range(seed * 7919 + 1, seed * 7919 + 7919))
        values: dict[int, np.ndarray] = {}

        def draw(initializer: Any, variable: Any) -> None:
            values[id(variable)] = np.asarray(
                keras.ops.convert_to_numpy(initializer(variable.shape)), dtype=variable.dtype
            )

        def zeros(variable: Any) -> None:
            values[id(variable)] = np.zeros(variable.shape, dtype=variable.dtype)

        def kernel_and_bias(layer: Any) -> None:
            draw(keras.initializers.GlorotUniform(seed=next(draws)), layer.kernel)
            if layer.bias is not None:
                zeros(layer.bias)

        from forecasting.models.fused_lstm import FusedLSTM

        recurrent = keras.layers.LSTM | keras.layers.GRU | FusedLSTM
        # Layers in the order they were built (the plain LSTM's draws are unchanged).
        for layer in self.model.layers:
            if isinstance(layer, recurrent):
                # Keras' layers keep their weights on their cell; FusedLSTM on itself.
                cell = layer if isinstance(layer, FusedLSTM) else layer.cell
                draw(keras.initializers.GlorotUniform(seed=next(draws)), cell.kernel)
                draw(keras.initializers.Orthogonal(seed=next(draws)), cell.recurrent_kernel)
                bias = np.zeros(cell.bias.shape, dtype=cell.bias.dtype)
                if getattr(cell, "unit_forget_bias", False):
                    bias[cell.units : 2 * cell.units] = 1.0
                values[id(cell.bias)] = bias
            elif isinstance(layer, keras.layers.Dense | keras.layers.Conv1D):
                kernel_and_bias(layer)
            elif isinstance(layer, keras.layers.MultiHeadAttention):
                for projection in (
                    layer.query_dense,
                    layer.key_dense,
                    layer.value_dense,
                    layer.output_dense,
                ):
                    kernel_and_bias(projection)
        missing = [w.path for w in self.model.weights if id(w) not in values]
        if missing:
            raise RuntimeError(f"No initial-weight rule for {', '.join(missing)}.")
        return values

    def reset(self, seed: int) -> None:
        """The seed's initial weights, zeroed optimizer state, the seed's dropout RNG."""
        initial = self.initial_weights(seed)
        for variable in self.model.weights:
            variable.assign(initial[id(variable)])
        for variable in self.model.optimizer.variables:
            if variable.path.endswith("learning_rate"):
                variable.assign(self.learning_rate)
            else:
                variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
        self.reset_rng(seed)

    def reset_rng(self, seed: int) -> None:
        """The dropout RNG as the seed starts it, so MC-dropout samples repeat for it."""
        for position, variable in enumerate(self.rng_variables):
            variable.assign(np.array([seed * 101 + position + 1, 0], dtype=variable.dtype))


class _NetworkPool:
    """At most ``size`` compiled networks (one per architecture), least recent dropped."""

    def __init__(self, size: int = 6) -> None:
        self.size = size
        self._networks: OrderedDict[tuple, _Network] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, spec: tuple) -> _Network:
        with self._lock:
            network = self._networks.pop(spec, None)
            if network is None:
                network = _Network(_keras(), spec)
            self._networks[spec] = network
            while len(self._networks) > self.size:
                self._networks.popitem(last=False)
            return network


_POOL = _NetworkPool()


class LSTM(Forecaster):
    """A stacked LSTM with a dense direct multi-step head.

    Parameters
    ----------
    lookback
        Candles in each input window; the window ends at the forecast origin.
    horizon
        Steps the network forecasts at once; ``predict`` may ask for fewer.
    layers, units, dropout
        Architecture: recurrent layers (LSTM, or GRU for that family), units per layer
        (also the filters of the conv_lstm family's convolutions), dropout after each.
    epochs, batch_size, learning_rate, patience
        Training: most epochs, batch size, Adam's learning rate, early-stopping patience
        (epochs without a better validation loss).
    validation_fraction
        Share of the most recent usable training windows held out for early stopping
        and for calibrating the intervals (the validation tail).
    target
        ``"log_return"`` (default: per-step log returns by time) or ``"price"``.
    features
        Feature specs for the inputs (see :func:`forecasting.features.parse_features`);
        ``""`` for none: then the only input is the target series itself.
    interval
        ``"conformal"`` (split-conformal on the absolute errors) or ``"mc_dropout"``
        (the MC-dropout spread, conformalised); see the module docs.
    level
        Interval coverage, e.g. 0.9.
    mc_samples
        Forward passes for MC dropout (at least 2).
    seed
        Random seed: the same seed gives the same forecast.
    denoise, denoise_window
        Optional noise reduction of the inputs (``"none"``, ``"hampel"``, ``"median"``)
        over a trailing window; see :mod:`forecasting.preprocessing`.
    jit_compile
        Keras' XLA switch. ``"auto"`` (default) or ``False``: the fused kernel
        (:class:`~forecasting.models.fused_lstm.FusedLSTM`) trained by the in-graph loop
        (:mod:`forecasting.models._graph_training`). ``True``: Keras' own LSTM layer under
        ``keras.Model.fit`` with XLA where Keras can (the fused kernel has no XLA form);
        the forecasts then say so in a note. Other families than ``"lstm"`` run Keras'
        own layers either way.
    family
        The network: ``"lstm"`` (default), ``"gru"``, ``"conv_lstm"`` (causal
        convolutions before the LSTM) or ``"attention"`` (attention over the LSTM's
        outputs); see *Network families* in the module docs. Any other value raises
        :class:`~forecasting.errors.ConfigurationError` when the model is fitted or its
        settings are checked.

    Attributes
    ----------
    interval_quantiles_
        The conformal ``q`` per step (absolute error, or normalised score for MC
        dropout); infinite when the validation tail is too short for the level, or when
        it would be zero.
    kernel_
        The recurrent layer trained: ``"fused"`` (TensorFlow's ``BlockLSTM`` op) or
        ``"keras"`` (Keras' own layers: ``jit_compile=True``, or a family other than
        ``"lstm"``).
    no_change_
        ``None`` for a trained network; otherwise the note saying why no network was
        trained (the training closes never change) and the model forecasts no change.
    training_windows_, calibration_windows_
        Open times of the last candle of each window trained on, and of each window of
        the validation tail (early stopping and calibration).
    """

    alias = "lstm"
    title = "LSTM"
    capabilities = Capabilities(
        conditions_on_history=True,
        seeded=True,
        seed_changes_forecast=True,
        trained_horizon=True,
        interval_methods=INTERVALS,
        needs_positive_prices=True,
    )
    # The upper bounds of the architecture and the training keep one fit within minutes
    # on a shared server (and a budget refuses what is still too much at once).
    parameter_ranges = {
        "lookback": Range(5, 365, integer=True),
        "horizon": HORIZON,
        "layers": Range(1, 3, integer=True),
        "units": Range(4, 256, integer=True),
        "dropout": Range(0.0, 0.9),
        "epochs": Range(1, 500, integer=True),
        "batch_size": Range(1, 4096, integer=True),
        "learning_rate": Range(0.0, 1.0, lo_open=True),
        "patience": Range(1, 500, integer=True),
        "validation_fraction": Range(0.0, 0.5, lo_open=True, hi_open=True),
        "target": Range(choices=TARGETS),
        "interval": Range(choices=INTERVALS),
        "level": LEVEL,
        "mc_samples": Range(1, 500, integer=True),
        "seed": SEED,
        "jit_compile": Range(choices=("auto", True, False)),
        "denoise": Range(choices=DENOISERS),
        "denoise_window": Range(2, 1000, integer=True),
        "family": Range(choices=FAMILIES),
    }

    def __init__(
        self,
        lookback: int = 30,
        horizon: int = 7,
        layers: int = 1,
        units: int = 32,
        dropout: float = 0.1,
        epochs: int = 30,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        patience: int = 5,
        validation_fraction: float = 0.15,
        target: str = "log_return",
        features: str = "rsi:14,macd:12:26:9,log_return",
        interval: str = "conformal",
        level: float = 0.9,
        mc_samples: int = 50,
        seed: int = 42,
        jit_compile: bool | str = "auto",
        denoise: str = "none",
        denoise_window: int = 7,
        family: str = "lstm",
    ) -> None:
        self.lookback = lookback
        self.horizon = horizon
        self.layers = layers
        self.units = units
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.target = target
        self.features = features
        self.interval = interval
        self.level = level
        self.mc_samples = mc_samples
        self.seed = seed
        self.jit_compile = jit_compile
        self.denoise = denoise
        self.denoise_window = denoise_window
        self.family = family
        if type(self) is LSTM and isinstance(family, str) and family in FAMILY_NAMES:
            self.alias, self.title = FAMILY_NAMES[family]

    # --- data -------------------------------------------------------------------------

    def _specs(self):
        return parse_features(self.features) if self.features else ()

    def _required_history(self) -> int:
        warmup = warmup_length(self._specs()) if self.features else 0
        # Enough for at least 8 windows: a few to train on, a couple to validate.
        return warmup + 1 + int(self.lookback) + int(self.horizon) + 8

    def _window_history(self) -> int:
        """Candles up to the origin a forecast needs: the warm-up, one change, the window."""
        warmup = warmup_length(self._specs()) if self.features else 0
        return int(self.lookback) + warmup + 1

    def _inputs(self, candles: pd.DataFrame) -> pd.DataFrame:
        """Unscaled input columns, one row per candle: NaN where an input is undefined.

        No row is dropped, so row ``i`` is candle ``i`` and a window of ``lookback``
        rows ending at a candle really ends there. The warm-up rows are NaN, and so is
        any input a feature leaves undefined; the noise filter never fills one in.
        """
        close = candles["close"].astype("float64")
        if self.target == "price":
            base = pd.DataFrame({"close": close})
        else:
            base = pd.DataFrame({"target_log_return": np.log(close).diff()})
        specs = self._specs()
        if specs:
            features = compute_features(candles, specs, drop_warmup=False)
            base = pd.concat([base, features], axis=1)
        # Trailing filters only, on inputs only: the targets stay the real returns. The
        # median filter would replace an undefined value by its neighbours' median.
        return denoise(base, self.denoise, self.denoise_window).where(base.notna())

    def _targets(self, close: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
        """Per row t: the next ``horizon`` values of the target series, NaN rows where a
        target candle is missing.

        ``positions[t, k - 1]`` is the row of the candle ``k`` timeframes after row ``t``
        (-1 when the data has none; see :func:`step_positions`). Without it the rows are
        taken as consecutive candles (data without gaps).
        """
        h = int(self.horizon)
        close = np.asarray(close, dtype="float64")
        if positions is None:
            later = np.arange(len(close))[:, None] + np.arange(1, h + 1)[None, :]
            positions = np.where(later < len(close), later, -1)
        return _target_values(close, positions, self.target)

    def _windows(self, scaled: np.ndarray) -> np.ndarray:
        """Sliding windows: row i holds inputs ``i - lookback + 1 .. i``."""
        lookback = int(self.lookback)
        view = np.lib.stride_tricks.sliding_window_view(scaled, lookback, axis=0)
        return np.ascontiguousarray(view.transpose(0, 2, 1), dtype="float32")

    def _validate_settings(self) -> None:
        # Each setting alone is checked against parameter_ranges; these are the pairs.
        if self.interval == "mc_dropout" and not self.dropout > 0:
            raise ConfigurationError("MC dropout intervals need dropout above 0.")
        if self.interval == "mc_dropout" and int(self.mc_samples) < 2:
            raise ConfigurationError("MC dropout intervals need at least 2 mc_samples.")

    # --- fit / predict ------------------------------------------------------------------

    def _fit(
        self,
        candles: pd.DataFrame,
        *,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        warm_start: LSTM | None = None,
    ) -> None:
        self._validate_settings()
        lookback, horizon = int(self.lookback), int(self.horizon)
        self.no_change_ = None
        close = candles["close"].to_numpy(dtype="float64")
        if _is_flat(close, float(np.abs(close).max())):
            # Nothing to learn, nor to scale the targets by: checked before the inputs,
            # which a series that never moves may leave undefined.
            self._fit_no_change(candles, self._flat_closes_note(candles))
            return
        inputs = self._inputs(candles)
        values = inputs.to_numpy(dtype="float64")
        defined = np.isfinite(values).all(axis=1)
        if not defined.any():
            raise InsufficientHistory(
                f"No candle has every LSTM input defined among these {len(candles)}: use a "
                "longer date range or fewer/shorter features."
            )
        # The scaler sees only the training rows (the window given to fit).
        self.scale_mean_ = values[defined].mean(axis=0)
        std = values[defined].std(axis=0)
        # A constant input (or one varying by rounding noise only) is centred, not
        # divided by its (near) zero spread.
        level = np.abs(values[defined]).max(axis=0)
        self.scale_std_ = np.where(std > FLAT_TOLERANCE * level, std, 1.0)
        self.input_columns_ = list(inputs.columns)
        scaled = (values - self.scale_mean_) / self.scale_std_

        # Window j ends at row j + lookback - 1 and is usable when every input in it is
        # defined and every one of its target candles (by time) is in the data.
        positions = step_positions(candles.index, horizon, self.timeframe_, self.calendar_)
        targets = self._targets(candles["close"].to_numpy(dtype="float64"), positions)
        ends = np.arange(lookback - 1, len(candles))
        complete = np.lib.stride_tricks.sliding_window_view(defined, lookback).all(axis=1)
        usable = complete & np.isfinite(targets[ends]).all(axis=1)
        ends = ends[usable]
        if len(ends) < 4:
            raise InsufficientHistory(
                f"Only {len(ends)} training windows with every input defined and all "
                f"{horizon} target candles present: use a longer date range, a shorter "
                "lookback/horizon, or data without gaps."
            )
        X, y = self._windows(scaled)[usable], targets[ends]

        # The validation tail: the last usable windows. A training window's targets
        # must all come before the tail's first target (its last target candle at or
        # before the first tail window's last candle), so the tail is scored on closes
        # the network never trained on.
        n_val = max(2, int(round(len(ends) * float(self.validation_fraction))))
        val = np.zeros(len(ends), dtype=bool)
        val[-n_val:] = True
        train = ~val & (positions[ends, horizon - 1] <= ends[-n_val])
        if train.sum() < 2:
            raise InsufficientHistory(
                f"Only {int(train.sum())} training windows before the validation tail: use a "
                "longer date range or a shorter lookback/horizon."
            )
        self.training_windows_ = candles.index[ends[train]]
        self.calibration_windows_ = candles.index[ends[val]]
        if self._flat_target(y[train]):
            # The closes move, but not in any training window's targets (only in the
            # warm-up or in the validation tail): a network would learn a constant.
            self._fit_no_change(candles, self._flat_targets_note(int(train.sum())))
            return
        self.target_mean_, self.target_std_ = self._target_scale(y[train])
        y_scaled = ((y - self.target_mean_) / self.target_std_).astype("float32")
        X_train, y_train = X[train], y_scaled[train]
        X_val, y_val = X[val], y_scaled[val]

        keras = _keras()
        network = _POOL.get(self._spec(len(self.input_columns_)))
        with network.lock:
            network.reset(int(self.seed))
            keras.utils.set_random_seed(int(self.seed))
            if network.graph_trained:
                losses, cancelled = network.trainer.fit(
                    X_train,
                    y_train,
                    X_val,
                    y_val,
                    epochs=int(self.epochs),
                    batch_size=int(self.batch_size),
                    patience=int(self.patience),
                    seed=int(self.seed),
                    on_epoch=_epoch_reporter(int(self.epochs), progress),
                    should_stop=should_stop,
                )
            else:
                callbacks = [
                    keras.callbacks.EarlyStopping(
                        monitor="val_loss", patience=int(self.patience), restore_best_weights=True
                    ),
                    _ProgressCallback(keras, int(self.epochs), progress, should_stop),
                ]
                losses = network.model.fit(
                    X_train,
                    y_train,
                    validation_data=(X_val, y_val),
                    epochs=int(self.epochs),
                    batch_size=int(self.batch_size),
                    shuffle=True,
                    callbacks=callbacks,
                    verbose=0,
                ).history
                cancelled = callbacks[1].cancelled
            if cancelled:
                raise Cancelled("Training was cancelled.")
            self.kernel_ = "fused" if network.fused else "keras"
            self.weights_ = [w.copy() for w in network.model.get_weights()]
            point = self._to_paths(np.asarray(network.model.predict_on_batch(X_val)))
            if self.interval == "mc_dropout":
                network.reset_rng(int(self.seed))
                spread = self._mc_spread(network, X_val)
        self.loss_history_ = {k: [float(v) for v in vals] for k, vals in losses.items()}
        self.epochs_trained_ = len(self.loss_history_.get("loss", []))
        # Scores against the real targets (not their float32 scaled copies).
        scores = np.abs(self._paths(y[val]) - point)
        if self.interval == "mc_dropout":
            scores = scores / spread
        q = conformal_quantile(scores, float(self.level))
        # A zero q (at least k zero errors: a tail whose closes never changed) would be
        # a zero-width interval, a claim of certainty: unbounded instead, with a note.
        self.interval_quantiles_ = np.where(q > 0, q, np.inf)

    def _target_scale(self, y: np.ndarray) -> tuple[float, float]:
        """Mean and standard deviation of the training targets (never a flat set: see
        :meth:`_flat_target`, checked first)."""
        return float(y.mean()), float(y.std())

    def _flat_target(self, y: np.ndarray) -> bool:
        """True when the training targets never change (up to rounding noise).

        Log returns are already relative to the price, so their level is 1 (a log
        return of one rounding error is no move); prices are measured against their own
        size.
        """
        y = np.asarray(y, dtype="float64")
        level = 1.0 if self.target == "log_return" else float(np.abs(y).max())
        return _is_flat(y, level)

    def _fit_no_change(self, candles: pd.DataFrame, note: str) -> None:
        """The fitted state of a model that forecasts no change (no network trained)."""
        self.no_change_ = note
        with np.errstate(all="ignore"):  # only the column names are read
            self.input_columns_ = list(self._inputs(candles).columns)
        if not hasattr(self, "training_windows_"):
            self.training_windows_ = candles.index[:0]
            self.calibration_windows_ = candles.index[:0]
        close = float(candles["close"].iloc[-1])
        self.target_mean_ = 0.0 if self.target == "log_return" else close
        self.target_std_ = 0.0
        self.interval_quantiles_ = np.full(int(self.horizon), np.inf)
        self.loss_history_ = {}
        self.epochs_trained_ = 0

    @staticmethod
    def _flat_closes_note(candles: pd.DataFrame) -> str:
        # The same words for every fit, so that a backtest says it once, not per fold.
        close = float(candles["close"].iloc[0])
        return (
            f"The training closes never change (every close is {close:g}): "
            "the LSTM forecasts no change (the last close) and trains no network. Its interval "
            "is unbounded: closes that never moved give no errors to calibrate it on, and a "
            "zero-width interval would claim certainty."
        )

    @staticmethod
    def _flat_targets_note(n_train: int) -> str:
        return (
            "The training windows' targets never change (the closes move only outside them: "
            "in the warm-up, between the training windows and the validation tail, or in the "
            "tail, none of which is trained on), so the LSTM forecasts no change (the last "
            "close) and trains no network. Its interval is unbounded: targets that never "
            "moved give no errors to calibrate it on, and a zero-width interval would claim "
            "certainty."
        )

    def _paths(self, y: np.ndarray) -> np.ndarray:
        """Targets -> cumulative log returns (or prices) per step."""
        y = np.asarray(y, dtype="float64")
        return np.cumsum(y, axis=-1) if self.target == "log_return" else y

    def _to_paths(self, y_scaled: np.ndarray) -> np.ndarray:
        """Scaled network outputs -> cumulative log returns (or prices) per step."""
        return self._paths(
            np.asarray(y_scaled, dtype="float64") * self.target_std_ + self.target_mean_
        )

    def _mc_spread(self, network: _Network, windows: np.ndarray) -> np.ndarray:
        """Per window and step, the standard deviation of ``mc_samples`` sampled paths
        (forward passes with dropout on), floored above zero: shape ``(windows, horizon)``.

        The caller holds the network's lock with the fitted weights set.
        """
        samples = int(self.mc_samples)
        batch = np.repeat(windows, samples, axis=0)  # each window's samples side by side
        outputs = [
            network.sample(batch[start : start + MC_CHUNK])
            for start in range(0, len(batch), MC_CHUNK)
        ]
        paths = self._to_paths(np.concatenate(outputs))
        paths = paths.reshape(len(windows), samples, -1)
        spread = paths.std(axis=1, ddof=1)
        # A zero spread would make a score 0/0; the floor is far below any real spread.
        return np.maximum(spread, 1e-12 * self.target_std_)

    def _spec(self, n_inputs: int) -> tuple:
        return (
            int(self.lookback),
            n_inputs,
            int(self.horizon),
            int(self.layers),
            int(self.units),
            float(self.dropout),
            float(self.learning_rate),
            self.jit_compile,
            self.family,
        )

    def input_window(self, history: pd.DataFrame | None = None) -> pd.DataFrame:
        """The unscaled inputs a forecast from the last candle of ``history`` reads.

        Parameters
        ----------
        history
            Candles up to the forecast origin; defaults to the data the model was
            fitted on.

        Returns
        -------
        pd.DataFrame
            ``lookback`` rows, one per candle, ending at the origin (the last candle of
            ``history``); one column per input.

        Raises
        ------
        NotFittedError
            When called before :meth:`fit`.
        InsufficientHistory
            When ``history`` is too short for the window, or an input is undefined in
            the window ending at the origin (the forecast is refused rather than read
            from an earlier window).
        """
        if not hasattr(self, "input_columns_"):
            raise NotFittedError("LSTM is not fitted yet: call fit(candles) first.")
        history = self.history_ if history is None else history
        lookback, need = int(self.lookback), self._window_history()
        if len(history) < need:
            raise InsufficientHistory(
                f"The LSTM needs {need} candles up to the forecast origin; got {len(history)}."
            )
        # Features recomputed on the candles up to the origin. Recursive ones (RSI, MACD's
        # EMAs) depend on the whole past, so a generous tail is read: after TAIL_EXTRA
        # more candles the start's influence is below floating-point noise, and the
        # window matches what the network saw in training.
        tail = history.iloc[-(need + TAIL_EXTRA) :]
        window = self._inputs(tail)[self.input_columns_].iloc[-lookback:]
        undefined = window.isna()
        if undefined.to_numpy().any():
            row = int(np.flatnonzero(undefined.any(axis=1).to_numpy())[-1])
            columns = [c for c in window.columns if undefined[c].iloc[row]]
            raise InsufficientHistory(self._undefined_message(tail, window, row, columns))
        return window

    def _undefined_message(
        self, tail: pd.DataFrame, window: pd.DataFrame, row: int, columns: list[str]
    ) -> str:
        origin, when = window.index[-1], window.index[row]
        where = (
            "at the forecast origin"
            if row == len(window) - 1
            else f"{len(window) - 1 - row} candle(s) before the forecast origin, inside "
            f"the {len(window)}-candle input window"
        )
        features = [str(s) for s in self._specs() if set(s.compute(tail).columns) & set(columns)]
        drop = (
            f", or leave {', '.join(features)} out of the features and fit again"
            if features
            else ""
        )
        return (
            f"The LSTM cannot forecast from {origin:%Y-%m-%d %H:%M} UTC: its input "
            f"{', '.join(columns)} is undefined at {when:%Y-%m-%d %H:%M} UTC ({where}). "
            "A forecast must read the window ending at its origin, so it is refused rather "
            "than read from an earlier one. Forecast from an origin where every input is "
            f"defined{drop}."
        )

    def _predict(self, horizon: int, history: pd.DataFrame):
        if horizon > int(self.horizon):
            raise ConfigurationError(
                f"This LSTM was trained for {self.horizon} steps ahead; asked for {horizon}. "
                "Retrain it with a longer horizon."
            )
        if getattr(self, "no_change_", None) is not None:
            # No network: no change from the last close of the history given.
            last_close = float(history["close"].iloc[-1])
            mean = np.full(horizon, last_close)
            lower, upper = np.zeros(horizon), np.full(horizon, np.inf)
            return mean, lower, upper, (self.no_change_,)
        values = self.input_window(history).to_numpy(dtype="float64")
        window = ((values - self.scale_mean_) / self.scale_std_).astype("float32")[None, ...]
        last_close = float(history["close"].iloc[-1])
        network = _POOL.get(self._spec(len(self.input_columns_)))
        with network.lock:
            network.model.set_weights(self.weights_)
            # predict_on_batch runs the compiled graph; calling the model directly loops
            # over the time steps in Python (about 45 ms against 3 ms here).
            point = self._to_paths(np.asarray(network.model.predict_on_batch(window)))[0]
            if self.interval == "mc_dropout":
                # Each call advances the dropout RNG: without a reset, the same model
                # (or another with the same seed) would draw a different interval.
                network.reset_rng(int(self.seed))
                half = self.interval_quantiles_ * self._mc_spread(network, window)[0]
        if self.interval == "conformal":
            half = self.interval_quantiles_
        lower, upper = point - half, point + half
        if self.target == "log_return":
            with np.errstate(over="ignore"):  # an unbounded side is 0 or inf in price
                mean, lower, upper = (last_close * np.exp(p) for p in (point, lower, upper))
        else:
            mean = point
        notes = [] if np.isfinite(half).all() else [self._unbounded_note()]
        # A price target is not bounded below: a price is. An unbounded lower side is 0
        # (as with a log-return target); a finite value below zero is floored, with a word.
        below = int((mean[:horizon] < 0).sum() + (np.isfinite(lower) & (lower < 0))[:horizon].sum())
        mean, lower, upper = (np.maximum(v, 0.0) for v in (mean, lower, upper))
        if below:
            notes.append(
                f"The LSTM (price target) forecast a price or bound below zero {below} time(s) "
                f"in {horizon} steps; floored at 0."
            )
        if (
            getattr(self, "kernel_", "fused") != "fused"
            and self.jit_compile is True
            and self.family == "lstm"
        ):
            notes.append(KERAS_KERNEL_NOTE)
        return mean[:horizon], lower[:horizon], upper[:horizon], tuple(notes)

    def _unbounded_note(self) -> str:
        n, level = len(self.calibration_windows_), float(self.level)
        if n >= calibration_windows_needed(level):
            k = conformal_rank(n, level)
            return (
                f"The interval is unbounded at some steps: at least {k} of the {n} "
                "validation-tail errors there were zero or undefined (closes that never "
                "changed in the tail), and a zero-width interval would claim certainty."
            )
        return (
            f"The interval is unbounded: the validation tail holds {n} window(s), too few "
            f"for a {level * 100:g} % interval, which needs at least "
            f"{calibration_windows_needed(level)} (split-conformal rank ceil((n + 1) "
            f"x {level:g}) must not exceed n). Use a longer date range or a larger "
            "validation_fraction."
        )

    # --- persistence ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the network as ``.keras`` and the rest as JSON beside it (``.keras.json``).

        Nothing is pickled: the network is Keras' own format, the scaler, intervals and
        the candles needed for the next forecast are plain JSON (an unbounded interval's
        infinite quantile is ``null``).
        """
        path = Path(path)
        if path.suffix != ".keras":
            raise ConfigurationError("Save LSTM models to a .keras file.")
        no_change = getattr(self, "no_change_", None)
        if not hasattr(self, "weights_") and no_change is None:
            raise ConfigurationError("Fit the LSTM before saving it.")
        network = _POOL.get(self._spec(len(self.input_columns_)))
        with network.lock:
            if no_change is None:
                network.model.set_weights(self.weights_)
            else:
                # No network was trained: the file holds the seed's untrained one (the
                # same two files for every LSTM); load reads the JSON's no_change.
                network.reset(int(self.seed))
            network.model.save(path)
        tail = self.history_.iloc[-(self._window_history() + TAIL_EXTRA) :]
        scale_mean = getattr(self, "scale_mean_", None)
        scale_std = getattr(self, "scale_std_", None)
        state = {
            "model": self.alias,
            "params": self.get_params(),
            "timeframe": self.timeframe_,
            "calendar": self.calendar_,
            "no_change": no_change,
            "kernel": getattr(self, "kernel_", None),
            "input_columns": self.input_columns_,
            "scale_mean": None if scale_mean is None else scale_mean.tolist(),
            "scale_std": None if scale_std is None else scale_std.tolist(),
            "target_mean": self.target_mean_,
            "target_std": self.target_std_,
            "interval_quantiles": [
                float(q) if np.isfinite(q) else None for q in self.interval_quantiles_
            ],
            "training_windows": _to_ms(self.training_windows_),
            "calibration_windows": _to_ms(self.calibration_windows_),
            "loss_history": self.loss_history_,
            "history": {
                "timestamp": _to_ms(tail.index),
                **{c: tail[c].astype(float).tolist() for c in tail.columns},
            },
        }
        Path(f"{path}.json").write_text(json.dumps(state, allow_nan=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LSTM:
        """Read a model written by :meth:`save` (Keras ``safe_mode`` on: no code runs)."""
        keras = _keras()
        path = Path(path)
        state = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
        # Files written before the network families hold an LSTM without the setting.
        family = state["params"].get("family", "lstm")
        if not cls.parameter_ranges["family"].contains(family):
            raise DataFormatError(
                f"{path.name} holds a {state.get('model', 'lstm')} model (network family "
                f"{family}), not a {cls.alias} one: load it with that model's load()."
            )
        model = cls(**state["params"])
        model.check_settings()
        model.no_change_ = state.get("no_change")
        # Files written before the fused kernel were trained on Keras' layer (the same
        # weights layout: they load into either).
        model.kernel_ = state.get("kernel") or "keras"
        if model.no_change_ is None:
            try:
                network_model = keras.models.load_model(path, safe_mode=True, compile=False)
            except (TypeError, ValueError, KeyError) as exc:
                raise DataFormatError(
                    f"{path.name} is not an LSTM network this version can read "
                    f"({type(exc).__name__}); train and save the model again."
                ) from exc
            model.weights_ = [w.copy() for w in network_model.get_weights()]
        model.timeframe_ = state["timeframe"]
        model.calendar_ = state["calendar"]
        model.input_columns_ = state["input_columns"]
        if state["scale_mean"] is not None:
            model.scale_mean_ = np.asarray(state["scale_mean"])
            model.scale_std_ = np.asarray(state["scale_std"])
        model.target_mean_ = state["target_mean"]
        model.target_std_ = state["target_std"]
        model.interval_quantiles_ = np.asarray(
            [np.inf if q is None else q for q in state["interval_quantiles"]], dtype="float64"
        )
        model.training_windows_ = _from_ms(state["training_windows"])
        model.calibration_windows_ = _from_ms(state["calibration_windows"])
        model.loss_history_ = state["loss_history"]
        model.epochs_trained_ = len(model.loss_history_.get("loss", []))
        raw = dict(state["history"])
        index = _from_ms(raw.pop("timestamp"))
        model.history_ = pd.DataFrame(raw, index=index)
        return model


def _to_ms(index: pd.DatetimeIndex) -> list[int]:
    return [int(t.value // 1_000_000) for t in index]


def _from_ms(values: list[int]) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(values, unit="ms", utc=True), name="timestamp").as_unit(
        "ms"
    )


def _is_flat(values: np.ndarray, level: float) -> bool:
    """True when the finite ``values`` never change: all equal, or a standard deviation
    of at most :data:`FLAT_TOLERANCE` times ``level`` (rounding noise)."""
    values = np.asarray(values, dtype="float64")
    values = values[np.isfinite(values)]
    if values.size == 0:
        return False
    if values.min() == values.max():
        return True
    return float(values.std()) <= FLAT_TOLERANCE * abs(float(level))


# --- time steps and targets -------------------------------------------------------------


def step_positions(
    index: pd.DatetimeIndex, horizon: int, timeframe: str, calendar: str = "24/7"
) -> np.ndarray:
    """Row of the candle ``k`` timeframes after each candle, for ``k = 1 .. horizon``.

    Step ``k`` from the candle opening at ``t`` is the one opening at ``t + k``
    timeframes, as :func:`forecasting.ohlcv.future_timestamps` stamps it (business days
    on the ``"business"`` calendar for daily candles, calendar months for ``1M``).

    Returns
    -------
    np.ndarray
        ``int64``, shape ``(len(index), horizon)``: the row in ``index`` of each step's
        candle, or -1 when the data has no candle at that time (a gap, or the end).
    """
    out = np.full((len(index), int(horizon)), -1, dtype="int64")
    for k in range(1, int(horizon) + 1):
        if calendar == "business" and timeframe == "1d":
            later = index + pd.offsets.BDay(k)
        else:
            later = index + timeframe_offset(timeframe) * k
        out[:, k - 1] = index.get_indexer(later)
    return out


def step_targets(
    candles: pd.DataFrame,
    horizon: int,
    timeframe: str,
    calendar: str = "24/7",
    target: str = "log_return",
) -> np.ndarray:
    """The LSTM's training targets: per candle ``t``, the next ``horizon`` steps by time.

    Step ``k`` is ``log c(t + k) - log c(t + k - 1)`` (``target="log_return"``) or
    ``c(t + k)`` (``"price"``), where ``t + k`` is ``k`` timeframes after ``t`` (see
    :func:`step_positions`). A row is NaN where any of its ``horizon`` target candles is
    missing from the data, so no target spans a gap.

    Returns
    -------
    np.ndarray
        Shape ``(len(candles), horizon)``.
    """
    if target not in TARGETS:
        raise ConfigurationError(f"LSTM target must be one of {', '.join(TARGETS)}.")
    positions = step_positions(candles.index, int(horizon), timeframe, calendar)
    return _target_values(candles["close"].to_numpy(dtype="float64"), positions, target)


def _target_values(close: np.ndarray, positions: np.ndarray, target: str) -> np.ndarray:
    """Targets from the rows of each step's candle (see :meth:`LSTM._targets`)."""
    n, h = positions.shape
    complete = (positions >= 0).all(axis=1)
    rows = np.where(complete[:, None], positions, 0)
    out = np.full((n, h), np.nan)
    if target == "log_return":
        log_close = np.log(close)
        previous = np.column_stack([np.arange(n), rows[:, :-1]])
        values = log_close[rows] - log_close[previous]
    else:
        values = close[rows]
    out[complete] = values[complete]
    return out


# --- split-conformal quantiles ----------------------------------------------------------


def conformal_rank(n: int, level: float) -> int:
    """The textbook split-conformal rank ``k = ceil((n + 1) level)`` for ``n`` scores.

    The ``k``-th smallest of ``n`` calibration scores bounds a new exchangeable score
    with probability at least ``level`` (Lei et al. 2018, Angelopoulos & Bates 2021).
    ``(n + 1) level`` is computed in floating point (``10 x 0.9`` may come out a hair
    above 9), so a difference below ``1e-9`` is taken as rounding: ``level`` is meant as
    the decimal it is written as. May exceed ``n``: then no score is large enough.
    """
    return max(1, math.ceil((int(n) + 1) * float(level) - 1e-9))


def calibration_windows_needed(level: float) -> int:
    """The fewest calibration scores for which the conformal rank is at most their count
    (9 for 0.9, 19 for 0.95): about ``level / (1 - level)``."""
    n = max(1, math.floor(float(level) / (1.0 - float(level))) - 1)
    while conformal_rank(n, level) > n:
        n += 1
    return n


def conformal_quantile(scores: np.ndarray, level: float) -> np.ndarray:
    """Split-conformal quantile: per column, the ``k``-th smallest of the ``n`` scores.

    ``k = ceil((n + 1) level)`` (:func:`conformal_rank`), the rank of Vovk et al. (2005),
    Lei et al. (2018) and Angelopoulos & Bates (2021). When ``k > n`` the quantile is
    ``inf``: the interval is unbounded. A NaN score counts as ``inf`` (never as small).

    Parameters
    ----------
    scores
        Shape ``(n,)`` or ``(n, steps)``: one row per calibration window.
    level
        Coverage aimed at, between 0 and 1.

    Returns
    -------
    np.ndarray
        Shape ``scores.shape[1:]``.
    """
    scores = np.asarray(scores, dtype="float64")
    scores = np.where(np.isnan(scores), np.inf, scores)
    n = scores.shape[0]
    k = conformal_rank(n, level)
    if k > n:
        return np.full(scores.shape[1:], np.inf)
    return np.sort(scores, axis=0)[k - 1]


def _epoch_reporter(epochs: int, progress: ProgressCallback | None):
    """The ``on_epoch`` of :class:`~forecasting.models._graph_training.GraphTrainer`:
    reports each epoch as :class:`_ProgressCallback` does."""
    if progress is None:
        return None

    def report(epoch: int, loss: float, val_loss: float) -> None:
        progress(
            "epoch",
            epoch / epochs,
            {"epoch": epoch, "epochs": epochs, "loss": loss, "val_loss": val_loss},
        )

    return report


class _ProgressCallback:
    """Keras callback: report each epoch, and stop when the user cancels."""

    def __new__(cls, keras: Any, epochs: int, progress, should_stop):
        class Callback(keras.callbacks.Callback):
            cancelled = False

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                logs = logs or {}
                if progress is not None:
                    progress(
                        "epoch",
                        (epoch + 1) / epochs,
                        {
                            "epoch": epoch + 1,
                            "epochs": epochs,
                            "loss": float(logs.get("loss", np.nan)),
                            "val_loss": float(logs.get("val_loss", np.nan)),
                        },
                    )
                if should_stop is not None and should_stop():
                    self.cancelled = True
                    self.model.stop_training = True

        return Callback()
