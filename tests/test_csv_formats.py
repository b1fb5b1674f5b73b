"""The CSV layouts people actually have: recognised, read exactly, or refused in one line.

First the field cases of ../shared/field-cases (Binance's public dumps in milliseconds, in
microseconds and both joined in one file, CryptoDataDownload, European Excel, split
candles), each with the values its README calls right; skipped when the folder is absent.
Then a property: random candles written in every supported layout (header or none,
separator, decimal commas, BOM, newest first, epoch units per row, day-month dates) read
back as exactly the same candles. Then the refusals, one line each, naming the line and
what to change.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.data.csvfile import (
    BINANCE,
    CRYPTODATADOWNLOAD,
    EARLIEST_EPOCH,
    WITH_HEADER,
    WITHOUT_HEADER,
    read_ohlcv_csv,
)
from forecasting.data.duplicates import DUPLICATE_RULE
from forecasting.errors import DataFormatError
from forecasting.ohlcv import COLUMNS, MAX_PRICE, timeframe_seconds

ROOT = Path(__file__).resolve().parents[1]
FIELD = Path(os.environ.get("CFL_FIELD_CASES", ROOT.parent / "shared" / "field-cases"))
PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _case(name: str) -> Path:
    path = FIELD / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared field cases sit beside the repository)")
    return path


def _hours(start: str, periods: int) -> pd.DatetimeIndex:
    hours = pd.date_range(start, periods=periods, freq="h", tz="UTC", name="timestamp")
    return pd.DatetimeIndex(hours.as_unit("ms"), freq=None)


def _one_line(error: DataFormatError) -> str:
    text = str(error)
    assert "\n" not in text
    return text


# --- the field cases ------------------------------------------------------------------------


def test_binance_dump_without_header_is_read_as_candles() -> None:
    data = read_ohlcv_csv(_case("binance_spot_1h_noheader.csv"))
    assert (data.format, data.timeframe, data.duplicates) == (BINANCE, "1h", 0)
    # 24 hourly candles of 2024-12-30, open times in milliseconds
    assert data.candles.index.equals(_hours("2024-12-30", 24))
    # columns 2 to 6 of the first row: open, high, low, close, base volume
    assert data.candles.iloc[0].tolist() == [
        94000.0,
        94064.09941624,
        93875.52983483,
        93903.83823174,
        905.4794733,
    ]
    assert data.candles["close"].iloc[-1] == 91666.46811260
    assert data.notes == ()


def test_binance_dump_in_microseconds_is_today() -> None:
    data = read_ohlcv_csv(_case("binance_spot_1h_2025_microseconds.csv"))
    assert (data.format, data.timeframe, data.duplicates) == (BINANCE, "1h", 0)
    assert data.candles.index.equals(_hours("2025-01-01", 24))
    assert data.candles["close"].iloc[0] == 94083.59266848
    assert data.candles["volume"].iloc[0] == 547.14667536
    assert data.candles["close"].iloc[-1] == 91175.89378557


def test_binance_dumps_in_two_units_joined_read_every_row_in_its_own_unit() -> None:
    data = read_ohlcv_csv(_case("binance_spot_1h_2024ms_plus_2025us.csv"))
    # 24 hourly candles of 2024-12-31 (ms), then 24 of 2025-01-01 (us): none in 1970
    assert data.candles.index.equals(_hours("2024-12-31", 48))
    assert (data.format, data.timeframe, data.duplicates) == (BINANCE, "1h", 0)
    assert data.candles["close"].iloc[0] == 91186.95855000
    # the 2025 half is the microsecond dump: its first candle opens 2025-01-01 00:00
    assert data.candles.loc["2025-01-01 00:00", "close"].item() == 94083.59266848
    assert data.candles["close"].iloc[-1] == 91175.89378557
    assert data.notes == (
        "The epoch times mix units (milliseconds from line 2, microseconds from line 26): "
        "each row was read in its own unit, told by its magnitude.",
    )


def test_cryptodatadownload_file_is_read_oldest_first_with_the_base_volume() -> None:
    data = read_ohlcv_csv(_case("cryptodatadownload_Binance_BTCUSDT_d.csv"))
    assert (data.format, data.timeframe, data.calendar) == (CRYPTODATADOWNLOAD, "1d", "24/7")
    daily = pd.date_range("2024-01-01", "2024-02-09", freq="D", tz="UTC", name="timestamp")
    assert data.candles.index.equals(daily.as_unit("ms"))
    # the last line of the file is the oldest candle; Volume BTC, not Volume USDT
    assert data.candles.iloc[0].tolist() == [60000.0, 60600.0, 57609.78, 58191.70, 21887.94099]
    assert data.candles["close"].iloc[-1] == 82159.31
    assert data.candles["volume"].iloc[-1] == 23857.59655
    assert data.notes == (
        "Line 1 ('https://www.CryptoDataDownload.com') is a title above the header: skipped.",
        "The volume is 'Volume BTC', in the base currency of BTCUSDT ('Volume USDT' ignored).",
        "The rows are newest first in the file: they were put oldest first.",
    )


def test_european_excel_file_is_read_with_decimal_commas_and_day_first_dates() -> None:
    data = read_ohlcv_csv(_case("european_semicolon_decimal_comma_bom.csv"))
    assert data.format == "semicolon-separated, decimal commas"
    assert data.timeframe == "1d"
    daily = pd.date_range("2024-05-01", "2024-05-30", freq="D", tz="UTC", name="timestamp")
    assert data.candles.index.equals(daily.as_unit("ms"))
    assert data.candles.iloc[0].tolist() == [58000.0, 58696.0, 55977.62, 56657.51, 1178.43]
    assert data.candles["close"].iloc[-1] == 51273.66
    assert data.candles["volume"].iloc[-1] == 1841.622
    assert data.notes == (
        "Dates were read day first (dd.mm.yyyy), as line 14 ('13.05.2024') shows.",
    )


def test_split_candle_fragments_never_replace_the_real_candle() -> None:
    data = read_ohlcv_csv(_case("split_candle_duplicates_1m.csv"))
    minutes = pd.date_range("2024-03-01", periods=60, freq="min", tz="UTC", name="timestamp")
    assert data.candles.index.equals(minutes.as_unit("ms"))
    assert data.duplicates == 2
    # the real candles at 00:29 and 00:59 are kept, not the fragments of volume 0.015
    assert data.candles.loc["2024-03-01 00:29", "volume"].item() == 29.0554
    assert data.candles.loc["2024-03-01 00:59", "close"].item() == 3520.45
    assert data.candles.loc["2024-03-01 00:59", "volume"].item() == 38.5312
    conflicts = data.candles.attrs["duplicate_conflicts"]
    assert [c["timestamp"] for c in conflicts] == [
        int(pd.Timestamp(t, tz="UTC").value // 1_000_000)
        for t in ("2024-03-01 00:29", "2024-03-01 00:59")
    ]
    assert [c["dropped"]["volume"] for c in conflicts] == [0.015, 0.015]
    assert all(c["rule"] == DUPLICATE_RULE for c in conflicts)
    assert data.candles.attrs["duplicate_rows"] == 2
    assert data.notes == (
        "2 open times appear more than once with different values (the first at 2024-03-01 "
        f"00:29 UTC, line 31): {DUPLICATE_RULE}.",
    )


def test_a_plain_file_says_so_and_has_no_notes() -> None:
    data = read_ohlcv_csv(_case("crashing_token_1d.csv"))
    assert (data.format, data.notes, data.timeframe, len(data.candles)) == (
        WITH_HEADER,
        (),
        "1d",
        120,
    )


# --- property: every layout reads back the very same candles ------------------------------

TIMEFRAMES = st.sampled_from(["1m", "5m", "1h", "4h", "1d", "1w"])
PRICES = st.floats(min_value=0.0, max_value=MAX_PRICE, exclude_min=True, allow_nan=False)
VOLUMES = st.floats(min_value=0.0, max_value=1e300, allow_nan=False, allow_infinity=False)
NS_PER = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
SEPARATOR_NAMES = {";": "semicolon", "\t": "tab"}
BINANCE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    "taker_buy_quote_volume,ignore"
)
CRYPTODATADOWNLOAD_HEADER = "Unix,Date,Symbol,Open,High,Low,Close,Volume BTC,Volume USDT,tradecount"


@st.composite
def candle_frames(draw) -> pd.DataFrame:
    """Candles on a timeframe's grid, opening from 2009 (the first crypto market; epoch
    times outside 2009-2100 are refused as digits lost or added) to 2096."""
    timeframe = draw(TIMEFRAMES)
    step = timeframe_seconds(timeframe)
    n = draw(st.integers(min_value=2, max_value=30))
    earliest = int(EARLIEST_EPOCH.value // 1_000_000_000)
    start = draw(st.integers(min_value=earliest // step + 1, max_value=4_000_000_000 // step))
    ms = [(start + i) * step * 1000 for i in range(n)]
    index = pd.DatetimeIndex(pd.to_datetime(ms, unit="ms", utc=True), name="timestamp")
    rows = draw(st.lists(st.tuples(*[PRICES] * 4, VOLUMES), min_size=n, max_size=n))
    frame = pd.DataFrame(rows, columns=list(COLUMNS), dtype="float64")
    frame.index = index.as_unit("ms")
    return frame


@st.composite
def layouts(draw) -> dict:
    """How a file is written: its layout and every quirk that layout may have."""
    kind = draw(
        st.sampled_from(["header", "binance", "binance_header", "cryptodatadownload", "no_header"])
    )
    separator = ","
    if kind == "header":
        separator = draw(st.sampled_from([",", ";", "\t"]))
    times = {
        "header": ["iso", "s", "ms", "us", "ns", "mixed", "dotted", "day_first", "month_first"],
        "binance": ["ms", "us", "binance_mixed"],
        "binance_header": ["ms", "us", "binance_mixed"],
        "cryptodatadownload": ["ms"],
        "no_header": ["iso", "s", "ms", "us", "mixed"],
    }[kind]
    return {
        "kind": kind,
        "separator": separator,
        "decimal_comma": separator != "," and draw(st.booleans()),
        "times": draw(st.sampled_from(times)),
        "names": draw(
            st.sampled_from(
                [("timestamp", *COLUMNS), ("Date", "Open", "High", "Low", "Close", "Volume")]
            )
        ),
        "bom": draw(st.booleans()),
        "newline": draw(st.sampled_from(["\n", "\r\n"])),
        "order": draw(st.sampled_from(["oldest", "newest", "shuffled"])),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def _time_cell(stamp: pd.Timestamp, style: str, rng: random.Random) -> tuple[str, str]:
    """The cell of an open time in a style, and the epoch unit used ("" for dates)."""
    if style == "mixed":
        style = rng.choice(["s", "ms", "us", "ns"])
    elif style == "binance_mixed":
        style = rng.choice(["ms", "us"])
    if style in NS_PER:
        return str(stamp.value // NS_PER[style]), style
    formats = {
        "iso": "%Y-%m-%dT%H:%M:%SZ",
        "dotted": "%d.%m.%Y %H:%M",
        "day_first": "%d/%m/%Y %H:%M",
        "month_first": "%m/%d/%Y %H:%M",
    }
    return stamp.strftime(formats[style]), ""


def _write(frame: pd.DataFrame, layout: dict) -> tuple[bytes, list[str], str, list[int]]:
    """The file's bytes, the epoch unit of each written row, the format to expect, and
    the position in ``frame`` of each written row."""
    rng = random.Random(layout["seed"])
    positions = list(range(len(frame)))
    if layout["order"] == "newest":
        positions.reverse()
    elif layout["order"] == "shuffled":
        rng.shuffle(positions)
    comma = layout["decimal_comma"]

    def number(value: float) -> str:
        text = repr(float(value))
        return text.replace(".", ",") if comma else text

    kind, lines, units = layout["kind"], [], []
    if kind == "header":
        lines.append(list(layout["names"]))
    elif kind == "binance_header":
        lines.append(BINANCE_HEADER.split(","))
    elif kind == "cryptodatadownload":
        lines.append(["https://www.CryptoDataDownload.com", *[""] * 9])
        lines.append(CRYPTODATADOWNLOAD_HEADER.split(","))
    step_ms = int((frame.index[1] - frame.index[0]) / pd.Timedelta(milliseconds=1))
    for position in positions:
        stamp = frame.index[position]
        prices = [number(v) for v in frame.iloc[position]]
        time, unit = _time_cell(stamp, layout["times"], rng)
        units.append(unit)
        if kind in ("binance", "binance_header"):
            close_time = str(
                (stamp.value // 1_000_000 + step_ms) * (NS_PER["ms"] // NS_PER[unit]) - 1
            )
            lines.append([time, *prices, close_time, "123.5", "42", "1.5", "2.5", "0"])
        elif kind == "cryptodatadownload":
            lines.append([time, f"{stamp:%Y-%m-%d %H:%M:%S}", "BTCUSDT", *prices, "99.5", "7"])
        else:
            lines.append([time, *prices])
    separator = layout["separator"]
    text = layout["newline"].join(separator.join(cells) for cells in lines) + layout["newline"]
    data = ("\ufeff" if layout["bom"] else "") + text
    expected = {
        "header": WITH_HEADER if separator == "," else f"{SEPARATOR_NAMES[separator]}-separated",
        "binance": BINANCE,
        "binance_header": BINANCE,
        "cryptodatadownload": CRYPTODATADOWNLOAD,
        "no_header": WITHOUT_HEADER,
    }[kind]
    if comma and any("," in cell for cells in lines[1:] for cell in cells[1:]):
        expected += ", decimal commas"
    return data.encode(), units, expected, positions


def _ambiguous(frame: pd.DataFrame, style: str) -> bool:
    """Whether no row tells day from month while some row could be read either way."""
    if style not in ("day_first", "month_first"):
        return False
    days, months = frame.index.day, frame.index.month
    return not (days > 12).any() and (days != months).any()


@PROPERTY
@given(candle_frames(), layouts())
def test_property_every_layout_reads_back_the_same_candles(
    frame: pd.DataFrame, layout: dict
) -> None:
    data, units, expected_format, positions = _write(frame, layout)
    if _ambiguous(frame, layout["times"]):
        with pytest.raises(DataFormatError) as caught:
            read_ohlcv_csv(data)
        text = _one_line(caught.value)
        assert "no row has a day above 12" in text
        assert "Write the dates as ISO-8601" in text
        return
    result = read_ohlcv_csv(data)
    pd.testing.assert_frame_equal(result.candles, frame)
    step = timeframe_seconds(result.timeframe)
    assert pd.Timedelta(seconds=step) == frame.index[1] - frame.index[0]
    assert result.format == expected_format
    assert result.duplicates == 0
    notes = " ".join(result.notes)
    newest = positions == sorted(positions, reverse=True)
    assert ("newest first in the file" in notes) == newest
    shuffled = not newest and positions != sorted(positions)
    assert ("not in time order in the file" in notes) == shuffled
    assert ("mix units" in notes) == (len(set(units)) > 1)
    if layout["kind"] == "cryptodatadownload":
        assert "The volume is 'Volume BTC'" in notes
    if layout["times"] == "dotted" and (frame.index.day != frame.index.month).any():
        assert "Dates were read day first (dd.mm.yyyy)" in notes


# --- refusals: one line, the line named, what to change ------------------------------------


def _file(*rows: str, header: str = "date,open,high,low,close,volume") -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


DAILY = [f"0{day}/02/2024,1,2,0.5,1.5,10" for day in range(1, 6)]
# Hourly at first, then at minutes no timeframe explains: 5 of the 7 steps are odd.
ODD_HOURS = [
    f"2024-01-01T{h:02d}:{m:02d}:00Z,1,2,0.5,1.5,10"
    for h, m in [(0, 0), (1, 0), (2, 0), (3, 13), (4, 41), (5, 2), (6, 59), (7, 30)]
]


@pytest.mark.parametrize(
    ("data", "line", "message"),
    [
        # 01/02/2024: 1 February or 2 January? no row has a day above 12 to tell
        (
            _file(*DAILY),
            2,
            "Line 2, column 'date': '01/02/2024' could be 1 February 2024 or 2 January 2024, "
            "and no row has a day above 12 to tell which. Write the dates as ISO-8601 "
            "(YYYY-MM-DD, such as 2024-02-01).",
        ),
        # the same with dashes
        (
            _file(*(row.replace("/", "-") for row in DAILY)),
            2,
            "Line 2, column 'date': '01-02-2024' could be 1 February 2024 or 2 January 2024",
        ),
        # one row day first, another month first: no reading fits both
        (
            _file(
                "13/01/2024,1,2,0.5,1.5,10",
                "14/01/2024,1,2,0.5,1.5,10",
                "01/15/2024,1,2,0.5,1.5,10",
            ),
            4,
            "Line 4, column 'date': '01/15/2024' puts the month first, but line 2 "
            "('13/01/2024') puts the day first. Write the dates as ISO-8601",
        ),
        # a day that no month has, read as the file's order says
        (
            _file("13.02.2024,1,2,0.5,1.5,10", "30.02.2024,1,2,0.5,1.5,10"),
            3,
            "Line 3, column 'date': '30.02.2024' is not a date (read as dd.mm.yyyy)",
        ),
        # hourly rows, but the steps between them are no multiple of any timeframe
        (
            _file(*ODD_HOURS),
            5,
            "The rows are spaced unlike any timeframe: 5 of the 7 steps between consecutive "
            "candles are not a whole number of 1h (the median step), the first 1 h 13 "
            "min before line 5.",
        ),
        # a step of 7 min 13 s is no timeframe
        (
            _file(*(f"{1704067200 + 433 * i},1,2,0.5,1.5,10" for i in range(5))),
            3,
            "The candles are 7 min 13 s apart (the median step), which is no timeframe: "
            "candles of a minute or more are whole minutes apart (line 3 is 7 min 13 s after "
            "the candle before it).",
        ),
        # a decimal point in a file whose numbers have decimal commas: 1.178 or 1178?
        (
            _file(
                "2024-01-01;1,5;2;1;1,5;1.178",
                "2024-01-02;1,5;2;1;1,5;10,5",
                header="date;open;high;low;close;volume",
            ),
            2,
            "Line 2, column 'volume': '1.178' has a decimal point in a file whose numbers have "
            "decimal commas (such as 58000,25), so it could mean 1.178 or 1178.",
        ),
        # two volumes and no symbol to tell the base currency
        (
            _file(
                "2024-01-01,1,2,0.5,1.5,10,15",
                "2024-01-02,1,2,0.5,1.5,10,15",
                header="date,open,high,low,close,Volume BTC,Volume USDT",
            ),
            1,
            "Line 1: the file has the volume twice, 'Volume BTC' and 'Volume USDT', and there "
            "is no Symbol column to say which currency is the base.",
        ),
        # no header, and a column count no known layout has
        (
            b"1704067200000,1,2,0.5,1.5,10,7\n1704070800000,1,2,0.5,1.5,10,7\n",
            1,
            "Line 1 is a candle, not a header, and its 7 columns are no layout known without one",
        ),
        # mostly numbers, yet no candle: a header is missing, not misnamed
        (
            b"1704067200,,1.5,2,x,10\n1704153600,1,1.5,2,1,10\n",
            1,
            "Line 1 holds numbers ('1704067200', '1.5', '2', ...), not column names",
        ),
    ],
)
def test_refusals_name_the_line_and_what_to_change(
    data: bytes, line: int | None, message: str
) -> None:
    with pytest.raises(DataFormatError) as caught:
        read_ohlcv_csv(data)
    text = _one_line(caught.value)
    assert message in text
    assert caught.value.row == line
    assert any(hint in text for hint in ("Write ", "Use ", "Check ", "Keep ", "Add "))


def test_the_first_odd_step_is_named_by_its_line() -> None:
    with pytest.raises(DataFormatError) as caught:
        read_ohlcv_csv(_file(*reversed(ODD_HOURS)))
    # newest first in the file: the candle at 02:13 is on line 6
    assert caught.value.row == 6


@pytest.mark.parametrize(
    ("rows", "first", "note"),
    [
        # a day above 12 makes the file day first
        (
            ["01/02/2024", "13/02/2024", "25/02/2024"],
            "2024-02-01",
            "Dates were read day first (dd/mm/yyyy), as line 3 ('13/02/2024') shows.",
        ),
        # a second number above 12 makes it month first
        (
            ["02/01/2024", "02/13/2024", "02/25/2024"],
            "2024-02-01",
            "Dates were read month first (mm/dd/yyyy), as line 3 ('02/13/2024') shows.",
        ),
        # dotted dates are written day first: the rule is stated, not guessed silently
        (
            ["01.02.2024", "02.02.2024", "03.02.2024"],
            "2024-02-01",
            "Dates were read day first (dd.mm.yyyy), the order dotted dates are written in; "
            "no row has a day above 12 to confirm it.",
        ),
        # dates with a time of day
        (
            ["13/02/2024 00:00", "13/02/2024 01:00", "13/02/2024 02:00"],
            "2024-02-13",
            "Dates were read day first (dd/mm/yyyy), as line 2 ('13/02/2024 00:00') shows.",
        ),
    ],
)
def test_day_and_month_are_told_from_the_file_and_said(
    rows: list[str], first: str, note: str
) -> None:
    data = read_ohlcv_csv(_file(*(f"{row},1,2,0.5,1.5,10" for row in rows)))
    assert data.candles.index[0] == pd.Timestamp(first, tz="UTC")
    assert note in data.notes


def test_days_equal_to_their_month_need_no_rule() -> None:
    # 01/01, 02/02 ... read the same either way: no refusal and nothing to say
    stamps = [f"{m:02d}/{m:02d}/2024" for m in range(1, 13)]
    data = read_ohlcv_csv(_file(*(f"{s},1,2,0.5,1.5,10" for s in stamps)))
    assert len(data.candles) == 12
    assert not any("Dates were read" in note for note in data.notes)


def test_separator_is_sniffed_not_fooled_by_a_stray_semicolon() -> None:
    # a comma file whose ignored note column holds a semicolon stays a comma file
    data = read_ohlcv_csv(
        _file(
            "2024-01-01,1,2,0.5,1.5,10,a;b",
            "2024-01-02,1,2,0.5,1.5,10,c",
            header="date,open,high,low,close,volume,note",
        )
    )
    assert (data.format, len(data.candles)) == (WITH_HEADER, 2)


def test_semicolon_file_with_decimal_points_and_thousands_beside_commas() -> None:
    # ";" with ordinary decimal points is just semicolon-separated
    plain = read_ohlcv_csv(
        _file(
            "2024-01-01;1.5;2;1;1.5;10",
            "2024-01-02;1.5;2;1;1.75;10",
            header="date;open;high;low;close;volume",
        )
    )
    assert plain.format == "semicolon-separated"
    assert plain.candles["close"].tolist() == [1.5, 1.75]
    # thousands dots beside a decimal comma, and a tab separator
    tabbed = read_ohlcv_csv(
        _file(
            "2024-01-01\t58.000,25\t58.696\t55.977,5\t56.657,51\t1.178,43",
            "2024-01-02\t56.657,51\t57.337,4\t55.308,52\t55.980,28\t1163",
            header="Date\tOpen\tHigh\tLow\tClose\tVolume",
        )
    )
    assert tabbed.format == "tab-separated, decimal commas"
    assert tabbed.candles.iloc[0].tolist() == [58000.25, 58696.0, 55977.5, 56657.51, 1178.43]


def test_the_only_volume_named_after_a_currency_is_used_and_said() -> None:
    data = read_ohlcv_csv(
        _file(
            "2024-01-01,1,2,0.5,1.5,10",
            "2024-01-02,1,2,0.5,1.5,20",
            header="date,open,high,low,close,Volume ETH",
        )
    )
    assert data.candles["volume"].tolist() == [10.0, 20.0]
    assert data.notes == ("The volume is the file's 'Volume ETH' column.",)


def test_a_title_line_above_the_header_is_skipped_and_said() -> None:
    data = read_ohlcv_csv(
        b"Bitstamp BTCUSD hourly\ndate,open,high,low,close,volume\n"
        b"2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n2024-01-01T01:00:00Z,1,2,0.5,1.5,10\n"
    )
    assert data.timeframe == "1h"
    assert data.notes[0] == (
        "Line 1 ('Bitstamp BTCUSD hourly') is a title above the header: skipped."
    )


def test_rows_out_of_order_are_sorted_and_said() -> None:
    data = read_ohlcv_csv(
        _file("2024-01-01,1,2,0.5,1.5,10", "2024-01-03,3,3,3,3,3", "2024-01-02,2,2,2,2,2")
    )
    assert data.candles["close"].tolist() == [1.5, 2.0, 3.0]
    assert data.notes == (
        "The rows are not in time order in the file (line 4 is earlier than the row above "
        "it): they were sorted by time.",
    )


def test_a_short_binance_row_names_the_first_row_as_the_layout() -> None:
    first = "1735516800000,1,2,0.5,1.5,10,1735520399999,1,1,1,1,0"
    with pytest.raises(DataFormatError) as caught:
        read_ohlcv_csv(f"{first}\n1735520400000,1,2,0.5,1.5\n".encode())
    text = _one_line(caught.value)
    assert "Line 2 has 5 fields but the first row (line 1) has 12 (no value for 'volume')" in text
    assert (caught.value.row, caught.value.column) == (2, "volume")


def test_mixed_units_concatenated_never_land_in_1970() -> None:
    # the reproduction in small: a 2024 millisecond row, then 2025 microsecond rows
    rows = ["1735686000000", "1735689600000000", "1735693200000000"]
    data = read_ohlcv_csv(_file(*(f"{r},1,2,0.5,1.5,10" for r in rows)))
    assert data.candles.index.equals(_hours("2024-12-31 23:00", 3))
    assert data.notes[0].startswith("The epoch times mix units (milliseconds from line 2, ")


def test_written_layouts_are_bytes_not_text() -> None:
    # the reader accepts what the upload gives: bytes or a binary stream
    frame = pd.DataFrame(
        [[1.0, 2.0, 0.5, 1.5, 10.0]] * 2,
        columns=list(COLUMNS),
        index=_hours("2024-01-01", 2),
    )
    data, _, _, _ = _write(
        frame,
        {
            "kind": "binance",
            "separator": ",",
            "decimal_comma": False,
            "times": "us",
            "names": ("timestamp", *COLUMNS),
            "bom": True,
            "newline": "\r\n",
            "order": "newest",
            "seed": 1,
        },
    )
    result = read_ohlcv_csv(io.BytesIO(data))
    pd.testing.assert_frame_equal(result.candles, frame)
    assert np.array_equal(result.candles.index.asi8, frame.index.asi8)


# --- fuzz: the new layouts' quirks never escape as anything but a one-line refusal --------

QUIRKY_TIMES = st.sampled_from(
    ["01.02.2024", "13.02.2024", "02/13/2024", "13/02/2024", "01/02/2024", "31.02.2024",
     "01-02-2024 00:00", "12.12.2024", "2024-01-01", "2024-01-02", "1735516800000",
     "1735520400000", "1735689600000000", "1735693200000000", "1735696800", "99999999999",
     "1e11", "0", "-1", "", "Unix"]
)  # fmt: skip
QUIRKY_NUMBERS = st.sampled_from(
    ["1.5", "1,5", "2", "1.178", "1.178,43", "58.000,25", "1,5e-05", "0", "-1", "", "10",
     "1e400", "0,0", "BTCUSDT"]
)  # fmt: skip


@st.composite
def quirky_files(draw) -> bytes:
    """Candle-shaped rows whose cells come from the new layouts' quirks, joined by any
    separator, with or without a header, a banner, extra columns or a BOM."""
    separator = draw(st.sampled_from([",", ";", "\t"]))
    extra = draw(st.sampled_from([[], ["Symbol"], ["Volume USDT"], ["Close time"] * 6]))
    n = draw(st.integers(min_value=1, max_value=8))
    rows = [
        [draw(QUIRKY_TIMES), *(draw(QUIRKY_NUMBERS) for _ in range(5 + len(extra)))]
        for _ in range(n)
    ]
    if draw(st.booleans()):
        volume = draw(st.sampled_from(["Volume", "Volume BTC", "Vol"]))
        rows.insert(0, ["Date", "Open", "High", "Low", "Close", volume, *extra])
        if draw(st.booleans()):
            rows.insert(0, ["https://www.CryptoDataDownload.com"] + [""] * (len(rows[0]) - 1))
    text = "\n".join(separator.join(row) for row in rows)
    return (("\ufeff" if draw(st.booleans()) else "") + text).encode()


@PROPERTY
@given(quirky_files())
def test_fuzz_quirky_layouts(data: bytes) -> None:
    try:
        result = read_ohlcv_csv(data)
    except DataFormatError as exc:
        error = exc
    else:
        error = None
    if error is not None:
        _one_line(error)
        assert error.row is None or error.row >= 1
        return
    candles = result.candles
    assert list(candles.columns) == list(COLUMNS)
    assert candles.index.is_monotonic_increasing
    assert candles.index.is_unique
    assert str(candles.index.tz) == "UTC"
    assert np.isfinite(candles.to_numpy()).all()
    assert result.format
    assert all("\n" not in note for note in result.notes)


def test_files_joined_in_two_units_still_read() -> None:
    """Two parts joined end to end (seconds, then milliseconds) change unit once: read."""
    days = pd.date_range("2024-01-01", periods=20, freq="D", tz="UTC")
    stamps = [int(t.value // 1_000_000_000) for t in days[:10]]
    stamps += [int(t.value // 1_000_000) for t in days[10:]]
    text = "timestamp,open,high,low,close,volume\n" + "".join(
        f"{s},100,101,99,100,1\n" for s in stamps
    )
    data = read_ohlcv_csv(text.encode())
    assert list(data.candles.index) == list(days)
    assert any("mix units" in note for note in data.notes)


# --- a digit lost or added in an epoch time -------------------------------------------------


@PROPERTY
@given(
    candle_frames(),
    st.sampled_from(["s", "ms", "us"]),
    st.sampled_from(["lost", "lost two", "added", "added two"]),
    st.data(),
)
def test_property_an_epoch_with_a_digit_lost_or_added_is_refused_by_its_line(
    frame: pd.DataFrame, unit: str, change: str, data
) -> None:
    # Told by its magnitude, such a time used to land decades from the rest (1975, 2510)
    # with at most a note; three digits lost is the next unit and reads right.
    row = data.draw(st.integers(0, len(frame) - 1))
    cells = [str(stamp.value // NS_PER[unit]) for stamp in frame.index]
    value = cells[row]
    cells[row] = {
        "lost": value[:-1],
        "lost two": value[:-2],
        "added": value + "0",
        "added two": value + "00",
    }[change]
    prices = ["1,2,0.5,1.5,10"] * len(frame)
    body = [f"{cell},{p}" for cell, p in zip(cells, prices, strict=True)]

    with pytest.raises(DataFormatError) as caught:
        read_ohlcv_csv(_file(*body, header="timestamp,open,high,low,close,volume"))

    text = _one_line(caught.value)
    assert text.startswith(f"Line {row + 2}, column 'timestamp': '{cells[row]}' reads as ")
    assert "A digit was probably lost or added" in text
    assert caught.value.row == row + 2


def test_a_millisecond_time_that_lost_a_digit_is_refused_not_put_in_1975() -> None:
    rows = [str(int(stamp.value // 1_000_000)) for stamp in _hours("2024-01-01", 30)]
    rows[20] = rows[20][:-1]
    with pytest.raises(DataFormatError) as caught:
        read_ohlcv_csv(_file(*(f"{r},1,2,0.5,1.5,10" for r in rows)))
    assert _one_line(caught.value) == (
        "Line 22, column 'date': '170413920000' reads as 1975-05-27 09:12 UTC (epoch "
        "milliseconds, told by its magnitude), before any crypto market traded (2009); line "
        "21 reads as 2024-01-01 19:00 UTC. A digit was probably lost or added: correct the "
        "value or delete the row."
    )


# --- quoted numbers of a comma-separated file -----------------------------------------------


def _quoted(*cells: str) -> bytes:
    rows = [f"2024-01-{day:02d},{','.join(cells)}" for day in range(1, 6)]
    return _file(*rows)


def test_quoted_decimal_commas_are_read_and_said() -> None:
    data = read_ohlcv_csv(_quoted('"58000,25"', '"58100,5"', '"57900,00"', '"58050,75"', '"12,5"'))
    assert data.candles.iloc[0].tolist() == [58000.25, 58100.5, 57900.0, 58050.75, 12.5]
    assert data.format == f"{WITH_HEADER}, decimal commas"
    assert "Quoted numbers have decimal commas (line 2: '58000,25')." in data.notes


def test_quoted_thousands_commas_are_read_and_said() -> None:
    data = read_ohlcv_csv(_quoted('"58,000.25"', '"58,100.50"', '"1,057,900"', "58050.75", "12"))
    assert data.candles.iloc[0].tolist() == [58000.25, 58100.5, 1057900.0, 58050.75, 12.0]
    assert data.format == f"{WITH_HEADER}, thousands commas"


def test_a_quoted_comma_no_number_explains_is_refused_with_both_readings() -> None:
    with pytest.raises(DataFormatError) as caught:
        read_ohlcv_csv(_quoted('"1,178"', '"1,180"', '"1,170"', '"1,175"', "12"))
    assert _one_line(caught.value) == (
        "Line 2, column 'open': '1,178' could be 1.178 (a decimal comma) or 1178 (a thousands "
        "comma), and no number of the file tells which. Export plain numbers such as 42123.5, "
        "or separate the columns with ';' and use decimal commas."
    )


def test_quoted_numbers_in_two_notations_are_refused() -> None:
    with pytest.raises(DataFormatError, match=r"groups thousands with commas while line 2"):
        read_ohlcv_csv(
            _file(
                '2024-01-01,"58000,25",1,1,1,1',
                '2024-01-02,"58,000.25",1,1,1,1',
                "2024-01-03,1,1,1,1,1",
            )
        )
