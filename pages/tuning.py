"""Tuning: settings chosen on each fold's past only, then scored once on its future."""

import streamlit as st

from forecasting.errors import ForecastingError
from ui import state, text
from ui import tuning as tuner

selection = state.page_setup()
dataset = state.current_dataset(selection)

st.title("Tuning")
text.caption(
    "{label} · {count:,} candles · the Compare page's folds: for each, the search sees only the "
    "candles before the fold, chooses settings on inner folds inside them, and the fold then "
    "scores the choice once",
    label=dataset.label,
    count=len(dataset.candles),
)

columns = st.columns([2, 1, 1])
model = columns[0].selectbox(
    "Model",
    tuner.model_choices(),
    format_func=tuner.title,
    key="tuning_model",
    help="Its untuned settings are the Models page's; the search replaces those it searches "
    "(the networks: family, lookback, units, layers, dropout, learning rate, features; "
    "Prophet: its prior scales and seasonality mode).",
)
trials = columns[1].number_input(
    "Trials per fold",
    min_value=1,
    max_value=tuner.MAX_TRIALS,
    value=20,
    step=5,
    key="tuning_trials",
    help="Settings tried on each outer fold's training candles (seeded TPE; a trial worse "
    "than the median after an inner fold is stopped there).",
)
longest = tuner.longest_timeout()
timeout = columns[2].number_input(
    "Time limit (seconds)",
    min_value=10.0,
    max_value=longest,
    value=min(tuner.DEFAULT_TIMEOUT, longest),
    step=30.0,
    key="tuning_timeout",
    help="For the whole search, shared by the folds; scoring the choices comes on top.",
)
experiment = tuner.tuning_settings(model)
layout = experiment.backtest
text.caption(
    "Walk-forward of the Compare page: {folds} folds over the last {test_size:,} candles, "
    "{horizon} steps ahead, an origin every {stride} candles; seed {seed}, {loss} error.",
    folds=layout.folds,
    test_size=layout.test_size,
    horizon=layout.horizon,
    stride=layout.stride,
    seed=experiment.seed,
    loss=experiment.loss,
)
run = st.button("Run tuning", type="primary", icon=":material/play_arrow:", key="run_tuning")

try:
    if run:
        cancel = st.empty()
        cancel.button("Cancel", icon=":material/stop_circle:", key="cancel_tuning")
        result = tuner.run(dataset, model, trials, timeout)
        cancel.empty()
    else:
        result = tuner.stored(dataset, model, trials, timeout)
except ForecastingError as exc:
    text.error("{problem}", problem=exc)
    st.stop()
if result is None:
    if st.session_state.pop("cancel_tuning", False):
        st.warning("The tuning was cancelled. Press **Run tuning** to start again.")
    else:
        st.info("Press **Run tuning** to search each fold's settings on its past.")
    st.stop()

st.subheader("Verdict")
text.caption(
    "The tuned model (each fold with the settings chosen on its past) against the untuned one "
    "and against naive, on the same (origin, target) pairs: Compare's verdict, the ratio of "
    "mean {loss} errors and one Diebold-Mariano test over all steps.",
    loss=experiment.loss,
)
for line in tuner.verdict_lines(result):
    text.markdown("- {line}", line=line)
for note in result.notes:
    text.info("{note}", note=note, icon=":material/info:")
text.caption(
    "{trials:,} trials in all ({pruned:,} stopped early, {failed:,} could not run): count them "
    "as the settings tried when correcting a strategy's significance for the search.",
    trials=result.trials,
    pruned=sum(f.pruned for f in result.folds),
    failed=sum(f.failed for f in result.folds),
)

st.subheader("Folds")
st.caption(
    "Inner: the chosen settings' score on the inner folds, which chose them. Outer: their score "
    "on the fold itself, never seen by the search. Each is also shown over naive's on the same "
    "pairs, and the optimism is the difference of those two ratios: prices and volatility "
    "move between the two periods, which the raw gap mixes in."
)
st.dataframe(tuner.fold_table(result), column_config=tuner.fold_columns(experiment.loss))
st.download_button(
    "Tuning JSON",
    lambda: tuner.json_text(result),
    "tuning.json",
    "application/json",
    icon=":material/download:",
)
