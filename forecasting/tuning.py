"""Honest nested tuning: settings chosen on each fold's past, scored once on its future.

Tuning is the easiest leak of all: settings chosen on the folds they are then scored on
look better than they are. Here the outer folds are exactly the Compare page's
walk-forward folds (:func:`~forecasting.evaluation.walkforward.make_folds`), and for
each of them the search sees only the candles up to its cutoff::

    candles:  [------------- outer fold k's training window -------------][ fold k ]
              [------ inner train ------][ inner 1 ][ inner 2 ]           ^ cutoff
              search: every trial scored on the inner folds (all before the cutoff)
              then:   the best trial's settings fitted at the cutoff, scored on fold k once

* **Inner folds.** ``inner_folds`` walk-forward folds at the end of the training window,
  each as long as the outer fold (at most half the window in all), with the outer
  horizon, stride and rolling window: a trial's score is its mean loss (the
  experiment's loss: absolute or squared error) over every inner (origin, target) pair.
* **Search.** Optuna's TPE sampler, seeded (the sampler of trial ``n`` is seeded with
  ``seed`` and ``n``, so a resumed study draws what an uninterrupted one would have);
  a median pruner stops a trial after an inner fold where it is already worse than the
  median of earlier trials there. A trial whose settings cannot run on the window (too
  long a lookback for the candles, an optimiser failure) is recorded as failed with the
  reason and left out of the choice.
* **Bounds.** ``trials`` per outer fold, and ``timeout`` seconds for the whole search
  (shared among the folds still to search; each fold keeps at least one finished trial,
  so the limit can be passed by one trial per fold, and the outer scoring comes on top).
* **Resuming.** With ``study`` set, each fold's study is kept in that file (Optuna's
  journal file, or SQLite for a ``.db``/``.sqlite`` name) under a name made of the
  model, the fold and a hash of everything that decides its trials (the training
  window's candles, the model's settings, the search space, the layout, loss and seed):
  the same call again adds only the trials still missing up to ``trials``.
* **Scoring.** The chosen settings are fitted on the outer training window and forecast
  from the outer fold's origins: the very (origin, target) pairs of Compare (the same
  layout code as :func:`~forecasting.evaluation.walk_forward`). The model with its
  untuned settings and naive run the same walk-forward, and the verdicts are Compare's
  (:func:`~forecasting.evaluation.verdicts`): tuned against untuned, tuned against
  naive, untuned against naive.

The optimism gap of a fold is its outer score minus its inner score (and their ratio):
how much better the search thought the settings were than they turned out. Prices move
between the inner and the outer period, so the gap in loss units also carries the
change of price level; the scores relative to naive on the same pairs
(``inner_relative``, ``outer_relative``) do not.

Optuna is imported inside :func:`tune`: importing :mod:`forecasting` does not import it.

Progress: ``progress("tune", fraction, details)`` after each trial (``details``:
``message``, ``fold``, ``folds``, ``trial``, ``trials``), then ``"backtest"`` for the
untuned model and naive (see :mod:`forecasting.progress`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from forecasting.errors import (
    Cancelled,
    ConfigurationError,
    DataFormatError,
    ForecastingError,
    InsufficientHistory,
)
from forecasting.evaluation import Backtest, BacktestSettings, Verdict, verdicts, walk_forward
from forecasting.evaluation.significance import LOSSES
from forecasting.evaluation.walkforward import (
    FORECAST_COLUMNS,
    Fold,
    forecast_fold,
    make_folds,
    pair_layout,
)
from forecasting.experiment import ExperimentSettings, data_hash
from forecasting.models import MODELS, NETWORKS
from forecasting.models.base import Forecaster
from forecasting.progress import ProgressCallback, StopCheck, report, scaled
from forecasting.ranges import INNER_FOLDS, TRIALS

__all__ = [
    "MAX_TRIALS",
    "study_storage",
    "Dimension",
    "FoldResult",
    "SearchSpace",
    "TuningResult",
    "search_space",
    "tunable_models",
    "tune",
]

#: The most trials per outer fold one run may ask for.
MAX_TRIALS = int(TRIALS.hi)
#: Random trials before TPE models the scores (fixed, so a resumed study draws the same).
STARTUP_TRIALS = 5
#: Trials that finish before the pruner compares a trial with their median.
PRUNER_STARTUP_TRIALS = 3
# The feature sets the networks choose among; each named kind takes the parameters below.
FEATURE_SETS = (
    "log_return",
    "rsi,log_return",
    "macd,log_return",
    "rsi,macd,log_return",
    "rsi,macd,bollinger,log_return",
)
# MACD (fast, slow, signal): Appel's 12/26/9, a faster 8/17/9 and a slower 5/35/5.
MACD_CHOICES = ("8:17:9", "12:26:9", "5:35:5")


@dataclass(frozen=True)
class Dimension:
    """One searched setting: a number between bounds, or one of a few choices.

    Attributes
    ----------
    name
        The trial parameter's name (a model setting, or a part of one: ``rsi_window``).
    low, high
        Inclusive bounds of a number.
    integer
        Whole numbers only.
    log
        Sampled on a log scale (rates, prior scales).
    choices
        The values to choose from, for a choice.
    when
        ``(dimension, text)``: searched only when that earlier dimension's value
        contains ``text`` (the RSI window only when the feature set has an RSI).
    """

    name: str
    low: float | None = None
    high: float | None = None
    integer: bool = False
    log: bool = False
    choices: tuple[Any, ...] | None = None
    when: tuple[str, str] | None = None

    def suggest(self, trial: Any) -> Any:
        """The trial's value for this dimension (an Optuna ``Trial``)."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        out: dict[str, Any] = {"name": self.name}
        if self.choices is not None:
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high, integer=self.integer, log=self.log)
        if self.when is not None:
            out["when"] = list(self.when)
        return out


@dataclass(frozen=True)
class SearchSpace:
    """A model's search space: its dimensions, and how their values make its settings.

    Attributes
    ----------
    model
        The model alias.
    dimensions
        Searched in this order (a conditional dimension after the one it depends on).
    """

    model: str
    dimensions: tuple[Dimension, ...]

    def sample(self, trial: Any) -> dict[str, Any]:
        """Every dimension's value for an Optuna trial (conditional ones when they apply)."""
        values: dict[str, Any] = {}
        for dimension in self.dimensions:
            if dimension.when is not None:
                other, text = dimension.when
                if text not in str(values.get(other, "")):
                    continue
            values[dimension.name] = dimension.suggest(trial)
        return values

    def settings(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The model settings a trial's values stand for (``features`` as a spec string).

        Raises
        ------
        ConfigurationError
            For values that miss a dimension the others need.
        """
        out = {k: v for k, v in values.items() if k not in _FEATURE_PARTS}
        if "feature_set" in out:
            kinds = str(out.pop("feature_set")).split(",")
            specs = []
            for kind in kinds:
                if kind == "rsi":
                    specs.append(f"rsi:{int(values['rsi_window'])}")
                elif kind == "macd":
                    specs.append(f"macd:{values['macd']}")
                elif kind == "bollinger":
                    specs.append(f"bollinger:{int(values['bollinger_window'])}:2")
                else:
                    specs.append(kind)
            out["features"] = ",".join(specs)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (also hashed into the study's name)."""
        return {"model": self.model, "dimensions": [d.to_dict() for d in self.dimensions]}


_FEATURE_PARTS = ("rsi_window", "macd", "bollinger_window")


def tunable_models() -> tuple[str, ...]:
    """The aliases :func:`tune` has a search space for, in the order of ``MODELS``."""
    networks = [alias for alias in NETWORKS if alias in MODELS]
    return tuple(a for a in MODELS if a in (*networks, "prophet", "moving_average"))


def search_space(model: str, base: Mapping[str, Any] | None = None) -> SearchSpace:
    """The search space of ``model`` (every range inside its declared ``parameter_ranges``).

    The networks: ``lookback`` 10-60 candles, ``units`` 8-64 (log scale), ``layers`` 1-2,
    ``dropout`` 0-0.4 (from 0.05 with MC-dropout intervals, which need some),
    ``learning_rate`` 1e-4 to 1e-2 (log scale), a feature set among :data:`FEATURE_SETS`
    with an RSI window of 7-28 candles, MACD among :data:`MACD_CHOICES` and a Bollinger
    window of 10-30; and ``family`` among the LSTM's families for ``lstm`` when it has
    that setting (an alias that fixes its family keeps it). Prophet:
    ``changepoint_prior_scale`` 0.001-0.5 (log scale; the range Prophet's documentation
    tunes within), ``seasonality_mode``, and ``seasonality_prior_scale`` 0.01-10 where the
    model has that setting. The moving average: ``window`` 2-60.

    Parameters
    ----------
    model
        A model alias from :func:`tunable_models`.
    base
        The model's other settings (the search adapts to its interval method).

    Raises
    ------
    ConfigurationError
        For a model without a search space.
    """
    if model not in tunable_models():
        raise ConfigurationError(
            f"Cannot tune '{model}': it has no search space. Choose from: "
            f"{', '.join(tunable_models())}."
        )
    params = MODELS[model]().get_params()
    base = dict(base or {})
    if model in NETWORKS:
        interval = base.get("interval", params.get("interval"))
        dims = []
        if model == "lstm" and "family" in params:
            families = MODELS["lstm"].parameter_ranges["family"].choices or ("lstm",)
            dims.append(Dimension("family", choices=tuple(families)))
        dims += [
            Dimension("lookback", 10, 60, integer=True),
            Dimension("units", 8, 64, integer=True, log=True),
            Dimension("layers", 1, 2, integer=True),
            Dimension("dropout", 0.05 if interval == "mc_dropout" else 0.0, 0.4),
            Dimension("learning_rate", 1e-4, 1e-2, log=True),
            Dimension("feature_set", choices=FEATURE_SETS),
            Dimension("rsi_window", 7, 28, integer=True, when=("feature_set", "rsi")),
            Dimension("macd", choices=MACD_CHOICES, when=("feature_set", "macd")),
            Dimension("bollinger_window", 10, 30, integer=True, when=("feature_set", "bollinger")),
        ]
        return SearchSpace(model, tuple(dims))
    if model == "prophet":
        dims = [
            Dimension("changepoint_prior_scale", 0.001, 0.5, log=True),
            Dimension("seasonality_mode", choices=("additive", "multiplicative")),
        ]
        if "seasonality_prior_scale" in params:
            dims.append(Dimension("seasonality_prior_scale", 0.01, 10.0, log=True))
        return SearchSpace(model, tuple(dims))
    return SearchSpace(model, (Dimension("window", 2, 60, integer=True),))


@dataclass(frozen=True)
class FoldResult:
    """One outer fold's search and score.

    Attributes
    ----------
    fold
        The outer fold's number (1-based, as in Compare).
    params
        The chosen settings (those searched; the others are the model's own).
    inner_score
        The chosen trial's mean loss over the inner pairs (price units; squared for the
        squared loss).
    outer_score
        The chosen settings' mean loss over the outer fold's pairs.
    untuned_score, naive_score
        The untuned model's and naive's mean loss over the same outer pairs.
    inner_naive
        Naive's mean loss over the inner pairs.
    trials, pruned, failed
        Trials in the fold's study: finished (complete, pruned or failed), pruned, and
        failed (settings that could not run on the window).
    new_trials
        Trials this call ran (fewer than ``trials`` when a stored study was resumed).
    study
        The study's name.
    seconds
        Wall time of the fold's search.
    """

    fold: int
    params: dict[str, Any]
    inner_score: float
    outer_score: float
    untuned_score: float
    naive_score: float
    inner_naive: float
    trials: int
    pruned: int
    failed: int
    new_trials: int
    study: str
    seconds: float

    @property
    def gap(self) -> float:
        """The optimism gap: outer score minus inner score."""
        return self.outer_score - self.inner_score

    @property
    def gap_ratio(self) -> float:
        """Outer score over inner score (NaN when the inner score is 0)."""
        return self.outer_score / self.inner_score if self.inner_score > 0 else math.nan

    @property
    def inner_relative(self) -> float:
        """The inner score over naive's on the inner pairs."""
        return self.inner_score / self.inner_naive if self.inner_naive > 0 else math.nan

    @property
    def outer_relative(self) -> float:
        """The outer score over naive's on the outer pairs."""
        return self.outer_score / self.naive_score if self.naive_score > 0 else math.nan

    @property
    def relative_gap(self) -> float:
        """The optimism gap on comparable numbers: outer minus inner, each relative to
        naive's score on the same pairs. The raw :attr:`gap` also moves with the price
        level and volatility between the two periods; this one does not."""
        return self.outer_relative - self.inner_relative

    def to_dict(self) -> dict[str, Any]:
        """The fold's object in :meth:`TuningResult.to_json`."""
        return _finite(
            {
                "fold": self.fold,
                "params": dict(self.params),
                "inner_score": self.inner_score,
                "outer_score": self.outer_score,
                "gap": self.gap,
                "gap_ratio": self.gap_ratio,
                "untuned_score": self.untuned_score,
                "naive_score": self.naive_score,
                "inner_naive": self.inner_naive,
                "inner_relative": self.inner_relative,
                "outer_relative": self.outer_relative,
                "relative_gap": self.relative_gap,
                "trials": self.trials,
                "pruned": self.pruned,
                "failed": self.failed,
                "new_trials": self.new_trials,
                "study": self.study,
                "seconds": self.seconds,
            }
        )


@dataclass
class TuningResult:
    """A nested tuning run: per outer fold, the choice and its scores; and the verdicts.

    Attributes
    ----------
    model
        The model alias tuned.
    folds
        One :class:`FoldResult` per outer fold.
    backtest
        The tuned model (each fold with its own choice), the untuned model and naive on
        the same (origin, target) pairs; the models are named :attr:`tuned_name`,
        :attr:`untuned_name` and ``"naive"``.
    verdict
        ``tuned_vs_untuned``, ``tuned_vs_naive`` and ``untuned_vs_naive``: Compare's
        verdicts (:func:`~forecasting.evaluation.verdicts`) with the experiment's loss.
    settings
        The run's settings: model, its untuned settings, the search space, the outer and
        inner layouts, loss, seed, trials, timeout, study file.
    """

    model: str
    folds: list[FoldResult]
    backtest: Backtest
    verdict: dict[str, Verdict]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def tuned_name(self) -> str:
        """The tuned model's name in the backtest."""
        return f"tuned {self.model}"

    @property
    def untuned_name(self) -> str:
        """The untuned model's name in the backtest."""
        return f"untuned {self.model}"

    @property
    def trials(self) -> int:
        """Trials over every fold's study: the settings tried, for a multiple-testing
        correction (``settings_tried`` of :func:`forecasting.strategy.run_strategy`)."""
        return sum(f.trials for f in self.folds)

    @property
    def notes(self) -> list[str]:
        """What the reader must know: folds the time limit cut short, and folds whose
        resumed study held more trials than asked for (the best of all is chosen)."""
        asked = int(self.settings.get("trials", 0) or 0)
        out = []
        short = [f for f in self.folds if asked and f.trials < asked]
        if short:
            ran = ", ".join(f"fold {f.fold} ran {f.trials}" for f in short)
            out.append(
                f"The time limit ended the search before {asked} trials per fold: {ran}. "
                "Fewer trials search less; the verdicts are of what was chosen."
            )
        more = [f for f in self.folds if asked and f.trials > asked]
        if more:
            held = ", ".join(f"fold {f.fold} holds {f.trials}" for f in more)
            out.append(
                f"The resumed study held more than the {asked} trials asked for ({held}): "
                "the best of all of them was chosen, and all count as tried."
            )
        return out

    def scores(self) -> dict[str, float]:
        """Mean loss over every outer pair: tuned, untuned and naive."""
        loss = LOSSES[self.settings.get("loss", "absolute")]
        out = {}
        frame = self.backtest.forecasts
        for key, name in (
            ("tuned", self.tuned_name),
            ("untuned", self.untuned_name),
            ("naive", "naive"),
        ):
            rows = frame[frame["model"] == name]
            errors = rows["y"].to_numpy(dtype="float64") - rows["yhat"].to_numpy(dtype="float64")
            out[key] = float(np.mean(loss(errors))) if len(rows) else math.nan
        return out

    def sentences(self) -> list[str]:
        """The verdicts in plain words, tuned against untuned first."""
        return [found.sentence() for found in self.verdict.values()]

    def table(self) -> pd.DataFrame:
        """One row per outer fold: fold, params (as text), inner, outer, gap, gap ratio,
        the scores relative to naive, and the trials."""
        rows = []
        for f in self.folds:
            rows.append(
                {
                    "fold": f.fold,
                    "params": ", ".join(f"{k}={_short(v)}" for k, v in f.params.items()),
                    "inner": f.inner_score,
                    "outer": f.outer_score,
                    "gap": f.gap,
                    "gap ratio": f.gap_ratio,
                    "inner vs naive": f.inner_relative,
                    "outer vs naive": f.outer_relative,
                    "relative gap": f.relative_gap,
                    "untuned": f.untuned_score,
                    "trials": f.trials,
                    "pruned": f.pruned,
                    "failed": f.failed,
                }
            )
        return pd.DataFrame(rows).set_index("fold") if rows else pd.DataFrame()

    def to_json(self) -> dict[str, Any]:
        """``{"folds": [{"fold", "params", "inner_score", "outer_score", ...}, ...],
        "summary": {"verdict": {...}, "trials": N, ...}}`` (valid JSON: NaN as null)."""
        return {
            "folds": [f.to_dict() for f in self.folds],
            "summary": _finite(
                {
                    "model": self.model,
                    "trials": self.trials,
                    "pruned": sum(f.pruned for f in self.folds),
                    "failed": sum(f.failed for f in self.folds),
                    "scores": self.scores(),
                    "mean_gap": float(np.mean([f.gap for f in self.folds])),
                    "mean_relative_gap": float(np.mean([f.relative_gap for f in self.folds])),
                    "notes": self.notes,
                    "verdict": {name: v.to_dict() for name, v in self.verdict.items()},
                    "sentences": self.sentences(),
                    "pairs": self.backtest.pairs.to_dict() if self.backtest.pairs else None,
                    "settings": self.settings,
                }
            ),
        }


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _finite(value: Any) -> Any:
    """``value`` with numpy scalars as Python's and non-finite floats as ``None``."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _TrialFailed(Exception):
    """A trial's settings could not run on the window (recorded as a failed trial)."""


class _OutOfTime(Exception):
    """The time limit passed during a trial (the trial is dropped, not counted)."""


def study_storage(study: str | os.PathLike | None) -> Any:
    """Optuna's storage for a study file (journal; SQLite for ``.db``/``.sqlite``).

    Raises
    ------
    DataFormatError
        The file is not a study this module can read (damaged, or another program's).
    """
    import optuna

    if study is None:
        return optuna.storages.InMemoryStorage()
    path = os.fspath(study)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigurationError(
            f"The folder of the study file {path} does not exist: create it, or give --study "
            "a file in a folder that does."
        )
    try:
        if path.lower().endswith((".db", ".sqlite", ".sqlite3")):
            return optuna.storages.RDBStorage(f"sqlite:///{os.path.abspath(path)}")
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(path))
    except Exception as exc:  # noqa: BLE001 - Optuna's, SQLAlchemy's and JSON's errors alike
        raise _unreadable_study(path, exc) from exc


def _unreadable_study(where: Any, exc: BaseException) -> DataFormatError:
    path = where if isinstance(where, str) else "the study file"
    problem = " ".join(str(exc).split())[:120] or type(exc).__name__
    return DataFormatError(
        f"{path} is not an Optuna study file this command can read ({problem}). Give "
        "--study a new file, or the one an earlier tuning run wrote."
    )


def _trial_seed(seed: int, finished: int) -> int:
    """The sampler seed of a study's next trial: from the run's seed and the trials before."""
    digest = hashlib.sha256(f"{int(seed)}:{int(finished)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 1)


def _fold_frame(
    name: str,
    model: Forecaster,
    candles: pd.DataFrame,
    fold: Fold,
    layout: dict[int, list[tuple[int, int]]],
    settings: BacktestSettings,
    should_stop: StopCheck | None,
) -> pd.DataFrame:
    """``model``'s forecast rows on one fold, by walk-forward's own fold code (the same
    pairs, fits and refits as :func:`~forecasting.evaluation.walk_forward`)."""
    rows, _ = forecast_fold(
        name, None, model, fold, candles, layout, settings, should_stop, lambda *_: None
    )
    return pd.DataFrame(rows, columns=FORECAST_COLUMNS)


def _mean_loss(frame: pd.DataFrame, loss: str) -> tuple[float, int]:
    errors = frame["y"].to_numpy(dtype="float64") - frame["yhat"].to_numpy(dtype="float64")
    values = LOSSES[loss](errors)
    return float(np.sum(values)), len(values)


def _inner_layout(
    outer: BacktestSettings, fold: Fold, inner_folds: int
) -> tuple[BacktestSettings, int]:
    """The inner walk-forward of an outer fold's training window, and its length."""
    window = fold.cutoff + 1
    length = max(fold.end - fold.cutoff - 1, 2)
    test_size = min(inner_folds * length, window // 2)
    return (
        BacktestSettings(
            horizon=outer.horizon,
            folds=inner_folds,
            test_size=max(test_size, 2 * inner_folds),
            stride=outer.stride,
            window=outer.window,
        ),
        window,
    )


def tune(
    candles: pd.DataFrame,
    model: str,
    settings: ExperimentSettings | BacktestSettings | None = None,
    *,
    trials: int = 20,
    timeout: float | None = None,
    study: str | os.PathLike | None = None,
    seed: int | None = None,
    loss: str | None = None,
    model_settings: Mapping[str, Any] | None = None,
    inner_folds: int = 2,
    filled: pd.DatetimeIndex | None = None,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> TuningResult:
    """Tune ``model`` fold by fold on each outer fold's past, and score each choice once.

    Parameters
    ----------
    candles
        The OHLCV frame (not modified).
    model
        A model alias from :func:`tunable_models`.
    settings
        The outer walk-forward: an :class:`~forecasting.experiment.ExperimentSettings`
        (its backtest, seed, loss and ``model_settings[model]`` are used; its model list
        and seed list are not: every model runs one seed) or a
        :class:`~forecasting.evaluation.BacktestSettings`; by default Compare's
        (``ExperimentSettings().backtest``).
    trials
        Trials per outer fold (1 to :data:`MAX_TRIALS`), counting those already in a
        resumed study.
    timeout
        Seconds for the whole search, or ``None`` for no limit (see the module docs).
    study
        A file that keeps the studies (journal file; SQLite for ``.db``/``.sqlite``),
        so the same call again resumes; ``None`` keeps them in memory.
    seed
        Seed of the sampler and of every seeded model (default: the settings' seed, 42).
    loss
        ``"absolute"`` or ``"squared"`` (default: the settings' loss, absolute): the
        trials' score and the verdicts' loss.
    model_settings
        The model's untuned settings (default: those in an ExperimentSettings, else the
        model's defaults); the searched settings replace theirs in each trial.
    inner_folds
        Inner walk-forward folds per outer fold (1 to 10).
    filled
        Open times of filled candles: they feed the models, never an origin or target.
    progress
        ``progress(stage, fraction, details)``: stage ``"tune"`` after each trial, then
        ``"backtest"`` for the untuned model and naive.
    should_stop
        Polled between trials and inner folds (and by fits); True raises ``Cancelled``.

    Returns
    -------
    TuningResult

    Raises
    ------
    ConfigurationError
        For a model without a search space, bad bounds or a layout that cannot fit.
    InsufficientHistory
        When an outer training window is too short for inner folds, or no trial of a
        fold could run on it (the message gives the first trial's reason).
    Cancelled
        When ``should_stop`` turned true.
    """
    experiment = settings if isinstance(settings, ExperimentSettings) else None
    outer = (
        settings
        if isinstance(settings, BacktestSettings)
        else (experiment.backtest if experiment is not None else ExperimentSettings().backtest)
    )
    seed = int(seed if seed is not None else (experiment.seed if experiment else 42))
    loss = loss or (experiment.loss if experiment else "absolute")
    if model_settings is None and experiment is not None:
        model_settings = experiment.model_settings.get(model)
    _check_bounds(trials, timeout, inner_folds)
    space = search_space(model, model_settings)
    built = ExperimentSettings(
        models=(model,),
        model_settings={model: dict(model_settings or {})},
        backtest=outer,
        seed=seed,
        loss=loss,
        seeds=1,
    ).build_models()
    naive, base = built["naive"], built[model]

    import optuna

    folds = make_folds(candles.index, outer)
    excluded = pd.DatetimeIndex([]) if filled is None else pd.DatetimeIndex(filled)
    layout, _ = pair_layout(candles.index, folds, int(outer.horizon), excluded)
    storage = study_storage(study)
    tuned_name, untuned_name = f"tuned {model}", f"untuned {model}"
    started = time.monotonic()
    deadline = None if timeout is None else started + float(timeout)
    results: list[FoldResult] = []
    tuned_rows: list[pd.DataFrame] = []
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        for position, fold in enumerate(folds):
            share = (0.9 * position / len(folds), 0.9 * (position + 1) / len(folds))
            fold_deadline = None
            if deadline is not None:
                left = max(deadline - time.monotonic(), 0.0)
                fold_deadline = time.monotonic() + left / (len(folds) - position)
            chosen, found = _search_fold(
                optuna,
                candles,
                fold,
                len(folds),
                outer,
                base,
                naive,
                space,
                trials=int(trials),
                inner_folds=int(inner_folds),
                loss=loss,
                seed=seed,
                excluded=excluded,
                storage=storage,
                deadline=fold_deadline,
                progress=scaled(progress, *share),
                should_stop=should_stop,
            )
            tuned = type(base)(**{**base.get_params(), **chosen})
            if should_stop is not None and should_stop():
                raise Cancelled("The tuning was cancelled.")
            frame = _fold_frame(tuned_name, tuned, candles, fold, layout, outer, should_stop)
            total, count = _mean_loss(frame, loss)
            results.append(found(total / count if count else math.nan))
            tuned_rows.append(frame)
    finally:
        optuna.logging.set_verbosity(verbosity)

    reference = walk_forward(
        {"naive": naive, untuned_name: base},
        candles,
        outer,
        progress=scaled(progress, 0.9, 1.0),
        should_stop=should_stop,
        excluded=excluded,
    )
    backtest = _joined(reference, tuned_rows, tuned_name, base, seed)
    for index, result in enumerate(results):
        rows = reference.forecasts[reference.forecasts["fold"] == result.fold]
        untuned, naive_score = (
            _mean_loss(rows[rows["model"] == name], loss) for name in (untuned_name, "naive")
        )
        results[index] = _with_scores(result, untuned, naive_score)
    against_naive = verdicts(backtest, loss=loss)
    against_untuned = verdicts(backtest, loss=loss, baseline=untuned_name)
    verdict = {
        "tuned_vs_untuned": against_untuned[tuned_name],
        "tuned_vs_naive": against_naive[tuned_name],
        "untuned_vs_naive": against_naive[untuned_name],
    }
    return TuningResult(
        model=model,
        folds=results,
        backtest=backtest,
        verdict=verdict,
        settings={
            "model": model,
            "untuned": base.get_params(),
            "space": space.to_dict(),
            "backtest": outer.to_dict(),
            "inner_folds": int(inner_folds),
            "loss": loss,
            "seed": seed,
            "trials": int(trials),
            "timeout": timeout,
            "study": None if study is None else os.fspath(study),
            "data": {
                "candles": len(candles),
                "first": candles.index[0].isoformat(),
                "last": candles.index[-1].isoformat(),
                "sha256": data_hash(candles),
            },
        },
    )


def _check_bounds(trials: Any, timeout: Any, inner_folds: Any) -> None:
    if isinstance(trials, bool) or not isinstance(trials, int | np.integer):
        raise ConfigurationError(f"trials must be a whole number, got {trials!r}.")
    if not 1 <= int(trials) <= MAX_TRIALS:
        raise ConfigurationError(f"trials must be from 1 to {MAX_TRIALS}, got {trials}.")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float | np.number)
        or not math.isfinite(float(timeout))
        or float(timeout) <= 0
    ):
        raise ConfigurationError(
            f"The time limit must be a positive number of seconds, got {timeout!r}; leave it "
            "out for no limit."
        )
    if isinstance(inner_folds, bool) or not isinstance(inner_folds, int | np.integer):
        raise ConfigurationError(f"inner_folds must be a whole number, got {inner_folds!r}.")
    if not INNER_FOLDS.contains(int(inner_folds)):
        raise ConfigurationError(
            f"inner_folds must be {INNER_FOLDS.describe()}, got {inner_folds}."
        )


def _search_fold(
    optuna: Any,
    candles: pd.DataFrame,
    fold: Fold,
    folds: int,
    outer: BacktestSettings,
    base: Forecaster,
    naive: Forecaster,
    space: SearchSpace,
    *,
    trials: int,
    inner_folds: int,
    loss: str,
    seed: int,
    excluded: pd.DatetimeIndex,
    storage: Any,
    deadline: float | None,
    progress: ProgressCallback | None,
    should_stop: StopCheck | None,
) -> tuple[dict[str, Any], Callable[[float], FoldResult]]:
    """Search one outer fold on its training window; return the chosen settings and a
    function that makes the fold's result from its outer score."""
    started = time.monotonic()
    inner, window = _inner_layout(outer, fold, inner_folds)
    # The search's data: candles up to the cutoff, nothing after it.
    past = candles.iloc[:window]
    past_excluded = excluded[excluded.isin(past.index)] if len(excluded) else excluded
    try:
        inner_fold_list = make_folds(past.index, inner)
    except InsufficientHistory as exc:
        raise InsufficientHistory(
            f"Outer fold {fold.number}'s {window} training candles are too few for "
            f"{inner_folds} inner folds of {inner.test_size // inner_folds} candles: "
            "choose a longer date range or a shorter test period."
        ) from exc
    inner_pairs, _ = pair_layout(past.index, inner_fold_list, int(inner.horizon), past_excluded)
    naive_total = naive_count = 0.0
    for inner_fold in inner_fold_list:
        frame = _fold_frame("naive", naive, past, inner_fold, inner_pairs, inner, should_stop)
        total, count = _mean_loss(frame, loss)
        naive_total, naive_count = naive_total + total, naive_count + count
    key = {
        "model": space.model,
        "base": base.get_params(),
        "space": space.to_dict(),
        "outer": outer.to_dict(),
        "fold": fold.number,
        "inner": inner.to_dict(),
        "loss": loss,
        "seed": seed,
        "data": data_hash(past),
        "excluded": [str(t) for t in past_excluded],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    name = f"{space.model}-fold{fold.number}-{digest[:16]}"
    try:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction="minimize",
            pruner=optuna.pruners.MedianPruner(
                n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=0
            ),
            load_if_exists=True,
        )
    except Exception as exc:  # noqa: BLE001 - a foreign or damaged file: Optuna's and its DB's errors
        raise _unreadable_study(storage, exc) from exc
    states = optuna.trial.TrialState

    def counted() -> list[Any]:
        return [
            t
            for t in study.get_trials(deepcopy=False)
            if t.state in (states.COMPLETE, states.PRUNED)
            or (t.state == states.FAIL and "error" in t.user_attrs)
        ]

    def has_complete() -> bool:
        return any(t.state == states.COMPLETE for t in study.get_trials(deepcopy=False))

    def objective(trial: Any) -> float:
        params = space.settings(space.sample(trial))
        trial.set_user_attr("settings", params)
        candidate = type(base)(**{**base.get_params(), **params})
        total = count = 0.0
        try:
            candidate.check_settings()
            for step, inner_fold in enumerate(inner_fold_list, 1):
                if should_stop is not None and should_stop():
                    raise Cancelled("The tuning was cancelled.")
                frame = _fold_frame(
                    space.model, candidate, past, inner_fold, inner_pairs, inner, should_stop
                )
                fold_total, fold_count = _mean_loss(frame, loss)
                total, count = total + fold_total, count + fold_count
                if count == 0:
                    continue
                trial.report(total / count, step)
                if step < len(inner_fold_list) and trial.should_prune():
                    raise optuna.TrialPruned()
                last = step == len(inner_fold_list)
                if not last and _past(deadline) and has_complete():
                    raise _OutOfTime()
        except Cancelled:
            raise
        except ForecastingError as exc:
            trial.set_user_attr("error", str(exc))
            raise _TrialFailed(str(exc)) from exc
        if count == 0:
            trial.set_user_attr("error", "no inner pair could be scored")
            raise _TrialFailed("no inner pair could be scored")
        return total / count

    new = 0
    while True:
        done = counted()
        if len(done) >= trials:
            break
        if _past(deadline) and has_complete():
            break
        if should_stop is not None and should_stop():
            raise Cancelled("The tuning was cancelled.")
        # One sampler per trial, seeded by the trials before it: a resumed study draws
        # what an uninterrupted one would (a sampler's random state is not stored).
        study.sampler = optuna.samplers.TPESampler(
            seed=_trial_seed(seed, len(done)), n_startup_trials=STARTUP_TRIALS
        )
        try:
            study.optimize(objective, n_trials=1, catch=(_TrialFailed,))
        except _OutOfTime:
            break
        new += 1
        report(
            progress,
            "tune",
            (len(done) + 1) / trials,
            message=f"fold {fold.number} of {folds}: trial {len(done) + 1} of {trials}",
            fold=fold.number,
            folds=folds,
            trial=len(done) + 1,
            trials=trials,
        )
    finished = counted()
    complete = [t for t in finished if t.state == states.COMPLETE]
    if not complete:
        reasons = [t.user_attrs.get("error") for t in finished if t.user_attrs.get("error")]
        why = f" The first trial's reason: {reasons[0]}" if reasons else ""
        raise InsufficientHistory(
            f"No trial finished on outer fold {fold.number}'s {window} training candles.{why}"
        )
    # The best trial; on a tie the earliest (Optuna's own rule), so reruns agree.
    best = min(complete, key=lambda t: (t.value, t.number))
    chosen = dict(best.user_attrs["settings"])
    pruned = sum(t.state == states.PRUNED for t in finished)
    failed = sum(t.state == states.FAIL for t in finished)
    seconds = time.monotonic() - started
    inner_naive = naive_total / naive_count if naive_count else math.nan

    def result(outer_score: float) -> FoldResult:
        return FoldResult(
            fold=fold.number,
            params=chosen,
            inner_score=float(best.value),
            outer_score=float(outer_score),
            untuned_score=math.nan,
            naive_score=math.nan,
            inner_naive=inner_naive,
            trials=len(finished),
            pruned=pruned,
            failed=failed,
            new_trials=new,
            study=name,
            seconds=seconds,
        )

    return chosen, result


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _with_scores(
    result: FoldResult, untuned: tuple[float, int], naive: tuple[float, int]
) -> FoldResult:
    return replace(
        result,
        untuned_score=untuned[0] / untuned[1] if untuned[1] else math.nan,
        naive_score=naive[0] / naive[1] if naive[1] else math.nan,
    )


def _joined(
    reference: Backtest,
    tuned_rows: list[pd.DataFrame],
    tuned_name: str,
    base: Forecaster,
    seed: int,
) -> Backtest:
    """The reference backtest (naive, untuned) with the tuned rows on the same pairs."""
    tuned = pd.concat(tuned_rows, ignore_index=True) if tuned_rows else pd.DataFrame()
    untuned_name = [m for m in reference.models if m != "naive"][0]
    mine = reference.forecasts[reference.forecasts["model"] == untuned_name]
    pairs = set(zip(mine["origin"], mine["step"], strict=True))
    if set(zip(tuned["origin"], tuned["step"], strict=True)) != pairs:
        raise ConfigurationError(
            "The tuned forecasts do not cover the untuned model's (origin, target) pairs."
        )
    seeded = base.capabilities.seeded
    return Backtest(
        forecasts=pd.concat([reference.forecasts, tuned], ignore_index=True),
        folds=reference.folds,
        settings=reference.settings,
        naive_scale=reference.naive_scale,
        levels={**reference.levels, tuned_name: getattr(base, "level", None)},
        pairs=reference.pairs,
        notes=dict(reference.notes),
        model_seeds={**reference.model_seeds, tuned_name: seed if seeded else None},
    )
