"""Candles from any exchange ccxt supports: listing, validation, paging, retries, errors.

ccxt is the only place this package talks to exchanges, and this module is the only
place that imports it. Everything ccxt raises is translated here into the project's
own errors (:mod:`forecasting.errors`), so callers never see a ccxt class.

The exchange object is always injectable: functions take a ready ``ccxt.Exchange``
so tests can hand in the real client pointed at a local server.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import logging
import random
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ccxt
import numpy as np
import pandas as pd

from forecasting.data.duplicates import duplicate_conflicts, resolve_duplicates
from forecasting.data.quality import (
    drop_nonpositive,
    dropped_nonpositive,
    notices,
    with_notices,
)
from forecasting.data.reachability import REACHABILITY, server_key, unreachable_reason
from forecasting.errors import (
    BadCredentials,
    ConfigurationError,
    ExchangeFailure,
    ForecastingError,
    GeoBlocked,
    InvalidDateRange,
    InvalidSymbol,
    InvalidTimeframe,
    NetworkUnreachable,
    RateLimited,
    UnknownExchange,
)
from forecasting.ohlcv import (
    COLUMNS,
    drop_unclosed,
    empty_ohlcv,
    epoch_ms,
    frame_from_rows,
    timeframe_offset,
    timeframe_seconds,
)
from forecasting.progress import ProgressCallback, report

__all__ = [
    "DEFAULT_EXCHANGE",
    "DEFAULT_SYMBOL",
    "DEFAULT_TIMEFRAME",
    "PUBLISH_GRACE",
    "SERVED_FROM_ATTR",
    "UNANSWERED_ATTR",
    "UNANSWERED_RANGE_ATTR",
    "UNANSWERED_TAIL_ATTR",
    "RetryPolicy",
    "checked_config",
    "create_exchange",
    "fetch_ohlcv",
    "gap_notice",
    "history_notice",
    "list_exchanges",
    "list_symbols",
    "list_timeframes",
    "load_markets",
    "longest_candle",
    "page_limit",
    "empty_notice",
    "fetch_window",
    "served_from",
    "source_key",
    "suggest_symbols",
    "tail_notice",
    "unanswered",
    "unanswered_range",
    "unanswered_tail",
    "with_retry",
]

log = logging.getLogger(__name__)

# Bitstamp serves BTC/USD candles back to 2011 without API keys, pages of 1000, all the
# usual timeframes, and does not geo-block US-hosted servers (Binance answers them with
# HTTP 451; Kraken only returns its latest 720 candles).
DEFAULT_EXCHANGE = "bitstamp"
DEFAULT_SYMBOL = "BTC/USD"
DEFAULT_TIMEFRAME = "1d"

# Every credential ccxt knows (apiKey, secret, uid, accountId, login, password, twofa,
# privateKey, walletAddress, token, ...), taken from ccxt itself so a new one is covered the
# day ccxt adds it. With every header value, never part of a cache key, a log line or a
# message.
SECRET_KEYS = frozenset(ccxt.Exchange.requiredCredentials)

# A secret this short is blanked only where it stands alone (between characters that are
# not letters or digits): blanking every "a" of a one-letter key would leave no message.
_SHORT_SECRET = 4

# The kinds of value the constructor settings users give must have. Settings not listed
# take the kind of ccxt's own default for them; the rest are passed as they are.
_TEXT, _NUMBER, _BOOL, _OBJECT, _LIST = "text", "a number", "true or false", "an object", "a list"
_KINDS: dict[str, tuple[str, ...]] = {
    "timeout": (_NUMBER,),
    "rateLimit": (_NUMBER,),
    "enableRateLimit": (_BOOL,),
    "verbose": (_BOOL,),
    "verify": (_BOOL,),
    "validateServerSsl": (_BOOL,),
    "options": (_OBJECT,),
    "urls": (_OBJECT,),
    "headers": (_OBJECT,),
    "proxies": (_OBJECT,),
    "userAgent": (_TEXT, _OBJECT),
    "hostname": (_TEXT,),
    "proxy": (_TEXT,),
    "proxyUrl": (_TEXT,),
    "httpProxy": (_TEXT,),
    "httpsProxy": (_TEXT,),
    "socksProxy": (_TEXT,),
}
# Milliseconds: beyond these a request or the rate limiter would hold a session for minutes.
_RANGES: dict[str, tuple[float, float]] = {"timeout": (1, 600_000), "rateLimit": (0, 60_000)}

# ``DataFrame.attrs`` key: the open time (epoch ms) of the first candle an exchange served
# when it answered less history than the range asked for and no listing date explains it.
SERVED_FROM_ATTR = "served_from_ms"
# ``DataFrame.attrs`` key: windows ``(start_ms, end_ms)`` inside the range that an exchange
# answered with nothing, asked twice, although it served candles after them.
UNANSWERED_ATTR = "unanswered_ms"

# How long after a candle closes an exchange may take to publish it. A candle missing
# from an answer given sooner than this after its close is asked for again on the next
# request; one missing later counts as a gap (no trades, an outage, a delisted pair).
PUBLISH_GRACE = pd.Timedelta(minutes=2)

# ``DataFrame.attrs`` key: the window ``(start_ms, end_ms)`` after the last candle received
# in which an exchange answered nothing, asked three times, although candles in it have
# closed (and been published) by the time of the fetch: a pair no longer traded, a stretch
# without trades, or an answer lost. Not kept in the cache: the next load asks again.
UNANSWERED_TAIL_ATTR = "unanswered_tail_ms"

# ``DataFrame.attrs`` key: the window ``(start_ms, end_ms)`` of a range an exchange answered
# with no candle at all, asked three times (twice unbounded, once bounded), although
# candles in it would have closed and been published: a pair listed later, or answers
# lost. Never silent: a notice says so (see :func:`empty_notice`).
UNANSWERED_RANGE_ATTR = "unanswered_range_ms"

# Used when an exchange does not declare its page size: small enough for every exchange.
FALLBACK_PAGE_LIMIT = 200

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: exponential backoff with jitter.

    Parameters
    ----------
    attempts
        Total tries, the first included.
    base_delay
        Seconds before the first retry; doubled each time.
    max_delay
        Cap on one wait, in seconds.
    sleep
        The function that waits; tests pass a recorder instead of ``time.sleep``.
    """

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        base = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        # Jitter so that several sessions rate-limited together do not retry in lockstep.
        return base * (0.75 + 0.5 * random.random())


@functools.cache
def list_exchanges() -> list[str]:
    """Ids of the exchanges ccxt supports that can serve OHLCV candles, sorted."""
    ids = []
    for exchange_id in ccxt.exchanges:
        try:
            has = _capabilities(getattr(ccxt, exchange_id))
        except Exception:  # noqa: BLE001 - one broken exchange class must not hide the rest
            log.debug("skipping exchange %s: cannot be constructed", exchange_id)
            continue
        if has.get("fetchOHLCV"):
            ids.append(exchange_id)
    return sorted(ids)


def _capabilities(exchange_class: type[ccxt.Exchange]) -> dict[str, Any]:
    """An exchange class's ``has`` table, read from its description.

    Constructing a client of each of ccxt's exchanges took 0.14 s of a fresh server's
    first page, ten times as long. The few whose description reads client state are
    constructed.
    """
    try:
        return exchange_class.__new__(exchange_class).describe().get("has", {})
    except Exception:  # noqa: BLE001 - any failure: ask a constructed client instead
        return exchange_class().has


def create_exchange(exchange_id: str, config: Mapping[str, Any] | None = None) -> ccxt.Exchange:
    """A ccxt client for ``exchange_id`` with the rate limiter on.

    Parameters
    ----------
    exchange_id
        A ccxt id such as ``"bitstamp"`` or ``"binance"``.
    config
        Constructor settings passed to ccxt (API keys, ``urls`` overrides, ``options``),
        after a check of their types; keys and header values given as whole numbers are
        passed as text. They override our defaults.

    Raises
    ------
    UnknownExchange
        When ccxt does not know the id or the exchange cannot serve candles.
    ConfigurationError
        When a setting has the wrong type or is out of range (the message names it).
    """
    exchange_id = (exchange_id or "").strip().lower()
    if exchange_id not in ccxt.exchanges:
        close = difflib.get_close_matches(exchange_id, ccxt.exchanges, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownExchange(f"'{exchange_id}' is not an exchange ccxt supports.{hint}")
    exchange_class = getattr(ccxt, exchange_id)
    settings: dict[str, Any] = {"enableRateLimit": True, "timeout": 15_000}
    settings.update(checked_config(exchange_id, config))
    try:
        exchange = exchange_class(settings)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        # The message may quote a value, and values may be keys: name the settings only.
        given = ", ".join(_shown(str(key)) for key in (config or {}))
        raise ConfigurationError(
            f"ccxt could not build a {exchange_id} client from the settings given ({given}): "
            f"{type(exc).__name__}. Check their values in {_where(exchange_id)}."
        ) from exc
    if not exchange.has.get("fetchOHLCV"):
        raise UnknownExchange(
            f"{exchange_id} does not serve OHLCV candles through ccxt. Choose another exchange."
        )
    return exchange


def checked_config(exchange_id: str, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The exchange settings with their types checked, ready for ccxt's constructor.

    Credentials and header values given as whole numbers (a TOML ``uid = 12345``) become
    text, as ccxt expects; everything else is passed unchanged.

    Raises
    ------
    ConfigurationError
        One line naming the setting, the kind of value it has and the kind it needs.
    """
    exchange_id = (exchange_id or "").strip().lower()
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise ConfigurationError(
            f"The settings for {exchange_id} are {_kind(config)}; expected an object of "
            f'ccxt settings such as {{"timeout": 30000}}. Fix {_where(exchange_id)}.'
        )
    defaults = _ccxt_defaults(exchange_id)
    checked: dict[str, Any] = {}
    for key, value in config.items():
        name = str(key)
        if name in SECRET_KEYS:
            checked[key] = _as_text(exchange_id, name, value)
            continue
        kinds = _KINDS.get(name) or _default_kind(defaults, name)
        if kinds is None:
            checked[key] = value
            continue
        if not kinds:
            raise ConfigurationError(
                f"{_shown(name)} is not a setting but a method of the ccxt client. Remove it "
                f"from {_where(exchange_id)}."
            )
        if _kind(value) not in kinds:
            raise _wrong_kind(exchange_id, name, value, " or ".join(kinds))
        if name in _RANGES:
            low, high = _RANGES[name]
            if not low <= value <= high:  # NaN fails both
                raise ConfigurationError(
                    f"Exchange setting {_shown(name)} for {exchange_id} is {value!r}; expected "
                    f"milliseconds from {low:g} to {high:g}. Fix it in {_where(exchange_id)}."
                )
        if name == "headers":
            value = {
                str(header): _as_text(exchange_id, f"headers.{header}", text)
                for header, text in value.items()
            }
        elif name == "urls":
            _check_urls(exchange_id, "urls", value)
        checked[key] = value
    return checked


def _where(exchange_id: str) -> str:
    return f"the [exchanges.{exchange_id}] table of .streamlit/secrets.toml or --exchange-config"


def _shown(name: str) -> str:
    # Setting names come from the user's file: short, on one line, quoted.
    name = " ".join(name.split())
    return f'"{name[:40]}…"' if len(name) > 40 else f'"{name}"'


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, int | float):
        return _NUMBER
    if isinstance(value, str):
        return _TEXT
    if isinstance(value, Mapping):
        return _OBJECT
    if isinstance(value, list | tuple):
        return _LIST
    return type(value).__name__


def _wrong_kind(exchange_id: str, name: str, value: Any, expected: str) -> ConfigurationError:
    return ConfigurationError(
        f"Exchange setting {_shown(name)} for {exchange_id} is {_kind(value)}; expected "
        f"{expected}{' of milliseconds' if name in _RANGES else ''}. Fix it in "
        f"{_where(exchange_id)}."
    )


def _as_text(exchange_id: str, name: str, value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _wrong_kind(exchange_id, name, value, _TEXT)


def _check_urls(exchange_id: str, path: str, value: Any, depth: int = 0) -> None:
    # ccxt's url tables: objects and lists of text, a few levels deep.
    if isinstance(value, str):
        return
    if depth > 8 or not isinstance(value, Mapping | list | tuple):
        raise _wrong_kind(exchange_id, path, value, f"{_TEXT} or {_OBJECT} of them")
    items = value.items() if isinstance(value, Mapping) else enumerate(value)
    for key, item in items:
        _check_urls(exchange_id, f"{path}.{key}", item, depth + 1)


@functools.cache
def _ccxt_defaults(exchange_id: str) -> dict[str, Any]:
    """ccxt's own defaults for an exchange's attributes (the base class's for unknown ids)."""
    exchange_class = getattr(ccxt, exchange_id, None) if exchange_id in ccxt.exchanges else None
    exchange_class = exchange_class or ccxt.Exchange
    try:
        described = exchange_class.__new__(exchange_class).describe()
    except Exception:  # noqa: BLE001 - some descriptions read client state: the class will do
        described = {}
    return {"__class__": exchange_class, **described}


def _default_kind(defaults: dict[str, Any], name: str) -> tuple[str, ...] | None:
    if name.startswith("_"):
        return None
    default = defaults.get(name, getattr(defaults["__class__"], name, None))
    if default is None:
        return None
    if callable(default):
        return ()  # a method of the client: no value will do
    kind = _kind(default)
    return (kind,) if kind in (_TEXT, _NUMBER, _BOOL, _OBJECT, _LIST) else None


def source_key(exchange_id: str, config: Mapping[str, Any] | None = None) -> str:
    """A cache key for an exchange and the parts of its settings that change the data.

    API keys and header values are left out (the same account sees the same public
    candles), while URL
    overrides and options are hashed in, so a sandbox or a test server never shares a
    cache entry with the real exchange.
    """
    # Spelled as create_exchange reads it, so " Binance" and "binance" share one cache.
    exchange_id = (exchange_id or "").strip().lower()
    config = checked_config(exchange_id, config)
    public = {k: v for k, v in config.items() if k not in SECRET_KEYS}
    if isinstance(public.get("headers"), Mapping):
        # Header values may be keys; their names alone tell configurations apart.
        public["headers"] = sorted(public["headers"])
    if not public:
        return exchange_id
    digest = hashlib.sha256(json.dumps(public, sort_keys=True, default=str).encode()).hexdigest()
    return f"{exchange_id}-{digest[:10]}"


def page_limit(exchange: ccxt.Exchange) -> int:
    """How many candles the exchange returns per request at most."""
    features = getattr(exchange, "features", None) or {}
    for market_type in ("spot", "swap", "future"):
        section = features.get(market_type) or {}
        # Some exchanges nest per-subtype ("linear"/"inverse") sections.
        candidates = [section] + [v for v in section.values() if isinstance(v, dict)]
        for candidate in candidates:
            limit = (candidate.get("fetchOHLCV") or {}).get("limit")
            if isinstance(limit, int) and limit > 0:
                return limit
    return FALLBACK_PAGE_LIMIT


def list_timeframes(exchange: ccxt.Exchange) -> list[str]:
    """Timeframes the exchange offers, shortest first."""
    offered = list((exchange.timeframes or {}).keys())

    def length(tf: str) -> int:
        try:
            return timeframe_seconds(tf)
        except ForecastingError:
            return 1 << 62

    return sorted(offered, key=length)


def list_symbols(exchange: ccxt.Exchange, *, retry: RetryPolicy | None = None) -> list[str]:
    """Active symbols of the exchange, sorted (loads its markets: one request or a few)."""
    markets = load_markets(exchange, retry or RetryPolicy())
    return sorted(s for s, m in markets.items() if m.get("active") is not False)


def suggest_symbols(symbol: str, symbols: list[str], n: int = 5) -> list[str]:
    """Listed symbols that look closest to ``symbol`` (case and separators ignored)."""

    def squash(s: str) -> str:
        return re.sub(r"[^A-Z0-9]", "", s.upper())

    wanted = squash(symbol)
    exact = [s for s in symbols if squash(s) == wanted]
    by_squash: dict[str, list[str]] = {}
    for s in symbols:
        by_squash.setdefault(squash(s), []).append(s)
    close = difflib.get_close_matches(wanted, list(by_squash), n=n, cutoff=0.6)
    ranked = exact + [s for key in close for s in by_squash[key] if s not in exact]
    if not ranked:
        base = symbol.split("/")[0].upper()
        ranked = [s for s in symbols if s.split("/")[0] == base]
    return ranked[:n]


def validate_request(
    exchange: ccxt.Exchange, symbol: str, timeframe: str, retry: RetryPolicy
) -> None:
    """Check symbol and timeframe against the exchange before asking for candles.

    Raises
    ------
    InvalidSymbol, InvalidTimeframe
        With the close matches or the offered timeframes in the message.
    """
    offered = list_timeframes(exchange)
    if offered and timeframe not in offered:
        raise InvalidTimeframe(
            f"{exchange.id} does not offer the {timeframe} timeframe. "
            f"Choose one of: {', '.join(offered)}.",
            offered,
        )
    markets = load_markets(exchange, retry)
    if symbol not in markets:
        suggestions = suggest_symbols(symbol, sorted(markets))
        hint = f" Did you mean {', '.join(suggestions)}?" if suggestions else ""
        raise InvalidSymbol(f"{exchange.id} does not list {symbol}.{hint}", suggestions)


def fetch_ohlcv(
    exchange: ccxt.Exchange,
    symbol: str,
    timeframe: str,
    since: pd.Timestamp | None = None,
    until: pd.Timestamp | None = None,
    *,
    progress: ProgressCallback | None = None,
    now: pd.Timestamp | None = None,
    retry: RetryPolicy | None = None,
    validate: bool = True,
    continues_at: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Fetch every closed candle with open time in ``[since, until)``.

    Pages through the range with our own ``since`` loop at the exchange's page size
    (ccxt's ``paginate=True`` stops after ten pages and moves an old ``since`` forward).

    Exchanges answer less than asked: fewer candles than the page size, only the newest
    part of the window, an empty page now and then, or (Kraken) only their latest
    candles whatever ``since`` says. Whenever an answer starts later than the window it
    was asked for, the window before it is asked for again, bounded by the first candle
    received (ccxt's ``until``), piece by piece until the exchange has nothing more to
    give. What it never gives at the start of the range is reported, never silent: the
    frame's ``attrs`` then name the first candle served (``SERVED_FROM_ATTR``) and say so
    in a notice (``NOTICES_ATTR``, see :func:`history_notice`), unless the market's
    listing date explains it.

    Parameters
    ----------
    exchange
        A ccxt client, see :func:`create_exchange`.
    symbol, timeframe
        Unified ccxt symbol (``"BTC/USDT"``) and timeframe (``"1h"``).
    since, until
        UTC bounds; ``until`` defaults to now, ``since`` to 1000 candles before ``until``.
    progress
        Called after every page as ``progress("fetch", fraction, details)`` with
        ``details["done"]`` the candles received so far and ``details["expected"]`` the
        number the range holds (see :mod:`forecasting.progress`).
    now
        The current time, to drop the candle still open at ``now``; defaults to the clock.
    retry
        Backoff for transient failures (timeouts, HTTP 429/5xx, exchange unavailable).
    validate
        Check the symbol and timeframe first (loads the exchange's markets).
    continues_at
        An open time from which candles are known to exist (a cache holds them): a
        range answered with nothing at all before it counts as a short answer.

    Returns
    -------
    pd.DataFrame
        An OHLCV frame (see :mod:`forecasting.ohlcv`), possibly with gaps, possibly empty.
        Candles sent twice are resolved by
        :func:`~forecasting.data.duplicates.resolve_duplicates` (conflicts recorded in
        ``attrs``). Candles with a zero or negative price (an exchange's placeholder for
        a candle it does not have) are dropped, and their open times recorded in the
        frame's ``attrs`` (see :func:`~forecasting.data.quality.drop_nonpositive`).

    Raises
    ------
    ForecastingError
        A subclass saying what went wrong and what to do.
    """
    retry = retry or RetryPolicy()
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    step_ms = timeframe_seconds(timeframe) * 1000
    until = min(until, now) if until is not None else now
    since = since if since is not None else until - pd.Timedelta(milliseconds=1000 * step_ms)
    if since >= until:
        raise InvalidDateRange(
            f"The start ({since:%Y-%m-%d %H:%M}) must be before the end ({until:%Y-%m-%d %H:%M})."
        )
    if validate:
        validate_request(exchange, symbol, timeframe, retry)

    settled = now - longest_candle(timeframe) - PUBLISH_GRACE + pd.Timedelta(milliseconds=1)
    pager = _Pager(
        exchange,
        symbol,
        timeframe,
        retry,
        epoch_ms(since),
        epoch_ms(until),
        progress,
        epoch_ms(now),
        epoch_ms(settled),
    )
    rows, first_served = pager.run(None if continues_at is None else epoch_ms(continues_at))
    frame = _frame(rows)
    frame = drop_nonpositive(drop_unclosed(frame, timeframe, now))
    if first_served is not None and not _listing_explains(
        exchange, symbol, timeframe, epoch_ms(since), first_served
    ):
        stamp = pd.Timestamp(first_served, unit="ms", tz="UTC")
        frame.attrs[SERVED_FROM_ATTR] = int(first_served)
        with_notices(frame, (*notices(frame), history_notice(exchange.id, timeframe, stamp)))
    if pager.unanswered:
        windows = sorted(pager.unanswered)
        frame.attrs[UNANSWERED_ATTR] = tuple(windows)
        told = [gap_notice(exchange.id, timeframe, *_stamps(w)) for w in windows]
        with_notices(frame, (*notices(frame), *told))
    if not rows and pager.head_window is not None and first_served is None:
        frame.attrs[UNANSWERED_RANGE_ATTR] = pager.head_window
        told = empty_notice(exchange.id, timeframe, *_stamps(pager.head_window))
        with_notices(frame, (*notices(frame), told))
    if pager.unanswered_tail is not None:
        frame.attrs[UNANSWERED_TAIL_ATTR] = pager.unanswered_tail
        told = tail_notice(exchange.id, timeframe, _stamps(pager.unanswered_tail)[0])
        with_notices(frame, (*notices(frame), told))
    dropped = dropped_nonpositive(frame)
    if len(dropped):
        log.info(
            "%s %s %s: dropped %d candles with zero or negative prices, the first at %s",
            exchange.id,
            symbol,
            timeframe,
            len(dropped),
            dropped[0],
        )
    return frame


def fetch_window(
    exchange: ccxt.Exchange,
    symbol: str,
    timeframe: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    now: pd.Timestamp | None = None,
    retry: RetryPolicy | None = None,
) -> pd.DataFrame:
    """Ask again for a window ``[start, end)`` an exchange answered with nothing before.

    Only requests bounded by ``end`` (ccxt's ``until``) are sent: one when the window is
    still empty, and while candles come, one more for each part of it still missing
    (as :func:`fetch_ohlcv` fills a window skipped by an answer that starts late). The
    symbol is not validated.

    Returns
    -------
    pd.DataFrame
        The closed candles received in the window, possibly none. The parts of the window
        that stayed empty are in its ``attrs`` under ``UNANSWERED_ATTR`` (see
        :func:`unanswered`); no notice is attached: the caller knows what the window was.

    Raises
    ------
    ForecastingError
        As :func:`fetch_ohlcv`: a failed request fails the whole call.
    """
    retry = retry or RetryPolicy()
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    end = min(end, now)
    settled = now - longest_candle(timeframe) - PUBLISH_GRACE + pd.Timedelta(milliseconds=1)
    pager = _Pager(
        exchange,
        symbol,
        timeframe,
        retry,
        epoch_ms(start),
        epoch_ms(end),
        None,
        epoch_ms(now),
        epoch_ms(settled),
    )
    if start < end:
        pager._fill(epoch_ms(start), epoch_ms(end))
    frame = drop_nonpositive(drop_unclosed(_frame(pager.rows), timeframe, now))
    windows = list(pager.unanswered)
    if pager.head_window is not None:
        windows.append(pager.head_window)
    if windows:
        frame.attrs[UNANSWERED_ATTR] = tuple(sorted(windows))
    return frame


def longest_candle(timeframe: str) -> pd.Timedelta:
    """The longest a candle of ``timeframe`` can last (31 days for ``1M``, 366 for ``1y``).

    Calendar months and years vary; their longest length makes sure a candle is never
    taken for closed before it is.
    """
    unit = timeframe[-1]
    amount = int(timeframe[:-1])
    if unit == "M":
        return pd.Timedelta(days=31 * amount)
    if unit == "y":
        return pd.Timedelta(days=366 * amount)
    return pd.Timedelta(seconds=timeframe_seconds(timeframe))


def history_notice(exchange_id: str, timeframe: str, served_from: pd.Timestamp) -> str:
    """The notice for an exchange that serves candles only from ``served_from`` on."""
    shown = (
        f"{served_from:%Y-%m-%d}"
        if served_from == served_from.normalize()
        else f"{served_from:%Y-%m-%d %H:%M} UTC"
    )
    return (
        f"{exchange_id} serves {timeframe} candles only from {shown}; earlier candles are "
        "not available here"
    )


def gap_notice(exchange_id: str, timeframe: str, start: pd.Timestamp, end: pd.Timestamp) -> str:
    """The notice for a window the exchange left empty although it served later candles."""
    return (
        f"{exchange_id} answered no {timeframe} candles from {start:%Y-%m-%d %H:%M} to "
        f"{end:%Y-%m-%d %H:%M} UTC although it has later ones; any there are missing here"
    )


def tail_notice(exchange_id: str, timeframe: str, start: pd.Timestamp) -> str:
    """The notice for the end of a range the exchange left empty though its candles closed.

    ``start`` is the open time of the first candle missing.
    """
    return (
        f"{exchange_id} answered no {timeframe} candles from {start:%Y-%m-%d %H:%M} UTC on, "
        "though candles have closed since (no trades since, a pair no longer traded, or an "
        "answer lost)"
    )


def empty_notice(exchange_id: str, timeframe: str, start: pd.Timestamp, end: pd.Timestamp) -> str:
    """The notice for a range the exchange answered with no candle at all."""
    return (
        f"{exchange_id} answered no {timeframe} candles at all from {start:%Y-%m-%d %H:%M} to "
        f"{end:%Y-%m-%d %H:%M} UTC (the pair may have been listed later, or the answers were "
        "lost); a cached range is asked again on a later load"
    )


def unanswered_range(candles: pd.DataFrame) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The range an exchange answered with no candle at all (see :func:`empty_notice`)."""
    window = candles.attrs.get(UNANSWERED_RANGE_ATTR)
    return None if window is None else _stamps(window)


def unanswered_tail(candles: pd.DataFrame) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The window after the last candle that an exchange left empty though it had closed."""
    window = candles.attrs.get(UNANSWERED_TAIL_ATTR)
    return None if window is None else _stamps(window)


def unanswered(candles: pd.DataFrame) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """The windows ``[start, end)`` an exchange left empty though it served later candles."""
    return [_stamps(w) for w in candles.attrs.get(UNANSWERED_ATTR, ())]


def _stamps(window: tuple[int, int]) -> tuple[pd.Timestamp, pd.Timestamp]:
    start, end = window
    return pd.Timestamp(int(start), unit="ms", tz="UTC"), pd.Timestamp(
        int(end), unit="ms", tz="UTC"
    )


def served_from(candles: pd.DataFrame) -> pd.Timestamp | None:
    """The first candle the exchange served when it answered less history than asked."""
    value = candles.attrs.get(SERVED_FROM_ATTR)
    return None if value is None else pd.Timestamp(int(value), unit="ms", tz="UTC")


class _Pager:
    """The requests of one fetch: forward pages, and windows asked again when skipped."""

    def __init__(
        self,
        exchange: ccxt.Exchange,
        symbol: str,
        timeframe: str,
        retry: RetryPolicy,
        since_ms: int,
        until_ms: int,
        progress: ProgressCallback | None,
        now_ms: int,
        settled_ms: int,
    ) -> None:
        self.exchange, self.symbol, self.timeframe, self.retry = exchange, symbol, timeframe, retry
        self.since_ms, self.until_ms, self.progress = since_ms, until_ms, progress
        self.now_ms = now_ms
        # Candles opening before this closed at least PUBLISH_GRACE ago: published.
        self.settled_ms = settled_ms
        self.step_ms = timeframe_seconds(timeframe) * 1000
        self.offset = timeframe_offset(timeframe)
        self.limit = page_limit(exchange)
        self.expected = max(1, -(-(until_ms - since_ms) // self.step_ms))
        self.rows: list[list[Any]] = []
        self.unanswered_head = False
        # The window from the start of the range that stayed empty when asked bounded.
        self.head_window: tuple[int, int] | None = None
        # Windows after the start that stayed empty although later candles came.
        self.unanswered: list[tuple[int, int]] = []
        # The window after the last candle received that stayed empty, asked three times,
        # although candles in it have closed and been published.
        self.unanswered_tail: tuple[int, int] | None = None

    def run(self, continues_at: int | None = None) -> tuple[list[list[Any]], int | None]:
        """The rows received in the range, and the first candle served when the start
        of the range went unanswered (else ``None``).

        ``continues_at``: the open time from which candles are known to exist (the
        cache holds them), so that a range answered with nothing at all before it is
        asked again, and reported when it stays unanswered.
        """
        cursor = self.since_ms
        gap_from: int | None = None  # where the candles not yet received begin
        first_seen: int | None = None

        def received_before(at: int) -> bool:
            return first_seen is not None and first_seen < at

        while cursor < self.until_ms:
            page = self._ask(cursor)
            if not page and (cursor == self.since_ms or received_before(cursor)):
                # An empty first page, or one after candles came, is the end of the data,
                # a stretch without trading, or an exchange's passing slip: a second answer
                # tells the slip apart before the range is skipped for good.
                page = self._ask(cursor)
            if gap_from is None:
                gap_from = cursor
            if not page:
                # Nothing from here on: the end of the data, a stretch before the pair was
                # listed, an outage longer than a page, or a transient empty answer. Skip a
                # page's span ahead; what later pages show decides which it was.
                cursor += self.limit * self.step_ms
                self._report()
                continue
            stamps = [int(row[0]) for row in page]
            first, last = min(stamps), max(stamps)
            first_seen = first if first_seen is None else min(first_seen, first)
            self._keep(page, self.since_ms, self.until_ms)
            end = min(first, self.until_ms)
            if gap_from < end and self._gap(gap_from, end):
                self._fill(gap_from, end)
            gap_from = None
            self._report()
            if last < cursor:
                break  # the exchange ignored `since` and answered with older candles
            following = self._after(last)
            if following >= self.until_ms:
                break  # the next candle would open at or after the end: nothing left
            if self._after(following) > self.now_ms:
                break  # the next candle is still open: nothing more has closed
            cursor = last + 1
        if gap_from is not None:
            self._tail(gap_from)
        if not self.rows and first_seen is None and continues_at is not None:
            end = min(continues_at, self.until_ms)
            if self._gap(self.since_ms, end):
                self._fill(self.since_ms, end)
            first_seen = continues_at
        if not self.unanswered_head:
            return self.rows, None
        received = [int(row[0]) for row in self.rows]
        return self.rows, min(received) if received else first_seen

    def _tail(self, start: int) -> None:
        """Ask once more, bounded, for what follows the last candle received.

        Pages answered empty twice were skipped a page's span at a time, and
        a span can reach past the end of the range: an answer lost twice would end the
        fetch there. Asked again with an end bound, a lost answer comes; a window that
        stays empty although candles in it have closed and been published is recorded.
        """
        end = min(self.until_ms, self.settled_ms)
        if not self._gap(start, end):
            return
        before = len(self.unanswered)
        self._fill(start, end)
        received = [int(row[0]) for row in self.rows if int(row[0]) >= start]
        after = max(received) if received else None
        for window in self.unanswered[before:]:
            if window[1] == end and (after is None or window[0] > after):
                self.unanswered.remove(window)
                earlier = [int(row[0]) for row in self.rows if int(row[0]) < window[0]]
                if earlier:  # else nothing at all came: no candles in the range
                    self.unanswered_tail = (self._after(max(earlier)), end)

    def _fill(self, start: int, end: int) -> None:
        """Ask again for ``[start, end)``, bounded by ``end``, until nothing more comes."""
        windows = [(start, end)]
        while windows:
            low, high = windows.pop()
            page = self._ask(low, until=high - 1, refusal_ok=True)
            inside = [row for row in page or () if low <= int(row[0]) < high]
            if not inside:
                if low == self.since_ms:
                    self.unanswered_head = True
                    self.head_window = (low, high)
                elif self._on_grid(low) < high:
                    # Windows asked from just after a candle (its open time + 1 ms) start
                    # at the next candle: the first one missing.
                    self.unanswered.append((self._on_grid(low), high))
                continue
            self._keep(inside, low, high)
            self._report()
            first = min(int(row[0]) for row in inside)
            last = max(int(row[0]) for row in inside)
            if self._gap(last + 1, high):
                windows.append((last + 1, high))
            if self._gap(low, first):
                windows.append((low, first))

    def _ask(
        self, since_ms: int, *, until: int | None = None, refusal_ok: bool = False
    ) -> list[list[Any]] | None:
        # ccxt's unified end bound, only when one is wanted.
        bound = {} if until is None else {"params": {"until": until}}

        def call() -> list[list[Any]]:
            answer = self.exchange.fetch_ohlcv(
                self.symbol, self.timeframe, since=since_ms, limit=self.limit, **bound
            )
            return _checked(self.exchange, answer)

        try:
            return with_retry(call, self.exchange, self.retry, symbol=self.symbol)
        except ForecastingError as exc:
            # Asked again with an end bound, an exchange may refuse the bound itself: that
            # window stays unanswered. Network failures and garbled answers still fail.
            cause = exc.__cause__
            if refusal_ok and _refusal(cause):
                log.info("%s: refused a bounded request (%s)", self.exchange.id, cause)
                return None
            raise

    def _keep(self, page: list[list[Any]], low: int, high: int) -> None:
        low, high = max(low, self.since_ms), min(high, self.until_ms)
        self.rows.extend(row for row in page if low <= int(row[0]) < high)

    def _after(self, open_ms: int) -> int:
        """The open time of the candle after the one opening at ``open_ms``."""
        if isinstance(self.offset, pd.Timedelta):
            return open_ms + self.step_ms
        return epoch_ms(pd.Timestamp(open_ms, unit="ms", tz="UTC") + self.offset)

    def _on_grid(self, ms: int) -> int:
        """The first open time at or after ``ms`` on the grid of the candles received.

        Fixed timeframes: the grid of the first candle received (``ms`` itself when none
        came). Months and years: the 1st of the next month or year, 00:00 UTC.
        """
        if isinstance(self.offset, pd.Timedelta):
            if not self.rows:
                return ms
            return ms + (int(self.rows[0][0]) - ms) % self.step_ms
        return epoch_ms(self._calendar_start(ms))

    def _calendar_start(self, start: int) -> pd.Timestamp:
        """The first month or year start at or after ``start``."""
        stamp = pd.Timestamp(start, unit="ms", tz="UTC")
        begin = stamp.normalize().replace(day=1)
        if self.timeframe.endswith("y"):
            begin = begin.replace(month=1)
        if begin < stamp:
            begin += (
                pd.DateOffset(years=1) if self.timeframe.endswith("y") else pd.DateOffset(months=1)
            )
        return begin

    def _gap(self, start: int, end: int) -> bool:
        """Whether a candle can open in ``[start, end)``, ``end`` being an open time.

        Fixed timeframes: the window is at least a candle long. Months and years: it
        holds the start of one (exchanges open them on the 1st, 00:00 UTC).
        """
        if isinstance(self.offset, pd.Timedelta):
            return end - start >= self.step_ms
        return epoch_ms(self._calendar_start(start)) < end

    def _report(self) -> None:
        done = min(len(self.rows), self.expected)
        report(self.progress, "fetch", done / self.expected, done=done, expected=self.expected)


def _refusal(cause: BaseException | None) -> bool:
    """Whether ccxt's exception says the exchange refused a request (not an outage)."""
    if not isinstance(cause, ccxt.ExchangeError):
        return False
    if isinstance(cause, ccxt.AuthenticationError | ccxt.BadSymbol | ccxt.PermissionDenied):
        return False
    return _http_status(cause) not in {418, 429, 451}


def _frame(rows: list[list[Any]]) -> pd.DataFrame:
    """The OHLCV frame of ccxt rows, duplicates resolved and recorded."""
    if not rows:
        return empty_ohlcv()
    array = np.asarray([row[:6] for row in rows], dtype="float64")
    index = pd.DatetimeIndex(
        pd.to_datetime(array[:, 0].astype("int64"), unit="ms", utc=True), name="timestamp"
    ).as_unit("ms")
    raw = pd.DataFrame(array[:, 1:], index=index, columns=list(COLUMNS))
    resolved = resolve_duplicates(raw)
    frame = frame_from_rows(
        np.column_stack([resolved.index.asi8, resolved.to_numpy(dtype="float64")]).tolist()
    )
    frame.attrs = dict(resolved.attrs)
    conflicts = duplicate_conflicts(frame)
    if conflicts:
        log.info("resolved %d conflicting duplicate candles by volume", len(conflicts))
    return frame


def _listing_explains(
    exchange: ccxt.Exchange, symbol: str, timeframe: str, since_ms: int, first_ms: int
) -> bool:
    """Whether the market's listing date explains candles starting at ``first_ms``."""
    market = (getattr(exchange, "markets", None) or {}).get(symbol) or {}
    created = market.get("created")
    if not isinstance(created, int | float) or isinstance(created, bool):
        return False
    # The first candle opens within a candle of the listing (a day at least: listing
    # times are not always exact).
    within = max(timeframe_seconds(timeframe) * 1000, 86_400_000)
    return since_ms < created and first_ms - created < within


def _checked(exchange: ccxt.Exchange, page: list[list[Any]]) -> list[list[Any]]:
    # ccxt passes an unparseable body on (as rows of None, or filtered down to nothing)
    # rather than raising: refuse it here so the retry loop treats it like any other
    # garbled answer instead of mistaking it for "no candles".
    for row in page:
        if len(row) < 6 or any(value is None for value in row[:5]):
            raise ccxt.BadResponse(f"{exchange.id}: malformed candle row {row!r:.80}")
    if not page:
        body = getattr(exchange, "last_http_response", None)
        if isinstance(body, str) and body.strip():
            try:
                json.loads(body)
            except ValueError as exc:
                raise ccxt.BadResponse(f"{exchange.id}: unreadable answer {body!r:.80}") from exc
    return page


def load_markets(exchange: ccxt.Exchange, retry: RetryPolicy) -> dict[str, Any]:
    """The exchange's markets, loaded once (with ``retry``); ccxt's ``markets`` dict."""
    if exchange.markets:
        return exchange.markets
    return with_retry(lambda: _checked_markets(exchange), exchange, retry)


def _checked_markets(exchange: ccxt.Exchange) -> dict[str, Any]:
    # ccxt turns an unparseable market list into no markets without raising; every
    # exchange lists something, so an empty answer is garbled, not "nothing is listed"
    # (which would blame the user's symbol).
    markets = exchange.load_markets(reload=True)
    if not markets:
        raise ccxt.BadResponse(f"{exchange.id}: the market list is empty or unreadable")
    return markets


# ccxt writes "<id> GET <url> <status> <reason> <body>" when it maps the HTTP status, and
# "<id> <status> <reason> <body>" when the exchange's own handler raises (Binance's 418/429).
_HTTP_STATUS = re.compile(r"^\S+ (?:(?:GET|POST|PUT|DELETE|PATCH) \S+ )?(\d{3})\b")
_RETRYABLE_STATUS = {408, 418, 425, 429, 500, 502, 503, 504, 520, 521, 522, 524, 525, 526, 530}


def _http_status(exc: Exception) -> int | None:
    """The HTTP status in a ccxt error message (``"<id> GET <url> <status> ..."``)."""
    match = _HTTP_STATUS.match(str(exc))
    return int(match.group(1)) if match else None


def _is_transient(exc: Exception) -> bool:
    status = _http_status(exc)
    if status is not None:
        return status in _RETRYABLE_STATUS
    # Unparseable answers are most often a connection cut mid-body: worth another try.
    return isinstance(exc, ccxt.NetworkError | ccxt.BadResponse | ccxt.NullResponse)


def with_retry(
    call: Callable[[], T], exchange: ccxt.Exchange, retry: RetryPolicy, *, symbol: str | None = None
) -> T:
    """``call()`` with the candles' retry rules: backoff on transient failures (timeouts,
    HTTP 429 and 5xx, garbled answers), servers found unreachable remembered, and ccxt's
    errors turned into the project's (:mod:`forecasting.errors`).

    Raises
    ------
    ForecastingError
        A subclass saying what failed (unreachable, rate-limited, geo-blocked, ...).
    """
    # A server found unreachable a moment ago (by this or another session) is not tried
    # again until REACHABILITY forgets it: the answer would be the same failure.
    server = server_key(exchange.id, getattr(exchange, "urls", None))
    known = REACHABILITY.known_unreachable(server)
    if known is not None:
        reason, ago = known
        raise NetworkUnreachable(
            f"Could not reach {exchange.id}: {reason}, {ago:.0f} s ago; it is tried again "
            f"{REACHABILITY.remember_for - ago:.0f} s from now. Check the network connection, "
            "or use the offline sample or a CSV file."
        )
    for attempt in range(1, retry.attempts + 1):
        try:
            answer = call()
        except ccxt.BaseError as exc:
            reason = unreachable_reason(exc)
            if reason is not None:  # no retry can mend it: fail at once, and remember
                REACHABILITY.failed(server, reason)
                raise NetworkUnreachable(
                    f"Could not reach {exchange.id}: {reason}. Check the network connection, "
                    "or use the offline sample or a CSV file."
                ) from exc
            if attempt == retry.attempts or not _is_transient(exc):
                raise translate_error(exc, exchange, symbol=symbol, attempts=attempt) from exc
            wait = retry.delay(attempt)
            log.info(
                "%s: transient failure (%s), retry %d in %.1fs",
                exchange.id,
                type(exc).__name__,
                attempt,
                wait,
            )
            retry.sleep(wait)
        else:
            REACHABILITY.succeeded(server)
            return answer
    raise AssertionError("unreachable")  # pragma: no cover


def translate_error(
    exc: Exception, exchange: ccxt.Exchange, *, symbol: str | None = None, attempts: int = 1
) -> ForecastingError:
    """The project error, with a message a user can act on, for a ccxt exception."""
    name = exchange.id
    status = _http_status(exc)
    tries = f" (tried {attempts} times)" if attempts > 1 else ""
    if status == 451:
        return GeoBlocked(
            f"{name} refuses requests from this server's location (HTTP 451). Binance does this "
            "to US-hosted servers, Streamlit Community Cloud included. Choose another exchange, "
            "such as bitstamp, kraken or coinbase."
        )
    if isinstance(exc, ccxt.BadSymbol):
        # The client's market list may still name a symbol the exchange has dropped:
        # never offer the rejected symbol itself as the fix.
        symbols = sorted(s for s in exchange.markets or {} if s != symbol)
        suggestions = suggest_symbols(symbol or "", symbols) if symbol and symbols else []
        hint = f" Did you mean {', '.join(suggestions)}?" if suggestions else ""
        return InvalidSymbol(f"{name} does not list {symbol or 'that symbol'}.{hint}", suggestions)
    if isinstance(exc, ccxt.AuthenticationError | ccxt.PermissionDenied | ccxt.AccountSuspended):
        return BadCredentials(
            f"{name} rejected the API keys. Check the [exchanges.{name}] table in "
            ".streamlit/secrets.toml (or --exchange-config), or remove the keys: candles are "
            "public."
        )
    if isinstance(exc, ccxt.DDoSProtection) or status in {418, 429}:
        return RateLimited(
            f"{name} is limiting our requests (HTTP {status or 429}){tries}. Wait a minute and "
            "try again, or fetch a shorter range."
        )
    if (
        isinstance(exc, ccxt.NetworkError)
        and status is None
        or isinstance(exc, ccxt.RequestTimeout)
    ):
        return NetworkUnreachable(
            f"Could not reach {name}{tries}: {type(exc).__name__}. Check the network connection, "
            "or use the offline sample or a CSV file."
        )
    if status is not None and status >= 500 or isinstance(exc, ccxt.ExchangeNotAvailable):
        return NetworkUnreachable(
            f"{name} is unavailable right now (HTTP {status or 'error'}){tries}. Try again later "
            "or choose another exchange."
        )
    if isinstance(exc, ccxt.NotSupported):
        return UnknownExchange(
            f"{name} cannot do that through ccxt: {_short(_redacted(str(exc), exchange))}"
        )
    if isinstance(exc, ccxt.BadResponse | ccxt.NullResponse):
        return ExchangeFailure(
            f"{name} sent an answer that could not be read{tries}. Try again later."
        )
    return ExchangeFailure(f"{name} refused the request: {_short(_redacted(str(exc), exchange))}")


def _redacted(text: str, exchange: ccxt.Exchange) -> str:
    # ccxt messages quote the request URL, and exchanges echo the request in their error
    # bodies: blank out every credential and every header value, as sent and as encoded.
    forms = {form for value in _secret_values(exchange) for form in _encodings(value) if form}
    for form in sorted(forms, key=len, reverse=True):
        if len(form) >= _SHORT_SECRET:
            text = text.replace(form, "***")
        else:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(form)}(?![A-Za-z0-9])", "***", text)
    return text


def _secret_values(exchange: ccxt.Exchange) -> list[str]:
    headers = getattr(exchange, "headers", None)
    values = [getattr(exchange, key, None) for key in SECRET_KEYS]
    if isinstance(headers, Mapping):
        values += list(headers.values())
    texts = []
    for value in values:
        if value is None or value == "":
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        texts.append(str(value))
    return texts


def _encodings(value: str) -> set[str]:
    """``value`` as a message may quote it: raw, URL-encoded, JSON-escaped."""
    return {
        value,
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote(value),
        urllib.parse.quote_plus(value, safe=""),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }


def _short(text: str, limit: int = 300) -> str:
    # One line, whatever the exchange sent (HTML error pages span many).
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
