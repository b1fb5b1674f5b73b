"""The contract every model in ``forecasting.models.MODELS`` keeps, run over all of them.

LSTM- and Prophet-specific behaviour (learning, saving, regressors) lives in
``test_lstm.py`` and ``test_prophet.py``.
"""

from __future__ import annotations

import copy
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from factories import random_walk_candles, sine_trend_candles

from forecasting.errors import ConfigurationError, DataFormatError, InsufficientHistory
from forecasting.models import MODELS, Forecast, Forecaster, NotFittedError, make_model

ROOT = Path(__file__).resolve().parents[1]

# alias, settings, too_few: a candle count each model must refuse with these settings.
CASES = [
    pytest.param("naive", {}, 1, id="naive"),  # needs two closes for a spread
    pytest.param("drift", {}, 1, id="drift"),  # needs two closes for a slope
    # a season of 7 daily candles plus one
    pytest.param("seasonal_naive", {}, 7, id="seasonal_naive"),
    # a 7-candle window plus one
    pytest.param("moving_average", {}, 7, id="moving_average"),
    # Prophet's own defaults: only the data is short (it needs 10 candles)
    pytest.param("prophet", {}, 9, id="prophet"),
    # tiny and quick; needs 33 warm-up + 1 + 10 + 5 + 8 = 57 candles
    pytest.param(
        "lstm",
        {"lookback": 10, "horizon": 5, "units": 8, "epochs": 3, "batch_size": 32},
        40,
        id="lstm",
    ),
    # the LSTM's other network families, as tiny (same warm-up and windows)
    *(
        pytest.param(
            alias,
            {"lookback": 10, "horizon": 5, "units": 8, "epochs": 3, "batch_size": 32},
            40,
            id=alias,
        )
        for alias in ("gru", "conv_lstm", "lstm_attention")
    ),
]

HORIZON = 5  # the tiny LSTM forecasts at most 5 candles

# Prophet 1.5 calls DataFrame.drop(inplace=True), which pandas 3.1 deprecates: not ours.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.drop:Warning")


def test_the_table_covers_every_model() -> None:
    assert {case.values[0] for case in CASES} == set(MODELS)


def _expected_timestamps(last: pd.Timestamp, horizon: int, timeframe: str) -> list[pd.Timestamp]:
    if timeframe == "1b":
        return list(pd.bdate_range(last + pd.offsets.BDay(1), periods=horizon))
    step = {"1d": pd.Timedelta(days=1), "4h": pd.Timedelta(hours=4)}[timeframe]
    return [last + step * k for k in range(1, horizon + 1)]


def _check_forecast(forecast: Forecast, model: Forecaster, horizon: int) -> None:
    assert isinstance(forecast, Forecast)
    assert forecast.horizon == horizon
    assert forecast.model == model.alias
    assert np.isfinite(forecast.mean).all()
    if forecast.lower is not None:
        assert forecast.upper is not None
        assert (forecast.lower <= forecast.mean).all()
        assert (forecast.mean <= forecast.upper).all()
        assert (forecast.lower < forecast.upper).any()  # an interval, not a point
        assert forecast.level == model.level
    else:
        assert forecast.level is None


@pytest.mark.parametrize(
    ("timeframe", "n"),
    [
        ("1d", 120),  # crypto daily: every day of the week
        ("4h", 120),  # intraday
        ("1b", 123),  # business days: forecasts skip weekends (123 ends on a Wednesday)
    ],
)
@pytest.mark.parametrize(("alias", "settings", "too_few"), CASES)
def test_fit_returns_the_model_and_forecasts_the_next_candles(
    alias: str, settings: dict, too_few: int, timeframe: str, n: int
) -> None:
    candles = sine_trend_candles(n, timeframe, noise=0.01)
    model = make_model(alias, **settings)
    assert model.fit(candles) is model

    forecast = model.predict(HORIZON)
    _check_forecast(forecast, model, HORIZON)
    expected = _expected_timestamps(candles.index[-1], HORIZON, timeframe)
    assert list(forecast.timestamps) == expected
    assert str(forecast.timestamps.tz) == "UTC"
    if timeframe == "1b":
        assert (forecast.timestamps.day_of_week < 5).all()
        assert forecast.timestamps[2] - forecast.timestamps[1] == pd.Timedelta(days=3)
    frame = forecast.to_frame()
    assert list(frame.columns) == ["mean", "lower", "upper"]
    assert json.loads(json.dumps(forecast.to_records()))[0]["mean"] == pytest.approx(
        forecast.mean[0]
    )


@pytest.mark.parametrize(("alias", "settings", "too_few"), CASES)
def test_predict_from_a_longer_history(alias: str, settings: dict, too_few: int) -> None:
    candles = sine_trend_candles(140, noise=0.01)
    model = make_model(alias, **settings).fit(candles.iloc[:120])
    own = model.predict(3)

    later = model.predict(3, history=candles)
    _check_forecast(later, model, 3)
    assert list(later.timestamps) == _expected_timestamps(candles.index[-1], 3, "1d")
    if alias == "naive":
        assert (later.mean == candles["close"].iloc[-1]).all()
    # Conditioning on a history does not change what was learned.
    again = model.predict(3)
    np.testing.assert_array_equal(again.mean, own.mean)
    assert list(again.timestamps) == _expected_timestamps(candles.index[119], 3, "1d")


@pytest.mark.parametrize(("alias", "settings", "too_few"), CASES)
def test_misuse_raises_the_documented_errors(alias: str, settings: dict, too_few: int) -> None:
    candles = sine_trend_candles(120, noise=0.01)
    model = make_model(alias, **settings)
    with pytest.raises(NotFittedError, match="fit"):
        model.predict(3)
    with pytest.raises(InsufficientHistory, match=f"got {too_few}"):
        model.fit(candles.iloc[:too_few])
    with pytest.raises(NotFittedError):
        model.predict(3)  # a refused fit fits nothing

    model.fit(candles)
    for horizon in (0, -1):
        with pytest.raises(ConfigurationError, match="horizon must be a whole number from 1"):
            model.predict(horizon)
    # A later failed fit leaves the model unfitted rather than half-refitted.
    with pytest.raises(InsufficientHistory):
        model.fit(candles.iloc[:too_few])
    with pytest.raises(NotFittedError):
        model.predict(3)


@pytest.mark.parametrize(("alias", "settings", "too_few"), CASES)
def test_level_outside_zero_one_is_refused(alias: str, settings: dict, too_few: int) -> None:
    candles = sine_trend_candles(120, noise=0.01)
    for level in (0.0, 1.0, 90):
        with pytest.raises(ConfigurationError, match="level"):
            make_model(alias, **settings, level=level).fit(candles)


@pytest.mark.parametrize(("alias", "settings", "too_few"), CASES)
def test_inputs_are_not_modified(alias: str, settings: dict, too_few: int) -> None:
    candles = sine_trend_candles(140, noise=0.01)
    train, history = candles.iloc[:120], candles
    train_before, history_before = copy.deepcopy(train), copy.deepcopy(history)
    model = make_model(alias, **settings).fit(train)
    model.predict(HORIZON)
    model.predict(HORIZON, history=history)
    pd.testing.assert_frame_equal(train, train_before)
    pd.testing.assert_frame_equal(history, history_before)


@pytest.mark.parametrize(("alias", "settings", "too_few"), CASES)
def test_same_settings_same_forecast(alias: str, settings: dict, too_few: int) -> None:
    candles = sine_trend_candles(120, noise=0.01)
    first = make_model(alias, **settings).fit(candles).predict(HORIZON)
    second = make_model(alias, **settings).fit(candles).predict(HORIZON)
    np.testing.assert_array_equal(first.mean, second.mean)
    np.testing.assert_array_equal(first.lower, second.lower)
    np.testing.assert_array_equal(first.upper, second.upper)


def _learned(model: Forecaster) -> list[str]:
    return sorted(name for name in vars(model) if name.endswith("_"))


@pytest.mark.parametrize(("alias", "settings", "too_few"), CASES)
def test_init_only_stores_settings(alias: str, settings: dict, too_few: int) -> None:
    cls = MODELS[alias]
    signature = inspect.signature(cls.__init__)
    defaults = {name: p.default for name, p in signature.parameters.items() if name != "self"}
    model = cls(**settings)
    assert model.get_params() == {**defaults, **settings}
    assert _learned(model) == []
    assert repr(model).startswith(f"{cls.__name__}(")

    clone = model.clone()
    assert type(clone) is cls
    assert clone is not model
    assert clone.get_params() == model.get_params()
    assert _learned(clone) == []

    model.fit(sine_trend_candles(120, noise=0.01))
    assert _learned(model)
    refit_clone = model.clone()  # a fitted model's clone starts over
    assert _learned(refit_clone) == []
    with pytest.raises(NotFittedError):
        refit_clone.predict(1)


@pytest.mark.parametrize(("alias", "settings", "too_few"), CASES)
def test_a_second_fit_overwrites_the_first(alias: str, settings: dict, too_few: int) -> None:
    first_data = sine_trend_candles(120, noise=0.01, seed=1)
    second_data = random_walk_candles(150, seed=2, start="2023-06-01")
    model = make_model(alias, **settings).fit(first_data).fit(second_data)
    fresh = make_model(alias, **settings).fit(second_data)

    assert _learned(model) == _learned(fresh)
    assert model.history_ is second_data
    refit, direct = model.predict(HORIZON), fresh.predict(HORIZON)
    assert list(refit.timestamps) == list(direct.timestamps)
    np.testing.assert_array_equal(refit.mean, direct.mean)
    np.testing.assert_array_equal(refit.lower, direct.lower)


def test_make_model_refuses_unknown_models_and_settings() -> None:
    with pytest.raises(ConfigurationError, match="Unknown model 'arima'. Choose from: naive"):
        make_model("arima")
    with pytest.raises(ConfigurationError, match="Naive"):
        make_model("naive", window=3)


# --- the simple baselines by hand -----------------------------------------------------------


def test_baseline_point_forecasts_by_hand() -> None:
    candles = sine_trend_candles(60, noise=0.01)
    close = candles["close"].to_numpy()
    steps = np.arange(1, 11)

    naive = make_model("naive").fit(candles).predict(10)
    np.testing.assert_array_equal(naive.mean, np.full(10, close[-1]))

    drift = make_model("drift").fit(candles).predict(10)
    slope = (close[-1] - close[0]) / (len(close) - 1)
    np.testing.assert_allclose(drift.mean, close[-1] + slope * steps)

    # Seasonal naive (daily: a week) repeats the last seven closes, in order.
    seasonal = make_model("seasonal_naive").fit(candles).predict(10)
    np.testing.assert_array_equal(seasonal.mean, np.r_[close[-7:], close[-7:-4]])

    average = make_model("moving_average", window=5).fit(candles).predict(10)
    np.testing.assert_allclose(average.mean, np.full(10, close[-5:].mean()))

    # Random-walk intervals on log prices: log(upper / mean) widens with sqrt(step), and
    # the interval is the same ratio either side of the forecast.
    half = np.log(naive.upper / naive.mean)
    np.testing.assert_allclose(half, half[0] * np.sqrt(steps))
    np.testing.assert_allclose(np.log(naive.mean / naive.lower), half)
    one_step = np.diff(np.log(close))
    np.testing.assert_allclose(half[0], 1.6448536269514722 * np.sqrt(np.mean(one_step**2)))


@pytest.mark.parametrize(
    ("timeframe", "season", "n"),
    [
        ("4h", 6, 6),  # six 4h candles make a day: seven are needed
        ("1h", 24, 20),  # a day of hourly candles is more than 20 (was an IndexError)
        ("1d", 7, 7),  # a week of days
    ],
)
def test_seasonal_naive_needs_a_full_season_of_the_timeframe(
    timeframe: str, season: int, n: int
) -> None:
    candles = sine_trend_candles(60, timeframe, noise=0.01)
    with pytest.raises(InsufficientHistory, match=f"at least {season + 1} candles"):
        make_model("seasonal_naive").fit(candles.iloc[:n])
    model = make_model("seasonal_naive").fit(candles.iloc[: season + 1])
    assert model.season_ == season
    close = candles["close"].to_numpy()[: season + 1]
    np.testing.assert_array_equal(model.predict(season).mean, close[1:])


@pytest.mark.parametrize(
    ("alias", "settings"),
    [
        ("seasonal_naive", {"season": -2}),  # a negative season
        ("moving_average", {"window": 0}),  # nothing to average
    ],
)
def test_baselines_refuse_meaningless_settings(alias: str, settings: dict) -> None:
    with pytest.raises(ConfigurationError, match="must be a whole number from 1 to 10000"):
        make_model(alias, **settings).fit(sine_trend_candles(30))


def test_naive_interval_covers_a_random_walk_at_its_level() -> None:
    # A Gaussian random walk is exactly naive's model: its 90 % one-step interval should
    # hold the next close about 90 % of the time (500 origins: sd of coverage 1.3 %).
    candles = random_walk_candles(2000, step=2.0, seed=11)
    model = make_model("naive", level=0.9).fit(candles.iloc[:1500])
    close = candles["close"].to_numpy()
    hits = []
    for origin in range(1500, 2000):
        forecast = model.predict(1, history=candles.iloc[:origin])
        hits.append(forecast.lower[0] <= close[origin] <= forecast.upper[0])
        assert forecast.timestamps[0] == candles.index[origin]
    coverage = float(np.mean(hits))
    assert 0.85 <= coverage <= 0.95, coverage


def test_importing_the_models_loads_neither_tensorflow_nor_prophet() -> None:
    code = (
        "import json, sys\n"
        "import forecasting.models\n"
        "from forecasting.models import MODELS, make_model\n"
        "make_model('lstm'); make_model('prophet')\n"
        "heavy = ('tensorflow', 'keras', 'prophet', 'cmdstanpy')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize(
    ("alias", "settings", "phrase"),
    [
        # text for a count
        ("lstm", {"epochs": "x"}, "LSTM epochs must be a whole number from 1 to 500, got 'x'"),
        ("lstm", {"dropout": True}, "dropout must be a number"),  # a flag for a rate
        ("prophet", {"log_transform": "yes"}, "log_transform must be true or false"),
        ("prophet", {"weekly_seasonality": 3}, "weekly_seasonality must be one of auto, true"),
        ("lstm", {"features": 5}, "LSTM features must be text, got 5"),  # no declared range
        ("seasonal_naive", {"season": 2.5}, "season must be a whole number"),
        ("naive", {"level": "0.9"}, "level must be a number"),
    ],
)
def test_settings_are_checked_against_their_annotations(alias, settings, phrase) -> None:
    with pytest.raises(ConfigurationError, match=phrase):
        make_model(alias, **settings).fit(sine_trend_candles(120, noise=0.01))


def test_every_model_declares_what_it_can_do() -> None:
    from forecasting.models.base import Capabilities

    for alias, cls in MODELS.items():
        declared = cls.__dict__.get("capabilities")
        assert isinstance(declared, Capabilities), f"{alias} declares no capabilities"
        params = inspect.signature(cls.__init__).parameters
        assert declared.seeded == ("seed" in params), alias
        assert declared.trained_horizon == ("horizon" in params), alias
        assert declared.interval_methods, alias
        if declared.seed_changes_forecast:
            assert declared.seeded, alias
    # Only Prophet cannot condition on new candles without refitting, and it warm-starts.
    assert [a for a, c in MODELS.items() if not c.capabilities.conditions_on_history] == ["prophet"]
    assert MODELS["prophet"].capabilities.warm_starts
    assert [a for a, c in MODELS.items() if c.capabilities.seed_changes_forecast] == [
        "lstm",
        "gru",
        "conv_lstm",
        "lstm_attention",
    ]


@pytest.mark.parametrize(("alias", "settings", "too_few"), CASES)
def test_a_zero_close_is_refused_in_one_line_never_a_traceback(
    alias: str, settings: dict, too_few: int
) -> None:
    candles = sine_trend_candles(120, noise=0.01)
    broken = candles.copy()
    broken.iloc[60, broken.columns.get_loc("close")] = 0.0
    with pytest.raises(DataFormatError, match="needs positive closes"):
        make_model(alias, **settings).fit(broken)
    model = make_model(alias, **settings).fit(candles.iloc[:100])
    with pytest.raises(DataFormatError, match="the candle at 2022-03-04"):
        model.predict(HORIZON, history=broken.iloc[:110])


@pytest.mark.parametrize(("alias", "settings", "too_few"), CASES)
def test_closes_that_never_change_get_no_zero_width_interval(
    alias: str, settings: dict, too_few: int
) -> None:
    """A stablecoin pegged at 1.0000: the forecast is no change, and no model claims
    certainty with a zero-width interval; an interval with no spread to draw it from is
    unbounded and its forecast says so."""
    candles = sine_trend_candles(120, noise=0.01)
    candles[["open", "high", "low", "close"]] = 1.0
    model = make_model(alias, **settings).fit(candles)
    forecast = model.predict(HORIZON)

    np.testing.assert_allclose(forecast.mean, 1.0, rtol=1e-3)
    if forecast.lower is None:
        return
    width = forecast.upper - forecast.lower
    assert not np.any(width == 0), f"{alias} claims a zero-width interval"
    if np.isinf(forecast.upper).any():
        assert any("unbounded" in note for note in forecast.notes), forecast.notes
