"""Market mood: the Crypto Fear & Greed Index and perpetual-futures funding rates.

Two sources beside the candles, with the candles' rules: retries with the same backoff
(:class:`~forecasting.data.exchange.RetryPolicy`), servers found unreachable remembered
(:mod:`forecasting.data.reachability`), the cache folder shared with the candles, and
only the project's errors (:mod:`forecasting.errors`).

* :func:`fetch_fear_greed`: alternative.me's daily index (its whole history, since
  February 2018), one value per UTC day. Its terms ask for attribution:
  :data:`FEAR_GREED_ATTRIBUTION`, also in the frame's ``attrs``.
* :func:`fetch_funding_rates`: the funding rates of a spot pair's perpetual future
  (:func:`perpetual_for`) through ccxt's unified ``fetch_funding_rate_history``.

Neither may be used as soon as its time stamp says: :func:`as_of` aligns a value to
candles so that a candle sees only values published before it closed. A daily index
value describing day D is taken as published at the end of D
(:func:`fear_greed_published`: a lag of one day for every timeframe); a funding rate is
known at its funding time (:func:`funding_published`).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecasting.data.cache import CandleCache, fsync_dir
from forecasting.data.exchange import RetryPolicy, load_markets, with_retry
from forecasting.data.quality import notices, with_notices
from forecasting.data.reachability import REACHABILITY, server_key, unreachable_reason
from forecasting.errors import (
    ConfigurationError,
    DataFormatError,
    DataUnavailable,
    GeoBlocked,
    NetworkUnreachable,
    RateLimited,
)
from forecasting.ohlcv import epoch_ms, timeframe_offset
from forecasting.progress import ProgressCallback, report

__all__ = [
    "AS_OF_STALE_ATTR",
    "AS_OF_WITHOUT_VALUE_ATTR",
    "DEFAULT_FEAR_GREED_URL",
    "FEAR_GREED_ATTRIBUTION",
    "FEAR_GREED_URL_VARIABLE",
    "FUNDING_VENUE",
    "LATE_DAY_ATTR",
    "MISSING_DAYS_ATTR",
    "MOOD_SOURCES",
    "MoodJoin",
    "as_of",
    "attach_mood",
    "fear_greed_published",
    "fear_greed_url",
    "fetch_fear_greed",
    "fetch_funding_rates",
    "funding_published",
    "join_audit",
    "missing_days",
    "perpetual_for",
]

log = logging.getLogger(__name__)

FEAR_GREED_URL_VARIABLE = "CFL_FEAR_GREED_URL"
DEFAULT_FEAR_GREED_URL = "https://api.alternative.me/fng/"
FEAR_GREED_ATTRIBUTION = "Crypto Fear & Greed Index by alternative.me"

# ``DataFrame.attrs`` keys of the index frame: days (epoch ms) inside its history that the
# API did not publish, and the day whose value was due but not yet published when asked.
MISSING_DAYS_ATTR = "missing_days_ms"
LATE_DAY_ATTR = "late_day_ms"
# ``Series.attrs`` keys of an as-of join: candles whose value was published longer than
# ``max_age`` before their close, and candles that see no value at all.
AS_OF_STALE_ATTR = "stale_candles"
AS_OF_WITHOUT_VALUE_ATTR = "candles_without_value"

# A venue with perpetual funding history whose public API serves US-hosted servers.
FUNDING_VENUE = "krakenfutures"

# How long an index answer is reused: the API says when its next value is due
# (``time_until_update``); an overdue value is asked for again after the shortest wait.
_SHORTEST_REUSE = pd.Timedelta(minutes=15)
_LONGEST_REUSE = pd.Timedelta(days=1)
_TIMEOUT_SECONDS = 15
_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 524}
_DAY = pd.Timedelta(days=1)

# Funding rates per request where the exchange allows more than its default.
_FUNDING_PAGE_LIMITS = {"binance": 1000, "binanceusdm": 1000, "bybit": 200, "okx": 100}


# --------------------------------------------------------------------- Fear & Greed


def fear_greed_url() -> str:
    """The index's address: ``$CFL_FEAR_GREED_URL``, else the public API."""
    return os.environ.get(FEAR_GREED_URL_VARIABLE, "").strip() or DEFAULT_FEAR_GREED_URL


def fetch_fear_greed(
    *,
    url: str | None = None,
    cache: CandleCache | None = None,
    now: pd.Timestamp | None = None,
    retry: RetryPolicy | None = None,
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """The whole history of the Crypto Fear & Greed Index, one row per UTC day.

    The answer is cached in the candle cache's folder and reused until the API's next
    value is due (its ``time_until_update``; at most a day), so a second call the same
    day does not ask again. A failed fetch leaves the cache as it was.

    Parameters
    ----------
    url
        The API's address; defaults to :func:`fear_greed_url`.
    cache
        Where the answer is kept; defaults to the candle cache's folder.
    now
        The current time (for reuse of the cached answer); defaults to the clock.
    retry
        Backoff for transient failures (timeouts, HTTP 429/5xx, a body cut short).
    progress
        Called as ``progress("fetch", fraction, details)`` once the answer is in.

    Returns
    -------
    pd.DataFrame
        Indexed by the UTC day each value describes (``day``), with ``value`` (int, 0 to
        100) and ``classification`` (``"Fear"``, ...). ``attrs``: ``source`` (the
        address), ``attribution``, :data:`MISSING_DAYS_ATTR` (days inside the history the
        API did not publish: never invented), :data:`LATE_DAY_ATTR` (a day whose value
        is due but not out yet) and notices saying both (see
        :func:`~forecasting.data.quality.notices`).

    Raises
    ------
    NetworkUnreachable
        The address cannot be reached (remembered for a minute), or 5xx after retries.
    RateLimited, GeoBlocked, DataUnavailable
        HTTP 429, 451, any other refusal or an error in the answer's ``metadata``.
    DataFormatError
        The answer is not the API's JSON, even after retrying.
    """
    url = url or fear_greed_url()
    cache = cache if cache is not None else CandleCache()
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    retry = retry or RetryPolicy()
    source, key = "fear_greed", _url_key(url)
    path = cache.path(source, key, "1d").with_suffix(".json")
    with cache.lock(source, key, "1d"):
        kept = _read_kept(path)
        if kept is not None and kept["fetched_ms"] <= epoch_ms(now) < kept["reuse_until_ms"]:
            report(progress, "fetch", 1.0, done=len(kept["data"]), expected=len(kept["data"]))
            return _frame(kept["data"], url, now)
        data = _request_index(url, retry)
        report(progress, "fetch", 1.0, done=len(data), expected=len(data))
        frame = _frame(data, url, now)  # garbled values fail here, before the cache is touched
        reuse = _reuse_for(data, now)
        record = {"url": url, "fetched_ms": epoch_ms(now), "reuse_until_ms": epoch_ms(now + reuse)}
        _write_atomically(path, json.dumps({**record, "data": data}).encode())
    return frame


def missing_days(frame: pd.DataFrame) -> pd.DatetimeIndex:
    """The days inside the index's history that the API did not publish."""
    days = frame.attrs.get(MISSING_DAYS_ATTR, ())
    return pd.DatetimeIndex(pd.to_datetime(list(days), unit="ms", utc=True), name="day")


def _url_key(url: str) -> str:
    # One file per address: a mirror or a test server never shares the public API's.
    host = urllib.parse.urlsplit(url).netloc or "local"
    return f"{host}-{hashlib.sha256(url.encode()).hexdigest()[:10]}"


def _history_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query.update({"limit": "0", "format": "json"})
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


class _Garbled(Exception):
    """An answer that is not the API's JSON (often a body cut short: retried)."""


class _Transient(Exception):
    """A failure another try may mend."""


def _request_index(url: str, retry: RetryPolicy) -> list[dict[str, Any]]:
    """The API's ``data`` list, asked with the retry policy and the reachability memory."""
    server = server_key("fear_greed", url)
    shown = urllib.parse.urlsplit(url).netloc or url
    known = REACHABILITY.known_unreachable(server)
    if known is not None:
        reason, ago = known
        raise NetworkUnreachable(
            f"Could not reach the Fear & Greed index at {shown}: {reason}, {ago:.0f} s ago; it "
            f"is tried again {REACHABILITY.remember_for - ago:.0f} s from now. Check the network "
            f"connection or ${FEAR_GREED_URL_VARIABLE}."
        )
    for attempt in range(1, retry.attempts + 1):
        try:
            data = _parsed(_get(_history_url(url)))
        except urllib.error.HTTPError as exc:
            if exc.code not in _RETRYABLE_STATUS or attempt == retry.attempts:
                raise _http_error(exc.code, shown, attempt) from exc
            failure: Exception = exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = unreachable_reason(exc)
            if reason is not None:
                REACHABILITY.failed(server, reason)
                raise NetworkUnreachable(
                    f"Could not reach the Fear & Greed index at {shown}: {reason}. Check the "
                    f"network connection or ${FEAR_GREED_URL_VARIABLE}."
                ) from exc
            if attempt == retry.attempts:
                raise NetworkUnreachable(
                    f"Could not reach the Fear & Greed index at {shown} (tried {attempt} "
                    f"times): {type(exc).__name__}. Check the network connection or try later."
                ) from exc
            failure = exc
        except _Garbled as exc:
            REACHABILITY.succeeded(server)
            if attempt == retry.attempts:
                raise DataFormatError(
                    f"The Fear & Greed index at {shown} sent an answer that is not its JSON "
                    f"({exc}). Check ${FEAR_GREED_URL_VARIABLE} or try again later."
                ) from exc
            failure = exc
        else:
            REACHABILITY.succeeded(server)
            return data
        wait = retry.delay(attempt)
        log.info("fear & greed: transient failure (%s), retry %d in %.1fs", failure, attempt, wait)
        retry.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def _get(url: str) -> bytes:
    try:
        request = urllib.request.Request(
            url, headers={"Accept": "application/json", "User-Agent": "crypto-forecast-lab"}
        )
    except ValueError as exc:  # "notaurl": no scheme, so no request at all
        raise ConfigurationError(
            f"The Fear & Greed Index's address {url[:80]!r} is not a URL: set "
            f"${FEAR_GREED_URL_VARIABLE} to an http(s) address such as {DEFAULT_FEAR_GREED_URL}, "
            "or unset it."
        ) from exc
    with urllib.request.urlopen(request, timeout=_TIMEOUT_SECONDS) as answer:
        return answer.read()


def _http_error(status: int, shown: str, attempts: int) -> DataUnavailable:
    tries = f" (tried {attempts} times)" if attempts > 1 else ""
    if status == 451:
        return GeoBlocked(
            f"The Fear & Greed index at {shown} refuses requests from this server's location "
            f"(HTTP 451). Set ${FEAR_GREED_URL_VARIABLE} to a mirror that serves it."
        )
    if status == 429:
        return RateLimited(
            f"The Fear & Greed index at {shown} is limiting our requests (HTTP 429){tries}. "
            "Wait a minute and try again."
        )
    if status >= 500:
        return NetworkUnreachable(
            f"The Fear & Greed index at {shown} is unavailable right now (HTTP {status}){tries}. "
            "Try again later."
        )
    return DataUnavailable(
        f"The Fear & Greed index at {shown} refused the request (HTTP {status}). Check "
        f"${FEAR_GREED_URL_VARIABLE}."
    )


def _parsed(body: bytes) -> list[dict[str, Any]]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Garbled(f"unreadable JSON {body[:40]!r}") from exc
    if not isinstance(payload, dict):
        raise _Garbled("not a JSON object")
    error = (payload.get("metadata") or {}).get("error")
    if error:
        raise DataUnavailable(f"The Fear & Greed index answered with an error: {str(error)[:200]}.")
    data = payload.get("data")
    if not isinstance(data, list) or not data:
        raise _Garbled("no 'data' list")
    for entry in data:
        _entry(entry)  # every entry is checked before anything is kept
    return data


def _entry(entry: object) -> tuple[pd.Timestamp, int, str, int]:
    """(day, value, classification, timestamp seconds) of one ``data`` entry."""
    try:
        stamp = int(str(entry["timestamp"]))  # type: ignore[index]
        value = int(str(entry["value"]))  # type: ignore[index]
        words = str(entry.get("value_classification", ""))  # type: ignore[union-attr]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _Garbled(f"unreadable entry {str(entry)[:60]}") from exc
    if not 0 <= value <= 100:
        raise _Garbled(f"value {value} outside 0-100")
    day = pd.Timestamp(stamp, unit="s", tz="UTC").normalize()
    return day, value, words, stamp


def _frame(data: list[dict[str, Any]], url: str, now: pd.Timestamp) -> pd.DataFrame:
    try:
        entries = sorted(_entry(entry) for entry in data)
    except _Garbled as exc:  # a cached file edited by hand: the same one-line error
        raise DataFormatError(f"The cached Fear & Greed answer is unreadable ({exc}).") from exc
    by_day = {day: (value, words) for day, value, words, _ in entries}  # the latest stamp wins
    index = pd.DatetimeIndex(list(by_day), name="day").as_unit("ms")
    frame = pd.DataFrame(
        {
            "value": np.asarray([v for v, _ in by_day.values()], dtype="int64"),
            "classification": [w for _, w in by_day.values()],
        },
        index=index,
    )
    frame.attrs = {"source": url, "attribution": FEAR_GREED_ATTRIBUTION}
    told = []
    every_day = pd.date_range(index[0], index[-1], freq="D").as_unit("ms")
    absent = every_day.difference(index)
    if len(absent):
        frame.attrs[MISSING_DAYS_ATTR] = tuple(int(ms) for ms in absent.asi8)
        shown = ", ".join(f"{day:%Y-%m-%d}" for day in absent[:5])
        more = f" and {len(absent) - 5} more" if len(absent) > 5 else ""
        told.append(
            f"alternative.me published no Fear & Greed value for {len(absent)} day(s): "
            f"{shown}{more}; the previous value is used, counted as stale"
        )
    today = now.normalize()
    if index[-1] < today:
        due = index[-1] + _DAY
        frame.attrs[LATE_DAY_ATTR] = int(due.value // 1_000_000)
        told.append(
            f"the Fear & Greed value for {due:%Y-%m-%d} is not published yet; it is asked for "
            "again shortly"
        )
    return with_notices(frame, (*notices(frame), *told))


def _reuse_for(data: list[dict[str, Any]], now: pd.Timestamp) -> pd.Timedelta:
    newest = max(data, key=lambda entry: int(str(entry["timestamp"])))
    try:
        wait = pd.Timedelta(seconds=int(str(newest["time_until_update"])))
    except (KeyError, TypeError, ValueError):
        wait = now.normalize() + _DAY - now  # values come out at 00:00 UTC
    return min(max(wait, _SHORTEST_REUSE), _LONGEST_REUSE)


def _read_kept(path: Path) -> dict[str, Any] | None:
    try:
        kept = json.loads(path.read_bytes())
        kept["fetched_ms"], kept["reuse_until_ms"] = (
            int(kept["fetched_ms"]),
            int(kept["reuse_until_ms"]),
        )
        _parsed(json.dumps({"data": kept["data"]}).encode())
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, _Garbled, DataUnavailable) as exc:
        log.warning("cached Fear & Greed answer %s is unreadable (%s); asking again", path, exc)
        return None
    return kept


def _write_atomically(path: Path, data: bytes) -> None:
    # The candle cache's way: a temporary file in the same folder, fsynced, then replaced.
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(
        prefix=f".tmp-{path.stem}-", suffix=".json", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    fsync_dir(path.parent)


# --------------------------------------------------------------------- as-of join


def fear_greed_published(days: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """When each daily value is known: the end of the day it describes (00:00 UTC after)."""
    return pd.DatetimeIndex(days).normalize() + _DAY


def funding_published(times: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """When each funding rate is known: its funding time."""
    return pd.DatetimeIndex(times)


def as_of(
    values: pd.Series | pd.DataFrame,
    candles_index: pd.DatetimeIndex,
    timeframe: str,
    *,
    published_at: pd.DatetimeIndex
    | Sequence[pd.Timestamp]
    | Callable[[pd.DatetimeIndex], pd.DatetimeIndex],
    max_age: pd.Timedelta = _DAY,
) -> pd.Series:
    """Each candle's latest value published strictly before the candle closed.

    A value is used from the first candle that closes after it was published, and
    carried forward only while it is the latest published: no candle sees a value
    published at or after its close, and none misses one published before it.

    Parameters
    ----------
    values
        Values on a UTC index (a frame: its ``value`` column, else its only column).
        Missing values (NaN) are never published.
    candles_index
        Candle open times (UTC).
    timeframe
        The candles' timeframe; a candle closes one timeframe after it opens.
    published_at
        When each value became known: times in the order of ``values``, or a function of
        its index (:func:`fear_greed_published`, :func:`funding_published`).
    max_age
        A candle whose value was published longer than this before its close counts as
        stale (a day the source skipped).

    Returns
    -------
    pd.Series
        On ``candles_index``, NaN where no value was published yet. ``attrs``:
        :data:`AS_OF_STALE_ATTR` and :data:`AS_OF_WITHOUT_VALUE_ATTR` (counts of candles),
        ``max_age``.
    """
    series = _one_series(values)
    published = (
        published_at(pd.DatetimeIndex(series.index))
        if callable(published_at)
        else pd.DatetimeIndex(published_at)
    )
    if len(published) != len(series):
        raise ValueError(f"{len(published)} publication times for {len(series)} values")
    published_ns = _utc_ns(published)
    kept = ~series.isna().to_numpy()
    published_ns, numbers = published_ns[kept], series.to_numpy(dtype="float64")[kept]
    order = np.argsort(published_ns, kind="stable")  # equal times: the later row wins
    published_ns, numbers = published_ns[order], numbers[order]

    opens = pd.DatetimeIndex(candles_index)
    closes_ns = _utc_ns(opens + timeframe_offset(timeframe))
    position = np.searchsorted(published_ns, closes_ns, side="left") - 1
    seen = position >= 0
    joined = np.full(len(opens), np.nan)
    joined[seen] = numbers[position[seen]]
    age = np.zeros(len(opens), dtype="int64")
    age[seen] = closes_ns[seen] - published_ns[position[seen]]
    result = pd.Series(joined, index=candles_index, name=series.name)
    result.attrs = {
        AS_OF_STALE_ATTR: int((seen & (age > pd.Timedelta(max_age).value)).sum()),
        AS_OF_WITHOUT_VALUE_ATTR: int((~seen).sum()),
        "max_age": pd.Timedelta(max_age),
    }
    return result


def _one_series(values: pd.Series | pd.DataFrame) -> pd.Series:
    if isinstance(values, pd.Series):
        return values
    if "value" in values.columns:
        return values["value"]
    if values.shape[1] == 1:
        return values.iloc[:, 0]
    raise ValueError(f"which column? the frame has {list(values.columns)}")


def _utc_ns(index: pd.DatetimeIndex) -> np.ndarray:
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    return np.asarray(index.as_unit("ns").asi8, dtype="int64")


# --------------------------------------------------------------------- funding rates


def perpetual_for(
    exchange: Any, spot_symbol: str, *, retry: RetryPolicy | None = None
) -> str | None:
    """The perpetual future of a spot pair on ``exchange``, or ``None`` when it has none.

    Among the exchange's swap markets with the same base: the same quote first, then
    USDT, then USD; a linear contract (settled in its quote) before an inverse one.
    ``"BTC/USDT"`` on Binance is ``"BTC/USDT:USDT"``. A perpetual symbol is its own answer.
    """
    markets = load_markets(exchange, retry or RetryPolicy())
    market = markets.get(spot_symbol) or {}
    if market.get("swap"):
        return spot_symbol
    base, _, quote = spot_symbol.split(":")[0].partition("/")
    quotes = list(dict.fromkeys([quote, "USDT", "USD"]))
    found = [
        m
        for m in markets.values()
        if m.get("swap")
        and m.get("active") is not False
        and m.get("base") == base
        and m.get("quote") in quotes
    ]
    if not found:
        return None
    best = min(
        found,
        key=lambda m: (quotes.index(m["quote"]), m.get("settle") != m["quote"], m["symbol"]),
    )
    return str(best["symbol"])


def fetch_funding_rates(
    exchange: Any,
    symbol: str,
    since: pd.Timestamp,
    until: pd.Timestamp | None = None,
    *,
    retry: RetryPolicy | None = None,
    progress: ProgressCallback | None = None,
    cache: CandleCache | None = None,
    now: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """The funding rates of ``symbol``'s perpetual with funding times in ``[since, until)``.

    Pages forward by ``since`` (as the candles do) through ccxt's unified
    ``fetch_funding_rate_history``, until an answer is empty or passes ``until``.
    With a ``cache``, the rates already asked for are kept beside the candles (one JSON
    file per exchange and perpetual, written atomically under the series' lock) and only
    the span not yet asked for is fetched: a funding rate never changes once its time has
    passed. A failed fetch leaves the cache as it was.

    Parameters
    ----------
    exchange
        A ccxt client whose markets include perpetuals (see
        :func:`~forecasting.data.exchange.create_exchange`).
    symbol
        The spot pair (``"BTC/USDT"``); its perpetual is found by :func:`perpetual_for`.
    since, until
        UTC bounds; ``until`` defaults to now.
    retry
        Backoff for transient failures.
    progress
        Called after every page as ``progress("fetch", fraction, details)``.
    cache
        Where rates already fetched are kept (``None``: nothing is kept).
    now
        The current time (rates are final up to it); defaults to the clock.

    Returns
    -------
    pd.DataFrame
        ``funding_rate`` (a fraction per funding period) on a UTC index of funding times
        (``timestamp``); ``attrs``: ``source`` (the exchange id) and ``symbol`` (the
        perpetual).

    Raises
    ------
    GeoBlocked
        The venue refuses this server (HTTP 451); the message names one that serves it.
    DataUnavailable
        The exchange has no funding history or no perpetual for the pair, or a subclass
        for network failures (as for candles).
    DataFormatError
        A funding rate without a time or a rate.
    """
    retry = retry or RetryPolicy()
    until = until if until is not None else pd.Timestamp.now(tz="UTC")
    if not exchange.has.get("fetchFundingRateHistory"):
        raise DataUnavailable(
            f"{exchange.id} does not serve funding rate history through ccxt. Choose an exchange "
            f"with perpetual futures, such as binance or {FUNDING_VENUE}."
        )
    try:
        perpetual = perpetual_for(exchange, symbol, retry=retry)
        if perpetual is None:
            raise DataUnavailable(
                f"{exchange.id} lists no perpetual future for {symbol}, so it has no funding "
                f"rates for it. Choose an exchange with perpetuals, such as binance or "
                f"{FUNDING_VENUE}."
            )
        now = now if now is not None else pd.Timestamp.now(tz="UTC")
        span = (epoch_ms(since), epoch_ms(min(until, now)))
        if cache is None:
            rates = _funding_pages(exchange, perpetual, *span, retry, progress)
        else:
            rates = _cached_funding(exchange, perpetual, span, retry, progress, cache)
    except GeoBlocked as exc:
        raise GeoBlocked(
            f"{exchange.id} refuses requests from this server's location (HTTP 451), so its "
            f"funding rates cannot be read here. Choose {FUNDING_VENUE}, which serves perpetual "
            "funding rates to US-hosted servers."
        ) from exc
    since_ms, until_ms = epoch_ms(since), epoch_ms(until)
    rates = {ms: rate for ms, rate in rates.items() if since_ms <= ms < until_ms}
    index = pd.DatetimeIndex(
        pd.to_datetime(sorted(rates), unit="ms", utc=True), name="timestamp"
    ).as_unit("ms")
    frame = pd.DataFrame(
        {"funding_rate": np.asarray([rates[ms] for ms in sorted(rates)], dtype="float64")},
        index=index,
    )
    frame.attrs = {"source": exchange.id, "symbol": perpetual}
    return frame


def _funding_pages(
    exchange: Any,
    perpetual: str,
    since_ms: int,
    until_ms: int,
    retry: RetryPolicy,
    progress: ProgressCallback | None,
) -> dict[int, float]:
    limit = _FUNDING_PAGE_LIMITS.get(exchange.id)
    rates: dict[int, float] = {}
    cursor = since_ms
    while cursor < until_ms:

        def call(at: int = cursor) -> list[dict[str, Any]]:
            return exchange.fetch_funding_rate_history(perpetual, since=at, limit=limit)

        page = with_retry(call, exchange, retry, symbol=perpetual)
        stamps = []
        for entry in page or ():
            stamp, rate = entry.get("timestamp"), entry.get("fundingRate")
            if stamp is None or rate is None:
                raise DataFormatError(
                    f"{exchange.id} sent a funding rate without a time or a rate for "
                    f"{perpetual}: {str(entry.get('info', entry))[:80]}."
                )
            stamps.append(int(stamp))
            if since_ms <= int(stamp) < until_ms:
                rates[int(stamp)] = float(rate)
        if not stamps or max(stamps) < cursor:
            break  # the end of the history, or an exchange that ignored `since`
        cursor = max(stamps) + 1
        done = min(1.0, (cursor - since_ms) / max(1, until_ms - since_ms))
        report(progress, "fetch", done, done=len(rates))
    return rates


def _cached_funding(
    exchange: Any,
    perpetual: str,
    span: tuple[int, int],
    retry: RetryPolicy,
    progress: ProgressCallback | None,
    cache: CandleCache,
) -> dict[int, float]:
    """Rates in ``span`` (ms), fetching only what the kept file has not covered.

    The file keeps one covered interval ``[from_ms, until_ms)``: every funding time in it
    was asked for. A request before or after it extends it (fetching only the new part);
    one that would leave a hole between them fetches the hole too.
    """
    since_ms, until_ms = span
    source, key = "funding", f"{exchange.id}:{perpetual}"
    path = cache.path(source, key, "rates").with_suffix(".json")
    with cache.lock(source, key, "rates"):
        kept = _read_funding(path)
        if kept is None:
            rates = _funding_pages(exchange, perpetual, since_ms, until_ms, retry, progress)
            covered = (since_ms, until_ms)
        else:
            rates, covered = kept
            rates = dict(rates)
            if since_ms < covered[0]:
                rates.update(
                    _funding_pages(exchange, perpetual, since_ms, covered[0], retry, progress)
                )
            if until_ms > covered[1]:
                rates.update(
                    _funding_pages(exchange, perpetual, covered[1], until_ms, retry, progress)
                )
            covered = (min(since_ms, covered[0]), max(until_ms, covered[1]))
        record = {
            "exchange": exchange.id,
            "symbol": perpetual,
            "from_ms": covered[0],
            "until_ms": covered[1],
            "rates": [[ms, rates[ms]] for ms in sorted(rates)],
        }
        _write_atomically(path, json.dumps(record).encode())
    report(progress, "fetch", 1.0, done=len(rates))
    return rates


def _read_funding(path: Path) -> tuple[dict[int, float], tuple[int, int]] | None:
    try:
        kept = json.loads(path.read_bytes())
        rates = {int(ms): float(rate) for ms, rate in kept["rates"]}
        covered = (int(kept["from_ms"]), int(kept["until_ms"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("cached funding rates %s are unreadable (%s); asking again", path, exc)
        return None
    if not all(np.isfinite(list(rates.values()))) or covered[0] > covered[1]:
        log.warning("cached funding rates %s are inconsistent; asking again", path)
        return None
    return rates, covered


# --------------------------------------------------------------------- joined to candles

MOOD_SOURCES: dict[str, str] = {
    "fear_greed": FEAR_GREED_ATTRIBUTION,
    "funding_rate": "perpetual-futures funding rates through ccxt",
}
"""Each mood column and where its values come from (shown beside it)."""


@dataclass(frozen=True)
class MoodJoin:
    """Candles with mood columns joined as of each candle's close, and what was not.

    Attributes
    ----------
    candles
        The candles with one float column per available kind (``fear_greed``: 0-100;
        ``funding_rate``: a fraction per funding period), NaN where nothing was published
        yet; the input's other columns and ``attrs`` unchanged.
    notes
        Sentences for the reader: missing, late and stale values, unavailable sources.
    unavailable
        Kind -> why it could not be joined (offline, no perpetual, ...).
    sources
        Kind -> the source's values and their publication times, for :func:`join_audit`.
    labels
        Kind -> where its values came from (the attribution, or the exchange and perpetual).
    """

    candles: pd.DataFrame
    notes: tuple[str, ...] = ()
    unavailable: Mapping[str, str] = field(default_factory=dict)
    sources: Mapping[str, tuple[pd.Series, pd.DatetimeIndex]] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)

    def audit(self, timeframe: str, *, checks: int = 40) -> pd.DataFrame:
        """:func:`join_audit` of every joined kind, one row each (the feature audit's columns)."""
        rows = [
            join_audit(values, self.candles.index, timeframe, published, checks=checks).assign(
                column=kind
            )
            for kind, (values, published) in self.sources.items()
        ]
        return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def attach_mood(
    candles: pd.DataFrame,
    timeframe: str,
    kinds: Iterable[str],
    *,
    exchange: Any = None,
    symbol: str | None = None,
    cache: CandleCache | None = None,
    url: str | None = None,
    retry: RetryPolicy | None = None,
    progress: ProgressCallback | None = None,
    now: pd.Timestamp | None = None,
) -> MoodJoin:
    """Join the mood ``kinds`` (``"fear_greed"``, ``"funding_rate"``) to ``candles``.

    Each value is used only from the first candle that closes after it was published
    (:func:`as_of`): a day's Fear & Greed value from the first candle closing after that
    day ends, a funding rate from the first candle closing after its funding time. A
    source that cannot be read (offline, geo-blocked, no perpetual for the pair) leaves
    its column out and says why in :attr:`MoodJoin.unavailable` and the notes; nothing
    else is affected.

    Parameters
    ----------
    candles
        An OHLCV frame (UTC open times); not modified.
    timeframe
        The candles' timeframe (a candle closes one timeframe after it opens).
    kinds
        Which mood columns to join.
    exchange, symbol
        The ccxt client and spot pair whose perpetual's funding rates are joined (the
        candles' own exchange by default in the app and the command line); without them
        ``funding_rate`` is unavailable.
    cache
        The candle cache (both sources keep their answers beside the candles).
    url
        The Fear & Greed Index's address (default :func:`fear_greed_url`).
    retry, progress, now
        As for the fetches.

    Raises
    ------
    ConfigurationError
        For a kind that is not a mood kind.
    """
    kinds = tuple(dict.fromkeys(kinds))
    unknown = [k for k in kinds if k not in MOOD_SOURCES]
    if unknown:
        raise ConfigurationError(
            f"Unknown mood feature {', '.join(unknown)}: choose from {', '.join(MOOD_SOURCES)}."
        )
    joined = candles.copy()
    notes: list[str] = []
    unavailable: dict[str, str] = {}
    sources: dict[str, tuple[pd.Series, pd.DatetimeIndex]] = {}
    labels: dict[str, str] = {}
    if len(candles) == 0:
        return MoodJoin(joined)
    first, last = candles.index[0], candles.index[-1] + timeframe_offset(timeframe)
    for kind in kinds:
        try:
            if kind == "fear_greed":
                frame = fetch_fear_greed(
                    url=url, cache=cache, now=now, retry=retry, progress=progress
                )
                values = frame["value"].astype("float64")
                published = fear_greed_published(pd.DatetimeIndex(values.index))
                notes.extend(_index_notes(frame, first, last))
                labels[kind] = FEAR_GREED_ATTRIBUTION
            else:
                if exchange is None or not symbol:
                    raise DataUnavailable(
                        "Funding rates come from an exchange's perpetual futures, and this "
                        "data names no exchange: load candles from an exchange with "
                        f"perpetuals (such as binance or {FUNDING_VENUE}), or name one for "
                        "the funding rates."
                    )
                frame = fetch_funding_rates(
                    exchange,
                    symbol,
                    first - pd.Timedelta(days=2),
                    last,
                    retry=retry,
                    progress=progress,
                    cache=cache,
                    now=now,
                )
                values = frame["funding_rate"]
                published = funding_published(pd.DatetimeIndex(values.index))
                labels[kind] = f"{frame.attrs.get('source', exchange.id)} " + str(
                    frame.attrs.get("symbol", symbol)
                )
        except (DataUnavailable, DataFormatError, ConfigurationError) as exc:
            unavailable[kind] = str(exc)
            notes.append(f"The {_TITLES[kind]} feature is unavailable: {exc}")
            continue
        column = as_of(values, candles.index, timeframe, published_at=published)
        joined[kind] = column.to_numpy(dtype="float64")
        sources[kind] = (values, published)
        notes.extend(_join_notes(kind, column, len(candles)))
    return MoodJoin(joined, tuple(dict.fromkeys(notes)), unavailable, sources, labels)


_TITLES = {"fear_greed": "Fear & Greed", "funding_rate": "funding rate"}


def _index_notes(frame: pd.DataFrame, first: pd.Timestamp, end: pd.Timestamp) -> list[str]:
    """What the index did not deliver for the days these candles can see: a day missing
    or not yet published matters only if a candle from ``first`` to ``end`` would use it
    (the day before a candle opens through the day before the last one closes)."""
    lo, hi = first.normalize() - _DAY, end.normalize()
    missing = pd.to_datetime(list(frame.attrs.get(MISSING_DAYS_ATTR, ())), unit="ms", utc=True)
    seen = missing[(missing >= lo) & (missing < hi)]
    out = []
    if len(seen):
        shown = ", ".join(f"{day:%Y-%m-%d}" for day in seen[:5])
        more = f" and {len(seen) - 5} more" if len(seen) > 5 else ""
        out.append(
            f"alternative.me published no Fear & Greed value for {len(seen)} day(s) these "
            f"candles would use: {shown}{more}; the previous value is used, counted as stale."
        )
    late = frame.attrs.get(LATE_DAY_ATTR)
    if late is not None:
        due = pd.Timestamp(int(late), unit="ms", tz="UTC")
        if lo <= due < hi:
            out.append(
                f"The Fear & Greed value for {due:%Y-%m-%d} is not published yet: the candles "
                "after that day carry the day before's until it is."
            )
    return out


def _join_notes(kind: str, column: pd.Series, total: int) -> list[str]:
    out = []
    without = int(column.attrs.get(AS_OF_WITHOUT_VALUE_ATTR, 0))
    stale = int(column.attrs.get(AS_OF_STALE_ATTR, 0))
    if without == total:
        out.append(
            f"No {_TITLES[kind]} value was published before these candles closed: the "
            "feature has no value on any of them."
        )
    elif without:
        out.append(
            f"The first {without:,} candles close before the first {_TITLES[kind]} value "
            "was published: they have no value (warm-up, never back-filled)."
        )
    if stale:
        age = pd.Timedelta(column.attrs.get("max_age", _DAY))
        out.append(
            f"{stale:,} candles carry a {_TITLES[kind]} value published more than "
            f"{_age_words(age)} before they closed (the source skipped a period): the last "
            "published value is used, never an invented one."
        )
    return out


def _age_words(age: pd.Timedelta) -> str:
    hours = age / pd.Timedelta(hours=1)
    return "a day" if hours == 24 else f"{hours:g} hours"


def join_audit(
    values: pd.Series,
    candles_index: pd.DatetimeIndex,
    timeframe: str,
    published: pd.DatetimeIndex,
    *,
    checks: int = 40,
    seed: int = 0,
    join: Callable[..., pd.Series] | None = None,
) -> pd.DataFrame:
    """Check that each candle's joined value depends only on values published before it closed.

    For candles spread over the data, every source value published at or after the
    candle's close is replaced by a random one (and, separately, removed); the candle's
    joined value must not change either way. A join that uses a value as of its time
    stamp instead of its publication (a day's index on that day's own candle), or one
    that looks forward, fails.

    Parameters
    ----------
    values, candles_index, timeframe, published
        As for :func:`as_of`.
    checks
        How many candles, spread evenly over the data.
    seed
        Seed of the replacement values.
    join
        The join under audit, with :func:`as_of`'s signature (the default; tests plant
        others).

    Returns
    -------
    pd.DataFrame
        One row with ``passed``, ``max_difference`` (absolute), ``first_difference`` (the
        first candle whose value changed, or None) and ``prefixes`` (candles checked), the
        columns of :func:`forecasting.features.lookahead_audit`.
    """
    join = join or as_of
    values = values.astype("float64")
    published = pd.DatetimeIndex(published)
    closes = pd.DatetimeIndex(candles_index) + timeframe_offset(timeframe)
    full = join(values, candles_index, timeframe, published_at=published).to_numpy()
    rng = np.random.default_rng(seed)
    n = len(candles_index)
    positions = sorted({int(i) for i in np.linspace(0, n - 1, min(checks, n))}) if n else []
    worst, first = 0.0, None
    for i in positions:
        later = _utc_ns(published) >= _utc_ns(closes[i : i + 1])[0]
        changed = values.copy()
        changed[later] = rng.uniform(-1e6, 1e6, int(later.sum()))
        for variant, times in ((changed, published), (values[~later], published[~later])):
            again = join(variant, candles_index[: i + 1], timeframe, published_at=times)
            a, b = full[i], float(again.iloc[i])
            diff = 0.0 if (np.isnan(a) and np.isnan(b)) else abs(a - b)
            diff = np.inf if np.isnan(diff) else diff
            if diff > worst:
                worst = float(diff)
            if diff > 0 and first is None:
                first = candles_index[i]
    return pd.DataFrame(
        {
            "column": [str(values.name or "value")],
            "passed": [worst == 0.0],
            "max_difference": [worst],
            "first_difference": [first],
            "prefixes": [len(positions)],
        }
    )
