"""Benchmark: fetching three years of hourly candles through ccxt, and the Parquet cache.

What is measured
----------------
``load_exchange_candles("binance", "BTC/USDT", "1h", since, until, ...)`` for three years
of 1h candles (26,280 rows) served by :class:`FakeBinance` (``tests/fake_exchange.py``), a
Binance look-alike HTTP server on 127.0.0.1 that the real ``ccxt.binance`` client talks to.

* **cold**: an empty cache folder and a fresh ccxt client, so the call loads the markets
  (one ``exchangeInfo`` request), pages through the range with our own ``since`` loop
  (1000 candles per ``klines`` request), builds the frame and writes the Parquet file
  (zstd, fsync, atomic rename). The client is constructed before the timer starts.
* **warm**: the same call again on the filled cache; it must make no request at all.
* **read back**: :meth:`CandleCache.read` alone (Parquet read, metadata, normalisation).
* **write**: :meth:`CandleCache.write` of the same frame alone, for the share of the
  cold call that is Parquet encoding and fsync.

Why
---
The dashboard loads exchange candles through this function on every page run
(``ui/state.py``): the warm path decides how snappy the app feels, the cold path how
long the first look at a series waits. Loopback HTTP keeps ccxt's real
request building and JSON parsing in the measurement while leaving out the internet,
whose latency is estimated from the request count instead (see ``docs/benchmarks.md``).

The candles are a seeded random walk: the point is I/O and parsing, not prices.
ccxt's rate limiter is off (the server is local), except in the one extra measurement
labelled so. The fake server runs in a child process by default (``--in-process``
runs it in a thread instead, as the test suite does). Either way its own Python work,
building and serialising each page, is on the critical path, because every page is
requested only after the previous one arrived; the time it spends answering is
measured separately and reported as "fake server busy", so the client's share of the
cold call can be read off ("client side" = cold − server busy, per run).

Run from the repository root::

    .venv/bin/python bench/fetch_bench.py [--markdown] [--in-process]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple, Protocol

ROOT = Path(__file__).resolve().parents[1]
# The repository root for `forecasting`, tests/ for the fake exchange (not a package).
for _folder in (ROOT / "tests", ROOT):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import ccxt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow  # noqa: E402
from fake_exchange import FakeBinance  # noqa: E402

from forecasting.data.cache import CandleCache  # noqa: E402
from forecasting.data.exchange import source_key  # noqa: E402
from forecasting.data.market import load_exchange_candles  # noqa: E402

EXCHANGE_ID = "binance"
SYMBOL = "BTC/USDT"
TIMEFRAME = "1h"
N_CANDLES = 26_280  # 3 × 365 × 24
START = pd.Timestamp("2023-01-01", tz="UTC")
STEP = pd.Timedelta(hours=1)
PAGE_LIMIT = 1000  # Binance spot's largest klines page
SEED = 20261121

COLD_TARGET_S = 3.0
WARM_TARGET_S = 0.1
# Typical round-trips to Binance's REST API from a home connection or a cloud region
# far from Tokyo; used only for the printed estimate.
RTT_RANGE_S = (0.1, 0.3)


# ------------------------------------------------------------------------------- data


def synthetic_candles(n: int = N_CANDLES, seed: int = SEED) -> pd.DataFrame:
    """Hourly OHLCV candles from a seeded geometric random walk.

    Parameters
    ----------
    n
        Number of candles, opening hourly from :data:`START`.
    seed
        Seed of the random generator, so every run serves identical bytes.

    Returns
    -------
    pd.DataFrame
        UTC ``DatetimeIndex`` named ``timestamp`` and float64 ``open, high, low, close,
        volume`` with full-precision ("ugly") floats, as real prices have.
    """
    rng = np.random.default_rng(seed)
    index = pd.date_range(START, periods=n, freq="h", name="timestamp")
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.006, n)))
    open_ = np.r_[close[0], close[:-1]]
    wick = close * rng.random(n) * 0.004
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) + wick,
            "low": np.minimum(open_, close) - wick,
            "close": close,
            "volume": rng.gamma(2.0, 50.0, n),
        },
        index=index,
    )


# ----------------------------------------------------------------------------- server


class ServerStats(NamedTuple):
    """What the fake exchange has done so far."""

    klines: int
    """Requests to ``/api/v3/klines``."""
    total: int
    """All requests."""
    busy: float
    """Seconds spent handling them (building, serialising and sending the answers)."""


class LocalServer(Protocol):
    """What the benchmark needs from the fake exchange, wherever it runs."""

    def ccxt_config(self) -> dict[str, Any]:
        """ccxt constructor settings pointing ``ccxt.binance`` at the server."""

    def stats(self) -> ServerStats:
        """Requests received and time spent answering them, so far."""

    def close(self) -> None:
        """Stop the server."""


class _BusyClock:
    """Adds up the time :class:`FakeBinance` spends answering requests.

    It wraps the instance's request dispatcher (a private method, used here and only
    here: the benchmark must not change ``tests/fake_exchange.py``). The clock starts
    once the request line and headers are parsed and stops after the answer is written.
    """

    def __init__(self, fake: FakeBinance) -> None:
        self.seconds = 0.0
        self._lock = threading.Lock()
        dispatch = fake._dispatch

        def timed(handler: Any) -> None:
            start = time.perf_counter()
            try:
                dispatch(handler)
            finally:
                with self._lock:
                    self.seconds += time.perf_counter() - start

        fake._dispatch = timed  # type: ignore[method-assign]


def _stats(fake: FakeBinance, clock: _BusyClock) -> ServerStats:
    return ServerStats(len(fake.kline_requests()), len(fake.requests), clock.seconds)


class ThreadServer:
    """:class:`FakeBinance` in a thread of this process (as the tests run it).

    Parameters
    ----------
    frame
        The candles to serve as ``BTC/USDT`` 1h.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self._fake = FakeBinance({(SYMBOL, TIMEFRAME): frame}, max_limit=PAGE_LIMIT)
        self._clock = _BusyClock(self._fake)
        self._fake.start()

    def ccxt_config(self) -> dict[str, Any]:
        """See :meth:`LocalServer.ccxt_config`."""
        return self._fake.ccxt_config()

    def stats(self) -> ServerStats:
        """See :meth:`LocalServer.stats`."""
        return _stats(self._fake, self._clock)

    def close(self) -> None:
        """See :meth:`LocalServer.close`."""
        self._fake.stop()


def _serve(frame: pd.DataFrame, conn: Connection) -> None:
    """Child process body: run :class:`FakeBinance` and answer the parent's questions."""
    fake = FakeBinance({(SYMBOL, TIMEFRAME): frame}, max_limit=PAGE_LIMIT)
    clock = _BusyClock(fake)
    with fake:
        conn.send(fake.ccxt_config())
        while True:
            command = conn.recv()
            if command == "stats":
                conn.send(tuple(_stats(fake, clock)))
            elif command == "stop":
                break
    conn.close()


class ProcessServer:
    """:class:`FakeBinance` in a child process with its own interpreter and GIL.

    Parameters
    ----------
    frame
        The candles to serve as ``BTC/USDT`` 1h.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        context = mp.get_context("spawn")  # no fork of a process that has threads
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(frame, child_conn), name="FakeBinance", daemon=True
        )
        self._process.start()
        child_conn.close()
        if not self._conn.poll(60):
            raise RuntimeError("the fake exchange process did not start within 60 s")
        self._config: dict[str, Any] = self._conn.recv()

    def ccxt_config(self) -> dict[str, Any]:
        """See :meth:`LocalServer.ccxt_config`."""
        return dict(self._config)

    def stats(self) -> ServerStats:
        """See :meth:`LocalServer.stats`."""
        self._conn.send("stats")
        return ServerStats(*self._conn.recv())

    def close(self) -> None:
        """See :meth:`LocalServer.close`."""
        try:
            self._conn.send("stop")
        except OSError:
            pass
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)
        self._conn.close()


# ------------------------------------------------------------------------ measurement


@dataclass
class Timing:
    """Repeated wall-clock measurements of one operation, in seconds."""

    name: str
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median of the runs."""
        return statistics.median(self.seconds)

    @property
    def low(self) -> float:
        """Fastest run."""
        return min(self.seconds)

    @property
    def high(self) -> float:
        """Slowest run."""
        return max(self.seconds)


@dataclass
class Results:
    """Everything one benchmark run measured."""

    server_mode: str
    cache_parent: str
    first_call: float
    client_construction: Timing
    cold: Timing
    cold_server: Timing
    cold_client: Timing
    cold_rate_limited: Timing
    write: Timing
    warm: Timing
    read: Timing
    kline_requests: int
    total_requests: int
    warm_requests: int
    file_bytes: int


@dataclass(frozen=True)
class Call:
    """The one request under test, with a pinned clock."""

    since: pd.Timestamp
    until: pd.Timestamp
    now: pd.Timestamp

    def run(self, client: ccxt.Exchange, cache: CandleCache) -> pd.DataFrame:
        """``load_exchange_candles`` for this range through ``client`` and ``cache``."""
        return load_exchange_candles(
            EXCHANGE_ID,
            SYMBOL,
            TIMEFRAME,
            self.since,
            self.until,
            exchange=client,
            cache=cache,
            now=self.now,
        )


def _timed(action: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``action`` once after a garbage collection; return (seconds, its result)."""
    gc.collect()
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def _check(frame: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Fail loudly if the candles did not survive the round trip bit for bit."""
    if len(frame) != len(expected) or not frame.index.equals(expected.index):
        raise AssertionError(f"got {len(frame)} candles, expected {len(expected)}")
    if not np.array_equal(frame.to_numpy(), expected.to_numpy()):
        raise AssertionError("candle values differ from the ones served")


def run_benchmark(
    cold_runs: int, warm_runs: int, rate_limited_runs: int, in_process: bool, cache_parent: str
) -> Results:
    """Measure cold fetches, warm cache hits and cache reads.

    Parameters
    ----------
    cold_runs
        Cold fetches, each into a fresh empty folder with a fresh ccxt client.
    warm_runs
        Repeats of the warm call and of the bare cache read.
    rate_limited_runs
        Extra cold fetches with ccxt's rate limiter on (0 to skip).
    in_process
        Serve from a thread of this process instead of a child process.
    cache_parent
        Folder in which the temporary cache folders are made (its file system sets the
        cost of fsync).

    Returns
    -------
    Results
        The timings, request counts and file size.
    """
    frame = synthetic_candles()
    call = Call(
        since=START, until=START + N_CANDLES * STEP, now=START + N_CANDLES * STEP + 24 * STEP
    )
    key = source_key(EXCHANGE_ID)  # the key load_exchange_candles uses for a ready client
    server: LocalServer = ThreadServer(frame) if in_process else ProcessServer(frame)
    try:
        config = server.ccxt_config()

        construction = Timing("ccxt.binance(config)")
        for _ in range(cold_runs):
            construction.seconds.append(_timed(lambda: ccxt.binance(config))[0])

        def cold_once(settings: dict[str, Any]) -> tuple[float, ServerStats]:
            client = ccxt.binance(settings)
            before = server.stats()
            with tempfile.TemporaryDirectory(prefix="fetch-bench-", dir=cache_parent) as folder:
                seconds, out = _timed(lambda: call.run(client, CandleCache(folder)))
            after = server.stats()
            _check(out, frame)
            delta = ServerStats(*(a - b for a, b in zip(after, before, strict=True)))
            return seconds, delta

        # The first call in a process also pays one-off costs (lazy imports, first
        # Parquet write): reported on its own, kept out of the cold statistics.
        first_call, _ = cold_once(config)

        cold = Timing("cold fetch")
        cold_server = Timing("  of which fake server busy")
        cold_client = Timing("  of which client side")
        counts: set[tuple[int, int]] = set()
        for _ in range(cold_runs):
            seconds, delta = cold_once(config)
            cold.seconds.append(seconds)
            cold_server.seconds.append(delta.busy)
            cold_client.seconds.append(seconds - delta.busy)
            counts.add((delta.klines, delta.total))
        if len(counts) != 1:
            raise AssertionError(f"request counts varied between cold runs: {sorted(counts)}")
        kline_requests, total_requests = counts.pop()

        limited = Timing("cold fetch, rate limiter on")
        for _ in range(rate_limited_runs):
            limited.seconds.append(cold_once({**config, "enableRateLimit": True})[0])

        def write_once() -> float:
            with tempfile.TemporaryDirectory(prefix="fetch-bench-", dir=cache_parent) as folder:
                cache = CandleCache(folder)
                with cache.lock(key, SYMBOL, TIMEFRAME):
                    return _timed(
                        lambda: cache.write(key, SYMBOL, TIMEFRAME, frame, call.since, call.until)
                    )[0]

        write = Timing("CandleCache.write (zstd, fsync)")
        write.seconds = [write_once() for _ in range(cold_runs)]

        warm = Timing("warm call")
        read = Timing("CandleCache.read")
        with tempfile.TemporaryDirectory(prefix="fetch-bench-", dir=cache_parent) as folder:
            cache = CandleCache(folder)
            client = ccxt.binance(config)
            call.run(client, cache)  # fill the cache (untimed)
            before = server.stats()
            for _ in range(warm_runs):
                seconds, out = _timed(lambda: call.run(client, cache))
                warm.seconds.append(seconds)
            _check(out, frame)
            warm_requests = server.stats().total - before.total
            if warm_requests:
                raise AssertionError(f"the warm calls made {warm_requests} requests, expected 0")
            for _ in range(warm_runs):
                seconds, series = _timed(lambda: cache.read(key, SYMBOL, TIMEFRAME))
                read.seconds.append(seconds)
            if series is None:
                raise AssertionError("the cache read found no series")
            _check(series.candles, frame)
            file_bytes = cache.path(key, SYMBOL, TIMEFRAME).stat().st_size
    finally:
        server.close()

    return Results(
        server_mode="thread in this process" if in_process else "child process",
        cache_parent=cache_parent,
        first_call=first_call,
        client_construction=construction,
        cold=cold,
        cold_server=cold_server,
        cold_client=cold_client,
        cold_rate_limited=limited,
        write=write,
        warm=warm,
        read=read,
        kline_requests=kline_requests,
        total_requests=total_requests,
        warm_requests=warm_requests,
        file_bytes=file_bytes,
    )


# ---------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def _file_system(path: str) -> str:
    """Type and device of the mount holding ``path`` (from /proc/mounts), if known."""
    target = os.path.realpath(path)
    best = ("", "unknown", "")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, kind = line.split()[:3]
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best[0]):
                best = (mount, kind, device)
    except OSError:
        pass
    return f"{best[1]} on {best[2]}" if best[2] else best[1]


def machine(load_before: float | None = None) -> dict[str, str]:
    """The facts about this machine and its software that the figures depend on.

    Parameters
    ----------
    load_before
        The 1-minute load average taken before the benchmark started, if known: other
        work on the machine inflates the figures, and this shows whether there was any.
    """
    ram = _ram_gib()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = f"{os.cpu_count()} logical CPUs" + (f" ({usable} usable)" if usable else "")
    facts = {
        "CPU": _cpu_model(),
        "Cores": cores,
        "RAM": f"{ram:.1f} GiB" if ram is not None else "unknown",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "ccxt": ccxt.__version__,
        "pandas": pd.__version__,
        "pyarrow": pyarrow.__version__,
        "numpy": np.__version__,
        "Date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
    }
    if hasattr(os, "getloadavg"):
        before = f"{load_before:.2f} before, " if load_before is not None else ""
        facts["Load"] = f"{before}{os.getloadavg()[0]:.2f} after (1-minute load average)"
    return facts


# ----------------------------------------------------------------------------- report


def _ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"


def _rows(results: Results) -> list[tuple[Timing, str, bool | None]]:
    """Each timing with its target text and verdict (``None``: informational)."""
    return [
        (results.cold, f"< {COLD_TARGET_S:g} s", results.cold.median < COLD_TARGET_S),
        (results.cold_server, "", None),
        (results.cold_client, "", None),
        (results.warm, f"< {WARM_TARGET_S * 1000:g} ms", results.warm.median < WARM_TARGET_S),
        (results.read, "", None),
        (results.write, "", None),
        (results.cold_rate_limited, "", None),
        (results.client_construction, "", None),
    ]


def _network_estimate(results: Results) -> tuple[float, float]:
    """Seconds of round-trips alone for the cold call's requests over a real network."""
    low, high = RTT_RANGE_S
    return results.total_requests * low, results.total_requests * high


def report_text(results: Results, facts: dict[str, str]) -> str:
    """A plain-text report for the terminal."""
    lines = ["Market data: fetch and cache", ""]
    lines += [f"  {name:<8} {value}" for name, value in facts.items()]
    lines += [
        f"  Server   FakeBinance on 127.0.0.1, {results.server_mode}",
        f"  Cache    temporary folders in {results.cache_parent} "
        f"[{_file_system(results.cache_parent)}]",
        "",
        f"{N_CANDLES:,} synthetic 1h candles {START:%Y-%m-%d} .. "
        f"{START + N_CANDLES * STEP:%Y-%m-%d} (exclusive), {PAGE_LIMIT} per request",
        "",
        f"  {'measurement':<34} {'runs':>4} {'median':>10} {'min':>10} {'max':>10}  target",
    ]
    for timing, target, _ in _rows(results):
        if not timing.seconds:
            continue
        lines.append(
            f"  {timing.name:<34} {len(timing.seconds):>4} {_ms(timing.median):>10} "
            f"{_ms(timing.low):>10} {_ms(timing.high):>10}  {target}"
        )
    low, high = _network_estimate(results)
    lines += [
        f"  {'first cold call in process':<34} {1:>4} {_ms(results.first_call):>10}"
        "  (one-off import costs; not in the cold figures)",
        "",
        f"Cold call requests: {results.kline_requests} klines + "
        f"{results.total_requests - results.kline_requests} exchangeInfo; "
        f"warm calls: {results.warm_requests} requests",
        f"Parquet file: {results.file_bytes:,} bytes ({results.file_bytes / 1024:.0f} KiB)",
        f"Estimate over a real network: {results.total_requests} sequential round-trips x "
        f"{RTT_RANGE_S[0] * 1000:.0f}-{RTT_RANGE_S[1] * 1000:.0f} ms = {low:.1f}-{high:.1f} s "
        "plus the local cost above",
        "",
    ]
    for timing, target, passed in _rows(results):
        if passed is not None:
            verdict = "PASS" if passed else "FAIL"
            lines.append(f"{verdict}  {timing.name}: median {_ms(timing.median)} (target {target})")
    return "\n".join(lines)


def report_markdown(results: Results, facts: dict[str, str]) -> str:
    """A Markdown fragment (machine list and results table) to paste into the docs."""
    fs = _file_system(results.cache_parent)
    lines = [f"- **{name}:** {value}" for name, value in facts.items()]
    lines += [
        f"- **Server:** FakeBinance on 127.0.0.1, {results.server_mode}",
        f"- **Cache folder:** temporary folders under `{results.cache_parent}` ({fs})",
        "",
        "| Measurement | Runs | Median | Min | Max | Target | Result |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for timing, target, passed in _rows(results):
        if not timing.seconds:
            continue
        verdict = "" if passed is None else ("pass" if passed else "**FAIL**")
        # Markdown drops leading spaces, so the "of which" rows get a marker instead.
        name = f"↳ {timing.name.strip()}" if timing.name.startswith(" ") else timing.name
        lines.append(
            f"| {name} | {len(timing.seconds)} | {_ms(timing.median)} | "
            f"{_ms(timing.low)} | {_ms(timing.high)} | {target} | {verdict} |"
        )
    lines.append(
        f"| first cold call in the process | 1 | {_ms(results.first_call)} | | | | "
        "not in the cold row |"
    )
    low, high = _network_estimate(results)
    lines += [
        "",
        f"- Requests per cold call: {results.kline_requests} `klines` + "
        f"{results.total_requests - results.kline_requests} `exchangeInfo`; "
        f"warm calls: {results.warm_requests}.",
        f"- Parquet file: {results.file_bytes:,} bytes ({results.file_bytes / 1024:.0f} KiB).",
        f"- Round-trips alone over a real network: {results.total_requests} × "
        f"{RTT_RANGE_S[0] * 1000:.0f}–{RTT_RANGE_S[1] * 1000:.0f} ms ≈ "
        f"{low:.1f}–{high:.1f} s.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the benchmark, print the report.

    Returns
    -------
    int
        0 when every target is met, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print a Markdown fragment")
    parser.add_argument("--cold-runs", type=int, default=5, help="cold fetches (default 5)")
    parser.add_argument("--warm-runs", type=int, default=20, help="warm calls/reads (default 20)")
    parser.add_argument(
        "--rate-limited-runs",
        type=int,
        default=3,
        help="extra cold fetches with ccxt's rate limiter on (default 3; 0 skips)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="serve from a thread of this process (as the tests do), not a child process",
    )
    parser.add_argument(
        "--cache-parent",
        default=tempfile.gettempdir(),
        help="folder for the temporary cache folders (default: the system temp folder)",
    )
    args = parser.parse_args(argv)
    if args.cold_runs < 1 or args.warm_runs < 1 or args.rate_limited_runs < 0:
        parser.error("--cold-runs and --warm-runs must be >= 1, --rate-limited-runs >= 0")

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    results = run_benchmark(
        args.cold_runs, args.warm_runs, args.rate_limited_runs, args.in_process, args.cache_parent
    )
    facts = machine(load_before)
    print(report_markdown(results, facts) if args.markdown else report_text(results, facts))
    met = all(passed for _, _, passed in _rows(results) if passed is not None)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
