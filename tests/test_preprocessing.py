"""Noise reduction of model inputs: causal, and it only touches outliers (Hampel)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting.errors import ConfigurationError
from forecasting.preprocessing import denoise, hampel, rolling_median


def noisy_frame(n: int = 300, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 1, (n, 2))
    spikes = [row for row in (50, 120, 200) if row < n]
    values[spikes, 0] = [25.0, -30.0, 40.0][: len(spikes)]  # planted spikes
    index = pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC", name="timestamp")
    return pd.DataFrame(values, index=index, columns=["a", "b"])


@pytest.mark.parametrize(
    ("method", "window"),
    [
        ("hampel", 7),  # the default filter
        ("hampel", 21),  # a wider window
        ("median", 5),  # trailing median
    ],
)
def test_filters_are_causal(method, window):
    frame = noisy_frame()
    full = denoise(frame, method, window)
    for length in (1, 2, window - 1, window, window + 1, 51, 121, 299):
        prefix = denoise(frame.iloc[:length], method, window)
        pd.testing.assert_frame_equal(prefix, full.iloc[:length])


def test_hampel_replaces_spikes_only():
    frame = noisy_frame()
    filtered = hampel(frame, 7)
    trailing_median = frame.rolling(7, min_periods=1).median()
    for row in (50, 120, 200):
        assert filtered["a"].iloc[row] == trailing_median["a"].iloc[row]
    changed = (filtered != frame).sum().sum()
    assert 3 <= changed <= 0.1 * frame.size, "ordinary noise is kept"
    assert filtered["a"].abs().max() < 10


def test_rolling_median_is_the_trailing_median():
    frame = noisy_frame(20)
    expected = [np.median(frame["b"].to_numpy()[max(0, i - 4) : i + 1]) for i in range(20)]
    np.testing.assert_allclose(rolling_median(frame, 5)["b"], expected)


def test_none_is_identity_and_input_untouched():
    frame = noisy_frame()
    before = frame.copy()
    assert denoise(frame, "none", 7) is frame
    denoise(frame, "hampel", 7)
    pd.testing.assert_frame_equal(frame, before)


@pytest.mark.parametrize(
    ("method", "window", "message"),
    [
        ("wavelet", 7, "must be one of"),  # unknown method
        ("hampel", 1, "at least 2"),  # window too short
    ],
)
def test_bad_settings(method, window, message):
    with pytest.raises(ConfigurationError, match=message):
        denoise(noisy_frame(), method, window)


def test_lstm_denoised_inputs_keep_real_targets():
    from forecasting.models import LSTM

    frame = noisy_frame(200)
    candles = pd.DataFrame(
        {
            "open": 100 + frame["b"].cumsum(),
            "close": 100 + frame["b"].cumsum(),
            "volume": 1.0,
        }
    )
    candles["high"] = candles[["open", "close"]].max(axis=1) + 0.1
    candles["low"] = candles[["open", "close"]].min(axis=1) - 0.1
    plain = LSTM(features="", denoise="none")._inputs(candles)
    filtered = LSTM(features="", denoise="median", denoise_window=5)._inputs(candles)
    assert not plain.equals(filtered)
    close = candles["close"].to_numpy()
    model = LSTM(features="", denoise="median", denoise_window=5, horizon=2)
    np.testing.assert_allclose(model._targets(close)[1, 0], np.log(close[2] / close[1]))
