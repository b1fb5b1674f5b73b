"""The cache records what the exchange answered, not what was asked: no permanent holes.

A candle not yet published when it was asked for, or a page answered empty by mistake, is
asked for again later; a repeat fetch asks only for what can have changed; a failed fetch
leaves the cache as it was, byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.data import load_exchange_candles, quality_report
from forecasting.data.exchange import history_notice, tail_notice
from forecasting.data.quality import notices
from forecasting.errors import ExchangeFailure, NetworkUnreachable

SYMBOL = "BTC/USDT"
HOUR = pd.Timedelta(hours=1)
DAY = pd.Timedelta(days=1)
MS = pd.Timedelta(milliseconds=1)


class CountingFactory:
    def __init__(self, fake, **extra) -> None:
        self.fake, self.extra, self.calls = fake, extra, 0

    def __call__(self):
        self.calls += 1
        return self.fake.client(**self.extra)


def _daily(hourly_candles, n: int, start: str) -> pd.DataFrame:
    frame = hourly_candles(n, start)
    days = pd.date_range(start, periods=n, freq="D", tz="UTC", name="timestamp").as_unit("ms")
    frame = frame.set_axis(days)
    frame.index.freq = None
    return frame


def _load(fake, cache, timeframe, since, until=None, *, now, **kwargs):
    return load_exchange_candles(
        "binance",
        SYMBOL,
        timeframe,
        since,
        until,
        cache=cache,
        exchange=kwargs.pop("factory", None) or CountingFactory(fake),
        now=now,
        **kwargs,
    )


def _same(frame: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(frame, expected, check_exact=True, check_freq=False)


def test_daily_candle_not_yet_published_is_fetched_later(fake_binance, tmp_cache, hourly_candles):
    days = _daily(hourly_candles, 30, "2024-03-01")
    fake_binance.set_candles(SYMBOL, "1d", days)
    today = days.index[-1] + DAY  # 31 March: the candle of 30 March closed at midnight
    fake_binance.withhold_from(days.index[-1])  # ... but is not published at 00:00:30

    early = _load(
        fake_binance, tmp_cache, "1d", days.index[0], now=today + pd.Timedelta(seconds=30)
    )
    _same(early, days.iloc[:-1])
    cached = tmp_cache.read("binance", SYMBOL, "1d")
    assert cached.covered_end == days.index[-2] + MS  # up to the last candle received

    fake_binance.withhold_from(None)  # published a few seconds later
    fake_binance.clear_requests()
    later = _load(fake_binance, tmp_cache, "1d", days.index[0], now=today + pd.Timedelta(minutes=5))

    _same(later, days)
    assert len(fake_binance.kline_requests()) == 1
    # Once it is there, nothing more is asked until the next candle closes.
    fake_binance.clear_requests()
    _same(_load(fake_binance, tmp_cache, "1d", days.index[0], now=today + HOUR), days)
    assert fake_binance.requests == []


def test_candle_missing_long_after_its_close_is_not_asked_again_within_a_candle(
    fake_binance, tmp_cache, hourly_candles
):
    # A pair that stopped trading: its last candles never come.
    days = _daily(hourly_candles, 30, "2024-03-01")
    fake_binance.set_candles(SYMBOL, "1d", days.iloc[:20])
    now = days.index[-1] + DAY + HOUR
    first = _load(fake_binance, tmp_cache, "1d", days.index[0], now=now)
    _same(first, days.iloc[:20])
    fake_binance.clear_requests()

    again = _load(fake_binance, tmp_cache, "1d", days.index[0], now=now + HOUR)

    _same(again, days.iloc[:20])
    assert fake_binance.requests == []
    # Said on every load, asked or read from the cache.
    told = (tail_notice("binance", "1d", days.index[20]),)
    assert notices(first) == notices(again) == told
    assert quality_report(again, "1d").notices == told


def test_transiently_empty_pages_are_asked_again_later(fake_binance, tmp_cache, hourly_candles):
    hours = hourly_candles(300, "2024-01-01")
    fake_binance.set_candles(SYMBOL, "1h", hours)
    fake_binance.max_limit = 100  # pages of 100 candles
    # The second page is empty three times: twice in the forward pass, once more asked
    # with an end bound.
    answers = iter(["as_is", "empty", "empty", "empty"])
    fake_binance.reshape(lambda rows, params: [] if next(answers, "") == "empty" else rows)
    now = hours.index[-1] + HOUR + pd.Timedelta(minutes=10)

    first = _load(fake_binance, tmp_cache, "1h", hours.index[0], now=now)
    _same(first, hours.iloc[:100])  # for now, all there is to see, and it says so
    assert notices(first) == (tail_notice("binance", "1h", hours.index[100]),)

    fake_binance.clear_requests()
    # Asked again once a new candle has closed (within the same candle it is not).
    second = _load(fake_binance, tmp_cache, "1h", hours.index[0], now=now + HOUR)

    _same(second, hours)  # nothing was skipped for good
    # The fake's series ends there: the candle after it has closed and is not served.
    assert notices(second) == (tail_notice("binance", "1h", hours.index[-1] + HOUR),)
    starts = [int(r.params["startTime"]) for r in fake_binance.kline_requests()]
    assert starts[0] == int(hours.index[99].value // 1_000_000) + 1


@pytest.mark.parametrize(
    "empty_before_listing",
    [
        False,  # Binance: asked from before the listing, it answers from the first candle on
        True,  # others answer each window before the listing with an empty page
    ],
)
def test_repeat_fetch_from_before_the_first_candle_asks_only_what_changed(
    fake_binance, tmp_cache, hourly_candles, empty_before_listing
):
    hours = hourly_candles(500, "2024-06-01")
    fake_binance.set_candles(SYMBOL, "1h", hours.iloc[:-1])
    if empty_before_listing:
        window = 1000 * 3_600_000

        def windowed(rows, params):
            start = int(params["startTime"])
            end = min(int(params.get("endTime", start + window)), start + window)
            return [row for row in rows if start <= row[0] <= end]

        fake_binance.reshape(windowed)
    since = hours.index[0] - 7000 * HOUR  # seven pages before the pair's first candle
    now = hours.index[-1] + pd.Timedelta(minutes=10)  # the last candle is still open

    first = _load(fake_binance, tmp_cache, "1h", since, now=now)
    _same(first, hours.iloc[:-1])
    notice = history_notice("binance", "1h", hours.index[0])
    assert notices(first) == (notice,)

    # Within the same candle: nothing at all.
    fake_binance.clear_requests()
    _same(_load(fake_binance, tmp_cache, "1h", since, now=now + pd.Timedelta(minutes=30)), first)
    assert fake_binance.requests == []

    # Once the next candle closed: one request, for what came after the last candle.
    fake_binance.set_candles(SYMBOL, "1h", hours)
    fake_binance.clear_requests()
    again = _load(fake_binance, tmp_cache, "1h", since, now=now + HOUR)

    _same(again, hours)
    assert notices(again) == (notice,)
    assert [int(r.params["startTime"]) for r in fake_binance.kline_requests()] == [
        int(hours.index[-2].value // 1_000_000) + 1
    ]


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("timeout", NetworkUnreachable),
        ("malformed", ExchangeFailure),
        ("503", NetworkUnreachable),
    ],
)
def test_failed_fetch_leaves_the_cache_byte_identical(
    fake_binance, tmp_cache, hourly_candles, no_sleep_retry, fault, error
):
    hours = hourly_candles(400, "2024-01-01")
    fake_binance.set_candles(SYMBOL, "1h", hours)
    fake_binance.max_limit = 100
    fake_binance.timeout_seconds = 0.5
    now = hours.index[-1] + 2 * HOUR
    factory = CountingFactory(fake_binance, timeout=200)
    retry = dataclasses.replace(no_sleep_retry, attempts=2)
    _load(
        fake_binance, tmp_cache, "1h", hours.index[100], hours.index[200], now=now, factory=factory
    )
    folder = tmp_cache.path("binance", SYMBOL, "1h").parent
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    # A wider range: every try of its first request fails.
    fake_binance.inject(fault, times=retry.attempts)
    with pytest.raises(error):
        _load(
            fake_binance,
            tmp_cache,
            "1h",
            hours.index[0],
            hours.index[350],
            now=now,
            factory=factory,
            retry=retry,
        )

    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after == before
    # and the next fetch, once the exchange answers, gets everything
    fake_binance.clear_faults()
    frame = _load(
        fake_binance, tmp_cache, "1h", hours.index[0], hours.index[350], now=now, factory=factory
    )
    _same(frame, hours.iloc[:350])
    assert np.isfinite(frame.to_numpy()).all()


# -------------------------------------------------------------- zero prices, exchange side

ZERO_PRICES = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "field-cases"
    / ("token_with_zero_price_rows_1d.csv")
)


def test_zero_price_field_case_through_the_exchange_is_reported_and_kept_out(
    fake_binance, tmp_cache, tmp_path, capsys
):
    if not ZERO_PRICES.is_file():
        pytest.skip("the shared field cases are not available")
    rows = pd.read_csv(ZERO_PRICES, index_col="timestamp", parse_dates=["timestamp"])
    rows.index = pd.DatetimeIndex(rows.index.tz_localize("UTC"), name="timestamp").as_unit("ms")
    placeholders = pd.DatetimeIndex(
        [pd.Timestamp("2024-04-10", tz="UTC"), pd.Timestamp("2024-05-20", tz="UTC")],
        name="timestamp",
    ).as_unit("ms")
    fake_binance.set_candles("PEPE/USDT", "1d", rows)
    since, until = rows.index[0], rows.index[-1] + DAY
    now = until + DAY

    def load():
        return load_exchange_candles(
            "binance",
            "PEPE/USDT",
            "1d",
            since,
            until,
            cache=tmp_cache,
            exchange=fake_binance.client,
            now=now,
        )

    for _ in range(2):  # fetched, then from the cache
        frame = load()
        assert len(frame) == 88
        assert (frame[["open", "high", "low", "close"]] > 0).all().all()
        report = quality_report(frame, "1d")
        assert report.nonpositive.equals(placeholders)
        assert report.gaps["start"].tolist() == list(placeholders)
        assert not report.is_clean

    # A model never sees them: the naive forecast is the last real close, and finite.
    from forecasting.models import make_model

    forecast = make_model("naive").fit(frame).predict(3).to_frame()
    assert np.isfinite(forecast.select_dtypes("number").to_numpy()).all()
    assert (forecast.select_dtypes("number").to_numpy() > 0).all()

    # and the command line says so
    from forecasting.cli import main

    out = tmp_path / "pepe.csv"
    config = json.dumps(fake_binance.ccxt_config())
    code = main(
        [
            "fetch",
            "--exchange",
            "binance",
            "--symbol",
            "PEPE/USDT",
            "--timeframe",
            "1d",
            "--since",
            f"{since:%Y-%m-%d}",
            "--until",
            f"{until:%Y-%m-%d}",
            "--exchange-config",
            config,
            "--cache-dir",
            str(tmp_path / "cli-cache"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert capsys.readouterr().err.splitlines() == [
        "note: 2 candles with zero or negative prices were dropped when the data were read "
        "(the first at 2024-04-10T00:00:00Z); they are treated as missing."
    ]
    written = pd.read_csv(out)
    assert len(written) == 88
    assert (written[["open", "high", "low", "close"]] > 0).all().all()
