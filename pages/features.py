"""Features: choose indicators, see them under the price, their correlations, and the audit."""

import streamlit as st

from forecasting.charts import correlation_heatmap, feature_chart
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
        "the one computed on the whole data."
    )
    audit = runs.audit_for(dataset.candles, spec_text)
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
