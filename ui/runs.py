"""Streamlit glue for the work the pages start: features, training and comparisons.

Fitted models and experiment results are kept in small stores shared by sessions and
keyed by the data's hash and every setting, so a revisit is instant and two sessions
only share a result when it is the same result.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

import forecasting as fc
from forecasting import features as fc_features
from forecasting.budget import (
    CostEstimate,
    check_budget,
    estimate_experiment,
    estimate_fits,
    progress_shares,
)
from forecasting.evaluation import BacktestSettings
from forecasting.experiment import DEFAULT_MODELS, ExperimentSettings, data_hash, run_experiment
from forecasting.models import NETWORKS, make_model
from ui import budget, state, text
from ui.settings import picker, setting
from ui.state import Dataset, chart

# --- features ------------------------------------------------------------------------------


def feature_picker() -> tuple[fc_features.FeatureSpec, ...]:
    """Draw the indicator pickers with their parameters; return the chosen specs."""
    kinds = fc_features.FEATURE_KINDS
    chosen = picker(
        st.multiselect,
        "Indicators",
        "features.kinds",
        form=None,
        format_func=lambda k: kinds[k].title,
        help="Each value is computed from candles up to that candle only (ta library; RSI "
        "is Wilder's own).",
    )
    specs = []
    with_params = [k for k in chosen if kinds[k].param_names]
    if with_params:
        columns = st.columns(len(with_params))
        for column, kind in zip(columns, with_params, strict=True):
            info = kinds[kind]
            with column:
                text.markdown("**{title}**", title=info.title, help=text.plain(info.description))
                params = []
                for name, default in zip(info.param_names, info.defaults, strict=True):
                    is_int = isinstance(default, int)
                    value = picker(
                        st.number_input,
                        text.plain(name),
                        f"features.{kind}.{name}",
                        form=None,
                        step=1 if is_int else 0.5,
                    )
                    params.append(int(value) if is_int else float(value))
            specs.append((kind, tuple(params)))
    specs += [(k, ()) for k in chosen if not kinds[k].param_names]
    try:
        return tuple(fc_features.FeatureSpec(kind, params) for kind, params in specs)
    except fc.ForecastingError as exc:
        text.error("{problem}", problem=exc)
        return fc_features.DEFAULT_FEATURES


def feature_specs() -> str:
    """The chosen features as a spec string (``"rsi:14,macd:12:26:9"``), from any page.

    Market mood kinds the page's data could not be given (offline, no perpetual future:
    :func:`ui.state.unavailable_mood`) are left out, so the models run without them; the
    page says so where the data is loaded (:func:`ui.state.mood_unavailable_notes`).
    """
    kinds = setting("features.kinds", [s.kind for s in fc_features.DEFAULT_FEATURES])
    missing = state.unavailable_mood()
    parts = []
    for kind in kinds:
        if kind in missing:
            continue
        info = fc_features.FEATURE_KINDS[kind]
        values = [
            setting(f"features.{kind}.{name}", default)
            for name, default in zip(info.param_names, info.defaults, strict=True)
        ]
        parts.append(":".join([kind, *(str(v) for v in values)]))
    return ",".join(parts)


def usable_specs(specs: str) -> tuple[str, list[str]]:
    """``specs`` without the market mood kinds the page's data could not be given, and the
    titles of those left out."""
    missing = state.unavailable_mood()
    kept, dropped = [], []
    for spec in fc_features.parse_features(specs) if specs else ():
        if spec.kind in missing:
            dropped.append(fc_features.FEATURE_KINDS[spec.kind].title)
        else:
            kept.append(str(spec))
    return ",".join(kept), dropped


@st.cache_data(max_entries=16, show_spinner="Computing features…")
def features_for(candles: pd.DataFrame, specs: str) -> pd.DataFrame:
    """Feature columns for the candles (warm-up dropped), cached per data and specs."""
    return fc_features.compute_features(candles, fc_features.parse_features(specs))


@st.cache_data(max_entries=16, show_spinner="Auditing features for look-ahead…")
def audit_for(candles: pd.DataFrame, specs: str) -> pd.DataFrame:
    """The look-ahead audit of the features on these candles."""
    return fc_features.lookahead_audit(candles, fc_features.parse_features(specs))


def mood_audit(dataset: Dataset) -> pd.DataFrame:
    """The look-ahead audit of the mood columns' join (one row per joined kind, the
    columns of :func:`audit_for`), or an empty frame when none was joined here."""
    mood = dataset.mood
    if mood is None or not mood.sources:
        return pd.DataFrame()
    return _mood_audit(mood, fingerprint(dataset.candles), tuple(mood.sources), dataset.timeframe)


def full_audit(dataset: Dataset, specs: str) -> pd.DataFrame:
    """The features' look-ahead audit (:func:`audit_for`) followed by the mood columns'
    join audit (:func:`mood_audit`), whose rows name the column "<kind> (as-of join)"."""
    audit = audit_for(dataset.candles, specs)
    joins = mood_audit(dataset)
    if joins.empty:
        return audit
    joins = joins.assign(column=joins["column"] + " (as-of join)")
    return pd.concat([audit, joins], ignore_index=True)


@st.cache_data(max_entries=16, show_spinner="Auditing the market mood's join…")
def _mood_audit(_mood: Any, data: str, kinds: tuple[str, ...], timeframe: str) -> pd.DataFrame:
    return _mood.audit(timeframe)


# --- models ----------------------------------------------------------------------------------


def fingerprint(candles: pd.DataFrame) -> str:
    """A short form of the data hash every experiment records (see ``data_hash``)."""
    return data_hash(candles)[:16]


class _Store:
    """Fitted models or experiment results by key, shared by sessions, least recent dropped.

    Sharing is safe: a key names everything the model was fitted on, models are never
    mutated after fitting (predict does not change them), and a refit makes a new one.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._models: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Any:
        with self._lock:
            model = self._models.pop(key, None)
            if model is not None:
                self._models[key] = model
            return model

    def put(self, key: tuple, model: Any) -> None:
        with self._lock:
            self._models.pop(key, None)
            self._models[key] = model
            while len(self._models) > self.size:
                self._models.popitem(last=False)

    def __len__(self) -> int:
        return len(self._models)


MODELS = _Store(size=24)
EXPERIMENTS = _Store(size=8)


def model_key(candles: pd.DataFrame, alias: str, settings: Mapping[str, Any]) -> tuple:
    """The store key of a model fitted on ``candles`` with ``settings``."""
    return (fingerprint(candles), alias, json.dumps(settings, sort_keys=True, default=str))


def fitted_model(
    candles: pd.DataFrame,
    alias: str,
    settings: Mapping[str, Any],
    *,
    progress: Any = None,
    train: bool = True,
) -> Any:
    """A model fitted on ``candles``: from the store when there, else fitted (if ``train``)."""
    key = model_key(candles, alias, settings)
    model = MODELS.get(key)
    if model is None and train:
        model = make_model(alias, **settings)
        if alias not in BASELINE_SETTINGS:  # baselines cost nothing: no budget, no queue
            check_budget(estimate_fits({alias: model}, len(candles)), budget.limits()[0])
            should_stop = budget.stop_check()
            with budget.queued(st.empty(), should_stop, f"training {alias}"):
                model = model.fit(candles, progress=progress, should_stop=should_stop)
        else:
            model = model.fit(candles, progress=progress)
        MODELS.put(key, model)
    return model


# --- training ------------------------------------------------------------------------------

BASELINE_SETTINGS: dict[str, dict[str, Any]] = {
    "naive": {},
    "drift": {},
    "seasonal_naive": {},
    "moving_average": {"window": 7},
}


def model_settings() -> dict[str, Any]:
    """Every model's settings from the (last submitted) Models form, ready for ``make_model``."""
    horizon, seed, level = (
        int(setting("horizon", 7)),
        int(setting("seed", 42)),
        setting("level", 0.9),
    )
    features = feature_specs()
    models: dict[str, dict[str, Any]] = {
        alias: {**params, "level": level} for alias, params in BASELINE_SETTINGS.items()
    }
    if setting("prophet.enabled", True):
        models["prophet"] = {
            "changepoint_prior_scale": setting("prophet.changepoint_prior_scale", 0.05),
            "weekly_seasonality": setting("prophet.weekly", "auto"),
            "yearly_seasonality": setting("prophet.yearly", "auto"),
            "seasonality_mode": setting("prophet.seasonality_mode", "additive"),
            "max_train_candles": int(setting("prophet.max_train_candles", 3000)),
            "regressors": features if setting("prophet.regressors", False) else "",
            "denoise": setting("prophet.denoise", "none"),
            "denoise_window": int(setting("prophet.denoise_window", 7)),
            "horizon": horizon,
            "level": level,
            "seed": seed,
        }
    if setting("lstm.enabled", True):
        for alias in setting("lstm.networks", ["lstm"]):
            models[alias] = network_settings()
    return {"horizon": horizon, "seed": seed, "level": level, "models": models}


def network_settings() -> dict[str, Any]:
    """The settings every network (LSTM, GRU, Conv-LSTM, LSTM + attention) shares, from the
    Models form; each network's alias fixes its own family."""
    return {
        "lookback": int(setting("lstm.lookback", 30)),
        "horizon": int(setting("horizon", 7)),
        "layers": int(setting("lstm.layers", 1)),
        "units": int(setting("lstm.units", 32)),
        "dropout": float(setting("lstm.dropout", 0.1)),
        "epochs": int(setting("lstm.epochs", 30)),
        "batch_size": int(setting("lstm.batch_size", 64)),
        "learning_rate": float(setting("lstm.learning_rate", 1e-3)),
        "patience": int(setting("lstm.patience", 5)),
        "target": setting("lstm.target", "log_return"),
        "interval": setting("lstm.interval", "conformal"),
        "features": feature_specs() if setting("lstm.use_features", True) else "",
        "denoise": setting("lstm.denoise", "none"),
        "denoise_window": int(setting("lstm.denoise_window", 7)),
        "level": setting("level", 0.9),
        "seed": int(setting("seed", 42)),
    }


def model_aliases(settings: Mapping[str, Any]) -> list[str]:
    """The models a settings dict asks for, baselines first."""
    return list(settings["models"])


class TrainingDisplay:
    """A progress bar and a live loss chart, updated from the models' progress callbacks."""

    def __init__(self) -> None:
        from forecasting.charts import loss_chart

        self._loss_chart = loss_chart
        self.bar = st.progress(0.0, text="Starting…")
        self.chart = st.empty()
        self.losses: dict[str, list[float]] = {"loss": [], "val_loss": []}

    def callback(self, alias: str, start: float, share: float):
        """The progress callback for one model, whose work is ``share`` of the bar from
        ``start`` on (see :func:`forecasting.budget.progress_shares`)."""

        def report(stage: str, fraction: float, details: Mapping[str, Any]) -> None:
            done = min(1.0, start + share * min(max(fraction, 0.0), 1.0))
            if stage == "epoch":
                self.losses["loss"].append(details["loss"])
                self.losses["val_loss"].append(details["val_loss"])
                message = text.markup(
                    "{alias}: epoch {epoch}/{epochs} · loss {loss:.4f} · val_loss {val_loss:.4f}",
                    alias=alias,
                    epoch=details["epoch"],
                    epochs=details["epochs"],
                    loss=details["loss"],
                    val_loss=details["val_loss"],
                )
                chart(
                    self._loss_chart(self.losses),
                    key=f"live_loss_{alias}_{details['epoch']}",
                    into=self.chart,
                )
            else:
                message = text.markup(
                    "{alias}: fitting on {candles:,} candles…",
                    alias=alias,
                    candles=details.get("candles", "?"),
                )
            self.bar.progress(done, text=message)

        return report

    def done(self) -> None:
        """Remove the progress widgets."""
        self.bar.empty()
        self.chart.empty()


def train_all(
    candles: pd.DataFrame,
    settings: Mapping[str, Any],
    display: TrainingDisplay | None,
    *,
    train: bool = True,
) -> dict[str, Any]:
    """Fitted models by alias: from the store, or fitted now (baselines always, the rest if
    ``train``). Errors of one model are shown and do not stop the others."""
    aliases = model_aliases(settings)
    shares = _training_shares(candles, settings, aliases) if display else {}
    models: dict[str, Any] = {}
    for alias in aliases:
        progress = display.callback(alias, *shares[alias]) if display else None
        try:
            model = fitted_model(
                candles,
                alias,
                settings["models"][alias],
                progress=progress,
                train=train or alias in BASELINE_SETTINGS,
            )
        except fc.ForecastingError as exc:
            text.error("{alias}: {problem}", alias=alias, problem=exc)
            continue
        if model is not None:
            models[alias] = model
    if display:
        display.done()
    return models


def _training_shares(
    candles: pd.DataFrame, settings: Mapping[str, Any], aliases: list[str]
) -> dict[str, tuple[float, float]]:
    """Each model's part of the training bar, by its estimated cost; a model already in
    the store costs nothing."""
    unfitted: dict[str, Any] = {}
    for alias in aliases:
        if MODELS.get(model_key(candles, alias, settings["models"][alias])) is not None:
            continue
        try:
            unfitted[alias] = make_model(alias, **settings["models"][alias])
        except fc.ForecastingError:
            continue  # refused when it is trained, with the message
    estimate = estimate_fits(unfitted, len(candles))
    shares = progress_shares(estimate) if estimate.parts else {}
    # A stored model is not fitted again and never reports progress.
    return {alias: shares.get(alias, (0.0, 0.0) if shares else (0.0, 1.0)) for alias in aliases}


def forecasts(models: Mapping[str, Any], horizon: int) -> list[Any]:
    """Each model's forecast of the next ``horizon`` candles."""
    out = []
    for alias, model in models.items():
        try:
            out.append(model.predict(horizon))
        except fc.ForecastingError as exc:
            text.error("{alias}: {problem}", alias=alias, problem=exc)
    return out


def forecast_table(items: list[Any]) -> pd.DataFrame:
    """Forecast means (and intervals) side by side, one column group per model."""
    frames = {f.model: f.to_frame() for f in items}
    return pd.concat(frames, axis=1)


# --- comparison ------------------------------------------------------------------------------


def compare_settings() -> ExperimentSettings:
    """The experiment the Compare form describes, with the Models page's model settings."""
    chosen = setting("compare.models", list(DEFAULT_MODELS))
    per_model = model_settings()["models"]
    window = int(setting("compare.window", 0)) or None
    test_start = setting("compare.test_start", None)
    return ExperimentSettings(
        models=tuple(chosen),
        model_settings={
            # A network not trained on the Models page still takes the networks' settings.
            alias: per_model.get(alias) or (network_settings() if alias in NETWORKS else {})
            for alias in chosen
        },
        backtest=BacktestSettings(
            horizon=int(setting("horizon", 7)),
            folds=int(setting("compare.folds", 3)),
            test_size=int(setting("compare.test_size", 120)),
            stride=int(setting("compare.stride")),
            window=window,
            test_start=pd.Timestamp(test_start, tz="UTC") if test_start else None,
        ),
        seed=int(setting("seed", 42)),
        loss=setting("compare.loss"),
        seeds=int(setting("compare.seeds")),
    )


def experiment_key(
    candles: pd.DataFrame, settings: ExperimentSettings, filled: Any = None
) -> tuple:
    """The store key of an experiment: the data, which candles were filled, every setting."""
    marks = "" if filled is None else ",".join(str(t.value) for t in filled)
    return (
        fingerprint(candles),
        marks,
        json.dumps(settings.to_dict(), sort_keys=True, default=str),
    )


def stored_experiment(dataset: Dataset, settings: ExperimentSettings) -> Any:
    """A finished experiment with these data and settings, or ``None``."""
    return EXPERIMENTS.get(experiment_key(dataset.candles, settings, dataset.filled))


def run_comparison(dataset: Dataset, settings: ExperimentSettings) -> Any:
    """Run (or fetch from the store) an experiment, with a progress bar while it runs.

    Filled candles (the sidebar's *Fill gaps*) feed the models but are never scored.
    """
    key = experiment_key(dataset.candles, settings, dataset.filled)
    result = EXPERIMENTS.get(key)
    if result is not None:
        return result
    # Over the server's budget: refused before anything runs (OverBudget names what to lower).
    check_budget(estimate_experiment(settings, dataset.candles), budget.limits()[0])
    bar = st.progress(0.0, text="Starting the walk-forward backtest…")

    def progress(stage: str, fraction: float, details: Mapping[str, Any]) -> None:
        bar.progress(fraction, text=text.markup("{message}", message=details.get("message", stage)))

    source = {"label": dataset.label, "source": dataset.source, "timeframe": dataset.timeframe}
    should_stop = budget.stop_check()
    with budget.queued(bar, should_stop, "this comparison"):
        result = EXPERIMENTS.get(key)  # another session may have run it meanwhile
        if result is None:
            bar.progress(0.0, text="Starting the walk-forward backtest…")
            result = run_experiment(
                dataset.candles,
                settings,
                source=source,
                progress=progress,
                should_stop=should_stop,
                filled=dataset.filled,
            )
            EXPERIMENTS.put(key, result)
    bar.empty()
    return result


# --- do these features help? ------------------------------------------------------------

#: The models an ablation can test: those that read features.
ABLATION_MODELS = {"lstm": "LSTM", "prophet": "Prophet"}


def ablation_settings(model: str) -> ExperimentSettings:
    """The Compare page's backtest, seeds and loss with ``model``'s settings from the
    Models page (its features or regressors as chosen there), for
    :func:`forecasting.ablation.feature_ablation`."""
    experiment = compare_settings()
    per_model = model_settings()["models"]
    return replace(
        experiment,
        models=(model,),
        model_settings={model: per_model.get(model, {})},
    )


def ablation_specs(kinds: Sequence[str]) -> str:
    """The features ``kinds`` as a spec string, with the parameters chosen on the Features
    page (a kind not chosen there takes its defaults)."""
    chosen = {spec.kind: spec for spec in fc_features.parse_features(feature_specs() or None)}
    specs = [
        chosen.get(kind) or fc_features.FeatureSpec(kind, fc_features.FEATURE_KINDS[kind].defaults)
        for kind in kinds
    ]
    return ",".join(str(spec) for spec in specs)


def _ablation_key(dataset: Dataset, settings: ExperimentSettings, added: str, model: str) -> tuple:
    return ("ablation", model, added, *experiment_key(dataset.candles, settings, dataset.filled))


def stored_ablation(dataset: Dataset, settings: ExperimentSettings, added: str, model: str) -> Any:
    """A finished ablation with these data, settings, features and model, or ``None``."""
    return EXPERIMENTS.get(_ablation_key(dataset, settings, added, model))


def run_ablation(dataset: Dataset, settings: ExperimentSettings, added: str, model: str) -> Any:
    """Run (or fetch from the store) ``model`` with and without ``added`` on the Compare
    page's folds, with a progress bar while it runs (:func:`run_comparison`'s rules: the
    server's budget and queue, Cancel stops it).

    Raises
    ------
    ForecastingError
        Over the budget, cancelled, or settings the backtest refuses, with the message.
    """
    from forecasting.ablation import feature_ablation

    key = _ablation_key(dataset, settings, added, model)
    result = EXPERIMENTS.get(key)
    if result is not None:
        return result
    # Two variants of the model: twice its cost, beside naive's.
    estimate = estimate_experiment(settings, dataset.candles)
    doubled = CostEstimate(
        estimate.parts
        + tuple(
            replace(part, model=f"{part.model} with")
            for part in estimate.parts
            if part.model == model
        ),
        cores=estimate.cores,
    )
    check_budget(doubled, budget.limits()[0])
    bar = st.progress(0.0, text="Starting the backtest with and without the features…")

    def progress(stage: str, fraction: float, details: Mapping[str, Any]) -> None:
        bar.progress(fraction, text=text.markup("{message}", message=details.get("message", stage)))

    should_stop = budget.stop_check()
    with budget.queued(bar, should_stop, "this feature test"):
        result = EXPERIMENTS.get(key)
        if result is None:
            result = feature_ablation(
                dataset.candles,
                settings,
                added,
                model=model,
                progress=progress,
                should_stop=should_stop,
                filled=dataset.filled,
            )
            EXPERIMENTS.put(key, result)
    bar.empty()
    return result


def ablation_defaults() -> list[str]:
    """The features an ablation adds unless chosen otherwise: the chosen market mood kinds
    that are available for the page's data."""
    missing = state.unavailable_mood()
    return [kind for kind in state.chosen_mood_kinds() if kind not in missing]


def ablation_for(dataset: Dataset, model: str, kinds: Sequence[str], *, run: bool) -> Any:
    """The ablation of ``model`` with and without the feature ``kinds`` on the Compare
    page's folds: run now if ``run``, else the stored one (``None`` when there is none).

    Market mood kinds among ``kinds`` are joined to the candles first
    (:func:`ui.state.with_mood`); one that cannot be joined is left out, saying why.

    Raises
    ------
    ForecastingError
        No feature to add, none available, or what :func:`run_ablation` raises.
    """
    if not kinds:
        if not run:
            return None
        raise fc.ConfigurationError("Choose at least one feature to add.")
    moods = fc_features.mood_kinds(list(kinds))
    if moods:
        dataset = state.with_mood(dataset, moods)
    missing = dict(dataset.mood.unavailable) if dataset.mood is not None else {}
    for kind in kinds:
        if kind in missing:
            text.warning(
                "{title} is left out of the test: {reason}",
                title=fc_features.FEATURE_KINDS[kind].title,
                reason=missing[kind],
            )
    kept = [kind for kind in kinds if kind not in missing]
    if not kept:
        raise fc.ConfigurationError(
            "None of the features to add is available for this data: choose others."
        )
    added = ablation_specs(kept)
    settings = ablation_settings(model)
    if run:
        return run_ablation(dataset, settings, added, model)
    return stored_ablation(dataset, settings, added, model)


def ablation_table(result: Any) -> Any:
    """The ablation's metrics, key columns first, read against naive by its verdicts."""
    return metrics_view(result.metrics, result.against_naive, columns=KEY_METRICS)


def ablation_lines(result: Any) -> list[text.Markup]:
    """The verdicts in plain lines: with against without, then each against naive."""
    return verdict_lines({"helps": result.helps, **result.against_naive})


def cost_caption(dataset: Dataset, settings: ExperimentSettings) -> str:
    """The estimated cost of running these settings on this data, for under the form."""
    try:
        estimate = estimate_experiment(settings, dataset.candles)
    except fc.ForecastingError:
        return ""  # the run itself will say what is wrong
    limit = budget.limits()[0].max_run_seconds
    over = (
        " Over this server's limit: lower the settings named when you run."
        if (estimate.seconds > limit)
        else ""
    )
    return estimate.summary() + over


GOOD = "font-weight: bold; color: #26a69a"


# The columns the Metrics caption says to read, first and on their own: a table of every
# metric is wider than the page beside the sidebar, and its last columns were out of sight.
KEY_METRICS = ("mae_vs_naive", "against naive", "n", "mae")


def metrics_view(
    metrics: pd.DataFrame, verdict: Mapping[str, Any], columns: Sequence[str] | None = None
) -> Any:
    """The metrics table for display, read against naive by the experiment's verdict.

    The key columns come first (``KEY_METRICS``: the ratio to naive's MAE, the verdict's
    reading, the number of forecasts, the MAE), then every other metric; ``columns`` keeps
    only those (in that order). The best value per column is in bold, except for the
    interval's width: the narrowest interval is not the best when it covers less than its
    level, so the interval score (which charges for every miss) picks the best interval
    instead. Undefined values read "undefined"; an unbounded interval's width "unbounded".
    """
    table = metrics.drop(columns=["direction_calls"]).copy()
    table.insert(0, "MASE < 1", table["mase"] < 1)
    readings = {model: found.reading for model, found in verdict.items() if model in table.index}
    table.insert(0, "against naive", [readings.get(m, "—") for m in table.index])
    first = [c for c in KEY_METRICS if c in table.columns]
    table = table[first + [c for c in table.columns if c not in first]]
    if columns is not None:
        table = table[list(columns)]
    lower_is_better = ["mae", "rmse", "mape", "smape", "mase", "mae_vs_naive", "interval_score"]

    def number(value: Any) -> str:
        if isinstance(value, float) and np.isinf(value):
            return "unbounded"
        return "—" if pd.isna(value) else f"{value:.4f}"

    numeric = [c for c in table.columns if c not in ("against naive", "MASE < 1", "n")]
    styled = table.style.format(number, subset=numeric, na_rep="—")
    finite = [
        c
        for c in lower_is_better
        if c in table.columns and np.isfinite(table[c].to_numpy(dtype=float)).any()
    ]
    styled = styled.highlight_min(subset=finite, props=GOOD)
    if "directional_accuracy" in table.columns:
        styled = styled.highlight_max(subset=["directional_accuracy"], props=GOOD)
    return styled


def verdict_lines(verdict: Mapping[str, Any]) -> list[text.Markup]:
    """The verdict in plain lines: each model against naive, then LSTM against Prophet."""
    lines = []
    for found in verdict.values():
        words = found.sentence()
        lines.append(
            text.markup(
                "**{model}** {words}", model=found.model, words=words[len(found.model) + 1 :]
            )
        )
    return lines


def seed_table(verdict: Mapping[str, Any]) -> pd.DataFrame:
    """Each seed's ratio, p-value and reading, for models run over several seeds."""
    rows = []
    for found in verdict.values():
        if found.seeds < 2:
            continue
        for seed in found.per_seed:
            rows.append(
                {
                    "comparison": f"{found.model} vs {found.against}",
                    "seed": seed.seed,
                    "ratio": seed.ratio,
                    "p-value": seed.pvalue,
                    "reading": seed.reading,
                }
            )
    return pd.DataFrame(rows)
