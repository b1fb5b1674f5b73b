"""Signals and the strategy backtest (forecasting/strategy.py).

The two errors that inflate backtests by orders of magnitude are tested as a kind:
trading on the close that made the signal (the missing one-candle delay) and forgetting
fees. Returns and equity are recomputed by hand from the exported positions CSV.
"""

from __future__ import annotations

import csv
import io
import math

import ccxt
import numpy as np
import pandas as pd
import pytest
from factories import candles_from_close
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.errors import ConfigurationError, InvalidSymbol
from forecasting.evaluation.walkforward import FORECAST_COLUMNS, Backtest, BacktestSettings, Fold
from forecasting.strategy import (
    BUY_AND_HOLD,
    POSITION_COLUMNS,
    StrategySettings,
    deflated_sharpe_pvalue,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    run_strategy,
    strategy_metrics,
    taker_fee_bps,
    with_baselines,
)

FREE = {"fee_bps": 0.0, "slippage_bps": 0.0, "threshold_unit": "bps", "threshold": 0.0}


def make_backtest(
    candles: pd.DataFrame,
    forecast,
    *,
    models: tuple[str, ...] = ("oracle",),
    stride: int = 1,
    horizon: int = 1,
    first: int = 20,
) -> Backtest:
    """A backtest laid out like walk_forward's: origins every ``stride`` candles from
    position ``first``, steps 1..horizon inside the data; ``forecast(model, origin, step)``
    gives each ``yhat`` (``origin`` and ``step`` as candle positions)."""
    index = candles.index
    close = candles["close"].to_numpy()
    n = len(candles)
    origins = tuple(range(first, n - 1, stride))
    rows = []
    for model in models:
        for origin in origins:
            for step in range(1, horizon + 1):
                if origin + step >= n:
                    break
                rows.append(
                    {
                        "fold": 1,
                        "cutoff": index[first],
                        "origin": index[origin],
                        "timestamp": index[origin + step],
                        "step": step,
                        "model": model,
                        "y": close[origin + step],
                        "yhat": forecast(model, origin, step),
                        "lower": np.nan,
                        "upper": np.nan,
                        "y_origin": close[origin],
                    }
                )
    layout = BacktestSettings(horizon=horizon, folds=1, test_size=n - first - 1, stride=stride)
    return Backtest(
        pd.DataFrame(rows, columns=FORECAST_COLUMNS),
        [Fold(1, 0, first, origins, n)],
        layout,
        {1: float("nan")},
    )


def random_walk(n: int, seed: int, scale: float = 0.02) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return candles_from_close(100 * np.exp(np.cumsum(scale * rng.standard_normal(n))), seed=seed)


def _without_delay(candles: pd.DataFrame, result, model: str) -> float:
    """Total return of the same positions traded without the one-candle delay: the
    position decided at origin t applied to candle t's own return (close t-1 to close t),
    the return that made the signal."""
    close = candles["close"]
    rows = result.positions[result.positions["model"] == model]
    equity = 1.0
    for origin, position in zip(rows["signal_origin"], rows["position"], strict=True):
        at = close.index.get_loc(origin)
        equity *= 1 + position * (close.iloc[at] / close.iloc[at - 1] - 1)
    return equity - 1


# --- the kind: trading on the close that made the signal -------------------------------


def test_removing_the_delay_jumps_returns_and_ours_does_not() -> None:
    # A random walk and a forecast that only says where the last candle went (momentum
    # of one candle). It has no skill about the next candle, but it knows the candle that
    # made it: a backtest without the delay earns |return| on every candle.
    candles = random_walk(400, seed=11)
    close = candles["close"].to_numpy()
    backtest = make_backtest(
        candles, lambda _m, o, _s: close[o] + (close[o] - close[o - 1]), first=20
    )
    result = run_strategy(backtest, candles, StrategySettings(allow_short=True, **FREE))
    ours = float(result.metrics.loc["oracle", "total_return"])
    cheat = _without_delay(candles, result, "oracle")
    assert cheat > 50  # thousands of percent: the bug's signature
    assert abs(ours) < 1.5
    assert result.metrics.loc["oracle", "deflated_sharpe_pvalue"] > 0.05
    # Ours is the one-candle-later version of the same positions, exactly.
    rows = result.positions[result.positions["model"] == "oracle"]
    assert (rows["signal_origin"] < rows["timestamp"]).all()


def test_a_true_oracle_of_the_next_close_is_traded_on_that_next_candle() -> None:
    # The forecast at origin t is the real close of t+1: the position it decides must
    # earn candle t+1's move (|return| every candle), not candle t's.
    candles = random_walk(200, seed=5)
    close = candles["close"].to_numpy()
    backtest = make_backtest(candles, lambda _m, o, _s: close[o + 1], first=20)
    result = run_strategy(backtest, candles, StrategySettings(allow_short=True, **FREE))
    rows = result.positions[result.positions["model"] == "oracle"]
    moves = np.abs(close[21:] / close[20:-1] - 1)
    np.testing.assert_allclose(rows["return"].to_numpy(), moves, rtol=1e-12)


@pytest.mark.parametrize("entry", ["close", "next_open"])
@pytest.mark.parametrize("sizing", ["fixed", "vol_target"])
def test_changing_candles_after_an_origin_never_changes_its_positions(entry, sizing) -> None:
    candles = random_walk(90, seed=3)
    close = candles["close"].to_numpy()
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(len(candles)) * 0.01
    backtest = make_backtest(
        candles, lambda _m, o, s: close[o] * (1 + noise[o] * s), stride=3, horizon=3, first=30
    )
    chosen = StrategySettings(
        allow_short=True, entry=entry, sizing=sizing, vol_target=0.2, vol_lookback=10, **FREE
    )
    base = run_strategy(backtest, candles, chosen).positions
    for origin in backtest.folds[0].origins[::4]:
        stamp = candles.index[origin]
        later = candles.index > stamp
        changed = candles.copy()
        factor = np.exp(rng.standard_normal(later.sum()) * 0.05)
        for column in ("open", "high", "low", "close"):
            changed.loc[later, column] = changed.loc[later, column] * factor
        shifted = backtest.forecasts.copy()
        after = shifted["timestamp"] > stamp
        shifted.loc[after, "y"] = shifted.loc[after, "y"] * 3  # the actuals must not be read
        moved = Backtest(shifted, backtest.folds, backtest.settings, backtest.naive_scale)
        again = run_strategy(moved, changed, chosen).positions
        decided = base["signal_origin"] <= stamp
        pd.testing.assert_series_equal(
            base.loc[decided, "position"], again.loc[decided, "position"]
        )


# --- independent recomputation from the CSV --------------------------------------------


@pytest.mark.parametrize("entry", ["close", "next_open"])
def test_returns_and_equity_recomputed_from_the_positions_csv(entry) -> None:
    candles = random_walk(120, seed=8)
    rng = np.random.default_rng(1)
    candles["open"] = candles["close"].shift(1).fillna(candles["close"]) * (
        1 + rng.standard_normal(len(candles)) * 0.003
    )  # opens apart from the previous close, so the next_open split matters
    close = candles["close"].to_numpy()
    guesses = rng.standard_normal(len(candles)) * 0.02
    backtest = make_backtest(
        candles,
        lambda m, o, s: close[o] * (1 + guesses[o] * (1 if m == "a" else -1)),
        models=("a", "b"),
        stride=2,
        horizon=2,
        first=25,
    )
    chosen = StrategySettings(
        allow_short=True, fee_bps=7.5, slippage_bps=2.5, threshold=0.5, entry=entry
    )
    result = run_strategy(backtest, candles, chosen)
    text = io.StringIO()
    result.positions_table().to_csv(text, index=False)
    rows = list(csv.DictReader(io.StringIO(text.getvalue())))
    assert list(rows[0]) == POSITION_COLUMNS

    closes = {
        stamp.strftime("%Y-%m-%dT%H:%M:%SZ"): value for stamp, value in candles["close"].items()
    }
    opens = {
        stamp.strftime("%Y-%m-%dT%H:%M:%SZ"): value for stamp, value in candles["open"].items()
    }
    stamps = list(closes)
    cost = (7.5 + 2.5) / 10_000
    threshold = 0.5 * 2 * cost
    forecasts = with_baselines(backtest, candles)[0].forecasts  # naive and drift join a, b
    seen = {}
    for row in rows:
        seen.setdefault(row["model"], []).append(row)
    assert set(seen) == {"a", "b", "naive", "drift", BUY_AND_HOLD}
    for model, held in seen.items():
        equity, previous = 1.0, 0.0
        for row in held:
            t = row["timestamp"]
            prev = stamps[stamps.index(t) - 1]
            position, fee = float(row["position"]), float(row["fee"])
            assert fee == pytest.approx(abs(position - previous) * cost, abs=1e-15)
            if entry == "next_open" and position != previous:
                expected = previous * (opens[t] / closes[prev] - 1)
                expected += position * (closes[t] / opens[t] - 1) - fee
            else:
                expected = position * (closes[t] / closes[prev] - 1) - fee
            assert float(row["return"]) == pytest.approx(expected, abs=1e-12)
            equity *= 1 + expected
            assert float(row["equity"]) == pytest.approx(equity, rel=1e-12)
            if model != BUY_AND_HOLD:
                # The rule, by hand, from the forecast made at signal_origin.
                origin = row["signal_origin"]
                assert origin < t
                made = forecasts[
                    (forecasts["model"] == model)
                    & (forecasts["origin"] == pd.Timestamp(origin))
                    & (forecasts["step"] == 2)
                ].iloc[0]
                change = made["yhat"] / made["y_origin"] - 1
                wanted = 1.0 if change > threshold else -1.0 if change < -threshold else 0.0
                assert position == wanted
            previous = position
        assert float(result.metrics.loc[model, "total_return"]) == pytest.approx(equity - 1)


# --- fees ------------------------------------------------------------------------------


def test_flipping_every_candle_loses_two_fees_per_round_trip() -> None:
    candles = candles_from_close(np.full(60, 100.0))  # prices never move: only fees count
    backtest = make_backtest(
        candles, lambda _m, o, _s: 101.0 if o % 2 == 0 else 99.0, first=20
    )  # long after even origins, flat after odd ones
    result = run_strategy(backtest, candles, StrategySettings(fee_bps=10.0, threshold=0.0))
    rows = result.positions[result.positions["model"] == "oracle"]
    changes = int((rows["position"].diff().fillna(rows["position"]) != 0).sum())
    assert changes == len(rows)  # a change of position on every candle
    np.testing.assert_allclose(rows["return"], -0.001)
    # Each round trip (in, then out) costs 2 x 10 bp in simple returns; the last entry
    # is still open at the end (no exit fee).
    round_trips = changes // 2
    pairs = rows["return"].to_numpy()[: 2 * round_trips].reshape(-1, 2).sum(axis=1)
    np.testing.assert_allclose(pairs, -2 * 0.001, rtol=1e-12)
    total = float(result.metrics.loc["oracle", "total_return"])
    assert total == pytest.approx((1 - 0.001) ** changes - 1, rel=1e-12)
    assert result.metrics.loc["oracle", "trades"] == changes


def test_ten_basis_points_turn_a_small_edge_negative() -> None:
    # Long over every other candle, each of which rises 0.15 %; the candles in between
    # fall 0.1 %, while the strategy is flat. Per round trip: +0.15 % gross.
    n, first = 61, 20
    growth = np.ones(n)
    for k in range(first + 1, n):
        growth[k] = 1.0015 if (k - first) % 2 == 1 else 0.999
    candles = candles_from_close(100 * np.cumprod(growth))
    backtest = make_backtest(
        candles, lambda _m, o, _s: 1e9 if (o - first) % 2 == 0 else 1.0, first=first
    )
    free = run_strategy(backtest, candles, StrategySettings(**FREE))
    charged = run_strategy(
        backtest, candles, StrategySettings(fee_bps=10.0, threshold=0.0, threshold_unit="bps")
    )
    trips = (n - 1 - first) // 2  # 20 candles long, 20 flat
    assert float(free.metrics.loc["oracle", "total_return"]) == pytest.approx(
        1.0015**trips - 1, rel=1e-12
    )
    # By hand: each long candle returns 0.0015 - 0.001 (entry fee), each flat candle
    # after it -0.001 (exit fee).
    by_hand = ((1 + 0.0015 - 0.001) * (1 - 0.001)) ** trips - 1
    assert by_hand < 0 < 1.0015**trips - 1
    assert float(charged.metrics.loc["oracle", "total_return"]) == pytest.approx(by_hand, rel=1e-12)


def test_breakeven_fee_makes_total_return_equal_buy_and_hold() -> None:
    candles = random_walk(200, seed=21, scale=0.01)
    close = candles["close"].to_numpy()
    backtest = make_backtest(candles, lambda _m, o, _s: close[o + 1], stride=2, first=20)
    result = run_strategy(backtest, candles, StrategySettings(**FREE))
    breakeven = float(result.metrics.loc["oracle", "breakeven_fee_bps"])
    assert 0 < breakeven < 10_000
    at = run_strategy(backtest, candles, StrategySettings(**{**FREE, "fee_bps": breakeven})).metrics
    assert at.loc["oracle", "total_return"] == pytest.approx(
        at.loc[BUY_AND_HOLD, "total_return"], abs=1e-9
    )


# --- metrics against hand values -------------------------------------------------------


def test_metrics_on_a_tiny_series() -> None:
    r = np.array([0.1, -0.05, 0.02, -0.01])
    pos = np.array([1.0, 1.0, 0.0, -1.0])
    got = strategy_metrics(r, pos, np.zeros(4), periods=2.0)
    # mean 0.015; deviations 0.085, -0.065, 0.005, -0.025: squares sum to 0.0121.
    sd = math.sqrt(0.0121 / 3)
    assert got["sharpe"] == pytest.approx(0.015 / sd * math.sqrt(2))
    assert got["volatility"] == pytest.approx(sd * math.sqrt(2))
    # downside: (0.05^2 + 0.01^2) / 4 candles
    assert got["sortino"] == pytest.approx(0.015 / math.sqrt(0.0026 / 4) * math.sqrt(2))
    final = 1.1 * 0.95 * 1.02 * 0.99
    assert got["total_return"] == pytest.approx(final - 1)
    assert got["cagr"] == pytest.approx(final ** (1 / 2) - 1)  # 4 candles at 2 a year
    # equity 1.1, 1.045, 1.0659, 1.055241: the deepest fall is from 1.1 to 1.045
    assert got["max_drawdown"] == pytest.approx(1 - 1.045 / 1.1)
    assert got["hit_rate"] == pytest.approx(1 / 3)  # in market 3 candles, one up
    assert got["trades"] == 3  # 0 -> 1, 1 -> 0, 0 -> -1
    assert got["turnover"] == pytest.approx(3 / 2)
    assert got["time_in_market"] == pytest.approx(0.75)
    # Entered at the next open, the exit candle (the third) holds the old position until
    # its open: in the market, and its return (+2 %) a hit.
    opened = strategy_metrics(r, pos, np.zeros(4), periods=2.0, entry="next_open")
    assert opened["time_in_market"] == pytest.approx(1.0)
    assert opened["hit_rate"] == pytest.approx(2 / 4)
    assert {k: opened[k] for k in ("sharpe", "trades", "turnover")} == {
        k: got[k] for k in ("sharpe", "trades", "turnover")
    }


def test_max_drawdown_counts_the_starting_equity() -> None:
    got = strategy_metrics(np.array([-0.1, 0.05]), np.ones(2), np.zeros(2), periods=365.0)
    assert got["max_drawdown"] == pytest.approx(0.1)


# --- the deflated Sharpe ratio ---------------------------------------------------------


def test_deflated_sharpe_ratio_matches_the_papers_example() -> None:
    # Bailey and López de Prado (2014), section "a numerical example": annualised SR 2.5
    # over 5 years of daily returns (T = 1250), N = 100 trials whose annualised Sharpe
    # ratios vary by 0.5, skewness -3, kurtosis 10: SR0 is about 0.1132 a day, DSR 0.9004.
    variance = 0.5 / 250
    assert expected_max_sharpe(100, variance) == pytest.approx(0.1132, abs=5e-4)
    dsr = deflated_sharpe_ratio(2.5 / math.sqrt(250), 100, variance, 1250, -3.0, 10.0)
    assert dsr == pytest.approx(0.9004, abs=2e-3)
    assert expected_max_sharpe(1, variance) == 0.0


def test_deflated_sharpe_size_under_the_null() -> None:
    """Random-walk prices, N = 6 strategies without skill (random long/short/flat
    signals held 3 candles), T = 300 candles: the best strategy's p-value with N trials
    is below 5 % in at most about 5 % of 2000 runs. Monte Carlo error of the rate:
    sqrt(0.05 x 0.95 / 2000) = 0.5 %; the bound 6.5 % is three errors above 5 %."""
    rng = np.random.default_rng(2024)
    runs, trials, t, hold = 2000, 6, 300, 3
    rejected = rejected_excess = 0
    for _ in range(runs):
        market = rng.standard_normal(t) * 0.02 * np.exp(rng.standard_normal() * 0.3)
        signals = rng.integers(-1, 2, size=(trials, t // hold)).repeat(hold, axis=1)
        returns = signals * market
        excess = returns - market
        sharpes = returns.mean(axis=1) / returns.std(axis=1, ddof=1)
        best = int(np.argmax(sharpes))
        variance = float(np.var(sharpes, ddof=1))
        rejected += deflated_sharpe_pvalue(returns[best], trials, variance) < 0.05
        excess_sharpes = excess.mean(axis=1) / excess.std(axis=1, ddof=1)
        top = int(np.argmax(excess_sharpes))
        rejected_excess += (
            deflated_sharpe_pvalue(excess[top], trials, float(np.var(excess_sharpes, ddof=1)))
            < 0.05
        )
    # The floor on the trials' variance makes the selection test conservative (0.3 % and
    # 1 % here): it rejects less often than its level, never more.
    assert rejected / runs <= 0.065
    assert rejected_excess / runs <= 0.065


def test_one_trial_rejects_a_true_null_at_its_level() -> None:
    """With N = 1 (no selection) the p-value is the probabilistic Sharpe ratio's, and a
    strategy without skill is rejected at 5 % about 5 % of the time: 2000 runs of T = 300
    candles, Monte Carlo error 0.5 %, accepted between 3.5 % and 6.5 % (5.7 % here)."""
    rng = np.random.default_rng(7)
    runs, t = 2000, 300
    rejected = 0
    for _ in range(runs):
        market = rng.standard_normal(t) * 0.02
        signals = rng.integers(-1, 2, size=t // 3).repeat(3)
        rejected += deflated_sharpe_pvalue(signals * market, 1) < 0.05
    assert 0.035 <= rejected / runs <= 0.065


def test_a_real_edge_is_found_significant() -> None:
    rng = np.random.default_rng(9)
    returns = 0.001 + rng.standard_normal(2000) * 0.01  # SR 0.1 a candle, T = 2000
    assert deflated_sharpe_pvalue(returns, trials=6) < 0.01


# --- properties over random series and forecasts ---------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    stride=st.integers(1, 4),
    horizon=st.integers(1, 4),
    allow_short=st.booleans(),
    entry=st.sampled_from(["close", "next_open"]),
    sizing=st.sampled_from(["fixed", "vol_target"]),
    fraction=st.floats(0.05, 1.0),
    fee=st.floats(0, 50),
)
def test_properties(seed, stride, horizon, allow_short, entry, sizing, fraction, fee) -> None:
    candles = random_walk(70, seed=seed, scale=0.03)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((len(candles), 5)) * 0.02
    close = candles["close"].to_numpy()
    backtest = make_backtest(
        candles,
        lambda _m, o, s: close[o] * (1 + noise[o, s]),
        stride=stride,
        horizon=horizon,
        first=25,
    )
    chosen = StrategySettings(
        allow_short=allow_short,
        entry=entry,
        sizing=sizing,
        fraction=fraction,
        fee_bps=fee,
        vol_target=0.3,
        vol_lookback=10,
    )
    result = run_strategy(backtest, candles, chosen)
    origins = set(candles.index[list(backtest.folds[0].origins)])
    for name, rows in result.positions.groupby("model"):
        np.testing.assert_allclose(
            rows["equity"].to_numpy(), np.cumprod(1 + rows["return"].to_numpy()), rtol=1e-12
        )
        position = rows["position"].to_numpy()
        changed = np.diff(np.r_[0.0, position]) != 0
        before = candles.index[candles.index.get_indexer(rows["timestamp"]) - 1]
        assert all(stamp in origins for stamp in before[changed])  # only right after an origin
        limit = 1.0 if name == BUY_AND_HOLD else fraction
        assert np.all(np.abs(position) <= limit + 1e-12)
        if not allow_short:
            assert np.all(position >= 0)
        known = rows["signal_origin"].notna()
        assert (rows.loc[known, "signal_origin"] < rows.loc[known, "timestamp"]).all()


# --- settings, the exchange's fee, errors ----------------------------------------------


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"fee_bps": -1}, "Strategy fee_bps must be a number from 0 to 1000, got -1."),
        ({"entry": "open"}, "Strategy entry must be one of close, next_open, got 'open'."),
        ({"fraction": 0}, "Strategy fraction must be a number above 0 and at most 1, got 0."),
        ({"horizon": 0}, "Strategy horizon must be a whole number from 1 to 365, or null, got 0."),
    ],
)
def test_settings_out_of_range_are_one_line(given, message) -> None:
    with pytest.raises(ConfigurationError) as error:
        StrategySettings(**given)
    assert str(error.value) == message


def test_default_horizon_is_the_stride_and_a_longer_one_is_refused() -> None:
    candles = random_walk(80, seed=2)
    close = candles["close"].to_numpy()
    backtest = make_backtest(candles, lambda _m, o, s: close[o], stride=3, horizon=5, first=20)
    assert run_strategy(backtest, candles).horizon == 3
    with pytest.raises(ConfigurationError, match="beyond the backtest's forecasts"):
        run_strategy(backtest, candles, StrategySettings(horizon=6))
    with pytest.raises(ConfigurationError, match="No forecasts of lstm"):
        run_strategy(backtest, candles, models=["lstm"])


def test_json_and_verdict_words() -> None:
    candles = random_walk(150, seed=4)
    close = candles["close"].to_numpy()
    backtest = make_backtest(
        candles, lambda m, o, _s: close[o] if m == "naive" else close[o + 1],
        models=("naive", "oracle"), first=20,
    )  # fmt: skip
    result = run_strategy(backtest, candles, StrategySettings(fee_bps=10.0))
    document = result.to_json()
    assert set(document["strategies"]) == {"naive", "drift", "oracle", BUY_AND_HOLD}
    assert document["trials"] == 3
    assert document["strategies"]["naive"]["sharpe"] is None  # flat: undefined, not NaN
    assert result.verdict.significant == ("oracle",)
    assert result.verdict.sentence.startswith("oracle's strategy beat buy-and-hold after costs")
    assert "On the naive and drift forecasts the same rule returned +0.0% and" in (
        result.verdict.sentence
    )
    curves = result.equity_curves()
    assert curves.iloc[0].tolist() == [1.0, 1.0, 1.0, 1.0]  # naive, oracle, drift, b&h
    assert curves.index[0] == candles.index[20]


def test_taker_fee_from_the_fake_exchange(fake_binance) -> None:
    fake_binance.add_symbol("BTC/USDT")
    client = fake_binance.client()
    assert taker_fee_bps(client, "BTC/USDT") == 10.0  # ccxt's Binance spot taker, 0.1 %
    with pytest.raises(InvalidSymbol, match="does not list ETH/USDT"):
        taker_fee_bps(client, "ETH/USDT")


def test_taker_fee_from_markets_set_by_hand() -> None:
    exchange = ccxt.kraken()
    exchange.markets = {"BTC/USD": {"taker": 0.0026}, "ETH/USD": {"taker": None}}
    assert taker_fee_bps(exchange, "BTC/USD") == 26.0
    assert taker_fee_bps(exchange, "ETH/USD") is None


def test_naive_and_drift_are_always_traded_beside_the_models_chosen() -> None:
    candles = random_walk(80, seed=6)
    close = candles["close"].to_numpy()
    backtest = make_backtest(
        candles,
        lambda m, o, s: close[o] * (1.01 if m == "lstm" else 1.0),
        models=("naive", "drift", "prophet", "lstm"),
        first=20,
    )
    result = run_strategy(backtest, candles, models=["lstm"])
    assert result.strategies == ["naive", "drift", "lstm", BUY_AND_HOLD]
    assert result.trials == 3
    naive = result.positions[result.positions["model"] == "naive"]
    assert (naive["position"] == 0).all()  # naive forecasts no change: never trades
    assert result.verdict.best == "lstm"


def test_drift_missing_from_the_comparison_is_forecast_on_its_folds_and_traded() -> None:
    # backtest --models seasonal_naive: the comparison holds naive and seasonal naive
    # only; drift is still traded, on the same pairs, exactly as if it had been run.
    from forecasting.evaluation import walk_forward
    from forecasting.models import make_model

    candles = random_walk(160, seed=11)
    layout = BacktestSettings(horizon=3, folds=2, test_size=60, stride=1)
    names = ("naive", "seasonal_naive", "drift")
    full = walk_forward({n: make_model(n) for n in names}, candles, layout)
    partial = walk_forward({n: make_model(n) for n in names[:2]}, candles, layout)
    chosen = StrategySettings(fee_bps=5.0, threshold=0.1)
    expected = run_strategy(full, candles, chosen)
    got = run_strategy(partial, candles, chosen)
    assert got.strategies == ["naive", "seasonal_naive", "drift", BUY_AND_HOLD]
    pd.testing.assert_frame_equal(got.metrics.loc[list(names)], expected.metrics.loc[list(names)])
    assert any("drift was not in the comparison" in note for note in got.notes)
    made, added = with_baselines(partial, candles)
    assert added == ["drift"]
    assert set(made.forecasts["model"]) == set(names)
    assert with_baselines(full, candles)[0] is full


def test_an_unbounded_breakeven_fee_is_told_apart_from_an_undefined_one() -> None:
    # A falling market: naive never trades, so it stays ahead of buy-and-hold at any cost
    # (break-even infinite); buy-and-hold's own is undefined. Both are null in JSON, and a
    # note names the unbounded one.
    candles = candles_from_close(100 * np.exp(-0.01 * np.arange(80)), seed=3)
    close = candles["close"].to_numpy()
    backtest = make_backtest(candles, lambda m, o, _s: close[o], models=("naive",), first=20)
    result = run_strategy(backtest, candles, StrategySettings(fee_bps=10.0))
    assert result.metrics.loc["naive", "breakeven_fee_bps"] == math.inf
    assert math.isnan(result.metrics.loc[BUY_AND_HOLD, "breakeven_fee_bps"])
    document = result.to_json()
    assert document["strategies"]["naive"]["breakeven_fee_bps"] is None
    assert document["strategies"][BUY_AND_HOLD]["breakeven_fee_bps"] is None
    notes = [n for n in document["notes"] if n.startswith("breakeven_fee_bps is null")]
    assert len(notes) == 1
    assert "for naive, drift because it is unbounded" in notes[0]  # drift: flat too
    assert BUY_AND_HOLD not in notes[0]
