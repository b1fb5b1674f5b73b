"""The in-graph training loop computes what ``keras.Model.fit`` computes, faster.

:class:`forecasting.models._graph_training.GraphTrainer` replaces ``fit`` with early
stopping for the LSTM: the same loss, optimizer steps and early-stopping rule. With one
batch per epoch the order of the rows cannot matter, so both must give the same weights
and the same loss history to float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from factories import sine_trend_candles  # noqa: E402

from forecasting.models import LSTM  # noqa: E402
from forecasting.models._graph_training import GraphTrainer  # noqa: E402
from forecasting.models.fused_lstm import FusedLSTM  # noqa: E402


def _data(seed: int = 0, n: int = 96):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 3)).astype("float32")
    y = (x[:, -1, :1] * np.ones((1, 4)) + 0.1 * rng.normal(size=(n, 4))).astype("float32")
    return x[:64], y[:64], x[64:], y[64:]


def _model(learning_rate: float = 1e-2):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8, 3)), FusedLSTM(6), keras.layers.Dense(4)])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    return model


@pytest.mark.parametrize(("learning_rate", "patience"), [(1e-2, 10), (0.5, 1)])
def test_one_batch_per_epoch_matches_keras_fit(learning_rate: float, patience: int) -> None:
    x, y, x_val, y_val = _data()
    ours, theirs = _model(learning_rate), _model(learning_rate)
    theirs.set_weights(ours.get_weights())

    history, cancelled = GraphTrainer(ours).fit(
        x, y, x_val, y_val, epochs=8, batch_size=64, patience=patience, seed=3
    )
    fitted = theirs.fit(
        x, y, validation_data=(x_val, y_val), epochs=8, batch_size=64, verbose=0,
        callbacks=[keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)],
    )  # fmt: skip

    assert not cancelled
    # Same number of epochs (the same early-stopping rule), same losses, same weights
    # restored from the best epoch.
    assert len(history["loss"]) == len(fitted.history["loss"])
    np.testing.assert_allclose(history["loss"], fitted.history["loss"], rtol=2e-5)
    np.testing.assert_allclose(history["val_loss"], fitted.history["val_loss"], rtol=2e-5)
    for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    if patience == 1:  # the large step makes the validation loss rise: it stopped early
        assert len(history["loss"]) < 8


def test_the_epoch_loss_is_the_mean_over_rows_with_a_shorter_last_batch() -> None:
    x, y, x_val, y_val = _data()
    model = _model(learning_rate=0.0)  # no step: every batch sees the initial weights
    history, _ = GraphTrainer(model).fit(
        x, y, x_val, y_val, epochs=1, batch_size=24, patience=5, seed=0
    )  # batches of 24, 24 and 16
    expected = float(np.mean((model.predict_on_batch(x) - y) ** 2))
    assert history["loss"][0] == pytest.approx(expected, rel=1e-5)
    val = float(np.mean((model.predict_on_batch(x_val) - y_val) ** 2))
    assert history["val_loss"][0] == pytest.approx(val, rel=1e-5)


def test_one_trace_serves_every_fit_so_memory_stays_flat() -> None:
    trainer = GraphTrainer(_model())
    for n, seed in [(64, 0), (40, 1), (57, 2)]:
        x, y, x_val, y_val = _data(seed)
        trainer.fit(x[:n], y[:n], x_val, y_val, epochs=2, batch_size=16, patience=5, seed=seed)
    # A new trace per fit would keep a new graph alive each time (TensorFlow never
    # frees them): one trace, whatever the rows and the seed.
    assert trainer._train.experimental_get_tracing_count() == 1
    assert trainer._squared_error.experimental_get_tracing_count() == 1


def test_the_lstm_trains_on_the_fused_kernel_and_says_when_it_does_not() -> None:
    candles = sine_trend_candles(150, noise=0.01)
    tiny = {"lookback": 10, "horizon": 3, "units": 8, "epochs": 2, "batch_size": 32}
    fused = LSTM(**tiny).fit(candles)
    assert fused.kernel_ == "fused"
    assert not any("Keras' own LSTM layer" in n for n in fused.predict(3).notes)
    fallback = LSTM(**tiny, jit_compile=True).fit(candles)
    assert fallback.kernel_ == "keras"
    assert any("Keras' own LSTM layer" in n for n in fallback.predict(3).notes)
    # The same function of the same data: both forecasts are near each other.
    np.testing.assert_allclose(fused.predict(3).mean, fallback.predict(3).mean, rtol=0.05)


def test_a_slow_network_runs_fewer_batches_between_cancel_checks() -> None:
    from forecasting.models import _graph_training as training

    small = GraphTrainer(_model())
    assert small.batches_per_call(64) == training.BATCHES_PER_CALL
    keras.utils.set_random_seed(1)
    big = keras.Sequential([keras.Input((365, 3)), FusedLSTM(256), keras.layers.Dense(4)])
    big.compile(optimizer="adam", loss="mse")
    trainer = GraphTrainer(big)
    # 1024 rows x 365 steps x ~267k parameters: seconds per batch, so one batch per call.
    assert trainer.batches_per_call(1024) == 1
    per_batch = 32 * 365 * big.count_params() * training.SECONDS_PER_PARAMETER_STEP
    expected = int(training.CALL_SECONDS // per_batch)
    assert 1 <= trainer.batches_per_call(32) == min(training.BATCHES_PER_CALL, max(1, expected))

    # Cancel is polled before every call: ceil(batches / per call) times per epoch.
    polls = []
    x, y, _, _ = _data(n=96)
    x = np.repeat(x, 8, axis=0)
    y = np.repeat(y, 8, axis=0)  # 512 rows: 64 batches of 8
    loss = small.train_epoch(
        x, y, 8, seed=1, epoch=0, should_stop=lambda: polls.append(1) and False
    )
    assert loss is not None
    assert len(polls) == -(-64 // training.BATCHES_PER_CALL)
