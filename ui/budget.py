"""Streamlit glue for the server's budget: its limits, one queue of runs, and cancelling.

The limits come from ``[limits]`` in ``.streamlit/secrets.toml`` and the environment
(:class:`forecasting.budget.Limits`). One :class:`~forecasting.budget.RunQueue` serves
every session of the server process. :func:`stop_check` is the ``should_stop`` a page
hands to long runs: it turns true when the visitor pressed Cancel, moved on (any rerun
of the page), or closed the tab, so a run stops within a few seconds of any of them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import streamlit as st

from forecasting.budget import Limits, RunQueue
from forecasting.errors import ConfigurationError
from ui import text


@functools.cache
def limits() -> tuple[Limits, str | None]:
    """The deployment's limits, and the reason they are the defaults (a bad setting)."""
    try:
        table: Mapping[str, Any] = st.secrets.get("limits", {})
    except Exception:  # noqa: BLE001 - no secrets file, or an unreadable one: defaults
        table = {}
    try:
        return Limits.load(dict(table), os.environ), None
    except ConfigurationError as exc:
        return Limits(), f"{exc} The server uses its default limits until this is fixed."


@functools.cache
def run_queue() -> RunQueue:
    """The one queue of runs of this server process (shared by every session)."""
    found = limits()[0]
    return RunQueue(slots=found.concurrent_runs, max_waiting=found.max_waiting)


def stop_check() -> Callable[[], bool]:
    """A ``should_stop`` for the current script run, safe to call from any thread.

    True once Streamlit asked the run to stop or rerun (Cancel was pressed, a widget
    changed, the page was left) or the visitor's browser went away (the tab closed).
    """
    from streamlit.runtime import Runtime
    from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None:  # not in a Streamlit script run (a plain test): never stops
        return lambda: False
    requests = getattr(ctx, "script_requests", None)
    session = ctx.session_id

    def should_stop() -> bool:
        state = getattr(requests, "_state", ScriptRequestType.CONTINUE)
        if state is not ScriptRequestType.CONTINUE:
            return True
        if Runtime.exists():
            return not Runtime.instance().is_active_session(session)
        return False

    return should_stop


@contextmanager
def queued(bar: Any, should_stop: Callable[[], bool], what: str) -> Iterator[None]:
    """Wait for this run's turn in the server's queue, showing the place on ``bar``
    (an ``st.progress``), then hold the turn inside the ``with`` block."""

    def on_wait(ahead: int) -> None:
        place = "next" if ahead == 0 else f"{ahead + 1} in line"
        bar.progress(
            0.0,
            text=text.markup(
                "Waiting for the server: {what} is {place} (Cancel stops it).",
                what=what,
                place=place,
            ),
        )

    with run_queue().turn(should_stop=should_stop, on_wait=on_wait, poll=0.5):
        yield
