"""A real `streamlit run` of the app and a real headless Chromium driving it.

Skips with a reason where Debian's Chromium is absent (``.ci/run`` installs it). Never
downloads a browser: Playwright is pointed at ``/usr/bin/chromium``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fake_exchange import FakeBinance

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CFL_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.e2e


def _series():
    from tests.app.conftest import daily_candles

    # Different price levels per symbol, so a page showing another session's data shows.
    return {
        "BTC/USDT": daily_candles(3200),
        "ETH/USDT": daily_candles(3200, seed=11) / 15,
        "SOL/USDT": daily_candles(3200, seed=12) / 300,
        "XRP/USDT": daily_candles(3200, seed=13) / 40_000,
    }


E2E_SERIES = _series()


def wait_idle(page, timeout: float = 120_000) -> None:
    """Wait until the app's script run has finished (Streamlit marks it on the page).

    Clicking while the first run is still drawing interrupts it, and the browser then
    shows some widgets at their initial values: tests act only on an idle page.
    """
    idle = (
        "(() => { const el = document.querySelector('[data-test-script-state]');"
        " return el && el.getAttribute('data-test-script-state') === 'notRunning'; })()"
    )
    # A finished run can be followed at once by another (the page's address is rewritten,
    # a result is shown): idle means idle for a moment, not between two runs.
    deadline = time.monotonic() + timeout / 1000
    while True:
        page.wait_for_function(idle, timeout=max(1.0, deadline - time.monotonic()) * 1000)
        page.wait_for_timeout(400)
        if page.evaluate(idle) or time.monotonic() > deadline:
            return


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """Debian's Chromium, or a skip saying how to get it."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install chromium (CI installs it)")
    pytest.importorskip("playwright.sync_api", reason="playwright (requirements-dev.txt)")
    return CHROMIUM


@pytest.fixture(scope="session")
def e2e_exchange() -> Iterator[FakeBinance]:
    """The local exchange server the app under test talks to."""
    server = FakeBinance({(symbol, "1d"): frame for symbol, frame in E2E_SERIES.items()})
    with server:
        yield server


@contextmanager
def serve_app(exchange: FakeBinance, tmp_path_factory, **extra_env: str) -> Iterator[str]:
    """``streamlit run app.py`` on a free local port, pointed at the local exchange, with
    ``extra_env`` added to its environment (limits, for example); yields its URL."""
    port = _free_port()
    env = {
        **os.environ,
        "CFL_DEFAULT_EXCHANGE": "binance",
        "CFL_DEFAULT_SYMBOL": "BTC/USDT",
        "CFL_DEFAULT_TIMEFRAME": "1d",
        "CFL_EXCHANGES": json.dumps({"binance": exchange.ccxt_config()}),
        "CFL_CACHE_DIR": str(tmp_path_factory.mktemp("cache")),
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
        **extra_env,
    }
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "streamlit", "run", "app.py",
                "--server.port", str(port), "--server.address", "127.0.0.1",
                "--server.headless", "true", "--server.fileWatcherType", "none",
            ],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"streamlit did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.25)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="session")
def streamlit_url(e2e_exchange: FakeBinance, tmp_path_factory) -> Iterator[str]:
    """``streamlit run app.py`` on a free local port, pointed at the local exchange."""
    with serve_app(e2e_exchange, tmp_path_factory) as url:
        yield url


@pytest.fixture
def browser_page(chromium_path: Path, tmp_path):
    """A fresh headless Chromium page (new user-data dir each test)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(chromium_path),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context.new_page()
        finally:
            context.close()
