"""Live tracking: forecasts written as candles close, into the ledger, scored later.

One round (:func:`run_round`) does, in this order:

1. loads the newest closed candles of the series through the candle cache (``history``
   candles, 1000 by default as for ``fetch`` and ``compare``); an exchange failure raises
   here, before anything is written;
2. records them in the ledger (a candle already recorded keeps its first value);
3. scores every earlier forecast whose target candle is now recorded, and marks the
   lost ones missing (:meth:`~forecasting.ledger.Ledger.score`): a target skipped while
   later candles came (``"gap"``), and one of this series that never came, with no
   later candle either, long after it closed (``"no candles"``: below);
4. for each model (naive always among them: every verdict needs it), forecasts the next
   ``horizon`` candles from the newest closed candle (the origin) and writes them, one
   transaction per model. A model that fails is reported and the others still run.

Each of steps 2-4 is its own transaction, and each is idempotent: a round interrupted
anywhere (Ctrl-C, a crash, the exchange failing) leaves a consistent ledger, and running
it again adds only what is missing. A round that finds no candle closed since a model's
last forecast writes nothing for it, so ``--once`` twice within one candle writes once.

A pair that stops trading
    A target the exchange never serves, while it serves no later candle either, is
    given up (marked missing ``"no candles"``, never scored) once it closed more than
    :func:`~forecasting.ledger.default_abandon_ms` ago: ``max(10 candles, 7 days)``.
    The round applies the rule to its own series only, after the exchange answered:
    with candles (all older than the target), with none in the range asked
    (:class:`~forecasting.errors.NoCandles`) or by no longer listing the symbol
    (:class:`~forecasting.errors.InvalidSymbol`); in the last two cases the round
    writes the marks, then raises. A failure that says nothing about the series (the
    network, a rate limit, HTTP 5xx) gives up on nothing. A candle merely published
    late (seconds to minutes) is far within the wait, and is scored when it comes.

Fitting and the refit schedule
    A forecast from an origin may use only the candles up to it. Every model is fitted
    on the ``history`` candles up to the origin, except a model whose fitted state can be
    kept on disk safely (the LSTM: Keras' own file and JSON, nothing pickled, loaded with
    Keras' safe mode). That one is refitted when due, every ``refit_every`` candles
    (:func:`default_refit_every`: a day of intraday candles, a week of daily ones); in
    between, its last fit is loaded from the model folder and conditions on the candles
    up to the origin, as the walk-forward does between refits. The baselines cost
    nothing to fit; Prophet's forecast depends only on what it was fitted on, so a
    forecast from a new origin needs a fit on the candles up to it anyway (the
    walk-forward refits it at every origin too). The same rule holds for ``--once`` and
    for a process that runs forever: the forecasts do not depend on how the tracker is
    run. Each forecast row keeps ``cutoff_ms``, the last candle its model was fitted on.

On time
    One clock decides everything: the ledger's (``Ledger(clock=...)``). Candles are
    closed when they closed at that clock; ``made_at_ms`` is that clock when the rows are
    written. A forecast is written only while its first target is still open: when the
    exchange has not yet published the newest closed candle (``behind``), or a fit ran
    past the first target's close (``late``), nothing is written for that origin (the
    ledger would refuse it anyway). A round that runs promptly (a tracker runs 10 s after
    each close; a round with every fit due takes about 15 s on 1h candles) writes within
    the timing check's tolerance (:func:`~forecasting.ledger.default_tolerance_ms`,
    ``min(one timeframe, 15 minutes)``), so :meth:`~forecasting.ledger.Ledger.check`
    finds nothing late. A round run later than that (a tracker started in the middle of
    a candle, an exchange down for a while) still writes its forecasts, with a note: the
    ledger keeps them, counts them ``late`` and never scores them, since the forecaster
    could have seen part of the first target's price path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from forecasting.data.cache import CandleCache
from forecasting.data.exchange import PUBLISH_GRACE, RetryPolicy, source_key
from forecasting.data.market import load_exchange_candles
from forecasting.errors import (
    Cancelled,
    ConfigurationError,
    DataUnavailable,
    ForecastingError,
    InvalidSymbol,
    NoCandles,
)
from forecasting.evaluation import BacktestSettings
from forecasting.experiment import ExperimentSettings, parse_models
from forecasting.ledger import (
    Ledger,
    ScoreRound,
    default_abandon_ms,
    default_tolerance_ms,
    forecast_rows,
    settings_hash,
)
from forecasting.models import Forecaster
from forecasting.ohlcv import epoch_ms, from_epoch_ms, timeframe_offset, timeframe_seconds
from forecasting.progress import ProgressCallback, StopCheck, report, scaled

__all__ = [
    "DEFAULT_HISTORY",
    "MODEL_FOLDER",
    "ModelRound",
    "ModelStore",
    "RoundReport",
    "default_model_dir",
    "default_refit_every",
    "next_wait",
    "run_forever",
    "run_once",
    "run_round",
]

# Candles loaded per round: as many as `fetch` and `compare` load by default.
DEFAULT_HISTORY = 1000
# The folder beside the ledger where fitted models are kept between rounds.
MODEL_FOLDER = "live-models"
# Fits kept per model on disk: the newest, and the one before while a round may read it.
KEPT_FITS = 2
# First try after a candle closes (most exchanges publish within seconds), and the wait
# between tries while the newest candle is not published; both at most a tenth of a candle.
FIRST_TRY = pd.Timedelta(seconds=10)
RETRY_EVERY = pd.Timedelta(seconds=30)


def default_refit_every(timeframe: str) -> int:
    """Candles between refits: a day of intraday candles, a week of daily ones, every
    candle from weekly candles on (``1h`` -> 24, ``4h`` -> 6, ``1d`` -> 7, ``1w`` -> 1)."""
    seconds = timeframe_seconds(timeframe)
    if seconds < 86_400:
        return max(1, 86_400 // seconds)
    return max(1, 7 * 86_400 // seconds)


def default_model_dir(ledger_path: str | os.PathLike[str]) -> Path:
    """Where fitted models are kept: ``live-models`` beside the ledger file."""
    return Path(ledger_path).expanduser().parent / MODEL_FOLDER


@dataclass(frozen=True)
class ModelRound:
    """What one round did for one model.

    Attributes
    ----------
    model
        The model's alias.
    status
        ``"written"`` (its forecasts are in the ledger), ``"up to date"`` (it already
        forecast from this origin: nothing to do), ``"failed"`` (see ``error``),
        ``"behind"`` (the newest closed candle is not published yet) or ``"late"`` (its
        fit ran past the close of the first target: nothing written).
    written
        Forecast rows written now.
    refitted
        It was fitted in this round (rather than loaded from its last fit).
    cutoff
        Open time of the last candle its fit saw (``None`` when nothing was forecast).
    seconds
        Wall time spent on it.
    error
        Why it failed, in one line.
    notes
        The forecast's notes (a bound floored at zero, ...).
    """

    model: str
    status: str
    written: int = 0
    refitted: bool = False
    cutoff: pd.Timestamp | None = None
    seconds: float = 0.0
    error: str | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "status": self.status,
            "written": self.written,
            "refitted": self.refitted,
            "cutoff": None if self.cutoff is None else _iso(self.cutoff),
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class RoundReport:
    """What one round did.

    Attributes
    ----------
    exchange, symbol, timeframe
        The series.
    round_id
        The id written in each forecast row of the round.
    now
        The ledger's clock when the round started.
    origin
        Open time of the newest closed candle received (the forecasts' origin).
    candles
        Candles loaded; ``recorded`` of them were new to the ledger.
    scored
        Forecasts scored and marked missing in this round.
    models
        Per model alias, what was done.
    behind
        The exchange had not yet published the newest closed candle: no forecast was
        written (the next try will).
    """

    exchange: str
    symbol: str
    timeframe: str
    round_id: str
    now: pd.Timestamp
    origin: pd.Timestamp
    candles: int
    recorded: int
    scored: ScoreRound
    models: dict[str, ModelRound] = field(default_factory=dict)
    behind: bool = False

    @property
    def failed(self) -> dict[str, str]:
        """Models that failed, with why."""
        return {m: r.error or "" for m, r in self.models.items() if r.status == "failed"}

    @property
    def written(self) -> int:
        """Forecast rows written in the round, over all models."""
        return sum(r.written for r in self.models.values())

    def summary(self) -> str:
        """One line for a log: origin, candles, scores, and each model's status."""
        parts = [
            f"{_iso(self.now)} {self.exchange} {self.symbol} {self.timeframe}: "
            f"origin {_iso(self.origin)}, {self.recorded} new candles, "
            f"{self.scored.scored} scored, {self.scored.missing} missing"
        ]
        for alias, done in self.models.items():
            text = f"{alias} {done.status}"
            if done.status == "written":
                text += f" ({done.written}, {'refit' if done.refitted else 'kept fit'})"
            parts.append(text)
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report (times as ISO-8601 UTC)."""
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "round_id": self.round_id,
            "now": _iso(self.now),
            "origin": _iso(self.origin),
            "candles": self.candles,
            "recorded": self.recorded,
            "scored": self.scored.scored,
            "missing": self.scored.missing,
            "behind": self.behind,
            "models": {alias: done.to_dict() for alias, done in self.models.items()},
        }


def _iso(stamp: pd.Timestamp) -> str:
    return f"{stamp:%Y-%m-%dT%H:%M:%SZ}"


class ModelStore:
    """Fitted models kept on disk between rounds, for models that save safely.

    A fit is stored as ``<folder>/<series>/<alias>-<settings>-<seed>/<cutoff_ms>.keras``
    with the model's JSON beside it; the JSON is written last, so a fit is complete when
    both files exist. Only classes with their own ``save`` and ``load`` (the LSTM: no
    pickle) are stored; :meth:`keeps` says which.

    Parameters
    ----------
    folder
        The model folder (:func:`default_model_dir`).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    @staticmethod
    def keeps(model: Forecaster) -> bool:
        """Whether this model's fits are kept (it saves and loads without pickling)."""
        return callable(getattr(model, "save", None)) and callable(
            getattr(type(model), "load", None)
        )

    def _place(self, series: str, model: Forecaster, digest: str, seed: int | None) -> Path:
        series_digest = hashlib.sha256(series.encode()).hexdigest()[:16]
        return self.folder / series_digest / f"{model.alias}-{digest[:16]}-{seed}"

    def load(
        self, series: str, model: Forecaster, digest: str, seed: int | None, origin_ms: int
    ) -> tuple[Forecaster, int] | None:
        """The newest stored fit with a cutoff at or before ``origin_ms``, and that cutoff.

        ``None`` when there is none, or the newest cannot be read back (then the model
        is refitted, never guessed).
        """
        place = self._place(series, model, digest, seed)
        for cutoff in reversed(_fits(place)):
            if cutoff > origin_ms:
                continue
            path = place / f"{cutoff}.keras"
            try:
                loaded = type(model).load(path)
            except (ForecastingError, OSError, ValueError, KeyError, TypeError):
                return None
            if loaded.get_params() != model.get_params():
                return None
            return loaded, cutoff
        return None

    def save(
        self, series: str, model: Forecaster, digest: str, seed: int | None, cutoff_ms: int
    ) -> Path:
        """Store a fit (atomically: a temporary name, then renamed), keeping the newest
        :data:`KEPT_FITS`."""
        place = self._place(series, model, digest, seed)
        place.mkdir(parents=True, exist_ok=True)
        temporary = place / f"tmp-{uuid.uuid4().hex}.keras"
        final = place / f"{cutoff_ms}.keras"
        try:
            model.save(temporary)  # type: ignore[attr-defined]
            os.replace(temporary, final)
            os.replace(f"{temporary}.json", f"{final}.json")
        finally:
            for leftover in (temporary, Path(f"{temporary}.json")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        for old in _fits(place)[:-KEPT_FITS]:
            for name in (f"{old}.keras.json", f"{old}.keras"):
                with contextlib.suppress(FileNotFoundError):
                    (place / name).unlink()
        return final


def _fits(place: Path) -> list[int]:
    """Cutoffs (ms) of the complete fits in a model's folder, oldest first."""
    found = []
    for path in place.glob("*.keras.json"):
        stem = path.name.removesuffix(".keras.json")
        if stem.isdigit() and (place / f"{stem}.keras").exists():
            found.append(int(stem))
    return sorted(found)


def _build(
    models: Sequence[str] | str,
    horizon: int,
    settings: Mapping[str, Mapping[str, Any]] | None,
    seed: int,
) -> dict[str, Forecaster]:
    """Unfitted models by alias, naive first, as ``compare`` builds them."""
    chosen = parse_models(models)
    if not chosen:
        raise ConfigurationError("No model to track: give at least one, e.g. --models naive.")
    experiment = ExperimentSettings(
        models=chosen,
        model_settings=dict(settings or {}),
        backtest=BacktestSettings(horizon=horizon),
        seed=seed,
    )
    return experiment.build_models()


def run_round(
    exchange_id: str,
    symbol: str,
    timeframe: str,
    models: Sequence[str] | str,
    *,
    ledger: Ledger,
    horizon: int = 7,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 42,
    cache: CandleCache | None = None,
    exchange: Any = None,
    config: Mapping[str, Any] | None = None,
    history: int = DEFAULT_HISTORY,
    refit_every: int | None = None,
    model_dir: str | os.PathLike[str] | None = None,
    retry: RetryPolicy | None = None,
    tracker_id: str | None = None,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> RoundReport:
    """One live round: load, record, score, then forecast with each model.

    Parameters
    ----------
    exchange_id, symbol, timeframe
        The series (ccxt id, unified symbol, timeframe).
    models
        Model aliases (a list or ``"naive,prophet,lstm"``); naive is always added.
    ledger
        The ledger; its clock is the round's clock.
    horizon
        Candles ahead each forecast covers.
    settings
        Per-model settings, as for ``compare`` (``{"lstm": {"epochs": 10}}``).
    seed
        Seed of every model that has one.
    cache, exchange, config, retry
        As for :func:`~forecasting.data.market.load_exchange_candles` (``exchange`` is a
        ready ccxt client or a function making one).
    history
        Candles loaded and fitted on (the newest closed ones).
    refit_every
        Candles between refits of a model whose fits are kept (see the module docs);
        defaults to :func:`default_refit_every`.
    model_dir
        Where fits are kept; defaults to :func:`default_model_dir` of the ledger.
    tracker_id
        The tracker running the round (:meth:`~forecasting.ledger.Ledger.start_tracker`):
        its heartbeat and last error are updated.
    progress
        ``progress(stage, fraction, details)``: ``"fetch"`` for the first 10 %, then a
        ``"refit"`` stage per model (``message`` and ``model`` in ``details``), with the
        model's own stages inside its share.
    should_stop
        Polled between steps and during fits; True raises
        :class:`~forecasting.errors.Cancelled` (what was written stays, consistent).

    Returns
    -------
    RoundReport

    Raises
    ------
    ConfigurationError
        For an unknown model, settings out of range, a bad ``history`` or
        ``refit_every`` (before anything is fetched).
    DataUnavailable
        When the exchange failed; the ledger is as it was.
    """
    exchange_id = (exchange_id or "").strip().lower()
    built = _build(models, horizon, settings, seed)
    refit_every = default_refit_every(timeframe) if refit_every is None else refit_every
    for name, value, low in (("history", history, 2), ("refit_every", refit_every, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigurationError(
                f"{name} must be a whole number of at least {low}, got {value!r}."
            )
    store = ModelStore(model_dir or default_model_dir(ledger.path))
    series = json.dumps([source_key(exchange_id, config), symbol, timeframe])
    key = (exchange_id, symbol, timeframe)
    now_ms = int(ledger.clock())
    now = from_epoch_ms(now_ms)
    step = pd.Timedelta(seconds=timeframe_seconds(timeframe))
    # A candle more than needed: the one still open is dropped.
    since = max(now - (history + 2) * step, from_epoch_ms(0))
    # Targets still waiting from before that (a tracker stopped for longer than its
    # history) are loaded too, so that they are scored, never taken for a gap.
    waiting = ledger.waiting(*key)
    if len(waiting):
        since = min(since, from_epoch_ms(int(waiting["target_ms"].min())))
    try:
        candles = load_exchange_candles(
            exchange_id,
            symbol,
            timeframe,
            since,
            None,
            config=config,
            cache=cache,
            exchange=exchange,
            progress=scaled(progress, 0.0, 0.1),
            now=now,
            retry=retry,
        )
    except ForecastingError as exc:
        if isinstance(exc, NoCandles | InvalidSymbol):
            # The exchange answered, with nothing for the series: the targets it never
            # served are given up once they are long past (a delisted pair).
            ledger.score(abandon_after_ms=default_abandon_ms(timeframe), series=key)
        if tracker_id is not None:
            ledger.heartbeat(tracker_id, error=" ".join(str(exc).split()))
        raise
    recorded = ledger.record_candles(exchange_id, symbol, timeframe, candles)
    candles = candles.iloc[-history:]
    try:
        candles = _with_mood(
            candles, built, exchange_id, symbol, timeframe, config, exchange, now, cache
        )
    except ForecastingError as exc:
        if tracker_id is not None:
            ledger.heartbeat(tracker_id, error=" ".join(str(exc).split()))
        raise
    scored = ledger.score(abandon_after_ms=default_abandon_ms(timeframe), series=key)
    origin = candles.index[-1]
    origin_ms = epoch_ms(origin)
    first_close_ms = epoch_ms(origin + 2 * timeframe_offset(timeframe))
    behind = now_ms >= first_close_ms
    round_id = f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    done: dict[str, ModelRound] = {}
    for position, (alias, model) in enumerate(built.items()):
        if should_stop is not None and should_stop():
            raise Cancelled("The live round was cancelled.")
        share = scaled(
            progress, 0.1 + 0.9 * position / len(built), 0.1 + 0.9 * (position + 1) / len(built)
        )
        report(share, "refit", 0.0, message=f"live: {alias}", model=alias)
        done[alias] = _model_round(
            alias,
            model,
            candles,
            ledger=ledger,
            store=store,
            series=series,
            exchange_id=exchange_id,
            symbol=symbol,
            timeframe=timeframe,
            horizon=horizon,
            origin_ms=origin_ms,
            first_close_ms=first_close_ms,
            behind=behind,
            refit_every=refit_every,
            round_id=round_id,
            progress=share,
            should_stop=should_stop,
        )
        report(share, "refit", 1.0, message=f"live: {alias} {done[alias].status}", model=alias)
    result = RoundReport(
        exchange=exchange_id,
        symbol=symbol,
        timeframe=timeframe,
        round_id=round_id,
        now=now,
        origin=origin,
        candles=len(candles),
        recorded=recorded,
        scored=scored,
        models=done,
        behind=behind,
    )
    if tracker_id is not None:
        failed = "; ".join(f"{m}: {why}" for m, why in result.failed.items())
        ledger.heartbeat(tracker_id, round_done=True, error=failed or None)
    return result


def _with_mood(
    candles: pd.DataFrame,
    built: Mapping[str, Forecaster],
    exchange_id: str,
    symbol: str,
    timeframe: str,
    config: Mapping[str, Any] | None,
    exchange: Any,
    now: pd.Timestamp,
    cache: CandleCache | None,
) -> pd.DataFrame:
    """The candles with the mood columns any model's features name, joined as of each
    close (the funding rates from the tracker's own exchange).

    Raises
    ------
    DataUnavailable
        A mood feature a model reads could not be joined (offline, no perpetual, ...).
    """
    from forecasting.data import create_exchange
    from forecasting.data.mood import attach_mood
    from forecasting.features import mood_kinds

    texts = [
        value
        for model in built.values()
        for name, value in model.get_params().items()
        if name in ("features", "regressors") and isinstance(value, str)
    ]
    kinds = mood_kinds(*texts)
    if not kinds:
        return candles
    client = exchange if exchange is not None else create_exchange(exchange_id, config)
    joined = attach_mood(
        candles, timeframe, kinds, exchange=client, symbol=symbol, cache=cache, now=now
    )
    if joined.unavailable:
        kind, reason = next(iter(joined.unavailable.items()))
        raise DataUnavailable(f"The {kind} feature is unavailable: {reason}")
    return joined.candles


def _model_round(
    alias: str,
    model: Forecaster,
    candles: pd.DataFrame,
    *,
    ledger: Ledger,
    store: ModelStore,
    series: str,
    exchange_id: str,
    symbol: str,
    timeframe: str,
    horizon: int,
    origin_ms: int,
    first_close_ms: int,
    behind: bool,
    refit_every: int,
    round_id: str,
    progress: ProgressCallback | None,
    should_stop: StopCheck | None,
) -> ModelRound:
    started = time.perf_counter()
    params = model.get_params()
    digest = settings_hash(params)
    seed = int(params["seed"]) if model.capabilities.seeded and "seed" in params else None
    # Behind first: the origin is then the candle before the newest closed one, which
    # the model has most likely forecast from already, yet a forecast is still owed.
    if behind:
        return ModelRound(alias, "behind")
    latest = ledger.latest_forecast(exchange_id, symbol, timeframe, alias, digest, seed)
    if latest is not None and int(latest["origin_ms"]) >= origin_ms:
        return ModelRound(alias, "up to date")
    try:
        fitted, cutoff_ms, refitted = None, origin_ms, True
        if store.keeps(model):
            kept = store.load(series, model, digest, seed, origin_ms)
            if kept is not None:
                since = int((candles.index > from_epoch_ms(kept[1])).sum())
                known = from_epoch_ms(kept[1]) in candles.index
                if known and since < refit_every:
                    fitted, cutoff_ms, refitted = kept[0], kept[1], False
        if fitted is None:
            fitted = model.clone().fit(candles, progress=progress, should_stop=should_stop)
            if store.keeps(model):
                store.save(series, fitted, digest, seed, origin_ms)
        forecast = fitted.predict(horizon, history=candles)
        now_ms = int(ledger.clock())
        if now_ms >= first_close_ms:
            return ModelRound(
                alias,
                "late",
                refitted=refitted,
                cutoff=from_epoch_ms(cutoff_ms),
                seconds=time.perf_counter() - started,
                error="the fit ran past the close of the first target candle: nothing written",
            )
        rows = forecast_rows(
            forecast,
            exchange=exchange_id,
            symbol=symbol,
            timeframe=timeframe,
            origin=origin_ms,
            origin_close=float(candles["close"].iloc[-1]),
            settings_hash=digest,
            seed=seed,
            round_id=round_id,
            cutoff=cutoff_ms,
        )
        written = ledger.record_forecasts(rows)
        notes = tuple(forecast.notes)
        origin_close_ms = epoch_ms(from_epoch_ms(origin_ms) + timeframe_offset(timeframe))
        tolerance_ms = default_tolerance_ms(timeframe)
        if written and now_ms >= origin_close_ms + tolerance_ms:
            notes += (
                f"Written {(now_ms - origin_close_ms) / 60_000:.0f} min after its origin candle "
                f"closed, past the timing check's {tolerance_ms // 60_000} min: counted as "
                "late in the ledger, not scored.",
            )
    except Cancelled:
        raise
    except ForecastingError as exc:
        return ModelRound(
            alias,
            "failed",
            seconds=time.perf_counter() - started,
            error=" ".join(str(exc).split()),
        )
    return ModelRound(
        alias,
        "written",
        written=written,
        refitted=refitted,
        cutoff=from_epoch_ms(cutoff_ms),
        seconds=time.perf_counter() - started,
        notes=notes,
    )


def run_once(
    exchange_id: str,
    symbol: str,
    timeframe: str,
    models: Sequence[str] | str,
    *,
    ledger: Ledger,
    **options: Any,
) -> RoundReport:
    """One round as a ``"once"`` tracker (``live --once``, from cron or a scheduler).

    Registers (or takes over) the schedule's tracker row, then runs :func:`run_round`
    with ``options``; a failure is recorded as the tracker's last error and raised.
    """
    built = _build(
        models, options.get("horizon", 7), options.get("settings"), options.get("seed", 42)
    )
    tracker = ledger.start_tracker(exchange_id, symbol, timeframe, list(built), mode="once")
    return run_round(
        exchange_id, symbol, timeframe, models, ledger=ledger, tracker_id=tracker, **options
    )


def next_wait(
    now_ms: int,
    timeframe: str,
    origin: pd.Timestamp | None,
    *,
    behind: bool = False,
    failures: int = 0,
) -> float:
    """Seconds to wait before the next round.

    After a complete round, until the next candle closes plus a first try's grace
    (:data:`FIRST_TRY`, at most a tenth of a candle). While the newest candle is not
    published (``behind``), every :data:`RETRY_EVERY` until
    :data:`~forecasting.data.exchange.PUBLISH_GRACE` after its close, then the next
    candle. After ``failures`` failed rounds in a row, the same tries but backing off
    (doubling from :data:`RETRY_EVERY`, at most one candle).
    """
    length = pd.Timedelta(seconds=timeframe_seconds(timeframe))
    first = min(FIRST_TRY, length / 10)
    again = min(RETRY_EVERY, length / 10)
    now = from_epoch_ms(now_ms)
    if failures:
        return min(again * 2 ** (failures - 1), length).total_seconds()
    if origin is None:
        return again.total_seconds()
    offset = timeframe_offset(timeframe)
    close = origin + 2 * offset  # when the candle after the origin closes
    if behind and now < close + PUBLISH_GRACE:
        return again.total_seconds()
    while close + first <= now:
        close = close + offset
    return max((close + first - now).total_seconds(), 0.0)


def run_forever(
    exchange_id: str,
    symbol: str,
    timeframe: str,
    models: Sequence[str] | str,
    *,
    ledger: Ledger,
    stop: threading.Event | None = None,
    sleep: Callable[[float], object] | None = None,
    on_round: Callable[[RoundReport], None] | None = None,
    on_error: Callable[[ForecastingError], None] | None = None,
    exchange: Any = None,
    **options: Any,
) -> int:
    """Run a round as each candle closes until ``stop`` is set (or Ctrl-C).

    Registers a ``"forever"`` tracker in the ledger, beats its heartbeat every round
    and marks it stopped on the way out, whatever the way out. Every write is one
    transaction, so Ctrl-C (``KeyboardInterrupt``) at any point leaves the ledger
    consistent: a round cut short is completed by the next one.

    Parameters
    ----------
    exchange_id, symbol, timeframe, models, ledger
        As for :func:`run_round`.
    stop
        Set it (from another thread, a signal handler) to stop after the current round
        or wait.
    sleep
        Waits the given seconds (tests pass one that moves their clock); defaults to
        waiting on ``stop``.
    on_round
        Called with each round's report.
    on_error
        Called with an exchange failure (the round is tried again later, backing off);
        other errors stop the loop and are raised.
    exchange
        A ccxt client or a function making one; a function is called once, when first
        needed, and its client kept for every round.
    **options
        Passed to :func:`run_round` (horizon, settings, seed, cache, config, history,
        refit_every, model_dir, retry, progress, should_stop).

    Returns
    -------
    int
        Rounds completed.
    """
    stop = stop or threading.Event()
    wait = sleep or stop.wait
    client = _Reused(exchange) if callable(exchange) and not _is_client(exchange) else exchange
    built = _build(
        models, options.get("horizon", 7), options.get("settings"), options.get("seed", 42)
    )
    tracker = ledger.start_tracker(exchange_id, symbol, timeframe, list(built), mode="forever")
    rounds, failures, origin, behind = 0, 0, None, False
    try:
        while not stop.is_set():
            try:
                done = run_round(
                    exchange_id,
                    symbol,
                    timeframe,
                    models,
                    ledger=ledger,
                    exchange=client,
                    tracker_id=tracker,
                    **options,
                )
            except DataUnavailable as exc:
                failures += 1
                if on_error is not None:
                    on_error(exc)
            else:
                rounds, failures = rounds + 1, 0
                origin, behind = done.origin, done.behind
                if on_round is not None:
                    on_round(done)
            if stop.is_set():
                break
            wait(
                next_wait(int(ledger.clock()), timeframe, origin, behind=behind, failures=failures)
            )
    finally:
        ledger.stop_tracker(tracker)
    return rounds


def _is_client(value: Any) -> bool:
    return hasattr(value, "fetch_ohlcv")


class _Reused:
    """A client factory that makes its client once, when first called."""

    def __init__(self, factory: Callable[[], Any] | None) -> None:
        self.factory, self.client = factory, None

    def __call__(self) -> Any:
        if self.client is None:
            self.client = self.factory()
        return self.client
