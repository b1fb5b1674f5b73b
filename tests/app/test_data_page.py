"""The Data page through Streamlit's AppTest, against a local exchange server."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")
TIMEOUT = 60


def run_app() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    return app.run()


def chart_trace_types(app: AppTest) -> list[str]:
    charts = app.get("plotly_chart")
    assert charts, "no chart on the page"
    spec = json.loads(charts[0].proto.spec)
    return [trace["type"] for trace in spec["data"]]


def test_first_open_shows_default_pair_chart(app_env):
    app = run_app()
    assert not app.exception
    assert not app.error
    assert app.title[0].value == "Data"
    assert "binance · BTC/USDT · 1d" in app.caption[0].value
    assert chart_trace_types(app) == ["candlestick", "scatter", "scatter"]
    # Default range: about 3000 daily candles, fetched in pages from the local server.
    assert 2900 <= int(app.metric[0].value.replace(",", "")) <= 3001
    assert len(app_env.kline_requests()) >= 3
    # Nothing missing, extreme or inconsistent in these candles: no empty tables.
    assert app.metric[1].value == "0"
    assert not app.dataframe
    assert [c.value for c in app.caption].count("None.") == 5
    assert not app.warning


def test_the_run_begins_with_the_chart_library_request(app_env):
    """Before anything else, a hidden element has the browser load the chart code that
    the page needs at the end of the run (see ``ui/preload.py``)."""
    import streamlit as st

    from ui import preload

    app = run_app()
    first = app.main.children[0]
    html = first.children[0].proto
    chunk = preload.plotly_chunk()
    assert chunk is not None
    assert (Path(st.__file__).parent / "static" / "static" / "js" / chunk).is_file()
    assert f'import(new URL("{chunk}", main.src)' in html.body
    assert html.unsafe_allow_javascript
    assert f".st-key-{preload.KEY}" in html.body
    assert "display: none" in html.body


def test_switching_symbol_fetches_that_symbol(app_env):
    app = run_app()
    app.selectbox(key="symbol").set_value("ETH/USDT").run()
    assert not app.exception
    assert "ETH/USDT" in app.caption[0].value
    symbols = {r.params.get("symbol") for r in app_env.kline_requests()}
    assert symbols == {"BTCUSDT", "ETHUSDT"}


def test_second_visit_reads_the_cache(app_env):
    run_app()
    app_env.clear_requests()
    app = run_app()
    assert not app.exception
    assert app_env.kline_requests() == []


def test_bad_symbol_shows_message_and_keeps_last_data(app_env):
    app = run_app()
    # A symbol listed by the exchange but without candles on the server: the exchange
    # answers "Invalid symbol", as a real exchange does for a delisted pair.
    app.selectbox(key="symbol").set_value("BTC/EUR").run()
    assert not app.exception
    assert app.error, "the error is shown on the page"
    assert "BTC/EUR" in app.error[0].value or "candles" in app.error[0].value
    assert any("last data that loaded" in info.value for info in app.info)
    assert "BTC/USDT" in app.caption[0].value
    assert app.selectbox(key="symbol").value == "BTC/EUR", "the user's choice is kept"


def test_unreachable_exchange_falls_back_to_sample(app_env, monkeypatch):
    monkeypatch.setenv(
        "CFL_EXCHANGES",
        '{"binance": {"urls": {"api": {"public": "http://127.0.0.1:9/api/v3"}},'
        ' "options": {"fetchMarkets": {"types": ["spot"]}}, "timeout": 500}}',
    )
    app = run_app()
    assert not app.exception
    assert any("offline sample" in w.value for w in app.warning)
    assert "S&P 500" in app.caption[0].value
    assert chart_trace_types(app)[0] == "candlestick"


def test_csv_upload_is_charted(app_env, tmp_path):
    frame = pd.DataFrame(
        {
            "Date": pd.date_range("2024-01-01", periods=60, freq="D").strftime("%Y-%m-%d"),
            "Open": range(100, 160),
            "High": range(102, 162),
            "Low": range(99, 159),
            "Close": range(101, 161),
            "Volume": [10.0] * 60,
            "Note": ["x"] * 60,
        }
    )
    app = run_app()
    app.radio(key="source").set_value("csv").run()
    assert any("Upload a CSV" in e.value for e in app.error)
    app.file_uploader(key="csv_file").upload("candles.csv", frame.to_csv(index=False).encode())
    app.date_input(key="date_range").set_value(
        (pd.Timestamp("2024-01-01").date(), pd.Timestamp("2024-03-31").date())
    ).run()
    assert not app.exception
    assert "candles.csv" in app.caption[0].value
    assert app.metric[0].value == "60"


def test_quality_tables_list_what_was_found(app_env):
    days = pd.date_range("2024-01-01", periods=60, freq="D")
    frame = pd.DataFrame(
        {"Date": days.strftime("%Y-%m-%d"), "Open": 100.0, "High": 102.0, "Low": 99.0,
         "Close": 101.0, "Volume": 10.0}
    ).drop(index=[10, 11, 30])  # fmt: skip
    app = run_app()
    app.radio(key="source").set_value("csv").run()
    app.file_uploader(key="csv_file").upload("gaps.csv", frame.to_csv(index=False).encode())
    app.date_input(key="date_range").set_value((days[0].date(), days[-1].date())).run()
    assert not app.exception
    assert app.metric[1].value == "3"
    # the two missing ranges in a table; nothing extreme or inconsistent
    gaps = app.dataframe[0].value
    assert len(app.dataframe) == 1
    assert len(gaps) == 2
    assert [c.value for c in app.caption].count("None.") == 4


def test_zero_price_rows_are_listed_as_dropped(app_env):
    days = pd.date_range("2024-01-01", periods=60, freq="D")
    frame = pd.DataFrame(
        {"Date": days.strftime("%Y-%m-%d"), "Open": 100.0, "High": 102.0, "Low": 99.0,
         "Close": 101.0, "Volume": 10.0}
    )  # fmt: skip
    frame.loc[[10, 30], ["Open", "High", "Low", "Close", "Volume"]] = 0.0  # placeholders
    app = run_app()
    app.radio(key="source").set_value("csv").run()
    app.file_uploader(key="csv_file").upload("zeros.csv", frame.to_csv(index=False).encode())
    app.date_input(key="date_range").set_value((days[0].date(), days[-1].date())).run()
    assert not app.exception
    assert not app.error
    assert app.metric[0].value == "58"
    assert app.metric[1].value == "2"  # the dropped candles are missing candles
    assert any("2 candles had a zero or negative price" in w.value for w in app.warning)
    captions = [c.value for c in app.caption]
    assert "Candles with zero or negative prices, dropped: 2024-01-11, 2024-01-31." in captions
    # conflicting duplicates, extreme moves, zero-volume or inconsistent
    assert captions.count("None.") == 3


def test_an_uploaded_file_is_shown_whole_and_a_narrower_range_says_what_it_hides(app_env):
    days = pd.date_range("2019-03-01", periods=400, freq="D")
    frame = pd.DataFrame(
        {"Date": days.strftime("%Y-%m-%d"), "Open": 100.0, "High": 102.0, "Low": 99.0,
         "Close": 101.0, "Volume": 10.0}
    )  # fmt: skip
    app = run_app()
    app.radio(key="source").set_value("csv").run()
    app.file_uploader(key="csv_file").upload("old.csv", frame.to_csv(index=False).encode()).run()
    assert not app.exception
    assert not app.error
    # The whole file, although the default range (the last years) holds none of it.
    assert tuple(app.date_input(key="date_range").value) == (days[0].date(), days[-1].date())
    assert app.metric[0].value == "400"
    assert not [i for i in app.info if "outside the date range" in i.value]

    app.date_input(key="date_range").set_value((days[10].date(), days[379].date())).run()
    assert app.metric[0].value == "370"
    hidden = [i.value for i in app.info if "outside the date range" in i.value]
    assert hidden == [
        "30 of the 400 candles in this data are outside the date range and not used (10 "
        "before it, 20 after it). The data runs from 2019-03-01 to 2020-04-03: widen the date "
        "range in the sidebar to use them all."
    ]


def test_the_offline_sample_is_shown_whole_when_chosen(app_env):
    app = run_app()
    app.radio(key="source").set_value("sample").run()
    assert not app.exception
    assert not app.error
    start, end = app.date_input(key="date_range").value
    assert (start.year, end.year) == (1999, 2018)
    assert not [i for i in app.info if "outside the date range" in i.value]


FIELD = Path(__file__).resolve().parents[3] / "shared" / "field-cases"


def test_a_cryptodatadownload_file_is_labelled_and_its_reading_explained(app_env):
    path = FIELD / "cryptodatadownload_Binance_BTCUSDT_d.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared field cases)")
    app = run_app()
    app.radio(key="source").set_value("csv").run()
    app.file_uploader(key="csv_file").upload(path.name, path.read_bytes()).run()
    assert not app.exception
    assert not app.error
    caption = app.caption[0].value.replace("\\", "")  # drawn as escaped plain text
    assert "cryptodatadownload_Binance_BTCUSDT_d.csv (CryptoDataDownload, 1d)" in caption
    assert app.metric[0].value == "40"  # the whole file, oldest first
    notes = " ".join(i.value for i in app.info)
    assert "Volume BTC" in notes


def test_conflicting_duplicates_are_listed_with_the_rule(app_env):
    path = FIELD / "split_candle_duplicates_1m.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared field cases)")
    app = run_app()
    app.radio(key="source").set_value("csv").run()
    app.file_uploader(key="csv_file").upload(path.name, path.read_bytes()).run()
    assert not app.exception
    expander = next(e for e in app.expander if e.label.startswith("Conflicting duplicates"))
    assert expander.label == "Conflicting duplicates: 2"
    table = expander.dataframe[0].value
    assert len(table) == 2
    assert (table["kept volume"] > 1).all()
    assert (table["dropped volume"] == 0.015).all()  # the fragments lost
    assert any("larger volume kept" in c.value for c in expander.caption)


def test_an_exchange_serving_only_its_latest_candles_says_so(app_env):
    app_env.answer_latest(100)
    app = run_app()
    assert not app.exception
    shown = " ".join(w.value for w in app.warning)
    assert "binance serves 1d candles only from" in shown
    assert "earlier candles are not available here" in shown


def test_offline_the_sample_shows_at_once_and_new_sessions_do_not_wait_again(app_env, monkeypatch):
    """No network: the name lookup fails at once, so the first page shows the offline
    sample without retrying, saying why; a new session is answered from memory."""
    monkeypatch.setenv(
        "CFL_EXCHANGES",
        json.dumps({"binance": {"urls": {"api": {"public": "http://exchange.invalid/api/v3"}}}}),
    )
    first = run_app()
    assert not first.exception
    errors = " ".join(e.value for e in first.error)
    assert "its host name could not be resolved" in errors
    assert any("Showing the offline sample instead" in w.value for w in first.warning)
    assert int(first.metric[0].value.replace(",", "")) > 1000  # the sample's candles

    second = run_app()
    assert not second.exception
    again = " ".join(e.value for e in second.error) + " ".join(w.value for w in second.warning)
    assert "s ago; it is tried again" in again
    assert any("Showing the offline sample instead" in w.value for w in second.warning)
