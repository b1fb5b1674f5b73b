"""Exchanges that answer less than asked: never a silent loss.

Kraken returns only its latest 720 candles whatever ``since`` says; other exchanges answer
short pages, only the newest part of the window, or an empty page now and then. The fetch
asks again where the exchange allows, and otherwise says what is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.data import fetch_ohlcv, load_exchange_candles, quality_report
from forecasting.data.exchange import (
    SERVED_FROM_ATTR,
    UNANSWERED_ATTR,
    UNANSWERED_TAIL_ATTR,
    RetryPolicy,
    empty_notice,
    history_notice,
    served_from,
    tail_notice,
    unanswered,
    unanswered_range,
    unanswered_tail,
)
from forecasting.data.quality import NOTICES_ATTR, notices
from forecasting.errors import NoCandles

ROOT = Path(__file__).resolve().parents[1]
FIELD_CASES = ROOT.parent / "shared" / "field-cases"
KRAKEN_LIKE = FIELD_CASES / "kraken_like.py"
SYMBOL = "BTC/USDT"
HOUR = pd.Timedelta(hours=1)
MS = pd.Timedelta(milliseconds=1)
C = pd.date_range("2024-01-01", periods=600, freq="h", tz="UTC", name="timestamp").as_unit("ms")
# Just after the last candle closed: an exchange that stops serving before it is telling.
LATER = C[-1] + 2 * HOUR
NO_SLEEP = RetryPolicy(attempts=2, sleep=lambda _: None)


@pytest.fixture(scope="module")
def candles(hourly_candles) -> pd.DataFrame:
    return hourly_candles(len(C), C[0])


@pytest.fixture
def fake(fake_binance, candles):
    fake_binance.set_candles(SYMBOL, "1h", candles)
    return fake_binance


def _same(frame: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(frame, expected, check_exact=True, check_freq=False)


def _fetch(fake, since, until=None, **kwargs) -> pd.DataFrame:
    return fetch_ohlcv(fake.client(), SYMBOL, "1h", since, until, now=LATER, **kwargs)


# --------------------------------------------------------------------- the Kraken field case


@pytest.fixture
def kraken_like(tmp_path) -> Iterator[tuple[dict, Path]]:
    """The field case's Kraken-shaped server: its ccxt config and its request log."""
    if not KRAKEN_LIKE.is_file():
        pytest.skip("the shared field cases are not available")
    port_file, log = tmp_path / "port", tmp_path / "requests.log"
    server = subprocess.Popen(
        [sys.executable, str(KRAKEN_LIKE), "--port-file", str(port_file), "--log", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.monotonic() > deadline or server.poll() is not None:
                pytest.fail("the Kraken-like server did not start")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text().strip()}"
        yield {"urls": {"api": {"public": url}}, "enableRateLimit": False, "timeout": 5000}, log
    finally:
        server.terminate()
        server.wait(timeout=10)


def _ohlc_requests(log: Path) -> list[dict]:
    lines = log.read_text().splitlines() if log.is_file() else []
    return [entry for entry in map(json.loads, lines) if entry["path"] == "/0/public/OHLC"]


def test_kraken_serving_its_latest_720_candles_says_so(kraken_like, tmp_cache):
    config, log = kraken_like
    now = pd.Timestamp.now(tz="UTC")
    today = now.floor("D")
    # The server serves the latest 720 daily candles, today's (still open) among them.
    first = today - pd.Timedelta(days=719)

    frame = load_exchange_candles(
        "kraken",
        "BTC/USD",
        "1d",
        pd.Timestamp("2022-01-01", tz="UTC"),
        config=config,
        cache=tmp_cache,
        now=now,
    )

    assert len(frame) == 719  # every closed candle served, the open one left out
    assert (frame.index[0], frame.index[-1]) == (first, today - pd.Timedelta(days=1))
    notice = (
        f"kraken serves 1d candles only from {first:%Y-%m-%d}; earlier candles are not "
        "available here"
    )
    assert frame.attrs[NOTICES_ATTR] == (notice,)
    assert served_from(frame) == first
    assert quality_report(frame, "1d").notices == (notice,)
    assert not quality_report(frame, "1d").is_clean
    # Asked once, and once more bounded by the first candle received: nothing earlier.
    assert len(_ohlc_requests(log)) == 2

    again = load_exchange_candles(
        "kraken",
        "BTC/USD",
        "1d",
        pd.Timestamp("2022-01-01", tz="UTC"),
        config=config,
        cache=tmp_cache,
        now=now,
    )
    _same(again, frame)
    assert again.attrs[NOTICES_ATTR] == (notice,)  # the cache remembers it
    assert len(_ohlc_requests(log)) == 2  # and asks nothing


def test_kraken_notice_on_the_command_line(kraken_like, tmp_path):
    config, _ = kraken_like
    out = tmp_path / "btc.csv"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "forecasting",
            "fetch",
            "--exchange",
            "kraken",
            "--symbol",
            "BTC/USD",
            "--timeframe",
            "1d",
            "--since",
            "2022-01-01",
            "--exchange-config",
            json.dumps(config),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 0, run.stderr
    first = pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=719)
    assert run.stderr.splitlines() == [
        f"note: kraken serves 1d candles only from {first:%Y-%m-%d}; earlier candles are not "
        "available here"
    ]
    assert len(pd.read_csv(out)) == 719


# ------------------------------------------------------------------ the fake's short answers


def test_latest_only_exchange_is_reported_not_silent(fake, candles):
    fake.answer_latest(100)

    frame = _fetch(fake, C[0] - 50 * HOUR)

    _same(frame, candles.iloc[-100:])
    assert served_from(frame) == C[-100]
    assert notices(frame) == (history_notice("binance", "1h", C[-100]),)
    assert frame.attrs[SERVED_FROM_ATTR] == int(C[-100].value // 1_000_000)
    # Asked again once, bounded by the first candle received: nothing earlier.
    bounded = [r.params for r in fake.kline_requests() if "endTime" in r.params]
    assert bounded == [
        {
            "interval": "1h",
            "limit": "1000",
            "symbol": "BTCUSDT",
            "startTime": str(int((C[0] - 50 * HOUR).value // 1_000_000)),
            "endTime": str(int(C[-100].value // 1_000_000) - 1),
        }
    ]


def test_latest_only_exchange_that_honours_an_end_is_paged_backwards(fake, candles):
    fake.answer_latest(100, honour_end=True)

    frame = _fetch(fake, C[0])

    _same(frame, candles)
    assert notices(frame) == ()
    assert SERVED_FROM_ATTR not in frame.attrs


def test_newest_part_of_each_window_is_filled_in(fake, candles):
    fake.newest_part(70)

    _same(_fetch(fake, C[0]), candles)


@pytest.mark.parametrize("max_limit", [1, 7, 64])  # short pages of every size
def test_short_pages_lose_nothing(fake_binance, candles, max_limit):
    fake_binance.max_limit = max_limit
    fake_binance.set_candles(SYMBOL, "1h", candles.iloc[:150])
    _same(_fetch(fake_binance, C[0], C[150]), candles.iloc[:150])


@pytest.mark.parametrize("page", [0, 1, 3])  # which answer is empty by mistake
def test_transient_empty_page_is_asked_again(fake_binance, candles, page):
    fake_binance.max_limit = 100  # short pages: 100 of the 1000 asked
    fake_binance.set_candles(SYMBOL, "1h", candles)
    fake_binance.reshape(_acting([("as_is", 0)] * page + [("empty", 0)]))

    frame = _fetch(fake_binance, C[0])

    _same(frame, candles)
    assert notices(frame) == ()


@pytest.mark.parametrize("page", [0, 1, 3])
def test_an_answer_lost_twice_mid_range_is_asked_again_bounded(fake_binance, candles, page):
    # The same page empty twice: skipping a page's span (1000 asked) passes the end of the
    # range, which used to end the fetch there with nothing said.
    fake_binance.max_limit = 100
    fake_binance.set_candles(SYMBOL, "1h", candles)
    fake_binance.reshape(_acting([("as_is", 0)] * page + [("empty", 0)] * 2))

    frame = _fetch(fake_binance, C[0])

    _same(frame, candles)
    assert notices(frame) == ()
    bounded = [r.params for r in fake_binance.kline_requests() if "endTime" in r.params]
    asked_from = C[0] if page == 0 else C[100 * page - 1] + MS
    assert bounded[0]["startTime"] == str(int(asked_from.value // 1_000_000))


def test_an_end_left_empty_although_closed_is_told(fake_binance, candles):
    fake_binance.max_limit = 100
    fake_binance.set_candles(SYMBOL, "1h", candles)
    fake_binance.reshape(_acting([("as_is", 0)] + [("empty", 0)] * 3))

    frame = _fetch(fake_binance, C[0])

    _same(frame, candles.iloc[:100])
    assert unanswered_tail(frame) == (C[100], LATER - HOUR - pd.Timedelta(minutes=2) + MS)
    assert notices(frame) == (
        "binance answered no 1h candles from 2024-01-05 04:00 UTC on, though candles have "
        "closed since (no trades since, a pair no longer traded, or an answer lost)",
    )


def test_a_pair_no_longer_traded_is_told_where_it_stops(fake_binance, candles):
    fake_binance.set_candles(SYMBOL, "1h", candles.iloc[:50])

    frame = _fetch(fake_binance, C[0])

    _same(frame, candles.iloc[:50])
    assert unanswered_tail(frame)[0] == C[50]
    assert quality_report(frame, "1h").notices == notices(frame)


def test_listing_date_explains_a_later_first_candle(fake, candles):
    fake.list_since(SYMBOL, C[0])

    frame = _fetch(fake, C[0] - 300 * HOUR)

    _same(frame, candles)
    assert notices(frame) == ()  # the market says it was listed then


def test_pair_listed_later_without_a_listing_date_is_reported(fake, candles):
    frame = _fetch(fake, C[0] - 300 * HOUR)

    _same(frame, candles)
    assert notices(frame) == (history_notice("binance", "1h", C[0]),)


def test_range_entirely_before_what_is_served_names_the_first_candle(fake, tmp_cache):
    fake.answer_latest(100)

    with pytest.raises(NoCandles, match=r"binance serves 1h candles only from 2024-01-2"):
        load_exchange_candles(
            "binance",
            SYMBOL,
            "1h",
            C[0],
            C[50],
            cache=tmp_cache,
            exchange=fake.client(),
            now=LATER,
        )


def test_cli_fetch_prints_the_notices(fake, tmp_path, capsys):
    fake.answer_latest(100)
    out = tmp_path / "out.csv"
    from forecasting.cli import main

    code = main(
        [
            "fetch",
            "--exchange",
            "binance",
            "--symbol",
            SYMBOL,
            "--timeframe",
            "1h",
            "--since",
            f"{C[0]:%Y-%m-%dT%H:%M}",
            "--until",
            f"{C[-1] + HOUR:%Y-%m-%dT%H:%M}",
            "--exchange-config",
            json.dumps(fake.ccxt_config()),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
        ]
    )

    assert code == 0
    assert len(pd.read_csv(out)) == 100
    assert capsys.readouterr().err.splitlines() == [
        f"note: binance serves 1h candles only from {C[-100]:%Y-%m-%d %H:%M} UTC; earlier "
        "candles are not available here"
    ]


# -------------------------------------------------------------------- the property test

# What the fake does with one answer: as is, cut short, only its newest part, nothing,
# repeated with fragments, shuffled.
ACTIONS = ("as_is", "short", "late", "empty", "duplicated", "shuffled")


def _acting(plan: list[tuple[str, int]]):
    queue = iter(plan)

    def change(rows: list, params: dict) -> list:
        action, size = next(queue, ("as_is", 0))
        if not rows or action == "as_is":
            return rows
        keep = max(1, min(size, len(rows)))
        if action == "short":
            return rows[:keep]
        if action == "late":
            return rows[-keep:]
        if action == "empty":
            return []
        if action == "duplicated":
            fragments = [
                [r[0], r[4], r[4], r[4], r[4], repr(float(r[5]) / 1000), *r[6:]]
                for r in rows[:keep]
            ]
            return fragments + rows + rows[:keep]
        return rows[keep:] + rows[:keep]  # shuffled: rotated out of order

    return change


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    length=st.integers(20, 300),
    offset=st.integers(0, 40),
    page=st.integers(5, 120),
    plan=st.lists(
        st.tuples(st.sampled_from(ACTIONS), st.integers(1, 120)), min_size=0, max_size=30
    ),
    ended_just_now=st.booleans(),
)
def test_property_answers_short_late_duplicated_or_out_of_order(
    fake_binance, candles, length, offset, page, plan, ended_just_now
):
    """The candles returned are the series exactly, or the notices name what is missing."""
    series = candles.iloc[offset : offset + length]
    fake_binance.set_candles(SYMBOL, "1h", series)
    fake_binance.max_limit = page
    fake_binance.reshape(_acting(plan))
    client = fake_binance.client()
    since = C[0] - 5 * HOUR
    # Now is either just after the series' last candle or long after it (a pair no
    # longer traded): either way nothing may go missing unsaid.
    now = series.index[-1] + 2 * HOUR if ended_just_now else LATER

    frame = fetch_ohlcv(client, SYMBOL, "1h", since, now=now, retry=NO_SLEEP)

    missing = series.index.difference(frame.index)
    # Nothing invented, nothing changed: every candle returned is the series' own.
    _same(frame, series.loc[frame.index])
    first = served_from(frame)
    windows = unanswered(frame)
    tail = unanswered_tail(frame)
    whole = unanswered_range(frame)  # every answer empty: the whole range is told
    told = notices(frame)
    for stamp in missing:
        before_first = first is not None and stamp < first
        in_window = any(start <= stamp < end for start, end in windows)
        in_tail = tail is not None and tail[0] <= stamp < tail[1]
        in_whole = whole is not None and whole[0] <= stamp < whole[1]
        assert before_first or in_window or in_tail or in_whole, f"{stamp} lost silently"
    if first is not None:
        assert history_notice("binance", "1h", first) in told
    if whole is not None:
        assert frame.empty
        assert empty_notice("binance", "1h", *whole) in told
    if tail is not None:
        assert tail_notice("binance", "1h", tail[0]) in told
        # The tail starts at the first candle not received, and holds none received.
        assert tail[0] == frame.index[-1] + HOUR
    elif not ended_just_now and whole is None:
        raise AssertionError("a series that stopped long before now is told")
    assert len(told) == (
        (first is not None) + len(windows) + (tail is not None) + (whole is not None)
    )
    assert frame.attrs.get(UNANSWERED_ATTR, ()) == tuple(
        (int(a.value // 1_000_000), int(b.value // 1_000_000)) for a, b in windows
    )
    assert (UNANSWERED_TAIL_ATTR in frame.attrs) == (tail is not None)
    fake_binance.reshape(None)
