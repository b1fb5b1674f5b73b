"""No look-ahead, end to end: what happens after the first fold cannot change its forecasts.

Every model in ``forecasting.models.MODELS`` (the LSTM tiny, with its default features;
Prophet with its defaults, and again with an RSI regressor) is backtested on ~400 daily
candles with 3 folds. Then every price after the first fold's last target is tripled
and the backtest is run again with the same seeds: the first fold's forecast rows must
be identical, exactly. Any feature, scaler, interval or model that read one candle too
far would move them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from factories import sine_trend_candles

from forecasting.evaluation import BacktestSettings, walk_forward
from forecasting.models import MODELS, Forecaster, make_model

HORIZON = 5
SETTINGS = BacktestSettings(horizon=HORIZON, folds=3, test_size=45)
PRICES = ["open", "high", "low", "close"]

# Prophet 1.5 calls DataFrame.drop(inplace=True), which pandas 3.1 deprecates: not ours.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.drop:Warning")


def _models() -> dict[str, Forecaster]:
    """Every registered model, plus Prophet with a regressor; small and seeded."""
    settings = {
        **{
            alias: {"lookback": 10, "units": 8, "epochs": 2, "horizon": HORIZON, "seed": 3}
            for alias in ("lstm", "gru", "conv_lstm", "lstm_attention")
        },
        "prophet": {"seed": 3},
    }
    models = {alias: make_model(alias, **settings.get(alias, {})) for alias in MODELS}
    models["prophet_rsi"] = make_model("prophet", regressors="rsi:14", horizon=HORIZON, seed=3)
    return models


def _tripled_after(candles: pd.DataFrame, stamp: pd.Timestamp) -> pd.DataFrame:
    changed = candles.copy()
    later = changed.index > stamp
    changed.loc[later, PRICES] = changed.loc[later, PRICES] * 3
    return changed


def _first_fold_changes(models: dict[str, Forecaster], candles: pd.DataFrame):
    """Both runs' forecasts, and the last target time of the first fold."""
    before = walk_forward(models, candles, SETTINGS).forecasts
    last_target = before.loc[before["fold"] == 1, "timestamp"].max()
    after = walk_forward(models, _tripled_after(candles, last_target), SETTINGS).forecasts
    return before, after, last_target


@pytest.mark.slow
def test_later_prices_do_not_change_the_first_folds_forecasts() -> None:
    candles = sine_trend_candles(400, noise=0.01, seed=5)
    models = _models()
    before, after, last_target = _first_fold_changes(models, candles)

    assert list(dict.fromkeys(before["model"])) == [*MODELS, "prophet_rsi"]
    # The first fold's targets stop well before the end: the change reaches later folds.
    assert last_target < candles.index[-HORIZON]
    for model in before["model"].unique():
        first = before[(before["model"] == model) & (before["fold"] == 1)]
        again = after[(after["model"] == model) & (after["fold"] == 1)]
        assert len(first) > 0
        pd.testing.assert_frame_equal(
            first.reset_index(drop=True), again.reset_index(drop=True), check_exact=True
        )
        # ...while the last fold, fitted on tripled prices, does move.
        last = before[(before["model"] == model) & (before["fold"] == 3)]
        moved = after[(after["model"] == model) & (after["fold"] == 3)]
        assert not np.allclose(last["yhat"], moved["yhat"]), model


class _Leaky(Forecaster):
    """Forecasts the mean of the whole series: a look-ahead the check above must catch."""

    alias = "leaky"
    title = "Leaky"

    def __init__(self, everything: pd.DataFrame | None = None) -> None:
        self.everything = everything

    def _fit(self, candles: pd.DataFrame, **_: object) -> None:
        pass

    def _predict(self, horizon: int, history: pd.DataFrame):
        return np.full(horizon, float(self.everything["close"].mean())), None, None


def test_the_check_catches_a_model_that_looks_ahead() -> None:
    candles = sine_trend_candles(400, noise=0.01, seed=5)
    before = walk_forward({"leaky": _Leaky(candles)}, candles, SETTINGS).forecasts
    last_target = before.loc[before["fold"] == 1, "timestamp"].max()
    changed = _tripled_after(candles, last_target)
    after = walk_forward({"leaky": _Leaky(changed)}, changed, SETTINGS).forecasts

    first, again = before[before["fold"] == 1], after[after["fold"] == 1]
    # The actual closes of the first fold are untouched; the leaky forecasts are not.
    assert first["y"].tolist() == again["y"].tolist()
    assert not np.allclose(first["yhat"], again["yhat"])


def _scaled_between(candles: pd.DataFrame, first: int, last: int, factor: float) -> pd.DataFrame:
    changed = candles.copy()
    rows = changed.index[first : last + 1]
    changed.loc[rows, PRICES] = changed.loc[rows, PRICES] * factor
    return changed


@pytest.mark.slow
def test_every_model_forecasts_from_exactly_the_candles_up_to_its_origin() -> None:
    """Change closes strictly between a fold's cutoff and a later origin of that fold.

    Forecasts from origins before the change must be bit-identical; forecasts from
    origins at or after it must move, for every model (each uses the price). Prophet,
    fitted once per fold and forecasting from a timestamp alone, failed the second half:
    its "step 1" from a late origin ignored every candle since the cutoff.
    """
    candles = sine_trend_candles(400, noise=0.01, seed=5)
    models = _models()
    before = walk_forward(models, candles, SETTINGS)
    cutoff = before.folds[0].cutoff
    first, last = cutoff + 5, cutoff + 7  # strictly inside fold 1 (origins cutoff .. +14)
    assert cutoff + 10 in before.folds[0].origins
    after = walk_forward(models, _scaled_between(candles, first, last, 1.5), SETTINGS)
    changed_from = candles.index[first]

    columns = ["fold", "origin", "timestamp", "step", "yhat", "lower", "upper"]
    for model in [*MODELS, "prophet_rsi"]:
        old = before.forecasts[
            (before.forecasts["model"] == model) & (before.forecasts["fold"] == 1)
        ]
        new = after.forecasts[(after.forecasts["model"] == model) & (after.forecasts["fold"] == 1)]
        early_old = old[old["origin"] < changed_from][columns].reset_index(drop=True)
        early_new = new[new["origin"] < changed_from][columns].reset_index(drop=True)
        assert len(early_old) > 0
        pd.testing.assert_frame_equal(early_old, early_new, check_exact=True, obj=model)
        late_old = old[old["origin"] >= changed_from]["yhat"].to_numpy()
        late_new = new[new["origin"] >= changed_from]["yhat"].to_numpy()
        assert len(late_old) == len(late_new) > 0
        assert not np.array_equal(late_old, late_new), f"{model} ignored the changed candles"
