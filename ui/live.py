"""Streamlit glue for the Live page: the ledger read for a series, and its trackers.

A tracker is ``python -m forecasting live ...`` running as a process of its own: the page
starts it detached (its own session, its output in a log file beside the ledger), so it
keeps running when the browser closes or the server restarts, and stops it by sending
SIGTERM, on which the tracker finishes its current write and marks itself stopped. The
page only reads the ledger (SQLite, cheap) and never forecasts itself.

Starting and stopping trackers from the page is off unless the deployment turns it on:
a server strangers can reach must not let anonymous visitors spawn (or end) long-running
processes. The switch, environment first (it wins), then secrets:

``CFL_START_TRACKERS``
    ``1``/``true``/``yes``/``on`` lets the page start and stop trackers; ``0``/``false``/
    ``no``/``off`` (or unset) does not.
``[live] start_trackers = true``
    The same in ``.streamlit/secrets.toml``.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

import forecasting as fc
from forecasting.data.cache import default_cache_dir
from forecasting.errors import ConfigurationError
from forecasting.evaluation import Verdict, score, verdicts
from forecasting.experiment import ExperimentSettings
from forecasting.ledger import Ledger, default_ledger_path
from forecasting.ohlcv import timeframe_seconds
from ui.state import Selection, exchange_config

SWITCH = "CFL_START_TRACKERS"
_ON = ("1", "true", "yes", "on")
_OFF = ("", "0", "false", "no", "off")
# The repository's root: `python -m forecasting` is run from there.
ROOT = Path(__file__).resolve().parents[1]


# --- where things are ------------------------------------------------------------------------


def ledger_path() -> Path:
    """The app's ledger: ``ledger.sqlite3`` in the candle cache folder (``CFL_CACHE_DIR``)."""
    return default_ledger_path()


def cache_dir() -> Path:
    """The app's candle cache folder, which trackers started here share."""
    return default_cache_dir()


def refresh_seconds(timeframe: str) -> int:
    """How often the page re-reads the ledger: a thirtieth of a candle, 10 s to 60 s."""
    try:
        length = timeframe_seconds(timeframe)
    except fc.ForecastingError:
        return 60
    return int(min(60, max(10, length // 30)))


# --- may this server start trackers? ------------------------------------------------------


def start_refused() -> str | None:
    """Why this server does not start or stop trackers from the page, or ``None`` if it does."""
    raw = os.environ.get(SWITCH)
    if raw is None:
        try:
            raw = str(st.secrets.get("live", {}).get("start_trackers", ""))
        except Exception:  # noqa: BLE001 - no secrets file, or an unreadable one: off
            raw = ""
    value = raw.strip().lower()
    if value in _ON:
        return None
    if value not in _OFF:
        return (
            f"Starting trackers here is off: {SWITCH} (or [live] start_trackers) must be "
            "true or false. Run the command below in a terminal instead."
        )
    return (
        "Starting trackers here is off: a server others can reach must not run long-lived "
        f"processes for anonymous visitors. On your own machine set {SWITCH}=1, or run the "
        "command below in a terminal."
    )


# --- starting and stopping -----------------------------------------------------------------


def tracker_command(
    selection: Selection,
    experiment: ExperimentSettings,
    *,
    ledger: Path,
    cache: Path,
    config_file: Path | None = None,
) -> list[str]:
    """The command line of a tracker for the selection's series with ``experiment``'s
    models, settings, horizon and seed, writing into ``ledger``."""
    models = list(dict.fromkeys(["naive", *experiment.models]))
    settings = {alias: dict(experiment.model_settings.get(alias) or {}) for alias in models}
    settings = {alias: values for alias, values in settings.items() if values}
    argv = [
        sys.executable,
        "-m",
        "forecasting",
        "live",
        "--exchange",
        selection.exchange,
        "--symbol",
        selection.symbol,
        "--timeframe",
        selection.timeframe,
        "--models",
        ",".join(models),
        "--horizon",
        str(int(experiment.backtest.horizon)),
        "--seed",
        str(int(experiment.seed)),
    ]
    if settings:
        argv += ["--settings", json.dumps(settings, sort_keys=True, separators=(",", ":"))]
    argv += ["--ledger", str(ledger), "--cache-dir", str(cache)]
    if config_file is not None:
        argv += ["--exchange-config", f"@{config_file}"]
    return [*argv, "--quiet"]


def log_path(selection: Selection, ledger: Path) -> Path:
    """The log file of the selection's trackers, beside the ledger."""
    name = "-".join([selection.exchange, selection.symbol, selection.timeframe])
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:120]
    return ledger.parent / f"live-{safe}.log"


def _config_file(exchange_id: str, folder: Path) -> Path | None:
    """The exchange's settings (they may hold API keys) in a file only this user reads, so
    they never appear in the process list; ``None`` when there are none."""
    config = exchange_config(exchange_id)
    if not config:
        return None
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in exchange_id)[:60]
    path = folder / f"live-exchange-{safe}.json"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(config, file)
    os.chmod(path, 0o600)  # a file made earlier with wider rights
    return path


@dataclass(frozen=True)
class Started:
    """A tracker process just started: its id, log and command line."""

    pid: int
    log: Path
    argv: list[str]
    exit_code: int | None = None
    """Its exit code when it ended at once (bad settings, an unknown symbol), else None."""
    last_lines: str = ""


def start_tracker(selection: Selection, experiment: ExperimentSettings) -> Started:
    """Start a detached tracker (see the module docs) and return it.

    Raises
    ------
    ConfigurationError
        For settings a model refuses (checked here, before anything starts).
    """
    experiment.build_models()  # bad settings are refused here, in one line
    ledger = ledger_path()
    models = list(dict.fromkeys(["naive", *experiment.models]))
    if ledger.is_file():
        with Ledger(ledger) as opened:
            trackers = opened.trackers(selection.exchange, selection.symbol, selection.timeframe)
        for row in trackers.to_dict(orient="records"):
            if row["state"] == "running" and sorted(row["models"]) == sorted(models):
                raise ConfigurationError(
                    f"A tracker of {', '.join(models)} already runs for this series (process "
                    f"{row['pid']} on {row['host']}): stop it first, or pick other models."
                )
    ledger.parent.mkdir(parents=True, exist_ok=True)
    argv = tracker_command(
        selection,
        experiment,
        ledger=ledger,
        cache=cache_dir(),
        config_file=_config_file(selection.exchange, ledger.parent),
    )
    log = log_path(selection, ledger)
    with open(log, "ab") as output:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        code = process.wait(timeout=1.5)
    except subprocess.TimeoutExpired:
        return Started(process.pid, log, argv)
    return Started(process.pid, log, argv, code, _tail(log))


def _tail(log: Path, lines: int = 3) -> str:
    try:
        found = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return " ".join(found[-lines:])


def stoppable(tracker: Mapping[str, Any]) -> bool:
    """True for a tracker this page can stop: running, waiting for candles, on this machine."""
    return (
        tracker.get("state") == "running"
        and tracker.get("mode") == "forever"
        and tracker.get("host") == socket.gethostname()
    )


def stop_tracker(tracker: Mapping[str, Any]) -> str:
    """Ask a tracker to stop (SIGTERM); what happened, in one line."""
    pid = int(tracker["pid"])
    if not stoppable(tracker):
        return "Only a running tracker on this machine can be stopped here."
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        if cmdline.parent.parent.is_dir() and Path("/proc/self").exists():
            words = cmdline.read_bytes().split(b"\0")
            if b"forecasting" not in words or b"live" not in words:
                return f"Process {pid} is no longer the tracker: it has stopped already."
        os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, FileNotFoundError):
        return f"Process {pid} is gone: the tracker has stopped already."
    except PermissionError:
        return f"Process {pid} belongs to another user: stop it there."
    return (
        f"Asked the tracker (process {pid}) to stop: it finishes its current write and "
        "marks itself stopped."
    )


# --- reading the ledger ---------------------------------------------------------------------


@dataclass
class LiveView:
    """What the ledger holds for one series, read at one moment."""

    counts: pd.DataFrame
    """Per model: forecasts ``waiting``, ``scored``, ``missing``, and ``next target``."""
    trackers: pd.DataFrame
    metrics: pd.DataFrame
    verdict: dict[str, Verdict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    missing: pd.DataFrame = field(default_factory=pd.DataFrame)
    late: pd.DataFrame = field(default_factory=pd.DataFrame)
    next_target: pd.Timestamp | None = None
    """Open time of the earliest candle a waiting forecast targets."""
    next_close: pd.Timestamp | None = None
    """When that candle closes: the next forecasts are scored after it."""

    @property
    def forecasts(self) -> int:
        states = [c for c in ("waiting", "scored", "missing", "late") if c in self.counts]
        return int(self.counts[states].to_numpy().sum())

    @property
    def scored(self) -> int:
        return int(self.counts["scored"].sum()) if len(self.counts) else 0


def _stamp(ms: Any) -> pd.Timestamp | None:
    if ms is None or (isinstance(ms, float) and math.isnan(ms)) or pd.isna(ms):
        return None
    return pd.Timestamp(int(ms), unit="ms", tz="UTC")


def _tracker_table(frame: pd.DataFrame) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "state": frame["state"],
            "mode": frame["mode"],
            "models": [", ".join(models) for models in frame["models"]],
            "started": [_stamp(ms) for ms in frame["started_at_ms"]],
            "last round": [_stamp(ms) for ms in frame["last_round_at_ms"]],
            "last error": frame["last_error"].fillna(""),
            "host": frame["host"],
            "pid": frame["pid"],
            "id": frame["id"],
        }
    )
    return table.reset_index(drop=True)


def read(selection: Selection, *, loss: str, path: Path | None = None) -> LiveView | None:
    """The ledger's record of the selection's series; ``None`` when there is no ledger.

    The track record is scored by the code Compare uses (``score``, ``verdicts``) on the
    ledger's scored forecasts as a backtest (:meth:`Ledger.backtest`).

    Raises
    ------
    ForecastingError
        When the file is not a ledger, or its forecasts cannot be scored.
    """
    path = ledger_path() if path is None else path
    if not path.is_file():
        return None
    series = (selection.exchange, selection.symbol, selection.timeframe)
    with Ledger(path) as ledger:
        counts = ledger.counts(*series)
        waiting = ledger.waiting(*series)
        trackers = ledger.trackers(*series)
        missing = ledger.missing(*series)
        late = ledger.check(exchange=series[0], symbol=series[1], timeframe=series[2])
        backtest = ledger.backtest(*series) if counts["scored"].sum() else None
    next_target = waiting.groupby("model")["target_ms"].min()
    counts["next target"] = [_stamp(next_target.get(model)) for model in counts.index]
    first = _stamp(waiting["target_ms"].min()) if len(waiting) else None
    metrics, verdict, notes = pd.DataFrame(), {}, []
    if backtest is not None and len(backtest.forecasts):
        metrics = score(backtest)
        verdict = verdicts(backtest, loss=loss)
        notes = [f"{model}: {note}" for model, found in backtest.notes.items() for note in found]
    return LiveView(
        counts=counts,
        trackers=_tracker_table(trackers),
        metrics=metrics,
        verdict=verdict,
        notes=notes,
        missing=missing,
        late=_late_table(late),
        next_target=first,
        next_close=None
        if first is None
        else first + pd.Timedelta(seconds=timeframe_seconds(selection.timeframe)),
    )


def ledger_series(path: Path | None = None) -> pd.DataFrame:
    """Every series the ledger holds, with its models and forecasts waiting, scored,
    missing and late (written past the timing check's tolerance: never scored); empty
    when there is no ledger."""
    path = ledger_path() if path is None else path
    states = ["waiting", "scored", "missing", "late"]
    columns = ["exchange", "symbol", "timeframe", "models", *states]
    if not path.is_file():
        return pd.DataFrame(columns=columns)
    with Ledger(path) as ledger:
        rows = ledger.forecasts()
        keys = ["exchange", "symbol", "timeframe"]
        table = []
        for series, group in rows.groupby(keys, sort=True) if len(rows) else ():
            counts = ledger.counts(*series).reindex(columns=states, fill_value=0)
            models = ", ".join(dict.fromkeys(group["model"]))
            table.append([*series, models, *(int(counts[c].sum()) for c in states)])
    return pd.DataFrame(table, columns=columns)


def now() -> pd.Timestamp:
    """The time now, in UTC."""
    return pd.Timestamp.now(tz="UTC")


def _late_table(late: pd.DataFrame) -> pd.DataFrame:
    """The timing check's rows for the reader: times, not epoch milliseconds."""
    return pd.DataFrame(
        {
            "model": late["model"],
            "origin": [_stamp(ms) for ms in late["origin_ms"]],
            "target": [_stamp(ms) for ms in late["target_ms"]],
            "step": late["step"],
            "written": [_stamp(ms) for ms in late["made_at_ms"]],
            "problem": late["problem"],
        }
    ).reset_index(drop=True)


def format_time(stamp: pd.Timestamp | None) -> str:
    """A time for the reader: ``2024-01-01 13:00 UTC``."""
    return "—" if stamp is None else f"{stamp:%Y-%m-%d %H:%M} UTC"


def command_text(selection: Selection, experiment: ExperimentSettings) -> str:
    """The tracker's command line to run in a terminal (exchange settings left out: they
    may hold keys; add ``--exchange-config`` where the exchange needs them)."""
    return shlex.join(
        tracker_command(selection, experiment, ledger=ledger_path(), cache=cache_dir())
    )
