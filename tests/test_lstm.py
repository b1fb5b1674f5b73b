"""The LSTM: it learns, it saves without pickle, it reports and cancels, it stays small;
its intervals cover at their level (the textbook conformal rank, unbounded when the
tail is too short), its input window ends at the origin, and its steps are time.

TensorFlow runs on the CPU here, so every network is tiny and seeded. The contract shared
with the other models is in ``test_models_contract.py``.
"""

from __future__ import annotations

import json
import math
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from factories import candles_from_close, sine_trend_candles

from forecasting.errors import (
    Cancelled,
    ConfigurationError,
    DataFormatError,
    ForecastingError,
    InsufficientHistory,
)
from forecasting.models import LSTM, NotFittedError
from forecasting.models import lstm as lstm_module
from forecasting.models.lstm import (
    calibration_windows_needed,
    conformal_quantile,
    conformal_rank,
    step_targets,
)

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
    np.testing.assert_array_equal(loaded.interval_quantiles_, tiny.interval_quantiles_)
    assert loaded.training_windows_.equals(tiny.training_windows_)
    assert loaded.calibration_windows_.equals(tiny.calibration_windows_)


def test_a_saved_model_loads_in_a_fresh_process(tmp_path: Path, tiny: LSTM) -> None:
    # A new process has not defined the fused layer yet: load must, before Keras reads
    # the file (safe mode on), and give the same forecast.
    import subprocess
    import sys

    path = tiny.save(tmp_path / "model.keras")
    script = (
        "import json, sys; from forecasting.models import LSTM; "
        "m = LSTM.load(sys.argv[1]); print(json.dumps(m.predict(5).mean.tolist()))"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        cwd=root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(json.loads(result.stdout), tiny.predict(5).mean, rtol=1e-12)


def test_a_file_that_is_not_a_network_is_refused_in_one_line(tmp_path: Path, tiny: LSTM) -> None:
    path = tiny.save(tmp_path / "model.keras")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Nothing", "config": {}}))
    with pytest.raises(DataFormatError, match="train and save the model again"):
        LSTM.load(path)


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


@pytest.mark.parametrize("after_epochs", [0, 1])
def test_should_stop_cancels_and_leaves_the_model_unfitted(
    candles: pd.DataFrame, after_epochs: int
) -> None:
    model = LSTM(**{**TINY, "epochs": 5, "patience": 10}).fit(candles)  # fitted before
    reported = []

    with pytest.raises(Cancelled) as caught:
        model.fit(
            candles,
            progress=lambda *a: reported.append(a),
            should_stop=lambda: len(reported) >= after_epochs,
        )
    assert isinstance(caught.value, ForecastingError)
    # Stopped at the first poll after the request: before any batch of the next epoch.
    assert len(reported) == after_epochs
    with pytest.raises(NotFittedError):
        model.predict(1)  # not the new scaler with the old weights


def test_cancel_is_polled_between_batches_within_an_epoch(candles: pd.DataFrame) -> None:
    from forecasting.models._graph_training import BATCHES_PER_CALL

    settings = {**TINY, "epochs": 1, "batch_size": 4}
    model = LSTM(**settings)
    polls = []
    model.fit(candles, should_stop=lambda: polls.append(1) and False)
    batches = -(-len(model.training_windows_) // 4)
    # One poll before every run of BATCHES_PER_CALL batches, so a cancel waits for at
    # most that many batches, not for the epoch's end.
    assert batches > BATCHES_PER_CALL
    assert len(polls) == -(-batches // BATCHES_PER_CALL)


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
        ({"interval": "mc_dropout", "mc_samples": 1}, "at least 2 mc_samples"),  # no spread
        ({"validation_fraction": 0.6}, "validation_fraction must be a number between 0 and 0.5"),
        ({"units": 0}, "units must be a whole number from 4 to 256"),  # no network
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


def test_the_validation_tail_is_the_last_usable_windows_and_never_trained_on(
    candles: pd.DataFrame, tiny: LSTM
) -> None:
    # Default features: every input is defined from row 33 (MACD 12:26:9), so the first
    # window of 10 ends at row 42; the last usable one ends 5 candles before the end.
    assert tiny.training_windows_[0] == candles.index[33 + 10 - 1]
    assert tiny.calibration_windows_[-1] == candles.index[-1 - 5]
    usable = len(candles) - 42 - 5  # 103 windows
    assert len(tiny.calibration_windows_) == round(usable * 0.15)  # 15
    # The last training window's last target is the close the tail's first window ends
    # at: the tail's targets (the closes after it) were never trained on. The 4 windows
    # in between, whose targets reach into the tail's, are left out.
    last_target = tiny.training_windows_[-1] + pd.Timedelta(days=5)
    assert last_target == tiny.calibration_windows_[0]
    assert len(tiny.training_windows_) == usable - 15 - 4


# --- the split-conformal rank ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "level", "rank"),
    [
        (9, 0.9, 9),  # ceil(10 x 0.9) = 9: the largest of nine
        (8, 0.9, 9),  # ceil(9 x 0.9) = ceil(8.1) = 9 > 8: no score is large enough
        (19, 0.9, 18),  # ceil(18) = 18, not the 19th ("higher" at 18/19 picked that)
        (10, 0.8, 9),  # ceil(8.8) = 9
        (19, 0.95, 19),  # ceil(19) = 19: the largest
        (24, 0.56, 14),  # 25 x 0.56 is 14.000000000000002 in floating point: still 14
        (0, 0.5, 1),  # no scores at all: unbounded
    ],
)
def test_conformal_rank_is_ceil_n_plus_one_times_level(n: int, level: float, rank: int) -> None:
    assert conformal_rank(n, level) == rank


def test_conformal_quantile_is_the_kth_smallest_score() -> None:
    rng = np.random.default_rng(0)
    nine = rng.permutation(np.arange(1.0, 10.0))  # 1..9 shuffled
    assert conformal_quantile(nine, 0.9) == 9.0  # the 9th smallest: the largest
    assert conformal_quantile(nine, 0.8) == 8.0  # ceil(10 x 0.8) = 8
    assert conformal_quantile(nine, 0.5) == 5.0  # ceil(5) = 5
    assert conformal_quantile(nine[:8], 0.9) == np.inf  # n = 8: unbounded
    nineteen = rng.permutation(np.arange(1.0, 20.0))
    assert conformal_quantile(nineteen, 0.9) == 18.0  # not the 19th
    # Per column (one per forecast step), each column ranked on its own.
    scores = np.column_stack([nineteen, 10 * nineteen[::-1], np.full(19, 2.5)])
    np.testing.assert_array_equal(conformal_quantile(scores, 0.9), [18.0, 180.0, 2.5])
    np.testing.assert_array_equal(conformal_quantile(scores[:8], 0.9), [np.inf] * 3)
    # An undefined score counts as the largest, never as small.
    assert conformal_quantile(np.r_[np.nan, np.arange(1.0, 9.0)], 0.9) == np.inf
    assert [calibration_windows_needed(level) for level in (0.8, 0.9, 0.95)] == [4, 9, 19]


@pytest.mark.parametrize(
    ("target", "lower", "upper"),
    [
        ("log_return", 0.0, np.inf),  # price = close x exp(-/+ inf)
        ("price", 0.0, np.inf),  # a price is never below zero, unbounded or not
    ],
)
def test_too_short_a_validation_tail_gives_an_unbounded_interval_and_says_so(
    tmp_path: Path, candles: pd.DataFrame, target: str, lower: float, upper: float
) -> None:
    # 103 usable windows x 0.05 = 5 in the tail: a 90 % interval needs 9.
    model = LSTM(**TINY, target=target, validation_fraction=0.05).fit(candles)
    assert len(model.calibration_windows_) == 5
    forecast = model.predict(5)
    assert np.isfinite(forecast.mean).all()
    assert (forecast.lower == lower).all()
    assert (forecast.upper == upper).all()
    (note,) = forecast.notes
    assert "unbounded" in note
    assert "holds 5 window(s), too few for a 90 % interval, which needs at least 9" in note
    assert forecast.to_records()[0]["upper"] is None
    # Saved as JSON null, loaded back as infinite.
    loaded = LSTM.load(model.save(tmp_path / "model.keras"))
    again = loaded.predict(5)
    np.testing.assert_array_equal(again.upper, forecast.upper)
    assert again.notes == forecast.notes


def _geometric_random_walk(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(0.02 * rng.standard_normal(n)))


@pytest.mark.slow
@pytest.mark.parametrize("interval", ["conformal", "mc_dropout"])
def test_intervals_cover_out_of_sample_targets_at_their_level(interval: str) -> None:
    # A geometric random walk (independent 2 % daily log returns): the validation tail
    # and the later origins are exchangeable, which is all split conformal assumes.
    # Fitted on 800 candles (a tail of 237 windows), then forecasting 2 steps from 400
    # later origins with the actual candles up to each. About 25 s per method.
    n_fit, n_origins, horizon, level = 800, 400, 2, 0.9
    close = _geometric_random_walk(n_fit + n_origins + horizon)
    candles = candles_from_close(close)
    model = LSTM(
        lookback=8,
        horizon=horizon,
        units=4,
        epochs=3,
        batch_size=64,
        features="",
        validation_fraction=0.3,
        interval=interval,
        mc_samples=30,
        level=level,
        seed=1,
    ).fit(candles.iloc[:n_fit])
    n_cal = len(model.calibration_windows_)
    hits = []
    for origin in range(n_fit, n_fit + n_origins):
        forecast = model.predict(horizon, history=candles.iloc[:origin])
        actual = close[origin : origin + horizon]
        hits.append((forecast.lower <= actual) & (actual <= forecast.upper))
    coverage = float(np.mean(hits))
    # Tolerance: three standard errors of two independent sources. The origins overlap
    # (step 2's target shares a return with the next origin's), so they count as
    # n_origins / horizon independent draws: binomial SE sqrt(p (1 - p) horizon / 400)
    # = 0.021. Given the tail, the coverage itself is random, Beta(k, n + 1 - k)
    # (Angelopoulos & Bates, on the size of the calibration set): SE
    # sqrt(p (1 - p) / (n + 2)) = 0.019. So 3 x 0.029 = 0.086: 6 % or 100 % fail.
    p = level
    se = math.sqrt(p * (1 - p) * horizon / n_origins + p * (1 - p) / (n_cal + 2))
    assert abs(coverage - level) <= 3 * se, f"{interval}: {coverage:.1%} covered"
    if interval == "mc_dropout":
        # The dropout spread alone is far too narrow: q is many of its sds, where a
        # calibrated normal spread would need 1.645.
        assert (model.interval_quantiles_ > 10).all()


# --- the window ends at the origin ----------------------------------------------------------


def _stablecoin(n_moving: int = 150, n_pegged: int = 30) -> pd.DataFrame:
    """A stablecoin drifting around 1.0, then pegged at exactly 1.0 (flat candles)."""
    rng = np.random.default_rng(5)
    moving = 1.0 + 0.003 * np.sin(np.arange(n_moving) / 3) + 0.002 * rng.standard_normal(n_moving)
    candles = candles_from_close(np.r_[moving, np.ones(n_pegged)])
    pegged = candles.index[-n_pegged:]
    candles.loc[pegged, ["open", "high", "low", "close"]] = 1.0
    candles.loc[pegged, "volume"] = 0.0
    return candles


def test_a_flat_stretch_at_the_end_forecasts_from_a_window_ending_at_the_origin() -> None:
    # Pegged at exactly 1.0 for 30 candles, the 20-candle Bollinger bands have zero
    # width over the last 11: %B is 0.5 there, not undefined, so the window ends at the
    # last candle (dropping undefined rows used to end it 11 candles earlier).
    candles = _stablecoin()
    features = "bollinger:20:2,rsi:14,log_return"
    model = LSTM(**TINY, features=features).fit(candles)
    # From the last candle (30 pegged: the last 11 have flat bands), and from inside
    # the peg (26 pegged: the last 7 have).
    for end, flat in ((len(candles), 10), (len(candles) - 4, 7)):
        history = candles.iloc[:end]
        window = model.input_window(history)
        assert list(window.index) == list(history.index[-10:])
        assert (window["bb_pctb_20_2"].iloc[-flat:] == 0.5).all()
        assert (window["bb_width_20_2"].iloc[-flat:] == 0.0).all()
        assert window.notna().all().all()
        forecast = model.predict(5, history=history)
        assert np.isfinite(forecast.mean).all()
        assert forecast.timestamps[0] == history.index[-1] + pd.Timedelta(days=1)
    # The pegged windows are trained on and calibrated on too, up to the last one with
    # all five targets.
    assert model.calibration_windows_[-1] == candles.index[-1 - 5]


def _plant_undefined(
    monkeypatch: pytest.MonkeyPatch, column: str, stamps: list[pd.Timestamp]
) -> None:
    """Make the LSTM's feature ``column`` undefined (NaN) at ``stamps``."""
    real = lstm_module.compute_features

    def planted(candles: pd.DataFrame, specs, **kwargs) -> pd.DataFrame:
        features = real(candles, specs, **kwargs)
        features.loc[features.index.isin(stamps), column] = np.nan
        return features

    monkeypatch.setattr(lstm_module, "compute_features", planted)


def test_an_undefined_input_is_never_skipped(
    monkeypatch: pytest.MonkeyPatch, candles: pd.DataFrame
) -> None:
    # %B planted undefined at candle 80: no window holding that candle (those ending at
    # 80 .. 89, lookback 10) is trained on, and the windows around them still end
    # where they say (their targets are the 5 closes after their own last candle).
    planted = 80
    _plant_undefined(monkeypatch, "bb_pctb_20_2", [candles.index[planted]])
    model = LSTM(**TINY, features="bollinger:20:2,log_return").fit(candles)
    used = model.training_windows_.append(model.calibration_windows_)
    assert not used.isin(candles.index[planted : planted + 10]).any()
    assert candles.index[planted - 1] in model.training_windows_
    assert candles.index[planted + 10] in model.training_windows_
    targets = step_targets(candles, 5, "1d")
    rows = candles.index.get_indexer(model.training_windows_)
    assert model.target_mean_ == pytest.approx(targets[rows].mean(), rel=1e-12)

    # A forecast from that candle, or with it inside the window, is refused: never
    # read from an earlier window.
    with pytest.raises(InsufficientHistory) as refused:
        model.predict(5, history=candles.iloc[: planted + 1])
    message = str(refused.value)
    assert "bb_pctb_20_2 is undefined at 2022-03-24 00:00 UTC (at the forecast origin)" in message
    assert "or leave bollinger:20:2 out of the features and fit again." in message
    with pytest.raises(InsufficientHistory, match=r"3 candle\(s\) before the forecast origin"):
        model.predict(5, history=candles.iloc[: planted + 4])
    # Ten candles on, the window is clear of it again.
    window = model.input_window(candles.iloc[: planted + 11])
    assert window.index[0] == candles.index[planted + 1]
    assert np.isfinite(model.predict(5, history=candles.iloc[: planted + 11]).mean).all()


# --- steps are time, not rows ---------------------------------------------------------------

STEP = {
    "1d": lambda k: pd.Timedelta(days=k),
    "4h": lambda k: pd.Timedelta(hours=4 * k),
    "1b": lambda k: pd.offsets.BDay(k),
}


def _hand_targets(candles: pd.DataFrame, horizon: int, timeframe: str) -> np.ndarray:
    """Per candle t: log c(t + k) - log c(t + k - 1) by time, NaN rows when one is missing."""
    log_close = dict(zip(candles.index, np.log(candles["close"]), strict=True))
    out = np.full((len(candles), horizon), np.nan)
    for row, t in enumerate(candles.index):
        times = [t + STEP[timeframe](k) for k in range(horizon + 1)]
        if all(time in log_close for time in times):
            out[row] = [
                log_close[times[k]] - log_close[times[k - 1]] for k in range(1, horizon + 1)
            ]
    return out


@pytest.mark.parametrize(
    ("kind", "timeframe", "calendar"),
    [
        ("1d", "1d", "24/7"),  # crypto daily
        ("4h", "4h", "24/7"),  # intraday
        ("1b", "1d", "business"),  # stock daily: a weekend is no gap, missing weekdays are
    ],
)
def test_no_training_target_spans_a_gap(kind: str, timeframe: str, calendar: str) -> None:
    full = sine_trend_candles(160, kind, noise=0.01)
    missing = full.index[100:103]  # three candles lost (an outage, a holiday)
    candles = full.drop(missing)
    targets = step_targets(candles, 5, timeframe, calendar)
    np.testing.assert_array_equal(targets, _hand_targets(candles, 5, kind))
    # The 5 candles before the gap and the last 5 have a target candle missing.
    undefined = np.flatnonzero(np.isnan(targets).any(axis=1))
    np.testing.assert_array_equal(undefined, [*range(95, 100), *range(152, 157)])
    # (By rows, candle 99's first target would have been c(103) / c(99), across the gap.)

    model = LSTM(**TINY, features="").fit(candles)
    assert (model.timeframe_, model.calendar_) == (timeframe, calendar)
    used = model.training_windows_.append(model.calibration_windows_)
    assert not used.isin(candles.index[95:100]).any()
    for end in used:  # every target candle of every window used is in the data
        assert all(end + STEP[kind](k) in candles.index for k in range(1, 6))
    rows = candles.index.get_indexer(model.training_windows_)
    hand = _hand_targets(candles, 5, kind)[rows]
    assert model.target_mean_ == pytest.approx(hand.mean(), rel=1e-12)
    assert model.target_std_ == pytest.approx(hand.std(), rel=1e-12)


def test_price_targets_are_the_closes_k_timeframes_later() -> None:
    candles = sine_trend_candles(40, noise=0.01).drop(pd.Timestamp("2022-01-20", tz="UTC"))
    targets = step_targets(candles, 2, "1d", target="price")
    close = candles["close"]
    day = pd.Timedelta(days=1)
    for row, t in enumerate(candles.index):
        if t + day in close.index and t + 2 * day in close.index:
            assert list(targets[row]) == [close[t + day], close[t + 2 * day]]
        else:
            assert np.isnan(targets[row]).all()


# --- closes that never change ---------------------------------------------------------------

FIELD = Path(__file__).resolve().parents[1].parent / "shared" / "field-cases"


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any network is built or fetched (none is trained on flat closes)."""

    def refuse(spec: tuple) -> None:
        raise AssertionError("a network was used for closes that never change")

    monkeypatch.setattr(lstm_module._POOL, "get", refuse)


@pytest.mark.parametrize(
    ("target", "interval", "features"),
    [
        ("log_return", "conformal", "rsi:14,macd:12:26:9,log_return"),
        ("price", "conformal", ""),
        ("log_return", "mc_dropout", "bollinger:20:2,volume_change"),
    ],
)
def test_flat_closes_forecast_no_change_with_a_note_and_an_unbounded_interval(
    monkeypatch: pytest.MonkeyPatch, target: str, interval: str, features: str
) -> None:
    # A stablecoin pegged at exactly 1.0: every target is 0 (or 1.0), their std is 0.
    candles = candles_from_close(np.ones(120))
    _no_network(monkeypatch)
    model = LSTM(**TINY, target=target, interval=interval, features=features)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert model.fit(candles) is model
        forecast = model.predict(5)
        shorter = model.predict(3)
    assert (forecast.mean == 1.0).all()  # exactly the last close, every step
    assert (forecast.lower == 0.0).all()
    assert (forecast.upper == np.inf).all()  # no zero-width claim of certainty
    assert forecast.level == 0.9
    (note,) = forecast.notes
    assert note.startswith(
        "The training closes never change (every close is 1): the LSTM forecasts no change "
        "(the last close)"
    )
    assert "Its interval is unbounded" in note
    assert "\n" not in note
    assert shorter.notes == (note,)
    np.testing.assert_array_equal(shorter.mean, [1.0, 1.0, 1.0])
    assert model.no_change_ == note
    assert model.epochs_trained_ == 0
    assert model.loss_history_ == {}
    assert not hasattr(model, "weights_")
    assert np.isinf(model.interval_quantiles_).all()
    with pytest.raises(ConfigurationError, match="trained for 5 steps ahead; asked for 6"):
        model.predict(6)


def test_flat_closes_within_rounding_noise_are_flat(monkeypatch: pytest.MonkeyPatch) -> None:
    # Closes one float64 step apart: their spread is rounding noise, not a move;
    # standardising by it would blow the noise up to unit size.
    close = np.where(np.arange(120) % 3 == 0, np.nextafter(1.0, 2.0), 1.0)
    candles = candles_from_close(close)
    _no_network(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        forecast = LSTM(**TINY).fit(candles).predict(5)
    assert (forecast.mean == close[-1]).all()
    assert forecast.notes[0].startswith("The training closes never change")


def test_a_flat_fit_forecasts_no_change_from_later_candles_refits_and_saves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    moved = np.r_[np.ones(120), 1.0 + 0.001 * rng.standard_normal(10)]
    candles = candles_from_close(moved)
    _no_network(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model = LSTM(**TINY).fit(candles.iloc[:120])
        # Conditioning on new candles: no change from the last one given, not from the fit's.
        for end in (125, 130):
            history = candles.iloc[:end]
            assert model.updated(history) is model
            forecast = model.predict(5, history=history)
            assert (forecast.mean == moved[end - 1]).all()
            assert forecast.timestamps[0] == history.index[-1] + pd.Timedelta(days=1)
            assert (forecast.upper == np.inf).all()
            assert forecast.notes == (model.no_change_,)
        # A refit warm-started from it (the LSTM ignores warm starts) is flat too.
        refit = LSTM(**TINY).fit(candles.iloc[:120], warm_start=model)
        assert refit.no_change_ == model.no_change_
        np.testing.assert_array_equal(refit.predict(5).mean, np.ones(5))
    # Saved and loaded (the file holds an untrained network; the JSON says no change).
    monkeypatch.undo()
    loaded = LSTM.load(model.save(tmp_path / "flat.keras"))
    assert loaded.no_change_ == model.no_change_
    again = loaded.predict(5, history=candles)
    assert (again.mean == moved[-1]).all()
    assert again.notes == (model.no_change_,)


def test_closes_that_move_only_in_the_validation_tail_train_no_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Flat for 110 candles, then moving: every training window's targets are flat (the
    # tail's first window ends at candle 104), so there is still nothing to learn.
    close = np.r_[np.ones(110), 1.0 + 0.001 * np.arange(1, 11)]
    candles = candles_from_close(close)
    _no_network(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model = LSTM(**TINY).fit(candles)
        forecast = model.predict(5)
    assert (forecast.mean == close[-1]).all()
    assert (forecast.upper == np.inf).all()
    (note,) = forecast.notes
    assert note.startswith("The training windows' targets never change")
    assert len(model.training_windows_) > 0
    assert len(model.calibration_windows_) > 0


def test_a_nearly_flat_series_with_one_tiny_move_still_trains() -> None:
    # Pegged at 1.0, then 1.0001 from candle 60 on: the move is in the training targets.
    close = np.where(np.arange(120) < 60, 1.0, 1.0001)
    candles = candles_from_close(close)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model = LSTM(**TINY).fit(candles)
        forecast = model.predict(5)
    assert model.no_change_ is None
    assert model.epochs_trained_ > 0
    assert model.target_std_ > 0
    assert model.weights_
    assert np.isfinite(forecast.mean).all()
    assert (np.abs(forecast.mean - 1.0001) < 0.01).all()
    assert np.isfinite(forecast.lower).all()
    assert np.isfinite(forecast.upper).all()
    assert (forecast.upper > forecast.lower).all()
    assert forecast.notes == ()


def test_a_constant_input_is_centred_not_divided_by_its_zero_spread() -> None:
    # The closes move but the volume never does: volume_change is 0 throughout.
    candles = sine_trend_candles(150, noise=0.01)
    candles["volume"] = 1000.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model = LSTM(**TINY, features="volume_change,log_return").fit(candles)
        forecast = model.predict(5)
    column = model.input_columns_.index("volume_change")
    assert model.scale_std_[column] == 1.0
    assert model.no_change_ is None
    assert np.isfinite(forecast.mean).all()
    assert np.isfinite(forecast.upper).all()


def test_the_pegged_stablecoin_field_case_forecasts_its_peg() -> None:
    path = FIELD / "stablecoin_USDC-USDT_1d_flat.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared field cases sit beside the repository)")
    from forecasting.data import read_ohlcv_csv

    candles = read_ohlcv_csv(path).candles
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model = LSTM(**TINY).fit(candles.iloc[:100])  # the pegged stretch
        forecast = model.predict(5)
        later = model.predict(5, history=candles)
    assert (forecast.mean == 1.0).all()
    assert (forecast.upper == np.inf).all()
    assert forecast.notes[0].startswith("The training closes never change")
    assert (later.mean == candles["close"].iloc[-1]).all()


def test_a_zero_conformal_quantile_is_unbounded_not_zero_width(
    monkeypatch: pytest.MonkeyPatch, candles: pd.DataFrame
) -> None:
    # At least k of the tail's errors zero (a tail whose closes never changed, forecast
    # exactly): q = 0 would be a zero-width interval. It is unbounded, with the reason.
    monkeypatch.setattr(lstm_module, "conformal_quantile", lambda scores, level: np.zeros(5))
    model = LSTM(**TINY).fit(candles)
    forecast = model.predict(5)
    assert np.isinf(model.interval_quantiles_).all()
    assert (forecast.lower == 0.0).all()
    assert (forecast.upper == np.inf).all()
    (note,) = forecast.notes
    assert note.startswith("The interval is unbounded at some steps: at least 15 of the 15 ")
