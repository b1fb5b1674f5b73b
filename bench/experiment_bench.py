"""Benchmark: the default experiment on 3000 daily candles, and a revisit of it.

What is measured
----------------
``run_experiment(candles, ExperimentSettings())`` on the 3000 most recent closed daily
BTC/USDT candles of the shared real data (``binance_BTC-USDT_1d.csv``, last, partial row
dropped): the naive baselines (naive, drift, seasonal naive, moving average), Prophet
and the LSTM with their default settings, the default walk-forward (3 folds over the
last 120 candles, horizon 7, stride 1, expanding window), then every model refitted on
all the data for the future forecast, then the scores, Diebold-Mariano tests and the
copy check.

* **Per stage**: the progress callback of ``run_experiment`` is called after each model
  of each fold (its fit plus its forecasts from the fold's 40 origins) and after each
  refit on all data (fit plus one forecast); the time between calls is that stage's.
  What follows the last call is scoring and tests. On top of that, the benchmark wraps
  ``Forecaster.fit`` and ``Forecaster.predict`` (the base-class methods every model
  goes through; nothing in the library changes) to split each model's time into
  fitting and forecasting.
* **Runs**: the experiment is run several times in one process. The first pays the
  one-off costs a fresh app server pays on its first experiment (importing
  TensorFlow and Prophet, building and tracing the LSTM's network); later runs find
  the network in the library's pool, as later experiments in the app do.
* **Revisit**: what the Compare page does when it is shown again with the same data
  and settings (``ui/runs.py``): ``EXPERIMENTS.get(experiment_key(candles, settings))``
  after the result was stored with ``EXPERIMENTS.put``, timed including the key (a
  SHA-256 of the 3000 candles and the settings' JSON), on a copy of the candles as a
  rerun gets them. Then the five charts the page redraws from the stored result
  (``forecasting.charts``: backtest, error by horizon, residual histogram, residual
  ACF, future) and the JSON ``st.plotly_chart`` makes of each
  (``plotly.io.to_json(figure, validate=False)``), and the page's other work on the
  stored result: the styled metrics table and the two CSV downloads.

Why
---
The issue's target: the default experiment must finish in under 60 s on a 2-core CPU,
and a revisit with the same settings in under 1 s.

Run from the repository root::

    .venv/bin/python bench/experiment_bench.py [--markdown] [--runs 3]

The data folder is ``$CFL_SHARED_DATA`` or ``../shared/data`` beside the repository.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
# The repository root for `forecasting` and `ui`; bench/ for the shared helpers.
for _folder in (ROOT / "bench", ROOT):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import pandas as pd  # noqa: E402
import plotly.io  # noqa: E402
from models_bench import CpuMonitor, Timing, load_candles, machine  # noqa: E402

from forecasting.budget import estimate_experiment  # noqa: E402
from forecasting.charts import (  # noqa: E402
    backtest_chart,
    forecast_chart,
    horizon_error_chart,
    residual_acf_chart,
    residual_histogram,
)
from forecasting.experiment import ExperimentResult, ExperimentSettings, run_experiment  # noqa: E402
from forecasting.models.base import Forecaster  # noqa: E402

TOTAL_TARGET_S = 60.0
# Threads for the walk-forward (None: the library's default, up to two). With more than one
# the (model, fold) jobs overlap, so a stage's time is the wall time between its report
# and the previous one, not that job's own time.
WORKERS: int | None = None
REVISIT_TARGET_S = 1.0
REFIT = "refit on all data"
SCORING = "scores, DM tests, copy check"


# ------------------------------------------------------------------------ measurement


@dataclass
class ModelClock:
    """Seconds spent in ``fit`` and ``predict`` per model alias, and predict calls."""

    fit: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    predict: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    predict_calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@contextmanager
def clock_models() -> Iterator[ModelClock]:
    """Time every ``Forecaster.fit`` and ``Forecaster.predict`` call while inside."""
    clock = ModelClock()
    fit, predict = Forecaster.fit, Forecaster.predict

    def timed_fit(self: Forecaster, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fit(self, *args, **kwargs)
        finally:
            clock.fit[self.alias] += time.perf_counter() - start

    def timed_predict(self: Forecaster, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return predict(self, *args, **kwargs)
        finally:
            clock.predict[self.alias] += time.perf_counter() - start
            clock.predict_calls[self.alias] += 1

    Forecaster.fit = timed_fit  # type: ignore[method-assign]
    Forecaster.predict = timed_predict  # type: ignore[method-assign]
    try:
        yield clock
    finally:
        Forecaster.fit = fit  # type: ignore[method-assign]
        Forecaster.predict = predict  # type: ignore[method-assign]


@dataclass
class ExperimentRun:
    """One timed run of the default experiment."""

    total: float
    stages: list[tuple[str, float]]
    clock: ModelClock
    result: ExperimentResult
    others: float | None = None
    cpu: float | None = None
    """CPU-seconds this process and its children (Stan) used during the run."""
    """Cores' worth of CPU other processes used during the run, on average."""

    def stage(self, name: str) -> float:
        """Seconds of the stage with this progress message (0 if absent)."""
        return sum(seconds for message, seconds in self.stages if message == name)

    @property
    def walk_forward(self) -> float:
        """All fold stages."""
        return sum(s for m, s in self.stages if m.startswith("fold "))

    @property
    def refit(self) -> float:
        """All refit stages."""
        return sum(s for m, s in self.stages if m.startswith(REFIT))


def run_once(candles: pd.DataFrame, settings: ExperimentSettings) -> ExperimentRun:
    """Run the experiment once, timing every stage between progress calls."""
    marks: list[tuple[float, str]] = []
    source = {"label": "binance · BTC/USDT · 1d (shared CSV)", "source": "csv", "timeframe": "1d"}
    with clock_models() as clock:
        start = time.perf_counter()
        result = run_experiment(
            candles,
            settings,
            source=source,
            progress=lambda stage, fraction, details: marks.append(
                (time.perf_counter(), details["message"])
            ),
            workers=WORKERS,
        )
        end = time.perf_counter()
    stages, previous = [], start
    for moment, message in marks:
        stages.append((message, moment - previous))
        previous = moment
    stages.append((SCORING, end - previous))
    return ExperimentRun(end - start, stages, clock, result)


# ----------------------------------------------------------------------------- revisit


@dataclass
class RevisitResults:
    """Timings of a revisit, in seconds."""

    lookup: Timing
    fingerprint: Timing
    settings_json: Timing
    charts: list[Timing]
    chart_json: list[Timing]
    other: list[Timing]
    json_bytes: dict[str, int]

    @property
    def total(self) -> float:
        """Lookup, charts, their JSON and the other page work: sum of medians."""
        parts = [self.lookup, *self.charts, *self.chart_json, *self.other]
        return sum(t.median for t in parts)


def _timed(action: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    seconds, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = action()
        seconds.append(time.perf_counter() - start)
    return seconds, result


def run_revisit(
    candles: pd.DataFrame, settings: ExperimentSettings, result: ExperimentResult, runs: int
) -> RevisitResults:
    """Store the result as the app does, then time what a revisit of the page does."""
    import streamlit  # noqa: F401 - sets up its loggers, which are quieted next

    # Outside `streamlit run`, each @st.cache_data of the ui modules warns "No runtime found".
    logging.getLogger("streamlit.runtime.caching.cache_data_api").setLevel(logging.ERROR)
    from ui import runs as app

    app.EXPERIMENTS.put(app.experiment_key(candles, settings), result)
    rerun_candles = candles.copy()  # a rerun reads the data again: same values, new frame

    lookup = Timing("EXPERIMENTS.get(experiment_key(...))")
    lookup.values, found = _timed(
        lambda: app.EXPERIMENTS.get(app.experiment_key(rerun_candles, settings)), runs
    )
    if found is not result:
        raise AssertionError("the revisit did not find the stored experiment")
    fingerprint = Timing("  of which fingerprint(candles)")
    fingerprint.values, _ = _timed(lambda: app.fingerprint(rerun_candles), runs)
    settings_json = Timing("  of which settings JSON")
    settings_json.values, _ = _timed(
        lambda: json.dumps(settings.to_dict(), sort_keys=True, default=str), runs
    )

    step = 1
    forecasts = result.backtest.forecasts
    builders: dict[str, Callable[[], Any]] = {
        "backtest_chart": lambda: backtest_chart(forecasts, step=step),
        "horizon_error_chart": lambda: horizon_error_chart(result.by_horizon),
        "residual_histogram": lambda: residual_histogram(forecasts, step=step),
        "residual_acf_chart": lambda: residual_acf_chart(forecasts, step=step),
        "forecast_chart": lambda: forecast_chart(
            rerun_candles,
            list(result.future.values()),
            title=f"Next {settings.backtest.horizon} candles, every model refitted on all data",
        ),
    }
    charts, chart_json, json_bytes = [], [], {}
    for name, build in builders.items():
        figure = build()  # untimed first call: plotly's lazy imports and validators
        plotly.io.to_json(figure, validate=False)
        timing = Timing(name)
        timing.values, figure = _timed(build, runs)
        charts.append(timing)
        as_json = Timing(f"  to_json({name})")
        as_json.values, text = _timed(lambda f=figure: plotly.io.to_json(f, validate=False), runs)
        chart_json.append(as_json)
        json_bytes[name] = len(text)

    other_work: dict[str, Callable[[], Any]] = {
        "metrics_view(...).to_html()": lambda: app.metrics_view(
            result.metrics, result.verdict
        ).to_html(),
        "metrics CSV": lambda: result.metrics.to_csv(),
        "forecasts_table().to_csv()": lambda: result.forecasts_table().to_csv(index=False),
    }
    other = []
    for name, action in other_work.items():
        action()
        timing = Timing(name)
        timing.values, _ = _timed(action, runs)
        other.append(timing)
    return RevisitResults(lookup, fingerprint, settings_json, charts, chart_json, other, json_bytes)


# ----------------------------------------------------------------------------- report


def _s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 10 else f"{seconds:.2f} s"


def _cores(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f} cores"


def _ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"


@dataclass
class Results:
    """Everything measured."""

    candles: pd.DataFrame
    settings: ExperimentSettings
    runs: list[ExperimentRun]
    revisit: RevisitResults
    cpu: str

    @property
    def models(self) -> list[str]:
        """Model aliases in the order they ran."""
        return list(self.runs[0].result.backtest.models)

    @property
    def folds(self) -> int:
        """Walk-forward folds."""
        return len(self.runs[0].result.backtest.folds)

    def median(self, value: Callable[[ExperimentRun], float]) -> float:
        """Median over the runs of one figure."""
        return statistics.median(value(run) for run in self.runs)

    def verdicts(self) -> list[tuple[str, bool]]:
        """Each target with whether it was met."""
        slowest = max(run.total for run in self.runs)
        return [
            (
                f"default experiment, slowest of {len(self.runs)} runs: {_s(slowest)} "
                f"(median {_s(self.median(lambda r: r.total))}; target < {TOTAL_TARGET_S:g} s)",
                slowest < TOTAL_TARGET_S,
            ),
            (
                f"revisit lookup: median {_ms(self.revisit.lookup.median)} "
                f"(target < {REVISIT_TARGET_S:g} s)",
                self.revisit.lookup.median < REVISIT_TARGET_S,
            ),
            (
                f"revisit lookup + charts + chart JSON + other page work: "
                f"{_ms(self.revisit.total)} (target < {REVISIT_TARGET_S:g} s)",
                self.revisit.total < REVISIT_TARGET_S,
            ),
        ]

    def stage_table(self) -> list[list[str]]:
        """Per model: median seconds per fold, refit, total, fit and predict shares."""
        header = [
            "Model",
            *[f"fold {k}" for k in range(1, self.folds + 1)],
            "refit + forecast",
            "total",
            "in fit",
            "in predict (calls)",
            "run 1 total",
        ]
        rows = [header]
        for alias in self.models:
            folds = [
                self.median(lambda r, k=k, a=alias: r.stage(f"fold {k}/{self.folds}: {a}"))
                for k in range(1, self.folds + 1)
            ]
            refit = self.median(lambda r, a=alias: r.stage(f"{REFIT}: {a}"))
            total = self.median(
                lambda r, a=alias: sum(s for m, s in r.stages if m.endswith(f": {a}"))
            )
            fit = self.median(lambda r, a=alias: r.clock.fit[a])
            predict = self.median(lambda r, a=alias: r.clock.predict[a])
            calls = self.runs[0].clock.predict_calls[alias]
            first = sum(s for m, s in self.runs[0].stages if m.endswith(f": {alias}"))
            rows.append(
                [
                    alias,
                    *[_s(v) for v in folds],
                    _s(refit),
                    _s(total),
                    _s(fit),
                    f"{_s(predict)} ({calls})",
                    _s(first),
                ]
            )
        scoring = self.median(lambda r: r.stage(SCORING))
        blank = [""] * (self.folds + 1)
        rows.append([SCORING, *blank, _s(scoring), "", "", _s(self.runs[0].stage(SCORING))])
        fold_totals = [
            self.median(lambda r, k=k: sum(s for m, s in r.stages if m.startswith(f"fold {k}/")))
            for k in range(1, self.folds + 1)
        ]
        rows.append(
            [
                "**all**",
                *[_s(v) for v in fold_totals],
                _s(self.median(lambda r: r.refit)),
                _s(self.median(lambda r: r.total)),
                "",
                "",
                _s(self.runs[0].total),
            ]
        )
        return rows


def _describe(results: Results) -> list[str]:
    c, b = results.candles, results.settings.backtest
    return [
        f"{len(c)} daily BTC/USDT candles {c.index[0]:%Y-%m-%d} .. {c.index[-1]:%Y-%m-%d}; "
        f"models {', '.join(results.models)}; {b.folds} folds over the last {b.test_size} "
        f"candles, horizon {b.horizon}, stride {b.stride}, "
        f"{'expanding' if b.window is None else f'rolling {b.window}'} window",
    ]


def _revisit_rows(revisit: RevisitResults) -> list[Timing]:
    out = [revisit.lookup, revisit.fingerprint, revisit.settings_json]
    for chart, as_json in zip(revisit.charts, revisit.chart_json, strict=True):
        out += [chart, as_json]
    return out + revisit.other


def report_text(results: Results, facts: dict[str, str]) -> str:
    """A plain-text report for the terminal."""
    lines = ["The default experiment", ""]
    lines += [f"  {name:<10} {value}" for name, value in facts.items()]
    lines += [f"  Activity   {results.cpu}", "", *_describe(results), ""]
    for number, run in enumerate(results.runs, 1):
        lines.append(
            f"  run {number}: {_s(run.total)} (walk-forward {_s(run.walk_forward)}, refit + "
            f"forecast {_s(run.refit)}, {SCORING} {_s(run.stage(SCORING))}; other processes "
            f"{_cores(run.others)})"
        )
    lines += ["", f"Per stage, median of {len(results.runs)} runs (seconds):"]
    table = [[cell.replace("**", "") for cell in row] for row in results.stage_table()]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        lines.append("  " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
    lines += ["", "Revisit (same data and settings):"]
    lines.append(f"  {'measurement':<40} {'n':>4} {'median':>9} {'min':>9} {'max':>9}")
    for timing in _revisit_rows(results.revisit):
        lines.append(
            f"  {timing.name:<40} {len(timing.values):>4} {_ms(timing.median):>9} "
            f"{_ms(timing.low):>9} {_ms(timing.high):>9}"
        )
    sizes = ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in results.revisit.json_bytes.items())
    lines += [f"  chart JSON sizes: {sizes}", ""]
    for text, passed in results.verdicts():
        lines.append(f"{'PASS' if passed else 'FAIL'}  {text}")
    return "\n".join(lines)


def report_markdown(results: Results, facts: dict[str, str]) -> str:
    """A Markdown fragment (machine list and results tables) to paste into the docs."""
    verdicts = results.verdicts()
    lines = [f"- **{name}:** {value}" for name, value in facts.items()]
    lines += [
        f"- **Activity during the run:** {results.cpu}",
        f"- **Data:** {_describe(results)[0]}",
    ]
    lines += [
        "",
        "| Run | Total | Walk-forward | Refit + forecast | Scores and tests | Other processes "
        "| Target | Result |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for number, run in enumerate(results.runs, 1):
        note = " (fresh process)" if number == 1 else ""
        passed = run.total < TOTAL_TARGET_S
        lines.append(
            f"| {number}{note} | {_s(run.total)} | {_s(run.walk_forward)} | {_s(run.refit)} | "
            f"{_s(run.stage(SCORING))} | {_cores(run.others)} | < {TOTAL_TARGET_S:g} s | "
            f"{'pass' if passed else '**FAIL**'} |"
        )
    lines += ["", f"Per stage, median of {len(results.runs)} runs:", ""]
    table = results.stage_table()
    lines.append("| " + " | ".join(table[0]) + " |")
    lines.append("|---|" + "---:|" * (len(table[0]) - 1))
    lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
    lines += [
        "",
        "Revisit (same data and settings):",
        "",
        "| Measurement | n | Median | Min | Max |",
        "|---|---:|---:|---:|---:|",
    ]
    for timing in _revisit_rows(results.revisit):
        lines.append(
            f"| {timing.name} | {len(timing.values)} | {_ms(timing.median)} | "
            f"{_ms(timing.low)} | {_ms(timing.high)} |"
        )
    sizes = ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in results.revisit.json_bytes.items())
    lines += [
        "",
        f"- Chart JSON sent to the browser: {sizes}.",
        *[f"- {text}: {'pass' if passed else '**FAIL**'}." for text, passed in verdicts],
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the benchmark, print the report.

    Returns
    -------
    int
        0 when every target is met, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print a Markdown fragment")
    parser.add_argument("--runs", type=int, default=3, help="full experiments (default 3)")
    parser.add_argument(
        "--revisit-runs", type=int, default=20, help="repeats of each revisit step (20)"
    )
    parser.add_argument(
        "--workers", type=int, help="walk-forward threads (default: the library's, up to 2)"
    )
    args = parser.parse_args(argv)
    global WORKERS
    WORKERS = args.workers
    if args.runs < 1 or args.revisit_runs < 1:
        parser.error("--runs and --revisit-runs must be >= 1")

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    candles = load_candles()
    settings = ExperimentSettings()
    monitor = CpuMonitor()
    runs = []
    for number in range(1, args.runs + 1):
        print(f"[experiment_bench] run {number}/{args.runs}", file=sys.stderr, flush=True)
        run_monitor = CpuMonitor()
        cpu_before = CpuMonitor._ours()
        run = run_once(candles, settings)
        run.cpu = CpuMonitor._ours() - cpu_before
        run.others = run_monitor.others()
        runs.append(run)
    print("[experiment_bench] revisit", file=sys.stderr, flush=True)
    revisit = run_revisit(candles, settings, runs[-1].result, args.revisit_runs)
    results = Results(candles, settings, runs, revisit, monitor.summary())
    facts = machine(load_before)
    print(report_markdown(results, facts) if args.markdown else report_text(results, facts))
    estimate = estimate_experiment(settings, candles)
    used = ", ".join(f"{run.cpu:.0f}" for run in runs if run.cpu is not None)
    print(
        f"\n- CPU time: runs used {used} CPU-s (this process and Stan); "
        f"forecasting.budget.estimate_experiment says up to {estimate.seconds:.0f} CPU-s "
        f"({', '.join(f'{p.model} {p.seconds:.0f}' for p in estimate.parts if p.seconds >= 1)})."
    )
    return 0 if all(passed for _, passed in results.verdicts()) else 1


if __name__ == "__main__":
    sys.exit(main())
