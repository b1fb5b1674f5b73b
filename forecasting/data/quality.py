"""What is wrong with a series of candles, before anything is fitted on it.

The report lists, never repairs: missing candles as ranges, duplicates, candles with
zero or negative prices, zero-volume candles, rows whose high/low contradict their
open/close, and extreme moves. Filling gaps is a separate, explicit step
(:func:`fill_gaps`) whose rows stay marked.

Candles with a zero, negative or non-finite open, high, low or close are what data
providers write for a candle they do not have (all-zero placeholder rows). No model can
use them (a log of zero is minus infinity), so every loader drops them with
:func:`drop_nonpositive`, which records their open times in the frame's ``attrs`` under
``NONPOSITIVE_ATTR``; :func:`quality_report` lists them, and as they are dropped they
also count as missing candles.

Loaders also record, in the frame's ``attrs``, the conflicting duplicates they resolved
(see :mod:`forecasting.data.duplicates`) and plain-language notices about what the
source did not deliver (``NOTICES_ATTR``, e.g. an exchange that serves history only
from some date); the report carries both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from forecasting.data.duplicates import (
    DUPLICATE_ROWS_ATTR,
    DUPLICATE_RULE,
    duplicate_conflicts,
)
from forecasting.errors import ConfigurationError
from forecasting.ohlcv import timeframe_offset, timeframe_seconds

__all__ = [
    "MAX_EXPECTED_CANDLES",
    "NONPOSITIVE_ATTR",
    "NOTICES_ATTR",
    "QualityReport",
    "drop_nonpositive",
    "dropped_nonpositive",
    "nonpositive_note",
    "expected_candles",
    "fill_gaps",
    "nonpositive_mask",
    "notices",
    "open_times",
    "quality_report",
    "with_nonpositive",
    "with_notices",
]

# The ``DataFrame.attrs`` key under which loaders record the candles they dropped for a
# zero or negative price: a tuple of open times in epoch milliseconds. Plain integers, so
# pandas can compare and copy the attrs cheaply, and pyarrow can write them as JSON.
NONPOSITIVE_ATTR = "nonpositive_ms"
# The ``DataFrame.attrs`` key under which loaders record what the reader must know about
# the data they could not get: a tuple of one-line messages (plain strings), such as
# "kraken serves 1d candles only from 2024-12-11; earlier candles are not available here".
NOTICES_ATTR = "notices"
PRICES = ("open", "high", "low", "close")

# A move is "extreme" when its log return is this many robust standard deviations
# (1.4826 x median absolute deviation) from the median: rare enough to list by hand.
EXTREME_SIGMAS = 8.0

# The most candles a series may imply from its first open time to its last, gaps counted.
# Reports count gaps without listing them, so their cost follows the candles received;
# filling the gaps, or loading a file (see forecasting.data.csvfile), would build every
# implied candle, and a few rows years apart on a one-second grid imply billions. Two
# million is about four years of minute candles, far more than a 10 MB file holds.
MAX_EXPECTED_CANDLES = 2_000_000


@dataclass(frozen=True)
class QualityReport:
    """Data quality of one OHLCV series.

    Attributes
    ----------
    timeframe, calendar
        What the expected candles were derived from.
    candles
        Candles present.
    expected
        Candles the timeframe implies between the first and the last one.
    gaps
        One row per run of missing candles: ``start`` and ``end`` (first and last
        missing open time) and ``missing`` (how many).
    duplicates
        Rows dropped earlier because their timestamp repeated.
    nonpositive
        Open times of candles dropped because their open, high, low or close was not a
        positive number (a provider's placeholder for a missing candle). They also count
        in ``gaps``.
    zero_volume
        Open times of candles with zero volume.
    inconsistent
        Open times of candles whose high is below, or low above, another price.
    extreme_moves
        ``timestamp`` and ``log_return`` of extreme moves (see ``EXTREME_SIGMAS``).
    duplicate_conflicts
        One plain dict per pair of candles that shared an open time with different
        values: ``timestamp`` (epoch ms), ``kept`` and ``dropped`` (their OHLCV) and
        ``rule`` (why ``kept`` won, see :mod:`forecasting.data.duplicates`).
    duplicate_rule
        The rule that chose between conflicting candles.
    notices
        What the source did not deliver, one line each (see ``NOTICES_ATTR``).
    """

    timeframe: str
    calendar: str
    candles: int
    expected: int
    gaps: pd.DataFrame
    duplicates: int
    zero_volume: pd.DatetimeIndex
    inconsistent: pd.DatetimeIndex
    extreme_moves: pd.DataFrame
    nonpositive: pd.DatetimeIndex = field(default_factory=lambda: open_times(()))
    duplicate_conflicts: tuple[dict, ...] = ()
    duplicate_rule: str = DUPLICATE_RULE
    notices: tuple[str, ...] = ()

    @property
    def missing(self) -> int:
        """How many candles are missing in all."""
        return int(self.gaps["missing"].sum()) if len(self.gaps) else 0

    @property
    def is_clean(self) -> bool:
        """True when no data problem was found.

        Extreme moves are listed but do not count: they are real market events (a crash
        is not a data error), and a long crypto series almost always has some.
        """
        return not (
            self.missing
            or self.duplicates
            or self.notices
            or len(self.nonpositive)
            or len(self.zero_volume)
            or len(self.inconsistent)
        )

    def summary(self) -> dict[str, int]:
        """Counts per finding, for tables and JSON."""
        return {
            "candles": self.candles,
            "expected": self.expected,
            "missing": self.missing,
            "gap_ranges": len(self.gaps),
            "duplicates": self.duplicates,
            "duplicate_conflicts": len(self.duplicate_conflicts),
            "nonpositive": len(self.nonpositive),
            "zero_volume": len(self.zero_volume),
            "inconsistent_ohlc": len(self.inconsistent),
            "extreme_moves": len(self.extreme_moves),
            "notices": len(self.notices),
        }


def quality_report(
    candles: pd.DataFrame,
    timeframe: str,
    *,
    calendar: str = "24/7",
    duplicates: int | None = None,
    nonpositive: Iterable[pd.Timestamp] | None = None,
    duplicate_conflicts: Iterable[dict] | None = None,
    notices: Iterable[str] | None = None,
) -> QualityReport:
    """Inspect an OHLCV frame.

    Its cost follows the number of candles, not the time they span: two candles a year
    apart on a 1m timeframe are one gap, counted without listing its half a million
    missing open times.

    Parameters
    ----------
    candles
        An OHLCV frame (sorted, unique timestamps). Candles in it with a zero, negative
        or non-finite price are left out of every finding and listed in ``nonpositive``.
    timeframe
        Its timeframe, which defines the expected candles.
    calendar
        ``"24/7"`` or ``"business"`` (daily candles of a market closed at weekends).
    duplicates
        Duplicate rows already dropped while loading, to carry into the report; ``None``
        reads what the loader recorded in ``candles.attrs``.
    nonpositive
        Open times of candles already dropped while loading for a zero or negative
        price (``CsvData.nonpositive``); ``None`` reads what the loader recorded in
        ``candles.attrs`` (see :func:`drop_nonpositive`).
    duplicate_conflicts
        Conflicting duplicates resolved while loading (``CsvData`` or a frame's attrs);
        ``None`` reads ``candles.attrs`` (see
        :func:`~forecasting.data.duplicates.resolve_duplicates`).
    notices
        What the source did not deliver; ``None`` reads ``candles.attrs[NOTICES_ATTR]``.
    """
    if duplicates is None:
        duplicates = int(candles.attrs.get(DUPLICATE_ROWS_ATTR, 0))
    conflicts = tuple(
        _conflicts_of(candles) if duplicate_conflicts is None else duplicate_conflicts
    )
    told = tuple(_notices_of(candles) if notices is None else notices)
    recorded = dropped_nonpositive(candles) if nonpositive is None else open_times(nonpositive)
    bad = nonpositive_mask(candles)
    if bad.any():
        recorded = recorded.union(open_times(candles.index[bad]))
        candles = candles[~bad]
    gaps = _gaps(candles.index, timeframe, calendar)
    expected = len(candles) + int(gaps["missing"].sum())
    prices = candles[["open", "close"]]
    inconsistent = candles.index[
        (candles["high"] < prices.max(axis=1))
        | (candles["low"] > prices.min(axis=1))
        | (candles["high"] < candles["low"])
    ]
    zero_volume = candles.index[candles["volume"] <= 0]
    returns = np.log(candles["close"]).diff().dropna()
    returns = returns[np.isfinite(returns)]
    extreme = pd.DataFrame({"timestamp": pd.DatetimeIndex([], tz="UTC"), "log_return": []})
    if len(returns) >= 10:
        median = returns.median()
        scale = 1.4826 * (returns - median).abs().median()
        if scale > 0:
            flagged = returns[(returns - median).abs() > EXTREME_SIGMAS * scale]
            extreme = pd.DataFrame({"timestamp": flagged.index, "log_return": flagged.to_numpy()})
    return QualityReport(
        timeframe=timeframe,
        calendar=calendar,
        candles=len(candles),
        expected=expected,
        gaps=gaps,
        duplicates=duplicates,
        zero_volume=pd.DatetimeIndex(zero_volume),
        inconsistent=pd.DatetimeIndex(inconsistent),
        extreme_moves=extreme,
        nonpositive=recorded,
        duplicate_conflicts=conflicts,
        notices=told,
    )


def notices(candles: pd.DataFrame) -> tuple[str, ...]:
    """The notices a loader recorded on ``candles`` (see ``NOTICES_ATTR``)."""
    return tuple(str(text) for text in candles.attrs.get(NOTICES_ATTR, ()))


def with_notices(candles: pd.DataFrame, told: Iterable[str]) -> pd.DataFrame:
    """Record ``told`` as the candles' notices (in place; returns ``candles``)."""
    told = tuple(dict.fromkeys(str(text) for text in told))
    if told:
        candles.attrs[NOTICES_ATTR] = told
    else:
        candles.attrs.pop(NOTICES_ATTR, None)
    return candles


_conflicts_of = duplicate_conflicts
_notices_of = notices


def nonpositive_mask(candles: pd.DataFrame) -> np.ndarray:
    """Which candles have an open, high, low or close that is not a positive finite number."""
    prices = candles.loc[:, list(PRICES)].to_numpy(dtype="float64")
    return ~(np.isfinite(prices) & (prices > 0)).all(axis=1)


def drop_nonpositive(candles: pd.DataFrame) -> pd.DataFrame:
    """The candles without those whose price is zero, negative or not finite.

    The open times of the dropped candles, together with any the frame already recorded,
    are kept in the result's ``attrs[NONPOSITIVE_ATTR]`` (only when there are some, so a
    clean frame carries no attrs), where :func:`dropped_nonpositive` and
    :func:`quality_report` find them.

    Parameters
    ----------
    candles
        An OHLCV frame; it is not modified.

    Returns
    -------
    pd.DataFrame
        A new frame holding only candles with positive finite prices.
    """
    bad = nonpositive_mask(candles)
    if not bad.any():
        return candles.copy()
    dropped = dropped_nonpositive(candles).union(open_times(candles.index[bad]))
    kept = candles[~bad].copy()
    return with_nonpositive(kept, dropped)


def dropped_nonpositive(candles: pd.DataFrame) -> pd.DatetimeIndex:
    """Open times a loader dropped from ``candles`` for a zero or negative price."""
    return open_times(candles.attrs.get(NONPOSITIVE_ATTR, ()))


def nonpositive_note(dropped: pd.DatetimeIndex) -> str:
    """The one sentence said wherever candles were dropped for a zero or negative price
    (``dropped``: their open times, as :func:`dropped_nonpositive` gives; not empty)."""
    return (
        f"{len(dropped)} candles with zero or negative prices were dropped when the data "
        f"were read (the first at {dropped[0]:%Y-%m-%dT%H:%M:%SZ}); they are treated as "
        "missing."
    )


def with_nonpositive(candles: pd.DataFrame, dropped: Iterable[pd.Timestamp]) -> pd.DataFrame:
    """Record ``dropped`` as the candles' dropped open times (in place; returns ``candles``)."""
    stamps = open_times(dropped)
    if len(stamps):
        candles.attrs[NONPOSITIVE_ATTR] = tuple(int(ms) for ms in stamps.asi8)
    else:
        candles.attrs.pop(NONPOSITIVE_ATTR, None)
    return candles


def open_times(values: Iterable[pd.Timestamp] | Iterable[int]) -> pd.DatetimeIndex:
    """Sorted unique UTC open times in milliseconds, as OHLCV frames index them.

    Parameters
    ----------
    values
        Timestamps (naive ones are taken as UTC), or integers read as epoch milliseconds.
    """
    if not isinstance(values, pd.DatetimeIndex):
        values = list(values)
    if len(values) == 0:
        return pd.DatetimeIndex([], tz="UTC", name="timestamp").as_unit("ms")
    if isinstance(values, pd.DatetimeIndex):
        index = values
    elif all(isinstance(v, int | np.integer) for v in values):
        index = pd.to_datetime(np.asarray(values, dtype="int64"), unit="ms", utc=True)
    else:
        index = pd.DatetimeIndex(values)
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    return pd.DatetimeIndex(index.as_unit("ms").unique().sort_values(), name="timestamp")


def fill_gaps(
    candles: pd.DataFrame, timeframe: str, *, calendar: str = "24/7"
) -> tuple[pd.DataFrame, pd.DatetimeIndex]:
    """Insert a flat, zero-volume candle at the previous close for every missing one.

    Returns the filled frame and the open times that were inserted, so every chart
    and table can show which candles are not real.

    Raises
    ------
    ConfigurationError
        When the filled series would hold more than ``MAX_EXPECTED_CANDLES`` candles
        (checked before anything is built: a few candles years apart on a short
        timeframe would otherwise ask for billions of rows).
    """
    if candles.empty:
        return candles.copy(), pd.DatetimeIndex([], tz="UTC", name="timestamp")
    first_k, last_k, stamps_at = _grid_runs(candles.index, timeframe, calendar)
    missing = int((last_k - first_k + 1).sum())
    if not missing:
        return candles.copy(), pd.DatetimeIndex([], tz="UTC", name="timestamp").as_unit("ms")
    expected = len(candles) + missing
    if expected > MAX_EXPECTED_CANDLES:
        raise ConfigurationError(
            f"Filling the gaps would make {expected:,} {timeframe} candles from "
            f"{len(candles):,} real ones ({_span(candles.index)}), over the limit of "
            f"{MAX_EXPECTED_CANDLES:,}. Choose a larger timeframe or a shorter date range, "
            "or leave the gaps unfilled."
        )
    lengths = last_k - first_k + 1
    # Every missing position, run after run: first_k repeated, plus 0, 1, ... within each run.
    within = np.arange(missing, dtype="int64") - np.repeat(np.cumsum(lengths) - lengths, lengths)
    inserted = stamps_at(np.repeat(first_k, lengths) + within).rename("timestamp")
    full = candles.index.union(inserted)
    filled = candles.reindex(full)
    previous_close = filled["close"].ffill()
    for column in ("open", "high", "low", "close"):
        filled[column] = filled[column].fillna(previous_close)
    filled["volume"] = filled["volume"].fillna(0.0)
    filled.index.name = "timestamp"
    return filled, inserted


def expected_candles(index: pd.DatetimeIndex, timeframe: str, *, calendar: str = "24/7") -> int:
    """How many candles the timeframe implies from the first open time in ``index`` to the last.

    The candles present plus the missing ones, as :attr:`QualityReport.expected` counts
    them; computed from the differences between consecutive open times, so its cost
    follows ``len(index)`` whatever the span.

    Parameters
    ----------
    index
        Candle open times, sorted and unique.
    timeframe, calendar
        As for :func:`quality_report`.
    """
    if len(index) < 2:
        return len(index)
    first_k, last_k, _ = _grid_runs(index, timeframe, calendar)
    return len(index) + int((last_k - first_k + 1).sum())


def _span(index: pd.DatetimeIndex) -> str:
    return f"{index[0]:%Y-%m-%d %H:%M} to {index[-1]:%Y-%m-%d %H:%M} UTC"


def _gaps(index: pd.DatetimeIndex, timeframe: str, calendar: str) -> pd.DataFrame:
    """Runs of missing candles on the grid of ``timeframe`` anchored at the first candle."""
    if len(index) < 2:
        return pd.DataFrame(
            {
                "start": pd.DatetimeIndex([], tz="UTC").as_unit("ms"),
                "end": pd.DatetimeIndex([], tz="UTC").as_unit("ms"),
                "missing": pd.Series([], dtype="int64"),
            }
        )
    first_k, last_k, stamps_at = _grid_runs(index, timeframe, calendar)
    return pd.DataFrame(
        {
            "start": stamps_at(first_k),
            "end": stamps_at(last_k),
            "missing": (last_k - first_k + 1).astype("int64"),
        }
    )


# The expected open times are numbered 0, 1, 2, ... from the first candle on: ``k`` is a
# candle's position on that grid. A grid takes the candles' open times and returns the
# positions of those exactly on it (ascending), the last position at or before the last
# candle, and a function from positions back to open times.
_Grid = tuple[np.ndarray, int, Callable[[np.ndarray], pd.DatetimeIndex]]


def _grid_runs(
    index: pd.DatetimeIndex, timeframe: str, calendar: str
) -> tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], pd.DatetimeIndex]]:
    """Runs of missing grid positions as ``(first_k, last_k, stamps_at)``.

    Every position from 0 to the last one at or before the last candle that no candle
    sits on is missing. Consecutive missing positions form one run, even when a candle
    off the grid lies between them, as listing every expected open time would join them.
    Cost follows the number of candles, never the number of expected ones.
    """
    index = pd.DatetimeIndex(index)
    step = timeframe_offset(timeframe)
    if calendar == "business" and timeframe == "1d":
        on, last, stamps_at = _business_grid(index)
    elif isinstance(step, pd.Timedelta):
        on, last, stamps_at = _fixed_grid(index, timeframe_seconds(timeframe))
    else:
        on, last, stamps_at = _calendar_grid(index, step)
    # Positions present, with a sentinel before the first and after the last: the holes
    # between neighbours are the runs.
    bounds = np.concatenate(([-1], on, [last + 1])).astype("int64")
    holes = np.flatnonzero(np.diff(bounds) > 1)
    return bounds[holes] + 1, bounds[holes + 1] - 1, stamps_at


def _fixed_grid(index: pd.DatetimeIndex, seconds: int) -> _Grid:
    """Grid ``index[0] + k * step`` for steps of a fixed length (seconds to weeks)."""
    unit = index.unit
    stamps = index.asi8
    # In the index's own unit: a step of centuries (two candles far apart make one) is
    # more nanoseconds than an int64 holds.
    size = seconds * (_NS_PER_UNIT["s"] // _NS_PER_UNIT[unit])
    # Unsigned: a nanosecond index can span more than an int64 holds (1677 to 2262); every
    # difference from the first candle is non-negative, so it fits in a uint64.
    first = stamps[:1].view("uint64")[0]
    offsets = stamps.view("uint64") - first
    positions = offsets // np.uint64(size)
    on = positions[offsets % np.uint64(size) == 0].astype("int64")

    def stamps_at(k: np.ndarray) -> pd.DatetimeIndex:
        values = (first + np.asarray(k, dtype="uint64") * np.uint64(size)).view("int64")
        return _utc_index(values, unit)

    return on, int(positions[-1]), stamps_at


def _business_grid(index: pd.DatetimeIndex) -> _Grid:
    """Grid of business days (Monday to Friday) at the first candle's time of day.

    As ``pd.bdate_range(first, last, normalize=False)`` lists it: a first candle on a
    weekend starts the grid on the next Monday.
    """
    unit = index.unit
    per_day = 86_400 * _NS_PER_UNIT["s"] // _NS_PER_UNIT[unit]
    stamps = index.asi8
    days = (stamps // per_day).astype("datetime64[D]")
    time_of_day = stamps % per_day
    begin = np.busday_offset(days[0], 0, roll="forward")
    # Business days from `begin` before the last candle's day, plus that day when its grid
    # time is not after the last candle.
    count = int(np.busday_count(begin, days[-1])) if days[-1] >= begin else 0
    if days[-1] >= begin and np.is_busday(days[-1]) and time_of_day[0] <= time_of_day[-1]:
        count += 1
    exact = np.is_busday(days) & (time_of_day == time_of_day[0]) & (days >= begin)
    on = np.busday_count(begin, days[exact]).astype("int64")

    def stamps_at(k: np.ndarray) -> pd.DatetimeIndex:
        grid_days = np.busday_offset(begin, np.asarray(k, dtype="int64"))
        values = grid_days.astype("int64") * per_day + time_of_day[0]
        return _utc_index(values, unit)

    return on, count - 1, stamps_at


def _calendar_grid(index: pd.DatetimeIndex, step: pd.DateOffset) -> _Grid:
    """Grid of calendar months or years, listed: at most 12 a year, 120,000 in all.

    Each step adds the months to the previous open time, as ``pd.date_range`` does: the
    day of the month is cut to the month's length and stays cut (31 Jan, 29 Feb, 29 Mar).
    Listed with NumPy over the months between the first and the last candle, which the
    range of dates bounds, however few candles there are.
    """
    unit = index.unit
    per_day = 86_400 * _NS_PER_UNIT["s"] // _NS_PER_UNIT[unit]
    kwds = step.kwds
    months_per_step = int(kwds.get("months", 0)) + 12 * int(kwds.get("years", 0))
    stamps = index.asi8
    days = (stamps // per_day).astype("datetime64[D]")
    months = days.astype("datetime64[M]")
    span = int((months[-1] - months[0]).astype("int64"))
    grid_months = months[0] + np.arange(0, span + 1, months_per_step)
    month_length = ((grid_months + 1).astype("datetime64[D]") - grid_months).astype("int64")
    first_day = int((days[0] - months[0]).astype("int64")) + 1
    day = np.minimum.accumulate(np.minimum(month_length, first_day))
    grid = (grid_months.astype("datetime64[D]") + (day - 1)).astype("int64") * per_day
    grid = grid + stamps[0] % per_day
    grid = grid[grid <= stamps[-1]]
    position = np.searchsorted(grid, stamps)
    found = position < len(grid)
    found[found] = grid[position[found]] == stamps[found]
    on = position[found].astype("int64")

    def stamps_at(k: np.ndarray) -> pd.DatetimeIndex:
        return _utc_index(grid[np.asarray(k, dtype="int64")], unit)

    return on, len(grid) - 1, stamps_at


def _utc_index(values: np.ndarray, unit: str) -> pd.DatetimeIndex:
    """UTC open times in milliseconds from integers in ``unit``."""
    stamps = pd.DatetimeIndex(np.asarray(values, dtype="int64").view(f"datetime64[{unit}]"))
    return stamps.tz_localize("UTC").as_unit("ms")


_NS_PER_UNIT = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
