"""The server's budget: the cost estimate, the limits and the queue of runs."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from forecasting.budget import (
    CostEstimate,
    CostPart,
    Limits,
    RunQueue,
    check_budget,
    estimate_experiment,
    format_seconds,
)
from forecasting.errors import Cancelled, ConfigurationError, OverBudget, ServerBusy
from forecasting.evaluation import BacktestSettings
from forecasting.experiment import ExperimentSettings
from forecasting.models import make_model

# --- limits ----------------------------------------------------------------------------------


def test_limits_come_from_secrets_then_the_environment() -> None:
    assert Limits.load({}, {}) == Limits()
    limits = Limits.load(
        {"max_run_seconds": 120, "concurrent_runs": 2},
        {"CFL_CONCURRENT_RUNS": "3", "CFL_CACHE_MAX_CANDLES": "1000", "CFL_MAX_WAITING": " "},
    )
    assert limits == Limits(max_run_seconds=120.0, concurrent_runs=3, cache_max_candles=1000)


@pytest.mark.parametrize(
    ("secrets", "environ", "named"),
    [
        ({"max_run_secs": 5}, {}, "max_run_secs"),
        ({"concurrent_runs": 1.5}, {}, "concurrent_runs"),
        ({"concurrent_runs": True}, {}, "concurrent_runs"),
        ({"max_run_seconds": -1}, {}, "max_run_seconds"),
        ({}, {"CFL_MAX_RUN_SECONDS": "nan"}, "CFL_MAX_RUN_SECONDS"),
        ({}, {"CFL_MAX_RUN_SECONDS": "inf"}, "CFL_MAX_RUN_SECONDS"),
        ({}, {"CFL_MAX_WAITING": "ten"}, "CFL_MAX_WAITING"),
        ({}, {"CFL_CACHE_MAX_CANDLES": "0"}, "CFL_CACHE_MAX_CANDLES"),
        ({}, {"CFL_CONCURRENT_RUNS": "9" * 400}, "CFL_CONCURRENT_RUNS"),
    ],
)
def test_a_bad_limit_is_refused_in_one_line_naming_it(secrets, environ, named) -> None:
    with pytest.raises(ConfigurationError, match=named) as caught:
        Limits.load(secrets, environ)
    assert "\n" not in str(caught.value)
    assert len(str(caught.value)) < 200


# --- the estimate ----------------------------------------------------------------------------


def test_the_default_experiment_is_estimated_near_what_it_measured() -> None:
    estimate = estimate_experiment(ExperimentSettings(), 3000)
    parts = {part.model: part.seconds for part in estimate.parts}
    # Measured on the benchmark machine: 57 CPU-s in all, Prophet about 40, the LSTM about
    # 10 (it stops early; the estimate counts every epoch).
    assert 40 <= estimate.seconds <= 100
    assert 25 <= parts["prophet"] <= 60
    assert 8 <= parts["lstm"] <= 40
    assert estimate.wall_seconds == pytest.approx(estimate.seconds / 2)
    check_budget(estimate, Limits())  # the default fits the default budget
    assert estimate.summary().startswith("Estimated cost: up to about 62 s of CPU time (prophet")


def test_every_setting_at_its_maximum_is_refused_naming_what_to_lower() -> None:
    settings = ExperimentSettings(
        model_settings={
            "lstm": {"epochs": 500, "units": 256, "layers": 3},
            "prophet": {"max_train_candles": 20_000},
        },
        backtest=BacktestSettings(folds=10, test_size=5000, stride=1),
    )
    estimate = estimate_experiment(settings, 25_000)
    assert estimate.seconds > 86_400
    with pytest.raises(OverBudget) as caught:
        check_budget(estimate, Limits())
    message = str(caught.value)
    assert "over this server's limit of 15 min" in message
    assert "lstm" in message
    assert "Epochs" in message
    assert "\n" not in message


def test_a_prophet_heavy_run_names_the_stride() -> None:
    settings = ExperimentSettings(
        models=("prophet",),
        model_settings={"prophet": {"max_train_candles": 20_000}},
        backtest=BacktestSettings(folds=10, test_size=5000, stride=1),
    )
    with pytest.raises(OverBudget, match="5,121 fits.*raise Stride"):
        check_budget(estimate_experiment(settings, 25_000), Limits())


_GROWING = [
    ("lstm", "epochs", (1, 500)),
    ("lstm", "units", (4, 256)),
    ("lstm", "layers", (1, 3)),
    ("lstm", "lookback", (5, 100)),  # at most half the shortest training window
    ("prophet", "max_train_candles", (100, 20_000)),
    ("prophet", "calibration_origins", (1, 30)),
]


@pytest.mark.parametrize("seed", range(8))
def test_more_work_is_never_estimated_cheaper(seed: int) -> None:
    """Property: raising any setting that adds work never lowers the estimate."""
    rng = np.random.default_rng(seed)
    candles = int(rng.integers(600, 6000))
    base = {
        "lstm": {"epochs": int(rng.integers(1, 50)), "units": int(rng.integers(4, 64))},
        "prophet": {"max_train_candles": int(rng.integers(100, 5000))},
    }
    folds, test_size, stride = int(rng.integers(1, 6)), int(rng.integers(40, 400)), 3
    seeds = int(rng.integers(1, 4))

    def cost(settings: dict, **layout) -> float:
        backtest = BacktestSettings(
            folds=layout.get("folds", folds),
            test_size=layout.get("test_size", test_size),
            stride=layout.get("stride", stride),
        )
        experiment = ExperimentSettings(
            model_settings=settings, backtest=backtest, seeds=layout.get("seeds", seeds)
        )
        return estimate_experiment(experiment, candles).seconds

    before = cost(base)
    model, name, (lo, hi) = _GROWING[int(rng.integers(len(_GROWING)))]
    current = base.get(model, {}).get(name, make_model(model).get_params()[name])
    more = {**base, model: {**base.get(model, {}), name: int(rng.integers(current, hi + 1))}}
    assert cost(more) >= before
    assert cost(base, folds=folds + 1) >= before
    assert cost(base, test_size=test_size + 50) >= before
    assert cost(base, seeds=seeds + 1) >= before
    assert cost(base, stride=1) >= before


def test_one_fit_per_model_is_estimated_for_the_models_page() -> None:
    from forecasting.budget import estimate_fits

    models = {
        "naive": make_model("naive"),
        "prophet": make_model("prophet"),
        "lstm": make_model("lstm", epochs=500, units=256, layers=3),
    }
    estimate = estimate_fits(models, 20_000)
    parts = {part.model: part for part in estimate.parts}
    assert parts["prophet"].what == "11 fits on up to 3,000 candles"
    assert parts["lstm"].what == "1 fit of up to 500 epochs, 3 x 256 units, lookback 30"
    with pytest.raises(OverBudget, match="lstm"):
        check_budget(estimate, Limits())
    check_budget(estimate_fits({"lstm": make_model("lstm")}, 3000), Limits())


def test_a_test_period_from_a_date_is_estimated_on_the_real_index() -> None:
    import pandas as pd

    index = pd.date_range("2020-01-01", periods=1000, freq="D", tz="UTC")
    late = BacktestSettings(test_start=index[900], folds=2, stride=1)
    early = BacktestSettings(test_start=index[500], folds=2, stride=1)
    cost = [
        estimate_experiment(ExperimentSettings(models=("prophet",), backtest=b), index).seconds
        for b in (late, early)
    ]
    assert cost[1] > cost[0]


def test_seconds_read_as_a_person_reads_them() -> None:
    assert [format_seconds(s) for s in (0.4, 45, 89, 600, 3600 + 5 * 60, 86400 * 3)] == [
        "0 s",
        "45 s",
        "89 s",
        "10 min",
        "1 h 05 min",
        "3 days",
    ]
    assert format_seconds(float("inf")) == "an unbounded time"
    one = CostEstimate((CostPart("a", 30.0, "x", "y"), CostPart("b", 0.1, "x", "y")), cores=1)
    assert one.to_dict()["parts"][0] == {"model": "a", "seconds": 30.0, "what": "x"}


# --- the queue --------------------------------------------------------------------------------


@pytest.mark.parametrize("slots", [1, 2])
def test_the_queue_never_runs_more_than_its_slots_and_serves_in_order(slots: int) -> None:
    queue = RunQueue(slots=slots, max_waiting=10)
    running, most, order = [0], [0], []
    lock = threading.Lock()
    gate = threading.Event()

    def run(name: int) -> None:
        with queue.turn(poll=0.01):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
                order.append(name)
            gate.wait(5)
            time.sleep(0.01)
            with lock:
                running[0] -= 1

    threads = []
    for name in range(6):
        thread = threading.Thread(target=run, args=(name,))
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # arrive in this order
    assert queue.running == slots
    assert queue.waiting == 6 - slots
    gate.set()
    for thread in threads:
        thread.join(10)
    assert most[0] == slots
    assert order == list(range(6))
    assert (queue.running, queue.waiting) == (0, 0)


def test_a_waiting_run_sees_its_place_and_can_be_cancelled() -> None:
    queue = RunQueue(slots=1, max_waiting=3)
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with queue.turn():
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    places: list[int] = []
    stop = threading.Event()

    def waiter() -> None:
        with pytest.raises(Cancelled, match="cancelled while it waited"):
            with queue.turn(should_stop=stop.is_set, on_wait=places.append, poll=0.01):
                pytest.fail("a cancelled run must not start")

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.1)
    assert queue.waiting == 1
    stop.set()
    thread.join(5)
    assert places
    assert set(places) == {0}
    assert queue.waiting == 0  # it left the line
    release.set()
    holder.join(5)
    with queue.turn():  # and the slot is free again
        assert queue.running == 1


def test_a_full_line_is_refused_and_a_failed_run_frees_its_slot() -> None:
    queue = RunQueue(slots=1, max_waiting=0)
    with queue.turn():
        with pytest.raises(ServerBusy, match="The server is busy: 1 run"):
            with queue.turn():
                pass
    with pytest.raises(ValueError, match="boom"):
        with queue.turn():
            raise ValueError("boom")
    assert queue.running == 0


def test_a_model_is_costed_by_its_class_and_a_subclass_as_its_parent() -> None:
    """A model is costed by what it is, not by which attributes it happens to have: a
    baseline with an ``epochs`` attribute stays a baseline, a subclass of the LSTM
    (a variant) costs what the LSTM costs."""
    from forecasting.budget import estimate_fits
    from forecasting.models import LSTM, Naive

    class Variant(LSTM):
        pass

    naive = make_model("naive")
    naive.epochs, naive.units = 500, 256
    lstm = make_model("lstm", epochs=50, units=64)
    variant = Variant(epochs=50, units=64)
    parts = {p.model: p for p in estimate_fits({"a": naive, "b": lstm, "c": variant}, 5000).parts}
    assert isinstance(naive, Naive)
    assert parts["a"].what == "a baseline"
    assert parts["a"].seconds < 1
    assert parts["c"].seconds == pytest.approx(parts["b"].seconds)
    assert parts["c"].what == parts["b"].what


def test_the_training_bar_moves_with_the_work_not_the_model_count() -> None:
    """The reported case: five baselines, Prophet and the LSTM on 3000 candles, the bar
    stood at 83 % at the LSTM's first epoch. By estimated cost the first epoch of the
    LSTM, trained last, is reached after the baselines and Prophet only."""
    from forecasting.budget import estimate_fits, progress_shares

    models = {
        "naive": make_model("naive"),
        "drift": make_model("drift"),
        "seasonal_naive": make_model("seasonal_naive"),
        "moving_average": make_model("moving_average"),
        "prophet": make_model("prophet"),
        "lstm": make_model("lstm"),
    }
    estimate = estimate_fits(models, 3000)
    shares = progress_shares(estimate)
    assert list(shares) == list(models)
    assert sum(share for _, share in shares.values()) == pytest.approx(1.0)
    starts = [start for start, _ in shares.values()]
    assert starts == sorted(starts)
    seconds = {part.model: part.seconds for part in estimate.parts}
    start, share = shares["lstm"]
    assert start == pytest.approx(1 - seconds["lstm"] / estimate.seconds)
    first_epoch = start + share / 30
    assert first_epoch < 0.83
    assert shares["naive"][1] < 0.01  # a baseline is a sliver of the bar


@pytest.mark.parametrize("seed", range(20))
def test_progress_shares_tile_the_bar(seed: int) -> None:
    from forecasting.budget import CostEstimate, CostPart, progress_shares

    rng = np.random.default_rng(seed)
    parts = tuple(
        CostPart(f"m{i}", float(s), "", "")
        for i, s in enumerate(rng.choice([0.0, 0.01, 3.0, 500.0], size=rng.integers(1, 8)))
    )
    shares = list(progress_shares(CostEstimate(parts)).values())
    assert shares[0][0] == 0.0
    for (start, share), (next_start, _) in zip(shares, shares[1:], strict=False):
        assert next_start == pytest.approx(start + share)
    assert shares[-1][0] + shares[-1][1] == pytest.approx(1.0)
