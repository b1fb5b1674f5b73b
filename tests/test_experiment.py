"""``run_experiment``, its JSON document (``compare --json``) and the experiment bundle."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
import threading
import zipfile

import pandas as pd
import pytest
from factories import random_walk_candles, sine_trend_candles

from forecasting.budget import estimate_experiment, model_cost
from forecasting.bundle import experiment_bundle
from forecasting.errors import Cancelled, ConfigurationError
from forecasting.evaluation import BacktestSettings, score
from forecasting.experiment import (
    DEFAULT_MODELS,
    ExperimentSettings,
    data_hash,
    dumps,
    parse_models,
    run_experiment,
)

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
BACKTEST = BacktestSettings(horizon=3, folds=2, test_size=20)
BASELINES = ("drift", "seasonal_naive", "moving_average")
# A tiny, quick LSTM (seeded by the experiment's seed).
TINY_LSTM = {"lookback": 10, "units": 8, "epochs": 2}

# Prophet 1.5 calls DataFrame.drop(inplace=True), which pandas 3.1 deprecates: not ours.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.drop:Warning")


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return random_walk_candles(200, seed=9)


@pytest.fixture(scope="module")
def result(candles):
    settings = ExperimentSettings(models=BASELINES, backtest=BACKTEST, seed=7)
    return run_experiment(candles, settings, source={"source": "csv", "file": "btc.csv"})


def test_json_document_sections(result, candles) -> None:
    document = result.to_json()

    assert list(document) == [
        "settings",
        "data",
        "metrics",
        "by_horizon",
        "dm_tests",
        "copy_check",
        "future",
        "verdict",
        "pairs",
        "undefined",
        "notes",
    ]
    # naive is always added, first: every comparison needs it.
    assert list(document["metrics"]) == ["naive", *BASELINES]
    assert document["data"] == {
        "source": "csv",
        "file": "btc.csv",
        "candles": 200,
        "first": "2022-01-03T00:00:00+00:00",
        "last": candles.index[-1].isoformat(),
        "sha256": data_hash(candles),
    }
    assert re.fullmatch(r"[0-9a-f]{64}", document["data"]["sha256"])


def test_json_metrics_per_model(result) -> None:
    document = result.to_json()
    expected = score(result.backtest)

    for model, metrics in document["metrics"].items():
        assert {
            "mae",
            "rmse",
            "mape",
            "smape",
            "mase",
            "directional_accuracy",
            "directional_pvalue",
            "coverage",
            "width",
        } <= set(metrics)
        for name, value in metrics.items():
            wanted = expected.loc[model, name]
            if value is None:
                assert math.isnan(wanted), (model, name)
            else:
                assert value == wanted, (model, name)
        # Counts are whole numbers, not 39.0.
        assert type(metrics["n"]) is int
        assert type(metrics["direction_calls"]) is int
    by_horizon = document["by_horizon"]
    assert list(by_horizon) == ["naive", *BASELINES]
    assert all(list(steps) == ["1", "2", "3"] for steps in by_horizon.values())
    assert by_horizon["drift"]["2"]["mae"] == result.by_horizon.loc[("drift", 2), "mae"]
    assert (
        sum(step["n"] for step in by_horizon["drift"].values()) == document["metrics"]["drift"]["n"]
    )


def test_nan_is_serialised_as_null(result) -> None:
    document = result.to_json()
    text = dumps(document)

    # naive never calls a direction: no directional accuracy, and null, not NaN.
    assert document["metrics"]["naive"]["directional_accuracy"] is None
    assert document["metrics"]["naive"]["directional_pvalue"] is None
    assert document["copy_check"]["naive"]["change_correlation"] is None
    assert "NaN" not in text
    assert "Infinity" not in text
    assert json.loads(text) == document
    assert re.search(r'"directional_accuracy": null', text)


def test_json_dm_tests_copy_check_and_future(result, candles) -> None:
    document = result.to_json()

    pairs = {(row["step"], row["model"], row["against"]) for row in document["dm_tests"]}
    assert pairs == {(step, model, "naive") for step in (1, 2, 3) for model in BASELINES}
    for row in document["dm_tests"]:
        assert row["loss"] == "absolute"  # the verdict's loss, absolute by default
        assert row["verdict"].endswith(" at the 5 % level")
        assert isinstance(row["pvalue"], float)
    assert document["copy_check"]["naive"]["copies_last"] is True
    assert set(document["copy_check"]) == {"naive", *BASELINES}
    # The future: each model refitted on all the data, `horizon` candles after the last.
    expected_times = [
        (candles.index[-1] + pd.Timedelta(days=k)).strftime("%Y-%m-%dT%H:%M:%SZ") for k in (1, 2, 3)
    ]
    assert list(document["future"]) == ["naive", *BASELINES]
    for records in document["future"].values():
        assert [r["timestamp"] for r in records] == expected_times
        assert all(r["lower"] <= r["mean"] <= r["upper"] for r in records)
    last_close = candles["close"].iloc[-1]
    assert [r["mean"] for r in document["future"]["naive"]] == [last_close] * 3


def test_settings_record_every_models_parameters() -> None:
    settings = ExperimentSettings(
        models=("lstm", "prophet", "drift"),
        model_settings={"lstm": {**TINY_LSTM, "horizon": 2}, "drift": {"level": 0.8}},
        backtest=BacktestSettings(horizon=4, folds=2, test_size=20, window=60),
        seed=11,
    )
    recorded = settings.to_dict()

    assert list(recorded["models"]) == ["naive", "lstm", "prophet", "drift"]
    assert recorded["seed"] == 11
    assert recorded["backtest"] == settings.backtest.to_dict()
    lstm = recorded["models"]["lstm"]
    # The experiment's seed, and a horizon long enough for the backtest's.
    assert lstm["seed"] == 11
    assert lstm["horizon"] == 4
    assert lstm["units"] == 8
    assert lstm["epochs"] == 2
    assert recorded["models"]["prophet"]["seed"] == 11
    assert recorded["models"]["prophet"]["horizon"] == 4
    assert recorded["models"]["drift"] == {"level": 0.8}
    json.dumps(recorded)  # JSON-ready as it is


@pytest.mark.parametrize(
    ("model_settings", "phrase"),
    [
        ({"drift": {"speed": 3}}, "speed"),  # a setting the model does not have
        ({"drift": 5}, "Settings for drift must be an object"),  # not an object at all
        ({"drift": [1, 2]}, "Settings for drift must be an object"),  # a list, not an object
    ],
)
def test_bad_model_settings_are_configuration_errors(model_settings, phrase) -> None:
    settings = ExperimentSettings(models=("drift",), model_settings=model_settings)
    with pytest.raises(ConfigurationError, match=phrase):
        settings.build_models()


def test_unknown_models_are_configuration_errors(candles) -> None:
    settings = ExperimentSettings(models=("naive", "arima"), backtest=BACKTEST)
    with pytest.raises(ConfigurationError, match="Unknown model 'arima'"):
        run_experiment(candles, settings)


def test_the_data_hash_follows_every_price(candles) -> None:
    digest = data_hash(candles)
    changed = candles.copy()
    changed.iloc[57, changed.columns.get_loc("close")] += 1e-9

    assert data_hash(candles.copy()) == digest
    assert data_hash(changed) != digest
    moved = candles.copy()
    moved.index = moved.index + pd.Timedelta(hours=1)
    assert data_hash(moved) != digest
    settings = ExperimentSettings(models=("drift",), backtest=BACKTEST)
    assert run_experiment(changed, settings, future=False).data["sha256"] != digest


@pytest.mark.slow
@pytest.mark.parametrize(
    ("models", "model_settings"),
    [
        (("lstm",), {"lstm": TINY_LSTM}),  # tiny LSTM, default features
        (("prophet",), {}),  # Prophet's defaults (its interval is sampled)
    ],
    ids=["lstm", "prophet"],
)
def test_the_same_seed_gives_the_same_json(models, model_settings) -> None:
    candles = sine_trend_candles(200, noise=0.01, seed=2)
    settings = ExperimentSettings(
        models=models, model_settings=model_settings, backtest=BACKTEST, seed=5
    )

    first = dumps(run_experiment(candles, settings).to_json())
    again = dumps(run_experiment(candles, settings).to_json())

    assert first == again
    other = run_experiment(candles, dataclasses.replace(settings, seed=6))
    assert dumps(other.to_json()) != first  # the seed is really used


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_runs_to_one(candles, workers) -> None:
    calls: list[tuple[str, float, dict]] = []
    settings = ExperimentSettings(models=BASELINES, backtest=BACKTEST)
    caller = threading.current_thread()
    threads = set()

    def progress(*args) -> None:
        threads.add(threading.current_thread())
        calls.append(args)

    run_experiment(candles, settings, progress=progress, workers=workers)

    # Reported from the calling thread only, even when the backtest runs on two.
    assert threads == {caller}
    fractions = [fraction for _, fraction, _ in calls]
    models = 1 + len(BASELINES)
    assert len(calls) == BACKTEST.folds * models + models
    assert all(b > a for a, b in zip(fractions, fractions[1:], strict=False))
    # The backtest and the refits on all data share the bar by their estimated cost.
    assert [stage for stage, _, _ in calls] == ["backtest"] * (BACKTEST.folds * models) + [
        "refit"
    ] * models
    built = settings.build_models()
    refits = sum(model_cost(a, m, [], len(candles), 1).seconds for a, m in built.items())
    backtest_share = 1 - refits / estimate_experiment(settings, candles).seconds
    assert fractions[BACKTEST.folds * models - 1] == pytest.approx(backtest_share)
    assert fractions[-1] == pytest.approx(1.0)
    assert calls[-1][2]["message"] == "refit on all data: moving_average"

    without: list[float] = []
    quick = run_experiment(
        candles, settings, progress=lambda _s, f, _d: without.append(f), future=False
    )
    assert quick.future == {}
    assert quick.to_json()["future"] == {}
    assert len(without) == BACKTEST.folds * models
    assert without[-1] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "stop_after",
    [
        0.0,  # before anything ran
        0.5,  # half-way through the backtest
        0.9,  # after the backtest, during the refit on all the data
    ],
)
def test_should_stop_cancels_the_experiment(candles, stop_after) -> None:
    seen: list[float] = [0.0]
    settings = ExperimentSettings(models=BASELINES, backtest=BACKTEST)

    with pytest.raises(Cancelled):
        run_experiment(
            candles,
            settings,
            progress=lambda _stage, fraction, _details: seen.append(fraction),
            should_stop=lambda: seen[-1] >= stop_after,
            # One worker: the stop here depends on the progress reported, which worker
            # threads only hand to the calling thread every 0.1 s.
            workers=1,
        )
    # Nothing was reported after the stop.
    assert seen[-1] < stop_after + 0.25
    assert seen[-1] < 1.0


def test_cancel_stops_the_worker_threads_too(candles) -> None:
    seen: list[float] = [0.0]
    settings = ExperimentSettings(models=BASELINES, backtest=BACKTEST)
    stopped = threading.Event()

    def should_stop() -> bool:
        if seen[-1] > 0:
            stopped.set()
        return stopped.is_set()

    with pytest.raises(Cancelled):
        run_experiment(
            candles,
            settings,
            progress=lambda _stage, fraction, _details: seen.append(fraction),
            should_stop=should_stop,
            workers=2,
        )
    assert seen[-1] < 1.0
    # No worker is left running after the experiment returns.
    assert not [t for t in threading.enumerate() if t.name.startswith("ThreadPoolExecutor")]


def test_forecasts_table_for_csv(result, candles) -> None:
    table = result.forecasts_table()

    assert list(table.columns[:9]) == [
        "fold",
        "cutoff",
        "origin",
        "timestamp",
        "model",
        "y",
        "yhat",
        "lower",
        "upper",
    ]
    for column in ("cutoff", "origin", "timestamp"):
        assert table[column].map(lambda s: bool(ISO_Z.match(s))).all()
    first_cutoff = candles.index[len(candles) - BACKTEST.test_size - 1]
    assert table.loc[table["fold"] == 1, "cutoff"].unique().tolist() == [
        first_cutoff.strftime("%Y-%m-%dT%H:%M:%SZ")
    ]
    # The backtest's own rows are left as they were (timestamps, not text).
    assert isinstance(result.backtest.forecasts["timestamp"].iloc[0], pd.Timestamp)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, DEFAULT_MODELS),  # nothing given: every model
        ("naive,prophet,lstm", ("naive", "prophet", "lstm")),  # in the order given
        (" drift , naive ,, drift ", ("drift", "naive")),  # spaces, blanks and repeats
        (["lstm", "lstm", " drift"], ("lstm", "drift")),  # a list works too
    ],
)
def test_parse_models(text, expected) -> None:
    assert parse_models(text) == expected


def test_bundle_holds_the_same_numbers(result) -> None:
    data = experiment_bundle(result)
    document = result.to_json()

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert json.loads(archive.read("settings.json")) == document["settings"]
        recorded = json.loads(archive.read("data.json"))
        # The experiment's data record, and beside it how to read the candles it carries.
        assert {key: recorded[key] for key in document["data"]} == document["data"]
        assert recorded["candles_file"] == "candles.parquet"
        metrics = pd.read_csv(io.BytesIO(archive.read("metrics.csv")), index_col="model")
        forecasts = pd.read_csv(io.BytesIO(archive.read("forecasts.csv")))
        dm = pd.read_csv(io.BytesIO(archive.read("dm_tests.csv")))
        future = pd.read_csv(io.BytesIO(archive.read("future.csv")))
        copy = pd.read_csv(io.BytesIO(archive.read("copy_check.csv")), index_col="model")
    pd.testing.assert_frame_equal(metrics, result.metrics, check_dtype=False)
    pd.testing.assert_frame_equal(forecasts, result.forecasts_table(), check_dtype=False)
    assert dm["verdict"].tolist() == result.dm_tests["verdict"].tolist()
    assert copy["copies_last"].tolist() == result.copy["copies_last"].tolist()
    assert len(future) == sum(len(f.mean) for f in result.future.values())


def test_bundle_of_a_naive_only_experiment_keeps_its_headers(candles) -> None:
    result = run_experiment(candles, ExperimentSettings(models=("naive",), backtest=BACKTEST))
    assert result.dm_tests.empty
    with zipfile.ZipFile(io.BytesIO(experiment_bundle(result))) as archive:
        header = archive.read("dm_tests.csv").decode().splitlines()[0]
    assert header.startswith("step,model,against,statistic,pvalue")
    assert result.to_json()["dm_tests"] == []


def test_seeds_without_a_seeded_model_are_said_to_do_nothing(candles) -> None:
    settings = ExperimentSettings(models=BASELINES, backtest=BACKTEST, seeds=3)
    found = run_experiment(candles, settings, future=False)
    assert (
        "3 seeds were asked for, but no model run depends on its seed (only the LSTM does): "
        "each ran once." in found.notes
    )
    assert all(v.seeds == 1 for v in found.verdict.values())
