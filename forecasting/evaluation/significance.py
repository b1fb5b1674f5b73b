"""Is one model really better than another? Diebold-Mariano tests, a joint test over all
steps, a valid test of directional accuracy, and a copy check.

The Diebold-Mariano test compares two forecasts' losses on the same targets: the mean
loss difference over its standard error. For ``h``-step forecasts the differences are
autocorrelated, so the standard error needs a long-run (HAC) variance. The classic
choice, the autocovariances summed up to lag ``h - 1`` with the Harvey, Leybourne and
Newbold (1997) correction and Student's t on ``n - 1`` degrees of freedom, is kept as
``method="hln"`` (it matches the published worked values), but it rejects a true null
too often with overlapping forecasts: 8-10 % instead of 5 % at horizon 7 over ~114
origins in the calibration suite. The tests the product shows therefore use
``method="ewc"``: the equal-weighted cosine variance with ``B`` cosine terms and
Student's t on ``B`` degrees of freedom (fixed-smoothing asymptotics: Lazarus, Lewis,
Stock and Watson 2018, "HAR inference: recommendations for practice"; for forecast
comparisons, Coroneo and Iacone 2020). ``B = round(0.4 n^(2/3))`` (their rule), capped
so that the cosines' span ``n / B`` is at least twice the overlap ``h``. A negative
statistic means the first model's loss is lower.

:func:`joint_test` answers for all steps at once: the loss differences of each origin
are averaged over the steps 1..H, and that series (autocorrelated over the overlap of
consecutive origins' targets) gets the same test.

:func:`directional_test` asks whether the direction a forecast calls is related to the
direction the price then moves. Pooling every step and every origin into one binomial
test, as if ~800 overlapping calls were independent, rejected "no skill" for the drift
forecast in 42 % of driftless random walks at the 5 % level. Here each step is tested
on origins whose moves do not overlap (then, on a random walk, the calls are
independent draws), with Fisher's exact test of the 2 x 2 table of called against
actual direction (one-sided), the exact small-sample form of Pesaran and Timmermann's
(1992) test: a hit rate above 50 % that only reflects an up-trending market (a forecast
that always says "up") is not skill. Steps are combined with Bonferroni's correction.

The copy check asks how much of a forecast is just the last observed close: many price
models, the LSTM included, learn to repeat it and then look accurate in price terms
while predicting nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from forecasting.errors import ConfigurationError, InsufficientHistory
from forecasting.evaluation.walkforward import Backtest

__all__ = [
    "LOSSES",
    "DMResult",
    "copy_check",
    "diebold_mariano",
    "directional_test",
    "dm_table",
    "joint_test",
    "loss_pairs",
]

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
        The DM statistic; negative when the first forecast's loss is lower.
    pvalue
        For ``alternative``, from Student's t (``B`` degrees of freedom with the EWC
        variance, ``n - 1`` with HLN's).
    n
        Paired forecasts compared.
    horizon
        The overlap allowed for: steps ahead of the forecasts; in :func:`dm_table` and
        :func:`joint_test`, fewer when the origins are more than a candle apart.
    loss
        ``"squared"`` or ``"absolute"``.
    alternative
        ``"two-sided"``, ``"less"`` (first is more accurate) or ``"greater"``.
    mean_loss_difference
        Mean of first loss minus second loss.
    method
        The long-run variance: ``"ewc"`` (equal-weighted cosine) or ``"hln"``.
    dof
        Degrees of freedom of the Student's t reference: ``B``, the cosine terms, with
        EWC; ``n - 1`` with HLN.
    """

    statistic: float
    pvalue: float
    n: int
    horizon: int
    loss: str
    alternative: str
    mean_loss_difference: float
    method: str = "ewc"
    dof: int = 0

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
    method: str = "hln",
) -> DMResult:
    """Diebold-Mariano test (see the module docs for the two variance methods).

    Parameters
    ----------
    actual, forecast_a, forecast_b
        Equal-length arrays, in time order.
    horizon
        Steps ahead the forecasts were made (the overlap of their targets).
    loss
        ``"squared"`` or ``"absolute"`` error.
    alternative
        ``"two-sided"``; ``"less"``: A's loss is lower; ``"greater"``: B's is.
    method
        ``"hln"``: autocovariances to lag ``horizon - 1``, Harvey-Leybourne-Newbold
        correction, t on ``n - 1`` degrees of freedom (Diebold & Mariano 1995; HLN 1997).
        ``"ewc"``: equal-weighted cosine variance, t on ``B`` degrees of freedom (Lazarus
        et al. 2018), the size-correct choice for overlapping forecasts.

    Raises
    ------
    InsufficientHistory
        With fewer than three pairs, or when the losses never differ.
    ConfigurationError
        For an unknown ``loss`` or ``alternative``.
    """
    # Checked first, so a typo fails the same way whatever the data.
    _check_loss(loss)
    actual = np.asarray(actual, dtype="float64")
    a = np.asarray(forecast_a, dtype="float64")
    b = np.asarray(forecast_b, dtype="float64")
    n = len(actual)
    if n < 3 or len(a) != n or len(b) != n:
        raise InsufficientHistory("The Diebold-Mariano test needs three or more paired forecasts.")
    loss_fn = LOSSES[loss]
    d = loss_fn(actual - a) - loss_fn(actual - b)
    return _dm_on_differences(d, horizon, loss, alternative, method)


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ConfigurationError(f"Unknown loss {loss!r}: use one of {', '.join(LOSSES)}.")


def ewc_terms(n: int, overlap: int = 1) -> int:
    """Cosine terms ``B`` of the equal-weighted cosine variance for ``n`` differences.

    ``round(0.4 n^(2/3))`` (Lazarus, Lewis, Stock & Watson 2018), at most ``n / (2
    overlap)`` so that each cosine spans at least twice the forecasts' overlap, at least 1.
    """
    rule = int(round(0.4 * n ** (2.0 / 3.0)))
    return max(1, min(rule, n // max(2 * int(overlap), 1)))


def _dm_on_differences(
    d: np.ndarray, horizon: int, loss: str, alternative: str, method: str = "ewc"
) -> DMResult:
    """The DM test on a series of loss differences (see the module docs)."""
    if alternative not in ("two-sided", "less", "greater"):
        raise ConfigurationError(
            f"Unknown alternative {alternative!r}: use two-sided, less or greater."
        )
    if method not in ("ewc", "hln"):
        raise ConfigurationError(f"Unknown method {method!r}: use ewc or hln.")
    d = np.asarray(d, dtype="float64")
    n = len(d)
    if n < 3:
        raise InsufficientHistory("The Diebold-Mariano test needs three or more paired forecasts.")
    mean = d.mean()
    centred = d - mean
    if method == "ewc":
        terms = ewc_terms(n, horizon)
        t = np.arange(1, n + 1)
        cosines = np.cos(np.pi * np.outer(np.arange(1, terms + 1), t - 0.5) / n)
        lam = np.sqrt(2.0 / n) * (cosines @ centred)
        long_run = float(np.mean(lam**2))
        if not long_run > 0 or not np.isfinite(long_run) or not np.var(d) > 0:
            raise InsufficientHistory(
                "The two forecasts' losses do not vary: the Diebold-Mariano test is undefined."
            )
        statistic = float(np.sqrt(n) * mean / np.sqrt(long_run))
        dof = terms
    else:
        # Autocovariances up to lag h-1, each divided by n (as Diebold and Mariano do).
        gamma = [np.dot(centred[k:], centred[: n - k]) / n for k in range(min(horizon, n))]
        variance = (gamma[0] + 2 * sum(gamma[1:])) / n
        if not variance > 0 and len(gamma) > 1:
            # The truncated (rectangular) sum can go negative in small samples;
            # Bartlett's weights (Newey & West 1987) over the same lags cannot.
            weights = 1 - np.arange(1, len(gamma)) / len(gamma)
            variance = (gamma[0] + 2 * float(np.dot(weights, gamma[1:]))) / n
        if not variance > 0 or not np.isfinite(variance):
            raise InsufficientHistory(
                "The two forecasts' losses do not vary: the Diebold-Mariano test is undefined."
            )
        correction = np.sqrt(max(n + 1 - 2 * horizon + horizon * (horizon - 1) / n, 0.0) / n)
        statistic = float(correction * mean / np.sqrt(variance))
        dof = n - 1
    # scipy.stats takes half a second to import: only scoring pays for it, not app start.
    from scipy import stats

    distribution = stats.t(df=dof)
    if alternative == "two-sided":
        pvalue = 2 * distribution.sf(abs(statistic))
    elif alternative == "less":
        pvalue = distribution.cdf(statistic)
    else:
        pvalue = distribution.sf(statistic)
    return DMResult(
        statistic, float(pvalue), n, int(horizon), loss, alternative, float(mean), method, int(dof)
    )


def loss_pairs(rows_a: pd.DataFrame, rows_b: pd.DataFrame, loss: str) -> pd.DataFrame:
    """Both forecasts' losses on the pairs they share.

    Parameters
    ----------
    rows_a, rows_b
        Forecast rows (``origin, step, y, yhat``) of two models.
    loss
        ``"absolute"`` or ``"squared"``.

    Returns
    -------
    pd.DataFrame
        Indexed by ``(origin, step)``, sorted: columns ``a`` and ``b`` (the losses).
    """
    _check_loss(loss)
    fn = LOSSES[loss]
    a = rows_a.set_index(["origin", "step"])
    b = rows_b.set_index(["origin", "step"])
    common = a.index.intersection(b.index).sort_values()
    a, b = a.loc[common], b.loc[common]
    return pd.DataFrame(
        {
            "a": fn(a["y"].to_numpy(dtype="float64") - a["yhat"].to_numpy(dtype="float64")),
            "b": fn(b["y"].to_numpy(dtype="float64") - b["yhat"].to_numpy(dtype="float64")),
        },
        index=common,
    )


def joint_test(
    rows_a: pd.DataFrame,
    rows_b: pd.DataFrame,
    *,
    loss: str = "absolute",
    stride: int = 1,
    alternative: str = "two-sided",
) -> DMResult:
    """One Diebold-Mariano test over every horizon step at once.

    For each origin where both models forecast every step ``1..H``, the loss
    differences are averaged over the steps; consecutive origins ``stride`` candles
    apart share targets up to lag ``ceil(H / stride) - 1``, which the equal-weighted
    cosine variance allows for (``method="ewc"`` of :func:`diebold_mariano`). Origins
    missing a step (the end of the data, a gap) are left out, so every origin's average
    weighs the steps alike.

    Parameters
    ----------
    rows_a, rows_b
        Forecast rows of the two models (``origin, step, y, yhat``).
    loss
        ``"absolute"`` or ``"squared"``.
    stride
        Candles between consecutive origins.
    alternative
        As for :func:`diebold_mariano`; negative statistics favour ``a``.

    Returns
    -------
    DMResult
        ``n`` is the number of origins averaged, ``horizon`` the lags allowed plus one.

    Raises
    ------
    InsufficientHistory
        With fewer than three complete origins, or losses that never differ.
    """
    losses = loss_pairs(rows_a, rows_b, loss)
    if losses.empty:
        raise InsufficientHistory("The two models share no forecast to compare.")
    wide = (losses["a"] - losses["b"]).unstack("step")
    complete = wide.dropna()
    steps = wide.shape[1]
    d = complete.mean(axis=1).to_numpy(dtype="float64")
    overlap = math.ceil(steps / max(int(stride), 1))
    return _dm_on_differences(d, overlap, loss, alternative, "ewc")


def _non_overlapping(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows (one step) whose origin is at or after the previous kept row's target."""
    ordered = rows.sort_values("origin", kind="stable")
    origins = ordered["origin"].to_numpy()
    targets = ordered["timestamp"].to_numpy()
    keep = np.zeros(len(ordered), dtype=bool)
    last_target = None
    for i, origin in enumerate(origins):
        if last_target is None or origin >= last_target:
            keep[i] = True
            last_target = targets[i]
    return ordered[keep]


def directional_test(rows: pd.DataFrame) -> float:
    """P-value that the called direction is unrelated to the actual one (see module docs).

    Parameters
    ----------
    rows
        One model's forecast rows (``origin, timestamp, step, y, yhat, y_origin``), of
        one step or several.

    Returns
    -------
    float
        For each step, Fisher's exact test (one-sided: the calls and the moves agree
        more often than independence gives) on origins whose moves do not overlap, the
        first origin kept and each next one at or after the previous one's target;
        forecasts that call no direction and moves of exactly zero are left out. Over
        several steps, the smallest p-value times the number of steps tested
        (Bonferroni), at most 1. NaN when no step has both directions called and seen
        (a forecast that always says "up" has no directional skill to test).
    """
    from scipy import stats

    pvalues = []
    for _, at_step in rows.groupby("step", sort=True):
        kept = _non_overlapping(at_step)
        called = np.sign(kept["yhat"].to_numpy(dtype="float64") - kept["y_origin"].to_numpy())
        moved = np.sign(kept["y"].to_numpy(dtype="float64") - kept["y_origin"].to_numpy())
        use = (called != 0) & (moved != 0)
        called, moved = called[use] > 0, moved[use] > 0
        table = np.array(
            [
                [np.sum(called & moved), np.sum(called & ~moved)],
                [np.sum(~called & moved), np.sum(~called & ~moved)],
            ]
        )
        if (table.sum(axis=0) == 0).any() or (table.sum(axis=1) == 0).any():
            continue  # only one direction called or seen: nothing to relate
        pvalues.append(float(stats.fisher_exact(table, alternative="greater").pvalue))
    if not pvalues:
        return float("nan")
    return min(1.0, min(pvalues) * len(pvalues))


def dm_table(
    backtest: Backtest,
    *,
    loss: str = "absolute",
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
                    method="ewc",
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


def copy_check(
    backtest: Backtest,
    *,
    threshold: float = 0.2,
    definitions: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """How much each model's forecast is the last observed close.

    Columns: ``change_correlation`` (of forecast changes with actual changes from the
    origin), ``level_correlation`` (of the forecast with the close at the origin),
    ``relative_move`` (mean absolute forecast change over mean absolute actual change),
    ``copies_last`` (``relative_move`` below ``threshold``: the forecast barely moves
    from the last close, so its accuracy is the naive forecast's) and ``by_definition``.

    The check is for models that learn their forecast and may have learnt to copy the
    last close. A model whose forecast is a fixed rule (``definitions[model]``, from its
    :attr:`~forecasting.models.base.Capabilities.definition`: drift is the last close
    plus the average change) follows that rule by design: ``by_definition`` holds the
    rule, and a page says what the model is instead of flagging it (``copies_last``
    stays the measurement). Every other model's ``by_definition`` is empty.
    """
    definitions = dict(definitions or {})
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
            "by_definition": definitions.get(model, ""),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    if np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])
