"""The candle cache and ``load_exchange_candles``: fetch only what is missing, survive crashes.

Everything talks to the local fake Binance through the real ccxt client; the kline requests
it records show exactly what was asked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from forecasting.data import CandleCache, fetch_ohlcv, load_exchange_candles
from forecasting.data.exchange import source_key
from forecasting.errors import NoCandles

ROOT = Path(__file__).resolve().parents[1]
HOUR = pd.Timedelta(hours=1)
MS = pd.Timedelta(milliseconds=1)
SYMBOL = "BTC/USDT"
# Open times of the served candles (their values come from the `candles` fixture).
C = pd.date_range("2024-01-01", periods=3000, freq="h", tz="UTC", name="timestamp").as_unit("ms")
LATER = C[-1] + pd.Timedelta(days=10)  # a `now` long after every served candle


class CountingFactory:
    """An exchange factory that counts how often a client was needed."""

    def __init__(self, fake) -> None:
        self.fake = fake
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.fake.client()


@pytest.fixture(scope="module")
def candles(hourly_candles) -> pd.DataFrame:
    """The hourly candles the fake exchange serves, opening at ``C``."""
    return hourly_candles(len(C), C[0])


@pytest.fixture
def fake(fake_binance, candles):
    """The fake exchange serving ``candles`` as BTC/USDT 1h."""
    fake_binance.set_candles(SYMBOL, "1h", candles)
    return fake_binance


def _load(fake, cache, since=None, until=None, *, now=LATER, factory=None, **kwargs):
    return load_exchange_candles(
        "binance",
        SYMBOL,
        "1h",
        since,
        until,
        cache=cache,
        exchange=factory or CountingFactory(fake),
        now=now,
        **kwargs,
    )


def _ms(stamp: pd.Timestamp) -> int:
    return int(stamp.value // 1_000_000)


def _start_times(fake) -> list[int]:
    return sorted(int(r.params["startTime"]) for r in fake.kline_requests())


def _same(frame: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(frame, expected, check_exact=True, check_freq=False)


# ------------------------------------------------------------------ only what is missing


def test_only_the_missing_ranges_are_fetched(fake, tmp_cache, candles):
    _same(_load(fake, tmp_cache, C[1000], C[2000]), candles.iloc[1000:2000])
    assert _start_times(fake) == [_ms(C[1000])]
    fake.clear_requests()

    wider = _load(fake, tmp_cache, C[500], C[2500])

    # One request for what lies before the cached range, one for what lies after the last
    # candle received.
    assert _start_times(fake) == [_ms(C[500]), _ms(C[1999]) + 1]
    direct = fetch_ohlcv(fake.client(), SYMBOL, "1h", C[500], C[2500], now=LATER)
    _same(wider, direct)
    _same(wider, candles.iloc[500:2500])
    cached = tmp_cache.read("binance", SYMBOL, "1h")
    # Covered as answered: up to the last candle received.
    assert (cached.covered_start, cached.covered_end) == (C[500], C[2499] + MS)
    _same(cached.candles, candles.iloc[500:2500])


@pytest.mark.parametrize(
    ("since", "until", "first", "stop"),
    [
        (C[1000], C[2000], 1000, 2000),  # the same range again
        (C[1200], C[1300], 1200, 1300),  # a range inside it
        (C[1999], C[2000], 1999, 2000),  # its last candle alone
        (C[1000] + HOUR / 2, C[1001] + HOUR / 2, 1001, 1002),  # bounds between candles
    ],
)
def test_covered_range_makes_no_request_at_all(fake, tmp_cache, since, until, first, stop, candles):
    _load(fake, tmp_cache, C[1000], C[2000])
    fake.clear_requests()
    factory = CountingFactory(fake)
    progress: list[tuple[str, float, dict]] = []

    frame = _load(
        fake,
        tmp_cache,
        since,
        until,
        factory=factory,
        progress=lambda stage, fraction, details: progress.append((stage, fraction, details)),
    )

    _same(frame, candles.iloc[first:stop])
    assert fake.requests == []  # not even the market list
    assert factory.calls == 0  # no client was even built
    # the page still learns that loading is done, and how many candles it has
    count = stop - first
    assert progress == [("fetch", 1.0, {"done": count, "expected": count})]


def test_progress_counts_over_every_part_fetched(fake, tmp_cache):
    _load(fake, tmp_cache, C[1000], C[2000])
    calls: list[tuple[str, float, dict]] = []

    _load(
        fake,
        tmp_cache,
        C[500],
        C[2500],
        progress=lambda stage, fraction, details: calls.append((stage, fraction, dict(details))),
    )

    # one page before the cached range, one after it: counted as one fetch of 1000 candles
    assert [(stage, details) for stage, _, details in calls] == [
        ("fetch", {"done": 500, "expected": 1000}),
        ("fetch", {"done": 1000, "expected": 1000}),
    ]
    assert [fraction for _, fraction, _ in calls] == [0.5, 1.0]


def test_empty_stretch_before_listing_is_remembered(fake, tmp_cache, candles):
    since = C[0] - 200 * HOUR  # before the pair's first candle
    _same(_load(fake, tmp_cache, since, C[100]), candles.iloc[:100])
    fake.clear_requests()
    _same(_load(fake, tmp_cache, since, C[100]), candles.iloc[:100])
    assert fake.requests == []


def test_range_without_candles_is_remembered(fake, tmp_cache):
    fake.add_symbol("ETH/BTC")  # listed, never traded
    for _ in range(2):
        with pytest.raises(NoCandles):
            load_exchange_candles(
                "binance",
                "ETH/BTC",
                "1h",
                C[0],
                C[100],
                cache=tmp_cache,
                exchange=CountingFactory(fake),
                now=LATER,
            )
    # An empty first answer is asked for twice, and once more bounded by the range's end,
    # before it is believed; then remembered.
    requests = fake.kline_requests()
    assert len(requests) == 3
    assert requests[2].params["endTime"] == str(int(C[100].value // 1_000_000) - 1)
    cached = tmp_cache.read("binance", "ETH/BTC", "1h")
    assert cached.candles.empty
    # Nothing received, but the whole range was asked long after it closed.
    assert (cached.covered_start, cached.covered_end) == (C[0], C[0])
    assert cached.checked_end == C[100]


def test_now_moving_within_a_candle_asks_nothing_and_later_only_the_tail(fake, tmp_cache, candles):
    # until defaults to now and since to 1000 candles before it.
    now = C[2000] + pd.Timedelta(minutes=10)
    _same(_load(fake, tmp_cache, now=now), candles.iloc[1001:2000])
    fake.clear_requests()

    # 40 minutes later the candle that opened at C[2000] is still open: nothing to ask.
    _same(_load(fake, tmp_cache, now=now + pd.Timedelta(minutes=40)), candles.iloc[1001:2000])
    assert fake.requests == []

    # Five candles later only those five are fetched, in one request after the cached ones.
    _same(_load(fake, tmp_cache, now=now + 5 * HOUR), candles.iloc[1006:2005])
    starts = _start_times(fake)
    assert len(starts) == 1
    assert _ms(C[1999]) < starts[0] <= _ms(C[2000])


def test_series_ending_in_a_gap_is_not_asked_again_within_a_candle(fake, tmp_cache, candles):
    # The pair stopped trading at C[1499] (delisted, or an exchange that skips empty
    # candles): the cache ends well before `now`.
    fake.set_candles(SYMBOL, "1h", candles.iloc[:1500])
    now = C[2000] + pd.Timedelta(minutes=10)
    _same(_load(fake, tmp_cache, C[1000], now=now), candles.iloc[1000:1500])
    fake.clear_requests()

    _same(
        _load(fake, tmp_cache, C[1000], now=now + pd.Timedelta(minutes=40)), candles.iloc[1000:1500]
    )

    assert fake.requests == []


def test_monthly_candles_are_fetched_once_the_month_closed(fake, tmp_cache, hourly_candles):
    months = pd.date_range("2022-01-01", periods=36, freq="MS", tz="UTC", name="timestamp")
    monthly = hourly_candles(36).set_axis(months.as_unit("ms"))
    monthly.index.freq = None
    fake.set_candles(SYMBOL, "1M", monthly)

    def load(now: str) -> pd.DataFrame:
        return load_exchange_candles(
            "binance",
            SYMBOL,
            "1M",
            pd.Timestamp("2023-01-01", tz="UTC"),
            cache=tmp_cache,
            exchange=CountingFactory(fake),
            now=pd.Timestamp(now, tz="UTC"),
        )

    _same(load("2024-03-15"), monthly.loc["2023-01":"2024-02"])
    fake.clear_requests()
    # March is still open on its last minute: nothing to ask.
    _same(load("2024-03-31T23:59"), monthly.loc["2023-01":"2024-02"])
    assert fake.requests == []
    # The moment March closes, it is fetched, although March is 31 days long.
    _same(load("2024-04-01"), monthly.loc["2023-01":"2024-03"])
    assert len(fake.kline_requests()) == 1


def test_candle_open_at_now_is_fetched_once_it_closed(fake, tmp_cache, candles):
    now = C[2000] + pd.Timedelta(minutes=59)
    assert _load(fake, tmp_cache, C[1990], now=now).index[-1] == C[1999]
    after_close = _load(fake, tmp_cache, C[1990], now=C[2001])
    _same(after_close, candles.iloc[1990:2001])


# ------------------------------------------------------------------------ concurrency

_CHILD_FETCH = """
import json, sys
import pandas as pd
from forecasting.data import CandleCache, load_exchange_candles
config, cache_dir, since, until, now, out = json.loads(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # wait for the go, to start together with the threads
frame = load_exchange_candles(
    "binance", "BTC/USDT", "1h", pd.Timestamp(since), pd.Timestamp(until),
    config=config, cache=CandleCache(cache_dir), now=pd.Timestamp(now),
)
frame.to_pickle(out)
"""


def test_concurrent_fetches_share_one_download(fake, tmp_path, candles):
    fake.klines_delay(0.05)
    config = fake.ccxt_config()
    cache_dir = tmp_path / "cache"
    since, until = C[0], C[2500]
    child_out = tmp_path / "child.pkl"
    args = [config, str(cache_dir), str(since), str(until), str(LATER), str(child_out)]
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD_FETCH, json.dumps(args)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        threads_n = 4
        barrier = threading.Barrier(threads_n + 1)
        results: list[pd.DataFrame] = []
        errors: list[BaseException] = []

        def fetch() -> None:
            barrier.wait()
            try:
                frame = load_exchange_candles(
                    "binance",
                    SYMBOL,
                    "1h",
                    since,
                    until,
                    config=config,
                    cache=CandleCache(cache_dir),
                    now=LATER,
                )
                results.append(frame)
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=fetch) for _ in range(threads_n)]
        for thread in threads:
            thread.start()
        child.stdin.write("go\n")
        child.stdin.flush()
        barrier.wait()
        for thread in threads:
            thread.join(timeout=30)
        _, stderr = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    assert errors == []
    assert child.returncode == 0, stderr
    expected = candles.iloc[:2500]
    for frame in [*results, pd.read_pickle(child_out)]:
        _same(frame, expected)
    assert len(results) == threads_n
    cached = CandleCache(cache_dir).read(source_key("binance", config), SYMBOL, "1h")
    _same(cached.candles, expected)
    # One download of 3 pages; everybody else waited for the lock and read the cache.
    assert len(fake.kline_requests()) == 3


# --------------------------------------------------------------------- damaged files


def _parquet_without_our_metadata(path: Path, candles: pd.DataFrame) -> None:
    frame = candles.iloc[:10].reset_index()
    pq.write_table(pa.Table.from_pandas(frame), path)


def _truncated_parquet(path: Path, candles: pd.DataFrame) -> None:
    cache = CandleCache(path.parents[2])
    cache.write("binance", SYMBOL, "1h", candles.iloc[:500], C[0], C[500])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _future_format_version(path: Path, candles: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(candles.iloc[:10])
    meta = {b"crypto_forecast_lab": json.dumps({"version": 99}).encode()}
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, **meta}), path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda path, _: path.write_bytes(b"\x00garbage, not parquet\xff" * 50),  # garbage bytes
        lambda path, _: path.write_bytes(b""),  # an empty file
        _truncated_parquet,  # a write cut short by a full disk
        _parquet_without_our_metadata,  # someone else's parquet file
        _future_format_version,  # written by a newer version of the app
    ],
)
def test_unreadable_cache_file_is_set_aside_and_fetched_again(fake, tmp_cache, damage, candles):
    path = tmp_cache.path("binance", SYMBOL, "1h")
    path.parent.mkdir(parents=True)
    damage(path, candles)

    assert tmp_cache.read("binance", SYMBOL, "1h") is None

    assert not path.exists()
    assert len(list(path.parent.glob("1h.parquet.corrupt-*"))) == 1
    _same(_load(fake, tmp_cache, C[0], C[1200]), candles.iloc[:1200])
    _same(tmp_cache.read("binance", SYMBOL, "1h").candles, candles.iloc[:1200])


def test_damaged_file_found_by_load_exchange_candles_is_fetched_again(fake, tmp_cache, candles):
    _load(fake, tmp_cache, C[0], C[100])
    path = tmp_cache.path("binance", SYMBOL, "1h")
    path.write_bytes(path.read_bytes()[:-40])  # the footer is gone
    fake.clear_requests()

    _same(_load(fake, tmp_cache, C[0], C[100]), candles.iloc[:100])

    assert len(fake.kline_requests()) == 1
    assert len(list(path.parent.glob("1h.parquet.corrupt-*"))) == 1


_CHILD_STALLED_WRITE = """
import sys, time, io
import pandas as pd
import pyarrow.parquet as pq
from forecasting.data import CandleCache
root, pickled = sys.argv[1], sys.argv[2]
frame = pd.read_pickle(pickled)
real_write_table = pq.write_table

def stalled(table, where, **kwargs):
    buffer = io.BytesIO()
    real_write_table(table, buffer, **kwargs)
    data = buffer.getvalue()
    where.write(data[: len(data) // 2])
    where.flush()
    print("stalled", flush=True)
    time.sleep(60)

pq.write_table = stalled
cache = CandleCache(root)
with cache.lock("binance", "BTC/USDT", "1h"):
    cache.write("binance", "BTC/USDT", "1h", frame, frame.index[0], frame.index[-1])
"""


def test_writer_killed_mid_write_leaves_the_previous_version(
    tmp_cache, tmp_path, candles, hourly_candles
):
    first = candles.iloc[:100]
    with tmp_cache.lock("binance", SYMBOL, "1h"):
        tmp_cache.write("binance", SYMBOL, "1h", first, C[0], C[100])
    second = hourly_candles(20_000, seed=11)
    pickled = tmp_path / "second.pkl"
    second.to_pickle(pickled)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD_STALLED_WRITE, str(tmp_cache.root), str(pickled)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline().strip()
        assert line == "stalled", child.stderr.read()
        folder = tmp_cache.path("binance", SYMBOL, "1h").parent
        leftovers = list(folder.glob(".tmp-1h-*.parquet"))
        assert len(leftovers) == 1
        assert leftovers[0].stat().st_size > 0
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL

    cached = tmp_cache.read("binance", SYMBOL, "1h")
    _same(cached.candles, first)
    assert (cached.covered_start, cached.covered_end) == (C[0], C[100])

    # The dead writer's lock is gone with it; its temporary file goes with the next write.
    third = candles.iloc[:200]
    with tmp_cache.lock("binance", SYMBOL, "1h"):
        tmp_cache.write("binance", SYMBOL, "1h", third, C[0], C[200])
    assert list(folder.glob(".tmp-*")) == []
    _same(tmp_cache.read("binance", SYMBOL, "1h").candles, third)


# ----------------------------------------------------------------------- cache basics


def test_write_then_read_is_exact(tmp_cache, candles):
    path = tmp_cache.write("binance", SYMBOL, "1h", candles, C[0] - HOUR, LATER)
    assert path == tmp_cache.path("binance", SYMBOL, "1h")
    cached = tmp_cache.read("binance", SYMBOL, "1h")
    _same(cached.candles, candles)
    assert (cached.covered_start, cached.covered_end) == (C[0] - HOUR, LATER)
    assert tmp_cache.read("binance", SYMBOL, "4h") is None  # another series, not there


@pytest.mark.parametrize(
    ("source", "symbol", "timeframe"),
    [
        ("binance", "BTC/USDT", "1h"),  # the separator of a symbol is not a folder
        ("../../etc", "BTC/USDT", "1h"),  # a hostile source never escapes the root
        ("binance", "..", "1h"),
        ("binance", "BTC/USDT:USDT", "1M"),  # a swap symbol, a month timeframe
    ],
)
def test_cache_paths_stay_under_the_root(tmp_cache, source, symbol, timeframe):
    path = tmp_cache.path(source, symbol, timeframe)
    assert path.resolve().is_relative_to(tmp_cache.root.resolve())
    assert len(path.relative_to(tmp_cache.root).parts) == 3
    assert path.name.endswith(".parquet")


def test_timeframes_and_sources_do_not_share_files(tmp_cache):
    paths = [
        tmp_cache.path("binance", SYMBOL, "1h"),
        tmp_cache.path("binance", SYMBOL, "1m"),  # minutes
        tmp_cache.path("binance", SYMBOL, "1M"),  # months
        tmp_cache.path("binance", "BTC/USD", "1h"),
        tmp_cache.path("bitstamp", SYMBOL, "1h"),
    ]
    # Distinct even where file names ignore case (macOS and Windows by default).
    assert len({str(path).casefold() for path in paths}) == 5
