"""A bundle downloaded from the Compare page restores its settings and its data, offline.

The reported case: restoring a bundle applied its settings to whatever data the sidebar
held (the offline sample, in the report). Now the candles the bundle carries become the
page's data, checked against their SHA-256, with no request to any exchange; and the
bundle is built without touching the session (no "missing ScriptRunContext" warnings).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import threading
import zipfile
from pathlib import Path

import pytest
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from forecasting.bundle import CANDLES_ENTRY, _candles_parquet, read_bundle_data

APP = str(Path(__file__).resolve().parents[2] / "app.py")
FORM = "compare_settings"
CONTEXT_LOGGER = "streamlit.runtime.scriptrunner_utils.script_run_context"


@pytest.fixture
def deferred(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The callables handed to download buttons, by file name (the last one drawn)."""
    captured: dict = {}
    original = MediaFileManager.add_deferred

    def add_deferred(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        captured[file_name] = data_callable
        return original(self, data_callable, mimetype, coordinates, file_name=file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", add_deferred)
    return captured


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def build_outside_the_run(make) -> tuple[bytes, list[str]]:
    """Run a download callable as Streamlit does (a worker thread without the script
    run's context); returns its bytes and what Streamlit's context lookup logged."""
    handler = _Records()
    logger = logging.getLogger(CONTEXT_LOGGER)
    logger.addHandler(handler)
    out: dict = {}
    try:
        worker = threading.Thread(target=lambda: out.update(data=make()))
        worker.start()
        worker.join(120)
    finally:
        logger.removeHandler(handler)
    return out["data"], handler.messages


def test_the_context_check_sees_a_lookup_outside_a_run() -> None:
    """The check above is not blind: a lookup of the session from a worker thread logs."""
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    _, messages = build_outside_the_run(get_script_run_ctx)
    assert any("missing ScriptRunContext" in m for m in messages)


def open_compare() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=300).run()
    return app.switch_page("pages/compare.py").run()


def run_comparison(app: AppTest) -> None:
    app.multiselect(key=f"w:compare.models@{FORM}").set_value(["naive", "drift"])
    app.number_input(key=f"w:compare.test_size@{FORM}").set_value(30)
    app.number_input(key=f"w:compare.folds@{FORM}").set_value(2)
    app.get("form_submit_button")[0].click().run()
    assert not app.exception
    assert not app.error


def test_a_bundle_restores_its_data_with_the_exchange_gone(app_env, deferred):
    today = dt.datetime.now(dt.UTC).date()
    app = open_compare()
    app.date_input(key="date_range").set_value((today - dt.timedelta(days=400), today)).run()
    run_comparison(app)
    metrics = app.table[0].value
    label = app.caption[0].value
    assert "BTC/USDT" in label

    bundle, messages = build_outside_the_run(deferred["experiment.zip"])
    assert not [m for m in messages if "ScriptRunContext" in m]
    carried = read_bundle_data(bundle)
    assert carried is not None
    assert carried.selection["symbol"] == "BTC/USDT"
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        data = json.loads(archive.read("data.json"))
        assert data["selection"]["start"] == f"{today - dt.timedelta(days=400)}"
        assert data["sha256"] == carried.sha256

    # Another session, on the sample, with the exchange gone: the bundle is all there is.
    app_env.stop()
    other = AppTest.from_file(APP, default_timeout=300).run()
    other.radio(key="source").set_value("sample").run()
    other.switch_page("pages/compare.py").run()
    other.file_uploader(key="bundle_upload").upload("experiment.zip", bundle).run()
    assert not other.exception
    assert not other.error
    success = " ".join(s.value for s in other.success)
    count = len(carried.candles)
    assert "Settings and data restored from the bundle" in success
    assert f"{count:,} candles from {carried.candles.index[0]:%Y-%m-%d}" in success
    caption = other.caption[0].value.replace("\\", "")
    assert "restored from the bundle experiment.zip" in caption
    assert f"SHA-256 {carried.sha256[:12]}" in caption
    assert f"{count:,} candles" in caption
    assert other.radio(key="source").value == "exchange"
    assert other.date_input(key="date_range").value == (today - dt.timedelta(days=400), today)
    assert other.number_input(key=f"w:compare.test_size@{FORM}").value == 30

    other.get("form_submit_button")[0].click().run()
    assert not other.exception
    assert not other.error
    assert other.table[0].value.equals(metrics)  # the same numbers, offline


def csv_text(days: int) -> bytes:
    from tests.app.conftest import daily_candles

    frame = daily_candles(days, end=dt.datetime(2024, 6, 30, tzinfo=dt.UTC)).reset_index()
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%d")
    return frame.to_csv(index=False).encode()


def test_a_csv_bundle_restores_that_csv(app_env, deferred):
    app = AppTest.from_file(APP, default_timeout=300).run()
    app.radio(key="source").set_value("csv").run()
    app.file_uploader(key="csv_file").upload("prices.csv", csv_text(260)).run()
    app.switch_page("pages/compare.py").run()
    run_comparison(app)
    metrics = app.table[0].value
    bundle = deferred["experiment.zip"]()
    carried = read_bundle_data(bundle)
    assert carried.selection["file"] == "prices.csv"
    assert len(carried.candles) == 260

    other = open_compare()  # the exchange's candles, no file uploaded
    other.file_uploader(key="bundle_upload").upload("prices-experiment.zip", bundle).run()
    assert not other.exception
    caption = other.caption[0].value.replace("\\", "")  # Markdown escapes
    assert caption.startswith("prices.csv (CSV with a header, 1d)")
    assert "restored from the bundle prices-experiment.zip" in caption
    assert "260 candles" in caption
    assert other.radio(key="source").value == "csv"
    other.get("form_submit_button")[0].click().run()
    assert not other.error
    assert other.table[0].value.equals(metrics)


def test_changed_candles_are_refused_and_nothing_is_restored(app_env, deferred):
    app = AppTest.from_file(APP, default_timeout=300).run()
    app.radio(key="source").set_value("csv").run()
    app.file_uploader(key="csv_file").upload("prices.csv", csv_text(200)).run()
    app.switch_page("pages/compare.py").run()
    run_comparison(app)
    bundle = deferred["experiment.zip"]()
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    candles = read_bundle_data(bundle).candles.copy()
    candles.iloc[5, 3] += 1.0
    entries[CANDLES_ENTRY] = _candles_parquet(candles, None, None)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)

    other = open_compare()
    other.file_uploader(key="bundle_upload").upload("experiment.zip", buffer.getvalue()).run()
    assert not other.exception
    errors = [e.value for e in other.error]
    assert len(errors) == 1
    assert "SHA-256" in errors[0]
    assert "\n" not in errors[0]
    assert not other.success
    assert other.radio(key="source").value == "exchange"  # the settings stay as they were
    assert other.number_input(key=f"w:compare.folds@{FORM}").value == 3
    assert "restored from the bundle" not in other.caption[0].value


def test_results_of_another_selection_are_stale_and_rerun_on_request(app_env, deferred):
    """The sidebar moved to other data that loads: the results shown stay, marked stale,
    under the link and bundle of the data they were computed on, until rerun."""
    today = dt.datetime.now(dt.UTC).date()
    app = open_compare()
    app.date_input(key="date_range").set_value((today - dt.timedelta(days=300), today)).run()
    run_comparison(app)
    link = app.get("code")[0].value
    first = f"start={today - dt.timedelta(days=300)}"
    assert first in link
    metrics = app.table[0].value

    app.date_input(key="date_range").set_value((today - dt.timedelta(days=200), today)).run()
    assert not app.exception
    stale = [w.value for w in app.warning if "stale" in w.value]
    assert len(stale) == 1
    assert not any("did not load" in w.value for w in app.warning)
    # The server's candles end yesterday: 300 days of them, then 200.
    assert "binance · BTC/USDT · 1d, 300 candles from" in stale[0]
    assert app.get("code")[0].value == link  # the link is to the results shown
    assert app.table[0].value.equals(metrics)
    carried = read_bundle_data(deferred["experiment.zip"]())
    assert len(carried.candles) == 300  # the bundle carries the data shown

    app.button(key="rerun_compare").click().run()
    assert not app.exception
    assert not [w for w in app.warning if "stale" in w.value]
    fresh = app.get("code")[0].value
    assert f"start={today - dt.timedelta(days=200)}" in fresh
    assert len(read_bundle_data(deferred["experiment.zip"]()).candles) == 200
