"""Data: the chosen candles, their quality, and a download."""

import pandas as pd
import streamlit as st

from forecasting.charts import candlestick_chart
from ui import state, text


def _dropped_list(stamps: pd.DatetimeIndex, limit: int = 200) -> str:
    """The first ``limit`` dropped open times, as a list in words."""
    daily = bool((stamps == stamps.normalize()).all())
    shown = [f"{stamp:%Y-%m-%d}" if daily else f"{stamp:%Y-%m-%d %H:%M}" for stamp in stamps]
    more = f" and {len(shown) - limit:,} more" if len(shown) > limit else ""
    return f"{', '.join(shown[:limit])}{more}"


def _conflicts_table(conflicts: tuple[dict, ...]) -> pd.DataFrame:
    """One row per open time seen twice: the candle kept and the one dropped."""
    rows = []
    for conflict in conflicts:
        row = {"open time": pd.Timestamp(int(conflict["timestamp"]), unit="ms", tz="UTC")}
        for side in ("kept", "dropped"):
            for column in ("open", "high", "low", "close", "volume"):
                row[f"{side} {column}"] = conflict[side][column]
        rows.append(row)
    return pd.DataFrame(rows)


dataset = state.current_dataset(state.page_setup())
candles = dataset.candles
report = dataset.quality()
counts = report.summary()

st.title("Data")
text.caption(
    "{label} · {count:,} candles · {first:%Y-%m-%d %H:%M} → {last:%Y-%m-%d %H:%M} UTC",
    label=dataset.label,
    count=len(candles),
    first=candles.index[0],
    last=candles.index[-1],
)
window = state.time_window("candles_chart", of=dataset.label)
state.chart(
    candlestick_chart(
        candles,
        filled=dataset.filled,
        gaps=None if dataset.filled is not None else report.gaps.head(200),
        window=window,
        select_to_zoom=True,
    ),
    key="candles_chart",
    on_select=state.zoom_to_box("candles_chart", of=dataset.label),
)
zoom_help, whole = st.columns([5, 1], vertical_alignment="center")
zoom_help.caption(
    "Drag across the chart to zoom; the price axis fits the candles shown. "
    "*Whole series* zooms out. The zoom tool in the chart's toolbar zooms without "
    "fitting the price axis."
)
whole.button(
    "Whole series",
    on_click=state.whole_series,
    args=("candles_chart",),
    disabled=window is None,
    icon=":material/zoom_out_map:",
    width="stretch",
)

for note in dataset.notes:
    text.info("{note}", note=note, icon=":material/description:")

st.subheader("Quality")
columns = st.columns(6)
columns[0].metric("Candles", f"{counts['candles']:,}", help="Real candles in the range.")
columns[1].metric("Missing", f"{counts['missing']:,}", help=f"Of {counts['expected']:,} expected.")
columns[2].metric("Duplicates", counts["duplicates"], help="Repeated timestamps dropped on load.")
columns[3].metric("Zero volume", counts["zero_volume"])
columns[4].metric(
    "Inconsistent OHLC", counts["inconsistent_ohlc"], help="High below open/close, or low above."
)
columns[5].metric(
    "Extreme moves", counts["extreme_moves"], help="Log returns beyond 8 robust std deviations."
)

if dataset.filled is not None and len(dataset.filled):
    st.info(
        f"{len(dataset.filled):,} missing candles were filled with flat candles at the previous "
        "close (orange crosses). Turn off *Fill gaps* in the sidebar to leave them out."
    )
elif report.missing:
    st.info(
        "Gaps are left as they are (shaded on the chart). Turn on *Fill gaps* in the sidebar "
        "to fill them with flat candles."
    )
if dropped := len(report.nonpositive):
    st.warning(
        f"{dropped:,} candle{'s' if dropped != 1 else ''} had a zero or negative price (a data "
        "provider's placeholder for a candle it does not have) and were dropped: they show as "
        "missing candles."
    )
for notice in report.notices:
    text.warning("{notice}", notice=notice, icon=":material/history:")
if dataset.calendar == "business":
    st.caption("Business-day calendar: weekends are not counted as missing; holidays are.")

with st.expander(
    f"Missing candles: {len(report.gaps):,} ranges", expanded=0 < counts["missing"] < 50
):
    state.table(report.gaps, hide_index=True)
with st.expander(
    f"Zero or negative prices: {counts['nonpositive']:,}", expanded=0 < counts["nonpositive"] < 50
):
    if len(report.nonpositive):
        text.caption(
            "Candles with zero or negative prices, dropped: {stamps}.",
            stamps=_dropped_list(report.nonpositive),
            limit=4000,
        )
    else:
        st.caption("None.")
conflicts = report.duplicate_conflicts
with st.expander(f"Conflicting duplicates: {len(conflicts):,}", expanded=0 < len(conflicts) < 50):
    if conflicts:
        text.caption("Rule: {rule}.", rule=report.duplicate_rule)
        state.table(_conflicts_table(conflicts), hide_index=True)
    else:
        st.caption("None.")
with st.expander(f"Extreme moves: {counts['extreme_moves']:,}"):
    state.table(report.extreme_moves, hide_index=True)
with st.expander(
    f"Zero-volume or inconsistent candles: {counts['zero_volume'] + counts['inconsistent_ohlc']:,}"
):
    state.table(candles.loc[report.zero_volume.union(report.inconsistent)])

st.download_button(
    "Download CSV",
    data=state.csv_bytes(candles),
    file_name=dataset.file_name,
    mime="text/csv",
    icon=":material/download:",
)
