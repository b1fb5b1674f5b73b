"""Checks that FakeBinance looks like Binance to the real ccxt client, faults included.

The assertions on exception classes document what ccxt 4.5 actually raises for each failure, so
the fetcher's error handling can rely on them.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import ccxt
import numpy as np
import pandas as pd
import pytest

try:  # tests/ on sys.path (pytest's default rootdir-less import mode)
    from fake_exchange import SHARED_DATA, FakeBinance, load_shared_csv
except ImportError:  # tests/ imported as a package
    from tests.fake_exchange import SHARED_DATA, FakeBinance, load_shared_csv

HOUR_MS = 3_600_000
N_CANDLES = 2500


def _hourly_frame(n: int = N_CANDLES, seed: int = 7) -> pd.DataFrame:
    # Random walk with "ugly" floats so that exact equality really tests the round trip.
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC", name="timestamp")
    close = 40_000 + rng.standard_normal(n).cumsum() * 50
    open_ = np.r_[close[0], close[:-1]]
    spread = rng.random(n) * 30
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.random(n) * 100,
        },
        index=index,
    )


def _ms(ts: pd.Timestamp) -> int:
    # Timestamp.value is nanoseconds whatever the unit; ccxt speaks milliseconds.
    return int(ts.value // 1_000_000)


FRAME = _hourly_frame()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeBinance]:
    with FakeBinance({("BTC/USDT", "1h"): FRAME}) as fake:
        fake.add_symbol("ETH/BTC")
        yield fake


@pytest.fixture
def fake(server: FakeBinance) -> Iterator[FakeBinance]:
    # One server per module keeps the file fast; reset its mutable state around each test.
    server.clear_faults()
    server.clear_requests()
    server.timeout_seconds = 3.0
    server.klines_delay(0)
    yield server
    server.clear_faults()
    server.klines_delay(0)


@pytest.fixture
def client(fake: FakeBinance) -> ccxt.binance:
    exchange = fake.client()
    exchange.load_markets()
    fake.clear_requests()
    return exchange


def test_load_markets_lists_symbols(fake: FakeBinance) -> None:
    markets = fake.client().load_markets()

    assert set(markets) == {"BTC/USDT", "ETH/BTC"}
    btc = markets["BTC/USDT"]
    assert (btc["id"], btc["base"], btc["quote"]) == ("BTCUSDT", "BTC", "USDT")
    assert btc["spot"]
    assert btc["active"]
    # Only the spot endpoint is called: fetchMarkets.types = ["spot"] keeps ccxt off the
    # futures hosts, which the fake does not serve.
    assert [r.path for r in fake.requests] == ["/api/v3/exchangeInfo"]


def test_fetch_ohlcv_returns_exactly_the_served_candles(
    fake: FakeBinance, client: ccxt.binance
) -> None:
    since = _ms(FRAME.index[100])

    rows = client.fetch_ohlcv("BTC/USDT", "1h", since=since, limit=50)

    expected = FRAME.iloc[100:150]
    assert [r[0] for r in rows] == [_ms(ts) for ts in expected.index]
    # repr(float) on the wire parses back to the identical double.
    assert np.array_equal(np.array([r[1:] for r in rows]), expected.to_numpy())
    (request,) = fake.kline_requests()
    assert request.params == {
        "symbol": "BTCUSDT",
        "interval": "1h",
        "startTime": str(since),
        "limit": "50",
    }


def test_kline_rows_have_binance_layout(client: ccxt.binance) -> None:
    raw = client.publicGetKlines({"symbol": "BTCUSDT", "interval": "1h", "limit": 3})

    assert len(raw) == 3
    for row in raw:
        assert len(row) == 12
        assert isinstance(row[0], int)
        assert all(isinstance(v, str) for v in row[1:6])
        assert row[6] == row[0] + HOUR_MS - 1  # closeTime: next open minus 1 ms


def test_limit_is_capped_at_1000(client: ccxt.binance) -> None:
    raw = client.publicGetKlines({"symbol": "BTCUSDT", "interval": "1h", "limit": 1500})

    assert len(raw) == 1000
    # Without startTime Binance serves the latest candles.
    assert raw[-1][0] == _ms(FRAME.index[-1])


def test_max_limit_is_configurable() -> None:
    with FakeBinance({("BTC/USDT", "1h"): FRAME}, max_limit=300) as fake:
        rows = fake.client().fetch_ohlcv("BTC/USDT", "1h", since=_ms(FRAME.index[0]), limit=1000)

    assert len(rows) == 300
    assert fake.kline_requests()[-1].params["limit"] == "1000"


def test_end_time_without_start_returns_last_rows_before_it(client: ccxt.binance) -> None:
    end = _ms(FRAME.index[1234])

    rows = client.fetch_ohlcv("BTC/USDT", "1h", limit=5, params={"until": end})

    assert [r[0] for r in rows] == [_ms(ts) for ts in FRAME.index[1230:1235]]


def test_start_and_end_time_bound_the_window(fake: FakeBinance, client: ccxt.binance) -> None:
    since, until = _ms(FRAME.index[10]), _ms(FRAME.index[19])

    rows = client.fetch_ohlcv("BTC/USDT", "1h", since=since, params={"until": until})

    assert [r[0] for r in rows] == [_ms(ts) for ts in FRAME.index[10:20]]
    # With since+until and no limit, ccxt asks for the maximum.
    assert fake.kline_requests()[-1].params["limit"] == "1000"


@pytest.mark.parametrize(
    ("fault", "error", "text"),
    [
        # binance.handle_errors maps 418/429 to DDoSProtection before looking at the body, so
        # it is never the RateLimitExceeded subclass of the base HTTP table.
        ("429", ccxt.DDoSProtection, "429"),
        ("418", ccxt.DDoSProtection, "418"),
        # Binance's body code 0 means "no error" to ccxt, so the HTTP status table decides.
        ("451", ccxt.ExchangeNotAvailable, "451"),
        ("500", ccxt.ExchangeNotAvailable, "500"),
        ("502", ccxt.ExchangeNotAvailable, "502"),
        ("503", ccxt.ExchangeNotAvailable, "503"),
        ("400", ccxt.BadRequest, "-1100"),
        ("reset", ccxt.NetworkError, "klines"),
    ],
)
def test_fault_raises_expected_ccxt_error(
    fake: FakeBinance,
    client: ccxt.binance,
    fault: str,
    error: type[Exception],
    text: str,
) -> None:
    fake.inject(fault)

    with pytest.raises(error, match=text):
        client.fetch_ohlcv("BTC/USDT", "1h", since=_ms(FRAME.index[0]), limit=3)

    # Recorded before the fault was applied, and consumed: the next call works.
    assert len(fake.kline_requests()) == 1
    assert len(client.fetch_ohlcv("BTC/USDT", "1h", since=_ms(FRAME.index[0]), limit=3)) == 3


def test_451_message_keeps_binance_text(fake: FakeBinance, client: ccxt.binance) -> None:
    fake.inject("451")

    with pytest.raises(ccxt.ExchangeNotAvailable) as excinfo:
        client.fetch_ohlcv("BTC/USDT", "1h", limit=3)

    assert "restricted location" in str(excinfo.value)


def test_timeout_fault_raises_request_timeout(fake: FakeBinance) -> None:
    fake.timeout_seconds = 1.5
    fake.inject("timeout")
    slow_client = fake.client(timeout=1000)
    slow_client.load_markets()

    started = time.monotonic()
    with pytest.raises(ccxt.RequestTimeout):
        slow_client.fetch_ohlcv("BTC/USDT", "1h", limit=3)

    assert time.monotonic() - started < 1.4


def test_malformed_body_is_not_an_error_in_ccxt(fake: FakeBinance, client: ccxt.binance) -> None:
    # Surprise: ccxt swallows the JSON decode error and hands the raw text to the parser,
    # which turns its characters into rows full of None. Callers must validate rows.
    fake.inject("malformed")

    rows = client.fetch_ohlcv("BTC/USDT", "1h", limit=3)

    assert any(value is None for row in rows for value in row)


def test_malformed_exchange_info_gives_no_markets(fake: FakeBinance) -> None:
    fake.inject("malformed", endpoint="exchangeInfo")
    exchange = fake.client()

    assert exchange.load_markets() == {}
    with pytest.raises(ccxt.BadSymbol):
        exchange.fetch_ohlcv("BTC/USDT", "1h", limit=3)


def test_fault_is_consumed_after_times(fake: FakeBinance, client: ccxt.binance) -> None:
    fake.inject("503", times=2)

    for _ in range(2):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            client.fetch_ohlcv("BTC/USDT", "1h", limit=3)
    rows = client.fetch_ohlcv("BTC/USDT", "1h", limit=3)

    assert len(rows) == 3
    assert len(fake.kline_requests()) == 3


def test_exchange_info_fault_only_hits_that_endpoint(fake: FakeBinance) -> None:
    fake.inject("503", endpoint="exchangeInfo")
    exchange = fake.client()

    with pytest.raises(ccxt.ExchangeNotAvailable):
        exchange.load_markets()
    assert "BTC/USDT" in exchange.load_markets()


def test_unknown_symbol_and_interval(fake: FakeBinance, client: ccxt.binance) -> None:
    # ccxt rejects a symbol it did not load without any HTTP request...
    with pytest.raises(ccxt.BadSymbol):
        client.fetch_ohlcv("DOGE/USDT", "1h")
    assert fake.kline_requests() == []
    # ...and the server's own -1121 / -1120 answers map to BadSymbol / BadRequest.
    with pytest.raises(ccxt.BadSymbol, match="-1121"):
        client.publicGetKlines({"symbol": "DOGEUSDT", "interval": "1h"})
    with pytest.raises(ccxt.BadRequest, match="-1120"):
        client.fetch_ohlcv("BTC/USDT", "7m")


def test_listed_symbol_without_data_returns_no_candles(client: ccxt.binance) -> None:
    assert client.fetch_ohlcv("ETH/BTC", "1h", limit=10) == []


def test_unknown_path_is_404_json(fake: FakeBinance) -> None:
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(f"{fake.url}/api/v3/ticker/price", timeout=2)

    assert excinfo.value.code == 404
    assert "msg" in json.loads(excinfo.value.read())


def test_klines_delay_slows_each_request(fake: FakeBinance, client: ccxt.binance) -> None:
    fake.klines_delay(0.2)

    started = time.monotonic()
    client.fetch_ohlcv("BTC/USDT", "1h", limit=3)

    assert time.monotonic() - started >= 0.2


def test_set_candles_replaces_served_data() -> None:
    with FakeBinance({("BTC/USDT", "1h"): FRAME}) as fake:
        exchange = fake.client()
        fake.set_candles("BTC/USDT", "1h", FRAME.iloc[:10] * 2)

        rows = exchange.fetch_ohlcv("BTC/USDT", "1h", since=_ms(FRAME.index[0]), limit=100)

    assert len(rows) == 10
    assert rows[0][4] == FRAME["close"].iloc[0] * 2


def test_ccxt_config_deep_merges_extra(fake: FakeBinance) -> None:
    config = fake.ccxt_config(options={"defaultType": "spot"}, timeout=500)

    assert config["options"] == {"fetchMarkets": {"types": ["spot"]}, "defaultType": "spot"}
    assert config["urls"]["api"]["public"] == f"{fake.url}/api/v3"
    assert config["timeout"] == 500
    assert config["enableRateLimit"] is False


def test_load_shared_csv_reads_real_candles() -> None:
    if SHARED_DATA is None:
        pytest.skip("shared data folder not available")
    frame = load_shared_csv("binance_BTC-USDT_1d.csv")

    assert frame is not None
    assert frame.index.name == "timestamp"
    assert str(frame.index.tz) == "UTC"
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    assert frame.index[0] == pd.Timestamp("2017-08-17", tz="UTC")
    assert frame["open"].iloc[0] == 4261.48
    assert load_shared_csv("no_such_file.csv") is None


def test_real_4h_candles_keep_their_gap_through_ccxt() -> None:
    frame = load_shared_csv("binance_BTC-USDT_4h.csv")
    if frame is None:
        pytest.skip("shared data folder not available")
    with FakeBinance({("BTC/USDT", "4h"): frame}) as fake:
        since = _ms(pd.Timestamp("2018-02-08T00:00Z"))
        rows = fake.client().fetch_ohlcv("BTC/USDT", "4h", since=since, limit=3)

    # The 2018-02-08T04 .. 2018-02-09T04 outage is missing in the real data, so the second
    # candle after 00:00 is 08:00 the next day.
    assert [pd.Timestamp(r[0], unit="ms", tz="UTC") for r in rows] == [
        pd.Timestamp("2018-02-08T00:00Z"),
        pd.Timestamp("2018-02-09T08:00Z"),
        pd.Timestamp("2018-02-09T12:00Z"),
    ]
