"""Streamlit glue shared by the pages (see :mod:`ui.state`)."""
