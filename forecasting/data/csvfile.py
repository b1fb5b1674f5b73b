"""OHLCV from CSV files as people export them, validated, and back out to CSV.

Layouts recognised (:attr:`CsvData.format` names the one found):

- ``"CSV with a header"``: a header row in any case and with the usual names (``Date``,
  ``Timestamp``, ``Open time``, ``Open``, ``Vol`` ...), extra columns ignored.
- ``"Binance public data dump"``: the kline files of data.binance.vision, with or
  without their header (12 columns: open time, open, high, low, close, volume, close
  time, quote volume, trades, taker buy base, taker buy quote, ignore).
- ``"CryptoDataDownload"``: a URL banner line above the header, ``Unix``, ``Date`` and
  ``Symbol`` columns, newest row first, and the volume twice (``Volume BTC`` and
  ``Volume USDT``); the volume in the symbol's base currency is used and a note says
  which column that was.
- ``"semicolon-separated"`` or ``"tab-separated"`` files (the separator is found with
  :class:`csv.Sniffer`), with ``", decimal commas"`` when the numbers are written as
  ``58000,25`` (Excel in a European locale); thousands dots are read only beside a
  decimal comma (``1.178,43``), a number with dots alone (``1.178``) is refused as
  ambiguous.
- ``"CoinMarketCap export"``: ``timeOpen``, ``timeClose``, ..., ``marketCap`` and a
  ``timestamp`` that is each candle's close time; the candles are read by ``timeOpen``.
- ``"Kraken OHLCVT download"``: no header, seven columns (unix seconds, open, high, low,
  close, volume, count of trades); the count of trades is ignored.
- ``"CSV without a header"``: six columns in ccxt's order (timestamp, open, high, low,
  close, volume).

Header names are matched in any case, German ones too (``Datum``, ``Eröffnung`` or
``Eröffnungskurs``, ``Hoch``, ``Tief``, ``Schluss`` or ``Schlusskurs``, ``Volumen`` or
``Umsatz``) and MetaTrader's ``<DATE>``. A column named as the open time (``timeOpen``,
``open_time``, ``Open time`` ...) is taken before a generic ``timestamp``, ``date`` or
``time``; a column named as the close time (``timeClose``, ``close_time``) is the time
column only in a file without another, read as close times. Separate date and time-of-day
columns (MetaTrader's ``Date,Time`` with ``2024.01.02,12:00``) are read together.

Close times: a file whose times all lie 1 ms before a whole second (Binance's
``close_time``, ``23:59:59.999``) or all 1 s before a whole minute (``23:59:59``) is
stamped with each candle's close time. Its candles are read at ``open = close + 1 ms (or
1 s) - one timeframe`` (the timeframe told by their spacing), with a note stating the rule.

A UTF-8 byte-order mark, a title line above the header, blank lines, a space after each
separator and any line ending are accepted. A line repeating the header (and the title
line above it), where two files were joined one after the other, is skipped with a note.
Rows may be in any order; they are sorted oldest first (a note says so when the file was
newest first or out of order).

Times are ISO-8601 (also the basic ``20240131``), epoch numbers, or dates with the day
and month as numbers (``31.01.2024``, ``01/31/2024``). Epoch numbers are read in
seconds, milliseconds, microseconds or nanoseconds by the magnitude of each row, so a
file of milliseconds joined to one of microseconds (Binance's dumps switched in 2025)
reads every row in its own unit, with a note. Day and month are never guessed: a row
whose first number is above 12 makes the file day first, one whose second is above 12
makes it month first; when no row tells, dotted dates (``01.02.2024``) are read day
first, the only order written with dots, and the note says so, while ``01/02/2024``
and ``01-02-2024`` are refused with a message asking for ISO dates (``2024-02-01``).

A file whose candles are not spaced like any timeframe (most steps between consecutive
candles not a whole number of the most common one, or a spacing such as 7 min 13 s) is
refused: its times were most likely read in the wrong unit or order. When every step is a
whole number of a shorter timeframe that occurs itself, the refusal says most candles are
missing and counts them instead. Excel day numbers (``45628``: the date column was
formatted as numbers) are refused as such.

Local times written without an offset repeat an hour when clocks go back and skip one
when they go forward. Conflicting rows at a repeated time in the small hours of such a day
(Europe: last Sunday of October and March; the US: first Sunday of November and second
Sunday of March) are resolved as any conflict, and the note says the times look like
local time with daylight saving and to export UTC; a missing hour on the spring day gets
the same note.
A few candles off the file's grid (10:17 among hourly candles) are refused too, naming
the first by its line. So is a written date before 1900 or after 2099, and a row far out
of time order with the rows around it (2014 among rows of 2024, an epoch time with one
wrong digit): a mistyped time, never placed years away from the rest.

A row with more fields than the header is refused when its values may have moved (a
comma inside an unquoted number splits it in two); text beyond the header is ignored
with a note. Quoted numbers of a comma-separated file are read with a decimal comma or
thousands commas by what some number proves (``58000,250``, ``58.000,25``, ``58 000,25``
can only have a decimal comma), with a note.

Zip and tar archives holding one CSV and gzip, bzip2 or xz files (``.tar.gz`` too) are
unpacked once; an archive inside an archive, or binary data, is refused.

The file is parsed as text only: nothing in it is executed or unpickled. Errors name
the line (the first line of the file is line 1) and the column, and say what to change.

Rows with a zero or negative open, high, low or close (what data providers write for a
candle they do not have) are dropped and listed in :attr:`CsvData.nonpositive`: they
then show as missing candles.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import os
import re
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from forecasting.data.duplicates import (
    DUPLICATE_RULE,
    duplicate_conflicts,
    resolve_duplicates,
)
from forecasting.data.quality import (
    MAX_EXPECTED_CANDLES,
    expected_candles,
    nonpositive_mask,
    with_nonpositive,
)
from forecasting.errors import DataFormatError
from forecasting.ohlcv import (
    COLUMNS,
    MAX_PRICE,
    epoch_ms,
    infer_calendar,
    normalize_ohlcv,
    timeframe_from_seconds,
    timeframe_offset,
    timeframe_seconds,
)

__all__ = [
    "BINANCE",
    "COINMARKETCAP",
    "CRYPTODATADOWNLOAD",
    "EARLIEST_DATE",
    "EARLIEST_EPOCH",
    "KRAKEN",
    "LATEST_EPOCH",
    "MAX_CSV_BYTES",
    "WITHOUT_HEADER",
    "WITH_HEADER",
    "CsvData",
    "infer_timeframe",
    "read_ohlcv_csv",
    "write_ohlcv_csv",
]

MAX_CSV_BYTES = 10 * 1024 * 1024

# Epoch times read outside these bounds are refused (a digit lost or added): the first
# crypto market opened in 2009, and a unit told by magnitude misreads into another century.
EARLIEST_EPOCH = pd.Timestamp("2009-01-01", tz="UTC")
LATEST_EPOCH = pd.Timestamp("2100-01-01", tz="UTC")
# Written dates may reach back further (stock indices since the 1900s), never to 1024 nor
# forward to 2204, which a mistyped year gives.
EARLIEST_DATE = pd.Timestamp("1900-01-01", tz="UTC")
# A row out of time order by more than this many of the file's usual steps beyond both
# rows around it was mistyped (2014 for 2024), not merely misplaced by a sort.
_OUT_OF_PLACE_STEPS = 20

# The names of the layouts recognised, as CsvData.format gives them.
WITH_HEADER = "CSV with a header"
WITHOUT_HEADER = "CSV without a header"
BINANCE = "Binance public data dump"
CRYPTODATADOWNLOAD = "CryptoDataDownload"
KRAKEN = "Kraken OHLCVT download"
COINMARKETCAP = "CoinMarketCap export"

# Kraken's OHLCVT downloads (support.kraken.com, "Downloadable historical OHLCVT data"):
# no header, unix seconds, open, high, low, close, volume and the count of trades.
_KRAKEN_COLUMNS = ("time", "open", "high", "low", "close", "volume", "trades")

_ALIASES = {
    "timestamp": (
        # A column named as the open time comes first: CoinMarketCap's export has
        # ``timeOpen`` beside a ``timestamp`` that is each candle's close time.
        "timeopen",
        "time_open",
        "time open",
        "open time",
        "open_time",
        "opentime",
        "open time (utc)",
        # An explicit epoch column next: it is unambiguous, while the ``Date`` beside it in
        # CryptoDataDownload files has changed format over the years.
        "unix",
        "unix timestamp",
        "timestamp",
        "time",
        "date",
        "datetime",
        "date (utc)",
        "time (utc)",
        "timestamp (utc)",
        # Spreadsheets in other languages: German and Dutch, Spanish, Italian.
        "datum",
        "zeit",
        "fecha",
        "data",
    ),
    # German exports (finanzen.net, onvista, comdirect) name the columns Eröffnung or
    # Eröffnungskurs, Hoch, Tief, Schluss or Schlusskurs and Volumen or Umsatz.
    "open": ("open", "o", "open price", "eröffnung", "eröffnungskurs", "erster"),
    "high": ("high", "h", "high price", "hoch", "hochkurs", "tageshoch"),
    "low": ("low", "l", "low price", "tief", "tiefkurs", "tagestief"),
    "close": ("close", "c", "close price", "last", "schluss", "schlusskurs", "letzter"),
    "volume": ("volume", "vol", "v", "base volume", "volume (base)", "volumen", "umsatz"),
}
# Columns holding each candle's close time, never read as its open time.
_CLOSE_TIME_COLUMNS = ("timeclose", "time_close", "time close", "close time", "close_time")
# A date column and a separate time-of-day column (MetaTrader: Date,Time,Open,...).
_DATE_COLUMNS = ("date", "datum", "fecha", "data", "day")
_TIME_OF_DAY_COLUMNS = ("time", "zeit", "hora")
_CLOCK = re.compile(r"\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?", re.ASCII)

# Binance's kline files, in the order of their columns (data.binance.vision).
_BINANCE_COLUMNS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
    "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)  # fmt: skip
_SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab"}
# The first lines are enough to tell the separator, and bound the sniffer's work.
_SNIFF_LINES = 30
_SNIFF_CHARS = 20_000

# "Volume BTC", "volume_usdt", "Vol (ETH)": a volume named after its currency.
_VOLUME_IN = re.compile(r"(?:volume|vol)[\s_:-]*\(?(?!ume)([a-z0-9]{2,10})\)?", re.ASCII)
_SYMBOL_COLUMNS = ("symbol", "pair", "ticker", "market")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_COMMA_NUMBER = re.compile(r"[+-]?(?:\d+|\d{1,3}(?:\.\d{3})+)(?:,\d+)?(?:[eE][+-]?\d+)?", re.ASCII)
# Thousands dots beside a decimal comma: 1.178,43 (the dots can then mean nothing else).
_GROUPED_NUMBER = re.compile(r"[+-]?\d{1,3}(?:\.\d{3})+,\d+(?:[eE][+-]?\d+)?", re.ASCII)
# Quoted numbers of a comma-separated file: 58,000.25 (commas group thousands), 58000,25
# (a decimal comma), and 1,178 (either).
_COMMA_GROUPED = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?(?:[eE][+-]?\d+)?", re.ASCII)
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,(?:\d{1,2}|\d{4,})(?:[eE][+-]?\d+)?", re.ASCII)
_EITHER_COMMA = re.compile(r"[+-]?\d{1,3},\d{3}", re.ASCII)
# Any number with one comma: not a thousands group when the comma follows more than three
# digits or is followed by other than three (58000,250; 12345,678; 0,5).
_ONE_COMMA = re.compile(r"[+-]?\d+,\d+(?:[eE][+-]?\d+)?", re.ASCII)
# Thousands grouped with spaces (a no-break space too, as Excel writes them in French or
# Swedish), with an optional decimal comma: 58 000,25.
_SPACE_GROUPED = re.compile(r"[+-]?\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?:,\d+)?(?:[eE][+-]?\d+)?")
# 31.01.2024, 01/31/2024 and 31-01-2024, with an optional time of day.
_DAY_MONTH = re.compile(
    r"(\d{1,2})([./-])(\d{1,2})\2(\d{4})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2})(\.\d+)?)?)?",
    re.ASCII,
)
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


@dataclass(frozen=True)
class CsvData:
    """A parsed CSV file.

    Attributes
    ----------
    candles
        The OHLCV frame (sorted, duplicates removed).
    timeframe
        The candle spacing inferred from the timestamps, such as ``"1d"``.
    calendar
        ``"business"`` for daily data with no weekend rows (stock-market exports),
        else ``"24/7"``.
    duplicates
        Rows dropped because their timestamp repeated another row's. Exact repeats are
        dropped; of conflicting ones the candle with the larger volume is kept (see
        :mod:`forecasting.data.duplicates`), each conflicting pair recorded in
        ``candles.attrs["duplicate_conflicts"]`` with the rule that chose.
    nonpositive
        Open times of the rows dropped because their open, high, low or close was zero
        or negative; also recorded in ``candles.attrs`` for
        :func:`~forecasting.data.quality.quality_report`.
    format
        A short name of the layout recognised, such as ``"Binance public data dump"``,
        to label the data with (``"Binance public data dump, 1h"``).
    notes
        What a user should know about how the file was read: which volume column was
        used, rows reversed to oldest first, epoch units mixed in one file, the order
        of day and month. One sentence each.
    """

    candles: pd.DataFrame
    timeframe: str
    calendar: str
    duplicates: int
    nonpositive: pd.DatetimeIndex = field(
        default_factory=lambda: pd.DatetimeIndex([], tz="UTC", name="timestamp").as_unit("ms")
    )
    format: str = WITH_HEADER
    notes: tuple[str, ...] = ()


@dataclass
class _Layout:
    """Where the candles are in a file: its format, column names and rows."""

    format: str
    header: list[str]  # the header's names, or the layout's names when there is none
    header_line: int | None  # None when the file has no header row
    mapping: dict[str, int]
    body: list[tuple[int, list[str]]]
    decimal_comma: bool = False
    thousands_dots: bool = False  # some number has both (1.178,43): dots group thousands
    thousands_commas: bool = False  # quoted numbers in a comma file group with commas
    notes: list[str] = field(default_factory=list)
    separator: str = ","
    clock: int | None = None  # a separate time-of-day column (MetaTrader's Date,Time)
    close_times: bool = False  # the time column is named as the close time


def read_ohlcv_csv(
    source: bytes | str | os.PathLike[str] | BinaryIO, *, max_bytes: int = MAX_CSV_BYTES
) -> CsvData:
    """Parse and validate an OHLCV CSV file.

    Parameters
    ----------
    source
        The file's bytes, a path, or a binary file object (such as Streamlit's upload).
    max_bytes
        Larger files are refused before parsing.

    Raises
    ------
    DataFormatError
        Saying what is wrong, with ``row`` and ``column`` set where they are known. The
        message never holds a control character (a NUL, an escape) from the file: those
        are written as escapes (``\\x00``).
    """
    try:
        return _read_csv(source, max_bytes)
    except DataFormatError as exc:
        message, column = _printable(str(exc)), exc.column
        column = _printable(column) if column is not None else None
        if message == str(exc) and column == exc.column:
            raise
        raise DataFormatError(message, row=exc.row, column=column) from exc


def _read_csv(source: bytes | str | os.PathLike[str] | BinaryIO, max_bytes: int) -> CsvData:
    raw, unpacked = _unpacked(_read_bytes(source, max_bytes), max_bytes)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # ``exc.object`` is what the codec saw (after any BOM), so its newlines count lines.
        line = exc.object[: exc.start].count(b"\n") + 1
        raise DataFormatError(
            f"The file is not UTF-8 text (line {line} holds a byte that is not). Export it as "
            "CSV (UTF-8) and upload it again.",
            row=line,
        ) from exc
    if not text.strip():
        raise DataFormatError("The file is empty. Upload a CSV with a header row and candles.")
    if "\x00" in text:
        # UTF-16 text and binary files (an unknown archive) hold NUL bytes, no CSV does.
        line = text[: text.index("\x00")].count("\n") + 1
        raise DataFormatError(
            f"The file holds binary data (a NUL byte on line {line}), not CSV text. Export "
            "the data as CSV (UTF-8) and upload that file.",
            row=line,
        )

    separator = _sniff_separator(text)
    rows = _split_rows(text, separator)
    # Blank lines (before the header too, as pandas allows) carry nothing.
    rows = [(line, row) for line, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise DataFormatError("The file is empty. Upload a CSV with a header row and candles.")
    layout = _recognise(rows, separator)
    header, mapping = layout.header, layout.mapping
    if not layout.body:
        raise DataFormatError(
            "The file has a header but no candles. Add one row per candle below the header.",
            row=(layout.header_line or 0) + 1,
        )

    records, lines = _cells(layout)
    column = header[mapping["timestamp"]]
    index, time_notes = _parse_timestamps(records["timestamp"], lines, column)
    _refuse_out_of_place(index, records["timestamp"], lines, column)
    index, close_notes = _from_close_times(index, records["timestamp"], lines, layout.close_times)
    time_notes.extend(close_notes)
    local = _written_local(records["timestamp"], column)
    values = {}
    for name in COLUMNS:
        values[name] = _parse_numbers(
            records[name],
            lines,
            header[mapping[name]],
            signed=name != "volume",
            limit=MAX_PRICE if name != "volume" else None,
            decimal_comma=layout.decimal_comma,
            thousands_dots=layout.thousands_dots,
            thousands_commas=layout.thousands_commas,
        )
    line_of = _line_of(index, lines)
    notes = [*unpacked, *layout.notes, *time_notes, *_order_notes(index, lines)]
    # In milliseconds, as every OHLCV frame: times that differ below one are repeats.
    frame = pd.DataFrame(values, index=pd.DatetimeIndex(index).as_unit("ms"))
    bad = nonpositive_mask(frame)
    # Repeated open times: exact repeats dropped, conflicting ones resolved by the rule
    # of forecasting.data.duplicates (the larger volume wins, so a fragment never beats
    # the real candle) and recorded in the frame's attrs for the quality report.
    resolved = resolve_duplicates(frame[~bad])
    candles = normalize_ohlcv(resolved)
    candles.attrs = dict(resolved.attrs)
    notes.extend(_conflict_notes(candles, line_of, local=local))
    # A placeholder at the time of a priced row repeats that timestamp: a duplicate.
    nonpositive = normalize_ohlcv(frame[bad]).index.difference(candles.index)
    if bad.any() and len(candles) < 2:
        _refuse_placeholders(len(candles), int(bad.sum()), lines[int(np.flatnonzero(bad)[0])])
    candles = with_nonpositive(candles, nonpositive)
    # Every row that is not a candle or a placeholder repeated an open time: those
    # resolve_duplicates dropped, and placeholders at the time of a priced row.
    duplicates = len(frame) - len(candles) - len(nonpositive)
    # The placeholders' times are the file's candle grid too: with them left out, every
    # other candle missing would read as a timeframe twice as long.
    stamps = candles.index.union(nonpositive)
    timeframe = infer_timeframe(stamps)
    calendar = infer_calendar(stamps, timeframe)
    try:
        _refuse_irregular(stamps, timeframe, line_of)
    except DataFormatError as exc:
        raise _with_offset_hint(exc, records["timestamp"]) from None
    _refuse_sparse(stamps, timeframe, calendar)
    if local:
        notes.extend(_spring_forward_notes(stamps, timeframe))
    return CsvData(
        candles, timeframe, calendar, duplicates, nonpositive, layout.format, tuple(notes)
    )


def _cells(layout: _Layout) -> tuple[dict[str, list[str]], list[int]]:
    """The cells of the columns used, by column, and the line of each row."""
    header, mapping = layout.header, layout.mapping
    width = len(header) if layout.header_line is not None else len(layout.body[0][1])
    records: dict[str, list[str]] = {name: [] for name in mapping}
    lines: list[int] = []
    # The cells that hold digits in a row of the right width: a longer row whose digits
    # sit elsewhere had its values shifted by a separator inside one of them.
    reference = next((row for _, row in layout.body if len(row) == width), None)
    ignored: list[int] = []
    for line, row in layout.body:
        if len(row) > width and any(cell.strip() for cell in row[width:]):
            _refuse_if_shifted(layout, line, row, width, reference)
            ignored.append(line)
        # A short row is refused even when the fields it lacks are ignored ones: a field
        # missing in the middle would shift every value after it into the wrong column.
        if len(row) < width:
            missing = header[len(row)] if len(row) < len(header) else f"field {len(row) + 1}"
            against = (
                "the header"
                if layout.header_line is not None
                else f"the first row (line {layout.body[0][0]})"
            )
            raise DataFormatError(
                f"Line {line} has {len(row)} fields but {against} has {width} "
                f"(no value for '{missing}'). Every row needs a value in every column.",
                row=line,
                column=missing,
            )
        for name, position in mapping.items():
            records[name].append(row[position].strip())
        if layout.clock is not None:
            records["timestamp"][-1] += f" {row[layout.clock].strip()}"
        lines.append(line)
    if ignored:
        more = f" and {len(ignored) - 1} more row{'s' if len(ignored) > 2 else ''}"
        rows = f"Line {ignored[0]}{more if len(ignored) > 1 else ''}"
        verb = "has" if len(ignored) == 1 else "have"
        layout.notes.append(f"{rows} {verb} text beyond the last column of the header: ignored.")
    return records, lines


def _refuse_if_shifted(
    layout: _Layout, line: int, row: list[str], width: int, reference: list[str] | None
) -> None:
    """Refuse a row longer than the header when its values may have shifted.

    A separator inside a value (``58000,25`` or ``1,178.43`` unquoted in a comma-separated
    file) splits it in two and pushes every later value one column right: the last ones
    then land beyond the header. Text there (a note after the row) is ignored; digits
    there, or digits where the other rows have none, mean the values moved.
    """
    has_digit = [any(ch.isdigit() for ch in cell) for cell in row]
    shifted = any(has_digit[width:]) or (
        reference is not None
        and any(has_digit[i] != any(ch.isdigit() for ch in reference[i]) for i in range(width))
    )
    if not shifted:
        return
    against = (
        "the header"
        if layout.header_line is not None
        else f"the first row (line {layout.body[0][0]})"
    )
    if layout.separator == ",":
        cause = (
            "a comma inside a number (a decimal comma as in 58000,25 or thousands commas as "
            "in 1,178.43) splits it into two fields and shifts every value after it into the "
            "wrong column. Export plain numbers such as 58000.25, put quotes around numbers "
            "holding a comma (\"58000,25\"), or separate the columns with ';'."
        )
    else:
        name = _SEPARATORS[layout.separator]
        cause = (
            f"a {name} inside a value splits it into two fields and shifts every value after "
            f"it into the wrong column. Remove the {name} from the values or put quotes "
            "around them."
        )
    raise DataFormatError(
        f"Line {line} has {len(row)} fields but {against} has {width}: most likely {cause}",
        row=line,
    )


# --- recognising the layout ----------------------------------------------------------------


def _sniff_separator(text: str) -> str:
    """The field separator: a comma unless the first lines are clearly split by another.

    :class:`csv.Sniffer` picks the character that splits the sampled lines most
    consistently; its choice is kept only when it also splits them into more fields than
    a comma does, so a stray semicolon in a comma file never wins.
    """
    lines = [line for line in text[: _SNIFF_CHARS * 4].splitlines() if line.strip()]
    lines = lines[:_SNIFF_LINES]
    sample = "\n".join(lines)[:_SNIFF_CHARS]
    try:
        separator = csv.Sniffer().sniff(sample, delimiters="".join(_SEPARATORS)).delimiter
    except csv.Error:
        return ","
    if separator == "," or separator not in _SEPARATORS:
        return ","
    fields = {s: sum(len(_fields(line, s)) for line in lines) for s in (separator, ",")}
    return separator if fields[separator] > fields[","] else ","


def _fields(line: str, separator: str) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=separator, skipinitialspace=True), [])
    except csv.Error:
        return []


def _split_rows(text: str, separator: str = ",") -> list[tuple[int, list[str]]]:
    """CSV rows, each with the line it starts on (the first line of the file is line 1)."""
    # Old Mac exports end lines with a bare CR, which the csv module refuses mid-line.
    # Spaces after a separator are skipped, so that ``"open", "high"`` (a space after each
    # comma, as some scripts write) still reads its quoted fields as quoted.
    reader = csv.reader(
        io.StringIO(text.replace("\r\n", "\n").replace("\r", "\n")),
        delimiter=separator,
        skipinitialspace=True,
    )
    rows: list[tuple[int, list[str]]] = []
    line = 1
    try:
        for row in reader:
            rows.append((line, row))
            line = reader.line_num + 1
    except csv.Error as exc:  # e.g. a field over the csv module's size limit
        name = _SEPARATORS[separator]
        raise DataFormatError(
            f"Line {line} cannot be read as CSV ({exc}). Export the data again as plain "
            f"{name}-separated values.",
            row=line,
        ) from exc
    return rows


def _recognise(rows: list[tuple[int, list[str]]], separator: str) -> _Layout:
    """Find the header (or its absence), the columns and the format of the file."""
    notes: list[str] = []
    banner = ""
    first_line, first = rows[0]
    filled = [cell.strip() for cell in first if cell.strip()]
    # A title line above the header: one cell (CryptoDataDownload writes its URL there).
    if len(filled) == 1 and len(rows) > 1 and sum(bool(c.strip()) for c in rows[1][1]) >= 5:
        banner = filled[0]
        notes.append(f"Line {first_line} ({_shown(banner)}) is a title above the header: skipped.")
        rows = rows[1:]
        first_line, first = rows[0]
        filled = [cell.strip() for cell in first if cell.strip()]

    if _is_data_row(first):
        layout = _headerless(rows, separator)
    elif _mostly_numbers(first):
        raise DataFormatError(
            f"Line {first_line} holds numbers ({', '.join(_shown(c) for c in filled[:3])}"
            f"{', ...' if len(filled) > 3 else ''}), not column names, and is no candle of a "
            "layout known without a header. Add a "
            "header row naming the columns timestamp, open, high, low, close and volume.",
            row=first_line,
        )
    else:
        header = [h.strip() for h in first]
        mapping, volume_note = _map_columns(header, first_line, rows[1:2])
        if volume_note:
            notes.append(volume_note)
        body, repeat_notes = _without_repeated_headers(rows[1:], header, banner)
        layout = _Layout(_format_name(header, banner, separator), header, first_line, mapping, body)
        layout.notes.extend(repeat_notes)
        layout.clock = _time_of_day_column(header, mapping, body[:1])
        if layout.clock is not None:
            layout.notes.append(
                f"The times are the {_shown(header[mapping['timestamp']])} and "
                f"{_shown(header[layout.clock])} columns together."
            )
        lowered = _lowered(header)
        layout.close_times = lowered[mapping["timestamp"]] in _CLOSE_TIME_COLUMNS
    layout.notes[:0] = notes
    layout.separator = separator
    if separator != ",":
        # Decimal commas can only be told apart from separators when the separator is
        # something else; "42,123.5" in a comma file stays what it is: not a number.
        numeric = [layout.mapping[name] for name in COLUMNS]
        cells = [row[p].strip() for _, row in layout.body for p in numeric if p < len(row)]
        layout.decimal_comma = any("," in cell for cell in cells)
        layout.thousands_dots = layout.decimal_comma and any(
            _GROUPED_NUMBER.fullmatch(cell) for cell in cells
        )
        if layout.decimal_comma:
            layout.format += ", decimal commas"
    else:
        _quoted_commas(layout)
    return layout


def _quoted_commas(layout: _Layout) -> None:
    """How a comma-separated file's quoted numbers use their commas, decided by the file.

    Spreadsheets quote a number holding the separator. Each such number is one of:

    - a decimal comma for certain: the comma follows more than three digits or is followed
      by other than three (``58000,25``, ``58000,250``, ``0,5``), thousands are grouped
      with dots or spaces before it (``58.000,25``, ``58 000,25``), or an exponent follows
      (``5,8E4``);
    - thousands commas for certain: a decimal point after them (``58,000.25``) or more
      than one group (``1,178,430``);
    - either (``1,178``): read the way the other numbers of the file prove, with a note
      saying so; a file where no number proves it is refused with both readings.
    """
    numeric = [layout.mapping[name] for name in COLUMNS]
    cells = [
        (line, layout.header[p] if layout.header_line is not None else name, row[p].strip())
        for line, row in layout.body
        for name, p in zip(COLUMNS, numeric, strict=True)
        if p < len(row) and "," in row[p]
    ]
    if not cells:
        return
    kinds = [_comma_kind(cell[2]) for cell in cells]
    decimal = next((c for c, k in zip(cells, kinds, strict=True) if k == "decimal"), None)
    grouped = next((c for c, k in zip(cells, kinds, strict=True) if k == "grouped"), None)
    either = next((c for c, k in zip(cells, kinds, strict=True) if k == "either"), None)
    if decimal and grouped:
        raise DataFormatError(
            f"Line {grouped[0]}, column '{grouped[1]}': {_shown(grouped[2])} groups thousands "
            f"with commas while line {decimal[0]} has a decimal comma "
            f"({_shown(decimal[2])}). Use one notation in every row: plain numbers such as "
            "42123.5 at best.",
            row=grouped[0],
            column=grouped[1],
        )
    if decimal:
        layout.decimal_comma = True
        layout.thousands_dots = any(_GROUPED_NUMBER.fullmatch(c[2]) for c in cells)
        layout.format += ", decimal commas"
        layout.notes.append(
            f"Quoted numbers have decimal commas (line {decimal[0]}: {_shown(decimal[2])})."
        )
        layout.notes.extend(_either_note(either, decimal=True) + _grouping_note(cells))
    elif grouped:
        layout.thousands_commas = True
        layout.format += ", thousands commas"
        layout.notes.append(
            f"Quoted numbers group thousands with commas (line {grouped[0]}: {_shown(grouped[2])})."
        )
        layout.notes.extend(_either_note(either, decimal=False))
    elif either:
        line, column, value = either
        raise DataFormatError(
            f"Line {line}, column '{column}': {_shown(value)} could be "
            f"{value.replace(',', '.')} (a decimal comma) or {value.replace(',', '')} (a "
            "thousands comma), and no number of the file tells which. Export plain numbers "
            "such as 42123.5, or separate the columns with ';' and use decimal commas.",
            row=line,
            column=column,
        )
    # Otherwise no quoted cell is a number: each is refused as not a number when read.


def _comma_kind(value: str) -> str | None:
    """``"decimal"``, ``"grouped"`` or ``"either"`` for a number holding a comma, else None."""
    if _GROUPED_NUMBER.fullmatch(value) or (_SPACE_GROUPED.fullmatch(value) and "," in value):
        return "decimal"
    if _COMMA_GROUPED.fullmatch(value):
        if "." in value or value.count(",") > 1:
            return "grouped"
        # An exponent after thousands commas (1,178E3) is written by no program.
        return "decimal" if re.search(r"[eE]", value) else "either"
    if _ONE_COMMA.fullmatch(value):
        return "decimal"
    return None


def _either_note(either: tuple[int, str, str] | None, *, decimal: bool) -> list[str]:
    """A note that numbers such as ``1,178`` were read the way the file proves."""
    if either is None:
        return []
    line, _, value = either
    read = value.replace(",", ".") if decimal else value.replace(",", "")
    mark = "decimal comma" if decimal else "thousands comma"
    return [
        f"Numbers that could be read either way, such as {_shown(value)} on line {line}, were "
        f"read with a {mark} ({read}) as the file's other numbers prove."
    ]


def _grouping_note(cells: list[tuple[int, str, str]]) -> list[str]:
    """A note when thousands are grouped with dots or spaces before a decimal comma."""
    dotted = next((c for c in cells if _GROUPED_NUMBER.fullmatch(c[2])), None)
    spaced = next((c for c in cells if _SPACE_GROUPED.fullmatch(c[2]) and "," in c[2]), None)
    found = [
        f"{mark} (line {c[0]}: {_shown(c[2])})"
        for mark, c in (("dots", dotted), ("spaces", spaced))
        if c is not None
    ]
    return [f"Thousands are grouped with {' and '.join(found)}."] if found else []


def _format_name(header: list[str], banner: str, separator: str) -> str:
    lowered = set(_lowered(header))
    if {"timeopen", "timeclose", "marketcap"} <= lowered:
        return COINMARKETCAP
    if "cryptodatadownload" in banner.lower() or (
        {"unix", "symbol"} <= lowered and any(_VOLUME_IN.fullmatch(h) for h in lowered)
    ):
        return CRYPTODATADOWNLOAD
    if {"open_time", "close_time", "taker_buy_volume"} <= lowered:
        return BINANCE
    if separator != ",":
        return f"{_SEPARATORS[separator]}-separated"
    return WITH_HEADER


def _is_data_row(row: list[str]) -> bool:
    """Whether a first row is a candle rather than a header: a time, then numbers."""
    cells = [cell.strip() for cell in row]
    if len(cells) < 6 or not all(cells[:6]):
        return False
    numbers = all(_PLAIN_NUMBER.fullmatch(c) or _COMMA_NUMBER.fullmatch(c) for c in cells[1:6])
    stamp = cells[0]
    is_time = bool(_PLAIN_NUMBER.fullmatch(stamp) or _DAY_MONTH.fullmatch(stamp)) or not pd.isna(
        pd.to_datetime(stamp, errors="coerce", utc=True, format="ISO8601")
    )
    return numbers and is_time


def _mostly_numbers(row: list[str]) -> bool:
    cells = [cell.strip() for cell in row if cell.strip()]
    numbers = sum(bool(_PLAIN_NUMBER.fullmatch(c) or _COMMA_NUMBER.fullmatch(c)) for c in cells)
    return numbers * 2 > len(cells)


def _headerless(rows: list[tuple[int, list[str]]], separator: str) -> _Layout:
    """The layout of a file whose first row is already a candle."""
    line, first = rows[0]
    cells = [cell.strip() for cell in first]
    if len(cells) == len(_BINANCE_COLUMNS) and _binance_times(cells):
        mapping = {name: _BINANCE_COLUMNS.index(name) for name in COLUMNS}
        mapping["timestamp"] = 0
        return _Layout(BINANCE, list(_BINANCE_COLUMNS), None, mapping, rows)
    # Kraken writes whole unix seconds (9 or 10 digits until 2286) and a whole count.
    if len(cells) == len(_KRAKEN_COLUMNS) and all(
        re.fullmatch(pattern, cell)
        for pattern, cell in ((r"\d{9,10}", cells[0]), (r"\d+", cells[-1]))
    ):
        mapping = {name: _KRAKEN_COLUMNS.index(name) for name in COLUMNS}
        mapping["timestamp"] = 0
        note = (
            "The file has no header and 7 columns, as Kraken's OHLCVT downloads: read as "
            "time, open, high, low, close, volume and trades (the count of trades ignored)."
        )
        return _Layout(KRAKEN, list(_KRAKEN_COLUMNS), None, mapping, rows, notes=[note])
    if len(cells) == len(COLUMNS) + 1:
        names = ["timestamp", *COLUMNS]
        mapping = {name: position for position, name in enumerate(names)}
        name = WITHOUT_HEADER if separator == "," else f"{_SEPARATORS[separator]}-separated"
        note = (
            "The file has no header: its columns were read as timestamp, open, high, low, "
            "close, volume (ccxt's order)."
        )
        return _Layout(name, names, None, mapping, rows, notes=[note])
    raise DataFormatError(
        f"Line {line} is a candle, not a header, and its {len(cells)} columns are no layout "
        "known without one (Binance's 12, Kraken's 7 or timestamp, open, high, low, close, "
        "volume). Add a header row naming the columns timestamp, open, high, low, close "
        "and volume.",
        row=line,
    )


def _binance_times(cells: list[str]) -> bool:
    """Open time and close time of a Binance kline row: whole epoch numbers, close later."""
    try:
        opened, closed = int(cells[0]), int(cells[6])
    except ValueError:
        return False
    return 0 < opened < closed


def _map_columns(
    header: list[str], line: int = 1, sample: list[tuple[int, list[str]]] | None = None
) -> tuple[dict[str, int], str]:
    """Column positions by name, and a note when the volume had to be chosen.

    A column named as the close time (``timeClose``, ``Close time``) is the time column
    only when the file has no other; the times are then read as close times.
    """
    lowered = _lowered(header)
    mapping: dict[str, int] = {}
    for name, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in lowered:
                mapping[name] = lowered.index(alias)
                break
    if "timestamp" not in mapping and lowered and lowered[0] in ("", "unnamed: 0", "index"):
        mapping["timestamp"] = 0
    if "timestamp" not in mapping:
        closing = next((lowered.index(c) for c in _CLOSE_TIME_COLUMNS if c in lowered), None)
        if closing is not None:
            mapping["timestamp"] = closing
    note = ""
    if "volume" not in mapping:
        note = _base_volume(header, lowered, line, sample or [], mapping)
    missing = [name for name in _ALIASES if name not in mapping]
    if missing:
        found = ", ".join(_shown(h) for h in header if h) or "nothing"
        raise DataFormatError(
            f"Missing column{'s' if len(missing) > 1 else ''}: {', '.join(missing)}. "
            f"The header has {found}. Name the columns timestamp (or date), open, high, low, "
            "close and volume.",
            row=line,
            column=missing[0],
        )
    return mapping, note


def _lowered(header: list[str]) -> list[str]:
    """Header names as matched: lower case, without quotes or MetaTrader's ``<...>``."""
    return [h.lower().strip().strip('"').strip("<>").strip() for h in header]


def _without_repeated_headers(
    body: list[tuple[int, list[str]]], header: list[str], banner: str
) -> tuple[list[tuple[int, list[str]]], list[str]]:
    """The rows below the header without copies of it, and a note naming them.

    Files joined one after the other repeat the header (and a title line above it) where
    the second begins; those lines hold no candle and are skipped.
    """
    names = [h.strip().lower() for h in header]
    while names and not names[-1]:
        names.pop()
    kept: list[tuple[int, list[str]]] = []
    repeated: list[int] = []
    titles: list[int] = []
    for position, (line, row) in enumerate(body):
        cells = [cell.strip().lower() for cell in row]
        while cells and not cells[-1]:
            cells.pop()
        if cells == names:
            repeated.append(line)
            continue
        # The title line of a joined file, just above its repeated header.
        if (
            banner
            and [c for c in cells if c] == [banner.lower()]
            and position + 1 < len(body)
            and [c.strip().lower() for c in body[position + 1][1]][: len(names)] == names
        ):
            titles.append(line)
            continue
        kept.append((line, row))
    if not repeated:
        return body, []
    shown = ", ".join(str(line) for line in repeated[:3])
    more = f" and {len(repeated) - 3} more" if len(repeated) > 3 else ""
    verb = "repeats" if len(repeated) == 1 else "repeat"
    title = (
        f", with the title line above (line {titles[0]}{' and more' if len(titles) > 1 else ''})"
        if titles
        else ""
    )
    return kept, [
        f"Line{'s' if len(repeated) > 1 else ''} {shown}{more} {verb} the header (files "
        f"joined one after the other): skipped{title}."
    ]


def _time_of_day_column(
    header: list[str], mapping: dict[str, int], sample: list[tuple[int, list[str]]]
) -> int | None:
    """The position of a time-of-day column to join to a separate date column, if any.

    MetaTrader and many spreadsheets write ``Date,Time`` (``2024.01.02,12:00``): the time
    column is then mapped to the date column and this one holds the time of day.
    """
    lowered = _lowered(header)
    date = next((lowered.index(c) for c in _DATE_COLUMNS if c in lowered), None)
    clock = next((lowered.index(c) for c in _TIME_OF_DAY_COLUMNS if c in lowered), None)
    if date is None or clock is None or mapping["timestamp"] not in (date, clock) or not sample:
        return None
    row = sample[0][1]
    if max(date, clock) >= len(row):
        return None
    if not _CLOCK.fullmatch(row[clock].strip()) or ":" in row[date]:
        return None
    mapping["timestamp"] = date
    return clock


def _base_volume(
    header: list[str],
    lowered: list[str],
    line: int,
    sample: list[tuple[int, list[str]]],
    mapping: dict[str, int],
) -> str:
    """Choose among volumes named after their currency (``Volume BTC``, ``Volume USDT``).

    The one in the symbol's base currency is the volume of every other source; the
    choice is recorded in ``mapping`` and returned as a note. With two or more and no
    symbol to tell the base currency, the file is refused.
    """
    named = [(i, m.group(1)) for i, h in enumerate(lowered) if (m := _VOLUME_IN.fullmatch(h))]
    if not named:
        return ""
    if len(named) == 1:
        mapping["volume"] = named[0][0]
        return f"The volume is the file's {_shown(header[named[0][0]])} column."
    symbol = ""
    symbol_column = next((lowered.index(c) for c in _SYMBOL_COLUMNS if c in lowered), None)
    if symbol_column is not None and sample and symbol_column < len(sample[0][1]):
        symbol = re.sub(r"[^A-Z0-9]", "", sample[0][1][symbol_column].upper())
    base = [(i, currency) for i, currency in named if symbol.startswith(currency.upper())]
    # The longest match decides ("Volume BTC" and "Volume BTCDOM" in a BTCDOMUSDT file).
    base.sort(key=lambda item: len(item[1]), reverse=True)
    if not base or (len(base) > 1 and len(base[0][1]) == len(base[1][1])):
        columns = " and ".join(_shown(header[i]) for i, _ in named)
        told = (
            f"the symbol {_shown(symbol)} does not say"
            if symbol
            else "there is no Symbol column to say"
        )
        raise DataFormatError(
            f"Line {line}: the file has the volume twice, {columns}, and {told} which "
            "currency is the base. Keep the volume in the base currency (the first of the "
            "pair, BTC in BTC/USDT) and name its column volume.",
            row=line,
            column="volume",
        )
    chosen = base[0][0]
    mapping["volume"] = chosen
    others = ", ".join(_shown(header[i]) for i, _ in named if i != chosen)
    return (
        f"The volume is {_shown(header[chosen])}, in the base currency of {symbol} "
        f"({others} ignored)."
    )


def _order_notes(index: pd.DatetimeIndex, lines: list[int]) -> list[str]:
    """Say when the rows were not oldest first in the file."""
    steps = np.diff(index.asi8)
    if not len(steps) or not (steps < 0).any():
        return []
    if (steps <= 0).all():
        return ["The rows are newest first in the file: they were put oldest first."]
    first = lines[int(np.flatnonzero(steps < 0)[0]) + 1]
    return [
        f"The rows are not in time order in the file (line {first} is earlier than the row "
        "above it): they were sorted by time."
    ]


def _conflict_notes(
    candles: pd.DataFrame, line_of: dict[int, int], *, local: bool = False
) -> list[str]:
    """Say when rows with the same open time disagreed, and which rule chose.

    With ``local`` (times written without a UTC offset), a repeated time in the small
    hours of a day the clocks went back (Europe: last Sunday of October; the US: first
    Sunday of November) is said to be local time with daylight saving, not a fragment.
    """
    conflicts = duplicate_conflicts(candles)
    if not conflicts:
        return []
    stamps = sorted({int(c["timestamp"]) for c in conflicts})
    first = pd.Timestamp(stamps[0], unit="ms", tz="UTC")
    times = f"{len(stamps)} open time{'s appear' if len(stamps) != 1 else ' appears'}"
    note = (
        f"{times} more than once with different values (the first at "
        f"{first:%Y-%m-%d %H:%M} UTC, line {line_of.get(stamps[0])}): {DUPLICATE_RULE}."
    )
    # Only candles shorter than a day have an hour to repeat (a daily file's 00:00 does not).
    if local and np.median(np.diff(candles.index.asi8)) < 86_400_000:
        at = [pd.Timestamp(stamp, unit="ms", tz="UTC") for stamp in stamps]
        changes = _clock_changes({t.year for t in at})
        back = next((t for t in at if changes.get(t.date(), ("", ""))[1] == "back"), None)
        if back is not None and back.hour < _CLOCK_CHANGE_HOURS:
            note += (
                f" The repeated {back:%H:%M} on {back:%Y-%m-%d} (line "
                f"{line_of.get(epoch_ms(back))}) is the hour that comes twice when clocks go back "
                f"in {changes[back.date()][0]}: the times look like local time with daylight "
                "saving. Export the times in UTC."
            )
    return [note]


# Clocks change in the small hours (01:00 UTC in Europe, 02:00 local in the US).
_CLOCK_CHANGE_HOURS = 4


def _clock_changes(years: set[int]) -> dict[object, tuple[str, str]]:
    """The days clocks change, as ``{date: (where, "back" or "forward")}``.

    Europe (EU directive 2000/84/EC): forward on the last Sunday of March, back on the
    last Sunday of October. The US (Energy Policy Act of 2005, from 2007): forward on the
    second Sunday of March, back on the first Sunday of November.
    """
    changes: dict[object, tuple[str, str]] = {}
    for year in years:
        changes[_sunday(year, 3, -1)] = ("Europe", "forward")
        changes[_sunday(year, 10, -1)] = ("Europe", "back")
        changes[_sunday(year, 3, 2)] = ("the US", "forward")
        changes[_sunday(year, 11, 1)] = ("the US", "back")
    return changes


def _sunday(year: int, month: int, nth: int) -> object:
    """The ``nth`` Sunday of a month (``-1``: the last) as a ``datetime.date``."""
    days = pd.date_range(f"{year}-{month:02d}-01", periods=31, freq="D")
    sundays = days[(days.month == month) & (days.day_of_week == 6)]
    return sundays[nth if nth < 0 else nth - 1].date()


def _written_local(values: list[str], column: str) -> bool:
    """Whether the times are written dates without a UTC offset: local time, perhaps."""
    if not values or "utc" in column.lower() or _PLAIN_NUMBER.fullmatch(values[0]):
        return False
    return not any(_UTC_OFFSET.search(v) or v.upper().endswith("UTC") for v in values)


def _spring_forward_notes(stamps: pd.DatetimeIndex, timeframe: str) -> list[str]:
    """A note when exactly the hour clocks skip in spring is missing from local times."""
    length = timeframe_seconds(timeframe) * 1000
    if length > 3_600_000 or len(stamps) < 2:
        return []
    ms = stamps.as_unit("ms").asi8
    gaps = np.flatnonzero(np.diff(ms) == 3_600_000 + length)
    changes = _clock_changes({int(year) for year in stamps.year.unique()})
    for gap in gaps.tolist():
        missing = pd.Timestamp(int(ms[gap]) + length, unit="ms", tz="UTC")
        where, kind = changes.get(missing.date(), ("", ""))
        if kind == "forward" and missing.hour < _CLOCK_CHANGE_HOURS:
            end = missing + pd.Timedelta(hours=1)
            return [
                f"No candle from {missing:%H:%M} to {end:%H:%M} on {missing:%Y-%m-%d}, the hour "
                f"clocks skip when they go forward in {where}: the times look like local time "
                "with daylight saving. Export the times in UTC."
            ]
    return []


def _from_close_times(
    index: pd.DatetimeIndex, values: list[str], lines: list[int], named: bool
) -> tuple[pd.DatetimeIndex, list[str]]:
    """Open times from times that are each candle's close time, by a stated rule.

    Close times are told by every time lying 1 ms before a whole second (Binance's
    ``close_time``, ``23:59:59.999``), by every time lying 1 s before a whole minute with
    whole seconds (``23:59:59``), or by a column named as the close time (``timeClose``)
    when the file has no other. Each candle then opens one timeframe before the end of
    its close time: ``open = close + 1 ms (or 1 s, or nothing for a named column on the
    boundary) - one timeframe``, the timeframe told by the spacing of the close times.
    Open times are never written at ``.999``: a close time kept as one would misdate
    every candle by almost a whole candle.
    """
    ms = index.as_unit("ms").asi8
    if len(ms) < 2:
        return index, []
    if (ms % 1000 == 999).all():
        gap, told = 1, "every one 1 ms before a whole second"
    elif (ms % 60_000 == 59_000).all():
        gap, told = 1000, "every one 1 s before a whole minute"
    elif named:
        gap, told = 0, "the column is named as the close time"
    else:
        return index, []
    ends = pd.DatetimeIndex(index + pd.Timedelta(milliseconds=gap))
    timeframe = infer_timeframe(ends.unique().sort_values())
    opened = pd.DatetimeIndex(ends - timeframe_offset(timeframe), name="timestamp")
    added = {0: "", 1: " + 1 ms", 1000: " + 1 s"}[gap]
    return opened, [
        f"The times are candle close times ({told}), as Binance's close_time and "
        f"CoinMarketCap's timeClose are written: each candle's open time was taken as its "
        f"close time{added} - {timeframe} (line {lines[0]}: {_shown(values[0])} opens at "
        f"{opened[0]:%Y-%m-%d %H:%M:%S} UTC)."
    ]


def _line_of(index: pd.DatetimeIndex, lines: list[int]) -> dict[int, int]:
    """The first line of the file holding each open time (epoch milliseconds)."""
    stamps = pd.DatetimeIndex(index).as_unit("ms").asi8
    found: dict[int, int] = {}
    for stamp, line in zip(stamps.tolist(), lines, strict=True):
        found.setdefault(stamp, line)
    return found


# --- checks on the whole file --------------------------------------------------------------


def _refuse_irregular(stamps: pd.DatetimeIndex, timeframe: str, line_of: dict[int, int]) -> None:
    """Refuse candles spaced unlike any timeframe, naming the first odd step's line.

    Real candles sit on a grid: most steps between consecutive ones are the timeframe,
    the others a whole number of it (missing candles). Steps of no timeframe mean the
    times were read in the wrong unit, with day and month swapped, or are no candles.
    """
    seconds = timeframe_seconds(timeframe)
    ms = stamps.as_unit("ms").asi8
    steps = np.diff(ms)
    if timeframe.endswith("s") and seconds >= 60:
        odd = np.flatnonzero(steps % 60_000 != 0)
        line = line_of.get(int(ms[odd[0] + 1])) if len(odd) else None
        where = f" (line {line} is {_duration(int(steps[odd[0]]))} after the candle before it)"
        raise DataFormatError(
            f"The candles are {_duration(seconds * 1000)} apart (the median step), which "
            "is no timeframe: candles of a minute or more are whole minutes apart"
            f"{where if line else ''}. Check that every row's time is in the same unit and "
            "format, or resample the file to a timeframe such as 1m, 5m or 1h.",
            row=line,
        )
    if not isinstance(timeframe_offset(timeframe), pd.Timedelta):
        return  # months and years: the median already held them to 28-31 days
    odd = np.flatnonzero(steps % (seconds * 1000) != 0)
    if len(odd) * 2 <= len(steps):
        _refuse_off_grid(ms, timeframe, line_of)
        return
    first = int(odd[0])
    line = line_of.get(int(ms[first + 1]))
    _refuse_mostly_missing(stamps, steps, timeframe, line, int(steps[first]))
    raise DataFormatError(
        f"The rows are spaced unlike any timeframe: {len(odd)} of the {len(steps)} steps "
        f"between consecutive candles are not a whole number of {timeframe} (the median "
        f"step), the first {_duration(int(steps[first]))} before line {line}. Check "
        "that every row's time is in the same unit and date format, or resample the file to "
        "one timeframe.",
        row=line,
    )


def _refuse_mostly_missing(
    stamps: pd.DatetimeIndex, steps: np.ndarray, timeframe: str, line: int | None, odd: int
) -> None:
    """Refuse a file with most of its candles missing, saying so rather than a timeframe.

    With more than half the candles missing, the median step is two or more candles
    long and the others are not whole numbers of it. When every step is a whole number
    of a shorter timeframe that itself occurs, or of whole days (1d for a daily file
    missing most days, even with no two days in a row), that is the file's timeframe and
    the message counts the candles missing.
    """
    positive = steps[steps > 0].astype("int64")
    if not len(positive):
        return
    unit = int(np.gcd.reduce(positive))
    # A finer step that never occurs is taken only in whole days (a daily file with no
    # two days in a row); 1 h 13 min steps are odd times, not 1m candles missing.
    if unit % 1000 or ((positive == unit).sum() < 2 and unit % 86_400_000):
        return
    finer = timeframe_from_seconds(unit // 1000)
    if timeframe_seconds(finer) * 1000 != unit or unit >= timeframe_seconds(timeframe) * 1000:
        return
    calendar = infer_calendar(stamps, finer)
    expected = expected_candles(stamps, finer, calendar=calendar)
    missing = expected - len(stamps)
    raise DataFormatError(
        f"Most candles are missing: the candles are whole numbers of {finer} apart, but the "
        f"file has {len(stamps):,} of the {expected:,} {finer} candles from "
        f"{stamps[0]:%Y-%m-%d %H:%M} to {stamps[-1]:%Y-%m-%d %H:%M} UTC ({missing:,} missing, "
        f"{100 * missing / expected:.0f}%), so the median step, {timeframe}, is no "
        f"timeframe of the file (line {line} is {_duration(odd)} after the candle before it). "
        f"Export the file again with every {finer} candle, or resample it to a longer "
        "timeframe.",
        row=line,
    )


_UTC_OFFSET = re.compile(r"(?:Z|[+-]\d\d:?\d\d)$")


def _with_offset_hint(error: DataFormatError, times: list[str]) -> DataFormatError:
    """The refusal of an irregular file, saying so when its times change UTC offset.

    Daily candles written in local time with offsets (``2024-03-30T00:00:00+01:00``,
    ``2024-03-31T00:00:00+02:00``) are 23 or 25 hours apart in UTC at daylight saving:
    read in UTC they are off any grid, and moving them onto one would misdate them.
    """
    offsets = list(dict.fromkeys(m.group(0) for t in times if (m := _UTC_OFFSET.search(t))))
    if len(offsets) < 2:
        return error
    return DataFormatError(
        f"{error} The times change their UTC offset ({', '.join(offsets[:3])}): local time "
        "with daylight saving. Export the times in UTC, or the dates alone for daily "
        "candles.",
        row=getattr(error, "row", None),
    )


def _refuse_off_grid(ms: np.ndarray, timeframe: str, line_of: dict[int, int]) -> None:
    """Refuse the few candles off the file's grid, naming the first by its line.

    The grid's step is the greatest common divisor of the steps between consecutive
    candles that recur (at least twice and in 5% of the steps; the timeframe itself may be
    a multiple of it when many candles are missing), and its phase the one most candles
    share. A candle at another phase, such as 10:17 among hourly candles, is a mistyped
    time or a row of another file. Too few steps recur in a short file to tell a grid:
    it passes.
    """
    steps, counts = np.unique(np.diff(ms), return_counts=True)
    recurring = steps[(counts >= max(2, 0.05 * (len(ms) - 1))) & (steps > 0)]
    if not len(recurring):
        return
    length = int(np.gcd.reduce(recurring.astype("int64")))
    phases = ms % length
    values, counts = np.unique(phases, return_counts=True)
    main = values[int(np.argmax(counts))]
    off = np.flatnonzero(phases != main)
    if not len(off):
        return
    # The first off-grid row of the file, which is not always the earliest in time.
    bad = min(off.tolist(), key=lambda i: line_of.get(int(ms[i]), 0))
    on = np.flatnonzero(phases == main)
    near = int(on[np.argmin(np.abs(on - bad))])
    stamp = pd.Timestamp(int(ms[bad]), unit="ms", tz="UTC")
    other = pd.Timestamp(int(ms[near]), unit="ms", tz="UTC")
    count = f"{len(off)} of the {len(ms)} candles are" if len(off) > 1 else "it is the only one"
    line = line_of.get(int(ms[bad]))
    raise DataFormatError(
        f"Line {line}: {stamp:%Y-%m-%d %H:%M:%S} UTC is off the file's grid (the other "
        f"candles are whole steps of {_duration(length)} apart, such as "
        f"{other:%Y-%m-%d %H:%M:%S} on line {line_of.get(int(ms[near]))}; {count} off the grid). "
        "Correct its time or delete the row, or resample the file to one timeframe.",
        row=line,
    )


def _duration(ms: int) -> str:
    """A length of time as people say it: ``7 min 13 s``, ``3 d 1 h``."""
    parts = []
    rest = ms
    for name, length in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if rest >= length:
            parts.append(f"{rest // length} {name}")
            rest %= length
    if rest or not parts:
        parts.append(f"{rest} ms")
    return " ".join(parts[:2])


def _refuse_sparse(stamps: pd.DatetimeIndex, timeframe: str, calendar: str) -> None:
    """Refuse a file whose candles imply more than ``MAX_EXPECTED_CANDLES`` with its gaps.

    A few rows one second apart and one a year later make a one-second file with 31
    million candles missing: counting them is cheap, but charting or filling them is not.
    """
    expected = expected_candles(stamps, timeframe, calendar=calendar)
    if expected > MAX_EXPECTED_CANDLES:
        raise DataFormatError(
            f"The file's {len(stamps):,} candles, {timeframe} apart, run from "
            f"{stamps[0]:%Y-%m-%d %H:%M} to {stamps[-1]:%Y-%m-%d %H:%M} UTC: that span holds "
            f"{expected:,} {timeframe} candles, over the limit of {MAX_EXPECTED_CANDLES:,}. "
            "Resample the file to a larger timeframe, export a shorter range, or split it "
            "where the long gaps are."
        )


def _refuse_placeholders(priced: int, dropped: int, line: int) -> None:
    """Refuse a file whose rows are (nearly) all zero-price placeholders, saying so."""
    rows = f"{dropped:,} row{'s' if dropped != 1 else ''}"
    if not priced:
        raise DataFormatError(
            f"Every row of the file has a zero or negative price ({rows}, the first on line "
            f"{line}), as providers write for candles they do not have: there are no candles "
            "to use. Export the data again from a source that has prices for this pair.",
            row=line,
        )
    raise DataFormatError(
        f"Only one candle of the file has prices above zero ({rows} "
        f"{'has' if dropped == 1 else 'have'} a zero or negative price, the first on line "
        f"{line}): at least two are needed. Export a longer range or the data from another "
        "source.",
        row=line,
    )


def write_ohlcv_csv(candles: pd.DataFrame, target: str | os.PathLike[str] | io.TextIOBase) -> None:
    """Write ``timestamp,open,high,low,close,volume`` with ISO-8601 UTC timestamps.

    Values are written with full precision (``repr`` of the float), so reading the
    file back gives the same numbers.
    """
    out = candles.loc[:, list(COLUMNS)].copy()
    index = pd.DatetimeIndex(out.index)
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    # Whole seconds keep the usual short form; finer stamps would be truncated by it,
    # so those files get milliseconds (the unit every OHLCV frame holds).
    if (index.as_unit("ns").asi8 % 1_000_000_000).any():
        stamps = index.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
    else:
        stamps = index.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.index = pd.Index(stamps, name="timestamp")
    out.to_csv(target, float_format=None, lineterminator="\n")


def infer_timeframe(index: pd.DatetimeIndex) -> str:
    """The most common spacing of the timestamps as a ccxt timeframe string.

    Raises
    ------
    DataFormatError
        When there are fewer than two distinct timestamps, or they do not increase by
        at least one second.
    """
    if len(index) < 2:
        raise DataFormatError(
            f"The file has {len(index)} distinct candle time{'s' if len(index) != 1 else ''}: "
            "at least two are needed to tell the timeframe. Upload a longer range."
        )
    spacing = pd.Series(index).diff().dropna().median().total_seconds()
    if spacing <= 0:
        raise DataFormatError(
            "The timestamps do not increase: cannot tell the timeframe. Sort the rows by time."
        )
    if spacing < 1:
        raise DataFormatError(
            "The candles are less than a second apart: that is tick data, not candles. "
            "Resample it to a timeframe of one second or more."
        )
    return timeframe_from_seconds(round(spacing))


def _read_bytes(source: bytes | str | os.PathLike[str] | BinaryIO, max_bytes: int) -> bytes:
    if isinstance(source, bytes):
        raw = source
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        size = path.stat().st_size
        if size > max_bytes:
            raise DataFormatError(_too_large(size, max_bytes, exact=True))
        raw = path.read_bytes()
    else:
        # One byte past the limit is enough to know it is too large, without reading it all.
        raw = source.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise DataFormatError(_too_large(len(raw), max_bytes, exact=False))
    if len(raw) > max_bytes:
        raise DataFormatError(_too_large(len(raw), max_bytes, exact=True))
    return raw


# The first bytes of files that are not text, and what each is.
_ARCHIVES = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}
_NOT_CSV = {
    b"7z\xbc\xaf\x27\x1c": "a 7-Zip archive: unpack it and upload the CSV inside",
    b"Rar!": "a RAR archive: unpack it and upload the CSV inside",
    b"\xd0\xcf\x11\xe0": "an Excel 97-2003 workbook: save the sheet as CSV (UTF-8)",
    b"PAR1": "a Parquet file: export it as CSV",
}
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    gzip.BadGzipFile,
    lzma.LZMAError,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    tarfile.TarError,
)
# The POSIX and GNU tar formats write "ustar" at this offset of every member's header.
_TAR_MAGIC_AT = 257


def _unpacked(raw: bytes, max_bytes: int) -> tuple[bytes, list[str]]:
    """The CSV text's bytes of a file that may be compressed, and a note saying so.

    A zip or tar archive holding one CSV (as Binance's public data dumps are served), or a
    gzip, bzip2 or xz file (a compressed tar too: ``.tar.gz``), is unpacked with the
    standard library (:mod:`zipfile`, :mod:`tarfile`, ...), never more than ``max_bytes``
    coming out whatever the archive claims. What comes out is checked once more: an
    archive inside (a gzip of a gzip, a zip in a zip) is refused, naming what was found,
    rather than unpacked again. Other archives, workbooks and Parquet files are refused in
    one line saying what to do.
    """
    for magic, kind in _NOT_CSV.items():
        if raw.startswith(magic):
            raise DataFormatError(f"The file is {kind}, not a CSV file.")
    outer = _kind(raw)
    try:
        text, notes = _unpack_once(raw, max_bytes)
        if outer in _ARCHIVES.values() and _kind(text) == "tar":
            # A compressed tar (.tar.gz, .tar.bz2, .tar.xz) is one file in two layers.
            text, notes = _from_tar(text, max_bytes, f"{outer}-compressed tar archive")
            outer = f"{outer}-compressed tar archive"
    except _ARCHIVE_ERRORS as exc:
        raise DataFormatError(
            f"The file is a damaged or unreadable archive ({_printable(str(exc))}). Unpack "
            "it yourself and upload the CSV inside."
        ) from exc
    inner = _kind(text) or _not_csv(text)
    if notes and inner is not None:
        raise DataFormatError(
            f"The file is {_article(outer or 'archive')} holding {_article(inner)}, not a "
            "CSV: an archive inside an archive is not unpacked. Unpack it first and upload "
            "the CSV inside."
        )
    return text, notes


def _article(kind: str) -> str:
    """A kind of file with its article: ``"a gzip file"``, ``"an xz file"``."""
    names = {
        "gzip": "a gzip file",
        "bzip2": "a bzip2 file",
        "xz": "an xz file",
        "zip": "a zip archive",
        "tar": "a tar archive",
    }
    if kind in names:
        return names[kind]
    return kind if kind.startswith(("a ", "an ")) else f"a {kind}"


def _kind(data: bytes) -> str | None:
    """``"zip"``, ``"tar"``, ``"gzip"``, ``"bzip2"``, ``"xz"`` by the first bytes, else None."""
    if data.startswith(_ZIP):
        return "zip"
    for magic, kind in _ARCHIVES.items():
        if data.startswith(magic):
            return kind
    if data[_TAR_MAGIC_AT : _TAR_MAGIC_AT + 5] == b"ustar":
        return "tar"
    return None


def _not_csv(data: bytes) -> str | None:
    """What a file known not to be CSV is (``"a 7-Zip archive"``), else None."""
    return next(
        (kind.split(":")[0] for magic, kind in _NOT_CSV.items() if data.startswith(magic)), None
    )


def _unpack_once(raw: bytes, max_bytes: int) -> tuple[bytes, list[str]]:
    """One layer of packing taken off, with a note; the bytes as they are if none."""
    kind = _kind(raw)
    if kind == "zip":
        return _from_zip(raw, max_bytes)
    if kind == "tar":
        return _from_tar(raw, max_bytes)
    if kind is None:
        return raw, []
    opener = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}[kind]
    with opener(io.BytesIO(raw), "rb") as stream:
        text = stream.read(max_bytes + 1)
    if len(text) > max_bytes:
        raise DataFormatError(_unpacked_too_large(max_bytes))
    return text, [f"The file is {kind}-compressed: read unpacked."]


def _from_tar(raw: bytes, max_bytes: int, packing: str = "tar archive") -> tuple[bytes, list[str]]:
    """The one CSV of a tar archive, read by :mod:`tarfile` without writing to disk."""
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as archive:
        members = [m for m in archive.getmembers() if not m.isdir()]
        tables = [m for m in members if m.isfile() and m.name.lower().endswith((".csv", ".txt"))]
        if len(tables) != 1:
            found = ", ".join(_shown(m.name) for m in members[:3]) or "nothing"
            more = f" and {len(members) - 3} more" if len(members) > 3 else ""
            raise DataFormatError(
                f"The {packing} holds {len(tables)} CSV files ({found}{more}); it must hold "
                "exactly one. Unpack it and upload one CSV."
            )
        member = tables[0]
        if member.size > max_bytes:
            raise DataFormatError(_unpacked_too_large(max_bytes))
        stream = archive.extractfile(member)
        text = stream.read(max_bytes + 1) if stream is not None else b""
    if len(text) > max_bytes:
        raise DataFormatError(_unpacked_too_large(max_bytes))
    return text, [f"Read {_shown(member.name)} from the {packing}."]


def _printable(text: str) -> str:
    """Text with control characters (NUL, escape, ...) written as escapes, never raw."""
    return "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def _from_zip(raw: bytes, max_bytes: int) -> tuple[bytes, list[str]]:
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        names = {info.filename for info in members}
        if "xl/workbook.xml" in names:
            raise DataFormatError(
                "The file is an Excel workbook, not a CSV file: save the sheet as CSV (UTF-8)."
            )
        tables = [i for i in members if i.filename.lower().endswith((".csv", ".txt"))]
        if len(tables) != 1:
            found = ", ".join(_shown(i.filename) for i in members[:3]) or "nothing"
            more = f" and {len(members) - 3} more" if len(members) > 3 else ""
            raise DataFormatError(
                f"The zip archive holds {len(tables)} CSV files ({found}{more}); it must hold "
                "exactly one. Unpack it and upload one CSV."
            )
        member = tables[0]
        if member.flag_bits & 0x1:
            raise DataFormatError(
                f"{_shown(member.filename)} in the zip archive is encrypted. Unpack it "
                "yourself and upload the CSV."
            )
        with archive.open(member) as stream:
            text = stream.read(max_bytes + 1)
    if len(text) > max_bytes:
        raise DataFormatError(_unpacked_too_large(max_bytes))
    return text, [f"Read {_shown(member.filename)} from the zip archive."]


def _unpacked_too_large(limit: int) -> str:
    return (
        f"Unpacked, the file is larger than the {_format_size(limit)} limit. Upload a "
        "shorter range or a longer timeframe."
    )


def _too_large(size: int, limit: int, *, exact: bool) -> str:
    # A stream is read only up to one byte past the limit, so its real size is unknown.
    shown = _format_size(size) if exact else f"more than {_format_size(limit)}"
    return (
        f"The file is larger than the {_format_size(limit)} limit ({shown}). Upload a "
        "shorter range or a longer timeframe."
    )


def _format_size(size: int) -> str:
    for unit, length in (("MB", 1_048_576), ("KB", 1024)):
        if size >= length:
            return f"{size / length:.1f} {unit}".replace(".0 ", " ")
    return f"{size} bytes"


def _shown(value: str, limit: int = 40) -> str:
    """A cell as quoted in a message: empty ones said so, long ones cut short."""
    if not value:
        return "an empty value"
    return repr(value if len(value) <= limit else value[:limit] + "…")


# --- cells ---------------------------------------------------------------------------------


def _parse_timestamps(
    values: list[str], lines: list[int], column: str
) -> tuple[pd.DatetimeIndex, list[str]]:
    """The open times of the rows, and notes on how they were read."""
    numbers = pd.to_numeric(pd.Series(values, dtype="object"), errors="coerce")
    is_number = numbers.notna().to_numpy()
    # The column is epoch numbers or dates, whichever most cells are (the first cell breaks
    # a tie), so the error names the odd cell out rather than the first row.
    votes = int(is_number.sum()) * 2 - len(values)
    if votes > 0 or (votes == 0 and is_number[0]):
        return _parse_epochs(numbers, values, lines, column)
    matches = [_DAY_MONTH.fullmatch(value) for value in values]
    # On a tie ISO-8601 wins: the rows written otherwise are then the ones named.
    if sum(m is not None for m in matches) * 2 > len(values):
        return _parse_day_month(matches, values, lines, column)
    parsed = pd.to_datetime(pd.Series(values), errors="coerce", utc=True, format="ISO8601")
    # ISO-8601 reads a leading minus as a year before year 1 ("-5" is the year 5 BC),
    # which is no date of any market.
    parsed = parsed.where(parsed.dt.year >= 1)
    if parsed.isna().any():
        bad = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise DataFormatError(
            f"Line {lines[bad]}, column '{column}': {_shown(values[bad])} is not a date. Use "
            "ISO-8601 (2024-01-31 or 2024-01-31T12:00:00Z) or epoch seconds or milliseconds.",
            row=lines[bad],
            column=column,
        )
    index = pd.DatetimeIndex(parsed, name="timestamp")
    _refuse_implausible_dates(index, values, lines, column)
    return index, []


def _parse_day_month(
    matches: list[re.Match[str] | None], values: list[str], lines: list[int], column: str
) -> tuple[pd.DatetimeIndex, list[str]]:
    """Dates written ``31.01.2024``, ``01/31/2024`` or ``31-01-2024``, never guessed.

    A row whose first number is above 12 makes the file day first; one whose second
    number is above 12 makes it month first; both in one file is refused. When no row
    tells, dotted dates are read day first (the only order written with dots) and a
    note says so, and other dates are refused, asking for ISO dates.
    """
    for position, match in enumerate(matches):
        if match is None:
            raise DataFormatError(
                f"Line {lines[position]}, column '{column}': {_shown(values[position])} is not "
                "a date like the other rows' (such as 31.01.2024). Use one date format in "
                "every row, ISO-8601 (2024-01-31) at best.",
                row=lines[position],
                column=column,
            )
    found = [m for m in matches if m is not None]
    first_numbers = np.array([int(m.group(1)) for m in found])
    second_numbers = np.array([int(m.group(3)) for m in found])
    day_first = np.flatnonzero(first_numbers > 12)
    month_first = np.flatnonzero(second_numbers > 12)
    separator = found[0].group(2)
    written = f"dd{separator}mm{separator}yyyy"
    if len(day_first) and len(month_first):
        a, b = int(day_first[0]), int(month_first[0])
        later = max(a, b)
        raise DataFormatError(
            f"Line {lines[later]}, column '{column}': {_shown(values[later])} puts the "
            f"{'day' if later == a else 'month'} first, but line {lines[min(a, b)]} "
            f"({_shown(values[min(a, b)])}) puts the {'month' if later == a else 'day'} first. "
            "Write the dates as ISO-8601 (YYYY-MM-DD, such as 2024-01-31) in every row.",
            row=lines[later],
            column=column,
        )
    if len(day_first):
        is_day_first = True
        shown = int(day_first[0])
        note = (
            f"Dates were read day first ({written}), as line {lines[shown]} "
            f"({_shown(values[shown])}) shows."
        )
    elif len(month_first):
        is_day_first = False
        shown = int(month_first[0])
        written = f"mm{separator}dd{separator}yyyy"
        note = (
            f"Dates were read month first ({written}), as line {lines[shown]} "
            f"({_shown(values[shown])}) shows."
        )
    else:
        unclear = np.flatnonzero(first_numbers != second_numbers)
        if separator != "." and len(unclear):
            at = int(unclear[0])
            a, b, year = int(first_numbers[at]), int(second_numbers[at]), found[at].group(4)
            raise DataFormatError(
                f"Line {lines[at]}, column '{column}': {_shown(values[at])} could be {a} "
                f"{_MONTHS[b - 1]} {year} or {b} {_MONTHS[a - 1]} {year}, and no row has a day "
                f"above 12 to tell which. Write the dates as ISO-8601 (YYYY-MM-DD, such as "
                f"{year}-{b:02d}-{a:02d}).",
                row=lines[at],
                column=column,
            )
        is_day_first = True
        note = (
            f"Dates were read day first ({written}), the order dotted dates are written in; "
            "no row has a day above 12 to confirm it."
            if len(unclear)
            else ""
        )
    iso = []
    for m in found:
        first, second = m.group(1), m.group(3)
        day, month = (first, second) if is_day_first else (second, first)
        hour, minute = int(m.group(5) or 0), m.group(6) or "00"
        clock = f"{hour:02d}:{minute}:{m.group(7) or '00'}{m.group(8) or ''}"
        iso.append(f"{m.group(4)}-{int(month):02d}-{int(day):02d}T{clock}")
    parsed = pd.to_datetime(pd.Series(iso), errors="coerce", utc=True, format="ISO8601")
    if parsed.isna().any():
        bad = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise DataFormatError(
            f"Line {lines[bad]}, column '{column}': {_shown(values[bad])} is not a date (read "
            f"as {written}). Use real calendar dates, ISO-8601 (2024-01-31) at best.",
            row=lines[bad],
            column=column,
        )
    index = pd.DatetimeIndex(parsed, name="timestamp")
    _refuse_implausible_dates(index, values, lines, column)
    return index, [note] if note else []


def _epoch_units(array: np.ndarray) -> np.ndarray:
    """Each epoch number's unit by its magnitude.

    Seconds reach 1e11 only in the year 5138, milliseconds stay below it only before
    March 1973, and so on up: for any candle after 1973 the magnitude tells the unit.
    """
    return np.select(
        [array < 1e11, array < 1e14, array < 1e17], ["s", "ms", "us"], default="ns"
    ).astype(object)


def _parse_epochs(
    numbers: pd.Series, values: list[str], lines: list[int], column: str
) -> tuple[pd.DatetimeIndex, list[str]]:
    array = numbers.to_numpy(dtype="float64", na_value=np.nan)
    # Past 2**63 nanoseconds a number is no epoch time in any unit (and would wrap to a
    # negative int64 silently).
    bad_mask = ~np.isfinite(array) | (array < 0) | (array >= 2.0**63)
    if bad_mask.any():
        bad = int(np.flatnonzero(bad_mask)[0])
        raise DataFormatError(
            f"Line {lines[bad]}, column '{column}': {_shown(values[bad])} is not a valid time. "
            "Use epoch seconds or milliseconds since 1970 (such as 1704067200) or ISO-8601 "
            "dates, the same in every row.",
            row=lines[bad],
            column=column,
        )
    if numbers.dtype.kind in "iu" and ((array >= 1e7) & (array < 1e8)).all():
        # Basic ISO-8601 dates (20240131) are numbers too. As epoch seconds they would all
        # fall in 1970-1973, which no candle export means, so they are read as dates.
        dates = pd.to_datetime(pd.Series(values), format="%Y%m%d", errors="coerce", utc=True)
        if dates.notna().all():
            index = pd.DatetimeIndex(dates, name="timestamp")
            _refuse_implausible_dates(index, values, lines, column)
            return index, []
    if (
        column.lower() not in ("", "unnamed: 0", "index")
        and ((array >= _EXCEL_DAYS_1900) & (array < _EXCEL_DAYS_2100)).all()
    ):
        _refuse_excel_days(array, values, lines, column)
    units = _epoch_units(array)
    # Whole numbers stay integers: a float64 cannot hold every nanosecond epoch exactly.
    epochs = numbers.to_numpy(dtype="int64") if numbers.dtype.kind in "iu" else array
    # Milliseconds hold every unit's range (seconds up to the year 5138) and are what
    # every OHLCV frame keeps in the end.
    milliseconds = np.empty(len(array), dtype="int64")
    for unit in _UNIT_NAMES:
        rows = np.flatnonzero(units == unit)
        if not len(rows):
            continue
        try:
            parsed = pd.DatetimeIndex(pd.to_datetime(epochs[rows], unit=unit, utc=True))
            milliseconds[rows] = parsed.as_unit("ms").asi8
        except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime) as exc:
            bad = int(rows[np.argmax(array[rows])])
            raise DataFormatError(
                f"Line {lines[bad]}, column '{column}': {_shown(values[bad])} is out of range "
                "for an epoch time. Use epoch seconds or milliseconds, or ISO-8601 dates.",
                row=lines[bad],
                column=column,
            ) from exc
    _refuse_implausible(milliseconds, units, values, lines, column)
    index = pd.DatetimeIndex(milliseconds.astype("datetime64[ms]"), name="timestamp")
    index = index.tz_localize("UTC")
    return index, _unit_notes(units, lines)


# Excel's day numbers count days from 1899-12-30 (its 1900 date system): 2 is 1900-01-01
# and 73051 is 2100-01-01, the span of written dates accepted.
_EXCEL_EPOCH = pd.Timestamp("1899-12-30", tz="UTC")
_EXCEL_DAYS_1900 = 2
_EXCEL_DAYS_2100 = 73_051


def _refuse_excel_days(array: np.ndarray, values: list[str], lines: list[int], column: str) -> None:
    """Refuse times that are all Excel day numbers (``45628``), saying so.

    As epoch seconds they would all fall on 1 January 1970: a spreadsheet whose date
    column was formatted as numbers before it was saved writes its dates this way.
    """
    day = _EXCEL_EPOCH + pd.to_timedelta(float(array[0]), unit="D").round("s")
    shown = f"{day:%Y-%m-%d}" if day == day.normalize() else f"{day:%Y-%m-%d %H:%M}"
    raise DataFormatError(
        f"Line {lines[0]}, column '{column}': {_shown(values[0])} looks like an Excel day "
        f"number ({shown} in Excel), as every time of the column does: the spreadsheet "
        "saved its dates as numbers. Format the column as dates (such as yyyy-mm-dd hh:mm) "
        "and save the file as CSV again.",
        row=lines[0],
        column=column,
    )


def _refuse_implausible(
    milliseconds: np.ndarray, units: np.ndarray, values: list[str], lines: list[int], column: str
) -> None:
    """Refuse an epoch time that reads as a year no crypto candle can have.

    The unit of each epoch number is told by its magnitude, so a number that lost or
    gained a digit (not three) reads ten times too early or late in its own unit or the
    next: any time from 2009 to 2100 then lands before 1984 or after 2350. Times outside
    ``[EARLIEST_EPOCH, LATEST_EPOCH)`` are refused, naming the line and what its neighbours
    read as, rather than placed decades away from the rest of the file.
    """
    low, high = epoch_ms(EARLIEST_EPOCH), epoch_ms(LATEST_EPOCH)
    outside = (milliseconds < low) | (milliseconds >= high)
    if not outside.any():
        return
    bad = int(np.flatnonzero(outside)[0])
    read = pd.Timestamp(int(milliseconds[bad]), unit="ms", tz="UTC")
    side = "before any crypto market traded (2009)" if milliseconds[bad] < low else "after 2100"
    inside = np.flatnonzero(~outside)
    neighbour = ""
    if len(inside):
        near = int(inside[np.argmin(np.abs(inside - bad))])
        shown = pd.Timestamp(int(milliseconds[near]), unit="ms", tz="UTC")
        neighbour = f"; line {lines[near]} reads as {shown:%Y-%m-%d %H:%M} UTC"
    raise DataFormatError(
        f"Line {lines[bad]}, column '{column}': {_shown(values[bad])} reads as "
        f"{read:%Y-%m-%d %H:%M} UTC (epoch {_UNIT_NAMES[units[bad]]}, told by its "
        f"magnitude), {side}{neighbour}. A digit was probably lost or added: correct the "
        "value or delete the row.",
        row=lines[bad],
        column=column,
    )


def _refuse_implausible_dates(
    index: pd.DatetimeIndex, values: list[str], lines: list[int], column: str
) -> None:
    """Refuse a written date before ``EARLIEST_DATE`` or from ``LATEST_EPOCH`` on.

    A mistyped year (``1024-01-11``, ``2204-01-11`` in a file of 2024) would otherwise
    stretch the file over centuries of missing candles.
    """
    years = index.year.to_numpy()
    outside = (years < EARLIEST_DATE.year) | (years >= LATEST_EPOCH.year)
    if not outside.any():
        return
    bad = int(np.flatnonzero(outside)[0])
    inside = np.flatnonzero(~outside)
    neighbour = ""
    if len(inside):
        near = int(inside[np.argmin(np.abs(inside - bad))])
        neighbour = f"; line {lines[near]} reads as {index[near]:%Y-%m-%d %H:%M} UTC"
    raise DataFormatError(
        f"Line {lines[bad]}, column '{column}': {_shown(values[bad])} is in the year "
        f"{years[bad]}, outside {EARLIEST_DATE.year}-{LATEST_EPOCH.year - 1}{neighbour}. The "
        "year was probably mistyped: correct the date or delete the row.",
        row=lines[bad],
        column=column,
    )


def _refuse_out_of_place(
    index: pd.DatetimeIndex, values: list[str], lines: list[int], column: str
) -> None:
    """Refuse a row far out of time order from the rows around it in the file.

    A row is out of place when its time lies outside the span of the rows just above
    and below it by more than ``_OUT_OF_PLACE_STEPS`` of the file's usual step (the
    median distance between consecutive rows): a 2014 among rows of 2024, or an epoch
    time with one wrong digit. The first and last rows have one neighbour: they are out
    of place when they run against the file's order by that much beyond both of the two
    rows next to them. Files in any order
    pass (their usual step is then long), as do files joined from ordered parts (each
    joint is one step out of order).
    """
    ms = index.as_unit("ms").asi8 if len(index) else np.array([], dtype="int64")
    if len(ms) < 3:
        return
    steps = np.diff(ms)
    moves = np.abs(steps[steps != 0])
    if not len(moves):
        return
    limit = float(np.median(moves)) * _OUT_OF_PLACE_STEPS
    before, after = ms[:-2], ms[2:]
    middle = ms[1:-1]
    beyond = np.maximum(np.minimum(before, after) - middle, middle - np.maximum(before, after))
    away = np.zeros(len(ms))
    away[1:-1] = beyond
    # The first and last rows against the two rows next to them, so that a mistyped
    # second row is not blamed on the first.
    if (steps > 0).sum() >= (steps < 0).sum():
        away[0], away[-1] = ms[0] - ms[1:3].max(), ms[-3:-1].min() - ms[-1]
    else:
        away[0], away[-1] = ms[1:3].min() - ms[0], ms[-1] - ms[-3:-1].max()
    far = np.flatnonzero(away > limit)
    if not len(far):
        return
    bad = int(far[0])
    around = [i for i in (bad - 1, bad + 1) if 0 <= i < len(ms)]
    shown = " and ".join(f"line {lines[i]} reads as {index[i]:%Y-%m-%d %H:%M}" for i in around)
    raise DataFormatError(
        f"Line {lines[bad]}, column '{column}': {_shown(values[bad])} reads as "
        f"{index[bad]:%Y-%m-%d %H:%M} UTC, {_duration(int(away[bad]))} out of time order with "
        f"the rows around it ({shown}). A digit was probably mistyped: correct the time or "
        "delete the row (if the row belongs elsewhere, move it there).",
        row=lines[bad],
        column=column,
    )


def _unit_notes(units: np.ndarray, lines: list[int]) -> list[str]:
    """A note when one file mixes epoch units, with the line each unit starts on."""
    changes = np.flatnonzero(units[1:] != units[:-1]) + 1
    if not len(changes):
        return []
    starts = [0, *changes.tolist()]
    shown = [f"{_UNIT_NAMES[units[s]]} from line {lines[s]}" for s in starts[:4]]
    more = f" and {len(starts) - 4} more changes" if len(starts) > 4 else ""
    return [
        f"The epoch times mix units ({', '.join(shown)}{more}): each row was read in its own "
        "unit, told by its magnitude."
    ]


def _parse_numbers(
    values: list[str],
    lines: list[int],
    column: str,
    *,
    signed: bool = False,
    limit: float | None = None,
    decimal_comma: bool = False,
    thousands_dots: bool = False,
    thousands_commas: bool = False,
) -> np.ndarray:
    """The cells of one column as floats, refusing any that is not a finite number.

    ``signed`` lets negative numbers through: a price below zero marks a placeholder row,
    dropped later with the zero ones, while a negative volume is an error in the file.
    ``limit`` refuses numbers above it (prices above ``MAX_PRICE``). ``decimal_comma``
    reads ``58000,25`` and ``1.178,43`` (a thousands dot beside a decimal comma);
    ``thousands_dots`` (some number of the file is written so) reads ``1.178`` as 1178,
    which is otherwise refused as ambiguous. ``thousands_commas`` reads ``58,000.25`` (a
    quoted cell of a comma-separated file) as 58000.25.
    """
    if thousands_commas:
        values_read = [v.replace(",", "") if _COMMA_GROUPED.fullmatch(v) else v for v in values]
    elif decimal_comma:
        values_read = [
            _from_decimal_comma(v, line, column, thousands_dots)
            for v, line in zip(values, lines, strict=True)
        ]
    else:
        values_read = values
    numbers = pd.to_numeric(pd.Series(values_read, dtype="object"), errors="coerce")
    array = numbers.to_numpy(dtype="float64", na_value=np.nan)
    bad_mask = ~np.isfinite(array) | (~signed & (array < 0))
    if limit is not None:
        too_large = np.flatnonzero(np.isfinite(array) & (array > limit))
        # The first offending row of the file, even when an unreadable cell comes later.
        if len(too_large) and not bad_mask[: too_large[0]].any():
            bad = int(too_large[0])
            raise DataFormatError(
                f"Line {lines[bad]}, column '{column}': {_shown(values[bad])} is above "
                f"{limit:.0e}, which no market quotes. Check the export: prices must be "
                "plain numbers such as 42123.5.",
                row=lines[bad],
                column=column,
            )
    if bad_mask.any():
        bad = int(np.flatnonzero(bad_mask)[0])
        if np.isfinite(array[bad]):
            message = "is a negative number. Volumes must be plain non-negative numbers"
        else:
            message = "is not a number. Prices and volumes must be plain numbers"
        example = "42123,5" if decimal_comma else "42123.5"
        raise DataFormatError(
            f"Line {lines[bad]}, column '{column}': {_shown(values[bad])} {message} such as "
            f"{example}.",
            row=lines[bad],
            column=column,
        )
    return array


def _from_decimal_comma(value: str, line: int, column: str, thousands_dots: bool) -> str:
    """A cell of a decimal-comma file in the usual notation (``1.178,43`` -> ``1178.43``).

    Thousands grouped with spaces (``1 178,43``) are read too: a space is no decimal mark.
    """
    if _SPACE_GROUPED.fullmatch(value):
        value = re.sub(r"[ \u00a0\u202f]", "", value)
    if _COMMA_NUMBER.fullmatch(value) and ("," in value or "." not in value or thousands_dots):
        return value.replace(".", "").replace(",", ".")
    if _PLAIN_NUMBER.fullmatch(value) and "." in value:
        raise DataFormatError(
            f"Line {line}, column '{column}': {_shown(value)} has a decimal point in a file "
            "whose numbers have decimal commas (such as 58000,25), so it could mean "
            f"{value} or {value.replace('.', '')}. Use the same decimal mark in every row.",
            row=line,
            column=column,
        )
    return value  # not a number at all: refused with the others
