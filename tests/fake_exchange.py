"""A local stand-in for Binance's spot REST API, for tests that drive the real ccxt client.

The server answers the two endpoints ccxt needs for spot OHLCV (``/api/v3/exchangeInfo`` and
``/api/v3/klines``) over real HTTP on 127.0.0.1, so tests exercise ccxt's own request building,
error mapping and parsing instead of a mock of it. Faults (HTTP errors, timeouts, garbage bodies,
connection resets, empty answers) can be queued per endpoint to test retry and error-reporting
paths. Exchanges also answer *less* than asked; these behaviours imitate them:

* :meth:`FakeBinance.answer_latest`: only the latest N candles whatever ``startTime`` says (as
  Kraken does), optionally ending at ``endTime``;
* :meth:`FakeBinance.newest_part`: only the newest N candles of the window asked;
* ``max_limit``: pages shorter than the limit asked;
* ``inject("empty")``: an empty answer where candles exist (transient);
* :meth:`FakeBinance.disorder`: rows out of order, repeated, and with fragments (the same
  open time with a sliver of the volume);
* :meth:`FakeBinance.withhold_from`: candles not yet published;
* :meth:`FakeBinance.reshape`: any other change to each answer (property tests);
* :meth:`FakeBinance.list_since`: a listing date in the market list (``onboardDate``).

For funding rates it also answers the two USD-M futures endpoints ccxt's
``fetch_funding_rate_history`` needs (``/fapi/v1/exchangeInfo`` and ``/fapi/v1/fundingRate``),
for the perpetuals given with :meth:`FakeBinance.set_funding`; :meth:`FakeBinance.futures_config`
points a client at them.

The module also locates the shared real-candle fixtures (``../shared/data``) that must never be
copied into the repository; see :func:`load_shared_csv`.
"""

from __future__ import annotations

import copy
import json
import os
import random
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import ccxt
import numpy as np
import pandas as pd

__all__ = [
    "FAULTS",
    "SHARED_DATA",
    "FakeBinance",
    "Request",
    "load_shared_csv",
]

OHLCV_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")

#: Fault names accepted by :meth:`FakeBinance.inject`.
FAULTS: frozenset[str] = frozenset(
    {"500", "502", "503", "429", "418", "451", "400", "timeout", "malformed", "reset", "empty"}
)
_ENDPOINTS: dict[str, str] = {
    "klines": "/api/v3/klines",
    "exchangeInfo": "/api/v3/exchangeInfo",
    "fundingRate": "/fapi/v1/fundingRate",
    "futuresExchangeInfo": "/fapi/v1/exchangeInfo",
}

# Binance's spot intervals; anything else gets the real -1120 error.
_FIXED_INTERVAL_MS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 3 * 60_000,
    "5m": 5 * 60_000,
    "15m": 15 * 60_000,
    "30m": 30 * 60_000,
    "1h": 3_600_000,
    "2h": 2 * 3_600_000,
    "4h": 4 * 3_600_000,
    "6h": 6 * 3_600_000,
    "8h": 8 * 3_600_000,
    "12h": 12 * 3_600_000,
    "1d": 86_400_000,
    "3d": 3 * 86_400_000,
    "1w": 7 * 86_400_000,
}
_INTERVALS: frozenset[str] = frozenset(_FIXED_INTERVAL_MS) | {"1M"}

_MSG_451 = (
    "Service unavailable from a restricted location according to 'b. Eligibility' in "
    "https://www.binance.com/en/terms. Please contact customer service if you believe you "
    "received this message in error."
)
# Real Binance 5xx answers come from the gateway/CDN as HTML, not as Binance JSON, which is
# exactly why ccxt falls back to its HTTP-status table for them.
_HTML_5XX = {
    500: "<html><head><title>500 Internal Server Error</title></head><body>"
    "<center><h1>500 Internal Server Error</h1></center></body></html>",
    502: "<html><head><title>502 Bad Gateway</title></head><body>"
    "<center><h1>502 Bad Gateway</h1></center></body></html>",
    503: "<html><head><title>503 Service Temporarily Unavailable</title></head><body>"
    "<center><h1>503 Service Temporarily Unavailable</h1></center></body></html>",
}


@dataclass
class Request:
    """One HTTP request as the fake server received it.

    Attributes
    ----------
    path : str
        URL path, e.g. ``"/api/v3/klines"``.
    params : dict[str, str]
        Query parameters, values as the raw strings ccxt sent (``"1000"``, not ``1000``).
    """

    path: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class _Series:
    """Candles of one (symbol, interval), pre-split into arrays for fast slicing."""

    open_ms: np.ndarray  # int64, ascending
    values: np.ndarray  # float64, shape (n, 5): open, high, low, close, volume


class _Reset(Exception):
    """Raised inside the handler to drop the connection without an answer."""


def _market_id(symbol: str) -> str:
    base, quote = _split_symbol(symbol)
    return base + quote


def _split_symbol(symbol: str) -> tuple[str, str]:
    parts = symbol.split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"expected a ccxt spot symbol like 'BTC/USDT', got {symbol!r}")
    return parts[0], parts[1]


def _to_series(frame: pd.DataFrame) -> _Series:
    missing = [c for c in OHLCV_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"candle frame lacks columns {missing}")
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise TypeError("candle frame needs a DatetimeIndex of candle open times")
    index = frame.index
    # Naive timestamps are taken as UTC because Binance kline open times are UTC.
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    # as_unit keeps this independent of whichever resolution pandas picked for the index.
    open_ms = np.asarray(index.as_unit("ms").asi8, dtype=np.int64)
    values = frame.loc[:, list(OHLCV_COLUMNS)].to_numpy(dtype=np.float64, copy=True)
    order = np.argsort(open_ms, kind="stable")
    return _Series(open_ms=open_ms[order], values=values[order])


def _close_ms(open_ms: int, interval: str) -> int:
    """Binance's closeTime: one millisecond before the next candle opens."""
    if interval == "1M":
        # Calendar months have no fixed length, so step with a month offset.
        opened = pd.Timestamp(open_ms, unit="ms", tz="UTC")
        return int((opened + pd.DateOffset(months=1)).value // 1_000_000) - 1
    return open_ms + _FIXED_INTERVAL_MS[interval] - 1


def _kline_row(open_ms: int, ohlcv: list[float], interval: str) -> list[Any]:
    o, h, low, c, v = (float(x) for x in ohlcv)
    # Derived columns only need to be plausible: ccxt's OHLCV parser ignores them.
    quote_volume = v * (o + c) / 2.0
    return [
        open_ms,
        repr(o),
        repr(h),
        repr(low),
        repr(c),
        repr(v),
        _close_ms(open_ms, interval),
        repr(quote_volume),
        int(v > 0) * max(1, int(v)),
        repr(v / 2.0),
        repr(quote_volume / 2.0),
        "0",
    ]


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeBinance

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout fault, reset fault) makes our late write fail; that
        # is the scenario under test, not a server bug, so keep stderr clean for it.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, _Reset)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "FakeBinance/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests should stay quiet; self.server.fake.requests is the log

    def do_GET(self) -> None:  # stdlib's naming
        self.server.fake._dispatch(self)

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send_body(status, json.dumps(payload, separators=(",", ":")), headers=headers)

    def send_body(
        self,
        status: int,
        body: str,
        *,
        content_type: str = "application/json;charset=UTF-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def reset(self) -> None:
        # SO_LINGER 0 turns close() into a TCP RST, i.e. a real "connection reset by peer"
        # rather than a polite FIN.
        try:
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        except OSError:
            pass
        self.close_connection = True
        raise _Reset


class FakeBinance:
    """Binance spot REST look-alike served on 127.0.0.1 for the real ``ccxt.binance`` client.

    Parameters
    ----------
    candles : dict[tuple[str, str], pandas.DataFrame] or None
        Candles keyed by ``(ccxt symbol, Binance interval)``, e.g. ``("BTC/USDT", "1h")``. Each
        frame has a UTC ``DatetimeIndex`` of candle open times and float columns ``open, high,
        low, close, volume``. Every symbol in the keys is listed in ``exchangeInfo``.
    max_limit : int, default 1000
        Largest number of klines one request returns (Binance spot allows 1000).

    Attributes
    ----------
    requests : list[Request]
        Every request received, in arrival order, recorded before any fault is applied.
    timeout_seconds : float
        How long the ``"timeout"`` fault stalls before answering (default 3.0 s, i.e. longer
        than the 2 s client timeout of :meth:`ccxt_config`).

    Examples
    --------
    >>> with FakeBinance({("BTC/USDT", "1h"): frame}) as fake:  # doctest: +SKIP
    ...     rows = fake.client().fetch_ohlcv("BTC/USDT", "1h", since=0, limit=10)
    """

    def __init__(
        self,
        candles: dict[tuple[str, str], pd.DataFrame] | None = None,
        *,
        max_limit: int = 1000,
    ) -> None:
        if max_limit < 1:
            raise ValueError("max_limit must be >= 1")
        self.max_limit = max_limit
        self.timeout_seconds: float = 3.0
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._symbols: set[str] = set()
        self._series: dict[tuple[str, str], _Series] = {}
        self._faults: dict[str, deque[str]] = {name: deque() for name in _ENDPOINTS}
        self._klines_delay = 0.0
        self._latest: tuple[int, bool] | None = None
        self._newest_part: int | None = None
        self._disorder: tuple[random.Random, float, float] | None = None
        self._withhold_ms: int | None = None
        self._reshape: Callable[[list[list[Any]], dict[str, str]], list[list[Any]]] | None = None
        self._listed: dict[str, int] = {}
        # Perpetuals by market id ("BTCUSDT"): (ccxt symbol, funding times ms, rates).
        self._funding: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
        self.funding_max_limit = 1000  # Binance's USD-M cap per fundingRate request
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for (symbol, interval), frame in (candles or {}).items():
            self.set_candles(symbol, interval, frame)

    # ----------------------------------------------------------------- configuration

    def add_symbol(self, symbol: str) -> None:
        """List ``symbol`` (e.g. ``"ETH/BTC"``) in ``exchangeInfo`` without serving candles.

        Its klines requests succeed with an empty list, as Binance does for a range without
        trading.
        """
        _split_symbol(symbol)
        with self._lock:
            self._symbols.add(symbol)

    def set_candles(self, symbol: str, interval: str, frame: pd.DataFrame) -> None:
        """Replace the candles served for ``(symbol, interval)``; safe while serving.

        Parameters
        ----------
        symbol : str
            ccxt spot symbol, e.g. ``"BTC/USDT"``; it is also listed in ``exchangeInfo``.
        interval : str
            Binance interval, e.g. ``"1h"``, ``"4h"``, ``"1d"``.
        frame : pandas.DataFrame
            UTC ``DatetimeIndex`` of open times, float ``open, high, low, close, volume``.
        """
        _split_symbol(symbol)
        if interval not in _INTERVALS:
            raise ValueError(f"{interval!r} is not a Binance interval")
        series = _to_series(frame)  # convert outside the lock: frames can be large
        with self._lock:
            self._symbols.add(symbol)
            self._series[(symbol, interval)] = series

    def inject(self, fault: str, *, times: int = 1, endpoint: str = "klines") -> None:
        """Queue ``fault`` for the next ``times`` requests to ``endpoint``.

        Parameters
        ----------
        fault : str
            One of ``"500"``, ``"502"``, ``"503"``, ``"429"``, ``"418"``, ``"451"``, ``"400"``,
            ``"timeout"``, ``"malformed"``, ``"reset"``.
        times : int, default 1
            Number of consecutive requests that get the fault; later ones are answered normally.
        endpoint : str, default "klines"
            ``"klines"``, ``"exchangeInfo"``, ``"fundingRate"`` or ``"futuresExchangeInfo"``.
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {sorted(FAULTS)}")
        if endpoint not in _ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {list(_ENDPOINTS)}")
        if times < 0:
            raise ValueError("times must be >= 0")
        with self._lock:
            self._faults[endpoint].extend([fault] * times)

    def clear_faults(self) -> None:
        """Drop every queued fault on every endpoint."""
        with self._lock:
            for queue in self._faults.values():
                queue.clear()

    def klines_delay(self, seconds: float) -> None:
        """Delay every klines answer by ``seconds`` (0 disables), to make fetches slow."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        with self._lock:
            self._klines_delay = float(seconds)

    def answer_latest(self, count: int | None, *, honour_end: bool = False) -> None:
        """Answer only the latest ``count`` candles, whatever ``startTime`` says (None: off).

        Kraken does this with 720. With ``honour_end`` the latest ``count`` before
        ``endTime`` are answered when one is given (an exchange that pages backwards).
        """
        with self._lock:
            self._latest = None if count is None else (int(count), honour_end)

    def newest_part(self, count: int | None) -> None:
        """Answer only the newest ``count`` candles of the window asked (None: off)."""
        with self._lock:
            self._newest_part = count

    def disorder(self, seed: int | None, *, repeat: float = 0.2, fragments: float = 0.1) -> None:
        """Shuffle every answer's rows, repeat some exactly, add fragments (None: off).

        Parameters
        ----------
        seed
            Seeds the choices; None turns the behaviour off.
        repeat
            Share of rows sent twice, unchanged.
        fragments
            Share of rows sent with a fragment too: the same open time, the close as
            every price and a thousandth of the volume (a partial candle).
        """
        with self._lock:
            self._disorder = None if seed is None else (random.Random(seed), repeat, fragments)

    def withhold_from(self, stamp: pd.Timestamp | None) -> None:
        """Do not publish candles opening at or after ``stamp`` yet (None: publish all)."""
        with self._lock:
            self._withhold_ms = None if stamp is None else int(pd.Timestamp(stamp).value // 10**6)

    def reshape(
        self, change: Callable[[list[list[Any]], dict[str, str]], list[list[Any]]] | None
    ) -> None:
        """Pass every klines answer through ``change(rows, params)`` before sending it."""
        with self._lock:
            self._reshape = change

    def list_since(self, symbol: str, stamp: pd.Timestamp) -> None:
        """Give ``symbol`` a listing date (``onboardDate``, ccxt's ``market["created"]``)."""
        with self._lock:
            self._symbols.add(symbol)
            self._listed[symbol] = int(pd.Timestamp(stamp).value // 10**6)

    def set_funding(self, symbol: str, rates: pd.Series) -> None:
        """List the USD-M perpetual ``symbol`` (``"BTC/USDT:USDT"``) with its funding rates.

        Parameters
        ----------
        symbol : str
            ccxt perpetual symbol, ``BASE/QUOTE:SETTLE``; listed in ``/fapi/v1/exchangeInfo``.
        rates : pandas.Series
            Funding rates on a UTC ``DatetimeIndex`` of funding times.
        """
        pair, _, settle = symbol.partition(":")
        base, quote = _split_symbol(pair)
        if not settle:
            raise ValueError(f"expected a perpetual symbol like 'BTC/USDT:USDT', got {symbol!r}")
        index = pd.DatetimeIndex(rates.index)
        index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        times = np.asarray(index.as_unit("ms").asi8, dtype=np.int64)
        order = np.argsort(times, kind="stable")
        values = np.asarray(rates.to_numpy(dtype=np.float64))[order]
        with self._lock:
            self._funding[base + quote] = (symbol, times[order], values)

    def funding_requests(self) -> list[Request]:
        """Recorded requests to ``/fapi/v1/fundingRate``, oldest first."""
        with self._lock:
            return [r for r in self.requests if r.path == _ENDPOINTS["fundingRate"]]

    # ---------------------------------------------------------------- request log

    def kline_requests(self) -> list[Request]:
        """Recorded requests to ``/api/v3/klines``, oldest first."""
        with self._lock:
            return [r for r in self.requests if r.path == _ENDPOINTS["klines"]]

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self.requests.clear()

    # ------------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Bind an ephemeral port on 127.0.0.1 and serve from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("FakeBinance is already running")
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakeBinance:{server.server_address[1]}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving and release the port; stalled (timeout/delay) answers are cut short."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in a timeout fault or klines delay
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, ``"http://127.0.0.1:PORT"``; only valid while running."""
        if self._server is None:
            raise RuntimeError("FakeBinance is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -------------------------------------------------------------- ccxt plumbing

    def ccxt_config(self, **extra: Any) -> dict[str, Any]:
        """ccxt constructor options that point ``ccxt.binance`` at this server.

        Parameters
        ----------
        **extra
            Further options, deep-merged over the defaults (nested dicts merge key by key).

        Returns
        -------
        dict
            Config with the public API URL overridden, spot-only market loading (otherwise
            ``load_markets`` also calls the futures hosts), a 2 s timeout and no rate limiter.
        """
        base: dict[str, Any] = {
            "urls": {"api": {"public": f"{self.url}/api/v3"}},
            "options": {"fetchMarkets": {"types": ["spot"]}},
            "timeout": 2000,
            "enableRateLimit": False,
        }
        return _deep_merge(base, extra)

    def futures_config(self, **extra: Any) -> dict[str, Any]:
        """:meth:`ccxt_config` with the USD-M futures API on this server too.

        Markets load from spot and linear (``/fapi/v1/exchangeInfo``), so perpetuals are
        listed and ``fetch_funding_rate_history`` reaches ``/fapi/v1/fundingRate``.
        """
        futures = {
            "urls": {"api": {"fapiPublic": f"{self.url}/fapi/v1"}},
            "options": {"fetchMarkets": {"types": ["spot", "linear"]}},
        }
        return self.ccxt_config(**_deep_merge(futures, extra))

    def client(self, **extra: Any) -> ccxt.binance:
        """A fresh ``ccxt.binance`` built from :meth:`ccxt_config` with ``extra``."""
        return ccxt.binance(self.ccxt_config(**extra))

    # ----------------------------------------------------------- request handling

    def _dispatch(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        path = split.path
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        endpoint = next((name for name, p in _ENDPOINTS.items() if p == path), None)
        with self._lock:
            self.requests.append(Request(path=path, params=params))
            fault = None
            if endpoint is not None and self._faults[endpoint]:
                fault = self._faults[endpoint].popleft()
            delay = self._klines_delay if endpoint == "klines" else 0.0

        if fault is not None and self._apply_fault(handler, fault):
            return
        if delay:
            self._stopping.wait(delay)
        if endpoint == "exchangeInfo":
            handler.send_json(200, self._exchange_info())
        elif endpoint == "klines":
            status, payload = self._klines(params)
            handler.send_json(status, payload)
        elif endpoint == "futuresExchangeInfo":
            handler.send_json(200, self._futures_exchange_info())
        elif endpoint == "fundingRate":
            status, payload = self._funding_rates(params)
            handler.send_json(status, payload)
        else:
            handler.send_json(404, {"code": -1, "msg": f"Unknown endpoint {path}."})

    def _apply_fault(self, handler: _Handler, fault: str) -> bool:
        """Answer with ``fault``; return False when the normal answer should follow."""
        if fault == "timeout":
            # Stall past the client's timeout, then answer normally as a slow server would.
            self._stopping.wait(self.timeout_seconds)
            return False
        if fault == "empty":
            handler.send_json(200, [])
        elif fault == "reset":
            handler.reset()
        elif fault == "malformed":
            handler.send_body(200, "[[1,2,")
        elif fault == "429":
            handler.send_json(
                429, {"code": -1003, "msg": "Too many requests."}, headers={"Retry-After": "1"}
            )
        elif fault == "418":
            handler.send_json(
                418,
                {
                    "code": -1003,
                    "msg": "Way too many requests; IP(127.0.0.1) banned until "
                    f"{int(time.time() * 1000) + 60_000}. Please use the websocket for live "
                    "updates to avoid bans.",
                },
                headers={"Retry-After": "60"},
            )
        elif fault == "451":
            handler.send_json(451, {"code": 0, "msg": _MSG_451})
        elif fault == "400":
            handler.send_json(400, {"code": -1100, "msg": "Illegal characters found in parameter."})
        else:
            status = int(fault)
            handler.send_body(status, _HTML_5XX[status], content_type="text/html")
        return True

    def _exchange_info(self) -> dict[str, Any]:
        with self._lock:
            symbols = sorted(self._symbols)
        entries = []
        for symbol in symbols:
            base, quote = _split_symbol(symbol)
            listed = {"onboardDate": self._listed[symbol]} if symbol in self._listed else {}
            entries.append(
                {
                    **listed,
                    "symbol": base + quote,
                    "status": "TRADING",
                    "baseAsset": base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "orderTypes": ["LIMIT", "MARKET"],
                    "icebergAllowed": True,
                    "ocoAllowed": True,
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "permissions": ["SPOT"],
                    "permissionSets": [["SPOT"]],
                    "filters": [],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": int(time.time() * 1000),
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": entries,
        }

    def _futures_exchange_info(self) -> dict[str, Any]:
        with self._lock:
            listed = sorted((market_id, item[0]) for market_id, item in self._funding.items())
        entries = []
        for market_id, symbol in listed:
            pair, _, settle = symbol.partition(":")
            base, quote = _split_symbol(pair)
            entries.append(
                {
                    "symbol": market_id,
                    "pair": market_id,
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000,
                    "onboardDate": 1569398400000,
                    "status": "TRADING",
                    "baseAsset": base,
                    "quoteAsset": quote,
                    "marginAsset": settle,
                    "pricePrecision": 2,
                    "quantityPrecision": 3,
                    "baseAssetPrecision": 8,
                    "quotePrecision": 8,
                    "underlyingType": "COIN",
                    "underlyingSubType": [],
                    "triggerProtect": "0.0500",
                    "liquidationFee": "0.012500",
                    "marketTakeBound": "0.05",
                    "filters": [],
                    "orderTypes": ["LIMIT", "MARKET"],
                    "timeInForce": ["GTC"],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": int(time.time() * 1000),
            "futuresType": "U_MARGINED",
            "rateLimits": [],
            "exchangeFilters": [],
            "assets": [],
            "symbols": entries,
        }

    def _funding_rates(self, params: dict[str, str]) -> tuple[int, Any]:
        # Binance USD-M: ascending from startTime (else the latest), at most `limit`
        # (default 100, capped), bounded by endTime.
        ints: dict[str, int | None] = {}
        for name in ("startTime", "endTime", "limit"):
            raw = params.get(name)
            try:
                ints[name] = None if raw in (None, "") else int(raw)
            except ValueError:
                return 400, {"code": -1100, "msg": f"Illegal characters found in '{name}'."}
        with self._lock:
            found = self._funding.get(params.get("symbol", ""))
            cap = self.funding_max_limit
        if found is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        _, times, rates = found
        start, end = ints["startTime"], ints["endTime"]
        limit = max(1, min(100 if ints["limit"] is None else ints["limit"], cap))
        hi = len(times) if end is None else int(np.searchsorted(times, end, side="right"))
        if start is not None:
            lo = int(np.searchsorted(times, start, side="left"))
            hi = min(hi, lo + limit)
        else:
            lo = max(0, hi - limit)
        return 200, [
            {
                "symbol": params["symbol"],
                "fundingTime": int(ms),
                "fundingRate": f"{rate:.8f}",
                "markPrice": "40000.00000000",
            }
            for ms, rate in zip(times[lo:hi].tolist(), rates[lo:hi].tolist(), strict=True)
        ]

    def _klines(self, params: dict[str, str]) -> tuple[int, Any]:
        market_id = params.get("symbol", "")
        interval = params.get("interval", "")
        if not market_id:
            return 400, _mandatory("symbol")
        if not interval:
            return 400, _mandatory("interval")
        ints: dict[str, int | None] = {}
        for name in ("startTime", "endTime", "limit"):
            raw = params.get(name)
            if raw is None or raw == "":
                ints[name] = None
                continue
            try:
                ints[name] = int(raw)
            except ValueError:
                return 400, {
                    "code": -1100,
                    "msg": f"Illegal characters found in parameter '{name}'; "
                    "legal range is '^[0-9]{1,20}$'.",
                }
        with self._lock:
            symbol = next((s for s in self._symbols if _market_id(s) == market_id), None)
            series = self._series.get((symbol, interval)) if symbol else None
        if symbol is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if interval not in _INTERVALS:
            return 400, {"code": -1120, "msg": "Invalid interval."}
        start, end, limit = ints["startTime"], ints["endTime"], ints["limit"]
        if start is not None and end is not None and start > end:
            return 400, {"code": -1023, "msg": "Start time is greater than end time."}
        limit = 500 if limit is None else limit
        limit = max(1, min(limit, self.max_limit))
        if series is None:
            return 200, []

        with self._lock:
            latest, newest_part, disorder = self._latest, self._newest_part, self._disorder
            withhold, reshape = self._withhold_ms, self._reshape
        open_ms = series.open_ms
        published = len(open_ms) if withhold is None else int(np.searchsorted(open_ms, withhold))
        open_ms = open_ms[:published]
        if latest is not None:
            count, honour_end = latest
            hi = len(open_ms)
            if honour_end and end is not None:
                hi = int(np.searchsorted(open_ms, end, side="right"))
            lo = max(0, hi - count)
        elif start is not None:
            lo = int(np.searchsorted(open_ms, start, side="left"))
            hi = len(open_ms) if end is None else int(np.searchsorted(open_ms, end, side="right"))
            hi = min(hi, lo + limit)
        else:
            # Without startTime Binance anchors at the end: the latest `limit` candles.
            hi = len(open_ms) if end is None else int(np.searchsorted(open_ms, end, side="right"))
            lo = max(0, hi - limit)
        if newest_part is not None:
            lo = max(lo, hi - newest_part)
        rows = [
            _kline_row(int(ms), values, interval)
            for ms, values in zip(
                open_ms[lo:hi].tolist(), series.values[lo:hi].tolist(), strict=True
            )
        ]
        if disorder is not None:
            rows = _disordered(rows, *disorder, interval)
        if reshape is not None:
            rows = reshape(rows, params)
        return 200, rows


def _disordered(
    rows: list[list[Any]], rng: random.Random, repeat: float, fragments: float, interval: str
) -> list[list[Any]]:
    out = list(rows)
    for row in rows:
        if rng.random() < repeat:
            out.append(list(row))
        if rng.random() < fragments:
            close, volume = float(row[4]), float(row[5])
            out.append(
                _kline_row(int(row[0]), [close, close, close, close, volume / 1000], interval)
            )
    rng.shuffle(out)
    return out


def _mandatory(name: str) -> dict[str, Any]:
    return {
        "code": -1102,
        "msg": f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
    }


# ---------------------------------------------------------------------- shared fixtures


def _find_shared_data() -> Path | None:
    # CI clones the repo somewhere else with `shared` beside it, hence the override.
    override = os.environ.get("CFL_SHARED_DATA")
    folder = Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "data"
    return folder if folder.is_dir() else None


#: Folder with the real Binance candle CSVs, or None when it is not available (tests skip).
SHARED_DATA: Path | None = _find_shared_data()


def load_shared_csv(name: str) -> pd.DataFrame | None:
    """Read one of the shared real-candle CSVs, e.g. ``"binance_BTC-USDT_1d.csv"``.

    Parameters
    ----------
    name : str
        File name inside the shared data folder.

    Returns
    -------
    pandas.DataFrame or None
        UTC ``DatetimeIndex`` named ``"timestamp"`` (candle open time) and float64 columns
        ``open, high, low, close, volume``; None when the folder or the file is absent, so
        callers can ``pytest.skip``. The last row is the partial candle the README warns about;
        it is kept, callers decide.
    """
    if SHARED_DATA is None:
        return None
    path = SHARED_DATA / name
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype={c: "float64" for c in OHLCV_COLUMNS})
    index = pd.DatetimeIndex(pd.to_datetime(frame.pop("timestamp"), utc=True), name="timestamp")
    frame.index = index
    return frame
