"""The Compare page's metrics table: the columns its caption says to read come first.

At 1400 px beside the sidebar the whole table is wider than the page, and ``mae_vs_naive``
and ``n`` (then its last columns) were out of sight; the page now shows ``KEY_METRICS`` on
their own and every metric under "All metrics".
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting.evaluation.metrics import METRIC_COLUMNS
from ui.runs import KEY_METRICS, metrics_view

KEY = ["mae_vs_naive", "against naive", "n", "mae"]

# A metric's value: a number, undefined, or unbounded (an interval's width).
VALUES = st.one_of(
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
    st.just(float("nan")),
    st.just(float("inf")),
)


def metrics_frame(models: list[str], values: list[float]) -> pd.DataFrame:
    """A metrics table as the experiment returns it, with these values row by row."""
    columns = [c for c in METRIC_COLUMNS if c not in ("n", "direction_calls")]
    data = np.array(values, dtype=float).reshape(len(models), len(columns))
    frame = pd.DataFrame(data, index=pd.Index(models, name="model"), columns=columns)
    frame["n"] = 30
    frame["direction_calls"] = 10
    return frame[METRIC_COLUMNS]


@st.composite
def experiments(draw):
    models = ["naive", *draw(st.sets(st.sampled_from(["drift", "lstm", "prophet"])))]
    size = len(models) * (len(METRIC_COLUMNS) - 2)
    values = draw(st.lists(VALUES, min_size=size, max_size=size))
    readings = draw(
        st.lists(st.sampled_from(["better", "worse", "not different"]), min_size=len(models))
    )
    verdict = {m: SimpleNamespace(reading=r) for m, r in zip(models[1:], readings, strict=False)}
    return metrics_frame(models, values), verdict


def test_the_key_columns_are_the_ones_the_caption_names():
    assert list(KEY_METRICS) == KEY


def test_the_reproduction_two_models_key_table():
    # The run: naive and drift; the key table is exactly the columns to read.
    metrics = metrics_frame(["naive", "drift"], [1.0] * (2 * (len(METRIC_COLUMNS) - 2)))
    metrics.loc["drift", "mae"] = 2.0
    metrics["mae_vs_naive"] = metrics["mae"] / metrics.loc["naive", "mae"]
    verdict = {"drift": SimpleNamespace(reading="not different")}
    key = metrics_view(metrics, verdict, columns=KEY_METRICS).data
    assert list(key.columns) == KEY
    assert key.loc["naive", "against naive"] == "—"  # naive is not judged against itself
    assert key.loc["drift", "against naive"] == "not different"
    assert key.loc["drift", "mae_vs_naive"] == 2.0
    assert list(key["n"]) == [30, 30]


@settings(max_examples=60, deadline=None)
@given(experiments())
def test_every_metric_shows_key_columns_first(experiment):
    metrics, verdict = experiment
    full = metrics_view(metrics, verdict)
    html = full.to_html()  # the styling runs on every kind of value
    assert "mae_vs_naive" in html
    table = full.data
    # Key columns first, then every other metric once; only the call count is left out.
    assert list(table.columns[:4]) == KEY
    shown = set(table.columns) - {"against naive", "MASE < 1"}
    assert shown == set(METRIC_COLUMNS) - {"direction_calls"}
    assert len(table.columns) == len(set(table.columns))
    assert list(table.index) == list(metrics.index)
    pd.testing.assert_series_equal(table["mae"], metrics["mae"])
    key = metrics_view(metrics, verdict, columns=KEY_METRICS)
    assert list(key.data.columns) == KEY
    key.to_html()
    readings = {m: v.reading for m, v in verdict.items()}
    assert list(key.data["against naive"]) == [readings.get(m, "—") for m in metrics.index]
