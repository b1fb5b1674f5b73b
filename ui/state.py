"""The Streamlit glue every page shares: the sidebar selection, cached loaders, errors.

Pages import this module and :mod:`forecasting`; nothing here computes on data. The
selection lives in widget state owned by the frame (``app.py`` draws the sidebar on
every run), so it survives moving between pages.

Test and deployment hooks (environment variables, all optional):

``CFL_DEFAULT_EXCHANGE``, ``CFL_DEFAULT_SYMBOL``, ``CFL_DEFAULT_TIMEFRAME``
    The selection on first open.
``CFL_EXCHANGES``
    JSON ``{"<ccxt id>": {constructor settings}}``, merged under the
    ``[exchanges.<id>]`` tables of ``.streamlit/secrets.toml`` (secrets win).
``CFL_CACHE_DIR``
    The candle cache folder.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import hashlib
import io
import json
import os
import threading
import urllib.parse
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import streamlit as st

import forecasting as fc
from forecasting import features as fc_features
from forecasting.data.sample import SAMPLE_CALENDAR, SAMPLE_TIMEFRAME
from forecasting.evaluation import BacktestSettings
from forecasting.experiment import DEFAULT_MODELS, ExperimentSettings, run_experiment
from forecasting.models import make_model
from forecasting.ohlcv import timeframe_seconds
from ui import sharing

SOURCES = {"exchange": "Exchange", "csv": "CSV file", "sample": "Offline sample"}
# Fetches beyond this are refused with a message: a slip of the timeframe picker should
# not start hours of paging (three years of 1h candles is about 26,000).
MAX_CANDLES = 300_000
DEFAULT_CANDLES = 3000
FALLBACK_SYMBOLS = ("BTC/USDT", "BTC/USD", "BTC/USDC", "ETH/USDT", "ETH/USD")


@dataclass(frozen=True)
class Selection:
    """What the sidebar says the user wants to look at."""

    source: str
    exchange: str
    symbol: str
    timeframe: str
    start: dt.date
    end: dt.date
    fill_gaps: bool = False


@dataclass(frozen=True)
class Dataset:
    """Candles ready for the pages, with what they are and where they came from."""

    candles: pd.DataFrame
    label: str
    timeframe: str
    calendar: str
    source: str
    duplicates: int = 0
    filled: pd.DatetimeIndex | None = None

    @property
    def traded(self) -> pd.DataFrame:
        """The candles without the ones inserted to fill gaps."""
        if self.filled is None or not len(self.filled):
            return self.candles
        return self.candles.drop(self.filled)

    @property
    def file_name(self) -> str:
        """A file name for downloads of this dataset."""
        stem = "_".join(part.strip() for part in self.label.split("·"))
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80] + ".csv"

    def quality(self) -> fc.QualityReport:
        """The quality report of the traded candles."""
        return fc.quality_report(
            self.traded, self.timeframe, calendar=self.calendar, duplicates=self.duplicates
        )


# --- the frame -----------------------------------------------------------------------------

_frame = threading.local()


@contextlib.contextmanager
def framed() -> Iterator[None]:
    """Mark the page run as happening inside the frame (``app.py`` wraps ``page.run()``)."""
    _frame.active = True
    try:
        yield
    finally:
        _frame.active = False


def page_setup() -> Selection:
    """Call first in every page: the shared selection from the frame.

    A folder called ``pages/`` beside ``app.py`` puts a freshly started Streamlit server
    in its legacy multipage mode until ``st.navigation`` has run once in the process, so
    the first deep link (``/compare``) runs that page on its own, without the frame.
    Running the frame from inside the page works but gives its widgets other identities
    than on later runs (they then reset), so instead the page leaves legacy mode and
    reruns: the same URL then goes through ``app.py`` like every later request.
    """
    if not getattr(_frame, "active", False):
        from streamlit.runtime.pages_manager import PagesManager

        PagesManager.uses_pages_directory = False
        st.rerun()
    return st.session_state["selection"]


# --- settings ---------------------------------------------------------------------------


def defaults() -> tuple[str, str, str]:
    """Default exchange, symbol and timeframe (environment overrides the library's)."""
    return (
        os.environ.get("CFL_DEFAULT_EXCHANGE", fc.DEFAULT_EXCHANGE),
        os.environ.get("CFL_DEFAULT_SYMBOL", fc.DEFAULT_SYMBOL),
        os.environ.get("CFL_DEFAULT_TIMEFRAME", fc.DEFAULT_TIMEFRAME),
    )


def exchange_config(exchange_id: str) -> dict[str, Any]:
    """ccxt constructor settings for one exchange, from secrets and ``CFL_EXCHANGES``.

    Never displayed or logged: it may hold API keys.
    """
    config: dict[str, Any] = {}
    if os.environ.get("CFL_EXCHANGES"):
        try:
            config.update(json.loads(os.environ["CFL_EXCHANGES"]).get(exchange_id) or {})
        except (ValueError, AttributeError):
            st.warning("CFL_EXCHANGES is not a JSON object of exchange settings; ignored.")
    try:
        tables = st.secrets.get("exchanges", {})
        secret = tables.get(exchange_id)
    except Exception:  # noqa: BLE001 - no secrets file, or an unreadable one: run without keys
        secret = None
    if secret:
        config.update(_plain(secret))
    return config


def _plain(value: Any) -> Any:
    # Secrets come as read-only AttrDicts; ccxt wants ordinary (mutable) dicts.
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def default_start(timeframe: str, end: dt.date) -> dt.date:
    """About ``DEFAULT_CANDLES`` candles before ``end``, at least a day."""
    days = max(1, DEFAULT_CANDLES * timeframe_seconds(timeframe) // 86400)
    return end - dt.timedelta(days=int(days))


def utc_today() -> dt.date:
    """Today's date in UTC, which is what exchanges count candles in."""
    return pd.Timestamp.now(tz="UTC").date()


# --- cached look-ups ---------------------------------------------------------------------


@st.cache_data(ttl=24 * 3600, show_spinner=False)
def exchanges() -> list[str]:
    """Exchange ids that serve candles (no network)."""
    return fc.list_exchanges()


@st.cache_data(ttl=3600, show_spinner="Loading the exchange's markets…", max_entries=32)
def symbols(exchange_id: str) -> list[str]:
    """Symbols listed on an exchange (one request, cached for an hour)."""
    return fc.list_symbols(fc.create_exchange(exchange_id, exchange_config(exchange_id)))


@st.cache_data(ttl=24 * 3600, show_spinner=False, max_entries=64)
def timeframes(exchange_id: str) -> list[str]:
    """Timeframes an exchange offers (no network)."""
    return fc.list_timeframes(fc.create_exchange(exchange_id, exchange_config(exchange_id)))


@st.cache_data(show_spinner="Reading the CSV file…", max_entries=8)
def parse_csv(data: bytes) -> fc.CsvData:
    """Parse an uploaded CSV (cached per file content)."""
    return fc.read_ohlcv_csv(data)


# --- the sidebar -------------------------------------------------------------------------


def sidebar() -> Selection:
    """Draw the shared data pickers in the sidebar and return the selection."""
    default_exchange, default_symbol, default_timeframe = defaults()
    state = st.session_state
    state.setdefault("source", "exchange")
    state.setdefault("exchange", default_exchange)
    state.setdefault("timeframe", default_timeframe)
    today = utc_today()
    state.setdefault("date_range", (default_start(default_timeframe, today), today))

    with st.sidebar:
        st.header("Data")
        source = st.radio(
            "Source", list(SOURCES), format_func=SOURCES.get, key="source", horizontal=True
        )
        if source == "exchange":
            exchange, symbol, timeframe = _exchange_pickers(default_symbol)
        elif source == "csv":
            exchange, symbol, timeframe = "", "", ""
            st.file_uploader(
                "OHLCV file (CSV)",
                type=["csv", "txt"],
                key="csv_file",
                help="A header row with timestamp (or date), open, high, low, close, volume. "
                "ISO dates or epoch seconds/milliseconds; other columns are ignored. "
                "10 MB at most.",
            )
        else:
            exchange, symbol, timeframe = "", "", SAMPLE_TIMEFRAME
            st.caption(fc.SAMPLE_LABEL)

        start, end = _date_range_picker(today)
        fill = st.toggle(
            "Fill gaps",
            key="fill_gaps",
            help="Insert flat, zero-volume candles at the previous close where candles are "
            "missing. Off: gaps stay gaps. Either way they are listed on the Data page.",
        )
    return Selection(source, exchange, symbol, timeframe, start, end, bool(fill))


def _exchange_pickers(default_symbol: str) -> tuple[str, str, str]:
    state = st.session_state
    options = exchanges()
    if state["exchange"] not in options:
        state["exchange"] = fc.DEFAULT_EXCHANGE if fc.DEFAULT_EXCHANGE in options else options[0]
    exchange = st.selectbox(
        "Exchange",
        options,
        key="exchange",
        help="Any exchange ccxt supports that serves candles. Binance refuses US-hosted "
        "servers (HTTP 451), Streamlit Community Cloud included.",
    )
    try:
        listed = symbols(exchange)
    except fc.ForecastingError as exc:
        st.warning(f"Could not list the symbols of {exchange}: {exc}")
        listed = []
    if listed:
        if state.get("symbol") not in listed:
            preferred = [default_symbol, *FALLBACK_SYMBOLS]
            state["symbol"] = next((s for s in preferred if s in listed), listed[0])
        symbol = st.selectbox(
            "Symbol",
            listed,
            key="symbol",
            help=f"{len(listed):,} listed on {exchange}. Type to search.",
        )
    else:
        state.setdefault("symbol", default_symbol)
        symbol = st.text_input("Symbol", key="symbol", help="Unified ccxt symbol, e.g. BTC/USDT.")
    offered = timeframes(exchange) or [state["timeframe"]]
    if state["timeframe"] not in offered:
        state["timeframe"] = "1d" if "1d" in offered else offered[-1]
    timeframe = st.selectbox(
        "Timeframe", offered, key="timeframe", on_change=_reset_start_for_timeframe
    )
    return exchange, symbol.strip(), timeframe


def _reset_start_for_timeframe() -> None:
    # A new timeframe gets its own default span, so 1d -> 1m does not ask for millions
    # of candles; the end date the user chose stays.
    state = st.session_state
    end = state["date_range"][-1] if state.get("date_range") else utc_today()
    state["date_range"] = (default_start(state["timeframe"], end), end)


def _date_range_picker(today: dt.date) -> tuple[dt.date, dt.date]:
    state = st.session_state
    picked = st.date_input(
        "Date range (UTC)",
        key="date_range",
        max_value=today,
        help="Candles opening from the first day through the last day, in UTC.",
    )
    if isinstance(picked, tuple | list) and len(picked) == 2:
        state["_last_range"] = (picked[0], picked[1])
    # While the user is between the two clicks of a range, keep the last complete one.
    return state.get("_last_range", (default_start(state["timeframe"], today), today))


# --- loading -----------------------------------------------------------------------------


def load_dataset(selection: Selection, *, progress: Any = None) -> Dataset:
    """Candles for a selection (exchange through the Parquet cache, CSV, or sample).

    Raises
    ------
    ForecastingError
        Whatever stopped the data from loading, with a message for the user.
    """
    if selection.source == "sample":
        dataset = Dataset(
            candles=fc.load_sample(),
            label=fc.SAMPLE_LABEL,
            timeframe=SAMPLE_TIMEFRAME,
            calendar=SAMPLE_CALENDAR,
            source="sample",
        )
        return _clip_and_fill(dataset, selection)
    if selection.source == "csv":
        upload = st.session_state.get("csv_file")
        if upload is None:
            raise fc.DataFormatError("Upload a CSV file in the sidebar to use it as data.")
        parsed = parse_csv(upload.getvalue())
        dataset = Dataset(
            candles=parsed.candles,
            label=f"{upload.name} (uploaded CSV, {parsed.timeframe})",
            timeframe=parsed.timeframe,
            calendar=parsed.calendar,
            source="csv",
            duplicates=parsed.duplicates,
        )
        return _clip_and_fill(dataset, selection)

    since = pd.Timestamp(selection.start, tz="UTC")
    until = pd.Timestamp(selection.end, tz="UTC") + pd.Timedelta(days=1)
    if since >= until:
        raise fc.InvalidDateRange("The start date must not be after the end date.")
    expected = int((until - since).total_seconds() // timeframe_seconds(selection.timeframe))
    if expected > MAX_CANDLES:
        raise fc.ConfigurationError(
            f"That range holds about {expected:,} {selection.timeframe} candles; the limit is "
            f"{MAX_CANDLES:,}. Shorten the date range or choose a longer timeframe."
        )
    candles = fc.load_exchange_candles(
        selection.exchange,
        selection.symbol,
        selection.timeframe,
        since,
        until,
        config=exchange_config(selection.exchange),
        progress=progress,
    )
    dataset = Dataset(
        candles=candles,
        label=f"{selection.exchange} · {selection.symbol} · {selection.timeframe}",
        timeframe=selection.timeframe,
        calendar="24/7",
        source="exchange",
    )
    return _clip_and_fill(dataset, selection, clip=False)


def _clip_and_fill(dataset: Dataset, selection: Selection, *, clip: bool = True) -> Dataset:
    candles = dataset.candles
    if clip:
        since = pd.Timestamp(selection.start, tz="UTC")
        until = pd.Timestamp(selection.end, tz="UTC") + pd.Timedelta(days=1)
        clipped = candles[(candles.index >= since) & (candles.index < until)]
        if clipped.empty:
            first, last = candles.index[0].date(), candles.index[-1].date()
            raise fc.NoCandles(
                f"The data runs from {first} to {last}: nothing in the chosen date range. "
                "Change the date range in the sidebar."
            )
        candles = clipped
    filled = None
    if selection.fill_gaps:
        candles, filled = fc.fill_gaps(candles, dataset.timeframe, calendar=dataset.calendar)
    return replace(dataset, candles=candles, filled=filled)


def current_dataset(selection: Selection) -> Dataset:
    """The dataset for the page, with progress while fetching and errors shown.

    On an error the message is shown and the last dataset that loaded stays on screen;
    on first open, with nothing loaded yet, the offline sample stands in, labelled.
    """
    bar = st.empty()

    def progress(done: int, expected: int) -> None:
        bar.progress(
            min(1.0, done / max(expected, 1)), text=f"Fetching candles: {done:,} of ~{expected:,}"
        )

    try:
        dataset = load_dataset(selection, progress=progress)
    except fc.ForecastingError as exc:
        bar.empty()
        st.error(str(exc), icon=":material/error:")
        last = st.session_state.get("_last_dataset")
        if last is not None:
            st.info(f"Still showing the last data that loaded: {last.label}.")
            return last
        sample = _clip_and_fill(
            Dataset(fc.load_sample(), fc.SAMPLE_LABEL, SAMPLE_TIMEFRAME, SAMPLE_CALENDAR, "sample"),
            replace(selection, start=dt.date(1999, 1, 1), end=dt.date(2018, 12, 31)),
        )
        st.warning(f"Showing the offline sample instead: {fc.SAMPLE_LABEL}.")
        return sample
    bar.empty()
    st.session_state["_last_dataset"] = dataset
    return dataset


def csv_bytes(candles: pd.DataFrame) -> bytes:
    """The candles as the CSV the command line writes."""
    buffer = io.StringIO()
    fc.write_ohlcv_csv(candles, buffer)
    return buffer.getvalue().encode()


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


def current_values() -> dict[str, Any]:
    """Every setting of the experiment now: the sidebar's data selection and all others."""
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
    for name in sharing.SPECS:
        values[name] = setting(name)
    return {k: v for k, v in values.items() if v is not None}


def link_params() -> dict[str, str]:
    """The query string of the current experiment: the data selection, and every other
    setting that differs from its default (so links stay short and readable)."""
    params = {}
    for name, value in current_values().items():
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


def share_link() -> str:
    """The full URL that reproduces the current experiment."""
    base = (st.context.url or "").split("?")[0]
    return f"{base}?{urllib.parse.urlencode(link_params())}"


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


def link_notice() -> None:
    """Show, once, which link settings were invalid and replaced by defaults."""
    refused = st.session_state.pop("_link_refused", None)
    if refused:
        st.warning(
            "Some settings in the link were not valid and the defaults are used instead: "
            + "; ".join(refused),
            icon=":material/link_off:",
        )


def bundle_files() -> dict[str, str]:
    """Files the app adds to an experiment bundle: the settings it restores."""
    return {"app_settings.json": sharing.settings_document(current_values())}


def restore_uploaded_bundle() -> None:
    """Upload callback: restore the bundle's settings before the page is drawn again."""
    upload = st.session_state.get("bundle_upload")
    if upload is None:
        return
    try:
        refused = restore_from_bundle(upload.getvalue())
    except fc.ForecastingError as exc:
        st.session_state["_bundle_message"] = ("error", str(exc))
        return
    message = "Settings restored from the bundle. Press **Run comparison** to run it."
    if refused:
        message += " Not restored (invalid): " + "; ".join(refused)
    st.session_state["_bundle_message"] = ("success", message)


def bundle_notice() -> None:
    """Show the outcome of the last bundle upload, once."""
    outcome = st.session_state.pop("_bundle_message", None)
    if outcome is not None:
        kind, message = outcome
        (st.error if kind == "error" else st.success)(message)


def restore_from_bundle(data: bytes) -> list[str]:
    """Apply the settings saved in an experiment bundle; returns what was refused.

    Only ``app_settings.json`` is read, as JSON text, and every value goes through the
    same validation as a link: nothing in a bundle is executed or unpickled.

    Raises
    ------
    DataFormatError
        When the file is not a bundle this app wrote.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            info = archive.getinfo("app_settings.json")
            if info.file_size > 1_000_000:
                raise ValueError("settings file too large")
            document = json.loads(archive.read(info).decode("utf-8"))
    except (zipfile.BadZipFile, KeyError, ValueError, UnicodeDecodeError) as exc:
        raise fc.DataFormatError(
            "That file is not an experiment bundle from this app (a zip with "
            "app_settings.json). Download one from the Compare page."
        ) from exc
    if not isinstance(document, dict):
        raise fc.DataFormatError("The bundle's app_settings.json is not a settings object.")
    values, refused = sharing.parse_all({str(k): str(v) for k, v in document.items()})
    apply_values(values)
    return refused


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


def horizon_input(container: Any, form: str) -> int:
    """The horizon picker, shared by the forms that show it."""
    key = remember("horizon", 7, form=form)
    return int(container.number_input("Horizon (candles ahead)", 1, 60, key=key, step=1))


def seed_input(container: Any, form: str) -> int:
    """The seed picker, shared by the forms that show it."""
    key = remember("seed", 42, form=form)
    return int(container.number_input("Seed", 0, 2**31 - 1, key=key, step=1))


# --- features ------------------------------------------------------------------------------


def feature_picker() -> tuple[fc_features.FeatureSpec, ...]:
    """Draw the indicator pickers with their parameters; return the chosen specs."""
    kinds = fc_features.FEATURE_KINDS
    default_kinds = [spec.kind for spec in fc_features.DEFAULT_FEATURES]
    chosen = st.multiselect(
        "Indicators",
        list(kinds),
        key=remember("features.kinds", default_kinds),
        format_func=lambda k: kinds[k].title,
        help="Each value is computed from candles up to that candle only (ta library; RSI "
        "is Wilder's own).",
    )
    specs = []
    with_params = [k for k in chosen if kinds[k].param_names]
    if with_params:
        columns = st.columns(len(with_params))
        for column, kind in zip(columns, with_params, strict=True):
            info = kinds[kind]
            with column:
                st.markdown(f"**{info.title}**", help=info.description)
                params = []
                for name, default in zip(info.param_names, info.defaults, strict=True):
                    is_int = isinstance(default, int)
                    value = st.number_input(
                        name,
                        min_value=1 if is_int else 0.1,
                        max_value=500 if is_int else 10.0,
                        step=1 if is_int else 0.5,
                        key=remember(f"features.{kind}.{name}", default),
                    )
                    params.append(int(value) if is_int else float(value))
            specs.append((kind, tuple(params)))
    specs += [(k, ()) for k in chosen if not kinds[k].param_names]
    try:
        return tuple(fc_features.FeatureSpec(kind, params) for kind, params in specs)
    except fc.ForecastingError as exc:
        st.error(str(exc))
        return fc_features.DEFAULT_FEATURES


def feature_specs() -> str:
    """The chosen features as a spec string (``"rsi:14,macd:12:26:9"``), from any page."""
    kinds = setting("features.kinds", [s.kind for s in fc_features.DEFAULT_FEATURES])
    parts = []
    for kind in kinds:
        info = fc_features.FEATURE_KINDS[kind]
        values = [
            setting(f"features.{kind}.{name}", default)
            for name, default in zip(info.param_names, info.defaults, strict=True)
        ]
        parts.append(":".join([kind, *(str(v) for v in values)]))
    return ",".join(parts)


@st.cache_data(max_entries=16, show_spinner="Computing features…")
def features_for(candles: pd.DataFrame, specs: str) -> pd.DataFrame:
    """Feature columns for the candles (warm-up dropped), cached per data and specs."""
    return fc_features.compute_features(candles, fc_features.parse_features(specs))


@st.cache_data(max_entries=16, show_spinner="Auditing features for look-ahead…")
def audit_for(candles: pd.DataFrame, specs: str) -> pd.DataFrame:
    """The look-ahead audit of the features on these candles."""
    return fc_features.lookahead_audit(candles, fc_features.parse_features(specs))


# --- models ----------------------------------------------------------------------------------


def fingerprint(candles: pd.DataFrame) -> str:
    """A short hash of the candles' values and timestamps."""
    hashed = pd.util.hash_pandas_object(candles, index=True).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


class _Store:
    """Fitted models or experiment results by key, shared by sessions, least recent dropped.

    Sharing is safe: a key names everything the model was fitted on, models are never
    mutated after fitting (predict does not change them), and a refit makes a new one.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._models: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Any:
        with self._lock:
            model = self._models.pop(key, None)
            if model is not None:
                self._models[key] = model
            return model

    def put(self, key: tuple, model: Any) -> None:
        with self._lock:
            self._models.pop(key, None)
            self._models[key] = model
            while len(self._models) > self.size:
                self._models.popitem(last=False)

    def __len__(self) -> int:
        return len(self._models)


MODELS = _Store(size=24)
EXPERIMENTS = _Store(size=8)


def model_key(candles: pd.DataFrame, alias: str, settings: Mapping[str, Any]) -> tuple:
    """The store key of a model fitted on ``candles`` with ``settings``."""
    return (fingerprint(candles), alias, json.dumps(settings, sort_keys=True, default=str))


def fitted_model(
    candles: pd.DataFrame,
    alias: str,
    settings: Mapping[str, Any],
    *,
    progress: Any = None,
    train: bool = True,
) -> Any:
    """A model fitted on ``candles``: from the store when there, else fitted (if ``train``)."""
    key = model_key(candles, alias, settings)
    model = MODELS.get(key)
    if model is None and train:
        model = make_model(alias, **settings).fit(candles, progress=progress)
        MODELS.put(key, model)
    return model


# --- training ------------------------------------------------------------------------------

BASELINE_SETTINGS: dict[str, dict[str, Any]] = {
    "naive": {},
    "drift": {},
    "seasonal_naive": {},
    "moving_average": {"window": 7},
}


def model_settings() -> dict[str, Any]:
    """Every model's settings from the (last submitted) Models form, ready for ``make_model``."""
    horizon, seed, level = (
        int(setting("horizon", 7)),
        int(setting("seed", 42)),
        setting("level", 0.9),
    )
    features = feature_specs()
    models: dict[str, dict[str, Any]] = {
        alias: {**params, "level": level} for alias, params in BASELINE_SETTINGS.items()
    }
    if setting("prophet.enabled", True):
        models["prophet"] = {
            "changepoint_prior_scale": setting("prophet.changepoint_prior_scale", 0.05),
            "weekly_seasonality": setting("prophet.weekly", "auto"),
            "yearly_seasonality": setting("prophet.yearly", "auto"),
            "seasonality_mode": setting("prophet.seasonality_mode", "additive"),
            "max_train_candles": int(setting("prophet.max_train_candles", 3000)),
            "regressors": features if setting("prophet.regressors", False) else "",
            "denoise": setting("prophet.denoise", "none"),
            "denoise_window": int(setting("prophet.denoise_window", 7)),
            "horizon": horizon,
            "level": level,
            "seed": seed,
        }
    if setting("lstm.enabled", True):
        models["lstm"] = {
            "lookback": int(setting("lstm.lookback", 30)),
            "horizon": horizon,
            "layers": int(setting("lstm.layers", 1)),
            "units": int(setting("lstm.units", 32)),
            "dropout": float(setting("lstm.dropout", 0.1)),
            "epochs": int(setting("lstm.epochs", 30)),
            "batch_size": int(setting("lstm.batch_size", 64)),
            "learning_rate": float(setting("lstm.learning_rate", 1e-3)),
            "patience": int(setting("lstm.patience", 5)),
            "target": setting("lstm.target", "log_return"),
            "interval": setting("lstm.interval", "conformal"),
            "features": features if setting("lstm.use_features", True) else "",
            "denoise": setting("lstm.denoise", "none"),
            "denoise_window": int(setting("lstm.denoise_window", 7)),
            "level": level,
            "seed": seed,
        }
    return {"horizon": horizon, "seed": seed, "level": level, "models": models}


def model_aliases(settings: Mapping[str, Any]) -> list[str]:
    """The models a settings dict asks for, baselines first."""
    return list(settings["models"])


class TrainingDisplay:
    """A progress bar and a live loss chart, updated from the models' progress callbacks."""

    def __init__(self) -> None:
        from forecasting.charts import loss_chart

        self._loss_chart = loss_chart
        self.bar = st.progress(0.0, text="Starting…")
        self.chart = st.empty()
        self.losses: dict[str, list[float]] = {"loss": [], "val_loss": []}

    def callback(self, alias: str, position: int, total: int):
        """The progress callback for one model (``position`` of ``total``)."""

        def report(stage: str, fraction: float, details: Mapping[str, Any]) -> None:
            done = (position + min(max(fraction, 0.0), 1.0)) / total
            if stage == "epoch":
                self.losses["loss"].append(details["loss"])
                self.losses["val_loss"].append(details["val_loss"])
                text = (
                    f"{alias}: epoch {details['epoch']}/{details['epochs']} · "
                    f"loss {details['loss']:.4f} · val_loss {details['val_loss']:.4f}"
                )
                self.chart.plotly_chart(
                    self._loss_chart(self.losses), key=f"live_loss_{alias}_{details['epoch']}"
                )
            else:
                text = f"{alias}: fitting on {details.get('candles', '?'):,} candles…"
            self.bar.progress(done, text=text)

        return report

    def done(self) -> None:
        """Remove the progress widgets."""
        self.bar.empty()
        self.chart.empty()


def train_all(
    candles: pd.DataFrame,
    settings: Mapping[str, Any],
    display: TrainingDisplay | None,
    *,
    train: bool = True,
) -> dict[str, Any]:
    """Fitted models by alias: from the store, or fitted now (baselines always, the rest if
    ``train``). Errors of one model are shown and do not stop the others."""
    aliases = model_aliases(settings)
    models: dict[str, Any] = {}
    for position, alias in enumerate(aliases):
        progress = display.callback(alias, position, len(aliases)) if display else None
        try:
            model = fitted_model(
                candles,
                alias,
                settings["models"][alias],
                progress=progress,
                train=train or alias in BASELINE_SETTINGS,
            )
        except fc.ForecastingError as exc:
            st.error(f"{alias}: {exc}")
            continue
        if model is not None:
            models[alias] = model
    if display:
        display.done()
    return models


def forecasts(models: Mapping[str, Any], horizon: int) -> list[Any]:
    """Each model's forecast of the next ``horizon`` candles."""
    out = []
    for alias, model in models.items():
        try:
            out.append(model.predict(horizon))
        except fc.ForecastingError as exc:
            st.error(f"{alias}: {exc}")
    return out


def forecast_table(items: list[Any]) -> pd.DataFrame:
    """Forecast means (and intervals) side by side, one column group per model."""
    frames = {f.model: f.to_frame() for f in items}
    return pd.concat(frames, axis=1)


# --- comparison ------------------------------------------------------------------------------


def compare_settings() -> ExperimentSettings:
    """The experiment the Compare form describes, with the Models page's model settings."""
    chosen = setting("compare.models", list(DEFAULT_MODELS))
    per_model = model_settings()["models"]
    window = int(setting("compare.window", 0)) or None
    test_start = setting("compare.test_start", None)
    return ExperimentSettings(
        models=tuple(chosen),
        model_settings={alias: per_model.get(alias, {}) for alias in chosen},
        backtest=BacktestSettings(
            horizon=int(setting("horizon", 7)),
            folds=int(setting("compare.folds", 3)),
            test_size=int(setting("compare.test_size", 120)),
            stride=int(setting("compare.stride", 1)),
            window=window,
            test_start=pd.Timestamp(test_start, tz="UTC") if test_start else None,
        ),
        seed=int(setting("seed", 42)),
    )


def experiment_key(candles: pd.DataFrame, settings: ExperimentSettings) -> tuple:
    """The store key of an experiment: the data and every setting."""
    return (fingerprint(candles), json.dumps(settings.to_dict(), sort_keys=True, default=str))


def stored_experiment(candles: pd.DataFrame, settings: ExperimentSettings) -> Any:
    """A finished experiment with these data and settings, or ``None``."""
    return EXPERIMENTS.get(experiment_key(candles, settings))


def run_comparison(dataset: Dataset, settings: ExperimentSettings) -> Any:
    """Run (or fetch from the store) an experiment, with a progress bar while it runs."""
    key = experiment_key(dataset.candles, settings)
    result = EXPERIMENTS.get(key)
    if result is not None:
        return result
    bar = st.progress(0.0, text="Starting the walk-forward backtest…")

    def progress(fraction: float, message: str) -> None:
        bar.progress(min(max(fraction, 0.0), 1.0), text=message)

    source = {"label": dataset.label, "source": dataset.source, "timeframe": dataset.timeframe}
    result = run_experiment(dataset.candles, settings, source=source, progress=progress)
    bar.empty()
    EXPERIMENTS.put(key, result)
    return result


def metrics_view(metrics: pd.DataFrame) -> Any:
    """The metrics table for display: best per column highlighted, MASE read against naive."""
    table = metrics.drop(columns=["direction_calls"]).copy()
    table.insert(0, "MASE < 1", table["mase"] < 1)
    table.insert(0, "beats naive (same pairs)", table["mae_vs_naive"] < 1)
    lower_is_better = ["mae", "rmse", "mape", "smape", "mase", "mae_vs_naive", "width"]
    styled = table.style.format(precision=4, na_rep="—")
    styled = styled.highlight_min(subset=lower_is_better, props="font-weight: bold; color: #26a69a")
    styled = styled.highlight_max(
        subset=["directional_accuracy"], props="font-weight: bold; color: #26a69a"
    )
    return styled
