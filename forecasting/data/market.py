"""Exchange candles through the local cache: fetch only what the cache lacks.

Candles an exchange sends with a zero or negative price (its placeholder for a candle it
does not have) are dropped, remembered in the cache, and recorded on every frame
returned (see :func:`~forecasting.data.quality.drop_nonpositive`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import ccxt
import pandas as pd

from forecasting.data.cache import CandleCache
from forecasting.data.exchange import (
    RetryPolicy,
    create_exchange,
    fetch_ohlcv,
    source_key,
    validate_request,
)
from forecasting.data.quality import dropped_nonpositive, open_times, with_nonpositive
from forecasting.errors import InvalidDateRange, NoCandles
from forecasting.ohlcv import normalize_ohlcv, timeframe_offset, timeframe_seconds
from forecasting.progress import ProgressCallback, report

__all__ = ["load_exchange_candles"]

ExchangeFactory = Callable[[], ccxt.Exchange]


def load_exchange_candles(
    exchange_id: str,
    symbol: str,
    timeframe: str,
    since: pd.Timestamp | None = None,
    until: pd.Timestamp | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    cache: CandleCache | None = None,
    exchange: ccxt.Exchange | ExchangeFactory | None = None,
    progress: ProgressCallback | None = None,
    now: pd.Timestamp | None = None,
    retry: RetryPolicy | None = None,
) -> pd.DataFrame:
    """Closed candles in ``[since, until)``, from the cache where it has them.

    Only the parts of the range the cache has not covered are fetched: before its
    start, after its end, or all of it. When the cache already covers the range, the
    exchange is not contacted at all (not even to load its markets).

    Parameters
    ----------
    exchange_id
        The ccxt id; also names the cache folder (with a hash of URL overrides).
    symbol, timeframe
        Unified ccxt symbol and timeframe.
    since, until
        UTC bounds; ``until`` defaults to now, ``since`` to 1000 candles earlier.
    config
        ccxt constructor settings (API keys, ``urls``, ``options``); keys never reach
        the cache.
    cache
        Where candles are kept; ``None`` uses the default folder.
    exchange
        A ready ccxt client, or a function making one; by default one is created from
        ``exchange_id`` and ``config`` only if something must be fetched.
    progress
        ``progress("fetch", fraction, details)`` while fetching, ``details["done"]`` and
        ``details["expected"]`` counting candles over all the parts fetched; called once
        with ``fraction`` 1 when the cache had everything (see :mod:`forecasting.progress`).
    now
        The current time (tests pin it); defaults to the clock.
    retry
        Backoff for transient failures.

    Returns
    -------
    pd.DataFrame
        An OHLCV frame, possibly with gaps. Candles with a zero or negative price are
        not in it; their open times in the range are in its ``attrs``, where
        :func:`~forecasting.data.quality.quality_report` finds them.

    Raises
    ------
    ForecastingError
        A subclass saying what went wrong; :class:`~forecasting.errors.NoCandles` when the
        range holds no candles.
    """
    cache = cache or CandleCache()
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    step = pd.Timedelta(seconds=timeframe_seconds(timeframe))
    until = min(until, now) if until is not None else now
    since = since if since is not None else until - 1000 * step
    if since >= until:
        raise InvalidDateRange(
            f"The start ({since:%Y-%m-%d %H:%M}) must be before the end ({until:%Y-%m-%d %H:%M})."
        )
    # Candles opening at or after this may still have been open: never count them covered.
    answerable_end = min(until, now - _longest(timeframe) + pd.Timedelta(milliseconds=1))
    key = source_key(exchange_id, config)

    with cache.lock(key, symbol, timeframe):
        cached = cache.read(key, symbol, timeframe)
        if cached is None:
            missing = [(since, until)]
        else:
            missing = []
            if since < cached.covered_start:
                missing.append((since, cached.covered_start))
            last = cached.candles.index[-1] if len(cached.candles) else None
            # Only ask when a candle could have closed since: the first open time on the
            # candle grid at or after the covered end must be before `until` and closed by
            # `now`. Anchoring the grid at the last cached candle (not at last + step)
            # keeps a series that ends in a gap (no trades, delisted) from asking again
            # on every rerun within the same candle.
            if answerable_end > cached.covered_end and (
                last is None or _closed_in(last, cached.covered_end, until, timeframe, now)
            ):
                missing.append((cached.covered_end, until))
        if missing:
            client = _client(exchange, exchange_id, config)
            validate_request(client, symbol, timeframe, retry or RetryPolicy())
            expected = sum(max(1, int((b - a) / step)) for a, b in missing)
            pieces = [cached.candles] if cached is not None else []
            dropped = cached.nonpositive if cached is not None else open_times(())
            done = 0
            for start, end in missing:
                frame = fetch_ohlcv(
                    client,
                    symbol,
                    timeframe,
                    start,
                    end,
                    progress=_offset_progress(progress, done, expected),
                    now=now,
                    retry=retry,
                    validate=False,
                )
                done += max(1, int((end - start) / step))
                pieces.append(frame)
                dropped = dropped.union(dropped_nonpositive(frame))
            merged = normalize_ohlcv(pd.concat(pieces)) if len(pieces) > 1 else pieces[0]
            dropped = dropped.difference(merged.index)  # a real candle came since
            start = since if cached is None else min(since, cached.covered_start)
            end = answerable_end if cached is None else max(answerable_end, cached.covered_end)
            cache.write(key, symbol, timeframe, merged, start, end, nonpositive=dropped)
        else:
            merged = cached.candles
            dropped = cached.nonpositive

    selected = merged[(merged.index >= since) & (merged.index < until)].copy()
    if not missing:
        report(progress, "fetch", 1.0, done=len(selected), expected=len(selected))
    placeholders = dropped[(dropped >= since) & (dropped < until)]
    if selected.empty:
        if len(placeholders):
            raise NoCandles(
                f"{exchange_id} sent only candles with zero or negative prices "
                f"({len(placeholders):,}, placeholders for missing data) for {symbol} "
                f"{timeframe} between {since:%Y-%m-%d %H:%M} and {until:%Y-%m-%d %H:%M} UTC. "
                "Try another range or another exchange."
            )
        raise NoCandles(
            f"{exchange_id} has no {timeframe} candles for {symbol} between "
            f"{since:%Y-%m-%d %H:%M} and {until:%Y-%m-%d %H:%M} UTC. The pair may have been "
            "listed later: try a later start date or a longer range."
        )
    return with_nonpositive(selected, placeholders)


def _closed_in(
    last: pd.Timestamp,
    start: pd.Timestamp,
    until: pd.Timestamp,
    timeframe: str,
    now: pd.Timestamp,
) -> bool:
    """Whether a candle on ``last``'s grid opens in ``[start, until)`` and is closed at ``now``."""
    offset = timeframe_offset(timeframe)
    if isinstance(offset, pd.Timedelta):
        periods = max(1, -(-(start - last) // offset))
        candidate = last + periods * offset
    else:
        # Calendar months and years: step through them (few, even over decades).
        candidate = last + offset
        while candidate < start:
            candidate += offset
    return candidate < until and candidate + offset <= now


def _longest(timeframe: str) -> pd.Timedelta:
    # Calendar months and years vary; use their longest length so a candle is never
    # taken for closed before it is.
    unit = timeframe[-1]
    amount = int(timeframe[:-1])
    if unit == "M":
        return pd.Timedelta(days=31 * amount)
    if unit == "y":
        return pd.Timedelta(days=366 * amount)
    return pd.Timedelta(seconds=timeframe_seconds(timeframe))


def _client(
    exchange: ccxt.Exchange | ExchangeFactory | None,
    exchange_id: str,
    config: Mapping[str, Any] | None,
) -> ccxt.Exchange:
    if exchange is None:
        return create_exchange(exchange_id, config)
    if isinstance(exchange, ccxt.Exchange):
        return exchange
    return exchange()


def _offset_progress(
    progress: ProgressCallback | None, done: int, expected: int
) -> ProgressCallback | None:
    """A callback for one part of the fetch that reports on the whole of it.

    The part's ``details["done"]`` is counted after the ``done`` candles of the parts
    before it, out of the ``expected`` candles of all parts.
    """
    if progress is None:
        return None

    def part(stage: str, _fraction: float, details: Mapping[str, Any]) -> None:
        so_far = min(done + int(details.get("done", 0)), expected)
        report(progress, stage, so_far / expected, done=so_far, expected=expected)

    return part
