"""Sweeps (forecasting/sweeps.py): one experiment per series, on Ray or one after another.

The library is checked here in the app's venv with ``local=True`` (no Ray). The Ray runs
need the engines venv (``make engines`` installs Ray there, never in the app's venv): one
subprocess under its Python runs the same sweep of two small real series (the last 300
closed daily candles of BTC/USDT and ETH/USDT from ``../shared/data``) single-process and
on a local Ray of 2 workers, plus a missing file, and reruns Ray's bundles; the tests read
what it wrote. Without the engines venv, Ray or the shared data they skip with that reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from factories import random_walk_candles
from fake_exchange import SHARED_DATA

from forecasting import cli
from forecasting.bundle import read_bundle_data, read_bundle_experiment
from forecasting.data import read_ohlcv_csv, write_ohlcv_csv
from forecasting.errors import Cancelled, ConfigurationError, DataFormatError
from forecasting.evaluation import BacktestSettings
from forecasting.experiment import ExperimentSettings, run_experiment
from forecasting.nautilus import engines_python
from forecasting.sweeps import (
    RESULTS_FILE,
    SWEEP_FILE,
    TABLE_COLUMNS,
    exchange_series,
    file_series,
    ray_importable,
    ray_python,
    read_sweep,
    run_sweep,
    safe_name,
)
from forecasting.tuning import tune

ROOT = Path(__file__).resolve().parents[1]
# Two folds of 30 candles, an origin every 3: small enough to run in seconds per series.
LAYOUT = BacktestSettings(horizon=3, folds=2, test_size=30, stride=3)
BASELINES = ExperimentSettings(models=("naive", "drift"), backtest=LAYOUT, seed=7)
# The same flags for compare, whose --json the sweep's documents must equal.
COMPARE_FLAGS = ["--models", "naive,drift", "--horizon", "3", "--folds", "2",
                 "--test-size", "30", "--stride", "3", "--seed", "7"]  # fmt: skip


def _files(folder: Path, count: int = 2, n: int = 200) -> list[Path]:
    """``count`` CSV files of ``n`` daily random-walk candles, each of its own seed."""
    paths = []
    for k in range(count):
        path = folder / f"walk_{k}.csv"
        write_ohlcv_csv(random_walk_candles(n, "1d", seed=k, step=5.0), path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- series


def test_file_series_are_labelled_by_file_name(tmp_path) -> None:
    series = file_series(f"{tmp_path}/a/BTC.csv, {tmp_path}/ETH.csv")
    assert [s.label for s in series] == ["BTC.csv", "ETH.csv"]
    assert [s.file for s in series] == [f"{tmp_path}/a/BTC.csv", f"{tmp_path}/ETH.csv"]


def test_file_series_of_one_name_in_two_folders_are_labelled_by_path() -> None:
    series = file_series(["a/x.csv", "b/x.csv", "y.csv"])
    assert [s.label for s in series] == ["a/x.csv", "b/x.csv", "y.csv"]


def test_exchange_series_are_every_symbol_with_every_timeframe() -> None:
    series = exchange_series("binance", "BTC/USDT,ETH/USDT", ["1h", "1d"], since="2024-01-01")
    assert [s.label for s in series] == [
        "binance BTC/USDT 1h",
        "binance BTC/USDT 1d",
        "binance ETH/USDT 1h",
        "binance ETH/USDT 1d",
    ]
    assert {(s.exchange, s.since) for s in series} == {("binance", "2024-01-01")}


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: file_series(" , "), "names no file"),  # nothing between the commas
        (lambda: file_series("a.csv,a.csv"), "named twice"),  # one file twice
        (lambda: exchange_series("binance", "", "1d"), "--symbols"),  # no symbol
        (lambda: exchange_series("binance", "BTC/USDT", []), "--timeframes"),  # no timeframe
        (lambda: exchange_series(" ", "BTC/USDT", "1d"), "--exchange"),  # no exchange
    ],
)
def test_bad_series_are_refused_in_one_line(make, match) -> None:
    with pytest.raises(ConfigurationError, match=match):
        make()


@pytest.mark.parametrize(
    ("label", "name"),
    [
        ("binance BTC/USDT 1d", "binance_BTC_USDT_1d"),  # exchange, symbol, timeframe
        ("binance_BTC-USDT_1d.csv", "binance_BTC-USDT_1d"),  # a file: its ending dropped
        ("../../etc/passwd", "etc_passwd"),  # never a path out of the folder
        ("///", "series"),  # nothing usable left
    ],
)
def test_safe_name(label, name) -> None:
    assert safe_name(label) == name


# --------------------------------------------------------------------------- local sweeps


def test_local_sweep_documents_are_what_compare_json_prints(tmp_path, capsys) -> None:
    paths = _files(tmp_path)
    result = run_sweep(
        file_series([str(p) for p in paths]), BASELINES, tmp_path / "out", local=True
    )
    for path in paths:
        assert cli.main(["compare", "--data", str(path), *COMPARE_FLAGS, "--json", "--quiet"]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert result.documents[path.name] == printed
    assert result.to_json() == json.loads((tmp_path / "out" / SWEEP_FILE).read_text())
    assert list(result.to_json()) == [p.name for p in paths]


def test_local_sweep_table_has_a_row_per_series_and_model(tmp_path) -> None:
    paths = _files(tmp_path)
    result = run_sweep(
        file_series([str(p) for p in paths]), BASELINES, tmp_path / "out", local=True
    )
    table = result.table
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert list(zip(table["series"], table["model"], strict=True)) == [
        ("walk_0.csv", "naive"), ("walk_0.csv", "drift"),
        ("walk_1.csv", "naive"), ("walk_1.csv", "drift"),
    ]  # fmt: skip
    for row in table.itertuples():
        document = result.documents[row.series]
        assert row.mae == document["metrics"][row.model]["mae"]
        assert row.candles == document["data"]["candles"] == 200
        assert row.bundle == f"{Path(row.series).stem}.zip"
        if row.model == "naive":
            assert row.reading == "reference"
            assert pd.isna(row.ratio)
        else:
            verdict = document["verdict"][row.model]
            assert (row.reading, row.ratio, row.pvalue) == (
                verdict["reading"],
                verdict["ratio"],
                verdict["pvalue"],
            )


def test_a_failing_series_is_reported_and_the_others_finish(tmp_path) -> None:
    (good,) = _files(tmp_path, count=1)
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,open\n2024-01-01,1\n")
    series = file_series([str(tmp_path / "missing.csv"), str(bad), str(good)])
    result = run_sweep(series, BASELINES, tmp_path / "out", local=True)
    assert set(result.documents) == {"walk_0.csv"}
    assert set(result.errors) == {"missing.csv", "bad.csv"}
    assert "missing.csv was not found" in result.errors["missing.csv"]
    assert result.errors["bad.csv"]
    assert "\n" not in result.errors["bad.csv"]
    failed = result.table[result.table["status"] == "failed"]
    assert list(failed["series"]) == ["missing.csv", "bad.csv"]
    assert list(failed["error"]) == [result.errors["missing.csv"], result.errors["bad.csv"]]
    assert result.to_json()["missing.csv"] == {"error": result.errors["missing.csv"]}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        RESULTS_FILE,
        SWEEP_FILE,
        "walk_0.zip",
    ]


def test_a_series_that_fails_now_loses_the_bundle_of_an_earlier_sweep(tmp_path) -> None:
    (good,) = _files(tmp_path, count=1)
    run_sweep(file_series([str(good)]), BASELINES, tmp_path / "out", local=True)
    assert (tmp_path / "out" / "walk_0.zip").is_file()
    good.write_text("timestamp,open\n2024-01-01,1\n")
    result = run_sweep(file_series([str(good)]), BASELINES, tmp_path / "out", local=True)
    assert list(result.errors) == ["walk_0.csv"]
    assert not (tmp_path / "out" / "walk_0.zip").exists()
    assert read_sweep(tmp_path / "out").bundles == {}


def test_read_sweep_reads_back_the_table_and_the_bundles(tmp_path) -> None:
    (good,) = _files(tmp_path, count=1)
    series = file_series([str(good), str(tmp_path / "missing.csv")])
    written = run_sweep(series, BASELINES, tmp_path / "out", local=True)
    read = read_sweep(tmp_path / "out")
    assert read.labels == written.labels == ["walk_0.csv", "missing.csv"]
    assert read.errors == written.errors
    assert read.documents == written.documents
    assert read.bundles == {"walk_0.csv": tmp_path / "out" / "walk_0.zip"}
    pd.testing.assert_frame_equal(
        read.table.drop(columns=["seconds"]),
        written.table.drop(columns=["seconds"]),
        check_dtype=False,
        check_exact=False,
        rtol=1e-15,
    )
    with pytest.raises(ConfigurationError, match="missing.csv"):
        read.bundle_bytes("missing.csv")


def test_a_bundle_of_a_sweep_reruns_to_the_same_metrics(tmp_path) -> None:
    (good,) = _files(tmp_path, count=1)
    result = run_sweep(file_series([str(good)]), BASELINES, tmp_path / "out", local=True)
    raw = read_sweep(tmp_path / "out").bundle_bytes("walk_0.csv")
    data = read_bundle_data(raw)
    rerun = run_experiment(data.candles, read_bundle_experiment(raw), source=data.source)
    assert rerun.to_json()["metrics"] == result.documents["walk_0.csv"]["metrics"]
    assert data.source["file"] == "walk_0.csv"


def test_a_tuned_sweep_carries_what_tune_finds_on_the_same_candles(tmp_path) -> None:
    (good,) = _files(tmp_path, count=1)
    settings = ExperimentSettings(models=("naive", "moving_average"), backtest=LAYOUT, seed=7)
    result = run_sweep(
        file_series([str(good)]), settings, tmp_path / "out", local=True, tune={"trials": 3}
    )
    document = result.documents["walk_0.csv"]
    direct = tune(read_ohlcv_csv(good).candles, "moving_average", settings, trials=3)
    assert list(document["tuning"]) == ["moving_average"]
    assert _untimed(document["tuning"]["moving_average"]) == _untimed(direct.to_json())
    row = result.table[result.table["model"] == "tuned moving_average"].iloc[0]
    against = direct.verdict["tuned_vs_naive"]
    assert (row["reading"], row["ratio"]) == (against.reading, against.ratio)
    assert row["vs_untuned"] == direct.verdict["tuned_vs_untuned"].reading
    assert row["mae"] == direct.scores()["tuned"]
    assert (
        document["metrics"]
        == run_sweep(file_series([str(good)]), settings, tmp_path / "plain", local=True).documents[
            "walk_0.csv"
        ]["metrics"]
    )


def _untimed(tuned: dict) -> dict:
    """A tune document without the seconds each fold took (the one thing runs differ in)."""
    folds = [{k: v for k, v in fold.items() if k != "seconds"} for fold in tuned["folds"]]
    return {**tuned, "folds": folds}


def test_read_sweep_of_a_folder_without_a_sweep_says_so(tmp_path) -> None:
    with pytest.raises(DataFormatError, match="no finished sweep"):
        read_sweep(tmp_path)


def test_read_sweep_never_follows_a_bundle_path_out_of_the_folder(tmp_path) -> None:
    (good,) = _files(tmp_path, count=1)
    run_sweep(file_series([str(good)]), BASELINES, tmp_path / "out", local=True)
    table = pd.read_csv(tmp_path / "out" / RESULTS_FILE)
    table["bundle"] = "../walk_0.csv"
    table.to_csv(tmp_path / "out" / RESULTS_FILE, index=False)
    assert read_sweep(tmp_path / "out").bundles == {}


def test_progress_reports_each_series_and_cancel_stops_between_them(tmp_path) -> None:
    paths = _files(tmp_path, count=3)
    series = file_series([str(p) for p in paths])
    calls = []
    run_sweep(
        series, BASELINES, tmp_path / "a", local=True, progress=lambda *call: calls.append(call)
    )
    sweep_calls = [(f, d["series"], d["done"]) for s, f, d in calls if s == "sweep"]
    assert sweep_calls == [
        (1 / 3, "walk_0.csv", 1),
        (2 / 3, "walk_1.csv", 2),
        (1.0, "walk_2.csv", 3),
    ]
    fractions = [f for _, f, _ in calls]
    assert fractions == sorted(fractions)  # the experiments' stages fit in their shares
    assert {s for s, _, _ in calls} >= {"backtest", "refit", "sweep"}

    done = []
    with pytest.raises(Cancelled, match="after 1 of 3"):
        run_sweep(series, BASELINES, tmp_path / "b", local=True, should_stop=lambda: len(done) >= 1,
                  progress=lambda s, f, d: done.append(d) if s == "sweep" else None)  # fmt: skip
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["walk_0.zip"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"series": []}, "at least one series"),  # nothing to run
        ({"series": file_series("a/x.csv") + file_series("b/x.csv")}, "named twice"),
        ({"workers": 0}, "workers must be at least 1"),
        ({"cpus_per_task": 1.5}, "whole number"),
        ({"settings": ExperimentSettings(models=("naive", "nope"))}, "nope"),  # unknown model
        ({"tune": {"trials": 3}}, "no model to tune"),  # naive and drift have no settings
        ({"tune": {"trails": 3}}, "does not take 'trails'"),  # a misspelt argument
        ({"tune": {"models": "prophet,drift"}}, "drift cannot be tuned"),
    ],
)
def test_bad_requests_are_refused_before_anything_runs(tmp_path, kwargs, match) -> None:
    arguments = {"series": file_series("x.csv"), "settings": BASELINES, "local": True, **kwargs}
    with pytest.raises(ConfigurationError, match=match):
        run_sweep(out_dir=tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(ray_importable(), reason="this Python has Ray")
def test_without_ray_a_sweep_on_ray_names_what_to_do(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="engines venv"):
        run_sweep(file_series("x.csv"), BASELINES, tmp_path / "out")


# --------------------------------------------------------------------------- Ray

ENGINES = engines_python()
RAY_PYTHON = ray_python()
needs_ray = pytest.mark.skipif(
    RAY_PYTHON is None,
    reason="no Python with Ray (.venv-engines, or $CFL_ENGINES_PYTHON): `make engines` installs it",
)
needs_shared = pytest.mark.skipif(
    SHARED_DATA is None, reason="no shared real data (../shared/data or $CFL_SHARED_DATA)"
)
PAIRS = ("BTC", "ETH")

# Run under the Python with Ray, in the repository root; argv: data folder, output folder.
RAY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from forecasting.bundle import read_bundle_data, read_bundle_experiment
    from forecasting.evaluation import BacktestSettings
    from forecasting.experiment import ExperimentSettings, run_experiment
    from forecasting.sweeps import file_series, run_sweep

    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    settings = ExperimentSettings(
        models=("naive", "drift", "lstm"),
        model_settings={"lstm": {"epochs": 1, "units": 4, "lookback": 8}},
        backtest=BacktestSettings(horizon=3, folds=2, test_size=30, stride=3),
        seed=11,
    )
    pairs = [str(data / "BTC.csv"), str(data / "ETH.csv")]
    local = run_sweep(file_series(pairs), settings, out / "local", local=True)
    on_ray = run_sweep(
        file_series([*pairs, str(data / "missing.csv")]), settings, out / "ray", workers=2
    )
    reruns = {}
    for label, path in on_ray.bundles.items():
        raw = path.read_bytes()
        candles = read_bundle_data(raw)
        rerun = run_experiment(candles.candles, read_bundle_experiment(raw), source=candles.source)
        reruns[label] = rerun.to_json()["metrics"]
    (out / "local.json").write_text(json.dumps(local.to_json()))
    (out / "ray.json").write_text(json.dumps(on_ray.to_json()))
    (out / "reruns.json").write_text(json.dumps(reruns))
    """
)


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory) -> Path:
    """The folder where the subprocess left both sweeps (Ray is started once, for it)."""
    if RAY_PYTHON is None:
        pytest.skip("no Python with Ray")
    if SHARED_DATA is None:
        pytest.skip("no shared real data")
    data = tmp_path_factory.mktemp("series")
    for pair in PAIRS:
        candles = read_ohlcv_csv(SHARED_DATA / f"binance_{pair}-USDT_1d.csv").candles
        write_ohlcv_csv(candles.iloc[-301:-1], data / f"{pair}.csv")  # closed candles only
    out = tmp_path_factory.mktemp("sweeps")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(
        [str(RAY_PYTHON), "-c", RAY_SCRIPT, str(data), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@needs_ray
@needs_shared
def test_ray_results_equal_the_single_process_results(ray_run) -> None:
    local = json.loads((ray_run / "local.json").read_text())
    on_ray = json.loads((ray_run / "ray.json").read_text())
    assert list(local) == ["BTC.csv", "ETH.csv"]
    for label in local:
        assert on_ray[label] == local[label]  # exactly: every number, note and forecast
        assert set(on_ray[label]["verdict"]) == {"drift", "lstm"}
        assert on_ray[label]["data"]["candles"] == 300
    assert local["BTC.csv"]["metrics"] != local["ETH.csv"]["metrics"]


@needs_ray
@needs_shared
def test_ray_sweep_folder_holds_bundles_table_and_documents(ray_run) -> None:
    folder = ray_run / "ray"
    assert sorted(p.name for p in folder.iterdir()) == [
        "BTC.zip",
        "ETH.zip",
        RESULTS_FILE,
        SWEEP_FILE,
    ]
    on_ray = json.loads((ray_run / "ray.json").read_text())
    assert json.loads((folder / SWEEP_FILE).read_text()) == on_ray
    assert "missing.csv was not found" in on_ray["missing.csv"]["error"]
    table = pd.read_csv(folder / RESULTS_FILE)
    assert list(table["series"]) == ["BTC.csv"] * 3 + ["ETH.csv"] * 3 + ["missing.csv"]
    assert list(table["status"]) == ["ok"] * 6 + ["failed"]
    for row in table[table["status"] == "ok"].itertuples():
        assert row.mae == pytest.approx(on_ray[row.series]["metrics"][row.model]["mae"], rel=1e-15)


@needs_ray
@needs_shared
def test_ray_bundles_rerun_to_the_same_metrics(ray_run) -> None:
    on_ray = json.loads((ray_run / "ray.json").read_text())
    reruns = json.loads((ray_run / "reruns.json").read_text())
    assert set(reruns) == {"BTC.csv", "ETH.csv"}
    for label, metrics in reruns.items():
        assert metrics == on_ray[label]["metrics"]


@needs_ray
@needs_shared
def test_read_sweep_opens_a_ray_sweep_here(ray_run) -> None:
    read = read_sweep(ray_run / "ray")
    assert read.labels == ["BTC.csv", "ETH.csv", "missing.csv"]
    assert set(read.bundles) == {"BTC.csv", "ETH.csv"}
    assert list(read.errors) == ["missing.csv"]
    data = read_bundle_data(read.bundle_bytes("ETH.csv"))
    assert len(data.candles) == 300
    assert data.source["file"] == "ETH.csv"


@needs_ray
def test_importing_the_library_does_not_import_ray() -> None:
    check = "import sys, forecasting, forecasting.sweeps; print('ray' in sys.modules)"
    done = subprocess.run(
        [str(RAY_PYTHON), "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "False", done.stderr[-2000:]


@needs_ray
def test_ray_python_is_this_one_with_ray_else_the_engines_one() -> None:
    assert RAY_PYTHON == (Path(sys.executable) if ray_importable() else ENGINES)
