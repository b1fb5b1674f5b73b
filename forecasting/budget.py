"""A server's budget: what a run will cost before it starts, limits, and a queue for runs.

An app shared on a public server runs every visitor's work in one process on a few
cores. Three things keep one click from costing hours there:

* :func:`estimate_experiment` says, before a run starts, about how much CPU time it can
  take, model by model, from its settings and the number of candles alone (nothing is
  fitted). The figures are upper bounds in the sense that the LSTM is counted at its
  full ``epochs`` (early stopping usually ends it sooner).
* :class:`Limits` are the deployment's bounds: the largest estimated run, how many runs
  train at once, how many may wait, and the candle cache's size per series. Defaults
  fit Streamlit Community Cloud (2 cores shared by every visitor); a deployment changes
  them in ``.streamlit/secrets.toml`` (a ``[limits]`` table) or the environment
  (``CFL_MAX_RUN_SECONDS`` and so on; the environment wins). :func:`check_budget`
  refuses a run over the budget with a message naming the settings to lower.
* :class:`RunQueue` lets at most ``limits.concurrent_runs`` runs train at once across
  every session of the process, first come first served; the others wait, are told
  their place in the line, and can be cancelled while they wait.

The cost model
--------------
Constants are CPU-seconds measured on the benchmark machine (an AMD EPYC 2-core VM,
``docs/benchmarks.md``), for 3000 daily candles where not said otherwise:

* Prophet: a refit costs ``PROPHET_FIT_BASE + PROPHET_FIT_PER_CANDLE x n`` for ``n``
  training candles (0.4 s at 3000), and a forecast ``PROPHET_PREDICT``. A fold is a cold
  fit with its calibration chain (``calibration_origins`` + 1 fits) and a refit and a
  forecast at each origin; the refit on all the data is one more chain. With
  ``interval="prophet"`` there is no chain.
* The LSTM: an epoch costs ``LSTM_STEP_SECONDS x windows x lookback x layers x units x
  (units + inputs)`` (the recurrent multiply-adds of one pass; 0.14 s for 2900 windows of
  30 x 6 inputs and 32 units, the fused kernel's rate) plus ``LSTM_FIT_OVERHEAD`` per
  fit; every seed fits every fold, and the refit on all data is one more fit.
* The baselines cost next to nothing; they are counted at ``BASELINE_FOLD`` per fold.

The default experiment (3000 daily candles, 3 folds of 40, stride 3, 30 epochs) comes
to 62 CPU-s by this model (Prophet 41 s, the LSTM 21 s); it took 57 CPU-s measured.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

from forecasting.errors import Cancelled, ConfigurationError, OverBudget, ServerBusy

__all__ = [
    "CostEstimate",
    "Limits",
    "RunQueue",
    "check_budget",
    "estimate_experiment",
    "estimate_fits",
    "format_seconds",
    "model_cost",
]

PROPHET_FIT_BASE = 0.05
PROPHET_FIT_PER_CANDLE = 1.2e-4
PROPHET_PREDICT = 0.08
LSTM_STEP_SECONDS = 1.35e-9
LSTM_FIT_OVERHEAD = 1.0
LSTM_PREDICT = 0.01
BASELINE_FOLD = 0.02


@dataclass(frozen=True)
class Limits:
    """A deployment's bounds on work (defaults fit Streamlit Community Cloud).

    Attributes
    ----------
    max_run_seconds
        The largest estimated CPU time of one run (a comparison, or training on the
        Models page), in seconds. Environment: ``CFL_MAX_RUN_SECONDS``.
    concurrent_runs
        Runs that train at the same time across all sessions; more wait in line.
        Environment: ``CFL_CONCURRENT_RUNS``.
    max_waiting
        Runs that may wait; one more is refused with "busy". Environment:
        ``CFL_MAX_WAITING``.
    cache_max_candles
        Candles the cache keeps per series (oldest dropped first). Environment:
        ``CFL_CACHE_MAX_CANDLES``.
    """

    max_run_seconds: float = 900.0
    concurrent_runs: int = 1
    max_waiting: int = 8
    cache_max_candles: int = 500_000

    @classmethod
    def load(
        cls,
        secrets: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Limits:
        """Limits from a ``[limits]`` table of secrets, then the environment (which wins).

        Parameters
        ----------
        secrets
            The ``limits`` table of ``.streamlit/secrets.toml`` (keys are the attribute
            names), or None.
        environ
            Environment variables (default ``os.environ``): ``CFL_`` + the attribute
            name in capitals.

        Raises
        ------
        ConfigurationError
            For an unknown key, or a value that is not a positive number (a whole one
            where the attribute is).
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        known = {f.name: f for f in fields(cls)}
        for key, value in dict(secrets or {}).items():
            if key not in known:
                raise ConfigurationError(
                    f"Unknown limit {key!r} in the [limits] table of secrets.toml: use one of "
                    f"{', '.join(known)}."
                )
            values[key] = _positive(value, f"[limits] {key}", whole=key != "max_run_seconds")
        for name in known:
            variable = f"CFL_{name.upper()}"
            if environ.get(variable, "").strip():
                text = environ[variable].strip()
                values[name] = _positive(text, variable, whole=name != "max_run_seconds")
        return cls(**values)


def _positive(value: Any, where: str, *, whole: bool) -> float | int:
    kind = "a whole number" if whole else "a number"
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if whole:
            if not number.is_integer():
                raise ValueError
            number = int(number)
    except (TypeError, ValueError, OverflowError):
        raise ConfigurationError(
            f"{where} must be {kind} above 0, got {str(value)[:40]!r}."
        ) from None
    if not (math.isfinite(number) and number > 0):
        raise ConfigurationError(f"{where} must be {kind} above 0, got {str(value)[:40]!r}.")
    return number


# --- the estimate ------------------------------------------------------------------------


@dataclass(frozen=True)
class CostPart:
    """One model's share of a run: CPU-seconds, what drives them, and what to change
    (in the pages' words) to make it cheaper."""

    model: str
    seconds: float
    what: str
    advice: str


@dataclass(frozen=True)
class CostEstimate:
    """A run's estimated CPU time, in seconds, with each model's part.

    ``cores`` is what the run can use at once (the walk-forward runs two jobs side by
    side), so ``wall_seconds`` is about ``seconds / cores`` on an idle machine.
    """

    parts: tuple[CostPart, ...]
    cores: int = 2

    @property
    def seconds(self) -> float:
        return float(sum(part.seconds for part in self.parts))

    @property
    def wall_seconds(self) -> float:
        return self.seconds / max(1, self.cores)

    def largest(self) -> CostPart:
        return max(self.parts, key=lambda part: part.seconds)

    def summary(self) -> str:
        """One line for the screen: the total and the largest parts."""
        shown = sorted(self.parts, key=lambda part: -part.seconds)
        pieces = [f"{p.model} {format_seconds(p.seconds)}" for p in shown if p.seconds >= 1]
        detail = f" ({', '.join(pieces)})" if pieces else ""
        return (
            f"Estimated cost: up to about {format_seconds(self.seconds)} of CPU time{detail}, "
            f"about {format_seconds(self.wall_seconds)} on {self.cores} cores when idle."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "wall_seconds": round(self.wall_seconds, 1),
            "cores": self.cores,
            "parts": [
                {
                    "model": p.model,
                    "seconds": round(p.seconds, 1),
                    "what": p.what,
                }
                for p in self.parts
            ],
        }


def format_seconds(seconds: float) -> str:
    """``"45 s"``, ``"12 min"``, ``"3 h 05 min"``, ``"4 days"``."""
    seconds = float(seconds)
    if not math.isfinite(seconds):
        return "an unbounded time"
    if seconds < 90:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400 * 2:
        hours, minutes = divmod(round(seconds / 60), 60)
        return f"{hours} h {minutes:02d} min"
    return f"{seconds / 86400:.0f} days"


def estimate_experiment(settings: Any, candles: Any, *, cores: int = 2) -> CostEstimate:
    """The CPU time an experiment can take on ``candles`` candles, before it runs.

    Parameters
    ----------
    settings
        An :class:`~forecasting.experiment.ExperimentSettings`.
    candles
        The candles the experiment reads (a frame or its index), or how many there are
        (then a test period given by its start date is counted as ``test_size``).
    cores
        Cores the run can use at once.

    Raises
    ------
    ConfigurationError
        For settings the experiment itself would refuse (an unknown model, a layout
        that does not fit the candles).
    """
    from forecasting.evaluation.walkforward import make_folds

    models = settings.build_models()
    folds = _fold_sizes(settings.backtest, candles, make_folds)
    count = len(getattr(candles, "index", candles)) if not isinstance(candles, int) else candles
    seeds = len(settings.seed_list())
    parts = tuple(model_cost(alias, m, folds, count, seeds) for alias, m in models.items())
    return CostEstimate(parts, cores=max(1, int(cores)))


def estimate_fits(models: Mapping[str, Any], candles: int, *, cores: int = 1) -> CostEstimate:
    """The CPU time of fitting each of ``models`` once on ``candles`` candles (the Models
    page's training), by the same cost model as :func:`estimate_experiment`."""
    parts = tuple(model_cost(alias, m, [], int(candles), 1) for alias, m in models.items())
    return CostEstimate(parts, cores=max(1, int(cores)))


def model_cost(
    alias: str, model: Any, folds: list[tuple[int, int]], candles: int, seeds: int
) -> CostPart:
    """One model's estimated CPU-seconds: ``folds`` are (training candles, origins) per
    fold of the walk-forward, ``candles`` the final fit on all the data (0: none),
    ``seeds`` the runs of a seeded model. By its class (a subclass costs what its parent
    does); every other model is costed as a baseline, which fits in milliseconds. The
    constants are fitted to measured runs (``bench/``, docs/benchmarks.md)."""
    from forecasting.features import parse_features
    from forecasting.models import LSTM, ProphetModel

    if isinstance(model, ProphetModel):
        return _prophet_cost(alias, model, folds, candles)
    if isinstance(model, LSTM):
        inputs = 1 + len(parse_features(model.features or ""))
        return _lstm_cost(alias, model, folds, candles, seeds, inputs)
    return CostPart(alias, BASELINE_FOLD * (len(folds) + 1), "a baseline", "")


def progress_shares(estimate: CostEstimate) -> dict[str, tuple[float, float]]:
    """Where each part's progress starts on a 0-1 bar, and its share of the bar.

    Shares are proportional to the estimated seconds, so a bar that has reached a
    model's first epoch stands where that much of the work is done, not where that many
    of the models are (five baselines that take milliseconds and an LSTM that takes a
    minute: the LSTM's first epoch is at a few percent, not at 83 %). Parts in the
    estimate's order; shares sum to 1 (equal shares when nothing is estimated).
    """
    parts = estimate.parts
    total = sum(max(part.seconds, 0.0) for part in parts)
    shares: dict[str, tuple[float, float]] = {}
    start = 0.0
    for part in parts:
        share = max(part.seconds, 0.0) / total if total > 0 else 1.0 / len(parts)
        shares[part.model] = (start, share)
        start += share
    return shares


def _fold_sizes(layout: Any, candles: Any, make_folds: Callable) -> list[tuple[int, int]]:
    """(training candles, origins) per fold, from the layout and the candles' index (or
    their count, when the test period is given by its size)."""
    import dataclasses

    import pandas as pd

    index = getattr(candles, "index", candles)
    if not isinstance(index, pd.DatetimeIndex):
        count = max(int(candles), 1)
        index = pd.date_range("2000-01-01", periods=count, freq="D", tz="UTC")
        layout = dataclasses.replace(layout, test_start=None)
    return [(f.cutoff + 1 - f.train_start, len(f.origins)) for f in make_folds(index, layout)]


def _prophet_cost(alias: str, model: Any, folds: list[tuple[int, int]], candles: int) -> CostPart:
    cap = int(model.max_train_candles)

    def fit(n: int) -> float:
        return PROPHET_FIT_BASE + PROPHET_FIT_PER_CANDLE * min(n, cap)

    chain = int(model.calibration_origins) + 1 if model.interval == "conformal" else 1
    seconds = 0.0
    refits = 0
    for train, origins in folds:
        seconds += chain * (fit(train) + PROPHET_PREDICT)
        seconds += origins * (fit(train) + PROPHET_PREDICT)
        refits += origins
    seconds += chain * (fit(candles) + PROPHET_PREDICT)
    what = f"{chain * (len(folds) + 1) + refits:,} fits on up to {min(candles, cap):,} candles"
    advice = "raise Stride, or lower Test candles or Prophet's Training candles"
    return CostPart(alias, seconds, what, advice)


def _lstm_cost(
    alias: str, model: Any, folds: list[tuple[int, int]], candles: int, seeds: int, inputs: int
) -> CostPart:
    lookback, layers, units = int(model.lookback), int(model.layers), int(model.units)
    epochs = int(model.epochs)
    per_window = LSTM_STEP_SECONDS * lookback * layers * units * (units + inputs)

    def fit(n: int) -> float:
        return LSTM_FIT_OVERHEAD + epochs * max(n - lookback, 1) * per_window

    seconds = 0.0
    for train, origins in folds:
        seconds += seeds * (fit(train) + origins * LSTM_PREDICT)
    seconds += fit(candles) + LSTM_PREDICT
    fits = seeds * len(folds) + 1
    what = (
        f"{fits} fit{'s' if fits > 1 else ''} of up to {epochs} epochs, {layers} x {units} "
        f"units, lookback {lookback}"
    )
    advice = "lower the LSTM's Epochs, Units or Layers, LSTM seeds or Folds"
    return CostPart(alias, seconds, what, advice)


def check_budget(estimate: CostEstimate, limits: Limits) -> None:
    """Refuse a run whose estimate is over ``limits.max_run_seconds``.

    Raises
    ------
    OverBudget
        Naming the estimate, the limit, the largest part and the settings to change.
    """
    if estimate.seconds <= float(limits.max_run_seconds):
        return
    part = estimate.largest()
    raise OverBudget(
        f"This run is estimated at up to {format_seconds(estimate.seconds)} of CPU time, over "
        f"this server's limit of {format_seconds(limits.max_run_seconds)}; most of it is "
        f"{part.model} ({part.what}, {format_seconds(part.seconds)}): {part.advice}."
    )


# --- the queue ---------------------------------------------------------------------------


class RunQueue:
    """At most ``slots`` runs at once across threads (sessions), first come first served.

    ``with queue.turn(...)`` blocks until it is this caller's turn. While it waits it
    calls ``on_wait(ahead)`` (runs in line before it, 0 when next) from the waiting
    thread at least every ``poll`` seconds, so a page can show the place and notice a
    cancel, and it polls ``should_stop``.
    """

    def __init__(self, slots: int = 1, max_waiting: int = 8) -> None:
        if int(slots) < 1 or int(max_waiting) < 0:
            raise ConfigurationError("A run queue needs at least one slot.")
        self.slots = int(slots)
        self.max_waiting = int(max_waiting)
        self._running = 0
        self._line: list[object] = []
        self._changed = threading.Condition()

    @property
    def running(self) -> int:
        with self._changed:
            return self._running

    @property
    def waiting(self) -> int:
        with self._changed:
            return len(self._line)

    @contextmanager
    def turn(
        self,
        *,
        should_stop: Callable[[], bool] | None = None,
        on_wait: Callable[[int], None] | None = None,
        poll: float = 0.25,
    ) -> Iterator[None]:
        """Wait for a free slot, hold it inside the ``with`` block, then free it.

        Raises
        ------
        ServerBusy
            When ``max_waiting`` runs already wait.
        Cancelled
            When ``should_stop`` returns True while waiting.
        """
        ticket = object()
        with self._changed:
            if self._running < self.slots and not self._line:
                self._running += 1
                ticket = None
            elif len(self._line) >= self.max_waiting:
                raise ServerBusy(
                    f"The server is busy: {self._running} run(s) are training and "
                    f"{len(self._line)} are waiting, the most it queues. Try again in a few "
                    "minutes."
                )
            else:
                self._line.append(ticket)
        try:
            while ticket is not None:
                with self._changed:
                    ahead = self._line.index(ticket)
                    if ahead == 0 and self._running < self.slots:
                        self._line.pop(0)
                        self._running += 1
                        self._changed.notify_all()
                        ticket = None
                        break
                if should_stop is not None and should_stop():
                    raise Cancelled("The run was cancelled while it waited for its turn.")
                if on_wait is not None:
                    on_wait(ahead)
                with self._changed:
                    self._changed.wait(timeout=poll)
        except BaseException:
            if ticket is not None:
                with self._changed:
                    if ticket in self._line:
                        self._line.remove(ticket)
                    self._changed.notify_all()
            raise
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()
