"""`python -m forecasting features` and `forecast` as real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.data import read_ohlcv_csv, write_ohlcv_csv
from forecasting.features import compute_features, parse_features

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forecasting", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def candles_csv(tmp_path: Path) -> Path:
    """300 daily candles of a noisy sine with trend, as a CSV file."""
    index = pd.date_range("2023-01-01", periods=300, freq="D", tz="UTC", name="timestamp")
    rng = np.random.default_rng(3)
    t = np.arange(300)
    close = 100 + 0.05 * t + 5 * np.sin(2 * np.pi * t / 7) + rng.normal(0, 0.3, 300)
    open_ = np.r_[close[0], close[:-1]]
    frame = pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) + 0.5,
            "low": np.minimum(open_, close) - 0.5,
            "close": close,
            "volume": rng.uniform(10, 20, 300),
        },
        index=index,
    )
    path = tmp_path / "candles.csv"
    write_ohlcv_csv(frame, path)
    return path


def test_features_writes_candles_plus_default_features(candles_csv, tmp_path):
    out = tmp_path / "features.csv"
    result = run_cli("features", "--data", str(candles_csv), "--out", str(out))
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out)
    assert list(table.columns[:6]) == ["timestamp", "open", "high", "low", "close", "volume"]
    assert {
        "rsi_14",
        "macd_12_26_9",
        "macd_signal_12_26_9",
        "macd_hist_12_26_9",
        "log_return",
    } <= set(table.columns)
    assert not table.isna().any().any(), "warm-up rows are dropped, never filled"
    assert table["timestamp"].iloc[0].endswith("Z")
    # The same values the library computes, on the rows after the warm-up.
    candles = read_ohlcv_csv(candles_csv).candles
    expected = compute_features(candles, parse_features(None))
    assert len(table) == len(expected)
    np.testing.assert_allclose(table["rsi_14"], expected["rsi_14"], rtol=1e-12)


def test_features_with_a_list(candles_csv, tmp_path):
    out = tmp_path / "features.csv"
    result = run_cli(
        "features", "--data", str(candles_csv), "--features", "sma:10,atr:5", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert list(pd.read_csv(out).columns[6:]) == ["sma_ratio_10", "atr_ratio_5"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--features", "rsi:x"], "parameters must be numbers"),  # non-numeric parameter
        (["--features", "wavelet:3"], "Unknown feature"),  # unknown kind
    ],
)
def test_features_bad_list_is_one_line(candles_csv, tmp_path, args, message):
    result = run_cli("features", "--data", str(candles_csv), *args, "--out", str(tmp_path / "x"))
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "model",
    [
        "naive",  # last close
        "drift",  # last close plus average change
        "seasonal_naive",  # a week ago
        "moving_average",  # mean of the last 7
    ],
)
def test_forecast_json_contract(candles_csv, model):
    result = run_cli(
        "forecast", "--data", str(candles_csv), "--model", model, "--horizon", "4", "--json"
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    # The contract's keys, and the notes added beside them (none on clean data).
    assert set(document) == {"model", "horizon", "settings", "forecast", "notes"}
    assert document["notes"] == []
    assert document["model"] == model
    assert document["horizon"] == 4
    assert isinstance(document["settings"], dict)
    rows = document["forecast"]
    assert [row["timestamp"] for row in rows] == [
        "2023-10-28T00:00:00Z",
        "2023-10-29T00:00:00Z",
        "2023-10-30T00:00:00Z",
        "2023-10-31T00:00:00Z",
    ]
    for row in rows:
        assert set(row) == {"timestamp", "mean", "lower", "upper"}
        assert row["lower"] <= row["mean"] <= row["upper"]


def test_forecast_naive_is_the_last_close(candles_csv):
    result = run_cli(
        "forecast", "--data", str(candles_csv), "--model", "naive", "--horizon", "2", "--json"
    )
    last_close = read_ohlcv_csv(candles_csv).candles["close"].iloc[-1]
    means = [row["mean"] for row in json.loads(result.stdout)["forecast"]]
    assert means == [pytest.approx(last_close, rel=1e-15)] * 2


def test_forecast_csv_output(candles_csv):
    result = run_cli("forecast", "--data", str(candles_csv), "--model", "drift", "--horizon", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "timestamp,mean,lower,upper"
    assert len(lines) == 4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "settings"),
    [
        ("lstm", '{"epochs": 2, "units": 8, "lookback": 10}'),  # tiny network
        ("prophet", "{}"),  # defaults
    ],
)
def test_forecast_seeded_models_repeat_exactly(candles_csv, model, settings):
    args = ["forecast", "--data", str(candles_csv), "--model", model, "--horizon", "3"]
    runs = [run_cli(*args, "--seed", "7", "--settings", settings, "--json") for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    first, second = (json.loads(r.stdout) for r in runs)
    assert first["forecast"] == second["forecast"]
    assert first["settings"]["seed"] == 7
    assert first["settings"]["horizon"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "arima", "--horizon", "3"], "--model must be one of"),  # unknown model
        # a horizon outside its range, in one line with the range
        (["--model", "naive", "--horizon", "0"], "must be a whole number from 1 to 365, got 0"),
        (
            ["--model", "naive", "--horizon", "1234567890123456789012"],  # 22 digits
            "must be a whole number from 1 to 365, got 1234567890123456789012",
        ),
        # a model setting outside its declared range
        (["--model", "naive", "--horizon", "3", "--settings", '{"level": 1.5}'], "Naive level"),
        (["--model", "naive", "--horizon", "3", "--settings", "{oops"], "not valid JSON"),
        (["--model", "naive", "--horizon", "3", "--settings", '{"window": 3}'], "Naive"),  # bad key
        (["--model", "naive"], "--horizon"),  # missing flag
    ],
)
def test_forecast_failures_are_one_line(candles_csv, args, message):
    result = run_cli("forecast", "--data", str(candles_csv), *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_forecast_missing_file_is_one_line(tmp_path):
    result = run_cli(
        "forecast", "--data", str(tmp_path / "nope.csv"), "--model", "naive", "--horizon", "2"
    )
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1


def test_forecast_json_is_valid_json_when_a_forecast_overflows(monkeypatch, capsys) -> None:
    """Issue 13: prices near the largest float: the mean overflows; the JSON says null and
    why, never ``Infinity``."""
    import types

    import forecasting.data
    from forecasting.cli import main

    index = pd.date_range("2023-01-01", periods=30, freq="D", tz="UTC", name="timestamp")
    close = np.linspace(0.9e308, 1e308, 30)
    huge = pd.DataFrame(
        {"open": close, "high": close, "low": close, "close": close, "volume": 1.0}, index=index
    )
    loaded = types.SimpleNamespace(candles=huge, nonpositive=pd.DatetimeIndex([], tz="UTC"))
    monkeypatch.setattr(forecasting.data, "read_ohlcv_csv", lambda *args, **kwargs: loaded)

    code = main(["forecast", "--data", "huge.csv", "--model", "moving_average", "--horizon", "2",
                 "--json"])  # fmt: skip

    captured = capsys.readouterr()
    assert code == 0, captured.err

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    document = json.loads(captured.out, parse_constant=refuse)
    assert [row["mean"] for row in document["forecast"]] == [None, None]
    assert document["notes"] == [
        "The forecast is not a finite number at 2 of 2 steps: the prices are too large to "
        "compute with."
    ]
