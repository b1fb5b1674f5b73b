"""Candles with zero or negative prices: every loader drops them and the quality report lists them.

Data providers write all-zero OHLCV rows for candles they do not have. Left in, they
crashed Prophet (log of zero) and gave the LSTM NaN forecasts. The right behaviour is
to treat them as missing and say so: never a traceback, never silent.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.data import (
    CandleCache,
    fetch_ohlcv,
    load_exchange_candles,
    load_sample,
    quality_report,
    read_ohlcv_csv,
    write_ohlcv_csv,
)
from forecasting.data.quality import dropped_nonpositive, nonpositive_mask
from forecasting.errors import DataFormatError, NoCandles
from forecasting.ohlcv import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
FIELD_CASES = ROOT.parent / "shared" / "field-cases"
ZERO_ROWS = FIELD_CASES / "token_with_zero_price_rows_1d.csv"
PLACEHOLDER_DAYS = pd.DatetimeIndex(
    [pd.Timestamp("2024-04-10", tz="UTC"), pd.Timestamp("2024-05-20", tz="UTC")], name="timestamp"
).as_unit("ms")
PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SYMBOL = "BTC/USDT"


def _field_case() -> Path:
    if not ZERO_ROWS.is_file():
        pytest.skip(f"{ZERO_ROWS.name} is not available (../shared/field-cases is absent)")
    return ZERO_ROWS


def _assert_priced(frame: pd.DataFrame) -> None:
    """No candle a loader returns may hold a price that is not a positive finite number."""
    prices = frame[["open", "high", "low", "close"]].to_numpy()
    assert np.isfinite(prices).all()
    assert (prices > 0).all()


# --- the field case: a token with two all-zero days ---------------------------------------


def test_field_case_reads_the_right_candles() -> None:
    data = read_ohlcv_csv(_field_case())
    # 90 rows from 2024-03-01 to 2024-05-29, two of them placeholders
    assert len(data.candles) == 88
    assert data.nonpositive.equals(PLACEHOLDER_DAYS)
    assert not data.candles.index.isin(PLACEHOLDER_DAYS).any()
    assert (data.timeframe, data.calendar, data.duplicates) == ("1d", "24/7", 0)
    assert data.candles.index[0] == pd.Timestamp("2024-03-01", tz="UTC")
    assert data.candles.index[-1] == pd.Timestamp("2024-05-29", tz="UTC")
    _assert_priced(data.candles)


def test_field_case_quality_report_lists_the_two_days() -> None:
    data = read_ohlcv_csv(_field_case())
    # passed on explicitly, as duplicates are ...
    report = quality_report(
        data.candles,
        data.timeframe,
        calendar=data.calendar,
        duplicates=data.duplicates,
        nonpositive=data.nonpositive,
    )
    assert report.nonpositive.equals(PLACEHOLDER_DAYS)
    # ... or found where the reader recorded them on the candles
    assert quality_report(data.candles, data.timeframe).nonpositive.equals(PLACEHOLDER_DAYS)
    summary = report.summary()
    assert summary["nonpositive"] == 2
    # the dropped days are missing candles, one gap each
    assert report.gaps["start"].tolist() == list(PLACEHOLDER_DAYS)
    assert report.gaps["missing"].tolist() == [1, 1]
    assert (summary["candles"], summary["expected"], summary["missing"]) == (88, 90, 2)
    assert not report.is_clean


def test_features_command_on_the_field_case_is_clean(tmp_path: Path) -> None:
    out = tmp_path / "features.csv"
    result = subprocess.run(
        [sys.executable, "-W", "default", "-m", "forecasting", "features"]
        + ["--data", str(_field_case()), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning" not in result.stderr
    assert "Traceback" not in result.stderr
    table = pd.read_csv(out, index_col="timestamp")
    assert len(table) > 0
    assert not table.index.isin(["2024-04-10T00:00:00Z", "2024-05-20T00:00:00Z"]).any()
    assert (table[["open", "high", "low", "close"]] > 0).all().all()


@pytest.mark.parametrize("command", ["compare", "forecast", "backtest"])
def test_the_dropped_days_are_said_once_by_every_command(command: str, capsys) -> None:
    # compare said it twice in two wordings: how the file was read, then the experiment.
    from forecasting.cli import main

    flags = {
        "compare": ["--models", "naive,drift", "--folds", "1", "--test-size", "10"],
        "forecast": ["--model", "naive"],
        "backtest": ["--models", "naive,drift", "--folds", "1", "--test-size", "10"],
    }[command]
    for json_flag in ([], ["--json"]):
        argv = [command, "--data", str(_field_case()), "--horizon", "2", *flags, *json_flag]
        assert main(argv) == 0
        captured = capsys.readouterr()
        said = captured.err if not json_flag else " ".join(json.loads(captured.out)["notes"])
        assert said.count("zero or negative prices were dropped") == 1, said
        assert "2 candles with zero or negative prices" in said
        assert "the first at 2024-04-10T00:00:00Z" in said


def test_file_of_placeholders_only_is_one_line_error() -> None:
    rows = [f"2024-03-0{day},0,0,0,0,0" for day in range(1, 6)]
    with pytest.raises(DataFormatError) as caught:
        read_ohlcv_csv(("timestamp,open,high,low,close,volume\n" + "\n".join(rows)).encode())
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("Every row of the file has a zero or negative price (5 rows")
    assert "Export the data again" in message


# --- exchanges and the cache ----------------------------------------------------------------


@pytest.fixture
def served(fake_binance, hourly_candles):
    """200 hourly candles; those at positions 50 and 120 to 122 are placeholders."""
    candles = hourly_candles(200, "2024-01-01")
    candles.iloc[50] = 0.0
    candles.iloc[120:123, :4] = -1.0
    fake_binance.set_candles(SYMBOL, "1h", candles)
    return candles


def test_exchange_placeholders_dropped_and_remembered(fake_binance, served, tmp_cache) -> None:
    placeholders = served.index[[50, 120, 121, 122]]
    now = served.index[-1] + pd.Timedelta(days=1)

    fetched = fetch_ohlcv(fake_binance.client(), SYMBOL, "1h", served.index[0], now, now=now)
    assert len(fetched) == 196
    assert dropped_nonpositive(fetched).equals(placeholders)
    _assert_priced(fetched)

    def load(since: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
        return load_exchange_candles(
            "binance",
            SYMBOL,
            "1h",
            since,
            until,
            cache=tmp_cache,
            exchange=fake_binance.client,
            now=now,
        )

    first = load(served.index[0], served.index[-1] + pd.Timedelta(hours=1))
    pd.testing.assert_frame_equal(first, fetched)
    assert quality_report(first, "1h").nonpositive.equals(placeholders)
    # the cache holds no placeholder, but remembers them
    cached = tmp_cache.read("binance", SYMBOL, "1h")
    _assert_priced(cached.candles)
    assert cached.nonpositive.equals(placeholders)

    fake_binance.clear_requests()
    part = load(served.index[100], served.index[150])  # from the cache alone
    assert fake_binance.kline_requests() == []
    report = quality_report(part, "1h")
    assert report.nonpositive.equals(placeholders[1:])  # only those in the range
    assert report.gaps["missing"].tolist() == [3]

    with pytest.raises(NoCandles, match="only candles with zero or negative prices"):
        load(served.index[120], served.index[123])


def test_cache_files_holding_placeholders_are_cleaned_on_read(tmp_cache, hourly_candles) -> None:
    candles = hourly_candles(10)
    candles.iloc[3, 3] = 0.0
    with tmp_cache.lock("src", SYMBOL, "1h"):
        tmp_cache.write("src", SYMBOL, "1h", candles, candles.index[0], candles.index[-1])
    cached = tmp_cache.read("src", SYMBOL, "1h")
    assert len(cached.candles) == 9
    assert list(cached.nonpositive) == [candles.index[3]]
    assert dropped_nonpositive(cached.candles).equals(cached.nonpositive)


def test_sample_holds_only_positive_prices() -> None:
    sample = load_sample()
    _assert_priced(sample)
    assert dropped_nonpositive(sample).empty


# --- property: no loader ever returns a non-positive price --------------------------------

ANY_PRICE = st.one_of(
    st.floats(min_value=1e-9, max_value=1e9),
    st.sampled_from([0.0, -0.0, -1.0, -1e-12]),
    st.floats(max_value=0.0, allow_infinity=False),
)
ANY_NUMBER = ANY_PRICE | st.sampled_from([np.nan, np.inf, -np.inf])


@st.composite
def candle_rows(draw, prices=ANY_PRICE) -> pd.DataFrame:
    """Hourly candles whose prices may be zero, negative (or, for numbers, not finite)."""
    n = draw(st.integers(min_value=1, max_value=25))
    start = pd.Timestamp("2024-01-01", tz="UTC") + draw(st.integers(0, 10_000)) * pd.Timedelta(
        hours=1
    )
    index = pd.date_range(start, periods=n, freq="h", name="timestamp").as_unit("ms")
    rows = draw(
        st.lists(
            st.tuples(prices, prices, prices, prices, st.floats(0.0, 1e6)),
            min_size=n,
            max_size=n,
        )
    )
    return pd.DataFrame(rows, index=index, columns=list(COLUMNS), dtype="float64")


@PROPERTY
@given(candle_rows())
def test_property_csv_reader_never_returns_a_nonpositive_price(frame: pd.DataFrame) -> None:
    buffer = io.StringIO()
    write_ohlcv_csv(frame, buffer)
    bad = nonpositive_mask(frame)
    if (~bad).sum() < 2:  # too few priced candles to tell the timeframe: refused, in a line
        with pytest.raises(DataFormatError) as caught:
            read_ohlcv_csv(buffer.getvalue().encode())
        assert "\n" not in str(caught.value)
        assert ("zero or negative price" in str(caught.value)) == bool(bad.any())
        return
    data = read_ohlcv_csv(buffer.getvalue().encode())
    _assert_priced(data.candles)
    assert data.nonpositive.equals(frame.index[bad])
    assert data.candles.index.equals(frame.index[~bad])
    assert quality_report(data.candles, data.timeframe).nonpositive.equals(frame.index[bad])


class _StubExchange:
    """Just what ``fetch_ohlcv`` asks of a ccxt client: one page of the rows it holds."""

    id = "stub"
    features: dict = {}
    last_http_response = None

    def __init__(self, rows: list[list[float]]) -> None:
        self.rows = rows

    def fetch_ohlcv(self, symbol, timeframe, since=None, limit=None):
        return [row for row in self.rows if row[0] >= since][:limit]


@PROPERTY
@given(candle_rows(prices=ANY_NUMBER))
def test_property_exchange_fetch_never_returns_a_nonpositive_price(frame: pd.DataFrame) -> None:
    stamps = frame.index.asi8.tolist()
    rows = [[ms, *values] for ms, values in zip(stamps, frame.to_numpy().tolist(), strict=True)]
    end = frame.index[-1] + pd.Timedelta(hours=1)
    fetched = fetch_ohlcv(
        _StubExchange(rows), SYMBOL, "1h", frame.index[0], end, now=end, validate=False
    )
    bad = nonpositive_mask(frame)
    _assert_priced(fetched)
    assert fetched.index.equals(frame.index[~bad])
    assert dropped_nonpositive(fetched).equals(frame.index[bad])


@PROPERTY
@given(candle_rows(prices=ANY_NUMBER))
def test_property_cache_never_returns_a_nonpositive_price(frame: pd.DataFrame) -> None:
    with tempfile.TemporaryDirectory() as folder:
        cache = CandleCache(folder)
        with cache.lock("src", SYMBOL, "1h"):
            cache.write("src", SYMBOL, "1h", frame, frame.index[0], frame.index[-1])
        cached = cache.read("src", SYMBOL, "1h")
    bad = nonpositive_mask(frame)
    _assert_priced(cached.candles)
    assert cached.candles.index.equals(frame.index[~bad])
    assert cached.nonpositive.equals(frame.index[bad])
