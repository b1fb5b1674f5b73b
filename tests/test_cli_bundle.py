"""``compare --bundle-out`` and ``compare --from-bundle``: an experiment rerun from its
bundle alone, as scripts run it (real subprocesses, from the project root).

The rerun must print the same JSON, byte for byte, as the run that wrote the bundle,
with the original file deleted and the exchange gone.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from factories import random_walk_candles

from forecasting.bundle import CANDLES_ENTRY, SETTINGS_ENTRY, _candles_parquet
from forecasting.data import write_ohlcv_csv
from ui import sharing

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--horizon", "3", "--folds", "2", "--test-size", "24"]
SYMBOL = "BTC/USDT"


def _run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forecasting", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return random_walk_candles(200, seed=21)


@pytest.fixture(scope="module")
def csv_bundle(candles, tmp_path_factory) -> tuple[str, Path]:
    """The JSON of a CSV run with fast models and a tiny LSTM, and its bundle; the CSV
    file is deleted afterwards."""
    folder = tmp_path_factory.mktemp("bundle")
    data = folder / "candles.csv"
    write_ohlcv_csv(candles, data)
    out = folder / "experiment.zip"
    settings = {"lstm": {"lookback": 10, "units": 4, "epochs": 1, "features": ""}}
    result = _run(
        "compare", "--data", str(data), "--models", "naive,drift,seasonal_naive,lstm",
        *FAST, "--seed", "5", "--settings", json.dumps(settings), "--json",
        "--bundle-out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data.unlink()  # the rerun has only the bundle
    return result.stdout, out


def test_the_rerun_from_a_bundle_prints_the_same_json(csv_bundle) -> None:
    original, bundle = csv_bundle
    rerun = _run("compare", "--from-bundle", str(bundle), "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout == original  # bit-identical metrics, verdict, forecasts, notes
    document = json.loads(rerun.stdout)
    assert document["data"]["file"] == "candles.csv"
    assert set(document["metrics"]) == {"naive", "drift", "seasonal_naive", "lstm"}
    assert document["settings"]["models"]["lstm"]["seed"] == 5


def test_the_bundle_holds_the_candles_and_settings_the_app_restores(csv_bundle, candles) -> None:
    _, bundle = csv_bundle
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        assert {CANDLES_ENTRY, SETTINGS_ENTRY, "data.json", "settings.json"} <= names
        assert not any(name.startswith("charts/") for name in names)  # no charts from here
        data = json.loads(archive.read("data.json"))
        app = json.loads(archive.read(SETTINGS_ENTRY))
    assert data["selection"]["source"] == "csv"
    assert data["selection"]["file"] == "candles.csv"
    assert data["selection"]["start"] == f"{candles.index[0]:%Y-%m-%d}"
    assert data["selection"]["end"] == f"{candles.index[-1]:%Y-%m-%d}"
    values, refused = sharing.parse_all(app)
    assert refused == []
    assert values["compare.models"] == ["naive", "drift", "seasonal_naive", "lstm"]
    assert (values["horizon"], values["seed"], values["lstm.units"]) == (3, 5, 4)
    assert values["lstm.use_features"] is False


def test_a_rerun_without_csv_output_prints_the_same_metrics_table(csv_bundle, tmp_path) -> None:
    _, bundle = csv_bundle
    again = tmp_path / "again.zip"
    first = _run("compare", "--from-bundle", str(bundle), "--bundle-out", str(again))
    assert first.returncode == 0, first.stderr
    second = _run("compare", "--from-bundle", str(again))
    assert second.returncode == 0, second.stderr
    assert first.stdout == second.stdout
    assert first.stdout.startswith("model,mae,")


def test_an_exchange_bundle_reruns_with_the_exchange_gone(fake_binance, candles, tmp_path) -> None:
    fake_binance.set_candles(SYMBOL, "1d", candles)
    since = candles.index[0].strftime("%Y-%m-%dT%H:%M:%SZ")
    out = tmp_path / "exchange.zip"
    original = _run(
        "compare", "--exchange", "binance", "--symbol", SYMBOL, "--timeframe", "1d",
        "--since", since, "--exchange-config", json.dumps(fake_binance.ccxt_config()),
        "--cache-dir", str(tmp_path / "cache"), "--models", "naive,drift", *FAST,
        "--json", "--bundle-out", str(out),
    )  # fmt: skip
    assert original.returncode == 0, original.stderr
    fake_binance.stop()
    rerun = _run("compare", "--from-bundle", str(out), "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout == original.stdout
    with zipfile.ZipFile(out) as archive:
        selection = json.loads(archive.read("data.json"))["selection"]
    assert (selection["exchange"], selection["symbol"]) == ("binance", SYMBOL)
    assert selection["since"] == since


def _assert_one_line(result: subprocess.CompletedProcess[str], code: int, *phrases: str) -> None:
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for phrase in phrases:
        assert phrase in lines[0]


@pytest.mark.parametrize(
    ("flags", "phrases"),
    [
        # a data flag: the data come from the bundle
        (["--symbol", "ETH/USDT"], ("takes the data from the bundle", "--symbol")),
        # two, one of them abbreviated as argparse allows
        (["--since", "2020-01-01", "--cache", "/tmp/x"], ("--since, --cache-dir",)),
        # a setting, even at its default value
        (["--horizon", "7"], ("with its own settings", "--horizon")),
        (["--models", "naive", "--seeds", "2"], ("--models, --seeds",)),
        # another source
        (["--data", "x.csv"], ("not allowed with argument --from-bundle",)),
    ],
)
def test_flags_that_conflict_with_the_bundle_are_refused(csv_bundle, flags, phrases) -> None:
    _, bundle = csv_bundle
    result = _run("compare", "--from-bundle", str(bundle), "--json", *flags)
    _assert_one_line(result, 2, *phrases)


def _rewritten(bundle: Path, tmp_path: Path, changes: dict[str, bytes | None]) -> Path:
    with zipfile.ZipFile(bundle) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    entries.update(changes)
    out = tmp_path / "changed.zip"
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            if content is not None:
                archive.writestr(name, content)
    return out


def test_changed_candles_are_refused(csv_bundle, candles, tmp_path) -> None:
    _, bundle = csv_bundle
    changed = candles.copy()
    changed.iloc[10, 0] *= 1.001
    path = _rewritten(bundle, tmp_path, {CANDLES_ENTRY: _candles_parquet(changed, None, None)})
    _assert_one_line(_run("compare", "--from-bundle", str(path), "--json"), 1, "SHA-256")


def test_a_bundle_without_candles_says_so(csv_bundle, tmp_path) -> None:
    _, bundle = csv_bundle
    with zipfile.ZipFile(bundle) as archive:
        record = json.loads(archive.read("data.json"))
    record.pop("candles_file")
    path = _rewritten(
        bundle, tmp_path, {CANDLES_ENTRY: None, "data.json": json.dumps(record).encode()}
    )
    result = _run("compare", "--from-bundle", str(path), "--json")
    _assert_one_line(result, 2, "carries no candles", "--data")


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (b"not a zip", "not an experiment bundle"),  # any file
        (None, "No such file"),  # no file
    ],
)
def test_a_file_that_is_not_a_bundle_is_refused(tmp_path, content, phrase) -> None:
    path = tmp_path / "x.zip"
    if content is not None:
        path.write_bytes(content)
    _assert_one_line(_run("compare", "--from-bundle", str(path)), 1, phrase)


def test_the_help_names_both_flags() -> None:
    result = _run("compare", "--help")
    text = " ".join(result.stdout.split())
    assert "--from-bundle FILE.zip" in text
    assert "--bundle-out FILE.zip" in text
    assert "without its charts" in text
    assert io.StringIO(result.stdout).read()  # printed on stdout
