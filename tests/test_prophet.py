"""Prophet behind the common interface: it learns, its regressors are lagged, it is seeded,
it refits (warm-started) on new candles, it never shows a price below zero silently.

The contract shared with the other models is in ``test_models_contract.py``.
"""

from __future__ import annotations

import pickle
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from factories import sine_trend_candles

from forecasting.errors import (
    ConfigurationError,
    DataFormatError,
    ForecastingError,
    InsufficientHistory,
    ModelFailed,
)
from forecasting.features import compute_features, parse_features
from forecasting.models import ProphetModel

FIELD_CASES = Path(__file__).resolve().parents[2] / "shared" / "field-cases"
_STAN_PARAMS = ("k", "m", "sigma_obs", "delta", "beta")

# Prophet 1.5 calls DataFrame.drop(inplace=True), which pandas 3.1 deprecates: not ours.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.drop:Warning")


def test_learns_a_trend_with_a_weekly_cycle_better_than_naive() -> None:
    # Prophet's defaults model a piecewise-linear trend plus weekly (and, past two years,
    # yearly) seasonality; a 30-candle cycle is none of those, so the series here is a
    # trend and a weekly cycle (0.2 % noise). With the 30-candle cycle added, default
    # Prophet does only about 20 % better than naive over these origins, and worse
    # from the last one: it is not a model for that.
    # Fitted on the first 500 of 600 daily candles, forecasting 10 candles from ten
    # origins (500, 510, ..., 590): its MAE is 4-8 % of naive's over data seeds 0-2.
    candles = sine_trend_candles(600, noise=0.002, seed=0, cycles=((7.0, 0.03),))
    model = ProphetModel().fit(candles.iloc[:500])
    close = candles["close"].to_numpy()
    model_errors, naive_errors = [], []
    for origin in range(500, 591, 10):
        forecast = model.predict(10, history=candles.iloc[:origin])
        actual = close[origin : origin + 10]
        model_errors.append(np.abs(forecast.mean - actual).mean())
        naive_errors.append(np.abs(close[origin - 1] - actual).mean())
        assert ((forecast.lower <= actual) & (actual <= forecast.upper)).mean() >= 0.5
    ratio = np.mean(model_errors) / np.mean(naive_errors)
    assert ratio < 0.3, f"Prophet MAE is {ratio:.0%} of naive's"


def test_regressors_are_lagged_by_the_horizon() -> None:
    candles = sine_trend_candles(200, noise=0.01)
    model = ProphetModel(regressors="rsi:14", horizon=5).fit(candles)
    assert model.regressor_columns_ == ["reg_rsi_14"]
    # In training, a candle's regressor is the RSI five candles earlier (Prophet keeps
    # it standardised: undo that with its own mean and scale).
    scale = model.model_.extra_regressors["reg_rsi_14"]
    fitted = model.model_.history["reg_rsi_14"] * scale["std"] + scale["mu"]
    rsi = compute_features(candles, parse_features("rsi:14"), drop_warmup=False)["rsi_14"]
    expected = rsi.shift(5).dropna()
    np.testing.assert_allclose(fitted.to_numpy(), expected.to_numpy(), rtol=1e-9)
    assert pd.Timestamp(model.model_.history["ds"].iloc[0]) == expected.index[0].tz_localize(None)

    for horizon in (1, 5):  # every value needed is known at the origin
        forecast = model.predict(horizon)
        assert forecast.horizon == horizon
        assert np.isfinite(forecast.mean).all()
        assert (forecast.lower <= forecast.mean).all()
        assert (forecast.mean <= forecast.upper).all()
    with pytest.raises(ConfigurationError, match="at most 5 ahead; asked for 6"):
        model.predict(6)


def test_regressors_need_their_warm_up_and_lag() -> None:
    candles = sine_trend_candles(200, noise=0.01)
    # 10 candles for Prophet, plus RSI(14)'s warm-up of 14 and the lag of 5.
    with pytest.raises(InsufficientHistory, match="at least 29 candles"):
        ProphetModel(regressors="rsi:14", horizon=5).fit(candles.iloc[:28])
    with pytest.raises(ConfigurationError, match="Unknown feature 'rsx'"):
        ProphetModel(regressors="rsx:14").fit(candles)


@pytest.mark.parametrize(
    ("max_train", "n", "expected"),
    [
        (50, 200, 50),  # the latest 50 of 200
        (3000, 200, 200),  # the default: all of a short history
        (10, 10, 10),  # the smallest allowed, on the smallest history
    ],
)
def test_max_train_candles_bounds_the_fit(max_train: int, n: int, expected: int) -> None:
    candles = sine_trend_candles(n, noise=0.01)
    model = ProphetModel(max_train_candles=max_train).fit(candles)
    assert model.train_candles_ == expected
    fitted = model.model_.history
    assert len(fitted) == expected
    assert fitted["ds"].iloc[-1] == candles.index[-1].tz_localize(None)  # the latest ones
    assert model.predict(3).horizon == 3


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_train_candles": 0}, "max_train_candles must be at least 10"),  # was: all
        ({"max_train_candles": 5}, "max_train_candles must be at least 10"),  # too few
        ({"seasonality_mode": "both"}, "additive or multiplicative"),  # unknown mode
        ({"regressors": "rsi:14", "horizon": 0}, "horizon must be at least 1"),  # no lag
        ({"changepoint_prior_scale": 0.0}, "changepoint_prior_scale must be above 0"),
        ({"uncertainty_samples": 0}, "uncertainty_samples must be at least 1"),  # no interval
        ({"weekly_seasonality": "yes"}, 'weekly_seasonality is "auto", true or false'),
    ],
)
def test_invalid_settings_are_refused_at_fit(settings: dict, message: str) -> None:
    model = ProphetModel(**settings)  # __init__ stores, even nonsense
    with pytest.raises(ConfigurationError, match=message):
        model.fit(sine_trend_candles(100, noise=0.01))


def test_the_seed_fixes_the_interval_and_nothing_else() -> None:
    candles = sine_trend_candles(150, noise=0.01)
    first = ProphetModel(seed=3).fit(candles).predict(7)
    again = ProphetModel(seed=3).fit(candles).predict(7)
    other = ProphetModel(seed=4).fit(candles).predict(7)
    np.testing.assert_array_equal(again.lower, first.lower)
    np.testing.assert_array_equal(again.upper, first.upper)
    np.testing.assert_array_equal(other.mean, first.mean)  # the mean is not simulated
    assert not np.array_equal(other.lower, first.lower)

    # Prophet's simulations draw from a generator of their own, never numpy's global one.
    np.random.seed(123)  # noqa: NPY002 - the legacy global generator is what is tested
    state = np.random.get_state()  # noqa: NPY002
    ProphetModel(seed=3).fit(candles).predict(7)
    after = np.random.get_state()  # noqa: NPY002
    assert all(np.array_equal(a, b) for a, b in zip(state, after, strict=True))


def test_prices_without_the_log_transform() -> None:
    candles = sine_trend_candles(150, noise=0.01)
    logged = ProphetModel().fit(candles).predict(5)
    plain = ProphetModel(log_transform=False).fit(candles).predict(5)
    for forecast in (logged, plain):
        assert (forecast.lower <= forecast.mean).all()
        assert (forecast.mean <= forecast.upper).all()
        last = candles["close"].iloc[-1]
        assert (np.abs(forecast.mean / last - 1) < 0.2).all()  # in price units
    assert not np.allclose(logged.mean, plain.mean)


def _field_case(name: str) -> pd.DataFrame:
    from forecasting.data import read_ohlcv_csv

    path = FIELD_CASES / name
    if not path.is_file():
        pytest.skip(f"{name} is not available (../shared/field-cases is absent)")
    return read_ohlcv_csv(path).candles


def test_the_fast_stan_hand_off_and_local_generator_match_stock_prophet_exactly() -> None:
    from prophet import Prophet

    candles = sine_trend_candles(200, noise=0.01)  # 200 rows: Stan's L-BFGS, as in use
    model = ProphetModel(seed=5).fit(candles)
    stock = Prophet(interval_width=0.9, uncertainty_samples=300).fit(model._frame(candles))
    assert type(model.model_.stan_backend) is not type(stock.stan_backend)
    for name in _STAN_PARAMS:
        np.testing.assert_array_equal(model.model_.params[name], stock.params[name])

    # The local RandomState(seed) is the stream np.random.seed(seed) gives stock Prophet.
    future = pd.DataFrame({"ds": model.predict(7).timestamps.tz_localize(None)})
    np.random.seed(5)  # noqa: NPY002 - how stock Prophet is seeded
    expected = stock.predict(future)
    forecast = model.predict(7)
    for ours, theirs in (("mean", "yhat"), ("lower", "yhat_lower"), ("upper", "yhat_upper")):
        np.testing.assert_array_equal(getattr(forecast, ours), np.exp(expected[theirs]))

    # The subclasses are built on first use, yet a fitted model still pickles.
    again = pickle.loads(pickle.dumps(model)).predict(7)
    np.testing.assert_array_equal(again.lower, forecast.lower)


def test_concurrent_predictions_each_get_the_interval_they_get_alone() -> None:
    candles = sine_trend_candles(150, noise=0.01)
    models = {seed: ProphetModel(seed=seed).fit(candles) for seed in (3, 4)}
    alone = {seed: model.predict(7) for seed, model in models.items()}
    start, done = threading.Barrier(3), threading.Event()

    def predict(seed: int) -> list:
        start.wait()
        return [models[seed].predict(7) for _ in range(4)]

    def use_the_global_generator() -> None:  # another session's code, meanwhile
        start.wait()
        while not done.is_set():
            np.random.seed(0)  # noqa: NPY002 - what must not disturb the model
            np.random.normal(size=100)  # noqa: NPY002

    state = np.random.get_state()  # noqa: NPY002 - restored for the tests that follow
    try:
        with ThreadPoolExecutor(3) as pool:
            other = pool.submit(use_the_global_generator)
            results = {seed: pool.submit(predict, seed) for seed in models}
            together = {seed: future.result() for seed, future in results.items()}
            done.set()
            other.result()
    finally:
        done.set()
        np.random.set_state(state)  # noqa: NPY002
    for seed, forecasts in together.items():
        for forecast in forecasts:
            np.testing.assert_array_equal(forecast.lower, alone[seed].lower)
            np.testing.assert_array_equal(forecast.upper, alone[seed].upper)
    assert not np.array_equal(alone[3].lower, alone[4].lower)


def test_a_longer_history_means_a_warm_started_refit_on_exactly_those_candles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    candles = sine_trend_candles(230, noise=0.01)
    n, m, horizon = 200, 20, 7
    fitted = ProphetModel(seed=1).fit(candles.iloc[:n])
    before = fitted.predict(horizon)

    forecast = fitted.predict(horizon, history=candles.iloc[: n + m])
    refit = ProphetModel(seed=1).fit(candles.iloc[: n + m], warm_start=fitted)
    assert refit.warm_started_
    expected = refit.predict(horizon)
    for name in ("mean", "lower", "upper"):  # the same fit, bit for bit
        np.testing.assert_array_equal(getattr(forecast, name), getattr(expected, name))
    assert forecast.timestamps[0] == candles.index[n + m - 1] + pd.Timedelta(days=1)
    assert forecast.timestamps.equals(expected.timestamps)

    # The fitted model itself is unchanged.
    assert len(fitted.history_) == n
    after = fitted.predict(horizon)
    for name in ("mean", "lower", "upper"):
        np.testing.assert_array_equal(getattr(after, name), getattr(before, name))
    assert after.timestamps.equals(before.timestamps)

    # The candles it was fitted on (even as another frame) need no refit.
    fits = []
    fit = ProphetModel._fit
    monkeypatch.setattr(
        ProphetModel, "_fit", lambda self, *a, **k: fits.append(1) or fit(self, *a, **k)
    )
    same = fitted.predict(horizon, history=candles.iloc[:n].copy())
    np.testing.assert_array_equal(same.lower, before.lower)
    assert fits == []
    fitted.predict(horizon, history=candles.iloc[: n + 1])
    assert fits == [1]  # one more candle: one refit


def test_a_warm_start_lands_where_a_cold_fit_does() -> None:
    candles = sine_trend_candles(260, noise=0.005)
    previous = ProphetModel().fit(candles.iloc[:240])
    warm = ProphetModel().fit(candles, warm_start=previous)
    cold = ProphetModel().fit(candles)
    assert warm.warm_started_
    assert not cold.warm_started_
    np.testing.assert_allclose(warm.predict(7).mean, cold.predict(7).mean, rtol=0.01)


@pytest.mark.parametrize("other", ["no weekly terms", "fewer changepoints"])
def test_a_warm_start_of_another_shape_fits_cold(other: str) -> None:
    candles = sine_trend_candles(200, noise=0.01)
    if other == "no weekly terms":  # beta is shorter
        previous = ProphetModel(weekly_seasonality=False).fit(candles.iloc[:150])
    else:  # as fitted on under 33 candles (delta is shorter); such fits take seconds
        previous = ProphetModel().fit(candles.iloc[:150])
        params = previous.model_.params
        previous.model_.params = {**params, "delta": params["delta"][:, :15]}
    warm = ProphetModel().fit(candles, warm_start=previous)
    cold = ProphetModel().fit(candles)
    assert not warm.warm_started_
    for name in _STAN_PARAMS:
        np.testing.assert_array_equal(warm.model_.params[name], cold.model_.params[name])


def test_a_price_below_zero_is_floored_with_a_note() -> None:
    candles = _field_case("crashing_token_1d.csv")
    plain = ProphetModel(log_transform=False).fit(candles).predict(14)
    for values in (plain.mean, plain.lower, plain.upper):
        assert (values >= 0).all()
    assert plain.mean[-1] == 0  # the straight line through the crash goes below zero
    assert len(plain.notes) == 1
    assert plain.notes[0].startswith("Prophet forecast a price below zero at ")
    assert plain.notes[0].endswith(
        "of 14 steps (the interval's lower bound at 14); floored at 0 (log_transform is off)."
    )

    logged = ProphetModel().fit(candles).predict(14)  # log prices stay positive
    assert (logged.lower > 0).all()
    assert logged.notes == ()


def test_a_zero_price_is_refused_before_prophet_sees_it() -> None:
    path = FIELD_CASES / "token_with_zero_price_rows_1d.csv"
    if not path.is_file():
        pytest.skip(f"{path.name} is not available (../shared/field-cases is absent)")
    # The file as it is, zero rows included (the CSV reader would drop them).
    candles = pd.read_csv(path, index_col="timestamp", parse_dates=True)
    candles.index = candles.index.tz_localize("UTC").as_unit("ms")
    assert (candles["close"] == 0).sum() == 2
    with pytest.raises(ForecastingError, match="2024-04-10") as raised:
        ProphetModel().fit(candles)
    assert isinstance(raised.value, DataFormatError)


def test_too_few_usable_candles_is_insufficient_history(monkeypatch: pytest.MonkeyPatch) -> None:
    # A regressor undefined on every candle (as a feature can be on odd prices).
    monkeypatch.setattr(
        ProphetModel,
        "_regressor_frame",
        lambda self, candles: pd.DataFrame({"reg_x": np.full(len(candles), np.nan)}),
    )
    with pytest.raises(InsufficientHistory, match="0 of the last 60 have them"):
        ProphetModel(regressors="rsi:14", horizon=3).fit(sine_trend_candles(60))


@pytest.mark.parametrize(
    ("error", "expected", "message"),
    [
        (RuntimeError("Error during optimization! Line search failed"), ModelFailed, "optimiser"),
        (ValueError("Initialization failed."), ModelFailed, "Prophet failed on these 150"),
        (ValueError("Dataframe has less than 2 non-NaN rows."), InsufficientHistory, "at least 2"),
    ],
)
def test_prophet_and_cmdstanpy_errors_join_the_tree(
    monkeypatch: pytest.MonkeyPatch, error: Exception, expected: type, message: str
) -> None:
    import cmdstanpy

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(cmdstanpy.CmdStanModel, "optimize", fail)
    model = ProphetModel()
    with pytest.raises(expected, match=message) as raised:
        model.fit(sine_trend_candles(150, noise=0.01))
    assert raised.value.__cause__ is error
    assert not hasattr(model, "model_")  # a failed fit leaves the model unfitted
