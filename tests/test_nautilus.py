"""The NautilusTrader hand-off (forecasting/nautilus.py).

The project's files are checked here in the app's venv; the runs need the engines venv
(``make engines``, Python 3.12 or newer) and skip with that reason without it. A run
cross-checks NautilusTrader's final equity and trade count against our own backtest of the
same forecasts and costs.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from factories import random_walk_candles
from fake_exchange import SHARED_DATA, load_shared_csv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.errors import ConfigurationError, EngineFailed, ModelFailed
from forecasting.evaluation.walkforward import BacktestSettings
from forecasting.experiment import ExperimentSettings, run_experiment
from forecasting.nautilus import (
    FOLDS_FILE,
    PROJECT_FILES,
    engines_python,
    run_project,
    write_project,
)
from forecasting.strategy import StrategySettings, run_strategy, target_position

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
    "`make engines` needs Python 3.12 or 3.13",
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
    # Long or flat at fixed fraction: every sell goes flat, to the last unit (a float
    # rounded down once left one increment, 1e-8 of the asset, held for ever).
    net = Decimal(0)
    for fill in csv.DictReader(fills):
        net += Decimal(fill["filled_qty"]) * (1 if fill["side"] == "BUY" else -1)
        if fill["side"] == "SELL":
            assert net == 0, fill["ts_last"]
    last_position = float(held["position"].iloc[-1])
    assert (got["units"] == 0) == (last_position == 0)
    assert (reports / "account.csv").is_file()
    assert (reports / "positions.csv").is_file()
    assert math.isfinite(got["final_value"])


def _fixed_units_equity(held: pd.DataFrame, close: pd.Series, cost: float) -> float:
    """Final equity of the same targets held as fixed units between changes (as an
    account holds them), by a plain loop: at each change of target, units are set to
    target x equity / price at the previous close, paying cost on the weight traded
    (the target minus the weight the units had drifted to)."""
    cash, units, target = 1.0, 0.0, 0.0
    stamps = list(close.index)
    for row in held.itertuples():
        at = stamps.index(pd.Timestamp(row.timestamp))
        before = float(close.iloc[at - 1])
        if row.position != target:
            equity = cash + units * before
            drifted = units * before / equity
            wanted = row.position * equity / before
            cash -= (wanted - units) * before + abs(row.position - drifted) * equity * cost
            units, target = wanted, row.position
    return cash + units * float(close.iloc[stamps.index(pd.Timestamp(held["timestamp"].iloc[-1]))])


@needs_engines
@pytest.mark.parametrize("sizing", [{"fraction": 0.5}, {"sizing": "vol_target", "vol_target": 0.3}])
def test_positions_below_one_are_held_as_units_by_nautilus(sizing, tmp_path) -> None:
    """Our backtest holds a position below 1 as a constant share of equity (the issue's
    return = position x candle return, rebalanced every candle at no cost); an account
    holds units, whose share drifts with the price. NautilusTrader matches the
    fixed-units recomputation within the cross-check's tolerance, and differs from ours
    by that convention alone (same trades)."""
    result = _experiment("daily")
    costs = replace(COSTS, **sizing)
    out = write_project(result, costs, "drift", tmp_path / "project")
    ours = run_strategy(result.backtest, result.candles, costs, models=["drift"])
    held = ours.positions[ours.positions["model"] == "drift"]
    trades = int(ours.metrics.loc["drift", "trades"])
    got = run_project(out, python=ENGINES)
    assert got["trades"] == trades > 3
    units = _fixed_units_equity(held, result.candles["close"], costs.cost)
    candle_return = result.candles["close"].pct_change().abs().max()
    tolerance = trades * (costs.cost * (costs.cost + candle_return) + 2e-6) + 1e-9
    assert got["final_equity"] == pytest.approx(units, rel=tolerance, abs=0)
    # The convention's size here, for the README: ours against the units held.
    assert float(held["equity"].iloc[-1]) != pytest.approx(units, rel=1e-9)


@needs_engines
@pytest.mark.skipif(SHARED_DATA is None, reason="no shared real data (../shared/data)")
def test_going_flat_sells_every_unit_on_real_bitcoin_prices(tmp_path) -> None:
    # Drift on BTC/USDT daily, 2024-12-03 to 2026-01-05: the buy of 8.98887808 BTC was
    # sold as 8.98887807 (the held Decimal turned into a float and rounded down), so the
    # account stayed long 1e-8 BTC for ever.
    candles = load_shared_csv("binance_BTC-USDT_1d.csv").loc["2024-12-03":"2026-01-05"]
    layout = BacktestSettings(horizon=3, folds=3, test_size=120, stride=3)
    experiment = ExperimentSettings(models=("naive", "drift"), backtest=layout)
    result = run_experiment(candles, experiment, future=False, source=SOURCE)
    costs = StrategySettings(fee_bps=10.0, threshold=0.0, threshold_unit="bps")
    out = write_project(result, costs, "drift", tmp_path / "project")
    got = run_project(out, python=ENGINES)
    ours = run_strategy(result.backtest, result.candles, costs, models=["drift"])
    held = ours.positions[ours.positions["model"] == "drift"]
    assert got["trades"] == int(ours.metrics.loc["drift", "trades"]) > 0
    net = Decimal(0)
    for fill in csv.DictReader((out / "reports" / "fills.csv").read_text().splitlines()):
        net += Decimal(fill["filled_qty"]) * (1 if fill["side"] == "BUY" else -1)
        if fill["side"] == "SELL":
            assert net == 0, fill["ts_last"]
    assert (got["units"] == 0) == (float(held["position"].iloc[-1]) == 0)


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


# --- the model hand-off: each fold's LSTM in the project, called by the Strategy ----------

# A tiny LSTM (seconds per fold) on a rolling window, so each fold trains from its own
# first candle and the Strategy's history must start there too.
TINY_LSTM = {"epochs": 2, "lookback": 5, "units": 8, "features": "log_return"}
LSTM_LAYOUT = BacktestSettings(horizon=2, folds=3, test_size=60, stride=1, window=120)


@pytest.fixture(scope="module")
def lstm_result():
    candles = random_walk_candles(250, "1d", seed=5, step=10.0)
    experiment = ExperimentSettings(
        models=("lstm",), model_settings={"lstm": TINY_LSTM}, backtest=LSTM_LAYOUT
    )
    return run_experiment(candles, experiment, future=False, source=SOURCE)


@pytest.fixture(scope="module")
def lstm_project(lstm_result, tmp_path_factory):
    return write_project(lstm_result, COSTS, "lstm", tmp_path_factory.mktemp("lstm") / "p")


def _ours_at_origins(out) -> pd.DataFrame:
    """Our backtest's target at each origin: the signals.csv row sent at the origin's close."""
    signals = pd.read_csv(out / "signals.csv")
    sent = pd.to_datetime(signals["timestamp"], utc=True)
    origin = pd.to_datetime(signals["origin"], utc=True)
    return signals[(origin + pd.Timedelta(days=1)) == sent].reset_index(drop=True)


def test_lstm_project_carries_each_folds_model_refitted_exactly(lstm_result, lstm_project):
    out, result = lstm_project, lstm_result
    index = result.candles.index
    folds = json.loads((out / FOLDS_FILE).read_text())
    layout = result.backtest.folds
    assert [f["fold"] for f in folds["folds"]] == [fold.number for fold in layout]
    for entry, fold in zip(folds["folds"], layout, strict=True):
        cutoff = index[fold.cutoff]
        assert pd.Timestamp(entry["cutoff"]) == cutoff
        assert pd.Timestamp(entry["train_start"]) == index[fold.train_start]
        assert fold.train_start > 0  # the rolling window: not the first candle
        assert entry["model"] == f"models/fold-{fold.number}-{cutoff:%Y%m%dT%H%M%SZ}.keras"
        assert (out / entry["model"]).is_file()
        assert (out / f"{entry['model']}.json").is_file()
        # Every origin of the fold with a step-1 forecast, and its bar one day later.
        expected = [index[o] for o in fold.origins if o + 1 < len(index)]
        assert [pd.Timestamp(o["origin"]) for o in entry["origins"]] == expected
        assert all(
            pd.Timestamp(o["bar"]) == pd.Timestamp(o["origin"]) + pd.Timedelta(days=1)
            for o in entry["origins"]
        )
    assert (folds["alias"], folds["horizon"], folds["step"], folds["window"]) == (
        "lstm",
        2,
        1,
        120,
    )
    assert folds["strategy"] == COSTS.to_dict()
    assert folds["params"]["seed"] == result.settings.seed
    # Measured: the refitted models forecast bit for bit what the backtest's did.
    assert folds["refit_max_difference"] == 0.0
    assert folds["periods_per_year"] == 365.0
    spec = json.loads((out / "instrument.json").read_text())
    assert spec["strategy"]["folds"] == FOLDS_FILE
    assert (Path(spec["repository"]) / "forecasting" / "strategy.py").is_file()
    readme = (out / "README.md").read_text()
    assert "models/fold-<k>-<cutoff>.keras" in readme
    assert "reports/decided.csv" in readme


def test_a_refit_that_differs_from_the_backtest_is_refused(lstm_result, tmp_path) -> None:
    """A model that would not forecast what the backtest's did is never handed off."""
    forecasts = lstm_result.backtest.forecasts.copy()
    first = forecasts.index[forecasts["model"] == "lstm"][0]
    forecasts.loc[first, "yhat"] *= 1 + 1e-7  # beyond the tolerance of 1e-9
    changed = replace(lstm_result, backtest=replace(lstm_result.backtest, forecasts=forecasts))
    with pytest.raises(ModelFailed, match="fold 1") as caught:
        write_project(changed, COSTS, "lstm", tmp_path)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / FOLDS_FILE).exists()
    assert not (tmp_path / "run.py").exists()


def test_signals_only_hand_off_of_a_model_that_saves(lstm_result, tmp_path) -> None:
    out = write_project(lstm_result, COSTS, "lstm", tmp_path, with_models=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(PROJECT_FILES)
    assert "folds" not in json.loads((out / "instrument.json").read_text())["strategy"]


def test_with_models_is_refused_for_a_model_that_does_not_save(daily, tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="signals"):
        write_project(daily, COSTS, "drift", tmp_path, with_models=True)


@needs_engines
def test_nautilus_strategy_calls_the_models_and_trades_as_our_backtest(lstm_result, lstm_project):
    """The Strategy's own decisions (the models called in on_bar) equal our backtest's
    positions exactly, and so do the trades; equity within the tolerance explained in
    test_nautilus_matches_our_backtest."""
    out, result = lstm_project, lstm_result
    got = run_project(out, python=ENGINES)

    decided = pd.read_csv(out / "reports" / "decided.csv")
    ours = _ours_at_origins(out)
    assert len(decided) == len(ours) == 60
    assert list(decided["timestamp"]) == list(ours["timestamp"])
    assert list(decided["origin"]) == list(ours["origin"])
    np.testing.assert_array_equal(decided["position"].to_numpy(), ours["position"].to_numpy())
    # The forecasts behind them are the backtest's, bit for bit.
    rows = result.backtest.forecasts
    rows = rows[(rows["model"] == "lstm") & (rows["step"] == 1)].sort_values("origin")
    np.testing.assert_array_equal(decided["forecast"].to_numpy(), rows["yhat"].to_numpy())
    recomputed = target_position(rows["yhat"].to_numpy() / rows["y_origin"].to_numpy() - 1, COSTS)
    np.testing.assert_array_equal(decided["position"].to_numpy(), recomputed)
    assert 0 < decided["position"].sum() < len(decided)  # both long and flat decisions

    strategy = run_strategy(result.backtest, result.candles, COSTS, models=["lstm"])
    held = strategy.positions[strategy.positions["model"] == "lstm"]
    expected_trades = int(strategy.metrics.loc["lstm", "trades"])
    assert got["trades"] == expected_trades > 3
    cost = COSTS.cost
    candle_return = result.candles["close"].pct_change().abs().max()
    tolerance = expected_trades * (cost * (cost + candle_return) + 2e-6) + 1e-9
    assert got["final_equity"] == pytest.approx(float(held["equity"].iloc[-1]), rel=tolerance)


@settings(max_examples=60, deadline=None)
@given(
    returns=st.lists(
        st.floats(-0.5, 0.5) | st.sampled_from([0.0, 0.002, -0.002, math.nan, math.inf]),
        min_size=1,
        max_size=20,
    ),
    threshold=st.sampled_from([0.0, 0.5, 1.0, 20.0]),
    unit=st.sampled_from(["fees", "bps"]),
    allow_short=st.booleans(),
    size=st.floats(0.01, 1.0),
)
def test_the_strategy_rule_decides_one_forecast_as_the_backtest_decides_many(
    returns, threshold, unit, allow_short, size
):
    """run.py decides one origin at a time (a float), our backtest every origin at once
    (an array): the one rule must give the same position either way, on the threshold
    itself, without a finite forecast, long or short."""
    rule = StrategySettings(
        threshold=threshold, threshold_unit=unit, allow_short=allow_short, fee_bps=10.0
    )
    many = target_position(np.array(returns), rule, np.full(len(returns), size))
    one = [target_position(r, rule, size) for r in returns]
    assert all(isinstance(p, float) for p in one)
    np.testing.assert_array_equal(many, np.array(one))
    cut = rule.threshold_return
    for r, p in zip(returns, one, strict=True):
        if not math.isfinite(r) or abs(r) <= cut or (r < 0 and not allow_short):
            assert p == 0.0
        else:
            assert p == (size if r > 0 else -size)
