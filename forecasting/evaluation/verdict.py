"""One verdict per model: better, worse or not different from naive, and LSTM against Prophet.

The verdict uses one loss throughout, chosen by the user (absolute error by default):
the ratio is the model's mean loss over naive's on the same (origin, target) pairs, and
the p-value is the :func:`~forecasting.evaluation.significance.joint_test` of the same
loss over all horizon steps at once, two-sided at level ``alpha``.

A model whose point forecast depends on its seed (the LSTM's random initialisation) is
judged on every seed run: it is "better" only when the test says so for every seed,
"worse" only when it says so for every seed, and otherwise "not different";
``holds_for`` counts the seeds whose own reading is the verdict's. One seed can flip a
verdict: on hourly BTC candles an LSTM "significantly beat" naive with one seed and
with none of eight others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from forecasting.errors import InsufficientHistory
from forecasting.evaluation.significance import joint_test, loss_pairs
from forecasting.evaluation.walkforward import Backtest

__all__ = ["READINGS", "SeedVerdict", "Verdict", "verdicts"]

READINGS = ("better", "worse", "not different")
LOSS_NAMES = {"absolute": "absolute error", "squared": "squared error"}


@dataclass(frozen=True)
class SeedVerdict:
    """The joint test for one seed's forecasts.

    Attributes
    ----------
    seed
        The seed (``None`` for a model without one).
    ratio
        Mean loss over the other model's mean loss, on the same pairs.
    pvalue
        Two-sided p-value of the joint test (NaN when it is undefined).
    statistic
        The joint test's statistic (negative: this model's loss is lower).
    origins
        Origins averaged in the joint test: those where both models forecast every step.
    dof
        Degrees of freedom of its Student's t reference (``B``, the cosine terms of the
        equal-weighted cosine variance); 0 when the test is undefined.
    pairs
        (origin, target) pairs the ratio is taken over: every pair both models scored.
    reading
        ``"better"``, ``"worse"`` or ``"not different"``.
    """

    seed: int | None
    ratio: float
    pvalue: float
    statistic: float
    origins: int
    reading: str
    dof: int = 0
    pairs: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (NaN as ``None``)."""
        return {
            "seed": self.seed,
            "ratio": _finite(self.ratio),
            "pvalue": _finite(self.pvalue),
            "statistic": _finite(self.statistic),
            "origins": self.origins,
            "dof": self.dof,
            "pairs": self.pairs,
            "reading": self.reading,
        }


@dataclass(frozen=True)
class Verdict:
    """A model against another (naive, or Prophet for the LSTM), over every seed run.

    Attributes
    ----------
    model, against
        The model judged and the one it is judged against.
    loss
        ``"absolute"`` or ``"squared"``.
    ratio
        Mean over the seeds of each seed's loss ratio.
    pvalue
        The largest p-value over the seeds (the verdict holds at ``alpha`` for every
        seed exactly when this is below it and the directions agree).
    seeds
        Seeds run.
    holds_for
        Seeds whose own reading is ``reading``.
    reading
        ``"better"``, ``"worse"`` or ``"not different"``.
    alpha
        The tests' level.
    steps
        Horizon steps the joint test averages over.
    per_seed
        Each seed's own result.
    """

    model: str
    against: str
    loss: str
    ratio: float
    pvalue: float
    seeds: int
    holds_for: int
    reading: str
    alpha: float
    steps: int
    per_seed: tuple[SeedVerdict, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """The ``verdict`` object of ``compare --json``."""
        return {
            "against": self.against,
            "loss": self.loss,
            "ratio": _finite(self.ratio),
            "pvalue": _finite(self.pvalue),
            "seeds": self.seeds,
            "holds_for": self.holds_for,
            "reading": self.reading,
            "alpha": self.alpha,
            "test": (
                f"Diebold-Mariano joint test of the loss differential averaged over steps "
                f"1-{self.steps}, equal-weighted cosine long-run variance, Student's t on "
                "B degrees of freedom (per_seed dof), two-sided"
            ),
            "per_seed": [seed.to_dict() for seed in self.per_seed],
        }

    def sentence(self) -> str:
        """The verdict in plain words, e.g. "lstm is not different from naive (...)"."""
        loss = LOSS_NAMES.get(self.loss, self.loss)
        if self.reading == "not different":
            words = f"is not different from {self.against}"
        else:
            words = f"is {self.reading} than {self.against}"
        p = "p undefined" if math.isnan(self.pvalue) else _p(self.pvalue)
        detail = f"{loss} ratio {self.ratio:.3f}, {p}"
        if self.seeds > 1:
            detail += f", holds for {self.holds_for} of {self.seeds} seeds"
            if self.reading == "not different":
                better = sum(s.reading == "better" for s in self.per_seed)
                worse = sum(s.reading == "worse" for s in self.per_seed)
                if better or worse:
                    mixed = [f"{better} said better"] if better else []
                    mixed += [f"{worse} said worse"] if worse else []
                    detail += f" ({', '.join(mixed)})"
        return f"{self.model} {words} ({detail})"


def _p(value: float) -> str:
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _reading(statistic: float, pvalue: float, alpha: float) -> str:
    if not math.isfinite(pvalue) or pvalue >= alpha:
        return "not different"
    return "better" if statistic < 0 else "worse"


def _one_seed(
    rows: pd.DataFrame, other: pd.DataFrame, seed: int | None, loss: str, stride: int, alpha: float
) -> SeedVerdict:
    losses = loss_pairs(rows, other, loss)
    b_mean = float(losses["b"].mean()) if len(losses) else float("nan")
    ratio = float(losses["a"].mean()) / b_mean if b_mean > 0 else float("nan")
    try:
        result = joint_test(rows, other, loss=loss, stride=stride)
    except InsufficientHistory:
        nan = float("nan")
        return SeedVerdict(seed, ratio, nan, nan, 0, "not different", 0, len(losses))
    reading = _reading(result.statistic, result.pvalue, alpha)
    return SeedVerdict(
        seed, ratio, result.pvalue, result.statistic, result.n, reading, result.dof, len(losses)
    )


def _combine(
    model: str,
    against: str,
    per_seed: list[SeedVerdict],
    loss: str,
    alpha: float,
    steps: int,
) -> Verdict:
    readings = {s.reading for s in per_seed}
    reading = readings.pop() if len(readings) == 1 else "not different"
    pvalues = [s.pvalue for s in per_seed]
    pvalue = float("nan") if any(math.isnan(p) for p in pvalues) else max(pvalues)
    ratios = [s.ratio for s in per_seed if math.isfinite(s.ratio)]
    return Verdict(
        model=model,
        against=against,
        loss=loss,
        ratio=float(np.mean(ratios)) if ratios else float("nan"),
        pvalue=pvalue,
        seeds=len(per_seed),
        holds_for=sum(s.reading == reading for s in per_seed),
        reading=reading,
        alpha=alpha,
        steps=steps,
        per_seed=tuple(per_seed),
    )


def _seed_runs(backtest: Backtest, model: str) -> list[tuple[int | None, pd.DataFrame]]:
    rows = backtest.forecasts[backtest.forecasts["model"] == model]
    runs = [(backtest.model_seeds.get(model), rows)]
    for seed, extra in backtest.seed_forecasts.get(model, {}).items():
        runs.append((seed, extra))
    return runs


def verdicts(
    backtest: Backtest,
    *,
    loss: str = "absolute",
    baseline: str = "naive",
    alpha: float = 0.05,
) -> dict[str, Verdict]:
    """Every model's verdict against ``baseline``, and ``"lstm_vs_prophet"`` where both ran.

    Parameters
    ----------
    backtest
        A walk-forward backtest (with further seeds' rows, if any were run).
    loss
        ``"absolute"`` or ``"squared"``: the loss of the ratio and of the test.
    baseline
        The model every other is judged against; it gets no verdict of its own.
    alpha
        The tests' level.

    Returns
    -------
    dict
        By model alias (and ``"lstm_vs_prophet"``), in the backtest's model order.
    """
    forecasts = backtest.forecasts
    stride = max(int(backtest.settings.stride), 1)
    steps = int(forecasts["step"].max()) if len(forecasts) else 0
    models = backtest.models
    out: dict[str, Verdict] = {}
    if baseline in models:
        reference = forecasts[forecasts["model"] == baseline]
        for model in models:
            if model == baseline:
                continue
            per_seed = [
                _one_seed(rows, reference, seed, loss, stride, alpha)
                for seed, rows in _seed_runs(backtest, model)
            ]
            out[model] = _combine(model, baseline, per_seed, loss, alpha, steps)
    if "lstm" in models and "prophet" in models:
        prophet = forecasts[forecasts["model"] == "prophet"]
        per_seed = [
            _one_seed(rows, prophet, seed, loss, stride, alpha)
            for seed, rows in _seed_runs(backtest, "lstm")
        ]
        out["lstm_vs_prophet"] = _combine("lstm", "prophet", per_seed, loss, alpha, steps)
    return out


def verdict_document(found: Mapping[str, Verdict]) -> dict[str, Any]:
    """``{alias: verdict.to_dict()}`` for the JSON report."""
    return {name: verdict.to_dict() for name, verdict in found.items()}
