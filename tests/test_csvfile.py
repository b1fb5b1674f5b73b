"""CSV upload and download: the formats people export, the errors they get, and fuzzing.

Every rejected file must raise :class:`DataFormatError` naming the line (header = line 1)
and the column, with a message that says what to do; nothing else may escape, whatever
the bytes.
"""

from __future__ import annotations

import csv
import io
import os
import pickle
import string
import subprocess

import numpy as np
import pandas as pd
import pytest
from fake_exchange import SHARED_DATA, load_shared_csv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.data.csvfile import (
    EARLIEST_EPOCH,
    MAX_CSV_BYTES,
    CsvData,
    infer_timeframe,
    read_ohlcv_csv,
    write_ohlcv_csv,
)
from forecasting.data.quality import dropped_nonpositive
from forecasting.errors import DataFormatError, ForecastingError
from forecasting.ohlcv import COLUMNS, MAX_PRICE, timeframe_seconds

HEADER = "timestamp,open,high,low,close,volume"
ROW_A = "2024-01-01T00:00:00Z,100.5,110.25,90.125,105.0,12.5"
ROW_B = "2024-01-01T01:00:00Z,105.0,106.0,104.0,105.5,3.0"
ROW_C = "2024-01-01T02:00:00Z,105.5,107.0,105.0,106.0,0.0"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _csv(*lines: str, header: str = HEADER, newline: str = "\n") -> bytes:
    return newline.join([header, *lines]).encode() + newline.encode()


def _utc(*stamps: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([pd.Timestamp(s, tz="UTC") for s in stamps], name="timestamp")


def _candles(index: pd.DatetimeIndex, rows: list[list[float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(COLUMNS), dtype="float64")
    frame.index = index.as_unit("ms").rename("timestamp")
    return frame


def _assert_ohlcv(frame: pd.DataFrame) -> None:
    """The shape every parsed file must have, whatever it came from."""
    assert list(frame.columns) == list(COLUMNS)
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    assert isinstance(frame.index, pd.DatetimeIndex)
    assert str(frame.index.tz) == "UTC"
    assert frame.index.name == "timestamp"
    assert frame.index.is_monotonic_increasing
    assert frame.index.is_unique
    values = frame.to_numpy()
    assert np.isfinite(values).all()
    assert (frame[["open", "high", "low", "close"]].to_numpy() > 0).all()
    assert (frame["volume"].to_numpy() >= 0).all()


def _read(data: bytes) -> CsvData:
    result = read_ohlcv_csv(data)
    _assert_ohlcv(result.candles)
    return result


# --- timestamps as people have them ----------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "expected", "timeframe"),
    [
        # date only
        ("2024-01-01", "2024-01-02", ("2024-01-01", "2024-01-02"), "1d"),
        # date and time with a space, naive: taken as UTC
        ("2024-01-01 00:00:00", "2024-01-01 01:00:00", ("2024-01-01", "2024-01-01 01:00"), "1h"),
        # T separator and Z
        ("2024-01-01T00:00:00Z", "2024-01-01T04:00:00Z", ("2024-01-01", "2024-01-01 04:00"), "4h"),
        # explicit +00:00 offset
        (
            "2024-01-01T00:00:00+00:00",
            "2024-01-01T00:01:00+00:00",
            ("2024-01-01", "2024-01-01 00:01"),
            "1m",
        ),
        # another offset is converted to UTC
        (
            "2024-01-01T02:00:00+02:00",
            "2024-01-01T03:00:00+02:00",
            ("2024-01-01", "2024-01-01 01:00"),
            "1h",
        ),
        # milliseconds in the ISO string
        (
            "2024-01-01T00:00:00.000Z",
            "2024-01-08T00:00:00.000Z",
            ("2024-01-01", "2024-01-08"),
            "1w",
        ),
        # basic ISO-8601 dates: numbers, but not epoch seconds in 1970
        ("20240101", "20240102", ("2024-01-01", "2024-01-02"), "1d"),
        # epoch seconds
        ("1704067200", "1704153600", ("2024-01-01", "2024-01-02"), "1d"),
        # epoch milliseconds (Binance "Open time")
        ("1704067200000", "1704070800000", ("2024-01-01", "2024-01-01 01:00"), "1h"),
        # epoch microseconds
        ("1704067200000000", "1704067260000000", ("2024-01-01", "2024-01-01 00:01"), "1m"),
        # epoch seconds with a fraction are kept, not truncated
        ("1704067200.5", "1704067201.5", ("2024-01-01 00:00:00.5", "2024-01-01 00:00:01.5"), "1s"),
    ],
)
def test_timestamp_formats(
    first: str, second: str, expected: tuple[str, str], timeframe: str
) -> None:
    result = _read(_csv(f"{first},1,2,0.5,1.5,10", f"{second},1.5,2.5,1,2,20"))
    assert list(result.candles.index) == list(_utc(*expected))
    assert result.timeframe == timeframe
    assert result.candles["volume"].tolist() == [10.0, 20.0]


@pytest.mark.parametrize(
    ("header", "row"),
    [
        # title case, as spreadsheets write it
        ("Date,Open,High,Low,Close,Volume", "{t},1,2,0.5,1.5,10"),
        # shouting, and Vol
        ("TIMESTAMP,OPEN,HIGH,LOW,CLOSE,VOL", "{t},1,2,0.5,1.5,10"),
        # Binance kline export: Open time, and extra columns that must be ignored
        (
            "Open time,Open,High,Low,Close,Volume,Close time,Quote asset volume,Number of trades",
            "{t},1,2,0.5,1.5,10,1704070799999,15.0,42",
        ),
        # every header quoted, with spaces inside the quotes
        ('"Date"," Open ","High","Low","Close","Volume"', "{t},1,2,0.5,1.5,10"),
        # free column order
        ("close,volume,Timestamp,high,open,low", "1.5,10,{t},2,1,0.5"),
        # one-letter names
        ("time,o,h,l,c,v", "{t},1,2,0.5,1.5,10"),
        # pandas' to_csv of a frame whose index has no name
        (",open,high,low,close,volume", "{t},1,2,0.5,1.5,10"),
        # Datetime plus Last for close, and an extra Symbol column first
        ("Symbol,Datetime,Open,High,Low,Last,Volume", "BTCUSDT,{t},1,2,0.5,1.5,10"),
    ],
)
def test_header_variants(header: str, row: str) -> None:
    data = _csv(row.format(t="2024-01-01"), row.format(t="2024-01-02"), header=header)
    result = _read(data)
    assert list(result.candles.index) == list(_utc("2024-01-01", "2024-01-02"))
    assert result.candles.iloc[0].tolist() == [1.0, 2.0, 0.5, 1.5, 10.0]


@pytest.mark.parametrize(
    "data",
    [
        # byte-order mark that Excel writes before the header
        b"\xef\xbb\xbf" + _csv(ROW_A, ROW_B, ROW_C),
        # Windows line endings
        _csv(ROW_A, ROW_B, ROW_C, newline="\r\n"),
        # BOM and CRLF together
        b"\xef\xbb\xbf" + _csv(ROW_A, ROW_B, ROW_C, newline="\r\n"),
        # classic Mac line endings (bare CR)
        _csv(ROW_A, ROW_B, ROW_C, newline="\r"),
        # no newline at the end of the file
        _csv(ROW_A, ROW_B, ROW_C)[:-1],
        # blank lines before the header, between rows and at the end
        b"\n\n" + _csv(ROW_A, "", ROW_B, "   ", ROW_C, "", ""),
        # spaces around cells
        _csv(*(" " + ", ".join(r.split(",")) + " " for r in (ROW_A, ROW_B, ROW_C))),
        # rows longer than the header: the extra fields are ignored
        _csv(ROW_A + ",x,y", ROW_B + ",", ROW_C),
        # rows listed newest first
        _csv(ROW_C, ROW_A, ROW_B),
    ],
)
def test_file_layouts(data: bytes) -> None:
    result = _read(data)
    expected = _candles(
        _utc("2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 02:00"),
        [
            [100.5, 110.25, 90.125, 105.0, 12.5],
            [105.0, 106.0, 104.0, 105.5, 3.0],
            [105.5, 107.0, 105.0, 106.0, 0.0],
        ],
    )
    pd.testing.assert_frame_equal(result.candles, expected)
    assert (result.timeframe, result.calendar, result.duplicates) == ("1h", "24/7", 0)


def test_source_kinds(tmp_path) -> None:
    data = _csv(ROW_A, ROW_B, ROW_C)
    path = tmp_path / "candles.csv"
    path.write_bytes(data)
    from_bytes = read_ohlcv_csv(data)
    # a path as str and as Path, and a binary file object such as Streamlit's upload
    for source in (str(path), path, io.BytesIO(data)):
        pd.testing.assert_frame_equal(read_ohlcv_csv(source).candles, from_bytes.candles)


def test_duplicates_dropped_counted_and_larger_volume_kept() -> None:
    data = _csv(
        "2024-01-01T02:00:00Z,3,3,3,3,3",
        "2024-01-01T00:00:00Z,1,1,1,1,1",
        "2024-01-01T01:00:00Z,2,2,2,2,2",
        "2024-01-01T00:00:00Z,9,9,9,9,9",
        "2024-01-01T02:00:00Z,8,8,8,8,8",
        "2024-01-01T00:00:00Z,7,7,7,7,7",
        "2024-01-01T01:00:00Z,4,4,4,4,2",
    )
    result = _read(data)
    assert result.duplicates == 4
    # the larger volume wins (a fragment never beats the real candle); on a tie of
    # volumes (01:00) the row seen last wins, as with overlapping exchange pages
    assert result.candles["close"].tolist() == [9.0, 4.0, 8.0]
    # every conflicting pair is recorded for the quality report
    assert len(result.candles.attrs["duplicate_conflicts"]) == 4
    assert result.candles.attrs["duplicate_rows"] == 4
    assert list(result.candles.index) == list(
        _utc("2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 02:00")
    )


def test_timestamps_equal_below_a_millisecond_count_as_duplicates() -> None:
    # epoch microseconds 1 us apart become one millisecond candle: that is a duplicate too
    data = _csv(
        "1704067200000001,1,1,1,1,1", "1704067200000002,2,2,2,2,2", "1704067260000000,3,3,3,3,3"
    )
    result = _read(data)
    assert (len(result.candles), result.duplicates) == (2, 1)
    assert result.candles["close"].tolist() == [2.0, 3.0]


@pytest.mark.parametrize(
    ("step", "periods", "timeframe"),
    [
        ("1min", 30, "1m"),  # one-minute candles
        ("5min", 30, "5m"),  # five-minute candles
        ("1h", 30, "1h"),  # hourly
        ("4h", 30, "4h"),  # four-hourly
        ("1D", 30, "1d"),  # daily, 24/7
        ("7D", 30, "1w"),  # weekly
        ("MS", 12, "1M"),  # calendar months (28 to 31 days apart)
        ("30s", 30, "30s"),  # seconds
    ],
)
def test_timeframe_inferred(step: str, periods: int, timeframe: str) -> None:
    index = pd.date_range("2024-01-01", periods=periods, freq=step, tz="UTC")
    rows = [f"{t:%Y-%m-%dT%H:%M:%SZ},1,2,0.5,1.5,10" for t in index]
    assert _read(_csv(*rows)).timeframe == timeframe
    assert infer_timeframe(index) == timeframe


def test_timeframe_inferred_despite_gaps() -> None:
    # a few missing candles do not change the most common spacing
    index = pd.date_range("2024-01-01", periods=50, freq="4h", tz="UTC").delete([5, 6, 7, 20])
    assert infer_timeframe(index) == "4h"


@pytest.mark.parametrize(
    ("index", "calendar"),
    [
        # stock-market export: weekdays only, three weeks
        (pd.bdate_range("2024-01-01", periods=15, tz="UTC"), "business"),
        # crypto: every day
        (pd.date_range("2024-01-01", periods=15, freq="D", tz="UTC"), "24/7"),
        # weekdays only but too few rows to tell
        (pd.bdate_range("2024-01-01", periods=5, tz="UTC"), "24/7"),
        # hourly candles on weekdays are not a daily business calendar
        (pd.date_range("2024-01-01", periods=48, freq="h", tz="UTC"), "24/7"),
    ],
)
def test_calendar(index: pd.DatetimeIndex, calendar: str) -> None:
    rows = [f"{t:%Y-%m-%dT%H:%M:%SZ},1,2,0.5,1.5,10" for t in index]
    assert _read(_csv(*rows)).calendar == calendar


# --- zero or negative prices: placeholders, dropped and listed ---------------------------


def test_zero_and_negative_price_rows_dropped_and_listed() -> None:
    data = _csv(
        ROW_A,
        "2024-01-01T01:00:00Z,0,0,0,0,0",  # a provider's placeholder
        ROW_C,
        "2024-01-01T03:00:00Z,106,107,-1,106.5,2",  # a negative low
        "2024-01-01T04:00:00Z,106.5,108,106,107,4",
    )
    result = _read(data)
    assert len(result.candles) == 3
    assert list(result.nonpositive) == list(_utc("2024-01-01 01:00", "2024-01-01 03:00"))
    # recorded on the frame too, where the quality report finds it
    assert dropped_nonpositive(result.candles).equals(result.nonpositive)
    assert result.duplicates == 0
    assert result.timeframe == "1h"


def test_placeholder_beside_a_priced_row_is_a_duplicate() -> None:
    result = _read(_csv(ROW_A, "2024-01-01T00:00:00Z,0,0,0,0,0", ROW_B))
    assert result.candles["close"].tolist() == [105.0, 105.5]
    assert (result.duplicates, len(result.nonpositive)) == (1, 0)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        # nothing but placeholders
        (
            ("2024-01-01T00:00:00Z,0,0,0,0,0", "2024-01-01T01:00:00Z,0,0,0,0,0"),
            "Every row of the file has a zero or negative price (2 rows, the first on line 2)",
        ),
        # one priced candle is not enough to tell the timeframe
        (
            ("2024-01-01T00:00:00Z,0,0,0,0,0", ROW_B),
            "Only one candle of the file has prices above zero (1 row has a zero or negative",
        ),
    ],
)
def test_files_of_placeholders_are_refused_in_one_line(rows: tuple[str, ...], message: str) -> None:
    with pytest.raises(DataFormatError) as caught:
        read_ohlcv_csv(_csv(*rows))
    text = str(caught.value)
    assert text.startswith(message)
    assert "\n" not in text
    assert "Export" in text  # says what to do
    assert caught.value.row == 2


# --- round trips --------------------------------------------------------------------------


def test_write_format_and_round_trip(tmp_path) -> None:
    frame = _candles(
        _utc("2024-01-01", "2024-01-02"),
        [[0.1 + 0.2, 1 / 3, 1e-9, 42123.456789012345, 1e20], [5e-324, 2.5, 1e-300, 7.0, 0.0]],
    )
    buffer = io.StringIO()
    write_ohlcv_csv(frame, buffer)
    text = buffer.getvalue()
    assert text.splitlines()[0] == HEADER
    assert text.splitlines()[1].startswith("2024-01-01T00:00:00Z,0.30000000000000004,")
    assert "\r" not in text
    path = tmp_path / "out.csv"
    write_ohlcv_csv(frame, path)
    assert path.read_text() == text
    pd.testing.assert_frame_equal(read_ohlcv_csv(path).candles, frame)


def test_round_trip_keeps_milliseconds() -> None:
    # whole seconds would silently move every candle off its open time (one-second
    # candles opening a quarter second past, with one missing)
    frame = _candles(
        _utc("2024-01-01 00:00:00.250", "2024-01-01 00:00:01.250", "2024-01-01 00:00:03.250"),
        [[1, 1, 1, 1, 1], [2, 2, 2, 2, 2], [3, 3, 3, 3, 3]],
    )
    buffer = io.StringIO()
    write_ohlcv_csv(frame, buffer)
    assert buffer.getvalue().splitlines()[1].startswith("2024-01-01T00:00:00.250Z,")
    pd.testing.assert_frame_equal(read_ohlcv_csv(buffer.getvalue().encode()).candles, frame)


SHARED_FILES = [
    # name, timeframe, rows
    ("binance_BTC-USDT_1d.csv", "1d", 3065),
    ("binance_ETH-USDT_1d.csv", "1d", 3065),
    ("binance_BTC-USDT_4h.csv", "4h", 18371),
]


@pytest.mark.parametrize(("name", "timeframe", "rows"), SHARED_FILES)
def test_real_binance_files_read_exactly(name: str, timeframe: str, rows: int) -> None:
    reference = load_shared_csv(name)
    if reference is None:
        pytest.skip(f"shared data {name} is not available")
    path = SHARED_DATA / name
    result = read_ohlcv_csv(path)
    _assert_ohlcv(result.candles)
    assert (result.timeframe, result.calendar, result.duplicates) == (timeframe, "24/7", 0)
    assert len(result.candles) == rows
    # values equal pandas' own parse of the file, bit for bit
    np.testing.assert_array_equal(result.candles.to_numpy(), reference.to_numpy())
    assert result.candles.index.equals(reference.index.as_unit("ms"))
    # and writing them back gives the very same bytes
    buffer = io.StringIO()
    write_ohlcv_csv(result.candles, buffer)
    assert buffer.getvalue() == path.read_text()


# --- errors that name the line and the column ------------------------------------------

ERRORS = [
    # non-numeric price, on the third line
    (_csv(ROW_A, "2024-01-01T01:00:00Z,105,abc,104,105.5,3"), 3, "high", "'abc' is not a number"),
    # empty value
    (_csv("2024-01-01T00:00:00Z,1,2,0.5,1.5,", ROW_B), 2, "volume", "an empty value"),
    # negative volume (a negative price is a placeholder row, dropped: see below)
    (_csv(ROW_A, ROW_B, "2024-01-01T02:00:00Z,1,2,0.5,1.5,-1"), 4, "volume", "negative number"),
    # infinity
    (_csv(ROW_A, "2024-01-01T01:00:00Z,inf,2,0.5,1.5,1"), 3, "open", "'inf' is not a number"),
    # NaN written out
    (_csv("2024-01-01T00:00:00Z,1,2,0.5,NaN,1", ROW_B), 2, "close", "'NaN' is not a number"),
    # number too large for a float
    (_csv(ROW_A, "2024-01-01T01:00:00Z,1,1e400,0.5,1.5,1"), 3, "high", "not a number"),
    # thousands separator inside a quoted cell
    (_csv(ROW_A, '2024-01-01T01:00:00Z,"42,12,3",2,0.5,1.5,1'), 3, "open", "not a number"),
    # a date that is not a date
    (_csv(ROW_A, "yesterday,1,2,0.5,1.5,1"), 3, "timestamp", "'yesterday' is not a date"),
    # impossible calendar date
    (_csv(ROW_A, "2024-02-30T00:00:00Z,1,2,0.5,1.5,1"), 3, "timestamp", "is not a date"),
    # a negative number among dates: ISO-8601 would read it as a year BC
    (_csv(ROW_A, "-5,1,2,0.5,1.5,1"), 3, "timestamp", "'-5' is not a date"),
    # empty timestamp
    (_csv(ROW_A, ",1,2,0.5,1.5,1"), 3, "timestamp", "an empty value is not a date"),
    # a date among epoch numbers: the odd one out is named, not the first row
    (
        _csv("1704067200,1,2,0.5,1.5,1", "1704070800,1,2,0.5,1.5,1", "2024-01-01,1,2,0.5,1.5,1"),
        4,
        "timestamp",
        "is not a valid time",
    ),
    # negative epoch
    (_csv("1704067200,1,2,0.5,1.5,1", "-1704070800,1,2,0.5,1.5,1"), 3, "timestamp", "valid time"),
    # epoch beyond any unit
    (_csv("1704067200,1,2,0.5,1.5,1", "1e19,1,2,0.5,1.5,1"), 3, "timestamp", "valid time"),
    # the column is named as the header writes it
    (_csv("2024-01-01,1,x,0.5,1.5,1", header="Date,Open,HIGH,Low,Close,Vol"), 2, "HIGH", "'x'"),
    # blank lines still count as lines
    (_csv(ROW_A, "", "", "2024-01-01T01:00:00Z,1,2,0.5,oops,1"), 5, "close", "'oops'"),
    # Windows line endings count one line each
    (_csv(ROW_A, ROW_B, "bad,1,2,0.5,1.5,1", newline="\r\n"), 4, "timestamp", "'bad'"),
    # short row: the first missing column is named
    (_csv(ROW_A, "2024-01-01T01:00:00Z,1,2"), 3, "low", "has 3 fields but the header has 6"),
    # short row even though the field it lacks is an ignored one: fields could have shifted
    (_csv(f"{ROW_A},x", ROW_B, header=HEADER + ",note"), 3, "note", "no value for 'note'"),
    # missing column: header is line 1, the message lists what the header has
    (
        b"Date,Open,High,Low,Close\n2024-01-01,1,2,0.5,1.5\n",
        1,
        "volume",
        "Missing column: volume. The header has 'Date', 'Open', 'High', 'Low', 'Close'",
    ),
    # several columns missing
    (b"when,price\n2024-01-01,1\n", 1, "timestamp", "Missing columns: timestamp, open, high"),
]


@pytest.mark.parametrize(("data", "row", "column", "message"), ERRORS)
def test_errors_name_row_and_column(data: bytes, row: int, column: str, message: str) -> None:
    with pytest.raises(DataFormatError) as caught:
        read_ohlcv_csv(data)
    assert (caught.value.row, caught.value.column) == (row, column)
    text = str(caught.value)
    assert message in text
    if row > 1:
        assert f"Line {row}" in text
    # every message says what to do
    assert any(hint in text for hint in ("Use ", "must be", "Name the columns", "needs a value"))


@pytest.mark.parametrize(
    ("data", "row", "message"),
    [
        # nothing at all
        (b"", None, "The file is empty"),
        # only whitespace and blank lines
        (b"  \n\r\n\n", None, "The file is empty"),
        # just a byte-order mark
        (b"\xef\xbb\xbf", None, "The file is empty"),
        # header only
        (_csv(), 2, "header but no candles"),
        # header followed only by blank lines
        (_csv("", " ", ",,,,,"), 2, "header but no candles"),
        # Latin-1 export: the bad byte is on line 3
        (
            _csv(ROW_A, "2024-01-01T01:00:00Z,1,2,0.5,1.5,1,caf\xe9").replace(b"\xc3\xa9", b"\xe9"),
            3,
            "not UTF-8",
        ),
        # UTF-16 export from Excel
        (_csv(ROW_A).decode().encode("utf-16"), 1, "not UTF-8"),
        # pickle data is bytes, not text
        (pickle.dumps({"a": 1}), 1, "not UTF-8"),
        # a single candle: no timeframe
        (_csv(ROW_A), None, "at least two"),
        # every timestamp the same: one candle after dropping duplicates
        (_csv(ROW_A, ROW_A, ROW_A), None, "at least two"),
        # tick data
        (
            _csv("2024-01-01T00:00:00.1Z,1,1,1,1,1", "2024-01-01T00:00:00.2Z,1,1,1,1,1"),
            None,
            "less than a second apart",
        ),
        # a cell longer than the csv module allows
        (
            _csv(ROW_A, "2024-01-01T01:00:00Z," + "1" * 200_000 + ",2,0.5,1.5,1"),
            3,
            "cannot be read as CSV",
        ),
    ],
)
def test_unusable_files(data: bytes, row: int | None, message: str) -> None:
    with pytest.raises(DataFormatError, match=message) as caught:
        read_ohlcv_csv(data)
    assert caught.value.row == row
    assert caught.value.column is None


@pytest.mark.parametrize("kind", ["bytes", "path", "stream"])
def test_size_limit(kind: str, tmp_path) -> None:
    data = _csv(ROW_A, ROW_B, ROW_C)
    path = tmp_path / "big.csv"
    path.write_bytes(data)

    def source():
        return {"bytes": data, "path": path, "stream": io.BytesIO(data)}[kind]

    # exactly at the limit is fine
    assert len(read_ohlcv_csv(source(), max_bytes=len(data)).candles) == 3
    with pytest.raises(DataFormatError) as caught:
        read_ohlcv_csv(source(), max_bytes=100)
    assert (caught.value.row, caught.value.column) == (None, None)
    text = str(caught.value)
    assert "larger than the 100 bytes limit" in text
    assert "Upload a shorter range or a longer timeframe" in text
    # a stream is only read one byte past the limit, so its size is not claimed
    assert ("more than 100 bytes" if kind == "stream" else f"({len(data)} bytes)") in text


def test_size_limit_default_in_megabytes() -> None:
    assert MAX_CSV_BYTES == 10 * 1024 * 1024
    with pytest.raises(DataFormatError, match=r"the 10 MB limit \(more than 10 MB\)"):
        read_ohlcv_csv(io.BytesIO(b"x" * (MAX_CSV_BYTES + 50)))


# --- nothing in a file is executed --------------------------------------------------------

HOSTILE = [
    "=cmd|' /C calc'!A0",  # spreadsheet formula injection
    "@SUM(1+1)*cmd|' /C calc'!A0",  # the same, @-prefixed
    "__import__('os').system('touch {sentinel}')",  # Python expression
    "!!python/object/apply:os.system ['touch {sentinel}']",  # YAML tag
    "cos\nsystem\n(S'touch {sentinel}'\ntR.",  # protocol-0 pickle text
    "${{jndi:ldap://127.0.0.1/a}}",  # log4shell-style lookup
]


@pytest.fixture
def no_side_effects(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """Fail loudly if anything tries to unpickle, run a shell or spawn a process."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the CSV reader tried to execute or unpickle something")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(os, "system", forbidden)
    monkeypatch.setattr(subprocess, "Popen", forbidden)
    return tmp_path / "sentinel"


@pytest.mark.parametrize("payload", HOSTILE)
def test_hostile_cells_in_a_price_are_rejected(payload: str, no_side_effects) -> None:
    cell = '"' + payload.format(sentinel=no_side_effects).replace('"', '""') + '"'
    with pytest.raises(DataFormatError) as caught:
        read_ohlcv_csv(_csv(ROW_A, f"2024-01-01T01:00:00Z,1,2,0.5,{cell},1"))
    assert (caught.value.row, caught.value.column) == (3, "close")
    assert not no_side_effects.exists()


@pytest.mark.parametrize("payload", HOSTILE)
def test_hostile_cells_in_ignored_columns_are_plain_text(payload: str, no_side_effects) -> None:
    cell = '"' + payload.format(sentinel=no_side_effects).replace('"', '""') + '"'
    data = _csv(f"{ROW_A},{cell}", f"{ROW_B},{cell}", header=HEADER + ",note")
    result = _read(data)
    assert len(result.candles) == 2
    assert "note" not in result.candles.columns
    assert not no_side_effects.exists()


@pytest.mark.parametrize("payload", HOSTILE)
def test_hostile_timestamps_are_rejected(payload: str, no_side_effects) -> None:
    cell = '"' + payload.format(sentinel=no_side_effects).replace('"', '""') + '"'
    with pytest.raises(DataFormatError) as caught:
        read_ohlcv_csv(_csv(ROW_A, ROW_B, f"{cell},1,2,0.5,1.5,1"))
    assert (caught.value.row, caught.value.column) == (4, "timestamp")
    assert not no_side_effects.exists()


# --- property-based ----------------------------------------------------------------------


def _check_outcome(data: bytes) -> None:
    """Either a valid result or a DataFormatError; anything else fails the test."""
    try:
        result = read_ohlcv_csv(data)
    except DataFormatError as exc:
        error = exc
    else:
        error = None
    if error is not None:
        assert str(error)
        assert error.row is None or error.row >= 1
        return
    _assert_ohlcv(result.candles)
    assert len(result.candles) >= 2
    assert result.duplicates >= 0
    assert not result.nonpositive.isin(result.candles.index).any()
    assert result.calendar in ("24/7", "business")
    assert timeframe_seconds(result.timeframe) > 0


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _check_outcome(data)


@FUZZ
@given(st.text(max_size=400))
def test_fuzz_arbitrary_text(text: str) -> None:
    _check_outcome(text.encode("utf-8", errors="surrogatepass"))


HEADER_NAMES = [
    "timestamp", "Date", "TIME", "Open time", "open", "OPEN", "o", "high", "High", "h", "low",
    "l", "close", "Close", "last", "volume", "Vol", "v", "", "Unnamed: 0", "index", "symbol",
    "close time",
]  # fmt: skip
CELLS = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "1",
            "0",
            "-1",
            "1.5",
            "1e400",
            "-0",
            "nan",
            "inf",
            "-inf",
            "1e-320",
            "2024-01-01",
            "2024-01-01T00:00:00Z",
            "2024-02-30",
            "0001-01-01",
            "9999-12-31",
            "10000-01-01",
            "1704067200",
            "1704067200000",
            "1704067200000000",
            "1e19",
            "9e18",
            "99999999999999999999999",
            "1704067200.5",
            '"',
            '""',
            "a,b",
            "=1+1",
            "True",
            "\x00",
            "\ufeff",
            "2024-01-01T00:00:00+14:00",
            "1_000",
            "0x10",
            "١٢٣",
        ]
    ),  # fmt: skip
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats().map(repr),
    st.datetimes().map(lambda d: d.isoformat()),
    st.text(max_size=8),
)


@st.composite
def csvish(draw) -> bytes:
    """A header of likely and unlikely names, then ragged rows of likely and unlikely cells."""
    header = draw(st.lists(st.sampled_from(HEADER_NAMES) | st.text(max_size=6), max_size=8))
    rows = draw(st.lists(st.lists(CELLS, max_size=len(header) + 2), max_size=8))
    buffer = io.StringIO()
    writer = csv.writer(
        buffer,
        quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])),
        lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"])),
    )
    writer.writerow(header)
    writer.writerows(rows)
    prefix = draw(st.sampled_from(["", "\ufeff", "\n"]))
    return (prefix + buffer.getvalue()).encode("utf-8", errors="surrogatepass")


@FUZZ
@given(csvish())
def test_fuzz_csv_structures(data: bytes) -> None:
    _check_outcome(data)


@FUZZ
@given(
    st.sampled_from(["timestamp", "open", "high", "low", "close", "volume"]),
    st.lists(CELLS, min_size=2, max_size=6),
)
def test_fuzz_one_column_of_anything(column: str, cells: list[str]) -> None:
    # a well-formed file except for one column full of arbitrary cells
    base = pd.date_range("2024-01-01", periods=len(cells), freq="h", tz="UTC")
    rows = []
    for stamp, cell in zip(base, cells, strict=True):
        values = {"timestamp": f"{stamp:%Y-%m-%dT%H:%M:%SZ}", "open": "1", "high": "2",
                  "low": "0.5", "close": "1.5", "volume": "10"}  # fmt: skip
        values[column] = '"' + cell.replace('"', '""') + '"'
        rows.append(",".join(values[c] for c in ("timestamp", *COLUMNS)))
    _check_outcome(_csv(*rows))


TIMEFRAMES = st.sampled_from(["1m", "5m", "1h", "4h", "1d", "1w"])
# every price a file may hold: anything above MAX_PRICE is refused (see test_bounded_data.py)
PRICES = st.floats(min_value=0.0, max_value=MAX_PRICE, exclude_min=True, allow_nan=False)
VOLUMES = st.floats(min_value=0.0, max_value=1e300, allow_nan=False, allow_infinity=False)


@st.composite
def ohlcv_frames(draw, min_rows: int = 2, earliest: int = 0) -> pd.DataFrame:
    """Candles from ``earliest`` (epoch seconds) to 2096, on a timeframe's grid or not."""
    timeframe = draw(TIMEFRAMES)
    step = timeframe_seconds(timeframe)
    n = draw(st.integers(min_value=min_rows, max_value=30))
    low = -(-earliest // step)
    start = draw(st.integers(min_value=low, max_value=4_000_000_000 // step)) * step
    # whole milliseconds anywhere in a candle are allowed too
    offset_ms = draw(st.sampled_from([0, 0, 0, 250]))
    index = pd.to_datetime(
        [(start + i * step) * 1000 + offset_ms for i in range(n)], unit="ms", utc=True
    )
    values = draw(st.lists(st.tuples(*[PRICES] * 4, VOLUMES), min_size=n, max_size=n))
    return _candles(pd.DatetimeIndex(index), [list(v) for v in values])


@FUZZ
@given(ohlcv_frames())
def test_property_round_trip(frame: pd.DataFrame) -> None:
    buffer = io.StringIO()
    write_ohlcv_csv(frame, buffer)
    result = read_ohlcv_csv(buffer.getvalue().encode())
    pd.testing.assert_frame_equal(result.candles, frame)
    assert result.duplicates == 0
    step = (frame.index[1] - frame.index[0]).total_seconds()
    assert timeframe_seconds(result.timeframe) == step


BAD_NUMBERS = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "abc",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "1e400",
            "1 2",
            "1.2.3",
            "$5",
            "5%",
            "0x1f",
            "None",
            "null",
            "=1+1",
        ]
    ),  # fmt: skip
    st.text(alphabet=string.ascii_letters + " ;:!?$%&/()[]{}'", min_size=1, max_size=8).filter(
        lambda s: pd.isna(pd.to_numeric(s.strip(), errors="coerce"))
    ),
)
BAD_TIMES = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "yesterday",
            "2024-13-01",
            "2024-02-30",
            "31/01/2024",
            "-5",
            "1e400",
            "nan",
            "inf",
            "24:00",
            "None",
        ]
    ),  # fmt: skip
    st.text(alphabet=string.ascii_letters + " ;!?$%&/()", min_size=1, max_size=8).filter(
        lambda s: pd.isna(pd.to_datetime(s.strip(), errors="coerce", utc=True, format="ISO8601"))
    ),
)


@FUZZ
@given(
    # Epoch times before 2009 are refused on their own (a digit lost or added).
    ohlcv_frames(earliest=int(EARLIEST_EPOCH.value // 1_000_000_000)),
    st.sampled_from(["timestamp", *COLUMNS]),
    st.data(),
    st.sampled_from([("timestamp", *COLUMNS), ("Date", "Open", "High", "Low", "Close", "Vol")]),
    st.booleans(),
)
def test_property_one_corrupted_cell_is_named(
    frame: pd.DataFrame, column: str, data: st.DataObject, names: tuple[str, ...], epochs: bool
) -> None:
    buffer = io.StringIO()
    write_ohlcv_csv(frame, buffer)
    lines = buffer.getvalue().splitlines()
    lines[0] = ",".join(names)
    position = ("timestamp", *COLUMNS).index(column)
    body = [line.split(",") for line in lines[1:]]
    if epochs:  # epoch milliseconds instead of ISO dates
        for cells, stamp in zip(body, frame.index, strict=True):
            cells[0] = str(stamp.value // 1_000_000)
    target = data.draw(st.integers(min_value=0, max_value=len(body) - 1), label="row")
    if column == "timestamp":
        bad = data.draw(BAD_TIMES, label="bad")
    elif column == "volume":  # a negative price is no error: the row is dropped
        bad = data.draw(BAD_NUMBERS | st.sampled_from(["-1", "-0.5"]), label="bad")
    else:
        bad = data.draw(BAD_NUMBERS, label="bad")
    body[target][position] = bad
    text = "\n".join([lines[0], *(",".join(cells) for cells in body)]) + "\n"
    with pytest.raises(DataFormatError) as caught:
        read_ohlcv_csv(text.encode())
    assert caught.value.row == target + 2
    assert caught.value.column == names[position]
    assert f"Line {target + 2}" in str(caught.value)


def test_data_format_error_is_a_forecasting_error() -> None:
    # pages catch ForecastingError only: a bad upload must be one
    with pytest.raises(ForecastingError):
        read_ohlcv_csv(b"nonsense")
