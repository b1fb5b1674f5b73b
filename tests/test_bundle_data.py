"""The candles an experiment bundle carries: written exactly, read back bounded and checked.

A bundle reproduces its experiment with no network and no original file: the candles it
carries must come back bit for bit (their SHA-256 is the one ``data.json`` records), and
an upload is hostile, so every way the candles can be wrong or too large ends in one
:class:`DataFormatError` line.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting import bundle
from forecasting.bundle import (
    CANDLES_ENTRY,
    DATA_ENTRY,
    SETTINGS_ENTRY,
    app_settings,
    experiment_bundle,
    read_bundle_data,
    read_bundle_experiment,
    read_bundle_settings,
)
from forecasting.data.quality import dropped_nonpositive, with_nonpositive
from forecasting.errors import DataFormatError
from forecasting.evaluation import BacktestSettings
from forecasting.experiment import ExperimentSettings, data_hash, dumps, run_experiment
from tests.factories import random_walk_candles
from ui import sharing

FAST = ExperimentSettings(
    models=("naive", "drift", "seasonal_naive"),
    backtest=BacktestSettings(horizon=3, folds=2, test_size=24),
)
SELECTION = {
    "source": "csv",
    "file": "prices.csv",
    "format": "generic",
    "timeframe": "1d",
    "start": dt.date(2022, 1, 3),
    "end": dt.date(2022, 7, 21),
    "fill_gaps": False,
}


def _result(candles: pd.DataFrame, filled: pd.DatetimeIndex | None = None):
    return run_experiment(
        candles, FAST, source={"source": "csv", "file": "prices.csv"}, filled=filled
    )


def _entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _rezip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _parquet(table: pa.Table, **kwargs) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **kwargs)
    return buffer.getvalue()


def _one_line_refusal(data: bytes, *phrases: str) -> str:
    with pytest.raises(DataFormatError) as caught:
        read_bundle_data(data)
    message = str(caught.value)
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message
    return message


def test_the_bundle_carries_the_candles_and_the_selection() -> None:
    candles = random_walk_candles(200, seed=3)
    result = _result(candles)
    data = experiment_bundle(result, selection=SELECTION, read_notes=["Read as generic."])
    entries = _entries(data)
    assert CANDLES_ENTRY in entries
    record = json.loads(entries[DATA_ENTRY])
    assert record["sha256"] == data_hash(candles) == result.data["sha256"]
    assert record["selection"] == {**SELECTION, "start": "2022-01-03", "end": "2022-07-21"}
    assert record["candles_file"] == CANDLES_ENTRY
    restored = read_bundle_data(data)
    assert restored is not None
    pd.testing.assert_frame_equal(restored.candles, candles)
    assert data_hash(restored.candles) == record["sha256"]
    assert restored.source == {"source": "csv", "file": "prices.csv"}
    assert restored.read_notes == ("Read as generic.",)
    assert restored.describe() == "200 candles from 2022-01-03 to 2022-07-21"
    assert len(restored.filled) == 0
    # Without the app's own settings file, one is written for the app to restore.
    assert read_bundle_settings(data) == app_settings(FAST, SELECTION)
    assert read_bundle_settings(data)["source"] == "csv"


def test_the_rerun_from_the_bundle_alone_is_bit_identical() -> None:
    candles = random_walk_candles(200, seed=5)
    with_nonpositive(candles, [pd.Timestamp("2021-12-30", tz="UTC")])  # dropped at load
    filled = candles.index[[50, 51, 120]]
    result = _result(candles, filled)
    data = experiment_bundle(result, selection=SELECTION)
    restored = read_bundle_data(data)
    settings = read_bundle_experiment(data)
    rerun = run_experiment(
        restored.candles, settings, source=restored.source, filled=restored.filled
    )
    assert dumps(rerun.to_json()) == dumps(result.to_json())
    assert list(dropped_nonpositive(restored.candles)) == [pd.Timestamp("2021-12-30", tz="UTC")]
    assert list(restored.filled) == list(filled)


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])  # every unit pandas holds
def test_the_time_unit_survives_so_the_hash_does(unit: str) -> None:
    candles = random_walk_candles(60, seed=1)
    candles.index = candles.index.as_unit(unit)
    restored = read_bundle_data(experiment_bundle(_result(candles)))
    assert restored.candles.index.unit == unit
    assert data_hash(restored.candles) == data_hash(candles)


@st.composite
def candle_frames(draw):
    n = draw(st.integers(min_value=40, max_value=120))
    unit = draw(st.sampled_from(["s", "ms", "us", "ns"]))
    step = draw(st.sampled_from(["1min", "1h", "1D"]))
    start = pd.Timestamp("2015-01-01", tz="UTC") + pd.Timedelta(
        minutes=draw(st.integers(min_value=0, max_value=10**6))
    )
    values = draw(
        st.lists(
            st.floats(min_value=1e-9, max_value=1e300, allow_nan=False, allow_infinity=False),
            min_size=n * 5,
            max_size=n * 5,
        )
    )
    index = pd.date_range(start, periods=n, freq=step, name="timestamp").as_unit(unit)
    frame = pd.DataFrame(
        np.array(values).reshape(n, 5), index=index, columns=list(bundle.PRICE_COLUMNS)
    )
    marks = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return frame, index[np.array(marks)]


@given(candle_frames())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_candles_come_back_bit_for_bit(drawn) -> None:
    """Whatever the values (down to a few ulps, up to near the largest float), the time
    unit and the filled marks, the candles read back hash to the recorded SHA-256."""
    candles, filled = drawn
    raw = bundle._candles_parquet(candles, filled, data_hash(candles))
    back, back_filled = bundle._candles_from_parquet(raw, candles.index.unit)
    assert data_hash(back) == data_hash(candles)
    assert back.to_numpy().tobytes() == candles.to_numpy().tobytes()
    assert list(back_filled) == list(filled)


def test_changed_candles_are_refused_against_their_sha256() -> None:
    candles = random_walk_candles(100, seed=2)
    entries = _entries(experiment_bundle(_result(candles)))
    changed = candles.copy()
    changed.iloc[40, 3] += 0.01  # one close, one cent
    entries[CANDLES_ENTRY] = bundle._candles_parquet(changed, None, None)
    _one_line_refusal(_rezip(entries), "SHA-256", "not used")


def test_a_bundle_without_candles_reads_as_none() -> None:
    old = _rezip({SETTINGS_ENTRY: b"{}", "settings.json": b"{}", DATA_ENTRY: b'{"sha256": "x"}'})
    assert read_bundle_data(old) is None


# Entries the reader refuses, each with the words of its refusal.
def _candle_cases() -> dict[str, tuple[dict[str, bytes | None], tuple[str, ...]]]:
    candles = random_walk_candles(50, seed=4)
    good = bundle._candles_parquet(candles, None, None)
    table = pq.read_table(io.BytesIO(good))
    return {
        # the candles, but no record of their hash
        "no data.json": ({DATA_ENTRY: None}, ("no data.json",)),
        # data.json names candles that are not there
        "candles missing": ({CANDLES_ENTRY: None}, ("missing",)),
        # not a Parquet file at all
        "garbage": ({CANDLES_ENTRY: b"PAR1 not really"}, ("cannot be read",)),
        # compressed inside: a small file could inflate without bound
        "zstd inside": (
            {CANDLES_ENTRY: _parquet(table, compression="zstd")},
            ("compressed inside",),
        ),
        # a text column: variable width, not the app's layout
        "text column": (
            {
                CANDLES_ENTRY: _parquet(
                    table.append_column("note", pa.array(["x"] * 50)), compression="none"
                )
            },
            ("not laid out",),
        ),
        # prices as text
        "prices as text": (
            {
                CANDLES_ENTRY: _parquet(
                    table.set_column(4, "close", pa.array([str(v) for v in candles["close"]])),
                    compression="none",
                )
            },
            ("not laid out",),
        ),
        # times without a time zone
        "naive times": (
            {
                CANDLES_ENTRY: _parquet(
                    table.set_column(0, "timestamp", pa.array(candles.index.tz_localize(None))),
                    compression="none",
                )
            },
            ("not laid out",),
        ),
        # an empty close
        "null price": (
            {
                CANDLES_ENTRY: _parquet(
                    table.set_column(4, "close", pa.array([None] * 50, type=pa.float64())),
                    compression="none",
                )
            },
            ("empty cells",),
        ),
        # the hash is not a SHA-256
        "bad hash": (
            {DATA_ENTRY: b'{"sha256": "abc", "candles_file": "candles.parquet"}'},
            ("SHA-256",),
        ),
        # data.json as a list
        "data.json a list": ({DATA_ENTRY: b"[]"}, ("JSON list",)),
        # dropped open times that are not times
        "bad nonpositive": (
            {DATA_ENTRY: "patch:nonpositive_at"},
            ("not as this app writes",),
        ),
    }


CASES = _candle_cases()


@pytest.mark.parametrize("case", list(CASES))
def test_wrong_candles_are_refused_in_one_line(case: str) -> None:
    candles = random_walk_candles(50, seed=4)
    entries: dict[str, bytes | None] = dict(_entries(experiment_bundle(_result(candles))))
    changes, phrases = CASES[case]
    for name, content in changes.items():
        if content == "patch:nonpositive_at":
            record = json.loads(entries[DATA_ENTRY])
            record["nonpositive_at"] = ["yesterday"]
            content = json.dumps(record).encode()
        entries[name] = content
    _one_line_refusal(_rezip({k: v for k, v in entries.items() if v is not None}), *phrases)


def test_more_candles_than_the_limit_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    data = experiment_bundle(_result(random_walk_candles(80, seed=6)))
    monkeypatch.setattr(bundle, "MAX_BUNDLE_CANDLES", 79)
    _one_line_refusal(data, "more than 79 candles")


def test_a_candle_entry_that_inflates_past_its_limit_is_abandoned(monkeypatch) -> None:
    """A zip bomb in place of the candles: at most the limit is ever inflated."""
    monkeypatch.setattr(bundle, "MAX_CANDLES_BYTES", 1 << 20)
    entries = _entries(experiment_bundle(_result(random_walk_candles(50, seed=7))))
    entries[CANDLES_ENTRY] = b"\0" * (8 << 20)
    _one_line_refusal(_rezip(entries), "candles.parquet is larger than 1024 KB")


def test_the_limit_holds_half_a_million_candles() -> None:
    """The entry limit fits what the app fetches and more: 500,000 candles."""
    n = 500_000
    candles = pd.DataFrame(
        np.random.default_rng(0).uniform(1, 2, (n, 5)),
        index=pd.date_range("2000-01-01", periods=n, freq="1min", tz="UTC", name="timestamp"),
        columns=list(bundle.PRICE_COLUMNS),
    )
    assert len(bundle._candles_parquet(candles, None, None)) < bundle.MAX_CANDLES_BYTES
    assert n <= bundle.MAX_BUNDLE_CANDLES


def test_app_settings_of_an_experiment_are_all_valid_app_settings() -> None:
    """A bundle written outside the app (the command line) restores in the app: every
    setting it names is one the app accepts, with the experiment's values."""
    settings = ExperimentSettings(
        models=("naive", "drift", "lstm", "prophet"),
        model_settings={
            "lstm": {"lookback": 10, "units": 8, "epochs": 2, "features": "rsi:10,log_return"},
            "prophet": {"weekly_seasonality": False},
        },
        backtest=BacktestSettings(horizon=4, folds=2, test_size=30, stride=2, window=60),
        seed=7,
        loss="squared",
        seeds=2,
    )
    document = app_settings(settings, SELECTION)
    values, refused = sharing.parse_all(document)
    assert refused == []
    assert (values["lstm.units"], values["lstm.lookback"]) == (8, 10)
    assert (values["horizon"], values["seed"], values["compare.seeds"]) == (4, 7, 2)
    assert values["compare.models"] == ["naive", "drift", "lstm", "prophet"]
    assert (values["compare.window"], values["compare.loss"]) == (60, "squared")
    assert values["prophet.weekly"] is False
    assert values["features.kinds"] == ["rsi", "log_return"]
    assert values["features.rsi.window"] == 10
    assert (values["source"], values["start"]) == ("csv", dt.date(2022, 1, 3))


def test_settings_the_app_has_no_name_for_are_named_not_dropped() -> None:
    settings = ExperimentSettings(
        models=("naive", "moving_average"),
        model_settings={"moving_average": {"window": 3}},
        backtest=BacktestSettings(horizon=2),
        seeds=(42, 7),
    )
    values, refused = sharing.parse_all(app_settings(settings))
    assert any(r.startswith("moving_average.window=3") for r in refused)
    assert any(r.startswith("compare.seeds=42,7") for r in refused)
    assert values["compare.models"] == ["naive", "moving_average"]
