"""Windows an exchange answered with nothing are holes the cache asks for again.

A stretch answered empty on one load (an answer lost, an exchange's bad minute) is kept
in the cache as a hole with how often and when it was asked, and asked for again on a
later load, with a backoff, so nothing is skipped for good and a truly empty stretch
(before a listing) costs a request now and then, never one per load for ever. An empty
answer is never silent.
"""

from __future__ import annotations

import math
import tempfile

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.data import CandleCache, fetch_ohlcv, load_exchange_candles
from forecasting.data.exchange import (
    RetryPolicy,
    empty_notice,
    gap_notice,
    history_notice,
    served_from,
    tail_notice,
    unanswered,
    unanswered_range,
    unanswered_tail,
)
from forecasting.data.quality import notices
from forecasting.errors import NoCandles

SYMBOL = "BTC/USDT"
HOUR = pd.Timedelta(hours=1)
MINUTE = pd.Timedelta(minutes=1)
C = pd.date_range("2024-01-01", periods=600, freq="h", tz="UTC", name="timestamp").as_unit("ms")
LATER = C[-1] + pd.Timedelta(days=3)  # every range below lies in the past
NO_SLEEP = RetryPolicy(attempts=2, sleep=lambda _: None)


@pytest.fixture(scope="module")
def candles(hourly_candles) -> pd.DataFrame:
    return hourly_candles(len(C), C[0])


@pytest.fixture
def fake(fake_binance, candles):
    fake_binance.set_candles(SYMBOL, "1h", candles)
    return fake_binance


def _ms(stamp: pd.Timestamp) -> int:
    return int(stamp.value // 1_000_000)


def _load(fake, cache, since, until, now=LATER):
    # The client pages at the fake's page size, as ccxt does for exchanges that declare it.
    features = {"spot": {"fetchOHLCV": {"limit": fake.max_limit}}}
    return load_exchange_candles(
        "binance",
        SYMBOL,
        "1h",
        since,
        until,
        cache=cache,
        exchange=lambda: fake.client(features=features),
        now=now,
        retry=NO_SLEEP,
    )


def _same(frame: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(frame, expected, check_exact=True, check_freq=False)


def _empty_where_first_in(low: pd.Timestamp, high: pd.Timestamp):
    """An answer whose first candle opens in ``[low, high)`` comes back empty."""

    def change(rows, params):
        return [] if rows and _ms(low) <= int(rows[0][0]) < _ms(high) else rows

    return change


def test_window_lost_in_a_past_range_is_asked_again_on_the_next_load(fake, tmp_cache, candles):
    fake.max_limit = 50
    fake.reshape(_empty_where_first_in(C[200], C[300]))

    first = _load(fake, tmp_cache, C[0], C[400])
    # Forward pages from C[199] + 1 ms on were empty (twice each), the window bounded too;
    # the page from C[300] on was answered.

    _same(first, candles.iloc[list(range(200)) + list(range(300, 400))])
    # The notice starts at the first candle missing (C[199] was received), not a candle early.
    assert unanswered(first) == [(C[200], C[300])]
    assert notices(first) == (gap_notice("binance", "1h", C[200], C[300]),)

    fake.reshape(None)  # the exchange is healthy again
    fake.clear_requests()
    second = _load(fake, tmp_cache, C[0], C[400])

    _same(second, candles.iloc[:400])
    assert notices(second) == ()
    asked = fake.kline_requests()
    # Only the hole, bounded by its end: 100 candles in pages of 50.
    assert len(asked) == 2
    assert asked[0].params["startTime"] == str(_ms(C[200]))
    assert all(r.params["endTime"] == str(_ms(C[300]) - 1) for r in asked)
    assert tmp_cache.read("binance", SYMBOL, "1h").holes == ()

    fake.clear_requests()
    _same(_load(fake, tmp_cache, C[0], C[400]), candles.iloc[:400])
    assert fake.requests == []


def test_end_of_a_past_range_lost_is_asked_again_on_the_next_load(fake, tmp_cache, candles):
    fake.max_limit = 50
    fake.reshape(_empty_where_first_in(C[200], C[400]))

    first = _load(fake, tmp_cache, C[0], C[400])

    _same(first, candles.iloc[:200])
    assert notices(first) == (tail_notice("binance", "1h", C[200]),)

    fake.reshape(None)
    fake.clear_requests()
    second = _load(fake, tmp_cache, C[0], C[400])

    _same(second, candles.iloc[:400])
    assert notices(second) == ()
    assert len(fake.kline_requests()) == 4  # 200 candles, pages of 50, bounded
    fake.clear_requests()
    _same(_load(fake, tmp_cache, C[0], C[400]), candles.iloc[:400])
    assert fake.requests == []


def test_window_lost_is_asked_again_by_a_load_extended_to_the_present(fake, tmp_cache, candles):
    fake.max_limit = 50
    fake.reshape(_empty_where_first_in(C[200], C[300]))
    _load(fake, tmp_cache, C[0], C[400], now=C[-1] + 2 * HOUR)
    fake.reshape(None)

    frame = _load(fake, tmp_cache, C[0], None, now=C[-1] + 2 * HOUR)

    _same(frame, candles)
    assert notices(frame) == ()


def test_whole_past_range_answered_empty_is_asked_again_and_said(fake, tmp_cache, candles):
    answers = iter([[]] * 3)
    fake.reshape(lambda rows, params: next(answers, rows))

    with pytest.raises(NoCandles, match=r"It answered nothing for it on 1 load; it is asked again"):
        _load(fake, tmp_cache, C[230], C[379])
    assert len(fake.kline_requests()) == 3

    # A rerun at once (the app reruns on every click) does not ask again...
    fake.clear_requests()
    with pytest.raises(NoCandles):
        _load(fake, tmp_cache, C[230], C[379])
    assert fake.requests == []

    # ... a load a few minutes later does: one bounded request, and the candles are there.
    frame = _load(fake, tmp_cache, C[230], C[379], now=LATER + 3 * MINUTE)

    _same(frame, candles.iloc[230:379])
    assert notices(frame) == ()
    assert len(fake.kline_requests()) == 1
    assert fake.kline_requests()[0].params["endTime"] == str(_ms(C[379]) - 1)


def test_library_fetch_of_a_range_answered_empty_says_so(fake):
    fake.reshape(lambda rows, params: [])

    frame = fetch_ohlcv(fake.client(), SYMBOL, "1h", C[10], C[60], now=LATER, retry=NO_SLEEP)

    assert frame.empty
    assert unanswered_range(frame) == (C[10], C[60])
    assert notices(frame) == (empty_notice("binance", "1h", C[10], C[60]),)


def test_truly_empty_range_costs_at_most_one_request_per_load_and_fewer_over_time(fake, tmp_cache):
    fake.add_symbol("ETH/BTC")  # listed, never traded
    per_load = []
    for minute in range(0, 60, 2):  # a load every two minutes for an hour
        fake.clear_requests()
        with pytest.raises(NoCandles):
            load_exchange_candles(
                "binance",
                "ETH/BTC",
                "1h",
                C[0],
                C[100],
                cache=tmp_cache,
                exchange=fake.client,
                now=LATER + minute * MINUTE,
                retry=NO_SLEEP,
            )
        per_load.append(len(fake.kline_requests()))

    assert per_load[0] == 3  # twice unbounded and once bounded before it is believed
    assert max(per_load[1:]) == 1
    # Waits of 2, 4, 8, 16, 32 minutes: asked again at minutes 2, 6, 14, 30.
    assert sum(per_load[1:]) == 4


def test_head_left_empty_is_asked_again_a_day_later_not_on_every_load(fake, tmp_cache, candles):
    # The start of the range is lost: answers hold only candles from C[100] on.
    fake.reshape(lambda rows, params: [row for row in rows if int(row[0]) >= _ms(C[100])])
    first = _load(fake, tmp_cache, C[0], C[300])
    assert served_from(first) == C[100]
    assert notices(first) == (history_notice("binance", "1h", C[100]),)
    fake.reshape(None)

    fake.clear_requests()
    _same(_load(fake, tmp_cache, C[0], C[300], now=LATER + HOUR), first)
    assert fake.requests == []

    later = _load(fake, tmp_cache, C[0], C[300], now=LATER + pd.Timedelta(days=1))
    _same(later, candles.iloc[:300])
    assert notices(later) == ()


# -------------------------------------------------------------------- the property test

# What the first load's exchange does with one answer: as is, nothing, cut short, or only
# its newest part.
ACTIONS = ("as_is", "empty", "empty", "short", "late")


def _first_load_answers(plan: list[tuple[str, int]]):
    queue = iter(plan)

    def change(rows, params):
        action, size = next(queue, ("as_is", 0))
        if not rows or action == "as_is":
            return rows
        keep = max(1, min(size, len(rows)))
        if action == "empty":
            return []
        if action == "short":
            return rows[:keep]
        return rows[-keep:]

    return change


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    start=st.integers(0, 500),
    length=st.integers(1, 99),
    page=st.integers(5, 60),
    plan=st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(1, 60)), min_size=0, max_size=25),
)
def test_property_empty_or_short_first_load_then_a_healthy_exchange(
    fake_binance, candles, start, length, page, plan
):
    """Whatever the first load lost is told, and later loads return the series exactly."""
    fake_binance.set_candles(SYMBOL, "1h", candles)
    fake_binance.max_limit = page
    since, until = C[start], C[min(start + length, len(C) - 1)]
    expected = candles.loc[since : until - pd.Timedelta(milliseconds=1)]
    with tempfile.TemporaryDirectory() as folder:
        cache = CandleCache(folder)
        fake_binance.reshape(_first_load_answers(plan))
        try:
            first = _load(fake_binance, cache, since, until)
        except NoCandles as exc:
            # Never silent: retried, or the first candle served is named (an answer that
            # starts later than asked reads as an exchange serving only from there).
            message = str(exc)  # noqa: PT017
            assert "asked again" in message or "serves 1h candles only from" in message
        else:
            _same(first, expected.loc[first.index])
            told = notices(first)
            missing = expected.index.difference(first.index)
            lost = served_from(first)
            if len(missing):
                assert told, "candles lost silently"
            for stamp in missing:
                assert (
                    (lost is not None and stamp < lost)
                    or any(a <= stamp < b for a, b in unanswered(first))
                    or stamp >= first.index[-1]
                ), f"{stamp} lost without a notice"
            if lost is not None:
                assert history_notice("binance", "1h", lost) in told
            if unanswered_tail(first) is None and len(missing) and missing[-1] > first.index[-1]:
                assert tail_notice("binance", "1h", first.index[-1] + HOUR) in told
        fake_binance.reshape(None)

        holes = cache.read("binance", SYMBOL, "1h").holes
        # The healthy exchange: a load a few minutes later, then one a day later.
        bound = sum(math.ceil((b - a) / 3_600_000 / page) + 1 for a, b, _, _ in holes)
        fake_binance.clear_requests()
        second = _load(fake_binance, cache, since, until, now=LATER + 3 * MINUTE)
        assert len(fake_binance.kline_requests()) <= bound
        holes = cache.read("binance", SYMBOL, "1h").holes
        bound = sum(math.ceil((b - a) / 3_600_000 / page) + 1 for a, b, _, _ in holes)
        fake_binance.clear_requests()
        third = _load(fake_binance, cache, since, until, now=LATER + pd.Timedelta(days=1))
        assert len(fake_binance.kline_requests()) <= bound

        _same(third, expected)
        assert notices(third) == ()
        assert cache.read("binance", SYMBOL, "1h").holes == ()
        assert set(second.index) <= set(expected.index)
        # Healed: nothing more is asked.
        fake_binance.clear_requests()
        _same(_load(fake_binance, cache, since, until, now=LATER + pd.Timedelta(days=2)), expected)
        assert fake_binance.kline_requests() == []
