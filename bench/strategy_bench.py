"""Benchmark: the strategy backtest after a comparison, and the NautilusTrader run.

What is measured
----------------
* **Strategy backtest**: ``forecasting.strategy.run_strategy`` on the walk-forward forecasts
  of the default experiment (``ExperimentSettings()``: naive, drift, seasonal naive, moving
  average, Prophet and the LSTM, 3 folds over the last 120 candles, horizon 7, stride 3)
  on the 3000 most recent daily BTC/USDT candles of the shared data: the six models'
  strategies, buy-and-hold, the metrics, the break-even costs and the deflated Sharpe
  ratios. The experiment itself runs once, untimed; ``run_strategy`` is repeated
  (``--repeats``) and its median and worst wall times reported. The issue's target: under
  1 s after the comparison.
* **NautilusTrader**: ``forecasting.nautilus.write_project`` for one model (``--model``,
  default drift, threshold 0 so that it trades) on every one of those 3000 candles, then
  ``run_project`` (``run.py`` in the engines environment, a separate process): the wall
  time of each, and the run's peak
  resident memory (``ru_maxrss`` of the finished child process). Skipped, saying so, without
  the engines environment (``make engines``).

Run from the repository root::

    .venv/bin/python bench/strategy_bench.py [--repeats 20] [--model drift]

The data folder is ``$CFL_SHARED_DATA`` or ``../shared/data`` beside the repository.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
for _folder in (ROOT / "bench", ROOT):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from models_bench import load_candles, machine  # noqa: E402

from forecasting.experiment import ExperimentSettings, run_experiment  # noqa: E402
from forecasting.nautilus import engines_python, run_project, write_project  # noqa: E402
from forecasting.strategy import StrategySettings, run_strategy  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="strategy runs timed (20)")
    parser.add_argument("--model", default="drift", help="the model handed to NautilusTrader")
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        help="the rule's threshold in round-trip costs (default 0: trade on any forecast move, "
        "so that the run has orders to fill)",
    )
    args = parser.parse_args(argv)

    candles = load_candles()
    print(f"[strategy_bench] experiment on {len(candles)} candles", file=sys.stderr, flush=True)
    started = time.perf_counter()
    result = run_experiment(candles, ExperimentSettings(), future=False)
    experiment_s = time.perf_counter() - started
    settings = StrategySettings(threshold=args.threshold)

    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        strategy = run_strategy(result.backtest, result.candles, settings)
        times.append(time.perf_counter() - started)
    for name, value in machine(None).items():
        print(f"{name}: {value}")
    print(f"\nexperiment (untimed for the target): {experiment_s:.1f} s")
    print(
        f"run_strategy, {len(strategy.strategies)} strategies over "
        f"{strategy.positions['timestamp'].nunique()} candles held: median "
        f"{statistics.median(times) * 1000:.0f} ms, worst {max(times) * 1000:.0f} ms "
        f"({args.repeats} runs; target under 1 s: "
        f"{'pass' if max(times) < 1 else 'FAIL'})"
    )

    if engines_python() is None:
        print("NautilusTrader: skipped (no engines environment: make engines)")
        return 0
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "project"
        started = time.perf_counter()
        write_project(result, settings, args.model, out)
        written_s = time.perf_counter() - started
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        started = time.perf_counter()
        ran = run_project(out)
        run_s = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        bars = sum(1 for _ in open(out / "bars.csv")) - 1
    print(
        f"NautilusTrader ({args.model}, {bars} bars): write_project {written_s:.2f} s, "
        f"run {run_s:.1f} s, peak RSS of the run {peak / 1024:.0f} MiB"
        + ("" if peak > before else " (at most; an earlier child was larger)")
        + f"; final equity {ran['final_equity']:.6f}, {ran['trades']} trades"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
