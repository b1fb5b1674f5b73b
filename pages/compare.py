"""Compare: every model on the same walk-forward folds, scored and tested against naive."""

import streamlit as st

from forecasting.bundle import experiment_bundle
from forecasting.charts import (
    backtest_chart,
    forecast_chart,
    horizon_error_chart,
    residual_acf_chart,
    residual_histogram,
)
from forecasting.errors import ForecastingError
from forecasting.features import FEATURE_KINDS
from ui import budget, runs, settings, state, text

selection = state.page_setup()
dataset = state.current_dataset(selection)

st.title("Compare")
text.caption(
    "{label} · {count:,} candles · every model is fitted per fold on the candles before the "
    "fold only and forecasts from the same origins",
    label=dataset.label,
    count=len(dataset.candles),
)

with st.expander("Restore settings from an experiment bundle"):
    st.file_uploader(
        "Experiment bundle (zip)",
        type=["zip"],
        key="bundle_upload",
        on_change=settings.restore_uploaded_bundle,
        help="The settings (JSON text) and the candles the experiment ran on (a table of "
        "numbers, checked against its SHA-256) are read back and become the data here, "
        "with no network; nothing in the file is run.",
    )
settings.bundle_notice(dataset)

FORM = "compare_settings"
with st.form(FORM):
    pick = settings.picker
    pick(
        st.multiselect,
        "Models",
        "compare.models",
        form=FORM,
        help="Naive is always included: it is what every model has to beat. LSTM and Prophet "
        "use the settings of the Models page.",
    )
    columns = st.columns(6)
    settings.horizon_input(columns[0], FORM)
    pick(columns[1].number_input, "Folds", "compare.folds", form=FORM)
    pick(columns[2].number_input, "Test candles", "compare.test_size", form=FORM, step=10)
    pick(
        columns[3].number_input,
        "Stride",
        "compare.stride",
        form=FORM,
        help="Candles between origins.",
    )
    pick(
        columns[4].number_input,
        "Rolling window",
        "compare.window",
        form=FORM,
        step=100,
        help="0: expanding (train on all earlier candles); otherwise the last N candles.",
    )
    settings.seed_input(columns[5], FORM)
    columns = st.columns([2, 1, 1])
    pick(
        columns[0].date_input,
        "Test period from (optional)",
        "compare.test_start",
        form=FORM,
        help="Start the test period on this date instead of using the last N test candles.",
    )
    pick(
        columns[1].selectbox,
        "Loss",
        "compare.loss",
        form=FORM,
        format_func=lambda loss: f"{loss} error",
        help="The one loss of the verdict: its ratio to naive and its significance test.",
    )
    pick(
        columns[2].number_input,
        "LSTM seeds",
        "compare.seeds",
        form=FORM,
        help="The LSTM is trained with this many seeds (the seed, the seed + 1, ...). It is "
        "called better or worse than naive only when that holds for every seed.",
    )
    run = st.form_submit_button(
        "Run comparison",
        type="primary",
        icon=":material/play_arrow:",
        on_click=settings.keep_form,
        args=(FORM,),
    )

experiment = runs.compare_settings()
cost = runs.cost_caption(dataset, experiment)
if cost:
    text.caption("{cost}", cost=cost)
limits_problem = budget.limits()[1]
if limits_problem:
    text.warning("{problem}", problem=limits_problem)

with st.expander("Do these features help?", expanded=bool(runs.ablation_defaults())):
    st.caption(
        "The same model with and without the features below, on the folds of the settings "
        "above, with naive beside them. The model's settings and its own features are the "
        "Models and Features pages'; the answer is the verdict's test: the loss ratio of "
        "the model with the features to the model without, and a Diebold-Mariano test over "
        "all steps, which must hold for every seed."
    )
    st.session_state.setdefault("ablation_added", runs.ablation_defaults())
    columns = st.columns([1, 3])
    ablation_model = columns[0].radio(
        "Model",
        list(runs.ABLATION_MODELS),
        format_func=runs.ABLATION_MODELS.get,
        key="ablation_model",
        help="The LSTM reads the features as inputs, Prophet as regressors (lagged by the "
        "horizon).",
    )
    added_kinds = columns[1].multiselect(
        "Features to add",
        list(FEATURE_KINDS),
        format_func=lambda kind: FEATURE_KINDS[kind].title,
        key="ablation_added",
        help="Added to the model's own features in the variant with them; the variant "
        "without has the model's features minus these.",
    )
    test_features = st.button(
        "Test with and without", icon=":material/science:", key="run_ablation"
    )
    try:
        if test_features:
            stop_test = st.empty()
            stop_test.button("Cancel", icon=":material/stop_circle:", key="cancel_ablation")
            ablation = runs.ablation_for(dataset, ablation_model, added_kinds, run=True)
            stop_test.empty()
        else:
            ablation = runs.ablation_for(dataset, ablation_model, added_kinds, run=False)
    except ForecastingError as exc:
        text.error("{problem}", problem=exc)
        ablation = None
    if ablation is not None:
        text.markdown("**{answer}**", answer=ablation.sentence)
        for note in ablation.notes:
            text.info("{note}", note=note, icon=":material/info:")
        st.table(runs.ablation_table(ablation))
        for line in runs.ablation_lines(ablation):
            text.markdown("- {line}", line=line)
    elif st.session_state.pop("cancel_ablation", False):
        st.warning("The test was cancelled. Press **Test with and without** to start again.")
# Whether the sidebar's selection loaded (else earlier data, or the sample, stands in).
selection_loaded = not state.not_the_selection(dataset, selection)
try:
    if run or (st.session_state.get("rerun_compare") and selection_loaded):
        cancel = st.empty()
        cancel.button("Cancel", icon=":material/stop_circle:", key="cancel_compare")
        result = runs.run_comparison(dataset, experiment)
        cancel.empty()
    else:
        result = runs.stored_experiment(dataset, experiment)
except ForecastingError as exc:
    text.error("{problem}", problem=exc)
    st.stop()
# The last results shown, with the data they were computed on and the link and settings
# that reproduce them: when the sidebar selects other data, they stay, marked stale.
LAST = "_compare_last"
stale = False
if result is not None:
    st.session_state[LAST] = state.ShownResult(
        result,
        dataset,
        settings.share_link(dataset.selection),
        settings.bundle_files(dataset.selection),
    )
    shown = st.session_state[LAST]
else:
    shown = state.stale_result(st.session_state.get(LAST), selection)
    if shown is not None:
        stale = True
        result, dataset, experiment = shown.result, shown.dataset, shown.result.settings
        if selection_loaded:
            text.warning(
                "These results are stale: they were computed on {described}, and the sidebar "
                "now selects other data. The link and the bundle below reproduce them as shown.",
                described=state.describe(dataset),
                icon=":material/history:",
            )
            st.button(
                "Rerun on the current selection", key="rerun_compare", icon=":material/refresh:"
            )
        else:
            # Rerunning now would run on the stand-in data, not on the selection.
            text.warning(
                "These results are stale: they were computed on {described}. The sidebar's "
                "current selection did not load, so there is nothing to rerun them on; they "
                "stay, with the link and the bundle below that reproduce them. Fix the "
                "selection to rerun.",
                described=state.describe(dataset),
                icon=":material/history:",
            )
if result is None:
    if st.session_state.pop("cancel_compare", False):
        st.warning("The comparison was cancelled. Press **Run comparison** to start again.")
    else:
        st.info("Press **Run comparison** to backtest the models with these settings.")
    st.stop()

st.subheader("Verdict")
loss_name = f"{experiment.loss} error"
text.caption(
    "Each model against naive on the same (origin, target) pairs: the ratio of mean {loss}s "
    "and one Diebold-Mariano test over all {horizon} steps at once (two-sided, 5 % level). "
    "Over several LSTM seeds it is better or worse only if it is for every seed.",
    loss=loss_name,
    horizon=experiment.backtest.horizon,
)
for line in runs.verdict_lines(result.verdict):
    text.markdown("- {line}", line=line)
for note in result.notes:
    text.info("{note}", note=note, icon=":material/info:")
seeds = runs.seed_table(result.verdict)
if not seeds.empty:
    with st.expander("Each seed"):
        st.dataframe(seeds, hide_index=True)

horizon = experiment.backtest.horizon
step = st.slider("Steps ahead shown", 1, horizon, 1, key="compare_step") if horizon > 1 else 1
figures = {
    "backtest": backtest_chart(result.backtest.forecasts, step=step),
    "error_by_horizon": horizon_error_chart(result.by_horizon),
    "residuals": residual_histogram(result.backtest.forecasts, step=step),
    "residual_acf": residual_acf_chart(result.backtest.forecasts, step=step),
    "future": forecast_chart(
        dataset.candles,
        list(result.future.values()),
        title=f"Next {experiment.backtest.horizon} candles, every model refitted on all data",
    ),
}
if not stale and state.not_the_selection(dataset, selection):
    text.warning(
        "The sidebar's selection did not load, so these results and the link below are for "
        "the data shown ({label}), not for the selection. Fix the selection and press **Run "
        "comparison** to run it there.",
        label=dataset.label,
    )
st.caption("Link that reproduces this experiment (copy it with the button on the right):")
# Streamlit shows a code block's copy button on hover only: keep the link's in sight (a
# style-only st.html takes no room; it applies while this page is shown).
# A right margin on the code keeps the button off the end of the link's text.
st.html(
    "<style>[data-testid='stCode'] > div:has(button)"
    " { opacity: 1 !important; visibility: visible !important; }"
    " [data-testid='stCode'] pre { margin-right: 2.5rem !important; }</style>"
)
st.code(shown.link, language=None)
state.chart(figures["backtest"], key="backtest_chart")

st.subheader("Metrics")
st.caption(
    "Pooled over every fold and step; best per column in bold (for intervals, the lowest "
    "interval score: the narrowest interval is not the best if it misses). MASE divides each "
    "error by the in-sample one-step naive error: below 1 reads as beating naive, but "
    "multi-step errors at later, higher prices make even naive's MASE exceed 1 on long "
    "histories, so **against naive** is the verdict above. The directional p-value tests "
    "whether the called and the actual direction are related (Fisher's exact test per step on "
    "origins whose moves do not overlap, Bonferroni over the steps). **mae_vs_naive** is the "
    "MAE over naive's on the same pairs (below 1 beats naive); **n** counts the forecasts."
)
st.table(runs.metrics_view(result.metrics, result.verdict, columns=runs.KEY_METRICS))
with st.expander("All metrics"):
    st.table(runs.metrics_view(result.metrics, result.verdict))
for model, row in result.copy.iterrows():
    if model == "naive":
        continue  # the benchmark itself
    if row["copies_last"] and row.get("by_definition"):
        text.caption(
            "**{model}** forecasts {definition}: it moves little by definition, and its "
            "forecasts move {move:.0%} as much as the price does.",
            model=model,
            definition=row["by_definition"],
            move=row["relative_move"],
        )
    elif row["copies_last"]:
        text.warning(
            "**{model}** mostly repeats the last price: its forecasts move {move:.0%} as much "
            "as the price does. Its accuracy is naive's.",
            model=model,
            move=row["relative_move"],
        )

st.subheader("Step by step")
text.caption(
    "Diebold-Mariano tests per step ({loss}; equal-weighted cosine long-run variance, "
    "Student's t on its B degrees of freedom): one test per step, so read them beside the "
    "joint verdict above, not instead of it.",
    loss=loss_name,
)
dm = result.dm_tests
if dm.empty:
    st.info("Too few forecasts for significance tests: lengthen the test period.")
else:
    for verdict in dm[dm["step"] == step]["verdict"]:
        text.markdown("- {verdict}.", verdict=verdict)
    with st.expander("All tests"):
        st.dataframe(
            dm[["step", "model", "against", "statistic", "pvalue", "n", "dof", "loss", "verdict"]],
            hide_index=True,
        )

left, right = st.columns(2)
state.chart(figures["error_by_horizon"], key="horizon_chart", into=left)
state.chart(figures["residuals"], key="residual_histogram", into=right)
state.chart(figures["residual_acf"], key="residual_acf", into=left)
with right:
    st.subheader("Copies the last price?")
    # Short labels and the fixed rules under the table: it fits its half of the page.
    # A baseline forecasts its rule by definition: "by definition", never a tick.
    copies = result.copy.assign(
        copies_last=[
            "by definition" if rule else ("yes" if copies else "no")
            for copies, rule in zip(
                result.copy["copies_last"], result.copy["by_definition"], strict=True
            )
        ]
    )
    st.dataframe(
        copies,
        column_order=["copies_last", "relative_move", "change_correlation", "level_correlation"],
        column_config={
            "copies_last": st.column_config.TextColumn(
                "copies last",
                help="yes: the forecasts barely move from the last close, so their accuracy is "
                "naive's; by definition: a baseline whose rule (below) is what it forecasts, "
                "not flagged",
            ),
            "relative_move": st.column_config.NumberColumn(
                "moves",
                help="Mean absolute forecast change over mean absolute price change",
                format="percent",
            ),
            "change_correlation": st.column_config.NumberColumn(
                "change corr.",
                help="Correlation of forecast changes with price changes from the origin",
                format="%.2f",
            ),
            "level_correlation": st.column_config.NumberColumn(
                "level corr.",
                help="Correlation of the forecast with the close at the origin",
                format="%.2f",
            ),
        },
    )
    rules = result.copy["by_definition"]
    for model, rule in rules[rules != ""].items():
        text.caption("**{model}** is by definition {rule}.", model=model, rule=rule)

st.subheader("The future")
state.chart(figures["future"], key="future_chart")

downloads = st.columns(3)
downloads[0].download_button(
    "Metrics CSV", result.metrics.to_csv(), "metrics.csv", "text/csv", icon=":material/download:"
)
downloads[1].download_button(
    "Forecasts CSV",
    lambda: result.forecasts_table().to_csv(index=False),
    "forecasts.csv",
    "text/csv",
    icon=":material/download:",
)
# The settings are read now, in the page's run: the bundle itself is made when it is
# downloaded, outside any run, where the session's state cannot be read. It carries the
# candles the results were computed on (the result holds them).
bundle_selection = state.bundle_selection(dataset)
downloads[2].download_button(
    "Experiment bundle (zip)",
    lambda: experiment_bundle(result, figures, extra_files=shown.files, selection=bundle_selection),
    "experiment.zip",
    "application/zip",
    icon=":material/folder_zip:",
)
