"""Benchmark: LSTM training against bare Keras, its FLOP rate, Prophet, memory over fits.

What is measured
----------------
All on the 3000 most recent closed daily BTC/USDT candles of the shared real data
(``binance_BTC-USDT_1d.csv``; its last row is a partial candle and is dropped).

1. **LSTM epoch time, our pipeline against bare Keras.** Ours is
   ``LSTM(epochs=E, patience=E).fit(candles)`` with every other setting at its default
   (so no early stop: every fit trains exactly ``E`` epochs): the pooled network's
   ``FusedLSTM`` layer trained by its in-graph loop,
   :class:`~forecasting.models._graph_training.GraphTrainer` (``network.trainer.fit``).
   The arrays and settings that ``LSTM._fit`` hands to the trainer are captured by
   wrapping the pooled network's ``trainer.fit`` for the duration of this section
   (nothing in the library is changed), so the bare run gets *identical* training and
   validation arrays, batch size, epoch count and seed. The wrapper also passes the
   trainer an ``on_epoch`` that takes the time at each epoch's end (after the
   validation pass) before calling the library's own. The bare run builds the same
   ``Sequential`` network from scratch with Keras' own recurrent layer (``Input``,
   ``keras.layers.LSTM``, ``Dropout``, ``Dense``; Adam, MSE; checked against the pooled
   network: layer output shapes and parameter counts, dropout rates, optimizer
   settings, not the recurrent layer's type) and calls ``model.fit(x, y,
   validation_data=..., epochs=E, batch_size=..., shuffle=True, verbose=0)`` with one
   callback that only records the time at each epoch end. Both epochs thus include the
   validation pass; ours also includes its early-stopping bookkeeping (a copy of the
   weights after each better validation loss), the bare run has no such callback. An
   epoch's time is the interval between consecutive epoch ends, so epoch 1 (which may
   trace the graph) is reported on its own, from the trainer's or ``model.fit``'s call
   to its end. The two are run alternately (ours, bare, bare, ours, ...), after one
   untimed warm-up fit each. Both run in this process, where the library has switched on
   TensorFlow's op determinism; the same bare fit in a fresh child process without it
   is reported as a separate row. The fused kernel against Keras' LSTM and peers
   (PyTorch, JAX), one training epoch each on identical arrays, is compared in
   ``bench/lstm_kernel_bench.py``; this section measures the whole pipeline.
2. **Achieved GFLOP/s against the CPU's peak.** FLOPs of one training epoch counted
   analytically (formula in :func:`epoch_flops` and ``docs/benchmarks.md``) divided by
   the measured epoch time; the peak is estimated from ``/proc/cpuinfo`` (SIMD width
   from the flags, two FMA units per core assumed, the reported clock, usable cores).
   Two reference points are measured with TensorFlow: one large float32 matmul (what
   this CPU really reaches) and an LSTM-step-sized matmul in a ``tf.while_loop`` (what a
   recurrent step at batch 64 reaches).
3. **Prophet**: ``ProphetModel(max_train_candles=10_000).fit(candles)`` (defaults
   otherwise, so all 3000 candles), with the share spent inside Stan's optimiser
   (``CmdStanPyBackend.fit``, wrapped by the benchmark), then ``predict(7)``.
4. **Memory after ten trainings**, in a fresh child process so that nothing measured
   before is in its heap: resident set size (``VmRSS`` from ``/proc/self/status``,
   after ``gc.collect()``) after a warm-up ``LSTM().fit``, then after each of ten more
   fits with the same architecture and seed, then after each of ten fits with ten
   other seeds (the pooled network is per architecture, so other seeds reuse it and
   only draw their own initial weights).

Why
---
Two targets here: our pipeline's epoch no slower than bare Keras' on the same network
and arrays (ratio ours / bare <= 1.0; it was "within 1.1x" while ours ran Keras' own
``fit``, and the fused kernel with the in-graph loop should now be faster: our data
handling, network pool and training loop must not give that back), and under 50 MB of
growth over ten trainings (the app is a long-running server that trains on demand).
The FLOP rate and Prophet figures say where the time of an experiment goes.

Run from the repository root::

    .venv/bin/python bench/models_bench.py [--markdown] [--epochs 30] [--repeats 4]

The data folder is ``$CFL_SHARED_DATA`` or ``../shared/data`` beside the repository.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import gc
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# TensorFlow's C++ start-up chatter, as the library quiets it (before any import of TF).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from forecasting.data import read_ohlcv_csv  # noqa: E402
from forecasting.models import lstm as lstm_module  # noqa: E402
from forecasting.models.lstm import LSTM  # noqa: E402
from forecasting.models.prophet import ProphetModel  # noqa: E402

DATA_FILE = "binance_BTC-USDT_1d.csv"
N_CANDLES = 3000
# Ours (FusedLSTM + in-graph loop) must be no slower than bare Keras on the same arrays.
EPOCH_RATIO_TARGET = 1.0
MEMORY_TARGET_MB = 50.0
FITS_FOR_MEMORY = 10
# Seeds for the "different seeds" series: none is the default 42 used before.
OTHER_SEEDS = tuple(range(1001, 1001 + FITS_FOR_MEMORY))
FMA_UNITS_ASSUMED = 2


# ------------------------------------------------------------------------------- data


def shared_data_folder() -> Path:
    """``$CFL_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    override = os.environ.get("CFL_SHARED_DATA")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "data"


def load_candles(n: int = N_CANDLES) -> pd.DataFrame:
    """The ``n`` most recent closed daily BTC/USDT candles from the shared real data.

    Raises
    ------
    SystemExit
        With a message saying where the file was looked for, when it is absent.
    """
    path = shared_data_folder() / DATA_FILE
    if not path.is_file():
        raise SystemExit(
            f"{path} not found: these benchmarks need the shared real candles. Set "
            "CFL_SHARED_DATA to the folder holding binance_BTC-USDT_1d.csv."
        )
    candles = read_ohlcv_csv(path).candles.iloc[:-1]  # the last row is a partial candle
    if len(candles) < n:
        raise SystemExit(f"{path} holds {len(candles)} closed candles; {n} are needed.")
    return candles.iloc[-n:]


# ------------------------------------------------------------------------ measurement


@dataclass
class Timing:
    """Repeated measurements of one quantity (seconds unless said otherwise)."""

    name: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median of the runs."""
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        """Smallest value."""
        return min(self.values)

    @property
    def high(self) -> float:
        """Largest value."""
        return max(self.values)


class CpuMonitor:
    """CPU time used by this process (and its waited-for children) against the machine's.

    Other work on a 2-core machine inflates every figure; the difference between the
    machine's busy time (``/proc/stat``) and ours shows whether there was any.
    """

    def __init__(self) -> None:
        self._start = (time.perf_counter(), self._ours(), self._machine_busy())

    @staticmethod
    def _ours() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    @staticmethod
    def _machine_busy() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        ticks = [int(v) for v in fields]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def others(self) -> float | None:
        """Cores' worth of CPU used by other processes since construction, on average."""
        wall0, ours0, busy0 = self._start
        busy = self._machine_busy()
        if busy is None or busy0 is None:
            return None
        wall, ours = time.perf_counter() - wall0, self._ours() - ours0
        return max(0.0, (busy - busy0) - ours) / wall

    def summary(self) -> str:
        """Wall time, our CPU seconds and everyone else's, since construction."""
        wall0, ours0, busy0 = self._start
        wall, ours = time.perf_counter() - wall0, self._ours() - ours0
        text = f"{wall:.0f} s wall, this process used {ours:.0f} CPU-s"
        busy = self._machine_busy()
        if busy is not None and busy0 is not None:
            others = max(0.0, (busy - busy0) - ours)
            text += f", other processes {others:.0f} CPU-s ({others / wall:.2f} cores on average)"
        return text


def rss_mb() -> float:
    """Resident set size of this process in MB (``VmRSS``), after a garbage collection."""
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far in MB (``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# --------------------------------------------------------------- 1. LSTM epoch timing


@dataclass
class FitCall:
    """One ``GraphTrainer.fit`` call made by ``LSTM._fit``: when, with what, epoch ends."""

    start: float
    end: float
    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    epochs: int
    batch_size: int
    patience: int
    seed: int
    epoch_ends: list[float] = field(default_factory=list)

    def keras_arguments(self) -> tuple[tuple, dict[str, Any]]:
        """The same training as plain ``keras.Model.fit`` arguments (no callbacks)."""
        args = (self.x, self.y)
        kwargs = {
            "validation_data": (self.x_val, self.y_val),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "shuffle": True,
        }
        return args, kwargs


@contextmanager
def spy_on_trainer(network: Any) -> Iterator[list[FitCall]]:
    """Record every ``network.trainer.fit`` call (arrays, settings, times) while inside.

    The wrapper is an attribute of this one :class:`GraphTrainer` instance, removed on
    exit; the library's code is not touched. It passes an ``on_epoch`` that takes the
    time of each epoch's end (after its validation pass) and then calls the library's
    own ``on_epoch``, if any.
    """
    trainer = network.trainer
    original = trainer.fit
    calls: list[FitCall] = []

    def fit(x: Any, y: Any, x_val: Any, y_val: Any, *, on_epoch: Any = None, **kwargs: Any) -> Any:
        ends: list[float] = []

        def clock(epoch: int, loss: float, val_loss: float) -> None:
            ends.append(time.perf_counter())
            if on_epoch is not None:
                on_epoch(epoch, loss, val_loss)

        start = time.perf_counter()
        try:
            return original(x, y, x_val, y_val, on_epoch=clock, **kwargs)
        finally:
            calls.append(
                FitCall(
                    start,
                    time.perf_counter(),
                    np.asarray(x),
                    np.asarray(y),
                    np.asarray(x_val),
                    np.asarray(y_val),
                    int(kwargs["epochs"]),
                    int(kwargs["batch_size"]),
                    int(kwargs["patience"]),
                    int(kwargs["seed"]),
                    ends,
                )
            )

    trainer.fit = fit
    try:
        yield calls
    finally:
        del trainer.fit


@dataclass
class FitTiming:
    """Times of one training run."""

    epoch_ends: list[float]
    fit_start: float
    fit_end: float
    outer: float | None = None  # our pipeline only: the whole LSTM.fit call

    @property
    def epochs(self) -> list[float]:
        """Epoch 2..E durations: the intervals between consecutive epoch ends."""
        return list(np.diff(self.epoch_ends))

    @property
    def first_epoch(self) -> float:
        """From the trainer's (or Keras') ``fit`` call to the end of epoch 1."""
        return self.epoch_ends[0] - self.fit_start


def _epoch_clock(keras: Any) -> Any:
    """A Keras callback that only records the time at each epoch end."""

    class EpochClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.ends.append(time.perf_counter())

    return EpochClock()


def build_bare_network(keras: Any, settings: dict[str, Any], n_inputs: int) -> Any:
    """The LSTM's network written out by hand in plain Keras, with ``keras.layers.LSTM``.

    Parameters
    ----------
    keras
        The ``keras`` module.
    settings
        ``LSTM.get_params()`` of the model whose network to copy.
    n_inputs
        Input columns per time step.
    """
    keras.utils.set_random_seed(int(settings["seed"]))
    layers: list[Any] = [keras.Input((settings["lookback"], n_inputs))]
    for layer in range(settings["layers"]):
        last = layer == settings["layers"] - 1
        layers.append(keras.layers.LSTM(settings["units"], return_sequences=not last))
        if settings["dropout"] > 0:
            layers.append(keras.layers.Dropout(settings["dropout"]))
    layers.append(keras.layers.Dense(settings["horizon"]))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(settings["learning_rate"]), loss="mse")
    return model


def bare_fit(
    keras: Any, model: Any, call: FitCall, seed: int, epochs: int | None = None
) -> FitTiming:
    """``model.fit`` on the captured arrays and settings, timed per epoch.

    ``epochs`` overrides the captured epoch count (for the one-epoch first fit).
    """
    clock = _epoch_clock(keras)
    args, kwargs = call.keras_arguments()
    kwargs["verbose"] = 0
    if epochs is not None:
        kwargs["epochs"] = epochs
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    model.fit(*args, callbacks=[clock], **kwargs)
    return FitTiming(clock.ends, start, time.perf_counter())


def _bare_child(
    call: FitCall, settings: dict[str, Any], n_inputs: int, repeats: int
) -> list[list[float]]:
    """Child-process body: the bare fit without op determinism; epoch times per repeat."""
    import keras

    model = build_bare_network(keras, settings, n_inputs)
    bare_fit(keras, model, call, int(settings["seed"]))  # warm-up: tracing
    return [bare_fit(keras, model, call, int(settings["seed"])).epochs for _ in range(repeats)]


@dataclass
class EpochResults:
    """Section 1: our pipeline against bare Keras."""

    epochs: int
    ours: Timing
    bare: Timing
    bare_nondeterministic: Timing
    ours_first: Timing
    bare_first: Timing
    ours_new_network: float
    bare_new_network: float
    ours_fit_per_epoch: Timing
    bare_fit_per_epoch: Timing
    outside_keras: Timing
    ours_run_medians: list[float]
    bare_run_medians: list[float]
    shapes: dict[str, tuple[int, ...]]
    batch_size: int
    params: int
    jit: Any
    settings: dict[str, Any]
    n_inputs: int

    @property
    def ratio(self) -> float:
        """Median epoch, ours over bare."""
        return self.ours.median / self.bare.median


def run_epoch_benchmark(candles: pd.DataFrame, epochs: int, repeats: int) -> EpochResults:
    """Section 1 (see the module docs)."""
    keras = lstm_module._keras()

    def ours_once(record: list[FitCall]) -> FitTiming:
        model = LSTM(epochs=epochs, patience=epochs)
        start = time.perf_counter()
        model.fit(candles)
        outer = time.perf_counter() - start
        if model.epochs_trained_ != epochs:
            raise AssertionError(f"trained {model.epochs_trained_} epochs, expected {epochs}")
        if model.kernel_ != "fused":
            raise AssertionError(f"trained on the {model.kernel_!r} kernel, not the fused one")
        call = record[-1]
        if len(call.epoch_ends) != epochs:
            raise AssertionError(f"timed {len(call.epoch_ends)} epochs, expected {epochs}")
        return FitTiming(call.epoch_ends, call.start, call.end, outer)

    # A first fit builds (or fetches) the pooled network and its trainer, so the
    # trainer can be wrapped. It is also the first fit in the process: it builds the
    # network and traces the trainer's functions.
    start = time.perf_counter()
    template = LSTM(epochs=1, patience=1).fit(candles)
    ours_new_network = time.perf_counter() - start
    settings = template.get_params()
    n_inputs = len(template.input_columns_)
    network = lstm_module._POOL.get(template._spec(n_inputs))
    if not network.fused:
        raise AssertionError("the pooled network is not the fused one: nothing to compare")

    with spy_on_trainer(network) as record:
        ours_once(record)  # warm-up
        call = record[-1]
        seed = call.seed
        start = time.perf_counter()
        bare_model = build_bare_network(keras, settings, n_inputs)
        bare_fit(keras, bare_model, call, seed, epochs=1)
        bare_new_network = time.perf_counter() - start
        _check_same_network(network.model, bare_model)
        bare_fit(keras, bare_model, call, seed)  # warm-up

        ours, bare = Timing("our pipeline (FusedLSTM, in-graph loop)"), Timing("bare Keras fit")
        ours_first, bare_first = Timing("our pipeline"), Timing("bare Keras fit")
        ours_total, bare_total = Timing("our pipeline"), Timing("bare Keras fit")
        outside = Timing("LSTM.fit outside the trainer's fit")
        ours_runs: list[list[float]] = []
        bare_runs: list[list[float]] = []

        def time_ours() -> None:
            run = ours_once(record)
            ours_runs.append(run.epochs)
            ours_first.values.append(run.first_epoch)
            ours_total.values.append((run.outer or 0.0) / epochs)
            outside.values.append((run.outer or 0.0) - (run.fit_end - run.fit_start))

        def time_bare() -> None:
            run = bare_fit(keras, bare_model, call, seed)
            bare_runs.append(run.epochs)
            bare_first.values.append(run.first_epoch)
            bare_total.values.append((run.fit_end - run.fit_start) / epochs)

        # Alternating order (ours, bare, bare, ours, ...): drift over the run hits both.
        for repeat in range(repeats):
            pair = (time_ours, time_bare) if repeat % 2 == 0 else (time_bare, time_ours)
            for action in pair:
                gc.collect()
                action()
        ours.values = [e for run in ours_runs for e in run]
        bare.values = [e for run in bare_runs for e in run]

    # Fresh process: TensorFlow without the op determinism the library switches on.
    context = mp.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        per_repeat = pool.submit(_bare_child, call, settings, n_inputs, repeats).result()
    nondeterministic = Timing("bare Keras fit, no op determinism (child)")
    nondeterministic.values = [e for epochs_ in per_repeat for e in epochs_]

    return EpochResults(
        epochs=epochs,
        ours=ours,
        bare=bare,
        bare_nondeterministic=nondeterministic,
        ours_first=ours_first,
        bare_first=bare_first,
        ours_new_network=ours_new_network,
        bare_new_network=bare_new_network,
        ours_fit_per_epoch=ours_total,
        bare_fit_per_epoch=bare_total,
        outside_keras=outside,
        ours_run_medians=[statistics.median(run) for run in ours_runs],
        bare_run_medians=[statistics.median(run) for run in bare_runs],
        shapes={"X_train": tuple(call.x.shape), "X_val": tuple(call.x_val.shape)},
        batch_size=call.batch_size,
        params=int(bare_model.count_params()),
        jit=bare_model.jit_compile,
        settings=settings,
        n_inputs=n_inputs,
    )


def _check_same_network(pooled: Any, bare: Any) -> None:
    """Fail loudly if the hand-built network differs from the library's.

    The recurrent layers differ by design (the pool's ``FusedLSTM`` against
    ``keras.layers.LSTM``), so their types are not compared. What is: the layer count,
    each layer's output shape and parameter count (``FusedLSTM`` has Keras' LSTM weight
    layout), the dropout rates, the whole network's parameter count, and the optimizer's
    class and settings (learning rate, betas, epsilon). That the pooled network uses
    ``FusedLSTM`` and the bare one ``keras.layers.LSTM`` is checked too.
    """
    import keras

    from forecasting.models.fused_lstm import FusedLSTM

    def describe(model: Any) -> list[tuple]:
        return [
            (
                tuple(layer.output.shape),
                layer.count_params(),
                layer.get_config().get("rate"),
            )
            for layer in model.layers
        ]

    if describe(pooled) != describe(bare) or pooled.count_params() != bare.count_params():
        raise AssertionError(f"networks differ: {describe(pooled)} vs {describe(bare)}")
    fused = [isinstance(layer, FusedLSTM) for layer in pooled.layers]
    keras_lstm = [isinstance(layer, keras.layers.LSTM) for layer in bare.layers]
    if not any(fused) or fused != keras_lstm:
        raise AssertionError(
            f"expected FusedLSTM in the pooled network and keras LSTM in the bare one: "
            f"{[type(x).__name__ for x in pooled.layers]} vs "
            f"{[type(x).__name__ for x in bare.layers]}"
        )
    if type(pooled.optimizer) is not type(bare.optimizer):
        raise AssertionError(
            f"optimizers differ: {type(pooled.optimizer).__name__} vs "
            f"{type(bare.optimizer).__name__}"
        )
    pooled_opt, bare_opt = pooled.optimizer.get_config(), bare.optimizer.get_config()
    for key in ("learning_rate", "beta_1", "beta_2", "epsilon"):
        if not math.isclose(float(pooled_opt[key]), float(bare_opt[key])):
            raise AssertionError(f"optimizer {key} differs")


# ------------------------------------------------------------------- 2. FLOPs and peak


def epoch_flops(
    n_train: int,
    n_val: int,
    lookback: int,
    n_inputs: int,
    units: int,
    layers: int,
    horizon: int,
    batch_size: int,
    params: int,
) -> dict[str, float]:
    """Floating-point operations of one training epoch, counted analytically.

    Per sample and time step, one LSTM layer with ``u`` units and ``m`` inputs does two
    matmuls into the four gates, ``2 * 4u * (m + u)`` FLOPs, plus about ``13u``
    element-wise ones (bias 4u, four gate activations 4u, tanh of the cell u, cell
    update 3u, output u; a transcendental counted as one). The dense head adds
    ``2 u h + h``. Training is forward plus backward, the backward taken as twice the
    forward; validation is one forward pass; Adam does about 12 FLOPs per parameter
    per batch.

    Returns
    -------
    dict
        ``forward_per_sample``, ``train``, ``validation``, ``optimizer`` and ``total``.
    """
    per_step = 0
    for layer in range(layers):
        m = n_inputs if layer == 0 else units
        per_step += 2 * 4 * units * (m + units) + 13 * units
    forward = lookback * per_step + 2 * units * horizon + horizon
    train = 3 * forward * n_train
    validation = forward * n_val
    optimizer = 12 * params * math.ceil(n_train / batch_size)
    return {
        "forward_per_sample": float(forward),
        "train": float(train),
        "validation": float(validation),
        "optimizer": float(optimizer),
        "total": float(train + validation + optimizer),
    }


@dataclass
class Peak:
    """The CPU's theoretical float32 peak, and how it was estimated."""

    cores: int
    mhz: float
    isa: str
    lanes: int
    fma: bool

    @property
    def flops_per_cycle(self) -> int:
        """Per core: lanes x 2 (an FMA is two FLOPs) x FMA units."""
        return self.lanes * (2 if self.fma else 1) * (FMA_UNITS_ASSUMED if self.fma else 1)

    @property
    def gflops(self) -> float:
        """Cores x GHz x FLOPs per cycle."""
        return self.cores * self.mhz / 1000 * self.flops_per_cycle

    def describe(self) -> str:
        """The estimate written out."""
        fma = f"FMA x {FMA_UNITS_ASSUMED} units (assumed) x 2" if self.fma else "no FMA"
        return (
            f"{self.cores} cores x {self.mhz / 1000:.2f} GHz x {self.flops_per_cycle} FLOP/cycle "
            f"({self.isa}: {self.lanes} float32 lanes, {fma}) = {self.gflops:.0f} GFLOP/s"
        )


def cpu_peak() -> Peak:
    """Estimate the float32 peak from ``/proc/cpuinfo`` (flags, clock) and usable cores."""
    flags: set[str] = set()
    mhz: list[float] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("cpu MHz"):
                mhz.append(float(line.split(":", 1)[1]))
    except OSError:
        pass
    if "avx512f" in flags:
        isa, lanes = "AVX-512", 16
    elif "avx2" in flags or "avx" in flags:
        isa, lanes = "AVX2" if "avx2" in flags else "AVX", 8
    else:
        isa, lanes = "SSE", 4
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return Peak(
        int(cores or 1), statistics.median(mhz) if mhz else float("nan"), isa, lanes, "fma" in flags
    )


@dataclass
class MatmulReference:
    """Measured float32 matmul rates in TensorFlow."""

    large_n: int
    large_gflops: float
    step_shape: tuple[int, int, int]
    step_seconds: float
    step_gflops: float


def measure_matmul(large_n: int = 2048, steps: int = 2000) -> MatmulReference:
    """A large matmul (the attainable rate) and LSTM-step-sized ones in a while loop."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = tf.constant(rng.standard_normal((large_n, large_n), dtype=np.float32))
    b = tf.constant(rng.standard_normal((large_n, large_n), dtype=np.float32))
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.linalg.matmul(x, y)))
    matmul(a, b).numpy()
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    large = 2 * large_n**3 / best / 1e9

    # One LSTM time step's gate matmul at batch 64: [x_t, h] (64 x 38) @ W (38 x 128),
    # chained through a tanh so the steps are sequential, as they are in the LSTM.
    batch, inputs, units = 64, 6, 32
    x = tf.constant(rng.standard_normal((batch, inputs), dtype=np.float32))
    w = tf.constant(rng.standard_normal((inputs + units, 4 * units), dtype=np.float32) * 0.1)

    @tf.function
    def loop(x: Any, w: Any) -> Any:
        def body(i: Any, h: Any) -> tuple[Any, Any]:
            z = tf.linalg.matmul(tf.concat([x, h], axis=1), w)
            return i + 1, tf.tanh(z[:, :units])

        h0 = tf.zeros((batch, units))
        return tf.while_loop(lambda i, h: i < steps, body, (tf.constant(0), h0))[1]

    loop(x, w).numpy()
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        loop(x, w).numpy()
        best = min(best, time.perf_counter() - start)
    per_step = best / steps
    step_flops = 2 * batch * (inputs + units) * 4 * units
    return MatmulReference(
        large_n, large, (batch, inputs + units, 4 * units), per_step, step_flops / per_step / 1e9
    )


# ----------------------------------------------------------------------- 3. Prophet


@dataclass
class ProphetResults:
    """Section 3."""

    candles: int
    first_fit: float
    fit: Timing
    stan: Timing
    predict: Timing


@contextmanager
def time_stan(record: list[float]) -> Iterator[None]:
    """Add the duration of every ``CmdStanPyBackend.fit`` call (Stan's optimiser) to
    ``record`` while inside."""
    from prophet.models import CmdStanPyBackend

    original = CmdStanPyBackend.fit

    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            record.append(time.perf_counter() - start)

    CmdStanPyBackend.fit = fit  # type: ignore[method-assign]
    try:
        yield
    finally:
        CmdStanPyBackend.fit = original  # type: ignore[method-assign]


def run_prophet_benchmark(candles: pd.DataFrame, fits: int, predicts: int) -> ProphetResults:
    """Section 3 (see the module docs)."""

    def fit_once() -> tuple[float, ProphetModel]:
        model = ProphetModel(max_train_candles=10_000)
        gc.collect()
        start = time.perf_counter()
        model.fit(candles)
        return time.perf_counter() - start, model

    stan_times: list[float] = []
    with time_stan(stan_times):
        first, _ = fit_once()  # imports Prophet and cmdstanpy, loads the Stan model
        stan_times.clear()
        fit = Timing("Prophet fit")
        for _ in range(fits):
            seconds, model = fit_once()
            fit.values.append(seconds)
    if model.train_candles_ != len(candles):
        raise AssertionError(f"Prophet trained on {model.train_candles_} candles")
    stan = Timing("  of which Stan optimisation")
    stan.values = stan_times
    predict = Timing("Prophet predict(7)")
    model.predict(7)
    for _ in range(predicts):
        gc.collect()
        start = time.perf_counter()
        model.predict(7)
        predict.values.append(time.perf_counter() - start)
    return ProphetResults(len(candles), first, fit, stan, predict)


# ------------------------------------------------------------------------ 4. memory


@dataclass
class MemoryResults:
    """Section 4: RSS readings in MB."""

    before_warmup: float
    after_warmup: float
    same_seed: list[float]
    other_seeds: list[float]
    epochs_same: list[int]
    epochs_other: list[int]
    peak: float

    @property
    def same_growth(self) -> float:
        """After the 10th same-seed fit minus after the warm-up."""
        return self.same_seed[-1] - self.after_warmup

    @property
    def other_growth(self) -> float:
        """After the 10th other-seed fit minus before the first of them."""
        return self.other_seeds[-1] - self.same_seed[-1]


def _memory_child(fits: int) -> MemoryResults:
    """Child-process body of section 4: a fresh process, so nothing else is in its heap."""
    candles = load_candles()
    before = rss_mb()
    LSTM().fit(candles)  # imports TensorFlow, builds and traces the network
    after_warmup = rss_mb()
    same, epochs_same = [], []
    for _ in range(fits):
        model = LSTM().fit(candles)
        epochs_same.append(model.epochs_trained_)
        del model
        same.append(rss_mb())
    other, epochs_other = [], []
    for seed in OTHER_SEEDS[:fits]:
        model = LSTM(seed=seed).fit(candles)
        epochs_other.append(model.epochs_trained_)
        del model
        other.append(rss_mb())
    return MemoryResults(
        before, after_warmup, same, other, epochs_same, epochs_other, peak_rss_mb()
    )


def run_memory_benchmark(fits: int = FITS_FOR_MEMORY) -> MemoryResults:
    """Section 4 (see the module docs), in a fresh child process, with the default
    ``LSTM()`` settings (early stopping on) as the app trains."""
    context = mp.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(_memory_child, fits).result()


# ---------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def machine(load_before: float | None = None) -> dict[str, str]:
    """The facts about this machine and its software that the figures depend on."""
    import cmdstanpy
    import keras
    import prophet
    import tensorflow as tf

    ram = _ram_gib()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = f"{os.cpu_count()} logical CPUs" + (f" ({usable} usable)" if usable else "")
    threads = tf.config.threading
    facts = {
        "CPU": _cpu_model(),
        "Cores": cores,
        "RAM": f"{ram:.1f} GiB" if ram is not None else "unknown",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "TensorFlow": f"{tf.__version__} (intra-op threads "
        f"{threads.get_intra_op_parallelism_threads()}, inter-op "
        f"{threads.get_inter_op_parallelism_threads()}; 0 = one per core)",
        "Keras": keras.__version__,
        "Prophet": f"{prophet.__version__} (cmdstanpy {cmdstanpy.__version__})",
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "Date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
    }
    if hasattr(os, "getloadavg"):
        before = f"{load_before:.2f} before, " if load_before is not None else ""
        facts["Load"] = f"{before}{os.getloadavg()[0]:.2f} after (1-minute load average)"
    return facts


# ----------------------------------------------------------------------------- report


def _ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"


def _list_ms(values: list[float]) -> str:
    return "[" + ", ".join(f"{v * 1000:.0f}" for v in values) + "] ms"


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s"


@dataclass
class Report:
    """Everything measured, ready to print."""

    candles: pd.DataFrame
    epoch: EpochResults
    flops: dict[str, float]
    peak: Peak
    matmul: MatmulReference
    prophet: ProphetResults
    memory: MemoryResults
    cpu: str

    @property
    def achieved_gflops(self) -> float:
        """Counted FLOPs of one epoch over our median epoch time."""
        return self.flops["total"] / self.epoch.ours.median / 1e9

    def verdicts(self) -> list[tuple[str, bool]]:
        """Each target with whether it was met."""
        e, m = self.epoch, self.memory
        return [
            (
                f"LSTM epoch, ours / bare Keras = {e.ratio:.3f} "
                f"(target <= {EPOCH_RATIO_TARGET:.1f}: no slower than bare Keras)",
                e.ratio <= EPOCH_RATIO_TARGET,
            ),
            (
                f"RSS growth over {len(m.same_seed)} fits, same seed: {m.same_growth:+.1f} MB "
                f"(target < {MEMORY_TARGET_MB:g} MB)",
                m.same_growth < MEMORY_TARGET_MB,
            ),
            (
                f"RSS growth over {len(m.other_seeds)} fits, {len(m.other_seeds)} other seeds: "
                f"{m.other_growth:+.1f} MB (target < {MEMORY_TARGET_MB:g} MB)",
                m.other_growth < MEMORY_TARGET_MB,
            ),
        ]


def _epoch_rows(report: Report) -> list[tuple[Timing, str, str]]:
    e = report.epoch
    return [
        (e.ours, "epoch 2..E, with validation", "ms"),
        (e.bare, "epoch 2..E, with validation", "ms"),
        (e.bare_nondeterministic, "epoch 2..E, with validation", "ms"),
        (e.ours_first, "trainer.fit call to end of epoch 1", "ms"),
        (e.bare_first, "model.fit call to end of epoch 1", "ms"),
        (e.ours_fit_per_epoch, "whole LSTM.fit / E", "ms"),
        (e.bare_fit_per_epoch, "whole model.fit / E", "ms"),
        (e.outside_keras, "data prep + conformal + weight copy", "ms"),
    ]


def _memory_lines(m: MemoryResults) -> list[str]:
    same = ", ".join(f"{v:.0f}" for v in m.same_seed)
    other = ", ".join(f"{v:.0f}" for v in m.other_seeds)
    return [
        f"RSS of the fresh process with the candles loaded {m.before_warmup:.0f} MB, after the "
        f"warm-up fit {m.after_warmup:.0f} MB; peak (VmHWM) "
        f"{m.peak:.0f} MB",
        f"after each same-seed fit (MB): {same}  [epochs trained: {m.epochs_same}]",
        f"after each other-seed fit (MB): {other}  [epochs trained: {m.epochs_other}]",
    ]


def report_text(report: Report, facts: dict[str, str]) -> str:
    """A plain-text report for the terminal."""
    e, p, m = report.epoch, report.prophet, report.memory
    c = report.candles
    lines = ["Models: LSTM and Prophet", ""]
    lines += [f"  {name:<10} {value}" for name, value in facts.items()]
    lines += [
        f"  Activity   {report.cpu}",
        "",
        f"{len(c)} daily BTC/USDT candles {c.index[0]:%Y-%m-%d} .. {c.index[-1]:%Y-%m-%d}",
        "",
        f"1. LSTM training, E = {e.epochs} epochs, no early stop; X_train {e.shapes['X_train']}, "
        f"X_val {e.shapes['X_val']}, batch {e.batch_size}, {e.params:,} parameters; ours: "
        f"FusedLSTM, in-graph loop (GraphTrainer); bare: keras.layers.LSTM, model.fit, "
        f"jit_compile={e.jit!r}",
        f"  {'measurement':<48} {'n':>4} {'median':>9} {'min':>9} {'max':>9}  what",
    ]
    for timing, what, _ in _epoch_rows(report):
        lines.append(
            f"  {timing.name:<48} {len(timing.values):>4} {_ms(timing.median):>9} "
            f"{_ms(timing.low):>9} {_ms(timing.high):>9}  {what}"
        )
    lines += [
        f"  first fit of a new network, 1 epoch, whole call (build, trace, train): "
        f"ours {_ms(e.ours_new_network)} (first in the process), bare {_ms(e.bare_new_network)}",
        f"  ratio of median epochs, ours / bare: {e.ratio:.3f}; per-fit medians: ours "
        f"{_list_ms(e.ours_run_medians)}, bare {_list_ms(e.bare_run_medians)}",
        "  (the fused kernel against Keras and peers, per epoch: bench/lstm_kernel_bench.py)",
        "",
        "2. FLOP rate",
        f"  per epoch: {report.flops['total'] / 1e9:.2f} GFLOP (train "
        f"{report.flops['train'] / 1e9:.2f}, validation {report.flops['validation'] / 1e9:.2f}, "
        f"Adam {report.flops['optimizer'] / 1e6:.1f} MFLOP); forward per sample "
        f"{report.flops['forward_per_sample'] / 1e3:.0f} kFLOP",
        f"  achieved: {report.achieved_gflops:.1f} GFLOP/s = "
        f"{report.achieved_gflops / report.peak.gflops:.1%} of the estimated peak",
        f"  peak estimate: {report.peak.describe()}",
        f"  TF float32 matmul {report.matmul.large_n}^3: {report.matmul.large_gflops:.0f} GFLOP/s "
        f"({report.matmul.large_gflops / report.peak.gflops:.0%} of peak)",
        f"  TF LSTM-step matmul {report.matmul.step_shape[0]}x{report.matmul.step_shape[1]} @ "
        f"{report.matmul.step_shape[1]}x{report.matmul.step_shape[2]} in a while loop: "
        f"{report.matmul.step_seconds * 1e6:.1f} us per step = "
        f"{report.matmul.step_gflops:.1f} GFLOP/s",
        "",
        f"3. Prophet on {p.candles} candles",
        f"  first fit in the process (imports, Stan model load): {_s(p.first_fit)}",
    ]
    for timing in (p.fit, p.stan, p.predict):
        lines.append(
            f"  {timing.name:<48} {len(timing.values):>4} {_ms(timing.median):>9} "
            f"{_ms(timing.low):>9} {_ms(timing.high):>9}"
        )
    lines += ["", f"4. Memory over {len(m.same_seed)} LSTM() fits (default settings)"]
    lines += [f"  {line}" for line in _memory_lines(m)]
    lines.append("")
    for text, passed in report.verdicts():
        lines.append(f"{'PASS' if passed else 'FAIL'}  {text}")
    return "\n".join(lines)


def report_markdown(report: Report, facts: dict[str, str]) -> str:
    """A Markdown fragment (machine list and results tables) to paste into the docs."""
    e, p, m = report.epoch, report.prophet, report.memory
    verdicts = report.verdicts()
    lines = [f"- **{name}:** {value}" for name, value in facts.items()]
    lines += [
        f"- **Activity during the run:** {report.cpu}",
        f"- **Data:** {len(report.candles)} daily BTC/USDT candles, "
        f"{report.candles.index[0]:%Y-%m-%d} to {report.candles.index[-1]:%Y-%m-%d}",
        "",
        f"LSTM training: E = {e.epochs} epochs, no early stop; X_train {e.shapes['X_train']}, "
        f"X_val {e.shapes['X_val']}, batch {e.batch_size}, {e.params:,} parameters. Ours: "
        "`FusedLSTM` trained by the in-graph loop (`GraphTrainer`); bare: the same network "
        f"with `keras.layers.LSTM` under `model.fit`, `jit_compile` resolved to `{e.jit!r}`. "
        "Both epochs include the validation pass. The fused kernel against Keras and peers "
        "is compared in `bench/lstm_kernel_bench.py`.",
        "",
        "| Measurement | n | Median | Min | Max | What |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for timing, what, _ in _epoch_rows(report):
        lines.append(
            f"| {timing.name} | {len(timing.values)} | {_ms(timing.median)} | "
            f"{_ms(timing.low)} | {_ms(timing.high)} | {what} |"
        )
    lines += [
        f"| first fit of a new network, 1 epoch | 1 | ours {_ms(e.ours_new_network)}, "
        f"bare {_ms(e.bare_new_network)} | | | whole call: build, trace, train; ours is the "
        "first fit in the process |",
        "",
        f"- **Ours / bare Keras, median epoch: {e.ratio:.3f}** "
        f"(target ≤ {EPOCH_RATIO_TARGET:.1f}, no slower than bare Keras):"
        f" {'pass' if verdicts[0][1] else '**FAIL**'}. Median epoch of each fit, in the order "
        f"run: ours {_list_ms(e.ours_run_medians)}, bare {_list_ms(e.bare_run_medians)}.",
        f"- FLOPs per epoch: {report.flops['total'] / 1e9:.2f} GFLOP (training "
        f"{report.flops['train'] / 1e9:.2f}, validation {report.flops['validation'] / 1e9:.2f}, "
        f"Adam {report.flops['optimizer'] / 1e6:.1f} MFLOP).",
        f"- Achieved: **{report.achieved_gflops:.1f} GFLOP/s, "
        f"{report.achieved_gflops / report.peak.gflops:.1%} of the estimated peak** "
        f"({report.peak.describe()}).",
        f"- Measured references (TensorFlow, float32): a {report.matmul.large_n}³ matmul "
        f"{report.matmul.large_gflops:.0f} GFLOP/s "
        f"({report.matmul.large_gflops / report.peak.gflops:.0%} of peak); one LSTM step's "
        f"gate matmul ({report.matmul.step_shape[0]}×{report.matmul.step_shape[1]} @ "
        f"{report.matmul.step_shape[1]}×{report.matmul.step_shape[2]}) chained in a "
        f"`tf.while_loop`: {report.matmul.step_seconds * 1e6:.1f} µs per step, "
        f"{report.matmul.step_gflops:.1f} GFLOP/s.",
        "",
        f"Prophet on {p.candles} candles (first fit in the process, with imports and the "
        f"Stan model load: {_s(p.first_fit)}):",
        "",
        "| Measurement | n | Median | Min | Max |",
        "|---|---:|---:|---:|---:|",
    ]
    for timing in (p.fit, p.stan, p.predict):
        lines.append(
            f"| {timing.name} | {len(timing.values)} | {_ms(timing.median)} | "
            f"{_ms(timing.low)} | {_ms(timing.high)} |"
        )
    lines += [
        "",
        f"Memory over {len(m.same_seed)} `LSTM()` fits (default settings, early stopping on):",
        "",
        "| Series | RSS before | RSS after | Growth | Target | Result |",
        "|---|---:|---:|---:|---|---|",
        f"| same seed (42), after a warm-up fit | {m.after_warmup:.0f} MB | "
        f"{m.same_seed[-1]:.0f} MB | {m.same_growth:+.1f} MB | < {MEMORY_TARGET_MB:g} MB | "
        f"{'pass' if verdicts[1][1] else '**FAIL**'} |",
        f"| {len(m.other_seeds)} other seeds, next | {m.same_seed[-1]:.0f} MB | "
        f"{m.other_seeds[-1]:.0f} MB | {m.other_growth:+.1f} MB | < {MEMORY_TARGET_MB:g} MB | "
        f"{'pass' if verdicts[2][1] else '**FAIL**'} |",
        "",
    ]
    lines += [f"- {line}" for line in _memory_lines(m)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the benchmark, print the report.

    Returns
    -------
    int
        0 when every target is met, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print a Markdown fragment")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per timed fit (30)")
    parser.add_argument("--repeats", type=int, default=4, help="timed fits of each kind (4)")
    parser.add_argument("--prophet-fits", type=int, default=5, help="Prophet fits (5)")
    parser.add_argument(
        "--memory-fits",
        type=int,
        default=FITS_FOR_MEMORY,
        help=f"fits per memory series ({FITS_FOR_MEMORY}; the target is for {FITS_FOR_MEMORY})",
    )
    args = parser.parse_args(argv)
    if args.epochs < 3 or min(args.repeats, args.prophet_fits, args.memory_fits) < 1:
        parser.error("--epochs must be >= 3, the other counts >= 1")
    if args.memory_fits > len(OTHER_SEEDS):
        parser.error(f"--memory-fits is at most {len(OTHER_SEEDS)}")

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    candles = load_candles()
    monitor = CpuMonitor()

    sections: list[tuple[str, CpuMonitor]] = []

    def progress(text: str) -> None:
        print(f"[models_bench] {text}", file=sys.stderr, flush=True)
        sections.append((text, CpuMonitor()))

    def close_section() -> None:
        name, section = sections[-1]
        others = section.others()
        if others is not None:
            sections[-1] = (f"{name} {others:.2f}", section)

    progress("LSTM epochs")
    epoch = run_epoch_benchmark(candles, args.epochs, args.repeats)
    close_section()
    progress("matmuls")
    matmul = measure_matmul()
    close_section()
    progress("Prophet")
    prophet_results = run_prophet_benchmark(candles, args.prophet_fits, predicts=20)
    close_section()
    progress("memory")
    memory = run_memory_benchmark(args.memory_fits)
    close_section()
    activity = f"{monitor.summary()}; other processes' cores per section: " + ", ".join(
        name for name, _ in sections
    )
    s = epoch.settings
    flops = epoch_flops(
        n_train=epoch.shapes["X_train"][0],
        n_val=epoch.shapes["X_val"][0],
        lookback=int(s["lookback"]),
        n_inputs=epoch.n_inputs,
        units=int(s["units"]),
        layers=int(s["layers"]),
        horizon=int(s["horizon"]),
        batch_size=epoch.batch_size,
        params=epoch.params,
    )
    report = Report(candles, epoch, flops, cpu_peak(), matmul, prophet_results, memory, activity)
    facts = machine(load_before)
    print(report_markdown(report, facts) if args.markdown else report_text(report, facts))
    return 0 if all(passed for _, passed in report.verdicts()) else 1


if __name__ == "__main__":
    sys.exit(main())
