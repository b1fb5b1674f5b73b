"""A Keras 3 LSTM layer over TensorFlow's fused CPU kernel (``BlockLSTM``).

:class:`FusedLSTM` is a drop-in replacement for ``keras.layers.LSTM`` in
:class:`forecasting.models.lstm._Network` (tanh / sigmoid, no dropout inside the layer,
no masking, no state in or out). It has the same three weights as the Keras cell, in
the same order and layout (``kernel`` ``(input_dim, 4 units)``, ``recurrent_kernel``
``(units, 4 units)``, ``bias`` ``(4 units)``, gates ``i, f, c, o``), so ``set_weights``
from a Keras LSTM works unchanged, and computes the same function with the same
gradients (to float32 rounding). Keras 3 runs its LSTM on the CPU as a generic loop
of small ops per time step; this layer runs the whole sequence, and its gradient, as
one op each.

Which fused op, and why
-----------------------
TensorFlow has two whole-sequence LSTM ops, both with CPU kernels in
``tensorflow/core/kernels/rnn/lstm_ops.cc``:

* ``BlockLSTMV2``: gates laid out ``i, f, c, o`` (as Keras), no ``forget_bias``
  attribute (the kernel uses 0), ``cell_clip`` 0 by default (no clipping). Its
  forward pass equals Keras' with the weights unchanged, but the gradient TensorFlow
  registers for it (``tensorflow/python/ops/rnn_grad.py``, as of TF 2.21) is the
  *version-1* ``BlockLSTMGrad``, which reads the gates as ``i, c, f, o``: the
  gradients of the forget and cell-input gates are swapped and wrong (errors of
  order one against Keras). Using it needs a hand-written gradient calling
  ``BlockLSTMGradV2``.
* ``BlockLSTM``: gates ``i, c, f, o``, ``forget_bias`` added at run time (set to 0
  here: Keras' ``unit_forget_bias`` only initialises the forget slice of the bias to
  one), ``cell_clip`` 3 by default (set to -1 here: no clipping, as Keras). Its
  registered gradient, ``BlockLSTMGrad``, uses the same layout, so it is correct.

This layer uses ``BlockLSTM`` with its registered gradient: the weights are reordered
from Keras' ``i, f, c, o`` to ``i, c, f, o`` inside :meth:`FusedLSTM.call` (two
concatenations per call, differentiable), and no gradient code of ours runs.
``BlockLSTMV2`` with a hand-written gradient over ``BlockLSTMGradV2`` was measured too:
it gives the same numbers and was no faster beyond the noise of the measurements, so
the simpler path was kept. Hand-written loops compiled with XLA (unrolled, or
``tf.scan``) were two to four times slower than ``BlockLSTM`` on the CPU.

Both ops run with ``tf.config.experimental.enable_op_determinism()`` on, and two fits
from the same seed give bit-identical weights. Neither op has an XLA kernel, so the
layer sets ``supports_jit = False`` (as Keras' own LSTM does on TensorFlow): Keras'
``jit_compile="auto"`` then compiles without XLA, and ``jit_compile=True`` falls back
with Keras' warning.

Importing this module imports neither Keras nor TensorFlow: the class is defined (and
registered with Keras' serialisation) the first time ``FusedLSTM`` is looked up, so only
the code that trains pays for TensorFlow.
"""

from __future__ import annotations

import os
import threading
from typing import Any

# FusedLSTM is defined on its first lookup (module __getattr__ below).
__all__ = ["FusedLSTM", "fused_lstm_class"]  # noqa: F822

SUPPORTED_DTYPES = ("float16", "float32")

_CLASS: Any = None
_LOCK = threading.Lock()


def fused_lstm_class() -> type:
    """The :class:`FusedLSTM` layer class, defined on first use (one class per process)."""
    global _CLASS
    with _LOCK:
        if _CLASS is None:
            _CLASS = _define()
        return _CLASS


def __getattr__(name: str) -> Any:
    # ``from forecasting.models.fused_lstm import FusedLSTM`` defines the class then.
    if name == "FusedLSTM":
        return fused_lstm_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _define() -> type:
    # Quiet TensorFlow's C++ start-up chatter unless the user asked for it (as lstm.py does).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    def _ifco_to_icfo(values: tf.Tensor) -> tf.Tensor:
        """Keras' gate order ``i, f, c, o`` (last axis) to ``BlockLSTM``'s ``i, c, f, o``."""
        i, f, c, o = tf.split(values, 4, axis=-1)
        return tf.concat([i, c, f, o], axis=-1)

    @keras.saving.register_keras_serializable(package="cfl")
    class FusedLSTM(keras.layers.Layer):
        """``keras.layers.LSTM`` (tanh / sigmoid, no dropout) as one fused TensorFlow op.

        Parameters
        ----------
        units
            Size of the hidden and cell state.
        return_sequences
            Return the hidden state at every step, ``(batch, time, units)``, instead of
            the last one, ``(batch, units)``.
        activation, recurrent_activation
            Only ``"tanh"`` and ``"sigmoid"`` (Keras' defaults): the fused kernel has
            those built in. Anything else raises ``ValueError``; use
            ``keras.layers.LSTM`` for other activations (there is no silent fallback).
        use_bias, kernel_initializer, recurrent_initializer, bias_initializer,
        unit_forget_bias
            As ``keras.layers.LSTM``; the initial weights are drawn the same way.
        dropout, recurrent_dropout
            Must be 0: put a ``keras.layers.Dropout`` after the layer instead. A non-zero
            value raises ``ValueError`` (no fallback).
        **kwargs
            ``keras.layers.Layer`` arguments (``name``, ``dtype``, ``trainable``).

        Notes
        -----
        Masks, ``return_state``, ``go_backwards``, ``stateful`` and initial states are not
        supported. The compute dtype must be ``float32`` or ``float16`` (the op's types).
        The weights and settings a Keras LSTM keeps on ``lstm.cell`` (``kernel``,
        ``recurrent_kernel``, ``bias``, ``units``, ``unit_forget_bias``) are attributes of
        this layer itself. (There is deliberately no ``cell`` alias pointing back at the
        layer: Keras' saving walks layer attributes and would recurse forever.)
        """

        def __init__(
            self,
            units: int,
            return_sequences: bool = False,
            activation: str = "tanh",
            recurrent_activation: str = "sigmoid",
            use_bias: bool = True,
            kernel_initializer="glorot_uniform",
            recurrent_initializer="orthogonal",
            bias_initializer="zeros",
            unit_forget_bias: bool = True,
            dropout: float = 0.0,
            recurrent_dropout: float = 0.0,
            **kwargs,
        ) -> None:
            super().__init__(**kwargs)
            if int(units) != units or units < 1:
                raise ValueError(
                    f"FusedLSTM needs a positive whole number of units, got {units!r}."
                )
            for argument, value, expected in (
                ("activation", activation, "tanh"),
                ("recurrent_activation", recurrent_activation, "sigmoid"),
            ):
                if value != expected:
                    raise ValueError(
                        f"FusedLSTM supports only {argument}={expected!r} (the fused kernel's "
                        f"built-in function), got {value!r}; use keras.layers.LSTM instead."
                    )
            for argument, value in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
                if value:
                    raise ValueError(
                        f"FusedLSTM does not apply {argument} (got {value!r}); put a "
                        "keras.layers.Dropout after it, or use keras.layers.LSTM."
                    )
            self.units = int(units)
            self.return_sequences = bool(return_sequences)
            self.activation = activation
            self.recurrent_activation = recurrent_activation
            self.use_bias = bool(use_bias)
            self.kernel_initializer = keras.initializers.get(kernel_initializer)
            self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
            self.bias_initializer = keras.initializers.get(bias_initializer)
            self.unit_forget_bias = bool(unit_forget_bias)
            self.dropout = 0.0
            self.recurrent_dropout = 0.0
            self.input_spec = keras.layers.InputSpec(ndim=3)
            # BlockLSTM has no XLA kernel: Keras' jit_compile="auto" must not pick XLA.
            self.supports_jit = False

        def build(self, input_shape) -> None:
            input_dim = input_shape[-1]
            if input_dim is None:
                raise ValueError("FusedLSTM needs the number of input features to be known.")
            if self.compute_dtype not in SUPPORTED_DTYPES:
                raise ValueError(
                    f"FusedLSTM computes in {' or '.join(SUPPORTED_DTYPES)} (the fused kernel's "
                    f"types), not {self.compute_dtype}; use keras.layers.LSTM."
                )
            units = self.units
            self.kernel = self.add_weight(
                shape=(input_dim, 4 * units), name="kernel", initializer=self.kernel_initializer
            )
            self.recurrent_kernel = self.add_weight(
                shape=(units, 4 * units),
                name="recurrent_kernel",
                initializer=self.recurrent_initializer,
            )
            if self.use_bias:
                if self.unit_forget_bias:
                    # As Keras' LSTMCell: the forget slice starts at one, the rest as asked.
                    def bias_initializer(_, *args, **kwargs):
                        return keras.ops.concatenate(
                            [
                                self.bias_initializer((units,), *args, **kwargs),
                                keras.initializers.get("ones")((units,), *args, **kwargs),
                                self.bias_initializer((2 * units,), *args, **kwargs),
                            ]
                        )

                else:
                    bias_initializer = self.bias_initializer
                self.bias = self.add_weight(
                    shape=(4 * units,), name="bias", initializer=bias_initializer
                )
            else:
                self.bias = None

        def call(self, inputs, training=None, mask=None):
            if mask is not None:
                raise ValueError("FusedLSTM does not support masking; use keras.layers.LSTM.")
            x = tf.convert_to_tensor(inputs, dtype=self.compute_dtype)
            dtype = x.dtype
            units = self.units
            kernel = tf.cast(self.kernel, dtype)
            recurrent_kernel = tf.cast(self.recurrent_kernel, dtype)
            # BlockLSTM multiplies [x_t, h_{t-1}] by one (input_dim + units, 4 units) matrix.
            weights = _ifco_to_icfo(tf.concat([kernel, recurrent_kernel], axis=0))
            if self.bias is None:
                bias = tf.zeros((4 * units,), dtype)
            else:
                bias = _ifco_to_icfo(tf.cast(self.bias, dtype))
            shape = tf.shape(x)
            state = tf.zeros(tf.stack([shape[0], units]), dtype)
            no_peephole = tf.zeros((units,), dtype)
            outputs = tf.raw_ops.BlockLSTM(
                seq_len_max=tf.cast(shape[1], tf.int64),
                x=tf.transpose(x, [1, 0, 2]),  # time-major
                cs_prev=state,
                h_prev=state,
                w=weights,
                wci=no_peephole,
                wcf=no_peephole,
                wco=no_peephole,
                b=bias,
                forget_bias=0.0,  # Keras adds nothing to the forget gate at run time
                cell_clip=-1.0,  # no clipping of the cell state (the op's default is 3)
                use_peephole=False,
            )
            hidden = outputs[6]  # outputs: i, cs, f, o, ci, co, h; each (time, batch, units)
            if self.return_sequences:
                return tf.transpose(hidden, [1, 0, 2])
            return hidden[-1]

        def compute_output_shape(self, input_shape):
            if self.return_sequences:
                return (input_shape[0], input_shape[1], self.units)
            return (input_shape[0], self.units)

        def get_config(self) -> dict:
            config = super().get_config()
            config.update(
                {
                    "units": self.units,
                    "return_sequences": self.return_sequences,
                    "activation": self.activation,
                    "recurrent_activation": self.recurrent_activation,
                    "use_bias": self.use_bias,
                    "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                    "recurrent_initializer": keras.initializers.serialize(
                        self.recurrent_initializer
                    ),
                    "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                    "unit_forget_bias": self.unit_forget_bias,
                    "dropout": self.dropout,
                    "recurrent_dropout": self.recurrent_dropout,
                }
            )
            return config

    FusedLSTM.__qualname__ = "FusedLSTM"
    return FusedLSTM
