"""The Strategy page through AppTest: the Compare page's forecasts traded after costs."""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from forecasting.strategy import StrategySettings, run_strategy
from ui.strategy import FORM, KEY_METRICS, SETTING_NAMES

APP = str(Path(__file__).resolve().parents[2] / "app.py")
COMPARE = "compare_settings"
PAGE = "pages/strategy.py"


def compared() -> AppTest:
    """The app after a fast comparison (naive and drift, 3 folds of 10 candles), on the
    Strategy page."""
    app = AppTest.from_file(APP, default_timeout=300).run()
    app.switch_page("pages/compare.py").run()
    app.multiselect(key=f"w:compare.models@{COMPARE}").set_value(["naive", "drift"])
    app.number_input(key=f"w:compare.test_size@{COMPARE}").set_value(30)
    app.number_input(key=f"w:horizon@{COMPARE}").set_value(3)
    app.get("form_submit_button")[0].click().run()
    assert not app.exception
    assert not app.error
    return app.switch_page(PAGE).run()


def form_settings(app: AppTest) -> StrategySettings:
    """The settings the page's form shows."""
    values = {}
    for field, name in SETTING_NAMES.items():
        key = f"w:{name}@{FORM}"
        widget = next(w for w in app.get(_KINDS[field]) if getattr(w, "key", None) == key)
        values[field] = widget.value
    return StrategySettings(**values)


_KINDS = {
    "threshold": "number_input",
    "threshold_unit": "radio",
    "fee_bps": "number_input",
    "slippage_bps": "number_input",
    "allow_short": "toggle",
    "entry": "radio",
    "sizing": "radio",
    "fraction": "number_input",
    "vol_target": "number_input",
    "vol_lookback": "number_input",
}


def library_metrics(app: AppTest, settings: StrategySettings, tried: int) -> pd.DataFrame:
    comparison = app.session_state["_compare_last"].result
    return run_strategy(
        comparison.backtest, comparison.candles, settings, settings_tried=tried
    ).metrics


def shown_metrics(app: AppTest) -> pd.DataFrame:
    return app.dataframe[1].value  # the second table holds every metric


def link_values(app: AppTest) -> dict[str, str]:
    link = app.get("code")[-1].value
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(link).query))


def query_value(app: AppTest, name: str) -> str:
    value = app.query_params[name]
    return value[0] if isinstance(value, list) else value


def test_without_a_comparison_the_page_says_to_run_one(app_env):
    app = AppTest.from_file(APP, default_timeout=180).run()
    app.switch_page(PAGE).run()
    assert not app.exception
    assert app.title[0].value == "Strategy"
    assert [i.value for i in app.info] == [
        "Run a comparison on the Compare page first: its forecasts are traded here."
    ]
    assert not app.get("form")
    assert not app.dataframe


def test_the_page_shows_the_library_metrics_and_a_fee_change_moves_them(app_env):
    app = compared()
    assert not app.exception
    assert not app.error
    assert app.subheader[0].value == "Verdict"
    # The key columns first and on their own; every metric under "All metrics".
    key = app.dataframe[0].value
    assert list(key.columns) == list(KEY_METRICS)
    assert list(key.index) == ["naive", "drift", "buy_and_hold"]
    assert any(e.label == "All metrics" for e in app.expander)
    # The values are run_strategy's on the same backtest and settings (one setting tried).
    settings = form_settings(app)
    expected = library_metrics(app, settings, tried=1)
    shown = shown_metrics(app)
    assert list(shown.index) == list(expected.index)
    pd.testing.assert_frame_equal(
        shown[list(expected.columns)].astype("float64"), expected.astype("float64")
    )
    # The verdict sentence and the timing convention are on the page.
    sentence = [m.value for m in app.markdown if "buy-and-hold" in m.value]
    assert sentence, "the verdict is shown"
    assert any("t's close (or t+1's open)" in c.value for c in app.caption)
    assert any("deflated Sharpe ratio" in c.value for c in app.caption)
    # Equity with drawdowns, and positions over the price.
    assert len(app.get("plotly_chart")) == 2

    # A higher fee: total return as the library says, for the two settings now tried.
    app.number_input(key=f"w:strategy.fee_bps@{FORM}").set_value(25.0)
    app.radio(key=f"w:strategy.threshold_unit@{FORM}").set_value("bps")
    app.number_input(key=f"w:strategy.threshold@{FORM}").set_value(0.0)
    app.toggle(key=f"w:strategy.allow_short@{FORM}").set_value(True)
    app.get("form_submit_button")[0].click().run()
    assert not app.exception
    settings = form_settings(app)
    assert settings.fee_bps == 25.0
    expected = library_metrics(app, settings, tried=2)
    after = shown_metrics(app)
    np.testing.assert_allclose(
        after["total_return"].to_numpy(dtype=float),
        expected["total_return"].to_numpy(dtype=float),
        rtol=1e-12,
    )
    # Buy-and-hold pays one entry fee: 25 bp instead of the default's 10 bp.
    before_hold = shown["total_return"]["buy_and_hold"]
    after_hold = after["total_return"]["buy_and_hold"]
    assert after_hold < before_hold
    # The fee is taken from the first candle's return (close over the first origin's).
    comparison = app.session_state["_compare_last"].result
    close = comparison.candles["close"]
    first = close.index.get_loc(comparison.backtest.forecasts["origin"].min())
    gained = close.iloc[first + 1] / close.iloc[first] - 1
    np.testing.assert_allclose(
        (1 + after_hold) / (1 + before_hold), (1 + gained - 0.0025) / (1 + gained - 0.001)
    )
    # Drift's strategy is always in the market now (long or short): it paid fees.
    assert int(after["trades"]["drift"]) > 0
    assert after["time_in_market"]["drift"] == 1.0

    # The settings are in the URL and in the page's link; a fresh session restores them.
    assert query_value(app, "strategy.fee_bps") == "25.0"
    assert query_value(app, "strategy.threshold_unit") == "bps"
    assert query_value(app, "strategy.allow_short") == "true"
    linked = link_values(app)
    assert linked["strategy.fee_bps"] == "25.0"
    assert linked["strategy.threshold"] == "0.0"
    assert linked["compare.models"] == "naive,drift"
    fresh = AppTest.from_file(APP, default_timeout=180)
    fresh.query_params = {k: v for k, v in linked.items() if k.startswith("strategy.")}
    fresh.run()
    assert not fresh.warning
    assert fresh.session_state["_kept_settings"]["strategy.fee_bps"] == 25.0
    assert fresh.session_state["_kept_settings"]["strategy.threshold_unit"] == "bps"


def test_the_exchange_fee_becomes_the_default_without_waiting(app_env):
    app = compared()
    notes = " ".join(c.value for c in app.caption)
    # Either still looking up (10 bp meanwhile) or found: never an error, never a wait.
    assert "10 bp" in notes
    deadline = time.monotonic() + 30
    while "taker fee of binance for BTC/USDT in ccxt" not in notes:
        assert time.monotonic() < deadline, notes
        time.sleep(0.2)
        app.run()
        notes = " ".join(c.value for c in app.caption)
    # The fake Binance's spot markets carry ccxt's taker fee of 0.1 %.
    assert app.number_input(key=f"w:strategy.fee_bps@{FORM}").value == 10.0
    assert "strategy.fee_bps" not in app.query_params


def test_the_strategy_s_files_go_into_the_bundle_as_valid_json_and_csv():
    import io
    import json
    import zipfile

    from factories import random_walk_candles

    from forecasting.bundle import experiment_bundle
    from forecasting.evaluation import BacktestSettings
    from forecasting.experiment import ExperimentSettings, run_experiment
    from forecasting.strategy import StrategySettings, run_strategy
    from ui.strategy import bundle_files

    settings = ExperimentSettings(
        models=("naive", "drift"), backtest=BacktestSettings(horizon=3, folds=2, test_size=30)
    )
    result = run_experiment(random_walk_candles(150, seed=4), settings, future=False)
    strategy = run_strategy(result.backtest, result.candles, StrategySettings(fee_bps=12.5))
    data = experiment_bundle(result, extra_files=bundle_files(strategy))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        document = json.loads(archive.read("strategy/strategy.json"))
        metrics = pd.read_csv(io.BytesIO(archive.read("strategy/metrics.csv")), index_col=0)
        positions = pd.read_csv(io.BytesIO(archive.read("strategy/positions.csv")))
    assert document["settings"]["fee_bps"] == 12.5
    assert document["verdict"]["sentence"] == strategy.verdict.sentence
    assert metrics.loc["drift", "total_return"] == pytest.approx(
        strategy.metrics.loc["drift", "total_return"], rel=1e-12
    )
    assert len(positions) == len(strategy.positions)
