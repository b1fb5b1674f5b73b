"""The experiment bundle: one zip with everything needed to check or redo an experiment.

Contents: ``settings.json`` (every model's parameters, the backtest layout, the seeds
and the loss), ``data.json`` (the data source and a SHA-256 of the candles used),
``verdict.json`` (each model's verdict, the pairs scored and left out, the notes),
``metrics.csv``,
``metrics_by_horizon.csv``, ``dm_tests.csv``, ``copy_check.csv``, ``forecasts.csv``
(every backtest forecast), ``future.csv`` and ``charts/*.html`` (Plotly pages sharing one
``charts/plotly.min.js``).
Only plain text: nothing in a bundle is ever executed or unpickled when it is read back.

Reading a bundle back (:func:`read_bundle_settings`) treats the upload as hostile: the
zip's directory is size-checked before it is parsed, the one entry read is inflated in
bounded chunks and abandoned as soon as more than the limit has come out (whatever its
header claims), and every way the file can be wrong ends in one :class:`DataFormatError`.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.offline

from forecasting.errors import DataFormatError
from forecasting.experiment import ExperimentResult

__all__ = ["SETTINGS_ENTRY", "experiment_bundle", "read_bundle_settings"]

#: The entry holding the app's settings, the only one a bundle upload reads.
SETTINGS_ENTRY = "app_settings.json"

# A bundle holds about a dozen files and a chart per model; the settings a few kilobytes
# of one flat JSON object.
MAX_ENTRIES = 200
MAX_SETTINGS_BYTES = 256 * 1024
MAX_DEPTH = 16

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
) -> bytes:
    """The zip's bytes.

    Parameters
    ----------
    result
        The experiment.
    figures
        Charts by file stem, written as HTML pages beside one copy of Plotly's
        JavaScript (``charts/plotly.min.js``, about 4.6 MB before compression), which
        they load from their own folder: the folder opens offline.
    extra_files
        More text files by name (the app adds ``app_settings.json``, the settings a
        bundle restores).
    """
    document = result.to_json()
    future = pd.concat(
        {alias: forecast.to_frame() for alias, forecast in result.future.items()}, names=["model"]
    ) if result.future else pd.DataFrame()  # fmt: skip
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("settings.json", json.dumps(document["settings"], indent=2))
        archive.writestr("data.json", json.dumps(document["data"], indent=2))
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
        for name, text in (extra_files or {}).items():
            archive.writestr(name, text)
        if figures:
            archive.writestr(f"charts/{PLOTLY_JS}", plotly.offline.get_plotlyjs())
        for name, figure in (figures or {}).items():
            archive.writestr(
                f"charts/{name}.html", figure.to_html(include_plotlyjs=PLOTLY_JS, full_html=True)
            )
    return buffer.getvalue()


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
    _check_directory(data)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if len(archive.infolist()) > MAX_ENTRIES:
                raise _too_many_entries()
            try:
                info = archive.getinfo(SETTINGS_ENTRY)
            except KeyError:
                raise _not_a_bundle() from None
            _check_entry(info, max_bytes)
            raw = _read_bounded(archive, info, max_bytes)
    except DataFormatError:
        raise
    except _DAMAGED as exc:
        raise DataFormatError(
            f"The bundle is damaged: its {SETTINGS_ENTRY} cannot be read back intact. {_AGAIN}"
        ) from exc
    return _settings_object(raw)


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
    if info.flag_bits & _ENCRYPTED:
        raise DataFormatError(
            f"The bundle's {SETTINGS_ENTRY} is encrypted, and this app writes bundles "
            f"without a password. {_AGAIN}"
        )
    if info.compress_type not in _READABLE_METHODS:
        method = zipfile.compressor_names.get(info.compress_type, "unknown")
        raise DataFormatError(
            f"The bundle's {SETTINGS_ENTRY} is compressed with method {info.compress_type} "
            f"({method}); this app reads only stored or deflate entries, as it writes. {_AGAIN}"
        )
    if info.file_size > max_bytes:
        raise _too_large(max_bytes)


def _too_large(max_bytes: int) -> DataFormatError:
    return DataFormatError(
        f"The bundle's {SETTINGS_ENTRY} is larger than {max_bytes // 1024} KB, far more than "
        f"the few KB of settings this app writes. {_AGAIN}"
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
                raise _too_large(max_bytes)
            chunks.append(chunk)
    return b"".join(chunks)


def _settings_object(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"The bundle's {SETTINGS_ENTRY} is not UTF-8 text. {_AGAIN}") from exc
    try:
        document = json.loads(text)
    except RecursionError as exc:
        raise _too_deep() from exc
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            f"The bundle's {SETTINGS_ENTRY} is not valid JSON ({exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}). {_AGAIN}"
        ) from exc
    except ValueError as exc:  # an integer too long to convert
        raise DataFormatError(
            f"The bundle's {SETTINGS_ENTRY} holds a number too long to read. {_AGAIN}"
        ) from exc
    if not isinstance(document, dict):
        raise DataFormatError(
            f"The bundle's {SETTINGS_ENTRY} holds a JSON {_json_kind(document)}, not the "
            f"settings object this app writes. {_AGAIN}"
        )
    if _depth(document) > MAX_DEPTH:
        raise _too_deep()
    return document


def _too_deep() -> DataFormatError:
    return DataFormatError(
        f"The bundle's {SETTINGS_ENTRY} is nested deeper than {MAX_DEPTH} levels, while this "
        f"app's settings are one flat object. {_AGAIN}"
    )


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if not isinstance(item, dict | list):
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
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
