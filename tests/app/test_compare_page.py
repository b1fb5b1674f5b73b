"""The Compare page through AppTest: a small walk-forward run end to end."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")
FORM = "compare_settings"


def open_compare() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=300).run()
    return app.switch_page("pages/compare.py").run()


def test_compare_page_waits_for_run(app_env):
    app = open_compare()
    assert not app.exception
    assert app.title[0].value == "Compare"
    assert any("Run comparison" in i.value for i in app.info)


@pytest.mark.slow
def test_compare_page_runs_and_reports(app_env):
    app = open_compare()
    app.multiselect(key=f"w:compare.models@{FORM}").set_value(["naive", "drift", "lstm"])
    app.number_input(key=f"w:compare.test_size@{FORM}").set_value(30)
    app.number_input(key=f"w:horizon@{FORM}").set_value(3)
    app.number_input(key=f"w:compare.seeds@{FORM}").set_value(2)
    app.get("form_submit_button")[0].click().run()
    assert not app.exception
    assert not app.error
    # The verdict comes first, in plain lines: one per model against naive, over the seeds.
    assert app.subheader[0].value == "Verdict"
    lines = [m.value for m in app.markdown if m.value.startswith("- **")]
    assert [line.split("**")[1] for line in lines] == ["drift", "lstm"]
    assert all("absolute error ratio" in line for line in lines)
    assert "of 2 seeds" in lines[1]
    assert any(
        phrase in lines[1] for phrase in ("better than naive", "worse than naive", "from naive")
    )
    # The key columns first and on their own; every metric under "All metrics".
    assert list(app.table[0].value.columns) == ["mae_vs_naive", "against naive", "n", "mae"]
    assert any(e.label == "All metrics" for e in app.expander)
    metrics = app.table[1].value
    assert list(metrics.columns[:4]) == ["mae_vs_naive", "against naive", "n", "mae"]
    assert list(metrics.index) == ["naive", "drift", "lstm"]
    assert {"against naive", "MASE < 1", "interval_score"} <= set(metrics.columns)
    assert metrics.loc["naive", "against naive"] == "—"  # naive is not judged against itself
    # 3 folds of 10 test candles, an origin every 3 candles from each cutoff (the default):
    # 4 origins per fold, each forecasting 3 steps, except that the last origin of the last
    # fold has only 1 of its 3 targets inside the data.
    assert metrics.loc["naive", "n"] == 3 * 4 * 3 - 2
    steps = [m.value for m in app.markdown if "at the 5 % level" in m.value]
    assert any("than naive" in v or "from naive" in v for v in steps)
    charts = [json.loads(c.proto.spec) for c in app.get("plotly_chart")]
    assert len(charts) == 5
    names = {t.get("name") for t in charts[0]["data"]}
    assert {"actual", "naive", "drift", "lstm"} <= names
    # Revisit: the result is kept per (data, settings); nothing reruns.
    app.switch_page("pages/data.py").run()
    app.switch_page("pages/compare.py").run()
    assert not app.exception
    assert not any("Run comparison" in i.value for i in app.info)
    assert list(app.table[0].value.index) == ["naive", "drift", "lstm"]
    # The experiment bundle holds settings, data hash, metrics, forecasts and charts.
    bundle = next(b for b in app.get("download_button") if "bundle" in b.proto.label)
    assert bundle.proto.label == "Experiment bundle (zip)"


def test_bundle_contents(app_env):
    from forecasting.bundle import experiment_bundle
    from forecasting.charts import backtest_chart
    from forecasting.evaluation import BacktestSettings
    from forecasting.experiment import ExperimentSettings, run_experiment
    from tests.app.conftest import daily_candles

    candles = daily_candles(300)
    settings = ExperimentSettings(
        models=("naive", "drift"), backtest=BacktestSettings(horizon=2, folds=2, test_size=20)
    )
    result = run_experiment(candles, settings, source={"source": "test"})
    data = experiment_bundle(result, {"backtest": backtest_chart(result.backtest.forecasts)})
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = set(archive.namelist())
        assert {
            "settings.json",
            "data.json",
            "metrics.csv",
            "metrics_by_horizon.csv",
            "dm_tests.csv",
            "copy_check.csv",
            "forecasts.csv",
            "future.csv",
            "verdict.json",
            "charts/backtest.html",
        } <= names
        verdict = json.loads(archive.read("verdict.json"))
        assert verdict["verdict"]["drift"]["against"] == "naive"
        assert verdict["pairs"]["scored"] == len(result.backtest.forecasts) // 2
        meta = json.loads(archive.read("data.json"))
        assert meta["source"] == "test"
        assert len(meta["sha256"]) == 64
        assert json.loads(archive.read("settings.json"))["seed"] == 42
        assert b"plotly" in archive.read("charts/backtest.html").lower()


def test_a_bundle_holds_one_copy_of_plotly_however_many_charts() -> None:
    """Each chart once carried its own 4.6 MB of Plotly: now they share one file, loaded
    from their own folder, so five charts cost about what one did."""
    from forecasting.bundle import PLOTLY_JS, experiment_bundle
    from forecasting.charts import backtest_chart, horizon_error_chart, residual_histogram
    from forecasting.evaluation import BacktestSettings
    from forecasting.experiment import ExperimentSettings, run_experiment
    from tests.app.conftest import daily_candles

    candles = daily_candles(300)
    settings = ExperimentSettings(
        models=("naive", "drift"), backtest=BacktestSettings(horizon=2, folds=2, test_size=20)
    )
    result = run_experiment(candles, settings, source={"source": "test"})
    forecasts = result.backtest.forecasts
    figures = {
        "backtest": backtest_chart(forecasts),
        "error_by_horizon": horizon_error_chart(result.by_horizon),
        "residuals": residual_histogram(forecasts),
    }
    one = experiment_bundle(result, {"backtest": figures["backtest"]})
    data = experiment_bundle(result, figures)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        script = archive.read(f"charts/{PLOTLY_JS}")
        assert script.startswith(b"/**") or b"plotly" in script[:2000].lower()
        for name in figures:
            page = archive.read(f"charts/{name}.html")
            assert f'src="{PLOTLY_JS}"'.encode() in page
            assert len(page) < 200_000  # the chart's data, not a copy of Plotly
    assert len(data) < len(one) + 200_000


def test_results_of_earlier_data_say_so_and_their_link_reproduces_them(app_env):
    """The reported case: the sidebar moved to a range that failed to load, and the page
    kept the old results under a link to the new, empty selection. The link describes the
    data shown, and the page says the selection did not load."""
    import datetime as dt

    app = open_compare()
    app.multiselect(key=f"w:compare.models@{FORM}").set_value(["naive", "drift"])
    app.number_input(key=f"w:compare.test_size@{FORM}").set_value(30)
    app.get("form_submit_button")[0].click().run()
    assert not app.exception
    shown = app.get("code")[0].value
    assert "symbol=BTC%2FUSDT" in shown
    assert not any("did not load" in w.value for w in app.warning)

    # A range before the pair's first candle: nothing loads, the earlier data stay.
    app.date_input(key="date_range").set_value((dt.date(2001, 1, 1), dt.date(2001, 2, 1))).run()
    assert not app.exception
    assert any("has no 1d candles" in e.value for e in app.error)
    assert any("did not load" in w.value for w in app.warning)
    link = app.get("code")[0].value
    assert "start=2001" not in link  # the link is to the data shown
    assert link == shown
