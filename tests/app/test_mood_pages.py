"""Market mood in the app: the Features page's panel and audit, offline, and Compare's
"Do these features help?", against local servers (the exchange and alternative.me's
``/fng/``); nothing reaches the internet."""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_exchange import FakeBinance
from fake_feargreed import FakeFearGreed
from streamlit.testing.v1 import AppTest

from forecasting.data.mood import FEAR_GREED_ATTRIBUTION

APP = str(Path(__file__).resolve().parents[2] / "app.py")
FORM = "compare_settings"
DAY = pd.Timedelta(days=1)


def serve_index(fake: FakeFearGreed, days: pd.DatetimeIndex, *, skip: pd.Timestamp) -> pd.Series:
    """Invented values for ``days`` (UTC), all but ``skip`` served; returns those served."""
    values = pd.Series(np.random.default_rng(5).integers(5, 95, len(days)), index=days)
    values = values.drop(skip)
    for day, value in values.items():
        fake.set_value(day, int(value))
    return values


@pytest.fixture
def mood_env(app_env: FakeBinance, fake_feargreed: FakeFearGreed, monkeypatch) -> pd.Series:
    """The app on the local exchange, the index served for every candle's day but one."""
    today = pd.Timestamp.now(tz="UTC").normalize()
    fake_feargreed.now = pd.Timestamp.now(tz="UTC")
    days = pd.date_range(end=today, periods=3300, freq="D")
    monkeypatch.setenv("CFL_FEAR_GREED_URL", fake_feargreed.url)
    return serve_index(fake_feargreed, days, skip=today - 30 * DAY)


def open_page(page: str) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=300).run()
    return app.switch_page(page).run()


def choose_features(app: AppTest, kinds: list[str]) -> AppTest:
    return app.multiselect(key="w:features.kinds").set_value(kinds).run()


def figures(app: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]


def values(array: object) -> np.ndarray:
    """A trace's numbers as plotly writes them: a list, or a typed array in base64."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
    return np.asarray(array, dtype="float64")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_features_page_shows_the_mood_panel_attribution_and_passing_join_audit(mood_env):
    app = choose_features(open_page("pages/features.py"), ["rsi", "fear_greed"])
    assert not app.exception
    assert not app.error
    assert "Market mood" in [s.value for s in app.subheader]
    attribution = [m.value for m in app.markdown if FEAR_GREED_ATTRIBUTION in m.value]
    assert attribution
    assert "(https://alternative.me/crypto/fear-and-greed-index/)" in attribution[0]
    assert any("a lag of one day for any timeframe" in c.value for c in app.caption)

    # The mood chart: each candle shows the value of the day before it (published at the
    # end of that day), the missing day's candle the value before it.
    (mood,) = [f for f in figures(app) if f["data"][0].get("name") == "Fear & Greed"]
    trace = mood["data"][0]
    times = pd.DatetimeIndex(trace["x"], tz="UTC")
    shown = pd.Series(values(trace["y"]), index=times)
    served = mood_env
    last = times[-1]
    assert shown[last] == served[last - DAY]
    skipped = pd.Timestamp.now(tz="UTC").normalize() - 30 * DAY
    assert skipped not in served.index
    assert shown[skipped] == served[skipped - DAY]
    assert shown[skipped + DAY] == served[skipped - DAY]  # carried, never invented
    assert shown[skipped + 2 * DAY] == served[skipped + DAY]
    # The missing day is said, with its date.
    assert any(f"{skipped:%Y-%m-%d}" in i.value for i in app.info)

    # The feature itself is in the features chart, and the join is audited beside it.
    names = {t.get("name") for t in figures(app)[0]["data"]}
    assert {"close", "rsi_14", "fear_greed"} <= names
    audit = app.dataframe[0].value.set_index("column")
    assert audit.loc["fear_greed (as-of join)", "passed"]
    assert audit.loc["fear_greed (as-of join)", "max_difference"] == 0.0
    assert audit["passed"].all()
    assert any("pass" in s.value for s in app.success)


def test_features_page_offline_says_the_index_is_unavailable_and_keeps_the_rest(
    app_env, monkeypatch
):
    monkeypatch.setenv("CFL_FEAR_GREED_URL", f"http://127.0.0.1:{closed_port()}/fng/")
    app = choose_features(open_page("pages/features.py"), ["rsi", "fear_greed"])
    assert not app.exception
    assert not app.error
    warnings = [w.value for w in app.warning if "Fear & Greed feature is unavailable" in w.value]
    assert len(warnings) == 1
    assert "left out of the features the models are given" in warnings[0]
    assert any("Left out here and in the models" in i.value for i in app.info)
    # RSI is drawn and audited; no mood chart, and no fear_greed anywhere.
    charts = figures(app)
    names = {t.get("name") for t in charts[0]["data"]}
    assert "rsi_14" in names
    assert "fear_greed" not in names
    assert not any(f["data"] and f["data"][0].get("name") == "Fear & Greed" for f in charts)
    audit = app.dataframe[0].value
    assert list(audit["column"]) == ["rsi_14"]
    assert audit["passed"].all()
    # The models go without it: the Models page draws its baselines, with no error.
    app.switch_page("pages/models.py").run()
    assert not app.exception
    assert not app.error
    assert any("Fear & Greed feature is unavailable" in w.value for w in app.warning)


def test_funding_rate_of_data_without_an_exchange_is_unavailable_naming_a_venue(
    app_env, monkeypatch
):
    monkeypatch.setenv("CFL_FEAR_GREED_URL", f"http://127.0.0.1:{closed_port()}/fng/")
    app = AppTest.from_file(APP, default_timeout=300).run()
    app.radio(key="source").set_value("sample").run()
    app.switch_page("pages/features.py").run()
    app = choose_features(app, ["log_return", "funding_rate"])
    assert not app.exception
    (warning,) = [w.value for w in app.warning if "Funding rate feature is unavailable" in w.value]
    assert "perpetual" in warning
    assert "krakenfutures" in warning
    names = {t.get("name") for t in figures(app)[0]["data"]}
    assert "log_return" in names


@pytest.mark.slow
def test_compare_answers_whether_the_index_helps_prophet(mood_env):
    app = choose_features(open_page("pages/features.py"), ["log_return", "fear_greed"])
    assert not app.exception
    app.switch_page("pages/compare.py").run()
    # Tiny backtest settings, kept by submitting the form (naive and drift: instant).
    app.multiselect(key=f"w:compare.models@{FORM}").set_value(["naive", "drift"])
    app.number_input(key=f"w:compare.folds@{FORM}").set_value(2)
    app.number_input(key=f"w:compare.test_size@{FORM}").set_value(20)
    app.number_input(key=f"w:horizon@{FORM}").set_value(2)
    app.get("form_submit_button")[0].click().run()
    assert not app.exception
    # The chosen, available mood kind is what the test adds unless chosen otherwise.
    assert app.multiselect(key="ablation_added").value == ["fear_greed"]
    app.radio(key="ablation_model").set_value("prophet").run()
    app.button(key="run_ablation").click().run()
    assert not app.exception
    assert not app.error
    # The answer comes first, in bold (Markdown: the underscore escaped).
    answers = [m.value for m in app.markdown if "prophet with fear\\_greed" in m.value]
    assert len(answers) == 1
    assert answers[0].startswith(("**Yes:", "**No:", "**Not shown:"))
    (table,) = [t.value for t in app.table if "prophet with" in t.value.index]
    assert set(table.index) == {"naive", "prophet without", "prophet with"}
    assert list(table.columns) == ["mae_vs_naive", "against naive", "n", "mae"]
    # Both variants forecast the same (origin, target) pairs as naive.
    assert table["n"].nunique() == 1
    assert table.loc["naive", "against naive"] == "—"
    lines = [
        m.value
        for m in app.markdown
        if m.value.startswith(("- **prophet with**", "- **prophet without**"))
    ]
    # With against without first, then each against naive.
    assert len(lines) == 3
    assert "from prophet without" in lines[0] or "than prophet without" in lines[0]
    assert lines[1].startswith("- **prophet with**")
    assert "naive" in lines[1]
    assert lines[2].startswith("- **prophet without**")
    assert "naive" in lines[2]


def test_features_page_joins_the_pair_s_funding_rates_from_the_sidebar_s_exchange(
    mood_env, app_env: FakeBinance, monkeypatch
):
    start = pd.Timestamp.now(tz="UTC").normalize() - 3300 * DAY
    times = pd.date_range(start, periods=3300 * 3, freq="8h")
    rates = pd.Series(np.random.default_rng(9).normal(1e-4, 2e-4, len(times)).round(8), times)
    app_env.set_funding("BTC/USDT:USDT", rates)
    monkeypatch.setenv("CFL_EXCHANGES", json.dumps({"binance": app_env.futures_config()}))
    app = choose_features(open_page("pages/features.py"), ["rsi", "fear_greed", "funding_rate"])
    assert not app.exception
    assert not app.error
    # The source names the exchange and the perpetual (its colon escaped in Markdown).
    assert any("Funding rates: binance BTC/USDT\\:" in c.value for c in app.caption)
    (mood,) = [f for f in figures(app) if f["data"][0].get("name") == "Fear & Greed"]
    funding = mood["data"][1]
    assert funding["name"] == "funding rate (bp)"
    shown = pd.Series(values(funding["y"]), index=pd.DatetimeIndex(funding["x"], tz="UTC"))
    # A daily candle closing at D+1 00:00 sees the rate paid at 16:00 on D, in basis points.
    last = shown.index[-1]
    assert shown[last] == pytest.approx(rates[last + pd.Timedelta(hours=16)] * 10_000)
    audit = app.dataframe[0].value.set_index("column")
    assert audit.loc["funding_rate (as-of join)", "passed"]
    assert audit["passed"].all()
