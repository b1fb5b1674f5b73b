"""One experiment: models, settings and data in; backtest, metrics, tests and forecasts out.

The Compare page and ``python -m forecasting compare`` both run :func:`run_experiment`,
so a number on the screen and the same number in a script come from the same code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from forecasting.budget import estimate_experiment, model_cost
from forecasting.data.quality import dropped_nonpositive, nonpositive_note
from forecasting.errors import Cancelled, ConfigurationError
from forecasting.evaluation import (
    Backtest,
    BacktestSettings,
    Verdict,
    copy_check,
    default_workers,
    dm_table,
    score,
    score_by_horizon,
    undefined_metrics,
    verdicts,
    walk_forward,
)
from forecasting.evaluation.significance import LOSSES
from forecasting.models import MODELS, Forecast, make_model
from forecasting.progress import ProgressCallback, StopCheck, report, scaled
from forecasting.ranges import HORIZON

__all__ = [
    "DEFAULT_LOSS",
    "DEFAULT_MODELS",
    "DEFAULT_SEEDS",
    "DEFAULT_STRIDE",
    "MAX_SEEDS",
    "ExperimentResult",
    "ExperimentSettings",
    "data_hash",
    "dumps",
    "finite_document",
    "json_record",
    "load_series",
    "parse_models",
    "read_notes",
    "run_experiment",
    "scores_json",
]

DEFAULT_MODELS: tuple[str, ...] = (
    "naive",
    "drift",
    "seasonal_naive",
    "moving_average",
    "prophet",
    "lstm",
)
DEFAULT_LOSS = "absolute"
METRIC_NAMES = {
    "mae": "MAE",
    "rmse": "RMSE",
    "smape": "sMAPE",
    "coverage": "The coverage",
    "mase": "MASE",
    "mae_vs_naive": "The MAE against naive's",
    "mape": "MAPE",
    "directional_accuracy": "Directional accuracy",
    "directional_pvalue": "The directional p-value",
    "width": "The interval width",
    "interval_score": "The interval score",
}
# Candles between origins in a default experiment. Prophet is refitted at every origin
# (about 0.4-0.5 s each on 3000 daily candles), and origins a candle apart share 6 of their 7
# targets: every third candle gives the joint test 5 degrees of freedom where every
# candle gives 8, for a third of the refits.
DEFAULT_STRIDE = 3
# Seeds the LSTM runs in a default experiment. A verdict one seed can flip is fragile, so
# the page offers more; each further seed costs three more LSTM fits (about 4 CPU-s in
# all on the benchmark machine, docs/benchmarks.md).
DEFAULT_SEEDS = 1
MAX_SEEDS = 20


@dataclass(frozen=True)
class ExperimentSettings:
    """Everything that decides an experiment's numbers, apart from the data.

    Parameters
    ----------
    models
        Model aliases to compare; naive is always added (every comparison needs it).
    model_settings
        Per alias, settings passed to the model (``{"lstm": {"epochs": 20}}``).
    backtest
        The walk-forward layout (horizon, folds, test size, stride, window); by default
        :class:`BacktestSettings` with an origin every :data:`DEFAULT_STRIDE` candles.
    seed
        Seed for every model that has one; the seed of the forecasts in the tables.
    loss
        ``"absolute"`` or ``"squared"``: the one loss of the verdict (its ratio and its
        test) and of the per-step Diebold-Mariano tests.
    seeds
        Seeds for models whose point forecast depends on the seed (the LSTM): a count
        ``N`` runs ``seed, seed + 1, ..., seed + N - 1``; a list runs those seeds (with
        ``seed`` first, added if absent). The verdict holds only if it holds for each.
    """

    models: tuple[str, ...] = DEFAULT_MODELS
    model_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    backtest: BacktestSettings = field(
        default_factory=lambda: BacktestSettings(stride=DEFAULT_STRIDE)
    )
    seed: int = 42
    loss: str = DEFAULT_LOSS
    seeds: int | tuple[int, ...] = DEFAULT_SEEDS

    def seed_list(self) -> tuple[int, ...]:
        """The seeds run, the experiment's own ``seed`` first.

        Raises
        ------
        ConfigurationError
            For a count below 1 or above :data:`MAX_SEEDS`, or seeds that are not
            whole numbers.
        """
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int | tuple | list):
            raise ConfigurationError(f"seeds is a count or a list of seeds, got {self.seeds!r}.")
        if isinstance(self.seeds, int):
            if not 1 <= self.seeds <= MAX_SEEDS:
                raise ConfigurationError(
                    f"seeds must be between 1 and {MAX_SEEDS}, got {self.seeds}."
                )
            return tuple(int(self.seed) + k for k in range(self.seeds))
        if any(isinstance(s, bool) or not isinstance(s, int) for s in self.seeds):
            raise ConfigurationError(f"seeds must be whole numbers, got {list(self.seeds)}.")
        chosen = tuple(dict.fromkeys([int(self.seed), *(int(s) for s in self.seeds)]))
        if len(chosen) > MAX_SEEDS:
            raise ConfigurationError(f"At most {MAX_SEEDS} seeds, got {len(chosen)}.")
        return chosen

    def build_models(self) -> dict[str, Any]:
        """Unfitted models by alias, with the horizon and seed applied where they exist.

        Raises
        ------
        ConfigurationError
            For an unknown alias, settings a model does not have or outside their ranges
            (see :meth:`forecasting.models.Forecaster.check_settings`), or an unknown loss.
        """
        if self.loss not in LOSSES:
            raise ConfigurationError(f"Unknown loss {self.loss!r}: use one of {', '.join(LOSSES)}.")
        HORIZON.check(self.backtest.horizon, "horizon")
        aliases = list(dict.fromkeys(["naive", *self.models]))
        built = {}
        for alias in aliases:
            given = self.model_settings.get(alias)
            given = {} if given is None else given  # JSON null: the defaults
            # Settings arrive as JSON from the command line: {"lstm": 5} is a user's
            # mistake to report, not a TypeError to crash on.
            if not isinstance(given, Mapping):
                raise ConfigurationError(
                    f"Settings for {alias} must be an object of name: value pairs, e.g. "
                    f'{{"{alias}": {{"level": 0.8}}}}; got {given!r}.'
                )
            settings = dict(given)
            capabilities = MODELS[alias].capabilities if alias in MODELS else None
            if capabilities is not None and capabilities.trained_horizon:
                # A horizon given as text (or 1e999) is refused, not an int() traceback.
                given_horizon = settings.get("horizon", self.backtest.horizon)
                HORIZON.check(given_horizon, "horizon", MODELS[alias].title)
                settings["horizon"] = max(int(given_horizon), self.backtest.horizon)
            if capabilities is not None and capabilities.seeded:
                settings["seed"] = self.seed
            model = make_model(alias, **settings)
            model.check_settings()  # before any data is read or fitted
            built[alias] = model
        return built

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings, with every model's full parameter set."""
        return {
            "models": {alias: model.get_params() for alias, model in self.build_models().items()},
            "backtest": self.backtest.to_dict(),
            "seed": self.seed,
            "loss": self.loss,
            "seeds": list(self.seed_list()),
        }


@dataclass
class ExperimentResult:
    """What an experiment produced."""

    settings: ExperimentSettings
    backtest: Backtest
    metrics: pd.DataFrame
    by_horizon: pd.DataFrame
    dm_tests: pd.DataFrame
    copy: pd.DataFrame
    future: dict[str, Forecast]
    data: dict[str, Any]
    verdict: dict[str, Verdict] = field(default_factory=dict)
    undefined: dict[str, dict[str, str]] = field(default_factory=dict)
    candles: pd.DataFrame | None = field(default=None, repr=False, compare=False)
    """The candles the experiment ran on (a bundle carries them)."""
    filled: pd.DatetimeIndex | None = field(default=None, repr=False, compare=False)
    """Open times of the candles that were filled in, not traded."""

    @property
    def notes(self) -> list[str]:
        """What the reader must know about these numbers, one sentence each."""
        out = []
        pairs = self.backtest.pairs
        if pairs is not None and pairs.missing_target:
            out.append(
                f"{pairs.missing_target} (origin, target) pairs were left out for every model: "
                "their target candle is missing from the data."
            )
        if pairs is not None and (pairs.filled_target or pairs.filled_origin):
            out.append(
                f"Filled candles are never scored: {pairs.filled_target} pairs with a filled "
                f"target and {pairs.filled_origin} filled origins were left out for every model."
            )
        undefined: dict[tuple[str, str], list[str]] = {}
        for model, reasons in self.undefined.items():
            for metric, reason in reasons.items():
                undefined.setdefault((metric, reason), []).append(model)
        # One sentence per reason and models: "The interval width and the interval score
        # are unbounded for lstm: ...", not one per metric.
        sentences: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        for (metric, reason), models in undefined.items():
            sentences.setdefault((reason, tuple(models)), []).append(metric)
        for (reason, models), metrics in sentences.items():
            kind, _, because = reason.partition(": ")
            names = [METRIC_NAMES.get(m, m) for m in metrics]
            names = [names[0]] + [n.replace("The ", "the ", 1) for n in names[1:]]
            verb = "is" if len(names) == 1 else "are"
            out.append(f"{' and '.join(names)} {verb} {kind} for "
                       f"{', '.join(models)}: {because}.")  # fmt: skip
        if len(self.settings.seed_list()) > 1 and not self.backtest.seed_forecasts:
            out.append(
                f"{len(self.settings.seed_list())} seeds were asked for, but no model run "
                "depends on its seed (only the LSTM does): each ran once."
            )
        dropped = dropped_nonpositive(self.candles) if self.candles is not None else ()
        if len(dropped):
            out.append(nonpositive_note(dropped))
        # A note several models share is said once, naming them all.
        by_note: dict[str, list[str]] = {}
        for model, found in self.backtest.notes.items():
            for note in dict.fromkeys(found):
                by_note.setdefault(note, []).append(model)
        for model, forecast in self.future.items():
            for note in dict.fromkeys(forecast.notes):
                if note not in self.backtest.notes.get(model, []):
                    by_note.setdefault(note, []).append(f"{model} (next candles)")
        out.extend(f"{', '.join(models)}: {note}" for note, models in by_note.items())
        return out

    def to_json(self) -> dict[str, Any]:
        """The ``compare --json`` document."""
        # to_dict(orient="index") keeps each column's type; iterrows would turn a row of
        # mixed columns into floats, and counts (n, direction_calls) would read 39.0.
        scores = _scores_document(
            self.metrics,
            self.by_horizon,
            self.dm_tests,
            self.verdict,
            self.backtest,
            self.undefined,
        )
        return {
            "settings": self.settings.to_dict(),
            "data": self.data,
            "metrics": scores["metrics"],
            "by_horizon": scores["by_horizon"],
            "dm_tests": scores["dm_tests"],
            "copy_check": {m: json_record(r) for m, r in self.copy.to_dict(orient="index").items()},
            "future": {alias: f.to_records() for alias, f in self.future.items()},
            "verdict": scores["verdict"],
            "pairs": scores["pairs"],
            "undefined": scores["undefined"],
            "notes": self.notes,
        }

    def forecasts_table(self) -> pd.DataFrame:
        """``fold, cutoff, origin, timestamp, model, y, yhat, lower, upper, step`` rows."""
        columns = ["fold", "cutoff", "origin", "timestamp", "model", "y", "yhat", "lower", "upper"]
        table = self.backtest.forecasts[[*columns, "step"]].copy()
        for column in ("cutoff", "origin", "timestamp"):
            table[column] = table[column].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        return table


def scores_json(backtest: Backtest, *, loss: str = "absolute") -> dict[str, Any]:
    """The scores of any backtest as ``compare --json`` gives them, by the same code.

    For forecasts made elsewhere (the live ledger's, see
    :meth:`forecasting.ledger.Ledger.backtest`): ``metrics`` (pooled, one object per
    model), ``by_horizon``, ``dm_tests``, ``verdict`` (against naive, with ``loss``),
    ``pairs`` and ``undefined``, with the keys and meaning of ``compare --json``.
    """
    if loss not in LOSSES:
        raise ConfigurationError(f"The loss is {loss!r}; use one of {', '.join(LOSSES)}.")
    metrics = score(backtest)
    return _scores_document(
        metrics,
        score_by_horizon(backtest),
        dm_table(backtest, loss=loss),
        verdicts(backtest, loss=loss),
        backtest,
        _with_overflow(undefined_metrics(backtest), metrics),
    )


def _scores_document(
    metrics: pd.DataFrame,
    by_horizon: pd.DataFrame,
    dm_tests: pd.DataFrame,
    verdict: Mapping[str, Verdict],
    backtest: Backtest,
    undefined: dict[str, dict[str, str]],
) -> dict[str, Any]:
    steps: dict[str, dict[str, Any]] = {}
    for (model, step), row in by_horizon.to_dict(orient="index").items():
        steps.setdefault(model, {})[str(step)] = json_record(row)
    return {
        "metrics": {m: json_record(r) for m, r in metrics.to_dict(orient="index").items()},
        "by_horizon": steps,
        "dm_tests": [json_record(r) for r in dm_tests.to_dict(orient="records")],
        "verdict": {name: v.to_dict() for name, v in verdict.items()},
        "pairs": backtest.pairs.to_dict() if backtest.pairs else None,
        "undefined": undefined,
    }


def data_hash(candles: pd.DataFrame) -> str:
    """SHA-256 of the candles' timestamps and values, as they are used."""
    hashed = pd.util.hash_pandas_object(candles, index=True).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def read_notes(data: Any) -> list[str]:
    """What a reader must know about how a CSV was read: its layout (the volume column
    used, rows reordered, epoch units mixed, the day/month rule, conflicting duplicates)
    and the rows it lost (zero or negative prices), one sentence each."""
    notes = list(getattr(data, "notes", ()))
    dropped = getattr(data, "nonpositive", ())
    if len(dropped):
        notes.append(nonpositive_note(pd.DatetimeIndex(dropped)))
    return [note for note in notes if note]


def load_series(
    *,
    file: str | os.PathLike[str] | None = None,
    exchange: str | None = None,
    symbol: str | None = None,
    timeframe: str | None = None,
    since: str | None = None,
    until: str | None = None,
    config: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any], list[str]]:
    """The candles of a CSV ``file`` or of an exchange series, as an experiment records them.

    Returns
    -------
    tuple
        The candles; their ``source`` (what :func:`run_experiment` records: ``csv`` with the
        file's name, format and timeframe, or ``exchange`` with exchange, symbol and
        timeframe); the ``selection`` that chose them (a bundle's ``data.json``: the source
        plus dates and ``fill_gaps``); the notes on how they were read (:func:`read_notes`).

    Raises
    ------
    ForecastingError
        Whatever the reader or the exchange raised (a bad file, an unknown symbol, ...).
    """
    from forecasting.data import CandleCache, load_exchange_candles, read_ohlcv_csv
    from forecasting.ohlcv import parse_time

    notes: list[str] = []
    if file is not None:
        data = read_ohlcv_csv(file)
        notes = read_notes(data)
        candles = data.candles
        source: dict[str, Any] = {
            "source": "csv",
            "file": Path(file).name,
            "format": getattr(data, "format", "CSV"),
            "timeframe": getattr(data, "timeframe", None),
        }
        selection = {**source, "calendar": getattr(data, "calendar", "24/7")}
    else:
        candles = load_exchange_candles(
            str(exchange),
            str(symbol),
            str(timeframe),
            parse_time(since, name="--since"),
            parse_time(until, name="--until"),
            config=config,
            cache=CandleCache(cache_dir) if cache_dir else None,
        )
        source = {"source": "exchange", "exchange": exchange, "symbol": symbol,
                  "timeframe": timeframe}  # fmt: skip
        selection = {**source, "since": since, "until": until}
    if len(candles):
        selection.update(start=candles.index[0].date(), end=candles.index[-1].date())
    selection["fill_gaps"] = False
    return candles, source, selection, notes


def run_experiment(
    candles: pd.DataFrame,
    settings: ExperimentSettings,
    *,
    source: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    future: bool = True,
    filled: pd.DatetimeIndex | None = None,
    workers: int | None = None,
) -> ExperimentResult:
    """Backtest every model on the same folds, score them, test them, forecast the future.

    Parameters
    ----------
    candles
        The OHLCV frame.
    settings
        Models, their settings, the backtest layout, the seeds and the loss.
    source
        Where the data came from (exchange, symbol, ...), recorded in the result.
    progress
        ``progress(stage, fraction, details)`` (see :mod:`forecasting.progress`): the
        backtest (stage ``"backtest"``) and each model's final refit on all data (stage
        ``"refit"``) take shares of the bar by their estimated cost
        (:func:`~forecasting.budget.estimate_experiment`), never by their number.
    should_stop
        Polled between steps; True raises :class:`~forecasting.errors.Cancelled`.
    future
        Also refit every model on all the data and forecast the next ``horizon`` candles.
    filled
        Open times of candles that were filled in (not traded): they may feed the
        models, but are never an origin or a target.
    workers
        Threads for the backtest (default: up to two). The numbers do not depend on it.
    """
    models = settings.build_models()
    seeds = settings.seed_list()
    workers = default_workers() if workers is None else int(workers)
    stop_refits = threading.Event()

    def refit(alias: str) -> Forecast:
        def stopped() -> bool:
            return stop_refits.is_set() or (should_stop is not None and bool(should_stop()))

        if stopped():
            raise Cancelled("The experiment was cancelled.")
        model = models[alias].clone().fit(candles, should_stop=stopped)
        return model.predict(settings.backtest.horizon)

    # The bar's shares by estimated cost (forecasting.budget's model): the backtest's
    # part, then each model's refit on all the data.
    refit_cost = {
        alias: model_cost(alias, m, [], len(candles), 1).seconds for alias, m in models.items()
    }
    if future:
        whole = estimate_experiment(settings, candles).seconds
        refits = sum(refit_cost.values())
        backtest_share = (whole - refits) / whole if whole > 0 else 0.9
    else:
        backtest_share = 1.0
    done_share = [backtest_share]
    # The refits on all the data run beside the backtest, one at a time, on a thread of
    # their own: they need nothing from it. Their progress is reported after it.
    with ThreadPoolExecutor(max_workers=1) as side:
        pending = [(alias, side.submit(refit, alias)) for alias in models] if future else []
        try:
            backtest = walk_forward(
                models,
                candles,
                settings.backtest,
                progress=scaled(progress, 0.0, backtest_share),
                should_stop=should_stop,
                excluded=filled,
                seeds=seeds,
                workers=workers,
            )
            forecasts: dict[str, Forecast] = {}
            refits = sum(refit_cost.values())
            for alias, job in pending:
                if should_stop is not None and should_stop():
                    raise Cancelled("The experiment was cancelled.")
                forecasts[alias] = job.result()
                share = refit_cost[alias] / refits if refits > 0 else 1 / len(pending)
                done_share[0] = min(1.0, done_share[0] + (1 - backtest_share) * share)
                report(
                    progress,
                    "refit",
                    done_share[0],
                    message=f"refit on all data: {alias}",
                    model=alias,
                )
        except BaseException:
            stop_refits.set()
            for _, job in pending:
                job.cancel()
            raise
    data = {
        **dict(source or {}),
        "candles": len(candles),
        "first": candles.index[0].isoformat(),
        "last": candles.index[-1].isoformat(),
        "sha256": data_hash(candles),
    }
    if filled is not None and len(filled):
        data["filled"] = len(filled)
    dropped = dropped_nonpositive(candles)
    if len(dropped):
        data["nonpositive"] = len(dropped)
    metrics = score(backtest)
    return ExperimentResult(
        settings=settings,
        backtest=backtest,
        metrics=metrics,
        by_horizon=score_by_horizon(backtest),
        dm_tests=dm_table(backtest, loss=settings.loss),
        copy=copy_check(
            backtest,
            definitions={alias: model.capabilities.definition for alias, model in models.items()},
        ),
        future=forecasts,
        data=data,
        verdict=verdicts(backtest, loss=settings.loss),
        undefined=_with_overflow(undefined_metrics(backtest), metrics),
        candles=candles,
        filled=filled,
    )


# Why a metric is null in JSON when its value overflowed (closes near the largest float).
OVERFLOW = "not finite: the prices are too large to compute with"


def _with_overflow(
    undefined: dict[str, dict[str, str]], metrics: pd.DataFrame
) -> dict[str, dict[str, str]]:
    """``undefined`` plus a reason for every pooled metric that came out infinite and has
    none yet: in JSON it is null, and the reader is told why."""
    out = {model: dict(reasons) for model, reasons in undefined.items()}
    for model, row in metrics.to_dict(orient="index").items():
        for metric, value in row.items():
            infinite = isinstance(value, float) and math.isinf(value)
            if infinite and metric not in out.get(model, {}):
                out.setdefault(model, {})[metric] = OVERFLOW
    return out


def parse_models(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Model aliases from ``"naive,prophet,lstm"``; ``None`` gives every model."""
    if text is None:
        return DEFAULT_MODELS
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(dict.fromkeys(item.strip() for item in items if item.strip()))


def json_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe values: NaN and infinities become null, numpy scalars plain Python."""
    out = {}
    for key, value in record.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out


def finite_document(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with every number that is not finite replaced by null, and a note.

    The documents null what they know to be undefined themselves, with its reason; this
    is the last guard, so that what is printed is always valid JSON (``Infinity`` and
    ``NaN`` are not), and the note says where numbers were too large to compute with.
    """
    where: list[str] = []

    def clean(value: Any, path: str) -> Any:
        if isinstance(value, Mapping):
            return {key: clean(item, f"{path}.{key}" if path else str(key))
                    for key, item in value.items()}  # fmt: skip
        if isinstance(value, list | tuple):
            return [clean(item, f"{path}[{i}]") for i, item in enumerate(value)]
        if hasattr(value, "item") and not isinstance(value, str | bytes):
            value = value.item()  # a numpy scalar
        if isinstance(value, float) and not math.isfinite(value):
            where.append(path)
            return None
        return value

    cleaned = clean(document, "")
    if where and isinstance(cleaned.get("notes"), list):
        listed = ", ".join(where[:5]) + (f" and {len(where) - 5} more" if len(where) > 5 else "")
        cleaned["notes"].append(
            f"{len(where)} numbers are not finite (too large to compute with) and are shown "
            f"as null: {listed}."
        )
    return cleaned


def dumps(document: Any) -> str:
    """JSON text of a document from :meth:`ExperimentResult.to_json`."""
    return json.dumps(document, indent=2, allow_nan=False, default=str)
