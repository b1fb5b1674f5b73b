"""The hand-off to NautilusTrader: a small project that replays a model's strategy there.

:func:`write_project` writes a folder that NautilusTrader's ``BacktestEngine`` can run on its
own; :func:`run_project` runs it in the engines environment (a separate venv with Python 3.12
or newer, made by ``make engines``) as a subprocess and returns its result. This module never
imports NautilusTrader: it needs a newer Python than the app and about 450 MB when imported.

The project::

    README.md        what the files are, how to run it, and what replaces the signals later
    bars.csv         the candles as bars stamped at their close (open time + timeframe)
    instrument.json  the instrument, the venue (fees, account) and the strategy's settings
    signals.csv      the target position decided at each bar's close (our walk-forward)
    run.py           the Strategy and the BacktestEngine; prints {"final_equity", "trades"}
    folds.json       with the models: each fold's cutoff, origins and model file, the step
                     whose forecast makes the signal, and the strategy's settings
    models/          with the models: ``fold-<k>-<cutoff>.keras`` (and its JSON), each
                     fold's model refitted exactly as the walk-forward fitted it

For a model that saves without pickling (the LSTM), the project carries each fold's model
and ``run.py``'s Strategy calls it at every origin bar with the candles received so far,
turning its forecast into a target position with :func:`~forecasting.strategy.
target_position`, the rule of our backtest; ``signals.csv`` stays as our reference, and
``run.py`` writes the positions it decided to ``reports/decided.csv``. ``run.py`` then
imports this repository's ``forecasting`` (its folder is recorded in ``instrument.json``),
so the engines environment holds the app's requirements too.

Conventions, the same as :mod:`forecasting.strategy`'s with ``entry="close"``: the target
decided at the close of candle ``t`` is ordered on the bar of ``t`` (stamped at that close)
and fills at that close; every change of position pays ``fee_bps + slippage_bps`` per side,
as the venue's taker fee on the notional traded. ``final_equity`` is the account's value at
the close of the last scored candle (an open position marked there, no exit fee) divided by
the starting balance, so it reads like our equity curve, which starts at 1.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecasting.errors import ConfigurationError, EngineFailed, ModelFailed
from forecasting.ohlcv import infer_timeframe, timeframe_seconds
from forecasting.strategy import StrategySettings, periods_per_year, run_strategy

__all__ = [
    "ENGINES_PYTHON_ENV",
    "FOLDS_FILE",
    "MODELS_DIR",
    "PROJECT_FILES",
    "REFIT_TOLERANCE",
    "STARTING_BALANCE",
    "check_replayable",
    "engines_python",
    "run_project",
    "saves_models",
    "write_project",
]

ENGINES_PYTHON_ENV = "CFL_ENGINES_PYTHON"
ENGINES_VENV = ".venv-engines"
PROJECT_FILES = ("README.md", "bars.csv", "instrument.json", "signals.csv", "run.py")
# Large, so that rounding the traded quantity to the size increment costs nothing visible.
STARTING_BALANCE = 1_000_000.0
SIZE_PRECISION = 8
# Seconds for a NautilusTrader run before it is stopped (3000 daily candles take seconds).
RUN_TIMEOUT = 600.0
_STDERR_LINES = 3
_STDERR_CHARS = 400
_ISO = "%Y-%m-%dT%H:%M:%SZ"
FOLDS_FILE = "folds.json"
MODELS_DIR = "models"
# Largest relative difference allowed between a refitted fold model's forecast and the
# backtest's: the refit is deterministic (same seed, same candles, deterministic kernels),
# so anything beyond rounding means the project would trade a different model.
REFIT_TOLERANCE = 1e-9


def saves_models(model: Any) -> bool:
    """Whether the hand-off can carry this model's fits: it saves and loads without
    pickling (its own ``save`` and ``load``, the LSTM) and reads new candles at each
    origin without a refit."""
    return (
        callable(getattr(model, "save", None))
        and callable(getattr(type(model), "load", None))
        and bool(model.capabilities.conditions_on_history)
    )


def check_replayable(settings: StrategySettings) -> None:
    """Refuse, in one line, strategy settings the hand-off cannot replay: entry at the
    next open (it trades at the signal candle's close) and shorts (a cash account).

    Raises
    ------
    ConfigurationError
        For ``entry="next_open"`` or ``allow_short=True``.
    """
    if settings.entry != "close":
        raise ConfigurationError(
            "The NautilusTrader hand-off trades at the close of the signal's candle: use "
            f'entry "close" (--entry close), not {settings.entry!r}.'
        )
    if settings.allow_short:
        raise ConfigurationError(
            "The NautilusTrader hand-off uses a cash account, which cannot go short: "
            "run it without --allow-short."
        )


def write_project(
    result: Any,
    strategy_settings: StrategySettings | None,
    model: str,
    out_dir: str | Path,
    *,
    with_models: bool | None = None,
) -> Path:
    """Write a NautilusTrader project that trades ``model``'s walk-forward signals.

    Parameters
    ----------
    result
        The experiment (an :class:`~forecasting.experiment.ExperimentResult` with its
        candles, as ``run_experiment`` and a bundle give it).
    strategy_settings
        The rule and costs (default :class:`StrategySettings`); the hand-off supports
        ``entry="close"`` and long/flat positions (a cash account cannot go short).
    model
        The model whose forecasts make the signals.
    out_dir
        The project folder, created if needed; the files of :data:`PROJECT_FILES` in it
        are overwritten.
    with_models
        Carry each fold's fitted model (``models/``, ``folds.json``) and call it in the
        Strategy; ``None`` (default): whenever the model saves (:func:`saves_models`).
        Each fold's model is refitted as the walk-forward fitted it, and its forecasts
        at every origin of the fold are checked against the backtest's.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    ConfigurationError
        For an experiment without candles, a model it did not run, settings the hand-off
        cannot replay, or ``with_models=True`` for a model that does not save.
    ModelFailed
        When a refitted fold model does not forecast what the backtest's did (beyond
        :data:`REFIT_TOLERANCE`): the project would trade a different model.
    """
    settings = strategy_settings or StrategySettings()
    check_replayable(settings)
    candles = getattr(result, "candles", None)
    if candles is None or len(candles) == 0:
        raise ConfigurationError(
            "The experiment carries no candles to hand to NautilusTrader: rerun it, or use "
            "a bundle saved with its data."
        )
    strategy = run_strategy(result.backtest, candles, settings, models=[model])
    held = strategy.positions[strategy.positions["model"] == model]
    template = None
    if with_models is not False:
        built = getattr(getattr(result, "settings", None), "build_models", None)
        template = built().get(model) if built is not None else None
        if with_models is None and (template is None or not saves_models(template)):
            template = None
        elif template is None or not saves_models(template):
            raise ConfigurationError(
                f"{model} cannot be handed to NautilusTrader as a model (it does not save "
                "without pickling, or refits at every origin): hand off its signals instead."
            )

    index = pd.DatetimeIndex(candles.index)
    bar_seconds = timeframe_seconds(infer_timeframe(index))
    step = pd.Timedelta(seconds=bar_seconds)
    # The position held over candle u was decided at the close of the candle before it.
    at = index.get_indexer(pd.DatetimeIndex(held["timestamp"]))
    decided = index[at - 1] + step

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bars = candles[["open", "high", "low", "close", "volume"]].copy()
    bars.insert(0, "open_time", index.strftime(_ISO))
    bars.index = (index + step).strftime(_ISO)
    bars.index.name = "timestamp"
    bars.to_csv(out / "bars.csv")

    signals = pd.DataFrame(
        {
            "timestamp": decided.strftime(_ISO),
            "origin": pd.DatetimeIndex(held["signal_origin"]).strftime(_ISO),
            "position": held["position"].to_numpy(dtype="float64"),
        }
    )
    signals.to_csv(out / "signals.csv", index=False)

    source = dict(getattr(result, "data", None) or {})
    spec = _instrument(source, candles, settings, bar_seconds)
    spec["strategy"] = {
        "model": model,
        "signals": "signals.csv",
        "start": decided[0].strftime(_ISO),
        "end": (index[at[-1]] + step).strftime(_ISO),
        "fraction": float(settings.fraction),
        "threshold": float(settings.threshold),
        "threshold_unit": settings.threshold_unit,
        "horizon": int(strategy.horizon),
        "ours": {
            "final_equity": float(held["equity"].iloc[-1]),
            "trades": int(strategy.metrics.loc[model, "trades"]),
        },
    }
    if template is not None:
        spec["strategy"]["folds"] = FOLDS_FILE
        spec["repository"] = str(Path(__file__).resolve().parent.parent)
        folds = _write_models(result, template, model, settings, strategy.horizon, out)
        folds["periods_per_year"] = periods_per_year(index)
        folds["timeframe_seconds"] = bar_seconds
        (out / FOLDS_FILE).write_text(json.dumps(folds, indent=2) + "\n", encoding="utf-8")
    else:
        # A project rewritten without models must not leave an earlier run's behind.
        (out / FOLDS_FILE).unlink(missing_ok=True)
        for stale in (out / MODELS_DIR).glob("fold-*.keras*"):
            stale.unlink()
    (out / "instrument.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    (out / "run.py").write_text(RUN_PY, encoding="utf-8")
    (out / "README.md").write_text(_readme(spec), encoding="utf-8")
    return out


def _write_models(
    result: Any,
    template: Any,
    model: str,
    settings: StrategySettings,
    step: int,
    out: Path,
) -> dict[str, Any]:
    """Refit each fold's model as :func:`~forecasting.evaluation.walkforward.walk_forward`
    did, save it to ``models/``, check its forecasts against the backtest's, and return
    the ``folds.json`` document."""
    backtest, candles = result.backtest, result.candles
    index = pd.DatetimeIndex(candles.index)
    rows = backtest.forecasts[backtest.forecasts["model"] == model]
    folder = out / MODELS_DIR
    folder.mkdir(exist_ok=True)
    for old in folder.glob("fold-*.keras*"):
        old.unlink()
    step_length = pd.Timedelta(seconds=timeframe_seconds(infer_timeframe(index)))
    folds: list[dict[str, Any]] = []
    worst = 0.0
    for fold in backtest.folds:
        fold_rows = rows[rows["fold"] == fold.number]
        decided = fold_rows[fold_rows["step"] == step]
        if decided.empty:
            continue  # no origin of this fold makes a signal: no model needed
        # The walk-forward's fit: a clone of the model (same settings and seed) on the
        # candles from the fold's training start to its cutoff.
        fitted = template.clone().fit(candles.iloc[fold.train_start : fold.cutoff + 1])
        name = f"fold-{fold.number}-{index[fold.cutoff].strftime('%Y%m%dT%H%M%SZ')}.keras"
        fitted.save(folder / name)
        handed = type(fitted).load(folder / name)  # what run.py will call
        origins = []
        for origin, at_origin in fold_rows.groupby("origin", sort=True):
            at = int(index.get_loc(origin))
            steps = at_origin["step"].to_numpy()
            history = candles.iloc[fold.train_start : at + 1]
            forecast = handed.predict(int(steps.max()), history=history)
            got = np.asarray(forecast.mean, dtype="float64")[steps - 1]
            expected = at_origin["yhat"].to_numpy(dtype="float64")
            gap = _relative_difference(got, expected)
            worst = max(worst, gap)
            if gap > REFIT_TOLERANCE:
                raise ModelFailed(
                    f"{model}'s model refitted for fold {fold.number} does not forecast what "
                    f"the backtest did from {origin:%Y-%m-%d %H:%M} (relative difference "
                    f"{gap:.3g}, allowed {REFIT_TOLERANCE:g}): the refit is not reproducible "
                    "here, so no model was handed off; hand off the signals only "
                    "(with_models=False)."
                )
            if step in steps:
                origins.append(
                    {
                        "origin": origin.strftime(_ISO),
                        "bar": (origin + step_length).strftime(_ISO),
                        "steps": int(steps.max()),
                    }
                )
        folds.append(
            {
                "fold": fold.number,
                "cutoff": index[fold.cutoff].strftime(_ISO),
                "train_start": index[fold.train_start].strftime(_ISO),
                "model": f"{MODELS_DIR}/{name}",
                "origins": origins,
            }
        )
    return {
        "model": model,
        "alias": template.alias,
        "params": template.get_params(),
        "horizon": int(backtest.settings.horizon),
        "step": int(step),
        "window": backtest.settings.window,
        "strategy": settings.to_dict(),
        "refit_max_difference": worst,
        "folds": folds,
    }


def _relative_difference(got: np.ndarray, expected: np.ndarray) -> float:
    """Largest ``|got - expected| / max(1, |expected|)``; infinite where one is NaN and
    the other is not."""
    if got.shape != expected.shape:
        return math.inf
    both_nan = np.isnan(got) & np.isnan(expected)
    with np.errstate(invalid="ignore"):
        gap = np.abs(got - expected) / np.maximum(1.0, np.abs(expected))
    gap = np.where(both_nan, 0.0, gap)
    gap = np.where(np.isnan(gap), np.inf, gap)
    return float(gap.max()) if gap.size else 0.0


def _currencies(symbol: str) -> tuple[str, str]:
    """Base and quote codes of a ccxt symbol (``BTC/USDT:USDT``); USDT for a bare name."""
    base, _, quote = symbol.partition("/")
    quote = quote.partition(":")[0]

    def code(text: str) -> str:
        return re.sub(r"[^A-Z0-9]", "", text.upper())[:12]

    return code(base) or "ASSET", code(quote) or "USDT"


def _price_precision(close: pd.Series) -> int:
    """Decimals that keep 10 significant digits of the smallest price (at most 9)."""
    smallest = float(close[close > 0].min()) if (close > 0).any() else 1.0
    return int(min(9, max(2, 9 - math.floor(math.log10(smallest)))))


def _bar_step(bar_seconds: int) -> str:
    for unit, seconds in (("DAY", 86_400), ("HOUR", 3_600), ("MINUTE", 60)):
        if bar_seconds % seconds == 0:
            return f"{bar_seconds // seconds}-{unit}"
    return f"{bar_seconds}-SECOND"


def _instrument(
    source: dict[str, Any], candles: pd.DataFrame, settings: StrategySettings, bar_seconds: int
) -> dict[str, Any]:
    base, quote = _currencies(str(source.get("symbol") or ""))
    venue = re.sub(r"[^A-Z0-9]", "", str(source.get("exchange") or "").upper()) or "SIM"
    instrument_id = f"{base}{quote}.{venue}"
    return {
        "instrument": {
            "id": instrument_id,
            "symbol": source.get("symbol") or f"{base}/{quote}",
            "base": base,
            "quote": quote,
            "price_precision": _price_precision(candles["close"]),
            "size_precision": SIZE_PRECISION,
            # Fee plus slippage per side, charged by the venue on the notional traded.
            "taker_fee": settings.cost,
            "maker_fee": settings.cost,
            "fee_bps": float(settings.fee_bps),
            "slippage_bps": float(settings.slippage_bps),
        },
        "venue": {
            "name": venue,
            "type": "CRYPTO",
            "oms_type": "NETTING",
            "account_type": "CASH",
            "starting_balance": STARTING_BALANCE,
            "currency": quote,
        },
        "bars": {
            "file": "bars.csv",
            "bar_type": f"{instrument_id}-{_bar_step(bar_seconds)}-LAST-EXTERNAL",
            "timeframe_seconds": bar_seconds,
            "stamped_at": "close",
        },
    }


def _readme(spec: dict[str, Any]) -> str:
    strategy, instrument = spec["strategy"], spec["instrument"]
    return f"""# NautilusTrader project: {strategy["model"]} on {instrument["symbol"]}

Written by Crypto Forecast Lab (`python -m forecasting nautilus`). It replays the strategy of
our backtest (`python -m forecasting backtest`) in NautilusTrader's `BacktestEngine`.

Run it with Python 3.12 or newer and `nautilus_trader` installed (`make engines` in the
Crypto Forecast Lab repository makes `.venv-engines`):

    python run.py

It prints `{{"final_equity": x, "trades": n}}` (equity as a multiple of the starting balance)
and writes NautilusTrader's account, positions and fills reports to `reports/`.

## Files

- `bars.csv`: the candles as bars stamped at their **close** (`timestamp` = `open_time` +
  timeframe). Exchanges stamp candles at their open; a bar stamped at its open would let
  the strategy see the close before it happened, and every fill would be look-ahead.
- `instrument.json`: the instrument ({instrument["id"]}), the venue (cash account, netting,
  {spec["venue"]["starting_balance"]:,.0f} {instrument["quote"]}; taker fee
  {instrument["fee_bps"]:g} bp fee + {instrument["slippage_bps"]:g} bp slippage per side, on
  the notional traded) and the strategy's settings, with our backtest's result (`ours`).
- `signals.csv`: the target position (share of equity) decided at each bar's close, from
  the model's walk-forward forecasts (origin = the candle whose forecast decided it).
- `run.py`: a `Strategy` whose `on_bar` looks up the target for the bar's close and sends
  market orders to reach it (counting orders not yet filled, so it never doubles a
  position), and the `BacktestEngine` set-up.

## Timing and costs

The target decided at the close of candle t fills at that close and is held over candle
t+1, as in our backtest with entry "close". Quantities are whole multiples of 10^-8 units;
a buy is sized so that its fee is paid from the cash.

{_models_section(spec) if "folds" in strategy else _signals_section()}"""


def _signals_section() -> str:
    return """## Signals

`signals.csv` holds precomputed signals: NautilusTrader submits exactly the orders of our
backtest. For a model that saves without pickling (the LSTM, a Keras `.keras` file), the
project carries the model of every walk-forward fold instead, and `on_bar` calls it.
"""


def _models_section(spec: dict[str, Any]) -> str:
    return f"""## The model

`models/fold-<k>-<cutoff>.keras` (with its `.keras.json`: scaler, settings, the candles it
saw) is fold k's {spec["strategy"]["model"]} model, refitted exactly as our walk-forward
fitted it (same settings and seed, the candles up to the fold's cutoff) and checked to
forecast what our backtest's model forecast at every origin of the fold. `folds.json`
lists each fold's cutoff, its first training candle, its model and its origins, the step
k whose forecast makes the signal, and the strategy's settings.

At each bar the `Strategy` adds the candle to the ones received so far (indexed by open
time, as the models expect: the bar's close minus one timeframe). At an origin's bar it
loads that fold's model (once), calls `model.predict(steps, history=<the candles from the
fold's first training candle up to this one>)`, and turns the step-k forecast return
into the target position with `forecasting.strategy.target_position`, the rule of our
backtest. It then sends orders as above. The candles' values come from `bars.csv` at full
precision (NautilusTrader's bars are rounded to the instrument's price precision, which
would change the features).

`run.py` therefore imports `forecasting` from the Crypto Forecast Lab repository at
`{spec["repository"]}` (recorded in `instrument.json`; put the repository there, or edit
that path): its Python needs the app's requirements too, which `make engines` installs
(`requirements-engines.txt` includes `requirements.txt`). `signals.csv` stays as our
backtest's reference: `run.py` writes the positions it decided, with the forecasts behind
them, to `reports/decided.csv`, which should equal the rows of `signals.csv` at the origins.
"""


def engines_python(python: str | Path | None = None) -> Path | None:
    """The engines environment's Python: ``python``, else ``$CFL_ENGINES_PYTHON``, else
    ``.venv-engines/bin/python`` in the repository; ``None`` when it does not exist."""
    candidates = [python, os.environ.get(ENGINES_PYTHON_ENV)]
    if python is None and not os.environ.get(ENGINES_PYTHON_ENV):
        root = Path(__file__).resolve().parent.parent
        candidates.append(root / ENGINES_VENV / "bin" / "python")
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def run_project(
    out_dir: str | Path,
    python: str | Path | None = None,
    *,
    timeout: float = RUN_TIMEOUT,
) -> dict[str, Any]:
    """Run the project's ``run.py`` in the engines environment and return its result.

    Parameters
    ----------
    out_dir
        A folder written by :func:`write_project`.
    python
        The interpreter (default: see :func:`engines_python`).
    timeout
        Seconds before the run is stopped.

    Returns
    -------
    dict
        ``{"final_equity", "trades", ...}`` as ``run.py`` printed it.

    Raises
    ------
    ConfigurationError
        When the engines environment or the project is missing.
    EngineFailed
        When the run fails, times out or prints no result.
    """
    out = Path(out_dir)
    if not (out / "run.py").is_file():
        raise ConfigurationError(
            f"{out} holds no run.py: write the project first (python -m forecasting nautilus)."
        )
    interpreter = engines_python(python)
    if interpreter is None:
        wanted = python or os.environ.get(ENGINES_PYTHON_ENV) or f"{ENGINES_VENV}/bin/python"
        raise ConfigurationError(
            f"No NautilusTrader environment at {wanted}: run `make engines` (needs Python "
            f"3.12 or newer) or set {ENGINES_PYTHON_ENV} to its python."
        )
    try:
        done = subprocess.run(
            [str(interpreter), "run.py"],
            cwd=out,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise EngineFailed(
            f"The NautilusTrader run in {out} took more than {timeout:g} s and was stopped."
        ) from exc
    except OSError as exc:
        raise ConfigurationError(f"Could not start {interpreter}: {exc.strerror or exc}.") from exc
    if done.returncode != 0:
        raise EngineFailed(
            f"The NautilusTrader run in {out} failed (exit {done.returncode}): {_tail(done.stderr)}"
        )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            try:
                document = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(document, dict) and "final_equity" in document:
                return document
    raise EngineFailed(f"The NautilusTrader run in {out} printed no result: {_tail(done.stderr)}")


def _tail(stderr: str) -> str:
    """The last lines of a subprocess's stderr, on one line and shortened (the last line,
    where Python names the error, is kept from its start)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "no error output."
    kept = [_shorten(lines[-1], _STDERR_CHARS)]
    for line in reversed(lines[-_STDERR_LINES:-1]):
        if sum(map(len, kept)) + len(line) > _STDERR_CHARS:
            break
        kept.insert(0, line)
    return " | ".join(kept)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


RUN_PY = '''"""Trades a model's strategy in NautilusTrader's BacktestEngine.

With folds.json (named in instrument.json), the Strategy calls each walk-forward fold's
model (models/) at every origin bar and decides the target position with the rule of the
Crypto Forecast Lab backtest; otherwise it replays the target positions of signals.csv.

Run with Python 3.12 or newer and nautilus_trader installed (and, with models, the Crypto
Forecast Lab repository and its requirements): `python run.py`. Prints {"final_equity": x,
"trades": n} (equity as a multiple of the starting balance) and writes the account,
positions and fills reports to reports/ (and the decided positions, with models).
"""

import json
import sys
import warnings
from decimal import Decimal
from pathlib import Path

import pandas as pd
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.model.currencies import Currency
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide, OrderStatus
from nautilus_trader.model.identifiers import InstrumentId, Symbol, TraderId, Venue
from nautilus_trader.model.instruments import CurrencyPair
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.persistence.wranglers import BarDataWrangler
from nautilus_trader.trading.strategy import Strategy

HERE = Path(__file__).resolve().parent
SPEC = json.loads((HERE / "instrument.json").read_text())
# Share of the cash a buy leaves unspent. The simulated book holds a quarter of the bar's
# volume at the close; a larger order fills its remainder a tick away, and without this
# headroom those ticks could take the cash below zero (which stops the backtest).
BUY_HEADROOM = 1e-6
STEP = pd.Timedelta(seconds=SPEC["bars"]["timeframe_seconds"])
ISO = "%Y-%m-%dT%H:%M:%SZ"
# NautilusTrader 1.231 calls a pandas API that pandas 3 deprecates; not this project's to fix.
warnings.filterwarnings("ignore", message="Timestamp.utcnow is deprecated")


def make_instrument() -> CurrencyPair:
    spec = SPEC["instrument"]
    price_precision, size_precision = spec["price_precision"], spec["size_precision"]
    instrument_id = InstrumentId.from_str(spec["id"])
    return CurrencyPair(
        instrument_id=instrument_id,
        raw_symbol=instrument_id.symbol,
        base_currency=Currency.from_str(spec["base"]),
        quote_currency=Currency.from_str(spec["quote"]),
        price_precision=price_precision,
        size_precision=size_precision,
        price_increment=Price(10.0**-price_precision, price_precision),
        size_increment=Quantity(10.0**-size_precision, size_precision),
        lot_size=None,
        max_quantity=None,
        min_quantity=Quantity(10.0**-size_precision, size_precision),
        max_notional=None,
        min_notional=None,
        max_price=None,
        min_price=None,
        margin_init=Decimal(0),
        margin_maint=Decimal(0),
        maker_fee=Decimal(str(spec["maker_fee"])),
        taker_fee=Decimal(str(spec["taker_fee"])),
        ts_event=0,
        ts_init=0,
    )


def load_bars(instrument: CurrencyPair, bar_type: BarType) -> list[Bar]:
    # bars.csv is stamped at each candle's close (open time + timeframe): the engine then
    # shows a bar only once it has closed, and an order sent on it fills at its close.
    frame = pd.read_csv(HERE / SPEC["bars"]["file"], index_col="timestamp")
    frame.index = pd.to_datetime(frame.index, utc=True)
    frame = frame[["open", "high", "low", "close", "volume"]]
    return BarDataWrangler(bar_type, instrument).process(frame)


def load_targets() -> dict[int, float]:
    """Target position (share of equity) by bar close time in nanoseconds."""
    frame = pd.read_csv(HERE / SPEC["strategy"]["signals"])
    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    return {int(t.value): float(p) for t, p in zip(stamps, frame["position"], strict=True)}


class SignalsConfig(StrategyConfig, frozen=True):
    instrument_id: InstrumentId
    bar_type: BarType
    end_ns: int


class Signals(Strategy):
    """On each bar, trades toward the target position decided at that bar's close."""

    def __init__(self, config: SignalsConfig, targets: dict[int, float]) -> None:
        super().__init__(config)
        self.targets = targets
        self.mark = None  # the last close seen, up to the last scored candle
        self.mark_ns = 0
        self.target = 0.0  # the target last ordered: a position is changed only when it changes

    def on_start(self) -> None:
        self.instrument = self.cache.instrument(self.config.instrument_id)
        self.subscribe_bars(self.config.bar_type)

    def units_held(self) -> Decimal:
        return self.portfolio.net_position(self.config.instrument_id)

    def units_pending(self) -> Decimal:
        """Signed quantity of orders sent but not yet filled: counted as held, so that a
        bar arriving before a fill never orders the same change twice."""
        instrument_id = self.config.instrument_id
        orders = self.cache.orders_open(instrument_id=instrument_id)
        orders += self.cache.orders_inflight(instrument_id=instrument_id)
        pending = Decimal(0)
        for order in orders:
            sign = 1 if order.side == OrderSide.BUY else -1
            pending += sign * order.leaves_qty.as_decimal()
        return pending

    def cash(self) -> float:
        account = self.portfolio.account(self.config.instrument_id.venue)
        return account.balance_total(self.instrument.quote_currency).as_double()

    def equity(self, price: float) -> float:
        return self.cash() + float(self.units_held()) * price

    def target_for(self, bar: Bar) -> float | None:
        """The target position decided at this bar's close (None: no decision)."""
        return self.targets.get(bar.ts_event)

    def on_bar(self, bar: Bar) -> None:
        if bar.ts_event > self.config.end_ns:
            return
        price = bar.close.as_double()
        self.mark, self.mark_ns = price, bar.ts_event
        target = self.target_for(bar)
        if target is None or target == self.target:
            return
        self.target = target
        held = self.units_held() + self.units_pending()
        units = float(held)
        wanted = target * self.equity(price) / price
        if target == 0:
            # Flat means every unit held, to the last increment: the held Decimal as it
            # is, never a float rounded down (which would leave one increment long).
            if held <= 0:
                return
            quantity = self.instrument.make_qty(held)
            self.submit_order(
                self.order_factory.market(self.config.instrument_id, OrderSide.SELL, quantity)
            )
            return
        if wanted > units:
            # A buy's fee is paid from the cash, so buy a little less than the target.
            fee = float(self.instrument.taker_fee)
            change = (wanted - units) * (1 - BUY_HEADROOM) / (1 + fee)
            side = OrderSide.BUY
        else:
            change, side = units - wanted, OrderSide.SELL
        if change < self.instrument.size_increment.as_double():
            return
        quantity = self.instrument.make_qty(change, round_down=True)
        order = self.order_factory.market(self.config.instrument_id, side, quantity)
        self.submit_order(order)


class ModelSignals(Signals):
    """On each origin bar, asks that fold's model for a forecast and trades toward the
    target position our backtest's rule gives it."""

    def __init__(self, config: SignalsConfig, folds: dict) -> None:
        super().__init__(config, {})
        # The forecasting package of the repository that wrote this project.
        sys.path.insert(0, SPEC["repository"])
        import numpy as np
        from forecasting.models import MODELS
        from forecasting.strategy import (
            StrategySettings,
            position_size,
            target_position,
        )

        self.np = np
        self.model_class = MODELS[folds["alias"]]
        self.settings = StrategySettings(**folds["strategy"])
        self.position_size, self.target_position = position_size, target_position
        self.step, self.periods = int(folds["step"]), float(folds["periods_per_year"])
        # Candles at full precision by close time: a bar's prices are rounded to the
        # instrument's precision, and the model must see the candles our backtest saw.
        self.candles = load_candles()
        self.close_ns = {int(t.value): i for i, t in enumerate(self.candles.index + STEP)}
        self.received = []  # positions in self.candles of the bars received so far
        self.origins = {}  # bar close (ns) -> (fold, steps)
        for fold in folds["folds"]:
            for origin in fold["origins"]:
                self.origins[int(pd.Timestamp(origin["bar"]).value)] = (fold, origin["steps"])
        self.models = {}  # fold number -> loaded model, each loaded once
        self.decided = []

    def history(self, since: str) -> pd.DataFrame:
        """The candles received so far from ``since`` (open time) on, indexed by open time."""
        frame = self.candles.iloc[self.received]
        return frame[frame.index >= pd.Timestamp(since)]

    def target_for(self, bar: Bar) -> float | None:
        at = self.close_ns.get(bar.ts_event)
        if at is None:
            raise SystemExit(f"bars.csv holds no candle closing at {bar.ts_event} ns.")
        self.received.append(at)
        found = self.origins.get(bar.ts_event)
        if found is None:
            return None
        fold, steps = found
        model = self.models.get(fold["fold"])
        if model is None:
            model = self.model_class.load(HERE / fold["model"])
            self.models[fold["fold"]] = model
        history = self.history(fold["train_start"])
        forecast = model.predict(int(steps), history=history)
        close = float(history["close"].iloc[-1])
        forecast_return = float(forecast.mean[self.step - 1]) / close - 1
        size = self.position_size(
            self.np.log(history["close"].to_numpy(dtype="float64")), self.settings, self.periods
        )
        target = float(self.target_position(forecast_return, self.settings, size))
        self.decided.append(
            {
                "timestamp": pd.Timestamp(bar.ts_event, tz="UTC").strftime(ISO),
                "origin": history.index[-1].strftime(ISO),
                "fold": fold["fold"],
                "forecast": repr(float(forecast.mean[self.step - 1])),
                "forecast_return": repr(forecast_return),
                "position": repr(target),
            }
        )
        return target


def load_candles() -> pd.DataFrame:
    """bars.csv as the OHLCV candles of our backtest: open-time index, exact values."""
    frame = pd.read_csv(HERE / SPEC["bars"]["file"])  # pandas 3 reads floats exactly
    index = pd.DatetimeIndex(pd.to_datetime(frame["open_time"], utc=True), name="timestamp")
    columns = ["open", "high", "low", "close", "volume"]
    return pd.DataFrame(frame[columns].to_numpy(dtype="float64"), index=index, columns=columns)


def main() -> None:
    venue_spec = SPEC["venue"]
    instrument = make_instrument()
    venue = Venue(venue_spec["name"])
    quote = instrument.quote_currency
    bar_type = BarType.from_str(SPEC["bars"]["bar_type"])
    end = pd.Timestamp(SPEC["strategy"]["end"])

    engine = BacktestEngine(
        BacktestEngineConfig(
            trader_id=TraderId("FORECAST-001"), logging=LoggingConfig(log_level="ERROR")
        )
    )
    engine.add_venue(
        venue=venue,
        oms_type=OmsType.NETTING,
        account_type=AccountType.CASH,
        base_currency=None,  # a cash account holding both the base and the quote currency
        starting_balances=[Money(venue_spec["starting_balance"], quote)],
    )
    engine.add_instrument(instrument)
    engine.add_data(load_bars(instrument, bar_type))
    config = SignalsConfig(instrument_id=instrument.id, bar_type=bar_type, end_ns=int(end.value))
    folds_file = SPEC["strategy"].get("folds")
    if folds_file:
        strategy = ModelSignals(config, json.loads((HERE / folds_file).read_text()))
    else:
        strategy = Signals(config, load_targets())
    engine.add_strategy(strategy)
    engine.run()
    if strategy.mark_ns < int(end.value):
        seen = pd.Timestamp(strategy.mark_ns, tz="UTC") if strategy.mark_ns else "no bar"
        raise SystemExit(
            f"The backtest stopped early, at {seen} before {end}: see the log above "
            "(an order the account could not pay for?)."
        )

    reports = HERE / "reports"
    reports.mkdir(exist_ok=True)
    engine.trader.generate_account_report(venue).to_csv(reports / "account.csv")
    engine.trader.generate_positions_report().to_csv(reports / "positions.csv")
    engine.trader.generate_order_fills_report().to_csv(reports / "fills.csv")
    if folds_file:
        pd.DataFrame(strategy.decided).to_csv(reports / "decided.csv", index=False)

    account = engine.portfolio.account(venue)
    cash = account.balance_total(quote).as_double()
    units = float(engine.portfolio.net_position(instrument.id))
    value = cash + units * (strategy.mark or 0.0)
    trades = sum(1 for order in engine.cache.orders() if order.status == OrderStatus.FILLED)
    engine.dispose()
    result = {
        "final_equity": value / venue_spec["starting_balance"],
        "trades": trades,
        "final_value": value,
        "currency": quote.code,
        "units": units,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
'''
