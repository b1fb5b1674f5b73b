"""The live ledger: forecasts written down before their candles exist, scored once they close.

A backtest is scored on a past the analyst already knew; the ledger keeps the
prospective record. Every forecast is stored when it is made, with the time it was
written; every realised candle is stored when it is fetched; a forecast is scored once
its target candle is recorded, or marked missing when that candle never arrives.

The ledger is one SQLite file (standard library :mod:`sqlite3`), by default
``ledger.sqlite3`` in the cache folder (:func:`default_ledger_path`). It is opened in
WAL mode with a busy timeout, and every write is one ``BEGIN IMMEDIATE`` transaction,
so two processes writing at once (two trackers, a tracker and a page) both succeed,
one after the other, and a reader never sees half a round.

Times are UTC epoch milliseconds, as candle open times are everywhere in the package
(ccxt rows, the cache's metadata); prices are in the quote currency.

Schema (version 3, kept in ``PRAGMA user_version``; the file is marked as a ledger by
``PRAGMA application_id``). An older ledger is brought to version 3 when it is first
opened, in one transaction, and nothing already written changes: version 2 added the
``cutoff_ms`` column and the ``trackers`` table, version 3 the triggers that make writing
a row again keep the first (see *Guarantees*).
-----------------------------------------------------------------------------------------

``forecasts``: one row per forecast of one candle (one step of one model's forecast).

===============  =========  ===========================================================
column           type       meaning
===============  =========  ===========================================================
id               integer    row id, in the order rows were written
exchange         text       ccxt exchange id (``"binance"``) or another source name
symbol           text       unified symbol (``"BTC/USDT"``)
timeframe        text       ccxt timeframe (``"1h"``)
model            text       the model's alias (``"naive"``, ``"prophet"``, ``"lstm"``)
settings_hash    text       SHA-256 of the model's settings (:func:`settings_hash`)
seed             integer    the model's seed; NULL for a model without one
round_id         text       the tracker round that wrote it (free text); may be NULL
origin_ms        integer    open time (ms) of the origin candle: the newest closed
                            candle the forecast used
origin_close     real       that candle's close (price), the last price the model saw
target_ms        integer    open time (ms) of the forecast candle: ``origin_ms + step``
                            timeframes
step             integer    1..horizon: candles ahead of the origin
forecast         real       the point forecast of the target's close (price; finite)
lower, upper     real       interval bounds (price); NULL without an interval; a bound
                            may be infinite (the interval is unbounded on that side)
level            real       the interval's coverage aimed at, in (0, 1); NULL without one
made_at_ms       integer    when the row was written (ms, the ledger's clock)
cutoff_ms        integer    open time (ms) of the last candle the model was fitted on
                            (at or before ``origin_ms``); NULL when not recorded
                            (version 1 rows)
===============  =========  ===========================================================

A forecast is unique by (exchange, symbol, timeframe, model, settings_hash, seed,
origin_ms, step): writing it again (a round retried after a failure) keeps the first
and adds nothing.

``candles``: one row per realised (closed) candle.

===============  =========  ===========================================================
exchange, symbol, timeframe  the series, as in ``forecasts``
open_ms          integer    the candle's open time (ms)
open, high,      real       prices; volume in the base currency
low, close,
volume
recorded_at_ms   integer    when the row was written (ms, the ledger's clock)
===============  =========  ===========================================================

A candle is recorded only once it has closed at the ledger's clock, and once: the first
value recorded is the one every score uses.

``scores``: one row per scored forecast.

===============  =========  ===========================================================
forecast_id      integer    the forecast (``forecasts.id``)
actual           real       the target candle's recorded close (price)
error            real       ``forecast - actual`` (price; positive: forecast too high)
abs_error        real       ``|forecast - actual|`` (price)
scored_at_ms     integer    when it was scored (ms, the ledger's clock)
===============  =========  ===========================================================

``missing``: one row per forecast whose target candle never arrived; it is never scored.

===============  =========  ===========================================================
forecast_id      integer    the forecast (``forecasts.id``)
reason           text       ``"gap"``: later candles were recorded but not this one;
                            ``"no candles"``: it never arrived, and no later candle
                            either, though the exchange was asked long after
                            (a delisted pair: see :func:`default_abandon_ms`)
marked_at_ms     integer    when it was marked (ms, the ledger's clock)
===============  =========  ===========================================================

``trackers``: one row per tracker (a process writing forecasts into this ledger), so
a page can say which trackers are running. Unlike the four tables above it is not
append-only: the tracker updates its row at every round (its heartbeat).

================  =========  ==========================================================
column            type       meaning
================  =========  ==========================================================
id                text       the tracker's id (a ``--once`` schedule keeps one id for
                             its series, models and host across runs)
exchange, symbol, timeframe  the series it tracks
models            text       JSON list of the model aliases it forecasts with
mode              text       ``"forever"`` (a process that waits for each candle) or
                             ``"once"`` (one round per run, from cron or a scheduler)
pid, host         int, text  the process (of its latest run) and the machine
started_at_ms     integer    when it first started
heartbeat_at_ms   integer    when it last said it was alive
last_round_at_ms  integer    when it last finished a round; NULL before its first
stopped_at_ms     integer    when it stopped (NULL while it runs; never set for
                             ``"once"``: its schedule outlives each run)
last_error        text       the last round's failure in one line; NULL after a good one
================  =========  ==========================================================

A tracker is ``"running"`` while its heartbeat is at most two timeframes old,
``"stale"`` after that (the process died, or cron stopped calling it), ``"stopped"``
once it said so (:meth:`Ledger.trackers`).

Guarantees
----------
* Append-only: triggers abort any ``UPDATE`` or ``DELETE`` of the four tables, and
  drop any ``INSERT`` of a row whose key is already there (its id or its unique key),
  whatever the conflict clause (``INSERT OR REPLACE``, ``REPLACE INTO``, ``INSERT ...
  ON CONFLICT DO UPDATE``): writing a row again keeps the first. The triggers are in
  the file, so they hold for any connection, not only this class's. A forecast (or a
  candle, a score, a mark) is never changed or removed once written; a forecast is
  either waiting, scored or missing, never two of them.
* The record is checkable (:meth:`Ledger.check`): each forecast keeps the time it was
  written, and the rule below says when that time proves it was made in time.
* A forecast is written before its target closes: :meth:`Ledger.record_forecasts`
  refuses a row written at or after its target candle's close (it cannot be a
  forecast), and writes nothing of that call.
* Only forecasts made in time are scored: one the timing check finds late is left out of
  the metrics, verdict and tests (:meth:`Ledger.backtest`) and counted as ``late``
  (:meth:`Ledger.counts`), whatever its target's fate.

When is a forecast in time?
    Its origin candle opens at ``origin_ms`` and closes at ``origin_close_ms =
    origin_ms + 1 timeframe``; that is also the open time of its first target (step 1),
    which closes one timeframe later. A live forecast is written after its origin
    closed (the origin is a closed candle) and promptly: every minute after the origin
    closed is a minute of the first target's price path the forecaster could have seen.
    :meth:`Ledger.check` reports every forecast with

        ``made_at_ms < origin_close_ms``  or  ``made_at_ms >= origin_close_ms + tolerance``

    The default tolerance (:func:`default_tolerance_ms`) is
    ``min(one timeframe, 15 minutes)``: 15 minutes from ``15m`` candles up, one candle
    below. A round with every model refitted takes about 15 s on 1h candles and starts
    10 s after the close, and an exchange may publish a candle up to 2 minutes late
    (``PUBLISH_GRACE``; see the live round in ``docs/benchmarks.md``): 15 minutes is
    five times the slowest prompt round, and at most a quarter of a 1h candle's path.
    A smaller tolerance may be asked for to prove more promptness (for example 60 000
    ms: written within a minute of the origin closing); one longer than a timeframe
    would let a forecast written after its first target closed pass, so it is refused.
    ``made_at_ms`` comes from the ledger's machine clock and candle times from the
    exchange's: skew between the two moves the check by as much.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecasting.data.cache import default_cache_dir
from forecasting.errors import ConfigurationError, ModelFailed
from forecasting.evaluation.walkforward import Backtest, BacktestSettings, Fold, Pairs
from forecasting.ohlcv import timeframe_offset, timeframe_seconds

__all__ = [
    "ABANDON_AFTER_MS",
    "APPLICATION_ID",
    "DEFAULT_TOLERANCE_MS",
    "FORECAST_FIELDS",
    "LEDGER_FILE",
    "SCHEMA_VERSION",
    "Ledger",
    "ScoreRound",
    "default_abandon_ms",
    "default_ledger_path",
    "default_tolerance_ms",
    "forecast_rows",
    "scored_backtest",
    "settings_hash",
    "timing_note",
]

SCHEMA_VERSION = 3
# "CFLL" (Crypto Forecast Lab Ledger): marks the file as a ledger for `file(1)` and for
# the check on opening, so a random SQLite file is never taken for one.
APPLICATION_ID = 0x43464C4C
LEDGER_FILE = "ledger.sqlite3"
BUSY_TIMEOUT_MS = 30_000
# The timing check's tolerance on candles of 15 minutes and longer (see the module docs).
DEFAULT_TOLERANCE_MS = 15 * 60_000
# The shortest wait before a target the exchange never served is given up (see
# default_abandon_ms).
ABANDON_AFTER_MS = 7 * 86_400_000

FORECAST_FIELDS = (
    "exchange",
    "symbol",
    "timeframe",
    "model",
    "settings_hash",
    "seed",
    "round_id",
    "origin_ms",
    "origin_close",
    "target_ms",
    "step",
    "forecast",
    "lower",
    "upper",
    "level",
    "cutoff_ms",
)
_SERIES = ("exchange", "symbol", "timeframe")
_TABLES = ("forecasts", "candles", "scores", "missing")

# Version 1, as first released: a new ledger runs it, then every migration in turn.
_SCHEMA_V1 = f"""
CREATE TABLE forecasts (
    id            INTEGER PRIMARY KEY,
    exchange      TEXT    NOT NULL,
    symbol        TEXT    NOT NULL,
    timeframe     TEXT    NOT NULL,
    model         TEXT    NOT NULL,
    settings_hash TEXT    NOT NULL,
    seed          INTEGER,
    round_id      TEXT,
    origin_ms     INTEGER NOT NULL,
    origin_close  REAL    NOT NULL,
    target_ms     INTEGER NOT NULL CHECK (target_ms > origin_ms),
    step          INTEGER NOT NULL CHECK (step >= 1),
    forecast      REAL    NOT NULL,
    lower         REAL,
    upper         REAL,
    level         REAL    CHECK (level IS NULL OR (level > 0 AND level < 1)),
    made_at_ms    INTEGER NOT NULL
);
CREATE UNIQUE INDEX forecasts_unique ON forecasts (
    exchange, symbol, timeframe, model, settings_hash, ifnull(seed, ''), origin_ms, step
);
CREATE INDEX forecasts_target ON forecasts (exchange, symbol, timeframe, target_ms);
CREATE TABLE candles (
    exchange       TEXT    NOT NULL,
    symbol         TEXT    NOT NULL,
    timeframe      TEXT    NOT NULL,
    open_ms        INTEGER NOT NULL,
    open           REAL    NOT NULL,
    high           REAL    NOT NULL,
    low            REAL    NOT NULL,
    close          REAL    NOT NULL,
    volume         REAL,
    recorded_at_ms INTEGER NOT NULL,
    PRIMARY KEY (exchange, symbol, timeframe, open_ms)
) WITHOUT ROWID;
CREATE TABLE scores (
    forecast_id  INTEGER PRIMARY KEY REFERENCES forecasts (id),
    actual       REAL    NOT NULL,
    error        REAL    NOT NULL,
    abs_error    REAL    NOT NULL,
    scored_at_ms INTEGER NOT NULL
);
CREATE TABLE missing (
    forecast_id  INTEGER PRIMARY KEY REFERENCES forecasts (id),
    reason       TEXT    NOT NULL CHECK (reason IN ('gap', 'no candles')),
    marked_at_ms INTEGER NOT NULL
);
{
    "".join(
        f'''
CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: {table} rows are never changed'); END;
CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: {table} rows are never deleted'); END;'''
        for table in _TABLES
    )
}
CREATE TRIGGER scores_not_missing BEFORE INSERT ON scores
WHEN EXISTS (SELECT 1 FROM missing WHERE forecast_id = NEW.forecast_id)
BEGIN SELECT RAISE(ABORT, 'a forecast marked missing is never scored'); END;
CREATE TRIGGER missing_not_scored BEFORE INSERT ON missing
WHEN EXISTS (SELECT 1 FROM scores WHERE forecast_id = NEW.forecast_id)
BEGIN SELECT RAISE(ABORT, 'a scored forecast is never marked missing'); END;
PRAGMA user_version = 1;
PRAGMA application_id = {APPLICATION_ID};
"""

# Schema version -> the statements that bring a ledger of the version before up to it.
_MIGRATIONS: dict[int, str] = {
    2: """
ALTER TABLE forecasts ADD COLUMN cutoff_ms INTEGER
    CHECK (cutoff_ms IS NULL OR cutoff_ms <= origin_ms);
CREATE TABLE trackers (
    id               TEXT    PRIMARY KEY,
    exchange         TEXT    NOT NULL,
    symbol           TEXT    NOT NULL,
    timeframe        TEXT    NOT NULL,
    models           TEXT    NOT NULL,
    mode             TEXT    NOT NULL CHECK (mode IN ('once', 'forever')),
    pid              INTEGER NOT NULL,
    host             TEXT    NOT NULL,
    started_at_ms    INTEGER NOT NULL,
    heartbeat_at_ms  INTEGER NOT NULL,
    last_round_at_ms INTEGER,
    stopped_at_ms    INTEGER,
    last_error       TEXT
);
PRAGMA user_version = 2;
""",
    # Writing a row again keeps the first, whatever the statement's conflict clause:
    # REPLACE deletes the old row without firing the DELETE triggers, and an upsert's
    # DO UPDATE is a second way in, so each append-only table drops (RAISE(IGNORE)) an
    # insert whose key is already there, before any conflict is resolved.
    3: f"""
CREATE TRIGGER forecasts_keep_first BEFORE INSERT ON forecasts
WHEN (NEW.id > 0 AND EXISTS (SELECT 1 FROM forecasts WHERE id = NEW.id))
    OR EXISTS (
        SELECT 1 FROM forecasts
        WHERE exchange = NEW.exchange AND symbol = NEW.symbol AND timeframe = NEW.timeframe
            AND model = NEW.model AND settings_hash = NEW.settings_hash
            AND ifnull(seed, '') = ifnull(NEW.seed, '') AND origin_ms = NEW.origin_ms
            AND step = NEW.step
    )
BEGIN SELECT RAISE(IGNORE); END;
CREATE TRIGGER forecasts_positive_id AFTER INSERT ON forecasts
WHEN NEW.id <= 0
BEGIN SELECT RAISE(ABORT, 'forecast ids are positive: leave id out and SQLite numbers it'); END;
CREATE TRIGGER candles_keep_first BEFORE INSERT ON candles
WHEN EXISTS (
    SELECT 1 FROM candles
    WHERE exchange = NEW.exchange AND symbol = NEW.symbol AND timeframe = NEW.timeframe
        AND open_ms = NEW.open_ms
)
BEGIN SELECT RAISE(IGNORE); END;
{
        "".join(
            f'''
CREATE TRIGGER {table}_keep_first BEFORE INSERT ON {table}
WHEN EXISTS (SELECT 1 FROM {table} WHERE forecast_id = NEW.forecast_id)
BEGIN SELECT RAISE(IGNORE); END;'''
            for table in ("scores", "missing")
        )
    }
PRAGMA user_version = 3;
""",
}


def default_ledger_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the ledger lives unless told otherwise: ``ledger.sqlite3`` in the cache folder.

    Parameters
    ----------
    cache_dir
        The cache folder (``--cache-dir``); defaults to
        :func:`~forecasting.data.cache.default_cache_dir`.
    """
    return Path(cache_dir or default_cache_dir()).expanduser() / LEDGER_FILE


def settings_hash(settings: Mapping[str, Any] | None) -> str:
    """SHA-256 of a model's settings as canonical JSON (sorted keys), in hex.

    Two runs with equal settings get the same hash whatever the order of the keys.
    """
    text = json.dumps(dict(settings or {}), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def timing_note(late: int, timeframe: str | None, tolerance_ms: int | None = None) -> str:
    """The timing check's result in one sentence (``late``: how many forecasts
    :meth:`Ledger.check` found), naming the tolerance applied: ``tolerance_ms``, or
    :func:`default_tolerance_ms` of ``timeframe`` when it is ``None``."""
    if tolerance_ms is None and timeframe is not None:
        tolerance_ms = default_tolerance_ms(timeframe)
    within = "the tolerance" if tolerance_ms is None else _duration_words(tolerance_ms)
    if not late:
        return (
            f"Timing check: every forecast was written within {within} of its origin "
            "candle closing, before its first target closed."
        )
    return (
        f"Timing check: {late:,} forecasts were not written within {within} after their "
        "origin candle closed (they were written before that close, or later): counted as "
        "late, not scored."
    )


def _duration_words(ms: int) -> str:
    """A tolerance as people say it: ``15 minutes``, ``1 minute``, ``90 seconds``."""
    seconds = int(ms) // 1000
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600} hour{'s' if seconds != 3600 else ''}"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60} minute{'s' if seconds != 60 else ''}"
    return f"{ms / 1000:g} seconds"


def default_tolerance_ms(timeframe: str) -> int:
    """The timing check's default tolerance: ``min(one timeframe, 15 minutes)``, in ms.

    How long after its origin candle closed a forecast may be written and still count
    as made in time (``1m`` -> 60 000, ``5m`` -> 300 000, ``1h`` and longer -> 900 000).
    Why 15 minutes: see "When is a forecast in time?" in the module docs.

    Raises
    ------
    InvalidTimeframe
        When ``timeframe`` is not a timeframe.
    """
    return min(_timeframe_ms(timeframe), DEFAULT_TOLERANCE_MS)


def default_abandon_ms(timeframe: str) -> int:
    """How long after its target closed a forecast waits for that candle before the live
    round marks it missing (``"no candles"``) when the exchange serves nothing at or after
    it: ``max(10 timeframes, 7 days)``, in ms (``1m`` to ``12h`` -> 7 days, ``1d`` -> 10
    days, ``1w`` -> 70 days).

    Why: an exchange publishes a closed candle within seconds, a late one within minutes
    (:data:`~forecasting.data.exchange.PUBLISH_GRACE`), and halts a pair for maintenance
    for hours, rarely days; a week of silence (ten candles on long timeframes) is a pair
    that stopped trading. The mark is final: a candle that comes after it is recorded
    but does not score the forecast.

    Raises
    ------
    InvalidTimeframe
        When ``timeframe`` is not a timeframe.
    """
    return max(10 * _timeframe_ms(timeframe), ABANDON_AFTER_MS)


def _ms(value: Any) -> int:
    """Epoch milliseconds of a ``pd.Timestamp`` (naive is UTC) or of an integer."""
    if isinstance(value, pd.Timestamp):
        stamp = value.tz_localize("UTC") if value.tz is None else value
        return int(stamp.value // 1_000_000)
    return int(value)


def _timeframe_ms(timeframe: str) -> int:
    return timeframe_seconds(timeframe) * 1000


def _after(ms: np.ndarray | int, timeframe: str, count: int = 1) -> np.ndarray:
    """Open times ``count`` candles after ``ms`` (exact calendar months and years)."""
    stamps = pd.to_datetime(np.atleast_1d(np.asarray(ms, dtype="int64")), unit="ms", utc=True)
    moved = stamps + timeframe_offset(timeframe) * count
    return np.asarray(moved.as_unit("ms").asi8, dtype="int64")


def forecast_rows(
    forecast: Any,
    *,
    exchange: str,
    symbol: str,
    timeframe: str,
    origin: pd.Timestamp | int,
    origin_close: float,
    settings_hash: str,
    seed: int | None = None,
    round_id: str | None = None,
    cutoff: pd.Timestamp | int | None = None,
) -> list[dict[str, Any]]:
    """The ledger rows of one model's :class:`~forecasting.models.base.Forecast`.

    Parameters
    ----------
    forecast
        The forecast (``timestamps``, ``mean``, ``lower``, ``upper``, ``level``,
        ``model``), made from the candles up to ``origin``.
    exchange, symbol, timeframe
        The series.
    origin
        Open time of the newest closed candle the model saw.
    origin_close
        That candle's close.
    settings_hash, seed, round_id
        As in the ``forecasts`` table.
    cutoff
        Open time of the last candle the model was fitted on (``None``: not recorded).
    """
    origin_ms = _ms(origin)
    cutoff_ms = None if cutoff is None else _ms(cutoff)
    rows = []
    for step, stamp in enumerate(pd.DatetimeIndex(forecast.timestamps), 1):
        rows.append(
            {
                "exchange": exchange,
                "symbol": symbol,
                "timeframe": timeframe,
                "model": forecast.model,
                "settings_hash": settings_hash,
                "seed": seed,
                "round_id": round_id,
                "origin_ms": origin_ms,
                "origin_close": float(origin_close),
                "target_ms": _ms(stamp),
                "step": step,
                "forecast": float(forecast.mean[step - 1]),
                "lower": None if forecast.lower is None else float(forecast.lower[step - 1]),
                "upper": None if forecast.upper is None else float(forecast.upper[step - 1]),
                "level": None if forecast.lower is None else forecast.level,
                "cutoff_ms": cutoff_ms,
            }
        )
    return rows


@dataclass(frozen=True)
class ScoreRound:
    """What one :meth:`Ledger.score` call wrote.

    Attributes
    ----------
    scored
        Forecasts scored now.
    missing
        Forecasts marked missing now.
    """

    scored: int
    missing: int


def _default_clock() -> int:
    return time.time_ns() // 1_000_000


class Ledger:
    """One ledger file (see the module docs for its schema and guarantees).

    Parameters
    ----------
    path
        The SQLite file; created (with its folder) when absent. Defaults to
        :func:`default_ledger_path`.
    clock
        Returns "now" in UTC epoch milliseconds; stamps every row written and decides
        which candles have closed. Defaults to the machine's clock.

    Raises
    ------
    ConfigurationError
        When the file is not a ledger, or was written by a newer version.

    Examples
    --------
    >>> with Ledger(path) as ledger:  # doctest: +SKIP
    ...     ledger.record_forecasts(rows)
    ...     ledger.record_candles("binance", "BTC/USDT", "1h", candles)
    ...     ledger.score()
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else default_ledger_path()
        self.clock = clock or _default_clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: the module's implicit transactions start deferred, and a
        # deferred transaction that reads and then writes fails at once (no busy wait)
        # when another process wrote in between; every write here is BEGIN IMMEDIATE.
        self._conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
        )
        try:
            self._open()
        except BaseException:
            self._conn.close()
            raise

    def _open(self) -> None:
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            application = self._conn.execute("PRAGMA application_id").fetchone()[0]
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            tables = self._conn.execute(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table'"
            ).fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise ConfigurationError(
                f"{self.path} is not a ledger (not an SQLite file: {exc}). Give another "
                "--ledger file, or move this one away."
            ) from exc
        if application == 0 and tables == 0:
            self._create()
        elif application != APPLICATION_ID:
            raise ConfigurationError(
                f"{self.path} is an SQLite file but not a ledger. Give another --ledger "
                "file, or move this one away."
            )
        elif version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"{self.path} is a ledger of schema version {version}, newer than this "
                f"version reads ({SCHEMA_VERSION}). Update Crypto Forecast Lab to read it."
            )
        elif version < SCHEMA_VERSION:
            self._migrate()
        mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ConfigurationError(
                f"{self.path} cannot be opened in WAL mode (the file system gave "
                f"{mode!r}); put the ledger on a local disk."
            )
        self._conn.execute("PRAGMA foreign_keys = ON")

    def _create(self) -> None:
        with self._write() as conn:
            # Another process may have created it since the check above.
            if conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
                return
            for statement in _statements(_SCHEMA_V1):
                conn.execute(statement)
            self._apply_migrations(conn, 1)

    def _migrate(self) -> None:
        with self._write() as conn:
            # Another process may have migrated it since the check in _open.
            self._apply_migrations(conn, conn.execute("PRAGMA user_version").fetchone()[0])

    @staticmethod
    def _apply_migrations(conn: sqlite3.Connection, version: int) -> None:
        for target in range(int(version) + 1, SCHEMA_VERSION + 1):
            for statement in _statements(_MIGRATIONS[target]):
                conn.execute(statement)

    # --- plumbing -------------------------------------------------------------------

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (uncommitted work, if any, is rolled back)."""
        self._conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the write lock at its start (waits while busy)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _frame(self, sql: str, params: Iterable[Any] = ()) -> pd.DataFrame:
        cursor = self._conn.execute(sql, tuple(params))
        columns = [c[0] for c in cursor.description]
        return pd.DataFrame(cursor.fetchall(), columns=columns)

    def integrity_check(self) -> list[str]:
        """SQLite's ``PRAGMA integrity_check``: the problems found, empty when none."""
        found = [row[0] for row in self._conn.execute("PRAGMA integrity_check")]
        return [] if found == ["ok"] else found

    # --- writing ----------------------------------------------------------------------

    def record_forecasts(self, rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> int:
        """Write forecasts, all in one transaction, stamped with the clock's time.

        Parameters
        ----------
        rows
            One mapping (or frame row) per forecast with the :data:`FORECAST_FIELDS`
            (``seed``, ``round_id``, ``lower``, ``upper``, ``level`` and ``cutoff_ms``
            may be left out); see :func:`forecast_rows`.

        Returns
        -------
        int
            Rows written; a forecast already in the ledger is kept as it was and not
            counted.

        Raises
        ------
        ConfigurationError
            When a row's target is not ``step`` timeframes after its origin, its cutoff
            is after its origin, or a field is missing; and when the clock, read inside
            the write transaction, is at or after a row's target candle's close
            (``target_ms`` + one timeframe): a row written once its target is known is
            not a forecast. Nothing of the call is written (the transaction is rolled
            back).
        ModelFailed
            When a point forecast is not a finite number (nothing is written).
        """
        if isinstance(rows, pd.DataFrame):
            rows = rows.to_dict(orient="records")
        values = [self._forecast_values(row) for row in rows]
        if not values:
            return 0
        columns = ", ".join((*FORECAST_FIELDS, "made_at_ms"))
        marks = ", ".join("?" * (len(FORECAST_FIELDS) + 1))
        with self._write() as conn:
            # The time is read once the write lock is held: made_at_ms is when the rows
            # went in, not when the writer started waiting for the lock.
            now = int(self.clock())
            _refuse_known_targets(values, now)
            before = conn.total_changes
            conn.executemany(
                f"INSERT OR IGNORE INTO forecasts ({columns}) VALUES ({marks})",
                [(*value, now) for value in values],
            )
            return conn.total_changes - before

    @staticmethod
    def _forecast_values(row: Mapping[str, Any]) -> tuple[Any, ...]:
        required = ("exchange", "symbol", "timeframe", "model", "settings_hash", "origin_ms",
                    "origin_close", "target_ms", "step", "forecast")  # fmt: skip
        absent = [name for name in required if row.get(name) is None]
        if absent:
            raise ConfigurationError(f"A forecast row has no {', '.join(absent)}.")
        timeframe = str(row["timeframe"])
        origin, target, step = _ms(row["origin_ms"]), _ms(row["target_ms"]), int(row["step"])
        if step < 1 or int(_after(origin, timeframe, step)[0]) != target:
            raise ConfigurationError(
                f"A forecast of step {step} from the candle opening at {origin} ms targets "
                f"{target} ms, which is not {step} x {timeframe} after it."
            )
        forecast = float(row["forecast"])
        if not math.isfinite(forecast):
            raise ModelFailed(
                f"{row['model']} forecast {forecast} for step {step}: not a number to keep. "
                "Nothing was written for this round; look at the model's notes."
            )
        origin_close = float(row["origin_close"])
        if not (math.isfinite(origin_close) and origin_close > 0):
            raise ConfigurationError(
                f"A forecast's origin close is {origin_close}: it must be a positive price."
            )
        level = None if _absent(row.get("level")) else float(row["level"])
        seed = None if _absent(row.get("seed")) else int(row["seed"])
        round_id = None if _absent(row.get("round_id")) else str(row["round_id"])
        cutoff = None if _absent(row.get("cutoff_ms")) else _ms(row["cutoff_ms"])
        if cutoff is not None and cutoff > origin:
            raise ConfigurationError(
                f"A forecast from the candle opening at {origin} ms was made by a model fitted "
                f"up to {cutoff} ms, after its origin: such a forecast used the future."
            )
        return (
            str(row["exchange"]),
            str(row["symbol"]),
            timeframe,
            str(row["model"]),
            str(row["settings_hash"]),
            seed,
            round_id,
            origin,
            origin_close,
            target,
            step,
            forecast,
            _bound(row.get("lower")),
            _bound(row.get("upper")),
            level,
            cutoff,
        )

    def record_candles(
        self, exchange: str, symbol: str, timeframe: str, candles: pd.DataFrame
    ) -> int:
        """Write the realised candles of a series that have closed, in one transaction.

        Parameters
        ----------
        exchange, symbol, timeframe
            The series.
        candles
            An OHLCV frame (open times on a UTC index). Candles that have not closed at
            the clock's time, and those without a positive, finite close, are left out:
            a score is never taken on a partial or broken candle.

        Returns
        -------
        int
            Candles written; one already recorded keeps its first value and is not counted.
        """
        if candles.empty:
            return 0
        now = int(self.clock())
        index = pd.DatetimeIndex(candles.index)
        index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        opens = np.asarray(index.as_unit("ms").asi8, dtype="int64")
        closes = _after(opens, timeframe)
        close = candles["close"].to_numpy(dtype="float64")
        keep = (closes <= now) & np.isfinite(close) & (close > 0)
        frame = candles.loc[keep, ["open", "high", "low", "close", "volume"]]
        values = [
            (exchange, symbol, timeframe, int(ms), *(_real(v) for v in row), now)
            for ms, row in zip(opens[keep], frame.itertuples(index=False), strict=True)
        ]
        if not values:
            return 0
        with self._write() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO candles (exchange, symbol, timeframe, open_ms, open, "
                "high, low, close, volume, recorded_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            return conn.total_changes - before

    def score(
        self,
        now_ms: int | None = None,
        *,
        grace_ms: int | None = None,
        abandon_after_ms: int | None = None,
        series: tuple[str, str, str] | None = None,
    ) -> ScoreRound:
        """Score every waiting forecast whose target candle is recorded; mark the lost ones.

        In one transaction: first every waiting forecast whose target candle is in
        ``candles`` is scored (``error = forecast - actual``); then a forecast still
        waiting is marked missing

        * ``"gap"``, when its target closed more than ``grace_ms`` before ``now_ms`` and
          a later candle of its series is recorded (the exchange served past it);
        * ``"no candles"``, when ``abandon_after_ms`` is given and its target closed more
          than that before ``now_ms`` with no candle of its series recorded at or after
          it (a pair that stopped trading).

        The ledger alone cannot tell a pair that stopped trading from a tracker that
        stopped running (both leave no later candle), so it gives up on a target only
        when asked: the live round asks for its own series, right after the exchange
        answered, with :func:`default_abandon_ms` (see :mod:`forecasting.live`).

        Parameters
        ----------
        now_ms
            The time to judge by (defaults to the clock).
        grace_ms
            How long after its close a candle may still arrive; defaults to two
            timeframes of the series (a later candle recorded already proves one has
            passed, so one would be no wait at all).
        abandon_after_ms
            Give up on a target this long after its close even with no later candles;
            ``None`` (the default) never does.
        series
            ``(exchange, symbol, timeframe)``: give up (``abandon_after_ms``) only on
            this series' targets; ``None``: on every series'. Scores and gaps are taken
            on every series either way.
        """
        now = int(self.clock() if now_ms is None else now_ms)
        stamp = int(self.clock())
        with self._write() as conn:
            before = conn.total_changes
            conn.execute(
                """
                INSERT INTO scores (forecast_id, actual, error, abs_error, scored_at_ms)
                SELECT f.id, c.close, f.forecast - c.close, abs(f.forecast - c.close), ?
                FROM forecasts AS f
                JOIN candles AS c ON c.exchange = f.exchange AND c.symbol = f.symbol
                    AND c.timeframe = f.timeframe AND c.open_ms = f.target_ms
                WHERE f.id NOT IN (SELECT forecast_id FROM scores)
                    AND f.id NOT IN (SELECT forecast_id FROM missing)
                """,
                (stamp,),
            )
            scored = conn.total_changes - before
            waiting = conn.execute(
                """
                SELECT DISTINCT exchange, symbol, timeframe FROM forecasts
                WHERE id NOT IN (SELECT forecast_id FROM scores)
                    AND id NOT IN (SELECT forecast_id FROM missing)
                """
            ).fetchall()
            before = conn.total_changes
            for exchange, symbol, timeframe in waiting:
                # A target closes one timeframe after it opens (months taken as 30 days:
                # the grace is a wait, not a candle boundary).
                params = {
                    "stamp": stamp,
                    "now": now,
                    "exchange": exchange,
                    "symbol": symbol,
                    "timeframe": timeframe,
                    "closed": _timeframe_ms(timeframe),
                    "grace": 2 * _timeframe_ms(timeframe) if grace_ms is None else int(grace_ms),
                    "abandon": int(abandon_after_ms or 0),
                }
                lost = "(later.open_ms IS NOT NULL AND f.target_ms + :closed + :grace < :now)"
                if abandon_after_ms is not None and (
                    series is None or tuple(series) == (exchange, symbol, timeframe)
                ):
                    lost += " OR f.target_ms + :closed + :abandon < :now"
                conn.execute(
                    f"""
                    INSERT INTO missing (forecast_id, reason, marked_at_ms)
                    SELECT f.id,
                        CASE WHEN later.open_ms IS NULL THEN 'no candles' ELSE 'gap' END,
                        :stamp
                    FROM forecasts AS f
                    LEFT JOIN (
                        SELECT max(open_ms) AS open_ms FROM candles
                        WHERE exchange = :exchange AND symbol = :symbol
                            AND timeframe = :timeframe
                    ) AS later ON later.open_ms > f.target_ms
                    WHERE f.exchange = :exchange AND f.symbol = :symbol
                        AND f.timeframe = :timeframe
                        AND f.id NOT IN (SELECT forecast_id FROM scores)
                        AND f.id NOT IN (SELECT forecast_id FROM missing)
                        AND ({lost})
                    """,
                    params,
                )
            return ScoreRound(scored, conn.total_changes - before)

    # --- trackers ---------------------------------------------------------------------

    def start_tracker(
        self,
        exchange: str,
        symbol: str,
        timeframe: str,
        models: Iterable[str],
        *,
        mode: str,
        tracker_id: str | None = None,
    ) -> str:
        """Register a tracker (or take over its row again) and return its id.

        Parameters
        ----------
        exchange, symbol, timeframe
            The series it tracks.
        models
            The model aliases it forecasts with.
        mode
            ``"forever"`` or ``"once"`` (see the ``trackers`` table).
        tracker_id
            Its id; by default a new one for ``"forever"``, and for ``"once"`` one made
            from the series, the models and the host, so each run of a cron schedule
            updates the same row.
        """
        if mode not in ("once", "forever"):
            raise ConfigurationError(f"A tracker's mode is 'once' or 'forever', got {mode!r}.")
        names = json.dumps(list(models))
        host = socket.gethostname()
        if tracker_id is None:
            if mode == "once":
                key = json.dumps([exchange, symbol, timeframe, names, host])
                tracker_id = "once-" + hashlib.sha256(key.encode()).hexdigest()[:16]
            else:
                tracker_id = uuid.uuid4().hex
        now = int(self.clock())
        with self._write() as conn:
            conn.execute(
                """
                INSERT INTO trackers (id, exchange, symbol, timeframe, models, mode, pid, host,
                    started_at_ms, heartbeat_at_ms)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, host = excluded.host,
                    models = excluded.models, heartbeat_at_ms = excluded.heartbeat_at_ms,
                    stopped_at_ms = NULL
                """,
                (tracker_id, exchange, symbol, timeframe, names, mode, os.getpid(), host, now,
                 now),
            )  # fmt: skip
        return tracker_id

    def heartbeat(
        self, tracker_id: str, *, round_done: bool = False, error: str | None = None
    ) -> None:
        """Say the tracker is alive; ``round_done`` also stamps its last round, and
        ``error`` records (or, when ``None`` with ``round_done``, clears) its last failure."""
        now = int(self.clock())
        with self._write() as conn:
            if round_done:
                conn.execute(
                    "UPDATE trackers SET heartbeat_at_ms = ?, last_round_at_ms = ?, "
                    "last_error = ? WHERE id = ?",
                    (now, now, error, tracker_id),
                )
            elif error is not None:
                conn.execute(
                    "UPDATE trackers SET heartbeat_at_ms = ?, last_error = ? WHERE id = ?",
                    (now, error, tracker_id),
                )
            else:
                conn.execute(
                    "UPDATE trackers SET heartbeat_at_ms = ? WHERE id = ?", (now, tracker_id)
                )

    def stop_tracker(self, tracker_id: str) -> None:
        """Mark the tracker stopped (a ``"forever"`` process that is exiting)."""
        now = int(self.clock())
        with self._write() as conn:
            conn.execute(
                "UPDATE trackers SET stopped_at_ms = ?, heartbeat_at_ms = ? WHERE id = ?",
                (now, now, tracker_id),
            )

    def trackers(
        self,
        exchange: str | None = None,
        symbol: str | None = None,
        timeframe: str | None = None,
        *,
        now_ms: int | None = None,
    ) -> pd.DataFrame:
        """Every tracker of the ledger (or of a series), with its ``state``.

        Columns: the ``trackers`` table's (``models`` as a list) and ``state``:
        ``"stopped"`` once it said so, ``"stale"`` when its heartbeat is more than two
        timeframes older than ``now_ms`` (default: the clock), else ``"running"``.
        """
        where, params = [], []
        for name, value in zip(_SERIES, (exchange, symbol, timeframe), strict=True):
            if value is not None:
                where.append(f"{name} = ?")
                params.append(value)
        frame = self._frame(
            "SELECT * FROM trackers"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY started_at_ms, id",
            params,
        )
        now = int(self.clock() if now_ms is None else now_ms)
        frame["models"] = [json.loads(text) for text in frame["models"]]
        limit = np.array([2 * _timeframe_ms(str(tf)) for tf in frame["timeframe"]], dtype="int64")
        beat = frame["heartbeat_at_ms"].to_numpy(dtype="int64")
        stopped = frame["stopped_at_ms"].notna().to_numpy()
        frame["state"] = np.where(
            stopped, "stopped", np.where(now - beat > limit, "stale", "running")
        ).astype(object)
        return frame

    # --- reading ----------------------------------------------------------------------

    def latest_forecast(
        self,
        exchange: str,
        symbol: str,
        timeframe: str,
        model: str,
        settings_hash: str,
        seed: int | None = None,
    ) -> dict[str, int | None] | None:
        """The newest origin a model (with these settings and seed) forecast from.

        Returns
        -------
        dict or None
            ``{"origin_ms": ..., "cutoff_ms": ..., "made_at_ms": ...}`` of its newest
            forecast; ``None`` when it has none.
        """
        row = self._conn.execute(
            """
            SELECT origin_ms, cutoff_ms, made_at_ms FROM forecasts
            WHERE exchange = ? AND symbol = ? AND timeframe = ? AND model = ?
                AND settings_hash = ? AND ifnull(seed, '') = ifnull(?, '')
            ORDER BY origin_ms DESC LIMIT 1
            """,
            (exchange, symbol, timeframe, model, settings_hash, seed),
        ).fetchone()
        if row is None:
            return None
        return {"origin_ms": row[0], "cutoff_ms": row[1], "made_at_ms": row[2]}

    def _select(
        self,
        state: str,
        exchange: str | None,
        symbol: str | None,
        timeframe: str | None,
        model: str | None,
        tolerance_ms: int | None = None,
    ) -> pd.DataFrame:
        """Forecasts in one state: ``"all"``, ``"late"`` (failing the timing check at
        ``tolerance_ms``), or, of those made in time, ``"waiting"``, ``"scored"`` or
        ``"missing"``."""
        where, params = [], []
        for name, value in zip(
            (*_SERIES, "model"), (exchange, symbol, timeframe, model), strict=True
        ):
            if value is not None:
                where.append(f"f.{name} = ?")
                params.append(value)
        where.append(
            {
                "waiting": "s.forecast_id IS NULL AND m.forecast_id IS NULL",
                "scored": "s.forecast_id IS NOT NULL",
                "missing": "m.forecast_id IS NOT NULL",
                "late": "1",
                "all": "1",
            }[state]
        )
        frame = self._frame(
            f"""
            SELECT f.*, s.actual, s.error, s.abs_error, s.scored_at_ms,
                m.reason AS missing_reason, m.marked_at_ms
            FROM forecasts AS f
            LEFT JOIN scores AS s ON s.forecast_id = f.id
            LEFT JOIN missing AS m ON m.forecast_id = f.id
            WHERE {" AND ".join(where)}
            ORDER BY f.id
            """,
            params,
        )
        for column in ("forecast", "lower", "upper", "level", "actual", "error", "abs_error"):
            frame[column] = frame[column].astype("float64")
        if state == "all":
            return frame
        timed = _timing(frame, tolerance_ms)
        if state == "late":
            return timed[timed["problem"].notna()].reset_index(drop=True)
        return frame[timed["problem"].isna().to_numpy()].reset_index(drop=True)

    def forecasts(self, exchange=None, symbol=None, timeframe=None, model=None) -> pd.DataFrame:
        """Every forecast, with its score or missing mark where there is one (late ones
        included: see :meth:`check`)."""
        return self._select("all", exchange, symbol, timeframe, model)

    def waiting(
        self, exchange=None, symbol=None, timeframe=None, model=None, *, tolerance_ms=None
    ) -> pd.DataFrame:
        """Forecasts made in time and neither scored nor marked missing: their candle is
        still to come.

        Columns: the ``forecasts`` table's (``actual`` and the score columns are NaN).
        ``tolerance_ms`` is the timing check's (:meth:`check`); a late forecast is in
        none of :meth:`waiting`, :meth:`scored` and :meth:`missing`.
        """
        return self._select("waiting", exchange, symbol, timeframe, model, tolerance_ms)

    def scored(
        self, exchange=None, symbol=None, timeframe=None, model=None, *, tolerance_ms=None
    ) -> pd.DataFrame:
        """Scored forecasts made in time: the ``forecasts`` columns and ``actual, error,
        abs_error, scored_at_ms``, in the order they were written. :func:`scored_backtest`
        turns them into what the evaluation code reads. A forecast the timing check
        (:meth:`check`, at ``tolerance_ms``) finds late is left out, even when its target
        closed and a score row was written for it."""
        return self._select("scored", exchange, symbol, timeframe, model, tolerance_ms)

    def missing(
        self, exchange=None, symbol=None, timeframe=None, model=None, *, tolerance_ms=None
    ) -> pd.DataFrame:
        """Forecasts made in time and marked missing, with ``missing_reason`` and
        ``marked_at_ms``."""
        return self._select("missing", exchange, symbol, timeframe, model, tolerance_ms)

    def candles(self, exchange: str, symbol: str, timeframe: str) -> pd.DataFrame:
        """The recorded candles of a series, as an OHLCV frame (UTC ``timestamp`` index)."""
        frame = self._frame(
            "SELECT open_ms, open, high, low, close, volume FROM candles "
            "WHERE exchange = ? AND symbol = ? AND timeframe = ? ORDER BY open_ms",
            (exchange, symbol, timeframe),
        )
        index = pd.DatetimeIndex(
            pd.to_datetime(frame["open_ms"].astype("int64"), unit="ms", utc=True),
            name="timestamp",
        ).as_unit("ms")
        out = frame.drop(columns="open_ms").astype("float64")
        out.index = index
        return out

    def counts(
        self, exchange=None, symbol=None, timeframe=None, *, tolerance_ms: int | None = None
    ) -> pd.DataFrame:
        """Per model: forecasts ``waiting``, ``scored``, ``missing`` and ``late``.

        ``late``: forecasts the timing check (:meth:`check`, at ``tolerance_ms``; default
        :func:`default_tolerance_ms`) finds not made in time; they are never scored,
        whatever became of their target, and counted in no other column. The four add
        up to every forecast of the model.

        Raises
        ------
        ConfigurationError
            For a tolerance :meth:`check` refuses.
        """
        frame = self._select("all", exchange, symbol, timeframe, None)
        late = _timing(frame, tolerance_ms)["problem"].notna().to_numpy()
        state = np.where(
            late,
            "late",
            np.where(
                frame["scored_at_ms"].notna(),
                "scored",
                np.where(frame["marked_at_ms"].notna(), "missing", "waiting"),
            ),
        )
        table = pd.crosstab(frame["model"], pd.Series(state, index=frame.index, name="state"))
        return table.reindex(
            columns=["waiting", "scored", "missing", "late"], fill_value=0
        ).rename_axis(index="model", columns=None)

    def check(
        self,
        tolerance_ms: int | None = None,
        *,
        exchange: str | None = None,
        symbol: str | None = None,
        timeframe: str | None = None,
    ) -> pd.DataFrame:
        """Forecasts whose written time does not prove they were made in time.

        The rule (see the module docs): a forecast is in time when
        ``origin_close_ms <= made_at_ms < origin_close_ms + tolerance``, with its
        target ``step`` timeframes after its origin. A forecast reported here is not
        scored (:meth:`scored`, :meth:`backtest`) and is counted ``late``
        (:meth:`counts`).

        Parameters
        ----------
        tolerance_ms
            How long after its origin closed a forecast may be written (ms); ``None``
            (the default) takes :func:`default_tolerance_ms` of each series' timeframe:
            ``min(one timeframe, 15 minutes)``.
        exchange, symbol, timeframe
            Only this series (each optional).

        Returns
        -------
        pd.DataFrame
            One row per violation: the ``forecasts`` columns, ``origin_close_ms``,
            ``late_ms`` (``made_at_ms - origin_close_ms``), ``tolerance_ms`` (the one
            applied) and ``problem`` (what is wrong, in words). Empty for a clean ledger.

        Raises
        ------
        ConfigurationError
            When ``tolerance_ms`` is negative or longer than a checked series' timeframe.
        """
        frame = self._select("all", exchange, symbol, timeframe, None)
        frame = frame.loc[:, ["id", *FORECAST_FIELDS, "made_at_ms"]]
        timed = _timing(frame, tolerance_ms)
        return timed[timed["problem"].notna()].reset_index(drop=True)

    def backtest(
        self,
        exchange: str,
        symbol: str,
        timeframe: str,
        *,
        models: Iterable[str] | None = None,
        common_pairs: bool = True,
        tolerance_ms: int | None = None,
    ) -> Backtest:
        """The series' scored forecasts made in time as a
        :class:`~forecasting.evaluation.Backtest` (see :func:`scored_backtest`), ready for
        ``score``, ``verdicts`` and the rest: the scoring ``ledger`` and the Live page
        share.

        A forecast the timing check finds late (:meth:`check` at ``tolerance_ms``,
        default :func:`default_tolerance_ms`) is left out of it, and its model gets a
        note saying how many were left out.

        Raises
        ------
        ConfigurationError
            For a tolerance :meth:`check` refuses, or rows of several series.
        """
        scored = self.scored(exchange, symbol, timeframe, tolerance_ms=tolerance_ms)
        late = self.check(tolerance_ms, exchange=exchange, symbol=symbol, timeframe=timeframe)
        if models is not None:
            wanted = list(models)
            scored = scored[scored["model"].isin(wanted)]
            late = late[late["model"].isin(wanted)]
        result = scored_backtest(
            scored, self.candles(exchange, symbol, timeframe), timeframe, common_pairs=common_pairs
        )
        for model, rows in late.groupby("model", sort=False):
            result.notes.setdefault(str(model), []).append(_late_note(rows))
        return result


def _late_note(rows: pd.DataFrame) -> str:
    """One model's rows the timing check reported (:meth:`Ledger.check`), in a sentence
    naming each way they failed."""
    tolerance = _duration(int(rows["tolerance_ms"].iloc[0]))
    early = rows["problem"] == "written before its origin candle closed"
    tardy = rows["problem"] == "written after its origin closed plus the tolerance"
    parts = [
        f"{count} {what}"
        for count, what in (
            (int(early.sum()), "written before their origin candle closed"),
            (int(tardy.sum()), f"written {tolerance} or more after their origin candle closed"),
            (int((~early & ~tardy).sum()), "with a target not step candles after the origin"),
        )
        if count
    ]
    return (
        f"{len(rows)} forecasts failed the timing check ({', '.join(parts)}): counted as "
        "late, not scored."
    )


def _refuse_known_targets(values: list[tuple[Any, ...]], now: int) -> None:
    """Raise when a forecast row (as :meth:`Ledger._forecast_values` gives it) would be
    written at or after its target candle closed."""
    by_timeframe: dict[str, list[tuple[Any, ...]]] = {}
    for value in values:
        by_timeframe.setdefault(value[2], []).append(value)
    for timeframe, group in by_timeframe.items():
        closes = _after(np.array([value[9] for value in group], dtype="int64"), timeframe)
        known = np.flatnonzero(closes <= now)
        if known.size:
            value, closed = group[int(known[0])], int(closes[known[0]])
            model, target, step = value[3], value[9], value[10]
            raise ConfigurationError(
                f"A {model} forecast of the {timeframe} candle opening at {_iso(target)} "
                f"(step {step}) was to be written at {_iso(now)}, once that candle had closed "
                f"(at {_iso(closed)}): it cannot be a forecast, so nothing was written. Write "
                "forecasts before their target candle closes."
            )


def _timing(frame: pd.DataFrame, tolerance_ms: int | None) -> pd.DataFrame:
    """The forecast rows with the timing check's columns added: ``origin_close_ms``,
    ``late_ms``, ``tolerance_ms`` and ``problem`` (``None`` for a forecast made in time).

    Raises
    ------
    ConfigurationError
        When ``tolerance_ms`` is negative or longer than a row's timeframe.
    """
    if tolerance_ms is not None and int(tolerance_ms) < 0:
        raise ConfigurationError(f"The tolerance is {tolerance_ms} ms; it must be at least 0.")
    out = frame.assign(
        origin_close_ms=pd.Series(0, index=frame.index, dtype="int64"),
        late_ms=pd.Series(0, index=frame.index, dtype="int64"),
        tolerance_ms=pd.Series(0, index=frame.index, dtype="int64"),
        problem=pd.Series(None, index=frame.index, dtype="object"),
    )
    for tf, rows in frame.groupby("timeframe", sort=False):
        origin = rows["origin_ms"].to_numpy(dtype="int64")
        origin_close = _after(origin, str(tf))
        length = int((_after(origin, str(tf), 2) - origin_close).min())
        if tolerance_ms is not None and int(tolerance_ms) > length:
            raise ConfigurationError(
                f"A tolerance of {tolerance_ms} ms is longer than a {tf} candle "
                f"({length} ms): a forecast written after its first target closed would "
                "pass. Use at most one timeframe."
            )
        tolerance = default_tolerance_ms(str(tf)) if tolerance_ms is None else int(tolerance_ms)
        made = rows["made_at_ms"].to_numpy(dtype="int64")
        steps = rows["step"].to_numpy(dtype="int64")
        expected = np.empty(len(rows), dtype="int64")
        for step in np.unique(steps):
            expected[steps == step] = _after(origin[steps == step], str(tf), int(step))
        problems = np.full(len(rows), None, dtype=object)
        problems[rows["target_ms"].to_numpy(dtype="int64") != expected] = (
            "its target is not step timeframes after its origin"
        )
        problems[made >= origin_close + tolerance] = (
            "written after its origin closed plus the tolerance"
        )
        problems[made < origin_close] = "written before its origin candle closed"
        out.loc[rows.index, "origin_close_ms"] = origin_close
        out.loc[rows.index, "late_ms"] = made - origin_close
        out.loc[rows.index, "tolerance_ms"] = tolerance
        out.loc[rows.index, "problem"] = problems
    return out


def _duration(ms: int) -> str:
    """A tolerance in words: ``"15 minutes"``, ``"1 minute"``, ``"30 seconds"``, ``"250 ms"``."""
    for unit, size in (("hour", 3_600_000), ("minute", 60_000), ("second", 1000)):
        if ms >= size and ms % size == 0:
            count = ms // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{ms} ms"


def _iso(ms: int) -> str:
    return f"{pd.Timestamp(int(ms), unit='ms', tz='UTC'):%Y-%m-%dT%H:%M:%SZ}"


def _statements(script: str) -> Iterator[str]:
    """The statements of a script, one by one (a trigger's body holds semicolons too)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete statement in the schema: {pending!r}")


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _bound(value: Any) -> float | None:
    # NaN means "no interval" (SQLite would store it as NULL anyway); infinity is kept.
    return None if _absent(value) else float(value)


def _real(value: Any) -> float | None:
    return None if _absent(value) else float(value)


def _stamps(ms: pd.Series) -> pd.Series:
    return pd.to_datetime(ms.astype("int64"), unit="ms", utc=True).dt.as_unit("ms")


def scored_backtest(
    scored: pd.DataFrame,
    candles: pd.DataFrame,
    timeframe: str,
    *,
    common_pairs: bool = True,
) -> Backtest:
    """Turn one series' scored ledger rows into the backtest the evaluation code reads.

    So ``score``, ``score_by_horizon``, ``verdicts``, ``dm_table`` and
    ``undefined_metrics`` judge prospective forecasts exactly as they judge a
    walk-forward backtest. Each origin is a fold (forecasts from one origin share what
    the model had seen); its MASE scale is the mean absolute change between recorded
    candles one timeframe apart, both opening at or before the origin (NaN with fewer
    than two such candles, or none that differ).

    Parameters
    ----------
    scored
        :meth:`Ledger.scored` rows of one series.
    candles
        The series' recorded candles (:meth:`Ledger.candles`).
    timeframe
        The series' timeframe.
    common_pairs
        Keep only the (origin, step) pairs every model scored (the backtest's rule, so
        that pooled metrics compare like with like); the rows left out are counted in
        each model's notes.

    Returns
    -------
    Backtest
        ``forecasts`` with the columns ``fold, cutoff, origin, timestamp, step, model, y,
        yhat, lower, upper, y_origin`` (``cutoff`` is the last candle the model was
        fitted on, from ``cutoff_ms``; the origin where that is not recorded). A model
        alias seen with several settings hashes becomes ``alias@hash8`` per hash; a
        model seen with several seeds keeps the seed of its first forecast in
        ``forecasts`` and the others in ``seed_forecasts``.
    """
    rows = scored.copy()
    if rows[["exchange", "symbol", "timeframe"]].drop_duplicates().shape[0] > 1:
        raise ConfigurationError(
            "The scored rows hold several series; pick one exchange, symbol and timeframe."
        )
    hashes = rows.groupby("model")["settings_hash"].nunique()
    several = rows["model"].map(hashes) > 1
    rows.loc[several, "model"] = rows["model"] + "@" + rows["settings_hash"].str[:8]
    rows = rows.sort_values("id", kind="stable")
    first_seed = rows.groupby("model", sort=False)["seed"].first()
    own = rows["seed"].isna() & rows["model"].map(first_seed).isna()
    own |= rows["seed"] == rows["model"].map(first_seed)
    origins = np.sort(rows["origin_ms"].unique())
    fold_of = {int(ms): number for number, ms in enumerate(origins, 1)}
    frame = pd.DataFrame(
        {
            "fold": rows["origin_ms"].map(fold_of).astype("int64"),
            "cutoff": _stamps(rows["cutoff_ms"].fillna(rows["origin_ms"])),
            "origin": _stamps(rows["origin_ms"]),
            "timestamp": _stamps(rows["target_ms"]),
            "step": rows["step"].astype("int64"),
            "model": rows["model"],
            "y": rows["actual"].astype("float64"),
            "yhat": rows["forecast"].astype("float64"),
            "lower": rows["lower"].astype("float64"),
            "upper": rows["upper"].astype("float64"),
            "y_origin": rows["origin_close"].astype("float64"),
        }
    )
    primary, extra = frame[own.to_numpy()], frame[~own.to_numpy()]
    notes: dict[str, list[str]] = {}
    models = list(dict.fromkeys(primary["model"]))
    if common_pairs and len(models) > 1:
        key = primary.set_index(["origin", "step"]).index
        shared = None
        for model in models:
            pairs = set(key[(primary["model"] == model).to_numpy()])
            shared = pairs if shared is None else shared & pairs
        keep = key.isin(list(shared or ()))
        for model in models:
            left = int((~keep & (primary["model"] == model).to_numpy()).sum())
            if left:
                notes[model] = [
                    f"{left} scored forecasts were left out: not every model forecast "
                    "those (origin, step) pairs."
                ]
        primary = primary[keep]
        extra = extra[extra.set_index(["origin", "step"]).index.isin(list(shared or ()))]
    levels = {}
    for model in models:
        found = rows.loc[rows["model"] == model, "level"].dropna().unique()
        levels[model] = float(found[0]) if len(found) == 1 else None
    seed_forecasts: dict[str, dict[int, pd.DataFrame]] = {}
    for (model, seed), group in extra.groupby(
        [extra["model"], rows.loc[extra.index, "seed"]], sort=False
    ):
        seed_forecasts.setdefault(model, {})[int(seed)] = group.reset_index(drop=True)
    model_seeds = {
        model: None if pd.isna(first_seed[model]) else int(first_seed[model]) for model in models
    }
    close = candles["close"].to_numpy(dtype="float64")
    opens = np.asarray(pd.DatetimeIndex(candles.index).as_unit("ms").asi8, dtype="int64")
    one_apart = _after(opens, timeframe)[:-1] == opens[1:] if len(opens) > 1 else np.zeros(0, bool)
    changes = np.abs(np.diff(close))
    naive_scale: dict[int, float] = {}
    folds: list[Fold] = []
    for ms, number in fold_of.items():
        upto = int(np.searchsorted(opens, ms, side="right"))  # candles opening <= origin
        usable = changes[: max(upto - 1, 0)][one_apart[: max(upto - 1, 0)]]
        scale = float(usable.mean()) if usable.size else float("nan")
        naive_scale[number] = scale if scale > 0 else float("nan")
        folds.append(Fold(number, 0, upto - 1, (upto - 1,), upto))
    horizon = int(frame["step"].max()) if len(frame) else 1
    spacing = np.rint(np.diff(origins) / _timeframe_ms(timeframe)).astype("int64")
    spacing = spacing[spacing > 0]
    settings = BacktestSettings(
        horizon=horizon,
        folds=max(len(origins), 1),
        test_size=len(origins),
        # The smallest spacing between origins: the joint test then allows for the most
        # overlap between forecasts, never too little.
        stride=int(spacing.min()) if spacing.size else 1,
    )
    forecasts = primary.sort_values(["origin", "step"], kind="stable")
    order = {model: position for position, model in enumerate(models)}
    forecasts = forecasts.sort_values(
        "model", key=lambda column: column.map(order), kind="stable"
    ).reset_index(drop=True)
    return Backtest(
        forecasts,
        folds,
        settings,
        naive_scale,
        levels,
        Pairs(scored=int(len(forecasts) // max(len(models), 1))),
        seed_forecasts,
        notes,
        model_seeds,
    )
