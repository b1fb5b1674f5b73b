"""From forecast to decision: trading signals and an honest backtest of them.

A strategy turns each model's walk-forward forecasts (the :class:`~forecasting.evaluation.
walkforward.Backtest` that Compare produces: same folds, no refits) into positions, and
:func:`run_strategy` scores them beside buy-and-hold on the same candles.

Conventions
-----------
Timing. An origin ``t`` is a closed candle: its forecast used candles up to and including
``t`` only. The signal of origin ``t`` is the forecast return over ``k`` candles,
``yhat[t + k] / close[t] - 1`` (``k`` is :attr:`StrategySettings.horizon`, by default the
backtest's stride: the signal is held until the next origin). The position it decides is
entered at the close of ``t`` (``entry="close"``) or at the open of ``t + 1``
(``entry="next_open"``), and held over candles ``t + 1, t + 2, ...`` until the next origin
that gives a signal; an origin without a step-``k`` forecast (a gap, the end of the data)
changes nothing. A signal is never applied to the candle whose close produced it.

Rule. Long (``+size``) when the forecast return is above the threshold, short
(``-size``) when it is below minus the threshold and shorts are allowed, otherwise flat.
The threshold is in units of the round-trip cost, ``2 x (fee_bps + slippage_bps)``, by
default (a trade must at least pay for itself), or in basis points.

Sizing. ``"fixed"``: ``size = fraction``. ``"vol_target"``: ``size = min(fraction,
vol_target / sigma_t)``, ``sigma_t`` the annualised standard deviation of the last
``vol_lookback`` log returns up to the close of ``t`` (nothing later). So ``|position| <=
fraction`` always; no leverage.

Returns, one row per model and candle ``u`` held (the positions CSV)::

    position[u]  decided at signal_origin[u], the last origin before u
    fee[u]       |position[u] - position[u-1]| x (fee_bps + slippage_bps) / 10^4
    return[u]    position[u] x (close[u] / close[u-1] - 1) - fee[u]
    equity[u]    equity[u-1] x (1 + return[u]),  equity before the first candle = 1

With ``entry="next_open"`` the candle on which the position changes is split at its open:
``return[u] = position[u-1] x (open[u] / close[u-1] - 1) + position[u] x (close[u] /
open[u] - 1) - fee[u]`` (the old position is held until the open); every other candle is
as above. Fees are charged per side on every change of position, proportionally to its
size, as a fraction of the equity at the trade; the fee is subtracted from the candle's
simple return (the cross term ``fee x return``, below 10^-6 for usual fees, is ignored).
A position still open at the end is valued at the last close, without an exit fee, for
every strategy and for buy-and-hold alike.

Buy-and-hold is a position of 1 from the first origin (entered as the strategies enter)
to the last scored candle (the last forecast target), with one entry fee. The strategies
of the naive and drift forecasts are scored whenever those models are in the backtest:
naive's forecast return is always 0, so its strategy is flat (the cost of doing nothing).

Metrics (per strategy; ``P`` periods per year: 365 x candles per day for markets that
trade every day, 252 for daily candles with no weekends; ``n`` candles held; ``r`` the
returns above):

- ``total_return`` = ``equity[n] - 1``; ``cagr`` = ``equity[n]^(P/n) - 1``;
- ``volatility`` = ``std(r) sqrt(P)`` (sample standard deviation);
- ``sharpe`` = ``mean(r) / std(r) sqrt(P)``, risk-free rate 0 (Sharpe 1994, "The Sharpe
  ratio"; annualised by ``sqrt(P)``, which assumes serially uncorrelated returns, Lo 2002);
- ``sortino`` = ``mean(r) / sqrt(mean(min(r, 0)^2)) sqrt(P)``, target 0, the downside
  deviation taken over every candle (Sortino and Price 1994);
- ``max_drawdown`` = ``max_u (1 - equity[u] / max_{v <= u} equity[v])`` with the starting
  equity 1 included, as a positive fraction (0.25 is a fall of 25 %);
- ``hit_rate``: share of the candles in the market whose return (after fees) is positive;
- ``turnover``: ``sum |position[u] - position[u-1]|`` per year; ``trades``: candles on which
  the position changes; ``time_in_market``: share of candles with a position;
- ``breakeven_fee_bps``: the per-side cost (fee plus slippage together, in basis points)
  at which the strategy's total return falls to buy-and-hold's, with the positions held
  fixed and buy-and-hold paying the same cost on its entry: the break-even one-way
  trading cost of Bessembinder and Chan (1998). 0 when the strategy does not beat
  buy-and-hold even without costs; infinite when no cost up to 100 % makes it fall behind.
  Found by a scan then bisection (total return is a polynomial in the cost).
- ``deflated_sharpe_pvalue``: 1 minus the deflated Sharpe ratio (below); the chance of a
  Sharpe ratio this high from ``N`` tries without skill;
- ``excess_pvalue``: the same test of the returns in excess of buy-and-hold's
  (``r - r_buy_and_hold``, candle by candle): does the strategy beat buy-and-hold by more
  than ``N`` tries without skill would? The verdict uses this one.

The deflated Sharpe ratio (Bailey and López de Prado 2014, "The deflated Sharpe ratio:
correcting for selection bias, backtest overfitting and non-normality", Journal of
Portfolio Management 40(5), eqs. 1-2)::

    DSR = Phi( (SR - SR0) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2) )
    SR0 = sqrt(V) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e)))

with ``SR`` the per-candle (not annualised) Sharpe ratio, ``T`` the candles, ``g3`` and
``g4`` the returns' skewness and kurtosis (3 for a normal law), ``gamma`` the
Euler-Mascheroni constant, ``N`` the trials (the model strategies scored times the
settings tried, ``settings_tried``), and ``V`` the variance of the trials' Sharpe ratios.
``SR0`` is the expected maximum of ``N`` Sharpe ratios without skill, so ``DSR`` is the
probability that the true Sharpe ratio is above 0 after picking the best of ``N``
(``N = 1``: ``SR0 = 0``, the probabilistic Sharpe ratio). Assumptions: returns are
independent over time (skewness and fat tails allowed, serial correlation not); the trials'
estimated Sharpe ratios are roughly normal. ``V`` is the variance across the strategies
scored here, but never below ``1 / (T - 1)``, the variance of one Sharpe estimate
without skill: the strategies of one run are correlated (they trade the same candles),
and settings tried earlier are not seen, so the observed spread can understate the
selection; the floor keeps the test conservative (a true null is rejected at most about
as often as ``alpha``; checked by Monte Carlo in the tests).

Scoring uses the primary seed's forecasts of a model run with several seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from forecasting.errors import ConfigurationError, InsufficientHistory, InvalidSymbol
from forecasting.evaluation.walkforward import Backtest
from forecasting.ohlcv import infer_calendar, infer_timeframe, timeframe_seconds
from forecasting.ranges import Range, shown

__all__ = [
    "BASELINES",
    "BUY_AND_HOLD",
    "METRICS",
    "POSITION_COLUMNS",
    "StrategyResult",
    "StrategySettings",
    "StrategyVerdict",
    "breakeven_cost_bps",
    "deflated_sharpe_pvalue",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "periods_per_year",
    "position_size",
    "run_strategy",
    "strategy_metrics",
    "taker_fee_bps",
    "target_position",
    "with_baselines",
]

BUY_AND_HOLD = "buy_and_hold"
# Models whose strategies are the floor any forecast must clear, always scored beside the
# models (forecast on the backtest's own folds when the comparison did not include them).
BASELINES: tuple[str, ...] = ("naive", "drift")
POSITION_COLUMNS = ["timestamp", "model", "signal_origin", "position", "fee", "return", "equity"]
METRICS = [
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "hit_rate",
    "turnover",
    "trades",
    "time_in_market",
    "breakeven_fee_bps",
    "deflated_sharpe_pvalue",
    "excess_pvalue",
]
EULER_GAMMA = 0.5772156649015329
# The breakeven search stops at a cost of 100 % per side.
_MAX_COST_BPS = 10_000.0
_NORMAL = NormalDist()


@dataclass(frozen=True)
class StrategySettings:
    """How forecasts become positions, and what trading costs (see the module docs).

    Parameters
    ----------
    horizon
        Candles ahead whose forecast makes the signal; ``None``: the backtest's stride
        (the position is held until the next origin), at most its horizon.
    threshold
        How far the forecast return must be from 0 to take a position, in ``threshold_unit``.
    threshold_unit
        ``"fees"``: multiples of the round-trip cost ``2 x (fee_bps + slippage_bps)``;
        ``"bps"``: basis points of return.
    allow_short
        Go short when the forecast return is below minus the threshold (else flat).
    fee_bps, slippage_bps
        Cost per side, in basis points of the amount traded, charged on every change of
        position. ``fee_bps`` defaults to 10 (Binance's spot taker fee); see
        :func:`taker_fee_bps` for the exchange's own.
    entry
        ``"close"``: enter at the close of the origin; ``"next_open"``: at the next open.
    sizing
        ``"fixed"``: every position is ``fraction``; ``"vol_target"``: ``fraction`` scaled
        down to an annualised volatility of ``vol_target``.
    fraction
        Largest position, as a share of equity (1 is all of it).
    vol_target, vol_lookback
        Annualised volatility aimed at, and the candles of returns it is measured over.
    """

    horizon: int | None = None
    threshold: float = 1.0
    threshold_unit: str = "fees"
    allow_short: bool = False
    fee_bps: float = 10.0
    slippage_bps: float = 0.0
    entry: str = "close"
    sizing: str = "fixed"
    fraction: float = 1.0
    vol_target: float = 0.4
    vol_lookback: int = 30

    parameter_ranges: ClassVar[dict[str, Range]] = {
        "horizon": Range(1, 365, integer=True, optional=True),
        "threshold": Range(0, 1000),
        "threshold_unit": Range(choices=("fees", "bps")),
        "allow_short": Range(choices=(False, True)),
        # 10 % per side is already far beyond any exchange's fee.
        "fee_bps": Range(0, 1000),
        "slippage_bps": Range(0, 1000),
        "entry": Range(choices=("close", "next_open")),
        "sizing": Range(choices=("fixed", "vol_target")),
        "fraction": Range(0, 1, lo_open=True),
        "vol_target": Range(0, 10, lo_open=True),
        "vol_lookback": Range(2, 1000, integer=True),
    }

    def __post_init__(self) -> None:
        for name, declared in self.parameter_ranges.items():
            declared.check(getattr(self, name), name, "Strategy")

    @property
    def cost(self) -> float:
        """Cost per side as a fraction of the amount traded."""
        return (float(self.fee_bps) + float(self.slippage_bps)) / 10_000

    @property
    def threshold_return(self) -> float:
        """The threshold as a return (0.002 is 0.2 %)."""
        if self.threshold_unit == "bps":
            return float(self.threshold) / 10_000
        return float(self.threshold) * 2 * self.cost

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return asdict(self)


@dataclass(frozen=True)
class StrategyVerdict:
    """Does any model's strategy beat buy-and-hold after costs, significantly?

    Attributes
    ----------
    best
        The model strategy with the highest total return (``None`` without any); naive's
        and drift's strategies are judged only when no other model was traded.
    beats
        Models whose total return after costs is above buy-and-hold's.
    significant
        Those of ``beats`` whose ``excess_pvalue`` is below ``alpha``.
    trials
        ``N`` of the deflated Sharpe ratio.
    alpha
        The test's level.
    sentence
        The verdict in plain words.
    """

    best: str | None
    beats: tuple[str, ...]
    significant: tuple[str, ...]
    trials: int
    alpha: float
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "best": self.best,
            "beats": list(self.beats),
            "significant": list(self.significant),
            "trials": self.trials,
            "alpha": self.alpha,
            "test": (
                "deflated Sharpe ratio (Bailey and López de Prado 2014) of the returns in "
                f"excess of buy-and-hold, {self.trials} trials, one-sided"
            ),
            "sentence": self.sentence,
        }


@dataclass
class StrategyResult:
    """Positions, equity and metrics of every strategy, and the verdict.

    Attributes
    ----------
    settings
        The rule and costs.
    horizon
        The signal's horizon actually used.
    positions
        :data:`POSITION_COLUMNS`, one row per strategy (buy-and-hold as
        :data:`BUY_AND_HOLD`) and candle held, strategy by strategy in time order.
    metrics
        One row per strategy (buy-and-hold last), :data:`METRICS` columns.
    verdict
        The plain answer.
    trials
        ``N`` of the deflated Sharpe ratio.
    periods_per_year
        ``P`` of the annualisation.
    notes
        What the reader must know about these numbers.
    """

    settings: StrategySettings
    horizon: int
    positions: pd.DataFrame
    metrics: pd.DataFrame
    verdict: StrategyVerdict
    trials: int
    periods_per_year: float
    notes: list[str] = field(default_factory=list)
    start: pd.Timestamp | None = None
    """The first origin: where every equity curve starts at 1."""

    @property
    def strategies(self) -> list[str]:
        """Strategy names in order (models, then buy-and-hold)."""
        return list(self.metrics.index)

    def equity_curves(self) -> pd.DataFrame:
        """Equity by timestamp (rows) and strategy (columns), 1 at the first origin."""
        wide = self.positions.pivot(index="timestamp", columns="model", values="equity")
        wide = wide[self.strategies]
        if self.start is not None:
            first = pd.DataFrame(1.0, index=pd.DatetimeIndex([self.start]), columns=wide.columns)
            wide = pd.concat([first, wide])
        wide.index.name = "timestamp"
        wide.columns.name = None
        return wide

    def drawdown_curves(self) -> pd.DataFrame:
        """``1 - equity / running peak``, shaped as :meth:`equity_curves` (0 at a peak)."""
        equity = self.equity_curves()
        return 1.0 - equity / equity.cummax()

    def positions_table(self) -> pd.DataFrame:
        """The positions CSV: timestamps as ISO-8601 UTC text (``signal_origin`` may be empty)."""
        table = self.positions.copy()
        for column in ("timestamp", "signal_origin"):
            table[column] = table[column].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        return table

    def to_json(self) -> dict[str, Any]:
        """``{"settings", "horizon", "periods_per_year", "trials", "strategies": {name:
        {metric: value}}, "verdict", "notes"}``; NaN and infinities as ``None`` (a note
        names each strategy whose break-even fee is unbounded)."""
        strategies = {
            name: {key: _json_number(value) for key, value in row.items()}
            for name, row in self.metrics.to_dict(orient="index").items()
        }
        return {
            "settings": self.settings.to_dict(),
            "horizon": self.horizon,
            "periods_per_year": self.periods_per_year,
            "trials": self.trials,
            "strategies": strategies,
            "verdict": self.verdict.to_dict(),
            "notes": [*self.notes, *self._unbounded_notes()],
        }

    def _unbounded_notes(self) -> list[str]:
        """JSON has no infinity: say which ``null`` break-even fees are unbounded (the
        others are undefined, as buy-and-hold's against itself)."""
        if "breakeven_fee_bps" not in self.metrics:
            return []
        column = self.metrics["breakeven_fee_bps"]
        unbounded = [str(name) for name, value in column.items() if value == math.inf]
        if not unbounded:
            return []
        return [
            f"breakeven_fee_bps is null for {', '.join(unbounded)} because it is unbounded: "
            "the strategy stays ahead of buy-and-hold at any cost up to 100 % per side "
            "(a strategy that never trades pays no fee)."
        ]


def _json_number(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def periods_per_year(index: pd.DatetimeIndex) -> float:
    """Candles in a year: 365 x candles per day, or 252 for daily candles with no weekends."""
    timeframe = infer_timeframe(index)
    if infer_calendar(index, timeframe) == "business":
        return 252.0
    return 365.0 * 86_400 / timeframe_seconds(timeframe)


def taker_fee_bps(exchange: Any, symbol: str, *, retry: Any = None) -> float | None:
    """The exchange's taker fee for ``symbol`` in basis points, from ccxt's market data.

    Reads ``exchange.markets[symbol]["taker"]`` (a fraction, 0.001 is 10 bp), loading
    the markets first if the client has none (one request or a few, with retries).
    ``None`` when ccxt does not know the fee. Volume tiers and discounts are not seen:
    it is the exchange's published base rate.

    Raises
    ------
    InvalidSymbol
        When the exchange does not list ``symbol``.
    DataUnavailable
        When the market list could not be loaded.
    """
    from forecasting.data.exchange import list_symbols, suggest_symbols

    if not exchange.markets:
        list_symbols(exchange, retry=retry)
    markets = exchange.markets or {}
    market = markets.get(symbol)
    if market is None:
        suggestions = suggest_symbols(symbol, sorted(markets))
        hint = f" Did you mean {', '.join(suggestions)}?" if suggestions else ""
        raise InvalidSymbol(f"{exchange.id} does not list {symbol}.{hint}", suggestions)
    taker = market.get("taker")
    if taker is None:
        return None
    try:
        value = float(taker) * 10_000
    except (TypeError, ValueError):
        return None
    return round(value, 6) if math.isfinite(value) and value >= 0 else None


# --- statistics ------------------------------------------------------------------------


def expected_max_sharpe(trials: int, variance: float) -> float:
    """``SR0``: the expected largest of ``trials`` Sharpe ratios without skill whose
    estimates have this variance (Bailey and López de Prado 2014, eq. 2; 0 for one trial)."""
    if trials <= 1:
        return 0.0
    n = float(trials)
    return math.sqrt(variance) * (
        (1 - EULER_GAMMA) * _NORMAL.inv_cdf(1 - 1 / n)
        + EULER_GAMMA * _NORMAL.inv_cdf(1 - 1 / (n * math.e))
    )


def _moments(returns: np.ndarray) -> tuple[float, float, float]:
    """Per-candle Sharpe ratio (sample std), skewness and kurtosis (population moments)."""
    mean = float(returns.mean())
    centred = returns - mean
    m2 = float(np.mean(centred**2))
    sd = float(returns.std(ddof=1)) if returns.size > 1 else float("nan")
    if not m2 > 0 or not sd > 0:
        return float("nan"), float("nan"), float("nan")
    skew = float(np.mean(centred**3)) / m2**1.5
    kurt = float(np.mean(centred**4)) / m2**2
    return mean / sd, skew, kurt


def deflated_sharpe_pvalue(
    returns: Sequence[float] | np.ndarray,
    trials: int = 1,
    variance: float | None = None,
) -> float:
    """``1 - DSR``: the deflated Sharpe ratio's p-value for these per-candle returns.

    Parameters
    ----------
    returns
        The selected strategy's returns, one per candle.
    trials
        ``N``, the strategies and settings tried (see the module docs).
    variance
        Variance of the trials' per-candle Sharpe ratios; raised to ``1 / (T - 1)`` at
        least. ``None``: ``1 / (T - 1)``.

    Returns
    -------
    float
        Small when the Sharpe ratio is above what the best of ``N`` tries without skill
        would show; NaN with fewer than 3 returns or returns that never vary.
    """
    r = np.asarray(returns, dtype="float64")
    r = r[np.isfinite(r)]
    t = r.size
    if t < 3:
        return float("nan")
    sharpe, skew, kurt = _moments(r)
    if not math.isfinite(sharpe):
        return float("nan")
    floor = 1.0 / (t - 1)
    variance = floor if variance is None or not math.isfinite(variance) else max(variance, floor)
    return 1.0 - deflated_sharpe_ratio(sharpe, trials, variance, t, skew, kurt)


def deflated_sharpe_ratio(
    sharpe: float,
    trials: int,
    variance: float,
    observations: int,
    skewness: float = 0.0,
    kurtosis: float = 3.0,
) -> float:
    """The deflated Sharpe ratio from its inputs (Bailey and López de Prado 2014, eq. 2).

    Parameters
    ----------
    sharpe
        The per-candle Sharpe ratio of the selected strategy.
    trials
        ``N``, the strategies and settings tried.
    variance
        Variance of the trials' per-candle Sharpe ratios.
    observations
        ``T``, the returns the Sharpe ratio was estimated on.
    skewness, kurtosis
        Of those returns (kurtosis 3 for a normal law).

    Returns
    -------
    float
        The probability that the true Sharpe ratio is above 0 given the best of ``N``
        tries; NaN where the formula is undefined.
    """
    sr0 = expected_max_sharpe(int(trials), variance)
    spread = 1 - skewness * sharpe + (kurtosis - 1) / 4 * sharpe**2
    if not spread > 0 or observations < 2 or not math.isfinite(sharpe):
        return float("nan")
    z = (sharpe - sr0) * math.sqrt(observations - 1) / math.sqrt(spread)
    return float(_NORMAL.cdf(z))


def _equity_at_cost(gross: np.ndarray, moves: np.ndarray, cost: float) -> float:
    return float(np.prod(1 + gross - cost * moves))


def breakeven_cost_bps(
    gross: np.ndarray,
    moves: np.ndarray,
    benchmark_gross: np.ndarray,
    benchmark_moves: np.ndarray,
) -> float:
    """The per-side cost in bp at which the strategy's total return falls to the benchmark's.

    ``gross`` are the returns before costs and ``moves`` the ``|change of position|`` per
    candle, for the strategy and the benchmark. 0 when the strategy is not ahead without
    costs; ``inf`` when it stays ahead up to 100 % per side.
    """

    def ahead(bps: float) -> float:
        cost = bps / 10_000
        return _equity_at_cost(gross, moves, cost) - _equity_at_cost(
            benchmark_gross, benchmark_moves, cost
        )

    if not ahead(0.0) > 0:
        return 0.0
    low = 0.0
    high = 0.25
    while ahead(high) > 0:  # the first cost where it is no longer ahead, on a doubling scan
        low = high
        high *= 2
        if high > _MAX_COST_BPS:
            return float("inf")
    for _ in range(60):
        middle = (low + high) / 2
        if ahead(middle) > 0:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def strategy_metrics(
    returns: np.ndarray,
    positions: np.ndarray,
    fees: np.ndarray,
    periods: float,
    entry: str = "close",
) -> dict[str, float]:
    """The metrics that need only one strategy's rows (see the module docs).

    ``positions`` are the positions held over each candle (the one before the first is
    0), ``fees`` the fee of each candle, ``periods`` the candles per year. A candle is in
    the market (hit rate, time in market) when any part of it is held: with
    ``entry="next_open"`` the candle of an exit holds the old position until its open.
    """
    r = np.asarray(returns, dtype="float64")
    pos = np.asarray(positions, dtype="float64")
    n = r.size
    nan = float("nan")
    if n == 0:
        return dict.fromkeys(METRICS[:10], nan)
    equity = np.cumprod(1 + r)
    final = float(equity[-1])
    years = n / periods
    cagr = final ** (1 / years) - 1 if final > 0 else -1.0
    sd = float(r.std(ddof=1)) if n > 1 else nan
    mean = float(r.mean())
    sharpe = mean / sd * math.sqrt(periods) if sd > 0 else nan
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    sortino = mean / downside * math.sqrt(periods) if downside > 0 else nan
    peaks = np.maximum.accumulate(np.r_[1.0, equity])
    drawdown = float(np.max(1 - np.r_[1.0, equity] / peaks))
    held = pos != 0
    if entry == "next_open":
        held |= np.r_[0.0, pos[:-1]] != 0
    moves = np.abs(np.diff(np.r_[0.0, pos]))
    return {
        "total_return": final - 1,
        "cagr": float(cagr),
        "volatility": sd * math.sqrt(periods) if sd == sd else nan,
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown": drawdown,
        "hit_rate": float(np.mean(r[held] > 0)) if held.any() else nan,
        "turnover": float(moves.sum()) / years,
        "trades": int(np.count_nonzero(moves)),
        "time_in_market": float(np.mean(held)),
    }


# --- the backtest ----------------------------------------------------------------------


def _signals(
    rows: pd.DataFrame,
    horizon: int,
    settings: StrategySettings,
    index: pd.DatetimeIndex,
    log_close: np.ndarray,
    periods: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per origin with a step-``horizon`` forecast: its candle position and its target
    position, sorted by origin."""
    chosen = rows[rows["step"] == horizon]
    origins = index.get_indexer(pd.DatetimeIndex(chosen["origin"]))
    forecast = chosen["yhat"].to_numpy(dtype="float64") / chosen["y_origin"].to_numpy(
        dtype="float64"
    )
    size = np.array(
        [position_size(log_close[: origin + 1], settings, periods) for origin in origins]
    )
    target = target_position(forecast - 1, settings, size)
    order = np.argsort(origins, kind="stable")
    return origins[order], target[order]


def position_size(log_close: np.ndarray, settings: StrategySettings, periods: float) -> float:
    """The size of a position decided at an origin (see the module docs' sizing).

    Parameters
    ----------
    log_close
        Log closes up to and including the origin's (nothing later); only the last
        ``vol_lookback + 1`` are read, and only with ``sizing="vol_target"``.
    settings
        The rule.
    periods
        Candles per year (:func:`periods_per_year`).
    """
    fraction = float(settings.fraction)
    if settings.sizing != "vol_target":
        return fraction
    lookback = int(settings.vol_lookback)
    window = np.diff(np.asarray(log_close, dtype="float64")[-(lookback + 1) :])
    sigma = float(window.std(ddof=1)) * math.sqrt(periods) if window.size > 1 else 0.0
    return min(fraction, float(settings.vol_target) / sigma) if sigma > 0 else fraction


def target_position(
    forecast_return: float | np.ndarray,
    settings: StrategySettings,
    size: float | np.ndarray | None = None,
) -> float | np.ndarray:
    """The rule: the target position for a forecast return (see the module docs).

    ``+size`` above the threshold, ``-size`` below minus it when shorts are allowed,
    otherwise (and without a finite forecast) flat. The one rule of the backtest and of
    the NautilusTrader hand-off's strategy.

    Parameters
    ----------
    forecast_return
        ``yhat[t + k] / close[t] - 1``, one value or an array of them.
    settings
        The threshold and whether to go short.
    size
        The position's size (default ``settings.fraction``; see :func:`position_size`).

    Returns
    -------
    float or numpy.ndarray
        Shaped as ``forecast_return``, as a share of equity.
    """
    expected = np.asarray(forecast_return, dtype="float64")
    threshold = settings.threshold_return
    side = np.where(expected > threshold, 1.0, 0.0)
    if settings.allow_short:
        side = np.where(expected < -threshold, -1.0, side)
    side = np.where(np.isfinite(expected), side, 0.0)  # no forecast, no position
    target = side * (float(settings.fraction) if size is None else np.asarray(size, "float64"))
    return float(target) if target.ndim == 0 else target


def _held(
    origins: np.ndarray, targets: np.ndarray, candles_held: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each candle held: the index of the last origin before it (-1: none), the position."""
    which = np.searchsorted(origins, candles_held, side="left") - 1
    if not len(origins):
        return which, np.zeros(len(candles_held))
    return which, np.where(which >= 0, targets[np.maximum(which, 0)], 0.0)


def _gross(
    position: np.ndarray, span: np.ndarray, close: np.ndarray, open_: np.ndarray, entry: str
) -> np.ndarray:
    """Each candle's return before costs (see the module docs for ``next_open``)."""
    previous_close = close[span - 1]
    gross = position * (close[span] / previous_close - 1)
    if entry == "next_open":
        before = np.r_[0.0, position[:-1]]
        changed = position != before
        split = before * (open_[span] / previous_close - 1) + position * (
            close[span] / open_[span] - 1
        )
        gross = np.where(changed, split, gross)
    return gross


def with_baselines(backtest: Backtest, candles: pd.DataFrame) -> tuple[Backtest, list[str]]:
    """The backtest with naive's and drift's forecasts, made where it lacks them.

    The missing baselines are run by :func:`~forecasting.evaluation.walk_forward` on the
    backtest's layout (``backtest.settings``: the same folds) and kept on the backtest's
    own (origin, target) pairs only, so every strategy trades the same origins.

    Returns
    -------
    (backtest, added)
        A new :class:`Backtest` (the given one when nothing was missing) and the names
        of the baselines added, in :data:`BASELINES` order.

    Raises
    ------
    ConfigurationError
        When the candles do not hold the backtest's pairs (not the candles it ran on).
    """
    from dataclasses import replace

    from forecasting.evaluation.walkforward import walk_forward
    from forecasting.models import make_model

    missing = [name for name in BASELINES if name not in backtest.models]
    if not missing:
        return backtest, []
    made = walk_forward({name: make_model(name) for name in missing}, candles, backtest.settings)
    keys = ["origin", "timestamp"]
    pairs = backtest.forecasts[keys].drop_duplicates()
    rows = made.forecasts.merge(pairs, on=keys, how="inner")
    for name in missing:
        if len(rows[rows["model"] == name]) != len(pairs):
            raise ConfigurationError(
                "The candles do not hold every origin and target of the backtest: pass "
                "the candles the backtest ran on."
            )
    forecasts = pd.concat([backtest.forecasts, rows[backtest.forecasts.columns]], ignore_index=True)
    levels = {**backtest.levels, **{name: None for name in missing}}
    notes = {**backtest.notes, **{n: made.notes[n] for n in missing if n in made.notes}}
    seeds = {**backtest.model_seeds, **{name: None for name in missing}}
    return (
        replace(backtest, forecasts=forecasts, levels=levels, notes=notes, model_seeds=seeds),
        missing,
    )


def run_strategy(
    backtest: Backtest,
    candles: pd.DataFrame,
    settings: StrategySettings | None = None,
    *,
    models: Sequence[str] | None = None,
    settings_tried: int = 1,
    alpha: float = 0.05,
) -> StrategyResult:
    """Trade every model's walk-forward forecasts and score them beside buy-and-hold.

    Parameters
    ----------
    backtest
        The walk-forward forecasts (``run_experiment(...).backtest``).
    candles
        The candles the backtest ran on (``ExperimentResult.candles``).
    settings
        The rule and costs.
    models
        Models to trade (default: every model in the backtest). Naive and drift are
        always added: when the backtest lacks one, its forecasts are made on the
        backtest's own folds and (origin, target) pairs (:func:`with_baselines`).
    settings_tried
        How many strategy settings were tried before these (the page and the command line
        count the distinct settings run on these forecasts): ``N`` of the deflated Sharpe
        ratio is the model strategies times this.
    alpha
        The significance level of the verdict.

    Raises
    ------
    ConfigurationError
        For a horizon beyond the backtest's, an unknown model, or candles that do not
        hold the backtest's origins.
    InsufficientHistory
        When the backtest has no forecasts to trade.
    """
    settings = settings or StrategySettings()
    if backtest.forecasts.empty:
        raise InsufficientHistory("The backtest has no forecasts to trade on.")
    backtest, added = with_baselines(backtest, candles)
    forecasts = backtest.forecasts
    if isinstance(settings_tried, bool) or not isinstance(settings_tried, int | np.integer):
        raise ConfigurationError(
            f"settings_tried must be a whole number, got {shown(settings_tried)}."
        )
    if settings_tried < 1:
        raise ConfigurationError(f"settings_tried must be at least 1, got {settings_tried}.")
    max_horizon = int(forecasts["step"].max())
    if settings.horizon is None:
        horizon = min(max(int(backtest.settings.stride), 1), max_horizon)
    else:
        horizon = int(settings.horizon)
        if horizon > max_horizon:
            raise ConfigurationError(
                f"The strategy's horizon {horizon} is beyond the backtest's forecasts "
                f"({max_horizon} candles ahead). Choose at most {max_horizon}."
            )
    available = backtest.models
    chosen = list(available) if models is None else list(dict.fromkeys(models))
    unknown = [m for m in chosen if m not in available]
    if unknown:
        raise ConfigurationError(
            f"No forecasts of {', '.join(unknown)} in the backtest; it has {', '.join(available)}."
        )
    chosen += [m for m in BASELINES if m in available and m not in chosen]
    chosen = [m for m in available if m in chosen]  # the backtest's order

    index = pd.DatetimeIndex(candles.index)
    origin_at = index.get_indexer(pd.DatetimeIndex(forecasts["origin"]))
    target_at = index.get_indexer(pd.DatetimeIndex(forecasts["timestamp"]))
    if (origin_at < 0).any() or (target_at < 0).any():
        raise ConfigurationError(
            "The candles do not hold every origin and target of the backtest: pass the "
            "candles the backtest ran on."
        )
    close = candles["close"].to_numpy(dtype="float64")
    open_ = candles["open"].to_numpy(dtype="float64")
    periods = periods_per_year(index)
    first, last = int(origin_at.min()), int(target_at.max())
    span = np.arange(first + 1, last + 1)
    stamps = index[span]
    log_close = np.log(close)
    cost = settings.cost

    frames: list[pd.DataFrame] = []
    gross_of: dict[str, np.ndarray] = {}
    moves_of: dict[str, np.ndarray] = {}
    returns_of: dict[str, np.ndarray] = {}
    rows_of: dict[str, dict[str, float]] = {}

    def add(name: str, position: np.ndarray, signal_origin: pd.DatetimeIndex) -> None:
        gross = _gross(position, span, close, open_, settings.entry)
        moves = np.abs(np.diff(np.r_[0.0, position]))
        fee = moves * cost
        returns = gross - fee + 0.0  # no negative zeros in the table
        gross_of[name], moves_of[name], returns_of[name] = gross, moves, returns
        frames.append(
            pd.DataFrame(
                {
                    "timestamp": stamps,
                    "model": name,
                    "signal_origin": signal_origin,
                    "position": position,
                    "fee": fee,
                    "return": returns,
                    "equity": np.cumprod(1 + returns),
                }
            )
        )
        rows_of[name] = strategy_metrics(returns, position, fee, periods, settings.entry)

    for model in chosen:
        rows = forecasts[forecasts["model"] == model]
        origins, targets = _signals(rows, horizon, settings, index, log_close, periods)
        which, position = _held(origins, targets, span)
        signal = (
            index[origins[np.maximum(which, 0)]] if len(origins) else index[[first] * len(span)]
        )
        add(model, position, signal.where(which >= 0, pd.NaT))
    add(BUY_AND_HOLD, np.ones(len(span)), pd.DatetimeIndex([index[first]] * len(span)))

    trials = len(chosen) * int(settings_tried)
    benchmark = returns_of[BUY_AND_HOLD]
    sharpe_var = _trial_variance([returns_of[m] for m in chosen])
    excess_var = _trial_variance([returns_of[m] - benchmark for m in chosen])
    for model in chosen:
        rows_of[model]["breakeven_fee_bps"] = breakeven_cost_bps(
            gross_of[model], moves_of[model], gross_of[BUY_AND_HOLD], moves_of[BUY_AND_HOLD]
        )
        rows_of[model]["deflated_sharpe_pvalue"] = deflated_sharpe_pvalue(
            returns_of[model], trials, sharpe_var
        )
        rows_of[model]["excess_pvalue"] = deflated_sharpe_pvalue(
            returns_of[model] - benchmark, trials, excess_var
        )
    rows_of[BUY_AND_HOLD]["breakeven_fee_bps"] = float("nan")
    rows_of[BUY_AND_HOLD]["deflated_sharpe_pvalue"] = deflated_sharpe_pvalue(benchmark, 1)
    rows_of[BUY_AND_HOLD]["excess_pvalue"] = float("nan")

    metrics = pd.DataFrame.from_dict(rows_of, orient="index")[METRICS]
    metrics["trades"] = metrics["trades"].astype("int64")
    metrics.index.name = "strategy"
    positions = pd.concat(frames, ignore_index=True)[POSITION_COLUMNS]
    verdict = _verdict(metrics, chosen, trials, alpha)
    notes = _notes(backtest, chosen, horizon, settings)
    if added:
        notes.append(
            f"{' and '.join(added)} {'was' if len(added) == 1 else 'were'} not in the "
            "comparison: forecast for the strategy on the same folds and (origin, target) "
            "pairs, so every model is traded beside the naive and drift strategies."
        )
    return StrategyResult(
        settings=settings,
        horizon=horizon,
        positions=positions,
        metrics=metrics,
        verdict=verdict,
        trials=trials,
        periods_per_year=periods,
        notes=notes,
        start=index[first],
    )


def _trial_variance(series: list[np.ndarray]) -> float | None:
    """Variance of the trials' per-candle Sharpe ratios (those that are defined)."""
    sharpes = [s for s in (_moments(np.asarray(r))[0] for r in series) if math.isfinite(s)]
    return float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else None


def _percent(value: float) -> str:
    return f"{value:+.1%}" if math.isfinite(value) else "undefined"


def _pvalue(value: float) -> str:
    if not math.isfinite(value):
        return "p undefined"
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


def _verdict(
    metrics: pd.DataFrame, models: list[str], trials: int, alpha: float
) -> StrategyVerdict:
    """The verdict on the forecasting models' strategies; naive's and drift's are the
    reference (a flat strategy beats buy-and-hold in any falling market, with no skill)."""
    hold = float(metrics.loc[BUY_AND_HOLD, "total_return"])
    totals = metrics["total_return"].astype("float64")
    judged = [m for m in models if m not in BASELINES] or list(models)
    baselines = [m for m in models if m in BASELINES and m not in judged]
    beats = tuple(m for m in judged if totals[m] > hold)
    significant = tuple(m for m in beats if metrics.loc[m, "excess_pvalue"] < alpha)
    scored = totals[judged].dropna()
    best = str(scored.idxmax()) if len(scored) else None
    tried = f"{trials} strateg{'y' if trials == 1 else 'ies'} tried"
    reference = ""
    if baselines:
        returned = " and ".join(_percent(totals[m]) for m in baselines)
        reference = (
            f" On the {' and '.join(baselines)} forecasts the same rule returned {returned}."
        )
    if best is None:
        sentence = "No model's strategy could be scored."
    elif significant:
        top = max(significant, key=lambda m: totals[m])
        p = float(metrics.loc[top, "excess_pvalue"])
        others = [m for m in significant if m != top]
        also = f"; so did {', '.join(others)}'s" if others else ""
        sentence = (
            f"{top}'s strategy beat buy-and-hold after costs: {_percent(totals[top])} against "
            f"{_percent(hold)} ({_pvalue(p)} by the deflated Sharpe ratio of its excess "
            f"return, {tried}){also}."
        )
    elif beats:
        top = max(beats, key=lambda m: totals[m])
        p = float(metrics.loc[top, "excess_pvalue"])
        sentence = (
            f"{top}'s strategy returned more than buy-and-hold after costs "
            f"({_percent(totals[top])} against {_percent(hold)}), but not significantly "
            f"({_pvalue(p)} by the deflated Sharpe ratio of its excess return, {tried}): "
            "luck alone gives as much."
        )
    else:
        sentence = (
            f"No model's strategy beat buy-and-hold after costs: the best, {best}'s, returned "
            f"{_percent(totals[best])} against buy-and-hold's {_percent(hold)}."
        )
    return StrategyVerdict(best, beats, significant, trials, alpha, sentence + reference)


def _notes(
    backtest: Backtest, models: list[str], horizon: int, settings: StrategySettings
) -> list[str]:
    out = []
    stride = int(backtest.settings.stride)
    if horizon != stride:
        out.append(
            f"The signal uses the {horizon}-candle forecast while origins are {stride} "
            "candles apart: each position is held until the next origin regardless."
        )
    seeded = [m for m in models if backtest.seed_forecasts.get(m)]
    if seeded:
        out.append(
            f"{', '.join(seeded)}: traded on the first seed's forecasts only; other seeds "
            "would give other positions."
        )
    if settings.threshold_unit == "fees" and settings.cost == 0:
        out.append("With no costs the threshold is 0: any forecast rise is a long signal.")
    return out
