"""The command line: the library, headless, for scripts.

``python -m forecasting fetch ...`` writes candles as CSV, ``features`` adds feature
columns, ``forecast`` prints one model's forecast. Flags and output formats are a
contract that scripts rely on: add to them, never change them. Failures print one line
on stderr and exit non-zero, never a traceback: 2 for a usage error (a flag's value out
of its range, JSON that does not parse), 1 for input the library refused (a setting out
of its range, a file that is not OHLCV), 3 for an internal error (a bug: the line names
the exception). What the reader must know about the numbers (rows dropped at load, a
forecast floored at zero, an unbounded interval, a number too large to compute with) is
a ``notes`` list in the JSON output, and lines starting ``note:`` on stderr with CSV
output. The JSON printed is always valid JSON: a number that is not finite is ``null``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from forecasting.errors import ConfigurationError, ForecastingError
from forecasting.ranges import HORIZON, INNER_FOLDS, SEED, TRIALS, Range, shown

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
# An internal error's message is cut to this many characters (one readable line).
_SHORT = 200


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line, as every other failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def _ranged(declared: Range) -> Callable[[str], int]:
    """An argparse ``type`` for a whole number within a declared range (one line if not)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # not a number, or more digits than Python reads
            value = None
        if value is None or not declared.contains(value):
            shown_value = shown(text if value is None else value)
            raise argparse.ArgumentTypeError(f"must be {declared.describe()}, got {shown_value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m forecasting``."""
    parser = _Parser(prog="python -m forecasting", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    fetch = commands.add_parser("fetch", help="fetch candles from an exchange into a CSV file")
    fetch.add_argument("--exchange", required=True, help="ccxt exchange id, e.g. bitstamp")
    fetch.add_argument("--symbol", required=True, help="unified symbol, e.g. BTC/USD")
    fetch.add_argument("--timeframe", required=True, help="e.g. 1h, 4h, 1d")
    fetch.add_argument(
        "--since", help="first candle open time, ISO-8601 UTC (default: 1000 candles ago)"
    )
    fetch.add_argument("--until", help="end, exclusive, ISO-8601 UTC (default: now)")
    fetch.add_argument(
        "--exchange-config",
        metavar="JSON",
        help="ccxt constructor settings as JSON (or @file.json): apiKey, urls, options",
    )
    fetch.add_argument("--cache-dir", type=Path, help="candle cache folder (default: user cache)")
    fetch.add_argument("--out", required=True, type=Path, help="CSV file to write")
    fetch.add_argument("--quiet", action="store_true", help="no progress on stderr")
    fetch.set_defaults(handler=_fetch)

    features = commands.add_parser(
        "features", help="add feature columns (known at each candle's close) to a candle CSV"
    )
    feature_source = features.add_mutually_exclusive_group()
    feature_source.add_argument("--data", type=Path, help="OHLCV CSV file")
    feature_source.add_argument(
        "--exchange", help="ccxt exchange id (with --symbol and --timeframe)"
    )
    _exchange_data_flags(features)
    features.add_argument(
        "--features",
        metavar="LIST",
        help="comma-separated specs, e.g. rsi:14,macd:12:26:9,sma:50,log_return,fear_greed,"
        "funding_rate (default: rsi:14,macd:12:26:9,log_return)",
    )
    _mood_flags(features)
    features.add_argument("--out", required=True, type=Path, help="CSV file to write")
    features.set_defaults(handler=_features)

    forecast = commands.add_parser("forecast", help="fit one model on a candle CSV and forecast")
    forecast.add_argument("--data", required=True, type=Path, help="OHLCV CSV file")
    forecast.add_argument("--model", required=True, help=f"one of: {', '.join(_MODEL_NAMES)}")
    forecast.add_argument(
        "--horizon",
        required=True,
        type=_ranged(HORIZON),
        help=f"candles ahead ({HORIZON.lo:g} to {HORIZON.hi:g})",
    )
    forecast.add_argument("--seed", type=_ranged(SEED), help="random seed (LSTM, Prophet)")
    forecast.add_argument(
        "--settings", metavar="JSON", help="model settings as JSON, e.g. '{\"epochs\": 20}'"
    )
    forecast.add_argument("--cache-dir", type=Path, help="cache folder of the mood sources")
    _mood_flags(forecast)
    forecast.add_argument("--json", action="store_true", help="print JSON instead of CSV")
    forecast.set_defaults(handler=_forecast)

    compare = commands.add_parser(
        "compare", help="walk-forward backtest of several models on the same folds"
    )
    _experiment_flags(
        compare,
        bundle_help="rerun the experiment of a bundle (from --bundle-out or the app's Compare "
        "page)",
    )
    compare.add_argument("--json", action="store_true", help="print the JSON report")
    compare.add_argument(
        "--forecasts-out", type=Path, metavar="FILE.csv", help="write every forecast row"
    )
    compare.add_argument(
        "--bundle-out",
        type=Path,
        metavar="FILE.zip",
        help="write the experiment bundle: settings, the candles with their SHA-256, "
        "metrics, tests, forecasts and the app's settings, as the Compare page does but "
        "without its charts; the app restores it, and --from-bundle reruns it",
    )
    compare.add_argument("--quiet", action="store_true", help="no progress on stderr")
    compare.set_defaults(handler=_compare)

    sweep = commands.add_parser(
        "sweep",
        help="one experiment per series (files, or symbols x timeframes), as Ray tasks",
    )
    sweep_source = sweep.add_mutually_exclusive_group()
    sweep_source.add_argument("--data", metavar="A.csv,B.csv", help="comma-separated CSV files")
    sweep_source.add_argument("--exchange", help="ccxt exchange id (with --symbols, --timeframes)")
    sweep.add_argument("--symbols", metavar="S1,S2", help="comma-separated unified symbols")
    sweep.add_argument("--timeframes", metavar="TF1,TF2", help="comma-separated, e.g. 1h,1d")
    sweep.add_argument("--since", help="first candle, ISO-8601 UTC (exchange data)")
    sweep.add_argument("--until", help="end, exclusive, ISO-8601 UTC (exchange data)")
    sweep.add_argument("--exchange-config", metavar="JSON", help="as for fetch")
    sweep.add_argument("--cache-dir", type=Path, help="candle cache folder")
    _model_flags(sweep)
    sweep.add_argument(
        "--tune", action="store_true", help="also run nested tuning on each series (see tune)"
    )
    sweep.add_argument(
        "--tune-models", metavar="LIST", help="the models tuned (default: the tunable ones run)"
    )
    _search_flags(sweep, "with --tune: ")
    sweep.add_argument(
        "--address",
        help="an existing Ray cluster: auto (on a node of it) or ray://HEAD:10001; default: a "
        "Ray started on this machine for the sweep",
    )
    sweep.add_argument(
        "--workers", type=int, help="experiments at once (default: every CPU of this machine)"
    )
    sweep.add_argument(
        "--cpus-per-task", type=int, default=1, help="CPUs (and TensorFlow threads) per task"
    )
    sweep.add_argument(
        "--local", action="store_true", help="run the series one after another here, no Ray"
    )
    sweep.add_argument("--out", required=True, type=Path, help="folder for bundles and results")
    sweep.add_argument("--json", action="store_true", help="print {label: compare --json}")
    sweep.add_argument("--quiet", action="store_true", help="no progress on stderr")
    sweep.set_defaults(handler=_sweep)

    tune = commands.add_parser(
        "tune",
        help="nested tuning: each outer fold's settings chosen on inner folds of its own past",
    )
    _experiment_flags(tune, bundle_help="tune on the candles of a bundle")
    tune.add_argument(
        "--model", required=True, help="the model to tune: lstm, gru, conv_lstm, ..., prophet"
    )
    _search_flags(tune)
    tune.add_argument("--json", action="store_true", help="print the JSON report")
    tune.add_argument("--quiet", action="store_true", help="no progress on stderr")
    tune.set_defaults(handler=_tune)

    ablate = commands.add_parser(
        "ablate",
        help="do these features help? one model with and without them on the same folds",
    )
    _experiment_flags(ablate, bundle_help="rerun the experiment of a bundle")
    ablate.add_argument(
        "--model", default="lstm", help="the model whose features are tested (default lstm)"
    )
    ablate.add_argument(
        "--add",
        required=True,
        metavar="LIST",
        help="feature specs added to the model's own, e.g. fear_greed,funding_rate",
    )
    ablate.add_argument("--json", action="store_true", help="print the JSON report")
    ablate.add_argument("--quiet", action="store_true", help="no progress on stderr")
    ablate.set_defaults(handler=_ablate)

    backtest = commands.add_parser(
        "backtest",
        help="trade each model's walk-forward forecasts: a strategy backtest after costs, "
        "beside buy-and-hold",
    )
    _experiment_flags(
        backtest,
        bundle_help="backtest the strategy on the experiment of a bundle (from --bundle-out or "
        "the app's Compare page)",
    )
    _strategy_flags(backtest)
    backtest.add_argument(
        "--settings-tried",
        type=_positive,
        default=1,
        metavar="N",
        help="strategy settings tried on these forecasts so far: the significance check "
        "deflates for models x N trials (default 1)",
    )
    backtest.add_argument("--json", action="store_true", help="print the JSON report")
    backtest.add_argument(
        "--positions-out",
        type=Path,
        metavar="FILE.csv",
        help="write one row per model and candle held: timestamp, model, signal_origin, "
        "position, fee, return, equity",
    )
    backtest.add_argument("--quiet", action="store_true", help="no progress on stderr")
    backtest.set_defaults(handler=_backtest)

    nautilus = commands.add_parser(
        "nautilus",
        help="write (and with --run, run) a NautilusTrader project that trades a model's "
        "walk-forward signals, to compare with our backtest",
    )
    _experiment_flags(
        nautilus,
        bundle_help="hand off the experiment of a bundle (from --bundle-out or the app's "
        "Compare page)",
        bundle_flags=("--bundle", "--from-bundle"),
    )
    nautilus.add_argument("--model", required=True, help="the model whose signals are traded")
    nautilus.add_argument("--out", type=Path, help="project folder (default: ./nautilus-<model>)")
    nautilus.add_argument(
        "--run",
        action="store_true",
        help="run the project with NautilusTrader's BacktestEngine in its own environment "
        "(make engines) and print its result beside ours",
    )
    _strategy_flags(nautilus)
    nautilus.add_argument(
        "--signals-only",
        action="store_true",
        help="hand off the positions only, without the fitted models (an LSTM's folds are "
        "otherwise refitted, saved and called by the project's Strategy)",
    )
    nautilus.add_argument("--json", action="store_true", help="print the JSON report")
    nautilus.add_argument("--quiet", action="store_true", help="no progress on stderr")
    nautilus.set_defaults(handler=_nautilus)

    live = commands.add_parser(
        "live",
        help="forecast from each candle as it closes into the ledger; score forecasts once "
        "their candle has closed",
    )
    live.add_argument("--exchange", required=True, help="ccxt exchange id, e.g. bitstamp")
    live.add_argument("--symbol", required=True, help="unified symbol, e.g. BTC/USD")
    live.add_argument("--timeframe", required=True, help="e.g. 1h, 4h, 1d")
    live.add_argument(
        "--models",
        default="naive",
        help=f"comma-separated (default naive alone; naive is always tracked): "
        f"{','.join(_MODEL_NAMES)}",
    )
    live.add_argument(
        "--horizon",
        type=_ranged(HORIZON),
        default=7,
        help=f"candles ahead, {HORIZON.lo:g} to {HORIZON.hi:g} (default 7)",
    )
    live.add_argument(
        "--settings",
        metavar="JSON",
        help='per-model settings, as for compare, e.g. \'{"lstm": {"epochs": 10}}\'',
    )
    live.add_argument("--seed", type=_ranged(SEED), default=42, help="seed for LSTM and Prophet")
    live.add_argument(
        "--ledger", type=Path, help="ledger file (default: ledger.sqlite3 in the cache folder)"
    )
    live.add_argument(
        "--refit-every",
        type=_positive,
        metavar="N",
        help="candles between LSTM refits (default: a day of intraday candles, a week of "
        "daily ones); the other models are fitted every round",
    )
    live.add_argument(
        "--history",
        type=_positive,
        default=1000,
        metavar="N",
        help="closed candles loaded and fitted on (default 1000)",
    )
    live.add_argument("--exchange-config", metavar="JSON", help="as for fetch")
    live.add_argument("--cache-dir", type=Path, help="candle cache folder")
    live.add_argument("--once", action="store_true", help="one round, then exit (for cron)")
    live.add_argument("--json", action="store_true", help="each round's report as a JSON line")
    live.add_argument("--quiet", action="store_true", help="no progress on stderr")
    live.set_defaults(handler=_live)

    ledger = commands.add_parser(
        "ledger", help="the live ledger's track record: scored forecasts, metrics and verdict"
    )
    ledger.add_argument(
        "--ledger", type=Path, help="ledger file (default: ledger.sqlite3 in the cache folder)"
    )
    ledger.add_argument("--cache-dir", type=Path, help="cache folder of the default ledger")
    ledger.add_argument("--exchange", help="the series' exchange (needed when it holds several)")
    ledger.add_argument("--symbol", help="the series' symbol")
    ledger.add_argument("--timeframe", help="the series' timeframe")
    ledger.add_argument(
        "--loss",
        choices=("absolute", "squared"),
        default="absolute",
        help="the one loss of the verdict and the Diebold-Mariano tests (default absolute)",
    )
    ledger.add_argument(
        "--tolerance-ms",
        type=int,
        metavar="MS",
        help="the timing check: how long after its origin closed a forecast may have been "
        "written and still be scored (default: min(one timeframe, 15 minutes); at most one "
        "timeframe)",
    )
    ledger.add_argument(
        "--check",
        action="store_true",
        help="only the timing check: list every forecast not written in time and exit 1 "
        "when there is one, 0 when the ledger proves none was",
    )
    ledger.add_argument("--json", action="store_true", help="print the JSON report")
    ledger.set_defaults(handler=_ledger)
    return parser


def _strategy_flags(parser: argparse.ArgumentParser) -> None:
    """The strategy's rule and costs, the same for ``backtest`` and ``nautilus`` (which
    refuses, in one line, the settings a NautilusTrader cash account cannot replay)."""
    parser.add_argument(
        "--threshold",
        type=float,
        default=1.0,
        help="how far the forecast return must be from 0 to take a position, in "
        "--threshold-unit (default 1: one round-trip cost)",
    )
    parser.add_argument(
        "--threshold-unit",
        choices=("fees", "bps"),
        default="fees",
        help="fees: multiples of the round-trip cost 2 x (fee + slippage); bps: basis points "
        "of return (default fees)",
    )
    parser.add_argument(
        "--fee-bps",
        type=float,
        help="fee per side in basis points (default: the exchange's taker fee from ccxt where "
        "known, else 10)",
    )
    parser.add_argument(
        "--slippage-bps", type=float, default=0.0, help="slippage per side, bp (default 0)"
    )
    parser.add_argument(
        "--allow-short", action="store_true", help="go short on a forecast fall (else flat)"
    )
    parser.add_argument(
        "--entry",
        choices=("close", "next_open"),
        default="close",
        help="enter at the origin's close (default) or at the next candle's open",
    )
    parser.add_argument(
        "--signal-horizon",
        type=int,
        metavar="K",
        help="candles ahead whose forecast makes the signal (default: the stride, at most "
        "the horizon)",
    )
    parser.add_argument(
        "--sizing",
        choices=("fixed", "vol_target"),
        default="fixed",
        help="fixed fraction (default) or a volatility target",
    )
    parser.add_argument(
        "--fraction", type=float, default=1.0, help="largest position, share of equity"
    )
    parser.add_argument(
        "--vol-target",
        type=float,
        default=0.4,
        help="annualised volatility aimed at with --sizing vol_target (default 0.4)",
    )


def _strategy_settings(args: argparse.Namespace, fee: float) -> Any:
    """The :class:`~forecasting.strategy.StrategySettings` the strategy flags give."""
    from forecasting.strategy import StrategySettings

    return StrategySettings(
        horizon=args.signal_horizon,
        threshold=args.threshold,
        threshold_unit=args.threshold_unit,
        allow_short=args.allow_short,
        fee_bps=fee,
        slippage_bps=args.slippage_bps,
        entry=args.entry,
        sizing=args.sizing,
        fraction=args.fraction,
        vol_target=args.vol_target,
    )


def _exchange_data_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that choose exchange candles beside ``--exchange``."""
    parser.add_argument("--symbol", help="unified symbol, e.g. BTC/USD")
    parser.add_argument("--timeframe", help="e.g. 1h, 4h, 1d")
    parser.add_argument("--since", help="first candle, ISO-8601 UTC (exchange data)")
    parser.add_argument("--until", help="end, exclusive, ISO-8601 UTC (exchange data)")
    parser.add_argument("--exchange-config", metavar="JSON", help="as for fetch")
    parser.add_argument("--cache-dir", type=Path, help="candle cache folder")


def _search_flags(parser: argparse.ArgumentParser, when: str = "") -> None:
    """The nested search's flags of ``tune`` (and of ``sweep --tune``)."""
    parser.add_argument(
        "--trials",
        type=_ranged(TRIALS),
        default=20,
        help=f"{when}trials per outer fold (default 20)",
    )
    parser.add_argument(
        "--timeout", type=float, metavar="S", help=f"{when}seconds for the search (default none)"
    )
    parser.add_argument(
        "--study",
        type=Path,
        metavar="FILE",
        help=f"{when}keep the studies in FILE (a journal; SQLite for .db), so a rerun resumes",
    )
    parser.add_argument(
        "--inner-folds",
        type=_ranged(INNER_FOLDS),
        default=2,
        help=f"{when}inner folds per training window, 1 to 10 (default 2)",
    )


def _mood_flags(parser: argparse.ArgumentParser) -> None:
    """Where the market-mood features come from (fear_greed, funding_rate)."""
    parser.add_argument(
        "--funding-exchange",
        metavar="ID",
        help="ccxt exchange whose perpetual futures give funding_rate (default: --exchange; "
        "needed with --data)",
    )
    parser.add_argument(
        "--funding-symbol",
        metavar="SYM",
        help="the spot pair whose perpetual's funding rates are read (default: --symbol)",
    )
    parser.add_argument(
        "--funding-config",
        metavar="JSON",
        help="ccxt settings for --funding-exchange (default: --exchange-config when it is "
        "the same exchange)",
    )


def _experiment_flags(
    parser: argparse.ArgumentParser,
    *,
    bundle_help: str,
    bundle_flags: tuple[str, ...] = ("--from-bundle",),
) -> None:
    """The data, model and walk-forward flags of ``compare``, shared by ``backtest``."""
    # Not required as a group: "one of --data --exchange" is checked in _compare, so the
    # message scripts know stays as it was with --from-bundle beside them.
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path, help="OHLCV CSV file")
    source.add_argument("--exchange", help="ccxt exchange id (with --symbol and --timeframe)")
    source.add_argument(
        *bundle_flags,
        dest="from_bundle",
        type=Path,
        metavar="FILE.zip",
        help=bundle_help + " "
        "on the candles it carries, with its settings: no network, no original file; the "
        "settings and data flags are refused",
    )
    _exchange_data_flags(parser)
    _model_flags(parser)


def _model_flags(parser: argparse.ArgumentParser) -> None:
    """The model, walk-forward and settings flags of ``compare`` (without the data's)."""
    parser.add_argument("--models", help=f"comma-separated, default all: {','.join(_MODEL_NAMES)}")
    parser.add_argument(
        "--horizon",
        type=_ranged(HORIZON),
        default=7,
        help=f"candles ahead, {HORIZON.lo:g} to {HORIZON.hi:g} (default 7)",
    )
    parser.add_argument("--folds", type=int, default=3, help="folds (default 3)")
    parser.add_argument(
        "--test-size", type=int, default=120, help="candles in the test period (default 120)"
    )
    parser.add_argument(
        "--test-start", help="first candle of the test period, ISO-8601 (instead of --test-size)"
    )
    parser.add_argument("--stride", type=int, default=3, help="candles between origins (default 3)")
    parser.add_argument(
        "--window", type=int, help="rolling training window in candles (default: expanding)"
    )
    parser.add_argument("--seed", type=_ranged(SEED), default=42, help="seed for LSTM and Prophet")
    parser.add_argument(
        "--seeds",
        metavar="N|LIST",
        help="seeds the LSTM runs: a count N (seed, seed+1, ...) or a list such as 42,7,99; "
        "the verdict holds only if it holds for each (default 1)",
    )
    parser.add_argument(
        "--loss",
        choices=("absolute", "squared"),
        default="absolute",
        help="the one loss of the verdict and the Diebold-Mariano tests (default absolute)",
    )
    parser.add_argument(
        "--settings",
        metavar="JSON",
        help='per-model settings, e.g. \'{"lstm": {"epochs": 10}, "prophet": {}}\'; '
        "features fear_greed and funding_rate are joined to the candles as of each close",
    )
    _mood_flags(parser)


def _model_names() -> tuple[str, ...]:
    from forecasting.models import MODELS  # no TensorFlow or Prophet until a model is fitted

    return tuple(MODELS)


_MODEL_NAMES = _model_names()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    A usage error found while reading the flags exits through argparse
    (``SystemExit(2)``), as argparse does, with one line on stderr.
    """
    parser = build_parser()
    progress = _Progress(enabled=False)
    try:
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        progress = args.progress = _Progress(
            enabled=not getattr(args, "quiet", True) and _is_terminal()
        )
        return args.handler(args)
    except _UsageError as exc:
        _fail(progress, str(exc))
        return EXIT_USAGE
    except ForecastingError as exc:
        _fail(progress, str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        _fail(progress, "interrupted")
        return 130
    except OSError as exc:
        _fail(progress, f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return EXIT_ERROR
    except Exception as exc:  # the boundary: one line, never a traceback
        message = " ".join(str(exc).split())
        if len(message) > _SHORT:
            message = message[: _SHORT - 3] + "..."
        _fail(
            progress,
            f"internal error: {type(exc).__name__}: {message or 'no message'} "
            "(a bug: please report it with the command that caused it)",
        )
        return EXIT_INTERNAL


def _fail(progress: _Progress, message: str) -> None:
    # One line, whatever the message holds, and on a line of its own after the progress.
    progress.finish()
    print("error: " + " ".join(message.split()), file=sys.stderr)


def _is_terminal() -> bool:
    # Progress redraws one line with "\r": only a terminal shows that as one line; in a
    # log or a pipe it would be noise, and break "failures print one line on stderr".
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _fetch(args: argparse.Namespace) -> int:
    from forecasting.data import CandleCache, load_exchange_candles, write_ohlcv_csv
    from forecasting.ohlcv import parse_time

    config = _exchange_config(args.exchange_config)
    candles = load_exchange_candles(
        args.exchange,
        args.symbol,
        args.timeframe,
        parse_time(args.since, name="--since"),
        parse_time(args.until, name="--until"),
        config=config,
        cache=CandleCache(args.cache_dir) if args.cache_dir else None,
        progress=args.progress if args.progress.enabled else None,
    )
    args.progress.finish()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_ohlcv_csv(candles, args.out)
    for note in _fetch_notes(candles):
        _note(note)
    return EXIT_OK


def _fetch_notes(candles: Any) -> list[str]:
    """What the exchange did not deliver, and what was dropped or chosen, one line each."""
    from forecasting.data.duplicates import duplicate_conflicts
    from forecasting.data.quality import dropped_nonpositive, nonpositive_note, notices

    notes = list(notices(candles))
    conflicts = duplicate_conflicts(candles)
    if conflicts:
        first = _iso_ms(conflicts[0]["timestamp"])
        notes.append(
            f"{len(conflicts)} candles were sent twice with different values (the first at "
            f"{first}); the one with the larger volume was kept, as a fragment of a candle "
            "carries only part of its volume."
        )
    dropped = dropped_nonpositive(candles)
    if len(dropped):
        notes.append(nonpositive_note(dropped))
    return notes


def _iso_ms(ms: int) -> str:
    import pandas as pd

    return f"{pd.Timestamp(int(ms), unit='ms', tz='UTC'):%Y-%m-%dT%H:%M:%SZ}"


def _features(args: argparse.Namespace) -> int:
    import pandas as pd

    from forecasting.features import compute_features, mood_kinds, parse_features
    from forecasting.ohlcv import COLUMNS

    specs = parse_features(args.features)  # a bad spec fails before any data is read
    if args.data is None and args.exchange is None:
        raise _UsageError("one of the arguments --data --exchange is required")
    candles, source, _, read_notes = _compare_data(args)
    for note in read_notes:
        _note(note)
    candles, mood_notes = _with_mood(args, candles, source, mood_kinds([str(s) for s in specs]))
    for note in mood_notes:
        _note(note)
    columns = compute_features(candles, specs)
    table = pd.concat([candles.loc[columns.index, list(COLUMNS)], columns], axis=1)
    table.index = table.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index_label="timestamp", lineterminator="\n")
    return EXIT_OK


def _forecast(args: argparse.Namespace) -> int:
    from forecasting.data import read_ohlcv_csv
    from forecasting.features import mood_kinds
    from forecasting.models import MODELS, make_model

    settings = _json_object(args.settings, "--settings") or {}
    cls = MODELS.get(args.model)
    if cls is None:
        raise _UsageError(f"--model must be one of: {', '.join(_MODEL_NAMES)}")
    if cls.capabilities.trained_horizon:
        settings.setdefault("horizon", args.horizon)
    if args.seed is not None and cls.capabilities.seeded:
        settings["seed"] = args.seed
    model = make_model(args.model, **settings)
    model.check_settings()  # before the data is read
    data = read_ohlcv_csv(args.data)
    texts = [v for k, v in model.get_params().items() if k in ("features", "regressors")]
    candles, mood_notes = _with_mood(
        args, data.candles, {"timeframe": getattr(data, "timeframe", None)}, mood_kinds(*texts)
    )
    forecast = model.fit(candles).predict(args.horizon)
    notes = [*_data_notes(data), *mood_notes, *forecast.notes]
    if args.json:
        document = {
            "model": args.model,
            "horizon": args.horizon,
            "settings": model.get_params(),
            "forecast": forecast.to_records(),
            "notes": notes,
        }
        print(json.dumps(_finite(document), indent=2, allow_nan=False))
    else:
        for note in notes:
            _note(note)
        frame = forecast.to_frame()
        frame.index = frame.index.strftime("%Y-%m-%dT%H:%M:%SZ")
        sys.stdout.write(frame.to_csv(index_label="timestamp", lineterminator="\n"))
    return EXIT_OK


def _compare(args: argparse.Namespace) -> int:
    from forecasting.bundle import experiment_bundle
    from forecasting.experiment import dumps

    result, selection, read_notes = _experiment(args, future=True)
    if args.forecasts_out:
        args.forecasts_out.parent.mkdir(parents=True, exist_ok=True)
        result.forecasts_table().to_csv(args.forecasts_out, index=False, lineterminator="\n")
    if args.bundle_out:
        args.bundle_out.parent.mkdir(parents=True, exist_ok=True)
        args.bundle_out.write_bytes(
            experiment_bundle(result, selection=selection, read_notes=read_notes)
        )
    if args.json:
        document = result.to_json()
        # How the file was read comes first, beside the experiment's own notes.
        document["notes"] = [
            *read_notes,
            *(n for n in document.get("notes", []) if n not in read_notes),
        ]
        print(dumps(_finite(document)))
    else:
        for note in [*read_notes, *(n for n in result.notes if n not in read_notes)]:
            _note(note)
        sys.stdout.write(result.metrics.to_csv(lineterminator="\n"))
    return EXIT_OK


def _experiment(args: argparse.Namespace, *, future: bool) -> tuple[Any, dict, list[str]]:
    """The walk-forward experiment of the data, model and walk-forward flags (or of a
    bundle): the result, the data selection and the notes on how the data were read."""
    from forecasting.experiment import run_experiment

    if args.data is None and args.exchange is None and args.from_bundle is None:
        raise _UsageError("one of the arguments --data --exchange is required (or --from-bundle)")
    if args.from_bundle is not None:
        candles, filled, source, selection, read_notes, settings = _from_bundle(args)
    else:
        filled = None
        settings = _compare_settings(args)
        candles, source, selection, read_notes = _compare_data(args)
        candles, mood_notes = _with_mood(args, candles, source, _settings_mood(settings))
        read_notes = [*read_notes, *mood_notes]
    progress = args.progress if args.progress.enabled else None
    result = run_experiment(
        candles, settings, source=source, progress=progress, filled=filled, future=future
    )
    args.progress.finish()
    return result, selection, read_notes


def _sweep(args: argparse.Namespace) -> int:
    import subprocess

    from forecasting.experiment import dumps
    from forecasting.ohlcv import parse_time
    from forecasting.sweeps import (
        exchange_series,
        file_series,
        ray_importable,
        ray_python,
        run_sweep,
    )

    if args.data is None and args.exchange is None:
        raise _UsageError("one of the arguments --data --exchange is required")
    if args.local and args.address:
        raise _UsageError("--local runs without Ray: leave out --address, or --local")
    if args.exchange is not None and not (args.symbols and args.timeframes):
        raise _UsageError("--exchange needs --symbols and --timeframes")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise _UsageError("--timeout must be a positive number of seconds")
    for name in ("workers", "cpus_per_task"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise _UsageError(f"--{name.replace('_', '-')} must be at least 1")
    settings = _compare_settings(args)  # bad flags fail here, before Ray starts
    if not args.local and not ray_importable():
        # Ray lives in the engines venv (about 0.8 GB of processes): run there, in the
        # caller's folder (relative paths keep their meaning), importing this checkout.
        python = ray_python()
        if python is not None:
            root = str(Path(__file__).resolve().parent.parent)
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
            return subprocess.call(
                [str(python), "-m", "forecasting", *args.argv],
                env={**os.environ, "PYTHONPATH": path},
            )
    if args.data is not None:
        series = file_series(args.data)
    else:
        series = exchange_series(
            args.exchange,
            args.symbols,
            args.timeframes,
            since=parse_time(args.since, name="--since"),
            until=parse_time(args.until, name="--until"),
            config=_exchange_config(args.exchange_config),
            cache_dir=args.cache_dir,
        )
    tune = None
    if args.tune:
        tune = {"trials": args.trials, "inner_folds": args.inner_folds}
        for key in ("timeout", "study"):
            if getattr(args, key) is not None:
                tune[key] = getattr(args, key)
        if args.tune_models:
            tune["models"] = args.tune_models
    result = run_sweep(
        series,
        settings,
        args.out,
        address=args.address,
        workers=args.workers,
        local=args.local,
        tune=tune,
        cpus_per_task=args.cpus_per_task,
        progress=args.progress if args.progress.enabled else None,
    )
    args.progress.finish()
    for label, why in result.errors.items():
        _note(f"{label}: {why}")
    if args.json:
        print(dumps(_finite(result.to_json())))
    else:
        sys.stdout.write(result.table.to_csv(index=False, lineterminator="\n"))
    if result.errors and len(result.errors) == len(result.labels):
        _fail(args.progress, f"no series of the sweep succeeded; the reasons are in {args.out}")
        return EXIT_ERROR
    return EXIT_OK


def _tune(args: argparse.Namespace) -> int:
    from forecasting.experiment import dumps
    from forecasting.tuning import tune

    given = _given_flags(args.argv)
    if "models" in given:
        raise _UsageError("tune takes one --model, not --models")
    if "seeds" in given:
        raise _UsageError("tune runs one seed (--seed); --seeds is for compare")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise _UsageError("--timeout must be a positive number of seconds")
    if args.from_bundle is not None:
        candles, filled, _, _, read_notes, settings = _from_bundle(args)
    else:
        if args.data is None and args.exchange is None:
            raise _UsageError("one of the arguments --data --exchange is required")
        filled = None
        settings = _compare_settings(args)
        candles, source, _, read_notes = _compare_data(args)
        candles, mood_notes = _with_mood(args, candles, source, _settings_mood(settings))
        read_notes = [*read_notes, *mood_notes]
    progress = args.progress if args.progress.enabled else None
    result = tune(
        candles,
        args.model,
        settings,
        trials=args.trials,
        timeout=args.timeout,
        study=args.study,
        inner_folds=args.inner_folds,
        filled=filled,
        progress=progress,
    )
    args.progress.finish()
    if args.json:
        notes = list(dict.fromkeys([*read_notes, *result.notes]))
        print(dumps(_finite({**result.to_json(), "notes": notes})))
    else:
        for note in dict.fromkeys([*read_notes, *result.notes]):
            _note(note)
        for sentence in result.sentences():
            _note(sentence)
        sys.stdout.write(result.table().to_csv(index=False, lineterminator="\n"))
    return EXIT_OK


def _ablate(args: argparse.Namespace) -> int:
    from forecasting.ablation import feature_ablation
    from forecasting.experiment import dumps
    from forecasting.features import mood_kinds

    if "models" in _given_flags(args.argv):
        raise _UsageError("ablate tests one --model, not --models")
    if args.from_bundle is not None:
        candles, filled, _, _, read_notes, settings = _from_bundle(args)
    else:
        if args.data is None and args.exchange is None:
            raise _UsageError("one of the arguments --data --exchange is required")
        filled = None
        settings = _compare_settings(args)
        candles, source, _, read_notes = _compare_data(args)
        kinds = mood_kinds(args.add, *_settings_texts(settings))
        candles, mood_notes = _with_mood(args, candles, source, kinds)
        read_notes = [*read_notes, *mood_notes]
    progress = args.progress if args.progress.enabled else None
    result = feature_ablation(
        candles, settings, args.add, model=args.model, progress=progress, filled=filled
    )
    args.progress.finish()
    if args.json:
        document = result.to_json()
        notes = list(dict.fromkeys([*read_notes, *document["notes"]]))
        print(dumps(_finite({**document, "notes": notes})))
    else:
        for note in dict.fromkeys([*read_notes, *result.notes]):
            _note(note)
        _note(result.sentence)
        sys.stdout.write(result.metrics.rename_axis("model").to_csv(lineterminator="\n"))
    return EXIT_OK


def _backtest(args: argparse.Namespace) -> int:
    from forecasting.experiment import dumps
    from forecasting.strategy import run_strategy

    fee, fee_note = args.fee_bps, None
    if fee is None:
        fee, fee_note = _default_fee(args)
    settings = _strategy_settings(args, fee)
    result, _, read_notes = _experiment(args, future=False)
    strategy = run_strategy(
        result.backtest, result.candles, settings, settings_tried=args.settings_tried
    )
    if args.positions_out:
        args.positions_out.parent.mkdir(parents=True, exist_ok=True)
        strategy.positions_table().to_csv(args.positions_out, index=False, lineterminator="\n")
    document = strategy.to_json()  # its notes say what JSON cannot (unbounded fees)
    notes = [*read_notes, *([fee_note] if fee_note else []), *document["notes"]]
    notes = list(dict.fromkeys(notes))
    if args.json:
        print(
            dumps(
                _finite(
                    {
                        "settings": document["settings"],
                        "data": result.data,
                        "timing": TIMING,
                        "horizon": document["horizon"],
                        "periods_per_year": document["periods_per_year"],
                        "trials": document["trials"],
                        "metrics": document["strategies"],
                        "verdict": document["verdict"],
                        "notes": notes,
                    }
                )
            )
        )
    else:
        for note in notes:
            _note(note)
        _note(strategy.verdict.sentence)
        sys.stdout.write(strategy.metrics.rename_axis("strategy").to_csv(lineterminator="\n"))
    return EXIT_OK


def _nautilus(args: argparse.Namespace) -> int:
    from forecasting.nautilus import check_replayable, run_project, write_project

    # Settings it cannot replay are refused before any fee lookup or experiment runs.
    check_replayable(_strategy_settings(args, 0.0))
    fee, fee_note = args.fee_bps, None
    if fee is None:
        fee, fee_note = _default_fee(args)
    settings = _strategy_settings(args, fee)
    result, _, read_notes = _experiment(args, future=False)
    out = args.out or Path(f"nautilus-{args.model}")
    write_project(
        result, settings, args.model, out, with_models=False if args.signals_only else None
    )
    spec = json.loads((out / "instrument.json").read_text(encoding="utf-8"))
    ours = spec["strategy"]["ours"]
    document: dict[str, Any] = {"project": str(out), "ours": ours}
    if args.run:
        ran = run_project(out)
        document["nautilus"] = {"final_equity": ran["final_equity"], "trades": ran["trades"]}
    document["notes"] = [*read_notes, *([fee_note] if fee_note else [])]
    if args.json:
        print(json.dumps(_finite(document), indent=2))
        return EXIT_OK
    for note in document["notes"]:
        _note(note)
    written = ["README.md", "bars.csv", "instrument.json", "signals.csv", "run.py"]
    written += [name for name in ("folds.json", "models/") if (out / name.rstrip("/")).exists()]
    print(f"wrote {out}: {', '.join(written)}")
    print(f"ours:         final equity {ours['final_equity']:.6f}, {ours['trades']} trades")
    if "nautilus" in document:
        theirs = document["nautilus"]
        print(f"nautilus:     final equity {theirs['final_equity']:.6f}, {theirs['trades']} trades")
        print(f"reports:      {out / 'reports'} (account.csv, positions.csv, fills.csv)")
        _print_account(out / "reports" / "account.csv")
        _print_positions(out / "reports" / "positions.csv")
    return EXIT_OK


def _print_account(path: Path, last: int = 6) -> None:
    """NautilusTrader's account report under ours: its final balance per currency and
    its last balance changes (the whole report is in the CSV)."""
    import pandas as pd

    if not path.is_file():
        return
    report = pd.read_csv(path, index_col=0)
    if report.empty or not {"total", "currency"} <= set(report.columns):
        print("account (NautilusTrader): no balance")
        return
    final = report.groupby("currency", sort=False)["total"].last()
    balances = ", ".join(f"{total:.8f} {currency}" for currency, total in final.items())
    print(f"account (NautilusTrader): {len(report)} balance changes; final {balances}")
    shown_rows = report[["currency", "total", "free", "locked"]].tail(last)
    print(shown_rows.rename_axis("time").to_string())


def _print_positions(path: Path) -> None:
    """NautilusTrader's position report, its telling columns, under ours."""
    import pandas as pd

    if not path.is_file():
        return
    report = pd.read_csv(path)
    columns = [
        name
        for name in ("side", "quantity", "ts_opened", "avg_px_open", "avg_px_close", "realized_pnl")
        if name in report.columns
    ]
    if report.empty or not columns:
        print("positions (NautilusTrader): none")
        return
    print("positions (NautilusTrader):")
    print(report[columns].to_string(index=False))


# The timing convention, in every backtest report.
TIMING = (
    "The signal at origin t uses candles up to t's close; the position is entered at t's "
    "close (or, with --entry next_open, at t+1's open) and earns from candle t+1 on; fees "
    "and slippage are charged per side on every change of position."
)


def _default_fee(args: argparse.Namespace) -> tuple[float, str]:
    """The exchange's taker fee from ccxt's market data where known, else 10 bp."""
    from forecasting.data import create_exchange
    from forecasting.strategy import taker_fee_bps

    fallback = 10.0
    if args.exchange is None or args.symbol is None:
        return fallback, (
            f"Fees: {fallback:g} bp per side (Binance's spot taker fee; the data name no "
            "exchange). Set --fee-bps for yours."
        )
    client = create_exchange(args.exchange, _exchange_config(args.exchange_config))
    taker = taker_fee_bps(client, args.symbol)
    if taker is None:
        return fallback, (
            f"Fees: {fallback:g} bp per side ({args.exchange} publishes no taker fee for "
            f"{args.symbol} in ccxt). Set --fee-bps for yours."
        )
    return taker, (
        f"Fees: {taker:g} bp per side, {args.exchange}'s taker fee for {args.symbol} from "
        "ccxt's market data (no volume tier or discount). Set --fee-bps for yours."
    )


def _compare_data(args: argparse.Namespace) -> tuple[Any, dict, dict, list[str]]:
    """The candles of ``--data`` or ``--exchange``, their source, the selection that
    chose them and the notes on how they were read
    (:func:`forecasting.experiment.load_series`)."""
    from forecasting.experiment import load_series

    if args.data is None and not (args.symbol and args.timeframe):
        raise _UsageError("--exchange needs --symbol and --timeframe")
    return load_series(
        file=args.data,
        exchange=args.exchange,
        symbol=args.symbol,
        timeframe=args.timeframe,
        since=args.since,
        until=args.until,
        config=None if args.data is not None else _exchange_config(args.exchange_config),
        cache_dir=args.cache_dir,
    )


def _settings_texts(settings: Any) -> list[str]:
    """Every model's feature list in the settings (its features or regressors)."""
    return [
        value
        for given in settings.model_settings.values()
        if isinstance(given, dict)
        for name, value in given.items()
        if name in ("features", "regressors") and isinstance(value, str)
    ]


def _settings_mood(settings: Any) -> tuple[str, ...]:
    """The mood features any model's settings name (its features or regressors)."""
    from forecasting.features import mood_kinds

    return mood_kinds(*_settings_texts(settings))


def _with_mood(
    args: argparse.Namespace, candles: Any, source: dict, kinds: Sequence[str]
) -> tuple[Any, list[str]]:
    """The candles with the mood ``kinds`` joined as of each close, and notes on them.

    Raises
    ------
    DataUnavailable
        A kind asked for that could not be joined (offline, no perpetual, ...), saying why.
    """
    from forecasting.data import CandleCache, create_exchange
    from forecasting.data.mood import attach_mood
    from forecasting.errors import DataUnavailable

    kinds = [kind for kind in kinds if kind not in candles.columns]
    if not kinds:
        return candles, []

    def given(name: str) -> Any:
        return getattr(args, name, None)  # not every command has the exchange flags

    exchange_id = given("funding_exchange") or given("exchange")
    client, symbol = None, given("funding_symbol") or given("symbol")
    if "funding_rate" in kinds and not (exchange_id and symbol):
        raise _UsageError("funding_rate with --data needs --funding-exchange and --funding-symbol")
    if "funding_rate" in kinds:
        if given("funding_config") is not None:
            config = _exchange_config(given("funding_config"), "--funding-config")
        elif exchange_id == given("exchange"):
            config = _exchange_config(given("exchange_config"))
        else:
            config = None
        client = create_exchange(exchange_id, config)
    cache_dir = given("cache_dir")
    joined = attach_mood(
        candles,
        source.get("timeframe") or given("timeframe"),
        kinds,
        exchange=client,
        symbol=symbol,
        cache=CandleCache(cache_dir) if cache_dir else None,
    )
    if joined.unavailable:
        kind, reason = next(iter(joined.unavailable.items()))
        raise DataUnavailable(f"The {kind} feature is unavailable: {reason}")
    return joined.candles, list(joined.notes)


def _compare_settings(args: argparse.Namespace) -> Any:
    from forecasting.evaluation import BacktestSettings
    from forecasting.experiment import ExperimentSettings, parse_models
    from forecasting.ohlcv import parse_time

    model_settings = _json_object(args.settings, "--settings") or {}
    unknown = [str(key) for key in model_settings if key not in _MODEL_NAMES]
    if unknown:
        raise _UsageError(
            f"--settings is keyed by model name ({', '.join(_MODEL_NAMES)}); got "
            f"{', '.join(unknown)[:80]}. Nest a model's settings under its name, e.g. "
            '\'{"lstm": {"epochs": 10}}\''
        )
    settings = ExperimentSettings(
        models=parse_models(args.models),
        model_settings=model_settings,
        backtest=BacktestSettings(
            horizon=args.horizon,
            folds=args.folds,
            test_size=args.test_size,
            stride=args.stride,
            window=args.window,
            test_start=parse_time(args.test_start, name="--test-start"),
        ),
        seed=args.seed,
        loss=args.loss,
        seeds=_seeds(args.seeds),
    )
    settings.seed_list()  # a bad --seeds fails here, before any data is fitted
    return settings


# Flags --from-bundle refuses: the bundle holds the data, and its experiment is rerun as it was.
_BUNDLE_DATA_FLAGS = (
    "symbol", "timeframe", "since", "until", "exchange_config", "cache_dir",
    "funding_exchange", "funding_symbol", "funding_config",
)  # fmt: skip
_BUNDLE_SETTING_FLAGS = (
    "models", "horizon", "folds", "test_size", "test_start", "stride", "window", "seed",
    "seeds", "loss", "settings",
)  # fmt: skip


def _from_bundle(args: argparse.Namespace) -> tuple[Any, Any, dict, dict, list[str], Any]:
    """The candles, filled open times, source, selection, read notes and settings of a
    bundle, refusing flags that would change them."""
    from forecasting.bundle import read_bundle_data, read_bundle_experiment

    given = _given_flags(args.argv)
    for names, why in (
        (_BUNDLE_DATA_FLAGS, "takes the data from the bundle"),
        (_BUNDLE_SETTING_FLAGS, "reruns the bundle's experiment with its own settings"),
    ):
        clash = [name for name in names if name in given]
        if clash:
            flags = ", ".join("--" + name.replace("_", "-") for name in clash)
            raise _UsageError(
                f"--from-bundle {why}: drop {flags} (or run {args.command} on --data with them)"
            )
    raw = args.from_bundle.read_bytes()
    settings = read_bundle_experiment(raw)
    data = read_bundle_data(raw)
    if data is None:
        raise _UsageError(
            f"{args.from_bundle.name} carries no candles (it was written before bundles "
            "carried their data): rerun it with --data or --exchange and its settings"
        )
    settings.seed_list()
    return (
        data.candles,
        data.filled,
        data.source,
        data.selection,
        list(data.read_notes),
        settings,
    )


def _given_flags(argv: Sequence[str]) -> set[str]:
    """The flags given on the command line (their destinations), however abbreviated,
    whether or not their value equals the default."""
    parser = build_parser()
    commands = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    for command in commands.choices.values():
        for action in command._actions:
            action.default = argparse.SUPPRESS
            action.required = False
        for group in command._mutually_exclusive_groups:
            group.required = False
    return set(vars(parser.parse_args(argv))) - {"command", "handler"}


def _finite(document: dict[str, Any]) -> dict[str, Any]:
    from forecasting.experiment import finite_document

    return finite_document(document)


def _data_notes(data: Any) -> list[str]:
    from forecasting.experiment import read_notes

    return read_notes(data)


def _note(text: str) -> None:
    # Notes go to stderr, so that stdout stays the CSV or JSON a script reads.
    if text:
        print("note: " + " ".join(text.split()), file=sys.stderr)


def _positive(text: str) -> int:
    """An argparse ``type`` for a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {shown(text)}")
    return value


def _live(args: argparse.Namespace) -> int:
    import signal
    import threading

    from forecasting.data import CandleCache
    from forecasting.ledger import Ledger, default_ledger_path
    from forecasting.live import run_forever, run_once

    stop = threading.Event()
    options: dict[str, Any] = {
        "horizon": args.horizon,
        "settings": _json_object(args.settings, "--settings") or {},
        "seed": args.seed,
        "cache": CandleCache(args.cache_dir) if args.cache_dir else None,
        "config": _exchange_config(args.exchange_config),
        "history": args.history,
        "refit_every": args.refit_every,
        "progress": args.progress if args.progress.enabled else None,
        "should_stop": stop.is_set,
    }

    def show(report: Any) -> None:
        args.progress.finish()
        print(json.dumps(report.to_dict()) if args.json else report.summary(), flush=True)
        for model, why in report.failed.items():
            _note(f"{model} failed: {why}")

    path = args.ledger or default_ledger_path(args.cache_dir)
    with Ledger(path) as ledger:
        if args.once:
            report = run_once(
                args.exchange, args.symbol, args.timeframe, args.models, ledger=ledger, **options
            )
            show(report)
            # A model that failed fails the run, so that cron reports it.
            return EXIT_ERROR if report.failed else EXIT_OK
        # SIGTERM (a service manager, the Live page's Stop) ends the loop as Ctrl-C does:
        # after the current write, with the tracker marked stopped.
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            run_forever(
                args.exchange,
                args.symbol,
                args.timeframe,
                args.models,
                ledger=ledger,
                stop=stop,
                on_round=show,
                on_error=lambda exc: _note(f"round failed, tried again later: {exc}"),
                **options,
            )
        finally:
            signal.signal(signal.SIGTERM, previous)
    return EXIT_OK


def _ledger(args: argparse.Namespace) -> int:
    from forecasting.experiment import dumps, scores_json
    from forecasting.ledger import Ledger, default_ledger_path, timing_note

    path = args.ledger or default_ledger_path(args.cache_dir)
    if not Path(path).expanduser().is_file():
        raise _UsageError(
            f"There is no ledger at {path}: run `python -m forecasting live ...` first, or "
            "pass --ledger FILE."
        )
    with Ledger(path) as ledger:
        if args.check:
            return _ledger_check(ledger, args, path)
        exchange, symbol, timeframe = _ledger_series(ledger, args)
        series = {"exchange": exchange, "symbol": symbol, "timeframe": timeframe}
        tolerance = args.tolerance_ms
        if exchange is None:
            document: dict[str, Any] = {"ledger": str(path), "series": None}
            document.update(
                metrics={}, by_horizon={}, dm_tests=[], verdict={}, pairs=None, undefined={}
            )
            document.update(counts={}, waiting=0, trackers=[], late=[])
            document["notes"] = ["The ledger holds no forecasts yet."]
        else:
            late = _timing_check(ledger, tolerance, exchange, symbol, timeframe)
            backtest = ledger.backtest(exchange, symbol, timeframe, tolerance_ms=tolerance)
            document = {"ledger": str(path), "series": series}
            document.update(scores_json(backtest, loss=args.loss))
            counts = ledger.counts(exchange, symbol, timeframe, tolerance_ms=tolerance)
            document["counts"] = {
                model: {key: int(value) for key, value in row.items()}
                for model, row in counts.to_dict(orient="index").items()
            }
            document["waiting"] = int(counts["waiting"].sum()) if len(counts) else 0
            trackers = ledger.trackers(exchange, symbol, timeframe)
            document["trackers"] = [
                {
                    "id": row["id"],
                    "models": list(row["models"]),
                    "mode": row.get("mode"),
                    "host": row.get("host"),
                    "pid": row.get("pid"),
                    "state": row["state"],
                }
                for row in trackers.to_dict(orient="records")
            ]
            document["late"] = _late_rows(late)
            notes = [n for model_notes in backtest.notes.values() for n in model_notes]
            notes.append(timing_note(len(late), timeframe, tolerance))
            document["notes"] = list(dict.fromkeys(notes))
    if args.json:
        print(dumps(_finite(document)))
        return EXIT_OK
    for note in document["notes"]:
        _note(note)
    import pandas as pd

    table = pd.DataFrame.from_dict(document["metrics"], orient="index")
    sys.stdout.write(table.rename_axis("model").to_csv(lineterminator="\n"))
    return EXIT_OK


def _late_rows(late: Any) -> list[dict[str, Any]]:
    """The timing check's rows as JSON: model, times in ISO 8601, and the problem."""
    return [
        {
            "model": row["model"],
            "origin": _iso_ms(int(row["origin_ms"])),
            "target": _iso_ms(int(row["target_ms"])),
            "made_at": _iso_ms(int(row["made_at_ms"])),
            "problem": row["problem"],
        }
        for row in late.to_dict(orient="records")
    ]


def _timing_check(ledger: Any, tolerance_ms: int | None, *series: str | None) -> Any:
    """The ledger's timing check; a tolerance it refuses is a usage error (exit 2), never
    confused with a forecast found late (exit 1)."""
    exchange, symbol, timeframe = series
    try:
        return ledger.check(tolerance_ms, exchange=exchange, symbol=symbol, timeframe=timeframe)
    except ConfigurationError as exc:
        raise _UsageError(str(exc)) from None


def _ledger_check(ledger: Any, args: argparse.Namespace, path: Path) -> int:
    """``ledger --check``: the timing check over the series the flags name (all of the
    ledger's without flags); exit 1 when any forecast was not written in time."""
    from forecasting.experiment import dumps
    from forecasting.ledger import timing_note

    forecasts = ledger.forecasts(args.exchange, args.symbol, args.timeframe)
    named = any(getattr(args, name) for name in ("exchange", "symbol", "timeframe"))
    if named and forecasts.empty:
        # A typo in a flag must not read as a clean ledger (exit 2, not 0).
        raise _UsageError(
            "The ledger holds no forecasts for that series: check --exchange, --symbol and "
            "--timeframe (or leave them out to check the whole ledger)."
        )
    late = _timing_check(ledger, args.tolerance_ms, args.exchange, args.symbol, args.timeframe)
    timeframes = sorted(set(forecasts["timeframe"])) if len(forecasts) else []
    timeframe = timeframes[0] if len(timeframes) == 1 else None
    note = timing_note(len(late), timeframe, args.tolerance_ms)
    if args.json:
        document = {
            "ledger": str(path),
            "forecasts": len(forecasts),
            "late": _late_rows(late),
            "ok": bool(late.empty),
            "notes": [note],
        }
        print(dumps(document))
    else:
        _note(f"{len(forecasts)} forecasts checked. {note}")
        for row in _late_rows(late):
            print(
                f"{row['model']}: origin {row['origin']}, target {row['target']}, written "
                f"{row['made_at']}: {row['problem']}"
            )
    return EXIT_OK if late.empty else EXIT_ERROR


def _ledger_series(
    ledger: Any, args: argparse.Namespace
) -> tuple[str | None, str | None, str | None]:
    """The one series the flags name in the ledger (all ``None`` when it is empty)."""
    every = ledger.forecasts()[["exchange", "symbol", "timeframe"]].drop_duplicates()
    for name in ("exchange", "symbol", "timeframe"):
        value = getattr(args, name)
        if value is not None:
            every = every[every[name] == value]
    rows = list(every.itertuples(index=False, name=None))
    if len(rows) == 1:
        return rows[0]
    if not rows:
        if any(getattr(args, name) for name in ("exchange", "symbol", "timeframe")):
            raise _UsageError(
                "The ledger holds no forecasts for that series: run `python -m forecasting "
                "live` for it first, or check --exchange, --symbol and --timeframe."
            )
        return None, None, None
    listed = ", ".join(" ".join(row) for row in rows[:5])
    raise _UsageError(
        f"The ledger holds {len(rows)} series ({listed}): choose one with --exchange, "
        "--symbol and --timeframe."
    )


def _seeds(text: str | None) -> int | tuple[int, ...]:
    from forecasting.experiment import DEFAULT_SEEDS

    if text is None:
        return DEFAULT_SEEDS
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        values = [int(part) for part in parts]
    except ValueError as exc:
        raise _UsageError(
            f"--seeds is a count (3) or a list of whole numbers (42,7,99), got {text!r}"
        ) from exc
    if not values:
        raise _UsageError("--seeds is empty: give a count (3) or a list (42,7,99)")
    return values[0] if len(values) == 1 and "," not in text else tuple(values)


def _json_object(text: str | None, flag: str) -> dict[str, Any] | None:
    if not text:
        return None
    value = _json_loads(text, flag)
    if not isinstance(value, dict):
        raise _UsageError(f"{flag} must be a JSON object")
    return value


def _exchange_config(text: str | None, flag: str = "--exchange-config") -> dict[str, Any] | None:
    if not text:
        return None
    if text.startswith("@"):
        source = Path(text[1:])
        try:
            text = source.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            # Not an OSError, so main() would not catch it: a traceback instead of a line.
            raise _UsageError(f"{flag} file {source} is not UTF-8 text") from exc
    config = _json_loads(text, flag)
    if not isinstance(config, dict):
        raise _UsageError(f'{flag} must be a JSON object, e.g. \'{{"apiKey": "..."}}\'')
    return config


def _json_loads(text: str, flag: str) -> Any:
    """JSON from a flag, or a usage error in one line (whatever the text holds)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _UsageError(f"{flag} is not valid JSON: {exc.msg} at column {exc.colno}") from exc
    except RecursionError as exc:
        raise _UsageError(f"{flag} is nested too deeply to read") from exc
    except ValueError as exc:  # a number with more digits than Python reads
        raise _UsageError(f"{flag} is not usable JSON: {' '.join(str(exc).split())}") from exc


class _UsageError(ForecastingError):
    pass


class _Progress:
    """``fetched N of ~M candles`` redrawn in place on stderr.

    Parameters
    ----------
    enabled
        Draw at all; when False every call does nothing.
    """

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._drawn = False

    def __call__(self, stage: str, fraction: float, details: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        if stage == "fetch":
            text = f"fetched {details.get('done', 0)} of ~{details.get('expected', 0)} candles"
        else:
            text = f"{fraction:4.0%} {details.get('message', stage):<50}"
        print(f"\r{text}", end="", file=sys.stderr, flush=True)
        self._drawn = True

    def finish(self) -> None:
        """End the progress line, if one was drawn, so what follows starts a new line."""
        if self._drawn:
            print(file=sys.stderr)
            self._drawn = False
