"""A local stand-in for alternative.me's Fear & Greed API (``/fng/``), served on 127.0.0.1.

It answers in the public API's shape (captured from ``GET /fng/?limit=0&format=json``, the
values invented)::

    {"name": "Fear and Greed Index",
     "data": [{"value": "40", "value_classification": "Fear", "timestamp": "1551157200",
               "time_until_update": "68499"}, ...],
     "metadata": {"error": null}}

newest first, ``time_until_update`` only on the newest value. The server has its own clock
(:attr:`FakeFearGreed.now`): a value is served only once its publication time has passed,
so a value published late, and a day never published, can both be imitated. Faults
(HTTP errors, a garbled body) can be queued with :meth:`FakeFearGreed.inject`.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import pandas as pd

__all__ = ["FakeFearGreed", "classify"]


def classify(value: int) -> str:
    """alternative.me's words for a value."""
    if value < 25:
        return "Extreme Fear"
    if value < 47:
        return "Fear"
    if value < 55:
        return "Neutral"
    if value < 76:
        return "Greed"
    return "Extreme Greed"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeFearGreed


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # stdlib's naming
        status, body = self.server.fake._answer(self.path)
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeFearGreed:
    """alternative.me's ``/fng/`` look-alike.

    Parameters
    ----------
    values
        Index value per UTC day (``{"2024-01-01": 40, ...}``); a day left out is a day the
        API never published.

    Attributes
    ----------
    now
        The server's clock: values published after it are not served yet.
    requests
        The query parameters of every request received, in order.
    """

    def __init__(self, values: dict[str, int] | None = None) -> None:
        self.now = pd.Timestamp("2100-01-01", tz="UTC")
        self.requests: list[dict[str, str]] = []
        self._values: dict[pd.Timestamp, tuple[int, pd.Timestamp, pd.Timedelta]] = {}
        self._faults: deque[str] = deque()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for day, value in (values or {}).items():
            self.set_value(day, value)

    def set_value(
        self,
        day: str | pd.Timestamp,
        value: int,
        *,
        published: str | pd.Timestamp | None = None,
        stamp_offset: pd.Timedelta | None = None,
    ) -> None:
        """Serve ``value`` for ``day`` from ``published`` on (default: the day's start).

        ``stamp_offset`` moves its ``timestamp`` within the day (early values carry 05:00).
        """
        start = _utc(day).normalize()
        at = start if published is None else _utc(published)
        with self._lock:
            self._values[start] = (int(value), at, stamp_offset or pd.Timedelta(0))

    def inject(self, fault: str, *, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``fault``: an HTTP status such as
        ``"503"``, ``"garbled"`` (a body cut short) or ``"error"`` (``metadata.error``)."""
        with self._lock:
            self._faults.extend([fault] * times)

    def _answer(self, path: str) -> tuple[int, str]:
        split = urlsplit(path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        with self._lock:
            self.requests.append(params)
            fault = self._faults.popleft() if self._faults else None
            now = self.now
            served = sorted(
                ((day, v, off) for day, (v, at, off) in self._values.items() if at <= now),
                reverse=True,
            )
        if split.path.rstrip("/") != "/fng":
            return 404, json.dumps({"data": [], "metadata": {"error": "Not found"}})
        if fault == "garbled":
            return 200, '{"name": "Fear and Greed Index", "data": [{"value": "4'
        if fault == "error":
            return 200, json.dumps({"data": [], "metadata": {"error": "Temporarily unavailable"}})
        if fault is not None:
            return int(fault), "<html><body>error</body></html>"
        limit = int(params.get("limit", "1") or 1)
        if limit > 0:
            served = served[:limit]
        data = []
        for position, (day, value, offset) in enumerate(served):
            entry = {
                "value": str(value),
                "value_classification": classify(value),
                "timestamp": str(int((day + offset).timestamp())),
            }
            if position == 0:
                # Seconds until the next value is due (negative when it is late).
                due = day + pd.Timedelta(days=1)
                entry["time_until_update"] = str(int((due - now).total_seconds()))
            data.append(entry)
        return 200, json.dumps(
            {"name": "Fear and Greed Index", "data": data, "metadata": {"error": None}}
        )

    def start(self) -> Self:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The ``/fng/`` address, as ``CFL_FEAR_GREED_URL`` takes it."""
        if self._server is None:
            raise RuntimeError("FakeFearGreed is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/fng/"


def _utc(value: str | pd.Timestamp) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")
