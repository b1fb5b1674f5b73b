"""The Streamlit glue every page shares: the frame, the sidebar selection, the data.

The glue is three small modules that pages import beside :mod:`forecasting`: this one
(the frame, the data selection, cached look-ups, loading with progress and errors),
:mod:`ui.settings` (settings that outlive their page, links, bundles) and :mod:`ui.runs`
(features, training, comparisons). Nothing in them computes on data. The selection
lives in widget state owned by the frame (``app.py`` draws the sidebar on every run), so
it survives moving between pages.

Test and deployment hooks (environment variables, all optional):

``CFL_DEFAULT_EXCHANGE``, ``CFL_DEFAULT_SYMBOL``, ``CFL_DEFAULT_TIMEFRAME``
    The selection on first open.
``CFL_EXCHANGES``
    JSON ``{"<ccxt id>": {constructor settings}}``, merged under the
    ``[exchanges.<id>]`` tables of ``.streamlit/secrets.toml`` (secrets win).
``CFL_CACHE_DIR``
    The candle cache folder.
``CFL_FEAR_GREED_URL``
    The Crypto Fear & Greed Index's address (see :mod:`forecasting.data.mood`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import streamlit as st

import forecasting as fc
from forecasting import bundle as fc_bundle
from forecasting.data.csvfile import MAX_CSV_BYTES
from forecasting.data.duplicates import duplicate_conflicts
from forecasting.data.mood import MoodJoin, attach_mood, fear_greed_url
from forecasting.data.quality import dropped_nonpositive, notices
from forecasting.data.sample import SAMPLE_CALENDAR, SAMPLE_TIMEFRAME
from forecasting.experiment import data_hash
from forecasting.features import FEATURE_KINDS, mood_kinds
from forecasting.ohlcv import timeframe_seconds
from ui import budget, sharing, text

SOURCES = {"exchange": "Exchange", "csv": "CSV file", "sample": "Offline sample"}
# The earliest day the date range offers: the CSV reader's earliest date (1900-01-01),
# so no file it reads starts before it.
EARLIEST_DATE = sharing.EARLIEST_DATE
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
    nonpositive: pd.DatetimeIndex | None = None
    hidden_before: int = 0
    """Candles of the source before the date range (not shown, not used)."""
    hidden_after: int = 0
    """Candles of the source after the date range."""
    source_span: tuple[pd.Timestamp, pd.Timestamp] | None = None
    """First and last open time of the whole source (a file or the sample)."""
    notes: tuple[str, ...] = ()
    """What the reader should know about how the data was read (a file's layout)."""
    notices: tuple[str, ...] = ()
    """What the source did not deliver (an exchange that serves less history)."""
    conflicts: tuple[dict, ...] = ()
    """Pairs of candles that shared an open time with different values, and which won."""
    selection: Selection | None = None
    """The selection these candles were loaded for (a link to them carries it)."""
    file: str = ""
    """The uploaded file's name (CSV data)."""
    file_format: str = ""
    """The layout the file was read as (CSV data)."""
    mood: MoodJoin | None = None
    """The market mood joined to ``candles`` (:func:`with_mood`): its notes, the kinds
    that could not be joined and why, and the sources for the join's audit."""

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
        first, last = self.candles.index[0], self.candles.index[-1]
        first_ms, last_ms = first.value // 1_000_000, last.value // 1_000_000
        return fc.quality_report(
            self.traded,
            self.timeframe,
            calendar=self.calendar,
            duplicates=self.duplicates,
            nonpositive=self.nonpositive,
            duplicate_conflicts=tuple(
                c for c in self.conflicts if first_ms <= int(c["timestamp"]) <= last_ms
            ),
            notices=self.notices,
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
    _read_link_selection()
    checked: dict[str, str | None] = {}

    with st.sidebar:
        st.header("Data")
        source = st.radio(
            "Source",
            list(SOURCES),
            format_func=SOURCES.get,
            key="source",
            horizontal=True,
            on_change=_show_whole_source,
        )
        if source == "exchange":
            exchange, symbol, timeframe = _exchange_pickers(default_symbol, checked)
        elif source == "csv":
            exchange, symbol, timeframe = "", "", ""
            st.file_uploader(
                "OHLCV file (CSV)",
                type=["csv", "txt", "zip", "gz", "tgz", "tar", "bz2", "xz"],
                key="csv_file",
                max_upload_size=MAX_CSV_BYTES // 1_048_576,  # the same limit as the reader
                on_change=_show_whole_file,
                help="A header row with timestamp (or date), open, high, low, close, volume, "
                "or a Binance or CryptoDataDownload file as downloaded (a zip of one CSV too). "
                "ISO dates or epoch seconds/milliseconds; other columns are ignored. "
                "10 MB at most.",
            )
        else:
            exchange, symbol, timeframe = "", "", SAMPLE_TIMEFRAME
            st.caption(text.plain(fc.SAMPLE_LABEL))

        start, end = _date_range_picker(today)
        fill = st.toggle(
            "Fill gaps",
            key="fill_gaps",
            help="Insert flat, zero-volume candles at the previous close where candles are "
            "missing. Off: gaps stay gaps. Either way they are listed on the Data page.",
        )
    selection = Selection(source, exchange, symbol, timeframe, start, end, bool(fill))
    _check_link_selection(selection, checked)
    return selection


def _exchange_pickers(default_symbol: str, checked: dict[str, str | None]) -> tuple[str, str, str]:
    """The exchange, symbol and timeframe pickers.

    A value the exchange does not offer is replaced; ``checked`` gets, for each of
    ``exchange``, ``symbol`` and ``timeframe`` whose valid values are known on this run,
    why the value was replaced, or ``None`` when it was kept (a symbol is not in it while
    the exchange's markets cannot be listed).
    """
    state = st.session_state
    options = exchanges()
    checked["exchange"] = None
    if state["exchange"] not in options:
        checked["exchange"] = "not an exchange ccxt knows that serves candles"
        configured = defaults()[0]
        state["exchange"] = next(
            (e for e in (configured, fc.DEFAULT_EXCHANGE) if e in options), options[0]
        )
    exchange = st.selectbox(
        "Exchange",
        options,
        key="exchange",
        help="Any exchange ccxt supports that serves candles. Binance refuses US-hosted "
        "servers (HTTP 451), Streamlit Community Cloud included.",
    )
    restored = state.get(RESTORED)
    try:
        # The candles of a restored bundle need no market list: no request for them.
        from_bundle = restored is not None and restored.selection.exchange == exchange
        listed = [] if from_bundle else symbols(exchange)
    except fc.ForecastingError as exc:
        text.warning(
            "Could not list the symbols of {exchange}: {problem}", exchange=exchange, problem=exc
        )
        listed = []
    if listed:
        checked["symbol"] = None
        if state.get("symbol") not in listed:
            checked["symbol"] = f"not listed by {exchange}"
            preferred = [default_symbol, *FALLBACK_SYMBOLS]
            state["symbol"] = next((s for s in preferred if s in listed), listed[0])
        symbol = st.selectbox(
            "Symbol",
            listed,
            key="symbol",
            help=text.markup(
                "{count:,} listed on {exchange}. Type to search.",
                count=len(listed),
                exchange=exchange,
            ),
        )
    else:
        state.setdefault("symbol", default_symbol)
        symbol = st.text_input("Symbol", key="symbol", help="Unified ccxt symbol, e.g. BTC/USDT.")
    try:
        offered = timeframes(exchange) or [state["timeframe"]]
        checked["timeframe"] = None
    except fc.ForecastingError as exc:
        text.warning(
            "Could not list the timeframes of {exchange}: {problem}", exchange=exchange, problem=exc
        )
        offered = [state["timeframe"]]
    if state["timeframe"] not in offered:
        checked["timeframe"] = f"not offered by {exchange}, which offers {', '.join(offered)}"
        preferred = (defaults()[2], "1d")
        state["timeframe"] = next((t for t in preferred if t in offered), offered[-1])
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


def _show_whole_source() -> None:
    """Source callback: a file or the sample is shown whole; an exchange keeps the range."""
    source = st.session_state.get("source")
    if source == "csv":
        _show_whole_file()
    elif source == "sample":
        _show_whole(fc.load_sample())


def _show_whole_file() -> None:
    """Upload callback: a new file is shown whole, from its first candle to its last
    (and replaces the candles of a restored bundle)."""
    upload = st.session_state.get("csv_file")
    if st.session_state.get(RESTORED) is not None and st.session_state[RESTORED].source == "csv":
        del st.session_state[RESTORED]
    if upload is None:
        return
    try:
        candles = parse_csv(upload.getvalue()).candles
    except fc.ForecastingError:
        return  # the page says what is wrong with the file when it loads it
    _show_whole(candles)


def _show_whole(candles: pd.DataFrame) -> None:
    if candles.empty:
        return
    today = utc_today()
    first = min(max(candles.index[0].date(), EARLIEST_DATE), today)
    last = min(max(candles.index[-1].date(), EARLIEST_DATE), today)
    st.session_state["date_range"] = st.session_state["_last_range"] = (first, last)


def _date_range_picker(today: dt.date) -> tuple[dt.date, dt.date]:
    state = st.session_state
    picked = st.date_input(
        "Date range (UTC)",
        key="date_range",
        min_value=EARLIEST_DATE,
        max_value=today,
        help="Candles opening from the first day through the last day, in UTC.",
    )
    if isinstance(picked, tuple | list) and len(picked) == 2:
        state["_last_range"] = (picked[0], picked[1])
    # While the user is between the two clicks of a range, keep the last complete one.
    return state.get("_last_range", (default_start(state["timeframe"], today), today))


# --- the data selection a link sets ------------------------------------------------------

#: Session key: the sidebar values the session's link set that the sidebar has not shown
#: yet (a symbol waits for its exchange's markets), with the exchange they were set on.
LINK_SELECTION = "_link_selection"
# The notes :func:`ui.settings.link_notice` shows (and clears) in the link's notice.
_LINK_REFUSED = "_link_refused"
# The values whose valid choices the exchange decides.
_ON_EXCHANGE = ("exchange", "symbol", "timeframe")


def _read_link_selection() -> None:
    """On a session's first run, keep the data selection its link set, to check that the
    sidebar shows each value (:func:`_check_link_selection`), and set the date range
    when the link gives only one of its ends (the other is kept where it can be).

    The link's values were checked one by one when they were applied
    (:func:`ui.settings.restore_from_link`); those refused are named already.
    """
    state = st.session_state
    if LINK_SELECTION in state:
        return
    params = st.query_params.to_dict()
    values, _ = sharing.parse_each({k: params[k] for k in sharing.SIDEBAR if k in params})
    start, end = values.get("start"), values.get("end")
    if start is not None or end is not None:
        now_start, now_end = state.get("_last_range") or state["date_range"]
        if start is None:
            start = now_start if now_start <= end else default_start(state["timeframe"], end)
        if end is None:
            end = max(now_end, start)
        state["date_range"] = state["_last_range"] = (start, min(end, utc_today()))
    state[LINK_SELECTION] = (values, state.get("exchange"))


def _check_link_selection(selection: Selection, checked: Mapping[str, str | None]) -> None:
    """Name in the link's notice each value of the link's data selection the sidebar
    replaced, with why and what is used instead.

    A value is checked once the sidebar can tell: an exchange's symbol and timeframe
    when the exchange source is shown and the exchange's symbols or timeframes are
    known (``checked``, from :func:`_exchange_pickers`); never by waiting for the
    network. A value the user has changed since, or one of an exchange the user has
    left, is no longer the link's and is not checked.
    """
    state = st.session_state
    pending, on_exchange = state.get(LINK_SELECTION) or ({}, None)
    shown = {
        "source": selection.source,
        "exchange": selection.exchange,
        "symbol": selection.symbol,
        "timeframe": selection.timeframe,
        "start": selection.start,
        "end": selection.end,
        "fill_gaps": selection.fill_gaps,
    }
    notes = []
    for name, wanted in list(pending.items()):
        if name in _ON_EXCHANGE:
            if selection.source != "exchange":
                continue  # the exchange source is not shown: checked when it is
            if name != "exchange" and selection.exchange != on_exchange:
                del pending[name]  # another exchange was chosen since: its own values
                continue
            if name not in checked:
                if shown[name] != wanted:
                    del pending[name]  # changed by the user while it could not be told
                continue
        del pending[name]
        if shown[name] != wanted:
            reason = checked.get(name) or "not used"
            notes.append(
                str(
                    sharing.Refusal(
                        name,
                        sharing.serialize(wanted)[:40],
                        f"{reason}; {sharing.serialize(shown[name])} is used instead",
                    )
                )
            )
    if notes:
        state[_LINK_REFUSED] = [*state.get(_LINK_REFUSED, []), *notes]


# --- loading -----------------------------------------------------------------------------


def load_dataset(selection: Selection, *, progress: Any = None) -> Dataset:
    """Candles for a selection (exchange through the Parquet cache, CSV, or sample).

    The candles restored from an experiment bundle stand in for their selection, with no
    network and no file, for as long as that selection is the sidebar's.

    Raises
    ------
    ForecastingError
        Whatever stopped the data from loading, with a message for the user.
    """
    restored = st.session_state.get(RESTORED)
    if restored is not None and restored.selection == selection:
        return restored
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
            label=f"{upload.name} ({parsed.format}, {parsed.timeframe})",
            file=upload.name,
            file_format=parsed.format,
            notes=parsed.notes,
            conflicts=duplicate_conflicts(parsed.candles),
            notices=notices(parsed.candles),
            timeframe=parsed.timeframe,
            calendar=parsed.calendar,
            source="csv",
            duplicates=parsed.duplicates,
            nonpositive=parsed.nonpositive,
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
        cache=fc.CandleCache(max_candles_per_series=budget.limits()[0].cache_max_candles),
        progress=progress,
    )
    dataset = Dataset(
        candles=candles,
        label=f"{selection.exchange} · {selection.symbol} · {selection.timeframe}",
        timeframe=selection.timeframe,
        calendar="24/7",
        source="exchange",
        duplicates=int(candles.attrs.get("duplicate_rows", 0)),
        nonpositive=dropped_nonpositive(candles),
        conflicts=duplicate_conflicts(candles),
        notices=notices(candles),
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
        dataset = replace(
            dataset,
            hidden_before=int((candles.index < since).sum()),
            hidden_after=int((candles.index >= until).sum()),
            source_span=(candles.index[0], candles.index[-1]),
        )
        candles = clipped
    filled = None
    if selection.fill_gaps:
        candles, filled = fc.fill_gaps(candles, dataset.timeframe, calendar=dataset.calendar)
    return replace(dataset, candles=candles, filled=filled, selection=selection)


# --- data restored from an experiment bundle ----------------------------------------------

#: Session key of the dataset restored from a bundle (see :func:`restore_bundle_data`).
RESTORED = "_bundle_dataset"


def restore_bundle_data(data: fc_bundle.BundleData, name: str) -> Dataset:
    """Make a bundle's candles the data of the sidebar's selection, as the bundle's
    settings have just set it (see :func:`ui.settings.apply_values`): until the sidebar
    selects something else, pages use these candles, with no network and no file."""
    state = st.session_state
    chosen = data.selection
    source = state.get("source", "sample")
    start, end = state.get("_last_range", (data.candles.index[0].date(), utc_today()))
    fill = bool(state.get("fill_gaps", False))
    if source == "exchange":
        selection = Selection(
            source,
            str(state.get("exchange", "")),
            str(state.get("symbol", "")).strip(),
            str(state.get("timeframe", "")),
            start,
            end,
            fill,
        )
    elif source == "csv":
        selection = Selection("csv", "", "", "", start, end, fill)
    else:
        selection = Selection("sample", "", "", SAMPLE_TIMEFRAME, start, end, fill)
    timeframe = str(data.source.get("timeframe") or chosen.get("timeframe") or SAMPLE_TIMEFRAME)
    calendar = chosen.get("calendar") or (SAMPLE_CALENDAR if source == "sample" else "24/7")
    dataset = Dataset(
        candles=data.candles,
        label=f"{_bundle_label(data, timeframe)} · restored from the bundle {name[:60]} "
        f"(SHA-256 {data.sha256[:12]}…, checked)",
        timeframe=timeframe,
        calendar=calendar if calendar in ("24/7", "business") else "24/7",
        source=source,
        filled=data.filled if len(data.filled) else None,
        nonpositive=dropped_nonpositive(data.candles),
        selection=selection,
        notes=data.read_notes,
        file=str(chosen.get("file", ""))[:200],
        file_format=str(chosen.get("format", ""))[:80],
    )
    state[RESTORED] = dataset
    return dataset


def _bundle_label(data: fc_bundle.BundleData, timeframe: str) -> str:
    source, chosen = data.source, data.selection
    if source.get("label"):
        return str(source["label"])[:200]
    if source.get("source") == "csv":
        file = chosen.get("file") or source.get("file") or "CSV file"
        return f"{file} ({chosen.get('format') or source.get('format')}, {timeframe})"
    if source.get("source") == "exchange":
        return f"{source.get('exchange')} · {source.get('symbol')} · {timeframe}"
    return fc.SAMPLE_LABEL


@dataclass(frozen=True)
class ShownResult:
    """An experiment's result with the data it was computed on, and the link and bundle
    settings that reproduce it (taken when it was computed)."""

    result: Any
    dataset: Dataset
    link: str
    files: Mapping[str, str]


def stale_result(last: ShownResult | None, selection: Selection) -> ShownResult | None:
    """``last`` when it was computed on another selection than ``selection`` (the sidebar
    moved since), else ``None``."""
    if last is None or last.dataset.selection is None or last.dataset.selection == selection:
        return None
    return last


def describe(dataset: Dataset) -> str:
    """The data in words: its label, its dates and whether gaps were filled."""
    candles = dataset.candles
    words = (
        f"{dataset.label}, {len(candles):,} candles from {candles.index[0]:%Y-%m-%d} "
        f"to {candles.index[-1]:%Y-%m-%d}"
    )
    if dataset.selection is not None and dataset.selection.fill_gaps:
        words += ", gaps filled"
    return words


def bundle_selection(dataset: Dataset) -> dict[str, Any]:
    """What chose ``dataset``'s candles, as an experiment bundle records it."""
    chosen = dataset.selection
    out: dict[str, Any] = {"source": dataset.source, "timeframe": dataset.timeframe}
    if chosen is not None:
        out.update(
            source=chosen.source,
            start=chosen.start,
            end=chosen.end,
            fill_gaps=chosen.fill_gaps,
        )
        if chosen.source == "exchange":
            out.update(exchange=chosen.exchange, symbol=chosen.symbol)
    if dataset.file:
        out.update(file=dataset.file, format=dataset.file_format)
    out["calendar"] = dataset.calendar
    return out


def hidden_notice(dataset: Dataset) -> None:
    """Say how many candles of a file (or the sample) the date range leaves out."""
    hidden = dataset.hidden_before + dataset.hidden_after
    if not hidden or dataset.source_span is None:
        return
    first, last = dataset.source_span
    text.info(
        "{hidden:,} of the {total:,} candles in this data are outside the date range and not "
        "used ({before:,} before it, {after:,} after it). The data runs from {first} to "
        "{last}: widen the date range in the sidebar to use them all.",
        hidden=hidden,
        total=hidden + len(dataset.traded),
        before=dataset.hidden_before,
        after=dataset.hidden_after,
        first=f"{first:%Y-%m-%d}",
        last=f"{last:%Y-%m-%d}",
        icon=":material/visibility_off:",
    )


def current_dataset(selection: Selection) -> Dataset:
    """The dataset for the page, with progress while fetching and errors shown.

    On an error the message is shown and the last dataset that loaded stays on screen;
    on first open, with nothing loaded yet, the offline sample stands in, labelled.
    When the chosen features name a market mood kind (:func:`chosen_mood_kinds`), its
    column is joined to the candles (:func:`with_mood`); a kind that cannot be joined is
    shown as a note and left out of the models' features.
    """
    dataset = _loaded_dataset(selection)
    kinds = chosen_mood_kinds()
    if kinds:
        dataset = with_mood(dataset, kinds)
    st.session_state[MOOD_UNAVAILABLE] = dict(dataset.mood.unavailable) if dataset.mood else {}
    mood_unavailable_notes(dataset)
    return dataset


def _loaded_dataset(selection: Selection) -> Dataset:
    bar = st.empty()

    def progress(stage: str, fraction: float, details: Mapping[str, Any]) -> None:
        done, expected = details.get("done", 0), details.get("expected", 0)
        bar.progress(fraction, text=f"Fetching candles: {done:,} of ~{expected:,}")

    try:
        dataset = load_dataset(selection, progress=progress)
    except fc.ForecastingError as exc:
        bar.empty()
        text.error("{problem}", problem=exc, icon=":material/error:")
        last = st.session_state.get("_last_dataset")
        if last is not None:
            text.info("Still showing the last data that loaded: {label}.", label=last.label)
            return last
        sample = _clip_and_fill(
            Dataset(fc.load_sample(), fc.SAMPLE_LABEL, SAMPLE_TIMEFRAME, SAMPLE_CALENDAR, "sample"),
            Selection(
                "sample", "", "", SAMPLE_TIMEFRAME, dt.date(1999, 1, 1), dt.date(2018, 12, 31)
            ),
        )
        text.warning("Showing the offline sample instead: {label}.", label=fc.SAMPLE_LABEL)
        return sample
    bar.empty()
    st.session_state["_last_dataset"] = dataset
    hidden_notice(dataset)
    return dataset


# --- market mood ------------------------------------------------------------------------

#: Session key: the mood kinds the page's data could not be given, with why (kind -> why);
#: :func:`ui.runs.feature_specs` leaves them out of the models' features.
MOOD_UNAVAILABLE = "_mood_unavailable"
MOOD_TITLES = {kind: FEATURE_KINDS[kind].title for kind in ("fear_greed", "funding_rate")}


def chosen_mood_kinds() -> tuple[str, ...]:
    """The market mood kinds among the chosen features (the Features page's indicators)."""
    from ui.settings import setting  # ui.settings imports this module

    return mood_kinds(setting("features.kinds", []) or [])


def unavailable_mood() -> dict[str, str]:
    """The mood kinds the page's data could not be given, with why (kind -> why)."""
    return dict(st.session_state.get(MOOD_UNAVAILABLE) or {})


@st.cache_data(ttl=600, max_entries=16, show_spinner="Reading the market mood…")
def mood_join(
    _candles: pd.DataFrame,
    fingerprint: str,
    timeframe: str,
    kinds: tuple[str, ...],
    exchange_id: str,
    symbol: str,
    url: str,
) -> MoodJoin:
    """:func:`forecasting.data.mood.attach_mood` of ``kinds``, cached for ten minutes per
    data (``fingerprint``: its :func:`~forecasting.experiment.data_hash`), timeframe,
    kinds, exchange, symbol and index address. Funding rates come from ``exchange_id``
    with the candles' exchange settings (:func:`exchange_config`); with no exchange
    (a CSV file, the sample) they are unavailable, saying which exchanges serve them.

    The ten minutes bound how long an offline answer is kept; the sources keep their
    answers in the candle cache, so asking again costs no request while they are fresh.
    """
    exchange = None
    if exchange_id and "funding_rate" in kinds:
        exchange = fc.create_exchange(exchange_id, exchange_config(exchange_id))
    return attach_mood(
        _candles,
        timeframe,
        kinds,
        exchange=exchange,
        symbol=symbol or None,
        cache=fc.CandleCache(max_candles_per_series=budget.limits()[0].cache_max_candles),
        url=url,
    )


def with_mood(dataset: Dataset, kinds: Iterable[str]) -> Dataset:
    """``dataset`` with the market mood ``kinds`` joined to its candles as of each close.

    Kinds already among the candles' columns (joined before, or restored from a bundle)
    are kept as they are. A kind that cannot be joined (offline, geo-blocked, no
    perpetual future, data with no exchange) is recorded in ``dataset.mood.unavailable``
    with why; the candles are then as before for it.
    """
    wanted = tuple(k for k in dict.fromkeys(kinds) if k not in dataset.candles.columns)
    if not wanted:
        return dataset
    chosen = dataset.selection
    on_exchange = (
        dataset.source == "exchange" and chosen is not None and chosen.source == "exchange"
    )
    try:
        joined = mood_join(
            dataset.candles,
            data_hash(dataset.candles),
            dataset.timeframe,
            wanted,
            chosen.exchange if on_exchange else "",
            chosen.symbol if on_exchange else "",
            fear_greed_url(),
        )
    except fc.ForecastingError as exc:
        joined = MoodJoin(
            dataset.candles,
            notes=tuple(f"The {MOOD_TITLES[k]} feature is unavailable: {exc}" for k in wanted),
            unavailable=dict.fromkeys(wanted, str(exc)),
        )
    before = dataset.mood
    if before is not None:
        joined = MoodJoin(
            joined.candles,
            tuple(dict.fromkeys([*before.notes, *joined.notes])),
            {**before.unavailable, **joined.unavailable},
            {**before.sources, **joined.sources},
            {**before.labels, **joined.labels},
        )
    return replace(dataset, candles=joined.candles, mood=joined)


def mood_unavailable_notes(dataset: Dataset) -> None:
    """Say which chosen mood kinds could not be joined, why, and that the models go
    without them."""
    if dataset.mood is None:
        return
    for kind, reason in dataset.mood.unavailable.items():
        text.warning(
            "The {title} feature is unavailable: {reason} It is left out of the features "
            "the models are given; the other features are not affected.",
            title=MOOD_TITLES.get(kind, kind),
            reason=reason,
            icon=":material/cloud_off:",
        )


def mood_notes(dataset: Dataset) -> list[str]:
    """What the reader should know about the joined mood values (missing, late or stale
    days, values not yet published), without the unavailable kinds' own notes."""
    if dataset.mood is None:
        return []
    reasons = list(dataset.mood.unavailable.values())
    return [note for note in dataset.mood.notes if not any(r in note for r in reasons)]


def not_the_selection(dataset: Dataset, selection: Selection) -> bool:
    """True when ``dataset`` is not what the sidebar selects (the selection failed to load
    and earlier data, or the sample, stands in)."""
    return dataset.selection is not None and dataset.selection != selection


def csv_bytes(candles: pd.DataFrame) -> bytes:
    """The candles as the CSV the command line writes."""
    buffer = io.StringIO()
    fc.write_ohlcv_csv(candles, buffer)
    return buffer.getvalue().encode()


def chart(figure: Any, *, key: str, into: Any = None, on_select: Any = None) -> None:
    """Draw a figure from :mod:`forecasting.charts` as it is, in ``into`` (default: the page).

    ``theme=None`` because the figures carry their own look (``charts.TEMPLATE``):
    Streamlit's theme rewrites every colour of the whole figure in the browser, twice on
    the first draw, which doubled the time to draw a few thousand candles and kept the
    first page from answering clicks. ``on_select`` (a callback, see
    :func:`zoom_to_box`) makes a box dragged across the chart reach the server.
    """
    selecting = {} if on_select is None else {"on_select": on_select, "selection_mode": "box"}
    (into if into is not None else st).plotly_chart(figure, theme=None, key=key, **selecting)


def time_window(key: str, *, of: str) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The span of time a box dragged across chart ``key`` chose for the data labelled
    ``of``, or ``None`` for the whole series (nothing chosen, or chosen on other data)."""
    chosen = st.session_state.get(f"_window_{key}")
    return chosen[1] if chosen is not None and chosen[0] == of else None


def zoom_to_box(key: str, *, of: str) -> Any:
    """A callback for :func:`chart` that keeps the time span of the box dragged across
    chart ``key`` (data labelled ``of``) for :func:`time_window`; a cleared selection
    (a double click) goes back to the whole series.

    The span is kept apart from the chart's own selection because the chart is a new
    widget, with no selection, once it is drawn again on that span.
    """

    def keep() -> None:
        boxes = (st.session_state.get(key) or {}).get("selection", {}).get("box") or []
        spans = [box["x"] for box in boxes if len(box.get("x") or ()) == 2]
        if not spans:
            whole_series(key)
            return
        start, end = sorted(pd.Timestamp(t, tz="UTC") for t in spans[-1])
        if start < end:
            st.session_state[f"_window_{key}"] = (of, (start, end))

    return keep


def whole_series(key: str) -> None:
    """Forget the span chosen on chart ``key``: it shows the whole series again."""
    st.session_state.pop(f"_window_{key}", None)


def table(frame: pd.DataFrame, *, none: str = "None.", **kwargs: Any) -> None:
    """``frame`` as a table, or ``none`` when it has no rows.

    An empty table says nothing, and the first table a browser shows makes it load and
    run about 1.3 MB of the data grid's JavaScript: on the first page, while it opens.
    """
    if len(frame):
        st.dataframe(frame, **kwargs)
    else:
        st.caption(text.plain(none))
