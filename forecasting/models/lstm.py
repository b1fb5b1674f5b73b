"""LSTM (Keras 3 on TensorFlow): direct multi-step forecasts of log returns or prices.

What keeps it honest and quick:

* The target is the next ``horizon`` log returns by default: a price-level target mostly
  learns to copy the last price. Forecasts are turned back into prices from the close
  at the origin.
* Features and the scaler are computed and fitted on the data given to ``fit`` only
  (the training window), and forecasting from a later origin recomputes the features
  on the candles up to that origin: nothing after the origin is ever read.
* Early stopping watches a chronological validation tail; intervals are split-conformal
  on that tail (the quantile of absolute errors per step), or MC dropout.
* TensorFlow is imported inside the methods that need it, never by ``import forecasting``.
* Keras leaks about 11 MB per freshly built model, so compiled networks are kept in a
  small pool keyed by architecture (not seed) and reset (the seed's initial weights,
  zeroed optimizer, the seed's dropout RNG)
  before each fit; a fitted model keeps its own weights as arrays, so models sharing a
  network never see each other's weights.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecasting.errors import Cancelled, ConfigurationError, InsufficientHistory
from forecasting.features import compute_features, parse_features, warmup_length
from forecasting.models.base import Capabilities, Forecaster, ProgressCallback
from forecasting.preprocessing import denoise

__all__ = ["LSTM"]

TARGETS = ("log_return", "price")
# Candles read before a forecast window so recursive features have converged:
# (13/14) ** 600 is about 5e-20 for RSI(14), and slower EMAs are far inside that too.
TAIL_EXTRA = 600
INTERVALS = ("conformal", "mc_dropout")


def _keras():
    # Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

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
        lookback, n_inputs, horizon, layers, units, dropout, learning_rate, jit = spec
        self.keras = keras
        stack: list[Any] = [keras.Input((lookback, n_inputs))]
        for layer in range(layers):
            stack.append(keras.layers.LSTM(units, return_sequences=layer < layers - 1))
            if dropout > 0:
                stack.append(keras.layers.Dropout(dropout))
        stack.append(keras.layers.Dense(horizon))
        self.model = keras.Sequential(stack)
        self.learning_rate = learning_rate
        self.model.compile(
            optimizer=keras.optimizers.Adam(learning_rate), loss="mse", jit_compile=jit
        )
        weights = {id(w) for w in self.model.weights}
        # The variables that are not weights are the random-generator states of dropout.
        self.rng_variables = [v for v in self.model.variables if id(v) not in weights]
        self.lock = threading.Lock()

    def initial_weights(self, seed: int) -> dict[int, np.ndarray]:
        """Each weight's starting value for ``seed``, drawn with Keras' own initializers
        for these layers (Glorot kernels, orthogonal recurrent kernels, zero biases with
        the LSTM's forget-gate bias at one)."""
        keras = self.keras
        draws = iter(range(seed * 7919 + 1, seed * 7919 + 7919))
        values: dict[int, np.ndarray] = {}

        def draw(initializer: Any, variable: Any) -> None:
            values[id(variable)] = np.asarray(
                keras.ops.convert_to_numpy(initializer(variable.shape)), dtype=variable.dtype
            )

        for layer in self.model.layers:
            if isinstance(layer, keras.layers.LSTM):
                cell = layer.cell
                draw(keras.initializers.GlorotUniform(seed=next(draws)), cell.kernel)
                draw(keras.initializers.Orthogonal(seed=next(draws)), cell.recurrent_kernel)
                bias = np.zeros(cell.bias.shape, dtype=cell.bias.dtype)
                if cell.unit_forget_bias:
                    bias[cell.units : 2 * cell.units] = 1.0
                values[id(cell.bias)] = bias
            elif isinstance(layer, keras.layers.Dense):
                draw(keras.initializers.GlorotUniform(seed=next(draws)), layer.kernel)
                values[id(layer.bias)] = np.zeros(layer.bias.shape, dtype=layer.bias.dtype)
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
        Candles in each input window.
    horizon
        Steps the network forecasts at once; ``predict`` may ask for fewer.
    layers, units, dropout
        Architecture: LSTM layers, units per layer, dropout after each.
    epochs, batch_size, learning_rate, patience
        Training: most epochs, batch size, Adam's learning rate, early-stopping patience
        (epochs without a better validation loss).
    validation_fraction
        Share of the most recent training windows held out for early stopping and
        conformal intervals.
    target
        ``"log_return"`` (default) or ``"price"`` (scaled closes).
    features
        Feature specs for the inputs (see :func:`forecasting.features.parse_features`);
        ``""`` for none: then the only input is the target series itself.
    interval
        ``"conformal"`` (validation residuals) or ``"mc_dropout"``.
    level
        Interval coverage, e.g. 0.9.
    mc_samples
        Forward passes for MC dropout.
    seed
        Random seed: the same seed gives the same forecast.
    denoise, denoise_window
        Optional noise reduction of the inputs (``"none"``, ``"hampel"``, ``"median"``)
        over a trailing window; see :mod:`forecasting.preprocessing`.
    jit_compile
        Keras' XLA switch (``"auto"`` lets Keras decide; LSTM layers fall back without it).
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

    # --- data -------------------------------------------------------------------------

    def _specs(self):
        return parse_features(self.features) if self.features else ()

    def _required_history(self) -> int:
        warmup = warmup_length(self._specs()) if self.features else 0
        # Enough for at least 8 windows: a few to train on, a couple to validate.
        return warmup + 1 + int(self.lookback) + int(self.horizon) + 8

    def _inputs(self, candles: pd.DataFrame) -> pd.DataFrame:
        """Unscaled input columns, from the first row where all have values."""
        close = candles["close"].astype("float64")
        if self.target == "price":
            base = pd.DataFrame({"close": close})
        else:
            base = pd.DataFrame({"target_log_return": np.log(close).diff()})
        specs = self._specs()
        if specs:
            features = compute_features(candles, specs, drop_warmup=False)
            base = pd.concat([base, features], axis=1)
        # Trailing filters only, on inputs only: the targets stay the real returns.
        return denoise(base, self.denoise, self.denoise_window).dropna()

    def _targets(self, close: np.ndarray) -> np.ndarray:
        """Per row t: the next ``horizon`` values of the target series (NaN past the end)."""
        h = int(self.horizon)
        series = np.log(close) if self.target == "log_return" else close
        out = np.full((len(close), h), np.nan)
        for step in range(1, h + 1):
            if self.target == "log_return":
                out[:-step, step - 1] = series[step:] - series[step - 1 : -1]
            else:
                out[:-step, step - 1] = series[step:]
        return out

    def _windows(self, scaled: np.ndarray) -> np.ndarray:
        """Sliding windows: row i holds inputs ``i - lookback + 1 .. i``."""
        lookback = int(self.lookback)
        view = np.lib.stride_tricks.sliding_window_view(scaled, lookback, axis=0)
        return np.ascontiguousarray(view.transpose(0, 2, 1), dtype="float32")

    def _validate_settings(self) -> None:
        if self.target not in TARGETS:
            raise ConfigurationError(f"LSTM target must be one of {', '.join(TARGETS)}.")
        if self.interval not in INTERVALS:
            raise ConfigurationError(f"LSTM interval must be one of {', '.join(INTERVALS)}.")
        if self.interval == "mc_dropout" and not self.dropout > 0:
            raise ConfigurationError("MC dropout intervals need dropout above 0.")
        for name in ("lookback", "horizon", "layers", "units", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigurationError(f"LSTM {name} must be at least 1.")
        if not 0 < self.validation_fraction < 0.5:
            raise ConfigurationError("LSTM validation_fraction must be between 0 and 0.5.")

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
        inputs = self._inputs(candles)
        close = candles["close"].to_numpy(dtype="float64")
        # Row by row, by timestamp: _inputs drops every row with an undefined input, not
        # only the warm-up (a flat stretch leaves Bollinger %B undefined mid-series), so
        # the inputs are not always a suffix of the candles.
        targets = self._targets(close)[candles.index.get_indexer(inputs.index)]
        values = inputs.to_numpy(dtype="float64")
        # The scaler sees only the training rows (the window given to fit).
        self.scale_mean_ = values.mean(axis=0)
        self.scale_std_ = np.where(values.std(axis=0) > 0, values.std(axis=0), 1.0)
        self.input_columns_ = list(inputs.columns)
        scaled = (values - self.scale_mean_) / self.scale_std_
        lookback = int(self.lookback)
        X = self._windows(scaled)  # window i ends at row i + lookback - 1
        y = targets[lookback - 1 :]
        usable = ~np.isnan(y).any(axis=1)
        X, y = X[usable], y[usable]
        if len(X) < 4:
            raise InsufficientHistory(
                f"Only {len(X)} training windows: use a longer date range or a shorter "
                "lookback/horizon."
            )
        self.target_mean_, self.target_std_ = self._target_scale(y)
        y_scaled = ((y - self.target_mean_) / self.target_std_).astype("float32")
        n_val = max(2, int(round(len(X) * float(self.validation_fraction))))
        X_train, y_train = X[:-n_val], y_scaled[:-n_val]
        X_val, y_val = X[-n_val:], y_scaled[-n_val:]

        keras = _keras()
        network = _POOL.get(self._spec(len(self.input_columns_)))
        with network.lock:
            network.reset(int(self.seed))
            keras.utils.set_random_seed(int(self.seed))
            callbacks = [
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=int(self.patience), restore_best_weights=True
                ),
                _ProgressCallback(keras, int(self.epochs), progress, should_stop),
            ]
            history = network.model.fit(
                X_train,
                y_train,
                validation_data=(X_val, y_val),
                epochs=int(self.epochs),
                batch_size=int(self.batch_size),
                shuffle=True,
                callbacks=callbacks,
                verbose=0,
            )
            if callbacks[1].cancelled:
                raise Cancelled("Training was cancelled.")
            self.weights_ = [w.copy() for w in network.model.get_weights()]
            val_pred = np.asarray(network.model.predict_on_batch(X_val))
        self.loss_history_ = {k: [float(v) for v in vals] for k, vals in history.history.items()}
        self.epochs_trained_ = len(self.loss_history_.get("loss", []))
        residuals = self._to_paths(val_pred) - self._to_paths(y_val)
        self.conformal_quantiles_ = _conformal_quantiles(np.abs(residuals), float(self.level))

    def _target_scale(self, y: np.ndarray) -> tuple[float, float]:
        std = float(y.std())
        return float(y.mean()), std if std > 0 else 1.0

    def _to_paths(self, y_scaled: np.ndarray) -> np.ndarray:
        """Scaled network outputs -> cumulative log returns (or prices) per step."""
        y = np.asarray(y_scaled, dtype="float64") * self.target_std_ + self.target_mean_
        return np.cumsum(y, axis=-1) if self.target == "log_return" else y

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
        )

    def _last_window(self, history: pd.DataFrame) -> np.ndarray:
        # Features recomputed on the candles up to the origin. Recursive ones (RSI, MACD's
        # EMAs) depend on the whole past, so a generous tail is read: after TAIL_EXTRA
        # more candles the start's influence is below floating-point noise, and the
        # window matches what the network saw in training.
        need = int(self.lookback) + (warmup_length(self._specs()) if self.features else 0) + 1
        inputs = self._inputs(history.iloc[-(need + TAIL_EXTRA) :])
        if len(inputs) < int(self.lookback):
            raise InsufficientHistory(
                f"The LSTM needs {need} candles before the forecast origin; got {len(history)}."
            )
        values = inputs[self.input_columns_].to_numpy(dtype="float64")[-int(self.lookback) :]
        return ((values - self.scale_mean_) / self.scale_std_).astype("float32")[None, ...]

    def _predict(self, horizon: int, history: pd.DataFrame):
        if horizon > int(self.horizon):
            raise ConfigurationError(
                f"This LSTM was trained for {self.horizon} steps ahead; asked for {horizon}. "
                "Retrain it with a longer horizon."
            )
        window = self._last_window(history)
        last_close = float(history["close"].iloc[-1])
        network = _POOL.get(self._spec(len(self.input_columns_)))
        with network.lock:
            network.model.set_weights(self.weights_)
            if self.interval == "mc_dropout":
                # Each call advances the dropout RNG: without a reset, the same model
                # (or another with the same seed) would draw a different interval.
                network.reset_rng(int(self.seed))
                batch = np.repeat(window, int(self.mc_samples), axis=0)
                samples = self._to_paths(np.asarray(network.model(batch, training=True)))
            # predict_on_batch runs the compiled graph; calling the model directly loops
            # over the time steps in Python (about 45 ms against 3 ms here).
            point = self._to_paths(np.asarray(network.model.predict_on_batch(window)))[0]
        to_price = (
            (lambda p: last_close * np.exp(p)) if self.target == "log_return" else (lambda p: p)
        )
        mean = to_price(point)[:horizon]
        if self.interval == "mc_dropout":
            tail = (1 - float(self.level)) / 2
            lower = to_price(np.quantile(samples, tail, axis=0))[:horizon]
            upper = to_price(np.quantile(samples, 1 - tail, axis=0))[:horizon]
        else:
            q = self.conformal_quantiles_
            if self.target == "log_return":
                lower, upper = to_price(point - q)[:horizon], to_price(point + q)[:horizon]
            else:
                lower, upper = (point - q)[:horizon], (point + q)[:horizon]
        return mean, lower, upper

    # --- persistence ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the network as ``.keras`` and the rest as JSON beside it (``.keras.json``).

        Nothing is pickled: the network is Keras' own format, the scaler, intervals and
        the candles needed for the next forecast are plain JSON.
        """
        path = Path(path)
        if path.suffix != ".keras":
            raise ConfigurationError("Save LSTM models to a .keras file.")
        if not hasattr(self, "weights_"):
            raise ConfigurationError("Fit the LSTM before saving it.")
        network = _POOL.get(self._spec(len(self.input_columns_)))
        with network.lock:
            network.model.set_weights(self.weights_)
            network.model.save(path)
        need = int(self.lookback) + (warmup_length(self._specs()) if self.features else 0) + 1
        tail = self.history_.iloc[-(need + TAIL_EXTRA) :]
        state = {
            "params": self.get_params(),
            "timeframe": self.timeframe_,
            "calendar": self.calendar_,
            "input_columns": self.input_columns_,
            "scale_mean": self.scale_mean_.tolist(),
            "scale_std": self.scale_std_.tolist(),
            "target_mean": self.target_mean_,
            "target_std": self.target_std_,
            "conformal_quantiles": self.conformal_quantiles_.tolist(),
            "loss_history": self.loss_history_,
            "history": {
                "timestamp": [int(t.value // 1_000_000) for t in tail.index],
                **{c: tail[c].astype(float).tolist() for c in tail.columns},
            },
        }
        Path(f"{path}.json").write_text(json.dumps(state), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LSTM:
        """Read a model written by :meth:`save` (Keras ``safe_mode`` on: no code runs)."""
        keras = _keras()
        path = Path(path)
        state = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
        model = cls(**state["params"])
        network_model = keras.models.load_model(path, safe_mode=True, compile=False)
        model.weights_ = [w.copy() for w in network_model.get_weights()]
        model.timeframe_ = state["timeframe"]
        model.calendar_ = state["calendar"]
        model.input_columns_ = state["input_columns"]
        model.scale_mean_ = np.asarray(state["scale_mean"])
        model.scale_std_ = np.asarray(state["scale_std"])
        model.target_mean_ = state["target_mean"]
        model.target_std_ = state["target_std"]
        model.conformal_quantiles_ = np.asarray(state["conformal_quantiles"])
        model.loss_history_ = state["loss_history"]
        model.epochs_trained_ = len(model.loss_history_.get("loss", []))
        raw = dict(state["history"])
        index = pd.to_datetime(raw.pop("timestamp"), unit="ms", utc=True).rename("timestamp")
        model.history_ = pd.DataFrame(raw, index=index)
        return model


def _conformal_quantiles(abs_residuals: np.ndarray, level: float) -> np.ndarray:
    """Per step, the split-conformal quantile ``ceil((n + 1) level) / n`` of the errors."""
    n = abs_residuals.shape[0]
    rank = min(1.0, np.ceil((n + 1) * level) / n)
    return np.quantile(abs_residuals, rank, axis=0, method="higher")


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
