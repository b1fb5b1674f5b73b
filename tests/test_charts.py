"""Every figure in :mod:`forecasting.charts` carries the one look the app draws it with."""

from __future__ import annotations

from collections.abc import Callable

import plotly.graph_objects as go
import pytest
from factories import random_walk_candles

from forecasting import charts
from forecasting.evaluation import BacktestSettings, score_by_horizon, walk_forward
from forecasting.features import compute_features
from forecasting.models import Drift, Naive


@pytest.fixture(scope="module")
def figures() -> dict[str, go.Figure]:
    candles = random_walk_candles(160, seed=3)
    backtest = walk_forward(
        {"naive": Naive(), "drift": Drift()},
        candles,
        BacktestSettings(horizon=3, folds=2, test_size=20),
    )
    forecast = Naive().fit(candles).predict(3)
    features = compute_features(candles).dropna()
    builders: dict[str, Callable[[], go.Figure]] = {
        "candlestick": lambda: charts.candlestick_chart(candles),
        "features": lambda: charts.feature_chart(candles.loc[features.index], features),
        "correlation": lambda: charts.correlation_heatmap(features),
        "forecast": lambda: charts.forecast_chart(candles, [forecast]),
        "loss": lambda: charts.loss_chart({"loss": [0.3, 0.2], "val_loss": [0.4, 0.3]}),
        "backtest": lambda: charts.backtest_chart(backtest.forecasts),
        "horizon": lambda: charts.horizon_error_chart(score_by_horizon(backtest)),
        "residuals": lambda: charts.residual_histogram(backtest.forecasts),
        "acf": lambda: charts.residual_acf_chart(backtest.forecasts),
    }
    return {name: build() for name, build in builders.items()}


def test_every_chart_function_is_covered(figures: dict[str, go.Figure]) -> None:
    functions = [
        name for name in charts.__all__ if name.endswith(("_chart", "_heatmap", "_histogram"))
    ]
    assert len(figures) == len(functions)


@pytest.mark.parametrize(
    "name",
    ["candlestick", "features", "correlation", "forecast", "loss", "backtest", "horizon",
     "residuals", "acf"],
)  # fmt: skip
def test_figures_carry_the_template(figures: dict[str, go.Figure], name: str) -> None:
    layout = figures[name].layout
    # The app draws figures with ``theme=None``: without the template they would fall back
    # to plotly.js's white background on a dark page.
    assert layout.template.layout.paper_bgcolor == charts.TEMPLATE.layout.paper_bgcolor
    assert layout.template.layout.plot_bgcolor == "rgba(0, 0, 0, 0)"
    assert layout.template.layout.font.color == charts.TEMPLATE.layout.font.color
    # No range slider anywhere: it draws every trace a second time.
    axes = [key for key in layout.to_plotly_json() if key.startswith("xaxis")] or ["xaxis"]
    for axis in axes:
        assert not layout[axis].rangeslider.visible
