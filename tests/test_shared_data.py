"""Real Binance candles (../shared/data) served by the fake exchange and fetched back whole.

The files are never copied into the repository: without them these tests skip.
"""

from __future__ import annotations

import pandas as pd
import pytest
from fake_exchange import load_shared_csv

from forecasting.data import load_exchange_candles, quality_report

SYMBOL = "BTC/USDT"

# The outages listed in the data README: (first missing, last missing, how many).
GAPS_4H = [
    ("2018-02-08T04:00Z", "2018-02-09T04:00Z", 7),
    ("2018-06-26T04:00Z", "2018-06-26T08:00Z", 2),
    ("2018-07-04T04:00Z", "2018-07-04T04:00Z", 1),
    ("2018-11-14T04:00Z", "2018-11-14T04:00Z", 1),
    ("2019-03-12T04:00Z", "2019-03-12T04:00Z", 1),
    ("2019-05-15T04:00Z", "2019-05-15T08:00Z", 2),
    ("2019-08-15T04:00Z", "2019-08-15T04:00Z", 1),
    ("2020-02-19T12:00Z", "2020-02-19T12:00Z", 1),
]


def _shared(name: str) -> pd.DataFrame:
    frame = load_shared_csv(name)
    if frame is None:
        pytest.skip(f"{name} is not available (../shared/data is absent)")
    return frame


def _fetch_everything(fake, tmp_cache, frame: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    fake.set_candles(SYMBOL, timeframe, frame)
    # Just after the last (partial) candle opened: it is still open, so it is dropped.
    now = frame.index[-1] + pd.Timedelta(minutes=1)
    return load_exchange_candles(
        "binance",
        SYMBOL,
        timeframe,
        frame.index[0],
        cache=tmp_cache,
        exchange=fake.client(),
        now=now,
    )


def _closed(frame: pd.DataFrame) -> pd.DataFrame:
    closed = frame.iloc[:-1].copy()
    closed.index = closed.index.as_unit("ms")
    return closed


@pytest.mark.parametrize(
    ("name", "timeframe", "rows", "pages"),
    [
        ("binance_BTC-USDT_1d.csv", "1d", 3064, 4),  # every day since 2017-08-17
        ("binance_BTC-USDT_4h.csv", "4h", 18370, 19),  # many pages, across eight outages
    ],
)
def test_full_history_comes_back_exactly(fake_binance, tmp_cache, name, timeframe, rows, pages):
    frame = _shared(name)

    fetched = _fetch_everything(fake_binance, tmp_cache, frame, timeframe)

    assert len(fetched) == rows
    pd.testing.assert_frame_equal(fetched, _closed(frame), check_exact=True, check_freq=False)
    assert fetched.index.name == "timestamp"
    assert str(fetched.index.tz) == "UTC"
    assert len(fake_binance.kline_requests()) == pages  # no page asked twice, none after the end


def test_the_4h_outages_are_reported_exactly(fake_binance, tmp_cache):
    frame = _shared("binance_BTC-USDT_4h.csv")
    fetched = _fetch_everything(fake_binance, tmp_cache, frame, "4h")

    report = quality_report(fetched, "4h")

    assert report.missing == 16
    assert len(report.gaps) == 8
    found = [
        (start.isoformat(), end.isoformat(), int(missing))
        for start, end, missing in report.gaps.itertuples(index=False)
    ]
    assert found == [
        (pd.Timestamp(start).isoformat(), pd.Timestamp(end).isoformat(), missing)
        for start, end, missing in GAPS_4H
    ]
    assert report.expected == 18370 + 16
    # The flat zero-volume candle the README mentions is real and kept.
    assert list(report.zero_volume) == [pd.Timestamp("2017-09-06T16:00Z")]
