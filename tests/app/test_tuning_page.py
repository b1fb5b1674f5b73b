"""The Tuning page through AppTest: a tiny nested search end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from forecasting.evaluation import BacktestSettings
from forecasting.experiment import DEFAULT_STRIDE, ExperimentSettings
from forecasting.tuning import tune

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGE = "pages/tuning.py"


def open_tuning() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=300).run()
    return app.switch_page(PAGE).run()


def test_the_page_waits_for_run(app_env):
    app = open_tuning()
    assert not app.exception
    assert app.title[0].value == "Tuning"
    assert [i.value for i in app.info] == [
        "Press **Run tuning** to search each fold's settings on its past."
    ]
    assert not app.dataframe


def test_a_tiny_tuning_shows_the_library_folds_and_verdicts(app_env):
    app = open_tuning()
    app.selectbox(key="tuning_model").set_value("moving_average")
    app.number_input(key="tuning_trials").set_value(3)
    app.button(key="run_tuning").click().run()
    assert not app.exception
    assert not app.error
    shown = app.dataframe[0].value
    assert list(shown.index) == [1, 2, 3]
    assert {"params", "inner", "outer", "gap"} <= set(shown.columns)
    # The same numbers as the library on the same candles and the Compare page's defaults.
    candles = app.session_state["_last_dataset"].candles
    expected = tune(
        candles,
        "moving_average",
        ExperimentSettings(
            models=("moving_average",),
            model_settings={"moving_average": {"window": 7, "level": 0.9}},
            backtest=BacktestSettings(horizon=7, folds=3, test_size=120, stride=DEFAULT_STRIDE),
            seed=42,
        ),
        trials=3,
        timeout=300.0,
    )
    assert list(shown["params"]) == list(expected.table()["params"])
    for column in ("inner", "outer", "gap"):
        assert list(shown[column]) == pytest.approx(list(expected.table()[column]), rel=1e-12)
    # Tuned against untuned, then each against naive, in Compare's words.
    lines = [m.value.replace("\\_", "_") for m in app.markdown if m.value.startswith("- **")]
    assert [line.split("**")[1] for line in lines] == [
        "tuned moving_average",
        "tuned moving_average",
        "untuned moving_average",
    ]
    assert "than untuned moving_average" in lines[0] or "from untuned moving_average" in lines[0]
    assert all("absolute error ratio" in line for line in lines)
    assert any("9 trials in all" in c.value for c in app.caption)
    # The JSON download is the library's document.
    document = json.loads(json.dumps(expected.to_json()))
    assert [f["params"] for f in document["folds"]] == [f.params for f in expected.folds]
