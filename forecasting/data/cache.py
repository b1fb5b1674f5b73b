"""A local Parquet cache of candles per (source, symbol, timeframe).

Each series is one Parquet file holding the candles and, in its schema metadata, the
time range the exchange *answered* (its coverage). Coverage is what lets a request
fetch only what the cache lacks: a pair listed in 2019 asked for from 2015 must not send
the same empty request for 2015-2019 every time.

Coverage ends at the last candle received, never at the end of the range asked: a
candle not yet published when it was asked for (a daily candle at 00:00:30), or a page
answered empty by mistake, is asked for again later instead of leaving a permanent
hole. How far the exchange was asked (``checked_end``) is kept beside it, so that a
repeat asks only once a candle can have closed since.

Safety:

* writes are atomic: a temporary file in the same folder, fsynced, then ``os.replace``,
  so a crash mid-write leaves the previous file intact;
* a lock file per series (``flock``) serialises read-fetch-merge-write, so two
  sessions fetching the same series at once neither corrupt it nor lose rows;
* a file that cannot be read is moved aside (``*.corrupt-<time>``) and fetched again;
* a file holds at most ``max_candles_per_series`` candles (``$CFL_CACHE_MAX_CANDLES``,
  else ``DEFAULT_MAX_CANDLES_PER_SERIES``): a write drops the oldest ones beyond that,
  and the coverage starts at the first candle kept, so they are fetched again if asked.

Candles with a zero or negative price are never returned: they are kept out of the file,
and their open times are kept in its metadata, so every later read still reports them
(see :func:`~forecasting.data.quality.drop_nonpositive`). The metadata also keeps the
conflicting duplicates resolved while fetching and the rows dropped as duplicates (see
:mod:`forecasting.data.duplicates`), and the first candle the exchange serves when it
answered less history than asked (``served_from``), so every later read reports them too.

Windows inside the covered range that the exchange answered with nothing (``holes``) are
kept with how often and when they were last asked, so a load asks for them again, with a
backoff, instead of taking an answer lost once for "no candles there" for good.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from forecasting.data.duplicates import (
    duplicate_conflicts,
    duplicate_times,
    with_duplicates,
)
from forecasting.data.quality import (
    drop_nonpositive,
    dropped_nonpositive,
    nonpositive_mask,
    open_times,
    with_nonpositive,
)
from forecasting.errors import ConfigurationError
from forecasting.ohlcv import COLUMNS, from_epoch_ms, normalize_ohlcv

try:  # POSIX; Streamlit Community Cloud runs Linux
    import fcntl
except ImportError:  # pragma: no cover - Windows: atomic replace still protects readers
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_MAX_CANDLES_PER_SERIES",
    "CachedSeries",
    "CandleCache",
    "default_cache_dir",
    "default_max_candles",
    "fsync_dir",
]

log = logging.getLogger(__name__)

_META_KEY = b"crypto_forecast_lab"
_FORMAT_VERSION = 1

# Candles kept per series unless $CFL_CACHE_MAX_CANDLES says otherwise: about a year of
# minute candles, a Parquet file of about 20 MB, read whole on every request.
DEFAULT_MAX_CANDLES_PER_SERIES = 500_000
MAX_CANDLES_VARIABLE = "CFL_CACHE_MAX_CANDLES"


def default_cache_dir() -> Path:
    """Where candles are cached unless told otherwise.

    ``$CFL_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/crypto-forecast-lab``, else
    ``~/.cache/crypto-forecast-lab``.
    """
    if os.environ.get("CFL_CACHE_DIR"):
        return Path(os.environ["CFL_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "crypto-forecast-lab"


def default_max_candles() -> int:
    """Candles kept per series: ``$CFL_CACHE_MAX_CANDLES`` if set, else the default.

    Raises
    ------
    ConfigurationError
        When the variable is set to anything but a positive whole number.
    """
    raw = os.environ.get(MAX_CANDLES_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_MAX_CANDLES_PER_SERIES
    return _positive_count(raw.replace("_", ""), MAX_CANDLES_VARIABLE)


def _positive_count(value: object, name: str) -> int:
    try:
        count = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        count = 0
    if isinstance(value, bool) or count < 1 or (isinstance(value, float) and value != count):
        shown = repr(value)[:40]
        raise ConfigurationError(
            f"{name} is {shown}: it must be a whole number of candles, at least 1, such as "
            f"{DEFAULT_MAX_CANDLES_PER_SERIES}."
        )
    return count


@dataclass(frozen=True)
class CachedSeries:
    """Candles read from the cache and the range that was asked and answered.

    A series holds at most the cache's ``max_candles_per_series`` candles, the newest:
    writing more drops the oldest, and ``covered_start`` then moves up to the first
    candle kept, so a later request for the dropped range fetches it again.

    Attributes
    ----------
    candles
        The OHLCV frame.
    covered_start, covered_end
        ``[covered_start, covered_end)``: every candle in this range is in ``candles``
        or was answered as absent; ``covered_end`` is just after the last candle received
        (or ``covered_start`` when none was).
    nonpositive
        Open times of candles the exchange sent with a zero or negative price, dropped
        (also recorded in ``candles.attrs``).
    checked_end
        The exchange was asked for every candle opening before this, each at least a
        grace period after it closed; candles after ``covered_end`` and before
        ``checked_end`` were not served. Never before ``covered_end``.
    served_from
        The first candle the exchange serves, when it answered less history than asked
        (``None`` when it answered all it was asked for).
    unanswered
        Windows ``(start_ms, end_ms)`` the exchange left empty though it served later
        candles (see :data:`~forecasting.data.exchange.UNANSWERED_ATTR`).
    holes
        Every window ``(start_ms, end_ms, asks, asked_ms)`` inside the covered range that
        the exchange answered with nothing (between candles, before the first, after the
        last, or the whole range), with how many loads asked for it and when it was last
        asked (epoch ms), so it can be asked again with a backoff.
    """

    candles: pd.DataFrame
    covered_start: pd.Timestamp
    covered_end: pd.Timestamp
    nonpositive: pd.DatetimeIndex = field(
        default_factory=lambda: pd.DatetimeIndex([], tz="UTC", name="timestamp").as_unit("ms")
    )
    checked_end: pd.Timestamp | None = None
    served_from: pd.Timestamp | None = None
    unanswered: tuple[tuple[int, int], ...] = ()
    holes: tuple[tuple[int, int, int, int], ...] = ()

    def __post_init__(self) -> None:
        checked = self.covered_end if self.checked_end is None else self.checked_end
        object.__setattr__(self, "checked_end", max(checked, self.covered_end))


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_thread_locks: dict[Path, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


class CandleCache:
    """Parquet files of candles under one folder.

    Parameters
    ----------
    root
        The cache folder; created on first write. Defaults to :func:`default_cache_dir`.
    max_candles_per_series
        The most candles one series keeps; a write drops the oldest beyond it. Defaults
        to :func:`default_max_candles` (``$CFL_CACHE_MAX_CANDLES``, else
        ``DEFAULT_MAX_CANDLES_PER_SERIES``).

    Raises
    ------
    ConfigurationError
        When the bound (given or from the environment) is not a whole number of at
        least 1.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        max_candles_per_series: int | None = None,
    ) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.max_candles_per_series = (
            default_max_candles()
            if max_candles_per_series is None
            else _positive_count(max_candles_per_series, "max_candles_per_series")
        )

    def path(self, source: str, symbol: str, timeframe: str) -> Path:
        """The file for one series (names made safe for every file system)."""
        # "1M" (months) becomes "1mo": macOS and Windows ignore case in file names, where
        # "1M" and "1m" (minutes) would otherwise be one file holding two series.
        timeframe = re.sub(r"M$", "mo", timeframe)
        parts = [_SAFE.sub("_", p).strip("._") or "_" for p in (source, symbol, timeframe)]
        return self.root / parts[0] / parts[1] / f"{parts[2]}.parquet"

    @contextlib.contextmanager
    def lock(self, source: str, symbol: str, timeframe: str) -> Iterator[None]:
        """Hold the series' lock: one read-fetch-write at a time, across processes too."""
        path = self.path(source, symbol, timeframe)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _thread_lock(path), open(path.with_suffix(".lock"), "a+b") as handle:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                self._remove_stale_temporaries(path)
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def read(self, source: str, symbol: str, timeframe: str) -> CachedSeries | None:
        """The cached series, or ``None`` when absent or unreadable (then moved aside)."""
        path = self.path(source, symbol, timeframe)
        if not path.exists():
            return None
        try:
            table = pq.read_table(path)
            meta = json.loads((table.schema.metadata or {})[_META_KEY])
            if meta.get("version") != _FORMAT_VERSION:
                raise ValueError(f"cache format {meta.get('version')}")
            frame = table.to_pandas()
            frame.attrs = {}  # whatever pyarrow restored: the metadata below is the record
            candles = with_nonpositive(normalize_ohlcv(frame), meta.get("nonpositive", []))
            # Files written before placeholders were dropped may still hold some.
            candles = drop_nonpositive(candles)
            with_duplicates(
                candles, meta.get("duplicate_conflicts", []), meta.get("duplicate_rows_ms", [])
            )
            start = from_epoch_ms(meta["covered_start"])
            end = from_epoch_ms(meta["covered_end"])
            checked = from_epoch_ms(meta.get("checked_end", meta["covered_end"]))
            served = meta.get("served_from")
            served = None if served is None else from_epoch_ms(served)
            windows = tuple((int(a), int(b)) for a, b in meta.get("unanswered", []))
            if "holes" in meta:
                holes = tuple(tuple(int(v) for v in hole) for hole in meta["holes"])
            else:  # written before holes were kept: ask its empty windows again at once
                holes = tuple((a, b, 1, 0) for a, b in windows)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is set aside, never a crash
            self._set_aside(path, exc)
            return None
        return CachedSeries(
            candles, start, end, dropped_nonpositive(candles), checked, served, windows, holes
        )

    def write(
        self,
        source: str,
        symbol: str,
        timeframe: str,
        candles: pd.DataFrame,
        covered_start: pd.Timestamp,
        covered_end: pd.Timestamp,
        *,
        nonpositive: Iterable[pd.Timestamp] = (),
        checked_end: pd.Timestamp | None = None,
        served_from: pd.Timestamp | None = None,
        unanswered: Iterable[tuple[int, int]] = (),
        holes: Iterable[tuple[int, int, int, int]] = (),
    ) -> Path:
        """Replace the series atomically. Call it while holding :meth:`lock`.

        At most ``max_candles_per_series`` candles are kept, the newest: when there are
        more, the oldest are dropped and the coverage written starts at the first candle
        kept (placeholder open times before it are forgotten too), so the file stays
        bounded and a later request for the dropped range fetches it again.

        Parameters
        ----------
        source, symbol, timeframe
            Which series (see :meth:`path`).
        candles
            The candles to keep. Any with a zero or negative price are left out and
            recorded with ``nonpositive``, as are those ``candles.attrs`` records. The
            duplicates its ``attrs`` record are kept too.
        covered_start, covered_end
            The range that was answered (see :class:`CachedSeries`).
        nonpositive
            Open times of candles already dropped for a zero or negative price; those
            that now have a candle are forgotten.
        checked_end
            How far the exchange was asked (see :class:`CachedSeries`); defaults to
            ``covered_end``.
        served_from
            The first candle the exchange serves, when it answered less than asked.
        unanswered
            Windows ``(start_ms, end_ms)`` the exchange left empty (see
            :class:`CachedSeries`).
        holes
            Windows ``(start_ms, end_ms, asks, asked_ms)`` answered with nothing (see
            :class:`CachedSeries`); those ending before the coverage are forgotten.
        """
        path = self.path(source, symbol, timeframe)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = normalize_ohlcv(candles).loc[:, list(COLUMNS)]
        bad = nonpositive_mask(frame)
        frame = frame[~bad]
        frame.attrs = {}  # kept in the metadata below, never in pyarrow's pandas metadata
        dropped = (
            dropped_nonpositive(candles)
            .union(open_times(nonpositive))
            .union(open_times(candles.index[bad]))
            .difference(frame.index)
        )
        conflicts, repeated = duplicate_conflicts(candles), duplicate_times(candles)
        if len(frame) > self.max_candles_per_series:
            frame = frame.iloc[len(frame) - self.max_candles_per_series :]
            covered_start = max(covered_start, frame.index[0])
            dropped = dropped[dropped >= covered_start]
            if served_from is not None and served_from < covered_start:
                served_from = None  # the cache, not the exchange, now starts later
        kept = with_duplicates(pd.DataFrame(), conflicts, repeated, since=covered_start)
        checked_end = covered_end if checked_end is None else max(checked_end, covered_end)
        table = pa.Table.from_pandas(frame, preserve_index=True)
        meta = {
            "version": _FORMAT_VERSION,
            "covered_start": _as_ms(covered_start),
            "covered_end": _as_ms(covered_end),
            "checked_end": _as_ms(checked_end),
            "served_from": None if served_from is None else _as_ms(served_from),
            "source": source,
            "symbol": symbol,
            "timeframe": timeframe,
            "nonpositive": [int(ms) for ms in dropped.asi8],
            "duplicate_conflicts": list(duplicate_conflicts(kept)),
            "duplicate_rows_ms": duplicate_times(kept),
            "unanswered": [
                [int(a), int(b)] for a, b in unanswered if int(b) > _as_ms(covered_start)
            ],
            "holes": [
                [int(v) for v in hole] for hole in holes if int(hole[1]) > _as_ms(covered_start)
            ],
        }
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()}
        )
        descriptor, tmp_name = tempfile.mkstemp(
            prefix=_temporary_prefix(path), suffix=".parquet", dir=path.parent
        )
        try:
            with os.fdopen(descriptor, "wb") as handle:
                pq.write_table(table, handle, compression="zstd")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
        fsync_dir(path.parent)
        return path

    def clear(self, source: str, symbol: str, timeframe: str) -> None:
        """Forget one series."""
        with contextlib.suppress(FileNotFoundError):
            self.path(source, symbol, timeframe).unlink()

    def _set_aside(self, path: Path, exc: Exception) -> None:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        log.warning("cache file %s is unreadable (%s); moved to %s", path, exc, aside.name)
        with contextlib.suppress(OSError):
            os.replace(path, aside)

    @staticmethod
    def _remove_stale_temporaries(path: Path) -> None:
        # Under the lock nobody else is writing this series, so any temporary file of
        # its left there belongs to a writer that died mid-write.
        for leftover in path.parent.glob(f"{_temporary_prefix(path)}*.parquet"):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _as_ms(stamp: pd.Timestamp) -> int:
    return int(stamp.value // 1_000_000)


def _temporary_prefix(path: Path) -> str:
    # Per series, so cleaning up after one timeframe never touches another's write.
    return f".tmp-{path.stem}-"


def _thread_lock(path: Path) -> threading.Lock:
    # flock alone is enough between processes; a per-path lock also keeps threads in one
    # process (Streamlit sessions) from interleaving where flock semantics vary by OS.
    with _thread_locks_guard:
        return _thread_locks.setdefault(path, threading.Lock())


def fsync_dir(folder: Path) -> None:
    """Flush ``folder``'s entry list to disk, making a rename in it durable (where the
    platform allows; silently not elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
