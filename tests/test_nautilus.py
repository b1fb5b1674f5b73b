"""The NautilusTrader hand-off (forecasting/nautilus.py).

The project's files are checked here in the app's venv; the runs need the engines venv
(``make engines``, Python 3.12 or newer) and skip with that reason without it. A run
cross-checks NautilusTrader's final equity and trade count against our own backtest of the
same forecasts and costs.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
from factories import random_walk_candles
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.errors import ConfigurationError, EngineFailed
from forecasting.evaluation.walkforward import BacktestSettings
from forecasting.experiment import ExperimentSettings, run_experiment
from forecasting.nautilus import PROJECT_FILES, engines_python, run_project, write_project
from forecasting.strategy import StrategySettings, run_strategy

SOURCE = {"exchange": "binance", "symbol": "BTC/USDT"}
# Per-side fee and slippage of the cross-checks, and a threshold of 0 so drift trades often.
COSTS = StrategySettings(fee_bps=10.0, slippage_bps=5.0, threshold=0.0, threshold_unit="bps")
LAYOUTS = {
    # an origin every candle; drift refitted on the last 10 candles of each of 20 folds
    "daily": BacktestSettings(horizon=1, folds=20, test_size=200, stride=1, window=10),
    # an origin every 3 candles, each signal held 3 candles
    "every_3": BacktestSettings(horizon=3, folds=10, test_size=200, stride=3, window=8),
}

ENGINES = engines_python()
needs_engines = pytest.mark.skipif(
    ENGINES is None,
    reason="no NautilusTrader environment (.venv-engines or $CFL_ENGINES_PYTHON): "
    "`make engines` needs Python 3.12 or newer",
)


def _experiment(
    layout: str | BacktestSettings, *, n: int = 300, seed: int = 3, timeframe: str = "1d"
):
    # step 10 on a price near 1200: daily moves of about 1 %, so drift's sign flips.
    candles = random_walk_candles(n, timeframe, seed=seed, step=10.0)
    backtest = LAYOUTS[layout] if isinstance(layout, str) else layout
    experiment = ExperimentSettings(models=("naive", "drift"), backtest=backtest)
    return run_experiment(candles, experiment, future=False, source=SOURCE)


@pytest.fixture(scope="module")
def daily():
    return _experiment("daily")


def test_project_files_bars_at_close_and_fees(daily, tmp_path) -> None:
    out = write_project(daily, COSTS, "drift", tmp_path / "project")
    assert sorted(p.name for p in out.iterdir()) == sorted(PROJECT_FILES)

    bars = pd.read_csv(out / "bars.csv")
    stamps = pd.to_datetime(bars["timestamp"], utc=True)
    opens = pd.to_datetime(bars["open_time"], utc=True)
    # Stamped at the close: ccxt's open time plus one day, never the open itself.
    assert ((stamps - opens) == pd.Timedelta(days=1)).all()
    assert (opens == daily.candles.index).all()
    np.testing.assert_array_equal(bars["close"].to_numpy(), daily.candles["close"].to_numpy())

    spec = json.loads((out / "instrument.json").read_text())
    assert spec["instrument"]["taker_fee"] == pytest.approx(0.0015)  # 10 bp fee + 5 bp slippage
    assert spec["instrument"]["maker_fee"] == pytest.approx(0.0015)
    assert spec["instrument"]["id"] == "BTCUSDT.BINANCE"
    assert (spec["instrument"]["base"], spec["instrument"]["quote"]) == ("BTC", "USDT")
    assert spec["venue"] == {
        "name": "BINANCE",
        "type": "CRYPTO",
        "oms_type": "NETTING",
        "account_type": "CASH",
        "starting_balance": 1_000_000.0,
        "currency": "USDT",
    }
    assert spec["bars"]["bar_type"] == "BTCUSDT.BINANCE-1-DAY-LAST-EXTERNAL"

    ours = run_strategy(daily.backtest, daily.candles, COSTS, models=["drift"])
    held = ours.positions[ours.positions["model"] == "drift"]
    assert spec["strategy"]["ours"] == {
        "final_equity": float(held["equity"].iloc[-1]),
        "trades": int(ours.metrics.loc["drift", "trades"]),
    }
    assert spec["strategy"]["ours"]["trades"] > 3  # the cross-check below sees real trading
    readme = (out / "README.md").read_text()
    assert "signals.csv" in readme
    assert ".keras" in readme


def test_signals_are_our_positions_sent_at_the_close_before_the_candle_held(daily, tmp_path):
    out = write_project(daily, COSTS, "drift", tmp_path / "project")
    signals = pd.read_csv(out / "signals.csv")
    ours = run_strategy(daily.backtest, daily.candles, COSTS, models=["drift"]).positions
    held = ours[ours["model"] == "drift"]
    np.testing.assert_array_equal(signals["position"].to_numpy(), held["position"].to_numpy())
    sent = pd.to_datetime(signals["timestamp"], utc=True)
    # The order for candle u goes out at the close of candle u-1, which is u's open time.
    assert (sent.to_numpy() == pd.DatetimeIndex(held["timestamp"]).to_numpy()).all()
    origin = pd.to_datetime(signals["origin"], utc=True)
    assert (origin + pd.Timedelta(days=1) <= sent).all()


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    timeframe=st.sampled_from(["1d", "4h", "1h"]),
    seed=st.integers(0, 10_000),
    stride=st.sampled_from([1, 3]),
)
def test_no_bar_or_order_is_stamped_before_its_candle_closed(timeframe, seed, stride, tmp_path):
    """The look-ahead kind, over random series and timeframes: a bar is stamped exactly one
    timeframe after its open, and an order goes out only on the bar of its origin's close
    or later, never on a candle that was still open when the forecast was made."""
    layout = BacktestSettings(horizon=stride, folds=4, test_size=60, stride=stride, window=8)
    result = _experiment(layout, n=120, seed=seed, timeframe=timeframe)
    step = pd.Timedelta(hours={"1d": 24, "4h": 4, "1h": 1}[timeframe])
    out = write_project(result, COSTS, "drift", tmp_path / f"p{seed}{timeframe}{stride}")
    bars = pd.read_csv(out / "bars.csv")
    stamps = pd.to_datetime(bars["timestamp"], utc=True)
    assert ((stamps - pd.to_datetime(bars["open_time"], utc=True)) == step).all()
    signals = pd.read_csv(out / "signals.csv")
    sent = pd.to_datetime(signals["timestamp"], utc=True)
    origin = pd.to_datetime(signals["origin"], utc=True)
    assert set(sent) <= set(stamps)
    assert (origin + step <= sent).all()
    spec = json.loads((out / "instrument.json").read_text())
    assert spec["bars"]["timeframe_seconds"] == step.total_seconds()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"entry": "next_open"}, "close"),  # the hand-off fills at the signal's close
        ({"allow_short": True}, "short"),  # a cash account cannot go short
    ],
)
def test_settings_it_cannot_replay_are_refused(daily, tmp_path, change, message) -> None:
    settings_ = StrategySettings(**{**COSTS.to_dict(), **change})
    with pytest.raises(ConfigurationError, match=message):
        write_project(daily, settings_, "drift", tmp_path)
    assert not (tmp_path / "run.py").exists()


def test_unknown_model_is_refused(daily, tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="lstm"):
        write_project(daily, COSTS, "lstm", tmp_path)


def test_missing_engines_environment_is_one_clear_line(daily, tmp_path) -> None:
    out = write_project(daily, COSTS, "naive", tmp_path)
    with pytest.raises(ConfigurationError, match="make engines") as caught:
        run_project(out, python=tmp_path / "no-such-python")
    assert "\n" not in str(caught.value)


def test_failed_run_names_the_last_error_lines(daily, tmp_path) -> None:
    out = write_project(daily, COSTS, "naive", tmp_path)
    (out / "run.py").write_text(
        "import sys\nprint('working')\nsys.exit('the engine broke: ' + 'x' * 900)\n"
    )
    with pytest.raises(EngineFailed, match="the engine broke") as caught:
        run_project(out, python=sys.executable)
    text = str(caught.value)
    assert "\n" not in text
    assert len(text) < 600


@needs_engines
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("model", ["drift", "naive"])
def test_nautilus_matches_our_backtest(model, layout, tmp_path) -> None:
    """Same trades exactly; final equity within a tolerance derived from the conventions.

    Why not zero: our backtest charges the fee as a fraction of equity subtracted from the
    candle's simple return (ignoring the cross term fee x return), while NautilusTrader's
    cash account pays the fee out of the cash, so a buy holds equity / (1 + fee) of the
    asset: a buy then differs by ``fee x (fee - r)`` of equity, ``r`` the next candle's
    return. Each buy also leaves 10^-6 of the cash unspent, and fills beyond the simulated
    book's size land a tick (10^-6 USDT) away. Sells match exactly. Prices are rounded to
    the instrument's 10 significant digits.
    """
    result = _experiment(layout)
    out = write_project(result, COSTS, model, tmp_path / "project")
    ours = run_strategy(result.backtest, result.candles, COSTS, models=[model])
    held = ours.positions[ours.positions["model"] == model]
    expected_equity = float(held["equity"].iloc[-1])
    expected_trades = int(ours.metrics.loc[model, "trades"])

    got = run_project(out, python=ENGINES)

    assert got["trades"] == expected_trades
    cost = COSTS.cost
    candle_return = result.candles["close"].pct_change().abs().max()
    tolerance = expected_trades * (cost * (cost + candle_return) + 2e-6) + 1e-9
    assert tolerance < 1e-3  # a tolerance that still catches a missed or doubled trade
    assert got["final_equity"] == pytest.approx(expected_equity, rel=tolerance, abs=0)
    if model == "naive":  # naive's forecast return is 0: never trades, nothing is spent
        assert expected_trades == 0
        assert got["final_equity"] == 1.0
    else:
        assert expected_trades > 3
    reports = out / "reports"
    fills = (reports / "fills.csv").read_text().splitlines()
    assert len(fills[1:]) == expected_trades  # one row per order, header first
    assert (reports / "account.csv").is_file()
    assert (reports / "positions.csv").is_file()
    assert math.isfinite(got["final_value"])


def test_engines_python_prefers_the_argument_then_the_variable(tmp_path, monkeypatch) -> None:
    python = tmp_path / "python"
    python.write_text("")
    other = tmp_path / "other"
    other.write_text("")
    monkeypatch.setenv("CFL_ENGINES_PYTHON", str(other))
    assert engines_python(python) == python
    assert engines_python() == other
    monkeypatch.setenv("CFL_ENGINES_PYTHON", str(tmp_path / "missing"))
    assert engines_python() is None
