"""``python -m forecasting live`` and ``ledger``: the live round and its track record from
the command line, against the local exchange (a real ccxt client over HTTP on 127.0.0.1)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from forecasting.cli import main
from forecasting.data.cache import CandleCache
from forecasting.data.exchange import RetryPolicy
from forecasting.experiment import scores_json
from forecasting.ledger import Ledger
from forecasting.live import run_once

SYMBOL = "BTC/USDT"
HOUR = pd.Timedelta(hours=1)
FAST = ("naive", "drift", "seasonal_naive")


def _live(fake, tmp_path, *extra: str) -> list[str]:
    return [
        "live",
        "--exchange",
        "binance",
        "--symbol",
        SYMBOL,
        "--timeframe",
        "1h",
        "--exchange-config",
        json.dumps(fake.ccxt_config()),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--ledger",
        str(tmp_path / "ledger.sqlite3"),
        *extra,
    ]


@pytest.fixture
def served_now(fake_binance, hourly_candles):
    """An hourly series whose newest candle closed a few minutes ago."""
    now = pd.Timestamp.now(tz="UTC")
    if now - now.floor("h") < pd.Timedelta(minutes=3) or now.ceil("h") - now < HOUR / 30:
        pytest.skip("too close to the turn of the hour for a real-clock round")
    start = now.floor("h") - 100 * HOUR
    series = hourly_candles(100, start)
    fake_binance.set_candles(SYMBOL, "1h", series)
    return series


def test_live_once_writes_a_round_and_a_second_writes_nothing(
    fake_binance, served_now, tmp_path, capsys, monkeypatch
) -> None:
    # The round runs 5 s after the newest candle closed: within the timing check's
    # tolerance (15 minutes on 1h), whatever the time of day the test runs at.
    now_ms = int((served_now.index[-1] + HOUR + pd.Timedelta(seconds=5)).value // 1_000_000)
    monkeypatch.setattr("forecasting.ledger._default_clock", lambda: now_ms)
    argv = _live(fake_binance, tmp_path, "--models", "drift", "--horizon", "3", "--history", "48")
    assert main([*argv, "--once", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    # naive is always tracked beside the models asked for
    assert {m: r["status"] for m, r in first["models"].items()} == {
        "naive": "written",
        "drift": "written",
    }
    assert first["origin"] == f"{served_now.index[-1]:%Y-%m-%dT%H:%M:%SZ}"

    assert main([*argv, "--once", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert {r["status"] for r in again["models"].values()} == {"up to date"}

    code = main(["ledger", "--ledger", str(tmp_path / "ledger.sqlite3"), "--json"])
    document = json.loads(capsys.readouterr().out)
    assert code == 0
    assert document["series"] == {"exchange": "binance", "symbol": SYMBOL, "timeframe": "1h"}
    assert document["counts"] == {
        "drift": {"waiting": 3, "scored": 0, "missing": 0, "late": 0},
        "naive": {"waiting": 3, "scored": 0, "missing": 0, "late": 0},
    }
    assert document["waiting"] == 6
    assert document["metrics"] == {}
    assert document["late"] == []
    assert [t["state"] for t in document["trackers"]] == ["running"]


def _scored_ledger(fake, tmp_path, hourly_candles, rounds: int = 12) -> tuple[Ledger, dict]:
    """A ledger of ``rounds`` rounds, one per candle on a moved clock."""
    series = hourly_candles(120, "2024-03-01")
    clock = {"now": int((series.index[60] + HOUR + pd.Timedelta(seconds=5)).value // 1_000_000)}
    ledger = Ledger(tmp_path / "ledger.sqlite3", clock=lambda: clock["now"])
    cache = CandleCache(tmp_path / "cache")
    fake.set_candles(SYMBOL, "1h", series)
    for _ in range(rounds):
        run_once(
            "binance",
            SYMBOL,
            "1h",
            FAST,
            ledger=ledger,
            cache=cache,
            exchange=fake.client,
            horizon=2,
            history=48,
            retry=RetryPolicy(attempts=1, sleep=lambda _: None),
        )
        clock["now"] += 3_600_000
    return ledger, {"series": series}


def test_ledger_json_is_compare_s_metrics_of_the_scored_forecasts(
    fake_binance, tmp_path, hourly_candles, capsys
) -> None:
    ledger, made = _scored_ledger(fake_binance, tmp_path, hourly_candles)
    scored = ledger.scored("binance", SYMBOL, "1h")
    expected = scores_json(ledger.backtest("binance", SYMBOL, "1h"))
    ledger.close()

    code = main(["ledger", "--ledger", str(tmp_path / "ledger.sqlite3"), "--json"])

    document = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(document["metrics"]) == set(FAST)
    close = made["series"]["close"]
    by_ms = pd.Series(close.to_numpy(), index=close.index.as_unit("ms").asi8)
    for model in FAST:
        rows = scored[scored["model"] == model]
        # an independent recomputation: the mean absolute error of the scored forecasts
        hand = np.mean(np.abs(rows["forecast"].to_numpy() - by_ms[rows["target_ms"]].to_numpy()))
        assert document["metrics"][model]["mae"] == pytest.approx(hand, rel=1e-12)
        assert document["metrics"][model]["n"] == len(rows)
    # the keys and values compare uses, by the same code
    assert document["metrics"] == json.loads(json.dumps(expected["metrics"]))
    assert set(document["verdict"]) == {"drift", "seasonal_naive"}
    assert document["verdict"]["drift"]["against"] == "naive"
    assert document["late"] == []
    assert (
        "Timing check: every forecast was written within 15 minutes of its origin candle "
        "closing, before its first target closed." in document["notes"]
    )

    assert main(["ledger", "--ledger", str(tmp_path / "ledger.sqlite3")]) == 0
    out = capsys.readouterr()
    table = pd.read_csv(pd.io.common.StringIO(out.out), index_col="model")
    assert table.loc["drift", "mae"] == pytest.approx(document["metrics"]["drift"]["mae"])
    assert "note: Timing check" in out.err


def test_ledger_refusals_are_one_line(fake_binance, tmp_path, hourly_candles, capsys) -> None:
    missing = tmp_path / "nowhere.sqlite3"
    assert main(["ledger", "--ledger", str(missing), "--json"]) == 2
    assert capsys.readouterr().err == (
        f"error: There is no ledger at {missing}: run `python -m forecasting live ...` first, "
        "or pass --ledger FILE.\n"
    )
    ledger, _ = _scored_ledger(fake_binance, tmp_path, hourly_candles, rounds=1)
    ledger.close()
    path = str(tmp_path / "ledger.sqlite3")
    assert main(["ledger", "--ledger", path, "--symbol", "ETH/BTC"]) == 2
    assert "holds no forecasts for that series" in capsys.readouterr().err
    not_a_ledger = tmp_path / "x.csv"
    not_a_ledger.write_text("timestamp,open\n")
    assert main(["ledger", "--ledger", str(not_a_ledger)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (("--refit-every", "0"), 2, "argument --refit-every: must be a whole number of at least 1"),
        (("--horizon", "0"), 2, "argument --horizon: must be"),
        (("--models", "naive,oracle"), 1, "oracle"),
    ],
)
def test_live_refusals_are_one_line(fake_binance, tmp_path, extra, code, message, capsys) -> None:
    with pytest.raises(SystemExit) if code == 2 else _no_raise() as exit_info:
        result = main([*_live(fake_binance, tmp_path, *extra), "--once"])
    err = capsys.readouterr().err
    got = exit_info.value.code if code == 2 else result
    assert got == code
    assert message in err
    assert err.count("\n") == 1
    assert fake_binance.kline_requests() == []  # refused before asking the exchange


class _no_raise:
    value = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_sigterm_stops_a_running_tracker_and_marks_it_stopped(
    fake_binance, served_now, tmp_path
) -> None:
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    argv = _live(fake_binance, tmp_path, "--horizon", "2", "--history", "48", "--json")
    process = subprocess.Popen(
        [sys.executable, "-m", "forecasting", *argv],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        line = process.stdout.readline()  # the first round's report
        assert json.loads(line)["models"]["naive"]["status"] == "written"
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    finally:
        process.kill()
    assert code == 0, process.stderr.read()
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        trackers = ledger.trackers()
    assert list(trackers["state"]) == ["stopped"]
    assert list(trackers["mode"]) == ["forever"]
