"""The one progress-callback signature of the package: data, training and backtests.

Every long-running function takes ``progress`` and calls it as::

    progress(stage, fraction, details)

``stage``
    What is running: ``"fetch"`` (candles from an exchange), ``"fit"`` (a model fit that
    reports no epochs), ``"epoch"`` (one training epoch), ``"backtest"`` (one model of one
    fold of a walk-forward), ``"refit"`` (a model refitted on all the data).
``fraction``
    Share of that run done, from 0 to 1.
``details``
    What a screen may show, by stage: ``done`` and ``expected`` candles for ``fetch``;
    ``candles`` for ``fit``; ``epoch``, ``epochs``, ``loss``, ``val_loss`` for ``epoch``;
    ``message`` (always present for ``backtest`` and ``refit``), ``fold``, ``folds``,
    ``model`` and ``seed`` for ``backtest``.

Long runs also take ``should_stop``, a function polled between steps; when it returns
True the run raises :class:`~forecasting.errors.Cancelled`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["ProgressCallback", "StopCheck", "report", "scaled"]

ProgressCallback = Callable[[str, float, Mapping[str, Any]], None]
StopCheck = Callable[[], bool]


def report(progress: ProgressCallback | None, stage: str, fraction: float, **details: Any) -> None:
    """Call ``progress(stage, fraction, details)`` when there is a callback."""
    if progress is not None:
        progress(stage, min(max(float(fraction), 0.0), 1.0), details)


def scaled(progress: ProgressCallback | None, start: float, end: float) -> ProgressCallback | None:
    """A callback that maps a part's 0..1 onto ``start..end`` of the whole run."""
    if progress is None:
        return None

    def inner(stage: str, fraction: float, details: Mapping[str, Any]) -> None:
        progress(stage, start + (end - start) * min(max(float(fraction), 0.0), 1.0), details)

    return inner
