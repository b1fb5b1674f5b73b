"""Independent recomputations of the package's statistics, written out by hand.

Used by the tests that check a statistic against the package (metrics, the command
line's JSON): plain loops over the forecast rows, no code shared with ``forecasting``.
"""

from __future__ import annotations

import math

import pandas as pd

__all__ = ["directional_pvalue", "fisher_greater"]


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def fisher_greater(table: list[list[int]]) -> float:
    """One-sided Fisher exact p-value: P(top-left cell >= observed | the margins)."""
    (a, b), (c, d) = table
    row, column, n = a + b, a + c, a + b + c + d
    high = min(row, column)
    total = math.comb(n, column)
    return (
        sum(math.comb(row, k) * math.comb(n - row, column - k) for k in range(a, high + 1)) / total
    )


def directional_pvalue(rows: pd.DataFrame) -> float:
    """Per step: origins whose moves do not overlap, a 2 x 2 table, Fisher; Bonferroni."""
    pvalues = []
    for step in sorted(set(rows["step"])):
        at_step = sorted((r for r in rows.itertuples() if r.step == step), key=lambda r: r.origin)
        kept, last_target = [], None
        for r in at_step:
            if last_target is None or r.origin >= last_target:
                kept.append(r)
                last_target = r.timestamp
        table = [[0, 0], [0, 0]]
        for r in kept:
            called, moved = _sign(r.yhat - r.y_origin), _sign(r.y - r.y_origin)
            if called and moved:
                table[0 if called > 0 else 1][0 if moved > 0 else 1] += 1
        margins = [
            sum(table[0]),
            sum(table[1]),
            table[0][0] + table[1][0],
            table[0][1] + table[1][1],
        ]
        if all(margins):
            pvalues.append(fisher_greater(table))
    return min(1.0, min(pvalues) * len(pvalues)) if pvalues else math.nan
