"""Bounded work for any input: sparse files, absurd prices, and a cache that stops growing.

The reproduction inputs of issue 13 first (a 223-byte CSV that made the quality report and
"Fill gaps" build 31 million candles; prices near 1e308), then properties over random
timestamp sets: gaps equal a brute-force listing on small spans, and memory stays flat on
spans of up to ten thousand years.
"""

from __future__ import annotations

import os
import re
import threading
import time
import tracemalloc

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.data import csvfile, quality
from forecasting.data.cache import (
    DEFAULT_MAX_CANDLES_PER_SERIES,
    CandleCache,
    default_max_candles,
)
from forecasting.data.csvfile import read_ohlcv_csv
from forecasting.data.market import load_exchange_candles
from forecasting.data.quality import (
    MAX_EXPECTED_CANDLES,
    expected_candles,
    fill_gaps,
    quality_report,
)
from forecasting.errors import (
    ConfigurationError,
    DataFormatError,
    DataUnavailable,
    ExchangeFailure,
)
from forecasting.ohlcv import (
    COLUMNS,
    MAX_PRICE,
    expected_timestamps,
    frame_from_rows,
    normalize_ohlcv,
    timeframe_offset,
)

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEADER = "timestamp,open,high,low,close,volume"

# Issue 13's file: six rows one second apart... the last a year later.
SPARSE_CSV = (
    HEADER
    + "\n"
    + "".join(f"2024-01-01T00:00:0{i}Z,1,1,1,1,1\n" for i in range(5))
    + "2025-01-01T00:00:00Z,1,1,1,1,1\n"
).encode()


def _flat(index: pd.DatetimeIndex) -> pd.DataFrame:
    n = len(index)
    return pd.DataFrame(
        {
            "open": np.full(n, 100.0),
            "high": np.full(n, 101.0),
            "low": np.full(n, 99.0),
            "close": np.full(n, 100.0),
            "volume": np.arange(1.0, n + 1.0),
        },
        index=pd.DatetimeIndex(index, name="timestamp").as_unit("ms"),
    )


def _peak(call) -> tuple[object, int, float]:
    """``call()``'s result (or the exception it raised), its peak traced memory, its seconds."""
    started = time.perf_counter()
    tracemalloc.start()
    try:
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001 - returned for the test to inspect
            result = exc
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak, time.perf_counter() - started


# --- the reproduction: a 223-byte file ---------------------------------------------------


def test_sparse_file_is_refused_at_once_in_one_line() -> None:
    assert len(SPARSE_CSV) == 223
    # the app parses uploads from their bytes (ui.state.parse_csv -> read_ohlcv_csv)
    error, peak, seconds = _peak(lambda: read_ohlcv_csv(SPARSE_CSV))
    assert isinstance(error, DataFormatError)
    message = str(error)
    assert "\n" not in message
    assert "31,622,401 1s candles" in message
    assert f"over the limit of {MAX_EXPECTED_CANDLES:,}" in message
    assert "2024-01-01 00:00 to 2025-01-01 00:00 UTC" in message
    assert "larger timeframe" in message
    assert "shorter range" in message
    assert "split it" in message
    assert seconds < 1.0
    assert peak < 2_000_000  # it was about 3 GB


def test_sparse_candles_are_reported_and_fill_gaps_refused_without_building_them() -> None:
    stamps = pd.DatetimeIndex(
        [*pd.date_range("2024-01-01", periods=5, freq="s", tz="UTC"), "2025-01-01T00:00Z"]
    )
    frame = _flat(stamps)
    report, peak, seconds = _peak(lambda: quality_report(frame, "1s"))
    assert (report.candles, report.missing, report.expected) == (6, 31_622_395, 31_622_401)
    assert report.gaps["start"].tolist() == [pd.Timestamp("2024-01-01T00:00:05Z")]
    assert report.gaps["end"].tolist() == [pd.Timestamp("2024-12-31T23:59:59Z")]
    assert peak < 1_000_000
    assert seconds < 1.0

    error, peak, seconds = _peak(lambda: fill_gaps(frame, "1s"))
    assert isinstance(error, ConfigurationError)
    assert "\n" not in str(error)
    assert "31,622,401 1s candles from 6 real ones" in str(error)
    assert f"over the limit of {MAX_EXPECTED_CANDLES:,}" in str(error)
    assert "larger timeframe or a shorter date range" in str(error)
    assert peak < 1_000_000
    assert seconds < 1.0


@pytest.mark.parametrize(
    ("timeframe", "calendar"),
    [
        ("1h", "24/7"),  # fixed steps
        ("1d", "business"),  # business days
        ("1M", "24/7"),  # calendar months
    ],
)
def test_the_limit_is_exact(monkeypatch, timeframe: str, calendar: str) -> None:
    grid = expected_timestamps(
        pd.Timestamp("2024-01-01", tz="UTC"),
        pd.Timestamp("2030-01-01", tz="UTC"),
        timeframe,
        calendar=calendar,
    )[:12]
    frame = _flat(grid[[0, 5, 11]])  # 12 expected candles, 9 of them missing
    assert expected_candles(frame.index, timeframe, calendar=calendar) == 12

    monkeypatch.setattr(quality, "MAX_EXPECTED_CANDLES", 12)
    filled, inserted = fill_gaps(frame, timeframe, calendar=calendar)
    assert filled.index.equals(grid.as_unit("ms"))
    assert len(inserted) == 9
    monkeypatch.setattr(quality, "MAX_EXPECTED_CANDLES", 11)
    with pytest.raises(ConfigurationError, match="12 .* candles from 3 real ones"):
        fill_gaps(frame, timeframe, calendar=calendar)
    # without gaps nothing is built, so nothing is refused
    assert len(fill_gaps(_flat(grid), timeframe, calendar=calendar)[0]) == 12

    text = HEADER + "\n" + "".join(f"{t:%Y-%m-%dT%H:%M:%SZ},1,1,1,1,1\n" for t in grid[:11])
    monkeypatch.setattr(csvfile, "MAX_EXPECTED_CANDLES", 11)
    assert len(read_ohlcv_csv(text.encode()).candles) == 11
    monkeypatch.setattr(csvfile, "MAX_EXPECTED_CANDLES", 10)
    with pytest.raises(DataFormatError, match="over the limit of 10"):
        read_ohlcv_csv(text.encode())


def test_spans_beyond_nanoseconds_are_counted_exactly() -> None:
    # 1677 to 2262 is more nanoseconds than an int64 holds; years 1 and 9999 are not
    # nanosecond timestamps at all. Both once gave a wrong count or a traceback.
    for first, last in [
        ("1677-09-22T00:00:00Z", "2262-04-10T00:00:00Z"),
        ("0001-01-01T00:00:00Z", "9999-04-10T00:00:00Z"),
    ]:
        index = pd.DatetimeIndex([first, last]).as_unit("ms")
        seconds = (index.asi8[1] - index.asi8[0]) // 1000
        assert quality_report(_flat(index), "1s").expected == seconds + 1
        seconds_apart = pd.date_range(first, periods=3, freq="s")
        rows = [f"{t.isoformat()},1,1,1,1,1\n" for t in seconds_apart]
        text = (HEADER + "\n" + "".join(rows) + f"{last},1,1,1,1,1\n").encode()
        # Years outside 1900-2099 are mistyped dates, refused by line before any count.
        with pytest.raises(DataFormatError, match=r"^Line 2, column 'timestamp': .* outside"):
            read_ohlcv_csv(text)
    # The widest span the reader takes, at one second apart: counted, refused by its size.
    seconds_apart = pd.date_range("1900-01-01", periods=3, freq="s")
    rows = [f"{t.isoformat()},1,1,1,1,1\n" for t in seconds_apart]
    text = (HEADER + "\n" + "".join(rows) + "2099-12-31T00:00:00Z,1,1,1,1,1\n").encode()
    with pytest.raises(DataFormatError, match="holds 6,311,347,201 1s candles, over the limit"):
        read_ohlcv_csv(text)


# --- gaps from differences equal the brute-force listing -----------------------------------

GRIDS = [
    ("1s", "24/7"),
    ("1m", "24/7"),
    ("1h", "24/7"),
    ("4h", "24/7"),
    ("1d", "24/7"),
    ("1d", "business"),
    ("1w", "24/7"),
    ("1M", "24/7"),
    ("3M", "24/7"),
    ("1y", "24/7"),
]


def _listed(index: pd.DatetimeIndex, timeframe: str, calendar: str):
    """Every expected open time and the runs missing among them: the brute-force reference."""
    expected = expected_timestamps(index[0], index[-1], timeframe, calendar=calendar)
    absent = expected.difference(index)
    runs = []
    if len(absent):
        position = expected.get_indexer(absent)
        starts = np.flatnonzero(np.diff(position, prepend=-2) != 1)
        ends = np.append(starts[1:], len(position)) - 1
        runs = list(zip(absent[starts], absent[ends], (ends - starts + 1).tolist(), strict=True))
    return expected, absent, runs


@st.composite
def irregular_candles(draw) -> tuple[pd.DatetimeIndex, str, str]:
    """Open times on and off a grid of a random timeframe, anchored anywhere in time."""
    timeframe, calendar = draw(st.sampled_from(GRIDS))
    step = timeframe_offset(timeframe)
    if isinstance(step, pd.Timedelta):
        length = step
    else:  # a calendar month or year, at its longest
        length = pd.Timedelta(
            days=31 * (step.kwds.get("months", 0) + 12 * step.kwds.get("years", 0))
        )
    # any day from 1970 to 2100, month ends (which calendar months cut) and weekends
    # (which business days skip) often, at midnight or any millisecond of the day
    month = pd.Timestamp(draw(st.integers(1970, 2100)), draw(st.integers(1, 12)), 1, tz="UTC")
    day = draw(st.one_of(st.sampled_from([27, 28, 29, 30]), st.integers(0, 30)))
    day = min(day, month.days_in_month - 1)
    time_of_day = draw(st.one_of(st.just(0), st.integers(0, 86_399_999)))
    first = month + pd.Timedelta(days=day, milliseconds=time_of_day)
    steps = draw(st.integers(1, 120))
    grid = expected_timestamps(first, first + steps * length, timeframe, calendar=calendar)
    on = draw(st.lists(st.sampled_from(list(grid)), max_size=40)) if len(grid) else []
    span_ms = int((steps * length) / pd.Timedelta(milliseconds=1))
    off = draw(st.lists(st.integers(1, span_ms), max_size=10))
    index = pd.DatetimeIndex(
        [first, *on, *(first + pd.Timedelta(milliseconds=ms) for ms in off)], name="timestamp"
    )
    return index.as_unit("ms").unique().sort_values(), timeframe, calendar


@settings(PROPERTY, max_examples=400)
@given(irregular_candles())
def test_gaps_equal_listing_every_expected_candle(case) -> None:
    index, timeframe, calendar = case
    expected, absent, runs = _listed(index, timeframe, calendar)
    report = quality_report(_flat(index), timeframe, calendar=calendar)
    assert list(report.gaps.itertuples(index=False, name=None)) == runs
    assert report.missing == len(absent)
    assert report.expected == len(index) + len(absent)
    assert expected_candles(index, timeframe, calendar=calendar) == report.expected

    filled, inserted = fill_gaps(_flat(index), timeframe, calendar=calendar)
    assert list(inserted) == list(absent)
    assert filled.index.equals(expected.union(index).as_unit("ms"))


FAR = (-62_135_596_800_000, 253_402_300_799_000)  # 0001-01-01 to 9999-12-31, in ms


@PROPERTY
@given(
    st.sampled_from(GRIDS),
    st.lists(st.integers(*FAR), min_size=2, max_size=40, unique=True),
)
def test_memory_follows_the_candles_on_any_span(grid, stamps: list[int]) -> None:
    timeframe, calendar = grid
    index = pd.DatetimeIndex(pd.to_datetime(sorted(stamps), unit="ms", utc=True)).as_unit("ms")
    frame = _flat(index)
    report, peak, _ = _peak(lambda: quality_report(frame, timeframe, calendar=calendar))
    assert not isinstance(report, Exception), report
    # Calendar months are listed (at most 120,000 in ten thousand years); every other
    # grid costs the same for ten candles whatever their span.
    assert peak < (16_000_000 if timeframe[-1] in "My" else 1_000_000)
    gaps = report.gaps
    assert report.expected == report.candles + int(gaps["missing"].sum())
    assert (gaps["missing"] >= 1).all()
    # runs are ordered, apart, and between the first and the last candle
    assert (gaps["start"] <= gaps["end"]).all()
    assert (gaps["start"].iloc[1:].to_numpy() > gaps["end"].iloc[:-1].to_numpy()).all()
    if len(gaps):
        assert gaps["start"].iloc[0] > index[0]
        assert gaps["end"].iloc[-1] <= index[-1]
    if report.expected > MAX_EXPECTED_CANDLES:
        result, peak, _ = _peak(lambda: fill_gaps(frame, timeframe, calendar=calendar))
        assert isinstance(result, ConfigurationError)
        assert peak < 1_000_000


# --- absurd prices ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "column", "line"),
    [
        ("1e308", "close", 3),  # issue 13: near the largest float, inf one sum later
        ("1.7976931348623157e308", "high", 3),  # the largest float itself
        ("1000000000000001", "open", 3),  # just above MAX_PRICE
    ],
)
def test_csv_with_an_absurd_price_is_refused_naming_line_and_value(
    cell: str, column: str, line: int
) -> None:
    rows = {name: "100" for name in COLUMNS}
    rows[column] = cell
    text = (
        f"{HEADER}\n2024-01-01T00:00:00Z,100,101,99,100,1\n"
        f"2024-01-01T01:00:00Z,{rows['open']},{rows['high']},{rows['low']},"
        f"{rows['close']},1\n2024-01-01T02:00:00Z,100,101,99,100,1\n"
    )
    with pytest.raises(DataFormatError) as caught:
        read_ohlcv_csv(text.encode())
    assert (caught.value.row, caught.value.column) == (line, column)
    message = str(caught.value)
    assert "\n" not in message
    assert f"Line {line}, column '{column}': '{cell}' is above 1e+15" in message


def test_csv_price_at_the_limit_is_kept() -> None:
    text = f"{HEADER}\n2024-01-01,1e15,1e15,1e15,1e15,1\n2024-01-02,1e15,1e15,1e15,1e15,1\n"
    assert (read_ohlcv_csv(text.encode()).candles["close"] == MAX_PRICE).all()


@PROPERTY
@given(
    st.lists(
        st.tuples(*[st.floats(min_value=1e-9, max_value=1e308)] * 4),
        min_size=1,
        max_size=20,
    )
)
def test_every_loader_refuses_exactly_the_absurd_prices(prices) -> None:
    rows = [[3_600_000 * i, *p, 1.0] for i, p in enumerate(prices)]
    flat = np.asarray(prices)
    absurd = flat > MAX_PRICE
    if absurd.any():
        row, column = np.argwhere(absurd)[0]
        with pytest.raises(ExchangeFailure) as caught:
            frame_from_rows(rows)
        value = repr(float(flat[row, column]))
        stamp = pd.Timestamp(rows[row][0], unit="ms", tz="UTC")
        assert f"a {COLUMNS[column]} of {value} for the candle at {stamp:%Y-%m-%d %H:%M}" in str(
            caught.value
        )
        frame = pd.DataFrame([r[1:] for r in rows], columns=list(COLUMNS))
        frame.index = pd.to_datetime([r[0] for r in rows], unit="ms", utc=True)
        with pytest.raises(
            DataUnavailable, match=re.escape(f"has a {COLUMNS[column]} of {value},")
        ):
            normalize_ohlcv(frame)
    else:
        assert np.isfinite(frame_from_rows(rows).to_numpy()).all()


def test_exchange_sending_an_absurd_price_is_refused_and_nothing_cached(
    fake_binance, tmp_cache, hourly_candles
) -> None:
    candles = hourly_candles(48, "2024-01-01")
    candles.iloc[30, candles.columns.get_loc("high")] = 1e300
    fake_binance.set_candles("BTC/USDT", "1h", candles)
    with pytest.raises(ExchangeFailure) as caught:
        load_exchange_candles(
            "binance",
            "BTC/USDT",
            "1h",
            candles.index[0],
            candles.index[-1],
            cache=tmp_cache,
            exchange=fake_binance.client,
            now=pd.Timestamp("2024-02-01", tz="UTC"),
        )
    message = str(caught.value)
    assert "\n" not in message
    assert "a high of 1e+300 for the candle at 2024-01-02 06:00 UTC, above 1e+15" in message
    assert tmp_cache.read("binance", "BTC/USDT", "1h") is None


def test_cache_file_with_an_absurd_price_is_set_aside(tmp_cache, hourly_candles) -> None:
    # written before prices were checked: read as damaged, so it is fetched again
    path = tmp_cache.path("binance", "BTC/USDT", "1h")
    tmp_cache.write(
        "binance", "BTC/USDT", "1h", hourly_candles(5), *hourly_candles(5).index[[0, -1]]
    )
    table = pq.read_table(path)
    close = table.column("close").to_pylist()
    close[2] = 1e308
    table = table.set_column(table.schema.get_field_index("close"), "close", pa.array(close))
    pq.write_table(table, path)
    assert tmp_cache.read("binance", "BTC/USDT", "1h") is None
    assert len(list(path.parent.glob("1h.parquet.corrupt-*"))) == 1


# --- the candle cache keeps the newest N candles per series --------------------------------


def test_cache_keeps_the_newest_candles(tmp_path, hourly_candles) -> None:
    candles = hourly_candles(1000)
    start, end = candles.index[0], candles.index[-1] + pd.Timedelta(hours=1)
    unbounded = CandleCache(tmp_path / "all", max_candles_per_series=10_000)
    bounded = CandleCache(tmp_path / "few", max_candles_per_series=100)
    full_path = unbounded.write("x", "BTC/USDT", "1h", candles, start, end)
    path = bounded.write("x", "BTC/USDT", "1h", candles, start, end, nonpositive=[candles.index[0]])

    cached = bounded.read("x", "BTC/USDT", "1h")
    pd.testing.assert_frame_equal(cached.candles, candles.iloc[-100:], check_freq=False)
    # the coverage starts at the first candle kept: the rest is fetched again if asked
    assert (cached.covered_start, cached.covered_end) == (candles.index[900], end)
    assert cached.nonpositive.empty  # a placeholder before the kept range is forgotten
    assert path.stat().st_size < full_path.stat().st_size / 3
    assert len(unbounded.read("x", "BTC/USDT", "1h").candles) == 1000

    # writing the newest 100 again keeps the same file content
    bounded.write("x", "BTC/USDT", "1h", cached.candles, cached.covered_start, end)
    again = bounded.read("x", "BTC/USDT", "1h")
    pd.testing.assert_frame_equal(again.candles, cached.candles)
    assert again.covered_start == cached.covered_start


def test_cache_bound_from_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("CFL_CACHE_MAX_CANDLES", raising=False)
    assert default_max_candles() == DEFAULT_MAX_CANDLES_PER_SERIES == 500_000
    assert CandleCache(tmp_path).max_candles_per_series == 500_000
    monkeypatch.setenv("CFL_CACHE_MAX_CANDLES", "250_000")
    assert CandleCache(tmp_path).max_candles_per_series == 250_000
    # an argument wins over the environment
    assert CandleCache(tmp_path, max_candles_per_series=7).max_candles_per_series == 7


@pytest.mark.parametrize(
    "value",
    [
        "0",  # nothing could be kept
        "-5",  # negative
        "lots",  # not a number
        "1.5",  # not whole
    ],
)
def test_bad_cache_bound_is_refused_in_one_line(monkeypatch, tmp_path, value: str) -> None:
    monkeypatch.setenv("CFL_CACHE_MAX_CANDLES", value)
    with pytest.raises(ConfigurationError, match="CFL_CACHE_MAX_CANDLES is .* whole number"):
        CandleCache(tmp_path)
    monkeypatch.delenv("CFL_CACHE_MAX_CANDLES")
    with pytest.raises(ConfigurationError, match="max_candles_per_series"):
        CandleCache(tmp_path, max_candles_per_series=0)


def test_exchange_loads_through_a_bounded_cache(fake_binance, tmp_path, hourly_candles) -> None:
    candles = hourly_candles(600, "2024-01-01")
    fake_binance.set_candles("BTC/USDT", "1h", candles)
    cache = CandleCache(tmp_path, max_candles_per_series=200)
    now = pd.Timestamp("2024-03-01", tz="UTC")

    def load(since, until):
        return load_exchange_candles(
            "binance", "BTC/USDT", "1h", since, until, cache=cache,
            exchange=fake_binance.client, now=now,
        )  # fmt: skip

    # the request is answered whole; the file keeps the newest 200
    first = load(candles.index[0], candles.index[500])
    pd.testing.assert_frame_equal(first, candles.iloc[:500], check_freq=False)
    assert len(cache.read("binance", "BTC/USDT", "1h").candles) == 200
    # the newest range is served from the cache alone
    fake_binance.clear_requests()
    pd.testing.assert_frame_equal(
        load(candles.index[350], candles.index[500]), candles.iloc[350:500], check_freq=False
    )
    assert fake_binance.kline_requests() == []
    # the dropped range is fetched again, with the same candles
    again = load(candles.index[0], candles.index[500])
    pd.testing.assert_frame_equal(again, first)
    assert fake_binance.kline_requests() != []


def test_concurrent_writers_leave_a_bounded_readable_file(tmp_path, hourly_candles) -> None:
    candles = hourly_candles(800)
    start = candles.index[0]
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def writer(part: int) -> None:
        cache = CandleCache(tmp_path, max_candles_per_series=150)
        barrier.wait()
        try:
            for chunk in range(part, 8, 4):  # read-merge-write under the lock, chunk by chunk
                piece = candles.iloc[chunk * 100 : (chunk + 1) * 100]
                with cache.lock("x", "BTC/USDT", "1h"):
                    cached = cache.read("x", "BTC/USDT", "1h")
                    merged = piece if cached is None else pd.concat([cached.candles, piece])
                    end = piece.index[-1] + pd.Timedelta(hours=1)
                    if cached is not None:
                        end = max(end, cached.covered_end)
                    cache.write("x", "BTC/USDT", "1h", merged, start, end)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(part,)) for part in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    cached = CandleCache(tmp_path).read("x", "BTC/USDT", "1h")
    assert len(cached.candles) == 150
    # whatever the order, the last chunk (the newest candles) was written by someone and
    # nothing newer exists: the newest 100 are all there, ending with the last candle
    assert cached.candles.index[-1] == candles.index[-1]
    pd.testing.assert_frame_equal(cached.candles.iloc[-100:], candles.iloc[-100:], check_freq=False)
    assert cached.covered_start == cached.candles.index[0]
    folder = CandleCache(tmp_path).path("x", "BTC/USDT", "1h").parent
    assert not any(name.startswith(".tmp-") for name in os.listdir(folder))
