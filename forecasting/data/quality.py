"""What is wrong with a series of candles, before anything is fitted on it.

The report lists, never repairs: missing candles as ranges, duplicates, zero-volume
candles, rows whose high/low contradict their open/close, and extreme moves. Filling
gaps is a separate, explicit step (:func:`fill_gaps`) whose rows stay marked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting.ohlcv import expected_timestamps

__all__ = ["QualityReport", "fill_gaps", "quality_report"]

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
            self.missing or self.duplicates or len(self.zero_volume) or len(self.inconsistent)
        )

    def summary(self) -> dict[str, int]:
        """Counts per finding, for tables and JSON."""
        return {
            "candles": self.candles,
            "expected": self.expected,
            "missing": self.missing,
            "gap_ranges": len(self.gaps),
            "duplicates": self.duplicates,
            "zero_volume": len(self.zero_volume),
            "inconsistent_ohlc": len(self.inconsistent),
            "extreme_moves": len(self.extreme_moves),
        }


def quality_report(
    candles: pd.DataFrame, timeframe: str, *, calendar: str = "24/7", duplicates: int = 0
) -> QualityReport:
    """Inspect an OHLCV frame.

    Parameters
    ----------
    candles
        An OHLCV frame (sorted, unique timestamps).
    timeframe
        Its timeframe, which defines the expected candles.
    calendar
        ``"24/7"`` or ``"business"`` (daily candles of a market closed at weekends).
    duplicates
        Duplicate rows already dropped while loading, to carry into the report.
    """
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
    )


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
    columns = {
        "start": pd.DatetimeIndex([], tz="UTC"),
        "end": pd.DatetimeIndex([], tz="UTC"),
        "missing": pd.Series([], dtype="int64"),
    }
    if len(index) < 2:
        return pd.DataFrame(columns)
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
