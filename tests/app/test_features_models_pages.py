"""The Features and Models pages through AppTest, against the local exchange server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def open_page(page: str) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=180).run()
    return app.switch_page(page).run()


def chart_specs(app: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]


def test_features_page_shows_indicators_heatmap_and_passing_audit(app_env):
    app = open_page("pages/features.py")
    assert not app.exception
    assert app.title[0].value == "Features"
    charts = chart_specs(app)
    names = {trace.get("name") for trace in charts[0]["data"]}
    assert {"close", "rsi_14", "macd_12_26_9", "log_return"} <= names
    assert charts[1]["data"][0]["type"] == "heatmap"
    assert any("pass" in s.value for s in app.success)
    audit = app.dataframe[0].value
    assert audit["passed"].all()
    assert set(audit["column"]) >= {"rsi_14", "macd_signal_12_26_9"}


def test_feature_choice_survives_leaving_the_page(app_env):
    app = open_page("pages/features.py")
    app.multiselect(key="w:features.kinds").set_value(["rsi", "sma"]).run()
    app.number_input(key="w:features.sma.window").set_value(50).run()
    assert not app.exception
    app.switch_page("pages/data.py").run()
    app.switch_page("pages/features.py").run()
    assert app.multiselect(key="w:features.kinds").value == ["rsi", "sma"]
    assert app.number_input(key="w:features.sma.window").value == 50
    names = {trace.get("name") for trace in chart_specs(app)[0]["data"]}
    assert "sma_ratio_50" in names


def test_models_page_shows_baselines_before_training(app_env):
    app = open_page("pages/models.py")
    assert not app.exception
    assert any("Press **Train**" in i.value for i in app.info)
    names = {trace.get("name") for trace in chart_specs(app)[0]["data"]}
    assert {"actual", "naive", "drift", "seasonal_naive", "moving_average"} <= names
    assert "lstm" not in names


@pytest.mark.slow
def test_models_page_trains_lstm_and_prophet_and_keeps_them(app_env):
    app = open_page("pages/models.py")
    app.number_input(key="w:lstm.epochs@model_settings").set_value(2)
    app.number_input(key="w:lstm.units@model_settings").set_value(8)
    app.number_input(key="w:horizon@model_settings").set_value(5)
    app.get("form_submit_button")[0].click().run()
    assert not app.exception
    assert not app.error
    assert any("Trained 6 models" in s.value for s in app.success)
    charts = chart_specs(app)
    names = {trace.get("name") for trace in charts[0]["data"]}
    assert {"lstm", "prophet", "naive"} <= names
    assert charts[1]["layout"]["title"]["text"] == "Training loss"
    table = app.dataframe[0].value
    assert len(table) == 5
    assert {"lstm", "prophet", "naive"} <= set(table.columns.get_level_values(0))
    # Coming back: the trained models are kept per (data, settings), no retraining.
    app.switch_page("pages/data.py").run()
    app.switch_page("pages/models.py").run()
    names = {trace.get("name") for trace in chart_specs(app)[0]["data"]}
    assert {"lstm", "prophet"} <= names
    assert not any("Press **Train**" in i.value for i in app.info)
    assert app.number_input(key="w:lstm.epochs@model_settings").value == 2
