"""Prophet: trend plus seasonality, on log prices by default.

Prophet is imported inside :meth:`ProphetModel._fit`, never by ``import forecasting``.
It gets slow on long intraday histories (three years of 1h candles take over 30 s to
fit), so it is fitted on the last ``max_train_candles`` candles only: the screens say
so. Its ``algorithm='Newton'`` is a slower fallback, not a speed-up, so the default
L-BFGS stays.

Extra regressors come from the features, lagged by ``horizon`` candles: the value used
for a candle is the feature ``horizon`` candles earlier, so every regressor value needed
to forecast ``horizon`` candles ahead is already known at the origin.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from forecasting.errors import ConfigurationError
from forecasting.features import compute_features, parse_features, warmup_length
from forecasting.models.base import Capabilities, Forecaster
from forecasting.preprocessing import denoise

__all__ = ["ProphetModel"]


def _quiet() -> None:
    # cmdstanpy logs every optimisation at INFO; the screens show progress instead.
    for name in ("cmdstanpy", "prophet", "prophet.plot"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("cmdstanpy").disabled = True


class ProphetModel(Forecaster):
    """Facebook/Meta Prophet behind the common interface.

    Parameters
    ----------
    changepoint_prior_scale
        Trend flexibility (Prophet's default 0.05).
    weekly_seasonality, yearly_seasonality, daily_seasonality
        ``"auto"``, ``True`` or ``False`` as in Prophet.
    seasonality_mode
        ``"additive"`` or ``"multiplicative"``.
    log_transform
        Model log prices (multiplicative moves become additive), then exponentiate.
    level
        Interval width (Prophet's ``interval_width``).
    max_train_candles
        Fit on at most this many of the latest candles (speed; see module docs).
    regressors
        Feature specs used as extra regressors, lagged by ``horizon``; ``""`` for none.
    horizon
        The lag of the regressors, and so the longest forecast they allow.
    uncertainty_samples
        Simulations behind the interval.
    seed
        Seed for those simulations: the same seed gives the same interval.
    denoise, denoise_window
        Optional noise reduction (``"none"``, ``"hampel"``, ``"median"``) of the training
        prices over a trailing window (see :mod:`forecasting.preprocessing`); forecasts
        are still scored against the real closes.
    """

    alias = "prophet"
    title = "Prophet"
    capabilities = Capabilities(
        conditions_on_history=False,
        warm_starts=True,
        seeded=True,
        seed_changes_forecast=False,
        trained_horizon=True,
        interval_methods=("simulation",),
        needs_positive_prices=True,
    )

    def __init__(
        self,
        changepoint_prior_scale: float = 0.05,
        weekly_seasonality: bool | str = "auto",
        yearly_seasonality: bool | str = "auto",
        daily_seasonality: bool | str = "auto",
        seasonality_mode: str = "additive",
        log_transform: bool = True,
        level: float = 0.9,
        max_train_candles: int = 3000,
        regressors: str = "",
        horizon: int = 7,
        uncertainty_samples: int = 300,
        seed: int = 42,
        denoise: str = "none",
        denoise_window: int = 7,
    ) -> None:
        self.changepoint_prior_scale = changepoint_prior_scale
        self.weekly_seasonality = weekly_seasonality
        self.yearly_seasonality = yearly_seasonality
        self.daily_seasonality = daily_seasonality
        self.seasonality_mode = seasonality_mode
        self.log_transform = log_transform
        self.level = level
        self.max_train_candles = max_train_candles
        self.regressors = regressors
        self.horizon = horizon
        self.uncertainty_samples = uncertainty_samples
        self.seed = seed
        self.denoise = denoise
        self.denoise_window = denoise_window

    def _specs(self):
        return parse_features(self.regressors) if self.regressors else ()

    def _required_history(self) -> int:
        return 10 + (warmup_length(self._specs()) + int(self.horizon) if self.regressors else 0)

    def _regressor_frame(self, candles: pd.DataFrame) -> pd.DataFrame:
        features = compute_features(candles, self._specs(), drop_warmup=False)
        lagged = features.shift(int(self.horizon))
        lagged.columns = [f"reg_{c}" for c in lagged.columns]
        return lagged

    def _frame(self, candles: pd.DataFrame) -> pd.DataFrame:
        close = candles["close"].astype("float64")
        frame = pd.DataFrame(
            {
                "ds": candles.index.tz_convert("UTC").tz_localize(None),
                "y": (np.log(close) if self.log_transform else close).to_numpy(),
            }
        )
        if self.regressors:
            regressors = self._regressor_frame(candles).reset_index(drop=True)
            frame = pd.concat([frame, regressors], axis=1)
        return frame

    def _fit(
        self, candles: pd.DataFrame, *, progress=None, should_stop=None, warm_start=None
    ) -> None:
        if self.seasonality_mode not in ("additive", "multiplicative"):
            raise ConfigurationError("Prophet seasonality_mode is additive or multiplicative.")
        if int(self.max_train_candles) < 10:
            # iloc[-0:] is the whole frame: 0 would silently train on everything.
            raise ConfigurationError(
                f"Prophet max_train_candles must be at least 10, got {self.max_train_candles}."
            )
        if self.regressors and int(self.horizon) < 1:
            raise ConfigurationError(f"Prophet horizon must be at least 1, got {self.horizon}.")
        _quiet()
        from prophet import Prophet

        self.train_candles_ = min(len(candles), int(self.max_train_candles))
        frame = self._frame(candles).iloc[-self.train_candles_ :].dropna()
        frame["y"] = denoise(frame[["y"]], self.denoise, self.denoise_window)["y"].to_numpy()
        self.model_ = Prophet(
            changepoint_prior_scale=float(self.changepoint_prior_scale),
            weekly_seasonality=self.weekly_seasonality,
            yearly_seasonality=self.yearly_seasonality,
            daily_seasonality=self.daily_seasonality,
            seasonality_mode=self.seasonality_mode,
            interval_width=float(self.level),
            uncertainty_samples=int(self.uncertainty_samples),
        )
        self.regressor_columns_ = [c for c in frame.columns if c.startswith("reg_")]
        for column in self.regressor_columns_:
            self.model_.add_regressor(column)
        if progress is not None:
            progress("fit", 0.0, {"candles": len(frame)})
        self.model_.fit(frame)
        if progress is not None:
            progress("fit", 1.0, {"candles": len(frame)})

    def _predict(self, horizon: int, history: pd.DataFrame):
        if self.regressors and horizon > int(self.horizon):
            raise ConfigurationError(
                f"Prophet's regressors are lagged {self.horizon} candles, so it can forecast "
                f"at most {self.horizon} ahead; asked for {horizon}."
            )
        from forecasting.ohlcv import future_timestamps

        timestamps = future_timestamps(
            history.index[-1], horizon, self.timeframe_, calendar=self.calendar_
        )
        future = pd.DataFrame({"ds": timestamps.tz_convert("UTC").tz_localize(None)})
        if self.regressor_columns_:
            # Lagged features for the future candles come from candles up to the origin.
            specs = self._specs()
            features = compute_features(history, specs, drop_warmup=False)
            values = features.iloc[len(features) - int(self.horizon) :].iloc[:horizon]
            for column in features.columns:
                future[f"reg_{column}"] = values[column].to_numpy()
        # Prophet draws its interval by simulation from numpy's global generator.
        state = np.random.get_state()  # noqa: NPY002 - Prophet samples from the legacy global RNG
        np.random.seed(int(self.seed))  # noqa: NPY002
        try:
            predicted = self.model_.predict(future)
        finally:
            np.random.set_state(state)  # noqa: NPY002
        back = np.exp if self.log_transform else (lambda v: v)
        return (
            back(predicted["yhat"].to_numpy()),
            back(predicted["yhat_lower"].to_numpy()),
            back(predicted["yhat_upper"].to_numpy()),
        )
