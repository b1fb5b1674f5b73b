"""Benchmark: Stan's L-BFGS memory (``history_size``) for Prophet's fits.

What is measured
----------------
On the 3000 most recent closed daily BTC/USDT candles of the shared real data, for each
memory in ``--sizes`` (Stan's default is 5; the library uses
``forecasting.models.prophet.LBFGS_HISTORY``): a cold ``ProphetModel(interval="prophet")``
fit on all but the last 60 candles, then a chain of ``--refits`` warm-started refits 3
candles apart (what the walk-forward does at each origin of a fold), each followed by a
7-step forecast. Per memory: wall time of the whole chain, the time spent in Stan
(``CmdStanModel.optimize``), L-BFGS iterations, the log density each fit stopped at, and
the largest relative difference of its forecasts from those with Stan's default memory.
The memories run interleaved, ``--rounds`` times; times are medians over rounds.

Why
---
Prophet's posterior is flat along its changepoint terms (a Laplace prior): with a memory
of 5 L-BFGS crawls for thousands of iterations, and Prophet's refits are most of a
default experiment's time.

Run from the repository root::

    .venv/bin/python bench/prophet_optimizer_bench.py [--sizes 5,20,50,100] [--rounds 2]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _folder in (ROOT / "bench", ROOT):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import numpy as np  # noqa: E402
from models_bench import load_candles, machine  # noqa: E402

import forecasting.models.prophet as prophet_model  # noqa: E402

ITERATION_ROW = re.compile(r"^\s+(\d+)\s+(-?[\d.e+-]+)\s", re.M)


def chain(candles, refits: int, log: list) -> tuple[float, np.ndarray]:
    """Cold fit, then ``refits`` warm refits 3 candles apart, each with a forecast."""
    start = time.perf_counter()
    model = prophet_model.ProphetModel(horizon=7, seed=0, interval="prophet")
    model.fit(candles.iloc[: len(candles) - 3 * (refits + 1)])
    means = []
    for k in range(refits):
        end = len(candles) - 3 * (refits - k)
        model = model.updated(candles.iloc[:end])
        means.append(model.predict(7).mean)
    return time.perf_counter() - start, np.asarray(means)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="5,20,50,100")
    parser.add_argument("--refits", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    candles = load_candles()

    import cmdstanpy

    optimize = cmdstanpy.CmdStanModel.optimize
    log: list[tuple[float, int, float]] = []

    def timed(self, *a, **k):
        start = time.perf_counter()
        result = optimize(self, *a, **k)
        seconds = time.perf_counter() - start
        rows = ITERATION_ROW.findall(Path(result.runset.stdout_files[0]).read_text())
        log.append((seconds, int(rows[-1][0]), float(rows[-1][1])))
        return result

    cmdstanpy.CmdStanModel.optimize = timed
    results: dict[int, dict] = {
        size: {"wall": [], "stan": [], "its": [], "lp": None} for size in sizes
    }
    means: dict[int, np.ndarray] = {}
    chain(candles.iloc[:500], 1, [])  # imports and the Stan binary's first start
    for _ in range(args.rounds):
        for size in sizes:
            prophet_model.LBFGS_HISTORY = size
            log.clear()
            wall, means[size] = chain(candles, args.refits, log)
            results[size]["wall"].append(wall)
            results[size]["stan"].append(sum(entry[0] for entry in log))
            results[size]["its"].append(sum(entry[1] for entry in log))
            results[size]["lp"] = [entry[2] for entry in log]
    info = machine()
    print(f"{info['CPU']}, {info['Cores']}, Prophet {info['Prophet']}, {info['Date']}")
    print(f"{len(candles)} daily candles, a cold fit and {args.refits} refits")
    print(
        "| L-BFGS memory | chain | in Stan | iterations | cold fit's log density | "
        "mean log density | largest forecast difference from memory 5 |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    base = means.get(5)
    for size in sizes:
        r = results[size]
        diff = "" if base is None else f"{np.max(np.abs(means[size] / base - 1)) * 100:.2f} %"
        wall, stan = statistics.median(r["wall"]), statistics.median(r["stan"])
        print(
            f"| {size} | {wall:.2f} s | {stan:.2f} s "
            f"| {int(statistics.median(r['its']))} | {r['lp'][0]:.1f} | "
            f"{statistics.fmean(r['lp']):.1f} | {diff} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
