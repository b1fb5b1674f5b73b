"""Fixtures for AppTest: the app pointed at a local exchange server and a fresh cache."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from fake_exchange import FakeBinance
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import app_test


class _NavigationPagesManager(PagesManager):
    """A PagesManager that never takes the legacy ``pages/`` folder mode.

    AppTest resets the legacy flag before every run, so from the second run on it
    executes ``pages/<page>.py`` on its own, without the frame that ``st.navigation``
    in ``app.py`` provides. ``streamlit run`` sets the flag once and ``st.navigation``
    clears it; this restores that behaviour under AppTest.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        PagesManager.uses_pages_directory = False


@pytest.fixture(autouse=True)
def navigation_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the app under AppTest as ``streamlit run`` does (see above)."""
    monkeypatch.setattr(app_test, "PagesManager", _NavigationPagesManager)


def daily_candles(days: int, *, end: pd.Timestamp | None = None, seed: int = 7) -> pd.DataFrame:
    """Closed daily candles ending yesterday (UTC): a seeded random walk."""
    end = end if end is not None else pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=1)
    index = pd.date_range(end=end, periods=days, freq="1D", name="timestamp")
    rng = np.random.default_rng(seed)
    close = 20_000 * np.exp(np.cumsum(rng.normal(0, 0.02, days)))
    open_ = np.r_[close[0], close[:-1]]
    spread = np.abs(rng.normal(0, 0.01, days)) * close
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.uniform(100, 1000, days),
        },
        index=index,
    )


@pytest.fixture
def exchange_server() -> Iterator[FakeBinance]:
    """A local Binance-like server with BTC/USDT and ETH/USDT daily candles."""
    server = FakeBinance(
        {
            ("BTC/USDT", "1d"): daily_candles(3200),
            ("ETH/USDT", "1d"): daily_candles(3200, seed=11) / 15,
        }
    )
    server.add_symbol("BTC/EUR")
    with server:
        yield server


@pytest.fixture
def app_env(exchange_server: FakeBinance, tmp_path, monkeypatch: pytest.MonkeyPatch) -> FakeBinance:
    """Environment that makes the app default to the local server, with an empty cache."""
    monkeypatch.setenv("CFL_DEFAULT_EXCHANGE", "binance")
    monkeypatch.setenv("CFL_DEFAULT_SYMBOL", "BTC/USDT")
    monkeypatch.setenv("CFL_DEFAULT_TIMEFRAME", "1d")
    monkeypatch.setenv("CFL_EXCHANGES", json.dumps({"binance": exchange_server.ccxt_config()}))
    monkeypatch.setenv("CFL_CACHE_DIR", str(tmp_path / "cache"))
    # Look-ups are cached per exchange id across the process; each test has its own server.
    st.cache_data.clear()
    return exchange_server
