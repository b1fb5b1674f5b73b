"""Do these features help? The same model with and without them, on the same folds.

An ablation answers the question a feature list raises: a model given the Fear & Greed
index (or any feature) is compared with the same model, the same settings and seeds,
without it, on the very folds and origins of one walk-forward backtest
(:func:`~forecasting.evaluation.walk_forward` runs both, with naive beside them). The
answer is the verdict of :mod:`forecasting.evaluation.verdict`: the loss ratio of the
model with the features to the model without, and the Diebold-Mariano joint test over
the horizon steps, which must hold for every seed. Both are also judged against naive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from forecasting.errors import ConfigurationError
from forecasting.evaluation import Backtest, Verdict, score, verdicts, walk_forward
from forecasting.experiment import ExperimentSettings, data_hash, json_record
from forecasting.features import compute_features, parse_features
from forecasting.progress import ProgressCallback, StopCheck

__all__ = ["AblationResult", "feature_ablation", "feature_setting"]

# The setting that lists a model's input features, by model family.
_FEATURE_SETTINGS = ("features", "regressors")


def feature_setting(params: Mapping[str, Any]) -> str:
    """The name of the setting holding a model's features (``features``, ``regressors``).

    Raises
    ------
    ConfigurationError
        For a model that reads no features (the baselines).
    """
    for name in _FEATURE_SETTINGS:
        if name in params:
            return name
    raise ConfigurationError(
        "This model reads no features: choose the LSTM (its inputs) or Prophet (its "
        "regressors) to test whether features help."
    )


@dataclass
class AblationResult:
    """The two variants' backtest, metrics and verdicts.

    Attributes
    ----------
    model
        The model alias tested (``"lstm"``, ``"prophet"``, ...).
    added
        The feature specs added in the variant ``with_name``.
    with_name, without_name
        The two variants' names in the backtest and metrics (``"lstm with"``, ...).
    backtest
        Both variants and naive on the same folds.
    metrics
        Pooled metrics per variant (:func:`~forecasting.evaluation.score`).
    helps
        The verdict of the variant with the features against the one without.
    against_naive
        Each variant's verdict against naive.
    """

    model: str
    added: tuple[str, ...]
    with_name: str
    without_name: str
    backtest: Backtest
    metrics: pd.DataFrame
    helps: Verdict
    against_naive: dict[str, Verdict]
    settings: dict[str, Any]
    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def sentence(self) -> str:
        """The answer in words: do the added features help, by the verdict's test."""
        added = ", ".join(self.added)
        if self.helps.reading == "better":
            head = f"Yes: {self.model} with {added} is more accurate than without"
        elif self.helps.reading == "worse":
            head = f"No: {self.model} with {added} is less accurate than without"
        else:
            head = f"Not shown: {self.model} with {added} is not different from without"
        return f"{head} ({self.helps.sentence().split('(', 1)[-1]}"

    def to_json(self) -> dict[str, Any]:
        """The JSON document: settings, data, metrics per variant and the verdicts."""
        return {
            "model": self.model,
            "added": list(self.added),
            "variants": {"with": self.with_name, "without": self.without_name},
            "settings": self.settings,
            "data": self.data,
            "metrics": {m: json_record(r) for m, r in self.metrics.to_dict(orient="index").items()},
            "verdict": {
                "with_vs_without": self.helps.to_dict(),
                **{f"{name}_vs_naive": v.to_dict() for name, v in self.against_naive.items()},
            },
            "answer": self.sentence,
            "notes": list(self.notes),
        }


def feature_ablation(
    candles: pd.DataFrame,
    settings: ExperimentSettings,
    added: str | Sequence[str],
    *,
    model: str = "lstm",
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    filled: pd.DatetimeIndex | None = None,
    workers: int = 1,
) -> AblationResult:
    """Backtest ``model`` with and without the ``added`` features on the same folds.

    Parameters
    ----------
    candles
        The OHLCV frame, with any mood columns the features read already joined
        (:func:`forecasting.data.mood.attach_mood`).
    settings
        The experiment's settings: the model's own settings (``model_settings[model]``),
        the backtest layout, seeds and loss. Its model list is not used.
    added
        Feature specs (``"fear_greed,funding_rate"``) added to the model's own features
        in the variant "with"; the variant "without" has the model's features minus them.
    model
        The model alias; it must read features (the LSTM family, Prophet).
    progress, should_stop, filled, workers
        As for :func:`~forecasting.evaluation.walk_forward`.

    Raises
    ------
    ConfigurationError
        For a model without features, or nothing to add.
    """
    items = added.split(",") if isinstance(added, str) else list(added)
    if not [item for item in items if item and item.strip()]:
        # parse_features would read "nothing" as the default features: never here.
        raise ConfigurationError("Name the features to test, e.g. fear_greed,funding_rate.")
    added_specs = parse_features(items)
    built = ExperimentSettings(
        models=(model,),
        model_settings=settings.model_settings,
        backtest=settings.backtest,
        seed=settings.seed,
        loss=settings.loss,
        seeds=settings.seeds,
    ).build_models()
    base = built[model]
    params = base.get_params()
    name = feature_setting(params)
    own = parse_features(params[name]) if params[name] else ()
    without = [s for s in own if s not in added_specs]
    with_ = list(dict.fromkeys([*without, *added_specs]))
    with_name, without_name = f"{model} with", f"{model} without"
    models = {
        "naive": built["naive"],
        without_name: type(base)(**{**params, name: ",".join(map(str, without))}),
        with_name: type(base)(**{**params, name: ",".join(map(str, with_))}),
    }
    for variant in models.values():
        variant.check_settings()
    # Both variants train on the same candles: where an added feature starts later than
    # the data (the index begins in February 2018), the candles before it are left out
    # for both, or the variant without it would train on more history.
    notes: list[str] = []
    defined = compute_features(candles, added_specs, drop_warmup=False).notna().all(axis=1)
    start = int(defined.to_numpy().argmax()) if defined.any() else len(candles)
    warmup = max(s.warmup for s in added_specs)
    if start > warmup:
        notes.append(
            f"The first {start:,} candles come before {', '.join(map(str, added_specs))} has "
            "a value: both variants leave them out, so both train on the same candles."
        )
        candles = candles.iloc[start:]
        if filled is not None:
            filled = pd.DatetimeIndex(filled)[pd.DatetimeIndex(filled) >= candles.index[0]]
    backtest = walk_forward(
        models,
        candles,
        settings.backtest,
        progress=progress,
        should_stop=should_stop,
        excluded=filled,
        seeds=settings.seed_list(),
        workers=workers,
    )
    helps = verdicts(backtest, loss=settings.loss, baseline=without_name)[with_name]
    naive = verdicts(backtest, loss=settings.loss)
    return AblationResult(
        model=model,
        added=tuple(str(s) for s in added_specs),
        with_name=with_name,
        without_name=without_name,
        backtest=backtest,
        metrics=score(backtest),
        helps=helps,
        against_naive={k: naive[k] for k in (with_name, without_name)},
        settings={
            "variants": {k: v.get_params() for k, v in models.items()},
            "backtest": settings.backtest.to_dict(),
            "seed": settings.seed,
            "seeds": list(settings.seed_list()),
            "loss": settings.loss,
        },
        data={
            "candles": len(candles),
            "first": candles.index[0].isoformat() if len(candles) else None,
            "last": candles.index[-1].isoformat() if len(candles) else None,
            "sha256": data_hash(candles),
            "columns": [str(c) for c in candles.columns],
        },
        notes=notes,
    )
