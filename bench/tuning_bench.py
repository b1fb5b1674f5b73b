"""Benchmark: nested tuning, 20 trials per outer fold on 3000 daily candles.

What is measured
----------------
``forecasting.tuning.tune(candles, model, ExperimentSettings(), trials=N)`` on the 3000
most recent closed daily BTC/USDT candles of the shared real data
(``binance_BTC-USDT_1d.csv``, last, partial row dropped): Compare's default walk-forward as
the outer folds (3 folds over the last 120 candles, horizon 7, stride 3), 2 inner folds
inside each outer fold's training window, Optuna's seeded TPE with median pruning, the
study in memory; then the chosen settings scored once per outer fold, and the untuned
model and naive on the same pairs.

* **Wall time** of the call, and per trial: the progress callback is called after each
  trial (stage ``"tune"``); the time between calls is that trial's (its inner fits and
  forecasts, or less when it was pruned). What follows the last trial is the outer
  scoring (the chosen settings fitted once per fold), the untuned model and naive.
* **How it scales with trials**: ``--trials 5,20`` runs one tuning per count, each in a
  fresh process; the time per trial and the fixed part (outer scoring, untuned, naive,
  imports) follow from the two.
* **Peak memory**: the process's peak resident set size (``VmHWM``).

Why
---
The issue asks for a tuning run of 20 trials on 3000 daily candles, its time and peak
memory, and how the time scales with the trials.

Run from the repository root::

    .venv/bin/python bench/tuning_bench.py [--model lstm] [--trials 20] [--markdown]

The data folder is ``$CFL_SHARED_DATA`` or ``../shared/data`` beside the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
# The repository root for `forecasting`; bench/ for the shared helpers.
for _folder in (ROOT / "bench", ROOT):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from models_bench import load_candles, machine, peak_rss_mb  # noqa: E402

from forecasting.experiment import ExperimentSettings  # noqa: E402
from forecasting.tuning import tune  # noqa: E402

N_CANDLES = 3000


def run_once(model: str, trials: int, candles: int) -> dict[str, Any]:
    """One tuning run in this process: its figures as a JSON-ready dict."""
    data = load_candles(candles)
    marks: list[float] = []

    def progress(stage: str, fraction: float, details: Any) -> None:
        if stage == "tune":
            marks.append(time.perf_counter())

    started = time.perf_counter()
    result = tune(data, model, ExperimentSettings(), trials=trials, progress=progress)
    wall = time.perf_counter() - started
    steps = [b - a for a, b in zip([started, *marks], marks, strict=False)]
    summary = result.to_json()["summary"]
    return {
        "model": model,
        "trials": trials,
        "trials_run": result.trials,
        "pruned": summary["pruned"],
        "failed": summary["failed"],
        "wall": wall,
        "search": (marks[-1] - started) if marks else 0.0,
        "after_search": wall - ((marks[-1] - started) if marks else 0.0),
        "trial_median": statistics.median(steps) if steps else 0.0,
        "trial_max": max(steps) if steps else 0.0,
        "peak_rss": peak_rss_mb(),
        "verdict": summary["sentences"],
    }


def report(runs: list[dict[str, Any]], facts: dict[str, str], markdown: bool) -> str:
    rows = [
        ("trials per fold", "trials"),
        ("trials run (all folds)", "trials_run"),
        ("pruned", "pruned"),
        ("failed", "failed"),
        ("wall (s)", "wall"),
        ("search (s)", "search"),
        ("after the search: outer scoring, untuned, naive (s)", "after_search"),
        ("trial, median (s)", "trial_median"),
        ("trial, slowest (s)", "trial_max"),
        ("peak RSS (MiB)", "peak_rss"),
    ]

    def cell(value: Any) -> str:
        if not isinstance(value, float):
            return str(value)
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"

    if markdown:
        lines = ["| Fact | Value |", "|---|---|", *(f"| {k} | {v} |" for k, v in facts.items())]
        lines += ["", "| Measurement | " + " | ".join(f"{r['trials']} trials" for r in runs) + " |"]
        lines.append("|---|" + "---:|" * len(runs))
        lines += [f"| {name} | " + " | ".join(cell(r[key]) for r in runs) + " |"
                  for name, key in rows]  # fmt: skip
    else:
        lines = [f"{k}: {v}" for k, v in facts.items()] + [""]
        lines += [f"{name:55} " + " ".join(f"{cell(r[key]):>10}" for r in runs)
                  for name, key in rows]  # fmt: skip
    for run in runs:
        lines.append(f"{run['trials']} trials: " + " ".join(run["verdict"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lstm", help="a tunable model (default lstm)")
    parser.add_argument("--trials", default="20", help="trials per outer fold, e.g. 5,20")
    parser.add_argument("--candles", type=int, default=N_CANDLES)
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # one run, in-process
    args = parser.parse_args(argv)

    if args.child is not None:
        print(json.dumps(run_once(args.model, args.child, args.candles)))
        return 0
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    runs = []
    for trials in [int(t) for t in args.trials.split(",") if t.strip()]:
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(trials), "--model", args.model,
             "--candles", str(args.candles)],
            cwd=ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"{trials} trials failed:\n{done.stderr[-3000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{trials} trials: {runs[-1]['wall']:.1f} s", file=sys.stderr)
    facts = machine(load_before)
    facts["Run"] = f"tune {args.model} on {args.candles} daily BTC/USDT candles"
    print(report(runs, facts, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
