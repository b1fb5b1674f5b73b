"""Conflicting duplicates: the same open time twice with different values, never resolved silently.

The rule: the candle with the larger volume is kept (a fragment carries only a sliver of the
volume of the real candle); equal volumes keep the later row.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting.data import load_exchange_candles, quality_report
from forecasting.data.duplicates import (
    DUPLICATE_CONFLICTS_ATTR,
    DUPLICATE_ROWS_ATTR,
    DUPLICATE_RULE,
    duplicate_conflicts,
    resolve_duplicates,
)
from forecasting.ohlcv import COLUMNS

FIELD_CASES = Path(__file__).resolve().parents[2] / "shared" / "field-cases"
SPLIT = FIELD_CASES / "split_candle_duplicates_1m.csv"
SYMBOL = "ETH/USDT"


def _frame(rows: list[tuple[str, float, float, float, float, float]]) -> pd.DataFrame:
    index = pd.DatetimeIndex([pd.Timestamp(r[0], tz="UTC") for r in rows], name="timestamp")
    return pd.DataFrame([r[1:] for r in rows], index=index.as_unit("ms"), columns=list(COLUMNS))


def _split_case() -> pd.DataFrame:
    if not SPLIT.is_file():
        pytest.skip("the shared field cases are not available")
    frame = pd.read_csv(SPLIT, index_col="timestamp", parse_dates=["timestamp"])
    frame.index = pd.DatetimeIndex(frame.index.tz_localize("UTC"), name="timestamp").as_unit("ms")
    return frame


def _ms(stamp: str) -> int:
    return int(pd.Timestamp(stamp, tz="UTC").value // 1_000_000)


# ----------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("rows", "kept_volume"),
    [
        # the fragment after the real candle
        (
            [("2024-01-01", 10, 11, 9, 10.5, 40.0), ("2024-01-01", 10.5, 10.5, 10.5, 10.5, 0.01)],
            40.0,
        ),
        # the fragment before it: keeping the last row would keep the fragment
        (
            [("2024-01-01", 10.5, 10.5, 10.5, 10.5, 0.01), ("2024-01-01", 10, 11, 9, 10.5, 40.0)],
            40.0,
        ),
        # equal volumes: the later row, the source's latest word
        ([("2024-01-01", 10, 11, 9, 10.5, 5.0), ("2024-01-01", 10, 12, 9, 11.0, 5.0)], 5.0),
        # a missing volume never beats a number
        ([("2024-01-01", 10, 11, 9, 10.5, 3.0), ("2024-01-01", 10, 12, 9, 11.0, np.nan)], 3.0),
    ],
)
def test_larger_volume_wins_and_the_pair_is_recorded(rows, kept_volume):
    resolved = resolve_duplicates(_frame(rows))

    assert len(resolved) == 1
    assert resolved["volume"].iloc[0] == kept_volume
    (conflict,) = resolved.attrs[DUPLICATE_CONFLICTS_ATTR]
    assert conflict["timestamp"] == _ms("2024-01-01")
    assert conflict["kept"]["volume"] == kept_volume
    assert conflict["rule"] == DUPLICATE_RULE
    assert resolved.attrs[DUPLICATE_ROWS_ATTR] == 1


def test_equal_volume_tie_keeps_the_later_row():
    rows = [("2024-01-01", 10, 11, 9, 10.5, 5.0), ("2024-01-01", 10, 12, 9, 11.0, 5.0)]
    resolved = resolve_duplicates(_frame(rows))
    assert resolved["close"].iloc[0] == 11.0
    assert duplicate_conflicts(resolved)[0]["dropped"]["close"] == 10.5


def test_exact_repeats_are_dropped_without_a_conflict():
    rows = [
        ("2024-01-01 01:00", 10, 11, 9, 10.5, 4.0),
        ("2024-01-01 00:00", 9, 10, 8, 10.0, 2.0),
        ("2024-01-01 01:00", 10, 11, 9, 10.5, 4.0),
    ]
    resolved = resolve_duplicates(_frame(rows))

    assert resolved.index.tolist() == [
        pd.Timestamp("2024-01-01 00:00", tz="UTC"),
        pd.Timestamp("2024-01-01 01:00", tz="UTC"),
    ]
    assert DUPLICATE_CONFLICTS_ATTR not in resolved.attrs
    assert resolved.attrs[DUPLICATE_ROWS_ATTR] == 1


def test_unique_frame_is_only_sorted():
    rows = [("2024-01-02", 1, 1, 1, 1, 1.0), ("2024-01-01", 2, 2, 2, 2, 2.0)]
    frame = _frame(rows)
    resolved = resolve_duplicates(frame)
    assert resolved.index.is_monotonic_increasing
    assert resolved.attrs == {}
    assert len(frame) == 2
    assert frame.index[0] == pd.Timestamp("2024-01-02", tz="UTC")


# ------------------------------------------------------------------------ the field case


def test_split_candle_field_case_keeps_the_real_candles():
    frame = _split_case()
    resolved = resolve_duplicates(frame)

    assert len(frame) == 62
    assert len(resolved) == 60
    assert resolved.index.is_unique
    assert resolved.index.is_monotonic_increasing
    assert resolved.loc["2024-03-01 00:29", "volume"].item() == 29.0554
    assert resolved.loc["2024-03-01 00:59", "volume"].item() == 38.5312
    conflicts = resolved.attrs[DUPLICATE_CONFLICTS_ATTR]
    assert [c["timestamp"] for c in conflicts] == [
        _ms("2024-03-01 00:29"),
        _ms("2024-03-01 00:59"),
    ]
    assert [c["dropped"]["volume"] for c in conflicts] == [0.015, 0.015]
    assert [c["kept"]["close"] for c in conflicts] == [3519.20, 3520.45]
    json.dumps(resolved.attrs)  # plain values: fit for JSON and Parquet metadata

    report = quality_report(resolved, "1m")
    assert report.duplicates == 2
    assert report.duplicate_conflicts == conflicts
    assert report.duplicate_rule == DUPLICATE_RULE
    assert report.summary()["duplicate_conflicts"] == 2
    assert report.missing == 0


def test_split_candle_field_case_through_the_exchange_and_the_cache(fake_binance, tmp_cache):
    frame = _split_case()
    fake_binance.set_candles(SYMBOL, "1m", frame)  # the exchange sends both rows of each pair
    since, until = frame.index[0], frame.index[-1] + pd.Timedelta(minutes=1)
    now = until + pd.Timedelta(days=1)

    def load():
        return load_exchange_candles(
            "binance",
            SYMBOL,
            "1m",
            since,
            until,
            cache=tmp_cache,
            exchange=fake_binance.client,
            now=now,
        )

    fetched = load()
    expected = resolve_duplicates(frame)
    pd.testing.assert_frame_equal(fetched, expected, check_exact=True, check_freq=False)
    conflicts = expected.attrs[DUPLICATE_CONFLICTS_ATTR]
    assert fetched.attrs[DUPLICATE_CONFLICTS_ATTR] == conflicts

    fake_binance.clear_requests()
    cached = load()  # from the cache alone
    assert fake_binance.requests == []
    assert cached.attrs[DUPLICATE_CONFLICTS_ATTR] == conflicts
    assert quality_report(cached, "1m").duplicate_conflicts == conflicts
    assert quality_report(cached, "1m").duplicates == 2

    # a range without the pairs carries none
    part = load_exchange_candles(
        "binance",
        SYMBOL,
        "1m",
        since,
        since + pd.Timedelta(minutes=20),
        cache=tmp_cache,
        exchange=fake_binance.client,
        now=now,
    )
    assert DUPLICATE_CONFLICTS_ATTR not in part.attrs
    assert quality_report(part, "1m").duplicates == 0


def test_disordered_exchange_answers_give_the_series_and_list_the_fragments(
    fake_binance, hourly_candles
):
    from forecasting.data import fetch_ohlcv

    series = hourly_candles(300, "2024-01-01")
    fake_binance.set_candles("BTC/USDT", "1h", series)
    fake_binance.disorder(5, repeat=0.3, fragments=0.1)
    fake_binance.max_limit = 60

    frame = fetch_ohlcv(
        fake_binance.client(),
        "BTC/USDT",
        "1h",
        series.index[0],
        now=series.index[-1] + pd.Timedelta(days=1),
    )

    pd.testing.assert_frame_equal(
        frame.loc[:, list(COLUMNS)], series, check_exact=True, check_freq=False
    )
    conflicts = duplicate_conflicts(frame)
    assert conflicts, "the seed sends fragments"
    for conflict in conflicts:
        stamp = pd.Timestamp(conflict["timestamp"], unit="ms", tz="UTC")
        assert conflict["kept"]["volume"] == series.loc[stamp, "volume"]
        assert conflict["dropped"]["volume"] == pytest.approx(series.loc[stamp, "volume"] / 1000)


# -------------------------------------------------------------------- the property test


@settings(max_examples=200, deadline=None)
@given(
    volumes=st.lists(st.floats(0.01, 1e6), min_size=1, max_size=40),
    copies=st.lists(st.integers(0, 3), min_size=40, max_size=40),
    fragments=st.lists(st.booleans(), min_size=40, max_size=40),
    seed=st.integers(0, 2**16),
)
def test_property_real_candles_survive_any_repeats_fragments_and_order(
    volumes, copies, fragments, seed
):
    n = len(volumes)
    index = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC", name="timestamp").as_unit(
        "ms"
    )
    close = 100 + np.arange(n, dtype="float64")
    series = pd.DataFrame(
        {"open": close - 1, "high": close + 1, "low": close - 2, "close": close, "volume": volumes},
        index=index,
    )
    parts = [series]
    for k in range(n):
        parts += [series.iloc[[k]]] * copies[k]
        if fragments[k]:
            row = series.iloc[[k]].copy()
            row.loc[:, ["open", "high", "low"]] = row["close"].to_numpy()[:, None]
            row["volume"] = row["volume"] / 1000
            parts.append(row)
    noisy = pd.concat(parts)
    noisy = noisy.iloc[np.random.default_rng(seed).permutation(len(noisy))]

    resolved = resolve_duplicates(noisy)

    pd.testing.assert_frame_equal(resolved, series, check_exact=True, check_freq=False)
    conflicts = duplicate_conflicts(resolved)
    assert sorted(c["timestamp"] for c in conflicts) == [
        int(index[k].value // 1_000_000) for k in range(n) if fragments[k]
    ]
    assert resolved.attrs.get(DUPLICATE_ROWS_ATTR, 0) == sum(copies[:n]) + sum(fragments[:n])
