"""``python -m forecasting backtest``: each model's walk-forward forecasts traded after
costs, as scripts run it. The JSON is the library's strategy on the same experiment; the
positions CSV recomputes to the equity it reports, by plain loops."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from factories import random_walk_candles

from forecasting.cli import main
from forecasting.data import write_ohlcv_csv
from forecasting.evaluation import BacktestSettings
from forecasting.experiment import ExperimentSettings, run_experiment
from forecasting.strategy import StrategySettings, run_strategy

CONTRACT = {
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "max_drawdown",
    "hit_rate",
    "turnover",
    "trades",
    "breakeven_fee_bps",
    "deflated_sharpe_pvalue",
}
FLAGS = ["--models", "naive,drift", "--horizon", "3", "--folds", "2", "--test-size", "30"]


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return random_walk_candles(160, seed=5)


@pytest.fixture(scope="module")
def data_file(candles, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("backtest") / "candles.csv"
    write_ohlcv_csv(candles, path)
    return path


def _json(capsys, *argv: str) -> dict:
    assert main(["backtest", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_is_the_library_s_strategy_on_the_same_folds(candles, data_file, capsys) -> None:
    document = _json(
        capsys, "--data", str(data_file), *FLAGS, "--fee-bps", "7.5", "--slippage-bps", "2"
    )
    assert set(document["metrics"]) == {"naive", "drift", "buy_and_hold"}
    for model in ("naive", "drift"):
        assert set(document["metrics"][model]) >= CONTRACT
    assert "earns from candle t+1 on" in document["timing"]

    settings = ExperimentSettings(
        models=("naive", "drift"),
        backtest=BacktestSettings(horizon=3, folds=2, test_size=30, stride=3),
        seed=42,
    )
    result = run_experiment(candles, settings, future=False)
    expected = run_strategy(
        result.backtest, result.candles, StrategySettings(fee_bps=7.5, slippage_bps=2.0)
    ).to_json()["strategies"]
    for model, row in expected.items():
        for key, value in row.items():
            got = document["metrics"][model][key]
            if value is None:
                assert got is None
            else:
                assert got == pytest.approx(value, rel=1e-12, abs=1e-15), (model, key)
    assert document["settings"]["fee_bps"] == 7.5
    assert document["verdict"]["sentence"]


def test_positions_recompute_to_the_equity_and_returns_reported(
    candles, data_file, tmp_path, capsys
) -> None:
    out = tmp_path / "positions.csv"
    document = _json(
        capsys,
        "--data",
        str(data_file),
        *FLAGS,
        "--fee-bps",
        "10",
        "--allow-short",
        "--threshold",
        "0.5",
        "--positions-out",
        str(out),
    )
    rows = pd.read_csv(out)
    assert list(rows.columns) == [
        "timestamp",
        "model",
        "signal_origin",
        "position",
        "fee",
        "return",
        "equity",
    ]
    close = candles["close"]
    close.index = close.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    for model, held in rows.groupby("model", sort=False):
        equity, previous = 1.0, 0.0
        for row in held.itertuples(index=False):
            assert row.signal_origin < row.timestamp  # decided before the candle it holds
            at = close.index.get_loc(row.timestamp)
            fee = abs(row.position - previous) * 10 / 10_000
            change = close.iloc[at] / close.iloc[at - 1] - 1
            assert row.fee == pytest.approx(fee, abs=1e-15)
            assert row._5 == pytest.approx(row.position * change - fee, abs=1e-12)
            equity *= 1 + row._5
            assert row.equity == pytest.approx(equity, rel=1e-12)
            previous = row.position
        assert document["metrics"][model]["total_return"] == pytest.approx(equity - 1, rel=1e-9)


def test_the_default_fee_is_the_exchange_s_taker_fee(fake_binance, tmp_path, capsys) -> None:
    fake_binance.set_candles("BTC/USDT", "1d", random_walk_candles(120, seed=2))
    argv = [
        "backtest",
        "--exchange",
        "binance",
        "--symbol",
        "BTC/USDT",
        "--timeframe",
        "1d",
        "--since",
        "2022-01-01",
        "--exchange-config",
        json.dumps(fake_binance.ccxt_config()),
        "--cache-dir",
        str(tmp_path / "cache"),
        *FLAGS,
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert (
        "note: Fees: 10 bp per side, binance's taker fee for BTC/USDT from ccxt's market data "
        "(no volume tier or discount). Set --fee-bps for yours." in err
    )


def test_a_csv_without_an_exchange_defaults_to_10_bp_and_says_so(data_file, capsys) -> None:
    document = _json(capsys, "--data", str(data_file), *FLAGS)
    assert document["settings"]["fee_bps"] == 10.0
    assert any(
        note.startswith("Fees: 10 bp per side (Binance's spot") for note in document["notes"]
    )


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (("--fee-bps", "-1"), 1, "fee_bps must be a number from 0 to 1000, got -1"),
        (("--entry", "tomorrow"), 2, "argument --entry: invalid choice"),
        (("--settings-tried", "0"), 2, "must be a whole number of at least 1"),
    ],
)
def test_refusals_are_one_line(data_file, extra, code, message, capsys) -> None:
    try:
        got = main(["backtest", "--data", str(data_file), *FLAGS, *extra])
    except SystemExit as exc:
        got = exc.code
    err = capsys.readouterr().err
    assert got == code
    assert message in err
    assert err.count("\n") == 1


def test_a_bundle_backtests_without_its_data_file(data_file, tmp_path, capsys) -> None:
    bundle = tmp_path / "experiment.zip"
    assert main(["compare", "--data", str(data_file), *FLAGS, "--bundle-out", str(bundle)]) == 0
    capsys.readouterr()
    direct = _json(capsys, "--data", str(data_file), *FLAGS)
    again = _json(capsys, "--from-bundle", str(bundle))
    assert again["metrics"] == direct["metrics"]
    assert math.isfinite(again["metrics"]["buy_and_hold"]["total_return"])


def test_json_names_an_unbounded_breakeven_fee(tmp_path, capsys) -> None:
    # A steady fall: naive never trades and stays ahead of buy-and-hold at any cost. JSON
    # has no infinity, so its break-even is null and a note says it is unbounded (the
    # plain output prints inf).
    from factories import candles_from_close

    path = tmp_path / "falling.csv"
    write_ohlcv_csv(candles_from_close(100 * np.exp(-0.01 * np.arange(160)), seed=2), path)
    argv = ["backtest", "--data", str(path), *FLAGS, "--fee-bps", "10"]
    assert main([*argv, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["metrics"]["naive"]["breakeven_fee_bps"] is None
    unbounded = [n for n in document["notes"] if n.startswith("breakeven_fee_bps is null")]
    assert len(unbounded) == 1
    assert "for naive" in unbounded[0]
    assert main(argv) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out), index_col="strategy")
    assert table.loc["naive", "breakeven_fee_bps"] == math.inf
