"""Sweeps: open a finished sweep's results table, and any of its experiments in Compare."""

import streamlit as st

from forecasting.errors import ForecastingError
from ui import settings, state, text
from ui import sweeps as sweep

state.page_setup()

st.title("Sweeps")
st.caption(
    "A sweep runs the same experiment on many series (python -m forecasting sweep, on Ray "
    "or one after another) and writes one folder: results.csv, sweep.json and one "
    "experiment bundle per series. Upload that folder's files to read its verdicts and open "
    "any experiment here."
)

files = st.file_uploader(
    "The sweep folder's files",
    type=["csv", "json", "zip"],
    accept_multiple_files=True,
    key="sweep_files",
    help="Select every file of the folder given to the sweep as --out.",
)
if files:
    try:
        sweep.remember(sweep.open_uploaded(files))
    except ForecastingError as exc:
        sweep.remember(None)
        text.error("{problem}", problem=exc)

opened = sweep.opened()
if opened is None:
    st.info("Upload a sweep's files to see its results.")
    settings.keep_widgets()
    st.stop()

text.caption(
    "{series} series · {failed} failed · {bundles} experiments to open",
    series=len(opened.labels),
    failed=len(opened.errors),
    bundles=len(opened.bundles),
)
st.subheader("Verdict against naive, per series and model")
st.caption("Each cell: the reading of the joint test and the loss ratio to naive's.")
st.dataframe(sweep.verdict_grid(opened))
with st.expander("The whole results table"):
    st.dataframe(opened.table, hide_index=True)

st.subheader("Open an experiment")
if not opened.bundles:
    st.info("This sweep has no experiment bundles among the files uploaded.")
    settings.keep_widgets()
    st.stop()
label = st.selectbox("Series", list(opened.bundles), key="sweep_series")
st.button(
    "Open in Compare",
    icon=":material/open_in_new:",
    type="primary",
    on_click=sweep.open_selected,
    args=("sweep_series",),
)
problem = st.session_state.pop(sweep.PROBLEM, None)
if problem:
    text.error("{problem}", problem=problem)
if st.session_state.pop(sweep.GO_TO_COMPARE, False):
    st.switch_page("pages/compare.py")

settings.keep_widgets()
