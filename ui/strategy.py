"""Streamlit glue for the Strategy page: the comparison it trades, its settings, the fee.

The page trades the walk-forward forecasts of the Compare page's latest results (same
folds, no refits) with :func:`forecasting.strategy.run_strategy`. Its rules and costs are
kept settings (``strategy.*`` in :data:`ui.sharing.SPECS`), so links and bundles carry
them. The default fee is the exchange's own taker fee where ccxt knows it, looked up in
the background so the page never waits on the network.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

import forecasting as fc
from forecasting.strategy import METRICS, StrategyResult, StrategySettings, run_strategy
from forecasting.strategy import taker_fee_bps as _taker_fee_bps
from ui import sharing, text
from ui.settings import remember, setting
from ui.state import Selection, ShownResult, exchange_config, stale_result

FORM = "strategy_settings"
#: Session key under which the Compare page keeps its latest results (``pages/compare.py``).
COMPARE_LAST = "_compare_last"
#: The fee used when the exchange's own is not known: Binance's spot taker fee.
FALLBACK_FEE_BPS = float(sharing.SPECS["strategy.fee_bps"].default)
#: The strategy settings of the form, by their names in :data:`ui.sharing.SPECS`.
SETTING_NAMES = {
    "threshold": "strategy.threshold",
    "threshold_unit": "strategy.threshold_unit",
    "fee_bps": "strategy.fee_bps",
    "slippage_bps": "strategy.slippage_bps",
    "allow_short": "strategy.allow_short",
    "entry": "strategy.entry",
    "sizing": "strategy.sizing",
    "fraction": "strategy.fraction",
    "vol_target": "strategy.vol_target",
    "vol_lookback": "strategy.vol_lookback",
}
#: The metrics shown first, on their own (the whole table is wider than the page).
KEY_METRICS = (
    "total_return",
    "sharpe",
    "max_drawdown",
    "trades",
    "breakeven_fee_bps",
    "excess_pvalue",
)


# --- the comparison traded -------------------------------------------------------------------


def latest_comparison(selection: Selection) -> tuple[ShownResult | None, ShownResult | None]:
    """The Compare page's latest results for the sidebar's data, and (when there are none)
    the latest results on other data, which the page names but does not trade."""
    last = st.session_state.get(COMPARE_LAST)
    if last is None:
        return None, None
    stale = stale_result(last, selection)
    return (None, stale) if stale is not None else (last, None)


# --- the default fee ------------------------------------------------------------------------


@dataclass(frozen=True)
class DefaultFee:
    """The fee the form starts from, and where it comes from, in words."""

    bps: float
    note: text.Markup


@st.cache_data(ttl=24 * 3600, show_spinner=False, max_entries=64)
def exchange_taker_fee(exchange_id: str, symbol: str, config_text: str) -> float | None:
    """The exchange's taker fee for ``symbol`` in basis points (``None``: ccxt does not
    know it); loads the exchange's markets, so it is called from a background thread."""
    exchange = fc.create_exchange(exchange_id, json.loads(config_text))
    return _taker_fee_bps(exchange, symbol)


class _FeeLookups:
    """Background look-ups of the taker fee, one per exchange, symbol and settings.

    A finished look-up is reused for a day (its value is also in
    :func:`exchange_taker_fee`'s cache); a failed one is retried after ten minutes.
    """

    RETRY_SECONDS = 600.0
    KEEP_SECONDS = 24 * 3600.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="taker-fee")
        self._started: dict[tuple[str, str, str], tuple[float, Future]] = {}

    def get(self, exchange_id: str, symbol: str, config_text: str) -> Future:
        key = (exchange_id, symbol, config_text)
        with self._lock:
            found = self._started.get(key)
            if found is not None:
                started, future = found
                age = time.monotonic() - started
                failed = future.done() and future.exception() is not None
                if not (age > self.KEEP_SECONDS or (failed and age > self.RETRY_SECONDS)):
                    return future
            future = self._pool.submit(exchange_taker_fee, exchange_id, symbol, config_text)
            self._started[key] = (time.monotonic(), future)
            return future


_LOOKUPS = _FeeLookups()


def default_fee(dataset: Any) -> DefaultFee:
    """The fee for data from ``dataset``: the exchange's taker fee once it is known, else
    10 bp (Binance's spot taker fee), saying which and why. Never waits on the network."""
    chosen = dataset.selection
    if dataset.source != "exchange" or chosen is None or not chosen.exchange:
        return DefaultFee(
            FALLBACK_FEE_BPS,
            text.markup(
                "The default fee is {fee:g} bp per side, Binance's spot taker fee: this data "
                "is not from an exchange.",
                fee=FALLBACK_FEE_BPS,
            ),
        )
    config = json.dumps(exchange_config(chosen.exchange), sort_keys=True, default=str)
    future = _LOOKUPS.get(chosen.exchange, chosen.symbol, config)
    names = {"exchange": chosen.exchange, "symbol": chosen.symbol, "fee": FALLBACK_FEE_BPS}
    if not future.done():
        return DefaultFee(
            FALLBACK_FEE_BPS,
            text.markup(
                "The markets of {exchange} are not loaded yet, so the default fee is {fee:g} bp "
                "per side (Binance's spot taker fee) for now; its own taker fee for {symbol} is "
                "being looked up and becomes the default when the page is next drawn.",
                **names,
            ),
        )
    problem = future.exception()
    if problem is not None:
        return DefaultFee(
            FALLBACK_FEE_BPS,
            text.markup(
                "Could not look up the taker fee of {exchange} ({problem}); the default fee is "
                "{fee:g} bp per side, Binance's spot taker fee.",
                problem=problem,
                **names,
            ),
        )
    fee = future.result()
    if fee is None:
        return DefaultFee(
            FALLBACK_FEE_BPS,
            text.markup(
                "ccxt does not know the taker fee of {exchange} for {symbol}; the default fee "
                "is {fee:g} bp per side, Binance's spot taker fee.",
                **names,
            ),
        )
    spec = sharing.SPECS["strategy.fee_bps"]
    fee = float(min(max(fee, spec.lo), spec.hi))
    return DefaultFee(
        fee,
        text.markup(
            "The default fee is the taker fee of {exchange} for {symbol} in ccxt's market data: "
            "{fee:g} bp per side (its published base rate: volume tiers and discounts are "
            "not seen).",
            exchange=chosen.exchange,
            symbol=chosen.symbol,
            fee=fee,
        ),
    )


def fee_was_chosen() -> bool:
    """True when the fee was set by the user (the form, a link or a bundle), not defaulted."""
    # The settings store of ui.settings: it holds a setting once it was submitted or restored.
    return "strategy.fee_bps" in st.session_state.get("_kept_settings", {})


def offer_fee(default: DefaultFee) -> None:
    """Start the form's fee at ``default`` until the user chooses one (call before the form)."""
    if not fee_was_chosen():
        key = remember("strategy.fee_bps", form=FORM)
        st.session_state[key] = default.bps


# --- the backtest -----------------------------------------------------------------------------


def current_settings(default: DefaultFee) -> StrategySettings:
    """The rules and costs last submitted (or linked), the fee defaulting to ``default``."""
    values = {field: setting(name) for field, name in SETTING_NAMES.items()}
    if not fee_was_chosen():
        values["fee_bps"] = default.bps
    for name in ("threshold", "fee_bps", "slippage_bps", "fraction", "vol_target"):
        values[name] = float(values[name])
    values["vol_lookback"] = int(values["vol_lookback"])
    return StrategySettings(**values)


def _experiment_key(shown: ShownResult) -> str:
    result = shown.result
    return json.dumps(
        [str(result.data.get("sha256", "")), result.settings.to_dict()], sort_keys=True, default=str
    )


def settings_tried(shown: ShownResult, settings: StrategySettings) -> int:
    """Count ``settings`` among the distinct settings run on these forecasts in this session
    (the deflated Sharpe ratio's trials grow with them); returns the count."""
    tried = st.session_state.setdefault("_strategy_tried", {})
    seen = tried.setdefault(_experiment_key(shown), [])
    chosen = json.dumps(settings.to_dict(), sort_keys=True)
    if chosen not in seen:
        seen.append(chosen)
    return len(seen)


def backtest(shown: ShownResult, settings: StrategySettings, tried: int) -> StrategyResult:
    """:func:`run_strategy` on the comparison's forecasts and candles (kept for the
    session's last settings, so redrawing the page does not run it again)."""
    key = (_experiment_key(shown), json.dumps(settings.to_dict(), sort_keys=True), tried)
    last = st.session_state.get("_strategy_last")
    if last is not None and last[0] == key:
        return last[1]
    result = run_strategy(
        shown.result.backtest, shown.result.candles, settings, settings_tried=tried
    )
    st.session_state["_strategy_last"] = (key, result)
    return result


# --- tables and files ---------------------------------------------------------------------------

_PERCENT = ("total_return", "cagr", "volatility", "max_drawdown", "hit_rate", "time_in_market")
_HELP = {
    "total_return": "Final equity minus 1, after fees and slippage.",
    "cagr": "Compound annual growth rate.",
    "volatility": "Annualised standard deviation of the candle returns.",
    "sharpe": "Annualised Sharpe ratio (risk-free rate 0).",
    "sortino": "Annualised Sortino ratio (target 0).",
    "max_drawdown": "Largest fall of equity from a running peak.",
    "hit_rate": "Share of the candles in the market with a positive return after fees.",
    "turnover": "Sum of position changes per year.",
    "trades": "Candles on which the position changes.",
    "time_in_market": "Share of candles with a position.",
    "breakeven_fee_bps": "The cost per side (fee plus slippage) at which the strategy's total "
    "return falls to buy-and-hold's; 0 when it does not beat it even without costs.",
    "deflated_sharpe_pvalue": "Chance of a Sharpe ratio this high from the trials without skill "
    "(deflated Sharpe ratio).",
    "excess_pvalue": "The same test of the returns in excess of buy-and-hold's: the verdict's.",
}


def metrics_columns() -> dict[str, Any]:
    """Column formats and explanations for the metrics table."""
    columns: dict[str, Any] = {}
    for name in METRICS:
        if name in _PERCENT:
            kind = "percent"
        elif name == "trades":
            kind = "%d"
        elif name.endswith("pvalue"):
            kind = "%.3f"
        elif name == "breakeven_fee_bps":
            kind = "%.1f"
        else:
            kind = "%.2f"
        label = "excess p-value" if name == "excess_pvalue" else name
        columns[name] = st.column_config.NumberColumn(
            text.plain(label), help=text.plain(_HELP[name]), format=kind
        )
    return columns


def metrics_table(result: StrategyResult, *, key_only: bool) -> pd.DataFrame:
    """The metrics, the key columns first (only those with ``key_only``)."""
    metrics = result.metrics
    first = list(KEY_METRICS)
    if key_only:
        return metrics[first]
    return metrics[first + [c for c in metrics.columns if c not in first]]


def equity_csv(result: StrategyResult) -> str:
    """Equity by timestamp (ISO-8601 UTC) and strategy, 1 at the first origin."""
    equity = result.equity_curves()
    equity.index = equity.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    return equity.to_csv()


def positions_csv(result: StrategyResult) -> str:
    """The positions CSV (:meth:`StrategyResult.positions_table`)."""
    return result.positions_table().to_csv(index=False)


def bundle_files(result: StrategyResult) -> dict[str, str]:
    """The strategy's files in an experiment bundle: its settings and verdict
    (``strategy/strategy.json``), metrics, positions and equity (CSV)."""
    document = result.to_json()
    return {
        "strategy/strategy.json": json.dumps(
            _finite(
                {
                    key: document[key]
                    for key in ("settings", "horizon", "periods_per_year", "trials", "verdict")
                }
                | {"notes": document["notes"]}
            ),
            indent=2,
            allow_nan=False,
            default=str,
        ),
        "strategy/metrics.csv": result.metrics.rename_axis("strategy").to_csv(),
        "strategy/positions.csv": positions_csv(result),
        "strategy/equity.csv": equity_csv(result),
    }


def _finite(value: Any) -> Any:
    """``value`` with every float that is not finite as ``None`` (valid JSON)."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
