"""Fetching candles through the real ccxt client against the local fake Binance.

Covers paging, retries with backoff, the errors a user sees (and that what cannot succeed
is never retried), that no credential shows in a message even when the exchange echoes
the request, the checks on exchange settings, and the cache key of a configuration.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import urllib.parse

import ccxt
import pandas as pd
import pytest
from fake_exchange import FakeBinance
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.data import load_exchange_candles
from forecasting.data.exchange import (
    SECRET_KEYS,
    RetryPolicy,
    checked_config,
    create_exchange,
    fetch_ohlcv,
    list_exchanges,
    list_symbols,
    source_key,
    suggest_symbols,
)
from forecasting.errors import (
    BadCredentials,
    ConfigurationError,
    ExchangeFailure,
    GeoBlocked,
    InvalidDateRange,
    InvalidSymbol,
    InvalidTimeframe,
    NetworkUnreachable,
    NoCandles,
    RateLimited,
    UnknownExchange,
)

HOUR = pd.Timedelta(hours=1)
SYMBOL = "BTC/USDT"
N = 3500
START = pd.Timestamp("2024-01-01", tz="UTC")


def at(i: int) -> pd.Timestamp:
    """Open time of served candle number ``i`` (negative counts from the end)."""
    return START + (i % N) * HOUR


# The last served candle is still open at NOW: it must be dropped.
NOW = at(-1) + pd.Timedelta(minutes=30)


@pytest.fixture(scope="module")
def candles(hourly_candles) -> pd.DataFrame:
    """The ``N`` hourly candles the fake exchange serves, from ``START``."""
    return hourly_candles(N, START)


def _ms(stamp: pd.Timestamp) -> int:
    return int(stamp.value // 1_000_000)


@pytest.fixture
def fake(fake_binance, candles):
    """The fake exchange serving ``candles`` as BTC/USDT 1h."""
    fake_binance.set_candles(SYMBOL, "1h", candles)
    return fake_binance


def _start_times(fake) -> list[int]:
    return [int(r.params["startTime"]) for r in fake.kline_requests()]


def _exchange_info_requests(fake) -> int:
    return sum(r.path.endswith("/exchangeInfo") for r in fake.requests)


def _assert_ohlcv_frame(frame: pd.DataFrame) -> None:
    assert isinstance(frame.index, pd.DatetimeIndex)
    assert str(frame.index.tz) == "UTC"
    assert frame.index.name == "timestamp"
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert all(dtype == "float64" for dtype in frame.dtypes)
    assert frame.index.is_monotonic_increasing
    assert frame.index.is_unique


# ----------------------------------------------------------------------------- paging


@pytest.mark.parametrize(
    ("max_limit", "pages"),
    [
        (1000, 4),  # Binance's real page size: 3 full pages and a partial one
        (300, 12),  # a small server cap forces many pages, each shorter than asked
    ],
)
def test_many_pages_come_back_exactly(candles, fake, no_sleep_retry, max_limit, pages):
    fake.max_limit = max_limit
    client = fake.client()

    frame = fetch_ohlcv(client, SYMBOL, "1h", since=at(0), now=NOW, retry=no_sleep_retry)

    _assert_ohlcv_frame(frame)
    pd.testing.assert_frame_equal(frame, candles.iloc[:-1], check_exact=True)
    starts = _start_times(fake)
    assert len(starts) == pages
    # Each page asks from just after the last candle of the previous one: nothing
    # skipped, nothing asked twice.
    expected_starts = [_ms(at(0))] + [_ms(at(i * max_limit - 1)) + 1 for i in range(1, pages)]
    assert starts == expected_starts
    assert no_sleep_retry.sleep.waits == []


@pytest.mark.parametrize(
    ("since", "until", "first", "stop"),
    [
        # whole hours: half-open [since, until)
        (at(10), at(20), 10, 20),
        # since between two opens: the candle that opened before it is not included
        (at(10) + pd.Timedelta(minutes=1), at(20), 11, 20),
        # until between two opens: the candle opening before it is included
        (at(10), at(20) + pd.Timedelta(minutes=1), 10, 21),
        # a range across a page boundary
        (at(900), at(2100), 900, 2100),
    ],
)
def test_range_bounds_are_half_open(candles, fake, since, until, first, stop):
    frame = fetch_ohlcv(fake.client(), SYMBOL, "1h", since, until, now=NOW)
    pd.testing.assert_frame_equal(frame, candles.iloc[first:stop], check_exact=True)


def test_candle_open_at_now_is_dropped_and_closed_one_kept(fake):
    client = fake.client()
    last_closed = at(-1)
    # At exactly its close time the candle is complete.
    closed = fetch_ohlcv(client, SYMBOL, "1h", at(-5), now=last_closed + HOUR)
    still_open = fetch_ohlcv(
        client, SYMBOL, "1h", at(-5), now=last_closed + HOUR - pd.Timedelta("1ms")
    )
    assert closed.index[-1] == last_closed
    assert still_open.index[-1] == last_closed - HOUR


def test_progress_reaches_the_number_of_candles(fake):
    calls: list[tuple[str, float, dict]] = []
    frame = fetch_ohlcv(
        fake.client(),
        SYMBOL,
        "1h",
        at(0),
        at(2500),
        now=NOW,
        progress=lambda stage, fraction, details: calls.append((stage, fraction, dict(details))),
    )
    assert len(calls) == 3  # one per page, in the package's one signature
    assert {stage for stage, _, _ in calls} == {"fetch"}
    assert [details["done"] for _, _, details in calls] == [1000, 2000, 2500]
    assert {details["expected"] for _, _, details in calls} == {2500}
    assert [fraction for _, fraction, _ in calls] == [0.4, 0.8, 1.0]
    assert len(frame) == 2500


# ---------------------------------------------------------------------------- retries


def _assert_backoff_grows(waits: list[float], policy: RetryPolicy) -> None:
    for attempt, wait in enumerate(waits, start=1):
        base = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
        assert 0.75 * base <= wait <= 1.25 * base
    # The jitter bands of consecutive tries do not overlap: each wait is longer.
    assert all(earlier < later for earlier, later in zip(waits, waits[1:], strict=False))


@pytest.mark.parametrize(
    ("fault", "times"),
    [
        ("500", 1),  # gateway error once
        ("502", 2),  # twice in a row
        ("503", 1),
        ("429", 2),  # rate limited, then let through
        ("timeout", 1),  # the answer comes after the client gave up
        ("reset", 2),  # connection reset by peer
        ("malformed", 2),  # a body cut mid-JSON, which ccxt passes on silently
    ],
)
def test_transient_failure_is_retried_then_succeeds(candles, fake, no_sleep_retry, fault, times):
    fake.timeout_seconds = 1.0
    client = fake.client(timeout=500)
    client.load_markets()
    fake.inject(fault, times=times)

    frame = fetch_ohlcv(client, SYMBOL, "1h", at(0), at(1500), now=NOW, retry=no_sleep_retry)

    pd.testing.assert_frame_equal(frame, candles.iloc[:1500], check_exact=True)
    # The failed first page is asked again from the same place; then the second page.
    first = _ms(at(0))
    assert _start_times(fake) == [first] * (times + 1) + [_ms(at(999)) + 1]
    assert len(no_sleep_retry.sleep.waits) == times
    _assert_backoff_grows(no_sleep_retry.sleep.waits, no_sleep_retry)


@pytest.mark.parametrize(
    ("fault", "error", "phrases"),
    [
        ("500", NetworkUnreachable, ["unavailable", "HTTP 500", "Try again later"]),
        ("503", NetworkUnreachable, ["unavailable", "HTTP 503", "another exchange"]),
        ("timeout", NetworkUnreachable, ["Could not reach binance", "network connection"]),
        ("reset", NetworkUnreachable, ["Could not reach binance", "network connection"]),
        ("429", RateLimited, ["HTTP 429", "Wait a minute"]),
        ("418", RateLimited, ["HTTP 418", "Wait a minute"]),  # Binance's IP ban
        ("malformed", ExchangeFailure, ["could not be read", "Try again later"]),
    ],
)
def test_transient_failure_that_never_stops_gives_up(fake, no_sleep_retry, fault, error, phrases):
    fake.timeout_seconds = 1.0
    client = fake.client(timeout=500)
    client.load_markets()
    fake.inject(fault, times=10)
    policy = dataclasses.replace(no_sleep_retry, attempts=3)

    with pytest.raises(error) as caught:
        fetch_ohlcv(client, SYMBOL, "1h", at(0), at(10), retry=policy)

    message = str(caught.value)
    for phrase in phrases:
        assert phrase in message
    assert "tried 3 times" in message
    assert isinstance(caught.value.__cause__, ccxt.BaseError)  # the cause stays in the chain
    assert len(fake.kline_requests()) == 3
    assert len(policy.sleep.waits) == 2


@pytest.mark.parametrize(
    "fault",
    [
        "503",  # the market list is unavailable for a moment
        "reset",
        "malformed",  # ccxt reads a garbled list as "no markets": must not blame the symbol
    ],
)
def test_market_list_failures_are_retried(fake, no_sleep_retry, fault):
    fake.inject(fault, times=2, endpoint="exchangeInfo")
    symbols = list_symbols(fake.client(), retry=no_sleep_retry)
    assert symbols == [SYMBOL]
    assert len(no_sleep_retry.sleep.waits) == 2


def test_market_list_that_stays_garbled_is_an_exchange_failure(fake, no_sleep_retry):
    fake.inject("malformed", times=10, endpoint="exchangeInfo")
    with pytest.raises(ExchangeFailure, match="could not be read"):
        fetch_ohlcv(fake.client(), SYMBOL, "1h", now=NOW, retry=no_sleep_retry)
    assert _exchange_info_requests(fake) == no_sleep_retry.attempts
    assert fake.kline_requests() == []


# ------------------------------------------------------------ failures never retried


@pytest.mark.parametrize(
    ("symbol", "suggested"),
    [
        ("BTC/USDX", "BTC/USDT"),  # a typo in the quote currency
        ("btcusdt", "BTC/USDT"),  # the exchange's own spelling, lower case
        ("ETH-BTC", "ETH/BTC"),  # another separator
    ],
)
def test_unknown_symbol_suggests_listed_ones(fake, no_sleep_retry, symbol, suggested):
    fake.add_symbol("ETH/BTC")
    fake.add_symbol("ETH/USDT")

    with pytest.raises(InvalidSymbol) as caught:
        fetch_ohlcv(fake.client(), symbol, "1h", retry=no_sleep_retry)

    assert caught.value.suggestions[0] == suggested
    assert f"Did you mean {suggested}" in str(caught.value)
    assert fake.kline_requests() == []
    assert _exchange_info_requests(fake) == 1
    assert no_sleep_retry.sleep.waits == []


def test_symbol_the_exchange_rejects_is_not_retried(fake, no_sleep_retry):
    # The client's market list says XRP/USDT exists, the exchange says -1121 Invalid symbol
    # (a stale market list): the answer is final, asking again cannot help.
    client = fake.client()
    client.load_markets()
    client.markets["XRP/USDT"] = {**client.markets[SYMBOL], "symbol": "XRP/USDT", "id": "XRPUSDT"}
    client.markets_by_id["XRPUSDT"] = [client.markets["XRP/USDT"]]

    with pytest.raises(InvalidSymbol, match="does not list XRP/USDT") as caught:
        fetch_ohlcv(client, "XRP/USDT", "1h", retry=no_sleep_retry, validate=False)

    assert "XRP/USDT" not in caught.value.suggestions  # not the rejected symbol again

    assert len(fake.kline_requests()) == 1
    assert no_sleep_retry.sleep.waits == []


@pytest.mark.parametrize(
    ("fault", "endpoint"),
    [
        ("451", "klines"),  # blocked once the markets are known
        ("451", "exchangeInfo"),  # blocked on the very first request, as Binance does
    ],
)
def test_geo_block_is_reported_once_with_a_way_out(fake, no_sleep_retry, fault, endpoint):
    fake.inject(fault, times=no_sleep_retry.attempts, endpoint=endpoint)

    with pytest.raises(GeoBlocked) as caught:
        fetch_ohlcv(fake.client(), SYMBOL, "1h", retry=no_sleep_retry)

    message = str(caught.value)
    assert "location" in message
    assert "451" in message
    assert "US-hosted" in message
    assert "Streamlit Community Cloud" in message
    assert "Choose another exchange" in message
    asked = len(fake.kline_requests()) if endpoint == "klines" else _exchange_info_requests(fake)
    assert asked == 1
    assert no_sleep_retry.sleep.waits == []


def test_bad_request_is_an_exchange_failure_asked_once(fake, no_sleep_retry):
    fake.inject("400", times=no_sleep_retry.attempts)

    with pytest.raises(ExchangeFailure, match="binance refused the request") as caught:
        fetch_ohlcv(fake.client(), SYMBOL, "1h", retry=no_sleep_retry)

    assert "Illegal characters" in str(caught.value)  # the exchange's own words
    assert len(fake.kline_requests()) == 1
    assert no_sleep_retry.sleep.waits == []


API_KEY = "k3y-VALUE-0123456789abcdef"
API_SECRET = "s3cr3t-VALUE-fedcba9876543210"


@pytest.mark.parametrize(
    ("raised", "error"),
    [
        # Binance's answer to a wrong key
        (
            ccxt.AuthenticationError(
                'binance {"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}'
            ),
            BadCredentials,
        ),
        (ccxt.PermissionDenied(f"binance key {API_KEY} lacks permission"), BadCredentials),
        # an exchange that puts the key in the query string echoes it back in the URL
        (
            ccxt.ExchangeError(
                f"binance GET https://x.test/klines?apiKey={API_KEY}&secret={API_SECRET} "
                "400 Bad Request"
            ),
            ExchangeFailure,
        ),
    ],
)
def test_credentials_never_appear_in_messages(fake, no_sleep_retry, raised, error):
    client = fake.client(
        apiKey=API_KEY,
        secret=API_SECRET,
        # With keys, ccxt would also ask the (real) margin and currency endpoints.
        options={"fetchCurrencies": False, "fetchMargins": False},
    )
    calls = []

    def rejected(*args, **kwargs):
        calls.append(args)
        raise raised

    client.fetch_ohlcv = rejected

    with pytest.raises(error) as caught:
        fetch_ohlcv(client, SYMBOL, "1h", retry=no_sleep_retry)

    message = str(caught.value)
    assert API_KEY not in message
    assert API_SECRET not in message
    if error is BadCredentials:
        assert "rejected the API keys" in message
        assert "secrets.toml" in message
    assert len(calls) == 1
    assert no_sleep_retry.sleep.waits == []


class EchoingBinance(FakeBinance):
    """The fake exchange, answering every klines request with an error that echoes it.

    Some exchanges do this: the query string and the extra headers come back in the
    error body, and ccxt puts the body in its exception's message.
    """

    def _dispatch(self, handler) -> None:
        if not handler.path.startswith("/api/v3/klines"):
            super()._dispatch(handler)
            return
        custom = " ".join(f"{k}: {v}" for k, v in handler.headers.items() if k.startswith("X-"))
        handler.send_json(
            400, {"code": -1100, "msg": f"Illegal characters found in {custom} {handler.path}"}
        )


@pytest.fixture(scope="module")
def echoing(candles):
    with EchoingBinance({(SYMBOL, "1h"): candles}) as fake:
        yield fake


def credentials_in_query(client: ccxt.Exchange) -> ccxt.Exchange:
    """``client`` sending every credential it holds in the query string, first."""
    sign = client.sign
    held = {k: getattr(client, k) for k in sorted(SECRET_KEYS) if getattr(client, k, None)}

    def signed(*args, **kwargs):
        request = sign(*args, **kwargs)
        url, _, query = request["url"].partition("?")
        request["url"] = f"{url}?{urllib.parse.urlencode(held)}&{query}"
        return request

    client.sign = signed
    return client


def forms(secret: object) -> set[str]:
    """How a request or an error body can spell ``secret``."""
    text = str(secret)
    return {
        text,
        urllib.parse.quote(text, safe=""),
        urllib.parse.quote_plus(text, safe=""),
        json.dumps(text)[1:-1],
    }


def assert_nothing_secret(message: str, secrets: list[object]) -> None:
    for secret in secrets:
        for form in forms(secret):
            if len(form) >= 4:
                assert form not in message, f"{form!r} shown"
            else:
                # One to three characters are blanked where they stand alone: "a" may
                # still be a letter of "binance", never the value of a parameter.
                alone = rf"(?<![A-Za-z0-9]){re.escape(form)}(?![A-Za-z0-9])"
                assert not re.search(alone, message), f"{form!r} shown"


def echoed_message(fake: FakeBinance, retry: RetryPolicy, **config) -> str:
    # With keys, ccxt would also ask the (real) margin and currency endpoints.
    options = {"fetchCurrencies": False, "fetchMargins": False}
    client = credentials_in_query(fake.client(options=options, **config))
    with pytest.raises(ExchangeFailure) as caught:
        fetch_ohlcv(client, SYMBOL, "1h", now=NOW, retry=retry)
    message = str(caught.value)
    assert message.startswith("binance refused the request")
    assert "Illegal characters" in message, "the exchange's own words stay"
    return message


@pytest.mark.parametrize(
    "config",
    [
        # The cases: a key given only in headers, a numeric uid, very short keys.
        {"headers": {"X-MBX-APIKEY": "hdr-0nly-k3y-abcdef"}},
        {"uid": 123456789},
        {"apiKey": "k", "secret": "s3"},
        {"apiKey": "abc", "uid": 7, "headers": {"X-Token": "q"}},
        # every credential ccxt knows, at once
        {key: f"{key}-value-{i}" for i, key in enumerate(sorted(SECRET_KEYS))},
        # keys with characters that are encoded in a URL and escaped in JSON
        {"apiKey": 'a+b/c=d "e" &f', "secret": "back\\slash%25"},
    ],
)
def test_echoed_request_shows_no_credential(echoing, no_sleep_retry, config):
    message = echoed_message(echoing, no_sleep_retry, **config)

    secrets = [v for k, v in config.items() if k != "headers"]
    secrets += list(config.get("headers", {}).values())
    assert_nothing_secret(message, secrets)
    assert "***" in message, "the echo reached the message, blanked"


secret_text = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="*"),
    min_size=1,
    max_size=40,
)
header_text = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_+/=.~",
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    credentials=st.dictionaries(st.sampled_from(sorted(SECRET_KEYS)), secret_text, max_size=3),
    uid=st.none() | st.integers(min_value=0, max_value=10**12),
    header=st.none() | header_text,
)
def test_no_credential_is_ever_echoed(echoing, no_sleep_retry, credentials, uid, header):
    # Every member of the kind: any credential field, any length from 1 to 40, numbers,
    # keys given only as a header.
    config: dict = dict(credentials)
    if uid is not None:
        config["uid"] = uid
    if header is not None:
        config["headers"] = {"X-Api-Key": header}

    message = echoed_message(echoing, no_sleep_retry, **config)

    secrets = [v for k, v in config.items() if k != "headers"]
    assert_nothing_secret(message, [*secrets, header] if header else secrets)


def test_secret_keys_are_every_credential_ccxt_knows():
    assert set(ccxt.Exchange.requiredCredentials) <= SECRET_KEYS
    assert {"apiKey", "secret", "uid", "password", "privateKey", "walletAddress"} <= SECRET_KEYS


# ------------------------------------------------------------- exchange configuration


@pytest.mark.parametrize(
    ("config", "phrases"),
    [
        # the two cases
        ({"timeout": "abc"}, ['"timeout"', "is text", "expected a number of milliseconds"]),
        ({"options": None}, ['"options"', "is null", "expected an object"]),
        # more of the same kind
        ({"enableRateLimit": "yes"}, ['"enableRateLimit"', "is text", "expected true or false"]),
        ({"headers": ["X-Key"]}, ['"headers"', "is a list", "expected an object"]),
        ({"headers": {"X-Key": 1.5}}, ['"headers.X-Key"', "is a number", "expected text"]),
        ({"urls": {"api": {"public": 5}}}, ['"urls.api.public"', "is a number"]),
        ({"apiKey": ["k"]}, ['"apiKey"', "is a list", "expected text"]),
        ({"secret": True}, ['"secret"', "is true or false", "expected text"]),
        ({"timeout": -5}, ['"timeout"', "from 1 to 600000"]),
        ({"timeout": math.inf}, ['"timeout"', "from 1 to 600000"]),
        ({"rateLimit": math.nan}, ['"rateLimit"', "from 0 to 60000"]),
        ({"nonce": 5}, ['"nonce"', "not a setting"]),
        ({"precisionMode": "x"}, ['"precisionMode"', "expected a number"]),  # ccxt's default
        ("not an object", ["settings for binance are text"]),
    ],
)
def test_wrong_exchange_settings_get_one_line(config, phrases):
    with pytest.raises(ConfigurationError) as caught:
        create_exchange("binance", config)
    message = str(caught.value)
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message
    assert "secrets.toml" in message
    assert "--exchange-config" in message
    with pytest.raises(ConfigurationError):
        source_key("binance", config)  # the cache key, asked for first, says the same


def test_settings_of_the_right_kind_pass():
    config = {
        "timeout": 30_000,
        "rateLimit": 250.5,
        "enableRateLimit": False,
        "options": {"defaultType": "spot"},
        "headers": {"X-Key": 42, "X-Other": "v"},
        "uid": 12345,  # a TOML integer
        "apiKey": "k",
        "urls": {"api": {"public": "http://127.0.0.1:1/api/v3"}, "doc": ["a", "b"]},
        "somethingCcxtAdds": {"free": "form"},
    }
    client = create_exchange("binance", config)
    assert client.timeout == 30_000
    assert client.uid == "12345", "numbers become the text ccxt expects"
    assert client.headers == {"X-Key": "42", "X-Other": "v"}
    assert client.options["defaultType"] == "spot"
    assert checked_config("binance", None) == {}


KNOWN_SETTINGS = sorted(
    {
        "timeout",
        "rateLimit",
        "enableRateLimit",
        "verbose",
        "options",
        "urls",
        "headers",
        "proxies",
        "userAgent",
        "httpProxy",
        "precisionMode",
        "api",
        "has",
        "fees",
        "timeframes",
        "commonCurrencies",
        "nonce",
        "anything",
    }
    | SECRET_KEYS
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KNOWN_SETTINGS), values, min_size=1, max_size=4))
def test_any_exchange_settings_give_a_client_or_one_line(config):
    try:
        client = create_exchange("binance", config)
    except ConfigurationError as exc:
        message = str(exc)
        assert "\n" not in message
        assert any(f'"{key}' in message for key in config), message
        # A setting's own value may be named ("rateLimit ... is -100"): a credential
        # that happens to have the same text is not what is shown then.
        public = " ".join(str(v) for k, v in config.items() if k not in SECRET_KEYS)
        for key in SECRET_KEYS & set(config):
            if len(str(config[key])) >= 4 and str(config[key]) not in public:
                assert str(config[key]) not in message, "a value is never shown"
    else:
        assert isinstance(client, ccxt.Exchange)
        source_key("binance", config)


# ------------------------------------------------------------- requests that are wrong


@pytest.mark.parametrize(
    "timeframe",
    [
        "7h",  # a valid timeframe that Binance does not offer
        "2w",  # the same for weeks
    ],
)
def test_timeframe_not_offered_lists_the_offered_ones(fake, timeframe):
    with pytest.raises(InvalidTimeframe) as caught:
        fetch_ohlcv(fake.client(), SYMBOL, timeframe, now=NOW)
    offered = caught.value.offered
    assert {"1m", "1h", "4h", "1d", "1w", "1M"} <= set(offered)
    assert offered.index("1m") < offered.index("1h") < offered.index("1d")  # shortest first
    assert "1h, 2h, 4h" in str(caught.value)
    assert fake.requests == []  # known without asking the exchange


def test_timeframe_that_is_not_a_timeframe(fake):
    with pytest.raises(InvalidTimeframe, match="not a timeframe"):
        fetch_ohlcv(fake.client(), SYMBOL, "hourly", now=NOW)


@pytest.mark.parametrize(
    ("exchange_id", "hint"),
    [
        ("binanse", "Did you mean binance"),  # a typo
        ("krakn", "Did you mean kraken"),
        ("zzqqxx", None),  # nothing close: no hint
        ("", None),  # nothing at all
    ],
)
def test_unknown_exchange(exchange_id, hint):
    with pytest.raises(UnknownExchange, match="is not an exchange ccxt supports") as caught:
        create_exchange(exchange_id)
    if hint:
        assert hint in str(caught.value)
    else:
        assert "Did you mean" not in str(caught.value)


def test_exchange_list_is_what_constructed_clients_say():
    """The list reads each class's description; a client of every exchange, asked the
    slow way, gives the same answer."""
    expected = []
    for exchange_id in ccxt.exchanges:
        try:
            if getattr(ccxt, exchange_id)().has.get("fetchOHLCV"):
                expected.append(exchange_id)
        except Exception:  # noqa: BLE001, S112 - the list skips those too
            continue
    assert list_exchanges() == sorted(expected)
    assert {"binance", "bitstamp", "kraken"} <= set(list_exchanges())


def test_exchange_id_is_forgiving_about_case_and_spaces():
    assert create_exchange("  Bitstamp ").id == "bitstamp"


def test_unknown_exchange_through_load_exchange_candles(tmp_cache):
    with pytest.raises(UnknownExchange, match="Did you mean binance"):
        load_exchange_candles("binanse", SYMBOL, "1h", at(0), at(10), cache=tmp_cache, now=NOW)


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (at(10), at(10)),  # empty range
        (at(10), at(5)),  # reversed
        (NOW + HOUR, None),  # starts in the future: until defaults to now
    ],
)
def test_empty_or_reversed_range(fake, tmp_cache, since, until):
    client = fake.client()
    with pytest.raises(InvalidDateRange, match="must be before the end"):
        fetch_ohlcv(client, SYMBOL, "1h", since, until, now=NOW)
    with pytest.raises(InvalidDateRange, match="must be before the end"):
        load_exchange_candles(
            "binance", SYMBOL, "1h", since, until, cache=tmp_cache, exchange=client, now=NOW
        )
    assert fake.requests == []


@pytest.mark.parametrize(
    ("symbol", "since", "until"),
    [
        # before the pair's first candle
        (SYMBOL, at(0) - 50 * HOUR, at(0) - 10 * HOUR),
        # a listed pair without any trading
        ("ETH/BTC", at(0), at(100)),
    ],
)
def test_range_without_candles(fake, tmp_cache, symbol, since, until):
    fake.add_symbol("ETH/BTC")
    with pytest.raises(NoCandles, match="has no 1h candles"):
        load_exchange_candles(
            "binance",
            symbol,
            "1h",
            since,
            until,
            cache=tmp_cache,
            exchange=fake.client(),
            now=NOW,
        )


def test_suggestions_fall_back_to_the_same_base():
    symbols = ["BTC/EUR", "BTC/USDT", "ETH/USDT"]
    assert suggest_symbols("BTC/XYZABC", symbols) == ["BTC/EUR", "BTC/USDT"]
    assert suggest_symbols("DOGE/USDT", ["BTC/EUR"]) == []


# ----------------------------------------------------------------------------- source_key


URLS = {"urls": {"api": {"public": "http://127.0.0.1:1/api/v3"}}}


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        # keys only: the same public candles as no config at all
        ({"apiKey": "a", "secret": "b"}, None, True),
        # different accounts see the same candles
        ({"apiKey": "a", "secret": "b"}, {"apiKey": "c", "secret": "d", "password": "e"}, True),
        # a test server must never share the real exchange's cache
        (URLS, None, False),
        ({**URLS, "apiKey": "a"}, URLS, True),
        (URLS, {"urls": {"api": {"public": "http://127.0.0.1:2/api/v3"}}}, False),
        ({"options": {"defaultType": "spot"}}, {"options": {"defaultType": "swap"}}, False),
        # key order does not matter
        ({"options": {"a": 1, "b": 2}}, {"options": {"b": 2, "a": 1}}, True),
    ],
)
def test_source_key(a, b, same):
    assert (source_key("binance", a) == source_key("binance", b)) is same


def test_source_key_never_contains_secrets():
    key = source_key("binance", {**URLS, "apiKey": API_KEY, "secret": API_SECRET})
    assert key.startswith("binance-")
    assert API_KEY not in key
    assert API_SECRET not in key
    assert source_key("binance") == "binance"
    assert source_key(" Binance ") == "binance"  # the same exchange whatever the spelling
