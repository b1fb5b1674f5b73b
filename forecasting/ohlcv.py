"""The OHLCV frame every part of the package passes around, and timeframe arithmetic.

An OHLCV frame has a UTC ``DatetimeIndex`` named ``timestamp`` holding each candle's
*open* time, float columns ``open, high, low, close, volume``, sorted ascending and
without duplicate timestamps. Gaps are allowed: they are real and are reported, never
silently filled.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from forecasting.errors import (
    DataUnavailable,
    ExchangeFailure,
    InsufficientHistory,
    InvalidDateRange,
    InvalidTimeframe,
)

__all__ = [
    "COLUMNS",
    "MAX_PRICE",
    "absurd_price",
    "future_timestamps",
    "grid_positions",
    "infer_calendar",
    "infer_timeframe",
    "season_length",
    "timeframe_from_seconds",
    "drop_unclosed",
    "empty_ohlcv",
    "epoch_ms",
    "expected_timestamps",
    "frame_from_rows",
    "from_epoch_ms",
    "normalize_ohlcv",
    "parse_time",
    "timeframe_offset",
    "timeframe_seconds",
]

COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICES: tuple[str, ...] = ("open", "high", "low", "close")

# No market quotes a price anywhere near this (Bitcoin in the weakest currency is about
# 1e12); a larger open, high, low or close is a broken value, and near 1e308 it turns
# into infinity in the first sum or square. Every loader refuses it.
MAX_PRICE = 1e15

# ASCII digits only, and fullmatch (not ``$``, which also matches before a trailing newline).
_TIMEFRAME = re.compile(r"(\d+)([smhdwMy])", re.ASCII)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def epoch_ms(stamp: pd.Timestamp) -> int:
    """Epoch milliseconds (UTC) of a timestamp, floored to the millisecond."""
    return int(stamp.value // 1_000_000)


def from_epoch_ms(ms: int) -> pd.Timestamp:
    """The UTC timestamp of epoch milliseconds."""
    return pd.Timestamp(int(ms), unit="ms", tz="UTC")


def timeframe_seconds(timeframe: str) -> int:
    """Length of one candle in seconds (months as 30 days, years as 365: approximate).

    Parameters
    ----------
    timeframe
        A ccxt timeframe string such as ``"1m"``, ``"4h"``, ``"1d"``, ``"1w"`` or ``"1M"``.

    Raises
    ------
    InvalidTimeframe
        When the string is not a timeframe.
    """
    match = _TIMEFRAME.fullmatch(timeframe) if isinstance(timeframe, str) else None
    if not match or int(match.group(1)) == 0:
        raise InvalidTimeframe(
            f"'{timeframe}' is not a timeframe. Use a number and a unit, such as 1m, 1h, 4h or 1d."
        )
    amount, unit = int(match.group(1)), match.group(2)
    if unit == "M":
        return amount * 30 * 86400
    if unit == "y":
        return amount * 365 * 86400
    return amount * _UNIT_SECONDS[unit]


def timeframe_offset(timeframe: str) -> pd.Timedelta | pd.DateOffset:
    """The step between consecutive candle open times.

    Calendar months and years are not fixed lengths, so they get a ``DateOffset``;
    every other timeframe is an exact ``Timedelta``.
    """
    seconds = timeframe_seconds(timeframe)
    amount, unit = int(timeframe[:-1]), timeframe[-1]
    if unit == "M":
        return pd.DateOffset(months=amount)
    if unit == "y":
        return pd.DateOffset(years=amount)
    return pd.Timedelta(seconds=seconds)


def parse_time(
    value: str | int | float | pd.Timestamp | None, *, name: str = "time"
) -> pd.Timestamp | None:
    """Read a user-supplied instant as a UTC timestamp.

    Accepts ISO-8601 strings (naive ones are taken as UTC), dates, epoch milliseconds
    and ``pd.Timestamp``. ``None`` and ``""`` give ``None``.

    Raises
    ------
    InvalidDateRange
        When the value cannot be read as a time.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool | np.bool_):
        # bool is an int subclass, but True is no epoch time anyone means.
        raise InvalidDateRange(f"{name} '{value}' is not a date. Use ISO-8601, e.g. 2024-01-31.")
    try:
        if isinstance(value, int | float | np.integer | np.floating):
            stamp = pd.Timestamp(int(value), unit="ms")
        else:
            stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidDateRange(
            f"{name} '{value}' is not a date. Use ISO-8601, for example 2024-01-31 or "
            "2024-01-31T12:00:00Z."
        ) from exc
    if stamp is pd.NaT:
        raise InvalidDateRange(f"{name} is empty. Use ISO-8601, for example 2024-01-31.")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def empty_ohlcv() -> pd.DataFrame:
    """An OHLCV frame with no rows (right index type, right columns)."""
    index = pd.DatetimeIndex([], tz="UTC", name="timestamp").as_unit("ms")
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in COLUMNS}, index=index)


def frame_from_rows(rows: Iterable[Sequence[float]]) -> pd.DataFrame:
    """Build an OHLCV frame from ccxt rows ``[ms, open, high, low, close, volume]``.

    Duplicated timestamps keep the last row seen: when pages overlap, the later page
    was fetched later and is the exchange's latest word on that candle.
    """
    rows = list(rows)
    if not rows:
        return empty_ohlcv()
    array = np.asarray([r[:6] for r in rows], dtype="float64")
    index = pd.DatetimeIndex(
        pd.to_datetime(array[:, 0].astype("int64"), unit="ms", utc=True), name="timestamp"
    ).as_unit("ms")
    frame = pd.DataFrame(array[:, 1:], index=index, columns=list(COLUMNS))
    found = absurd_price(frame)
    if found is not None:
        stamp, column, value = found
        raise ExchangeFailure(
            f"The exchange sent a {column} of {value!r} for the candle at "
            f"{stamp:%Y-%m-%d %H:%M} UTC, above {MAX_PRICE:.0e}, which no market quotes. Try "
            "another date range or another exchange."
        )
    return normalize_ohlcv(frame)


def normalize_ohlcv(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort, drop duplicate timestamps (keeping the last) and coerce dtypes.

    Returns a new frame; the input is not modified.

    Raises
    ------
    DataUnavailable
        When an open, high, low or close is above ``MAX_PRICE``; every source of
        candles passes here (exchange rows, cache files, CSV files, the sample).
    """
    out = frame.loc[:, list(COLUMNS)].astype("float64")
    index = pd.DatetimeIndex(out.index)
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    out.index = index.as_unit("ms").rename("timestamp")
    found = absurd_price(out)
    if found is not None:
        stamp, column, value = found
        raise DataUnavailable(
            f"The candle at {stamp:%Y-%m-%d %H:%M} UTC has a {column} of {value!r}, above "
            f"{MAX_PRICE:.0e}, which no market quotes. Load the data again from its source "
            "or from another one."
        )
    out = out[~out.index.duplicated(keep="last")]
    return out.sort_index(kind="stable")


def absurd_price(frame: pd.DataFrame) -> tuple[pd.Timestamp, str, float] | None:
    """The first open, high, low or close above ``MAX_PRICE``: open time, column, value.

    ``None`` when every price is at most ``MAX_PRICE`` (or not a number: missing and
    non-finite prices are placeholders, dropped elsewhere).
    """
    prices = frame.loc[:, list(PRICES)].to_numpy(dtype="float64")
    rows, columns = np.nonzero(np.isfinite(prices) & (prices > MAX_PRICE))
    if not len(rows):
        return None
    # np.nonzero lists row by row: the first hit is the earliest row's first column.
    return frame.index[rows[0]], PRICES[columns[0]], float(prices[rows[0], columns[0]])


def drop_unclosed(frame: pd.DataFrame, timeframe: str, now: pd.Timestamp) -> pd.DataFrame:
    """Drop candles that had not closed yet at ``now``.

    An open candle's volume and close keep changing until it closes; scoring or
    caching it would bake a partial value into every later result.
    """
    if frame.empty:
        return frame
    closes = frame.index + timeframe_offset(timeframe)
    return frame[closes <= now]


def expected_timestamps(
    start: pd.Timestamp, end: pd.Timestamp, timeframe: str, *, calendar: str = "24/7"
) -> pd.DatetimeIndex:
    """Every candle open time from ``start`` to ``end`` inclusive that the timeframe implies.

    Parameters
    ----------
    start, end
        First and last candle open times.
    timeframe
        A ccxt timeframe string.
    calendar
        ``"24/7"`` for crypto markets; ``"business"`` for markets closed at weekends
        (daily candles only), such as the offline S&P 500 sample.
    """
    if calendar == "business" and timeframe == "1d":
        # normalize=False: candles stamped at a close time (21:00 UTC) stay on their grid.
        return pd.bdate_range(start, end, name="timestamp", normalize=False).as_unit("ms")
    return pd.date_range(start, end, freq=timeframe_offset(timeframe), name="timestamp").as_unit(
        "ms"
    )


def timeframe_from_seconds(seconds: int) -> str:
    """The ccxt timeframe string for a candle length, e.g. 14400 -> ``"4h"``."""
    if 28 * 86400 <= seconds <= 31 * 86400:
        return "1M"
    for unit, length in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % length == 0:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"


def infer_timeframe(index: pd.DatetimeIndex) -> str:
    """The timeframe of candles: their median spacing, as a ccxt timeframe string.

    The median, so gaps and an odd duplicate do not change the answer.

    Raises
    ------
    InsufficientHistory
        With fewer than two candles, or candles less than a second apart.
    """
    if len(index) < 2:
        raise InsufficientHistory("At least two candles are needed to tell the timeframe.")
    spacing = pd.Series(index).diff().dropna().median().total_seconds()
    if not spacing >= 1:
        raise InsufficientHistory("The candles are not at least a second apart, in order.")
    return timeframe_from_seconds(round(spacing))


def infer_calendar(index: pd.DatetimeIndex, timeframe: str) -> str:
    """``"business"`` for daily candles with no weekend rows (stock markets), else ``"24/7"``."""
    if timeframe == "1d" and len(index) >= 10 and not (index.day_of_week >= 5).any():
        return "business"
    return "24/7"


def future_timestamps(
    last: pd.Timestamp, horizon: int, timeframe: str, *, calendar: str = "24/7"
) -> pd.DatetimeIndex:
    """Open times of the ``horizon`` candles after the one opening at ``last``."""
    if calendar == "business" and timeframe == "1d":
        stamps = [last + pd.offsets.BDay(k) for k in range(1, horizon + 1)]
    else:
        step = timeframe_offset(timeframe)
        stamps = [last + step * k for k in range(1, horizon + 1)]
    return pd.DatetimeIndex(stamps, name="timestamp")


def grid_positions(index: pd.DatetimeIndex, timeframe: str, calendar: str = "24/7") -> np.ndarray:
    """Each candle's position on the timeframe's grid, counted from the first candle.

    Position ``p`` means ``p`` timeframes after ``index[0]``: consecutive candles differ
    by 1, and a gap of ``g`` missing candles makes a jump of ``g + 1``. The candle ``k``
    timeframes after candle ``i`` is the one at position ``positions[i] + k``, which is
    what :func:`future_timestamps` stamps as step ``k``. Calendar months count months,
    the business-day calendar counts business days (NumPy's ``busday_count``), every
    other timeframe counts its length in seconds (rounded to the nearest whole step).

    Parameters
    ----------
    index
        Candle open times, ascending.
    timeframe
        A ccxt timeframe string.
    calendar
        ``"24/7"`` or ``"business"``.

    Returns
    -------
    np.ndarray
        ``int64`` positions, shape ``(len(index),)``; ``positions[0] == 0``.
    """
    if len(index) == 0:
        return np.zeros(0, dtype="int64")
    index = pd.DatetimeIndex(index)
    if calendar == "business" and timeframe == "1d":
        days = index.tz_localize(None).normalize().to_numpy().astype("datetime64[D]")
        return np.busday_count(days[0], days).astype("int64")
    amount, unit = int(timeframe[:-1]), timeframe[-1]
    if unit in ("M", "y"):
        months = (index.year - index[0].year) * 12 + (index.month - index[0].month)
        per_step = amount * (12 if unit == "y" else 1)
        return np.floor_divide(np.asarray(months, dtype="int64"), per_step)
    step_ns = timeframe_seconds(timeframe) * 1_000_000_000
    elapsed = (index.asi8 - index.asi8[0]) * _NS_PER_UNIT[index.unit]
    return np.rint(elapsed / step_ns).astype("int64")


_NS_PER_UNIT = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def season_length(timeframe: str, calendar: str = "24/7") -> int:
    """Candles in one natural season: a week of days, a day of intraday candles.

    5 for business days, 7 for 1d, 24 for 1h, 6 for 4h, 96 for 15m, 52 for 1w,
    12 for 1M; 1 where no season fits.
    """
    if calendar == "business" and timeframe == "1d":
        return 5
    if timeframe.endswith("M"):
        return 12
    seconds = timeframe_seconds(timeframe)
    if seconds == 86400:
        return 7
    if seconds == 604800:
        return 52
    if seconds < 86400 and 86400 % seconds == 0:
        return 86400 // seconds
    return 1
