"""Benchmark: one live round for naive, Prophet and the LSTM on 1h candles, with and
without a refit.

What is measured
----------------
``forecasting.live.run_round`` against the local fake exchange of the test-suite (a real
ccxt client over HTTP on 127.0.0.1, ``tests/fake_exchange.py``), into a fresh ledger and
model folder in a temporary directory, with the ledger's clock 5 s after a candle closed:

* **refit due**: the first round (nothing in the model folder): the candles are fetched
  into the cache, recorded and scored, and every model is fitted on ``--history``
  candles and forecasts ``--horizon`` candles;
* **no refit**: the next round, one candle later: one candle is fetched, the LSTM's fit
  is loaded from the model folder and conditions on the new candle (its refit is due
  every 24 candles on 1h), naive and Prophet are fitted again (see ``forecasting.live``).

Per round: the wall time, each model's share (``ModelRound.seconds``) and the process's
peak resident memory after the round (``ru_maxrss``: a high-water mark, so the second
round's is at least the first's). The first round also pays the one-off imports of
TensorFlow and Prophet, as a ``live --once`` process does at every run. ``--heap`` adds
the peak of the Python heap during each round (``tracemalloc``: TensorFlow's and Stan's
own C++ memory is not in it); tracing slows Python code several times, so the times of
a ``--heap`` run are not the ones to report.

The series is the shared real BTC/USDT 4h candles (``binance_BTC-USDT_4h.csv``) on an
hourly grid (the real price path, hourly time stamps), or a random walk when the shared
data folder is absent.

Run from the repository root (it trains a real LSTM and Prophet: minutes on 2 cores)::

    .venv/bin/python bench/live_bench.py [--history 1000] [--horizon 7] [--heap] [--quick]

``--quick`` is a smoke run with tiny settings (a few seconds after the imports).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

_folder = Path(__file__).resolve().parent
for extra in (_folder.parent, _folder, _folder.parent / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from fake_exchange import FakeBinance, load_shared_csv  # noqa: E402

from forecasting.data.cache import CandleCache  # noqa: E402
from forecasting.ledger import Ledger  # noqa: E402
from forecasting.live import RoundReport, run_round  # noqa: E402

SYMBOL = "BTC/USDT"
MODELS = ("naive", "prophet", "lstm")


class Clock:
    def __init__(self, now: pd.Timestamp) -> None:
        self.now = int(now.value // 1_000_000)

    def __call__(self) -> int:
        return self.now


def hourly_series(count: int) -> tuple[pd.DataFrame, str]:
    """``count`` hourly candles and where they came from."""
    shared = load_shared_csv("binance_BTC-USDT_4h.csv")
    if shared is not None and len(shared) > count:
        frame = shared.iloc[-count - 1 : -1]  # the last row is a partial candle
        source = "shared BTC/USDT 4h candles on an hourly grid"
    else:
        rng = np.random.default_rng(7)
        close = 40_000 * np.exp(np.cumsum(rng.normal(0, 0.004, count)))
        frame = pd.DataFrame(
            {"open": close, "high": close * 1.002, "low": close * 0.998, "close": close,
             "volume": rng.random(count) * 100}
        )  # fmt: skip
        source = "a random walk (shared data folder not found)"
    index = pd.date_range("2024-01-01", periods=count, freq="h", tz="UTC", name="timestamp")
    frame = frame.set_axis(index.as_unit("ms")).astype("float64")
    return frame, source


def measured(run, heap: bool) -> tuple[RoundReport, float, float | None, float]:
    """The round's report, wall seconds, Python heap peak (MiB, with ``heap``) and the
    process's peak RSS (MiB)."""
    if heap:
        tracemalloc.start()
    started = time.perf_counter()
    report = run()
    seconds = time.perf_counter() - started
    peak = None
    if heap:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return report, seconds, peak, rss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=1000, help="candles per fit")
    parser.add_argument("--horizon", type=int, default=7)
    parser.add_argument("--heap", action="store_true", help="also trace the Python heap")
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke run")
    args = parser.parse_args(argv)
    settings: dict[str, dict] = {}
    history = args.history
    if args.quick:
        history = min(history, 120)
        settings = {"lstm": {"epochs": 1, "units": 4, "lookback": 5, "features": ""}}
    series, source = hourly_series(history + 50)
    origin = series.index[history + 10]
    rows = []
    with tempfile.TemporaryDirectory() as folder, FakeBinance() as fake:
        fake.set_candles(SYMBOL, "1h", series)
        clock = Clock(origin + pd.Timedelta(hours=1, seconds=5))
        with Ledger(Path(folder) / "ledger.sqlite3", clock=clock) as ledger:
            cache = CandleCache(Path(folder) / "cache")
            for label in ("refit due", "no refit"):

                def run() -> RoundReport:
                    return run_round(
                        "binance",
                        SYMBOL,
                        "1h",
                        MODELS,
                        ledger=ledger,
                        horizon=args.horizon,
                        settings=settings,
                        cache=cache,
                        exchange=fake.client,
                        history=history,
                    )

                report, seconds, heap, rss = measured(run, args.heap)
                shares = {m: report.models[m] for m in MODELS}
                for alias, done in shares.items():
                    if done.status != "written":
                        print(f"{label}: {alias} {done.status}: {done.error}", file=sys.stderr)
                rows.append(
                    {
                        "round": label,
                        "wall s": round(seconds, 2),
                        **{f"{m} s": round(shares[m].seconds, 2) for m in MODELS},
                        "lstm refit": shares["lstm"].refitted,
                        **({"heap peak MiB": round(heap, 1)} if heap is not None else {}),
                        "peak RSS MiB": round(rss, 0),
                    }
                )
                clock.now += 3_600_000
    print(f"data: {source}; {history} candles per fit, horizon {args.horizon}")
    print(pd.DataFrame(rows).set_index("round").to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
