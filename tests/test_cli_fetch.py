"""``python -m forecasting fetch`` as scripts run it: a real subprocess against the fake Binance.

Failures must print exactly one line on stderr, never a traceback, and exit non-zero.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from forecasting.cli import main
from forecasting.errors import NetworkUnreachable

ROOT = Path(__file__).resolve().parents[1]
SYMBOL = "BTC/USDT"
# A six-hour outage in the served candles: the CSV must keep the hole, never fill it.
HOLE = pd.date_range("2024-03-30T04:00Z", periods=6, freq="h").as_unit("ms")
SINCE, UNTIL = "2024-03-01T00:00:00Z", "2024-04-15T00:00:00Z"


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forecasting", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _fetch_args(fake, tmp_path: Path, **changes: str | None) -> list[str]:
    flags: dict[str, str | None] = {
        "--exchange": "binance",
        "--symbol": SYMBOL,
        "--timeframe": "1h",
        "--since": SINCE,
        "--until": UNTIL,
        "--exchange-config": json.dumps(fake.ccxt_config()),
        "--cache-dir": str(tmp_path / "cache"),
        "--out": str(tmp_path / "x.csv"),
    }
    flags.update(changes)
    args = ["fetch"]
    for flag, value in flags.items():
        if value is not None:
            args += [flag, value]
    return args


@pytest.fixture
def served(hourly_candles) -> pd.DataFrame:
    """1200 hourly candles from 2024-03-01, without the ``HOLE``."""
    return hourly_candles(1200, "2024-03-01").drop(HOLE)


@pytest.fixture
def fake(fake_binance, served):
    """The fake exchange serving ``served`` as BTC/USDT 1h."""
    fake_binance.set_candles(SYMBOL, "1h", served)
    return fake_binance


def test_fetch_writes_the_served_candles_as_csv(fake, served, tmp_path):
    result = _run(*_fetch_args(fake, tmp_path))

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    with open(tmp_path / "x.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["timestamp", "open", "high", "low", "close", "volume"]
    expected = served[(served.index >= SINCE) & (served.index < UNTIL)]
    assert len(rows) - 1 == len(expected)
    assert [row[0] for row in rows[1:]] == [
        stamp.strftime("%Y-%m-%dT%H:%M:%SZ") for stamp in expected.index
    ]
    values = [[float(value) for value in row[1:]] for row in rows[1:]]
    assert values == expected.to_numpy().tolist()  # exact, every digit survived
    written = {pd.Timestamp(row[0]) for row in rows[1:]}
    assert written.isdisjoint(HOLE)  # the outage is still a hole
    assert HOLE[0] - pd.Timedelta(hours=1) in written
    assert HOLE[-1] + pd.Timedelta(hours=1) in written


def test_second_run_is_served_from_the_cache(fake, tmp_path):
    assert _run(*_fetch_args(fake, tmp_path)).returncode == 0
    first = (tmp_path / "x.csv").read_bytes()
    fake.clear_requests()

    # The same settings read from a file (@file.json) name the same cache entry.
    config_file = tmp_path / "binance.json"
    config_file.write_text(json.dumps(fake.ccxt_config()), encoding="utf-8")
    changes = {"--out": str(tmp_path / "y.csv"), "--exchange-config": f"@{config_file}"}
    again = _run(*_fetch_args(fake, tmp_path, **changes))

    assert again.returncode == 0, again.stderr
    assert (tmp_path / "y.csv").read_bytes() == first
    assert fake.requests == []


def _assert_one_line_failure(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for phrase in phrases:
        assert phrase in lines[0]


@pytest.mark.parametrize(
    ("changes", "phrases"),
    [
        # a symbol the exchange does not list: suggestions, no retry
        ({"--symbol": "BTC/USDX"}, ["does not list BTC/USDX", "Did you mean BTC/USDT"]),
        # a timeframe Binance does not offer
        ({"--timeframe": "7h"}, ["does not offer the 7h timeframe", "1h"]),
        # an exchange ccxt does not know
        ({"--exchange": "binanse"}, ["not an exchange ccxt supports", "Did you mean binance"]),
        # JSON that is not JSON
        ({"--exchange-config": "{apiKey: 1"}, ["--exchange-config is not valid JSON"]),
        # JSON that is not an object
        ({"--exchange-config": "[1, 2]"}, ["must be a JSON object"]),
        # a start that is not a date
        ({"--since": "last tuesday"}, ["--since 'last tuesday' is not a date"]),
        # a reversed range
        ({"--since": UNTIL, "--until": SINCE}, ["must be before the end"]),
        # a required flag left out: argparse's usage error, still one line
        ({"--out": None}, ["--out", "--help"]),
        # a config file that is not there
        ({"--exchange-config": "@/nonexistent/binance.json"}, ["No such file"]),
        # a range without candles
        ({"--since": "2020-01-01", "--until": "2020-02-01"}, ["has no 1h candles"]),
    ],
)
def test_failures_are_one_line_on_stderr(fake, tmp_path, changes, phrases):
    result = _run(*_fetch_args(fake, tmp_path, **changes))
    _assert_one_line_failure(result, *phrases)
    assert not (tmp_path / "x.csv").exists()


def test_geo_block_is_one_line_and_not_retried(fake, tmp_path):
    # Once is enough: a retry would get through and exit 0.
    fake.inject("451", endpoint="exchangeInfo")
    result = _run(*_fetch_args(fake, tmp_path))
    _assert_one_line_failure(result, "HTTP 451", "another exchange")
    assert len(fake.requests) == 1


def test_unwritable_output_is_one_line(fake, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _run(*_fetch_args(fake, tmp_path, **{"--out": str(blocker / "x.csv")}))
    _assert_one_line_failure(result)


def test_help_lists_the_fetch_flags():
    result = _run("fetch", "--help")
    assert result.returncode == 0
    for flag in ("--exchange", "--symbol", "--timeframe", "--since", "--until", "--out"):
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("terminal", "quiet", "expected"),
    [
        # on a terminal the progress line is ended before the error line
        (True, False, "\rfetched 500 of ~1000 candles\nerror: Could not reach binance.\n"),
        # --quiet: the error alone
        (True, True, "error: Could not reach binance.\n"),
        # a pipe or a log file: no progress, the one error line only
        (False, False, "error: Could not reach binance.\n"),
    ],
)
def test_progress_never_shares_the_error_line(
    monkeypatch, capsys, tmp_path, terminal, quiet, expected
):
    def fails_midway(*args, progress=None, **kwargs):
        if progress:
            progress("fetch", 0.5, {"done": 500, "expected": 1000})
        raise NetworkUnreachable("Could not reach\nbinance.")  # a stray newline, too

    monkeypatch.setattr("forecasting.data.load_exchange_candles", fails_midway)
    monkeypatch.setattr("forecasting.cli._is_terminal", lambda: terminal)
    args = ["fetch", "--exchange", "binance", "--symbol", SYMBOL, "--timeframe", "1h"]
    args += ["--out", str(tmp_path / "x.csv")] + (["--quiet"] if quiet else [])

    assert main(args) == 1
    assert capsys.readouterr().err == expected


def test_config_file_that_is_not_text_is_one_line(capsys, tmp_path):
    config_file = tmp_path / "binance.json"
    config_file.write_bytes(b"\xff\xfe\x00binary")
    args = ["fetch", "--exchange", "binance", "--symbol", SYMBOL, "--timeframe", "1h"]
    args += ["--exchange-config", f"@{config_file}", "--out", str(tmp_path / "x.csv")]

    assert main(args) == 2  # a usage error
    assert (
        capsys.readouterr().err
        == f"error: --exchange-config file {config_file} is not UTF-8 text\n"
    )


def test_a_csv_read_with_notes_says_how_on_stderr(tmp_path) -> None:
    """The CryptoDataDownload field file: which volume column was used and that its rows
    were newest first reach the command line's stderr; stdout stays the forecast CSV."""
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "field-cases"
    path = path / "cryptodatadownload_Binance_BTCUSDT_d.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared field cases)")
    done = subprocess.run(
        [sys.executable, "-m", "forecasting", "forecast", "--data", str(path),
         "--model", "naive", "--horizon", "2"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Volume BTC" in done.stderr
    assert all(line.startswith("note: ") for line in done.stderr.splitlines())
    assert done.stdout.splitlines()[0] == "timestamp,mean,lower,upper"
    assert len(done.stdout.splitlines()) == 3


def test_compare_json_carries_how_the_file_was_read() -> None:
    """`compare --json` kept the file's reading notes on stderr only: they are the
    document's `notes` (as for `forecast`), and `data` names the layout and timeframe."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "field-cases"
    path = path / "cryptodatadownload_Binance_BTCUSDT_d.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared field cases)")
    done = subprocess.run(
        [sys.executable, "-m", "forecasting", "compare", "--data", str(path),
         "--models", "naive,drift", "--folds", "2", "--test-size", "10", "--horizon", "2",
         "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert any("Volume BTC" in note for note in document["notes"])
    assert document["data"]["format"] == "CryptoDataDownload"
    assert document["data"]["timeframe"] == "1d"
