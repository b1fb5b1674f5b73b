"""Benchmark: the deployed app's first page, and its memory over repeated experiments.

Streamlit Community Cloud gives an app between about 690 MB and 2.7 GB, and a first page
that takes long to appear loses people. Parts (``--parts``, default ``first,limit,memory``):

``first``
    ``streamlit run app.py`` with the repository's ``.streamlit/config.toml``, against the
    local exchange server (``tests/fake_exchange.py``, 3200 daily candles), opened in
    headless Chromium. For each of ``--servers`` fresh servers: its first session (cold
    imports, empty candle cache), two later ones, each in a new browser profile, and a
    returning visitor (the last profile again, with its cache). Times from ``page.goto``
    to the sidebar's widgets drawn, to the first select box answering a click (its options
    open: the page is interactive), to the script run finished and to the candlestick
    chart drawn; medians and the worst. Then whether the server has loaded TensorFlow or
    Prophet (``/proc/<pid>/maps``).
``watcher``
    The same with Streamlit's default file watcher (``--server.fileWatcherType auto``).
``offline``
    The same with the exchange's host name unresolvable (no network): the first page
    shows the offline sample, and later sessions are answered from the memory of the
    failure (``forecasting/data/reachability.py``).
``limit``
    The app server in a Linux memory cgroup of ``--limit-mb`` (690, in 10**6 bytes), the
    way a container limits it, after emptying the page cache so that the libraries it maps
    are charged to it. In one browser, ``--limited-runs`` default experiments in a row on
    the Compare page (the latest 3000 daily BTC/USDT candles of ``../shared/data``, seeds
    42, 1, 2, ...). After each: the cgroup's usage and peak, how often the limit was hit,
    OOM kills, and the server's anonymous and file-backed resident memory. Needs root and
    a writable cgroup file system (skipped otherwise).
``memory``
    In this process, the default experiment (``ExperimentSettings()``) on the same candles,
    run 1 + ``--experiments`` times with seeds 0..10, each result kept in a store of 8 as
    the app keeps them; ``VmRSS`` and its peak ``VmHWM`` after each run.

Run by hand: ``.venv/bin/python bench/app_bench.py [--parts first,limit,memory] [--markdown]``.
Exits with 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from e2e.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402 - the browser tests' settings


def memory_mb() -> tuple[float, float]:
    """Resident memory of this process and its peak so far, in MB."""
    status = _status_mb()
    return status["VmRSS"], status["VmHWM"]


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


def _start_server(
    env: dict[str, str], extra: list[str], preexec: Any = None
) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` on a free port (the repository's config), once healthy."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", *extra],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=preexec,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1):
                return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("streamlit did not start") from None
            time.sleep(0.05)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


IDLE = (
    "(() => { const s = document.querySelector('[data-test-script-state]');"
    " return s && s.getAttribute('data-test-script-state') === 'notRunning'; })()"
)


CHART_DRAWN = (
    "(() => { const p = document.querySelector('.js-plotly-plot'); return p && p._fullData; })()"
)
STEPS = ("sidebar widgets drawn", "answers a click", "run finished", "chart drawn")


def _session(playwright: Any, url: str, profile: str | None = None) -> tuple[float, ...]:
    """Seconds from ``goto`` to each of :data:`STEPS`, in a new browser profile (or in
    ``profile``, a returning visitor's, with its cache).

    "Answers a click": the first sidebar select box is clicked as soon as it is drawn, and
    its list of options opens. Chromium handles the click only once its main thread is
    free, so this includes any script evaluation or drawing that blocks the page.
    """
    context = playwright.chromium.launch_persistent_context(
        profile or tempfile.mkdtemp(), executable_path=str(CHROMIUM), headless=True,
        args=CHROMIUM_ARGS,
    )  # fmt: skip
    try:
        page = context.new_page()
        began = time.perf_counter()
        page.goto(url)
        select = page.locator("[data-testid=stSidebar] [data-testid=stSelectbox]").first
        select.wait_for(timeout=60_000)
        widgets = time.perf_counter() - began
        select.click()
        page.locator("[role=option]").first.wait_for(timeout=60_000)
        answered = time.perf_counter() - began
        page.keyboard.press("Escape")
        page.wait_for_function(IDLE, timeout=60_000)
        idle = time.perf_counter() - began
        page.wait_for_function(CHART_DRAWN, timeout=60_000)
        return widgets, answered, idle, time.perf_counter() - began
    finally:
        context.close()


def first_page(
    servers: int = 3, later: int = 2, extra: list[str] | None = None, *, offline: bool = False
) -> dict:
    """First-page times over ``servers`` fresh servers: each one's first session (cold
    imports, empty candle cache), ``later`` sessions after it in new browser profiles, and
    a returning visitor (the last profile again); medians and worst. ``offline`` points
    the exchange at a host name that never resolves (``.invalid``), as with no network:
    the page then falls back to the offline sample."""
    from fake_exchange import FakeBinance
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(ROOT / "tests" / "app"))
    from conftest import daily_candles

    sessions: dict[str, list[tuple[float, ...]]] = {
        "first session": [], "later sessions": [], "returning visitor": []
    }  # fmt: skip
    out: dict[str, object] = {}
    with FakeBinance({("BTC/USDT", "1d"): daily_candles(3200)}) as exchange:
        env = {
            **os.environ,
            "CFL_DEFAULT_EXCHANGE": "binance",
            "CFL_DEFAULT_SYMBOL": "BTC/USDT",
            "CFL_EXCHANGES": json.dumps({"binance": exchange.ccxt_config()}),
        }
        if offline:
            host = urllib.parse.urlsplit(exchange.url).netloc
            env["CFL_EXCHANGES"] = env["CFL_EXCHANGES"].replace(host, "exchange.invalid")
        with sync_playwright() as playwright:
            for _ in range(servers):
                env["CFL_CACHE_DIR"] = tempfile.mkdtemp()
                process, url = _start_server(env, extra or [])
                try:
                    sessions["first session"].append(_session(playwright, url))
                    profile = ""
                    for _ in range(later):
                        # The last browser shuts down first, as it would on another machine.
                        time.sleep(1.0)
                        profile = tempfile.mkdtemp()
                        sessions["later sessions"].append(_session(playwright, url, profile))
                    if profile:
                        time.sleep(1.0)
                        sessions["returning visitor"].append(_session(playwright, url, profile))
                    maps = Path(f"/proc/{process.pid}/maps").read_text()
                    out["server loaded TensorFlow"] = "tensorflow" in maps
                    out["server loaded Prophet/Stan"] = "prophet" in maps or "cmdstan" in maps
                    out["server memory after first page (MB)"] = _status_mb(process.pid)["VmRSS"]
                finally:
                    _stop(process)
    for label, times in sessions.items():
        for position, what in enumerate(STEPS):
            values = sorted(t[position] for t in times)
            if values:
                out[f"{label}: {what}, median (s)"] = statistics.median(values)
                out[f"{label}: {what}, worst (s)"] = values[-1]
    out["sessions"] = ", ".join(f"{len(v)} {k}" for k, v in sessions.items())
    return out


def _status_mb(pid: int | str = "self") -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon and RssFile of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


class MemoryLimit:
    """A memory cgroup (v1 or v2) with a hard limit, for the app server and its children.

    Streamlit Community Cloud runs an app in a container whose memory is limited this way;
    the kernel reclaims page cache (shared libraries included) before it kills anything.
    Needs root and a writable cgroup file system; :meth:`create` returns None otherwise.
    """

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    @classmethod
    def create(cls, limit_bytes: int) -> MemoryLimit | None:
        """A new cgroup limited to ``limit_bytes``, or None if this machine cannot."""
        name = f"cfl-bench-{os.getpid()}"
        candidates = (
            (Path("/sys/fs/cgroup/memory"), 1, "memory.limit_in_bytes"),
            (Path("/sys/fs/cgroup"), 2, "memory.max"),
        )
        for root, version, limit_file in candidates:
            if not (root / "cgroup.procs").exists():
                continue
            if version == 2 and "memory" not in (root / "cgroup.controllers").read_text():
                continue
            try:
                (root / name).mkdir()
                (root / name / limit_file).write_text(str(limit_bytes))
            except OSError:
                continue
            return cls(root / name, version)
        return None

    def enter(self) -> None:
        """Move the calling process (a child, before it execs) into the cgroup."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def usage(self) -> dict[str, float]:
        """Current and peak usage in MB, times the limit was hit, and OOM kills."""
        p = self.path
        if self.version == 1:
            now = int((p / "memory.usage_in_bytes").read_text())
            peak = int((p / "memory.max_usage_in_bytes").read_text())
            hits = int((p / "memory.failcnt").read_text())
            control = dict(
                line.split() for line in (p / "memory.oom_control").read_text().splitlines()
            )
            kills = int(control.get("oom_kill", 0))
        else:
            now = int((p / "memory.current").read_text())
            peak_file = p / "memory.peak"
            peak = int(peak_file.read_text()) if peak_file.exists() else now
            events = dict(line.split() for line in (p / "memory.events").read_text().splitlines())
            hits, kills = int(events.get("max", 0)), int(events.get("oom_kill", 0))
        return {"now": now / 2**20, "peak": peak / 2**20, "hits": hits, "oom_kills": kills}

    def remove(self) -> None:
        """Delete the cgroup (its processes must have exited)."""
        with contextlib.suppress(OSError):
            self.path.rmdir()


def _drop_page_cache() -> bool:
    """Empty the page cache, so the server's shared libraries are charged to its cgroup."""
    try:
        subprocess.run(["sync"], check=False)
        Path("/proc/sys/vm/drop_caches").write_text("3")
        return True
    except OSError:
        return False


def under_memory_limit(limit_mb: float, runs: int = 5) -> dict[str, object] | None:
    """The app in a cgroup of ``limit_mb`` (10**6 bytes): ``runs`` default experiments in a
    row on the Compare page (seeds 42, 1, 2, ...), in one browser; memory after each."""
    import pandas as pd
    from fake_exchange import FakeBinance, load_shared_csv
    from playwright.sync_api import sync_playwright

    from forecasting.ohlcv import normalize_ohlcv

    if "tensorflow" in Path("/proc/self/maps").read_text():
        raise SystemExit("run the memory-limit part before anything that loads TensorFlow here")
    limit = MemoryLimit.create(int(limit_mb * 1e6))
    if limit is None:
        print("no writable memory cgroup here (needs root): memory-limit run skipped")
        return None
    candles = load_shared_csv("binance_BTC-USDT_1d.csv")
    if candles is None:
        raise SystemExit("../shared/data is absent: the memory-limit run needs its BTC file.")
    candles = normalize_ohlcv(candles.iloc[:-1]).iloc[-3000:]
    start = candles.index[0].strftime("%Y-%m-%d")
    end = (candles.index[-1] + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    out: dict[str, object] = {"limit (MB)": limit_mb, "page cache dropped": _drop_page_cache()}
    rows = []
    with FakeBinance({("BTC/USDT", "1d"): candles}) as exchange:
        env = {
            **os.environ,
            "CFL_DEFAULT_EXCHANGE": "binance",
            "CFL_DEFAULT_SYMBOL": "BTC/USDT",
            "CFL_EXCHANGES": json.dumps({"binance": exchange.ccxt_config()}),
            "CFL_CACHE_DIR": tempfile.mkdtemp(),
        }
        process, url = _start_server(env, [], preexec=limit.enter)
        try:
            with sync_playwright() as playwright:
                context = playwright.chromium.launch_persistent_context(
                    tempfile.mkdtemp(), executable_path=str(CHROMIUM), headless=True,
                    args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000},
                )  # fmt: skip
                page = context.new_page()
                for run, seed in enumerate([42, *range(1, runs)]):
                    link = f"{url}/compare?start={start}&end={end}"
                    page.goto(link if seed == 42 else f"{link}&seed={seed}")
                    page.wait_for_function(IDLE, timeout=120_000)
                    began = time.perf_counter()
                    page.get_by_role("button", name="Run comparison").click()
                    page.get_by_text("Step by step").wait_for(timeout=900_000)
                    page.wait_for_function(IDLE, timeout=120_000)
                    seconds = time.perf_counter() - began
                    table = page.locator("[data-testid='stTable']").first.inner_text()
                    alive = process.poll() is None
                    usage = limit.usage()
                    status = _status_mb(process.pid) if alive else {}
                    rows.append({"run": run + 1, "seconds": seconds, **usage, **status})
                    print(f"limited run {run + 1}: {seconds:5.1f} s, cgroup {usage}, "
                          f"server {status}", flush=True)  # fmt: skip
                    if not alive or "lstm" not in table or "prophet" not in table:
                        raise SystemExit(f"run {run + 1} did not complete: {table[:300]}")
                context.close()
        finally:
            _stop(process)
            limit.remove()
    out["candles"] = len(candles)
    out["experiments completed"] = len(rows)
    out["peak in the cgroup, default experiment (MB)"] = rows[0]["peak"]
    out[f"peak in the cgroup, {runs} in a row (MB)"] = max(r["peak"] for r in rows)
    out["server anonymous memory after the default experiment (MB)"] = rows[0].get("RssAnon", 0.0)
    out[f"server anonymous memory after {runs} (MB)"] = rows[-1].get("RssAnon", 0.0)
    out[f"its growth over the {runs - 1} after the first (MB)"] = rows[-1].get(
        "RssAnon", 0.0
    ) - rows[0].get("RssAnon", 0.0)
    out["server resident after the last (MB)"] = rows[-1].get("VmRSS", 0.0)
    out["of which anonymous (MB)"] = rows[-1].get("RssAnon", 0.0)
    out["of which file-backed (MB)"] = rows[-1].get("RssFile", 0.0)
    out["times the limit was reached (reclaim)"] = rows[-1]["hits"]
    out["out-of-memory kills"] = rows[-1]["oom_kills"]
    out["first experiment (s)"] = rows[0]["seconds"]
    out["median experiment (s)"] = statistics.median(r["seconds"] for r in rows)
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
    """Run the chosen parts and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts",
        default="first,limit,memory",
        help="any of first, watcher, limit, memory (first,limit,memory)",
    )
    parser.add_argument("--servers", type=int, default=3, help="fresh servers timed (3)")
    parser.add_argument("--experiments", type=int, default=10, help="after the first (10)")
    parser.add_argument("--limit-mb", type=float, default=690, help="cgroup limit (690)")
    parser.add_argument("--limited-runs", type=int, default=5, help="experiments in it (5)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown fragment")
    args = parser.parse_args()  # fmt: skip
    parts = set(args.parts.split(","))

    about = machine()
    summary: dict[str, object] = {}
    checks: dict[str, bool] = {}
    if "first" in parts:
        page = first_page(args.servers)
        summary.update(page)
        checks["first page answers a click < 3 s (median, every kind of session)"] = all(
            page[f"{label}: answers a click, median (s)"] < 3
            for label in ("first session", "later sessions", "returning visitor")
        )
        checks["no model library loaded by the first page"] = not (
            page["server loaded TensorFlow"] or page["server loaded Prophet/Stan"]
        )
    if "offline" in parts:
        # No network: the exchange's name never resolves; the offline sample stands in.
        unreachable = first_page(args.servers, offline=True)
        summary.update({f"offline, {k}": v for k, v in unreachable.items() if "median" in k})
    if "watcher" in parts:
        # Streamlit's default file watcher, for comparison with the app's config (none).
        watched = first_page(args.servers, extra=["--server.fileWatcherType", "auto"])
        summary.update({f"file watcher on, {k}": v for k, v in watched.items() if "median" in k})
    # Before the in-process experiments: once this process maps TensorFlow's libraries, the
    # server shares those pages without its cgroup being charged for them.
    if "limit" in parts:
        limited = under_memory_limit(args.limit_mb, args.limited_runs)
        if limited is not None:
            summary.update({f"app in {args.limit_mb:.0f} MB: {k}": v for k, v in limited.items()})
            checks[f"{args.limited_runs} experiments in the app within {args.limit_mb:.0f} MB"] = (
                limited["experiments completed"] == args.limited_runs
                and limited["out-of-memory kills"] == 0
            )
            growth = limited[f"its growth over the {args.limited_runs - 1} after the first (MB)"]
            checks["the app's memory grows < 100 MB over those experiments"] = growth < 100
    if "memory" in parts:
        rows = experiments(args.experiments)
        after_first = rows[1]["rss"]
        growth = rows[-1]["rss"] - after_first
        summary.update({
            "memory before any experiment (MB)": rows[0]["rss"],
            "memory after the default experiment (MB)": after_first,
            "peak during the default experiment (MB)": rows[1]["peak"],
            "memory after five more (MB)": rows[min(6, len(rows) - 1)]["rss"],
            f"memory after {args.experiments} more (MB)": rows[-1]["rss"],
            "peak over all runs (MB)": max(r["peak"] for r in rows),
            f"growth over {args.experiments} more (MB)": growth,
            "median experiment time (s)": statistics.median(r["seconds"] for r in rows[1:]),
        })  # fmt: skip
        checks[f"{args.experiments} experiments grow memory < 100 MB"] = growth < 100
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
            print(f"{key:55} {value}")
        for name, ok in checks.items():
            print(f"{'PASS' if ok else 'FAIL'}  {name}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
