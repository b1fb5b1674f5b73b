"""The mood features on the command line: `features`, `compare` and `ablate`, as real
subprocesses against local servers imitating alternative.me and Binance's futures."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.data import write_ohlcv_csv
from forecasting.data.mood import as_of, fear_greed_published, funding_published
from tests.factories import random_walk_candles

ROOT = Path(__file__).resolve().parents[1]
START = pd.Timestamp("2024-01-01", tz="UTC")


def run_cli(*args: str, env: dict[str, str], timeout: float = 300):
    import os

    return subprocess.run(
        [sys.executable, "-m", "forecasting", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )


@pytest.fixture
def mood_servers(fake_feargreed, fake_binance, tmp_path):
    """The index for 2023-12..2024-12, funding every 8 h, and BTC/USDT daily candles."""
    days = pd.date_range("2023-12-01", "2024-12-31", freq="D", tz="UTC")
    index = pd.Series(np.random.default_rng(2).integers(5, 95, len(days)), index=days)
    for day, value in index.items():
        fake_feargreed.set_value(day, int(value))
    times = pd.date_range("2023-12-01", "2024-12-31", freq="8h", tz="UTC")
    rates = pd.Series(np.round(np.random.default_rng(3).normal(1e-4, 2e-4, len(times)), 8), times)
    candles = random_walk_candles(200, seed=4)
    candles.index = pd.date_range(START, periods=200, freq="D", name="timestamp").as_unit("ms")
    fake_binance.set_candles("BTC/USDT", "1d", candles)
    fake_binance.set_funding("BTC/USDT:USDT", rates)
    csv = tmp_path / "btc.csv"
    write_ohlcv_csv(candles, csv)
    return {
        "index": index.astype("float64"),
        "rates": rates,
        "candles": candles,
        "csv": csv,
        "env": {"CFL_FEAR_GREED_URL": fake_feargreed.url},
        "config": json.dumps(fake_binance.futures_config()),
        "cache": str(tmp_path / "cache"),
    }


def test_features_from_an_exchange_with_both_mood_columns(mood_servers, tmp_path):
    out = tmp_path / "features.csv"
    result = run_cli(
        "features",
        "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1d",
        "--since", "2024-01-01", "--until", "2024-07-01",
        "--exchange-config", mood_servers["config"], "--cache-dir", mood_servers["cache"],
        "--features", "rsi:14,fear_greed,funding_rate", "--out", str(out),
        env=mood_servers["env"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out, index_col="timestamp")
    assert list(table.columns) == [
        "open", "high", "low", "close", "volume", "rsi_14", "fear_greed", "funding_rate"
    ]  # fmt: skip
    opens = pd.DatetimeIndex(pd.to_datetime(table.index, utc=True))
    expected_index = as_of(mood_servers["index"], opens, "1d", published_at=fear_greed_published)
    expected_rates = as_of(mood_servers["rates"], opens, "1d", published_at=funding_published)
    np.testing.assert_array_equal(table["fear_greed"].to_numpy(), expected_index.to_numpy())
    np.testing.assert_allclose(table["funding_rate"], expected_rates.to_numpy(), rtol=0, atol=0)


def test_features_of_a_file_take_funding_from_a_named_exchange(mood_servers, tmp_path):
    out = tmp_path / "features.csv"
    result = run_cli(
        "features", "--data", str(mood_servers["csv"]), "--features", "fear_greed,funding_rate",
        "--funding-exchange", "binance", "--funding-symbol", "BTC/USDT",
        "--funding-config", mood_servers["config"], "--cache-dir", mood_servers["cache"],
        "--out", str(out),
        env=mood_servers["env"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out)
    assert {"fear_greed", "funding_rate"} <= set(table.columns)
    assert len(table) == 200


def test_funding_of_a_file_without_an_exchange_is_a_usage_error(mood_servers, tmp_path):
    result = run_cli(
        "features", "--data", str(mood_servers["csv"]), "--features", "funding_rate",
        "--out", str(tmp_path / "x.csv"),
        env=mood_servers["env"],
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--funding-exchange" in result.stderr


def test_offline_index_fails_in_one_line_and_writes_nothing(mood_servers, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "x.csv"
    result = run_cli(
        "features", "--data", str(mood_servers["csv"]), "--features", "rsi:14,fear_greed",
        "--out", str(out),
        env={"CFL_FEAR_GREED_URL": f"http://127.0.0.1:{port}/fng/"},
    )  # fmt: skip
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: The fear_greed feature is unavailable: "), result.stderr
    assert not out.exists()
    # Without the mood feature, the same file works offline.
    result = run_cli(
        "features", "--data", str(mood_servers["csv"]), "--features", "rsi:14",
        "--out", str(out),
        env={"CFL_FEAR_GREED_URL": f"http://127.0.0.1:{port}/fng/"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_compare_feeds_the_index_to_prophet_and_ablate_answers(mood_servers, tmp_path):
    common = [
        "--data", str(mood_servers["csv"]), "--horizon", "3", "--folds", "2",
        "--test-size", "24", "--stride", "6", "--quiet", "--json",
    ]  # fmt: skip
    settings = json.dumps({"prophet": {"regressors": "log_return,fear_greed"}})
    compare = run_cli(
        "compare", *common, "--models", "naive,prophet", "--settings", settings,
        env=mood_servers["env"],
    )  # fmt: skip
    assert compare.returncode == 0, compare.stderr
    document = json.loads(compare.stdout)
    assert document["settings"]["models"]["prophet"]["regressors"] == "log_return,fear_greed"
    assert "prophet" in document["verdict"]

    ablate = run_cli(
        "ablate", *common, "--model", "prophet", "--add", "fear_greed",
        "--settings", json.dumps({"prophet": {"regressors": "log_return"}}),
        env=mood_servers["env"],
    )  # fmt: skip
    assert ablate.returncode == 0, ablate.stderr
    report = json.loads(ablate.stdout)
    assert report["variants"] == {"with": "prophet with", "without": "prophet without"}
    assert report["added"] == ["fear_greed"]
    verdict = report["verdict"]["with_vs_without"]
    assert verdict["against"] == "prophet without"
    assert verdict["reading"] in {"better", "worse", "not different"}
    assert set(report["metrics"]) == {"naive", "prophet with", "prophet without"}
    # The variant with the index is the comparison's Prophet: the same numbers.
    assert report["metrics"]["prophet with"]["mae"] == pytest.approx(
        document["metrics"]["prophet"]["mae"], rel=0, abs=0
    )
    assert "fear_greed" in report["data"]["columns"]


def test_forecast_joins_the_index_for_a_model_that_reads_it(mood_servers):
    result = run_cli(
        "forecast", "--data", str(mood_servers["csv"]), "--model", "prophet", "--horizon", "3",
        "--settings", json.dumps({"regressors": "log_return,fear_greed"}), "--json",
        env=mood_servers["env"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["settings"]["regressors"] == "log_return,fear_greed"
    assert len(document["forecast"]) == 3


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        # Settings not keyed by a model name are refused, not silently dropped.
        (["compare", "--models", "naive", "--settings", '{"window": 30}'], {}, 2,
         "keyed by model name"),
        (["ablate", "--model", "prophet", "--add", ","], {}, 1, "Name the features"),
        (["ablate", "--model", "prophet", "--add", "fear_greed", "--models", "naive"], {}, 2,
         "one --model"),
        (["features", "--features", "fear_greed", "--out", "OUT"],
         {"CFL_FEAR_GREED_URL": "notaurl"}, 1, "$CFL_FEAR_GREED_URL"),
        (["features", "--features", "funding_rate", "--funding-symbol", "BTC/USDT",
          "--out", "OUT"], {}, 2, "--funding-exchange"),
        (["features", "--features", "funding_rate", "--funding-exchange", "binance",
          "--funding-symbol", "BTC/USDT", "--funding-config", "{bad", "--out", "OUT"], {}, 2,
         "--funding-config is not valid JSON"),
    ],
)  # fmt: skip
def test_bad_mood_requests_are_one_line(mood_servers, tmp_path, args, env, code, message):
    args = [str(tmp_path / "out.csv") if a == "OUT" else a for a in args]
    result = run_cli(*args[:1], "--data", str(mood_servers["csv"]), *args[1:],
                     env={**mood_servers["env"], **env})  # fmt: skip
    assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
