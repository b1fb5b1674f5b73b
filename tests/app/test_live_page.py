"""The Live page through AppTest, on a ledger written with :mod:`forecasting.ledger`."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from forecasting.evaluation import score, verdicts
from forecasting.ledger import Ledger
from tests.app.markdown_check import visible
from ui import live, runs

APP = str(Path(__file__).resolve().parents[2] / "app.py")
ROOT = Path(__file__).resolve().parents[2]
FORM = "live_settings"
DAY = 86_400_000
START = 1_704_067_200_000  # 2024-01-01 00:00 UTC
SERIES = ("binance", "BTC/USDT", "1d")  # the app's default selection under app_env
HORIZON = 3
GAP = 10  # the candle the exchange never served


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def series_candles(days: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, days)))
    index = pd.DatetimeIndex(
        pd.to_datetime([START + i * DAY for i in range(days)], unit="ms", utc=True),
        name="timestamp",
    ).as_unit("ms")
    return pd.DataFrame(
        {"open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1.0},
        index=index,
    )


def rows(model: str, origin: int, close: float, means: list[float]) -> list[dict]:
    exchange, symbol, timeframe = SERIES
    return [
        {
            "exchange": exchange,
            "symbol": symbol,
            "timeframe": timeframe,
            "model": model,
            "settings_hash": "0" * 64,
            "origin_ms": START + origin * DAY,
            "origin_close": close,
            "target_ms": START + (origin + step) * DAY,
            "step": step,
            "forecast": mean,
        }
        for step, mean in enumerate(means, 1)
    ]


def write_ledger(path: Path, *, origins: int = 14, late: bool = False) -> None:
    """naive and drift forecasting from ``origins`` daily candles as each closed (a minute
    after), scored as their candles arrive; the candle ``GAP`` never arrives."""
    candles = series_candles(5 + origins + HORIZON)
    served = candles.drop(candles.index[GAP])
    clock = Clock(START)
    with Ledger(path, clock=clock) as ledger:
        for origin in range(5, 5 + origins):
            clock.now = START + (origin + 1) * DAY + 60_000
            ledger.record_candles(*SERIES, served[served.index <= candles.index[origin]])
            ledger.score()
            close = float(candles["close"].iloc[origin])
            slope = (close - float(candles["close"].iloc[0])) / origin
            ledger.record_forecasts(rows("naive", origin, close, [close] * HORIZON))
            ledger.record_forecasts(
                rows("drift", origin, close, [close + slope * k for k in range(1, HORIZON + 1)])
            )
        if late:
            # Written an hour after its origin closed: before its first target closed (the
            # ledger keeps it), past the timing check's 15 minutes (it is never scored).
            origin = 5 + origins - 1
            clock.now = START + (origin + 1) * DAY + 3_600_000
            close = float(candles["close"].iloc[origin])
            ledger.record_forecasts(rows("late", origin, close, [close] * HORIZON))


def open_live() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120).run()
    return app.switch_page("pages/live.py").run()


def ledger_file() -> Path:
    return Path(os.environ["CFL_CACHE_DIR"]) / "ledger.sqlite3"


def test_the_page_is_listed_after_compare():
    source = Path(APP).read_text()
    assert source.index('"pages/compare.py"') < source.index('"pages/live.py"')


def test_an_empty_ledger_says_what_to_do(app_env):
    app = open_live()
    assert not app.exception
    assert app.title[0].value == "Live"
    assert any("No forecasts for this series" in i.value for i in app.info)
    assert not app.table


def test_track_record_waiting_and_check_match_the_library(app_env):
    path = ledger_file()
    write_ledger(path)
    app = open_live()
    assert not app.exception, app.exception
    assert not app.error

    with Ledger(path) as ledger:
        backtest = ledger.backtest(*SERIES)
        counts = ledger.counts(*SERIES)
        waiting = ledger.waiting(*SERIES)
        missing = ledger.missing(*SERIES)
    metrics = score(backtest)
    verdict = verdicts(backtest, loss="absolute")

    # The metrics table: the values Compare's evaluation code gives on the same forecasts.
    shown = app.table[0].value
    assert list(shown.index) == ["naive", "drift"]
    assert list(shown.columns) == ["mae_vs_naive", "against naive", "n", "mae"]
    for model in ("naive", "drift"):
        assert int(shown.loc[model, "n"]) == int(metrics.loc[model, "n"])
        assert shown.loc[model, "mae"] == metrics.loc[model, "mae"]
        assert shown.loc[model, "mae_vs_naive"] == metrics.loc[model, "mae_vs_naive"]
    assert shown.loc["drift", "against naive"] == verdict["drift"].reading
    assert shown.loc["naive", "against naive"] == "—"
    # Every (origin, step) scored by both, the gap's targets left out.
    assert int(metrics.loc["naive", "n"]) == int(counts.loc["naive", "scored"])
    lines = [m.value for m in app.markdown if m.value.startswith("- **")]
    # The verdict in Compare's words, for the same verdict.
    assert lines == [f"- {line}" for line in runs.verdict_lines(verdict)]
    assert lines[0].startswith("- **drift**")
    assert verdict["drift"].reading in lines[0]

    # Waiting: the counts per model and the next target.
    table = next(d.value for d in app.dataframe if "waiting" in d.value.columns)
    assert table["waiting"].to_dict() == counts["waiting"].to_dict()
    assert table["scored"].to_dict() == counts["scored"].to_dict()
    assert table["missing"].to_dict() == counts["missing"].to_dict()
    first = pd.Timestamp(int(waiting["target_ms"].min()), unit="ms", tz="UTC")
    assert (table["next target"] == first).all()
    assert any(f"{first:%Y-%m-%d %H:%M} UTC" in visible(c.value) for c in app.caption)

    # The gap's forecasts are marked missing, and the page counts them.
    assert len(missing) == int(counts["missing"].sum()) > 0
    assert any(f"{len(missing):,} forecasts were marked missing" in c.value for c in app.caption)
    # The timing check.
    assert [s.value for s in app.success] == [
        "Timing check: every forecast was written within 15 minutes of its origin candle "
        "closing, before its first target closed."
    ]


def test_forecasts_written_late_are_listed(app_env):
    write_ledger(ledger_file(), late=True)
    app = open_live()
    assert not app.exception
    assert any("3 forecasts were not written within 15 minutes" in w.value for w in app.warning)
    late = next(d.value for d in app.dataframe if "problem" in d.value.columns)
    assert list(late["model"]) == ["late"] * 3
    assert set(late["problem"]) == {"written after its origin closed plus the tolerance"}


def test_trackers_of_the_series_are_listed_with_their_state(app_env):
    path = ledger_file()
    write_ledger(path)
    now = int(time.time() * 1000)
    with Ledger(path, clock=lambda: now) as ledger:
        running = ledger.start_tracker(*SERIES, ["naive", "drift"], mode="forever")
        ledger.heartbeat(running, round_done=True, error="binance: timed out")
        stopped = ledger.start_tracker(*SERIES, ["naive"], mode="forever")
        ledger.stop_tracker(stopped)
        ledger.start_tracker("kraken", "BTC/USD", "1d", ["naive"], mode="forever")  # another
    with Ledger(path, clock=lambda: now - 5 * DAY) as ledger:
        ledger.start_tracker(*SERIES, ["naive", "lstm"], mode="once")
    app = open_live()
    assert not app.exception
    trackers = next(d.value for d in app.dataframe if "state" in d.value.columns)
    states = dict(zip(trackers["id"], trackers["state"], strict=True))
    assert states[running] == "running"
    assert states[stopped] == "stopped"
    assert sorted(states.values()) == ["running", "stale", "stopped"]
    row = trackers[trackers["id"] == running].iloc[0]
    assert row["models"] == "naive, drift"
    assert row["last error"] == "binance: timed out"
    assert row["last round"] == pd.Timestamp(now, unit="ms", tz="UTC")
    # Stop is offered only where the server may stop trackers; here it may not.
    stop = app.button(key=f"stop_{running}")
    assert stop.disabled
    assert len([b for b in app.button if b.key.startswith("stop_")]) == 1


def test_a_csv_selection_says_so_and_lists_the_ledger(app_env):
    write_ledger(ledger_file())
    app = open_live()
    app.radio(key="source").set_value("csv").run()
    assert not app.exception
    assert [i.value for i in app.info] == [
        "Only an exchange's candles can be tracked live: choose **Exchange** as the source in "
        "the sidebar. The ledger holds:"
    ]
    held = app.dataframe[0].value
    assert held.to_dict(orient="records") == [
        {
            "exchange": "binance",
            "symbol": "BTC/USDT",
            "timeframe": "1d",
            "models": "naive, drift",
            **{k: int(v) for k, v in Ledger(ledger_file()).counts().sum().items()},
        }
    ]
    assert not app.get("form_submit_button")
    assert not app.table


class FakeProcess:
    """What the page sees of a tracker that started and keeps running."""

    calls: list[tuple[list[str], dict]] = []

    def __init__(self, argv: list[str], **kwargs) -> None:
        FakeProcess.calls.append((argv, kwargs))
        self.pid = 4242

    def wait(self, timeout: float | None = None) -> int:
        raise subprocess.TimeoutExpired("tracker", timeout or 0)


def test_start_is_off_unless_the_server_allows_it(app_env, monkeypatch):
    monkeypatch.delenv(live.SWITCH, raising=False)
    app = open_live()
    button = app.get("form_submit_button")[0]
    assert button.proto.label == "Start tracking"
    assert button.proto.disabled
    assert any("must not run long-lived processes" in c.value for c in app.caption)


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("1", True),  # the documented switch
        ("on", True),
        ("0", False),
        ("", False),
        ("maybe", False),  # a typo keeps it off, and says so
    ],
)
def test_the_switch(monkeypatch, value, allowed):
    monkeypatch.setenv(live.SWITCH, value)
    assert (live.start_refused() is None) is allowed


def test_start_runs_the_tracker_command_detached(app_env, monkeypatch):
    monkeypatch.setenv(live.SWITCH, "1")
    FakeProcess.calls = []
    monkeypatch.setattr(live.subprocess, "Popen", FakeProcess)
    app = open_live()
    app.multiselect(key=f"w:compare.models@{FORM}").set_value(["naive", "drift"])
    app.number_input(key=f"w:horizon@{FORM}").set_value(HORIZON)
    app.number_input(key=f"w:seed@{FORM}").set_value(7)
    app.get("form_submit_button")[0].click().run()
    assert not app.exception
    assert not app.error
    assert len(FakeProcess.calls) == 1
    argv, kwargs = FakeProcess.calls[0]
    cache = Path(os.environ["CFL_CACHE_DIR"])
    config = cache / "live-exchange-binance.json"
    assert argv == [
        sys.executable, "-m", "forecasting", "live",
        "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1d",
        "--models", "naive,drift", "--horizon", "3", "--seed", "7",
        "--settings", json.dumps({"drift": {"level": 0.9}, "naive": {"level": 0.9}},
                                 separators=(",", ":")),
        "--ledger", str(cache / "ledger.sqlite3"), "--cache-dir", str(cache),
        "--exchange-config", f"@{config}",
        "--quiet",
    ]  # fmt: skip
    assert kwargs["start_new_session"] is True
    assert kwargs["cwd"] == ROOT
    assert kwargs["stdin"] is subprocess.DEVNULL
    assert kwargs["stderr"] is subprocess.STDOUT
    assert Path(kwargs["stdout"].name) == cache / "live-binance-BTC_USDT-1d.log"
    # The exchange settings (keys, in a real deployment) are in a file only the user reads.
    assert json.loads(config.read_text()) == app_env.ccxt_config()
    assert config.stat().st_mode & 0o777 == 0o600
    assert any("Started a tracker (process 4242)" in s.value for s in app.success)


def test_start_refuses_a_second_tracker_of_the_same_models(app_env, monkeypatch):
    monkeypatch.setenv(live.SWITCH, "1")
    FakeProcess.calls = []
    monkeypatch.setattr(live.subprocess, "Popen", FakeProcess)
    path = ledger_file()
    path.parent.mkdir(parents=True)
    with Ledger(path) as ledger:
        ledger.start_tracker(*SERIES, ["naive", "drift"], mode="forever")
    app = open_live()
    app.multiselect(key=f"w:compare.models@{FORM}").set_value(["drift"])
    app.get("form_submit_button")[0].click().run()
    assert FakeProcess.calls == []
    assert any("already runs for this series" in e.value for e in app.error)


def test_stop_sends_sigterm_to_the_tracker_process(app_env, monkeypatch):
    monkeypatch.setenv(live.SWITCH, "1")
    # A stand-in tracker: a process whose command line names `forecasting live`.
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "forecasting", "live"]
    )
    path = ledger_file()
    path.parent.mkdir(parents=True)
    try:
        with Ledger(path) as ledger:
            tracker = ledger.start_tracker(*SERIES, ["naive"], mode="forever")
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE trackers SET pid = ? WHERE id = ?", (child.pid, tracker))
        app = open_live()
        app.button(key=f"stop_{tracker}").click().run()
        assert not app.exception
        assert child.wait(timeout=10) == -signal.SIGTERM
        assert any(f"process {child.pid}" in i.value for i in app.info)
    finally:
        if child.poll() is None:
            child.kill()


def test_stop_never_signals_a_process_that_is_not_a_tracker():
    # The ledger's pid is this test's own process: its command line is not a tracker's.
    tracker = {"state": "running", "mode": "forever", "host": socket.gethostname()}
    message = live.stop_tracker({**tracker, "pid": os.getpid()})
    assert "no longer the tracker" in message
    assert "Only a running tracker" in live.stop_tracker({**tracker, "pid": 1, "host": "x"})


@pytest.mark.parametrize(
    ("timeframe", "seconds"),
    [
        ("1m", 10),  # at least 10 s
        ("15m", 30),  # a thirtieth of a candle
        ("1h", 60),  # at most a minute
        ("1d", 60),
    ],
)
def test_refresh_follows_the_timeframe(timeframe, seconds):
    assert live.refresh_seconds(timeframe) == seconds
