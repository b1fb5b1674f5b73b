"""Settings that outlive their page, links that carry them, bundles that restore them.

Streamlit drops a widget's value when a run does not draw it, so every experiment
setting is kept in a store in the session; links and bundles read and write that store
through the validated table in :mod:`ui.sharing`.
"""

from __future__ import annotations

import copy
import urllib.parse
from collections.abc import Mapping
from typing import Any

import streamlit as st

import forecasting as fc
from forecasting.bundle import SETTINGS_ENTRY, read_bundle_data, read_bundle_settings
from ui import sharing, state, text
from ui.state import utc_today

# --- settings that outlive their page --------------------------------------------------
#
# Streamlit drops a widget's value when a run does not draw it (the user is on another
# page). Widgets that hold experiment settings therefore use keys from `remember`, and
# their values are copied into a store that no page draws, from which they are restored
# when the page is drawn again. Widgets in a form get the form's name in their key
# (`w:horizon@compare`): one setting shown in two forms is two widgets to Streamlit,
# and the form's submit callback (`keep_form`) copies the submitted values.

_KEPT = "_kept_settings"


def remember(name: str, default: Any = None, *, form: str | None = None) -> str:
    """The widget key for setting ``name``, restored to its last value.

    The first value is ``default``, or the setting's default in :data:`sharing.SPECS`.
    """
    key = f"w:{name}" if form is None else f"w:{name}@{form}"
    store = st.session_state.setdefault(_KEPT, {})
    if key not in st.session_state:
        fallback = default if default is not None else _default(name)
        st.session_state[key] = store.get(name, fallback)
    return key


def setting(name: str, default: Any = None) -> Any:
    """The current value of a remembered setting (drawn on this page or not)."""
    key = f"w:{name}"
    if key in st.session_state:
        return st.session_state[key]
    fallback = default if default is not None else _default(name)
    return st.session_state.get(_KEPT, {}).get(name, fallback)


def _default(name: str) -> Any:
    spec = sharing.SPECS.get(name)
    return None if spec is None else copy.deepcopy(spec.default)


# --- links that reproduce an experiment -------------------------------------------------------


def current_values(data: Any = None) -> dict[str, Any]:
    """Every setting of the experiment now: the sidebar's data selection (or ``data``, the
    selection of the data actually shown) and all others."""
    state = st.session_state
    start, end = state.get("_last_range", (None, None))
    values: dict[str, Any] = {
        "source": state.get("source"),
        "exchange": state.get("exchange"),
        "symbol": state.get("symbol"),
        "timeframe": state.get("timeframe"),
        "start": start,
        "end": end,
        "fill_gaps": bool(state.get("fill_gaps", False)),
    }
    if data is not None:
        values.update(
            source=data.source,
            exchange=data.exchange or None,
            symbol=data.symbol or None,
            timeframe=data.timeframe or None,
            start=data.start,
            end=data.end,
            fill_gaps=bool(data.fill_gaps),
        )
    for name in sharing.SPECS:
        values[name] = setting(name)
    return {k: v for k, v in values.items() if v is not None}


def link_params(data: Any = None) -> dict[str, str]:
    """The query string of the current experiment: the data selection (or ``data``), and
    every other setting that differs from its default (so links stay short and readable)."""
    params = {}
    for name, value in current_values(data).items():
        spec = sharing.SPECS.get(name)
        if spec is not None and value == spec.default:
            continue
        params[name] = sharing.serialize(value)
    return params


def sync_link() -> None:
    """Keep the browser's URL in step with the settings (only when they changed)."""
    params = link_params()
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)


def share_link(data: Any = None) -> str:
    """The full URL that reproduces the current experiment, on ``data`` (the selection of
    the data shown, a :class:`ui.state.Selection`) when given."""
    base = (st.context.url or "").split("?")[0]
    return f"{base}?{urllib.parse.urlencode(link_params(data))}"


def apply_values(values: Mapping[str, Any]) -> None:
    """Make ``values`` the current settings (widgets pick them up when next drawn)."""
    state = st.session_state
    store = state.setdefault(_KEPT, {})
    for name in ("source", "exchange", "symbol", "timeframe", "fill_gaps"):
        if name in values:
            state[name] = values[name]
    if "start" in values or "end" in values:
        today = utc_today()
        start, end = state.get("_last_range", (None, None))
        start, end = values.get("start", start), min(values.get("end", end) or today, today)
        if start and start <= end:
            state["date_range"] = state["_last_range"] = (start, end)
    for name, value in values.items():
        if name in sharing.SPECS:
            store[name] = value
            # Drop any widget holding the old value, so the next draw starts from the store.
            for key in [k for k in state if isinstance(k, str) and k.startswith(f"w:{name}")]:
                if key == f"w:{name}" or key.startswith(f"w:{name}@"):
                    del state[key]


def restore_from_link() -> None:
    """On a session's first run, take the settings from the URL; say what was refused."""
    if st.session_state.get("_link_read"):
        return
    st.session_state["_link_read"] = True
    values, refused = sharing.parse_all(st.query_params.to_dict())
    apply_values(values)
    if refused:
        st.session_state["_link_refused"] = refused


#: Refused settings a notice names at most; the rest are counted ("and 3 more settings").
NAMED = 12


def named(notes: list[Any]) -> text.Markup:
    """The first :data:`NAMED` notes, each escaped and cut short on its own, then how many
    more there are: a long note cannot push the later settings out of the message."""
    shown = [text.plain(note) for note in notes[:NAMED]]
    more = len(notes) - len(shown)
    if more:
        shown.append(
            text.markup("and {more} more setting{s}", more=more, s="" if more == 1 else "s")
        )
    joined = shown[0] if shown else text.markup("")
    for part in shown[1:]:
        joined = text.markup("{joined}; {part}", joined=joined, part=part)
    return joined


def link_notice() -> None:
    """Show, once, which link settings were invalid and replaced by defaults."""
    refused = st.session_state.pop("_link_refused", None)
    if refused:
        text.warning(
            "Some settings in the link were not valid and the defaults are used instead: {refused}",
            refused=named(refused),
            icon=":material/link_off:",
        )


def bundle_files(data: Any = None) -> dict[str, str]:
    """Files the app adds to an experiment bundle: the settings it restores (on ``data``,
    the selection of the data shown, when given)."""
    return {SETTINGS_ENTRY: sharing.settings_document(current_values(data))}


def restore_uploaded_bundle() -> None:
    """Upload callback: restore the bundle's settings and data before the page is drawn
    again."""
    upload = st.session_state.get("bundle_upload")
    if upload is None:
        return
    try:
        refused, restored = _restore(upload.getvalue(), name=upload.name)
    except fc.ForecastingError as exc:
        st.session_state[BUNDLE_MESSAGE] = ("error", text.markup("{problem}", problem=exc))
        return
    if restored is None:
        data = text.markup(
            "It carries no candles (it was made before bundles did), so the sidebar's data is used."
        )
    else:
        candles = restored.candles
        data = text.markup(
            "{count:,} candles from {first} to {last}, checked against their SHA-256, used as "
            "they are (no network, no original file).",
            count=len(candles),
            first=f"{candles.index[0]:%Y-%m-%d}",
            last=f"{candles.index[-1]:%Y-%m-%d}",
        )
    if not refused:
        what = "Settings restored" if restored is None else "Settings and data restored"
        message = text.markup(
            "{what} from the bundle: {data} Press **Run comparison** to rerun the experiment.",
            what=what,
            data=data,
        )
        st.session_state[BUNDLE_MESSAGE] = ("success", message)
        return
    message = text.markup(
        "**Not restored:** {count} of the bundle's settings, beyond what this server runs: "
        "{refused}. Restored: the data selection and the other settings. {data} "
        "**Run comparison** here runs the values the form kept, not the bundle's "
        "experiment; `python -m forecasting compare --from-bundle FILE --json` with this "
        "file ({file}) as FILE reproduces it exactly.",
        count=len(refused),
        refused=named([_refusal_words(refusal) for refusal in refused]),
        data=data,
        file=upload.name,
    )
    # Shown while the restored data is on screen, so a run with the form's values is
    # never taken for the bundle's.
    st.session_state[BUNDLE_MESSAGE] = ("warning", message, restored)


def _refusal_words(refusal: sharing.Refusal) -> str:
    """``"horizon = 70 (this server takes a whole number from 1 to 60; the form kept 7)"``."""
    if not refusal.known:
        return f"{refusal.name} = {refusal.text} ({refusal.reason})"
    allowed = refusal.reason.removeprefix("must be ")
    kept = ""
    if refusal.name in sharing.SPECS:
        kept = f"; the form kept {sharing.serialize(setting(refusal.name)) or 'none'}"
    return f"{refusal.name} = {refusal.text} (this server takes {allowed}{kept})"


#: Session key of the message a restored bundle leaves for the Compare page.
BUNDLE_MESSAGE = "_bundle_message"


def bundle_notice(dataset: Any = None) -> None:
    """Show the outcome of the last bundle upload: once, or, when settings were not
    restored, on every run while ``dataset`` (the page's data) is the bundle's."""
    outcome = st.session_state.get(BUNDLE_MESSAGE)
    if outcome is None:
        return
    kind, message, *restored = outcome
    lasting = kind == "warning" and restored and restored[0] is not None
    shown = getattr(dataset, "selection", None)
    if not (lasting and shown is not None and shown == restored[0].selection):
        st.session_state.pop(BUNDLE_MESSAGE, None)
        if lasting:
            return  # the bundle's data is no longer shown: nor is its notice
    show = {"error": text.error, "warning": text.warning}.get(kind, text.success)
    show("{message}", message=message)


def restore_from_bundle(data: bytes, *, name: str = "experiment.zip") -> tuple[list[str], Any]:
    """Apply the settings saved in an experiment bundle and make the candles it carries the
    data of its selection; returns what was refused (one note each, as
    :func:`ui.sharing.parse_all` words them), and the restored :class:`ui.state.Dataset`
    (``None`` for a bundle without candles).

    Only ``app_settings.json`` and ``data.json`` are read, as JSON text, and
    ``candles.parquet`` as plain columns of numbers checked against the SHA-256 in
    ``data.json``; every setting goes through the same validation as a link. Nothing in
    a bundle is executed or unpickled. A setting refused is left as it was (the others
    and the data selection are restored); nothing at all is changed when the file is
    refused.

    Raises
    ------
    DataFormatError
        When the file is not a bundle this app wrote, or its candles do not match their
        SHA-256 (see :mod:`forecasting.bundle`).
    """
    refused, restored = _restore(data, name=name)
    return [str(refusal) for refusal in refused], restored


def _restore(data: bytes, *, name: str) -> tuple[list[sharing.Refusal], Any]:
    """:func:`restore_from_bundle`, with each refusal as a :class:`ui.sharing.Refusal`."""
    document = read_bundle_settings(data)
    carried = read_bundle_data(data)
    values, refused = sharing.parse_each({str(k): str(v) for k, v in document.items()})
    if carried is not None:
        # The selection recorded beside the candles fills what the settings lack; the
        # dates default to the candles' own span.
        span = {"start": carried.candles.index[0].date(), "end": carried.candles.index[-1].date()}
        for key in sharing.SIDEBAR:
            if key in values:
                continue
            recorded = carried.selection.get(key, span.get(key))
            if recorded not in (None, ""):
                try:
                    values[key] = sharing.parse(key, sharing.serialize(recorded))
                except ValueError:
                    continue
    apply_values(values)
    st.session_state.pop(state.RESTORED, None)
    restored = None if carried is None else state.restore_bundle_data(carried, name)
    return refused, restored


def keep_widgets() -> None:
    """Copy the values of remembered widgets outside forms into the store (end of a page),
    and bring the URL up to date with them."""
    store = st.session_state.setdefault(_KEPT, {})
    for key, value in st.session_state.items():
        if isinstance(key, str) and key.startswith("w:") and "@" not in key:
            store[key[2:]] = value
    sync_link()


def keep_form(form: str) -> None:
    """Submit callback: copy a form's submitted widget values into the store."""
    store = st.session_state.setdefault(_KEPT, {})
    suffix = f"@{form}"
    for key, value in list(st.session_state.items()):
        if isinstance(key, str) and key.startswith("w:") and key.endswith(suffix):
            store[key[2 : -len(suffix)]] = value


def picker(widget: Any, label: str, name: str, *, form: str | None, **kwargs: Any) -> Any:
    """Draw setting ``name`` with ``widget`` (``st.number_input``, ``columns[0].radio``...),
    offering what :data:`sharing.SPECS` declares for it: its choices, or its range.

    The ranges come from the models' declared ``parameter_ranges``, so a page cannot
    offer a value that the library, a link or a bundle would refuse.

    The widget's default is the setting's current value, not the widget's own default
    (a number input's is its minimum). A browser that missed a run's update (a run
    interrupted by a click on a busy server) draws a widget at its default, and a form
    submitted then would silently run with the minimum instead of the linked value.
    """
    spec = sharing.SPECS[name]
    key = remember(name, form=form)
    current = st.session_state[key]
    kind = getattr(widget, "__name__", "")
    if kind in ("selectbox", "radio"):
        choices = list(spec.choices)
        index = next((i for i, c in enumerate(choices) if _same(c, current)), 0)
        return widget(label, choices, index=index, key=key, **kwargs)
    if kind == "multiselect":
        return widget(label, list(spec.choices), default=current, key=key, **kwargs)
    if spec.choices is not None:  # select_slider
        return widget(label, list(spec.choices), value=current, key=key, **kwargs)
    if spec.lo is not None or spec.hi is not None:
        return widget(label, **spec.limits(), value=current, key=key, **kwargs)
    return widget(label, value=current, key=key, **kwargs)


def _same(choice: Any, value: Any) -> bool:
    # True == 1 in Python: a choice matches only a value of its own type.
    return type(choice) is type(value) and choice == value


def horizon_input(container: Any, form: str) -> int:
    """The horizon picker, shared by the forms that show it."""
    return int(picker(container.number_input, "Horizon (candles ahead)", "horizon", form=form))


def seed_input(container: Any, form: str) -> int:
    """The seed picker, shared by the forms that show it."""
    return int(picker(container.number_input, "Seed", "seed", form=form))
