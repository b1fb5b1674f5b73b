"""Streamlit glue for the Tuning page: which model, the Compare page's folds, the run.

The page runs :func:`forecasting.tuning.tune` on the sidebar's data with the Compare
page's walk-forward settings (folds, test size, horizon, stride, window, seed, loss) and
the Models page's settings as the untuned model. Results are kept in the shared store of
:mod:`ui.runs`, keyed by the data and every setting, so a revisit shows them without a
rerun. A run takes the server's queue like a comparison, and its time limit is at most
the server's largest run (``max_run_seconds``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pandas as pd
import streamlit as st

from forecasting.experiment import ExperimentSettings
from forecasting.models import MODELS, NETWORKS
from forecasting.tuning import TuningResult, tunable_models, tune
from ui import budget, runs, text
from ui.state import Dataset

#: Trials per fold the page offers at most (the library allows more, from the command line).
MAX_TRIALS = 200
#: The time limit the page starts from, in seconds (at most the server's largest run).
DEFAULT_TIMEOUT = 300.0
#: Session key of the page's last shown result and the key it was stored under.
LAST = "_tuning_last"


def model_choices() -> list[str]:
    """The models with a search space, networks first."""
    return list(tunable_models())


def title(alias: str) -> str:
    """A model's name for screens (``"LSTM"``, ``"Prophet"``)."""
    return MODELS[alias].title if alias in MODELS else alias


def longest_timeout() -> float:
    """The longest time limit this server allows for a search (its ``max_run_seconds``)."""
    return float(budget.limits()[0].max_run_seconds)


def untuned_settings(model: str) -> dict[str, Any]:
    """The model's settings from the Models page: what it would run with, untuned."""
    per_model = runs.model_settings()["models"]
    if model in per_model:
        return dict(per_model[model])
    if model in NETWORKS and "lstm" in per_model:
        return dict(per_model["lstm"])  # the networks share the LSTM's settings
    return {}


def tuning_settings(model: str) -> ExperimentSettings:
    """The Compare page's walk-forward, seed and loss, with ``model``'s untuned settings."""
    return replace(
        runs.compare_settings(),
        models=(model,),
        model_settings={model: untuned_settings(model)},
        seeds=1,
    )


def _key(dataset: Dataset, model: str, trials: int, timeout: float) -> tuple:
    experiment = tuning_settings(model)
    return (
        "tuning",
        model,
        int(trials),
        float(timeout),
        *runs.experiment_key(dataset.candles, experiment, dataset.filled),
    )


def stored(dataset: Dataset, model: str, trials: int, timeout: float) -> TuningResult | None:
    """A finished tuning with these data and settings, or ``None``."""
    return runs.EXPERIMENTS.get(_key(dataset, model, trials, timeout))


def run(dataset: Dataset, model: str, trials: int, timeout: float) -> TuningResult:
    """Run (or fetch from the store) a tuning, with a progress bar while it runs.

    It waits for its turn in the server's queue; Cancel (or leaving the page) stops it.

    Raises
    ------
    ForecastingError
        Cancelled, a layout that does not fit the data, or no trial that could run.
    """
    key = _key(dataset, model, trials, timeout)
    result = runs.EXPERIMENTS.get(key)
    if result is not None:
        return result
    bar = st.progress(0.0, text="Starting the search…")

    def progress(stage: str, fraction: float, details: Mapping[str, Any]) -> None:
        bar.progress(fraction, text=text.markup("{message}", message=details.get("message", stage)))

    should_stop = budget.stop_check()
    with budget.queued(bar, should_stop, "this tuning"):
        result = runs.EXPERIMENTS.get(key)  # another session may have run it meanwhile
        if result is None:
            bar.progress(0.0, text="Starting the search…")
            result = tune(
                dataset.candles,
                model,
                tuning_settings(model),
                trials=int(trials),
                timeout=min(float(timeout), longest_timeout()),
                filled=dataset.filled,
                progress=progress,
                should_stop=should_stop,
            )
            runs.EXPERIMENTS.put(key, result)
    bar.empty()
    return result


def fold_table(result: TuningResult) -> pd.DataFrame:
    """One row per outer fold: the settings chosen, inner and outer scores, the gap."""
    columns = [
        "params", "inner", "outer", "inner vs naive", "outer vs naive", "relative gap", "gap",
        "untuned", "trials", "pruned", "failed",
    ]  # fmt: skip
    return result.table()[columns]


def fold_columns(loss: str) -> dict[str, Any]:
    """Column labels, formats and explanations for :func:`fold_table`."""
    unit = "mean absolute error" if loss == "absolute" else "mean squared error"
    number = st.column_config.NumberColumn
    return {
        "params": st.column_config.TextColumn(
            "settings chosen", help="The best trial's settings on the fold's training candles."
        ),
        "inner": number(
            "inner", help=f"The chosen settings' {unit} on the inner folds.", format="%.4g"
        ),
        "outer": number(
            "outer",
            help=f"Their {unit} on the outer fold, scored once after the search.",
            format="%.4g",
        ),
        "inner vs naive": number(
            "inner ÷ naive",
            help="The inner score over naive's on the inner pairs.",
            format="%.3f",
        ),
        "outer vs naive": number(
            "outer ÷ naive",
            help="The outer score over naive's on the outer pairs.",
            format="%.3f",
        ),
        "relative gap": number(
            "optimism",
            help="Outer ÷ naive minus inner ÷ naive: the search's optimism on comparable "
            "numbers (the raw gap also moves with the price level between the periods).",
            format="%+.3f",
        ),
        "gap": number(
            "raw gap",
            help="Outer minus inner, in price units: mixes the search's optimism with the "
            "change of price level and volatility between the two periods.",
            format="%.4g",
        ),
        "untuned": number(
            "untuned outer",
            help=f"The untuned model's {unit} on the same outer pairs.",
            format="%.4g",
        ),
        "trials": number("trials", format="%d"),
        "pruned": number("pruned", help="Trials stopped after an inner fold.", format="%d"),
        "failed": number("failed", help="Trials whose settings could not run.", format="%d"),
    }


def verdict_lines(result: TuningResult) -> list[text.Markup]:
    """The three verdicts in plain lines: tuned against untuned, then each against naive."""
    return runs.verdict_lines(result.verdict)


def json_text(result: TuningResult) -> str:
    """The tuning's JSON document (:meth:`TuningResult.to_json`)."""
    return json.dumps(result.to_json(), indent=2, allow_nan=False, default=str)
