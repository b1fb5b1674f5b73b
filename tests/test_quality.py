"""The quality report and gap filling: hand-built fixtures first, then the real Binance files."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from fake_exchange import load_shared_csv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.data.quality import (
    EXTREME_SIGMAS,
    QualityReport,
    drop_nonpositive,
    dropped_nonpositive,
    fill_gaps,
    quality_report,
)
from forecasting.ohlcv import COLUMNS, expected_timestamps, timeframe_offset


def _utc(*stamps: str) -> list[pd.Timestamp]:
    return [pd.Timestamp(s, tz="UTC") for s in stamps]


def _flat(index: pd.DatetimeIndex, close: np.ndarray | float = 100.0) -> pd.DataFrame:
    """Consistent candles: open at the previous close, high/low just outside both."""
    close = np.broadcast_to(np.asarray(close, dtype="float64"), (len(index),)).copy()
    open_ = np.r_[close[:1], close[:-1]]
    frame = pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) + 1.0,
            "low": np.minimum(open_, close) - 1.0,
            "close": close,
            "volume": np.arange(1.0, len(index) + 1.0),
        },
        index=pd.DatetimeIndex(index, name="timestamp").as_unit("ms"),
    )
    return frame


def _hours(n: int, start: str = "2024-01-01") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="h", tz="UTC", name="timestamp")


def _noisy(n: int, *, seed: int = 3) -> pd.DataFrame:
    # ordinary market noise: 1 % per candle, Gaussian
    rng = np.random.default_rng(seed)
    return _flat(_hours(n), 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n))))


# --- gaps ---------------------------------------------------------------------------------


def test_gaps_listed_as_runs() -> None:
    index = _hours(12).delete([3, 6, 7, 8])  # one candle missing, then a run of three
    report = quality_report(_flat(index), "1h")
    assert report.gaps["start"].tolist() == _utc("2024-01-01 03:00", "2024-01-01 06:00")
    assert report.gaps["end"].tolist() == _utc("2024-01-01 03:00", "2024-01-01 08:00")
    assert report.gaps["missing"].tolist() == [1, 3]
    assert report.gaps["missing"].dtype == np.int64
    assert (report.candles, report.expected, report.missing) == (8, 12, 4)
    assert not report.is_clean
    assert report.summary() == {
        "candles": 8,
        "expected": 12,
        "missing": 4,
        "gap_ranges": 2,
        "duplicates": 0,
        "duplicate_conflicts": 0,
        "nonpositive": 0,
        "zero_volume": 0,
        "inconsistent_ohlc": 0,
        "extreme_moves": 0,
        "notices": 0,
    }


@pytest.mark.parametrize(
    "frame",
    [
        # complete hourly series
        _flat(_hours(30)),
        # a single candle: nothing can be missing
        _flat(_hours(1)),
        # no candles at all
        _flat(_hours(0)),
    ],
)
def test_clean_series(frame: pd.DataFrame) -> None:
    report = quality_report(frame, "1h")
    assert isinstance(report, QualityReport)
    assert list(report.gaps.columns) == ["start", "end", "missing"]
    assert report.gaps.empty
    assert report.missing == 0
    assert report.expected == report.candles == len(frame)
    assert report.zero_volume.empty
    assert report.inconsistent.empty
    assert report.extreme_moves.empty
    assert report.nonpositive.empty
    assert report.is_clean
    assert (report.timeframe, report.calendar) == ("1h", "24/7")


def test_duplicates_are_carried() -> None:
    report = quality_report(_flat(_hours(5)), "1h", duplicates=3)
    assert report.duplicates == 3
    assert report.summary()["duplicates"] == 3
    assert not report.is_clean


# --- zero or negative prices -------------------------------------------------------------


def test_nonpositive_candles_carried_like_duplicates() -> None:
    index = _hours(8)
    dropped = index[[2, 5]]
    report = quality_report(_flat(index.drop(dropped)), "1h", nonpositive=dropped)
    assert report.nonpositive.equals(pd.DatetimeIndex(dropped, name="timestamp").as_unit("ms"))
    assert report.summary()["nonpositive"] == 2
    # dropped candles are missing candles too
    assert report.gaps["start"].tolist() == list(dropped)
    assert report.missing == 2
    assert not report.is_clean


def test_nonpositive_candles_read_from_what_the_loader_recorded() -> None:
    frame = _flat(_hours(8))
    frame.loc[frame.index[3], ["open", "high", "low", "close", "volume"]] = 0.0
    frame.loc[frame.index[6], "low"] = -1.0
    loaded = drop_nonpositive(frame)
    assert len(loaded) == 6
    assert list(dropped_nonpositive(loaded)) == _utc("2024-01-01 03:00", "2024-01-01 06:00")
    # the record survives the slicing and copying pages do
    report = quality_report(loaded[loaded.index >= _utc("2024-01-01 01:00")[0]].copy(), "1h")
    assert list(report.nonpositive) == _utc("2024-01-01 03:00", "2024-01-01 06:00")
    assert report.gaps["missing"].tolist() == [1, 1]
    # an explicit list wins over the record
    assert quality_report(loaded, "1h", nonpositive=[]).nonpositive.empty
    # a clean frame carries no record at all
    assert drop_nonpositive(_flat(_hours(3))).attrs == {}


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_nonpositive_candles_left_in_a_frame_are_listed_not_used() -> None:
    frame = _flat(_hours(12))
    frame.loc[frame.index[4], ["open", "high", "low", "close"]] = 0.0
    frame.loc[frame.index[7], "close"] = np.nan
    frame.loc[frame.index[9], "high"] = np.inf
    report = quality_report(frame, "1h")  # no log-of-zero warning either
    assert list(report.nonpositive) == list(frame.index[[4, 7, 9]])
    assert (report.candles, report.missing, report.expected) == (9, 3, 12)
    assert report.inconsistent.empty


def test_zero_volume_candles() -> None:
    frame = _flat(_hours(6))
    frame.loc[frame.index[[1, 4]], "volume"] = 0.0
    report = quality_report(frame, "1h")
    assert list(report.zero_volume) == _utc("2024-01-01 01:00", "2024-01-01 04:00")
    assert report.summary()["zero_volume"] == 2
    assert not report.is_clean


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("high", 100.5),  # high below the close (100 + drift)
        ("high", 99.5),  # high below the open and the close
        ("low", 100.5),  # low above the open
        ("low", 250.0),  # low above the high as well
        ("high", 50.0),  # high below the low
    ],
)
def test_inconsistent_ohlc(column: str, value: float) -> None:
    frame = _flat(_hours(6), np.array([100.0, 100.0, 100.0, 101.0, 101.0, 101.0]))
    frame.loc[frame.index[3], column] = value
    report = quality_report(frame, "1h")
    assert list(report.inconsistent) == _utc("2024-01-01 03:00")
    assert report.summary()["inconsistent_ohlc"] == 1
    assert not report.is_clean


def test_ordinary_noise_is_not_extreme() -> None:
    report = quality_report(_noisy(500), "1h")
    assert report.extreme_moves.empty
    assert report.is_clean


def test_planted_crash_is_extreme() -> None:
    frame = _noisy(500)
    # a 40 % crash at candle 200 that the market never recovers from
    frame.loc[frame.index[200] :, ["open", "high", "low", "close"]] *= 0.6
    frame.loc[frame.index[200], "open"] = frame["close"].iloc[199]
    frame.loc[frame.index[200], "high"] = frame["close"].iloc[199] + 1
    report = quality_report(frame, "1h")
    assert report.extreme_moves["timestamp"].tolist() == [frame.index[200]]
    move = report.extreme_moves["log_return"].iloc[0]
    expected = np.log(frame["close"].iloc[200] / frame["close"].iloc[199])
    assert move == pytest.approx(expected)
    assert move < np.log(0.65)
    assert report.summary()["extreme_moves"] == 1
    assert report.is_clean  # a crash is a market event, not a data problem
    assert EXTREME_SIGMAS == 8.0


def test_too_few_returns_for_extremes() -> None:
    # under ten returns there is no robust scale to judge by, so nothing is flagged
    frame = _flat(_hours(8), np.array([100.0, 101, 100, 101, 100, 10, 100, 101]))
    assert quality_report(frame, "1h").extreme_moves.empty


# --- cost follows the candles, not the span ------------------------------------------------


def test_two_candles_a_year_apart_on_1m_are_one_gap_at_once() -> None:
    frame = _flat(pd.DatetimeIndex(_utc("2024-01-01", "2025-01-01")))
    started = time.perf_counter()
    tracemalloc.start()
    try:
        report = quality_report(frame, "1m")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 0.5
    # listing the 527,041 expected open times would take over 4 MB
    assert peak < 1_000_000
    assert report.gaps["start"].tolist() == _utc("2024-01-01 00:01")
    assert report.gaps["end"].tolist() == _utc("2024-12-31 23:59")
    assert report.gaps["missing"].tolist() == [366 * 24 * 60 - 1]
    assert report.expected == 366 * 24 * 60 + 1


def _listed_gaps(index: pd.DatetimeIndex, timeframe: str) -> list[tuple]:
    """The gaps as listing every expected open time finds them (the old way)."""
    expected = expected_timestamps(index[0], index[-1], timeframe)
    absent = expected.difference(index)
    if absent.empty:
        return []
    position = expected.get_indexer(absent)
    starts = np.flatnonzero(np.diff(position, prepend=-2) != 1)
    ends = np.append(starts[1:], len(position)) - 1
    return list(zip(absent[starts], absent[ends], (ends - starts + 1).tolist(), strict=True))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["1m", "1h", "4h", "1d", "1w"]),
    st.lists(st.integers(min_value=0, max_value=400), min_size=2, max_size=40, unique=True),
    st.lists(st.sampled_from([0.0, 0.0, 0.25, 0.5]), min_size=40, max_size=40),
)
def test_gaps_same_as_listing_every_expected_candle(
    timeframe: str, steps: list[int], offgrid: list[float]
) -> None:
    # candles on the grid, some shifted off it, as messy exports have them
    step = pd.Timedelta(timeframe_offset(timeframe))
    positions = sorted({k + shift for k, shift in zip(sorted(steps), offgrid, strict=False)})
    if len(positions) < 2:
        return
    index = pd.DatetimeIndex(
        [pd.Timestamp("2024-01-01", tz="UTC") + p * step for p in positions], name="timestamp"
    ).as_unit("ms")
    report = quality_report(_flat(index), timeframe)
    found = list(report.gaps.itertuples(index=False, name=None))
    assert found == _listed_gaps(index, timeframe)
    assert report.expected == len(index) + sum(n for _, _, n in found)


# --- business calendar ------------------------------------------------------------------


def test_business_calendar_ignores_weekends() -> None:
    days = pd.bdate_range("2024-01-01", "2024-01-19", tz="UTC")  # three weeks of weekdays
    missing_wednesday = days.delete(7)  # 2024-01-10
    report = quality_report(_flat(missing_wednesday), "1d", calendar="business")
    assert report.gaps["start"].tolist() == _utc("2024-01-10")
    assert report.gaps["end"].tolist() == _utc("2024-01-10")
    assert report.gaps["missing"].tolist() == [1]
    assert (report.candles, report.expected, report.calendar) == (14, 15, "business")
    # the same candles on a 24/7 calendar miss every weekend as well
    assert quality_report(_flat(missing_wednesday), "1d").missing == 1 + 2 * 2


def test_business_calendar_keeps_time_of_day() -> None:
    # daily candles stamped at the US close (21:00 UTC) are on their own grid
    days = pd.bdate_range("2024-01-01", "2024-01-19", tz="UTC") + pd.Timedelta(hours=21)
    report = quality_report(_flat(days.delete(3)), "1d", calendar="business")
    assert report.gaps["start"].tolist() == _utc("2024-01-04 21:00")
    assert report.missing == 1
    filled, inserted = fill_gaps(_flat(days.delete(3)), "1d", calendar="business")
    assert list(inserted) == _utc("2024-01-04 21:00")
    assert filled.index.equals(pd.DatetimeIndex(days, name="timestamp").as_unit("ms"))


# --- fill_gaps --------------------------------------------------------------------------


def test_fill_gaps_inserts_flat_candles_at_previous_close() -> None:
    closes = np.array([10.0, 11, 12, 13, 14, 15, 16, 17, 18, 19])
    frame = _flat(_hours(10), closes).drop(index=_hours(10)[[2, 5, 6]])
    filled, inserted = fill_gaps(frame, "1h")
    assert list(inserted) == _utc("2024-01-01 02:00", "2024-01-01 05:00", "2024-01-01 06:00")
    assert filled.index.equals(_hours(10).as_unit("ms"))
    assert filled.index.name == "timestamp"
    assert list(filled.columns) == list(COLUMNS)
    for stamp, previous_close in zip(inserted, [11.0, 14.0, 14.0], strict=True):
        assert filled.loc[stamp].tolist() == [previous_close] * 4 + [0.0]
    # real candles are untouched
    pd.testing.assert_frame_equal(filled.loc[frame.index], frame)
    # the filled series has no gaps, and its zero-volume candles are exactly the inserted ones
    report = quality_report(filled, "1h")
    assert report.missing == 0
    assert report.zero_volume.equals(inserted)


@pytest.mark.parametrize(
    "frame",
    [
        # no gaps to fill
        _flat(_hours(5)),
        # no candles at all
        _flat(_hours(0)),
    ],
)
def test_fill_gaps_without_gaps(frame: pd.DataFrame) -> None:
    filled, inserted = fill_gaps(frame, "1h")
    assert inserted.empty
    assert str(inserted.tz) == "UTC"
    pd.testing.assert_frame_equal(filled, frame)
    assert filled is not frame


def test_inputs_are_not_mutated() -> None:
    frame = _flat(_hours(24)).drop(index=_hours(24)[[4, 5, 17]])
    frame.iloc[3, frame.columns.get_loc("volume")] = 0.0
    before = frame.copy(deep=True)
    quality_report(frame, "1h", duplicates=2)
    filled, _ = fill_gaps(frame, "1h")
    filled.iloc[:, :] = -1.0  # writing to the result must not reach the input either
    pd.testing.assert_frame_equal(frame, before)


# --- the real Binance candles -------------------------------------------------------------

README_GAPS_4H = [
    # start, end, missing: the runs listed in /work/shared/data/README.md
    ("2018-02-08 04:00", "2018-02-09 04:00", 7),
    ("2018-06-26 04:00", "2018-06-26 08:00", 2),
    ("2018-07-04 04:00", "2018-07-04 04:00", 1),
    ("2018-11-14 04:00", "2018-11-14 04:00", 1),
    ("2019-03-12 04:00", "2019-03-12 04:00", 1),
    ("2019-05-15 04:00", "2019-05-15 08:00", 2),
    ("2019-08-15 04:00", "2019-08-15 04:00", 1),
    ("2020-02-19 12:00", "2020-02-19 12:00", 1),
]


def _shared(name: str) -> pd.DataFrame:
    frame = load_shared_csv(name)
    if frame is None:
        pytest.skip(f"shared data {name} is not available")
    return frame


def test_real_4h_file() -> None:
    candles = _shared("binance_BTC-USDT_4h.csv")
    report = quality_report(candles, "4h")
    gaps = list(zip(report.gaps["start"], report.gaps["end"], report.gaps["missing"], strict=True))
    assert gaps == [(*_utc(start, end), n) for start, end, n in README_GAPS_4H]
    assert (report.candles, report.expected, report.missing) == (18371, 18387, 16)
    assert list(report.zero_volume) == _utc("2017-09-06 16:00")
    # that candle is flat at the previous close, as the README says
    position = candles.index.get_loc(report.zero_volume[0])
    row = candles.iloc[position]
    assert (
        row[["open", "high", "low", "close"]].tolist() == [candles["close"].iloc[position - 1]] * 4
    )
    assert report.inconsistent.empty
    assert report.duplicates == 0


def test_real_4h_file_filled() -> None:
    candles = _shared("binance_BTC-USDT_4h.csv")
    filled, inserted = fill_gaps(candles, "4h")
    assert len(filled) == 18387
    assert len(inserted) == 16
    runs = [pd.date_range(*_utc(start, end), freq="4h") for start, end, _ in README_GAPS_4H]
    assert list(inserted) == [stamp for run in runs for stamp in run]
    assert (filled.loc[inserted, "volume"] == 0).all()
    assert quality_report(filled, "4h").missing == 0


@pytest.mark.parametrize(
    ("name", "crash"),
    [
        ("binance_BTC-USDT_1d.csv", -0.395),  # BTC close -39.5 % on 2020-03-12
        ("binance_ETH-USDT_1d.csv", -0.446),  # ETH close -44.6 %
    ],
)
def test_real_1d_files(name: str, crash: float) -> None:
    report = quality_report(_shared(name), "1d")
    assert report.gaps.empty
    assert (report.candles, report.expected) == (3065, 3065)
    assert report.zero_volume.empty
    assert report.inconsistent.empty
    moves = report.extreme_moves.set_index("timestamp")["log_return"]
    march_12 = pd.Timestamp("2020-03-12", tz="UTC")
    assert march_12 in moves.index
    assert np.expm1(moves[march_12]) == pytest.approx(crash, abs=0.001)
    # a crash is flagged, yet it is a market event: the file itself is clean
    assert report.is_clean
