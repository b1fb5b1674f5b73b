"""CSV files that used to be read wrong without a word: each is read right or refused by line.

Rows longer than the header (a comma inside an unquoted number), quoted decimal commas with
grouped thousands, mistyped dates, a candle off the timeframe's grid, and tar or nested
archives.
"""

from __future__ import annotations

import bz2
import gzip
import io
import tarfile
import zipfile

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting.data.csvfile import read_ohlcv_csv
from forecasting.errors import DataFormatError

HEADER = "timestamp,open,high,low,close,volume"
FUZZ = settings(max_examples=40, deadline=None)


def _daily(rows: list[str], start: str = "2024-05-01") -> bytes:
    """A daily file with one row of cells per day from ``start``."""
    days = pd.date_range(start, periods=len(rows), freq="D")
    body = [f"{day:%Y-%m-%d},{row}" for day, row in zip(days, rows, strict=True)]
    return ("\n".join([HEADER, *body]) + "\n").encode()


def _refusal(data: bytes) -> DataFormatError:
    with pytest.raises(DataFormatError) as caught:
        read_ohlcv_csv(data)
    return caught.value


# --- 1. rows with more fields than the header -------------------------------------------------


@pytest.mark.parametrize(
    ("row", "fields"),
    [
        # decimal commas unquoted: every value splits in two
        ("58000,25,58100,50,57900,00,58050,75,1178,43", 11),
        # thousands comma in the last column: the volume would read 1.0
        ("58000.25,58100.5,57900,58050.75,1,178.43", 7),
    ],
)
def test_a_row_longer_than_the_header_with_numbers_is_refused(row: str, fields: int) -> None:
    error = _refusal(_daily([row] * 5))
    assert error.row == 2
    assert str(error).startswith(f"Line 2 has {fields} fields but the header has 6: most likely")
    assert "a comma inside a number" in str(error)
    assert "Export plain numbers such as 58000.25" in str(error)


def test_a_shift_that_pushes_text_beyond_the_header_is_refused() -> None:
    # the Symbol column receives "178.43" and the symbol lands beyond the header
    header = f"{HEADER},symbol"
    good = "2024-05-01,1,2,0.5,1.5,10,BTCUSDT"
    shifted = "2024-05-02,1,2,0.5,1.5,1,178.43,BTCUSDT"
    error = _refusal(f"{header}\n{good}\n{shifted}\n".encode())
    assert (error.row, str(error)[:49]) == (3, "Line 3 has 8 fields but the header has 7: most li")


def test_text_beyond_the_header_is_ignored_with_a_note() -> None:
    data = read_ohlcv_csv(_daily(["1,2,0.5,1.5,10,checked", "1,2,0.5,1.5,11", "1,2,0.5,1.5,12"]))
    assert data.candles["volume"].tolist() == [10.0, 11.0, 12.0]
    assert "Line 2 has text beyond the last column of the header: ignored." in data.notes


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(1, 99_999), st.integers(1, 99)), min_size=5, max_size=5
    ),  # five prices and volumes as whole part and two decimals
    st.integers(0, 4),  # the column written with an unquoted decimal comma
    st.integers(0, 6),  # the row it happens in
)
def test_property_an_unquoted_comma_in_any_number_is_refused_on_its_line(
    values: list[tuple[int, int]], column: int, target: int
) -> None:
    plain = ",".join(f"{whole}.{cents:02d}" for whole, cents in values)
    cells = [f"{whole}.{cents:02d}" for whole, cents in values]
    cells[column] = cells[column].replace(".", ",")
    rows = [plain] * 7
    rows[target] = ",".join(cells)
    error = _refusal(_daily(rows))
    assert error.row == target + 2
    assert f"Line {target + 2} has 7 fields but the header has 6" in str(error)


# --- 2. quoted numbers with commas ----------------------------------------------------------


@pytest.mark.parametrize(
    ("cells", "volume", "note"),
    [
        # three decimals after more than three digits: no thousands group
        ('"58000,250","58100,500","57900,000","58050,750","1178,430"', 1178.43, None),
        # thousands grouped with dots before the decimal comma
        (
            '"58.000,25","58.100,50","57.900,00","58.050,75","1.178,43"',
            1178.43,
            "Thousands are grouped with dots (line 2: '58.000,25').",
        ),
        # thousands grouped with spaces (and a no-break space) before the decimal comma
        (
            '"58 000,25","58 100,50","57\u00a0900,00","58 050,75","1 178,43"',
            1178.43,
            "Thousands are grouped with spaces (line 2: '58 000,25').",
        ),
        # 12345,678 cannot be a thousands group (five digits before the comma)
        ('"58000,25","58100,5","57900","58050,75","12345,678"', 12345.678, None),
    ],
)
def test_quoted_decimal_commas_are_read_by_a_stated_rule(
    cells: str, volume: float, note: str | None
) -> None:
    data = read_ohlcv_csv(_daily([cells] * 5))
    assert data.candles.iloc[0].tolist() == [58000.25, 58100.5, 57900.0, 58050.75, volume]
    assert data.format == "CSV with a header, decimal commas"
    assert any(n.startswith("Quoted numbers have decimal commas (line 2: ") for n in data.notes)
    if note:
        assert note in data.notes


def test_numbers_that_could_be_either_are_read_as_the_file_proves_and_said() -> None:
    data = read_ohlcv_csv(_daily(['"1,178","1,200","1,100","1,150","0,5"'] * 5))
    assert data.candles.iloc[0].tolist() == [1.178, 1.2, 1.1, 1.15, 0.5]
    assert (
        "Numbers that could be read either way, such as '1,178' on line 2, were read with a "
        "decimal comma (1.178) as the file's other numbers prove."
    ) in data.notes


def test_thousands_commas_in_two_groups_prove_the_grouping() -> None:
    data = read_ohlcv_csv(_daily(['"1,178,430",1200000,1100000,1150000,"1,178"'] * 5))
    assert data.candles.iloc[0].tolist() == [1178430.0, 1200000.0, 1100000.0, 1150000.0, 1178.0]
    assert data.format == "CSV with a header, thousands commas"


def test_a_file_whose_commas_are_all_ambiguous_is_refused_with_both_readings() -> None:
    error = _refusal(_daily(['58000.25,58100.5,57900,58050.75,"1,178"'] * 5))
    assert (error.row, error.column) == (2, "volume")
    assert str(error).startswith(
        "Line 2, column 'volume': '1,178' could be 1.178 (a decimal comma) or 1178 (a "
        "thousands comma), and no number of the file tells which."
    )


@FUZZ
@given(
    st.lists(st.integers(1_000, 999_999_999), min_size=5, max_size=5),
    st.integers(1, 99),
    st.sampled_from([".", " ", "\u00a0", ""]),
)
def test_property_grouped_decimal_commas_read_the_value(
    wholes: list[int], cents: int, group: str
) -> None:
    def written(whole: int) -> str:
        grouped = f"{whole:,}".replace(",", group)
        return f'"{grouped},{cents:02d}"'

    data = read_ohlcv_csv(_daily([",".join(written(w) for w in wholes)] * 4))
    expected = [float(f"{w}.{cents:02d}") for w in wholes]
    assert data.candles.iloc[0].tolist() == expected


# --- 3. mistyped dates -----------------------------------------------------------------------


def _iso_days(count: int, typo: tuple[int, str] | None = None) -> bytes:
    days = [f"{d:%Y-%m-%d}" for d in pd.date_range("2024-01-01", periods=count, freq="D")]
    if typo:
        days[typo[0]] = typo[1]
    return ("\n".join([HEADER, *(f"{d},1,2,0.5,1.5,10" for d in days)]) + "\n").encode()


@pytest.mark.parametrize(
    ("typo", "message"),
    [
        # a year before any plausible market data
        (
            "1024-01-11",
            "Line 12, column 'timestamp': '1024-01-11' is in the year 1024, outside 1900-2099; "
            "line 11 reads as 2024-01-10 00:00 UTC. The year was probably mistyped: correct "
            "the date or delete the row.",
        ),
        # a year in the 23rd century
        ("2204-01-11", "Line 12, column 'timestamp': '2204-01-11' is in the year 2204, outside"),
        # a plausible year, ten years away from the rows around it
        (
            "2014-01-11",
            "Line 12, column 'timestamp': '2014-01-11' reads as 2014-01-11 00:00 UTC, 3651 d "
            "out of time order with the rows around it (line 11 reads as 2024-01-10 00:00 and "
            "line 13 reads as 2024-01-12 00:00).",
        ),
    ],
)
def test_a_mistyped_year_is_refused_on_its_line(typo: str, message: str) -> None:
    error = _refusal(_iso_days(30, (10, typo)))
    assert (error.row, error.column) == (12, "timestamp")
    assert str(error).startswith(message)


def _binance_hours(count: int, typo: tuple[int, int] | None = None) -> bytes:
    start = 1_735_516_800_000  # 2024-12-30 00:00 UTC
    rows = []
    for i in range(count):
        opened = start + i * 3_600_000
        if typo and typo[0] == i:
            opened = typo[1]
        rows.append(f"{opened},1,2,0.5,1.5,10,{opened + 3_599_999},15,3,5,7,0")
    return ("\n".join(rows) + "\n").encode()


@pytest.mark.parametrize(
    ("opened", "read"),
    [
        # 1735549200000 with its second digit wrong: 2021, off the hourly grid too
        (1_635_549_200_000, "2021-10-29 23:13 UTC, 1157 d 8 h out of time order"),
        # a digit in the middle wrong: a month later, on the grid
        (1_738_141_200_000, "2025-01-29 09:00 UTC, 29 d 23 h out of time order"),
    ],
)
def test_an_epoch_time_with_a_wrong_digit_is_refused_on_its_line(opened: int, read: str) -> None:
    error = _refusal(_binance_hours(24, (9, opened)))
    assert (error.row, error.column) == (10, "open_time")
    assert str(error).startswith(f"Line 10, column 'open_time': '{opened}' reads as {read}")


def test_newest_first_and_joined_files_are_not_out_of_place() -> None:
    # newest first, and two ordered exports joined the wrong way round: each joint is one
    # step out of order, no typo
    days = pd.date_range("2024-01-01", periods=20, freq="D")
    for order in (days[::-1], [*days[10:], *days[:10]]):
        rows = [f"{d:%Y-%m-%d},1,2,0.5,1.5,10" for d in order]
        data = read_ohlcv_csv(("\n".join([HEADER, *rows]) + "\n").encode())
        expected = pd.DatetimeIndex(days, name="timestamp").as_unit("ms").tz_localize("UTC")
        assert data.candles.index.equals(expected)


@FUZZ
@given(st.integers(1, 28), st.integers(1, 60), st.sampled_from([-1, 1]))
def test_property_a_row_years_away_is_refused_on_its_line(
    target: int, years: int, sign: int
) -> None:
    day = pd.Timestamp("2024-01-01") + pd.Timedelta(days=target)
    typo = f"{day.year + sign * years}-{day:%m-%d}"
    error = _refusal(_iso_days(30, (target, typo)))
    assert (error.row, error.column) == (target + 2, "timestamp")
    assert f"'{typo}'" in str(error)


# --- 4. candles off the grid -----------------------------------------------------------------


def _hours(count: int, odd: tuple[int, int] | None = None) -> bytes:
    stamps = list(pd.date_range("2024-01-01", periods=count, freq="h"))
    if odd:
        stamps[odd[0]] += pd.Timedelta(minutes=odd[1])
    rows = [f"{s:%Y-%m-%dT%H:%M:%S},1,2,0.5,1.5,10" for s in stamps]
    return ("\n".join([HEADER, *rows]) + "\n").encode()


def test_one_candle_off_the_hourly_grid_is_refused_naming_it() -> None:
    error = _refusal(_hours(30, (10, 17)))
    assert error.row == 12
    assert str(error) == (
        "Line 12: 2024-01-01 10:17:00 UTC is off the file's grid (the other candles are "
        "whole steps of 1 h apart, such as 2024-01-01 09:00:00 on line 11; it is the only one "
        "off the grid). Correct its time or delete the row, or resample the file to one "
        "timeframe."
    )


def test_missing_candles_keep_the_grid() -> None:
    # every other hour missing in places: steps of 1 h, 2 h and 3 h all on one grid
    stamps = pd.date_range("2024-01-01", periods=40, freq="h").delete([3, 7, 8, 20, 21, 30])
    rows = [f"{s:%Y-%m-%dT%H:%M:%S},1,2,0.5,1.5,10" for s in stamps]
    data = read_ohlcv_csv(("\n".join([HEADER, *rows]) + "\n").encode())
    assert (data.timeframe, len(data.candles)) == ("1h", 34)


@FUZZ
@given(st.integers(0, 39), st.integers(1, 59))
def test_property_a_candle_off_the_grid_is_named(target: int, minutes: int) -> None:
    error = _refusal(_hours(40, (target, minutes)))
    assert error.row == target + 2
    assert str(error).startswith(f"Line {target + 2}: ")
    assert "off the file's grid" in str(error)


# --- 5. tar and nested archives --------------------------------------------------------------

CSV = _hours(24)


def _tar(files: dict[str, bytes], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "note"),
    [
        (_tar({"BTCUSDT-1h.csv": CSV}), "Read 'BTCUSDT-1h.csv' from the tar archive."),
        (
            _tar({"a/BTCUSDT-1h.csv": CSV, "a/README": b"x"}, "w:gz"),
            "Read 'a/BTCUSDT-1h.csv' from the gzip-compressed tar archive.",
        ),
        (
            _tar({"BTCUSDT-1h.csv": CSV}, "w:bz2"),
            "Read 'BTCUSDT-1h.csv' from the bzip2-compressed tar archive.",
        ),
    ],
)
def test_a_tar_holding_one_csv_reads_like_the_csv(data: bytes, note: str) -> None:
    result, plain = read_ohlcv_csv(data), read_ohlcv_csv(CSV)
    pd.testing.assert_frame_equal(result.candles, plain.candles)
    assert result.notes == (note,)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            _tar({"a.csv": CSV, "b.csv": CSV}),
            "The tar archive holds 2 CSV files ('a.csv', 'b.csv'); it must hold exactly one. "
            "Unpack it and upload one CSV.",
        ),
        (
            gzip.compress(gzip.compress(CSV)),
            "The file is a gzip file holding a gzip file, not a CSV: an archive inside an "
            "archive is not unpacked. Unpack it first and upload the CSV inside.",
        ),
        (
            _zip({"inner.csv": bz2.compress(CSV)}),
            "The file is a zip archive holding a bzip2 file, not a CSV: an archive inside an "
            "archive is not unpacked. Unpack it first and upload the CSV inside.",
        ),
        (
            gzip.compress(_zip({"x.csv": CSV})),
            "The file is a gzip file holding a zip archive, not a CSV: an archive inside an "
            "archive is not unpacked. Unpack it first and upload the CSV inside.",
        ),
        (
            _zip({"x.csv": b"7z\xbc\xaf\x27\x1c" + b"\0" * 40}),
            "The file is a zip archive holding a 7-Zip archive, not a CSV: an archive inside "
            "an archive is not unpacked. Unpack it first and upload the CSV inside.",
        ),
        (
            CSV[:60] + b"\0\0\0" + CSV[60:],
            "The file holds binary data (a NUL byte on line 2), not CSV text. Export the data "
            "as CSV (UTF-8) and upload that file.",
        ),
    ],
)
def test_other_tars_and_nested_archives_are_refused_in_one_line(data: bytes, message: str) -> None:
    assert str(_refusal(data)) == message


@FUZZ
@given(st.binary(min_size=1, max_size=300), st.sampled_from(["raw", "gzip", "tar"]))
def test_property_no_message_holds_a_control_character(junk: bytes, pack: str) -> None:
    data = {
        "raw": junk,
        "gzip": gzip.compress(junk),
        "tar": _tar({"x\x01\x1b.csv": junk}),
    }[pack]
    try:
        read_ohlcv_csv(data)
    except DataFormatError as error:
        text = str(error) + (error.column or "")
        assert all(ch.isprintable() for ch in text), repr(text)


def test_daily_candles_in_local_time_across_daylight_saving_are_refused_saying_so() -> None:
    # Local midnights with offsets are 23 or 25 hours apart in UTC at a change of
    # daylight saving: off any UTC grid, and moving them onto one would misdate them.
    stamps = pd.date_range("2024-03-20", "2024-04-10", freq="D", tz="Europe/Berlin")
    rows = ["timestamp,open,high,low,close,volume"]
    rows += [
        f"{t.isoformat()},{100 + i},{101 + i},{99 + i},{100.5 + i},10" for i, t in enumerate(stamps)
    ]
    with pytest.raises(DataFormatError) as caught:
        read_ohlcv_csv(("\n".join(rows) + "\n").encode())
    message = str(caught.value)
    assert message.startswith("Line 14: 2024-03-31 22:00:00 UTC is off the file's grid")
    assert "change their UTC offset (+01:00, +02:00): local time with daylight saving" in message
    assert "\n" not in message
    # Hourly candles in local time are a regular grid in UTC: read, in UTC.
    hourly = pd.date_range("2024-03-30", periods=72, freq="h", tz="Europe/Berlin")
    rows = ["timestamp,open,high,low,close,volume"]
    rows += [f"{t.isoformat()},100,101,99,100.5,10" for t in hourly]
    data = read_ohlcv_csv(("\n".join(rows) + "\n").encode())
    assert data.timeframe == "1h"
    assert data.candles.index[0] == pd.Timestamp("2024-03-29 23:00", tz="UTC")
