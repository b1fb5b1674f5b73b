"""``python -m forecasting nautilus``: the hand-off from the command line, from data or a
bundle; with --run, NautilusTrader's result beside ours (in its own environment)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from factories import random_walk_candles

from forecasting.cli import main
from forecasting.data import write_ohlcv_csv
from forecasting.nautilus import PROJECT_FILES, engines_python

FLAGS = ["--models", "naive,drift", "--horizon", "3", "--folds", "2", "--test-size", "45"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nautilus") / "candles.csv"
    write_ohlcv_csv(random_walk_candles(200, seed=8), path)
    return path


def test_the_project_is_written_from_data_or_from_a_bundle(data_file, tmp_path, capsys) -> None:
    out = tmp_path / "project"
    argv = ["nautilus", "--data", str(data_file), *FLAGS, "--model", "drift"]
    assert main([*argv, "--out", str(out), "--fee-bps", "5", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in out.iterdir()) == sorted(PROJECT_FILES)
    assert document["project"] == str(out)
    assert "nautilus" not in document  # written, not run
    spec = json.loads((out / "instrument.json").read_text())
    assert document["ours"] == spec["strategy"]["ours"]

    bundle = tmp_path / "experiment.zip"
    assert main(["compare", "--data", str(data_file), *FLAGS, "--bundle-out", str(bundle)]) == 0
    capsys.readouterr()
    again = tmp_path / "again"
    code = main(["nautilus", "--bundle", str(bundle), "--model", "drift", "--out", str(again)])
    assert code == 0
    assert capsys.readouterr().out.startswith(f"wrote {again}: ")
    assert (again / "bars.csv").read_text() == (out / "bars.csv").read_text()


def test_a_model_not_in_the_experiment_is_refused_in_one_line(data_file, tmp_path, capsys):
    argv = ["nautilus", "--data", str(data_file), *FLAGS, "--model", "lstm"]
    assert main([*argv, "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--allow-short"], "a cash account, which cannot go short"),
        (["--entry", "next_open"], 'use entry "close" (--entry close)'),
    ],
)
def test_settings_it_cannot_replay_are_refused_before_the_experiment(
    data_file, tmp_path, capsys, monkeypatch, extra, message
) -> None:
    import forecasting.cli as cli

    def no_experiment(*_args, **_kwargs):
        raise AssertionError("the experiment ran before the refusal")

    monkeypatch.setattr(cli, "_experiment", no_experiment)
    argv = ["nautilus", "--data", str(data_file), *FLAGS, "--model", "drift", *extra]
    assert main([*argv, "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
    assert not (tmp_path / "p").exists()


def test_the_backtests_sizing_is_handed_off(tmp_path, capsys) -> None:
    # --sizing and --fraction reach the project: its strategy is backtest's with them.
    # A rising, noisy series: drift's forecasts rise, so it is long most of the time.
    import numpy as np
    from factories import candles_from_close

    rng = np.random.default_rng(4)
    steps = 0.004 + 0.02 * rng.standard_normal(200)
    data_file = tmp_path / "rising.csv"
    write_ohlcv_csv(candles_from_close(100 * np.exp(np.cumsum(steps)), seed=4), data_file)
    out = tmp_path / "project"
    sizing = ["--sizing", "vol_target", "--vol-target", "0.3", "--fraction", "0.8"]
    sizing += ["--threshold", "0", "--threshold-unit", "bps"]  # drift trades often
    argv = ["nautilus", "--data", str(data_file), *FLAGS, "--model", "drift", *sizing]
    assert main([*argv, "--out", str(out), "--fee-bps", "5", "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)["ours"]
    backtest = ["backtest", "--data", str(data_file), *FLAGS, *sizing, "--fee-bps", "5"]
    assert main([*backtest, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]["drift"]
    assert ours["trades"] == metrics["trades"]
    assert ours["final_equity"] == pytest.approx(1 + metrics["total_return"], rel=1e-12)
    # Volatility-targeted positions: fractions of the 0.8 cap, not just 0 and 0.8.
    positions = pd.read_csv(out / "signals.csv")["position"]
    assert ((positions > 0) & (positions < 0.8 - 1e-9)).any()


@pytest.mark.skipif(
    engines_python() is None,
    reason="no NautilusTrader environment (.venv-engines or $CFL_ENGINES_PYTHON): "
    "`make engines` needs Python 3.12 or 3.13",
)
def test_run_prints_nautilus_beside_ours_with_the_same_trades(data_file, tmp_path, capsys):
    out = tmp_path / "project"
    argv = ["nautilus", "--data", str(data_file), *FLAGS, "--model", "drift", "--out", str(out)]
    assert main([*argv, "--run", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    ours, theirs = document["ours"], document["nautilus"]
    assert theirs["trades"] == ours["trades"]
    # Fees paid out of cash and the order headroom (see tests/test_nautilus.py).
    assert theirs["final_equity"] == pytest.approx(ours["final_equity"], rel=1e-3)

    # Without --json: ours, then NautilusTrader's account and position reports.
    again = tmp_path / "again"
    argv = ["nautilus", "--data", str(data_file), *FLAGS, "--model", "drift", "--out", str(again)]
    assert main([*argv, "--run"]) == 0
    text = capsys.readouterr().out
    assert text.index("ours:") < text.index("nautilus:") < text.index("account (NautilusTrader)")
    assert "positions (NautilusTrader)" in text
    account = pd.read_csv(again / "reports" / "account.csv", index_col=0)
    final = account.groupby("currency", sort=False)["total"].last()
    line = next(t for t in text.splitlines() if t.startswith("account (NautilusTrader)"))
    assert f"{len(account)} balance changes" in line
    for currency, total in final.items():
        assert f"{total:.8f} {currency}" in line
