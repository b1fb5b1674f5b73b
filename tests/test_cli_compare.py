"""``python -m forecasting compare`` as scripts run it: real subprocesses, from the project root.

The JSON metrics are checked against an independent recomputation from the
``--forecasts-out`` CSV and the data file; failures must print exactly one line on
stderr, never a traceback, and exit non-zero.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from factories import random_walk_candles
from independent import directional_pvalue

from forecasting.data import write_ohlcv_csv

ROOT = Path(__file__).resolve().parents[1]
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
HEADER = "fold,cutoff,origin,timestamp,model,y,yhat,lower,upper"
MODELS = "naive,drift,seasonal_naive,moving_average"
N = 200  # daily candles from 2022-01-03
SYMBOL = "BTC/USDT"


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forecasting", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return random_walk_candles(N, seed=21)


@pytest.fixture(scope="module")
def data_file(candles, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("compare") / "candles.csv"
    write_ohlcv_csv(candles, path)
    return path


# Flag sets for the JSON run: what the backtest is told, and the window used for MASE.
RUNS = {
    # expanding window, an origin every candle
    "expanding": (["--horizon", "3", "--folds", "2", "--test-size", "24"], None),
    # rolling 60-candle window, an origin every other candle, another seed
    "rolling": (
        ["--horizon", "4", "--folds", "3", "--test-size", "30"]
        + ["--window", "60", "--stride", "2", "--seed", "3"],
        60,
    ),
}


@pytest.fixture(scope="module", params=list(RUNS))
def json_run(request, data_file, tmp_path_factory):
    """The ``--json`` document, the ``--forecasts-out`` rows (as text) and the window."""
    flags, window = RUNS[request.param]
    out = tmp_path_factory.mktemp("forecasts") / "forecasts.csv"
    result = _run(
        "compare", "--data", str(data_file), "--models", MODELS, *flags,
        "--json", "--forecasts-out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress in a pipe
    return json.loads(result.stdout), out, window, flags


def _typed(rows: list[dict[str, str]], close: dict[str, float]) -> pd.DataFrame:
    """CSV rows as the typed columns the directional test reads."""
    return pd.DataFrame(
        {
            "origin": pd.to_datetime([r["origin"] for r in rows], utc=True),
            "timestamp": pd.to_datetime([r["timestamp"] for r in rows], utc=True),
            "step": [int(r["step"]) for r in rows],
            "y": [float(r["y"]) for r in rows],
            "yhat": [float(r["yhat"]) for r in rows],
            "y_origin": [close[r["origin"]] for r in rows],
        }
    )


def _nan_as_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _recompute(rows: list[dict[str, str]], candles: pd.DataFrame, window: int | None) -> dict:
    """Every metric of one model's CSV rows, with plain loops."""
    close = {stamp.strftime("%Y-%m-%dT%H:%M:%SZ"): c for stamp, c in candles["close"].items()}
    closes = candles["close"].tolist()
    position = {stamp: i for i, stamp in enumerate(close)}
    abs_errors, squared, ape, sape, scaled = [], [], [], [], []
    hits = calls = inside = 0
    widths = []
    for row in rows:
        y, yhat = float(row["y"]), float(row["yhat"])
        lower, upper = float(row["lower"]), float(row["upper"])
        error = y - yhat
        abs_errors.append(abs(error))
        squared.append(error**2)
        ape.append(abs(error) / abs(y))
        sape.append(2 * abs(error) / (abs(y) + abs(yhat)))
        end = position[row["cutoff"]]
        start = 0 if window is None else max(0, end + 1 - window)
        train = closes[start : end + 1]
        scale = sum(abs(train[i] - train[i - 1]) for i in range(1, len(train))) / (len(train) - 1)
        scaled.append(abs(error) / scale)
        last = close[row["origin"]]
        if yhat != last:
            calls += 1
            hits += (yhat > last) == (y > last) and y != last
        inside += lower <= y <= upper
        widths.append(upper - lower)
    n = len(rows)
    return {
        "mae": sum(abs_errors) / n,
        "rmse": math.sqrt(sum(squared) / n),
        "mape": 100 * sum(ape) / n,
        "smape": 100 * sum(sape) / n,
        "mase": sum(scaled) / n,
        "directional_accuracy": hits / calls if calls else None,
        "directional_pvalue": _nan_as_none(directional_pvalue(_typed(rows, close))),
        "coverage": inside / n,
        "width": sum(widths) / n,
        "n": n,
    }


def test_json_metrics_equal_a_recomputation_from_the_forecasts_csv(json_run, candles) -> None:
    document, out, window, _ = json_run
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))

    assert {"settings", "metrics", "by_horizon", "dm_tests"} <= set(document)
    assert list(document["metrics"]) == MODELS.split(",")
    for model, metrics in document["metrics"].items():
        expected = _recompute([r for r in rows if r["model"] == model], candles, window)
        for name, value in expected.items():
            if value is None:
                assert metrics[name] is None, (model, name)
            else:
                assert metrics[name] == pytest.approx(value, rel=1e-9), (model, name)
    # Naive calls no direction: null in JSON, never NaN (which is not JSON).
    assert document["metrics"]["naive"]["directional_accuracy"] is None


def test_json_verdict_per_model(json_run) -> None:
    document, out, _, _ = json_run
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))

    verdict = document["verdict"]
    # Every model but naive (which does not fail to beat itself); no LSTM, no LSTM vs Prophet.
    assert list(verdict) == ["drift", "seasonal_naive", "moving_average"]
    naive = {(r["origin"], r["step"]): float(r["y"]) - float(r["yhat"]) for r in rows
             if r["model"] == "naive"}  # fmt: skip
    for model, found in verdict.items():
        assert set(found) >= {"against", "loss", "ratio", "pvalue", "seeds", "holds_for", "reading"}
        assert found["against"] == "naive"
        assert found["loss"] == "absolute"
        assert found["seeds"] == 1  # a baseline's forecast does not depend on a seed
        assert found["holds_for"] == 1
        assert found["reading"] in ("better", "worse", "not different")
        assert 0 <= found["pvalue"] <= 1
        errors = {(r["origin"], r["step"]): float(r["y"]) - float(r["yhat"]) for r in rows
                  if r["model"] == model}  # fmt: skip
        ratio = sum(abs(e) for e in errors.values()) / sum(abs(naive[k]) for k in errors)
        assert found["ratio"] == pytest.approx(ratio, rel=1e-9)
        if found["reading"] != "not different":
            assert found["pvalue"] < 0.05
    assert document["pairs"]["scored"] == len(rows) // len(MODELS.split(","))
    assert document["pairs"]["missing_target"] == 0


def test_loss_squared_is_used_by_the_verdict_and_the_tests(data_file) -> None:
    flags = ["--models", "naive,drift", "--horizon", "2", "--folds", "2", "--test-size", "20"]
    result = _run("compare", "--data", str(data_file), *flags, "--loss", "squared", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["settings"]["loss"] == "squared"
    assert document["verdict"]["drift"]["loss"] == "squared"
    assert {row["loss"] for row in document["dm_tests"]} == {"squared"}
    rmse = {m: document["metrics"][m]["rmse"] for m in ("naive", "drift")}
    assert document["verdict"]["drift"]["ratio"] == pytest.approx(
        (rmse["drift"] / rmse["naive"]) ** 2, rel=1e-9
    )


def test_json_settings_by_horizon_and_dm_tests(json_run) -> None:
    document, _, window, flags = json_run
    given = dict(zip(flags[::2], flags[1::2], strict=True))
    horizon = int(given["--horizon"])

    backtest = document["settings"]["backtest"]
    assert backtest["horizon"] == horizon
    assert backtest["folds"] == int(given["--folds"])
    assert backtest["test_size"] == int(given["--test-size"])
    assert backtest["window"] == window
    assert backtest["stride"] == int(given.get("--stride", 3))  # every third candle by default
    assert document["settings"]["seed"] == int(given.get("--seed", 42))
    assert list(document["settings"]["models"]) == MODELS.split(",")
    assert document["data"]["source"] == "csv"
    assert document["data"]["file"] == "candles.csv"
    assert document["data"]["candles"] == N
    for steps in document["by_horizon"].values():
        assert list(steps) == [str(s) for s in range(1, horizon + 1)]
    pairs = {(t["step"], t["model"], t["against"]) for t in document["dm_tests"]}
    assert pairs == {
        (step, model, "naive")
        for step in range(1, horizon + 1)
        for model in ("drift", "seasonal_naive", "moving_average")
    }


def test_forecasts_csv_rows(json_run, candles) -> None:
    document, out, _, flags = json_run
    text = out.read_text()
    table = pd.read_csv(out)
    given = dict(zip(flags[::2], flags[1::2], strict=True))
    test_size, horizon = int(given["--test-size"]), int(given["--horizon"])

    assert text.splitlines()[0].split(",")[:9] == HEADER.split(",")
    for column in ("cutoff", "origin", "timestamp"):
        assert table[column].map(lambda s: bool(ISO_Z.match(s))).all(), column
    stamps = [s.strftime("%Y-%m-%dT%H:%M:%SZ") for s in candles.index]
    position = {s: i for i, s in enumerate(stamps)}
    close = candles["close"].tolist()
    # cutoff: the last training candle; the first fold's is the one before the test period.
    assert table.loc[table["fold"] == 1, "cutoff"].unique().tolist() == [stamps[N - test_size - 1]]
    for row in table.itertuples():
        cutoff, origin, target = (
            position[row.cutoff],
            position[row.origin],
            position[row.timestamp],
        )
        assert cutoff <= origin < target <= origin + horizon  # origin: the last candle seen
        assert row.y == close[target]  # y: the actual close at `timestamp`, every digit
    # Every fold's first origin is its cutoff: forecasts start from the training data's end.
    firsts = table.groupby("fold").agg(cutoff=("cutoff", "first"), origin=("origin", "min"))
    assert (firsts["cutoff"] == firsts["origin"]).all()
    # Every model forecast the same (origin, timestamp) pairs.
    pairs = table.groupby("model")[["origin", "timestamp"]].apply(
        lambda g: list(zip(g["origin"], g["timestamp"], strict=True))
    )
    assert all(p == pairs.iloc[0] for p in pairs)
    assert sum(m["n"] for m in document["metrics"].values()) == len(table)


def test_without_json_prints_a_csv_metrics_table(data_file, json_run) -> None:
    document, _, _, flags = json_run
    result = _run("compare", "--data", str(data_file), "--models", MODELS, *flags)

    assert result.returncode == 0, result.stderr
    table = pd.read_csv(io.StringIO(result.stdout), index_col="model")
    assert result.stdout.startswith("model,mae,rmse,mape,smape,mase,directional_accuracy,")
    assert list(table.index) == MODELS.split(",")
    for model, metrics in document["metrics"].items():
        for name, value in metrics.items():
            if value is None:
                assert math.isnan(table.loc[model, name])
            else:
                assert table.loc[model, name] == pytest.approx(value, rel=1e-15)


def test_compare_from_the_exchange(fake_binance, candles, data_file, tmp_path) -> None:
    fake_binance.set_candles(SYMBOL, "1d", candles)
    since = candles.index[0].strftime("%Y-%m-%dT%H:%M:%SZ")
    until = (candles.index[-1] + pd.Timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    flags = ["--models", MODELS, "--horizon", "3", "--folds", "2", "--test-size", "24", "--json"]

    result = _run(
        "compare", "--exchange", "binance", "--symbol", SYMBOL, "--timeframe", "1d",
        "--since", since, "--until", until,
        "--exchange-config", json.dumps(fake_binance.ccxt_config()),
        "--cache-dir", str(tmp_path / "cache"), *flags,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert fake_binance.kline_requests()  # the data really came from the server
    document = json.loads(result.stdout)
    assert {k: document["data"][k] for k in ("source", "exchange", "symbol", "timeframe")} == {
        "source": "exchange",
        "exchange": "binance",
        "symbol": SYMBOL,
        "timeframe": "1d",
    }
    assert document["data"]["candles"] == N
    # The same candles from a file give the same numbers.
    from_file = json.loads(_run("compare", "--data", str(data_file), *flags).stdout)
    assert document["metrics"] == from_file["metrics"]
    assert document["data"]["sha256"] == from_file["data"]["sha256"]


@pytest.mark.slow
def test_compare_lstm_and_prophet(data_file, tmp_path) -> None:
    settings = {"lstm": {"lookback": 10, "units": 8, "epochs": 2}}
    result = _run(
        "compare", "--data", str(data_file), "--models", "lstm,prophet",
        "--horizon", "2", "--folds", "2", "--test-size", "16", "--seed", "4", "--seeds", "2",
        "--settings", json.dumps(settings), "--json",
        "--forecasts-out", str(tmp_path / "f.csv"),
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    document = json.loads(result.stdout)
    assert list(document["metrics"]) == ["naive", "lstm", "prophet"]
    lstm = document["settings"]["models"]["lstm"]
    assert (lstm["units"], lstm["epochs"], lstm["seed"], lstm["horizon"]) == (8, 2, 4, 2)
    pairs = {(t["step"], t["model"], t["against"]) for t in document["dm_tests"]}
    assert pairs == {
        (step, *pair)
        for step in (1, 2)
        for pair in (("lstm", "naive"), ("prophet", "naive"), ("lstm", "prophet"))
    }
    for model in ("lstm", "prophet"):
        assert 0 <= document["metrics"][model]["coverage"] <= 1
        assert len(document["future"][model]) == 2
    # Two LSTM seeds (4 and 5): the verdict holds only if it holds for both.
    assert document["settings"]["seeds"] == [4, 5]
    verdict = document["verdict"]
    assert list(verdict) == ["lstm", "prophet", "lstm_vs_prophet"]
    assert verdict["lstm"]["seeds"] == 2
    assert [s["seed"] for s in verdict["lstm"]["per_seed"]] == [4, 5]
    assert verdict["prophet"]["seeds"] == 1  # Prophet's point forecast has no seed
    assert verdict["lstm_vs_prophet"]["against"] == "prophet"
    assert verdict["lstm_vs_prophet"]["seeds"] == 2
    readings = {s["reading"] for s in verdict["lstm"]["per_seed"]}
    if len(readings) > 1:
        assert verdict["lstm"]["reading"] == "not different"
    table = pd.read_csv(tmp_path / "f.csv")
    assert set(table["model"]) == {"naive", "lstm", "prophet"}


def _assert_one_line_failure(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for phrase in phrases:
        assert phrase in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        # a model the package does not have
        (["--models", "naive,arima"], "Unknown model 'arima'"),
        # --settings that is not JSON
        (["--settings", "{lstm: 1"], "--settings is not valid JSON"),
        # --settings whose entry for a model is not an object
        (["--settings", '{"drift": 5}'], "Settings for drift must be an object"),
        # a setting the model does not have
        (["--settings", '{"drift": {"speed": 2}}'], "speed"),
        # more folds than the test period can hold
        (["--folds", "30", "--test-size", "20"], "cannot hold 30 folds"),
        # a test period that leaves nothing to train on
        (["--test-size", "195"], "leaves 5 candles to train on"),
        # a rolling window of one candle
        (["--window", "1"], "window must be at least 2"),
        # no horizon
        (["--horizon", "0"], "--horizon: must be a whole number from 1 to 365, got 0"),
        # seeds that are not numbers
        (["--seeds", "many"], "--seeds is a count (3) or a list"),
        # no seed at all
        (["--seeds", "0"], "seeds must be between 1 and 20"),
        # a loss the tests do not know
        (["--loss", "hinge"], "invalid choice: 'hinge'"),
    ],
    ids=[
        "unknown-model",
        "settings-not-json",
        "settings-not-object",
        "unknown-setting",
        "too-many-folds",
        "test-period-too-long",
        "window-of-one",
        "horizon-0",
        "seeds-not-numbers",
        "seeds-zero",
        "unknown-loss",
    ],
)
def test_failures_print_one_line(data_file, args, phrase) -> None:
    base = ["--models", "naive,drift", "--horizon", "2", "--folds", "2", "--test-size", "20"]
    result = _run("compare", "--data", str(data_file), *base, *args)
    _assert_one_line_failure(result, phrase)


@pytest.mark.parametrize(
    ("args", "phrase", "code"),
    [
        # an exchange without a symbol (nothing is fetched)
        (["--exchange", "binance", "--timeframe", "1d"], "--exchange needs --symbol", 2),
        # an exchange without a timeframe
        (["--exchange", "binance", "--symbol", SYMBOL], "--exchange needs", 2),
        # exchange settings that are not JSON
        (
            ["--exchange", "binance", "--symbol", SYMBOL, "--timeframe", "1d"]
            + ["--exchange-config", "{oops"],
            "--exchange-config is not valid JSON",
            2,
        ),
        # a data file that does not exist
        (["--data", "/nonexistent/candles.csv"], "No such file", 1),
        # neither a file nor an exchange: a usage error
        (["--models", "naive"], "one of the arguments --data --exchange is required", 2),
        # both a file and an exchange
        (["--data", "x.csv", "--exchange", "binance"], "not allowed with argument", 2),
    ],
    ids=[
        "no-symbol",
        "no-timeframe",
        "exchange-config-not-json",
        "missing-file",
        "no-source",
        "two-sources",
    ],
)
def test_source_failures_print_one_line(args, phrase, code) -> None:
    result = _run("compare", *args)
    _assert_one_line_failure(result, phrase)
    assert result.returncode == code


def test_test_start_sets_the_test_period(candles, data_file, tmp_path) -> None:
    start = candles.index[-30]
    out = tmp_path / "forecasts.csv"
    result = _run(
        "compare", "--data", str(data_file), "--models", "naive", "--horizon", "1",
        "--folds", "2", "--test-start", start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--stride", "1", "--forecasts-out", str(out), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(out)
    assert rows["timestamp"].min() == start.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(rows) == 30
    assert json.loads(result.stdout)["settings"]["backtest"]["test_start"].startswith(
        start.strftime("%Y-%m-%d")
    )


def _strict_json(text: str) -> dict:
    """JSON as the standard reads it: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_prices_near_the_largest_float_still_print_valid_json(candles, monkeypatch) -> None:
    """Issue 13: ``compare --json`` on closes near 1e308 printed ``Infinity`` (the loaders
    now refuse such prices; the command line must print valid JSON whatever it gets)."""
    import contextlib
    import types

    import forecasting.data
    from forecasting.cli import main

    huge = candles.copy()
    prices = ["open", "high", "low", "close"]
    huge[prices] = huge[prices] / huge["close"].max() * 1e308
    loaded = types.SimpleNamespace(candles=huge, nonpositive=pd.DatetimeIndex([], tz="UTC"))
    monkeypatch.setattr(forecasting.data, "read_ohlcv_csv", lambda *args, **kwargs: loaded)
    out, err = io.StringIO(), io.StringIO()
    flags = ["--models", MODELS, "--horizon", "2", "--folds", "2", "--test-size", "20", "--json"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["compare", "--data", "huge.csv", *flags])

    assert code == 0, err.getvalue()
    document = _strict_json(out.getvalue())
    # The moving average's sum overflows: its forecasts and errors are null, and each null
    # has its reason in the notes and the undefined list.
    assert [row["mean"] for row in document["future"]["moving_average"]] == [None, None]
    assert document["metrics"]["moving_average"]["mae"] is None
    reason = "not finite: the prices are too large to compute with"
    assert document["undefined"]["moving_average"]["mae"] == reason
    assert any("MAE" in note and "too large to compute with" in note for note in document["notes"])
    assert any(
        note.startswith("moving_average") and "not a finite number at 2 of 2 steps" in note
        for note in document["notes"]
    )
    # What could be computed still is.
    assert document["metrics"]["naive"]["mae"] > 1e300
