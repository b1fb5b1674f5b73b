"""Crypto Forecast Lab: the frame around every page.

Page config, the shared data selection in the sidebar, and navigation. Each page is a
file in ``pages/`` that reads like a description of its screen.
"""

import streamlit as st

from ui import preload

st.set_page_config(
    page_title="Crypto Forecast Lab",
    # An emoji: Streamlit fetches a Material favicon from fonts.gstatic.com on every load.
    page_icon="📈",
    layout="wide",
    menu_items={"About": "Crypto Forecast Lab: honest, side-by-side crypto price forecasts."},
)
preload.chart_library()

# After the preload request is sent: these import pandas, ccxt and plotly, which takes
# 0.6-0.8 s on a fresh server.
from ui import settings, state  # noqa: E402

page = st.navigation(
    [
        st.Page("pages/data.py", title="Data", icon=":material/candlestick_chart:", default=True),
        st.Page("pages/features.py", title="Features", icon=":material/insights:"),
        st.Page("pages/models.py", title="Models", icon=":material/model_training:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/leaderboard:"),
        st.Page("pages/strategy.py", title="Strategy", icon=":material/account_balance:"),
        st.Page("pages/tuning.py", title="Tuning", icon=":material/tune:"),
        st.Page("pages/sweeps.py", title="Sweeps", icon=":material/grid_view:"),
        st.Page("pages/live.py", title="Live", icon=":material/sensors:"),
    ]
)
settings.restore_from_link()
st.session_state["selection"] = state.sidebar()
settings.sync_link()
settings.link_notice()
with state.framed():
    page.run()
