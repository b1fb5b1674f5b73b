"""User text with Markdown payloads, through every message path AppTest can reach.

Each test feeds a link, an image and other payloads where a stranger can put text (a
shared link, a CSV's header, cells and file name, a bundle's keys, an exchange's error
body) and checks that no text the page draws would render a link, an image or HTML,
and that the payload is shown as its characters. ``tests/e2e/test_injection_browser.py``
checks the same in the browser's DOM.
"""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.app.markdown_check import foreign, visible

APP = str(Path(__file__).resolve().parents[2] / "app.py")
LINK = "[Sign in](https://evil.example/x)"
IMAGE = "![x](https://evil.example/p.png)"
DAYS = "\n".join(f"2024-01-{day:02d},1,2,0.5,1.5,10" for day in range(1, 31))


def open_app(params: dict[str, str] | None = None, page: str | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120)
    app.query_params = dict(params or {})
    app.run()
    if page:
        app.switch_page(page).run()
    return app


def drawn(app: AppTest) -> list[str]:
    """The Markdown of every message, caption, heading and tooltip on the page."""
    texts = []
    for kind in ("error", "warning", "info", "success", "caption", "markdown", "toast"):
        texts += [element.value for element in getattr(app, kind)]
    for kind in ("title", "header", "subheader"):
        texts += [element.value for element in getattr(app, kind)]
    for kind in ("selectbox", "text_input", "number_input", "file_uploader", "metric"):
        texts += [e.help for e in app.get(kind) if getattr(e, "help", None)]
        texts += [e.label for e in app.get(kind) if getattr(e, "label", None)]
    return texts


def assert_inert(app: AppTest, *shown: str) -> None:
    """Nothing drawn renders foreign markup; each of ``shown`` appears as its characters."""
    assert not app.exception, app.exception
    texts = drawn(app)
    assert {text: foreign(text) for text in texts if foreign(text)} == {}
    seen = " ".join(visible(text) for text in texts)
    for payload in shown:
        assert payload in seen


def upload_csv(app: AppTest, name: str, data: str) -> AppTest:
    app.radio(key="source").set_value("csv").run()
    app.file_uploader(key="csv_file").upload(name, data.encode()).run()
    return app


# --- CSV files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "shown"),
    [
        # a header the app does not know is quoted in the error
        ("prices.csv", f"timestamp,open,high,low,close,{LINK}\n{DAYS}", [LINK]),
        # a cell that is not a date is quoted in the error
        (
            "prices.csv",
            f"timestamp,open,high,low,close,volume\n{IMAGE},1,2,0.5,1.5,10\n{DAYS}",
            [IMAGE],
        ),
        # the file's name is the data's label on every page
        (f"{LINK} {IMAGE}.csv", f"timestamp,open,high,low,close,volume\n{DAYS}", [LINK, IMAGE]),
    ],
)
def test_csv_payloads_are_shown_as_text(app_env, name, data, shown):
    app = upload_csv(open_app(), name, data)
    assert_inert(app, *shown)
    for page in ("pages/features.py", "pages/models.py", "pages/compare.py"):
        assert_inert(app.switch_page(page).run(), *shown[-1:] if "volume" in data else [])


# --- shared links --------------------------------------------------------------------------


def test_link_values_and_names_are_shown_as_text(app_env):
    app = open_app({"horizon": LINK, IMAGE: "1", "symbol": LINK})
    assert app.warning, "the refused settings are named"
    assert_inert(app, LINK, IMAGE)


def test_bundle_keys_and_values_are_shown_as_text(app_env):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app_settings.json", json.dumps({LINK: "1", "horizon": IMAGE}))
        archive.writestr("settings.json", "{}")
    app = open_app(page="pages/compare.py")
    app.file_uploader(key="bundle_upload").upload("experiment.zip", buffer.getvalue()).run()
    assert app.success or app.warning or app.error
    assert_inert(app, LINK, IMAGE)


# --- an exchange that echoes the request in its error body ---------------------------------


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # stdlib's naming
        body = json.dumps({"code": -1000, "msg": f"Unknown error. {LINK} {IMAGE}"}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def echoing_exchange(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The app's default exchange answering every request with the payloads in its error."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    config = {
        "urls": {"api": {"public": f"{url}/api/v3"}},
        "options": {"fetchMarkets": {"types": ["spot"]}},
        "timeout": 2000,
        "enableRateLimit": False,
    }
    monkeypatch.setenv("CFL_DEFAULT_EXCHANGE", "binance")
    monkeypatch.setenv("CFL_DEFAULT_SYMBOL", "BTC/USDT")
    monkeypatch.setenv("CFL_DEFAULT_TIMEFRAME", "1d")
    monkeypatch.setenv("CFL_EXCHANGES", json.dumps({"binance": config}))
    monkeypatch.setenv("CFL_CACHE_DIR", str(tmp_path / "cache"))
    st.cache_data.clear()
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def test_exchange_error_bodies_are_shown_as_text(echoing_exchange):
    app = open_app({"symbol": LINK})
    assert app.warning, "listing the symbols failed, with a message"
    assert app.error, "loading the candles failed, with a message"
    assert_inert(app, LINK, IMAGE)
