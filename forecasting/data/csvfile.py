"""OHLCV from CSV files as people export them, validated, and back out to CSV.

Accepted: a header row in any case and with the usual names (``Date``, ``Timestamp``,
``Open time``, ``Open``, ``Vol`` ...), ISO-8601 dates or epoch seconds, milliseconds or
microseconds, extra columns (ignored). The file is parsed as text only: nothing in it
is executed or unpickled. Errors name the line (the header is line 1) and the column.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from forecasting.errors import DataFormatError
from forecasting.ohlcv import COLUMNS, normalize_ohlcv

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
    """

    candles: pd.DataFrame
    timeframe: str
    calendar: str
    duplicates: int


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
        raise DataFormatError(
            "The file is not UTF-8 text. Export it as CSV (UTF-8) and upload it again."
        ) from exc
    if not text.strip():
        raise DataFormatError("The file is empty. Upload a CSV with a header row and candles.")

    rows = list(csv.reader(io.StringIO(text)))
    header = [h.strip() for h in rows[0]]
    mapping = _map_columns(header)
    body = rows[1:]
    if not any(any(cell.strip() for cell in row) for row in body):
        raise DataFormatError("The file has a header but no candles.", row=2)

    records: dict[str, list[str]] = {name: [] for name in mapping}
    lines: list[int] = []
    for offset, row in enumerate(body):
        line = offset + 2
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            missing = header[len(row)]
            raise DataFormatError(
                f"Line {line} has {len(row)} fields but the header has {len(header)} "
                f"(no value for '{missing}').",
                row=line,
                column=missing,
            )
        for name, position in mapping.items():
            records[name].append(row[position].strip())
        lines.append(line)

    index = _parse_timestamps(records["timestamp"], lines, header[mapping["timestamp"]])
    values = {}
    for name in COLUMNS:
        values[name] = _parse_numbers(records[name], lines, header[mapping[name]])
    frame = pd.DataFrame(values, index=index)
    duplicates = int(frame.index.duplicated(keep="last").sum())
    candles = normalize_ohlcv(frame)
    timeframe = infer_timeframe(candles.index)
    calendar = "24/7"
    if timeframe == "1d" and len(candles) >= 10 and not (candles.index.dayofweek >= 5).any():
        calendar = "business"
    return CsvData(candles, timeframe, calendar, duplicates)


def write_ohlcv_csv(candles: pd.DataFrame, target: str | os.PathLike[str] | io.TextIOBase) -> None:
    """Write ``timestamp,open,high,low,close,volume`` with ISO-8601 UTC timestamps.

    Values are written with full precision (``repr`` of the float), so reading the
    file back gives the same numbers.
    """
    out = candles.loc[:, list(COLUMNS)].copy()
    out.index = out.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.index.name = "timestamp"
    out.to_csv(target, float_format=None, lineterminator="\n")


def infer_timeframe(index: pd.DatetimeIndex) -> str:
    """The most common spacing of the timestamps as a ccxt timeframe string."""
    if len(index) < 2:
        raise DataFormatError("At least two candles are needed to tell the timeframe.")
    seconds = int(pd.Series(index).diff().dropna().dt.total_seconds().median())
    if seconds <= 0:
        raise DataFormatError("The timestamps do not increase: cannot tell the timeframe.")
    if 28 * 86400 <= seconds <= 31 * 86400:
        return "1M"
    for unit, length in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % length == 0:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"


def _read_bytes(source: bytes | str | os.PathLike[str] | BinaryIO, max_bytes: int) -> bytes:
    if isinstance(source, bytes):
        raw = source
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        if path.stat().st_size > max_bytes:
            raise DataFormatError(_too_large(path.stat().st_size, max_bytes))
        raw = path.read_bytes()
    else:
        raw = source.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise DataFormatError(_too_large(len(raw), max_bytes))
    return raw


def _too_large(size: int, limit: int) -> str:
    shown = f"{size / 1_048_576:.1f} MB" if size <= limit + 1 else "too large"
    return (
        f"The file is larger than the {limit / 1_048_576:.0f} MB limit ({shown}). Upload a "
        "shorter range or a longer timeframe."
    )


def _map_columns(header: list[str]) -> dict[str, int]:
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
        found = ", ".join(h for h in header if h) or "nothing"
        raise DataFormatError(
            f"Missing column{'s' if len(missing) > 1 else ''}: {', '.join(missing)}. "
            f"The header has {found}. Name the columns timestamp (or date), open, high, low, "
            "close and volume.",
            row=1,
            column=missing[0],
        )
    return mapping


def _parse_timestamps(values: list[str], lines: list[int], column: str) -> pd.DatetimeIndex:
    numbers = pd.to_numeric(pd.Series(values, dtype="object"), errors="coerce")
    if numbers.notna().all():
        array = numbers.to_numpy(dtype="float64")
        if not np.isfinite(array).all() or (array < 0).any():
            bad = int(np.argmax(~np.isfinite(array) | (array < 0)))
            raise DataFormatError(
                f"Line {lines[bad]}, column '{column}': '{values[bad]}' is not a valid time.",
                row=lines[bad],
                column=column,
            )
        # Epoch numbers: tell the unit by magnitude (seconds reach 1e11 only in year 5138).
        peak = array.max()
        unit = "s" if peak < 1e11 else "ms" if peak < 1e14 else "us" if peak < 1e17 else "ns"
        try:
            parsed = pd.to_datetime(array.astype("int64"), unit=unit, utc=True)
        except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime) as exc:
            raise DataFormatError(
                f"Column '{column}' holds numbers that are not epoch times.",
                column=column,
                row=lines[0],
            ) from exc
        return pd.DatetimeIndex(parsed, name="timestamp")
    parsed = pd.to_datetime(pd.Series(values), errors="coerce", utc=True, format="ISO8601")
    if parsed.isna().any():
        bad = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise DataFormatError(
            f"Line {lines[bad]}, column '{column}': '{values[bad]}' is not a date. Use ISO-8601 "
            "(2024-01-31 or 2024-01-31T12:00:00Z) or epoch seconds or milliseconds.",
            row=lines[bad],
            column=column,
        )
    return pd.DatetimeIndex(parsed, name="timestamp")


def _parse_numbers(values: list[str], lines: list[int], column: str) -> np.ndarray:
    numbers = pd.to_numeric(pd.Series(values, dtype="object"), errors="coerce")
    array = numbers.to_numpy(dtype="float64")
    bad_mask = ~np.isfinite(array) | (array < 0)
    if bad_mask.any():
        bad = int(np.flatnonzero(bad_mask)[0])
        shown = values[bad] if values[bad] else "an empty value"
        reason = "a negative number" if np.isfinite(array[bad]) else "not a number"
        raise DataFormatError(
            f"Line {lines[bad]}, column '{column}': '{shown}' is {reason}. Prices and volumes "
            "must be plain non-negative numbers such as 42123.5.",
            row=lines[bad],
            column=column,
        )
    return array
