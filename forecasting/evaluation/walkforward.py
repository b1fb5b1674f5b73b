"""Walk-forward evaluation, written once for every model.

The test period (the last ``test_size`` candles, or everything from ``test_start``) is
split into ``folds`` consecutive folds. For each fold every model is fitted on the
candles up to the fold's cutoff only (all earlier candles, or the last ``window`` of
them), then forecasts ``horizon`` candles ahead from every origin in the fold (every
``stride`` candles), from exactly the actual candles up to that origin: a model that
conditions on new candles reads them (``predict(horizon, history=)``); one that cannot
(Prophet) is refitted on them at every origin, each refit warm-started from the
previous origin's (see :class:`~forecasting.models.base.Capabilities`). Features,
scalers and intervals are the models' own, fitted inside ``fit`` on the training
candles: nothing after an origin is ever passed to a model.

Steps are time, not rows: the target of step ``k`` from an origin is the candle ``k``
timeframes after it. Every model gets exactly the same (origin, target) pairs, decided
here from the data's index before any model runs. A pair whose target candle is missing
(a gap) is left out for every model, and so is any pair whose origin or target is a
candle that was filled in rather than traded; :class:`Pairs` counts what was left out.

::

    candles:  [--------------- train ---------------][ fold 1 ][ fold 2 ][ fold 3 ]
                                              cutoff ^ origins: cutoff, cutoff+stride, ...
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from forecasting.budget import model_cost
from forecasting.errors import Cancelled, ConfigurationError, InsufficientHistory
from forecasting.models.base import Forecaster
from forecasting.ohlcv import grid_positions, infer_calendar, infer_timeframe
from forecasting.progress import ProgressCallback, StopCheck, report

__all__ = [
    "Backtest",
    "BacktestSettings",
    "Fold",
    "Pairs",
    "forecast_fold",
    "make_folds",
    "pair_layout",
    "walk_forward",
]

FORECAST_COLUMNS = [
    "fold",
    "cutoff",
    "origin",
    "timestamp",
    "step",
    "model",
    "y",
    "yhat",
    "lower",
    "upper",
    "y_origin",
]


@dataclass(frozen=True)
class BacktestSettings:
    """How a walk-forward backtest is laid out.

    Parameters
    ----------
    horizon
        Candles ahead forecast from each origin.
    folds
        Consecutive folds the test period is split into; models are refitted per fold.
    test_size
        Candles in the test period (the last ones). Ignored when ``test_start`` is set.
    test_start
        First candle of the test period, instead of ``test_size`` (anything
        ``pd.Timestamp`` reads; a time without a zone is UTC).
    stride
        Candles between consecutive origins within a fold.
    window
        ``None`` for an expanding training window (all candles before the cutoff), or
        the number of most recent candles to train on (rolling; at least 2).
    """

    horizon: int = 7
    folds: int = 3
    test_size: int = 120
    test_start: pd.Timestamp | str | None = None
    stride: int = 1
    window: int | None = None

    def __post_init__(self) -> None:
        # A date typed as text, or without a time zone, means UTC as everywhere else in
        # the package: the candles' index is UTC, and comparing a naive timestamp with
        # it raises a TypeError (and a string has no ``isoformat`` for ``to_dict``).
        if self.test_start is not None:
            try:
                start = pd.Timestamp(self.test_start)
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(
                    f"The test period's start {self.test_start!r} is not a date."
                ) from exc
            start = start.tz_localize("UTC") if start.tz is None else start.tz_convert("UTC")
            object.__setattr__(self, "test_start", start)

    def to_dict(self) -> dict:
        """JSON-ready settings."""
        return {
            "horizon": self.horizon,
            "folds": self.folds,
            "test_size": self.test_size,
            "test_start": None if self.test_start is None else self.test_start.isoformat(),
            "stride": self.stride,
            "window": self.window,
        }


@dataclass(frozen=True)
class Fold:
    """One fold: where training stops and which origins forecast.

    Attributes
    ----------
    number
        1-based.
    train_start, cutoff
        Positions (in the candles) of the first and last training candle.
    origins
        Positions of the last candle observed at each forecast.
    end
        Position after the fold's last target-region candle.
    """

    number: int
    train_start: int
    cutoff: int
    origins: tuple[int, ...]
    end: int


@dataclass(frozen=True)
class Pairs:
    """What the (origin, target) layout scored and left out, counted over every fold.

    Attributes
    ----------
    scored
        Pairs every model forecast and is scored on.
    missing_target
        Pairs left out because the target candle is missing from the data (a gap).
    filled_target
        Pairs left out because the target is a filled (invented) candle.
    filled_origin
        Origins left out (with all their steps) because the origin is a filled candle.
    """

    scored: int
    missing_target: int = 0
    filled_target: int = 0
    filled_origin: int = 0

    def to_dict(self) -> dict[str, int]:
        """JSON-ready counts."""
        return asdict(self)


@dataclass
class Backtest:
    """Every model's forecasts on the same (origin, target) pairs, and how they were made.

    Attributes
    ----------
    forecasts
        One row per model, origin and target: ``fold, cutoff, origin, timestamp, step,
        model, y, yhat, lower, upper, y_origin`` (prices; ``y_origin`` is the close at
        the origin).
    folds
        The folds.
    settings
        The layout used.
    naive_scale
        Per fold, the mean absolute change between training candles one timeframe
        apart (filled candles left out): MASE's scale. ``nan`` when the training closes
        never change.
    levels
        Interval level per model (``None`` where a model has no interval).
    pairs
        How many (origin, target) pairs were scored, and how many were left out.
    seed_forecasts
        For models whose point forecast depends on the seed, the forecast rows of every
        further seed run, by model and seed (the same columns and pairs as
        ``forecasts``, which holds the model's own seed).
    notes
        Per model, what its forecasts said the reader must know (deduplicated).
    model_seeds
        Per model, the seed of the rows in ``forecasts`` (``None`` without a seed).
    """

    forecasts: pd.DataFrame
    folds: list[Fold]
    settings: BacktestSettings
    naive_scale: dict[int, float]
    levels: dict[str, float | None] = field(default_factory=dict)
    pairs: Pairs | None = None
    seed_forecasts: dict[str, dict[int, pd.DataFrame]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    model_seeds: dict[str, int | None] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        """Model aliases in the order they were run."""
        return list(dict.fromkeys(self.forecasts["model"]))


def make_folds(index: pd.DatetimeIndex, settings: BacktestSettings) -> list[Fold]:
    """The folds of a backtest over candles with this index.

    Raises
    ------
    ConfigurationError
        For settings that cannot be laid out.
    InsufficientHistory
        When the test period leaves too few candles to train on.
    """
    n = len(index)
    horizon, folds, stride = int(settings.horizon), int(settings.folds), int(settings.stride)
    if horizon < 1 or folds < 1 or stride < 1:
        raise ConfigurationError("horizon, folds and stride must each be at least 1.")
    # A window of 0 would train on nothing (iloc[a:a]), and one candle has no one-step
    # change to scale MASE by.
    if settings.window is not None and int(settings.window) < 2:
        raise ConfigurationError(
            f"The rolling training window must be at least 2 candles, got {settings.window}. "
            "Leave it empty for an expanding window."
        )
    if settings.test_start is not None:
        start = int(index.searchsorted(settings.test_start))
        test_size = n - start
    else:
        test_size = int(settings.test_size)
    if test_size < folds * 2:
        raise ConfigurationError(
            f"A test period of {test_size} candles cannot hold {folds} folds of at least two "
            "candles. Lengthen the test period or use fewer folds."
        )
    first_target = n - test_size
    if first_target < 20:
        raise InsufficientHistory(
            f"The test period leaves {max(first_target, 0)} candles to train on. Shorten the "
            "test period or choose a longer date range."
        )
    bounds = np.linspace(first_target, n, folds + 1).round().astype(int)
    out = []
    # Plain ints, not numpy's: positions are compared, printed and serialised.
    for number, (a, b) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True), 1):
        cutoff = a - 1
        origins = tuple(range(cutoff, b - 1, stride))
        train_start = 0 if settings.window is None else max(0, a - int(settings.window))
        out.append(Fold(number, train_start, cutoff, origins, b))
    return out


def pair_layout(
    index: pd.DatetimeIndex,
    folds: list[Fold],
    horizon: int,
    excluded: pd.DatetimeIndex,
) -> tuple[dict[int, list[tuple[int, int]]], Pairs]:
    """Per origin position, its ``(step, target position)`` pairs; and the counts.

    The pairs every model of a backtest is scored on: a target missing from the data, or
    a filled (``excluded``) origin or target, is left out and counted in :class:`Pairs`.
    """
    timeframe = infer_timeframe(index)
    positions = grid_positions(index, timeframe, infer_calendar(index, timeframe))
    excluded_mask = index.isin(excluded) if len(excluded) else np.zeros(len(index), bool)
    layout: dict[int, list[tuple[int, int]]] = {}
    scored = missing = filled_target = filled_origin = 0
    last = positions[-1]
    for fold in folds:
        for origin in fold.origins:
            if excluded_mask[origin]:
                filled_origin += 1
                continue
            wanted = positions[origin] + np.arange(1, horizon + 1)
            wanted = wanted[wanted <= last]  # beyond the data: nothing to score yet
            found = np.searchsorted(positions, wanted)
            pairs = []
            for step, (target_position, target) in enumerate(zip(wanted, found, strict=True), 1):
                if positions[target] != target_position:
                    missing += 1
                elif excluded_mask[target]:
                    filled_target += 1
                else:
                    pairs.append((step, int(target)))
            if pairs:
                layout[origin] = pairs
                scored += len(pairs)
    return layout, Pairs(scored, missing, filled_target, filled_origin)


def _naive_scale(train: pd.DataFrame, excluded: pd.DatetimeIndex) -> float:
    """Mean absolute change between training candles one timeframe apart (not filled)."""
    if len(train) < 2:
        return float("nan")
    timeframe = infer_timeframe(train.index)
    positions = grid_positions(train.index, timeframe, infer_calendar(train.index, timeframe))
    close = train["close"].to_numpy(dtype="float64")
    real = ~train.index.isin(excluded) if len(excluded) else np.ones(len(train), bool)
    consecutive = (np.diff(positions) == 1) & real[1:] & real[:-1]
    changes = np.abs(np.diff(close))[consecutive]
    scale = float(changes.mean()) if changes.size else float("nan")
    return scale if scale > 0 else float("nan")


def _with_seed(model: Forecaster, seed: int) -> Forecaster:
    return type(model)(**{**model.get_params(), "seed": int(seed)})


def walk_forward(
    models: Mapping[str, Forecaster],
    candles: pd.DataFrame,
    settings: BacktestSettings | None = None,
    *,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    excluded: pd.DatetimeIndex | None = None,
    seeds: Sequence[int] = (),
    workers: int = 1,
) -> Backtest:
    """Fit and forecast every model on every fold (see the module docs).

    Parameters
    ----------
    models
        Unfitted models by name; each is cloned per fold, never modified.
    candles
        The OHLCV frame; not modified.
    settings
        The backtest layout.
    progress
        ``progress("backtest", fraction, details)`` after each model of each fold, after
        each epoch of a model whose fit reports epochs, and after each origin of a model
        refitted per origin; ``details`` has ``message``, ``fold``, ``folds``, ``model``
        and ``seed``. The fraction is of the estimated CPU time
        (:mod:`forecasting.budget`'s cost model), not of the number of fits: five
        baselines and an LSTM put nearly the whole bar on the LSTM's epochs. It never
        decreases.
    should_stop
        Polled between steps (and passed to long fits); True raises ``Cancelled``.
    excluded
        Candles that may feed the models but are never an origin or a target: candles
        filled in where the exchange had none.
    seeds
        Further seeds for models whose point forecast depends on the seed
        (``capabilities.seed_changes_forecast``): each is run on the same folds, and its
        rows are kept in ``Backtest.seed_forecasts``.
    workers
        Threads that run (model, fold) jobs side by side. The forecasts do not depend on
        it: every job is a deterministic function of its own inputs.

    Returns
    -------
    Backtest
        The forecasts of every model on the same pairs.
    """
    settings = settings or BacktestSettings()
    folds = make_folds(candles.index, settings)
    excluded = pd.DatetimeIndex([]) if excluded is None else pd.DatetimeIndex(excluded)
    horizon = int(settings.horizon)
    layout, pairs = pair_layout(candles.index, folds, horizon, excluded)
    naive_scale = {
        fold.number: _naive_scale(candles.iloc[fold.train_start : fold.cutoff + 1], excluded)
        for fold in folds
    }
    runs: list[tuple[str, int | None, Forecaster]] = []
    for name, template in models.items():
        runs.append((name, None, template))
        if template.capabilities.seed_changes_forecast:
            own = getattr(template, "seed", None)
            for seed in dict.fromkeys(int(s) for s in seeds):
                if seed != own:
                    runs.append((name, seed, _with_seed(template, seed)))
    # One job per model and fold; within a fold, a model refitted at every origin with
    # warm starts (Prophet) is a chain, each refit starting from the previous origin's.
    # A fold's first fit is cold, so folds are independent: the heaviest jobs (models
    # refitted at every origin, then trained ones) go first, and two workers share them.
    jobs = [(run, (fold,)) for fold in folds for run in runs]
    jobs.sort(key=lambda job: _cost_rank(job[0][2]))
    weights = {
        (run[0], run[1], fold.number): sum(_fold_costs(run[2], fold))
        for run, job_folds in jobs
        for fold in job_folds
    }
    total = float(sum(weights.values()))
    done = [0.0]
    # Workers only queue their progress; the calling thread reports it, so a callback
    # that draws on a screen (Streamlit's, which only the script's thread may update)
    # is never called from a worker.
    events: queue.SimpleQueue = queue.SimpleQueue()
    aborted = threading.Event()

    def stop() -> bool:
        return aborted.is_set() or (should_stop is not None and bool(should_stop()))

    caller = threading.current_thread()

    def advance(
        fraction: float, fold: Fold, name: str, seed: int | None, doing: str | None = None
    ) -> None:
        events.put((fraction * weights[name, seed, fold.number], fold, name, seed, doing))
        if threading.current_thread() is caller:
            drain()

    def drain() -> None:
        while True:
            try:
                amount, fold, name, seed, doing = events.get_nowait()
            except queue.Empty:
                return
            # min(): the jobs' fractions add up to 1 only up to rounding.
            done[0] = min(done[0] + amount, total)
            label = name if seed is None else f"{name} (seed {seed})"
            report(
                progress,
                "backtest",
                done[0] / total,
                message=f"fold {fold.number}/{len(folds)}: {label}"
                + ("" if doing is None else f", {doing}"),
                fold=fold.number,
                folds=len(folds),
                model=name,
                seed=seed,
            )

    def run_job(job) -> tuple[list[dict], list[str]]:
        (name, seed, template), job_folds = job
        rows: list[dict] = []
        notes: list[str] = []
        for fold in job_folds:
            fold_rows, fold_notes = forecast_fold(
                name, seed, template, fold, candles, layout, settings, stop, advance
            )
            rows.extend(fold_rows)
            notes.extend(n for n in fold_notes if n not in notes)
        return rows, notes

    results: list[tuple[list[dict], list[str]]] = []
    if workers > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=int(workers)) as pool:
            futures = [pool.submit(run_job, job) for job in jobs]
            pending = set(futures)
            try:
                while pending:
                    finished, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                    drain()
                    for future in finished:
                        future.result()  # the first failure stops the rest
            except BaseException:
                aborted.set()
                raise
            results = [future.result() for future in futures]
        drain()
    else:
        for job in jobs:
            results.append(run_job(job))
            drain()

    primary: list[dict] = []
    extra: dict[str, dict[int, list[dict]]] = {}
    notes: dict[str, list[str]] = {}
    levels: dict[str, float | None] = {}
    for ((name, seed, template), _folds), (rows, job_notes) in zip(jobs, results, strict=True):
        if seed is None:
            primary.extend(rows)
            levels[name] = getattr(template, "level", None)
        else:
            extra.setdefault(name, {}).setdefault(seed, []).extend(rows)
        bucket = notes.setdefault(name, [])
        bucket.extend(n for n in job_notes if n not in bucket)
    order = {name: position for position, name in enumerate(models)}
    frame = _in_order(pd.DataFrame(primary, columns=FORECAST_COLUMNS), order)
    levels = {name: levels[name] for name in models if name in levels}
    seed_forecasts = {
        name: {
            seed: _in_order(pd.DataFrame(rows, columns=FORECAST_COLUMNS), order)
            for seed, rows in by.items()
        }
        for name, by in extra.items()
    }
    notes = {name: found for name, found in notes.items() if found}
    model_seeds = {
        name: int(model.seed) if model.capabilities.seeded else None
        for name, model in models.items()
    }
    return Backtest(
        frame, folds, settings, naive_scale, levels, pairs, seed_forecasts, notes, model_seeds
    )


def _cost_rank(model: Forecaster) -> int:
    """Which jobs to start first: refitted at every origin (0), seeded/trained (1), others."""
    if not model.capabilities.conditions_on_history:
        return 0
    return 1 if model.capabilities.seeded else 2


def _fold_costs(model: Forecaster, fold: Fold) -> tuple[float, float]:
    """Estimated CPU-seconds of one model on one fold: its fit at the cutoff, and its
    work at all the origins (a forecast each, or a refit and a forecast each).

    By :mod:`forecasting.budget`'s cost model (the figures the pages estimate a run
    with): one fold's part is that model's cost with the fold minus its cost without
    it. Never below a millisecond, so every job has a share of the progress bar.
    """
    train = fold.cutoff + 1 - fold.train_start
    alias = getattr(model, "alias", "")
    without = model_cost(alias, model, [], 0, 1).seconds
    fit = model_cost(alias, model, [(train, 0)], 0, 1).seconds - without
    whole = model_cost(alias, model, [(train, len(fold.origins))], 0, 1).seconds - without
    return max(fit, 1e-3), max(whole - fit, 0.0)


def _in_order(frame: pd.DataFrame, order: Mapping[str, int]) -> pd.DataFrame:
    """Forecast rows model by model (in the given order), then fold, origin and step."""
    if frame.empty:
        return frame
    key = frame["model"].map(order)
    frame = frame.assign(_order=key).sort_values(
        ["_order", "fold", "origin", "step"], kind="stable"
    )
    return frame.drop(columns="_order").reset_index(drop=True)


def forecast_fold(
    name: str,
    seed: int | None,
    template: Forecaster,
    fold: Fold,
    candles: pd.DataFrame,
    layout: dict[int, list[tuple[int, int]]],
    settings: BacktestSettings,
    should_stop: StopCheck | None,
    advance: Callable[[float, Fold, str, int | None], None],
) -> tuple[list[dict], list[str]]:
    """One model on one fold: a cold fit at the cutoff, a forecast from every origin (a
    model that cannot condition on new candles refitted there, warm-started from the
    previous origin's fit). Returns the rows (:data:`FORECAST_COLUMNS`) and the notes.

    ``layout`` is :func:`pair_layout`'s; ``advance(fraction, fold, name, seed, doing)``
    is called as the fold progresses, with fractions of this fold's estimated cost
    (:func:`_fold_costs`) that add up to 1: during the fit as the model reports its
    epochs (``doing`` is then ``"epoch 3/30"``, else ``None``), after each origin of a
    model refitted per origin, and at the end.
    """
    if should_stop is not None and should_stop():
        raise Cancelled("The backtest was cancelled.")
    close = candles["close"].to_numpy(dtype="float64")
    index = candles.index
    train = candles.iloc[fold.train_start : fold.cutoff + 1]
    fit_cost, origins_cost = _fold_costs(template, fold)
    fit_share = fit_cost / (fit_cost + origins_cost)
    reported = [0.0]

    def fit_progress(stage: str, fraction: float, details: Mapping) -> None:
        # The model's own progress (epochs) moves the bar within its share of the fit.
        step = fit_share * min(max(float(fraction), 0.0), 1.0) - reported[0]
        if step > 0:
            reported[0] += step
            doing = None
            if stage == "epoch" and "epoch" in details:
                doing = f"epoch {details['epoch']}/{details.get('epochs', '?')}"
            advance(step, fold, name, seed, doing)

    model = template.clone().fit(train, should_stop=should_stop, progress=fit_progress)
    refits = not model.capabilities.conditions_on_history
    per_origin = (1.0 - fit_share) / len(fold.origins) if refits and fold.origins else 0.0
    if fit_share > reported[0] and refits:
        # The rest of the fit (early stopping, or a model that reports no epochs).
        advance(fit_share - reported[0], fold, name, seed)
        reported[0] = fit_share
    rows: list[dict] = []
    notes: list[str] = []
    for origin in fold.origins:
        # Forecasting from many origins (a refit per origin) takes long too.
        if should_stop is not None and should_stop():
            raise Cancelled("The backtest was cancelled.")
        pairs = layout.get(origin)
        if not pairs:
            if refits:
                reported[0] += per_origin
                advance(per_origin, fold, name, seed)
            continue
        start = fold.train_start
        if refits and settings.window is not None:
            # A rolling window rolls with the origin when the model is refitted there.
            start = max(start, origin + 1 - int(settings.window))
        history = candles.iloc[start : origin + 1]
        if refits:
            model = model.updated(history)  # warm-started from the previous origin's fit
            forecast = model.predict(pairs[-1][0])
        else:
            forecast = model.predict(pairs[-1][0], history=history)
        notes.extend(n for n in forecast.notes if n not in notes)
        for step, target in pairs:
            # Step k of every forecast is stamped k timeframes after its origin: the same
            # candle the layout chose, or the layout and the model disagree about time.
            if forecast.timestamps[step - 1] != index[target]:
                raise ConfigurationError(
                    f"{name} forecast {forecast.timestamps[step - 1]} as step {step} from "
                    f"{index[origin]}, but that step's candle is {index[target]}."
                )
            rows.append(
                {
                    "fold": fold.number,
                    "cutoff": index[fold.cutoff],
                    "origin": index[origin],
                    "timestamp": index[target],
                    "step": step,
                    "model": name,
                    "y": close[target],
                    "yhat": forecast.mean[step - 1],
                    "lower": np.nan if forecast.lower is None else forecast.lower[step - 1],
                    "upper": np.nan if forecast.upper is None else forecast.upper[step - 1],
                    "y_origin": close[origin],
                }
            )
        if refits:
            reported[0] += per_origin
            advance(per_origin, fold, name, seed)
    advance(max(1.0 - reported[0], 0.0), fold, name, seed)
    return rows, notes


def default_workers() -> int:
    """Threads for a backtest: at most two, at most the CPUs this process may use."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(2, cpus))
