"""The field cases of ../shared/field-cases that concern the numbers of an experiment.

Each asserts the right value (its README says what is right), not merely "no crash":
a pegged stablecoin's MASE is undefined with the reason and no warning, a crashing
token is never forecast below zero without a word, and placeholder candles with zero
prices are dropped, counted and never scored. Skipped when the folder is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from forecasting.data import read_ohlcv_csv
from forecasting.evaluation import BacktestSettings
from forecasting.experiment import ExperimentSettings, run_experiment

ROOT = Path(__file__).resolve().parents[1]
FIELD = Path(os.environ.get("CFL_FIELD_CASES", ROOT.parent / "shared" / "field-cases"))
BASELINES = ("naive", "drift", "seasonal_naive", "moving_average")
LAYOUT = BacktestSettings(horizon=3, folds=2, test_size=20)

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.drop:Warning")


def _case(name: str) -> Path:
    path = FIELD / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared field cases sit beside the repository)")
    return path


def test_a_pegged_stablecoin_has_an_undefined_mase_with_its_reason() -> None:
    candles = read_ohlcv_csv(_case("stablecoin_USDC-USDT_1d_flat.csv")).candles
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no divide-by-zero on the way
        result = run_experiment(candles, ExperimentSettings(models=BASELINES, backtest=LAYOUT))
    document = result.to_json()
    for model in ("naive", *BASELINES[1:]):
        assert document["metrics"][model]["mase"] is None
        reasons = document["undefined"][model]
        assert reasons["mase"] == "undefined: the training closes never change"
        assert document["metrics"][model]["mape"] is not None  # the closes are not zero
        # A fold whose training closes never moved has no spread to draw an interval
        # from: its intervals are unbounded, not zero-width, and the width says so.
        assert document["metrics"][model]["width"] is None
        assert reasons["width"].startswith("unbounded: ")
        assert reasons["interval_score"] == reasons["width"]
    assert (
        "MASE is undefined for naive, drift, seasonal_naive, moving_average: the training "
        "closes never change." in document["notes"]
    )
    unbounded = [n for n in document["notes"] if "The interval is unbounded" in n]
    assert unbounded
    assert unbounded[0].startswith("naive, drift, seasonal_naive, moving_average:")
    # Said once for all four models, not once per model.
    assert len(unbounded) == 1
    rows = result.backtest.forecasts
    first_fold = rows[rows["fold"] == 1]
    assert np.isinf(first_fold["upper"]).all()
    assert (first_fold["lower"] == 0).all()


def test_the_command_line_says_undefined_for_the_stablecoin_without_warnings() -> None:
    path = _case("stablecoin_USDC-USDT_1d_flat.csv")
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "forecasting", "compare",
         "--data", str(path), "--models", "naive,drift", "--horizon", "3", "--folds", "2",
         "--test-size", "20", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    document = json.loads(result.stdout)
    assert document["metrics"]["drift"]["mase"] is None
    assert document["undefined"]["drift"]["mase"].startswith("undefined: the training closes")


@pytest.mark.slow
def test_a_crashing_token_is_never_forecast_below_zero_without_a_word() -> None:
    candles = read_ohlcv_csv(_case("crashing_token_1d.csv")).candles
    settings = ExperimentSettings(
        models=("drift", "prophet"),
        model_settings={"prophet": {"log_transform": False}},
        backtest=BacktestSettings(horizon=14, folds=1, test_size=30),
    )
    result = run_experiment(candles, settings)
    rows = result.backtest.forecasts
    assert (rows[["yhat", "lower", "upper"]].to_numpy() >= 0).all()
    for forecast in result.future.values():
        assert (forecast.mean >= 0).all()
        assert (forecast.lower >= 0).all()
    floored = [note for note in result.notes if "below zero" in note]
    # Prophet on prices (not log prices) crosses zero on this token, and says so.
    assert any(note.startswith("prophet") and "floored at 0" in note for note in floored)


def test_placeholder_candles_with_zero_prices_are_dropped_counted_and_never_scored() -> None:
    data = read_ohlcv_csv(_case("token_with_zero_price_rows_1d.csv"))
    candles = data.candles
    assert len(data.nonpositive) == 2
    assert not candles.index.isin(data.nonpositive).any()
    result = run_experiment(candles, ExperimentSettings(models=BASELINES, backtest=LAYOUT))
    rows = result.backtest.forecasts
    assert (rows["y"] > 0).all()
    assert np.isfinite(rows["yhat"]).all()
    document = result.to_json()
    assert document["data"]["nonpositive"] == 2
    dropped_in_test = [t for t in data.nonpositive if t >= rows["origin"].min()]
    if dropped_in_test:
        assert document["pairs"]["missing_target"] > 0
    assert any("zero or negative prices were dropped" in note for note in document["notes"])


@pytest.mark.parametrize("command", ["forecast", "features"])
def test_every_command_says_when_rows_were_dropped_at_load(command, tmp_path) -> None:
    path = _case("token_with_zero_price_rows_1d.csv")
    args = {
        "forecast": ["--model", "naive", "--horizon", "3"],
        "features": ["--features", "rsi:14", "--out", str(tmp_path / "features.csv")],
    }[command]
    result = subprocess.run(
        [sys.executable, "-m", "forecasting", command, "--data", str(path), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(
        "note: 2 candles with zero or negative prices were dropped when the data were read "
        "(the first at 2024-04-10T00:00:00Z)"
    )
    assert "Traceback" not in result.stderr
    if command == "forecast":
        with_json = subprocess.run(
            [sys.executable, "-m", "forecasting", command, "--data", str(path), *args, "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        document = json.loads(with_json.stdout)
        assert document["notes"][0].startswith("2 candles with zero or negative prices")
