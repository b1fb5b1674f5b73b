"""The backtest's progress bar follows the estimated work, not the count of fits.

The reported case: with four baselines and an LSTM, every fit counted as one step, so the
bar stood still through the LSTM's training and then jumped. Each (model, fold) now has
the share :mod:`forecasting.budget` estimates for it, and a model that reports epochs
moves the bar within its fit.
"""

from __future__ import annotations

import numpy as np
import pytest
from factories import random_walk_candles

from forecasting.budget import estimate_experiment, model_cost
from forecasting.evaluation.walkforward import (
    BacktestSettings,
    _fold_costs,
    make_folds,
    walk_forward,
)
from forecasting.experiment import ExperimentSettings, run_experiment

BASELINES = ("naive", "drift", "seasonal_naive", "moving_average")
LAYOUT = BacktestSettings(horizon=3, folds=2, test_size=24, stride=3)
# A tiny LSTM: a few epochs it reports one by one.
LSTM = {"epochs": 4, "units": 4, "lookback": 10, "patience": 100, "features": ""}


def _settings(models: tuple[str, ...]) -> ExperimentSettings:
    return ExperimentSettings(models=models, model_settings={"lstm": LSTM}, backtest=LAYOUT)


def _record(log: list):
    def progress(stage, fraction, details):
        log.append((stage, fraction, dict(details)))

    return progress


@pytest.fixture(scope="module")
def candles():
    return random_walk_candles(160, seed=4)


@pytest.fixture(scope="module")
def backtest_log(candles) -> list:
    """The progress of a backtest of four baselines and the LSTM, one job at a time."""
    log: list = []
    models = _settings((*BASELINES, "lstm")).build_models()
    walk_forward(models, candles, LAYOUT, progress=_record(log), workers=1)
    return log


def test_the_fold_costs_add_up_to_the_budgets_estimate(candles) -> None:
    """Every model's fold shares, plus its refit on all data, are the budget's figure."""
    settings = _settings(("prophet", "lstm", *BASELINES))
    estimate = {part.model: part.seconds for part in estimate_experiment(settings, candles).parts}
    folds = make_folds(candles.index, LAYOUT)
    for alias, model in settings.build_models().items():
        refit = model_cost(alias, model, [], len(candles), 1).seconds
        shares = sum(sum(_fold_costs(model, fold)) for fold in folds)
        assert shares + refit == pytest.approx(estimate[alias], rel=1e-9), alias


def test_the_bar_never_moves_back_and_ends_full(backtest_log) -> None:
    fractions = [fraction for _, fraction, _ in backtest_log]
    assert all(b >= a for a, b in zip(fractions, fractions[1:], strict=False))
    assert fractions[-1] == pytest.approx(1.0)
    assert {stage for stage, _, _ in backtest_log} == {"backtest"}


def test_the_lstm_takes_most_of_the_bar_and_moves_it_epoch_by_epoch(backtest_log, candles) -> None:
    moves: dict[str, float] = {}
    before = 0.0
    for _, fraction, details in backtest_log:
        moves[details["model"]] = moves.get(details["model"], 0.0) + fraction - before
        before = fraction
    baselines = sum(moves[alias] for alias in BASELINES)
    assert moves["lstm"] > 0.8
    assert baselines < 0.2
    # Each fold's fit reports its four epochs, each moving the bar by the same share.
    epochs = [(f, d) for _, f, d in backtest_log if "epoch" in d["message"]]
    assert [d["message"].rsplit(", ", 1)[1] for _, d in epochs] == [
        f"epoch {k}/4" for _ in range(LAYOUT.folds) for k in range(1, 5)
    ]
    fit, _ = _fold_costs(
        _settings(("lstm",)).build_models()["lstm"], make_folds(candles.index, LAYOUT)[0]
    )
    total = sum(
        sum(_fold_costs(model, fold))
        for model in _settings((*BASELINES, "lstm")).build_models().values()
        for fold in make_folds(candles.index, LAYOUT)
    )
    first_epoch = epochs[0][0]
    assert first_epoch == pytest.approx(fit / 4 / total, rel=1e-6)
    assert first_epoch < 0.5


def test_an_experiments_bar_is_monotone_with_the_lstm_first_started_low(candles) -> None:
    """Through the backtest and the refits on all the data; the LSTM's first fit starts
    with the bar below half."""
    log: list = []
    run_experiment(candles, _settings((*BASELINES, "lstm")), progress=_record(log), workers=2)
    fractions = [fraction for _, fraction, _ in log]
    assert all(b >= a for a, b in zip(fractions, fractions[1:], strict=False))
    assert fractions[-1] == pytest.approx(1.0)
    first_lstm = next(f for _, f, d in log if d.get("model") == "lstm")
    assert first_lstm < 0.5


def test_the_refits_on_all_the_data_take_their_cost_share_of_the_bar(candles) -> None:
    # The final refits ran at a flat 10 % split evenly: four baselines then the LSTM put
    # the bar at 98 % while the LSTM's refit was still running.
    settings = _settings((*BASELINES, "lstm"))
    log: list = []
    run_experiment(candles, settings, progress=_record(log), workers=2)
    refits = [(d["model"], f) for stage, f, d in log if stage == "refit"]
    assert [m for m, _ in refits] == [*BASELINES, "lstm"]
    models = settings.build_models()
    cost = {a: model_cost(a, m, [], len(candles), 1).seconds for a, m in models.items()}
    whole = estimate_experiment(settings, candles).seconds
    start = 1 - sum(cost.values()) / whole
    steps = np.diff([start, *(f for _, f in refits)])
    expected = [cost[m] / whole for m, _ in refits]
    np.testing.assert_allclose(steps, expected, rtol=1e-9, atol=1e-12)
    assert refits[-1][1] == pytest.approx(1.0)
    # The baselines' refits are a sliver; the LSTM's is the rest.
    assert refits[-2][1] < 1 - 0.5 * cost["lstm"] / whole
