"""`python -m forecasting sweep` as a real subprocess: the JSON contract, the folder it
writes, and Ray's results equal to the single-process ones (re-run under the engines
venv when the app's Python has no Ray)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from forecasting.data import write_ohlcv_csv
from forecasting.sweeps import RESULTS_FILE, SWEEP_FILE, ray_python, read_sweep
from tests.factories import random_walk_candles

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--models", "naive,drift", "--horizon", "3", "--folds", "2", "--test-size", "24",
         "--quiet", "--json"]  # fmt: skip


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forecasting", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def two_files(tmp_path: Path) -> str:
    paths = []
    for name, seed in (("a.csv", 1), ("b.csv", 2)):
        candles = random_walk_candles(200, seed=seed)
        candles.index = pd.date_range("2023-01-01", periods=200, freq="D", name="timestamp")
        candles.index = candles.index.tz_localize("UTC")
        write_ohlcv_csv(candles, tmp_path / name)
        paths.append(str(tmp_path / name))
    return ",".join(paths)


def test_a_local_sweep_prints_each_series_compare_json(two_files, tmp_path):
    out = tmp_path / "sweep"
    result = run_cli("sweep", "--data", two_files, *FLAGS, "--local", "--out", str(out))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert sorted(document) == ["a.csv", "b.csv"]
    compare = run_cli("compare", "--data", two_files.split(",")[0], *FLAGS)
    assert document["a.csv"]["metrics"] == json.loads(compare.stdout)["metrics"]
    assert (out / RESULTS_FILE).is_file()
    assert json.loads((out / SWEEP_FILE).read_text()) == document
    opened = read_sweep(out)
    assert sorted(opened.bundles) == ["a.csv", "b.csv"]


def test_a_sweep_on_ray_equals_the_local_one(two_files, tmp_path):
    if ray_python() is None:
        pytest.skip("no Python with Ray here (make engines installs it in .venv-engines)")
    ray = run_cli("sweep", "--data", two_files, *FLAGS, "--workers", "2",
                  "--out", str(tmp_path / "ray"))  # fmt: skip
    assert ray.returncode == 0, ray.stderr
    local = run_cli("sweep", "--data", two_files, *FLAGS, "--local",
                    "--out", str(tmp_path / "local"))  # fmt: skip
    assert json.loads(ray.stdout) == json.loads(local.stdout)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--exchange", "binance", "--symbols", "BTC/USDT"], "--timeframes"),
        (["--data", "x.csv", "--workers", "0"], "--workers"),
        (["--data", "x.csv", "--settings", '{"epochs": 1}'], "keyed by model name"),
    ],
)
def test_bad_sweep_requests_are_one_line(tmp_path, extra, message):
    result = run_cli("sweep", *extra, "--local", "--out", str(tmp_path / "o"), "--quiet")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr


def test_a_sweep_where_every_series_fails_exits_1(tmp_path):
    result = run_cli("sweep", "--data", str(tmp_path / "nothing.csv"), *FLAGS, "--local",
                     "--out", str(tmp_path / "o"))  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: no series of the sweep")
    assert "error" in json.loads(result.stdout)["nothing.csv"]


def test_contradictory_or_bad_ray_flags_are_one_line(two_files, tmp_path):
    local = run_cli("sweep", "--data", two_files, *FLAGS, "--local", "--address", "auto",
                    "--out", str(tmp_path / "o"))  # fmt: skip
    assert local.returncode == 2
    assert "--local runs without Ray" in local.stderr
    if ray_python() is None:
        return
    bogus = run_cli("sweep", "--data", two_files, *FLAGS, "--address", "bogus",
                    "--out", str(tmp_path / "o"))  # fmt: skip
    assert bogus.returncode == 1, bogus.stderr
    assert "Could not connect to the Ray cluster at bogus" in bogus.stderr.strip().splitlines()[-1]


def test_the_engines_rerun_keeps_the_callers_folder(two_files, tmp_path):
    if ray_python() is None:
        pytest.skip("no Python with Ray here (make engines installs it in .venv-engines)")
    import os

    first = two_files.split(",")[0]
    result = subprocess.run(
        [sys.executable, "-m", "forecasting", "sweep", "--data", Path(first).name, *FLAGS,
         "--workers", "1", "--out", "relative-out"],
        cwd=Path(first).parent, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (Path(first).parent / "relative-out" / RESULTS_FILE).is_file()
    assert "a.csv" in json.loads(result.stdout)


def test_tuned_sweeps_on_ray_share_one_sqlite_study(two_files, tmp_path):
    if ray_python() is None:
        pytest.skip("no Python with Ray here (make engines installs it in .venv-engines)")
    study = tmp_path / "study.db"
    result = run_cli("sweep", "--data", two_files, "--models", "naive,moving_average",
                     "--horizon", "3", "--folds", "2", "--test-size", "24", "--tune",
                     "--trials", "2", "--workers", "2", "--study", str(study),
                     "--out", str(tmp_path / "o"), "--quiet", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    for label in ("a.csv", "b.csv"):
        assert "error" not in document[label], document[label]
        assert document[label]["tuning"]["moving_average"]["summary"]["trials"] == 4
