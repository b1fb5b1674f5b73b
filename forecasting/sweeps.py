"""Sweeps: one experiment per series (a file, or an exchange pair and timeframe), on Ray.

A sweep runs :func:`~forecasting.experiment.run_experiment` with the same settings on each
series of a list and gathers what came out: each experiment's ``compare --json`` document,
its bundle (``forecasting.bundle.experiment_bundle``) and a results table with one row per
series and model (the verdict against naive, its ratio and p-value, the errors)::

    out_dir/
        results.csv      one row per (series, model); a failed series has one row saying why
        sweep.json       {"<series label>": <that experiment's compare --json>, ...}
        <label>.zip      each experiment's bundle (the table's ``bundle`` column names it)

Where it runs
-------------
Each experiment is one Ray task (:func:`run_sweep`): on a Ray started for the sweep on this
machine (``workers`` tasks at once, ``cpus_per_task`` CPUs each) by default; on an existing
cluster with ``address`` (``ray.init(address=...)``: ``"auto"`` for the cluster this machine
belongs to, ``"ray://head:10001"`` through Ray Client); or, inside a job submitted with
``ray job submit --working-dir . -- python -m forecasting sweep ...``, on the job's cluster
(Ray sets ``RAY_ADDRESS`` for the job's driver, and the sweep connects to it). Each task
reads its own candles (a file path every node can read, or the exchange), and limits
TensorFlow's threads to its CPU share: ``TF_NUM_INTRAOP_THREADS``,
``TF_NUM_INTEROP_THREADS`` and ``OMP_NUM_THREADS`` are set to ``cpus_per_task`` in the
task's environment before TensorFlow starts, so two tasks on two cores do not each start a
thread per core. ``local=True`` runs the same task function in this process, one series
after another, with no Ray: the reference the Ray results equal exactly (same seeds).

Ray is imported only inside :func:`run_sweep` (importing :mod:`forecasting` never imports
it). It starts about 0.8 GB of processes, so it is installed only in the engines venv
(``requirements-engines.txt``), never in the Streamlit process: :func:`ray_python` names
the interpreter to re-run a sweep in when this one has no Ray.

Tuning
------
With ``tune`` (a dict of :func:`forecasting.tuning.tune`'s arguments), each task also
tunes the series' tunable models by nested walk-forward on the same candles, the sweep's
walk-forward as the outer folds; the series' document gains a ``tuning`` object
(``{model: <tune --json>}``) and the table a ``tuned MODEL`` row.

Progress
--------
``progress("sweep", fraction, details)`` after each series, with ``message``, ``series``
(its label), ``done``, ``total`` and ``ok``; with ``local=True`` the experiment's own stages
(``backtest``, ``refit``: see :mod:`forecasting.progress`) are passed on too, scaled to the
series' share of the sweep. ``should_stop`` is polled between series (and within each with
``local=True``, about twice a second with Ray); True cancels the tasks not yet finished and
raises :class:`~forecasting.errors.Cancelled`; the bundles of the series already finished
stay written.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from forecasting.errors import (
    Cancelled,
    ConfigurationError,
    DataFormatError,
    ForecastingError,
)
from forecasting.experiment import ExperimentSettings
from forecasting.progress import ProgressCallback, StopCheck, report, scaled

__all__ = [
    "RESULTS_FILE",
    "SWEEP_FILE",
    "TABLE_COLUMNS",
    "Series",
    "SweepResult",
    "exchange_series",
    "file_series",
    "ray_importable",
    "ray_python",
    "read_sweep",
    "run_sweep",
    "safe_name",
]

#: The results table in a sweep's folder.
RESULTS_FILE = "results.csv"
#: ``{"<series label>": <compare --json>}`` in a sweep's folder.
SWEEP_FILE = "sweep.json"
#: The results table's columns, in order.
TABLE_COLUMNS = (
    "series",
    "model",
    "status",
    "reading",
    "ratio",
    "pvalue",
    "holds_for",
    "seeds",
    "vs_untuned",
    "mae",
    "rmse",
    "mase",
    "smape",
    "coverage",
    "directional_accuracy",
    "n",
    "candles",
    "first",
    "last",
    "seconds",
    "bundle",
    "error",
)
# The threads a library may start per process; each is set to the task's CPU share.
_THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")
# How often the Ray loop wakes to poll should_stop (seconds).
_POLL = 0.5
# An error message in the table is cut to one readable line of this many characters.
_SHORT = 300


@dataclass(frozen=True)
class Series:
    """One series of a sweep: a CSV file, or an exchange's pair and timeframe.

    Build them with :func:`file_series` or :func:`exchange_series`, which give each its
    label: the file's name (``"binance_BTC-USDT_1d.csv"``) or the exchange, symbol and
    timeframe (``"binance BTC/USDT 1d"``).

    Parameters
    ----------
    label
        The series' name in the table, in ``sweep.json`` and in its bundle's file name.
    file
        Path of an OHLCV CSV file (read with :func:`forecasting.data.read_ohlcv_csv`);
        on a cluster, a path every node can read.
    exchange, symbol, timeframe
        A ccxt exchange id, unified symbol and timeframe, when ``file`` is ``None``.
    since, until
        ISO-8601 UTC bounds of exchange candles (default: the last 1000 candles).
    config
        ccxt constructor settings (as ``--exchange-config``); never written to the
        results.
    cache_dir
        The candle cache folder (default: the library's, on the node running the task).
    """

    label: str
    file: str | None = None
    exchange: str | None = None
    symbol: str | None = None
    timeframe: str | None = None
    since: str | None = None
    until: str | None = None
    config: Mapping[str, Any] | None = field(default=None, repr=False)
    cache_dir: str | None = None


def file_series(files: str | Sequence[str | os.PathLike[str]]) -> list[Series]:
    """The series of ``--data A.csv,B.csv``: one per file, labelled by the file's name.

    Two files of the same name in different folders are labelled by their paths as
    given instead.

    Raises
    ------
    ConfigurationError
        When no file is named, or one is named twice.
    """
    items = files.split(",") if isinstance(files, str) else [os.fspath(f) for f in files]
    paths = [item.strip() for item in items if item.strip()]
    if not paths:
        raise ConfigurationError("--data names no file: give CSV files as A.csv,B.csv.")
    twice = sorted({p for p in paths if paths.count(p) > 1})
    if twice:
        raise ConfigurationError(f"{twice[0]} is named twice in --data: name each file once.")
    names = [Path(p).name for p in paths]
    return [
        Series(label=name if names.count(name) == 1 else path, file=path)
        for path, name in zip(paths, names, strict=True)
    ]


def exchange_series(
    exchange: str,
    symbols: str | Sequence[str],
    timeframes: str | Sequence[str],
    *,
    since: str | None = None,
    until: str | None = None,
    config: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[Series]:
    """The series of ``--exchange ID --symbols S1,S2 --timeframes 1h,1d``: every symbol
    with every timeframe (symbol by symbol), labelled ``"ID SYMBOL TIMEFRAME"``.

    Raises
    ------
    ConfigurationError
        When the exchange, the symbols or the timeframes are missing.
    """
    symbol_list = _items(symbols)
    timeframe_list = _items(timeframes)
    if not str(exchange or "").strip():
        raise ConfigurationError("A sweep of exchange data needs --exchange, e.g. binance.")
    if not symbol_list or not timeframe_list:
        raise ConfigurationError(
            "--exchange needs --symbols and --timeframes, e.g. --symbols BTC/USDT,ETH/USDT "
            "--timeframes 1d."
        )
    exchange = str(exchange).strip()
    return [
        Series(
            label=f"{exchange} {symbol} {timeframe}",
            exchange=exchange,
            symbol=symbol,
            timeframe=timeframe,
            since=since,
            until=until,
            config=dict(config) if config else None,
            cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
        )
        for symbol in symbol_list
        for timeframe in timeframe_list
    ]


def _items(text: str | Sequence[str]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else list(text or [])
    return list(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))


def safe_name(label: str) -> str:
    """A file name for ``label``: letters, digits, ``.``, ``_`` and ``-`` only, without a
    ``.csv`` ending (``"binance BTC/USDT 1d"`` gives ``"binance_BTC_USDT_1d"``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._-")
    name = re.sub(r"\.(csv|txt)(\.(gz|zip))?$", "", name, flags=re.IGNORECASE)
    return name or "series"


@dataclass
class SweepResult:
    """What a sweep produced (or, from :func:`read_sweep`, what its folder holds).

    Attributes
    ----------
    out_dir
        The folder holding ``results.csv``, ``sweep.json`` and the bundles.
    labels
        The series' labels, in the sweep's order.
    documents
        Per label that succeeded, its experiment's ``compare --json`` document.
    errors
        Per label that failed, one line saying why.
    bundles
        Per label that succeeded, the path of its experiment bundle.
    table
        The results table (columns :data:`TABLE_COLUMNS`), one row per series and model.
    seconds
        Wall-clock time of the sweep (``None`` when read back).
    """

    out_dir: Path
    labels: list[str]
    documents: dict[str, dict[str, Any]]
    errors: dict[str, str]
    bundles: dict[str, Path]
    table: pd.DataFrame
    seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        """``{"<series label>": <compare --json>}`` as ``sweep.json`` holds it; a series
        that failed is ``{"error": "<why>"}``."""
        out: dict[str, Any] = {}
        for label in self.labels:
            if label in self.documents:
                out[label] = self.documents[label]
            else:
                out[label] = {"error": self.errors.get(label, "no result")}
        return out

    def bundle_bytes(self, label: str) -> bytes:
        """The bytes of ``label``'s bundle, for :func:`forecasting.bundle.read_bundle_data`
        and :func:`~forecasting.bundle.read_bundle_experiment`.

        Raises
        ------
        ConfigurationError
            When the series has no bundle (it failed, or its file was removed).
        """
        path = self.bundles.get(label)
        if path is None or not path.is_file():
            why = self.errors.get(label, "its bundle is not in the sweep's folder")
            raise ConfigurationError(f"The series {label!r} has no bundle: {why}")
        return path.read_bytes()


# --------------------------------------------------------------------------- Ray here?


def ray_importable() -> bool:
    """Whether ``ray`` can be imported by this interpreter (found, not imported)."""
    return importlib.util.find_spec("ray") is not None


def ray_python() -> Path | None:
    """The Python to run a sweep on Ray with: this one when it has Ray, else the engines
    venv's (:func:`forecasting.nautilus.engines_python`) when that one has it, else
    ``None`` (then ``make engines`` installs it).

    Re-run ``[str(ray_python()), "-m", "forecasting", "sweep", ...]`` in the repository
    root: the engines venv also holds the app's requirements, so ``forecasting`` imports.
    """
    if ray_importable():
        return Path(sys.executable)
    from forecasting.nautilus import engines_python

    python = engines_python()
    if python is None:
        return None
    check = "import importlib.util, sys; sys.exit(importlib.util.find_spec('ray') is None)"
    try:
        found = subprocess.run([str(python), "-c", check], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return python if found.returncode == 0 else None


def _no_ray() -> ConfigurationError:
    return ConfigurationError(
        "A sweep on Ray needs the ray package, which this Python does not have: run it with "
        "the engines venv's Python (make engines installs Ray there), or with local=True "
        "(--local) to run the series one after another without Ray."
    )


# --------------------------------------------------------------------------- one series


def _run_series(
    series: Series,
    settings: ExperimentSettings,
    *,
    cpus: int | None = None,
    tune: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> dict[str, Any]:
    """One series' experiment (and tuning), as a Ray task runs it (and ``local=True`` too).

    Returns ``{"label", "document", "bundle", "error", "seconds"}``: the ``compare --json``
    document and the bundle's bytes, or ``None`` for both and one line saying why.
    :class:`Cancelled` is raised, every other failure is returned.
    """
    started = time.perf_counter()
    if cpus is not None:
        _limit_threads(cpus)
    try:
        document, bundle = _experiment(series, settings, cpus, tune, progress, should_stop)
    except Cancelled:
        raise
    except ForecastingError as exc:
        return _failure(series, str(exc), time.perf_counter() - started)
    except Exception as exc:  # a bug in one series must not lose the others
        return _failure(series, f"{type(exc).__name__}: {exc}", time.perf_counter() - started)
    return {
        "label": series.label,
        "document": document,
        "bundle": bundle,
        "error": None,
        "seconds": time.perf_counter() - started,
    }


def _failure(series: Series, why: str, seconds: float | None) -> dict[str, Any]:
    return {
        "label": series.label,
        "document": None,
        "bundle": None,
        "error": _one_line(why),
        "seconds": seconds,
    }


def _one_line(text: str) -> str:
    line = " ".join(str(text).split()) or "failed without a message"
    return line if len(line) <= _SHORT else line[: _SHORT - 1] + "…"


def _limit_threads(cpus: int) -> None:
    """Keep TensorFlow (and OpenMP) to ``cpus`` threads in this worker process.

    The variables take effect when TensorFlow starts; when it has already been imported
    here (a worker reused by an earlier task of the same sweep, which set the same
    share), its threading settings are set too, which TensorFlow allows only before its
    first operation, so a refusal is ignored.
    """
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(cpus)
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(cpus)
            tf.config.threading.set_inter_op_parallelism_threads(cpus)
        except (RuntimeError, ValueError, AttributeError):
            pass


def _experiment(
    series: Series,
    settings: ExperimentSettings,
    cpus: int | None,
    tune: Mapping[str, Any] | None,
    progress: ProgressCallback | None,
    should_stop: StopCheck | None,
) -> tuple[dict[str, Any], bytes]:
    """The series' candles read, its experiment run (and its models tuned): the compare
    document (with a ``tuning`` object when tuned) and the bundle."""
    from forecasting.bundle import experiment_bundle
    from forecasting.experiment import finite_document, run_experiment

    candles, source, selection, read_notes = _load(series)
    candles, mood_notes = _with_mood(series, candles, source, settings)
    read_notes = [*read_notes, *mood_notes]
    tuned = _tuned_models(settings, tune)
    # With tuning, the experiment takes the first half of the series' bar, the searches
    # the rest.
    share = 0.5 if tuned else 1.0
    result = run_experiment(
        candles,
        settings,
        source=source,
        progress=scaled(progress, 0.0, share),
        should_stop=should_stop,
        future=True,
        workers=cpus,
    )
    document = result.to_json()
    # As compare --json prints it: how the file was read first, beside the experiment's
    # own notes, and every number that is not finite as null.
    own = [note for note in document.get("notes", []) if note not in read_notes]
    document["notes"] = [*read_notes, *own]
    if tuned:
        from forecasting.tuning import tune as tune_model

        arguments = {k: v for k, v in (tune or {}).items() if k != "models"}
        document["tuning"] = {}
        for position, model in enumerate(tuned):
            step = (1 - share) / len(tuned)
            found = tune_model(
                candles,
                model,
                settings,
                progress=scaled(progress, share + position * step, share + (position + 1) * step),
                should_stop=should_stop,
                **arguments,
            )
            document["tuning"][model] = found.to_json()
    document = finite_document(document)
    return document, experiment_bundle(result, selection=selection, read_notes=read_notes)


def _tuned_models(settings: ExperimentSettings, tune: Mapping[str, Any] | None) -> list[str]:
    """The models a sweep tunes: ``tune["models"]``, else the settings' models that have
    a search space."""
    if tune is None:
        return []
    from forecasting.tuning import tunable_models

    models = tune.get("models")
    if models is None:
        return [m for m in settings.models if m in tunable_models()]
    return _items(models)


def _load(series: Series) -> tuple[pd.DataFrame, dict, dict, list[str]]:
    """The candles of a series, their source and selection as ``compare`` records them,
    and the notes on how they were read (:func:`forecasting.experiment.load_series`)."""
    from forecasting.experiment import load_series

    if series.file is not None and not Path(series.file).is_file():
        raise DataFormatError(f"{series.file} was not found: check the path given in --data.")
    return load_series(
        file=series.file,
        exchange=series.exchange,
        symbol=series.symbol,
        timeframe=series.timeframe,
        since=series.since,
        until=series.until,
        config=series.config,
        cache_dir=series.cache_dir,
    )


def _with_mood(
    series: Series, candles: pd.DataFrame, source: dict, settings: ExperimentSettings
) -> tuple[pd.DataFrame, list[str]]:
    """The candles with the mood columns any model's features name (fear_greed,
    funding_rate), joined as of each close as ``compare`` joins them."""
    from forecasting.features import mood_kinds

    texts = [
        value
        for given in settings.model_settings.values()
        if isinstance(given, Mapping)
        for name, value in given.items()
        if name in ("features", "regressors") and isinstance(value, str)
    ]
    kinds = [kind for kind in mood_kinds(*texts) if kind not in candles.columns]
    if not kinds:
        return candles, []
    from forecasting.data import CandleCache, create_exchange
    from forecasting.data.mood import attach_mood
    from forecasting.errors import DataUnavailable

    client = None
    if "funding_rate" in kinds:
        if series.exchange is None:
            raise ConfigurationError(
                "funding_rate needs an exchange series (--exchange with --symbols): a file "
                "does not say which exchange's perpetual to read."
            )
        client = create_exchange(series.exchange, series.config)
    joined = attach_mood(
        candles,
        source.get("timeframe") or str(series.timeframe),
        kinds,
        exchange=client,
        symbol=series.symbol,
        cache=CandleCache(series.cache_dir) if series.cache_dir else None,
    )
    if joined.unavailable:
        kind, reason = next(iter(joined.unavailable.items()))
        raise DataUnavailable(f"The {kind} feature is unavailable: {reason}")
    return joined.candles, list(joined.notes)


# --------------------------------------------------------------------------- the sweep


def run_sweep(
    series: Sequence[Series],
    settings: ExperimentSettings,
    out_dir: str | os.PathLike[str],
    *,
    address: str | None = None,
    workers: int | None = None,
    local: bool = False,
    tune: Mapping[str, Any] | None = None,
    cpus_per_task: int = 1,
    runtime_env: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> SweepResult:
    """Run one experiment per series, as Ray tasks, and write the results to ``out_dir``.

    Parameters
    ----------
    series
        From :func:`file_series` or :func:`exchange_series` (labels must differ).
    settings
        The experiment every series runs (models, walk-forward layout, seeds, loss).
    out_dir
        Created if needed; gets ``results.csv``, ``sweep.json`` and a bundle per series
        that succeeded (``<safe label>.zip``, see :func:`safe_name`). Files of an earlier
        sweep with the same names are replaced.
    address
        An existing Ray cluster (``"auto"``, ``"ray://head:10001"``, ...). ``None``
        starts a Ray on this machine for the sweep (stopped at the end), unless this
        process already runs one, or is the driver of a Ray job (``RAY_ADDRESS`` set):
        then that one is used.
    workers
        Experiments at once. On the Ray started here, it sizes that Ray
        (``workers * cpus_per_task`` CPUs; default: every CPU of the machine); on an
        existing cluster it caps the tasks in flight (default: as many as the cluster
        schedules).
    local
        Run the same task function here, one series after another, without Ray: the
        reference the Ray results equal (same seeds).
    tune
        Nested tuning of each series besides its experiment
        (:func:`forecasting.tuning.tune`): ``{"models": "lstm,prophet", "trials": 20,
        "timeout": None, "inner_folds": 2, "seed": ..., "loss": ..., "study": FILE}``,
        every key optional (``models`` defaults to the settings' tunable models; the
        rest to ``tune``'s defaults, with the sweep's walk-forward as the outer folds).
        Each series' document then has a ``tuning`` object, ``{model: <tune --json>}``,
        and the table a ``tuned MODEL`` row (its verdict against naive; ``vs_untuned``
        against its untuned self). ``{}`` tunes with every default.
    cpus_per_task
        CPUs Ray reserves for each experiment; TensorFlow's threads in the task are
        limited to it, and so are the experiment's backtest threads.
    runtime_env
        Extra Ray runtime environment for the tasks (``{"pip": [...]}``,
        ``{"py_modules": [...]}`` for a cluster whose nodes lack this package); its
        ``env_vars`` are merged with the thread limits.
    progress, should_stop
        See the module's docstring.

    Returns
    -------
    SweepResult
        The documents, errors, bundles and table, also written to ``out_dir``.

    Raises
    ------
    ConfigurationError
        Before anything runs: no series, two series with one label, settings out of
        their ranges, ``tune`` without the tuning module, Ray missing (without
        ``local``), ``workers`` or ``cpus_per_task`` below 1.
    Cancelled
        When ``should_stop`` returned True.

    A failure of one series (a missing file, too few candles, an exchange down, a model
    that failed) is recorded in the table with one line saying why; the others go on.
    """
    series = list(series)
    _check_request(series, settings, workers, cpus_per_task)
    if tune is not None:
        _check_tune(tune, settings)
    if not local and not ray_importable():
        raise _no_ray()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = _bundle_names(series)
    started = time.perf_counter()
    outcomes: dict[str, dict[str, Any]] = {}

    def finished(outcome: dict[str, Any]) -> None:
        label = outcome["label"]
        if outcome["bundle"] is not None:
            (out / names[label]).write_bytes(outcome["bundle"])
        else:
            # An earlier sweep's bundle of a series that failed now would be taken for its.
            (out / names[label]).unlink(missing_ok=True)
        outcome["bundle"] = None  # written: the bytes are not kept
        outcomes[label] = outcome
        ok = outcome["error"] is None
        report(
            progress,
            "sweep",
            len(outcomes) / len(series),
            message=f"{label}: " + ("done" if ok else f"failed: {outcome['error']}"),
            series=label,
            done=len(outcomes),
            total=len(series),
            ok=ok,
        )

    if local:
        for position, item in enumerate(series):
            if should_stop is not None and should_stop():
                raise Cancelled(_cancelled(len(outcomes), len(series)))
            share = scaled(progress, position / len(series), (position + 1) / len(series))
            finished(
                _run_series(item, settings, tune=tune, progress=share, should_stop=should_stop)
            )
    else:
        _on_ray(
            series,
            settings,
            address=address,
            workers=workers,
            cpus=cpus_per_task,
            tune=tune,
            runtime_env=runtime_env,
            finished=finished,
            should_stop=should_stop,
        )
    return _write(out, series, names, outcomes, time.perf_counter() - started)


def _check_request(
    series: list[Series], settings: ExperimentSettings, workers: int | None, cpus: int
) -> None:
    if not series:
        raise ConfigurationError(
            "A sweep needs at least one series: --data A.csv,B.csv or --exchange with "
            "--symbols and --timeframes."
        )
    labels = [item.label for item in series]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise ConfigurationError(f"The series {twice[0]!r} is named twice: name each once.")
    for name, value in (("workers", workers), ("cpus_per_task", cpus)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigurationError(f"{name} must be a whole number, got {value!r}.")
        if value is not None and value < 1:
            raise ConfigurationError(f"{name} must be at least 1, got {value}.")
    settings.build_models()  # settings out of range fail here, before any task starts
    settings.seed_list()


# The arguments of forecasting.tuning.tune a sweep passes through (besides "models").
_TUNE_ARGUMENTS = ("trials", "timeout", "study", "seed", "loss", "inner_folds")


def _check_tune(tune: Mapping[str, Any], settings: ExperimentSettings) -> None:
    """Refuse tuning arguments that cannot run, before any series starts; create the
    study file's storage once, here, so that tasks running at once never race to create
    its tables (SQLite)."""
    if not isinstance(tune, Mapping):
        raise ConfigurationError(f"tune is an object of tuning arguments, got {tune!r}.")
    unknown = [key for key in tune if key not in (*_TUNE_ARGUMENTS, "models")]
    if unknown:
        raise ConfigurationError(
            f"--tune does not take {unknown[0]!r}: use models, {', '.join(_TUNE_ARGUMENTS)}."
        )
    from forecasting.tuning import tunable_models

    models = _tuned_models(settings, tune)
    if not models:
        raise ConfigurationError(
            "--tune has no model to tune: add one of "
            f"{', '.join(tunable_models())} to --models (naive and drift have no settings "
            "to tune)."
        )
    untunable = [model for model in models if model not in tunable_models()]
    if untunable:
        raise ConfigurationError(
            f"{untunable[0]} cannot be tuned: tune one of {', '.join(tunable_models())}."
        )
    if tune.get("study") is not None:
        from forecasting.tuning import study_storage

        study_storage(tune["study"])  # a damaged file fails here, in one line


def _bundle_names(series: list[Series]) -> dict[str, str]:
    """Per label, its bundle's file name, distinct even where two safe names collide."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for item in series:
        stem = safe_name(item.label)
        name, k = f"{stem}.zip", 2
        while name.lower() in taken:
            name, k = f"{stem}-{k}.zip", k + 1
        taken.add(name.lower())
        names[item.label] = name
    return names


def _cancelled(done: int, total: int) -> str:
    return (
        f"The sweep was cancelled after {done} of {total} series; the bundles of those "
        "finished are in its folder."
    )


def _on_ray(
    series: list[Series],
    settings: ExperimentSettings,
    *,
    address: str | None,
    workers: int | None,
    cpus: int,
    tune: Mapping[str, Any] | None,
    runtime_env: Mapping[str, Any] | None,
    finished: Callable[[dict[str, Any]], None],
    should_stop: StopCheck | None,
) -> None:
    """Each series a Ray task; ``finished`` called with each outcome as it arrives."""
    try:
        import ray
    except ImportError as exc:
        raise _no_ray() from exc
    import ray.exceptions

    env = dict(runtime_env or {})
    env["env_vars"] = {
        **{name: str(cpus) for name in _THREAD_VARIABLES},
        **(env.get("env_vars") or {}),
    }
    # The Ray started here gets the environment as its job's, so that the workers it
    # starts up front run the tasks (a task environment of its own would start more).
    # Its workers import this checkout of the package.
    here = {**env, "env_vars": {**env["env_vars"], "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parent.parent),
                    os.environ.get("PYTHONPATH")) if p
    )}}  # fmt: skip
    started_here = _start_ray(ray, address, workers, cpus, here)
    try:
        options: dict[str, Any] = {"num_cpus": cpus, "max_retries": 0, "name": "forecasting-sweep"}
        if started_here:
            # This machine's workers may start in another folder: paths as seen from here.
            series = [_absolute(item) for item in series]
            if tune is not None and tune.get("study") is not None:
                tune = {**tune, "study": str(Path(tune["study"]).resolve())}
        else:
            options["runtime_env"] = env
        task = ray.remote(_run_series).options(**options)
        shared = ray.put(settings)
        # A Ray started here is sized by workers; on a cluster, workers caps the tasks.
        limit = len(series) if started_here or workers is None else workers
        waiting = list(series)
        running: dict[Any, Series] = {}
        while waiting or running:
            while waiting and len(running) < limit:
                item = waiting.pop(0)
                running[task.remote(item, shared, cpus=cpus, tune=tune)] = item
            ready, _ = ray.wait(list(running), num_returns=1, timeout=_POLL)
            for ref in ready:
                item = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                    if isinstance(cause, Cancelled):
                        raise cause from None
                    outcome = _failure(item, f"the task failed: {cause}", None)
                except ray.exceptions.RayError as exc:
                    outcome = _failure(item, f"Ray lost the task: {exc}", None)
                finished(outcome)
            if should_stop is not None and should_stop():
                for ref in running:
                    ray.cancel(ref, force=True)
                done = len(series) - len(waiting) - len(running)
                raise Cancelled(_cancelled(done, len(series)))
    finally:
        if started_here:
            ray.shutdown()


def _absolute(series: Series) -> Series:
    if series.file is None:
        return series
    return replace(series, file=str(Path(series.file).resolve()))


def _start_ray(
    ray: Any, address: str | None, workers: int | None, cpus: int, env: Mapping[str, Any]
) -> bool:
    """Connect to Ray; True when the Ray was started here (and is to be stopped)."""
    import logging

    if ray.is_initialized():
        return False
    # Ray reports usage statistics over the network unless told not to.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address is not None or os.environ.get("RAY_ADDRESS"):
            ray.init(address=address, **quiet)
            return False
        total = (workers or os.cpu_count() or 1) * cpus
        ray.init(num_cpus=total, include_dashboard=False, runtime_env=dict(env), **quiet)
    except (ConnectionError, ValueError) as exc:  # ValueError: "Invalid address format"
        raise ConfigurationError(
            f"Could not connect to the Ray cluster at {address or os.environ['RAY_ADDRESS']}: "
            f"{_one_line(str(exc))} Check the address (ray status on the head node prints it)."
        ) from exc
    return True


def _write(
    out: Path,
    series: list[Series],
    names: dict[str, str],
    outcomes: dict[str, dict[str, Any]],
    seconds: float,
) -> SweepResult:
    labels = [item.label for item in series]
    documents = {
        label: outcomes[label]["document"]
        for label in labels
        if outcomes.get(label, {}).get("document") is not None
    }
    errors = {
        label: outcomes.get(label, {}).get("error") or "no result"
        for label in labels
        if label not in documents
    }
    bundles = {label: out / names[label] for label in documents}
    rows: list[dict[str, Any]] = []
    for label in labels:
        outcome = outcomes.get(label, {})
        rows.extend(
            _rows(label, documents.get(label), errors.get(label), outcome.get("seconds"),
                  names[label] if label in documents else "")
        )  # fmt: skip
    table = _typed(pd.DataFrame(rows, columns=list(TABLE_COLUMNS)))
    result = SweepResult(
        out_dir=out,
        labels=labels,
        documents=documents,
        errors=errors,
        bundles=bundles,
        table=table,
        seconds=seconds,
    )
    table.to_csv(out / RESULTS_FILE, index=False, lineterminator="\n")
    text = json.dumps(result.to_json(), indent=2, allow_nan=False, default=str)
    (out / SWEEP_FILE).write_text(text + "\n", encoding="utf-8")
    return result


def _rows(
    label: str,
    document: dict[str, Any] | None,
    error: str | None,
    seconds: float | None,
    bundle: str,
) -> list[dict[str, Any]]:
    """The table's rows of one series: one per model, or one saying why it failed."""
    if document is None:
        return [{"series": label, "model": "", "status": "failed", "seconds": seconds,
                 "error": error or "no result"}]  # fmt: skip
    data = document.get("data", {})
    rows = []
    for model, metrics in document.get("metrics", {}).items():
        verdict = document.get("verdict", {}).get(model)
        row = {
            "series": label,
            "model": model,
            "status": "ok",
            # naive is what every verdict is measured against: it has none of its own.
            "reading": verdict["reading"] if verdict else "reference",
            "ratio": verdict.get("ratio") if verdict else None,
            "pvalue": verdict.get("pvalue") if verdict else None,
            "holds_for": verdict.get("holds_for") if verdict else None,
            "seeds": verdict.get("seeds") if verdict else None,
            "candles": data.get("candles"),
            "first": data.get("first"),
            "last": data.get("last"),
            "seconds": seconds,
            "bundle": bundle,
            "error": "",
        }
        for name in ("mae", "rmse", "mase", "smape", "coverage", "directional_accuracy", "n"):
            row[name] = metrics.get(name)
        rows.append(row)
    for model, tuned in document.get("tuning", {}).items():
        summary = tuned.get("summary", {})
        verdict = summary.get("verdict", {})
        against = verdict.get("tuned_vs_naive") or {}
        score = summary.get("scores", {}).get("tuned")
        squared = summary.get("settings", {}).get("loss") == "squared"
        rows.append(
            {
                "series": label,
                "model": f"tuned {model}",
                "status": "ok",
                "reading": against.get("reading", ""),
                "ratio": against.get("ratio"),
                "pvalue": against.get("pvalue"),
                "holds_for": against.get("holds_for"),
                "seeds": against.get("seeds"),
                "vs_untuned": (verdict.get("tuned_vs_untuned") or {}).get("reading", ""),
                # The outer folds' mean loss: MAE for the absolute loss, else the RMSE.
                "mae": None if squared else score,
                "rmse": score**0.5 if squared and score is not None else None,
                "n": (summary.get("pairs") or {}).get("scored"),
                "candles": data.get("candles"),
                "first": data.get("first"),
                "last": data.get("last"),
                "seconds": seconds,
                "bundle": bundle,
                "error": "",
            }
        )
    return rows


# Columns of text in the table; every other column is a number (NaN where there is none).
_TEXT_COLUMNS = (
    "series", "model", "status", "reading", "vs_untuned", "first", "last", "bundle", "error",
)  # fmt: skip


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    """The table with text columns as text ("" for none) and the others as floats, as
    it reads back from ``results.csv``."""
    table = table.copy()
    for column in table.columns:
        if column in _TEXT_COLUMNS:
            values = table[column].astype(object)
            table[column] = values.where(values.notna(), "").astype(str)
        else:
            table[column] = pd.to_numeric(table[column], errors="coerce").astype("float64")
    return table


# --------------------------------------------------------------------------- reading back


def read_sweep(out_dir: str | os.PathLike[str]) -> SweepResult:
    """A finished sweep's table, documents and bundles, read from its folder.

    Open an experiment with ``result.bundle_bytes(label)`` and
    :func:`forecasting.bundle.read_bundle_data` /
    :func:`~forecasting.bundle.read_bundle_experiment`.

    Raises
    ------
    DataFormatError
        When the folder holds no sweep (no ``results.csv``), or its files are not as
        :func:`run_sweep` writes them; one line saying which and what to do.
    """
    out = Path(out_dir)
    table_path = out / RESULTS_FILE
    if not table_path.is_file():
        raise DataFormatError(
            f"{out} holds no finished sweep (no {RESULTS_FILE}): choose the folder given "
            "to the sweep as --out."
        )
    try:
        table = pd.read_csv(table_path, keep_default_na=False, na_values=[""])
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataFormatError(
            f"{table_path} is not a sweep's results table: {_one_line(str(exc))}"
        ) from exc
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise DataFormatError(
            f"{table_path} is not a sweep's results table (no {missing[0]} column): run the "
            "sweep again."
        )
    table = _typed(table[list(TABLE_COLUMNS)])
    documents: dict[str, dict[str, Any]] = {}
    sweep_path = out / SWEEP_FILE
    if sweep_path.is_file():
        try:
            stored = json.loads(sweep_path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise DataFormatError(
                f"{sweep_path} is not JSON: {_one_line(str(exc))} Run the sweep again."
            ) from exc
        if not isinstance(stored, dict):
            raise DataFormatError(f"{sweep_path} is not a sweep's documents: run it again.")
        documents = {
            str(label): doc
            for label, doc in stored.items()
            if isinstance(doc, dict) and "error" not in doc
        }
    labels = list(dict.fromkeys(str(label) for label in table["series"]))
    errors: dict[str, str] = {}
    bundles: dict[str, Path] = {}
    for label in labels:
        rows = table[table["series"].astype(str) == label]
        if (rows["status"] != "ok").any():
            errors[label] = str(rows["error"].iloc[0]) or "failed"
            continue
        name = str(rows["bundle"].iloc[0])
        # Only a plain file name inside the folder: the table is data, not a path to follow.
        if name and Path(name).name == name and (out / name).is_file():
            bundles[label] = out / name
    return SweepResult(
        out_dir=out,
        labels=labels,
        documents=documents,
        errors=errors,
        bundles=bundles,
        table=table,
    )
