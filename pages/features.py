"""Features: choose indicators, see them under the price, their correlations, and the audit."""

import streamlit as st

from forecasting.charts import correlation_heatmap, feature_chart, mood_chart
from forecasting.errors import ForecastingError
from ui import runs, settings, state, text

dataset = state.current_dataset(state.page_setup())

st.title("Features")
text.caption("{label} · {count:,} candles", label=dataset.label, count=len(dataset.candles))

specs = runs.feature_picker()
spec_text = ",".join(str(s) for s in specs)
if not specs:
    st.info("Choose at least one indicator.")
    settings.keep_widgets()
    st.stop()
spec_text, left_out = runs.usable_specs(spec_text)
if left_out:
    text.info(
        "Left out here and in the models, as unavailable (see above): {names}.",
        names=", ".join(left_out),
    )
if not spec_text:
    st.info("Choose an indicator that is available for this data.")
    settings.keep_widgets()
    st.stop()

try:
    features = runs.features_for(dataset.candles, spec_text)
except ForecastingError as exc:
    text.error("{problem}", problem=exc)
    settings.keep_widgets()
    st.stop()

text.caption(
    "{columns} columns · {warmup:,} warm-up candles dropped (never back-filled)",
    columns=len(features.columns),
    warmup=len(dataset.candles) - len(features),
)
state.chart(feature_chart(dataset.candles.loc[features.index], features), key="features")

mood = state.chosen_mood_kinds()
if mood:
    st.subheader("Market mood")
    if "fear_greed" in mood:
        st.markdown(
            "Fear & Greed values: [Crypto Fear & Greed Index by alternative.me]"
            "(https://alternative.me/crypto/fear-and-greed-index/), daily since February "
            "2018. Bands: extreme fear below 25, fear below 47, neutral below 55, greed "
            "below 76, extreme greed from 76."
        )
    labels = dataset.mood.labels if dataset.mood is not None else {}
    if "funding_rate" in labels:
        text.caption(
            "Funding rates: {source}, in basis points (0.01 %) per funding period.",
            source=labels["funding_rate"],
        )
    st.caption(
        "No value is used before it was published: a day's Fear & Greed value is used from "
        "the first candle that closes after that day ends (a lag of one day for any "
        "timeframe), and a funding rate from the first candle closing after its funding time."
    )
    if any(kind in dataset.candles.columns for kind in mood):
        state.chart(mood_chart(dataset.candles), key="mood_chart")
    for note in state.mood_notes(dataset):
        text.info("{note}", note=note, icon=":material/info:")

# The audit needs about 3/7 of the page beside the sidebar to show its columns whole.
left, right = st.columns([4, 3])
with left:
    st.subheader("Correlations")
    state.chart(correlation_heatmap(features), key="correlations")
with right:
    st.subheader("Look-ahead audit")
    st.caption(
        "Each feature is recomputed on shorter prefixes of the data; a feature that uses "
        "later candles changes when rows are appended. Passing means every value equals "
        "the one computed on the whole data. A market mood column's as-of join is checked "
        "too: every value published after a candle closed is replaced, and that candle's "
        "value must not change."
    )
    audit = runs.full_audit(dataset, spec_text)
    if audit["passed"].all():
        text.success(
            "All {columns} columns pass ({prefixes} prefixes).",
            columns=len(audit),
            prefixes=int(audit["prefixes"].iloc[0]),
        )
    else:
        text.error(
            "Some columns change when later candles arrive ({prefixes} prefixes): they leak "
            "the future.",
            prefixes=int(audit["prefixes"].iloc[0]),
        )
    # Short labels and narrow columns: the table fits its column beside the sidebar.
    st.dataframe(
        audit,
        hide_index=True,
        column_order=["column", "passed", "max_difference", "first_difference"],
        column_config={
            "column": st.column_config.TextColumn("column"),
            "passed": st.column_config.CheckboxColumn("passed", width="small"),
            "max_difference": st.column_config.NumberColumn(
                "max diff.",
                help="The largest relative change of a value when later candles are added",
                format="%.2g",
                width="small",
            ),
            "first_difference": st.column_config.Column(
                "first diff.", help="The first candle whose value changed", width="small"
            ),
        },
    )

settings.keep_widgets()
