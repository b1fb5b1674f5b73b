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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from forecasting.ohlcv import expected_timestamps, timeframe_offset

__all__ = [
    "NONPOSITIVE_ATTR",
    "QualityReport",
    "drop_nonpositive",
    "dropped_nonpositive",
    "fill_gaps",
    "nonpositive_mask",
    "open_times",
    "quality_report",
    "with_nonpositive",
]

# The ``DataFrame.attrs`` key under which loaders record the candles they dropped for a
# zero or negative price: a tuple of open times in epoch milliseconds. Plain integers, so
# pandas can compare and copy the attrs cheaply, and pyarrow can write them as JSON.
NONPOSITIVE_ATTR = "nonpositive_ms"
PRICES = ("open", "high", "low", "close")

# A move is "extreme" when its log return is this many robust standard deviations
# (1.4826 x median absolute deviation) from the median: rare enough to list by hand.
EXTREME_SIGMAS = 8.0


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
            "nonpositive": len(self.nonpositive),
            "zero_volume": len(self.zero_volume),
            "inconsistent_ohlc": len(self.inconsistent),
            "extreme_moves": len(self.extreme_moves),
        }


def quality_report(
    candles: pd.DataFrame,
    timeframe: str,
    *,
    calendar: str = "24/7",
    duplicates: int = 0,
    nonpositive: Iterable[pd.Timestamp] | None = None,
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
        Duplicate rows already dropped while loading, to carry into the report.
    nonpositive
        Open times of candles already dropped while loading for a zero or negative
        price (``CsvData.nonpositive``); ``None`` reads what the loader recorded in
        ``candles.attrs`` (see :func:`drop_nonpositive`).
    """
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
    )


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
    """
    if candles.empty:
        return candles.copy(), pd.DatetimeIndex([], tz="UTC", name="timestamp")
    full = expected_timestamps(candles.index[0], candles.index[-1], timeframe, calendar=calendar)
    full = full.union(candles.index)
    inserted = full.difference(candles.index)
    filled = candles.reindex(full)
    previous_close = filled["close"].ffill()
    for column in ("open", "high", "low", "close"):
        filled[column] = filled[column].fillna(previous_close)
    filled["volume"] = filled["volume"].fillna(0.0)
    filled.index.name = "timestamp"
    return filled, inserted


def _gaps(index: pd.DatetimeIndex, timeframe: str, calendar: str) -> pd.DataFrame:
    """Runs of missing candles on the grid of ``timeframe`` anchored at the first candle."""
    columns = {
        "start": pd.DatetimeIndex([], tz="UTC"),
        "end": pd.DatetimeIndex([], tz="UTC"),
        "missing": pd.Series([], dtype="int64"),
    }
    if len(index) < 2:
        return pd.DataFrame(columns)
    step = timeframe_offset(timeframe)
    if isinstance(step, pd.Timedelta) and not (calendar == "business" and timeframe == "1d"):
        runs = _grid_runs(index, step)
        if runs is None:
            return pd.DataFrame(columns)
        first, last, missing = runs
        return pd.DataFrame({"start": first, "end": last, "missing": missing})
    # Business days (daily candles only) and calendar months or years: the expected open
    # times are listed, which costs their number over the span. That is bounded here: at
    # most ~260 business days or 12 months a year, never one per minute.
    expected = expected_timestamps(index[0], index[-1], timeframe, calendar=calendar)
    absent = expected.difference(index)
    if absent.empty:
        return pd.DataFrame(columns)
    # Consecutive missing candles form one run: a new run starts where the previous
    # missing candle is not the expected one just before.
    position = expected.get_indexer(absent)
    starts = np.flatnonzero(np.diff(position, prepend=-2) != 1)
    ends = np.append(starts[1:], len(position)) - 1
    return pd.DataFrame(
        {
            "start": absent[starts],
            "end": absent[ends],
            "missing": (ends - starts + 1).astype("int64"),
        }
    )


def _grid_runs(
    index: pd.DatetimeIndex, step: pd.Timedelta
) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex, np.ndarray] | None:
    """Missing grid points ``index[0] + k * step`` as runs, from consecutive differences.

    Between two consecutive candles ``a < b`` every grid point strictly between them is
    missing: ``k`` from ``floor((a - first) / step) + 1`` to ``ceil((b - first) / step) - 1``.
    Runs of consecutive ``k`` that an off-grid candle splits into two intervals are joined,
    as listing every expected open time would join them.
    """
    stamps = index.as_unit("ns").asi8
    first = int(stamps[0])
    size = int(step.value)
    offsets = stamps - first
    low = offsets[:-1] // size + 1
    high = -(-offsets[1:] // size) - 1
    holes = high >= low
    if not holes.any():
        return None
    low, high = low[holes], high[holes]
    # A run continues into the next interval when its first k follows the last one's.
    new_run = np.r_[True, low[1:] != high[:-1] + 1]
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], len(low)) - 1
    first_k, last_k = low[starts], high[ends]

    def stamps_at(k: np.ndarray) -> pd.DatetimeIndex:
        nanos = first + k * size
        return pd.DatetimeIndex(pd.to_datetime(nanos, unit="ns", utc=True)).as_unit("ms")

    return stamps_at(first_k), stamps_at(last_k), (last_k - first_k + 1).astype("int64")
