"""Nested tuning: the search never sees an outer fold's test candles, and the outer
scores are Compare's walk-forward of the chosen settings."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from factories import random_walk_candles, sine_trend_candles

from forecasting.errors import Cancelled, ConfigurationError
from forecasting.evaluation import BacktestSettings, make_folds, walk_forward
from forecasting.evaluation.significance import LOSSES
from forecasting.models import MODELS, make_model
from forecasting.tuning import search_space, tunable_models, tune

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = BacktestSettings(horizon=3, folds=3, test_size=60, stride=2)
PRICES = ["open", "high", "low", "close"]


def candles() -> pd.DataFrame:
    return random_walk_candles(400, seed=3)


def run(data: pd.DataFrame, **kwargs) -> object:
    return tune(data, "moving_average", LAYOUT, **{"trials": 8, "seed": 5, **kwargs})


def fold_loss(frame: pd.DataFrame, fold: int, loss: str = "absolute") -> float:
    rows = frame[frame["fold"] == fold]
    errors = rows["y"].to_numpy(dtype="float64") - rows["yhat"].to_numpy(dtype="float64")
    return float(np.mean(LOSSES[loss](errors)))


def test_changing_every_price_after_a_cutoff_changes_no_choice_before_it():
    data = candles()
    first = run(data)
    rng = np.random.default_rng(0)
    for fold in make_folds(data.index, LAYOUT):
        changed = data.copy()
        # Every price after the cutoff, each candle by its own factor (OHLC stay valid).
        factor = rng.uniform(1.1, 1.4, len(data) - fold.cutoff - 1)
        changed.iloc[fold.cutoff + 1 :, [data.columns.get_loc(c) for c in PRICES]] *= factor[
            :, None
        ]
        again = run(changed)
        for before, after in zip(first.folds[: fold.number], again.folds, strict=False):
            # Folds up to this one searched only candles that did not change.
            assert after.params == before.params
            assert after.inner_score == before.inner_score  # bit for bit
            assert after.inner_naive == before.inner_naive
            assert after.study == before.study
        # ... while this fold's outer score is taken on the changed prices.
        assert again.folds[fold.number - 1].outer_score != first.folds[fold.number - 1].outer_score


def test_the_outer_score_is_an_independent_walk_forward_of_the_choice():
    data = candles()
    result = run(data)
    compare = walk_forward(
        {"naive": make_model("naive"), "untuned": make_model("moving_average")}, data, LAYOUT
    )
    for fold in result.folds:
        chosen = walk_forward({"chosen": make_model("moving_average", **fold.params)}, data, LAYOUT)
        assert fold.outer_score == pytest.approx(fold_loss(chosen.forecasts, fold.fold), rel=1e-12)
        by_model = dict(tuple(compare.forecasts.groupby("model")))
        assert fold.untuned_score == pytest.approx(fold_loss(by_model["untuned"], fold.fold))
        assert fold.naive_score == pytest.approx(fold_loss(by_model["naive"], fold.fold))
        assert fold.gap == pytest.approx(fold.outer_score - fold.inner_score)
    # The tuned, untuned and naive forecasts are on Compare's (origin, target) pairs.
    frame = result.backtest.forecasts
    naive = compare.forecasts[compare.forecasts["model"] == "naive"]
    expected = sorted(zip(naive["origin"], naive["step"], strict=True))
    for name in (result.tuned_name, result.untuned_name, "naive"):
        rows = frame[frame["model"] == name]
        assert sorted(zip(rows["origin"], rows["step"], strict=True)) == expected
    assert result.backtest.pairs == compare.pairs


@pytest.mark.parametrize(
    "name",
    [
        "study.journal",  # Optuna's journal file
        "study.db",  # SQLite
    ],
)
def test_a_stored_study_resumes_with_only_the_new_trials(tmp_path, name):
    data = candles()
    path = tmp_path / name
    run(data, trials=3, study=path)
    resumed = run(data, trials=6, study=path)
    assert [f.new_trials for f in resumed.folds] == [3, 3, 3]
    assert [f.trials for f in resumed.folds] == [6, 6, 6]
    # The same seed draws the same trials whether the study was interrupted or not.
    fresh = run(data, trials=6)
    assert [f.params for f in resumed.folds] == [f.params for f in fresh.folds]
    assert [f.inner_score for f in resumed.folds] == [f.inner_score for f in fresh.folds]
    again = run(data, trials=6, study=path)
    assert [f.new_trials for f in again.folds] == [0, 0, 0]
    assert [f.params for f in again.folds] == [f.params for f in fresh.folds]


def test_the_time_limit_bounds_the_search():
    data = candles()
    started = time.monotonic()
    result = run(data, trials=5000, timeout=1.5)
    elapsed = time.monotonic() - started
    # The search stops at the limit; the outer scoring and naive's backtest come on top.
    assert elapsed < 1.5 + 4.0
    assert all(1 <= f.trials < 5000 for f in result.folds)


def test_cancel_raises_cancelled():
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 20

    with pytest.raises(Cancelled):
        run(candles(), trials=50, should_stop=should_stop)


def test_the_json_holds_each_fold_and_compares_verdicts():
    result = run(candles(), trials=4)
    document = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert set(document) == {"folds", "summary"}
    assert [f["fold"] for f in document["folds"]] == [1, 2, 3]
    for fold, found in zip(document["folds"], result.folds, strict=True):
        assert {"fold", "params", "inner_score", "outer_score", "gap", "gap_ratio"} <= set(fold)
        assert fold["params"] == found.params
        assert fold["outer_score"] == found.outer_score
    summary = document["summary"]
    assert summary["trials"] == 12 == result.trials
    verdict = summary["verdict"]
    assert set(verdict) == {"tuned_vs_untuned", "tuned_vs_naive", "untuned_vs_naive"}
    assert verdict["tuned_vs_untuned"]["against"] == "untuned moving_average"
    assert verdict["tuned_vs_naive"]["against"] == "naive"
    for name, found in result.verdict.items():
        assert verdict[name] == json.loads(json.dumps(found.to_dict(), allow_nan=False))
    assert verdict["tuned_vs_naive"]["reading"] in ("better", "worse", "not different")


@pytest.mark.parametrize("model", tunable_models())
def test_every_suggested_setting_passes_the_models_checks(model):
    import optuna

    space = search_space(model)
    params = MODELS[model]().get_params()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(60):
        trial = study.ask()
        settings = space.settings(space.sample(trial))
        assert set(settings) <= set(params)
        make_model(model, **settings).check_settings()
        study.tell(trial, 0.0)


def test_the_lstm_searches_its_families_where_it_has_them():
    names = [d.name for d in search_space("lstm").dimensions]
    assert ("family" in names) == ("family" in MODELS["lstm"]().get_params())
    assert {"lookback", "units", "layers", "dropout", "learning_rate", "feature_set"} <= set(names)
    prophet = [d.name for d in search_space("prophet").dimensions]
    assert set(prophet) == {
        "changepoint_prior_scale", "seasonality_prior_scale", "seasonality_mode"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("model", "kwargs", "message"),
    [
        ("naive", {}, "Cannot tune 'naive'"),  # nothing to search
        ("moving_average", {"trials": 0}, "trials must be from 1"),
        ("moving_average", {"timeout": -1.0}, "time limit must be a positive"),
        ("moving_average", {"inner_folds": 0}, "inner_folds must be a whole number from 1 to 10"),
    ],
)
def test_bad_requests_are_refused_in_one_line(model, kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        tune(candles(), model, LAYOUT, **kwargs)


def test_importing_forecasting_does_not_import_optuna():
    code = (
        "import sys, forecasting, forecasting.tuning\n"
        "print(any(m == 'optuna' or m.startswith('optuna.') for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.slow
def test_a_tiny_lstm_tuning_scores_its_choice_as_walk_forward_does():
    data = sine_trend_candles(260)
    layout = BacktestSettings(horizon=2, folds=1, test_size=12, stride=4)
    result = tune(
        data,
        "lstm",
        layout,
        trials=2,
        model_settings={"epochs": 1, "patience": 1, "batch_size": 64},
        seed=3,
    )
    (fold,) = result.folds
    assert fold.trials == 2
    chosen = make_model("lstm", **{**result.settings["untuned"], **fold.params})
    again = walk_forward({"lstm": chosen}, data, layout)
    assert fold.outer_score == pytest.approx(fold_loss(again.forecasts, 1), rel=1e-6)


@pytest.mark.slow
def test_a_tiny_prophet_tuning_scores_its_choice_as_walk_forward_does():
    data = sine_trend_candles(300)
    layout = BacktestSettings(horizon=3, folds=2, test_size=20, stride=5)
    result = tune(
        data, "prophet", layout, trials=2, model_settings={"calibration_origins": 2}, seed=1
    )
    for fold in result.folds:
        assert 0.001 <= fold.params["changepoint_prior_scale"] <= 0.5
        chosen = make_model("prophet", **{**result.settings["untuned"], **fold.params})
        again = walk_forward({"prophet": chosen}, data, layout)
        assert fold.outer_score == pytest.approx(fold_loss(again.forecasts, fold.fold), rel=1e-9)
