"""The Sweeps page through AppTest: a finished sweep's files opened, its verdicts shown,
and one of its experiments opened in Compare."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from streamlit.testing.v1 import AppTest

from forecasting.data import write_ohlcv_csv
from forecasting.evaluation import BacktestSettings
from forecasting.experiment import ExperimentSettings
from forecasting.sweeps import file_series, run_sweep
from tests.factories import random_walk_candles

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGE = "pages/sweeps.py"


def finished_sweep(folder: Path) -> Path:
    files = []
    for name, seed in (("a.csv", 1), ("b.csv", 2)):
        candles = random_walk_candles(200, seed=seed)
        candles.index = pd.date_range("2023-01-01", periods=200, freq="D", name="timestamp")
        candles.index = candles.index.tz_localize("UTC")
        write_ohlcv_csv(candles, folder / name)
        files.append(str(folder / name))
    files.append(str(folder / "missing.csv"))
    out = folder / "sweep"
    settings = ExperimentSettings(
        models=("naive", "drift"), backtest=BacktestSettings(horizon=3, folds=2, test_size=24)
    )
    run_sweep(file_series(files), settings, out, local=True)
    return out


def test_a_sweep_opens_and_an_experiment_goes_to_compare(app_env, tmp_path):
    out = finished_sweep(tmp_path)
    app = AppTest.from_file(APP, default_timeout=120).run()
    app = app.switch_page(PAGE).run()
    assert not app.exception
    assert app.title[0].value == "Sweeps"
    uploads = [(p.name, p.read_bytes(), "application/octet-stream") for p in out.iterdir()]
    app.file_uploader(key="sweep_files").set_value(uploads).run()
    assert not app.exception
    assert not app.error
    grid = app.dataframe[0].value
    assert list(grid.index) == ["a.csv", "b.csv", "missing.csv"]
    assert grid.loc["a.csv", "drift"].split(" ")[0] in {"better", "worse", "not"}
    assert grid.loc["missing.csv", "drift"].startswith("failed: ")
    assert app.selectbox(key="sweep_series").options == ["a.csv", "b.csv"]
    app.selectbox(key="sweep_series").set_value("b.csv")
    app.button[0].click().run()
    assert not app.exception
    # The Compare page now holds b.csv's experiment: its models and candles.
    assert app.title[0].value == "Compare"
    assert any("Opened the sweep's experiment b.csv" in s.value for s in app.success)
    restored = app.session_state["_bundle_dataset"]
    assert len(restored.candles) == 200


def test_files_without_a_results_table_are_refused_in_one_line(app_env):
    app = AppTest.from_file(APP, default_timeout=120).run()
    app = app.switch_page(PAGE).run()
    app.file_uploader(key="sweep_files").set_value([("x.json", b"{}", "application/json")])
    app.run()
    assert not app.exception
    assert len(app.error) == 1
    assert "No results.csv among the files" in app.error[0].value
