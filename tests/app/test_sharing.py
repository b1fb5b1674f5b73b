"""Links and bundles that reproduce an experiment, through AppTest."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def open_app(params: dict[str, str] | None = None, page: str | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=180)
    app.query_params = dict(params or {})
    app.run()
    if page:
        app.switch_page(page).run()
    return app


def test_link_settings_are_applied(app_env):
    app = open_app(
        {
            "symbol": "ETH/USDT",
            "start": "2024-01-01",
            "end": "2024-03-31",
            "horizon": "5",
            "lstm.units": "16",
            "compare.folds": "2",
            "features.kinds": "rsi,sma",
            "features.sma.window": "50",
        },
        page="pages/compare.py",
    )
    assert not app.exception
    assert not app.warning
    assert "ETH/USDT" in app.caption[0].value
    assert app.date_input(key="date_range").value == (
        __import__("datetime").date(2024, 1, 1),
        __import__("datetime").date(2024, 3, 31),
    )
    assert app.number_input(key="w:horizon@compare_settings").value == 5
    assert app.number_input(key="w:compare.folds@compare_settings").value == 2
    app.switch_page("pages/models.py").run()
    assert app.number_input(key="w:lstm.units@model_settings").value == 16
    app.switch_page("pages/features.py").run()
    assert app.multiselect(key="w:features.kinds").value == ["rsi", "sma"]
    assert app.number_input(key="w:features.sma.window").value == 50


def test_invalid_link_settings_fall_back_with_a_notice(app_env):
    app = open_app(
        {
            "horizon": "999",  # outside 1..60
            "lstm.target": "price_level",  # not a choice
            "compare.models": "naive,arima",  # unknown model
            "start": "yesterday",  # not a date
            "bogus": "1",  # unknown setting
            "compare.folds": "4",  # valid: kept
        }
    )
    assert not app.exception
    notice = " ".join(w.value for w in app.warning)
    for name in ("horizon=999", "lstm.target", "compare.models", "start=yesterday", "bogus"):
        assert name in notice
    app.switch_page("pages/compare.py").run()
    assert app.number_input(key="w:horizon@compare_settings").value == 7
    assert app.number_input(key="w:compare.folds@compare_settings").value == 4
    # The notice shows once; the next run is quiet.
    app.run()
    assert not app.warning


def test_url_follows_the_settings(app_env):
    app = open_app()
    assert app.query_params["symbol"] == ["BTC/USDT"] or app.query_params["symbol"] == "BTC/USDT"
    app.selectbox(key="symbol").set_value("ETH/USDT").run()
    symbol = app.query_params["symbol"]
    assert (symbol[0] if isinstance(symbol, list) else symbol) == "ETH/USDT"
    assert "horizon" not in app.query_params, "defaults stay out of the link"
    app.switch_page("pages/compare.py").run()
    app.number_input(key="w:compare.folds@compare_settings").set_value(5)
    app.multiselect(key="w:compare.models@compare_settings").set_value(["naive", "drift"])
    app.number_input(key="w:compare.seeds@compare_settings").set_value(2)
    app.get("form_submit_button")[0].click().run()
    seeds = app.query_params["compare.seeds"]
    assert (seeds[0] if isinstance(seeds, list) else seeds) == "2"
    folds = app.query_params["compare.folds"]
    assert (folds[0] if isinstance(folds, list) else folds) == "5"


def bundle_with(settings: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app_settings.json", json.dumps(settings))
        archive.writestr("settings.json", "{}")
    return buffer.getvalue()


def test_bundle_upload_restores_settings(app_env):
    app = open_app(page="pages/compare.py")
    bundle = bundle_with(
        {"symbol": "ETH/USDT", "compare.folds": "2", "horizon": "3", "lstm.units": "x"}
    )
    app.file_uploader(key="bundle_upload").upload("experiment.zip", bundle).run()
    assert not app.exception
    # One setting was not restored: a warning (never a success box) names it first.
    assert not app.success
    assert any("Not restored" in w.value and "lstm.units" in w.value for w in app.warning)
    assert app.number_input(key="w:compare.folds@compare_settings").value == 2
    assert app.number_input(key="w:horizon@compare_settings").value == 3
    assert app.selectbox(key="symbol").value == "ETH/USDT"


def test_bundle_upload_rejects_other_files(app_env):
    app = open_app(page="pages/compare.py")
    app.file_uploader(key="bundle_upload").upload("notes.zip", b"not a zip at all").run()
    assert not app.exception
    assert any("not an experiment bundle" in e.value for e in app.error)
    assert app.number_input(key="w:compare.folds@compare_settings").value == 3
