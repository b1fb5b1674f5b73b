"""Every sidebar value a link sets is either shown or named in the link's notice.

A link's exchange, symbol, timeframe or dates that cannot be used are named in the same
notice as any other bad setting, with why and what is used instead; the replacement of
an exchange is the configured default. A symbol is judged only once its exchange's
markets are known, never by waiting for the network. The date range reaches back as far
as the CSV reader does, so a file from the 1960s is shown whole.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import forecasting as fc
from forecasting.data.csvfile import EARLIEST_DATE
from ui import sharing, state

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def unescaped(value: str) -> str:
    """Markdown text as the reader sees it (the escapes and invisible breaks dropped)."""
    return value.replace("\\", "").replace("\u200b", "")


def open_link(params: dict[str, str]) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=300)
    app.query_params = dict(params)
    return app.run()


def link_notices(app: AppTest) -> list[str]:
    return [unescaped(w.value) for w in app.warning if "in the link were not valid" in w.value]


def sidebar_value(app: AppTest, key: str):
    (value,) = [w.value for w in app.sidebar if getattr(w, "key", None) == key]
    return value


@pytest.mark.parametrize(
    ("params", "named", "key", "shown"),
    [
        # a reversed range: neither end is used, both are named
        (
            {"source": "sample", "start": "2018-12-31", "end": "2017-01-01"},
            [
                "start=2018-12-31 (must be on or before the end date, end=2017-01-01)",
                "end=2017-01-01 (must be on or after the start date, start=2018-12-31)",
            ],
            None,
            None,
        ),
        # a timeframe the exchange does not offer
        (
            {"timeframe": "7m"},
            ["timeframe=7m (not offered by binance, which offers 1s, 1m, 3m, 5m, 15m,"],
            "timeframe",
            "1d",
        ),
        # a symbol the exchange does not list
        (
            {"source": "exchange", "symbol": "NOPE/USDT"},
            ["symbol=NOPE/USDT (not listed by binance; BTC/USDT is used instead)"],
            "symbol",
            "BTC/USDT",
        ),
        # an exchange ccxt does not know: the configured default replaces it
        (
            {"exchange": "nosuch"},
            ["exchange=nosuch (must be an exchange ccxt knows that serves candles ("],
            "exchange",
            "binance",
        ),
    ],
)
def test_a_sidebar_value_that_cannot_be_used_is_named(app_env, params, named, key, shown):
    app = open_link(params)
    assert not app.exception
    (notice,) = link_notices(app)
    for words in named:
        assert words in notice
    if key is not None:
        assert sidebar_value(app, key) == shown
        assert app.query_params[key] in (shown, [shown]), "the link describes what is shown"
    # Only the configured exchange is asked: no other one is tried over the network.
    assert not [e for e in app.error if "Could not reach" in e.value]


def test_the_reversed_range_keeps_the_range_it_had(app_env):
    app = open_link({"source": "sample", "start": "2018-12-31", "end": "2017-01-01"})
    today = state.utc_today()
    expected = (state.default_start("1d", today), today)
    assert tuple(app.date_input(key="date_range").value) == expected


def test_an_unknown_exchange_names_close_and_known_ones(app_env):
    app = open_link({"exchange": "binanse"})
    (notice,) = link_notices(app)
    known = len(fc.list_exchanges())
    assert (
        f"exchange=binanse (must be an exchange ccxt knows that serves candles ({known} of "
        "them), such as binance," in notice
    )
    assert sidebar_value(app, "exchange") == "binance"


def test_a_valid_selection_is_shown_with_no_notice(app_env):
    params = {
        "source": "exchange",
        "exchange": "binance",
        "symbol": "ETH/USDT",
        "timeframe": "1d",
        "start": "2024-01-01",
        "end": "2024-03-31",
        "fill_gaps": "true",
    }
    app = open_link(params)
    assert not app.exception
    assert link_notices(app) == []
    assert sidebar_value(app, "symbol") == "ETH/USDT"
    assert tuple(app.date_input(key="date_range").value) == (
        dt.date(2024, 1, 1),
        dt.date(2024, 3, 31),
    )
    assert app.metric[0].value == "91"  # Jan 1 to Mar 31 2024, one candle a day


def test_a_link_with_only_an_end_date_uses_it(app_env):
    app = open_link({"source": "sample", "end": "2010-06-30"})
    assert link_notices(app) == []
    start, end = app.date_input(key="date_range").value
    assert end == dt.date(2010, 6, 30)
    assert start == state.default_start("1d", dt.date(2010, 6, 30))


def test_a_symbol_is_judged_once_the_markets_are_known(app_env, monkeypatch):
    def unreachable(exchange_id: str) -> list[str]:
        raise fc.DataUnavailable(f"Could not reach {exchange_id}.")

    real = state.symbols
    monkeypatch.setattr(state, "symbols", unreachable)
    app = open_link({"source": "exchange", "symbol": "NOPE/USDT"})
    assert link_notices(app) == [], "not judged while the markets are unknown"
    assert sidebar_value(app, "symbol") == "NOPE/USDT"

    monkeypatch.setattr(state, "symbols", real)
    app.run()
    (notice,) = link_notices(app)
    assert "symbol=NOPE/USDT (not listed by binance; BTC/USDT is used instead)" in notice
    assert sidebar_value(app, "symbol") == "BTC/USDT"
    app.run()
    assert link_notices(app) == [], "named once"


def test_a_symbol_the_user_changed_meanwhile_is_not_named(app_env, monkeypatch):
    def unreachable(exchange_id: str) -> list[str]:
        raise fc.DataUnavailable(f"Could not reach {exchange_id}.")

    real = state.symbols
    monkeypatch.setattr(state, "symbols", unreachable)
    app = open_link({"source": "exchange", "symbol": "NOPE/USDT"})
    app.text_input(key="symbol").set_value("ZZZ/USDT").run()
    monkeypatch.setattr(state, "symbols", real)
    app.run()
    assert link_notices(app) == []
    assert sidebar_value(app, "symbol") == "BTC/USDT"


@pytest.mark.parametrize(
    ("params", "note"),
    [
        # before the earliest date the reader takes
        ({"start": "1899-12-31"}, "start=1899-12-31 (must be a date as YYYY-MM-DD from 1900-01-01"),
        # after today
        ({"end": "2999-01-01"}, "end=2999-01-01 (must be a date as YYYY-MM-DD from 1900-01-01"),
    ],
)
def test_dates_outside_the_pickers_range_are_refused(params, note):
    values, refused = sharing.parse_all(params)
    assert values == {}
    (words,) = refused
    assert words.startswith(note)
    assert words.endswith(f"to today, {dt.datetime.now(dt.UTC).date()})")


def test_the_earliest_date_is_the_readers():
    assert state.EARLIEST_DATE == sharing.EARLIEST_DATE == EARLIEST_DATE.date()
    assert sharing.parse("start", "1900-01-01") == dt.date(1900, 1, 1)


def yahoo_daily(first: str, days: int) -> bytes:
    """A Yahoo Finance daily download (Date, Open, High, Low, Close, Adj Close, Volume)."""
    index = pd.bdate_range(first, periods=days)
    close = 70 * np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.01, days)))
    frame = pd.DataFrame(
        {
            "Date": index.strftime("%Y-%m-%d"),
            "Open": close,
            "High": close * 1.01,
            "Low": close * 0.99,
            "Close": close,
            "Adj Close": close,
            "Volume": 1_000_000,
        }
    )
    return frame.to_csv(index=False).encode()


def test_a_file_from_1962_is_shown_whole(app_env):
    data = yahoo_daily("1962-01-02", 500)
    first, last = pd.bdate_range("1962-01-02", periods=500)[[0, -1]]
    app = AppTest.from_file(APP, default_timeout=300).run()
    app.radio(key="source").set_value("csv").run()
    app.file_uploader(key="csv_file").upload("GE.csv", data).run()
    assert not app.exception
    assert not app.error
    assert tuple(app.date_input(key="date_range").value) == (first.date(), last.date())
    assert app.metric[0].value == "500"
    assert not [i for i in app.info if "outside the date range" in i.value]
