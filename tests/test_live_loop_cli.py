"""The whole live loop from the command line, on a real series, with a clock that advances.

``python -m forecasting live --once`` runs after each candle of real Binance BTC/USDT 4h
candles (``../shared/data``) closes, against the local exchange (a real ccxt client over
HTTP on 127.0.0.1) serving the series one candle at a time; the ledger's clock is moved
one candle per round. Then the ledger's forecasts and scores are checked against an
independent recomputation from the series, and the loop is run again with every candle
not yet closed at each round served and scaled at random: the forecasts do not change,
so none depends on a candle that closed after it was made.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_exchange import load_shared_csv

from forecasting.cli import main
from forecasting.ledger import Ledger

SYMBOL = "BTC/USDT"
TIMEFRAME = "4h"
CANDLE = pd.Timedelta(hours=4)
CANDLE_MS = 4 * 3_600_000
MODELS = ("naive", "drift")
HORIZON = 3
HISTORY = 48
ROUNDS = 12
# The first round's origin: position FIRST of the window; each round runs LAG after the
# newest candle closed.
FIRST = 60
LAG = pd.Timedelta(seconds=5)


@pytest.fixture(scope="module")
def series() -> pd.DataFrame:
    """The 100 candles before the newest closed one of the real 4h file (no gaps there)."""
    frame = load_shared_csv("binance_BTC-USDT_4h.csv")
    if frame is None:
        pytest.skip("../shared/data/binance_BTC-USDT_4h.csv is absent (set CFL_SHARED_DATA)")
    window = frame.iloc[-101:-1]  # the last row is a partial candle (the data's README)
    window.index = window.index.as_unit("ms")
    assert (np.diff(window.index.asi8) == CANDLE_MS).all()
    return window


def _argv(fake, folder: Path) -> list[str]:
    return [
        "live",
        "--exchange",
        "binance",
        "--symbol",
        SYMBOL,
        "--timeframe",
        TIMEFRAME,
        "--models",
        ",".join(MODELS),
        "--horizon",
        str(HORIZON),
        "--history",
        str(HISTORY),
        "--exchange-config",
        json.dumps(fake.ccxt_config()),
        "--cache-dir",
        str(folder / "cache"),
        "--ledger",
        str(folder / "ledger.sqlite3"),
        "--once",
        "--json",
        "--quiet",
    ]


def _loop(fake, folder: Path, series: pd.DataFrame, monkeypatch, capsys, *, perturb=None):
    """ROUNDS runs of ``live --once``, one per candle; returns each run's JSON report and
    the clock (ms) after the last one."""
    clock = {"now": int((series.index[FIRST] + CANDLE + LAG).value // 1_000_000)}
    # The command line opens the ledger on the machine's clock: this test moves it.
    monkeypatch.setattr("forecasting.ledger._default_clock", lambda: clock["now"])
    rng = None if perturb is None else np.random.default_rng(perturb)
    reports = []
    for _ in range(ROUNDS):
        now = pd.Timestamp(clock["now"], unit="ms", tz="UTC")
        closed = series.index + CANDLE <= now
        if rng is None:
            served = series[closed]  # only what has closed: one more candle each round
        else:
            # Everything, the candles not yet closed (the open one, the future) scaled at
            # random, differently each round.
            served = series.copy()
            factor = rng.uniform(0.5, 1.5, size=(int((~closed).sum()), 1))
            served.loc[~closed] = served.loc[~closed].to_numpy() * factor
        fake.set_candles(SYMBOL, TIMEFRAME, served)
        assert main(_argv(fake, folder)) == 0
        reports.append(json.loads(capsys.readouterr().out))
        clock["now"] += CANDLE_MS
    return reports, clock["now"]


def _by_ms(column: pd.Series) -> pd.Series:
    return pd.Series(column.to_numpy(), index=column.index.as_unit("ms").asi8)


def test_live_once_after_each_candle_scores_honestly_and_never_sees_the_future(
    fake_binance, series, tmp_path, monkeypatch, capsys
) -> None:
    reports, _ = _loop(fake_binance, tmp_path / "a", series, monkeypatch, capsys)
    origins = [series.index[FIRST + k] for k in range(ROUNDS)]
    assert [r["origin"] for r in reports] == [f"{o:%Y-%m-%dT%H:%M:%SZ}" for o in origins]
    assert all(r["models"][m]["status"] == "written" for r in reports for m in MODELS)
    with Ledger(tmp_path / "a" / "ledger.sqlite3") as ledger:
        forecasts = ledger.forecasts()
        scored = ledger.scored()
        counts = ledger.counts()
        late = ledger.check()
        prompt = ledger.check(60_000)
    assert len(forecasts) == ROUNDS * len(MODELS) * HORIZON

    # The forecasts, recomputed from the series: naive is the origin's close; drift adds
    # the slope from the first to the last of the HISTORY candles up to the origin.
    close = _by_ms(series["close"])
    position = {ms: k for k, ms in enumerate(close.index)}
    for row in forecasts.itertuples():
        at = position[row.origin_ms]
        last = close.iloc[at]
        assert row.origin_close == last
        assert row.target_ms == row.origin_ms + row.step * CANDLE_MS
        if row.model == "naive":
            assert row.forecast == last
        else:
            slope = (last - close.iloc[at - HISTORY + 1]) / (HISTORY - 1)
            assert row.forecast == pytest.approx(last + row.step * slope, rel=1e-12)

    # Every forecast whose target closed by the last round is scored with the series'
    # close, and nothing else; none was late.
    newest = origins[-1].value // 1_000_000
    due = forecasts[forecasts["target_ms"] <= newest]
    assert sorted(scored["id"]) == sorted(due["id"])
    actual = close[scored["target_ms"]].to_numpy()
    np.testing.assert_array_equal(scored["actual"], actual)
    np.testing.assert_array_equal(scored["error"], scored["forecast"] - actual)
    assert late.empty
    assert prompt.empty  # each written within a minute of its origin closing
    assert counts["late"].sum() == 0
    capsys.readouterr()
    assert (
        main(["ledger", "--ledger", str(tmp_path / "a" / "ledger.sqlite3"), "--check", "--json"])
        == 0
    )
    checked = json.loads(capsys.readouterr().out)
    assert checked["ok"] is True
    assert checked["late"] == []
    assert checked["forecasts"] == len(forecasts)
    assert counts["scored"].to_dict() == {m: len(due) // len(MODELS) for m in MODELS}

    # `ledger --json`: the metrics equal a recomputation from the series by hand.
    assert main(["ledger", "--ledger", str(tmp_path / "a" / "ledger.sqlite3"), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["late"] == []
    for model in MODELS:
        mine = due[due["model"] == model]
        errors = mine["forecast"].to_numpy() - close[mine["target_ms"]].to_numpy()
        assert document["metrics"][model]["n"] == len(mine)
        assert document["metrics"][model]["mae"] == pytest.approx(
            np.mean(np.abs(errors)), rel=1e-12
        )
        assert document["metrics"][model]["rmse"] == pytest.approx(
            np.sqrt(np.mean(errors**2)), rel=1e-12
        )
        assert document["counts"][model]["late"] == 0
    assert document["verdict"]["drift"]["against"] == "naive"

    # The same loop with every candle after each origin served and scaled at random:
    # the same forecasts and the same scores.
    _loop(fake_binance, tmp_path / "b", series, monkeypatch, capsys, perturb=11)
    with Ledger(tmp_path / "b" / "ledger.sqlite3") as other:
        again, rescored = other.forecasts(), other.scored()
    columns = ["model", "origin_ms", "target_ms", "step", "forecast", "lower", "upper"]
    pd.testing.assert_frame_equal(again[columns], forecasts[columns])
    pd.testing.assert_frame_equal(
        rescored[["model", "target_ms", "actual", "error"]],
        scored[["model", "target_ms", "actual", "error"]],
    )


def test_a_round_run_long_after_its_origin_closed_is_kept_but_never_scored(
    fake_binance, series, tmp_path, monkeypatch, capsys
) -> None:
    # One round 20 minutes after the origin closed (a tracker started mid-candle), then
    # rounds on time until its targets closed.
    origin = series.index[FIRST]
    clock = {"now": int((origin + CANDLE + pd.Timedelta(minutes=20)).value // 1_000_000)}
    monkeypatch.setattr("forecasting.ledger._default_clock", lambda: clock["now"])
    folder = tmp_path / "late"
    for k in range(HORIZON + 1):
        now = pd.Timestamp(clock["now"], unit="ms", tz="UTC")
        fake_binance.set_candles(SYMBOL, TIMEFRAME, series[series.index + CANDLE <= now])
        assert main(_argv(fake_binance, folder)) == 0
        report = json.loads(capsys.readouterr().out)
        if k == 0:
            assert {m: r["status"] for m, r in report["models"].items()} == dict.fromkeys(
                MODELS, "written"
            )
            assert any("counted as late" in n for n in report["models"]["naive"]["notes"])
        clock["now"] = int((series.index[FIRST + k + 1] + CANDLE + LAG).value // 1_000_000)
    assert main(["ledger", "--ledger", str(folder / "ledger.sqlite3"), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    # The first round's forecasts are late: listed, counted late, not in the metrics.
    assert {row["origin"] for row in document["late"]} == {f"{origin:%Y-%m-%dT%H:%M:%SZ}"}
    assert len(document["late"]) == len(MODELS) * HORIZON
    assert {m: c["late"] for m, c in document["counts"].items()} == dict.fromkeys(MODELS, HORIZON)
    with Ledger(folder / "ledger.sqlite3") as ledger:
        scored = ledger.scored()
    assert origin.value // 1_000_000 not in set(scored["origin_ms"])
    for model in MODELS:
        assert document["metrics"][model]["n"] == int((scored["model"] == model).sum()) > 0

    # The check command: exit 1 listing each late forecast; a tolerance of a candle
    # admits the round 20 minutes late, and then exit 0.
    ledger_file = str(folder / "ledger.sqlite3")
    assert main(["ledger", "--ledger", ledger_file, "--check"]) == 1
    captured = capsys.readouterr()
    assert "were not written within 15 minutes" in captured.err
    listed = [line for line in captured.out.splitlines() if line]
    assert len(listed) == len(MODELS) * HORIZON
    assert all(f"origin {origin:%Y-%m-%dT%H:%M:%SZ}" in line for line in listed)
    candle = str(CANDLE_MS)
    assert main(["ledger", "--ledger", ledger_file, "--check", "--tolerance-ms", candle]) == 0
    # A flag naming no series of the ledger, or a tolerance it refuses, is a usage error
    # (2): never a clean ledger (0), never confused with a late forecast (1).
    for wrong in (["--symbol", "ZZZ/USDT"], ["--tolerance-ms", "-5"]):
        assert main(["ledger", "--ledger", ledger_file, "--check", *wrong]) == 2
    too_long = str(CANDLE_MS + 1)
    assert main(["ledger", "--ledger", ledger_file, "--check", "--tolerance-ms", too_long]) == 2
    assert main(["ledger", "--ledger", ledger_file, "--tolerance-ms", too_long]) == 2
    capsys.readouterr()
    assert main(["ledger", "--ledger", ledger_file, "--check", "--json"]) == 1
    checked = json.loads(capsys.readouterr().out)
    assert checked["ok"] is False
    assert len(checked["late"]) == len(MODELS) * HORIZON
