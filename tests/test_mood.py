"""Market mood sources: the Fear & Greed index, funding rates, and the as-of join.

Run against local servers: :class:`fake_feargreed.FakeFearGreed` (alternative.me's
``/fng/``) and :class:`fake_exchange.FakeBinance` with its USD-M futures endpoints.
"""

from __future__ import annotations

import dataclasses
import socket

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting.data.mood import (
    AS_OF_STALE_ATTR,
    AS_OF_WITHOUT_VALUE_ATTR,
    DEFAULT_FEAR_GREED_URL,
    FEAR_GREED_ATTRIBUTION,
    LATE_DAY_ATTR,
    as_of,
    fear_greed_published,
    fear_greed_url,
    fetch_fear_greed,
    fetch_funding_rates,
    funding_published,
    missing_days,
    perpetual_for,
)
from forecasting.data.quality import notices
from forecasting.errors import (
    DataFormatError,
    DataUnavailable,
    GeoBlocked,
    NetworkUnreachable,
)

DAY = pd.Timedelta(days=1)
TIMEFRAMES = {"1h": pd.Timedelta("1h"), "4h": pd.Timedelta("4h"), "1d": pd.Timedelta("1D")}


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def five_days(fake, *, skip: str | None = "2024-01-03") -> None:
    """Values for 2024-01-01..05 (one day skipped); the first stamped 05:00 like early ones."""
    values = {"2024-01-01": 10, "2024-01-02": 30, "2024-01-03": 50, "2024-01-04": 60}
    values["2024-01-05"] = 90
    for day, value in values.items():
        if day != skip:
            offset = pd.Timedelta(hours=5) if day == "2024-01-01" else pd.Timedelta(0)
            fake.set_value(day, value, stamp_offset=offset)


# ------------------------------------------------------------------ Fear & Greed fetch


def test_fear_greed_parses_values_days_and_attribution(fake_feargreed, tmp_cache, no_sleep_retry):
    five_days(fake_feargreed, skip=None)
    frame = fetch_fear_greed(
        url=fake_feargreed.url, cache=tmp_cache, now=utc("2024-01-05 12:00"), retry=no_sleep_retry
    )
    days = pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC")
    assert list(frame.index) == list(days)  # a 05:00 stamp still describes its day
    assert frame.index.name == "day"
    assert frame["value"].tolist() == [10, 30, 50, 60, 90]
    assert frame["value"].dtype == np.int64
    assert frame["classification"].tolist() == [
        "Extreme Fear",
        "Fear",
        "Neutral",
        "Greed",
        "Extreme Greed",
    ]
    assert frame.attrs["attribution"] == FEAR_GREED_ATTRIBUTION
    assert frame.attrs["source"] == fake_feargreed.url
    assert notices(frame) == ()
    # The whole history, as JSON.
    assert fake_feargreed.requests == [{"limit": "0", "format": "json"}]


def test_fear_greed_address_is_a_setting(monkeypatch, fake_feargreed, tmp_cache, no_sleep_retry):
    monkeypatch.delenv("CFL_FEAR_GREED_URL", raising=False)
    assert fear_greed_url() == DEFAULT_FEAR_GREED_URL
    monkeypatch.setenv("CFL_FEAR_GREED_URL", fake_feargreed.url)
    assert fear_greed_url() == fake_feargreed.url
    fake_feargreed.set_value("2024-01-01", 42)
    frame = fetch_fear_greed(cache=tmp_cache, now=utc("2024-01-01 08:00"), retry=no_sleep_retry)
    assert frame["value"].tolist() == [42]
    assert len(fake_feargreed.requests) == 1


def test_missing_day_is_reported_not_invented(fake_feargreed, tmp_cache, no_sleep_retry):
    five_days(fake_feargreed)  # 2024-01-03 never published
    frame = fetch_fear_greed(
        url=fake_feargreed.url, cache=tmp_cache, now=utc("2024-01-05 12:00"), retry=no_sleep_retry
    )
    assert utc("2024-01-03") not in frame.index
    assert list(missing_days(frame)) == [utc("2024-01-03")]
    assert any("2024-01-03" in text for text in notices(frame))

    # Hourly candles 2024-01-01 .. 2024-01-06 23:00.
    candles = pd.date_range("2024-01-01", "2024-01-06 23:00", freq="h", tz="UTC")
    joined = as_of(frame, candles, "1h", published_at=fear_greed_published)
    # Day D is used only from D+1 00:00 on: nothing on the first day.
    assert joined.loc["2024-01-01"].isna().all()
    assert (joined.loc["2024-01-02"] == 10).all()
    assert (joined.loc["2024-01-03"] == 30).all()
    # 2024-01-03 is missing: the 2nd's value is carried forward, while it is the latest.
    assert (joined.loc["2024-01-04"] == 30).all()
    assert (joined.loc["2024-01-05"] == 60).all()
    assert (joined.loc["2024-01-06"] == 90).all()
    # Its 24 candles on 2024-01-04 use a value older than a day; none are invented.
    assert joined.attrs[AS_OF_STALE_ATTR] == 24
    assert joined.attrs[AS_OF_WITHOUT_VALUE_ATTR] == 24


def test_late_value_is_reported_then_fetched_once_published(
    fake_feargreed, tmp_cache, no_sleep_retry
):
    five_days(fake_feargreed, skip=None)
    fake_feargreed.set_value("2024-01-05", 90, published="2024-01-05 06:00")  # six hours late
    fake_feargreed.now = utc("2024-01-05 03:00")
    early = fetch_fear_greed(
        url=fake_feargreed.url, cache=tmp_cache, now=utc("2024-01-05 03:00"), retry=no_sleep_retry
    )
    assert early.index[-1] == utc("2024-01-04")
    assert early.attrs[LATE_DAY_ATTR] == utc("2024-01-05").value // 1_000_000
    assert any("2024-01-05" in text and "not published" in text for text in notices(early))

    # Reused for a short while only: the API says the value is overdue.
    again = fetch_fear_greed(
        url=fake_feargreed.url, cache=tmp_cache, now=utc("2024-01-05 03:10"), retry=no_sleep_retry
    )
    assert len(fake_feargreed.requests) == 1
    assert again.index[-1] == utc("2024-01-04")

    fake_feargreed.now = utc("2024-01-05 07:00")
    late = fetch_fear_greed(
        url=fake_feargreed.url, cache=tmp_cache, now=utc("2024-01-05 07:00"), retry=no_sleep_retry
    )
    assert len(fake_feargreed.requests) == 2
    assert late.loc[utc("2024-01-05"), "value"] == 90
    assert LATE_DAY_ATTR not in late.attrs


def test_second_call_the_same_day_uses_the_cache(fake_feargreed, tmp_cache, no_sleep_retry):
    five_days(fake_feargreed, skip=None)
    fake_feargreed.now = utc("2024-01-05 01:00")
    kwargs = {"url": fake_feargreed.url, "cache": tmp_cache, "retry": no_sleep_retry}
    first = fetch_fear_greed(now=utc("2024-01-05 01:00"), **kwargs)
    second = fetch_fear_greed(now=utc("2024-01-05 23:00"), **kwargs)
    assert len(fake_feargreed.requests) == 1  # no second request
    pd.testing.assert_frame_equal(first, second)
    # The next value is due at 00:00: the next day asks again.
    fetch_fear_greed(now=utc("2024-01-06 00:30"), **kwargs)
    assert len(fake_feargreed.requests) == 2


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("503", NetworkUnreachable),  # unavailable on every try
        ("garbled", DataFormatError),  # a body cut short on every try
        ("404", DataUnavailable),  # a wrong address: not retried
    ],
)
def test_failed_fetch_leaves_the_cache_byte_identical(
    fake_feargreed, tmp_cache, no_sleep_retry, fault, error
):
    five_days(fake_feargreed, skip=None)
    fake_feargreed.now = utc("2024-01-05 01:00")
    kwargs = {"url": fake_feargreed.url, "cache": tmp_cache, "retry": no_sleep_retry}
    fetch_fear_greed(now=utc("2024-01-05 01:00"), **kwargs)
    files = sorted(p for p in tmp_cache.root.rglob("*.json"))
    assert len(files) == 1
    before = files[0].read_bytes()

    fake_feargreed.inject(fault, times=4)
    with pytest.raises(error) as caught:
        fetch_fear_greed(now=utc("2024-01-06 02:00"), **kwargs)
    assert "\n" not in str(caught.value)
    assert files[0].read_bytes() == before
    assert sorted(p for p in tmp_cache.root.rglob("*.json")) == files  # no temporaries left


def test_garbled_answer_is_retried_then_a_format_error(fake_feargreed, tmp_cache, no_sleep_retry):
    fake_feargreed.set_value("2024-01-01", 40)
    fake_feargreed.inject("garbled", times=4)
    with pytest.raises(DataFormatError, match="not its JSON") as caught:
        fetch_fear_greed(
            url=fake_feargreed.url, cache=tmp_cache, now=utc("2024-01-02"), retry=no_sleep_retry
        )
    assert "\n" not in str(caught.value)
    assert len(fake_feargreed.requests) == 4
    assert len(no_sleep_retry.sleep.waits) == 3
    assert not list(tmp_cache.root.rglob("*.json"))


def test_garbled_once_then_good_answer_succeeds(fake_feargreed, tmp_cache, no_sleep_retry):
    fake_feargreed.set_value("2024-01-01", 40)
    fake_feargreed.inject("garbled")
    frame = fetch_fear_greed(
        url=fake_feargreed.url, cache=tmp_cache, now=utc("2024-01-02"), retry=no_sleep_retry
    )
    assert frame["value"].tolist() == [40]
    assert len(fake_feargreed.requests) == 2


def test_error_in_metadata_is_data_unavailable(fake_feargreed, tmp_cache, no_sleep_retry):
    fake_feargreed.inject("error")
    with pytest.raises(DataUnavailable, match="Temporarily unavailable"):
        fetch_fear_greed(
            url=fake_feargreed.url, cache=tmp_cache, now=utc("2024-01-02"), retry=no_sleep_retry
        )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_host_fails_at_once_and_is_remembered(tmp_cache, no_sleep_retry):
    url = f"http://127.0.0.1:{closed_port()}/fng/"
    with pytest.raises(NetworkUnreachable) as first:
        fetch_fear_greed(url=url, cache=tmp_cache, now=utc("2024-01-02"), retry=no_sleep_retry)
    message = str(first.value)
    assert "\n" not in message
    assert "refused" in message
    assert no_sleep_retry.sleep.waits == []  # no retry can mend it
    with pytest.raises(NetworkUnreachable, match="ago"):
        fetch_fear_greed(url=url, cache=tmp_cache, now=utc("2024-01-02"), retry=no_sleep_retry)
    assert not list(tmp_cache.root.rglob("*.json"))


# ------------------------------------------------------------------------ as-of join


@pytest.mark.parametrize("timeframe", ["1h", "4h", "1d"])
def test_fear_greed_is_lagged_one_day_for_every_timeframe(timeframe):
    days = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    values = pd.Series([10, 20, 30], index=days, name="value")
    candles = pd.date_range("2024-01-01", "2024-01-04 23:00", freq=TIMEFRAMES[timeframe], tz="UTC")
    joined = as_of(values, candles, timeframe, published_at=fear_greed_published)
    # A candle opening on day D sees the value of day D-1, never D's own.
    expected = (
        pd.Series(candles.normalize() - DAY, index=candles).map(
            dict(zip(days, [10, 20, 30], strict=True))
        )
    ).astype("float64")
    pd.testing.assert_series_equal(joined, expected, check_names=False)


def test_funding_rate_is_used_from_the_first_candle_closing_after_it():
    times = pd.DatetimeIndex([utc("2024-01-01 08:00"), utc("2024-01-01 16:00")])
    rates = pd.Series([0.0001, 0.0003], index=times)
    candles = pd.date_range("2024-01-01", periods=4, freq="8h", tz="UTC")
    joined = as_of(rates, candles, "8h", published_at=funding_published, max_age=pd.Timedelta("8h"))
    # The candle closing exactly at 08:00 does not see the 08:00 rate.
    assert joined.isna().tolist() == [True, False, False, False]
    assert joined.iloc[1:].tolist() == [0.0001, 0.0003, 0.0003]
    assert joined.attrs[AS_OF_STALE_ATTR] == 1  # the last candle: 16 h after its rate


@settings(max_examples=200, deadline=None)
@given(
    timeframe=st.sampled_from(sorted(TIMEFRAMES)),
    published_minutes=st.lists(st.integers(0, 10 * 24 * 60), min_size=0, max_size=40),
    candle_count=st.integers(1, 80),
    first_candle_hours=st.integers(0, 48),
)
def test_as_of_never_looks_ahead_and_never_drops_a_value(
    timeframe, published_minutes, candle_count, first_candle_hours
):
    start = utc("2024-03-01")
    step = TIMEFRAMES[timeframe]
    published = pd.DatetimeIndex([start + pd.Timedelta(minutes=m) for m in published_minutes])
    # Values name their row, so every candle's value tells which publication it used.
    values = pd.Series(np.arange(len(published), dtype="float64"), index=published)
    first = (start + pd.Timedelta(hours=first_candle_hours)).floor(step)
    candles = pd.date_range(first, periods=candle_count, freq=step)
    joined = as_of(values, candles, timeframe, published_at=funding_published)
    for open_time, seen in joined.items():
        close = open_time + step
        before = [i for i, at in enumerate(published) if at < close]
        if not before:
            assert np.isnan(seen)
            continue
        assert not np.isnan(seen)  # a value was available: it is used
        used = int(seen)
        assert published[used] < close  # never published at or after the close
        latest = max(published[i] for i in before)
        assert published[used] == latest  # the latest one published before the close
        assert used == max(i for i in before if published[i] == latest)
    assert joined.attrs[AS_OF_WITHOUT_VALUE_ATTR] == int(joined.isna().sum())


# ---------------------------------------------------------------------- funding rates


def funding_rates(count: int, start: str = "2024-01-01") -> pd.Series:
    times = pd.date_range(start, periods=count, freq="8h", tz="UTC")
    rng = np.random.default_rng(3)
    return pd.Series(np.round(rng.normal(0.0001, 0.0002, count), 8), index=times)


def futures_client(fake):
    import ccxt

    return ccxt.binance(fake.futures_config())


def test_perpetual_for_finds_the_linear_swap(fake_binance, no_sleep_retry):
    fake_binance.add_symbol("BTC/USDT")
    fake_binance.add_symbol("ETH/BTC")
    fake_binance.set_funding("BTC/USDT:USDT", funding_rates(3))
    fake_binance.set_funding("ETH/USDT:USDT", funding_rates(3))
    exchange = futures_client(fake_binance)
    assert perpetual_for(exchange, "BTC/USDT", retry=no_sleep_retry) == "BTC/USDT:USDT"
    assert perpetual_for(exchange, "BTC/USDT:USDT", retry=no_sleep_retry) == "BTC/USDT:USDT"
    # No ETH/BTC perpetual: the USDT one of the same base.
    assert perpetual_for(exchange, "ETH/BTC", retry=no_sleep_retry) == "ETH/USDT:USDT"
    assert perpetual_for(exchange, "SOL/USDT", retry=no_sleep_retry) is None


def test_funding_rates_page_across_several_pages(fake_binance, no_sleep_retry):
    rates = funding_rates(250)
    fake_binance.add_symbol("BTC/USDT")
    fake_binance.set_funding("BTC/USDT:USDT", rates)
    fake_binance.funding_max_limit = 100
    since, until = rates.index[0], rates.index[-1] + pd.Timedelta("1ms")
    seen = []
    frame = fetch_funding_rates(
        futures_client(fake_binance),
        "BTC/USDT",
        since,
        until,
        retry=no_sleep_retry,
        progress=lambda stage, fraction, details: seen.append(fraction),
    )
    assert frame.attrs == {"source": "binance", "symbol": "BTC/USDT:USDT"}
    assert list(frame.index) == list(rates.index)
    np.testing.assert_allclose(frame["funding_rate"].to_numpy(), rates.to_numpy(), rtol=0, atol=0)
    pages = fake_binance.funding_requests()
    assert len(pages) == 3
    starts = [int(r.params["startTime"]) for r in pages]
    ends_of_pages = [rates.index[99], rates.index[199]]
    assert starts[1:] == [int(t.value // 1_000_000) + 1 for t in ends_of_pages]
    assert seen[-1] == 1.0


def test_funding_rates_keep_to_the_range(fake_binance, no_sleep_retry):
    rates = funding_rates(30)
    fake_binance.add_symbol("BTC/USDT")
    fake_binance.set_funding("BTC/USDT:USDT", rates)
    frame = fetch_funding_rates(
        futures_client(fake_binance),
        "BTC/USDT",
        rates.index[5],
        rates.index[10],
        retry=no_sleep_retry,
    )
    assert list(frame.index) == list(rates.index[5:10])


def test_funding_rates_geo_blocked_names_a_venue_that_serves_it(fake_binance, no_sleep_retry):
    fake_binance.add_symbol("BTC/USDT")
    fake_binance.set_funding("BTC/USDT:USDT", funding_rates(5))
    fake_binance.inject("451", endpoint="fundingRate")
    with pytest.raises(GeoBlocked, match="krakenfutures") as caught:
        fetch_funding_rates(
            futures_client(fake_binance),
            "BTC/USDT",
            utc("2024-01-01"),
            utc("2024-01-03"),
            retry=no_sleep_retry,
        )
    assert "451" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_funding_rates_without_perpetual_are_unavailable(fake_binance, no_sleep_retry):
    fake_binance.add_symbol("BTC/USDT")
    fake_binance.add_symbol("DOGE/USDT")
    fake_binance.set_funding("BTC/USDT:USDT", funding_rates(5))
    with pytest.raises(DataUnavailable, match="no perpetual future for DOGE/USDT"):
        fetch_funding_rates(
            futures_client(fake_binance),
            "DOGE/USDT",
            utc("2024-01-01"),
            utc("2024-01-03"),
            retry=no_sleep_retry,
        )


def test_funding_rates_retry_a_transient_failure(fake_binance, no_sleep_retry):
    rates = funding_rates(5)
    fake_binance.add_symbol("BTC/USDT")
    fake_binance.set_funding("BTC/USDT:USDT", rates)
    fake_binance.inject("503", endpoint="fundingRate")
    retry = dataclasses.replace(no_sleep_retry, attempts=2)
    frame = fetch_funding_rates(
        futures_client(fake_binance),
        "BTC/USDT",
        rates.index[0],
        rates.index[-1] + pd.Timedelta("1ms"),
        retry=retry,
    )
    assert len(frame) == 5
    assert len(retry.sleep.waits) == 1
