"""Candles that share an open time: which one is kept, and the record of what was dropped.

Exchanges and files repeat candles. Most repeats are exact (overlapping pages, a file
concatenated twice) and dropping them loses nothing. Some conflict: the same open time
with different prices or volume, typically the real candle and a *fragment* of it (a
partial candle captured before it closed, or a trade split off at a minute boundary),
whose volume is a sliver of the real one's.

The rule: **the candle with the larger volume is kept**. A fragment holds only some of
the trades of its period; the complete candle holds all of them, so its volume is never
smaller. Keeping the later row instead (what a plain ``drop_duplicates(keep="last")``
does) lets a fragment that happens to come second replace the real candle. When the
volumes are equal, the later row in the answer or file is kept: it is the source's
latest word on that candle.

Nothing is resolved silently: every conflicting pair is recorded in the result's
``attrs`` (see ``DUPLICATE_CONFLICTS_ATTR``), and every dropped row's open time too
(``DUPLICATE_ROWS_ATTR``), where the quality report and the cache find them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from forecasting.ohlcv import COLUMNS

__all__ = [
    "DUPLICATE_CONFLICTS_ATTR",
    "DUPLICATE_ROWS_ATTR",
    "DUPLICATE_TIMES_ATTR",
    "DUPLICATE_RULE",
    "duplicate_conflicts",
    "duplicate_times",
    "resolve_duplicates",
    "with_duplicates",
]

#: ``attrs`` key: a tuple of plain dicts, one per conflicting pair, each
#: ``{"timestamp": ms, "kept": {open, high, low, close, volume}, "dropped": {...}, "rule": str}``.
DUPLICATE_CONFLICTS_ATTR = "duplicate_conflicts"
#: ``attrs`` key: how many rows were dropped because their open time repeated (exact
#: repeats and the losing side of conflicts).
DUPLICATE_ROWS_ATTR = "duplicate_rows"
#: ``attrs`` key: the open time (epoch ms) of every dropped row, one entry per row, so a
#: range of the frame can count its own.
DUPLICATE_TIMES_ATTR = "duplicate_rows_ms"
#: The rule that chose between conflicting candles, as reports show it.
DUPLICATE_RULE = "larger volume kept (a fragment carries only part of the volume); tie: later row"


def resolve_duplicates(frame: pd.DataFrame) -> pd.DataFrame:
    """One candle per open time: exact repeats dropped, conflicts resolved by volume.

    Parameters
    ----------
    frame
        OHLCV columns on a UTC ``DatetimeIndex`` named ``timestamp`` that may repeat, in
        the order the source gave them (that order breaks volume ties). Not modified.

    Returns
    -------
    pd.DataFrame
        The frame sorted by open time with unique open times. Its ``attrs`` keep the
        input's and add, when rows were dropped, ``DUPLICATE_CONFLICTS_ATTR`` (the
        conflicting pairs, see :func:`duplicate_conflicts`), ``DUPLICATE_ROWS_ATTR`` and
        ``DUPLICATE_TIMES_ATTR``, merged with what the input already recorded.
    """
    attrs = dict(frame.attrs)
    positions = np.arange(len(frame))
    order = np.lexsort((positions, frame.index.asi8)) if len(frame) else positions
    ordered = frame.iloc[order]
    repeated = ordered.index.duplicated(keep=False)
    if not repeated.any():
        out = ordered.copy()
        out.attrs = attrs
        return out

    columns = [c for c in COLUMNS if c in frame.columns]
    values = ordered[columns].to_numpy(dtype="float64")
    stamps = ordered.index.asi8
    volume_at = columns.index("volume") if "volume" in columns else None
    keep = np.ones(len(ordered), dtype=bool)
    conflicts: list[dict[str, Any]] = []
    dropped_stamps: list[int] = []
    starts = np.flatnonzero(np.r_[True, stamps[1:] != stamps[:-1]])
    ends = np.r_[starts[1:], len(stamps)]
    for start, end in zip(starts, ends, strict=True):
        if end - start == 1:
            continue
        group = values[start:end]
        if volume_at is None:
            winner = end - start - 1
        else:
            volumes = np.nan_to_num(group[:, volume_at], nan=-np.inf)
            # The last of the largest volumes: argmax on the reversed group.
            winner = len(group) - 1 - int(np.argmax(volumes[::-1]))
        keep[start:end] = False
        keep[start + winner] = True
        seen: list[np.ndarray] = [group[winner]]
        for offset in range(len(group)):
            if offset == winner:
                continue
            dropped_stamps.append(int(_ms(stamps[start + offset], ordered.index)))
            row = group[offset]
            if any(_same(row, other) for other in seen):
                continue  # an exact repeat of a row already accounted for
            seen.append(row)
            conflicts.append(
                {
                    "timestamp": _ms(stamps[start], ordered.index),
                    "kept": _candle(columns, group[winner]),
                    "dropped": _candle(columns, row),
                    "rule": DUPLICATE_RULE,
                }
            )
    out = ordered[keep].copy()
    out.attrs = attrs
    return with_duplicates(
        out,
        duplicate_conflicts(frame) + tuple(conflicts),
        tuple(duplicate_times(frame)) + tuple(dropped_stamps),
    )


def duplicate_conflicts(frame: pd.DataFrame) -> tuple[dict[str, Any], ...]:
    """The conflicting pairs recorded on ``frame`` (empty when there are none)."""
    return tuple(frame.attrs.get(DUPLICATE_CONFLICTS_ATTR, ()))


def duplicate_times(frame: pd.DataFrame) -> list[int]:
    """Open times (epoch ms) of the rows dropped from ``frame`` as duplicates, one per row."""
    return [int(ms) for ms in frame.attrs.get(DUPLICATE_TIMES_ATTR, ())]


def with_duplicates(
    frame: pd.DataFrame,
    conflicts: Iterable[Mapping[str, Any]],
    dropped_ms: Iterable[int],
    *,
    since: pd.Timestamp | None = None,
    until: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Record ``conflicts`` and ``dropped_ms`` on ``frame`` (in place; returns it).

    With ``since``/``until`` only those with an open time in ``[since, until)`` are kept,
    so a range cut from a longer series carries its own record.
    """
    low = -(2**63) if since is None else _stamp_ms(since)
    high = 2**63 - 1 if until is None else _stamp_ms(until)
    pairs = tuple(
        _plain(c)
        for c in sorted(conflicts, key=lambda c: c["timestamp"])
        if low <= int(c["timestamp"]) < high
    )
    times = tuple(sorted(int(ms) for ms in dropped_ms if low <= int(ms) < high))
    # Each key only when it has something to say, so a clean frame carries no attrs.
    for key, value, present in (
        (DUPLICATE_CONFLICTS_ATTR, pairs, bool(pairs)),
        (DUPLICATE_TIMES_ATTR, times, bool(times)),
        (DUPLICATE_ROWS_ATTR, len(times), bool(times)),
    ):
        if present:
            frame.attrs[key] = value
        else:
            frame.attrs.pop(key, None)
    return frame


def _plain(conflict: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-able copy: plain ints, floats and strings only."""
    return {
        "timestamp": int(conflict["timestamp"]),
        "kept": {k: float(v) for k, v in conflict["kept"].items()},
        "dropped": {k: float(v) for k, v in conflict["dropped"].items()},
        "rule": str(conflict.get("rule", DUPLICATE_RULE)),
    }


def _candle(columns: list[str], row: np.ndarray) -> dict[str, float]:
    return {column: float(value) for column, value in zip(columns, row, strict=True)}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def _ms(value: int, index: pd.DatetimeIndex) -> int:
    per_ms = {"s": None, "ms": 1, "us": 1_000, "ns": 1_000_000}[index.unit]
    if per_ms is None:
        return int(value) * 1000
    return int(value) // per_ms


def _stamp_ms(stamp: pd.Timestamp) -> int:
    return int(pd.Timestamp(stamp).value // 1_000_000)
