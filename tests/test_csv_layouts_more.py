"""More layouts people have, read with their candles at the right open time, or refused by cause.

Close-time stamps (CoinMarketCap's export, Binance's close_time at 23:59:59.999), local
times across a daylight-saving change, Kraken's OHLCVT downloads, Excel day numbers, a space
after each comma, a header repeated where two files were joined, MetaTrader's separate Date
and Time columns, a daily file missing most of its days, and German column names.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.data.csvfile import COINMARKETCAP, KRAKEN, WITH_HEADER, read_ohlcv_csv
from forecasting.errors import DataFormatError
from forecasting.ohlcv import timeframe_offset

HEADER = "timestamp,open,high,low,close,volume"
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _opens(start: str, periods: int, timeframe: str = "1d") -> pd.DatetimeIndex:
    """Open times of ``periods`` candles from ``start``, as every OHLCV frame holds them."""
    step = timeframe_offset(timeframe)
    first = pd.Timestamp(start, tz="UTC")
    stamps = [first + step * i for i in range(periods)]
    return pd.DatetimeIndex(stamps, name="timestamp").as_unit("ms")


def _prices(periods: int, seed: int = 0) -> np.ndarray:
    """Rows of open, high, low, close, volume with two decimals."""
    rng = np.random.default_rng(seed)
    close = np.round(100 + rng.normal(0, 1, periods).cumsum(), 2)
    opened = np.round(close + rng.normal(0, 0.5, periods), 2)
    high = np.round(np.maximum(opened, close) + 1, 2)
    low = np.round(np.minimum(opened, close) - 1, 2)
    volume = np.round(rng.uniform(1, 50, periods), 2)
    return np.column_stack([opened, high, low, close, volume])


def _cells(row: np.ndarray, separator: str = ",") -> str:
    return separator.join(repr(float(v)) for v in row)


def _refusal(data: bytes) -> DataFormatError:
    with pytest.raises(DataFormatError) as caught:
        read_ohlcv_csv(data)
    return caught.value


def _assert_values(candles: pd.DataFrame, values: np.ndarray) -> None:
    np.testing.assert_array_equal(
        candles[["open", "high", "low", "close", "volume"]].to_numpy(), values
    )


# --- close times ----------------------------------------------------------------------------


def test_coinmarketcap_export_is_read_by_its_open_times() -> None:
    # CoinMarketCap: ';'-separated, newest first, a "timestamp" that is the close time
    opens = _opens("2024-12-02", 5)
    values = _prices(5)
    lines = [
        '"timeOpen";"timeClose";"timeHigh";"timeLow";"name";"open";"high";"low";"close";'
        '"volume";"marketCap";"timestamp"'
    ]
    for stamp, row in reversed(list(zip(opens, values, strict=True))):
        close = stamp + pd.Timedelta(days=1) - pd.Timedelta(milliseconds=1)
        iso = f"{stamp:%Y-%m-%dT%H:%M:%S.000Z}"
        closing = f"{close:%Y-%m-%dT%H:%M:%S.999Z}"
        lines.append(f'"{iso}";"{closing}";"{iso}";"{iso}";"2781";{_cells(row, ";")};1.2E12;'
                     f'"{closing}"')  # fmt: skip
    data = read_ohlcv_csv(("\n".join(lines) + "\n").encode())
    assert data.format == COINMARKETCAP
    assert data.timeframe == "1d"
    assert data.candles.index.equals(opens)
    _assert_values(data.candles, values)


@pytest.mark.parametrize(
    "open_name",
    [
        "timeOpen",  # CoinMarketCap
        "time_open",  # CoinAPI and many scripts
        "open_time",  # Binance's dumps with a header
        "Open time",  # Binance's web export
        "opentime",
    ],
)
@pytest.mark.parametrize("close_name", ["timestamp", "timeClose", "close_time", "Close time"])
def test_an_open_time_column_wins_over_any_close_time_column(
    open_name: str, close_name: str
) -> None:
    opens = _opens("2024-03-01T00:00", 4, "1h")
    values = _prices(4)
    rows = [f"{close_name},open,high,low,close,volume,{open_name}"]
    for stamp, row in zip(opens, values, strict=True):
        close = stamp + pd.Timedelta(hours=1) - pd.Timedelta(milliseconds=1)
        rows.append(f"{close.value // 10**6},{_cells(row)},{stamp.value // 10**6}")
    data = read_ohlcv_csv(("\n".join(rows) + "\n").encode())
    assert data.candles.index.equals(opens)
    assert data.timeframe == "1h"
    _assert_values(data.candles, values)


def test_a_close_time_column_alone_is_read_by_the_stated_rule() -> None:
    # Close times on the boundary (the next candle's open): open = close - one timeframe
    opens = _opens("2024-06-01T00:00", 6, "4h")
    values = _prices(6)
    rows = ["Close time,open,high,low,close,volume"]
    for stamp, row in zip(opens, values, strict=True):
        rows.append(f"{stamp + pd.Timedelta(hours=4):%Y-%m-%d %H:%M},{_cells(row)}")
    data = read_ohlcv_csv(("\n".join(rows) + "\n").encode())
    assert data.candles.index.equals(opens)
    assert any(
        "named as the close time" in note and "close time - 4h" in note for note in data.notes
    )


TIMEFRAMES = ["1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d", "3d",
              "1w", "1M"]  # fmt: skip


@st.composite
def close_stamped(draw: st.DrawFn) -> tuple[str, pd.DatetimeIndex, bytes, str]:
    """A file stamped with close times 1 ms or 1 s before each candle's end."""
    timeframe = draw(st.sampled_from(TIMEFRAMES))
    before = draw(st.sampled_from(["1 ms", "1 s"] if timeframe != "1s" else ["1 ms"]))
    written = draw(st.sampled_from(["epoch", "iso"]))
    periods = draw(st.integers(min_value=3, max_value=40))
    day = draw(st.dates(min_value=pd.Timestamp("2018-01-01").date(),
                        max_value=pd.Timestamp("2030-01-01").date()))  # fmt: skip
    start = pd.Timestamp(day)
    if timeframe == "1M":
        start = start.replace(day=1)
    elif timeframe == "1w":
        start -= pd.Timedelta(days=start.day_of_week)  # Monday, as exchanges open weeks
    elif not timeframe.endswith("d"):
        start += pd.Timedelta(minutes=draw(st.integers(0, 23)) * 60)
    opens = _opens(str(start), periods, timeframe)
    ends = pd.DatetimeIndex(opens + timeframe_offset(timeframe)) - pd.Timedelta(before)
    values = _prices(periods, seed=periods)
    rows = [HEADER]
    for stamp, row in zip(ends, values, strict=True):
        if written == "epoch":
            cell = str(stamp.value // 10**6 if before == "1 ms" else stamp.value // 10**9)
        else:
            cell = f"{stamp:%Y-%m-%dT%H:%M:%S}" + (".999Z" if before == "1 ms" else "Z")
        rows.append(f"{cell},{_cells(row)}")
    return timeframe, opens, ("\n".join(rows) + "\n").encode(), before


@PROPERTY
@given(close_stamped())
def test_close_time_stamps_are_read_as_the_candles_open_times(
    case: tuple[str, pd.DatetimeIndex, bytes, str],
) -> None:
    timeframe, opens, data, before = case
    read = read_ohlcv_csv(data)
    assert read.candles.index.equals(opens)
    assert read.timeframe == timeframe
    rule = f"close time + {before} - {timeframe}"
    assert any("close times" in note and rule in note for note in read.notes)


def test_open_times_that_merely_end_in_59_minutes_are_kept() -> None:
    # 23:59:00 is no close time (1 s before a minute would be 23:59:59)
    opens = _opens("2024-01-01T23:59", 5, "1d")
    text = "\n".join([HEADER, *(f"{t:%Y-%m-%dT%H:%M:%SZ},1,2,0.5,1.5,3" for t in opens)])
    data = read_ohlcv_csv(text.encode())
    assert data.candles.index.equals(opens)
    assert not any("close times" in note for note in data.notes)


# --- local time with daylight saving --------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "where"),
    [
        ("Europe/Berlin", "2024-10-27", "Europe"),  # 02:00 local comes twice
        ("America/New_York", "2024-11-03", "the US"),  # 01:00 local comes twice
    ],
)
def test_local_times_repeated_when_clocks_go_back_are_named(
    zone: str, day: str, where: str
) -> None:
    utc = _opens(f"{day}T00:00", 36, "1h") - pd.Timedelta(hours=12)
    local = utc.tz_convert(zone).tz_localize(None)
    values = _prices(36)
    rows = [
        HEADER,
        *(f"{t:%Y-%m-%d %H:%M},{_cells(v)}" for t, v in zip(local, values, strict=True)),
    ]
    data = read_ohlcv_csv(("\n".join(rows) + "\n").encode())
    repeated = local[local.duplicated()][0]
    assert data.duplicates == 1
    note = next(n for n in data.notes if "more than once" in n)
    assert f"The repeated {repeated:%H:%M} on {day}" in note
    assert f"when clocks go back in {where}" in note
    assert "local time with daylight saving. Export the times in UTC." in note


@PROPERTY
@given(
    st.integers(min_value=2010, max_value=2035),
    st.sampled_from([("Europe/Paris", "Europe"), ("America/Chicago", "the US")]),
    st.sampled_from(["10", "11"]),  # the month searched for the change
)
def test_any_autumn_clock_change_of_local_hourly_times_is_named(
    year: int, zone: tuple[str, str], month: str
) -> None:
    name, where = zone
    hours = pd.date_range(f"{year}-{month}-01", f"{year}-{int(month) + 1}-01", freq="h", tz="UTC")
    local = hours.tz_convert(name).tz_localize(None)
    stamps = list(dict.fromkeys(local))
    changed = len(stamps) < len(local)
    rows = [HEADER, *(f"{t:%Y-%m-%d %H:%M},1,2,0.5,1.5,{1 + i % 7}" for i, t in enumerate(local))]
    data = read_ohlcv_csv(("\n".join(rows) + "\n").encode())
    named = [n for n in data.notes if "when clocks go back" in n]
    assert bool(named) == changed
    if changed:
        assert f"in {where}" in named[0]


def test_repeated_times_with_an_offset_or_off_the_change_are_no_daylight_saving() -> None:
    for day, suffix in (("2024-10-27", "Z"), ("2024-10-20", "")):
        hours = _opens(f"{day}T00:00", 6, "1h")
        rows = [HEADER, *(f"{t:%Y-%m-%dT%H:%M}{suffix},1,2,0.5,1.5,3" for t in hours)]
        rows.append(f"{hours[2]:%Y-%m-%dT%H:%M}{suffix},1,2,0.5,1.4,1")
        data = read_ohlcv_csv(("\n".join(rows) + "\n").encode())
        assert any("more than once" in n for n in data.notes)
        assert not any("daylight saving" in n for n in data.notes)


@pytest.mark.parametrize(
    ("zone", "day", "where", "skipped"),
    [
        ("Europe/Berlin", "2024-03-31", "Europe", "02:00"),  # 02:00 local skipped
        ("America/Denver", "2024-03-10", "the US", "02:00"),  # 02:00 local skipped
    ],
)
def test_the_hour_skipped_in_spring_is_named(zone: str, day: str, where: str, skipped: str) -> None:
    utc = _opens(f"{day}T00:00", 30, "1h") - pd.Timedelta(hours=12)
    local = utc.tz_convert(zone).tz_localize(None)
    rows = [HEADER, *(f"{t:%Y-%m-%d %H:%M},1,2,0.5,1.5,3" for t in local)]
    data = read_ohlcv_csv(("\n".join(rows) + "\n").encode())
    assert len(data.candles) == 30
    end = (pd.Timestamp(f"{day} {skipped}") + pd.Timedelta(hours=1)).strftime("%H:%M")
    assert (
        f"No candle from {skipped} to {end} on {day}, the hour clocks skip when they go "
        f"forward in {where}: the times look like local time with daylight saving."
    ) in " ".join(data.notes)


# --- Kraken ---------------------------------------------------------------------------------


def test_kraken_ohlcvt_download_is_read_without_its_trades() -> None:
    opens = _opens("2024-12-02", 8, "1d")
    values = _prices(8)
    rows = [f"{t.value // 10**9},{_cells(v)},{1000 + i}" for i, (t, v) in
            enumerate(zip(opens, values, strict=True))]  # fmt: skip
    data = read_ohlcv_csv(("\n".join(rows) + "\n").encode())
    assert data.format == KRAKEN
    assert data.timeframe == "1d"
    assert data.candles.index.equals(opens)
    _assert_values(data.candles, values)
    assert any("count of trades ignored" in note for note in data.notes)


# --- messages with the right cause ----------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ("45628", "2024-12-02"),  # a date formatted as a number
        ("45628.5", "2024-12-02 12:00"),  # a date and time formatted as a number
    ],
)
def test_excel_day_numbers_are_named_as_such(cell: str, shown: str) -> None:
    days = [str(float(cell) + i) if "." in cell else str(int(cell) + i) for i in range(5)]
    text = "\n".join(["Date,Open,High,Low,Close,Volume", *(f"{d},1,2,0.5,1.5,3" for d in days)])
    error = _refusal(text.encode())
    assert (error.row, error.column) == (2, "Date")
    assert str(error).startswith(
        f"Line 2, column 'Date': '{cell}' looks like an Excel day number ({shown} in Excel)"
    )
    assert "Format the column as dates" in str(error)


def test_a_space_after_each_comma_is_read() -> None:
    opens = _opens("2024-12-02", 4)
    values = _prices(4)
    rows = [", ".join(f'"{n}"' for n in HEADER.split(","))]
    for stamp, row in zip(opens, values, strict=True):
        cells = [f"{stamp:%Y-%m-%dT%H:%M:%SZ}", *(repr(float(v)) for v in row)]
        rows.append(", ".join(f'"{c}"' for c in cells))
    data = read_ohlcv_csv(("\n".join(rows) + "\n").encode())
    assert data.candles.index.equals(opens)
    _assert_values(data.candles, values)


def test_a_header_repeated_where_files_were_joined_is_skipped() -> None:
    opens = _opens("2024-12-02", 6)
    values = _prices(6)
    body = [f"{t:%Y-%m-%d},{_cells(v)}" for t, v in zip(opens, values, strict=True)]
    text = "\n".join([HEADER, *body[:3], HEADER, *body[3:]])
    data = read_ohlcv_csv(text.encode())
    assert data.candles.index.equals(opens)
    assert data.duplicates == 0
    _assert_values(data.candles, values)
    assert "Line 5 repeats the header (files joined one after the other): skipped." in data.notes


def test_two_cryptodatadownload_files_joined_are_read() -> None:
    # each file has its banner line above its header; newest first in each
    banner = "https://www.CryptoDataDownload.com"
    header = "Unix,Date,Symbol,Open,High,Low,Close,Volume BTC,Volume USDT"
    opens = _opens("2024-12-02", 6)
    values = _prices(6)
    rows = [
        f"{t.value // 10**6},{t:%Y-%m-%d},BTCUSDT,{_cells(v[:4])},{float(v[4])!r},"
        f"{float(v[4] * v[3])!r}"
        for t, v in zip(opens, values, strict=True)
    ]
    text = "\n".join([banner, header, *rows[3:][::-1], banner, header, *rows[:3][::-1]])
    data = read_ohlcv_csv(text.encode())
    assert data.candles.index.equals(opens)
    _assert_values(data.candles, values)
    assert (
        "Line 7 repeats the header (files joined one after the other): skipped, with the title "
        "line above (line 6)."
    ) in data.notes


@pytest.mark.parametrize(
    ("header", "separator"),
    [
        ("Date,Time,Open,High,Low,Close,Volume", ","),  # MetaTrader 4 export
        ("<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<VOL>", "\t"),  # MetaTrader 5
    ],
)
def test_separate_date_and_time_columns_are_read_together(header: str, separator: str) -> None:
    opens = _opens("2025-11-17T12:00", 6, "4h")
    values = _prices(6)
    rows = [header]
    for stamp, row in zip(opens, values, strict=True):
        rows.append(f"{stamp:%Y.%m.%d}{separator}{stamp:%H:%M}{separator}{_cells(row, separator)}")
    data = read_ohlcv_csv(("\n".join(rows) + "\n").encode())
    assert data.candles.index.equals(opens)
    assert data.timeframe == "4h"
    _assert_values(data.candles, values)


def test_a_daily_file_missing_most_days_says_so() -> None:
    rng = np.random.default_rng(3)
    days = _opens("2024-12-02", 400)
    kept = np.sort(rng.choice(400, size=180, replace=False))
    kept = np.unique(np.concatenate([[0, 1, 2, 399], kept]))  # 1d steps recur
    stamps = days[kept]
    text = "\n".join([HEADER, *(f"{t:%Y-%m-%d},1,2,0.5,1.5,3" for t in stamps)])
    error = _refusal(text.encode())
    expected = 400
    missing = expected - len(stamps)
    assert str(error).startswith(
        f"Most candles are missing: the candles are whole numbers of 1d apart, but the file "
        f"has {len(stamps)} of the {expected} 1d candles from 2024-12-02 00:00 to "
        f"{days[-1]:%Y-%m-%d} 00:00 UTC ({missing} missing, {100 * missing / expected:.0f}%)"
    )
    assert "not a whole number" not in str(error)


def test_a_daily_file_with_no_two_days_in_a_row_counts_its_missing_days() -> None:
    # Gaps of 7, 12, 11 and 9 days: the median step (10 d) occurs nowhere, so it must not
    # be named as the file's timeframe; the candles are whole days apart.
    stamps = pd.DatetimeIndex(
        ["2025-11-27", "2025-12-04", "2025-12-16", "2025-12-27", "2026-01-05"], tz="UTC"
    )
    text = "\n".join([HEADER, *(f"{t:%Y-%m-%d},1,2,0.5,1.5,3" for t in stamps)])
    error = str(_refusal(text.encode()))
    assert error.startswith(
        "Most candles are missing: the candles are whole numbers of 1d apart, but the file "
        "has 5 of the 40 1d candles from 2025-11-27 00:00 to 2026-01-05 00:00 UTC (35 "
        "missing, 88%), so the median step, 10d, is no timeframe of the file (line 3 is 7 d "
        "after the candle before it)."
    )


# --- German headers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Datum;Eröffnung;Hoch;Tief;Schluss;Volumen",
        "Datum;Eröffnungskurs;Hoch;Tief;Schlusskurs;Umsatz",
        "DATUM;ERÖFFNUNG;TAGESHOCH;TAGESTIEF;SCHLUSSKURS;VOLUMEN",
    ],
)
def test_german_headers_are_recognised(header: str) -> None:
    opens = _opens("2024-12-02", 15)
    values = _prices(15)
    rows = ["\ufeff" + header]
    for stamp, row in zip(opens, values, strict=True):
        rows.append(f"{stamp:%d.%m.%Y};" + ";".join(repr(float(v)).replace(".", ",") for v in row))
    data = read_ohlcv_csv(("\n".join(rows) + "\n").encode())
    assert data.format == "semicolon-separated, decimal commas"
    assert data.candles.index.equals(opens)
    _assert_values(data.candles, values)


def test_a_plain_header_file_keeps_its_format_name() -> None:
    # the new names change nothing for the usual header
    opens = _opens("2024-12-02", 3)
    text = "\n".join([HEADER, *(f"{t:%Y-%m-%d},1,2,0.5,1.5,3" for t in opens)])
    data = read_ohlcv_csv(text.encode())
    assert data.format == WITH_HEADER
    assert data.candles.index.equals(opens)


def test_a_daily_conflict_on_the_autumn_change_day_is_no_daylight_saving() -> None:
    # a daily file has no hour to repeat: its conflict is no clock change
    days = _opens("2024-10-20", 10)
    rows = [HEADER, *(f"{t:%Y-%m-%d},1,2,0.5,1.5,3" for t in days), "2024-10-27,1,2,0.5,1.4,1"]
    data = read_ohlcv_csv(("\n".join(rows) + "\n").encode())
    assert any("2024-10-27 00:00 UTC" in n for n in data.notes)
    assert not any("daylight saving" in n for n in data.notes)
