"""The LSTM: it learns, it saves without pickle, it reports and cancels, it stays small.

TensorFlow runs on the CPU here, so every network is tiny and seeded. The contract shared
with the other models is in ``test_models_contract.py``.
"""

from __future__ import annotations

import json
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from factories import candles_from_close, sine_trend_candles

from forecasting.errors import Cancelled, ConfigurationError, ForecastingError
from forecasting.features import compute_features, parse_features
from forecasting.models import LSTM, NotFittedError
from forecasting.models import lstm as lstm_module

# Keras 3.15 saving weights under numpy 2 warns about __array__(copy=...): not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# Small enough to train in well under a second on two cores.
TINY = {"lookback": 10, "horizon": 5, "units": 8, "epochs": 3, "batch_size": 32}


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return sine_trend_candles(150, noise=0.01)


@pytest.fixture(scope="module")
def tiny(candles: pd.DataFrame) -> LSTM:
    """A tiny LSTM fitted once for the tests that only read it."""
    return LSTM(**TINY).fit(candles)


def test_learns_a_sine_with_a_trend_better_than_naive() -> None:
    # 600 daily candles: trend, weekly and 30-candle cycles, 0.2 % noise. Fitted on the
    # first 500, then forecasting 10 candles from ten origins (500, 510, ..., 590) with
    # the actual candles up to each origin, the way the walk-forward evaluation does.
    # With these settings the MAE is 14-23 % of naive's over data seeds 0-1 and model
    # seeds 1, 2, 42 (8 epochs, about 2 s); the bar is half of naive's.
    candles = sine_trend_candles(600, noise=0.002, seed=0)
    model = LSTM(
        lookback=30, horizon=10, units=16, epochs=8, batch_size=32, learning_rate=5e-3, seed=42
    ).fit(candles.iloc[:500])
    close = candles["close"].to_numpy()
    model_errors, naive_errors = [], []
    for origin in range(500, 591, 10):
        forecast = model.predict(10, history=candles.iloc[:origin])
        actual = close[origin : origin + 10]
        model_errors.append(np.abs(forecast.mean - actual).mean())
        naive_errors.append(np.abs(close[origin - 1] - actual).mean())
    ratio = np.mean(model_errors) / np.mean(naive_errors)
    assert ratio < 0.5, f"LSTM MAE is {ratio:.0%} of naive's"


def test_a_different_seed_gives_a_different_forecast(candles: pd.DataFrame, tiny: LSTM) -> None:
    other = LSTM(**TINY, seed=7).fit(candles)
    assert not np.allclose(other.predict(5).mean, tiny.predict(5).mean)


def test_save_and_load_round_trip(tmp_path: Path, candles: pd.DataFrame, tiny: LSTM) -> None:
    path = tiny.save(tmp_path / "model.keras")
    assert path == tmp_path / "model.keras"
    # Keras' own format and plain JSON, nothing else (no pickle anywhere).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "model.keras.json"]
    with zipfile.ZipFile(path) as archive:
        assert all(name.endswith((".json", ".h5")) for name in archive.namelist())
    state = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
    assert state["params"] == tiny.get_params()

    loaded = LSTM.load(path)
    assert loaded.get_params() == tiny.get_params()
    for history in (None, candles):
        original, restored = tiny.predict(5, history=history), loaded.predict(5, history=history)
        assert list(restored.timestamps) == list(original.timestamps)
        np.testing.assert_allclose(restored.mean, original.mean, rtol=1e-12)
        np.testing.assert_allclose(restored.lower, original.lower, rtol=1e-12)
        np.testing.assert_allclose(restored.upper, original.upper, rtol=1e-12)
    assert loaded.epochs_trained_ == tiny.epochs_trained_


def test_save_refuses_other_formats_and_unfitted_models(tmp_path: Path, tiny: LSTM) -> None:
    with pytest.raises(ConfigurationError, match=r"\.keras file"):
        tiny.save(tmp_path / "model.pkl")
    with pytest.raises(ConfigurationError, match="Fit the LSTM"):
        LSTM(**TINY).save(tmp_path / "model.keras")
    assert list(tmp_path.iterdir()) == []


def test_progress_is_reported_once_per_epoch(candles: pd.DataFrame) -> None:
    calls = []
    model = LSTM(**{**TINY, "patience": 10}).fit(candles, progress=lambda *args: calls.append(args))
    assert model.epochs_trained_ == 3
    assert [(stage, fraction) for stage, fraction, _ in calls] == [
        ("epoch", 1 / 3),
        ("epoch", 2 / 3),
        ("epoch", 1.0),
    ]
    for epoch, (_, _, details) in enumerate(calls, start=1):
        assert details["epoch"] == epoch
        assert details["epochs"] == 3
        assert np.isfinite(details["loss"])
        assert details["loss"] > 0
        assert np.isfinite(details["val_loss"])
        assert details["val_loss"] > 0
    assert [d["loss"] for *_, d in calls] == pytest.approx(model.loss_history_["loss"])


@pytest.mark.parametrize(
    ("stop_after", "epochs_reported"),
    [
        (0, 1),  # stop asked at once: the first epoch finishes, then it stops
        (1, 2),  # stop asked after the first epoch's check
    ],
)
def test_should_stop_cancels_and_leaves_the_model_unfitted(
    candles: pd.DataFrame, stop_after: int, epochs_reported: int
) -> None:
    model = LSTM(**{**TINY, "epochs": 5, "patience": 10}).fit(candles)  # fitted before
    polls, reported = [], []

    def should_stop() -> bool:
        polls.append(1)
        return len(polls) > stop_after

    with pytest.raises(Cancelled) as caught:
        model.fit(candles, progress=lambda *a: reported.append(a), should_stop=should_stop)
    assert isinstance(caught.value, ForecastingError)
    assert len(reported) == epochs_reported
    with pytest.raises(NotFittedError):
        model.predict(1)  # not the new scaler with the old weights


def test_mc_dropout_interval_is_at_the_level_and_repeatable(candles: pd.DataFrame) -> None:
    settings = {**TINY, "interval": "mc_dropout", "mc_samples": 30, "level": 0.8}
    model = LSTM(**settings).fit(candles)
    forecast = model.predict(5)
    assert forecast.level == 0.8
    assert (forecast.lower <= forecast.mean).all()
    assert (forecast.mean <= forecast.upper).all()
    assert (forecast.upper - forecast.lower > 0).all()
    # Each forward pass draws new dropout masks; the draws restart for every forecast,
    # so the interval is a function of the model and the data, like the mean.
    again = model.predict(5)
    twin = LSTM(**settings).fit(candles).predict(5)
    for other in (again, twin):
        np.testing.assert_array_equal(other.lower, forecast.lower)
        np.testing.assert_array_equal(other.upper, forecast.upper)


def test_price_target_forecasts_prices(candles: pd.DataFrame) -> None:
    model = LSTM(**TINY, target="price").fit(candles)
    forecast = model.predict(5)
    close = candles["close"]
    assert model.input_columns_[0] == "close"
    assert ((forecast.mean > 0.5 * close.min()) & (forecast.mean < 1.5 * close.max())).all()
    assert (forecast.lower <= forecast.mean).all()
    assert (forecast.mean <= forecast.upper).all()
    # Conformal intervals on prices are symmetric in price units.
    np.testing.assert_allclose(forecast.upper - forecast.mean, forecast.mean - forecast.lower)


def test_cannot_forecast_further_than_it_was_trained(tiny: LSTM) -> None:
    assert tiny.predict(5).horizon == 5
    with pytest.raises(ConfigurationError, match="trained for 5 steps ahead; asked for 6"):
        tiny.predict(6)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"target": "close"}, "target must be one of log_return, price"),  # unknown target
        ({"interval": "bootstrap"}, "interval must be one of conformal"),  # unknown interval
        ({"interval": "mc_dropout", "dropout": 0.0}, "MC dropout intervals need dropout"),
        ({"validation_fraction": 0.6}, "validation_fraction must be between 0 and 0.5"),
        ({"units": 0}, "units must be at least 1"),  # no network
        ({"features": "rsx:14"}, "Unknown feature 'rsx'"),  # a bad feature spec
    ],
)
def test_invalid_settings_are_refused_at_fit(
    candles: pd.DataFrame, settings: dict, message: str
) -> None:
    model = LSTM(**{**TINY, **settings})  # __init__ stores, even nonsense
    with pytest.raises(ConfigurationError, match=message):
        model.fit(candles)


def test_the_network_pool_stays_bounded(
    monkeypatch: pytest.MonkeyPatch, candles: pd.DataFrame, tiny: LSTM
) -> None:
    pool = lstm_module._POOL
    monkeypatch.setattr(pool, "_networks", OrderedDict())  # an empty pool, restored after
    monkeypatch.setattr(pool, "size", 2)

    # Rebuilt from scratch, the same seed still gives the same forecast.
    rebuilt = LSTM(**TINY).fit(candles)
    np.testing.assert_array_equal(rebuilt.predict(5).mean, tiny.predict(5).mean)
    (network,) = pool._networks.values()

    # Fitting the same architecture again and again reuses that one network (epochs and
    # batch size are not architecture: one big batch, one epoch keeps this quick).
    quick = {**TINY, "epochs": 1, "batch_size": 256}
    for _ in range(9):
        LSTM(**quick).fit(candles.iloc[:80])
    assert list(pool._networks.values()) == [network]

    # Other seeds reuse the same network (a network per seed leaks memory in TensorFlow),
    # each starting from its own initial weights.
    other_seeds = [LSTM(**quick, seed=seed).fit(candles.iloc[:80]) for seed in (1, 2)]
    assert list(pool._networks.values()) == [network]
    assert not np.array_equal(other_seeds[0].weights_[0], other_seeds[1].weights_[0])

    # New architectures are new networks, and the pool drops the least recently used.
    for units in (6, 10):
        LSTM(**{**quick, "units": units}).fit(candles.iloc[:80])
        assert len(pool._networks) <= pool.size
    assert network not in pool._networks.values()
    assert [spec[4] for spec in pool._networks] == [6, 10]


def test_targets_stay_aligned_when_features_are_undefined_mid_series() -> None:
    # Ten equal closes make Bollinger %B 0/0 (undefined) inside the series, so the rows
    # with every input defined are not a suffix of the candles. Each training target
    # must still be the close right after its window's last candle.
    # Whole-unit price steps keep the rolling variance exact (0.0, not 1e-13).
    rng = np.random.default_rng(3)
    close = 100 + np.cumsum(rng.choice([-1.0, 1.0], 120))
    close[60:70] = close[60]
    candles = candles_from_close(close)
    specs = "bollinger:3:2"
    defined = compute_features(candles, parse_features(specs), drop_warmup=False).notna()
    rows = np.flatnonzero(defined.all(axis=1).to_numpy())
    assert len(rows) < len(candles) - 2 - 1  # undefined rows beyond the warm-up

    model = LSTM(
        lookback=2, horizon=1, units=4, epochs=1, target="price", features=specs, dropout=0.0
    ).fit(candles)
    window_ends = rows[1:]  # each window's last row (lookback 2)
    window_ends = window_ends[window_ends + 1 < len(candles)]
    assert model.target_mean_ == pytest.approx(close[window_ends + 1].mean(), rel=1e-12)
