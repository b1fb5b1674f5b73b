"""The experiment bundle: one zip with everything needed to check or redo an experiment.

Contents: ``settings.json`` (every model's parameters, the backtest layout, the seeds
and the loss), ``data.json`` (the data source and a SHA-256 of the candles used),
``verdict.json`` (each model's verdict, the pairs scored and left out, the notes),
``metrics.csv``,
``metrics_by_horizon.csv``, ``dm_tests.csv``, ``copy_check.csv``, ``forecasts.csv``
(every backtest forecast), ``future.csv`` and ``charts/*.html`` (standalone Plotly pages).
Only plain text: nothing in a bundle is ever executed or unpickled when it is read back.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go

from forecasting.experiment import ExperimentResult

__all__ = ["experiment_bundle"]


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
        Charts by file stem, written as standalone HTML (Plotly's JavaScript included).
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
        for name, figure in (figures or {}).items():
            archive.writestr(
                f"charts/{name}.html", figure.to_html(include_plotlyjs=True, full_html=True)
            )
    return buffer.getvalue()
