"""Benchmark: a sweep of 4 series, one after another and on a local Ray of 1 and 2 workers.

What is measured
----------------
``forecasting.sweeps.run_sweep`` over 4 real series of the shared data, each the last
``--candles`` closed candles (default 1000): BTC/USDT 1d, ETH/USDT 1d, BTC/USDT 4h, and the
1000 BTC/USDT 4h candles before those (a different period of the same pair). Every series
runs the same experiment: ``--models`` (default naive, drift, moving average and the LSTM
with its default settings), Compare's default walk-forward (3 folds over the last 120
candles, horizon 7, stride 3), then the refit on all data, the scores and the bundle.

* **Modes**: ``local`` (``local=True``: the series one after another in this process, no
  Ray), ``ray-1`` and ``ray-2`` (a Ray started by the sweep on this machine with 1 and 2
  workers of 1 CPU each, stopped at its end). Each mode runs in a fresh process of its own,
  so none inherits another's TensorFlow or Ray.
* **Wall time** of ``run_sweep`` as called: for Ray that includes starting and stopping
  Ray and its workers, each worker's imports (pandas, TensorFlow) and the bundles sent
  back. **Task time**: the seconds each series' experiment took where it ran (the
  ``seconds`` column of the results table), summed.
* **Peak memory**: the largest sum, over the benchmark process and every process it
  started (Ray's GCS server, raylet, workers, ...: the whole process tree, sampled every
  0.25 s), of the proportional set size (PSS, ``/proc/PID/smaps_rollup``: shared pages
  divided among the processes sharing them, so Ray's shared object store is counted once)
  and of the resident set size (RSS, which counts shared pages once per process).
* **Ray start**: ``ray.init`` and ``ray.shutdown`` with nothing run, timed once.

Why
---
The issue asks for the sweep's time and memory with 1 and 2 workers and how the time
scales with the series; the ratio of ``ray-1`` to ``ray-2`` is the speed-up of a second
worker on a 2-core machine, and ``ray-1`` against ``local`` the cost of Ray itself.

Run from the repository root (re-runs itself under the engines venv's Python when this
one has no Ray)::

    .venv-engines/bin/python bench/sweep_bench.py [--markdown] [--modes local,ray-1,ray-2]

The data folder is ``$CFL_SHARED_DATA`` or ``../shared/data`` beside the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from forecasting.data import read_ohlcv_csv, write_ohlcv_csv  # noqa: E402
from forecasting.experiment import ExperimentSettings, parse_models  # noqa: E402
from forecasting.sweeps import file_series, ray_importable, ray_python, run_sweep  # noqa: E402

MODES = ("local", "ray-1", "ray-2")
DEFAULT_MODELS = "naive,drift,moving_average,lstm"
# (label stem, source file, which window of --candles closed candles: 0 = the last)
SERIES = (
    ("BTC-USDT_1d", "binance_BTC-USDT_1d.csv", 0),
    ("ETH-USDT_1d", "binance_ETH-USDT_1d.csv", 0),
    ("BTC-USDT_4h", "binance_BTC-USDT_4h.csv", 0),
    ("BTC-USDT_4h_before", "binance_BTC-USDT_4h.csv", 1),
)


def shared_data_folder() -> Path:
    """``$CFL_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    override = os.environ.get("CFL_SHARED_DATA")
    return Path(override) if override else ROOT.parent / "shared" / "data"


def write_series(folder: Path, candles: int) -> list[Path]:
    """The 4 series as CSV files in ``folder``."""
    data = shared_data_folder()
    paths = []
    for stem, name, window in SERIES:
        source = data / name
        if not source.is_file():
            raise SystemExit(f"{source} not found: set CFL_SHARED_DATA to the shared data folder.")
        closed = read_ohlcv_csv(source).candles.iloc[:-1]  # the last row is a partial candle
        end = len(closed) - window * candles
        if end - candles < 0:
            raise SystemExit(f"{source} holds too few candles for window {window}.")
        path = folder / f"{stem}.csv"
        write_ohlcv_csv(closed.iloc[end - candles : end], path)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------- memory


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after it.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def tree_memory(root: int) -> tuple[float, float]:
    """(PSS, RSS) in MiB summed over ``root`` and all its descendants."""
    tree = _children()
    pids, pss, rss = [root], 0.0, 0.0
    while pids:
        pid = pids.pop()
        pids.extend(tree.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) / 1024
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1]) / 1024
        except OSError:
            continue  # the process ended meanwhile
    return pss, rss


class PeakMemory:
    """Samples the process tree's memory on a thread until stopped; keeps the peaks."""

    def __init__(self, every: float = 0.25) -> None:
        self.every = every
        self.pss = self.rss = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pss, rss = tree_memory(os.getpid())
            self.pss, self.rss = max(self.pss, pss), max(self.rss, rss)
            self._stop.wait(self.every)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------- one mode


def run_mode(mode: str, paths: list[Path], models: str, out: Path) -> dict[str, Any]:
    """One mode's sweep in this process: its figures as a JSON-ready dict."""
    settings = ExperimentSettings(models=parse_models(models))
    series = file_series([str(p) for p in paths])
    local = mode == "local"
    workers = None if local else int(mode.split("-")[1])
    with PeakMemory() as memory:
        started = time.perf_counter()
        result = run_sweep(series, settings, out, local=local, workers=workers)
        wall = time.perf_counter() - started
    per_series = {
        label: float(result.table[result.table["series"] == label]["seconds"].iloc[0])
        for label in result.labels
    }
    return {
        "mode": mode,
        "wall": wall,
        "tasks": sum(per_series.values()),
        "per_series": per_series,
        "failed": result.errors,
        "peak_pss": memory.pss,
        "peak_rss": memory.rss,
    }


def ray_start() -> dict[str, float]:
    """``ray.init`` (2 CPUs, no dashboard) and ``ray.shutdown`` with nothing run."""
    import logging

    import ray

    started = time.perf_counter()
    with PeakMemory() as memory:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
        up = time.perf_counter() - started
        time.sleep(2.0)  # the idle workers Ray prestarts
        ray.shutdown()
    return {"init": up, "total": time.perf_counter() - started - 2.0, "peak_pss": memory.pss}


# ------------------------------------------------------------------------- report


def report_text(runs: list[dict[str, Any]], start: dict[str, float] | None, facts: dict) -> str:
    lines = [f"{k}: {v}" for k, v in facts.items()]
    lines.append("")
    lines.append(
        f"{'mode':8} {'wall s':>8} {'tasks s':>8} {'peak PSS MiB':>13} {'peak RSS MiB':>13}"
    )
    for run in runs:
        lines.append(
            f"{run['mode']:8} {run['wall']:8.1f} {run['tasks']:8.1f} "
            f"{run['peak_pss']:13.0f} {run['peak_rss']:13.0f}"
        )
    for run in runs:
        each = ", ".join(f"{label} {s:.1f}" for label, s in run["per_series"].items())
        lines.append(f"{run['mode']}: per series (s): {each}")
        if run["failed"]:
            lines.append(f"{run['mode']}: FAILED {run['failed']}")
    if start:
        lines.append(
            f"Ray start: init {start['init']:.1f} s, init + shutdown {start['total']:.1f} s, "
            f"peak PSS {start['peak_pss']:.0f} MiB (idle)"
        )
    return "\n".join(lines)


def report_markdown(runs: list[dict[str, Any]], start: dict[str, float] | None, facts: dict) -> str:
    lines = ["| Fact | Value |", "|---|---|", *(f"| {k} | {v} |" for k, v in facts.items()), ""]
    lines += [
        "| Mode | wall (s) | task time, summed (s) | peak PSS, process tree (MiB) | "
        "peak RSS, process tree (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for run in runs:
        lines.append(
            f"| {run['mode']} | {run['wall']:.1f} | {run['tasks']:.1f} | "
            f"{run['peak_pss']:.0f} | {run['peak_rss']:.0f} |"
        )
    if start:
        lines += [
            "",
            f"Ray alone: `ray.init` {start['init']:.1f} s, with `ray.shutdown` "
            f"{start['total']:.1f} s, {start['peak_pss']:.0f} MiB PSS idle.",
        ]
    return "\n".join(lines)


def machine_facts(candles: int, models: str) -> dict[str, str]:
    import platform

    import ray

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "CPU": f"{cpu}, {os.cpu_count()} logical CPUs",
        "Python": platform.python_version(),
        "Ray": ray.__version__,
        "Series": f"4 x {candles} closed candles ({', '.join(s[0] for s in SERIES)})",
        "Models": models,
        "Load before": f"{os.getloadavg()[0]:.2f} (1-minute load average)",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default=",".join(MODES), help="local,ray-1,ray-2")
    parser.add_argument("--candles", type=int, default=1000, help="candles per series")
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one mode, in its own process
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if not ray_importable():
        python = ray_python()
        if python is None:
            raise SystemExit("No Python with Ray here: `make engines` installs it.")
        return subprocess.call([str(python), __file__, *(argv or sys.argv[1:])], cwd=ROOT)

    if args.child:
        folder = Path(args.folder)
        paths = sorted(folder.glob("*.csv"), key=lambda p: [s[0] for s in SERIES].index(p.stem))
        figures = run_mode(args.child, paths, args.models, folder / args.child)
        print(json.dumps(figures))
        return 0

    facts = machine_facts(args.candles, args.models)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_series(folder, args.candles)
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            if mode not in MODES:
                raise SystemExit(f"Unknown mode {mode!r}: use {', '.join(MODES)}.")
            done = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--folder", str(folder),
                 "--models", args.models],
                cwd=ROOT, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{mode}: {runs[-1]['wall']:.1f} s", file=sys.stderr)
    start = ray_start()
    text = report_markdown if args.markdown else report_text
    print(text(runs, start, facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
