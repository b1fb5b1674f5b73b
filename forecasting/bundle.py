"""The experiment bundle: one zip with everything needed to check or redo an experiment.

Contents: ``settings.json`` (every model's parameters, the backtest layout, the seeds
and the loss), ``data.json`` (the data source, the selection that chose the candles and a
SHA-256 of the candles used), ``candles.parquet`` (those candles themselves, so that the
bundle reproduces the experiment with no network and no original file),
``app_settings.json`` (the settings the app restores), ``verdict.json`` (each model's
verdict, the pairs scored and left out, the notes), ``metrics.csv``,
``metrics_by_horizon.csv``, ``dm_tests.csv``, ``copy_check.csv``, ``forecasts.csv``
(every backtest forecast), ``future.csv`` and ``charts/*.html`` (Plotly pages sharing one
``charts/plotly.min.js``). Plain text and one table of numbers: nothing in a bundle is
ever executed or unpickled when it is read back.

Reading a bundle back (:func:`read_bundle_settings`, :func:`read_bundle_data`,
:func:`read_bundle_experiment`) treats the upload as hostile: the zip's directory is
size-checked before it is parsed, each entry read is inflated in bounded chunks and
abandoned as soon as more than its limit has come out (whatever its header claims), the
candles are read as plain columns of fixed-width numbers (an uncompressed Parquet file of
at most :data:`MAX_BUNDLE_CANDLES` rows, no metadata interpreted) and checked against the
recorded SHA-256, and every way the file can be wrong ends in one :class:`DataFormatError`.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import struct
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.offline

from forecasting.data.quality import dropped_nonpositive, with_nonpositive
from forecasting.errors import ConfigurationError, DataFormatError
from forecasting.evaluation import BacktestSettings
from forecasting.experiment import ExperimentResult, ExperimentSettings, data_hash

__all__ = [
    "CANDLES_ENTRY",
    "DATA_ENTRY",
    "EXPERIMENT_ENTRY",
    "MAX_BUNDLE_CANDLES",
    "SETTINGS_ENTRY",
    "BundleData",
    "app_settings",
    "experiment_bundle",
    "read_bundle_data",
    "read_bundle_experiment",
    "read_bundle_settings",
]

#: The entry holding the app's settings (a flat object of setting name: text).
SETTINGS_ENTRY = "app_settings.json"
#: The experiment's own settings, as :meth:`ExperimentSettings.to_dict` writes them.
EXPERIMENT_ENTRY = "settings.json"
#: Where the data came from, the selection, and the SHA-256 of the candles.
DATA_ENTRY = "data.json"
#: The candles the experiment ran on.
CANDLES_ENTRY = "candles.parquet"

# A bundle holds about a dozen files and a chart per model; the settings a few kilobytes
# of one flat JSON object.
MAX_ENTRIES = 200
MAX_SETTINGS_BYTES = 256 * 1024
MAX_DEPTH = 16
#: The most candles a bundle may carry (the app fetches at most 300,000).
MAX_BUNDLE_CANDLES = 1_000_000
# The candles' Parquet file, uncompressed inside (the zip deflates it): 49 bytes a candle
# and a few kilobytes of framing, so 64 MiB holds 1.3 million candles.
MAX_CANDLES_BYTES = 64 * 1024 * 1024
# data.json holds the open times of the candles dropped at load (a number each).
MAX_DATA_BYTES = 16 * 1024 * 1024
MAX_EXPERIMENT_BYTES = 1024 * 1024
# Where a number inside each entry is allowed to be large, and why.
_LIMITS = {
    SETTINGS_ENTRY: "the few KB of settings this app writes",
    EXPERIMENT_ENTRY: "the few KB of settings this app writes",
    DATA_ENTRY: "what this app writes",
    CANDLES_ENTRY: f"{MAX_BUNDLE_CANDLES:,} candles",
}
PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
# Mood columns joined to the candles (forecasting.data.mood.attach_mood) travel with them:
# a bundle whose models read them reruns offline.
MOOD_COLUMNS = ("fear_greed", "funding_rate")
FILLED_COLUMN = "filled"
# What data.json adds to the experiment's own data record, and what the experiment
# computes from the candles: neither is part of the source passed to a rerun.
_BUNDLE_KEYS = ("selection", "candles_file", "index_unit", "nonpositive_at", "read_notes")
_COMPUTED_KEYS = ("candles", "first", "last", "sha256", "filled", "nonpositive")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

_CHUNK = 64 * 1024
# The central directory is parsed whole by zipfile: bound it before it is (a file entry
# takes 46 bytes plus its name, extra field and comment).
_MAX_DIRECTORY_BYTES = MAX_ENTRIES * 1024
_END_RECORD = b"PK\x05\x06"
_END_RECORD_SIZE = 22
_ZIP64_LOCATOR = b"PK\x06\x07"
_READABLE_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_ENCRYPTED = 0x01 | 0x40  # traditional and strong encryption flags
_AGAIN = "Download the bundle again from the Compare page."
# Everything zipfile and zlib raise on a damaged archive or entry.
_DAMAGED = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    struct.error,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    OverflowError,
)


# Plotly's JavaScript, once per bundle, beside the charts that load it.
PLOTLY_JS = "plotly.min.js"


def experiment_bundle(
    result: ExperimentResult,
    figures: Mapping[str, go.Figure] | None = None,
    *,
    extra_files: Mapping[str, str] | None = None,
    selection: Mapping[str, Any] | None = None,
    read_notes: Sequence[str] = (),
) -> bytes:
    """The zip's bytes.

    Parameters
    ----------
    result
        The experiment. When it carries its candles (every result of
        :func:`~forecasting.experiment.run_experiment` does), they go in the bundle.
    figures
        Charts by file stem, written as HTML pages beside one copy of Plotly's
        JavaScript (``charts/plotly.min.js``, about 4.6 MB before compression), which
        they load from their own folder: the folder opens offline.
    extra_files
        More text files by name. Without an ``app_settings.json`` among them, one is
        written from the experiment's settings and ``selection`` (:func:`app_settings`).
    selection
        What chose the candles: ``source`` (exchange, csv or sample), ``exchange``,
        ``symbol``, ``timeframe``, ``start``, ``end`` (dates), ``fill_gaps``, and for a
        file its ``file`` name and ``format``. Recorded in ``data.json``.
    read_notes
        What the reader must know about how the data were read (a file's layout).
    """
    document = result.to_json()
    future = pd.concat(
        {alias: forecast.to_frame() for alias, forecast in result.future.items()}, names=["model"]
    ) if result.future else pd.DataFrame()  # fmt: skip
    data = dict(document["data"])
    candles = None
    if result.candles is not None:
        candles = _candles_parquet(result.candles, result.filled, data.get("sha256"))
        data.update(
            selection=_plain(selection or {}),
            candles_file=CANDLES_ENTRY,
            index_unit=str(result.candles.index.unit),
            nonpositive_at=[
                int(ms) for ms in dropped_nonpositive(result.candles).as_unit("ms").asi8
            ],
            read_notes=list(read_notes),
        )
    files = dict(extra_files or {})
    if SETTINGS_ENTRY not in files:
        files[SETTINGS_ENTRY] = json.dumps(app_settings(result.settings, selection), indent=2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(EXPERIMENT_ENTRY, json.dumps(document["settings"], indent=2))
        archive.writestr(DATA_ENTRY, json.dumps(data, indent=2))
        if candles is not None:
            archive.writestr(CANDLES_ENTRY, candles)
        archive.writestr(
            "verdict.json",
            json.dumps(
                {key: document[key] for key in ("verdict", "pairs", "undefined", "notes")},
                indent=2,
            ),
        )
        archive.writestr("metrics.csv", result.metrics.to_csv())
        archive.writestr("metrics_by_horizon.csv", result.by_horizon.to_csv())
        archive.writestr("dm_tests.csv", result.dm_tests.to_csv(index=False))
        archive.writestr("copy_check.csv", result.copy.to_csv())
        archive.writestr("forecasts.csv", result.forecasts_table().to_csv(index=False))
        archive.writestr("future.csv", future.to_csv())
        for name, text in files.items():
            archive.writestr(name, text)
        if figures:
            archive.writestr(f"charts/{PLOTLY_JS}", plotly.offline.get_plotlyjs())
        for name, figure in (figures or {}).items():
            archive.writestr(
                f"charts/{name}.html", figure.to_html(include_plotlyjs=PLOTLY_JS, full_html=True)
            )
    return buffer.getvalue()


def _plain(value: Any) -> Any:
    """JSON-ready: dates as ISO text, numpy scalars as Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date | pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _candles_parquet(
    candles: pd.DataFrame, filled: pd.DatetimeIndex | None, sha256: str | None
) -> bytes:
    """The candles as an uncompressed Parquet file: a UTC timestamp column, the five
    price columns, any joined mood columns and a ``filled`` flag; nothing else (no pandas
    metadata)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = _candle_columns(list(candles.columns))
    if columns is None:
        raise ConfigurationError(
            f"A bundle carries candles with the columns {', '.join(PRICE_COLUMNS)} (and "
            f"{' or '.join(MOOD_COLUMNS)}, in that order); these have "
            f"{', '.join(map(str, candles.columns))}."
        )
    if sha256 is not None and data_hash(candles) != sha256:
        raise ConfigurationError(
            "The candles given with the experiment are not the ones it ran on (their SHA-256 "
            "differs from the one it recorded)."
        )
    marks = candles.index.isin(filled) if filled is not None else np.zeros(len(candles), bool)
    table = pa.table(
        {
            "timestamp": pa.array(candles.index),
            **{name: pa.array(candles[name].to_numpy()) for name in columns},
            FILLED_COLUMN: pa.array(marks, type=pa.bool_()),
        }
    ).replace_schema_metadata(None)
    buffer = io.BytesIO()
    pq.write_table(
        table,
        buffer,
        compression="none",
        use_dictionary=False,
        write_statistics=False,
        store_schema=False,
    )
    return buffer.getvalue()


def _candle_columns(names: list[str]) -> list[str] | None:
    """``names`` when they are the price columns then mood columns in their order, else None."""
    prices, mood = names[: len(PRICE_COLUMNS)], names[len(PRICE_COLUMNS) :]
    if prices != list(PRICE_COLUMNS) or mood != [c for c in MOOD_COLUMNS if c in mood]:
        return None
    return names


def app_settings(
    settings: ExperimentSettings, selection: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The app's settings (``app_settings.json``) for an experiment run elsewhere.

    Every setting the app has a name for is written as the app writes it; a setting it
    has no name for (a moving average's window, seeds that do not follow each other) is
    written under a name of its own, which the app names as not restored.
    """
    values: dict[str, Any] = {}
    for name in ("source", "exchange", "symbol", "timeframe", "start", "end", "fill_gaps"):
        value = (selection or {}).get(name)
        if value not in (None, ""):
            values[name] = value
    backtest = settings.backtest
    seeds = settings.seed_list()
    values.update(
        {
            "horizon": backtest.horizon,
            "seed": settings.seed,
            "compare.models": list(dict.fromkeys(["naive", *settings.models])),
            "compare.folds": backtest.folds,
            "compare.test_size": backtest.test_size,
            "compare.stride": backtest.stride,
            "compare.window": backtest.window or 0,
            "compare.loss": settings.loss,
            "compare.seeds": len(seeds)
            if seeds == tuple(range(settings.seed, settings.seed + len(seeds)))
            else list(seeds),
        }
    )
    if backtest.test_start is not None:
        values["compare.test_start"] = pd.Timestamp(backtest.test_start).date()
    models = settings.build_models()
    from forecasting.models import NETWORKS

    networks = [alias for alias in NETWORKS if alias in models]
    values["lstm.enabled"] = bool(networks)
    if networks:
        values["lstm.networks"] = networks
    values["prophet.enabled"] = "prophet" in models
    features: list[str] = []
    values["level"] = models["naive"].get_params().get("level")  # one level in the app
    for alias, model in models.items():
        params = model.get_params()
        network = alias in NETWORKS  # every network shares the LSTM's pickers
        named = _APP_NAMES.get("lstm" if network else alias, {})
        defaults = _defaults(alias)
        for param, value in params.items():
            if param in ("seed", "horizon") or (param == "level" and value == values["level"]):
                continue
            if param in named:
                values[named[param]] = value
            elif network and param == "features":
                values["lstm.use_features"] = bool(value)
                features.append(value)
            elif alias == "prophet" and param == "regressors":
                values["prophet.regressors"] = bool(value)
                features.append(value)
            elif value != defaults.get(param):
                values[f"{alias}.{param}"] = value  # no such setting in the app: named
    spec = next((f for f in features if f), "")
    if spec:
        values["features.kinds"] = [part.split(":")[0] for part in spec.split(",")]
        values.update(_feature_values(spec))
    return {name: _text(value) for name, value in values.items()}


_APP_NAMES = {
    "lstm": {
        name: f"lstm.{name}"
        for name in (
            "lookback",
            "layers",
            "units",
            "dropout",
            "epochs",
            "batch_size",
            "learning_rate",
            "patience",
            "target",
            "interval",
            "denoise",
            "denoise_window",
        )
    },  # fmt: skip
    "prophet": {
        "changepoint_prior_scale": "prophet.changepoint_prior_scale",
        "weekly_seasonality": "prophet.weekly",
        "yearly_seasonality": "prophet.yearly",
        "seasonality_mode": "prophet.seasonality_mode",
        "max_train_candles": "prophet.max_train_candles",
        "denoise": "prophet.denoise",
        "denoise_window": "prophet.denoise_window",
    },
}
# The app's fixed settings for the models it has no pickers for.
_APP_FIXED = {"moving_average": {"window": 7}}


def _defaults(alias: str) -> dict[str, Any]:
    from forecasting.models import make_model

    params = make_model(alias).get_params()
    params.update(_APP_FIXED.get(alias, {}))
    return params


def _feature_values(spec: str) -> dict[str, Any]:
    from forecasting.features import FEATURE_KINDS, parse_features

    out: dict[str, Any] = {}
    for feature in parse_features(spec):
        info = FEATURE_KINDS[feature.kind]
        for name, value in zip(info.param_names, feature.params, strict=False):
            out[f"features.{feature.kind}.{name}"] = value
    return out


def _text(value: Any) -> str:
    """A value as the app writes it in a link or a bundle."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(_text(v) for v in value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def read_bundle_settings(data: bytes, *, max_bytes: int = MAX_SETTINGS_BYTES) -> dict[str, Any]:
    """The settings object saved in an experiment bundle's ``app_settings.json``.

    Only that entry is read, as JSON text; nothing is executed or unpickled. Work and
    memory stay bounded whatever the upload holds: at most ``max_bytes`` of the entry are
    ever inflated, and zip bombs, lying size fields, encrypted or oddly compressed entries,
    archives of many files and deeply nested JSON are refused.

    Parameters
    ----------
    data
        The uploaded file's bytes.
    max_bytes
        The most the settings entry may hold once inflated.

    Returns
    -------
    dict
        The JSON object, not yet validated setting by setting.

    Raises
    ------
    DataFormatError
        One line saying what is wrong with the file and what to do.
    """
    raw = _read_entries(data, {SETTINGS_ENTRY: max_bytes})[SETTINGS_ENTRY]
    if raw is None:
        raise _not_a_bundle()
    return _json_object(raw, SETTINGS_ENTRY)


@dataclass(frozen=True)
class BundleData:
    """The candles a bundle carries, checked against their SHA-256, and what they are."""

    candles: pd.DataFrame
    """The candles the experiment ran on, filled ones included; the open times of the
    candles dropped at load (zero or negative prices) are in their attrs, as a loader
    leaves them."""
    filled: pd.DatetimeIndex
    """Open times of the candles that were filled in, not traded."""
    sha256: str
    source: dict[str, Any]
    """Where the data came from, as the experiment recorded it (its ``source``)."""
    selection: dict[str, Any]
    """What chose the candles: source, exchange, symbol, timeframe, dates, fill gaps, and
    for a file its name and format (empty for a bundle that did not record it)."""
    read_notes: tuple[str, ...] = ()
    """What the reader must know about how the original data were read."""

    def describe(self) -> str:
        """``"1,234 candles from 2021-01-01 to 2024-05-17"``."""
        first, last = self.candles.index[0], self.candles.index[-1]
        return f"{len(self.candles):,} candles from {first:%Y-%m-%d} to {last:%Y-%m-%d}"


def read_bundle_data(data: bytes) -> BundleData | None:
    """The candles an experiment bundle carries, or ``None`` for a bundle without them
    (written before bundles carried their data).

    The candles are read as plain columns (no metadata is interpreted, nothing is
    unpickled), at most :data:`MAX_BUNDLE_CANDLES` of them, and must hash to the SHA-256
    that ``data.json`` records.

    Raises
    ------
    DataFormatError
        One line saying what is wrong with the file and what to do.
    """
    entries = _read_entries(data, {DATA_ENTRY: MAX_DATA_BYTES, CANDLES_ENTRY: MAX_CANDLES_BYTES})
    if entries[DATA_ENTRY] is None and entries[CANDLES_ENTRY] is None:
        return None
    if entries[DATA_ENTRY] is None:
        raise DataFormatError(f"The bundle has candles but no {DATA_ENTRY} to check them. {_AGAIN}")
    record = _json_object(entries[DATA_ENTRY], DATA_ENTRY, depth=4)
    if entries[CANDLES_ENTRY] is None:
        if "candles_file" in record:
            raise DataFormatError(
                f"The bundle's {DATA_ENTRY} names {CANDLES_ENTRY}, which is missing. {_AGAIN}"
            )
        return None
    sha256 = record.get("sha256")
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise DataFormatError(
            f"The bundle's {DATA_ENTRY} has no valid SHA-256 of the candles. {_AGAIN}"
        )
    candles, filled = _candles_from_parquet(entries[CANDLES_ENTRY], record.get("index_unit"))
    if data_hash(candles) != sha256:
        raise DataFormatError(
            "The bundle's candles do not match the SHA-256 in its data.json (changed or "
            f"damaged), so they are not used. {_AGAIN}"
        )
    with_nonpositive(candles, _open_times(record.get("nonpositive_at", [])))
    selection = record.get("selection", {})
    notes = record.get("read_notes", [])
    if not isinstance(selection, dict) or not isinstance(notes, list):
        raise DataFormatError(f"The bundle's {DATA_ENTRY} is not as this app writes it. {_AGAIN}")
    source = {k: v for k, v in record.items() if k not in (*_BUNDLE_KEYS, *_COMPUTED_KEYS)}
    return BundleData(
        candles=candles,
        filled=filled,
        sha256=sha256,
        source=source,
        selection=selection,
        read_notes=tuple(str(note) for note in notes),
    )


def read_bundle_experiment(data: bytes) -> ExperimentSettings:
    """The experiment's settings saved in a bundle's ``settings.json``.

    Raises
    ------
    DataFormatError
        When the file is not a bundle, or its settings are not as this library writes
        them; a setting out of its range is refused later, as any other.
    """
    raw = _read_entries(data, {EXPERIMENT_ENTRY: MAX_EXPERIMENT_BYTES})[EXPERIMENT_ENTRY]
    if raw is None:
        raise _not_a_bundle()
    document = _json_object(raw, EXPERIMENT_ENTRY)
    try:
        models = document["models"]
        backtest = document["backtest"]
        if not isinstance(models, dict) or not isinstance(backtest, dict):
            raise TypeError
        return ExperimentSettings(
            models=tuple(str(alias) for alias in models),
            model_settings={str(alias): params for alias, params in models.items()},
            backtest=BacktestSettings(**backtest),
            seed=document["seed"],
            loss=document["loss"],
            seeds=tuple(document["seeds"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataFormatError(
            f"The bundle's {EXPERIMENT_ENTRY} is not the experiment settings this library "
            f"writes. {_AGAIN}"
        ) from exc


def _read_entries(data: bytes, limits: Mapping[str, int]) -> dict[str, bytes | None]:
    """The named entries' bytes (``None`` for one that is absent), each inflated to at
    most its limit."""
    _check_directory(data)
    out: dict[str, bytes | None] = {}
    name = next(iter(limits))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if len(archive.infolist()) > MAX_ENTRIES:
                raise _too_many_entries()
            for name, max_bytes in limits.items():
                try:
                    info = archive.getinfo(name)
                except KeyError:
                    out[name] = None
                    continue
                _check_entry(info, max_bytes)
                out[name] = _read_bounded(archive, info, max_bytes)
    except DataFormatError:
        raise
    except _DAMAGED as exc:
        raise DataFormatError(
            f"The bundle is damaged: its {name} cannot be read back intact. {_AGAIN}"
        ) from exc
    return out


def _candles_from_parquet(raw: bytes, unit: Any) -> tuple[pd.DataFrame, pd.DatetimeIndex]:
    """Candles from the bundle's Parquet file, read as plain columns after its layout
    is checked: the row count bounded, no compression, only the expected columns of
    fixed-width types."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        source = pq.ParquetFile(io.BytesIO(raw))
        meta = source.metadata
        _check_parquet(meta, source.schema_arrow)
        table = source.read(use_threads=False)
    except DataFormatError:
        raise
    except (pa.ArrowException, OSError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise DataFormatError(
            f"The bundle's {CANDLES_ENTRY} cannot be read as the candles this app writes. {_AGAIN}"
        ) from exc
    stamps = table.column("timestamp")
    if stamps.null_count or any(table.column(n).null_count for n in PRICE_COLUMNS):
        raise DataFormatError(f"The bundle's {CANDLES_ENTRY} has empty cells. {_AGAIN}")
    index = pd.DatetimeIndex(stamps.to_numpy(), name="timestamp").tz_localize("UTC")
    if unit in ("s", "ms", "us", "ns") and unit != index.unit:
        try:
            index = index.as_unit(unit)
        except (ValueError, OverflowError) as exc:
            raise DataFormatError(
                f"The bundle's {DATA_ENTRY} has a wrong time unit. {_AGAIN}"
            ) from exc
    if len(index) == 0 or not index.is_monotonic_increasing or not index.is_unique:
        raise DataFormatError(
            f"The bundle's {CANDLES_ENTRY} has no candles, or candles out of order. {_AGAIN}"
        )
    columns = [name for name in table.column_names if name not in ("timestamp", FILLED_COLUMN)]
    candles = pd.DataFrame({name: table.column(name).to_numpy() for name in columns}, index=index)
    marks = table.column(FILLED_COLUMN).to_numpy(zero_copy_only=False).astype(bool)
    return candles, index[marks]


def _check_parquet(meta: Any, schema: Any) -> None:
    import pyarrow as pa

    if meta.num_rows > MAX_BUNDLE_CANDLES or meta.num_row_groups > 1024:
        raise DataFormatError(
            f"The bundle's {CANDLES_ENTRY} holds more than {MAX_BUNDLE_CANDLES:,} candles. {_AGAIN}"
        )
    expected = ["timestamp", *PRICE_COLUMNS, FILLED_COLUMN]
    wrong = DataFormatError(
        f"The bundle's {CANDLES_ENTRY} is not laid out as this app writes it (columns "
        f"{', '.join(expected)}). {_AGAIN}"
    )
    names = list(schema.names)
    if (
        names[:1] != ["timestamp"]
        or names[-1:] != [FILLED_COLUMN]
        or _candle_columns(names[1:-1]) is None
    ):
        raise wrong
    for field in schema:
        if field.name == "timestamp":
            ok = pa.types.is_timestamp(field.type) and field.type.tz in ("UTC", "+00:00")
        elif field.name == FILLED_COLUMN:
            ok = pa.types.is_boolean(field.type)
        else:
            ok = pa.types.is_float64(field.type) or pa.types.is_int64(field.type)
        if not ok:
            raise wrong
    for group in range(meta.num_row_groups):
        row_group = meta.row_group(group)
        for column in range(row_group.num_columns):
            if row_group.column(column).compression != "UNCOMPRESSED":
                raise DataFormatError(
                    f"The bundle's {CANDLES_ENTRY} is compressed inside, and this app writes it "
                    f"uncompressed (the zip compresses it). {_AGAIN}"
                )


def _open_times(values: Any) -> pd.DatetimeIndex:
    if not isinstance(values, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**53 for v in values
    ):
        raise DataFormatError(f"The bundle's {DATA_ENTRY} is not as this app writes it. {_AGAIN}")
    return pd.DatetimeIndex(pd.to_datetime(values, unit="ms", utc=True))


def _not_a_bundle() -> DataFormatError:
    return DataFormatError(
        f"That file is not an experiment bundle from this app (a zip with {SETTINGS_ENTRY}). "
        "Download one from the Compare page."
    )


def _too_many_entries() -> DataFormatError:
    return DataFormatError(
        f"That zip holds more than {MAX_ENTRIES} files, so it is not an experiment bundle "
        "from this app. Download one from the Compare page."
    )


def _check_directory(data: bytes) -> None:
    """Refuse a zip whose central directory is too large to parse, before zipfile does.

    The end record is found as zipfile finds it: at the very end when there is no
    archive comment, otherwise the last signature in the final 64 KiB.
    """
    view = bytes(data[-(_END_RECORD_SIZE + 0xFFFF) :])
    if view[-_END_RECORD_SIZE:-18] == _END_RECORD and view[-2:] == b"\x00\x00":
        start = len(view) - _END_RECORD_SIZE
    else:
        start = view.rfind(_END_RECORD)
    if start < 0 or len(view) - start < _END_RECORD_SIZE:
        raise _not_a_bundle()
    entries, size = struct.unpack("<HI", view[start + 10 : start + 16])
    # zipfile follows a ZIP64 locator wherever it sits: this app never writes ZIP64.
    zip64 = start >= 20 and view[start - 20 : start - 16] == _ZIP64_LOCATOR
    if zip64 or entries > MAX_ENTRIES or size > _MAX_DIRECTORY_BYTES:
        raise _too_many_entries()


def _check_entry(info: zipfile.ZipInfo, max_bytes: int) -> None:
    name = info.filename
    if info.flag_bits & _ENCRYPTED:
        raise DataFormatError(
            f"The bundle's {name} is encrypted, and this app writes bundles "
            f"without a password. {_AGAIN}"
        )
    if info.compress_type not in _READABLE_METHODS:
        method = zipfile.compressor_names.get(info.compress_type, "unknown")
        raise DataFormatError(
            f"The bundle's {name} is compressed with method {info.compress_type} "
            f"({method}); this app reads only stored or deflate entries, as it writes. {_AGAIN}"
        )
    if info.file_size > max_bytes:
        raise _too_large(name, max_bytes)


def _too_large(name: str, max_bytes: int) -> DataFormatError:
    return DataFormatError(
        f"The bundle's {name} is larger than {max_bytes // 1024} KB, far more than "
        f"{_LIMITS.get(name, 'this app writes')}. {_AGAIN}"
    )


def _read_bounded(archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int) -> bytes:
    # ZipExtFile.read() with no size inflates up to 2 GiB per step before it cuts the
    # output to the declared size; read(n) inflates at most n bytes a step.
    chunks: list[bytes] = []
    total = 0
    with archive.open(info) as entry:
        while chunk := entry.read(_CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise _too_large(info.filename, max_bytes)
            chunks.append(chunk)
    return b"".join(chunks)


def _json_object(raw: bytes, name: str, *, depth: int = MAX_DEPTH) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"The bundle's {name} is not UTF-8 text. {_AGAIN}") from exc
    try:
        document = json.loads(text)
    except RecursionError as exc:
        raise _too_deep(name, depth) from exc
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            f"The bundle's {name} is not valid JSON ({exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}). {_AGAIN}"
        ) from exc
    except ValueError as exc:  # an integer too long to convert
        raise DataFormatError(
            f"The bundle's {name} holds a number too long to read. {_AGAIN}"
        ) from exc
    if not isinstance(document, dict):
        raise DataFormatError(
            f"The bundle's {name} holds a JSON {_json_kind(document)}, not the "
            f"object this app writes. {_AGAIN}"
        )
    if _depth(document, depth) > depth:
        raise _too_deep(name, depth)
    return document


def _too_deep(name: str, depth: int) -> DataFormatError:
    shape = "one flat object" if name == SETTINGS_ENTRY else f"at most {depth} levels deep"
    return DataFormatError(
        f"The bundle's {name} is nested deeper than {depth} levels, while this "
        f"app writes {shape}. {_AGAIN}"
    )


def _depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if not isinstance(item, dict | list):
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            break
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, level + 1) for child in children)
    return deepest


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "true/false"
    if value is None:
        return "null"
    return "number"
