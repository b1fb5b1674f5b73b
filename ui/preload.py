"""Start the browser on the chart library while the server is still busy.

Streamlit's page fetches the JavaScript of an element type the first time one appears.
Plotly's is 4.7 MB and takes about 0.7 s of the browser's main thread to run on a small
machine, and it used to start only once the chart arrived, at the end of the run. Asked
for by the first element of the run, it runs while the server imports its libraries and
loads the candles: a fresh server's first page answers clicks about 0.5 s sooner.

This module imports nothing but Streamlit, so that ``app.py`` can send the request
before it imports the rest.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import streamlit as st

__all__ = ["chart_library", "plotly_chunk"]

#: The container's key; Streamlit gives it the CSS class ``st-key-<key>``.
KEY = "preload_charts"


@functools.cache
def plotly_chunk() -> str | None:
    """The file name of Streamlit's Plotly chart code (``PlotlyChart.<hash>.js``), or None
    if the installed Streamlit does not have exactly one."""
    found = sorted((Path(st.__file__).parent / "static" / "static" / "js").glob("PlotlyChart.*.js"))
    return found[0].name if len(found) == 1 else None


def chart_library() -> None:
    """Have the browser load and run Streamlit's Plotly chart code now.

    The script imports the same URL as Streamlit's own import of the chunk (next to the
    page's main script), so the browser fetches and runs it once. The container is
    hidden and takes no room on the page. Nothing is sent if the chunk is not found.
    """
    chunk = plotly_chunk()
    if chunk is None:
        return
    script = (
        "(() => { const main = document.querySelector('script[src*=\"/static/js/index.\"]');"
        f" if (main) import(new URL({json.dumps(chunk)}, main.src).href).catch(() => {{}}); }})();"
    )
    # The container and the wrapper Streamlit puts around it, which would leave a gap.
    hidden = f'.st-key-{KEY}, [data-testid="stLayoutWrapper"]:has(> .st-key-{KEY})'
    with st.container(key=KEY):
        st.html(
            f"<style>{hidden} {{ display: none; }}</style><script>{script}</script>",
            unsafe_allow_javascript=True,
        )
