"""Diebold-Mariano tests (against published worked values) and the copy check."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from factories import random_walk_candles
from scipy import stats

from forecasting.errors import ConfigurationError, InsufficientHistory
from forecasting.evaluation import (
    Backtest,
    BacktestSettings,
    copy_check,
    diebold_mariano,
    dm_table,
    walk_forward,
)
from forecasting.models import MODELS as MODELS_BY_NAME
from forecasting.models import Drift, Forecaster, Naive

# From the dieboldmariano package's test-suite, which match R's forecast::dm.test.
F1_15 = [
    0.3675225224615024, 0.5450608127223211, 0.22044990720021074, 0.8688743471040006,
    0.6072512228948467, 0.8582283746501538, 0.41662295816718187, 0.3812100211114714,
    0.7185133356116706, 0.30827323290318875, 0.4297093624074402, 0.8615974488577858,
    0.7240514514808826, 0.3450839595261038, 0.19675301374013598,
]  # fmt: skip
F2_15 = [
    0.12794132529988733, 0.3679643204341153, 0.768715420996091, 0.09972248964114683,
    0.27197653636654284, 0.28797629010039505, 0.9160213458582482, 0.6112628048698798,
    0.5452873235576241, 0.06785907231746158, 0.6072666485541124, 0.6241575753989782,
    0.39998026828867217, 0.19895665605941748, 0.8094941215215619,
]  # fmt: skip


@pytest.mark.parametrize(
    ("actual", "f1", "f2", "kwargs", "statistic", "pvalue"),
    [
        # six one-step forecasts, squared loss, two-sided
        pytest.param(
            [0.0] * 6,
            [0, 1, 2, 3, 4, 5],
            [0, 2, 3, 3, 5, 6],
            {"horizon": 1, "loss": "squared"},
            -2.4905,
            0.05513,
            id="squared-h1-two-sided",
        ),
        # fifteen three-step forecasts, absolute loss, one-sided "less"
        pytest.param(
            [0.0] * 15,
            F1_15,
            F2_15,
            {"horizon": 3, "loss": "absolute", "alternative": "less"},
            1.2109,
            0.877,
            id="absolute-h3-less",
        ),
    ],
)
def test_diebold_mariano_matches_published_values(actual, f1, f2, kwargs, statistic, pvalue):
    result = diebold_mariano(np.array(actual), np.array(f1), np.array(f2), **kwargs)

    assert result.statistic == pytest.approx(statistic, abs=5e-5)
    assert result.pvalue == pytest.approx(pvalue, abs=5e-4 if pvalue > 0.5 else 5e-6)
    assert result.n == len(actual)
    assert result.horizon == kwargs["horizon"]
    assert result.loss == kwargs["loss"]
    assert result.alternative == kwargs.get("alternative", "two-sided")


def test_diebold_mariano_formula_by_hand() -> None:
    rng = np.random.default_rng(5)
    actual = rng.normal(size=25)
    a, b = actual + rng.normal(size=25), actual + 1.3 * rng.normal(size=25)
    h, n = 3, 25
    d = [(actual[i] - a[i]) ** 2 - (actual[i] - b[i]) ** 2 for i in range(n)]
    mean = sum(d) / n
    gamma = [sum((d[i] - mean) * (d[i - k] - mean) for i in range(k, n)) / n for k in range(h)]
    dm = mean / math.sqrt((gamma[0] + 2 * sum(gamma[1:])) / n)
    hln = dm * math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)

    result = diebold_mariano(actual, a, b, horizon=h)

    assert result.statistic == pytest.approx(hln, rel=1e-10)
    assert result.pvalue == pytest.approx(2 * stats.t.sf(abs(hln), df=n - 1), rel=1e-10)
    assert result.mean_loss_difference == pytest.approx(mean, rel=1e-12)


@pytest.mark.parametrize("loss", ["squared", "absolute"])
@pytest.mark.parametrize("horizon", [1, 4])
def test_swapping_the_forecasts_flips_the_sign(loss, horizon) -> None:
    rng = np.random.default_rng(11)
    actual = rng.normal(size=40)
    a, b = actual + rng.normal(size=40), actual + 1.2 * rng.normal(size=40)

    ab = diebold_mariano(actual, a, b, horizon=horizon, loss=loss)
    ba = diebold_mariano(actual, b, a, horizon=horizon, loss=loss)

    assert ba.statistic == pytest.approx(-ab.statistic, rel=1e-12)
    assert ba.pvalue == pytest.approx(ab.pvalue, rel=1e-12)
    assert ba.mean_loss_difference == pytest.approx(-ab.mean_loss_difference, rel=1e-12)
    less = diebold_mariano(actual, a, b, horizon=horizon, loss=loss, alternative="less")
    greater = diebold_mariano(actual, b, a, horizon=horizon, loss=loss, alternative="greater")
    assert less.pvalue == pytest.approx(greater.pvalue, rel=1e-12)
    # The two one-sided p-values add up to one; the two-sided one is twice the smaller.
    other = diebold_mariano(actual, a, b, horizon=horizon, loss=loss, alternative="greater")
    assert less.pvalue + other.pvalue == pytest.approx(1.0)
    assert ab.pvalue == pytest.approx(2 * min(less.pvalue, other.pvalue))


@pytest.mark.parametrize(
    ("actual", "a", "b", "kwargs", "error"),
    [
        # identical forecasts: the loss differences never vary
        ([1.0, 2, 3, 4, 5], [1.5, 2, 2, 4, 6], [1.5, 2, 2, 4, 6], {}, InsufficientHistory),
        # equal losses from different forecasts (errors +1 and -1 everywhere)
        ([0.0, 0, 0, 0], [1.0, 1, 1, 1], [-1.0, -1, -1, -1], {}, InsufficientHistory),
        # fewer than three pairs
        ([1.0, 2], [1.5, 2], [1.0, 2.5], {}, InsufficientHistory),
        # forecasts of different lengths
        ([1.0, 2, 3, 4], [1.0, 2, 3], [1.0, 2, 3, 5], {}, InsufficientHistory),
        # an unknown loss
        ([1.0, 2, 3], [1.0, 2, 4], [2.0, 2, 3], {"loss": "hinge"}, ConfigurationError),
        # an unknown alternative
        ([1.0, 2, 3], [1.0, 2, 4], [2.0, 2, 3], {"alternative": "bigger"}, ConfigurationError),
    ],
)
def test_diebold_mariano_refuses_what_it_cannot_test(actual, a, b, kwargs, error) -> None:
    with pytest.raises(error):
        diebold_mariano(np.array(actual), np.array(a), np.array(b), **kwargs)


def _comparison_backtest(steps: int = 2, n: int = 40) -> Backtest:
    """naive, drift, lstm and prophet forecast rows with known relative accuracy.

    prophet's errors are a tenth of naive's (clearly better), drift's are three times
    naive's (clearly worse), and lstm's are naive's scaled up or down at random: slightly
    smaller on average, but not consistently (not significantly better).
    """
    rng = np.random.default_rng(2)
    stamps = pd.date_range("2024-01-01", periods=n + steps, freq="D", tz="UTC")
    y = 100 + np.cumsum(rng.normal(size=n + steps))
    rows = []
    for step in range(1, steps + 1):
        base = rng.normal(size=n)
        # lstm's errors: naive's scaled by 0.7 or 1.2 at random (mean square factor 0.965)
        factor = rng.choice([0.7, 1.2], size=n)
        errors = {"naive": base, "drift": 3 * base, "lstm": factor * base, "prophet": base / 10}
        for model, error in errors.items():
            for i in range(n):
                target = i + step
                rows.append(
                    {
                        "fold": 1,
                        "cutoff": stamps[0],
                        "origin": stamps[i],
                        "timestamp": stamps[target],
                        "step": step,
                        "model": model,
                        "y": y[target],
                        "yhat": y[target] - error[i],
                        "lower": np.nan,
                        "upper": np.nan,
                        "y_origin": y[i],
                    }
                )
    return Backtest(pd.DataFrame(rows), [], BacktestSettings(horizon=steps), {1: 1.0})


def test_dm_table_pairs_each_model_with_naive_and_lstm_with_prophet() -> None:
    backtest = _comparison_backtest()
    table = dm_table(backtest, loss="squared")

    expected_pairs = [("drift", "naive"), ("lstm", "naive"), ("prophet", "naive")]
    expected_pairs.append(("lstm", "prophet"))
    assert list(zip(table["step"], table["model"], table["against"], strict=True)) == [
        (step, *pair) for step in (1, 2) for pair in expected_pairs
    ]
    assert (table["horizon"] == table["step"]).all()
    assert (table["loss"] == "squared").all()
    assert (table["alternative"] == "two-sided").all()
    # Each row is the test on that step's forecasts, aligned by target time.
    rows = backtest.forecasts
    for record in table.itertuples():
        at_step = rows[rows["step"] == record.step].sort_values("timestamp")
        first = at_step[at_step["model"] == record.model]
        second = at_step[at_step["model"] == record.against]
        expected = diebold_mariano(
            first["y"].to_numpy(),
            first["yhat"].to_numpy(),
            second["yhat"].to_numpy(),
            horizon=record.step,
            method="ewc",  # the size-correct variance the table uses
        )
        assert record.statistic == pytest.approx(expected.statistic, rel=1e-12)
        assert record.pvalue == pytest.approx(expected.pvalue, rel=1e-12)
        assert record.n == 40


def test_dm_table_verdicts_in_words() -> None:
    table = dm_table(_comparison_backtest(), loss="squared")
    table = table.set_index(["step", "model", "against"])

    lstm = table.loc[(1, "lstm", "naive")]
    # The construction really is "lower loss, but not significantly".
    assert lstm["statistic"] < 0
    assert lstm["pvalue"] >= 0.05
    assert lstm["verdict"] == "lstm is not significantly better than naive at the 5 % level"
    # Higher loss, not significantly: neither "better" nor "worse" is claimed.
    worse = table.loc[(2, "lstm", "naive")]
    assert worse["statistic"] > 0
    assert worse["pvalue"] >= 0.05
    assert worse["verdict"] == "lstm is not significantly different from naive at the 5 % level"
    assert (
        table.loc[(1, "prophet", "naive"), "verdict"]
        == "prophet is significantly better than naive at the 5 % level"
    )
    assert (
        table.loc[(2, "drift", "naive"), "verdict"]
        == "naive is significantly better than drift at the 5 % level"
    )
    assert (
        table.loc[(2, "lstm", "prophet"), "verdict"]
        == "prophet is significantly better than lstm at the 5 % level"
    )
    # Another level changes the threshold and the words.
    loose = dm_table(_comparison_backtest(), loss="squared", level=0.5)
    loose = loose.set_index(["step", "model", "against"])
    assert loose.loc[(1, "drift", "naive"), "verdict"].endswith("at the 50 % level")


def test_dm_table_names_the_loss() -> None:
    backtest = _comparison_backtest(steps=1)
    # Absolute error by default: the same loss as the verdict's.
    table = dm_table(backtest)

    assert (table["loss"] == "absolute").all()
    row = table.set_index(["model", "against"]).loc[("prophet", "naive")]
    rows = backtest.forecasts
    expected = diebold_mariano(
        rows.loc[rows["model"] == "prophet", "y"].to_numpy(),
        rows.loc[rows["model"] == "prophet", "yhat"].to_numpy(),
        rows.loc[rows["model"] == "naive", "yhat"].to_numpy(),
        loss="absolute",
        method="ewc",
    )
    assert row["statistic"] == pytest.approx(expected.statistic, rel=1e-12)


@pytest.mark.parametrize(
    ("models", "pairs"),
    [
        # no naive: only lstm against prophet
        (["lstm", "prophet", "drift"], [("lstm", "prophet")]),
        # no prophet: only the models against naive
        (["naive", "lstm", "drift"], [("lstm", "naive"), ("drift", "naive")]),
    ],
)
def test_dm_table_skips_pairs_it_cannot_form(models, pairs) -> None:
    backtest = _comparison_backtest(steps=1)
    backtest.forecasts = backtest.forecasts[backtest.forecasts["model"].isin(models)]
    backtest.forecasts = pd.concat(
        [backtest.forecasts[backtest.forecasts["model"] == m] for m in models]
    )
    table = dm_table(backtest)
    assert list(zip(table["model"], table["against"], strict=True)) == pairs


def test_dm_table_leaves_out_identical_forecasts() -> None:
    backtest = _comparison_backtest(steps=1)
    forecasts = backtest.forecasts
    copy = forecasts[forecasts["model"] == "naive"].assign(model="twin")
    backtest.forecasts = pd.concat([forecasts, copy], ignore_index=True)

    table = dm_table(backtest)
    # The test is undefined for a model identical to naive: no row, rather than a NaN.
    assert "twin" not in set(table["model"])
    assert {"drift", "lstm", "prophet"} <= set(table["model"])


def test_dm_table_allows_for_the_overlap_the_stride_leaves() -> None:
    candles = random_walk_candles(200, seed=8)
    settings = BacktestSettings(horizon=4, folds=2, test_size=60, stride=2)
    backtest = walk_forward({"naive": Naive(), "drift": Drift()}, candles, settings)
    table = dm_table(backtest, loss="squared")

    # Step-h targets of origins 2 apart share candles up to lag ceil(h / 2) - 1.
    assert table["step"].tolist() == [1, 2, 3, 4]
    assert table["horizon"].tolist() == [1, 1, 2, 2]
    rows = backtest.forecasts
    for record in table.itertuples():
        at_step = rows[rows["step"] == record.step]
        drift, naive = at_step[at_step["model"] == "drift"], at_step[at_step["model"] == "naive"]
        expected = diebold_mariano(
            drift["y"].to_numpy(),
            drift["yhat"].to_numpy(),
            naive["yhat"].to_numpy(),
            horizon=math.ceil(record.step / 2),
            loss="squared",
            method="ewc",
        )
        assert record.statistic == pytest.approx(expected.statistic, rel=1e-12)
        assert record.pvalue == pytest.approx(expected.pvalue, rel=1e-12)


def test_dm_table_without_pairs_keeps_its_columns() -> None:
    backtest = _comparison_backtest(steps=1)
    backtest.forecasts = backtest.forecasts[backtest.forecasts["model"] == "naive"]
    table = dm_table(backtest)
    assert table.empty
    assert list(table.columns[:5]) == ["step", "model", "against", "statistic", "pvalue"]
    assert "verdict" in table.columns


# --- copy check ---------------------------------------------------------------------------


class Copier(Forecaster):
    """The last close plus tiny noise: accurate in price terms, predicting nothing."""

    alias = "copier"
    title = "Copier"

    def __init__(self, noise: float = 0.01) -> None:
        self.noise = noise

    def _fit(self, candles: pd.DataFrame, **_: object) -> None:
        pass

    def _predict(self, horizon: int, history: pd.DataFrame):
        rng = np.random.default_rng(len(history))
        last = float(history["close"].iloc[-1])
        return last + self.noise * rng.standard_normal(horizon), None, None


def _oracle(candles: pd.DataFrame) -> Forecaster:
    """A model that knows the real future closes (only possible inside a test)."""
    closes = candles["close"].to_numpy()

    class Oracle(Forecaster):
        alias = "oracle"
        title = "Oracle"

        def __init__(self) -> None:
            pass

        def _fit(self, candles: pd.DataFrame, **_: object) -> None:
            pass

        def _predict(self, horizon: int, history: pd.DataFrame):
            at = candles.index.get_loc(history.index[-1])
            return closes[at + 1 : at + 1 + horizon].copy(), None, None

    return Oracle()


@pytest.fixture(scope="module")
def copy_backtest() -> Backtest:
    candles = random_walk_candles(160, seed=4)
    models = {"naive": Naive(), "copier": Copier(), "oracle": _oracle(candles)}
    return walk_forward(models, candles, BacktestSettings(horizon=3, folds=3, test_size=45))


def test_copy_check_flags_the_copier_not_the_oracle(copy_backtest) -> None:
    table = copy_check(copy_backtest)

    assert list(table.index) == ["naive", "copier", "oracle"]
    assert list(table.columns) == [
        "change_correlation",
        "level_correlation",
        "relative_move",
        "copies_last",
        "by_definition",
    ]
    assert table.loc["copier", "copies_last"]
    assert table.loc["naive", "copies_last"]
    assert not table.loc["oracle", "copies_last"]
    assert table.loc["oracle", "relative_move"] == pytest.approx(1.0)
    assert table.loc["oracle", "change_correlation"] == pytest.approx(1.0)
    assert table.loc["copier", "relative_move"] < 0.05
    assert table.loc["naive", "relative_move"] == 0.0
    # A forecast that never moves has no change correlation.
    assert math.isnan(table.loc["naive", "change_correlation"])


def test_copy_check_correlations_as_documented(copy_backtest) -> None:
    table = copy_check(copy_backtest)
    rows = copy_backtest.forecasts
    for model in ("copier", "oracle"):
        group = rows[rows["model"] == model]
        predicted = (group["yhat"] - group["y_origin"]).to_numpy()
        actual = (group["y"] - group["y_origin"]).to_numpy()
        assert table.loc[model, "change_correlation"] == pytest.approx(
            np.corrcoef(predicted, actual)[0, 1], rel=1e-10
        )
        assert table.loc[model, "level_correlation"] == pytest.approx(
            np.corrcoef(group["yhat"], group["y_origin"])[0, 1], rel=1e-10
        )
        assert table.loc[model, "relative_move"] == pytest.approx(
            np.abs(predicted).mean() / np.abs(actual).mean(), rel=1e-10
        )


def test_copy_check_threshold() -> None:
    candles = random_walk_candles(100, seed=4)
    backtest = walk_forward(
        {"copier": Copier(noise=0.3)}, candles, BacktestSettings(horizon=2, folds=2, test_size=20)
    )
    move = copy_check(backtest).loc["copier", "relative_move"]
    assert 0 < move < 1
    assert copy_check(backtest, threshold=move * 1.01).loc["copier", "copies_last"]
    assert not copy_check(backtest, threshold=move * 0.99).loc["copier", "copies_last"]


def _hand_ewc(d: list[float], overlap: int) -> tuple[float, float, int]:
    """The equal-weighted cosine DM test written out (Lazarus et al. 2018, eq. 4)."""
    n = len(d)
    terms = max(1, min(round(0.4 * n ** (2 / 3)), n // (2 * overlap)))
    mean = sum(d) / n
    lams = []
    for j in range(1, terms + 1):
        total = sum(
            math.cos(math.pi * j * (t - 0.5) / n) * (d[t - 1] - mean) for t in range(1, n + 1)
        )
        lams.append(math.sqrt(2 / n) * total)
    statistic = math.sqrt(n) * mean / math.sqrt(sum(x * x for x in lams) / terms)
    from scipy import stats

    return statistic, 2 * stats.t(df=terms).sf(abs(statistic)), terms


@pytest.mark.parametrize(("n", "overlap"), [(114, 7), (40, 1), (20, 7), (300, 3)])
def test_the_ewc_variance_by_hand(n: int, overlap: int) -> None:
    rng = np.random.default_rng(n)
    actual = rng.normal(size=n).cumsum()
    a, b = actual + rng.normal(size=n), actual + 1.1 * rng.normal(size=n)
    result = diebold_mariano(actual, a, b, horizon=overlap, loss="absolute", method="ewc")
    d = (np.abs(actual - a) - np.abs(actual - b)).tolist()
    statistic, pvalue, terms = _hand_ewc(d, overlap)
    assert result.statistic == pytest.approx(statistic, rel=1e-10)
    assert result.pvalue == pytest.approx(pvalue, rel=1e-10)
    # Lazarus et al.'s rule, capped so that each cosine spans twice the overlap.
    assert terms == {(114, 7): 8, (40, 1): 5, (20, 7): 1, (300, 3): 18}[(n, overlap)]
    # The test names its variance and its degrees of freedom.
    assert (result.method, result.dof) == ("ewc", terms)
    hln = diebold_mariano(actual, a, b, horizon=overlap, loss="absolute", method="hln")
    assert (hln.method, hln.dof) == ("hln", n - 1)


def test_the_hln_variance_falls_back_to_bartlett_weights_when_not_positive() -> None:
    # Differences that alternate in sign have a large negative first autocovariance: the
    # truncated sum goes negative, Bartlett's weights do not.
    d = np.array([1.0, -0.9, 1.1, -1.0, 0.8, -1.2, 1.0, -0.7, 1.3, -1.1] * 3) + 0.05
    actual = np.zeros(len(d))
    a = np.sqrt(np.abs(d)) * (d > 0)
    b = np.sqrt(np.abs(d)) * (d < 0)
    result = diebold_mariano(actual, a, b, horizon=2, loss="squared", method="hln")
    n = len(d)
    c = d - d.mean()
    gamma = [np.dot(c[k:], c[: n - k]) / n for k in range(2)]
    assert gamma[0] + 2 * gamma[1] < 0  # the truncated sum is negative
    variance = (gamma[0] + 2 * 0.5 * gamma[1]) / n  # Bartlett: weight 1 - 1/2 on lag 1
    correction = math.sqrt((n + 1 - 4 + 2 / n) / n)
    assert result.statistic == pytest.approx(correction * d.mean() / math.sqrt(variance))


def test_a_rule_is_reported_as_what_it_is_and_a_learner_is_still_flagged(copy_backtest) -> None:
    """Drift is the last close plus an average change by definition: the check says so
    instead of treating it like a model that learnt to copy; a learner that copies is
    flagged whatever else is declared."""
    definitions = {name: model.capabilities.definition for name, model in MODELS_BY_NAME.items()}
    assert definitions["drift"] == (
        "the last close plus the average change per candle seen in training"
    )
    assert definitions["lstm"] == definitions["prophet"] == ""
    table = copy_check(copy_backtest, definitions={"naive": "the last close"})
    assert table.loc["naive", "by_definition"] == "the last close"
    assert table.loc["copier", "by_definition"] == ""
    assert table.loc["copier", "copies_last"]  # the measurement is unchanged
    assert table.loc["naive", "copies_last"]
