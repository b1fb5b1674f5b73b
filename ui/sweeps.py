"""Streamlit glue for the Sweeps page: open a finished sweep's files and its experiments.

A sweep (``python -m forecasting sweep --out DIR``) leaves a folder: ``results.csv``,
``sweep.json`` and one experiment bundle per series. The page takes those files as an
upload (the server never reads a path a visitor names), writes them by their plain names
into a temporary folder and reads it with :func:`forecasting.sweeps.read_sweep`, which
checks the table and follows only bundle names inside that folder. Opening an experiment
restores its bundle as the Compare page's upload does (settings and candles, checked
against their SHA-256).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from forecasting.errors import DataFormatError
from forecasting.sweeps import RESULTS_FILE, SWEEP_FILE, read_sweep

#: Session key of the opened sweep.
OPENED = "_sweep_opened"
#: Session keys of the outcome of "Open in Compare" (set in its callback).
GO_TO_COMPARE = "_sweep_go_to_compare"
PROBLEM = "_sweep_problem"
#: The most files and bytes one upload may hold: a sweep of a few hundred series.
MAX_FILES = 500
MAX_BYTES = 200 * 1_048_576


@dataclass
class OpenedSweep:
    """A sweep read from its uploaded files."""

    table: pd.DataFrame
    labels: list[str]
    errors: dict[str, str]
    bundles: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    """Series label -> (bundle file name, its bytes)."""


def open_uploaded(files: list[Any]) -> OpenedSweep:
    """Read the uploaded files of a sweep folder.

    Raises
    ------
    DataFormatError
        Too many or too large files, no ``results.csv``, or files not as a sweep writes
        them (one line saying which).
    """
    if len(files) > MAX_FILES:
        raise DataFormatError(
            f"{len(files)} files are more than a sweep's folder holds here ({MAX_FILES} at "
            f"most): upload {RESULTS_FILE}, {SWEEP_FILE} and the bundles of one sweep."
        )
    total = sum(int(getattr(f, "size", 0) or 0) for f in files)
    if total > MAX_BYTES:
        raise DataFormatError(
            f"The files hold {total / 1_048_576:.0f} MB, more than {MAX_BYTES // 1_048_576} MB: "
            "upload one sweep's folder."
        )
    with tempfile.TemporaryDirectory(prefix="cfl-sweep-") as folder:
        for upload in files:
            name = Path(str(upload.name)).name  # a plain name: nothing outside the folder
            if name and not name.startswith("."):
                (Path(folder) / name).write_bytes(upload.getvalue())
        if not (Path(folder) / RESULTS_FILE).is_file():
            raise DataFormatError(
                f"No {RESULTS_FILE} among the files: upload the files of the folder the sweep "
                f"wrote (--out), {RESULTS_FILE} included."
            )
        found = read_sweep(folder)
        bundles = {label: (path.name, path.read_bytes()) for label, path in found.bundles.items()}
    return OpenedSweep(found.table, list(found.labels), dict(found.errors), bundles)


def verdict_grid(opened: OpenedSweep) -> pd.DataFrame:
    """One row per series, one column per model: the verdict against naive with its ratio
    (``better (0.93)``), or why the series failed."""
    table = opened.table
    ok = table[(table["status"] == "ok") & (table["model"] != "naive")]
    cells = ok.assign(
        cell=[
            f"{reading} ({ratio:.3f})" if pd.notna(ratio) else str(reading)
            for reading, ratio in zip(ok["reading"], ok["ratio"], strict=True)
        ]
    )
    grid = cells.pivot_table(index="series", columns="model", values="cell", aggfunc="first")
    grid = grid.reindex(opened.labels)
    for label, why in opened.errors.items():
        grid.loc[label] = f"failed: {why}"[:120]
    return grid.rename_axis(index="series", columns=None)


def open_experiment(opened: OpenedSweep, label: str) -> list[str]:
    """Restore the bundle of ``label`` (settings and candles) as the Compare page's upload
    does, with the message the Compare page shows; returns the settings refused.

    Raises
    ------
    DataFormatError
        The bundle is not one this app wrote, or its candles fail their SHA-256.
    """
    from ui import settings, text

    name, data = opened.bundles[label]
    refused, restored = settings.restore_from_bundle(data, name=name)
    count = 0 if restored is None else len(restored.candles)
    message = text.markup(
        "Opened the sweep's experiment {label}: its settings and {count:,} candles, checked "
        "against their SHA-256. Press **Run comparison** to rerun it.",
        label=label,
        count=count,
    )
    st.session_state[settings.BUNDLE_MESSAGE] = ("success", message)
    return refused


def open_selected(select_key: str) -> None:
    """Button callback: restore the experiment chosen in the selectbox ``select_key``
    (settings are set before the widgets are drawn, as a callback must)."""
    found = opened()
    label = st.session_state.get(select_key)
    if found is None or label not in found.bundles:
        return
    try:
        refused = open_experiment(found, label)
    except DataFormatError as exc:
        st.session_state[PROBLEM] = str(exc)
        return
    if refused:
        st.session_state[PROBLEM] = "Not restored (invalid): " + "; ".join(refused)
    st.session_state[GO_TO_COMPARE] = True


def remember(opened: OpenedSweep | None) -> None:
    """Keep the opened sweep for this session (``None`` forgets it)."""
    if opened is None:
        st.session_state.pop(OPENED, None)
    else:
        st.session_state[OPENED] = opened


def opened() -> OpenedSweep | None:
    """The sweep this session opened, if any."""
    return st.session_state.get(OPENED)
