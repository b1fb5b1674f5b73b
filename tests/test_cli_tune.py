"""`python -m forecasting tune` as a real subprocess: the JSON contract and a resumed study."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from forecasting.data import write_ohlcv_csv
from tests.factories import random_walk_candles

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forecasting", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def candles_csv(tmp_path: Path) -> Path:
    candles = random_walk_candles(240, seed=6)
    candles.index = pd.date_range("2023-01-01", periods=240, freq="D", name="timestamp")
    path = tmp_path / "candles.csv"
    write_ohlcv_csv(candles.tz_localize("UTC") if candles.index.tz is None else candles, path)
    return path


FLAGS = ["--horizon", "3", "--folds", "2", "--test-size", "24", "--stride", "4", "--seed", "5"]


def test_tune_prints_each_folds_choice_and_the_verdicts(candles_csv, tmp_path):
    study = tmp_path / "study.journal"
    args = ["tune", "--data", str(candles_csv), "--model", "moving_average", *FLAGS,
            "--study", str(study), "--quiet", "--json"]  # fmt: skip
    first = run_cli(*args, "--trials", "3")
    assert first.returncode == 0, first.stderr
    document = json.loads(first.stdout)
    assert [fold["fold"] for fold in document["folds"]] == [1, 2]
    for fold in document["folds"]:
        assert set(fold) >= {"fold", "params", "inner_score", "outer_score"}
        assert 2 <= fold["params"]["window"] <= 60
    summary = document["summary"]
    assert summary["trials"] == 6
    assert set(summary["verdict"]) == {"tuned_vs_untuned", "tuned_vs_naive", "untuned_vs_naive"}
    assert summary["verdict"]["tuned_vs_naive"]["against"] == "naive"
    # The same call again finds its studies complete: the same choices, no new trial.
    again = json.loads(run_cli(*args, "--trials", "3").stdout)
    assert [f["params"] for f in again["folds"]] == [f["params"] for f in document["folds"]]
    assert [f["inner_score"] for f in again["folds"]] == [
        f["inner_score"] for f in document["folds"]
    ]
    assert study.is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "naive", "--models", "naive"], "one --model"),
        (["--model", "moving_average", "--trials", "0"], "--trials"),
        (["--model", "moving_average", "--timeout", "-1"], "--timeout"),
        (["--model", "naive"], "naive"),
    ],
)
def test_bad_tuning_requests_are_one_line(candles_csv, extra, message):
    result = run_cli("tune", "--data", str(candles_csv), *FLAGS, *extra, "--quiet")
    assert result.returncode in (1, 2)
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr


@pytest.mark.parametrize("name", ["x.journal", "x.db"])
def test_a_damaged_study_file_is_one_line(candles_csv, tmp_path, name):
    study = tmp_path / name
    study.write_text("garbage\n")
    result = run_cli("tune", "--data", str(candles_csv), *FLAGS, "--model", "moving_average",
                     "--trials", "1", "--study", str(study), "--quiet")  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "not an Optuna study file" in result.stderr


def test_a_time_limit_that_cuts_the_search_says_so(candles_csv):
    result = run_cli("tune", "--data", str(candles_csv), *FLAGS, "--model", "moving_average",
                     "--trials", "500", "--timeout", "0.01", "--quiet", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    ran = [fold["trials"] for fold in document["folds"]]
    assert all(1 <= n < 500 for n in ran)
    assert any("time limit ended the search before 500 trials" in n for n in document["notes"])
    assert document["summary"]["notes"] == [n for n in document["notes"] if "time limit" in n]
    for fold in document["folds"]:
        assert fold["relative_gap"] == pytest.approx(
            fold["outer_relative"] - fold["inner_relative"], rel=1e-12
        )
