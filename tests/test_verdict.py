"""The joint test over all steps, the directional test, and the one verdict built on them.

Hand-built forecast rows with known losses check each formula; a hypothesis property
checks that the verdict's ratio and its test can never disagree, which is what went
wrong when "beats naive" used the MAE ratio and the test used squared error.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from forecasting.errors import InsufficientHistory
from forecasting.evaluation import Backtest, BacktestSettings, directional_test, joint_test
from forecasting.evaluation.verdict import verdicts

DAY = pd.Timedelta(days=1)
START = pd.Timestamp("2024-01-01", tz="UTC")


def _rows(model: str, errors: np.ndarray, *, y: np.ndarray | None = None) -> pd.DataFrame:
    """Forecast rows of one model: ``errors[i, k]`` is y - yhat from origin i at step k+1."""
    origins, steps = errors.shape
    y = np.full((origins, steps), 100.0) if y is None else y
    records = []
    for i in range(origins):
        for k in range(steps):
            records.append(
                {
                    "fold": 1,
                    "cutoff": START,
                    "origin": START + i * DAY,
                    "timestamp": START + (i + k + 1) * DAY,
                    "step": k + 1,
                    "model": model,
                    "y": y[i, k],
                    "yhat": y[i, k] - errors[i, k],
                    "lower": np.nan,
                    "upper": np.nan,
                    "y_origin": 100.0,
                }
            )
    return pd.DataFrame(records)


def _backtest(*frames: pd.DataFrame, seeds=None, stride: int = 1) -> Backtest:
    forecasts = pd.concat(frames, ignore_index=True)
    steps = int(forecasts["step"].max())
    return Backtest(
        forecasts=forecasts,
        folds=[],
        settings=BacktestSettings(horizon=steps, stride=stride),
        naive_scale={1: 1.0},
        seed_forecasts=seeds or {},
        model_seeds={"lstm": 1} if seeds else {},
    )


def _hand_dm(d: np.ndarray, overlap: int) -> tuple[float, float]:
    """The equal-weighted cosine DM statistic and two-sided p-value, written out."""
    n = len(d)
    terms = max(1, min(round(0.4 * n ** (2 / 3)), n // (2 * overlap)))
    mean = d.mean()
    lams = [
        math.sqrt(2 / n)
        * sum(math.cos(math.pi * j * (t - 0.5) / n) * (d[t - 1] - mean) for t in range(1, n + 1))
        for j in range(1, terms + 1)
    ]
    statistic = math.sqrt(n) * mean / math.sqrt(sum(x * x for x in lams) / terms)
    return statistic, 2 * stats.t(df=terms).sf(abs(statistic))


def test_joint_test_averages_each_origins_steps_and_allows_for_their_overlap() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(30, 3))
    b = rng.normal(size=(30, 3)) * 1.3
    result = joint_test(_rows("a", a), _rows("b", b), loss="absolute")

    d = (np.abs(a) - np.abs(b)).mean(axis=1)
    statistic, pvalue = _hand_dm(d, 3)  # three steps, every candle an origin: overlap 3
    assert result.n == 30
    assert result.horizon == 3
    assert result.statistic == pytest.approx(statistic, rel=1e-12)
    assert result.pvalue == pytest.approx(pvalue, rel=1e-12)

    squared = joint_test(_rows("a", a), _rows("b", b), loss="squared", stride=2)
    statistic, pvalue = _hand_dm((a**2 - b**2).mean(axis=1), 2)  # origins 2 apart: overlap 2
    assert squared.statistic == pytest.approx(statistic, rel=1e-12)
    assert squared.loss == "squared"


def test_joint_test_leaves_out_origins_missing_a_step() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(20, 2)), rng.normal(size=(20, 2))
    rows_a, rows_b = _rows("a", a), _rows("b", b)
    # The last origin has only its first step (the end of the data); another lost a
    # target to a gap.
    drop = ((rows_a["origin"] == START + 19 * DAY) & (rows_a["step"] == 2)) | (
        (rows_a["origin"] == START + 5 * DAY) & (rows_a["step"] == 1)
    )
    result = joint_test(rows_a[~drop], rows_b[~drop])
    d = (np.abs(a) - np.abs(b)).mean(axis=1)
    statistic, _ = _hand_dm(np.delete(d, [5, 19]), 2)
    assert result.n == 18
    assert result.statistic == pytest.approx(statistic, rel=1e-12)


def test_joint_test_refuses_losses_that_never_differ() -> None:
    same = np.ones((10, 2))
    with pytest.raises(InsufficientHistory):
        joint_test(_rows("a", same), _rows("b", -same))


def _direction_rows(called: list[int], moved: list[int], step: int = 1) -> pd.DataFrame:
    """Rows whose forecast and actual move from the origin have the given signs."""
    n = len(called)
    return pd.DataFrame(
        {
            "origin": [START + i * DAY for i in range(n)],
            "timestamp": [START + (i + step) * DAY for i in range(n)],
            "step": step,
            "y_origin": 100.0,
            "yhat": [100.0 + c for c in called],
            "y": [100.0 + m for m in moved],
        }
    )


def test_a_forecast_that_always_says_up_has_no_directional_skill_to_test() -> None:
    # Right 8 times out of 10 only because the price mostly rose: a binomial test
    # against 50 % would call that skill (p = 0.055); Fisher's test has nothing to
    # relate (one direction called) and says so.
    rows = _direction_rows([1] * 10, [1, 1, 1, 1, -1, 1, 1, 1, -1, 1])
    assert math.isnan(directional_test(rows))


def test_directional_test_is_fishers_exact_test_on_non_overlapping_origins() -> None:
    called = [1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, 1]
    moved = [1, -1, 1, -1, 1, -1, 1, 1, 1, -1, -1, 1]
    rows = _direction_rows(called, moved)  # step 1: nothing overlaps
    table = [[6, 1], [1, 4]]  # (called up, down) x (moved up, down)
    assert directional_test(rows) == pytest.approx(
        stats.fisher_exact(table, alternative="greater").pvalue, rel=1e-12
    )
    # At step 3 the moves from consecutive origins overlap: every third origin is used.
    three = _direction_rows(called, moved, step=3)
    kept = [0, 3, 6, 9]  # called +, -, +, -; moved +, -, +, -
    assert directional_test(three) == pytest.approx(
        stats.fisher_exact([[2, 0], [0, 2]], alternative="greater").pvalue, rel=1e-12
    )
    assert [called[i] for i in kept] == [1, -1, 1, -1]
    # Two steps: the smaller p-value times two (Bonferroni).
    both = pd.concat([rows, three])
    assert directional_test(both) == pytest.approx(
        min(1.0, 2 * min(directional_test(rows), directional_test(three)))
    )


def test_the_verdict_uses_one_loss_for_its_ratio_and_its_test() -> None:
    # Regression: the LSTM's absolute errors are a little smaller than naive's, its
    # squared errors larger (rare big misses). "beats naive" used to read the MAE ratio
    # (0.996) while the squared-error DM statistic said worse.
    rng = np.random.default_rng(3)
    naive = rng.normal(size=(200, 2))
    lstm = naive * 0.9
    lstm[::25] *= 3.0
    backtest = _backtest(_rows("naive", naive), _rows("lstm", lstm))

    absolute = verdicts(backtest, loss="absolute")["lstm"]
    squared = verdicts(backtest, loss="squared")["lstm"]
    assert absolute.ratio == pytest.approx(np.abs(lstm).mean() / np.abs(naive).mean())
    assert squared.ratio == pytest.approx((lstm**2).mean() / (naive**2).mean())
    assert absolute.ratio < 1 < squared.ratio
    for verdict in (absolute, squared):
        if verdict.reading == "better":
            assert verdict.ratio < 1
        if verdict.reading == "worse":
            assert verdict.ratio > 1
    assert absolute.to_dict()["loss"] == "absolute"
    assert "absolute error ratio" in absolute.sentence()
    # The JSON names the test it ran (the EWC variance, not HLN's) and its sample sizes.
    document = absolute.to_dict()
    assert "equal-weighted cosine" in document["test"]
    assert "Harvey" not in document["test"]
    (seed,) = document["per_seed"]
    assert seed["pairs"] == 400
    assert seed["origins"] == 200
    assert seed["dof"] == max(1, min(round(0.4 * 200 ** (2 / 3)), 200 // 4))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    scale=st.floats(0.5, 1.5),
    steps=st.integers(1, 4),
    loss=st.sampled_from(["absolute", "squared"]),
)
def test_a_reading_never_contradicts_its_ratio(seed, scale, steps, loss) -> None:
    rng = np.random.default_rng(seed)
    naive = rng.normal(size=(40, steps))
    model = naive * scale + rng.normal(size=(40, steps)) * 0.3
    verdict = verdicts(_backtest(_rows("naive", naive), _rows("m", model)), loss=loss)["m"]
    assert verdict.reading in ("better", "worse", "not different")
    if verdict.reading == "better":
        assert verdict.ratio < 1
        assert verdict.pvalue < 0.05
    elif verdict.reading == "worse":
        assert verdict.ratio > 1
        assert verdict.pvalue < 0.05


def test_better_only_when_it_holds_for_every_seed() -> None:
    rng = np.random.default_rng(4)
    naive = rng.normal(size=(150, 2))
    good = naive * 0.5  # clearly better
    unsure = naive * rng.choice([0.6, 1.35], size=naive.shape)  # no clear difference
    own = _rows("lstm", good)
    seeds = {"lstm": {2: _rows("lstm", good * 1.01), 3: _rows("lstm", unsure)}}
    backtest = _backtest(_rows("naive", naive), own, seeds=seeds)
    verdict = verdicts(backtest)["lstm"]

    assert [s.seed for s in verdict.per_seed] == [1, 2, 3]
    assert [s.reading for s in verdict.per_seed] == ["better", "better", "not different"]
    assert verdict.reading == "not different"
    assert verdict.seeds == 3
    assert verdict.holds_for == 1
    assert verdict.pvalue == max(s.pvalue for s in verdict.per_seed)
    assert "holds for 1 of 3 seeds (2 said better)" in verdict.sentence()

    agreed = {"lstm": {2: _rows("lstm", good * 1.01), 3: _rows("lstm", good * 0.98)}}
    verdict = verdicts(_backtest(_rows("naive", naive), own, seeds=agreed))["lstm"]
    assert verdict.reading == "better"
    assert verdict.holds_for == 3
    document = verdict.to_dict()
    assert {k: document[k] for k in ("against", "loss", "seeds", "holds_for", "reading")} == {
        "against": "naive",
        "loss": "absolute",
        "seeds": 3,
        "holds_for": 3,
        "reading": "better",
    }


def test_naive_gets_no_verdict_and_lstm_meets_prophet() -> None:
    rng = np.random.default_rng(5)
    naive = rng.normal(size=(60, 2))
    backtest = _backtest(
        _rows("naive", naive), _rows("prophet", naive * 3), _rows("lstm", naive * 1.02)
    )
    found = verdicts(backtest)
    assert list(found) == ["prophet", "lstm", "lstm_vs_prophet"]
    assert found["prophet"].reading == "worse"
    assert found["lstm_vs_prophet"].against == "prophet"
    assert found["lstm_vs_prophet"].reading == "better"
    assert found["lstm_vs_prophet"].sentence().startswith("lstm is better than prophet")
