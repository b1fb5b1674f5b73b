"""OHLCV from CSV files as people export them, validated, and back out to CSV.

Accepted: a header row in any case and with the usual names (``Date``, ``Timestamp``,
``Open time``, ``Open``, ``Vol`` ...), ISO-8601 dates (also the basic ``20240131``) or
epoch seconds, milliseconds or microseconds, extra columns (ignored). The file is parsed
as text only: nothing in it is executed or unpickled. Errors name the line (the header
is line 1) and the column.

Rows with a zero or negative open, high, low or close (what data providers write for a
candle they do not have) are dropped and listed in :attr:`CsvData.nonpositive`: they
then show as missing candles.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

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
    infer_calendar,
    normalize_ohlcv,
    timeframe_from_seconds,
)

__all__ = ["MAX_CSV_BYTES", "CsvData", "infer_timeframe", "read_ohlcv_csv", "write_ohlcv_csv"]

MAX_CSV_BYTES = 10 * 1024 * 1024

_ALIASES = {
    "timestamp": (
        "timestamp",
        "time",
        "date",
        "datetime",
        "open time",
        "open_time",
        "opentime",
        "unix",
        "unix timestamp",
        "date (utc)",
        "time (utc)",
        "timestamp (utc)",
    ),
    "open": ("open", "o", "open price"),
    "high": ("high", "h", "high price"),
    "low": ("low", "l", "low price"),
    "close": ("close", "c", "close price", "last"),
    "volume": ("volume", "vol", "v", "base volume", "volume (base)"),
}


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
        Rows dropped because their timestamp repeated an earlier one.
    nonpositive
        Open times of the rows dropped because their open, high, low or close was zero
        or negative; also recorded in ``candles.attrs`` for
        :func:`~forecasting.data.quality.quality_report`.
    """

    candles: pd.DataFrame
    timeframe: str
    calendar: str
    duplicates: int
    nonpositive: pd.DatetimeIndex = field(
        default_factory=lambda: pd.DatetimeIndex([], tz="UTC", name="timestamp").as_unit("ms")
    )


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
        Saying what is wrong, with ``row`` and ``column`` set where they are known.
    """
    raw = _read_bytes(source, max_bytes)
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

    rows = _split_rows(text)
    # Blank lines (before the header too, as pandas allows) carry nothing.
    rows = [(line, row) for line, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise DataFormatError("The file is empty. Upload a CSV with a header row and candles.")
    header_line, header_row = rows[0]
    header = [h.strip() for h in header_row]
    mapping = _map_columns(header, header_line)
    body = rows[1:]
    if not body:
        raise DataFormatError(
            "The file has a header but no candles. Add one row per candle below the header.",
            row=header_line + 1,
        )

    records: dict[str, list[str]] = {name: [] for name in mapping}
    lines: list[int] = []
    for line, row in body:
        # A short row is refused even when the fields it lacks are ignored ones: a field
        # missing in the middle would shift every value after it into the wrong column.
        if len(row) < len(header):
            missing = header[len(row)]
            raise DataFormatError(
                f"Line {line} has {len(row)} fields but the header has {len(header)} "
                f"(no value for '{missing}'). Every row needs a value in every column.",
                row=line,
                column=missing,
            )
        for name, position in mapping.items():
            records[name].append(row[position].strip())
        lines.append(line)

    index = _parse_timestamps(records["timestamp"], lines, header[mapping["timestamp"]])
    values = {}
    for name in COLUMNS:
        values[name] = _parse_numbers(
            records[name],
            lines,
            header[mapping[name]],
            signed=name != "volume",
            limit=MAX_PRICE if name != "volume" else None,
        )
    frame = pd.DataFrame(values, index=index)
    bad = nonpositive_mask(frame)
    candles = normalize_ohlcv(frame[~bad])
    # A placeholder at the time of a priced row repeats that timestamp: a duplicate.
    nonpositive = normalize_ohlcv(frame[bad]).index.difference(candles.index)
    if bad.any() and len(candles) < 2:
        _refuse_placeholders(len(candles), int(bad.sum()), lines[int(np.flatnonzero(bad)[0])])
    candles = with_nonpositive(candles, nonpositive)
    # Counted after normalising: timestamps that differ below a millisecond become one.
    duplicates = len(frame) - len(candles) - len(nonpositive)
    # The placeholders' times are the file's candle grid too: with them left out, every
    # other candle missing would read as a timeframe twice as long.
    stamps = candles.index.union(nonpositive)
    timeframe = infer_timeframe(stamps)
    calendar = infer_calendar(stamps, timeframe)
    _refuse_sparse(stamps, timeframe, calendar)
    return CsvData(candles, timeframe, calendar, duplicates, nonpositive)


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


def _split_rows(text: str) -> list[tuple[int, list[str]]]:
    """CSV rows, each with the line it starts on (the header is line 1)."""
    # Old Mac exports end lines with a bare CR, which the csv module refuses mid-line.
    reader = csv.reader(io.StringIO(text.replace("\r\n", "\n").replace("\r", "\n")))
    rows: list[tuple[int, list[str]]] = []
    line = 1
    try:
        for row in reader:
            rows.append((line, row))
            line = reader.line_num + 1
    except csv.Error as exc:  # e.g. a field over the csv module's size limit
        raise DataFormatError(
            f"Line {line} cannot be read as CSV ({exc}). Export the data again as plain "
            "comma-separated values.",
            row=line,
        ) from exc
    return rows


def _map_columns(header: list[str], line: int = 1) -> dict[str, int]:
    lowered = [h.lower().strip().strip('"') for h in header]
    mapping: dict[str, int] = {}
    for name, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in lowered:
                mapping[name] = lowered.index(alias)
                break
    if "timestamp" not in mapping and lowered and lowered[0] in ("", "unnamed: 0", "index"):
        mapping["timestamp"] = 0
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
    return mapping


def _shown(value: str, limit: int = 40) -> str:
    """A cell as quoted in a message: empty ones said so, long ones cut short."""
    if not value:
        return "an empty value"
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _parse_timestamps(values: list[str], lines: list[int], column: str) -> pd.DatetimeIndex:
    numbers = pd.to_numeric(pd.Series(values, dtype="object"), errors="coerce")
    is_number = numbers.notna().to_numpy()
    # The column is epoch numbers or dates, whichever most cells are (the first cell breaks
    # a tie), so the error names the odd cell out rather than the first row.
    votes = int(is_number.sum()) * 2 - len(values)
    if votes > 0 or (votes == 0 and is_number[0]):
        return _parse_epochs(numbers, values, lines, column)
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
    return pd.DatetimeIndex(parsed, name="timestamp")


def _parse_epochs(
    numbers: pd.Series, values: list[str], lines: list[int], column: str
) -> pd.DatetimeIndex:
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
            return pd.DatetimeIndex(dates, name="timestamp")
    # Epoch numbers: tell the unit by magnitude (seconds reach 1e11 only in year 5138).
    peak = array.max()
    unit = "s" if peak < 1e11 else "ms" if peak < 1e14 else "us" if peak < 1e17 else "ns"
    # Whole numbers stay integers: a float64 cannot hold every nanosecond epoch exactly.
    epochs = numbers.to_numpy(dtype="int64") if numbers.dtype.kind in "iu" else array
    try:
        parsed = pd.to_datetime(epochs, unit=unit, utc=True)
    except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime) as exc:
        bad = int(np.argmax(array))
        raise DataFormatError(
            f"Line {lines[bad]}, column '{column}': {_shown(values[bad])} is out of range for "
            "an epoch time. Use epoch seconds or milliseconds, or ISO-8601 dates.",
            row=lines[bad],
            column=column,
        ) from exc
    return pd.DatetimeIndex(parsed, name="timestamp")


def _parse_numbers(
    values: list[str],
    lines: list[int],
    column: str,
    *,
    signed: bool = False,
    limit: float | None = None,
) -> np.ndarray:
    """The cells of one column as floats, refusing any that is not a finite number.

    ``signed`` lets negative numbers through: a price below zero marks a placeholder row,
    dropped later with the zero ones, while a negative volume is an error in the file.
    ``limit`` refuses numbers above it (prices above ``MAX_PRICE``).
    """
    numbers = pd.to_numeric(pd.Series(values, dtype="object"), errors="coerce")
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
        raise DataFormatError(
            f"Line {lines[bad]}, column '{column}': {_shown(values[bad])} {message} such as "
            "42123.5.",
            row=lines[bad],
            column=column,
        )
    return array
