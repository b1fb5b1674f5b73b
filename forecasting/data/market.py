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
from forecasting.data.duplicates import (
    duplicate_conflicts,
    duplicate_times,
    resolve_duplicates,
    with_duplicates,
)
from forecasting.data.exchange import (
    PUBLISH_GRACE,
    SERVED_FROM_ATTR,
    UNANSWERED_ATTR,
    UNANSWERED_RANGE_ATTR,
    UNANSWERED_TAIL_ATTR,
    RetryPolicy,
    create_exchange,
    fetch_ohlcv,
    fetch_window,
    gap_notice,
    history_notice,
    longest_candle,
    page_limit,
    served_from,
    source_key,
    tail_notice,
    validate_request,
)
from forecasting.data.quality import (
    dropped_nonpositive,
    open_times,
    with_nonpositive,
    with_notices,
)
from forecasting.errors import InvalidDateRange, NoCandles
from forecasting.ohlcv import (
    epoch_ms,
    from_epoch_ms,
    normalize_ohlcv,
    timeframe_offset,
    timeframe_seconds,
)
from forecasting.progress import ProgressCallback, report

__all__ = ["PUBLISH_GRACE", "load_exchange_candles"]

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
    # Candles opening at or after this may still have been open: never count them asked.
    answerable_end = min(until, now - longest_candle(timeframe) + pd.Timedelta(milliseconds=1))
    # Candles opening before this closed at least PUBLISH_GRACE ago: what the exchange
    # answers for them now is final. Later ones may not be published yet.
    settled_end = min(
        until, now - longest_candle(timeframe) - PUBLISH_GRACE + pd.Timedelta(milliseconds=1)
    )
    key = source_key(exchange_id, config)

    with cache.lock(key, symbol, timeframe):
        cached = cache.read(key, symbol, timeframe)
        head: tuple[pd.Timestamp, pd.Timestamp] | None = None
        tail: tuple[pd.Timestamp, pd.Timestamp] | None = None
        holes: list[tuple[int, int, int, int]] = []
        due: list[tuple[int, int, int, int]] = []
        if cached is None:
            tail = (since, until)
        else:
            if since < cached.covered_start:
                head = (since, cached.covered_start)
            last = cached.candles.index[-1] if len(cached.candles) else None
            asked = max(cached.checked_end, cached.covered_end)
            # Only ask when a candle could have closed since the last ask: the first open
            # time on the candle grid at or after it must be before `until` and closed by
            # `now`. Anchoring the grid at the last cached candle (not at last + step)
            # keeps a series that ends in a gap (no trades, delisted) from asking again
            # on every rerun within the same candle.
            if answerable_end > asked and (
                last is None or _closed_in(last, asked, until, timeframe, now)
            ):
                tail = (cached.covered_end, until)
            holes = list(cached.holes)
            # Windows of the range answered with nothing before are asked again, each
            # at most once per load and with a backoff (see _due).
            due = [
                hole
                for hole in holes
                if hole[0] < epoch_ms(until)
                and hole[1] > epoch_ms(since)
                and _due(hole, cached.candles, timeframe, epoch_ms(now))
            ]
        if head or tail or due:
            client = _client(exchange, exchange_id, config)
            validate_request(client, symbol, timeframe, retry or RetryPolicy())
            if tail and cached is not None:
                # Ask again for the candles after the last one received, unless they span
                # more than a page: a series that stopped long ago is not asked from there.
                page = page_limit(client) * step
                if cached.checked_end - cached.covered_end > page:
                    tail = (cached.checked_end, until)
            parts = [part for part in (head, tail) if part]
            # A hole a part asks for anyway is not asked twice; what the part leaves
            # empty is recorded afresh.
            spans = [(epoch_ms(a), epoch_ms(b)) for a, b in parts]
            holes = [h for h in holes if not any(h[0] < b and h[1] > a for a, b in spans)]
            due = [h for h in due if h in holes]
            expected = sum(max(1, int((b - a) / step)) for a, b in parts)
            expected += sum(max(1, (h[1] - h[0]) // _ms_of(step)) for h in due)
            pieces = [cached.candles] if cached is not None else []
            dropped = cached.nonpositive if cached is not None else open_times(())
            served = cached.served_from if cached is not None else None
            windows = list(cached.unanswered) if cached is not None else []
            first_cached = (
                cached.candles.index[0] if cached is not None and len(cached.candles) else None
            )
            done = 0
            fetched: list[pd.DataFrame] = []
            found: list[tuple[int, int, int, int]] = []
            now_ms = epoch_ms(now)
            for start, end in parts:
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
                    continues_at=first_cached if (start, end) == head else None,
                )
                done += max(1, int((end - start) / step))
                fetched.append(frame)
                dropped = dropped.union(dropped_nonpositive(frame))
                if (start, end) == head or cached is None:
                    served = served_from(frame)
                windows += [(int(a), int(b)) for a, b in frame.attrs.get(UNANSWERED_ATTR, ())]
                found += [(a, b, 1, now_ms) for a, b in _empty_windows(frame, start)]
            for hole in due:
                start, end = from_epoch_ms(hole[0]), from_epoch_ms(hole[1])
                frame = fetch_window(client, symbol, timeframe, start, end, now=now, retry=retry)
                done += max(1, (hole[1] - hole[0]) // _ms_of(step))
                report(progress, "fetch", min(1.0, done / expected), done=done, expected=expected)
                fetched.append(frame)
                dropped = dropped.union(dropped_nonpositive(frame))
                holes.remove(hole)
                left = [(int(a), int(b)) for a, b in frame.attrs.get(UNANSWERED_ATTR, ())]
                found += [(a, b, hole[2] + 1, now_ms) for a, b in left]
                windows = [w for w in windows if not (w[0] < hole[1] and w[1] > hole[0])]
                windows += left
            pieces += fetched
            merged = _merged(pieces)
            dropped = dropped.difference(merged.index)  # a real candle came since
            if served is not None and len(merged) and merged.index[0] < served:
                served = None  # the exchange now serves earlier candles
            windows = _still_unanswered(windows, merged)
            holes = _coalesced(holes + found, merged)
            start = since if cached is None else min(since, cached.covered_start)
            received = merged.index[merged.index < until]
            covered_end = start if cached is None else cached.covered_end
            if len(received):
                covered_end = max(covered_end, received[-1] + pd.Timedelta(milliseconds=1))
            checked_end = settled_end if tail else cached.checked_end
            if cached is not None:
                checked_end = max(checked_end, cached.checked_end)
            cache.write(
                key,
                symbol,
                timeframe,
                merged,
                start,
                covered_end,
                nonpositive=dropped,
                checked_end=checked_end,
                served_from=served,
                unanswered=windows,
                holes=holes,
            )
        else:
            merged = cached.candles
            dropped = cached.nonpositive
            served = cached.served_from
            windows = list(cached.unanswered)
            checked_end = cached.checked_end
    stopped = _stopped(merged, checked_end, until, timeframe)

    selected = merged[(merged.index >= since) & (merged.index < until)].copy()
    if not (head or tail):
        report(progress, "fetch", 1.0, done=len(selected), expected=len(selected))
    placeholders = dropped[(dropped >= since) & (dropped < until)]
    told = []
    if served is not None and served - since >= _shortest(timeframe):
        told.append(history_notice(exchange_id, timeframe, served))
    since_ms, until_ms = int(since.value // 1_000_000), int(until.value // 1_000_000)
    inside = [(a, b) for a, b in windows if a < until_ms and b > since_ms]
    told += [gap_notice(exchange_id, timeframe, *_window(w)) for w in inside]
    if stopped is not None and since <= stopped < until:
        told.append(tail_notice(exchange_id, timeframe, stopped))
    if selected.empty:
        if served is not None and served >= until:
            raise NoCandles(
                f"{exchange_id} has no {timeframe} candles for {symbol} between "
                f"{since:%Y-%m-%d %H:%M} and {until:%Y-%m-%d %H:%M} UTC: {told[0]}. Choose a "
                "later range or another exchange."
            )
        if stopped is not None and stopped <= since:
            raise NoCandles(
                f"{exchange_id} has no {timeframe} candles for {symbol} between "
                f"{since:%Y-%m-%d %H:%M} and {until:%Y-%m-%d %H:%M} UTC; its last before them "
                f"opened at {merged.index[-1]:%Y-%m-%d %H:%M} UTC (no trades since, or the pair "
                "is no longer traded). Choose an earlier range or another exchange."
            )
        if len(placeholders):
            raise NoCandles(
                f"{exchange_id} sent only candles with zero or negative prices "
                f"({len(placeholders):,}, placeholders for missing data) for {symbol} "
                f"{timeframe} between {since:%Y-%m-%d %H:%M} and {until:%Y-%m-%d %H:%M} UTC. "
                "Try another range or another exchange."
            )
        inside = [h for h in holes if h[0] < epoch_ms(until) and h[1] > epoch_ms(since)]
        again = ""
        if inside:
            asks = max(h[2] for h in inside)
            soonest = from_epoch_ms(min(_next_ask(h, merged, timeframe) for h in inside))
            again = (
                f" It answered nothing for it on {asks} load{'s' if asks > 1 else ''}; it is "
                f"asked again on loads from {soonest:%Y-%m-%d %H:%M} UTC on."
            )
        raise NoCandles(
            f"{exchange_id} has no {timeframe} candles for {symbol} between "
            f"{since:%Y-%m-%d %H:%M} and {until:%Y-%m-%d %H:%M} UTC. The pair may have been "
            f"listed later: try a later start date or a longer range.{again}"
        )
    selected.attrs = {}
    with_duplicates(
        selected,
        duplicate_conflicts(merged),
        duplicate_times(merged),
        since=since,
        until=until,
    )
    if served is not None and served - since >= _shortest(timeframe):
        selected.attrs[SERVED_FROM_ATTR] = int(served.value // 1_000_000)
    if inside:
        selected.attrs[UNANSWERED_ATTR] = tuple(inside)
    with_notices(selected, told)
    return with_nonpositive(selected, placeholders)


def _stopped(
    candles: pd.DataFrame, checked_end: pd.Timestamp, until: pd.Timestamp, timeframe: str
) -> pd.Timestamp | None:
    """The open time of the first candle the exchange did not answer after the last one
    it did, when that candle had closed and been published by the time it was asked for
    (it opens before ``checked_end``) and lies before ``until``; else ``None``.

    Derived from what the cache records, so every load of the range says it, whether it
    asked the exchange or not.
    """
    if not len(candles):
        return None
    offset = timeframe_offset(timeframe)
    following = candles.index[-1] + offset
    if following < min(checked_end, until):
        return following
    return None


def _merged(pieces: list[pd.DataFrame]) -> pd.DataFrame:
    """The candles of the cache and of every part fetched, as one frame.

    Each piece's record of resolved duplicates is kept; a candle both in the cache and in
    a fresh answer with other values is one more conflict, resolved by the same rule.
    """
    conflicts = [c for piece in pieces for c in duplicate_conflicts(piece)]
    repeated = [ms for piece in pieces for ms in duplicate_times(piece)]
    combined = pd.concat(pieces) if len(pieces) > 1 else pieces[0].copy()
    combined.attrs = {}
    resolved = resolve_duplicates(combined)
    # Candles sent again unchanged (pages that overlap the cache) lose nothing: only the
    # conflicting ones are recorded.
    conflicts += duplicate_conflicts(resolved)
    repeated += [c["timestamp"] for c in duplicate_conflicts(resolved)]
    merged = normalize_ohlcv(resolved)
    merged.attrs = {}
    return with_duplicates(merged, conflicts, repeated)


def _still_unanswered(
    windows: list[tuple[int, int]], merged: pd.DataFrame
) -> list[tuple[int, int]]:
    """The windows in which no candle has been received since and after which one was
    (the others are told as the end of the series), each once."""
    ms = pd.DatetimeIndex(merged.index).as_unit("ms").asi8
    kept = []
    for a, b in sorted(set(windows)):
        if not ((ms >= a) & (ms < b)).any() and (ms >= b).any():
            kept.append((a, b))
    return kept


# The longest wait between two asks for a window answered with nothing.
_LONGEST_WAIT_MS = 30 * 86_400_000
_DAY_MS = 86_400_000


def _due(
    hole: tuple[int, int, int, int], candles: pd.DataFrame, timeframe: str, now_ms: int
) -> bool:
    """Whether a window answered with nothing is asked for again at ``now_ms``."""
    return now_ms >= _next_ask(hole, candles, timeframe)


def _next_ask(hole: tuple[int, int, int, int], candles: pd.DataFrame, timeframe: str) -> int:
    """When (epoch ms) a window answered with nothing is asked for again.

    The wait after its last ask doubles with every load that found it still empty, up
    to 30 days, so a window that is truly empty costs a request now and then, never one
    per load for ever. It starts from where the window lies:

    * between candles (an answer lost): none the first time, so the very next load asks
      again; then a candle, two, four...;
    * with no candle at all in the series (most often a pair listed later; the app reruns
      on every click): two minutes (``PUBLISH_GRACE``), four, eight...;
    * after the last candle, at the end of a range that had ended when it was asked for:
      as between candles;
    * after the last candle up to the present when it was asked for (no trades since, a
      pair no longer traded, or an answer lost): a candle, two, four... (the next load
      that finds a candle closed since asks for what follows the last candle anyway);
    * before the first (the exchange served later candles only): a day at least, two...
    """
    start, end, asks, asked_ms = hole
    step = timeframe_seconds(timeframe) * 1000
    times = pd.DatetimeIndex(candles.index).as_unit("ms").asi8
    later, earlier = bool((times >= end).any()), bool((times < start).any())
    doublings = min(max(asks - 1, 0), 40)
    # Candles opening before this had closed and been published when the hole was asked.
    settled_then = asked_ms - _ms_of(longest_candle(timeframe) + PUBLISH_GRACE) + 1
    if earlier and (later or end < settled_then):
        wait = 0 if asks <= 1 else step << min(asks - 2, 40)
    elif not len(times):
        wait = _ms_of(PUBLISH_GRACE) << doublings
    elif later:
        wait = max(step, _DAY_MS) << doublings
    else:
        wait = step << doublings
    return asked_ms + min(wait, _LONGEST_WAIT_MS)


def _empty_windows(frame: pd.DataFrame, start: pd.Timestamp) -> list[tuple[int, int]]:
    """Every window of one fetch that the exchange answered with nothing.

    Between candles, after the last, the whole range, and before the first candle served
    when the exchange answered less history than asked (``start`` being the range's).
    """
    found = [(int(a), int(b)) for a, b in frame.attrs.get(UNANSWERED_ATTR, ())]
    for key in (UNANSWERED_TAIL_ATTR, UNANSWERED_RANGE_ATTR):
        if frame.attrs.get(key) is not None:
            a, b = frame.attrs[key]
            found.append((int(a), int(b)))
    first = served_from(frame)
    if first is not None and first > start:
        found.append((epoch_ms(start), epoch_ms(first)))
    return found


def _coalesced(
    holes: list[tuple[int, int, int, int]], merged: pd.DataFrame
) -> list[tuple[int, int, int, int]]:
    """Holes that overlap or touch made one (the most asks, the latest ask), those in
    which a candle has been received since left out."""
    times = pd.DatetimeIndex(merged.index).as_unit("ms").asi8
    joined: list[tuple[int, int, int, int]] = []
    for a, b, asks, asked in sorted(holes):
        if b <= a:
            continue
        if joined and a <= joined[-1][1]:
            pa, pb, pasks, pasked = joined[-1]
            joined[-1] = (pa, max(pb, b), max(pasks, asks), max(pasked, asked))
        else:
            joined.append((a, b, asks, asked))
    return [h for h in joined if not ((times >= h[0]) & (times < h[1])).any()]


def _ms_of(length: pd.Timedelta) -> int:
    return int(length.value // 1_000_000)


def _window(window: tuple[int, int]) -> tuple[pd.Timestamp, pd.Timestamp]:
    return (
        pd.Timestamp(int(window[0]), unit="ms", tz="UTC"),
        pd.Timestamp(int(window[1]), unit="ms", tz="UTC"),
    )


def _shortest(timeframe: str) -> pd.Timedelta:
    # The shortest a candle can be: calendar months and years vary in length.
    unit, amount = timeframe[-1], int(timeframe[:-1])
    if unit == "M":
        return pd.Timedelta(days=28 * amount)
    if unit == "y":
        return pd.Timedelta(days=365 * amount)
    return pd.Timedelta(seconds=timeframe_seconds(timeframe))


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
