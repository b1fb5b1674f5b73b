"""FusedLSTM: the same function, gradients and weights as keras.layers.LSTM; it saves and
loads in safe mode, trains deterministically, runs in compiled graphs at any batch size,
and refuses what it does not implement.

Every network is tiny and seeded (TensorFlow runs on the CPU here).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from forecasting.models.fused_lstm import FusedLSTM

# Keras 3.15 saving weights under numpy 2 warns about __array__(copy=...): not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# float32 against Keras' step-by-step loop: measured differences are below 1e-6.
TOL = {"rtol": 1e-5, "atol": 1e-6}
LOOKBACK, FEATURES = 7, 4


@pytest.fixture(scope="module", autouse=True)
def deterministic() -> None:
    # What forecasting.models.lstm._keras() does for every fit (global and idempotent).
    tf.config.experimental.enable_op_determinism()


def _inputs(batch: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, LOOKBACK, FEATURES)).astype("float32")


def _stack(layer: type, units: tuple[int, ...], dropout: float = 0.0, horizon: int = 3):
    """Our network's shape: LSTM layers (sequences between them), Dropout, Dense."""
    stack = [keras.Input((LOOKBACK, FEATURES))]
    for position, size in enumerate(units):
        stack.append(layer(size, return_sequences=position < len(units) - 1))
        if dropout:
            stack.append(keras.layers.Dropout(dropout))
    stack.append(keras.layers.Dense(horizon))
    return keras.Sequential(stack)


def _random_weights(model, seed: int = 1) -> list[np.ndarray]:
    """Weights away from the initial ones (biases non-zero), so every gate matters."""
    rng = np.random.default_rng(seed)
    return [(0.5 * rng.standard_normal(w.shape)).astype("float32") for w in model.get_weights()]


def _gradients(model, x: np.ndarray, y: np.ndarray):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
    grads = tape.gradient(loss, [x, *model.trainable_weights])
    return [np.asarray(g) for g in grads]


def test_weights_have_keras_names_shapes_order_and_initial_values() -> None:
    keras.utils.set_random_seed(3)
    reference = keras.layers.LSTM(6)
    reference.build((None, LOOKBACK, FEATURES))
    keras.utils.set_random_seed(3)
    fused = FusedLSTM(6)
    fused.build((None, LOOKBACK, FEATURES))
    assert [w.name for w in fused.weights] == ["kernel", "recurrent_kernel", "bias"]
    assert [w.name for w in fused.weights] == [w.name for w in reference.weights]
    for ours, theirs in zip(fused.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    bias = fused.get_weights()[2]
    np.testing.assert_array_equal(bias[6:12], 1.0)  # unit_forget_bias: forget slice at one
    assert not bias[:6].any()
    assert not bias[12:].any()


@pytest.mark.parametrize(
    ("return_sequences", "use_bias"), [(False, True), (True, True), (False, False)]
)
def test_outputs_and_gradients_match_keras_lstm(return_sequences: bool, use_bias: bool) -> None:
    x = _inputs()
    reference = keras.layers.LSTM(6, return_sequences=return_sequences, use_bias=use_bias)
    fused = FusedLSTM(6, return_sequences=return_sequences, use_bias=use_bias)
    reference.build(x.shape)
    fused.build(x.shape)
    weights = [
        (0.5 * np.random.default_rng(2).standard_normal(w.shape)).astype("float32")
        for w in reference.get_weights()
    ]
    reference.set_weights(weights)
    fused.set_weights(weights)
    # A loss weighting every unit (and step) differently, so no gate's gradient hides.
    scale = tf.constant(np.random.default_rng(4).standard_normal(reference(x).shape), "float32")
    results = []
    for layer in (reference, fused):
        inputs = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            output = layer(inputs)
            loss = tf.reduce_sum(tf.tanh(output) * scale)
        grads = tape.gradient(loss, [inputs, *layer.trainable_weights])
        results.append([np.asarray(output)] + [np.asarray(g) for g in grads])
    expected_shape = (5, LOOKBACK, 6) if return_sequences else (5, 6)
    assert results[1][0].shape == expected_shape
    for ours, theirs in zip(results[1], results[0], strict=True):
        np.testing.assert_allclose(ours, theirs, **TOL)


def test_two_layer_stack_matches_keras_in_outputs_and_every_gradient() -> None:
    x = _inputs(batch=6)
    y = np.random.default_rng(5).standard_normal((6, 3)).astype("float32")
    reference = _stack(keras.layers.LSTM, (6, 5))
    fused = _stack(FusedLSTM, (6, 5))
    weights = _random_weights(reference)
    reference.set_weights(weights)
    fused.set_weights(weights)
    np.testing.assert_allclose(fused.predict_on_batch(x), reference.predict_on_batch(x), **TOL)
    ours, theirs = _gradients(fused, x, y), _gradients(reference, x, y)
    assert len(ours) == 1 + 3 + 3 + 2  # the input, 3 weights per LSTM layer, Dense's 2
    for mine, keras_grad in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine, keras_grad, **TOL)


def test_saves_and_loads_in_safe_mode_with_identical_predictions(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = _stack(FusedLSTM, (4, 3), dropout=0.1)
    x = _inputs(batch=9)
    path = tmp_path / "fused.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    layers = [layer for layer in loaded.layers if isinstance(layer, FusedLSTM)]
    assert [(layer.units, layer.return_sequences) for layer in layers] == [(4, True), (3, False)]
    np.testing.assert_array_equal(loaded.predict_on_batch(x), model.predict_on_batch(x))
    config = layers[0].get_config()
    assert config["activation"] == "tanh"
    assert config["dropout"] == 0.0


def _fit_once(seed: int) -> list[np.ndarray]:
    keras.utils.set_random_seed(seed)
    model = _stack(FusedLSTM, (5,), dropout=0.2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    x = _inputs(batch=70, seed=6)
    y = np.random.default_rng(7).standard_normal((70, 3)).astype("float32")
    # 70 rows in batches of 32: the last batch has 6, so the batch size varies in the graph.
    model.fit(x, y, batch_size=32, epochs=2, shuffle=True, verbose=0)
    return model.get_weights()


def test_fits_deterministically_under_op_determinism() -> None:
    first, second = _fit_once(11), _fit_once(11)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_compiled_graphs_take_any_batch_size_and_training_calls() -> None:
    reference = _stack(keras.layers.LSTM, (6,), dropout=0.3)
    fused = _stack(FusedLSTM, (6,), dropout=0.3)
    weights = _random_weights(reference, seed=8)
    reference.set_weights(weights)
    fused.set_weights(weights)
    for batch in (1, 5, 33):
        x = _inputs(batch=batch, seed=batch)
        np.testing.assert_allclose(fused.predict_on_batch(x), reference.predict_on_batch(x), **TOL)
    # As _Network.sample: a traced training-mode call (dropout on), reused across sizes.
    sampler = tf.function(lambda x: fused(x, training=True), reduce_retracing=True)
    for batch in (4, 9, 17):
        out = np.asarray(sampler(_inputs(batch=batch, seed=batch)))
        assert out.shape == (batch, 3)
        assert np.isfinite(out).all()
    # The fused op has no XLA kernel: Keras' "auto" must not pick XLA.
    fused.compile(optimizer="adam", loss="mse", jit_compile="auto")
    assert fused.jit_compile is False


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"activation": "relu"}, "activation='tanh'"),
        ({"recurrent_activation": "hard_sigmoid"}, "recurrent_activation='sigmoid'"),
        ({"dropout": 0.1}, "does not apply dropout"),
        ({"recurrent_dropout": 0.2}, "does not apply recurrent_dropout"),
        ({"dtype": "float64"}, "float16 or float32"),
    ],
)
def test_refuses_what_it_does_not_implement(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FusedLSTM(4, **settings).build((None, LOOKBACK, FEATURES))


def test_refuses_a_mask() -> None:
    layer = FusedLSTM(4)
    x = _inputs(batch=2)
    with pytest.raises(ValueError, match="masking"):
        layer(x, mask=np.ones((2, LOOKBACK), dtype=bool))
