"""Shared fixtures: the fake Binance server, a throw-away candle cache, retries that never sleep.

Keep this file small and generic: anything only one test module needs belongs in that module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pytest
from fake_exchange import FakeBinance
from fake_feargreed import FakeFearGreed

from forecasting.data.cache import CandleCache
from forecasting.data.exchange import RetryPolicy


class SleepRecorder:
    """A stand-in for ``time.sleep`` that only records the waits it was asked for."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def make_hourly_candles(
    n: int, start: str | pd.Timestamp = "2024-01-01", *, seed: int = 7
) -> pd.DataFrame:
    """``n`` synthetic hourly candles from ``start`` (UTC), as an OHLCV frame.

    A random walk with "ugly" floats, so that exact equality after a round trip through
    HTTP, ccxt, Parquet or CSV really proves nothing was rounded. The index is in
    milliseconds, like every frame the package produces, so frames compare directly.
    """
    rng = np.random.default_rng(seed)
    first = pd.Timestamp(start)
    first = first.tz_localize("UTC") if first.tz is None else first.tz_convert("UTC")
    index = pd.date_range(first, periods=n, freq="h", name="timestamp").as_unit("ms")
    index.freq = None  # like a fetched frame, which never carries a frequency
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


@pytest.fixture(scope="session")
def hourly_candles() -> Callable[..., pd.DataFrame]:
    """The :func:`make_hourly_candles` factory: ``hourly_candles(n, start, seed=7)``.

    A fixture rather than an import: ``from conftest import ...`` picks whichever
    ``conftest`` module was loaded first (tests/app has its own).
    """
    return make_hourly_candles


@pytest.fixture
def fake_binance() -> Iterator[FakeBinance]:
    """A started :class:`FakeBinance` with no candles yet; stopped after the test."""
    with FakeBinance() as fake:
        yield fake


@pytest.fixture
def fake_feargreed() -> Iterator[FakeFearGreed]:
    """A started :class:`FakeFearGreed` (alternative.me's ``/fng/``) with no values yet."""
    with FakeFearGreed() as fake:
        yield fake


@pytest.fixture
def tmp_cache(tmp_path) -> CandleCache:
    """An empty candle cache in the test's temporary folder."""
    return CandleCache(tmp_path / "cache")


@pytest.fixture
def no_sleep_retry() -> RetryPolicy:
    """Four tries with the default backoff; the waits are only recorded, in ``.sleep.waits``.

    ``dataclasses.replace(no_sleep_retry, attempts=2)`` keeps the recorder.
    """
    return RetryPolicy(attempts=4, base_delay=0.5, max_delay=8.0, sleep=SleepRecorder())


@pytest.fixture(autouse=True)
def forget_unreachable_servers() -> Iterator[None]:
    """Each test starts with no server remembered as unreachable (the memory is
    process-wide, and a later test may get a port an earlier one found closed)."""
    from forecasting.data.reachability import REACHABILITY

    REACHABILITY.clear()
    yield
    REACHABILITY.clear()
