"""The OHLCV frame helpers, the offline sample and the candlestick chart."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from forecasting.charts import candlestick_chart
from forecasting.data.quality import fill_gaps, quality_report
from forecasting.data.sample import (
    SAMPLE_CALENDAR,
    SAMPLE_LABEL,
    SAMPLE_TIMEFRAME,
    load_sample,
)
from forecasting.errors import ConfigurationError, InvalidDateRange, InvalidTimeframe
from forecasting.ohlcv import (
    COLUMNS,
    drop_unclosed,
    empty_ohlcv,
    expected_timestamps,
    frame_from_rows,
    normalize_ohlcv,
    parse_time,
    timeframe_offset,
    timeframe_seconds,
)


def _utc(value: str) -> pd.Timestamp:
    return pd.Timestamp(value, tz="UTC")


def _assert_ohlcv(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == list(COLUMNS)
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    assert isinstance(frame.index, pd.DatetimeIndex)
    assert str(frame.index.tz) == "UTC"
    assert frame.index.name == "timestamp"
    assert frame.index.is_monotonic_increasing
    assert frame.index.is_unique


# --- timeframes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeframe", "seconds", "offset"),
    [
        ("1s", 1, pd.Timedelta(seconds=1)),  # seconds
        ("1m", 60, pd.Timedelta(minutes=1)),  # minutes (lower-case m)
        ("5m", 300, pd.Timedelta(minutes=5)),  # several minutes
        ("1h", 3600, pd.Timedelta(hours=1)),  # hours
        ("4h", 14400, pd.Timedelta(hours=4)),  # several hours
        ("1d", 86400, pd.Timedelta(days=1)),  # days
        ("1w", 604800, pd.Timedelta(weeks=1)),  # weeks
        ("1M", 30 * 86400, pd.DateOffset(months=1)),  # calendar months (upper-case M)
        ("3M", 90 * 86400, pd.DateOffset(months=3)),  # quarters
        ("1y", 365 * 86400, pd.DateOffset(years=1)),  # years
        ("01h", 3600, pd.Timedelta(hours=1)),  # a leading zero is still one hour
    ],
)
def test_timeframe_table(timeframe: str, seconds: int, offset: object) -> None:
    assert timeframe_seconds(timeframe) == seconds
    assert timeframe_offset(timeframe) == offset


@pytest.mark.parametrize(
    "timeframe",
    [
        "",  # empty
        "0h",  # zero length
        "1x",  # unknown unit
        "h",  # no number
        "1",  # no unit
        "1H",  # units are case-sensitive: H is not hours
        "-1h",  # negative
        "1.5h",  # fractional
        " 1h",  # leading space
        "1h ",  # trailing space
        "1h\n",  # trailing newline (a regex ``$`` lets it through)
        "1hh",  # unit twice
        "\u0663h",  # a non-ASCII digit (Arabic-Indic three)
        None,  # nothing
        60,  # a number of seconds is not a timeframe string
    ],
)
def test_bad_timeframes(timeframe: object) -> None:
    with pytest.raises(InvalidTimeframe, match="is not a timeframe") as caught:
        timeframe_seconds(timeframe)  # type: ignore[arg-type]
    assert "such as 1m, 1h, 4h or 1d" in str(caught.value)
    assert isinstance(caught.value, ConfigurationError)
    with pytest.raises(InvalidTimeframe):
        timeframe_offset(timeframe)  # type: ignore[arg-type]


# --- parse_time ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-31T12:00:00Z", "2024-01-31 12:00"),  # ISO with Z
        ("2024-01-31T12:00:00", "2024-01-31 12:00"),  # naive ISO is taken as UTC
        ("2024-01-31 12:00", "2024-01-31 12:00"),  # space separator, no seconds
        ("2024-01-31T14:00:00+02:00", "2024-01-31 12:00"),  # offsets are converted to UTC
        ("2024-01-31", "2024-01-31"),  # a date is its midnight UTC
        (1706702400000, "2024-01-31 12:00"),  # epoch milliseconds, int
        (np.int64(1706702400000), "2024-01-31 12:00"),  # epoch milliseconds, numpy int
        (1706702400000.0, "2024-01-31 12:00"),  # epoch milliseconds, float
        (pd.Timestamp("2024-01-31 12:00"), "2024-01-31 12:00"),  # naive Timestamp
        (pd.Timestamp("2024-01-31 13:00", tz="Europe/Paris"), "2024-01-31 12:00"),  # aware
    ],
)
def test_parse_time(value: object, expected: str) -> None:
    stamp = parse_time(value)  # type: ignore[arg-type]
    assert stamp == _utc(expected)
    assert str(stamp.tz) == "UTC"


@pytest.mark.parametrize("value", [None, "", "   "])
def test_parse_time_nothing(value: str | None) -> None:
    assert parse_time(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "garbage",  # words
        "2024-13-01",  # no 13th month
        "2024-02-30",  # no 30th of February
        "31/31/2024",  # not a date in any order
        "NaT",  # pandas' missing time
        float("nan"),  # missing number
        float("inf"),  # infinite
        10**20,  # epoch milliseconds far beyond any calendar
        True,  # a bool is an int, but not a time
        [2024, 1, 31],  # a list
    ],
)
def test_parse_time_garbage(value: object) -> None:
    with pytest.raises(InvalidDateRange, match="--since") as caught:
        parse_time(value, name="--since")  # type: ignore[arg-type]
    assert "2024-01-31" in str(caught.value)  # the message shows a valid example
    assert isinstance(caught.value, ConfigurationError)


# --- frames -------------------------------------------------------------------------------


def test_frame_from_rows_sorts_and_keeps_last_duplicate() -> None:
    rows = [
        [3_600_000, 2, 2, 2, 2, 2],
        [0, 1, 1, 1, 1, 1],
        [3_600_000, 9, 9, 9, 9, 9],  # a later page's word on the same candle wins
        [7_200_000, 3, 3, 3, 3, 3, "extra", "fields"],  # more than six fields: ignored
    ]
    frame = frame_from_rows(rows)
    _assert_ohlcv(frame)
    assert frame.index.unit == "ms"
    assert list(frame.index) == [_utc("1970-01-01 00:00"), _utc("1970-01-01 01:00"),
                                 _utc("1970-01-01 02:00")]  # fmt: skip
    assert frame["close"].tolist() == [1.0, 9.0, 3.0]


def test_frame_from_rows_empty() -> None:
    frame = frame_from_rows([])
    _assert_ohlcv(frame)
    assert frame.empty
    pd.testing.assert_frame_equal(frame, empty_ohlcv())


def test_normalize_ohlcv_returns_a_new_frame() -> None:
    naive = pd.DatetimeIndex(["2024-01-02", "2024-01-01", "2024-01-02"])
    frame = pd.DataFrame(
        {"volume": [1, 2, 3], "close": [1, 2, 3], "low": [1, 2, 3], "high": [1, 2, 3],
         "open": [1, 2, 3], "extra": ["a", "b", "c"]},
        index=naive,
    )  # fmt: skip
    before = frame.copy()
    out = normalize_ohlcv(frame)
    _assert_ohlcv(out)
    assert list(out.index) == [_utc("2024-01-01"), _utc("2024-01-02")]
    assert out["close"].tolist() == [2.0, 3.0]
    pd.testing.assert_frame_equal(frame, before)


@pytest.mark.parametrize(
    ("now", "kept"),
    [
        ("2024-01-01 10:30", 10),  # the 10:00 candle is still open
        ("2024-01-01 11:00", 11),  # it closes exactly now: kept
        ("2024-01-01 00:59:59", 0),  # even the first is still open
        ("2030-01-01", 11),  # long after: everything closed
    ],
)
def test_drop_unclosed(now: str, kept: int) -> None:
    index = pd.date_range("2024-01-01", periods=11, freq="h", tz="UTC", name="timestamp")
    frame = pd.DataFrame({c: np.ones(11) for c in COLUMNS}, index=index)
    out = drop_unclosed(frame, "1h", _utc(now))
    assert out.index.equals(index[:kept])


def test_drop_unclosed_monthly_and_empty() -> None:
    index = pd.DatetimeIndex([_utc("2024-01-01"), _utc("2024-02-01")], name="timestamp")
    frame = pd.DataFrame({c: [1.0, 2.0] for c in COLUMNS}, index=index)
    # February has 29 days in 2024: its candle closes on 1 March, not after 30 days
    assert len(drop_unclosed(frame, "1M", _utc("2024-03-01"))) == 2
    assert len(drop_unclosed(frame, "1M", _utc("2024-02-29 23:59"))) == 1
    assert drop_unclosed(empty_ohlcv(), "1h", _utc("2024-01-01")).empty


@pytest.mark.parametrize(
    ("start", "end", "timeframe", "calendar", "count", "first_after"),
    [
        # hourly, 24/7: both ends included
        ("2024-01-01", "2024-01-02", "1h", "24/7", 25, "2024-01-01 01:00"),
        # 4h candles across a weekend, 24/7
        ("2024-01-05", "2024-01-08", "4h", "24/7", 19, "2024-01-05 04:00"),
        # daily, 24/7, across a weekend
        ("2024-01-05", "2024-01-08", "1d", "24/7", 4, "2024-01-06"),
        # daily, business: Friday then Monday
        ("2024-01-05", "2024-01-08", "1d", "business", 2, "2024-01-08"),
        # business candles stamped at 21:00 keep their time of day
        ("2024-01-05 21:00", "2024-01-09 21:00", "1d", "business", 3, "2024-01-08 21:00"),
        # business only applies to daily candles: hourly stays 24/7
        ("2024-01-06", "2024-01-06 03:00", "1h", "business", 4, "2024-01-06 01:00"),
        # calendar months
        ("2024-01-01", "2024-12-01", "1M", "24/7", 12, "2024-02-01"),
        # weekly
        ("2024-01-01", "2024-03-25", "1w", "24/7", 13, "2024-01-08"),
    ],
)
def test_expected_timestamps(
    start: str, end: str, timeframe: str, calendar: str, count: int, first_after: str
) -> None:
    stamps = expected_timestamps(_utc(start), _utc(end), timeframe, calendar=calendar)
    assert len(stamps) == count
    assert (stamps[0], stamps[1], stamps[-1]) == (_utc(start), _utc(first_after), _utc(end))
    assert stamps.name == "timestamp"
    assert str(stamps.tz) == "UTC"
    assert stamps.unit == "ms"
    if calendar == "business" and timeframe == "1d":
        assert not (stamps.day_of_week >= 5).any()


# --- the offline sample -------------------------------------------------------------------


def test_load_sample_is_real_sp500() -> None:
    sample = load_sample()
    _assert_ohlcv(sample)
    assert 4500 < len(sample) < 5500  # about 252 trading days a year for 20 years
    assert sample.index[0].year == 1999
    assert sample.index[-1].year == 2018
    assert not (sample.index.day_of_week >= 5).any()
    values = sample.to_numpy()
    assert np.isfinite(values).all()
    assert (values > 0).all()
    # the S&P 500 traded between about 670 (March 2009) and 2940 (September 2018)
    assert 600 < sample["low"].min() < 700
    assert 2900 < sample["high"].max() < 3000
    report = quality_report(sample, SAMPLE_TIMEFRAME, calendar=SAMPLE_CALENDAR)
    assert report.inconsistent.empty
    assert report.zero_volume.empty
    assert (SAMPLE_TIMEFRAME, SAMPLE_CALENDAR) == ("1d", "business")
    assert "S&P 500" in SAMPLE_LABEL


def test_load_sample_gives_a_fresh_copy() -> None:
    first = load_sample()
    second = load_sample()
    pd.testing.assert_frame_equal(first, second)
    first.iloc[:, :] = -1.0
    first["extra"] = 1.0
    pd.testing.assert_frame_equal(load_sample(), second)


# --- the candlestick chart ---------------------------------------------------------------


def _chart_candles(n: int = 12) -> pd.DataFrame:
    index = pd.date_range("2024-01-01", periods=n, freq="4h", tz="UTC", name="timestamp")
    close = 100.0 + np.arange(n) * np.where(np.arange(n) % 3 == 0, -1.0, 1.0)
    open_ = np.r_[100.0, close[:-1]]
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) + 0.5,
            "low": np.minimum(open_, close) - 0.5,
            "close": close,
            "volume": np.arange(n) + 10.0,
        },
        index=index.as_unit("ms"),
    )


def test_candlestick_chart_draws_the_input() -> None:
    candles = _chart_candles()
    figure = candlestick_chart(candles, title="BTC/USDT 4h")
    assert isinstance(figure, go.Figure)
    kinds = [type(trace).__name__ for trace in figure.data]
    assert kinds == ["Candlestick", "Scatter", "Scatter"]
    price, volume, rising_volume = figure.data
    # times as UTC strings: plotly reads them as it reads timestamps, and they are cheap
    # to copy and send
    assert list(pd.DatetimeIndex(price.x, tz="UTC")) == list(candles.index)
    for column in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(np.asarray(getattr(price, column)), candles[column])
    assert list(price.hovertext) == [f"volume: {v:,.6g}" for v in candles["volume"]]
    # every candle's volume as a step centred on it, the rising candles' volume over it in
    # their colour
    rising = candles["close"] >= candles["open"]
    for trace, expected, color in (
        (volume, candles["volume"], price.decreasing.line.color),
        (rising_volume, candles["volume"].where(rising, 0.0), price.increasing.line.color),
    ):
        assert list(pd.DatetimeIndex(trace.x, tz="UTC")) == list(candles.index)
        np.testing.assert_array_equal(np.asarray(trace.y), expected)
        assert (trace.line.shape, trace.fill, trace.fillcolor) == ("hvh", "tozeroy", color)
        assert trace.yaxis == "y2"
        assert trace.hoverinfo == "skip"
    # price on top, volume below, one shared time axis with range buttons; no range
    # slider, which would draw every candle twice
    assert price.yaxis == "y"
    assert not figure.layout.xaxis.rangeslider.visible
    assert not figure.layout.xaxis2.rangeslider.visible
    # fixed margins: automatic ones make plotly draw every candle a second time
    assert figure.layout.yaxis.automargin is False
    assert figure.layout.xaxis2.automargin is False
    labels = [button.label for button in figure.layout.updatemenus[0].buttons]
    assert labels[-1] == "all"
    assert figure.layout.xaxis2.matches == "x" or figure.layout.xaxis.matches == "x2"
    assert figure.layout.title.text == "BTC/USDT 4h"
    assert not figure.layout.shapes


@pytest.mark.parametrize(
    ("freq", "n", "expected"),
    [
        ("1D", 3000, ["1m", "3m", "6m", "1y", "all"]),  # a week is under 10 candles
        ("1h", 2000, ["1d", "1w", "1m", "all"]),  # 83 days: no 3m or longer
        ("4h", 12, ["all"]),  # two days: every span is too short or too long
    ],
)
def test_candlestick_chart_offers_the_ranges_the_candles_fill(
    freq: str, n: int, expected: list[str]
) -> None:
    index = pd.date_range("2020-01-01", periods=n, freq=freq, tz="UTC", name="timestamp")
    candles = pd.DataFrame(
        {"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 3.0}, index=index
    )
    (menu,) = candlestick_chart(candles).layout.updatemenus
    assert [button.label for button in menu.buttons] == expected
    assert all(button.method == "relayout" for button in menu.buttons)


def test_candlestick_chart_marks_filled_candles() -> None:
    candles = _chart_candles().drop(index=_chart_candles().index[[4, 7, 8]])
    filled, inserted = fill_gaps(candles, "4h")
    figure = candlestick_chart(filled, filled=inserted)
    markers = [t for t in figure.data if isinstance(t, go.Scatter) and t.mode == "markers"]
    assert len(markers) == 1
    assert list(pd.DatetimeIndex(markers[0].x, tz="UTC")) == list(inserted)
    np.testing.assert_array_equal(np.asarray(markers[0].y), filled.loc[inserted, "close"])
    assert "filled" in markers[0].name
    # no markers when nothing was filled
    plain = candlestick_chart(filled, filled=inserted[:0])
    assert not any(isinstance(t, go.Scatter) and t.mode == "markers" for t in plain.data)


def test_candlestick_volume_falls_to_zero_over_gaps() -> None:
    candles = _chart_candles().drop(index=_chart_candles().index[[4, 7, 8]])
    volume = candlestick_chart(candles).data[1]
    at = pd.DatetimeIndex(volume.x, tz="UTC")
    values = pd.Series(np.asarray(volume.y), index=at)
    # each candle's volume at its time, and zero in the first and last slot of each gap:
    # one missing candle (4) gets one zero slot twice, two missing (7, 8) get both
    step = pd.Timedelta(hours=4)
    start = _chart_candles().index[0]
    assert list(values[candles.index]) == list(candles["volume"])
    assert list(values.drop(candles.index).index) == [
        start + 4 * step, start + 4 * step, start + 7 * step, start + 8 * step
    ]  # fmt: skip
    assert (values.drop(candles.index) == 0).all()
    assert at.is_monotonic_increasing


def test_candlestick_chart_shades_gaps() -> None:
    candles = _chart_candles().drop(index=_chart_candles().index[[4, 7, 8]])
    gaps = quality_report(candles, "4h").gaps
    figure = candlestick_chart(candles, gaps=gaps)
    shapes = [shape for shape in figure.layout.shapes if shape.type == "rect"]
    # one rectangle per gap, over the full height (price and volume)
    assert len(shapes) == len(gaps) == 2
    assert all((s.yref, s.y0, s.y1) == ("paper", 0, 1) for s in shapes)
    spans = sorted({(pd.Timestamp(s.x0), pd.Timestamp(s.x1)) for s in shapes})
    # a run covers its missing candles' slots: half a candle either side of the open times,
    # so a one-candle gap is visible rather than zero wide
    half = pd.Timedelta(hours=2)
    expected = [(start - half, end + half) for start, end in zip(gaps["start"], gaps["end"],
                                                                 strict=True)]  # fmt: skip
    assert [(a.tz_localize(None), b.tz_localize(None)) for a, b in spans] == [
        (a.tz_localize(None), b.tz_localize(None)) for a, b in expected
    ]
    assert all(x1 > x0 for x0, x1 in spans)
