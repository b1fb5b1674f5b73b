"""Benchmark: the deployed app's first page, and memory over repeated experiments.

Streamlit Community Cloud gives an app between about 690 MB and 2.7 GB, and a first page
that takes long to appear loses people. This measures, on this machine:

1. **First page interactive**: ``streamlit run app.py`` against the local exchange server
   (``tests/fake_exchange.py``, 3200 daily candles), opened in headless Chromium: the time
   from ``page.goto`` to the sidebar's widgets, to the script run finished (the page is
   interactive), and to the candlestick chart drawn, for the first session of a fresh
   server (cold imports, cold candle cache) and the best of two later sessions. Then
   whether the server process has loaded TensorFlow or Prophet at that point (read from
   ``/proc/<pid>/maps``: a loaded shared library shows there).
2. **Memory of experiments**: in this process, the default experiment
   (``ExperimentSettings()``: naive baselines, Prophet and the LSTM, 3 folds of 40 candles)
   on the latest 3000 daily BTC/USDT candles of ``../shared/data``, run 1 + 10 times with
   seeds 0..10, each result kept in a store of 8 as the app keeps them; resident memory
   (``VmRSS``) and its peak (``VmHWM``) after each run.

Run by hand: ``.venv/bin/python bench/app_bench.py [--experiments 10] [--markdown]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from e2e.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402 - the browser tests' settings


def memory_mb() -> tuple[float, float]:
    """Resident memory and its peak so far, in MB, from /proc/self/status."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        line.split()[1]
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "CPU": f"{cpu}, {os.cpu_count()} logical CPUs",
        "RAM": f"{int(memory) / 1024 / 1024:.1f} GiB",
        "Python": platform.python_version(),
        "Date": time.strftime("%Y-%m-%d"),
        "Load": f"{os.getloadavg()[0]:.2f} (1-minute load average at start)",
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def first_page(runs: int = 3) -> dict[str, object]:
    """Seconds to the first chart for ``runs`` sessions, and what the server loaded."""
    from fake_exchange import FakeBinance
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(ROOT / "tests" / "app"))
    from conftest import daily_candles

    out: dict[str, object] = {}
    with FakeBinance({("BTC/USDT", "1d"): daily_candles(3200)}) as server:
        port = _free_port()
        env = {
            **os.environ,
            "CFL_DEFAULT_EXCHANGE": "binance",
            "CFL_DEFAULT_SYMBOL": "BTC/USDT",
            "CFL_EXCHANGES": json.dumps({"binance": server.ccxt_config()}),
            "CFL_CACHE_DIR": tempfile.mkdtemp(),
        }
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.headless", "true"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1):
                        break
                except OSError:
                    time.sleep(0.05)
            out["server start (s)"] = time.perf_counter() - started
            times = []
            with sync_playwright() as playwright:
                for run in range(runs):
                    context = playwright.chromium.launch_persistent_context(
                        tempfile.mkdtemp(), executable_path=str(CHROMIUM), headless=True,
                        args=CHROMIUM_ARGS,
                    )  # fmt: skip
                    page = context.new_page()
                    began = time.perf_counter()
                    page.goto(url)
                    page.locator(
                        "[data-testid=stSidebar] [data-testid=stSelectbox]"
                    ).first.wait_for(timeout=60_000)
                    widgets = time.perf_counter() - began
                    page.wait_for_function(
                        "(() => { const s = document.querySelector('[data-test-script-state]');"
                        " return s && s.getAttribute('data-test-script-state') === 'notRunning';"
                        " })()",
                        timeout=60_000,
                    )
                    idle = time.perf_counter() - began
                    page.wait_for_function(
                        "(() => { const p = document.querySelector('.js-plotly-plot');"
                        " return p && p._fullData; })()",
                        timeout=60_000,
                    )
                    times.append((widgets, idle, time.perf_counter() - began))
                    context.close()
                    if run == 0:
                        # Let the second session use a warm cache, as a returning user does.
                        time.sleep(0.5)
            for label, (widgets, idle, chart) in (
                ("first session", times[0]),
                ("later session", min(times[1:], key=lambda t: t[1])),
            ):
                out[f"{label}: sidebar widgets drawn (s)"] = widgets
                out[f"{label}: interactive, script finished (s)"] = idle
                out[f"{label}: candlestick chart drawn (s)"] = chart
            maps = Path(f"/proc/{process.pid}/maps").read_text()
            out["server loaded TensorFlow"] = "tensorflow" in maps
            out["server loaded Prophet/Stan"] = "prophet" in maps or "cmdstan" in maps
            status = Path(f"/proc/{process.pid}/status").read_text()
            rss = next(line for line in status.splitlines() if line.startswith("VmRSS"))
            out["server memory after first page (MB)"] = int(rss.split()[1]) / 1024
        finally:
            process.terminate()
            process.wait(timeout=10)
    return out


def experiments(count: int) -> list[dict[str, float]]:
    """Resident and peak memory after 1 + ``count`` default experiments."""
    from fake_exchange import load_shared_csv

    from forecasting.experiment import ExperimentSettings, run_experiment
    from forecasting.ohlcv import normalize_ohlcv

    candles = load_shared_csv("binance_BTC-USDT_1d.csv")
    if candles is None:
        raise SystemExit("../shared/data is absent: the memory benchmark needs its BTC daily file.")
    candles = normalize_ohlcv(candles.iloc[:-1]).iloc[-3000:]
    kept: list[object] = []  # the app keeps at most 8 experiment results
    rows = []
    gc.collect()
    rss, peak = memory_mb()
    rows.append({"run": 0, "seconds": 0.0, "rss": rss, "peak": peak})
    for seed in range(count + 1):
        began = time.perf_counter()
        result = run_experiment(candles, ExperimentSettings(seed=seed))
        seconds = time.perf_counter() - began
        kept = [*kept[-7:], result]
        gc.collect()
        rss, peak = memory_mb()
        rows.append({"run": seed + 1, "seconds": seconds, "rss": rss, "peak": peak})
        print(f"experiment {seed + 1}: {seconds:5.1f} s, RSS {rss:7.1f} MB, peak {peak:7.1f} MB",
              flush=True)  # fmt: skip
    return rows


def main() -> None:
    """Run both parts and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=10, help="after the first (10)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown fragment")
    args = parser.parse_args()

    about = machine()
    page = first_page()
    rows = experiments(args.experiments)
    after_first = rows[1]["rss"]
    after_five = rows[min(6, len(rows) - 1)]["rss"]
    after_all = rows[-1]["rss"]
    growth = after_all - after_first
    summary = {
        **{k: v for k, v in page.items()},
        "memory before any experiment (MB)": rows[0]["rss"],
        "memory after the default experiment (MB)": after_first,
        "peak during the default experiment (MB)": rows[1]["peak"],
        "memory after five more (MB)": after_five,
        f"memory after {args.experiments} more (MB)": after_all,
        "peak over all runs (MB)": max(r["peak"] for r in rows),
        f"growth over {args.experiments} more (MB)": growth,
        "median experiment time (s)": sorted(r["seconds"] for r in rows[1:])[len(rows[1:]) // 2],
    }
    first_ok = (
        page["first session: interactive, script finished (s)"] < 3
        and not page["server loaded TensorFlow"]
    )
    checks = {
        "first page interactive < 3 s, no model library loaded": first_ok,
        f"{args.experiments} experiments grow memory < 100 MB": growth < 100,
    }
    if args.markdown:
        print("\n".join(f"- **{k}:** {v}" for k, v in about.items()))
        print("\n| Measurement | Value |\n|---|---:|")
        for key, value in summary.items():
            shown = f"{value:.2f}" if isinstance(value, float) else str(value)
            print(f"| {key} | {shown} |")
        print()
        for name, ok in checks.items():
            print(f"- {'pass' if ok else 'FAIL'}: {name}")
    else:
        for key, value in {**about, **summary}.items():
            print(f"{key:45} {value}")
        for name, ok in checks.items():
            print(f"{'PASS' if ok else 'FAIL'}  {name}")


if __name__ == "__main__":
    main()
