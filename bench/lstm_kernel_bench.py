"""Benchmark: one LSTM training epoch, what ``LSTM.fit`` runs against Keras and peers.

What is measured
----------------
The wall time of **one training epoch** on identical arrays, for every contestant below,
over a grid of batch sizes (64, 256) and LSTM widths (32, 64 units). The arrays are made
in each process from a fixed seed: ``numpy.random.default_rng(0)``, ``N = 2000`` windows
``X`` of shape ``(30, 6)`` (standard normal, float32) then targets ``y`` of shape ``(7,)``;
every process reports a SHA-256 of the bytes, and the run stops if one differs.

Contestants
~~~~~~~~~~~
* **ours, LSTM.fit**: what our model's ``fit`` runs for one epoch: the pooled network
  (``FusedLSTM``) trained by its in-graph loop,
  ``network.trainer.train_epoch(X, y, b, seed, epoch)``
  (:class:`forecasting.models._graph_training.GraphTrainer`; the validation pass that
  ``fit`` adds at each epoch's end is not included, as in every other row).
* **ours, Keras LSTM** and **ours, FusedLSTM** under ``keras.Model.fit``: the network our
  ``LSTM`` model trains, as
  ``forecasting.models.lstm`` builds it (through its network pool, from
  ``LSTM(units=u, batch_size=b)._spec(6)``, so ``Input``, ``LSTM``, ``Dropout(0.1)``,
  ``Dense(7)``, Adam 1e-3, MSE, ``jit_compile`` as the model asks), reset to the model's
  seed. The other variant is the same ``Sequential`` rebuilt layer by layer with the
  recurrent layer swapped (``keras.layers.LSTM`` <-> ``forecasting.models.fused_lstm.
  FusedLSTM``), compiled the same way and started from the same weights (the two layers
  share the weight layout; the parameter counts are checked). The row of the variant
  that ``lstm.py`` builds today is marked "as built". Both run in this process, where
  ``lstm.py`` has switched on ``tf.config.experimental.enable_op_determinism()`` (what
  our model really runs), with TensorFlow's default threading (one thread per core).
  The epoch is ``model.fit(X, y, epochs=1, batch_size=b, shuffle=True, verbose=0)``
  (our model's ``fit`` call without its validation tail and its two callbacks).
* **bare Keras / TensorFlow**: ``keras.Sequential([Input((30, 6)), LSTM(u), Dense(7)])``,
  Adam 1e-3, MSE, Keras' defaults, the same ``fit`` call, in a child process of the main
  virtualenv *without* op determinism.
* **Peers**, in child processes of a throwaway virtualenv (``--peer-python``, default
  ``/tmp/peers/bin/python``; versions in ``bench/peers/requirements.txt``):
  PyTorch ``nn.LSTM(6, u, batch_first=True)`` + ``nn.Linear(u, 7)`` on the last hidden
  state, Adam 1e-3, ``MSELoss``, a hand-written loop over a fresh ``randperm`` per
  epoch (the last batch partial, as Keras), with ``torch.set_num_threads(1)`` and,
  separately, ``(2)``; and Keras 3 on JAX (``KERAS_BACKEND=jax``), the bare model above.
  A peer whose interpreter or package is missing is skipped with the reason printed.

How it is timed
~~~~~~~~~~~~~~~
The child processes are started once and driven over pipes (one JSON line per command:
set up a configuration, run one epoch); each times its epoch itself, so the pipes are
not in the figures. For Keras (all backends) the epoch is the interval from
``on_epoch_begin`` to ``on_epoch_end`` of a callback that does nothing else (the end
time is taken after reading the epoch's loss, so JAX's asynchronous dispatch has
finished); ``fit``'s per-call set-up is outside it, as it is amortised over the 30
epochs of a real fit. For PyTorch, the whole epoch loop including ``randperm``.
For each configuration every contestant first builds its model and runs one untimed
warm-up epoch (tracing / compiling); then one more untimed epoch each, in turn (in
TensorFlow, the first epoch of a model after *another* model has been traced in the same
process took 2-4x its usual time, e.g. 1.2 s instead of 0.48 s); then ``--repeats``
timed rounds, round-robin, each round starting at the next contestant (so no contestant
always runs right after the same one), with ``gc.collect()`` before each epoch, outside
the timing. Only one contestant runs at a time. Reported: median, min and max ms per
epoch; the plain-text table adds the last epoch's mean training loss (a check that every
contestant trains the same problem: about 1 on these random targets).

FLOP rate
~~~~~~~~~
FLOPs of one training epoch, counted analytically as in ``docs/benchmarks.md``: per
sample and time step ``2 * 4u * (m + u)`` for the gate matmuls plus ``13u`` element-wise
ones; forward per sample ``T`` steps of that plus ``2 u h + h`` for the dense head;
training = 3 x forward (backward ~ 2 x forward) x N, plus Adam's ~12 FLOPs per parameter
per batch (the Keras parameter count; the dropout is not counted). Divided by the
median epoch, and shown as a share of this machine's measured large float32 matmul rate
(best of 5 of a 2048 x 2048 @ 2048 x 2048 matmul, in TensorFlow and in numpy; the larger
is the reference).

Target (issue "Train the LSTM at fused-kernel speed"): the median epoch of **ours,
LSTM.fit** at batch 64 / 32 units within 1.3x of the best peer's. Prints PASS or FAIL;
exit 0 on PASS, 1 on FAIL, 2 when it cannot be judged (no peer ran, FusedLSTM could not
be used, or that configuration is not in the grid).

Other jobs on this 2-core machine make the figures noisy: the CPU that other processes
used during each configuration's timed rounds is printed with it.

Run from the repository root::

    .venv/bin/python bench/lstm_kernel_bench.py [--markdown] [--quick] [--repeats 5]
        [--peer-python /tmp/peers/bin/python] [--no-peers]

(The same file is the child processes' program: ``--peer torch|keras-jax|keras-tf``.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# TensorFlow's C++ start-up chatter, as the library quiets it (before any import of TF).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()

LOOKBACK, N_INPUTS, HORIZON = 30, 6, 7
N_WINDOWS = 2000
DATA_SEED = 0
MODEL_SEED = 42  # LSTM's default seed
LEARNING_RATE = 1e-3
BATCHES = (64, 256)
UNITS = (32, 64)
REPEATS = 5
TARGET_CONFIG = (64, 32)  # (batch, units)
TARGET_RATIO = 1.3
DEFAULT_PEER_PYTHON = "/tmp/peers/bin/python"
PEER_KINDS = ("keras-tf", "keras-jax", "torch")
PREFIX = "[lstm_kernel_bench]"


# ------------------------------------------------------------------------------ data


def make_data(n: int = N_WINDOWS, seed: int = DATA_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark's arrays, identical in every process: ``X (n, 30, 6)``, ``y (n, 7)``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, LOOKBACK, N_INPUTS), dtype=np.float32)
    y = rng.standard_normal((n, HORIZON), dtype=np.float32)
    return x, y


def checksum(*arrays: np.ndarray) -> str:
    """First 16 hex digits of the SHA-256 of the arrays' bytes."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def epoch_flops(n: int, units: int, batch: int) -> dict[str, float]:
    """FLOPs of one training epoch (no validation), counted as in ``docs/benchmarks.md``."""
    per_step = 2 * 4 * units * (N_INPUTS + units) + 13 * units
    forward = LOOKBACK * per_step + 2 * units * HORIZON + HORIZON
    params = 4 * units * (N_INPUTS + units + 1) + units * HORIZON + HORIZON
    train = 3 * forward * n
    optimizer = 12 * params * math.ceil(n / batch)
    return {
        "forward_per_sample": float(forward),
        "train": float(train),
        "optimizer": float(optimizer),
        "total": float(train + optimizer),
        "params": float(params),
    }


# ------------------------------------------------------------------- Keras epoch timing


def keras_epoch_runner(
    keras: Any, model: Any, x: np.ndarray, y: np.ndarray, batch: int
) -> Callable[[], tuple[float, float]]:
    """A function running one epoch of ``model.fit`` and returning (seconds, loss).

    The seconds are from ``on_epoch_begin`` to ``on_epoch_end`` (after the epoch's loss
    has been read, which waits for any asynchronously dispatched step).
    """

    class EpochClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.start = self.seconds = self.loss = math.nan

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.loss = float((logs or {}).get("loss", math.nan))
            self.seconds = time.perf_counter() - self.start

    clock = EpochClock()

    def epoch() -> tuple[float, float]:
        model.fit(x, y, epochs=1, batch_size=batch, shuffle=True, verbose=0, callbacks=[clock])
        return clock.seconds, clock.loss

    return epoch


def bare_keras_model(keras: Any, units: int) -> Any:
    """``Sequential([Input((30, 6)), LSTM(units), Dense(7)])``, Adam, MSE, Keras' defaults."""
    keras.utils.set_random_seed(MODEL_SEED)
    model = keras.Sequential(
        [
            keras.Input((LOOKBACK, N_INPUTS)),
            keras.layers.LSTM(units),
            keras.layers.Dense(HORIZON),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="mse")
    return model


# ------------------------------------------------------------------- child processes


def _cpu_info() -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"python": platform.python_version(), "numpy": np.__version__, "cores": usable}


class _PeerBackend:
    """What a child process runs: ``setup`` a configuration, then ``epoch`` repeatedly."""

    def __init__(self, kind: str, threads: int | None) -> None:
        self.kind = kind
        self.threads = threads
        self.info: dict[str, Any] = _cpu_info()
        self._epoch: Callable[[], tuple[float, float]] | None = None
        if kind == "torch":
            import torch

            torch.set_num_threads(int(threads or 1))
            self.torch = torch
            self.info.update(
                torch=torch.__version__,
                threads=torch.get_num_threads(),
                interop_threads=torch.get_num_interop_threads(),
                mkldnn=bool(torch.backends.mkldnn.is_available()),
            )
        elif kind in ("keras-jax", "keras-tf"):
            os.environ["KERAS_BACKEND"] = "jax" if kind == "keras-jax" else "tensorflow"
            import keras

            self.keras = keras
            if keras.backend.backend() != os.environ["KERAS_BACKEND"]:
                raise RuntimeError(f"Keras chose backend {keras.backend.backend()!r}")
            self.info["keras"] = keras.__version__
            if kind == "keras-jax":
                import jax

                self.info.update(jax=jax.__version__, devices=[str(d) for d in jax.devices()])
            else:
                import tensorflow as tf

                threads_ = tf.config.threading
                self.info.update(
                    tensorflow=tf.__version__,
                    intra_op=threads_.get_intra_op_parallelism_threads(),
                    inter_op=threads_.get_inter_op_parallelism_threads(),
                    op_determinism=_op_determinism_on(tf),
                )
        else:
            raise ValueError(f"unknown peer {kind!r}")

    def setup(self, batch: int, units: int, n: int) -> dict[str, Any]:
        """Build the model for one configuration and run its untimed warm-up epoch."""
        self._epoch = None
        gc.collect()
        x, y = make_data(n)
        details: dict[str, Any] = {"checksum": checksum(x, y)}
        if self.kind == "torch":
            self._epoch, details["params"] = self._torch_setup(x, y, batch, units)
        else:
            model = bare_keras_model(self.keras, units)
            self._epoch = keras_epoch_runner(self.keras, model, x, y, batch)
            details["params"] = int(model.count_params())
        start = time.perf_counter()
        details["warmup_loss"] = self._epoch()[1]
        details["warmup_seconds"] = time.perf_counter() - start
        if self.kind != "torch":
            details["jit_compile"] = repr(model.jit_compile)
        return details

    def _torch_setup(
        self, x: np.ndarray, y: np.ndarray, batch: int, units: int
    ) -> tuple[Callable[[], tuple[float, float]], int]:
        torch = self.torch
        nn = torch.nn
        torch.manual_seed(MODEL_SEED)

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lstm = nn.LSTM(N_INPUTS, units, batch_first=True)
                self.head = nn.Linear(units, HORIZON)

            def forward(self, inputs: Any) -> Any:
                outputs, _ = self.lstm(inputs)
                return self.head(outputs[:, -1])

        model = Net()
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        loss_fn = nn.MSELoss()
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        generator = torch.Generator().manual_seed(MODEL_SEED)
        n = len(x)

        def epoch() -> tuple[float, float]:
            start = time.perf_counter()
            order = torch.randperm(n, generator=generator)
            total = torch.zeros(())
            for first in range(0, n, batch):
                rows = order[first : first + batch]
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(xt[rows]), yt[rows])
                loss.backward()
                optimizer.step()
                total += loss.detach() * len(rows)
            value = float(total) / n  # the epoch's mean loss, as Keras reports it
            return time.perf_counter() - start, value

        return epoch, sum(p.numel() for p in model.parameters())

    def epoch(self) -> dict[str, Any]:
        """One timed epoch."""
        if self._epoch is None:
            raise RuntimeError("epoch before setup")
        gc.collect()
        seconds, loss = self._epoch()
        return {"seconds": seconds, "loss": loss}


def _op_determinism_on(tf: Any) -> bool | None:
    """Whether ``enable_op_determinism`` is in force (TF has no public getter for it)."""
    try:
        from tensorflow.python.framework import config

        return bool(config.is_op_determinism_enabled())
    except (ImportError, AttributeError):
        return None


def peer_main(kind: str, threads: int | None) -> int:
    """Child-process body: answer JSON-line commands on stdin, one JSON line each.

    The protocol writes to the original stdout; everything the libraries print goes to
    stderr (file descriptor 1 is pointed at 2).
    """
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    try:
        backend = _PeerBackend(kind, threads)
    except Exception as error:  # a missing package is reported, not raised
        reply({"ok": False, "reason": f"{type(error).__name__}: {error}"})
        return 0
    reply({"ok": True, "info": backend.info})
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if command["cmd"] == "setup":
                reply(
                    {"ok": True, **backend.setup(command["batch"], command["units"], command["n"])}
                )
            elif command["cmd"] == "epoch":
                reply({"ok": True, **backend.epoch()})
            elif command["cmd"] == "quit":
                reply({"ok": True})
                return 0
            else:
                reply({"ok": False, "reason": f"unknown command {command['cmd']!r}"})
        except Exception as error:
            traceback.print_exc()
            reply({"ok": False, "reason": f"{type(error).__name__}: {error}"})
    return 0


class PeerUnavailable(Exception):
    """A child process could not start, or failed."""


class PeerProcess:
    """A child process running :func:`peer_main`, driven over its stdin / stdout."""

    def __init__(self, python: str, kind: str, threads: int | None = None) -> None:
        if not Path(python).exists():
            raise PeerUnavailable(f"interpreter {python} not found")
        env = dict(os.environ)
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"
        if kind == "keras-jax":
            env["KERAS_BACKEND"] = "jax"
            env.setdefault("JAX_PLATFORMS", "cpu")
        elif kind == "keras-tf":
            env["KERAS_BACKEND"] = "tensorflow"
        argv = [python, str(SCRIPT), "--peer", kind]
        if threads is not None:
            argv += ["--threads", str(threads)]
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in close())
            "w+", prefix=f"lstm_kernel_bench_{kind}_", suffix=".log", delete=False
        )
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
            cwd=str(ROOT),
        )
        self.info: dict[str, Any] = {}

    def hello(self) -> dict[str, Any]:
        """Wait for the child's first line: its versions, or why it cannot run."""
        message = self._read()
        self.info = message["info"]
        return self.info

    def request(self, **command: Any) -> dict[str, Any]:
        """Send one command, return the child's answer (raises if it failed)."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise PeerUnavailable(f"child process gone ({error}); {self._tail()}") from error
        return self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise PeerUnavailable(
                f"child process exited with code {self.proc.returncode}; {self._tail()}"
            )
        message = json.loads(line)
        if not message.get("ok"):
            raise PeerUnavailable(message.get("reason", "failed"))
        return message

    def _tail(self) -> str:
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace").strip().splitlines()
        return "stderr: " + (" | ".join(text[-3:]) if text else "(empty)")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the child so far (``/proc``), 0 once it is gone."""
        return _proc_cpu_seconds(self.proc.pid)

    def close(self) -> None:
        """Ask the child to quit; kill it (this one process) if it does not."""
        if self.proc.poll() is None:
            try:
                self.request(cmd="quit")
            except (PeerUnavailable, ValueError):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


def _proc_cpu_seconds(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float | None:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = [int(v) for v in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- contestants


@dataclass
class Contestant:
    """One row of the table: how to set it up and run one epoch, and its timings."""

    key: str
    label: str
    group: str  # "ours", "bare" or "peer"
    setup: Callable[[int, int, int], dict[str, Any]]
    epoch: Callable[[], dict[str, Any]]
    process: PeerProcess | None = None
    skipped: str | None = None
    note: str = ""


@dataclass
class Result:
    """One contestant in one configuration."""

    contestant: Contestant
    seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    setup: dict[str, Any] = field(default_factory=dict)
    failed: str | None = None

    @property
    def median(self) -> float:
        """Median epoch, seconds (NaN without timings)."""
        return statistics.median(self.seconds) if self.seconds else math.nan


class OurNetworks:
    """Our model's network (from ``lstm.py``'s pool) and its recurrent-layer twin."""

    def __init__(self) -> None:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from forecasting.models import lstm as lstm_module

        self.lstm_module = lstm_module
        self.keras = lstm_module._keras()  # switches on op determinism, as the model does
        import tensorflow as tf

        self.tf = tf
        try:
            from forecasting.models.fused_lstm import FusedLSTM
        except Exception as error:  # reported as a skipped row
            self.fused_cls: Any = None
            self.fused_error = f"{type(error).__name__}: {error}"
        else:
            self.fused_cls = FusedLSTM
            self.fused_error = ""
        self.data: tuple[np.ndarray, np.ndarray] | None = None
        self.data_n = 0
        self.built_kind: str | None = None
        self.runners: dict[str, Callable[[], tuple[float, float]]] = {}
        self.jit: dict[str, str] = {}
        self.layers: dict[str, list[str]] = {}

    def _recurrent_kind(self, layer: Any) -> str | None:
        if self.fused_cls is not None and isinstance(layer, self.fused_cls):
            return "fused"
        if isinstance(layer, self.keras.layers.LSTM):
            return "keras"
        return None

    def setup(self, variant: str, batch: int, units: int, n: int) -> dict[str, Any]:
        """Build (or fetch) the networks for this configuration; warm up ``variant``."""
        keras = self.keras
        if self.data is None or self.data_n != n:
            self.data, self.data_n = make_data(n), n
        x, y = self.data
        model_params = self.lstm_module.LSTM(units=units, batch_size=batch).get_params()
        network = self.lstm_module._POOL.get(
            self.lstm_module.LSTM(units=units, batch_size=batch)._spec(N_INPUTS)
        )
        network.reset(MODEL_SEED)
        pooled = network.model
        kinds = [self._recurrent_kind(layer) for layer in pooled.layers]
        built = next((k for k in kinds if k is not None), None)
        if built is None:
            raise RuntimeError(f"no LSTM layer in our network: {[type(v) for v in pooled.layers]}")
        self.built_kind = built
        if variant == "graph":
            return self._setup_graph(network, x, y, batch)
        if variant == built:
            model = pooled
        else:
            if variant == "fused" and self.fused_cls is None:
                raise RuntimeError(f"FusedLSTM not importable: {self.fused_error}")
            model = self._twin(pooled, variant, model_params)
            model.set_weights(pooled.get_weights())
        keras.utils.set_random_seed(MODEL_SEED)
        runner = keras_epoch_runner(keras, model, x, y, batch)
        self.runners[variant] = runner
        start = time.perf_counter()
        _, loss = runner()
        self.jit[variant] = repr(model.jit_compile)
        self.layers[variant] = [type(layer).__name__ for layer in model.layers]
        return {
            "checksum": checksum(x, y),
            "params": int(model.count_params()),
            "warmup_loss": loss,
            "warmup_seconds": time.perf_counter() - start,
            "jit_compile": repr(model.jit_compile),
            "layers": [type(layer).__name__ for layer in model.layers],
        }

    def _setup_graph(self, network: Any, x: np.ndarray, y: np.ndarray, batch: int) -> dict:
        """The pooled network's in-graph training loop, as ``LSTM.fit`` runs it."""
        tf = self.tf
        trainer = network.trainer
        x_t, y_t = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
        epochs = iter(range(10**9))

        def runner() -> tuple[float, float]:
            start = time.perf_counter()
            loss = trainer.train_epoch(x_t, y_t, batch, MODEL_SEED, next(epochs))
            return time.perf_counter() - start, float(loss)

        self.runners["graph"] = runner
        start = time.perf_counter()
        _, loss = runner()
        model = network.model
        self.jit["graph"] = "in-graph loop"
        self.layers["graph"] = [type(layer).__name__ for layer in model.layers]
        return {
            "checksum": checksum(x, y),
            "params": int(model.count_params()),
            "warmup_loss": loss,
            "warmup_seconds": time.perf_counter() - start,
            "jit_compile": "in-graph loop",
            "layers": self.layers["graph"],
        }

    def _twin(self, pooled: Any, variant: str, model_params: dict[str, Any]) -> Any:
        """``pooled`` rebuilt layer by layer with the other recurrent layer, compiled alike."""
        keras = self.keras
        recurrent = self.fused_cls if variant == "fused" else keras.layers.LSTM
        stack: list[Any] = [keras.Input(tuple(pooled.input_shape[1:]))]
        for layer in pooled.layers:
            if self._recurrent_kind(layer) is not None:
                stack.append(recurrent(layer.units, return_sequences=layer.return_sequences))
            else:
                config = {k: v for k, v in layer.get_config().items() if k != "name"}
                stack.append(type(layer).from_config(config))
        model = keras.Sequential(stack)
        learning_rate = float(keras.ops.convert_to_numpy(pooled.optimizer.learning_rate))
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss="mse",
            jit_compile=model_params.get("jit_compile", "auto"),
        )
        if model.count_params() != pooled.count_params():
            raise AssertionError(
                f"twin has {model.count_params()} parameters, ours {pooled.count_params()}"
            )
        return model

    def epoch(self, variant: str) -> dict[str, Any]:
        """One timed epoch of ``variant``."""
        gc.collect()
        seconds, loss = self.runners[variant]()
        return {"seconds": seconds, "loss": loss}


def make_contestants(
    peer_python: str | None, log: Callable[[str], None]
) -> tuple[list[Contestant], OurNetworks]:
    """Our two networks (this process), bare Keras / TF and the peers (child processes)."""
    ours = OurNetworks()
    contestants: list[Contestant] = []
    for variant, label in (
        ("graph", "ours, LSTM.fit (FusedLSTM, in-graph loop)"),
        ("keras", "ours, Keras LSTM under fit"),
        ("fused", "ours, FusedLSTM under fit"),
    ):
        contestant = Contestant(
            key=f"ours-{variant}",
            label=label,
            group="ours",
            setup=lambda b, u, n, v=variant: ours.setup(v, b, u, n),
            epoch=lambda v=variant: ours.epoch(v),
        )
        if variant == "fused" and ours.fused_cls is None:
            contestant.skipped = f"FusedLSTM not importable: {ours.fused_error}"
        contestants.append(contestant)

    children: list[tuple[str, str, str, str, int | None]] = [
        ("bare-tf", "bare Keras / TensorFlow", "bare", sys.executable, None)
    ]
    if peer_python is not None:
        children += [
            ("torch-1", "PyTorch, 1 thread", "peer", peer_python, 1),
            ("torch-2", "PyTorch, 2 threads", "peer", peer_python, 2),
            ("keras-jax", "Keras / JAX", "peer", peer_python, None),
        ]
    started: list[tuple[Contestant, PeerProcess]] = []
    for key, label, group, python, threads in children:
        kind = "torch" if key.startswith("torch") else ("keras-tf" if key == "bare-tf" else key)
        contestant = Contestant(key, label, group, lambda *a: {}, dict)
        contestants.append(contestant)
        try:
            process = PeerProcess(python, kind, threads)
        except PeerUnavailable as error:
            contestant.skipped = str(error)
            continue
        started.append((contestant, process))
    # Read the hellos one by one (the children import their libraries meanwhile).
    for contestant, process in started:
        try:
            info = process.hello()
        except PeerUnavailable as error:
            contestant.skipped = str(error)
            process.close()
            continue
        contestant.process = process
        contestant.note = _describe_info(info)
        contestant.setup = lambda b, u, n, p=process: p.request(cmd="setup", batch=b, units=u, n=n)
        contestant.epoch = lambda p=process: p.request(cmd="epoch")
        log(f"{contestant.label}: {contestant.note}")
    for contestant in contestants:
        if contestant.skipped:
            log(f"skipping {contestant.label}: {contestant.skipped}")
    return contestants, ours


def _describe_info(info: dict[str, Any]) -> str:
    parts = [f"{k} {v}" for k, v in info.items() if k not in ("cores",)]
    return ", ".join(parts)


# ------------------------------------------------------------------------- matmul rate


@dataclass
class MatmulRate:
    """Best-of-several large float32 matmul rates (GFLOP/s)."""

    n: int
    tensorflow: float
    numpy: float

    @property
    def reference(self) -> float:
        """The larger of the two: what this machine reaches."""
        return max(self.tensorflow, self.numpy)


def measure_matmul(n: int = 2048, runs: int = 5) -> MatmulRate:
    """A ``n x n @ n x n`` float32 matmul in TensorFlow and numpy, best of ``runs`` each."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flops = 2 * n**3

    ta, tb = tf.constant(a), tf.constant(b)
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.linalg.matmul(x, y)))
    matmul(ta, tb).numpy()
    best_tf = math.inf
    for _ in range(runs):
        start = time.perf_counter()
        matmul(ta, tb).numpy()
        best_tf = min(best_tf, time.perf_counter() - start)

    np.matmul(a, b)
    best_np = math.inf
    for _ in range(runs):
        start = time.perf_counter()
        np.matmul(a, b)
        best_np = min(best_np, time.perf_counter() - start)
    return MatmulRate(n, flops / best_tf / 1e9, flops / best_np / 1e9)


# ------------------------------------------------------------------------------ running


@dataclass
class ConfigResults:
    """All contestants in one (batch, units) configuration."""

    batch: int
    units: int
    n: int
    results: list[Result]
    flops: dict[str, float]
    others_cores: float | None
    wall: float

    def best_peer(self) -> Result | None:
        """The peer with the smallest median epoch."""
        peers = [r for r in self.results if r.contestant.group == "peer" and r.seconds]
        return min(peers, key=lambda r: r.median) if peers else None

    def get(self, key: str) -> Result | None:
        """The result of contestant ``key``."""
        return next((r for r in self.results if r.contestant.key == key), None)


def run_config(
    contestants: list[Contestant],
    batch: int,
    units: int,
    n: int,
    repeats: int,
    log: Callable[[str], None],
) -> ConfigResults:
    """Warm up every contestant, then ``repeats`` round-robin rounds of one epoch each."""
    results = [Result(c) for c in contestants if not c.skipped]
    reference_sum = checksum(*make_data(n))

    def fail(result: Result, error: Exception) -> None:
        result.failed = str(error)
        log(f"{result.contestant.label} failed at batch {batch}, units {units}: {error}")
        if (
            result.contestant.process is not None
            and result.contestant.process.proc.poll() is not None
        ):
            result.contestant.skipped = f"child process died: {error}"

    for result in results:
        log(f"batch {batch}, units {units}: set-up and warm-up of {result.contestant.label}")
        try:
            result.setup = result.contestant.setup(batch, units, n)
        except (PeerUnavailable, Exception) as error:
            fail(result, error)
            continue
        if result.setup.get("checksum") != reference_sum:
            raise SystemExit(
                f"{result.contestant.label} made different arrays "
                f"({result.setup.get('checksum')} against {reference_sum}): numpy differs?"
            )
    active = [r for r in results if r.failed is None]
    # One untimed round after every set-up: in TensorFlow the first epoch of a model after
    # another model has been traced in the same process is several times slower.
    settle: list[str] = []
    for result in active:
        try:
            settle.append(
                f"{result.contestant.key} {result.contestant.epoch()['seconds'] * 1000:.0f} ms"
            )
        except (PeerUnavailable, Exception) as error:
            fail(result, error)
    log(f"batch {batch}, units {units}: untimed round: " + ", ".join(settle))
    active = [r for r in active if r.failed is None]
    pids = [os.getpid()] + [
        r.contestant.process.proc.pid for r in active if r.contestant.process is not None
    ]
    busy0 = _machine_busy_seconds()
    ours0 = sum(_proc_cpu_seconds(pid) for pid in pids)
    wall0 = time.perf_counter()
    for round_ in range(repeats):
        shift = round_ % max(1, len(active))
        for result in active[shift:] + active[:shift]:
            if result.failed is not None:
                continue
            try:
                answer = result.contestant.epoch()
            except (PeerUnavailable, Exception) as error:
                fail(result, error)
                continue
            result.seconds.append(float(answer["seconds"]))
            result.losses.append(float(answer["loss"]))
        log(
            f"batch {batch}, units {units}: round {round_ + 1}/{repeats}: "
            + ", ".join(
                f"{r.contestant.key} {r.seconds[-1] * 1000:.0f} ms" for r in active if r.seconds
            )
        )
    wall = time.perf_counter() - wall0
    busy1 = _machine_busy_seconds()
    ours1 = sum(_proc_cpu_seconds(pid) for pid in pids)
    others = None
    if busy0 is not None and busy1 is not None and wall > 0:
        others = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / wall
    return ConfigResults(batch, units, n, results, epoch_flops(n, units, batch), others, wall)


# ------------------------------------------------------------------------------ report


@dataclass
class Row:
    """One printed row."""

    label: str
    median_ms: float
    low_ms: float
    high_ms: float
    runs: int
    ratio: float
    gflops: float
    share: float
    loss: float
    note: str


def rows_of(config: ConfigResults, matmul: MatmulRate, built: str | None) -> list[Row]:
    """The table rows of one configuration, in contestant order."""
    best = config.best_peer()
    rows = []
    for result in config.results:
        c = result.contestant
        label = c.label
        # LSTM.fit's own row is the first; the two "under fit" rows show where its time went.
        if not result.seconds:
            rows.append(
                Row(label, *(math.nan,) * 3, 0, *(math.nan,) * 4, result.failed or "no timing")
            )
            continue
        median = result.median
        gflops = config.flops["total"] / median / 1e9
        rows.append(
            Row(
                label,
                median * 1000,
                min(result.seconds) * 1000,
                max(result.seconds) * 1000,
                len(result.seconds),
                median / best.median if best else math.nan,
                gflops,
                gflops / matmul.reference,
                result.losses[-1],
                result.failed or "",
            )
        )
    return rows


def verdict(configs: list[ConfigResults]) -> tuple[str, str]:
    """``("PASS" | "FAIL" | "NOT JUDGED", sentence)`` for the issue's target."""
    batch, units = TARGET_CONFIG
    config = next((c for c in configs if (c.batch, c.units) == TARGET_CONFIG), None)
    where = f"batch {batch} / {units} units"
    if config is None:
        return "NOT JUDGED", f"{where} is not in the grid run"
    fused, best = config.get("ours-graph"), config.best_peer()
    if fused is None or not fused.seconds:
        return "NOT JUDGED", f"ours, LSTM.fit has no timing at {where}"
    if best is None:
        return "NOT JUDGED", f"no peer ran at {where}"
    ratio = fused.median / best.median
    status = "PASS" if ratio <= TARGET_RATIO else "FAIL"
    return status, (
        f"ours, LSTM.fit {fused.median * 1000:.1f} ms / {best.contestant.label} "
        f"{best.median * 1000:.1f} ms = {ratio:.2f}x at {where} (target <= {TARGET_RATIO}x)"
    )


def _on_off(value: bool | None) -> str:
    return "unknown" if value is None else ("on" if value else "off")


def _f(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1%}"


def facts(
    contestants: list[Contestant], ours: OurNetworks, matmul: MatmulRate, args: Any
) -> dict[str, str]:
    """Machine and software facts the figures depend on."""
    import keras
    import tensorflow as tf

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    threads = tf.config.threading
    out = {
        "CPU": f"{cpu}, {os.cpu_count()} logical CPUs ({usable} usable)",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "This process": (
            f"TensorFlow {tf.__version__}, Keras {keras.__version__}, numpy {np.__version__}; "
            f"intra-op threads {threads.get_intra_op_parallelism_threads()}, inter-op "
            f"{threads.get_inter_op_parallelism_threads()} (0 = one per core); op "
            f"determinism {_on_off(_op_determinism_on(tf))} (lstm.py switches it on)"
        ),
        "Data": (
            f"N = {args.n} windows (30, 6) and targets (7,), float32, "
            f"numpy default_rng({DATA_SEED}); one epoch = {args.n} samples, no validation"
        ),
        "Matmul reference": (
            f"{matmul.n}x{matmul.n} float32, best of 5: TensorFlow {matmul.tensorflow:.0f} "
            f"GFLOP/s, numpy {matmul.numpy:.0f} GFLOP/s; reference {matmul.reference:.0f}"
        ),
    }
    for c in contestants:
        if c.group != "ours":
            out[c.label] = f"skipped: {c.skipped}" if c.skipped and not c.note else c.note
    if ours.jit:
        layer = "FusedLSTM" if ours.built_kind == "fused" else "keras.layers.LSTM"
        out["Our network"] = (
            f"lstm.py builds it with {layer}; layers: "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in ours.layers.items())
            + "; jit_compile resolved: "
            + ", ".join(f"{k} {v}" for k, v in ours.jit.items())
        )
    out["Date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return out


def report_text(
    configs: list[ConfigResults],
    matmul: MatmulRate,
    info: dict[str, str],
    built: str | None,
    status: tuple[str, str],
) -> str:
    """The plain-text report."""
    lines = [f"{k}: {v}" for k, v in info.items()]
    for config in configs:
        flops = config.flops
        others = (
            ""
            if config.others_cores is None
            else (f"; other processes used {config.others_cores:.2f} cores on average")
        )
        lines += [
            "",
            f"batch {config.batch}, units {config.units}: {math.ceil(config.n / config.batch)} "
            f"batches per epoch, {flops['total'] / 1e9:.2f} GFLOP per epoch "
            f"({flops['forward_per_sample']:,.0f} FLOP forward per sample){others}",
            f"  {'contestant':<44}{'median ms':>10}{'min-max ms':>16}{'n':>3}"
            f"{'x best peer':>12}{'GFLOP/s':>9}{'% matmul':>10}{'loss':>7}",
        ]
        for row in rows_of(config, matmul, built):
            spread = "-" if math.isnan(row.low_ms) else f"{row.low_ms:.0f}-{row.high_ms:.0f}"
            lines.append(
                f"  {row.label:<44}{_f(row.median_ms):>10}{spread:>16}{row.runs:>3}"
                f"{_f(row.ratio, 2):>12}{_f(row.gflops, 2):>9}{_pct(row.share):>10}"
                f"{_f(row.loss, 3):>7}" + (f"  [{row.note}]" if row.note else "")
            )
    lines += ["", f"{status[0]}: {status[1]}"]
    return "\n".join(lines)


def report_markdown(
    configs: list[ConfigResults],
    matmul: MatmulRate,
    info: dict[str, str],
    built: str | None,
    status: tuple[str, str],
) -> str:
    """A Markdown fragment for ``docs/benchmarks.md``."""
    lines = [f"- **{k}:** {v}" for k, v in info.items()]
    lines += [
        "",
        "| Batch | Units | Contestant | Median ms/epoch | Min–max ms | × best peer | "
        "GFLOP/s | % of matmul |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for config in configs:
        for row in rows_of(config, matmul, built):
            spread = "–" if math.isnan(row.low_ms) else f"{row.low_ms:.0f}–{row.high_ms:.0f}"
            label = f"{row.label} ({row.note})" if row.note else row.label
            lines.append(
                f"| {config.batch} | {config.units} | {label} | {_f(row.median_ms)} | {spread} | "
                f"{_f(row.ratio, 2)} | {_f(row.gflops, 2)} | {_pct(row.share)} |"
            )
    lines.append("")
    for config in configs:
        others = "n/a" if config.others_cores is None else f"{config.others_cores:.2f}"
        lines.append(
            f"- Batch {config.batch}, {config.units} units: "
            f"{config.flops['total'] / 1e9:.2f} GFLOP per epoch; other processes used "
            f"{others} cores on average during the timed rounds."
        )
    lines += ["", f"**{status[0]}:** {status[1]}."]
    return "\n".join(lines)


# -------------------------------------------------------------------------------- main


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    """Parse the options; run as the benchmark, or as one of its child processes.

    Returns
    -------
    int
        0 on PASS, 1 on FAIL, 2 when the target cannot be judged.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print a Markdown fragment")
    parser.add_argument("--quick", action="store_true", help="batch 64, 32 units, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help=f"timed epochs each ({REPEATS})")
    parser.add_argument("--batches", type=_int_list, default=None, help="e.g. 64,256")
    parser.add_argument("--units", type=_int_list, default=None, help="e.g. 32,64")
    parser.add_argument("--n", type=int, default=N_WINDOWS, help=f"windows ({N_WINDOWS})")
    parser.add_argument(
        "--peer-python",
        default=DEFAULT_PEER_PYTHON,
        help=f"interpreter with torch, jax and keras ({DEFAULT_PEER_PYTHON})",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip PyTorch and JAX")
    parser.add_argument("--peer", choices=PEER_KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer:
        return peer_main(args.peer, args.threads)

    repeats = args.repeats or (3 if args.quick else REPEATS)
    batches = args.batches or ([TARGET_CONFIG[0]] if args.quick else list(BATCHES))
    units_list = args.units or ([TARGET_CONFIG[1]] if args.quick else list(UNITS))
    if repeats < 1 or args.n < 1 or min(batches + units_list) < 1:
        parser.error("counts must be positive")

    def log(text: str) -> None:
        print(f"{PREFIX} {text}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    contestants, ours = make_contestants(None if args.no_peers else args.peer_python, log)
    try:
        log("matmul reference")
        matmul = measure_matmul()
        log(f"matmul: TensorFlow {matmul.tensorflow:.0f}, numpy {matmul.numpy:.0f} GFLOP/s")
        configs = [
            run_config(contestants, batch, units, args.n, repeats, log)
            for batch in batches
            for units in units_list
        ]
    finally:
        for c in contestants:
            if c.process is not None:
                c.process.close()
    status = verdict(configs)
    info = facts(contestants, ours, matmul, args)
    info["Run"] = (
        f"{repeats} timed epochs per contestant and configuration after 2 untimed ones, "
        f"round-robin; whole run {time.perf_counter() - start:.0f} s"
    )
    render = report_markdown if args.markdown else report_text
    print(render(configs, matmul, info, ours.built_kind, status))
    return {"PASS": 0, "FAIL": 1}.get(status[0], 2)


if __name__ == "__main__":
    sys.exit(main())
