"""When Prophet's conformal interval is calibrated: once per walk-forward fold, at its cutoff.

The walk-forward runs Prophet as a chain of warm-started fits within each fold; each
fold's cold fit at its cutoff calibrates on the errors up to that cutoff, and only the
refits at the later origins of the fold inherit that calibration (see the module docs of
:mod:`forecasting.models.prophet`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from factories import candles_from_close, sine_trend_candles

from forecasting.evaluation.walkforward import BacktestSettings, walk_forward
from forecasting.models import ProphetModel

# Prophet 1.5 calls DataFrame.drop(inplace=True), which pandas 3.1 deprecates: not ours.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.drop:Warning")

# Small and quick: 4 origins x 3 steps = 12 scores, enough for a 90 % interval (9).
SMALL = {"horizon": 3, "calibration_origins": 4, "uncertainty_samples": 50, "seed": 5}


def _random_walk(n: int = 200, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.r_[0.0, np.cumsum(rng.normal(0.0, 0.02, n - 1))])
    return candles_from_close(close, "1d", seed=seed)


def _spy(monkeypatch: pytest.MonkeyPatch) -> tuple[list, list]:
    """Record every calibration (the candles' end, and the model after it) and, for every
    forecast, its origin and the calibration it used."""
    calibrations: list[tuple[pd.Timestamp, ProphetModel]] = []
    forecasts: list[tuple[pd.Timestamp, pd.Timestamp, float, pd.DatetimeIndex]] = []
    calibrate, predict = ProphetModel._calibrate, ProphetModel._predict

    def spy_calibrate(self, candles, *args, **kwargs):
        result = calibrate(self, candles, *args, **kwargs)
        calibrations.append((candles.index[-1], self))
        return result

    def spy_predict(self, horizon, history):
        forecasts.append(
            (
                history.index[-1],
                self.calibration_end_,
                self.interval_quantile_,
                self.calibration_origins_,
            )
        )
        return predict(self, horizon, history)

    monkeypatch.setattr(ProphetModel, "_calibrate", spy_calibrate)
    monkeypatch.setattr(ProphetModel, "_predict", spy_predict)
    return calibrations, forecasts


def test_the_walk_forward_recalibrates_prophet_at_each_fold_cutoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    candles = _random_walk()
    index = candles.index
    settings = BacktestSettings(horizon=3, folds=3, test_size=12)
    calibrations, forecasts = _spy(monkeypatch)
    backtest = walk_forward({"prophet": ProphetModel(**SMALL)}, candles, settings)
    folds = backtest.folds
    assert len(folds) == 3

    # One calibration per fold (not per origin), on the candles up to the fold's cutoff.
    cutoffs = [index[fold.cutoff] for fold in folds]
    assert [end for end, _ in calibrations] == cutoffs
    for (_, model), fold in zip(calibrations, folds, strict=True):
        assert model.calibration_end_ == index[fold.cutoff]
        # Four origins 3 candles apart, the last one 3 candles before the cutoff.
        expected = index[fold.cutoff - 12 : fold.cutoff - 2 : 3]
        assert list(model.calibration_origins_) == list(expected)
        assert 0 < model.interval_quantile_ < np.inf

    # Every forecast of a fold uses that fold's calibration, none an earlier fold's.
    by_origin = {origin: (end, q, origins) for origin, end, q, origins in forecasts}
    for (_, model), fold in zip(calibrations, folds, strict=True):
        for origin in fold.origins:
            end, q, origins = by_origin[index[origin]]
            assert end == index[fold.cutoff]
            assert q == model.interval_quantile_
            assert origins.equals(model.calibration_origins_)
    assert len({tuple(model.calibration_origins_) for _, model in calibrations}) == 3
    rows = backtest.forecasts
    assert len(rows) == 3 * 4 * 3 - 3  # the last two origins: 1 and 2 targets past the data
    assert np.isfinite(rows[["lower", "upper"]].to_numpy()).all()

    # A later fold's calibration is that of a cold fit on its candles: it depends on no
    # earlier fold (the chain's warm start does not reach it).
    fold = folds[1]
    cold = ProphetModel(**SMALL).fit(candles.iloc[: fold.cutoff + 1])
    np.testing.assert_array_equal(cold.calibration_scores_, calibrations[1][1].calibration_scores_)
    assert cold.interval_quantile_ == calibrations[1][1].interval_quantile_


def test_a_fit_warm_started_from_an_earlier_fit_calibrates_as_a_cold_fit() -> None:
    # What the walk-forward does at a fold's cutoff: fit(..., warm_start=previous).
    candles = _random_walk(160)
    previous = ProphetModel(**SMALL).fit(candles.iloc[:150])
    warm = ProphetModel(**SMALL).fit(candles.iloc[:156], warm_start=previous)
    cold = ProphetModel(**SMALL).fit(candles.iloc[:156])
    assert warm.calibration_end_ == candles.index[155]
    assert not warm.warm_started_  # the chain starts cold, as a cold fit's does
    np.testing.assert_array_equal(warm.calibration_scores_, cold.calibration_scores_)
    warm_forecast, cold_forecast = warm.predict(3), cold.predict(3)
    for name in ("mean", "lower", "upper"):
        np.testing.assert_array_equal(getattr(warm_forecast, name), getattr(cold_forecast, name))
    # While a refit at a later origin (updated) keeps the calibration it starts from.
    refit = previous.updated(candles.iloc[:156])
    assert refit.warm_started_
    assert refit.calibration_end_ == previous.calibration_end_ == candles.index[149]
    assert refit.interval_quantile_ == previous.interval_quantile_


def _counting_fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    fits: list[int] = []
    fit = ProphetModel._fit_prophet
    monkeypatch.setattr(
        ProphetModel, "_fit_prophet", lambda self, *a, **k: fits.append(1) or fit(self, *a, **k)
    )
    return fits


@pytest.mark.parametrize("bad", [0.0, np.nan])
def test_a_zero_or_nan_inherited_quantile_is_recomputed_at_the_next_refit(
    bad: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    candles = _random_walk(160)
    model = ProphetModel(**SMALL).fit(candles.iloc[:150])
    assert 0 < model.interval_quantile_ < np.inf
    model.interval_quantile_ = bad  # no calibration gives it (an old model, a bug)
    fits = _counting_fits(monkeypatch)
    refit = model.updated(candles.iloc[:151])
    assert len(fits) == 5  # four calibration fits and the fit on all candles
    assert refit.calibration_end_ == candles.index[150]
    assert list(refit.calibration_origins_) == list(candles.index[138:150:3])
    assert 0 < refit.interval_quantile_ < np.inf
    assert np.isfinite(refit.predict(3).upper).all()
    # The usable calibration it now has is inherited by the next refit, in one fit.
    fits.clear()
    again = refit.updated(candles.iloc[:152])
    assert fits == [1]
    assert again.interval_quantile_ == refit.interval_quantile_
    assert again.calibration_end_ == candles.index[150]


def test_an_unbounded_calibration_is_recomputed_once_its_targets_are_all_new(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A stablecoin pegged at 1.0000 for 150 days, then a random walk: at day 150 every
    # calibration error is zero, so the interval is unbounded (a zero-width one would
    # claim certainty).
    moving = _random_walk(30)
    close = np.r_[np.ones(150), moving["close"].to_numpy() / moving["close"].iloc[0]]
    candles = candles_from_close(close, "1d", seed=3)
    pegged = ProphetModel(**SMALL).fit(candles.iloc[:150])
    assert pegged.interval_quantile_ == np.inf
    assert (pegged.calibration_scores_ == 0).all()
    forecast = pegged.predict(3)
    assert (forecast.lower == 0).all()
    assert np.isinf(forecast.upper).all()
    assert forecast.notes == (
        "Prophet's interval is unbounded: 12 of its 12 calibration errors were zero (the "
        "closes did not change), and a zero-width 90 % interval would claim certainty.",
    )
    fits = _counting_fits(monkeypatch)
    # The next origins re-read mostly the same targets: the refit keeps it, in one fit...
    refit = pegged.updated(candles.iloc[:161])
    assert fits == [1]
    assert refit.interval_quantile_ == np.inf
    assert refit.calibration_end_ == candles.index[149]
    assert refit.predict(3).notes == forecast.notes
    # ...until C H = 12 candles after the calibration's end, all its targets new.
    fits.clear()
    later = refit.updated(candles.iloc[:162])
    assert len(fits) == 5  # four calibration fits and the fit on all candles
    assert later.calibration_end_ == candles.index[161]
    assert list(later.calibration_origins_) == list(candles.index[149:161:3])
    assert 0 < later.interval_quantile_ < np.inf  # huge: the first origin is still pegged
    assert later.interval_notes_ == ()


def test_an_interval_unbounded_for_too_few_candles_is_bounded_once_there_are_enough(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prophet itself asks for 10 candles; a larger minimum keeps its fits quick here
    # (Stan takes seconds on fewer than about 33 candles).
    monkeypatch.setattr(ProphetModel, "_required_history", lambda self: 100)
    candles = sine_trend_candles(150, noise=0.01, seed=4)
    # 110 candles: room for 1 origin of 7 steps, and a 90 % interval needs 9 scores.
    short = ProphetModel().fit(candles.iloc[:110])
    assert short.interval_quantile_ == np.inf
    assert short.calibration_end_ == candles.index[109]
    fits = _counting_fits(monkeypatch)
    # Still too few at the next origin: one fit, warm-started, still unbounded.
    still = short.updated(candles.iloc[:111])
    assert fits == [1]
    assert still.warm_started_
    assert still.interval_quantile_ == np.inf
    assert still.calibration_end_ == candles.index[110]
    # 114 candles hold two origins (14 scores): calibrated, bounded.
    fits.clear()
    enough = still.updated(candles.iloc[:114])
    assert fits == [1, 1, 1]  # two calibration fits and the fit on all candles
    assert 0 < enough.interval_quantile_ < np.inf
    assert enough.calibration_end_ == candles.index[113]
    assert enough.calibration_scores_.shape == (2, 7)
    assert np.isfinite(enough.predict(7).upper).all()
