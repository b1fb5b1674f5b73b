"""Is one model really better than another? Diebold-Mariano tests and a copy check.

The Diebold-Mariano test compares two forecasts' losses on the same targets. For
``h``-step forecasts the loss differences are autocorrelated up to lag ``h - 1``, so
their variance sums those autocovariances; Harvey, Leybourne and Newbold (1997) scale
the statistic for small samples and compare it with Student's t on ``n - 1`` degrees
of freedom. A negative statistic means the first model's loss is lower.

The copy check asks how much of a forecast is just the last observed close: many price
models, the LSTM included, learn to repeat it and then look accurate in price terms
while predicting nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from forecasting.errors import InsufficientHistory
from forecasting.evaluation.walkforward import Backtest

__all__ = ["DMResult", "copy_check", "diebold_mariano", "dm_table"]

LOSSES = {
    "squared": lambda e: e**2,
    "absolute": np.abs,
}


@dataclass(frozen=True)
class DMResult:
    """One Diebold-Mariano test.

    Attributes
    ----------
    statistic
        HLN-corrected DM statistic; negative when the first forecast's loss is lower.
    pvalue
        For ``alternative``, from Student's t with ``n - 1`` degrees of freedom.
    n
        Paired forecasts compared.
    horizon
        Steps ahead of the forecasts (lags of autocorrelation allowed: ``horizon - 1``);
        in :func:`dm_table`, fewer when the origins are more than a candle apart.
    loss
        ``"squared"`` or ``"absolute"``.
    alternative
        ``"two-sided"``, ``"less"`` (first is more accurate) or ``"greater"``.
    mean_loss_difference
        Mean of first loss minus second loss.
    """

    statistic: float
    pvalue: float
    n: int
    horizon: int
    loss: str
    alternative: str
    mean_loss_difference: float

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return asdict(self)


def diebold_mariano(
    actual: np.ndarray,
    forecast_a: np.ndarray,
    forecast_b: np.ndarray,
    *,
    horizon: int = 1,
    loss: str = "squared",
    alternative: str = "two-sided",
) -> DMResult:
    """Diebold-Mariano test with the Harvey-Leybourne-Newbold correction.

    Parameters
    ----------
    actual, forecast_a, forecast_b
        Equal-length arrays, in time order.
    horizon
        Steps ahead the forecasts were made.
    loss
        ``"squared"`` or ``"absolute"`` error.
    alternative
        ``"two-sided"``; ``"less"``: A's loss is lower; ``"greater"``: B's is.

    Raises
    ------
    InsufficientHistory
        With fewer than three pairs, or when the losses never differ.
    ValueError
        For an unknown ``loss`` or ``alternative``.
    """
    # Checked first, so a typo fails the same way (ValueError) whatever the data.
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; use one of {', '.join(LOSSES)}")
    if alternative not in ("two-sided", "less", "greater"):
        raise ValueError(f"unknown alternative {alternative!r}")
    actual = np.asarray(actual, dtype="float64")
    a = np.asarray(forecast_a, dtype="float64")
    b = np.asarray(forecast_b, dtype="float64")
    n = len(actual)
    if n < 3 or len(a) != n or len(b) != n:
        raise InsufficientHistory("The Diebold-Mariano test needs three or more paired forecasts.")
    loss_fn = LOSSES[loss]
    d = loss_fn(actual - a) - loss_fn(actual - b)
    mean = d.mean()
    centred = d - mean
    # Autocovariances up to lag h-1, each divided by n (as Diebold and Mariano do).
    gamma = [np.dot(centred[k:], centred[: n - k]) / n for k in range(min(horizon, n))]
    variance = (gamma[0] + 2 * sum(gamma[1:])) / n
    if not variance > 0:
        raise InsufficientHistory(
            "The two forecasts' losses do not vary: the Diebold-Mariano test is undefined."
        )
    correction = np.sqrt((n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n)
    statistic = float(correction * mean / np.sqrt(variance))
    # scipy.stats takes half a second to import: only scoring pays for it, not app start.
    from scipy import stats

    distribution = stats.t(df=n - 1)
    if alternative == "two-sided":
        pvalue = 2 * distribution.sf(abs(statistic))
    elif alternative == "less":
        pvalue = distribution.cdf(statistic)
    else:
        pvalue = distribution.sf(statistic)
    return DMResult(statistic, float(pvalue), n, int(horizon), loss, alternative, float(mean))


def dm_table(
    backtest: Backtest,
    *,
    loss: str = "squared",
    baseline: str = "naive",
    level: float = 0.05,
) -> pd.DataFrame:
    """DM tests per horizon step: each model against ``baseline``, and LSTM against Prophet.

    Two-sided tests; ``verdict`` says it in words, e.g. "lstm is not significantly
    better than naive at the 5 % level". A pair whose test is undefined (losses that
    never differ, a variance estimate that is not positive) has no row.

    The step-``h`` forecasts come from origins ``stride`` candles apart, so their errors
    share target candles only up to lag ``ceil(h / stride) - 1``: that is the
    ``horizon`` each test allows for (``h`` itself when every candle is an origin).
    """
    forecasts = backtest.forecasts
    stride = max(int(backtest.settings.stride), 1)
    models = backtest.models
    pairs = [(m, baseline) for m in models if m != baseline and baseline in models]
    if "lstm" in models and "prophet" in models:
        pairs.append(("lstm", "prophet"))
    rows = []
    for step, at_step in forecasts.groupby("step"):
        wide = at_step.pivot_table(index="timestamp", columns="model", values="yhat")
        actual = at_step.drop_duplicates("timestamp").set_index("timestamp")["y"]
        for first, second in pairs:
            if first not in wide or second not in wide:
                continue
            both = wide[[first, second]].dropna()
            try:
                result = diebold_mariano(
                    actual.loc[both.index].to_numpy(),
                    both[first].to_numpy(),
                    both[second].to_numpy(),
                    # Origins further apart than a step overlap less: counting lags
                    # that share no target only adds noise (and can turn the variance
                    # estimate negative, which drops the test).
                    horizon=math.ceil(int(step) / stride),
                    loss=loss,
                )
            except InsufficientHistory:
                continue
            rows.append(
                {
                    "step": int(step),
                    "model": first,
                    "against": second,
                    **result.to_dict(),
                    "verdict": _verdict(first, second, result, level),
                }
            )
    # Named columns even without a row (a single model, too few forecasts), so that
    # dm_tests.csv keeps its header and callers can select columns.
    columns = ["step", "model", "against", *DMResult.__dataclass_fields__, "verdict"]
    return pd.DataFrame(rows, columns=columns)


def _verdict(first: str, second: str, result: DMResult, level: float) -> str:
    percent = f"{level * 100:g} %"
    if result.pvalue >= level:
        return (
            f"{first} is not significantly better than {second} at the {percent} level"
            if result.statistic < 0
            else f"{first} is not significantly different from {second} at the {percent} level"
        )
    better, worse = (first, second) if result.statistic < 0 else (second, first)
    return f"{better} is significantly better than {worse} at the {percent} level"


def copy_check(backtest: Backtest, *, threshold: float = 0.2) -> pd.DataFrame:
    """How much each model's forecast is the last observed close.

    Columns: ``change_correlation`` (of forecast changes with actual changes from the
    origin), ``level_correlation`` (of the forecast with the close at the origin),
    ``relative_move`` (mean absolute forecast change over mean absolute actual change)
    and ``copies_last`` (``relative_move`` below ``threshold``: the forecast barely
    moves from the last close, so its accuracy is the naive forecast's).
    """
    rows = {}
    for model, group in backtest.forecasts.groupby("model", sort=False):
        predicted_change = (group["yhat"] - group["y_origin"]).to_numpy()
        actual_change = (group["y"] - group["y_origin"]).to_numpy()
        moved = np.mean(np.abs(actual_change))
        relative = float(np.mean(np.abs(predicted_change)) / moved) if moved > 0 else np.nan
        rows[model] = {
            "change_correlation": _correlation(predicted_change, actual_change),
            "level_correlation": _correlation(
                group["yhat"].to_numpy(), group["y_origin"].to_numpy()
            ),
            "relative_move": relative,
            "copies_last": bool(relative < threshold) if np.isfinite(relative) else True,
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    if np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])
