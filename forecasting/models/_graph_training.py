"""Training a small Keras network with its whole batch loop in one TensorFlow graph.

``keras.Model.fit`` runs each batch as its own call: a ``tf.data`` pipeline hands the
batch over, the traced step runs, callbacks and metrics follow. For the LSTM's networks
(a few thousand windows of 30 x 6, 32 units, batches of 64) a batch is about 4 ms of
arithmetic on the fused kernel and Keras' machinery around it added another 5-6 ms: a
fused-kernel epoch took 290 ms under ``fit`` and 99 ms with the loop in the graph, on
identical arrays (``bench/lstm_kernel_bench.py``). :class:`GraphTrainer` is that loop:
a traced function runs a run of batches (gather the shuffled rows, forward with dropout
on, mean squared error, gradient, Adam's update) as one call, and Python sees the model
only between runs of batches, to report progress, to poll for a cancel, and at each
epoch's end for the validation loss and early stopping.

It computes what ``fit(x, y, validation_data=..., batch_size=b, shuffle=True,
callbacks=[EarlyStopping(monitor="val_loss", patience=p, restore_best_weights=True)])``
computes: the same loss (MSE averaged over outputs and rows), the same optimizer (the
model's own, compiled), batches of ``b`` rows in a new random order each epoch (the last
one shorter), the epoch's training loss as the mean over its rows, the validation loss
with dropout off, and Keras' early-stopping rule (stop once ``patience`` epochs have
passed without a lower validation loss; the weights of the best epoch are restored at
the end). The order of the rows is drawn by numpy from ``(seed, epoch)``, so a seed
gives the same fit in any process.

TensorFlow is imported when a trainer is made: only the LSTM's training path does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["GraphTrainer"]

# Batches per traced call: Python polls for a cancel between calls, every ~40 ms at the
# LSTM's defaults, and the call's own overhead (about 0.3 ms) stays small beside them.
BATCHES_PER_CALL = 8
# Fewer batches per call when a batch is slow, so a cancel is seen within about this
# many seconds (a call is never less than one batch).
CALL_SECONDS = 0.5
# CPU-seconds per (row x time step x trainable parameter) of one training step, forward
# and backward (the fused LSTM kernel on the benchmark machine: 0.14 s an epoch of 2900
# windows of 30 steps, 5223 parameters).
SECONDS_PER_PARAMETER_STEP = 3.4e-10
# Rows per forward pass when scoring the validation windows.
EVAL_ROWS = 4096


class GraphTrainer:
    """Fit a compiled single-input, single-output Keras model (TensorFlow backend).

    Parameters
    ----------
    model
        A built, compiled ``keras.Model`` whose loss is the mean squared error; its
        optimizer is used as compiled.

    Notes
    -----
    The traced functions belong to the trainer, which belongs to one network: fitting
    the same network again, with any seed and any number of rows, reuses them (no new
    trace, so memory stays flat over repeated fits).
    """

    def __init__(self, model: Any) -> None:
        import tensorflow as tf

        self._tf = tf
        self.model = model
        steps = int(np.prod([d or 1 for d in model.input_shape[1:-1]])) or 1
        self._row_cost = steps * int(model.count_params()) * SECONDS_PER_PARAMETER_STEP
        self.optimizer = model.optimizer
        variables = model.trainable_variables
        self.optimizer.build(variables)
        x_spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        y_spec = tf.TensorSpec([None, *model.output_shape[1:]], tf.float32)
        index = tf.TensorSpec([], tf.int32)

        def train_batches(x, y, order, first, last, batch_size):
            n = tf.shape(order)[0]
            total = tf.constant(0.0, tf.float32)
            for i in tf.range(first, last):
                rows = order[i * batch_size : tf.minimum((i + 1) * batch_size, n)]
                xb = tf.gather(x, rows)
                yb = tf.gather(y, rows)
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean(tf.square(model(xb, training=True) - yb))
                gradients = tape.gradient(loss, variables)
                self.optimizer.apply(gradients, variables)
                total += loss * tf.cast(tf.shape(rows)[0], tf.float32)
            return total

        def squared_error(x, y):
            return tf.reduce_sum(tf.reduce_mean(tf.square(model(x, training=False) - y), axis=-1))

        self._train = tf.function(
            train_batches,
            input_signature=[x_spec, y_spec, tf.TensorSpec([None], tf.int32), index, index, index],
        )
        self._squared_error = tf.function(squared_error, input_signature=[x_spec, y_spec])

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        x_val: np.ndarray,
        y_val: np.ndarray,
        *,
        epochs: int,
        batch_size: int,
        patience: int,
        seed: int,
        on_epoch: Callable[[int, float, float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> tuple[dict[str, list[float]], bool]:
        """Train for at most ``epochs`` epochs with early stopping on ``x_val, y_val``.

        Parameters
        ----------
        x, y
            Training inputs ``(n, ...)`` and targets ``(n, outputs)``, float32.
        x_val, y_val
            Validation inputs and targets (at least one row).
        epochs, batch_size, patience
            As for ``fit`` and ``EarlyStopping``.
        seed
            Draws each epoch's order of the rows.
        on_epoch
            Called after each epoch with ``(epoch, loss, val_loss)``, ``epoch`` from 1.
        should_stop
            Polled between runs of :data:`BATCHES_PER_CALL` batches; True stops at once.

        Returns
        -------
        (history, cancelled)
            ``{"loss": [...], "val_loss": [...]}`` per epoch run, and whether
            ``should_stop`` ended the fit (the weights are then the last ones, not the
            best).
        """
        tf = self._tf
        x_t = tf.convert_to_tensor(np.asarray(x, dtype="float32"))
        y_t = tf.convert_to_tensor(np.asarray(y, dtype="float32"))
        x_v = np.asarray(x_val, dtype="float32")
        y_v = np.asarray(y_val, dtype="float32")
        history: dict[str, list[float]] = {"loss": [], "val_loss": []}
        weights = self.model.weights
        best, best_weights, wait = None, None, 0
        for epoch in range(int(epochs)):
            loss = self.train_epoch(x_t, y_t, batch_size, seed, epoch, should_stop)
            if loss is None:
                return history, True
            val_loss = self._validation_loss(x_v, y_v)
            history["loss"].append(loss)
            history["val_loss"].append(val_loss)
            if on_epoch is not None:
                on_epoch(epoch + 1, loss, val_loss)
            # Keras' EarlyStopping(patience, restore_best_weights=True), rule for rule.
            if best_weights is None:
                best_weights = [w.numpy() for w in weights]
            wait += 1
            # Keras counts the first epoch as an improvement whatever its loss.
            if best is None or val_loss < best:
                best, wait = val_loss, 0
                best_weights = [w.numpy() for w in weights]
                continue
            if wait >= int(patience) and epoch > 0:
                break
        if best_weights is not None:
            for variable, value in zip(weights, best_weights, strict=True):
                variable.assign(value)
        return history, False

    def train_epoch(
        self,
        x: Any,
        y: Any,
        batch_size: int,
        seed: int,
        epoch: int,
        should_stop: Callable[[], bool] | None = None,
    ) -> float | None:
        """One pass over ``x, y`` (arrays or tensors) in the order drawn from ``(seed,
        epoch)``; the mean training loss over the rows, or ``None`` if ``should_stop``
        said so before a run of batches."""
        n = int(x.shape[0])
        batches = -(-n // int(batch_size))
        order = np.random.default_rng([int(seed), int(epoch)]).permutation(n).astype("int32")
        order_t = self._tf.convert_to_tensor(order)
        total = 0.0
        per_call = self.batches_per_call(batch_size)
        for first in range(0, batches, per_call):
            if should_stop is not None and should_stop():
                return None
            last = min(first + per_call, batches)
            total += float(self._train(x, y, order_t, first, last, int(batch_size)))
        return total / n

    def batches_per_call(self, batch_size: int) -> int:
        """Batches per traced call: :data:`BATCHES_PER_CALL`, or fewer when the network's
        estimated time per batch would keep a cancel waiting over :data:`CALL_SECONDS`.

        It depends only on the network and the batch size, never on the machine's speed
        at the time, so the same settings always group batches the same way (and give
        the same losses)."""
        per_batch = int(batch_size) * self._row_cost
        return max(
            1,
            min(
                BATCHES_PER_CALL, int(CALL_SECONDS // per_batch) if per_batch else BATCHES_PER_CALL
            ),
        )

    def _validation_loss(self, x: np.ndarray, y: np.ndarray) -> float:
        total = 0.0
        for start in range(0, len(x), EVAL_ROWS):
            total += float(
                self._squared_error(x[start : start + EVAL_ROWS], y[start : start + EVAL_ROWS])
            )
        return total / len(x)
