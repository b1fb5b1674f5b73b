"""Walk-forward backtests: the fold layout, what each model is shown, and the forecast rows.

A spy model records every frame ``fit`` and ``predict(history=...)`` receive, so the
tests can check that no model ever sees a candle after its fold's cutoff (when fitting)
or after the forecast origin (when forecasting).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from factories import candle_index, random_walk_candles

from forecasting.errors import Cancelled, ConfigurationError, InsufficientHistory
from forecasting.evaluation import BacktestSettings, Fold, make_folds, walk_forward
from forecasting.models import Drift, Forecaster, MovingAverage, Naive, SeasonalNaive

UTC = "UTC"


def _spy_class() -> type[Forecaster]:
    """A fresh spy class (its own event log): forecasts the last close, records its inputs.

    ``walk_forward`` clones models, and ``clone`` deep-copies the settings, so the log
    lives on the class rather than in a setting.
    """

    class Spy(Forecaster):
        alias = "spy"
        title = "Spy"
        events: ClassVar[list[tuple[str, pd.DataFrame]]] = []

        def __init__(self, level: float = 0.9) -> None:
            self.level = level

        def _fit(self, candles: pd.DataFrame, **_: object) -> None:
            type(self).events.append(("fit", candles.copy()))

        def _predict(self, horizon: int, history: pd.DataFrame):
            type(self).events.append(("predict", history.copy()))
            return np.full(horizon, float(history["close"].iloc[-1])), None, None

    return Spy


def _folds_as_tuples(folds: list[Fold]) -> list[tuple[int, int, tuple[int, ...], int]]:
    return [(f.train_start, f.cutoff, f.origins, f.end) for f in folds]


# n candles (daily from 2022-01-03), settings, expected (train_start, cutoff, origins, end).
LAYOUTS = [
    # the last 20 of 100 candles in two folds of 10; expanding window
    pytest.param(
        100,
        BacktestSettings(horizon=3, folds=2, test_size=20),
        [(0, 79, tuple(range(79, 89)), 90), (0, 89, tuple(range(89, 99)), 100)],
        id="two-folds",
    ),
    # origins every 4 candles, starting at the cutoff
    pytest.param(
        100,
        BacktestSettings(horizon=3, folds=2, test_size=20, stride=4),
        [(0, 79, (79, 83, 87), 90), (0, 89, (89, 93, 97), 100)],
        id="stride-4",
    ),
    # rolling window: the last 30 candles before each fold
    pytest.param(
        100,
        BacktestSettings(horizon=3, folds=2, test_size=20, window=30),
        [(50, 79, tuple(range(79, 89)), 90), (60, 89, tuple(range(89, 99)), 100)],
        id="rolling-30",
    ),
    # a window longer than the history starts at the first candle
    pytest.param(
        100,
        BacktestSettings(horizon=3, folds=2, test_size=20, window=500),
        [(0, 79, tuple(range(79, 89)), 90), (0, 89, tuple(range(89, 99)), 100)],
        id="rolling-longer-than-data",
    ),
    # 10 candles in 3 folds: bounds 90, 93.3, 96.7, 100 round to 90, 93, 97, 100
    pytest.param(
        100,
        BacktestSettings(horizon=1, folds=3, test_size=10),
        [
            (0, 89, (89, 90, 91), 93),
            (0, 92, (92, 93, 94, 95), 97),
            (0, 96, (96, 97, 98), 100),
        ],
        id="uneven-folds",
    ),
    # test_start (candle 70) replaces test_size: 30 test candles in 3 folds
    pytest.param(
        100,
        BacktestSettings(folds=3, test_size=5, test_start=pd.Timestamp("2022-03-14", tz=UTC)),
        [
            (0, 69, tuple(range(69, 79)), 80),
            (0, 79, tuple(range(79, 89)), 90),
            (0, 89, tuple(range(89, 99)), 100),
        ],
        id="test-start",
    ),
    # a test_start without a time zone (or as text) means UTC, as everywhere else
    pytest.param(
        100,
        BacktestSettings(folds=3, test_start="2022-03-14"),
        [
            (0, 69, tuple(range(69, 79)), 80),
            (0, 79, tuple(range(79, 89)), 90),
            (0, 89, tuple(range(89, 99)), 100),
        ],
        id="test-start-naive",
    ),
    # a test_start between candles (10:30 on candle 70's day) starts at the next candle
    pytest.param(
        100,
        BacktestSettings(folds=1, test_start=pd.Timestamp("2022-03-14T10:30", tz=UTC)),
        [(0, 70, tuple(range(70, 99)), 100)],
        id="test-start-between-candles",
    ),
    # the smallest layout: one fold of two candles
    pytest.param(
        100,
        BacktestSettings(horizon=5, folds=1, test_size=2),
        [(0, 97, (97, 98), 100)],
        id="one-fold-of-two",
    ),
]


@pytest.mark.parametrize(("n", "settings", "expected"), LAYOUTS)
def test_make_folds_layout(n, settings, expected) -> None:
    index = candle_index(n)
    folds = make_folds(index, settings)

    assert _folds_as_tuples(folds) == expected
    assert [f.number for f in folds] == list(range(1, len(expected) + 1))
    # Plain ints: positions end up in JSON, reprs and comparisons.
    assert all(type(v) is int for f in folds for v in (f.train_start, f.cutoff, f.end, *f.origins))


@pytest.mark.parametrize(("n", "settings", "expected"), LAYOUTS)
def test_folds_partition_the_test_period(n, settings, expected) -> None:
    index = candle_index(n)
    folds = make_folds(index, settings)
    first_target = folds[0].cutoff + 1
    if settings.test_start is not None:
        assert index[first_target] == index[index >= settings.test_start][0]
    else:
        assert first_target == n - settings.test_size

    # The folds' target regions (cutoff + 1 .. end - 1) tile the test period exactly.
    covered = [p for f in folds for p in range(f.cutoff + 1, f.end)]
    assert covered == list(range(first_target, n))
    for previous, fold in zip(folds, folds[1:], strict=False):
        assert fold.cutoff == previous.end - 1
    for fold in folds:
        assert fold.end - fold.cutoff - 1 >= 2
        # Origins start at the cutoff, step by the stride and never pass the last but one
        # candle of the fold (each origin has a step-1 target inside the fold).
        assert fold.origins[0] == fold.cutoff
        assert set(np.diff(fold.origins)) <= {settings.stride}
        assert fold.origins[-1] <= fold.end - 2 < fold.origins[-1] + settings.stride
        expected_start = 0 if settings.window is None else max(0, fold.cutoff + 1 - settings.window)
        assert fold.train_start == expected_start


@pytest.mark.parametrize(
    ("n", "settings", "error", "phrase"),
    [
        # 15 training candles: fewer than the 20 every fold needs
        (30, BacktestSettings(folds=1, test_size=15), InsufficientHistory, "leaves 15 candles"),
        # a test period longer than the data
        (100, BacktestSettings(folds=2, test_size=150), InsufficientHistory, "leaves 0"),
        # more folds than test candles
        (100, BacktestSettings(folds=30, test_size=20), ConfigurationError, "30 folds"),
        # folds of one candle each
        (100, BacktestSettings(folds=11, test_size=20), ConfigurationError, "11 folds"),
        # an empty test period
        (100, BacktestSettings(folds=1, test_size=0), ConfigurationError, "0 candles"),
        # test_start after the last candle: an empty test period
        (100, BacktestSettings(test_start="2030-01-01"), ConfigurationError, "0 candles"),
        # test_start before the first candle: nothing to train on
        (100, BacktestSettings(folds=2, test_start="2021-01-01"), InsufficientHistory, "0"),
        (100, BacktestSettings(horizon=0), ConfigurationError, "at least 1"),  # no horizon
        (100, BacktestSettings(folds=0), ConfigurationError, "at least 1"),  # no folds
        (100, BacktestSettings(stride=0), ConfigurationError, "at least 1"),  # no stride
        # a rolling window of no candles would train on an empty frame
        (100, BacktestSettings(test_size=20, window=0), ConfigurationError, "window"),
        # one candle has no one-step change (MASE's scale)
        (100, BacktestSettings(test_size=20, window=1), ConfigurationError, "window"),
    ],
)
def test_make_folds_refuses_impossible_layouts(n, settings, error, phrase) -> None:
    with pytest.raises(error, match=phrase):
        make_folds(candle_index(n), settings)


@pytest.mark.parametrize("start", ["next tuesday", "2024-13-45"])
def test_a_test_start_that_is_no_date_is_a_configuration_error(start) -> None:
    with pytest.raises(ConfigurationError, match="is not a date"):
        BacktestSettings(test_start=start)


def test_walk_forward_raises_the_layout_error_before_fitting() -> None:
    spy = _spy_class()
    with pytest.raises(ConfigurationError):
        walk_forward(
            {"spy": spy()}, random_walk_candles(50), BacktestSettings(folds=40, test_size=20)
        )
    assert spy.events == []


BASELINES = {
    "naive": Naive(),
    "drift": Drift(),
    "seasonal_naive": SeasonalNaive(),
    "moving_average": MovingAverage(window=5),
}


@pytest.mark.parametrize(
    "settings",
    [
        BacktestSettings(horizon=4, folds=3, test_size=30),  # expanding, every candle
        BacktestSettings(horizon=3, folds=2, test_size=25, stride=3),  # sparser origins
        BacktestSettings(horizon=5, folds=2, test_size=20, window=40),  # rolling window
    ],
)
def test_every_model_gets_the_same_origin_target_pairs(settings) -> None:
    candles = random_walk_candles(160)
    backtest = walk_forward({**BASELINES, "spy": _spy_class()()}, candles, settings)
    rows = backtest.forecasts

    pairs = {
        model: list(zip(g["fold"], g["origin"], g["timestamp"], g["step"], strict=True))
        for model, g in rows.groupby("model", sort=False)
    }
    assert list(pairs) == [*BASELINES, "spy"]
    reference = pairs["naive"]
    assert all(p == reference for p in pairs.values())
    # Every origin of every fold forecasts min(horizon, candles left) steps.
    assert backtest.pairs.scored == len(reference)
    assert backtest.pairs.missing_target == 0
    n = len(candles)
    expected = sum(
        min(settings.horizon, n - 1 - origin) for f in backtest.folds for origin in f.origins
    )
    assert len(reference) == expected
    assert len(set(reference)) == len(reference)


@pytest.mark.parametrize(
    "settings",
    [
        BacktestSettings(horizon=4, folds=3, test_size=30),  # expanding window
        BacktestSettings(horizon=4, folds=3, test_size=30, window=50),  # rolling window
        BacktestSettings(horizon=2, folds=2, test_size=20, stride=3),  # stride 3
    ],
)
def test_models_see_nothing_after_the_cutoff_or_the_origin(settings) -> None:
    candles = random_walk_candles(150)
    spy = _spy_class()
    backtest = walk_forward({"spy": spy()}, candles, settings)
    folds = backtest.folds

    fits = [frame for kind, frame in spy.events if kind == "fit"]
    assert len(fits) == len(folds)
    for fold, trained in zip(folds, fits, strict=True):
        # Exactly the fold's training window: it ends at the cutoff, starts at train_start.
        assert trained.index[-1] == candles.index[fold.cutoff]
        assert trained.index[0] == candles.index[fold.train_start]
        if settings.window is not None:
            assert len(trained) == min(settings.window, fold.cutoff + 1)
        pd.testing.assert_frame_equal(trained, candles.iloc[fold.train_start : fold.cutoff + 1])

    # Predictions follow their fold's fit; each history is the actual candles up to the
    # origin, and nothing after the origin.
    fold_number = 0
    origins_seen: dict[int, list[pd.Timestamp]] = {f.number: [] for f in folds}
    for kind, frame in spy.events:
        if kind == "fit":
            fold_number += 1
            continue
        fold = folds[fold_number - 1]
        origin = frame.index[-1]
        origins_seen[fold.number].append(origin)
        pd.testing.assert_frame_equal(frame, candles.loc[candles.index[fold.train_start] : origin])
    for fold in folds:
        assert origins_seen[fold.number] == [candles.index[o] for o in fold.origins]

    rows = backtest.forecasts
    assert (rows["origin"] < rows["timestamp"]).all()
    assert (rows["cutoff"] <= rows["origin"]).all()


def test_forecast_rows_hold_the_actual_closes() -> None:
    candles = random_walk_candles(140)
    settings = BacktestSettings(horizon=3, folds=3, test_size=30)
    backtest = walk_forward(BASELINES, candles, settings)
    rows = backtest.forecasts
    close = candles["close"]
    position = {stamp: i for i, stamp in enumerate(candles.index)}

    assert list(rows.columns[:10]) == [
        "fold",
        "cutoff",
        "origin",
        "timestamp",
        "step",
        "model",
        "y",
        "yhat",
        "lower",
        "upper",
    ]
    for row in rows.itertuples():
        assert row.y == close[row.timestamp]
        assert row.y_origin == close[row.origin]
        # The target is `step` candles after the origin.
        assert position[row.timestamp] == position[row.origin] + row.step
        fold = backtest.folds[row.fold - 1]
        assert row.cutoff == candles.index[fold.cutoff]
        assert position[row.origin] in fold.origins
    naive = rows[rows["model"] == "naive"]
    # Naive forecasts the close at the origin, for every step.
    assert naive["yhat"].tolist() == [close[o] for o in naive["origin"]]
    assert (naive["lower"] < naive["yhat"]).all()
    assert (naive["yhat"] < naive["upper"]).all()
    assert backtest.levels == dict.fromkeys(BASELINES, 0.9)
    assert backtest.models == list(BASELINES)


def test_naive_scale_is_each_folds_in_sample_one_step_error() -> None:
    candles = random_walk_candles(120)
    for window in (None, 30):
        settings = BacktestSettings(horizon=2, folds=3, test_size=30, window=window)
        backtest = walk_forward({"naive": Naive()}, candles, settings)
        for fold in backtest.folds:
            train = candles["close"].to_numpy()[fold.train_start : fold.cutoff + 1]
            changes = [abs(train[i] - train[i - 1]) for i in range(1, len(train))]
            assert backtest.naive_scale[fold.number] == pytest.approx(
                sum(changes) / len(changes), rel=1e-12
            )


def test_progress_is_reported_per_fold_and_model() -> None:
    calls: list[tuple[str, float, dict]] = []
    settings = BacktestSettings(horizon=2, folds=3, test_size=30)
    walk_forward(BASELINES, random_walk_candles(100), settings, progress=lambda *a: calls.append(a))

    fractions = [fraction for _, fraction, _ in calls]
    assert len(calls) == settings.folds * len(BASELINES)
    assert all(b > a for a, b in zip(fractions, fractions[1:], strict=False))
    assert fractions[-1] == 1.0
    assert {stage for stage, _, _ in calls} == {"backtest"}
    # Jobs run model by model, each over its folds.
    assert calls[0][2]["message"] == "fold 1/3: naive"
    assert calls[-1][2]["message"] == "fold 3/3: moving_average"
    assert calls[-1][2]["model"] == "moving_average"
    assert calls[-1][2]["folds"] == 3


@pytest.mark.parametrize(
    "polls_before_stop",
    [
        0,  # stopped before the first fit
        1,  # stopped after the first fit, while forecasting from the first origins
        40,  # stopped in the second fold
    ],
)
def test_should_stop_cancels_the_backtest(polls_before_stop) -> None:
    spy = _spy_class()
    polls = 0

    def should_stop() -> bool:
        nonlocal polls
        polls += 1
        return polls > polls_before_stop

    progress: list[float] = []
    with pytest.raises(Cancelled):
        walk_forward(
            {"spy": spy()},
            random_walk_candles(100),
            BacktestSettings(horizon=2, folds=3, test_size=60),
            progress=lambda _stage, fraction, _details: progress.append(fraction),
            should_stop=should_stop,
        )
    fits = sum(kind == "fit" for kind, _ in spy.events)
    predictions = sum(kind == "predict" for kind, _ in spy.events)
    # Polled before every fit and every forecast, and nothing ran after the first "stop".
    assert fits + predictions == polls_before_stop
    assert not progress or progress[-1] < 1.0


def test_input_candles_are_not_modified() -> None:
    candles = random_walk_candles(120)
    before = candles.copy(deep=True)
    models = {**BASELINES, "spy": _spy_class()()}
    params = {name: model.get_params() for name, model in models.items()}

    walk_forward(models, candles, BacktestSettings(horizon=3, folds=2, test_size=20, window=60))

    pd.testing.assert_frame_equal(candles, before)
    # The templates are cloned per fold, never fitted themselves.
    assert all(not hasattr(model, "history_") for model in models.values())
    assert {name: model.get_params() for name, model in models.items()} == params


def test_settings_to_dict_is_json_ready() -> None:
    settings = BacktestSettings(horizon=3, folds=2, test_start="2022-03-14", stride=2, window=50)
    assert settings.to_dict() == {
        "horizon": 3,
        "folds": 2,
        "test_size": 120,
        "test_start": "2022-03-14T00:00:00+00:00",
        "stride": 2,
        "window": 50,
    }


# --- steps are time, not rows ------------------------------------------------------------


def _with_gaps(candles: pd.DataFrame, positions: list[int]) -> pd.DataFrame:
    return candles.drop(candles.index[positions])


def test_a_step_is_k_timeframes_and_missing_targets_are_left_out_for_every_model() -> None:
    full = random_walk_candles(140, seed=4)
    gaps = [121, 122, 130]  # three candles missing inside the test period
    candles = _with_gaps(full, gaps)
    settings = BacktestSettings(horizon=4, folds=2, test_size=24)
    backtest = walk_forward({**BASELINES, "spy": _spy_class()()}, candles, settings)
    rows = backtest.forecasts

    day = pd.Timedelta(days=1)
    assert ((rows["timestamp"] - rows["origin"]) == rows["step"] * day).all()
    assert not rows["timestamp"].isin(full.index[gaps]).any()
    # The same pairs for every model, and each missing target counted once per pair.
    pairs = {m: set(zip(g["origin"], g["step"], strict=True)) for m, g in rows.groupby("model")}
    assert len({frozenset(p) for p in pairs.values()}) == 1
    expected_missing = 0
    present = set(candles.index)
    last = candles.index[-1]
    for fold in backtest.folds:
        for origin in fold.origins:
            for step in range(1, 5):
                target = candles.index[origin] + step * day
                if target <= last and target not in present:
                    expected_missing += 1
    assert backtest.pairs.missing_target == expected_missing > 0
    assert backtest.pairs.scored == len(pairs["naive"])
    # Seasonal naive looks back by time: a week before the target's weekday.
    seasonal = rows[rows["model"] == "seasonal_naive"]
    for row in seasonal.itertuples():
        source = row.timestamp - 7 * day * int(np.ceil(row.step / 7))
        expected = candles["close"][candles.index <= source].iloc[-1]
        assert row.yhat == expected


def test_filled_candles_are_never_origins_or_targets() -> None:
    candles = random_walk_candles(120, seed=5)
    filled = candles.index[[101, 102, 110]]
    settings = BacktestSettings(horizon=3, folds=2, test_size=20)
    backtest = walk_forward(BASELINES, candles, settings, excluded=filled)
    rows = backtest.forecasts

    assert not rows["origin"].isin(filled).any()
    assert not rows["timestamp"].isin(filled).any()
    assert backtest.pairs.filled_origin == 3
    # Origins are 99..108 and 109..118. Candle 101 is the target of origins 99 and 100;
    # 102 of 99 and 100 (101 is filled, no origin); 110 of 107, 108 and 109: seven pairs.
    assert backtest.pairs.filled_target == 7
    # ...and they do not count as one-step changes in MASE's scale.
    plain = walk_forward(BASELINES, candles, settings)
    assert plain.pairs.filled_origin == plain.pairs.filled_target == 0
    assert len(rows) < len(plain.forecasts)


def test_naive_scale_uses_changes_one_timeframe_apart_and_is_nan_when_flat() -> None:
    candles = _with_gaps(random_walk_candles(120, seed=6), [50, 51, 52])
    settings = BacktestSettings(horizon=2, folds=1, test_size=20)
    backtest = walk_forward({"naive": Naive()}, candles, settings)
    fold = backtest.folds[0]
    train = candles.iloc[: fold.cutoff + 1]
    step = train.index.to_series().diff() == pd.Timedelta(days=1)
    expected = train["close"].diff().abs()[step].mean()
    assert backtest.naive_scale[1] == pytest.approx(expected, rel=1e-12)

    flat = candles.copy()
    flat[["open", "high", "low", "close"]] = 1.0
    assert np.isnan(walk_forward({"naive": Naive()}, flat, settings).naive_scale[1])


def _refitting_spy_class() -> type[Forecaster]:
    """A spy that cannot condition on history: it must be refitted at every origin."""
    from forecasting.models.base import Capabilities

    class Refitter(Forecaster):
        alias = "refitter"
        title = "Refitter"
        capabilities = Capabilities(conditions_on_history=False, warm_starts=True)
        events: ClassVar[list[tuple[str, pd.Timestamp, object]]] = []

        def __init__(self, level: float = 0.9) -> None:
            self.level = level

        def _fit(self, candles: pd.DataFrame, *, warm_start=None, **_: object) -> None:
            self.last_ = float(candles["close"].iloc[-1])
            start = None if warm_start is None else warm_start.history_.index[-1]
            type(self).events.append(("fit", candles.index[-1], start))

        def _predict(self, horizon: int, history: pd.DataFrame):
            # Only what was fitted: the last close of the fit, never the history's.
            return np.full(horizon, self.last_), None, None

    return Refitter


@pytest.mark.parametrize("window", [None, 30])
def test_a_model_that_cannot_condition_is_refitted_at_each_origin(window) -> None:
    candles = random_walk_candles(100, seed=7)
    refitter = _refitting_spy_class()
    settings = BacktestSettings(horizon=3, folds=2, test_size=20, window=window)
    backtest = walk_forward({"r": refitter(), "naive": Naive()}, candles, settings)

    events = list(refitter.events)
    assert len(events) == sum(len(fold.origins) for fold in backtest.folds)
    for fold in backtest.folds:
        # A chain per fold: a cold fit at the cutoff, then one per later origin, each
        # warm-started from the previous one (which saw only earlier candles).
        fits, events = events[: len(fold.origins)], events[len(fold.origins) :]
        assert [e[1] for e in fits] == [candles.index[o] for o in fold.origins]
        assert fits[0][2] is None
        assert [e[2] for e in fits[1:]] == [candles.index[o] for o in fold.origins[:-1]]
    # So its forecasts from each origin are the close at that origin, like naive's.
    rows = backtest.forecasts
    np.testing.assert_array_equal(
        rows.loc[rows["model"] == "r", "yhat"], rows.loc[rows["model"] == "naive", "yhat"]
    )


def test_seeded_models_are_run_over_every_seed_on_the_same_pairs() -> None:
    from forecasting.models.base import Capabilities

    class Noisy(Forecaster):
        alias = "noisy"
        title = "Noisy"
        capabilities = Capabilities(seeded=True, seed_changes_forecast=True)

        def __init__(self, seed: int = 1) -> None:
            self.seed = seed

        def _fit(self, candles: pd.DataFrame, **_: object) -> None:
            self.bias_ = float(np.random.default_rng(self.seed).normal())

        def _predict(self, horizon: int, history: pd.DataFrame):
            return np.full(horizon, history["close"].iloc[-1] + self.bias_), None, None

    candles = random_walk_candles(100, seed=8)
    settings = BacktestSettings(horizon=2, folds=2, test_size=20)
    backtest = walk_forward(
        {"naive": Naive(), "noisy": Noisy(seed=1)}, candles, settings, seeds=(1, 2, 3)
    )
    assert backtest.model_seeds == {"naive": None, "noisy": 1}
    assert set(backtest.seed_forecasts) == {"noisy"}
    assert sorted(backtest.seed_forecasts["noisy"]) == [2, 3]
    own = backtest.forecasts[backtest.forecasts["model"] == "noisy"].reset_index(drop=True)
    for seed, rows in backtest.seed_forecasts["noisy"].items():
        rows = rows.reset_index(drop=True)
        pd.testing.assert_frame_equal(rows[["origin", "step"]], own[["origin", "step"]])
        assert not np.allclose(rows["yhat"], own["yhat"]), seed


def test_the_forecasts_do_not_depend_on_the_number_of_workers() -> None:
    candles = _with_gaps(random_walk_candles(160, seed=9), [140])
    settings = BacktestSettings(horizon=3, folds=3, test_size=30, stride=2)
    models = {**BASELINES, "r": _refitting_spy_class()()}
    one = walk_forward(models, candles, settings, workers=1)
    two = walk_forward(models, candles, settings, workers=2)
    pd.testing.assert_frame_equal(one.forecasts, two.forecasts, check_exact=True)
    assert one.pairs == two.pairs
