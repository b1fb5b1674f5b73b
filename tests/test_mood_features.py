"""Market mood as features: joined as of each close, audited, fed to models, ablated.

Against local servers imitating alternative.me's ``/fng/`` (:mod:`fake_feargreed`) and
Binance's USD-M futures (:mod:`fake_exchange`): nothing reaches the internet.
"""

from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest

from forecasting.ablation import feature_ablation
from forecasting.bundle import experiment_bundle, read_bundle_data
from forecasting.data.mood import (
    FEAR_GREED_ATTRIBUTION,
    as_of,
    attach_mood,
    fear_greed_published,
    funding_published,
    join_audit,
)
from forecasting.errors import ConfigurationError
from forecasting.evaluation import BacktestSettings
from forecasting.experiment import ExperimentSettings, data_hash, run_experiment
from forecasting.features import (
    MOOD_KINDS,
    compute_features,
    lookahead_audit,
    mood_kinds,
    parse_features,
)
from tests.factories import random_walk_candles

START = pd.Timestamp("2024-01-01", tz="UTC")
DAY = pd.Timedelta(days=1)


def candles_from(start: pd.Timestamp, count: int, freq: str, seed: int = 5) -> pd.DataFrame:
    frame = random_walk_candles(count, seed=seed)
    frame.index = pd.date_range(start, periods=count, freq=freq, name="timestamp").as_unit("ms")
    return frame


def serve_index(fake, first: str, days: int, *, skip: tuple[str, ...] = ()) -> pd.Series:
    """Invented daily values served by ``fake``; returns them by day."""
    rng = np.random.default_rng(11)
    index = pd.date_range(first, periods=days, freq="D", tz="UTC")
    values = pd.Series(rng.integers(5, 95, days), index=index)
    for day, value in values.items():
        if f"{day:%Y-%m-%d}" not in skip:
            fake.set_value(day, int(value))
    return values.drop([pd.Timestamp(d, tz="UTC") for d in skip])


def serve_funding(fake, first: str, count: int) -> pd.Series:
    times = pd.date_range(first, periods=count, freq="8h", tz="UTC")
    rates = pd.Series(np.round(np.random.default_rng(3).normal(1e-4, 2e-4, count), 8), times)
    fake.add_symbol("BTC/USDT")
    fake.set_funding("BTC/USDT:USDT", rates)
    return rates


def futures_client(fake):
    import ccxt

    return ccxt.binance(fake.futures_config())


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------- the join


@pytest.mark.parametrize(("timeframe", "freq"), [("1d", "1D"), ("4h", "4h")])
def test_both_columns_are_joined_as_of_each_close(
    fake_feargreed, fake_binance, tmp_cache, no_sleep_retry, timeframe, freq
):
    index_values = serve_index(fake_feargreed, "2023-12-20", 60)
    rates = serve_funding(fake_binance, "2023-12-25", 150)
    candles = candles_from(START, 40 if timeframe == "1d" else 120, freq)
    joined = attach_mood(
        candles,
        timeframe,
        MOOD_KINDS,
        exchange=futures_client(fake_binance),
        symbol="BTC/USDT",
        cache=tmp_cache,
        url=fake_feargreed.url,
        retry=no_sleep_retry,
    )
    assert joined.unavailable == {}
    assert joined.labels["fear_greed"] == FEAR_GREED_ATTRIBUTION
    assert joined.labels["funding_rate"] == "binance BTC/USDT:USDT"
    out = joined.candles
    pd.testing.assert_frame_equal(out[list(candles.columns)], candles)
    step = pd.Timedelta(freq)
    for open_time, row in out.iterrows():
        close = open_time + step
        # A day's index value is known when the day ends: a candle sees the latest day
        # that ended before it closed.
        known_days = index_values[index_values.index + DAY < close]
        assert row["fear_greed"] == known_days.iloc[-1]
        # A funding rate is known at its funding time.
        known_rates = rates[rates.index < close]
        assert row["funding_rate"] == known_rates.iloc[-1]
    # The candle opening on a day never sees that day's own index value.
    daily = out["fear_greed"].groupby(out.index.normalize()).first()
    same_day = index_values.reindex(daily.index)
    assert not (daily.to_numpy() == same_day.to_numpy()).all()


def test_feature_columns_carry_the_mood_names(fake_feargreed, tmp_cache, no_sleep_retry):
    serve_index(fake_feargreed, "2023-12-01", 90)
    candles = candles_from(START, 60, "1D")
    joined = attach_mood(
        candles, "1d", ["fear_greed"], cache=tmp_cache, url=fake_feargreed.url,
        retry=no_sleep_retry,
    )  # fmt: skip
    features = compute_features(joined.candles, parse_features("rsi:14,fear_greed"))
    assert [c for c in features.columns if "fear_greed" in c] == ["fear_greed"]
    np.testing.assert_array_equal(
        features["fear_greed"].to_numpy(), joined.candles.loc[features.index, "fear_greed"]
    )
    # Known at the close like every other feature: the prefix audit passes.
    audit = lookahead_audit(joined.candles, parse_features("rsi:14,fear_greed"))
    assert audit["passed"].all()
    assert mood_kinds("rsi:14,funding_rate", ["fear_greed"], None) == MOOD_KINDS
    assert mood_kinds("rsi:14", "not a spec::") == ()


def test_a_mood_feature_without_its_column_says_how_to_attach_it():
    with pytest.raises(ConfigurationError, match="attach_mood") as caught:
        compute_features(random_walk_candles(50), parse_features("funding_rate"))
    assert "\n" not in str(caught.value)


def test_a_missing_day_is_carried_forward_and_said(fake_feargreed, tmp_cache, no_sleep_retry):
    serve_index(fake_feargreed, "2023-12-25", 30, skip=("2024-01-05",))
    candles = candles_from(START, 14, "1D")
    joined = attach_mood(
        candles, "1d", ["fear_greed"], cache=tmp_cache, url=fake_feargreed.url,
        retry=no_sleep_retry,
    )  # fmt: skip
    column = joined.candles["fear_greed"]
    # The candle of 2024-01-06 would use 01-05's value: there is none, so 01-04's is
    # carried, never an invented one, and the note says how many candles.
    day4 = column.loc[pd.Timestamp("2024-01-05", tz="UTC")]
    assert column.loc[pd.Timestamp("2024-01-06", tz="UTC")] == day4
    assert any("1 candles carry a Fear & Greed value published more than a day" in n
               for n in joined.notes), joined.notes  # fmt: skip
    assert any("2024-01-05" in n for n in joined.notes), joined.notes


def test_a_value_published_late_is_used_only_after_it_is_out(
    fake_feargreed, tmp_cache, no_sleep_retry
):
    serve_index(fake_feargreed, "2023-12-25", 12)
    fake_feargreed.now = pd.Timestamp("2024-01-06 12:00", tz="UTC")
    candles = candles_from(START, 5, "1D")
    joined = attach_mood(
        candles, "1d", ["fear_greed"], cache=tmp_cache, url=fake_feargreed.url,
        retry=no_sleep_retry, now=fake_feargreed.now,
    )  # fmt: skip
    assert not joined.candles["fear_greed"].isna().any()


def test_offline_index_is_unavailable_with_a_note_and_nothing_else_breaks(
    fake_binance, tmp_cache, no_sleep_retry
):
    rates = serve_funding(fake_binance, "2023-12-25", 150)
    candles = candles_from(START, 40, "1D")
    joined = attach_mood(
        candles,
        "1d",
        MOOD_KINDS,
        exchange=futures_client(fake_binance),
        symbol="BTC/USDT",
        cache=tmp_cache,
        url=f"http://127.0.0.1:{closed_port()}/fng/",
        retry=no_sleep_retry,
    )
    assert set(joined.unavailable) == {"fear_greed"}
    assert "fear_greed" not in joined.candles.columns
    assert any(n.startswith("The Fear & Greed feature is unavailable: ") for n in joined.notes)
    assert (
        joined.candles["funding_rate"].iloc[-1]
        == rates[rates.index < candles.index[-1] + DAY].iloc[-1]
    )
    features = compute_features(joined.candles, parse_features("rsi:14,funding_rate"))
    assert list(features.columns) == ["rsi_14", "funding_rate"]


def test_funding_without_an_exchange_is_unavailable_naming_a_venue(tmp_cache):
    joined = attach_mood(random_walk_candles(30), "1d", ["funding_rate"], cache=tmp_cache)
    assert "krakenfutures" in joined.unavailable["funding_rate"]


def test_funding_rates_are_cached_and_only_the_new_span_is_fetched(
    fake_binance, tmp_cache, no_sleep_retry
):
    serve_funding(fake_binance, "2023-12-25", 200)
    client = futures_client(fake_binance)
    first = candles_from(START, 30, "1D")
    once = attach_mood(first, "1d", ["funding_rate"], exchange=client, symbol="BTC/USDT",
                       cache=tmp_cache, retry=no_sleep_retry)  # fmt: skip
    asked = len(fake_binance.funding_requests())
    again = attach_mood(first, "1d", ["funding_rate"], exchange=futures_client(fake_binance),
                        symbol="BTC/USDT", cache=tmp_cache, retry=no_sleep_retry)  # fmt: skip
    assert len(fake_binance.funding_requests()) == asked  # all from the cache
    pd.testing.assert_frame_equal(again.candles, once.candles)
    longer = candles_from(START, 50, "1D")
    extended = attach_mood(longer, "1d", ["funding_rate"], exchange=futures_client(fake_binance),
                           symbol="BTC/USDT", cache=tmp_cache, retry=no_sleep_retry)  # fmt: skip
    new = fake_binance.funding_requests()[asked:]
    assert new
    assert all(
        int(r.params["startTime"]) >= int((START + 30 * DAY).value // 1_000_000) for r in new
    )
    pd.testing.assert_series_equal(
        extended.candles["funding_rate"].iloc[:30], once.candles["funding_rate"]
    )


# ------------------------------------------------------------------------ the audit


def test_join_audit_passes_the_as_of_join_and_catches_a_same_day_join():
    days = pd.date_range("2023-12-01", periods=80, freq="D", tz="UTC")
    values = pd.Series(np.arange(80, dtype="float64"), index=days)
    candles = pd.date_range(START, periods=40, freq="1D")
    published = fear_greed_published(days)
    good = join_audit(values, candles, "1d", published)
    assert good["passed"].item()
    assert good["max_difference"].item() == 0.0

    def by_stamp(values, index, timeframe, *, published_at):
        # The classic leak: a day's value used on that day's own candle.
        return as_of(values, index, timeframe, published_at=pd.DatetimeIndex(values.index))

    leaky = join_audit(values, candles, "1d", published, join=by_stamp)
    assert not leaky["passed"].item()
    assert leaky["first_difference"].item() == candles[0]


@pytest.mark.parametrize("timeframe", ["1h", "8h", "1d"])
def test_funding_join_audit_passes_for_every_timeframe(timeframe):
    times = pd.date_range("2023-12-31", periods=120, freq="8h", tz="UTC")
    values = pd.Series(np.random.default_rng(1).normal(size=120), index=times)
    candles = pd.date_range(START, periods=60, freq=timeframe.replace("d", "D"))
    audit = join_audit(values, candles, timeframe, funding_published(times))
    assert audit["passed"].item()


# --------------------------------------------------- what a model may see (perturbation)


def joined_candles(values: pd.Series, candles: pd.DataFrame) -> pd.DataFrame:
    column = as_of(values, candles.index, "1d", published_at=fear_greed_published)
    return candles.assign(fear_greed=column.to_numpy())


@pytest.mark.parametrize(
    ("alias", "settings"),
    [
        ("prophet", {"regressors": "fear_greed", "horizon": 3, "seed": 1}),
        (
            "lstm",
            {"features": "log_return,fear_greed", "horizon": 3, "lookback": 8, "units": 4,
             "epochs": 2, "seed": 1},
        ),
    ],
)  # fmt: skip
def test_index_values_published_after_the_origin_change_no_forecast(alias, settings):
    from forecasting.models import make_model

    candles = candles_from(START, 160, "1D", seed=9)
    days = pd.date_range("2023-12-01", periods=220, freq="D", tz="UTC")
    values = pd.Series(np.random.default_rng(4).integers(5, 95, 220), index=days, dtype="float64")
    origin = 139
    close = candles.index[origin] + DAY
    changed = values.where(fear_greed_published(days) < close, values * 0 + 99.0)
    assert (changed != values).any()
    forecasts = []
    for source in (values, changed):
        data = joined_candles(source, candles)
        model = make_model(alias, **settings).fit(data.iloc[: origin + 1])
        forecasts.append(model.predict(3, history=data.iloc[: origin + 1]).to_frame())
    pd.testing.assert_frame_equal(forecasts[0], forecasts[1])


# ------------------------------------------------------------- do the features help?


def test_ablation_runs_both_variants_on_the_same_folds():
    candles = candles_from(START, 260, "1D", seed=2)
    days = pd.date_range("2023-11-01", periods=400, freq="D", tz="UTC")
    # An index that knows tomorrow's return would help; this one is noise.
    values = pd.Series(np.random.default_rng(8).integers(5, 95, 400), index=days, dtype="float64")
    data = joined_candles(values, candles)
    settings = ExperimentSettings(
        models=("prophet",),
        model_settings={"prophet": {"regressors": "log_return"}},
        backtest=BacktestSettings(horizon=3, folds=2, test_size=24, stride=6),
    )
    result = feature_ablation(data, settings, "fear_greed", model="prophet")
    forecasts = result.backtest.forecasts
    assert set(forecasts["model"]) == {"naive", "prophet with", "prophet without"}
    pairs = {
        name: set(zip(rows["origin"], rows["timestamp"], strict=True))
        for name, rows in forecasts.groupby("model")
    }
    assert pairs["prophet with"] == pairs["prophet without"] == pairs["naive"]
    params = result.settings["variants"]
    assert params["prophet with"]["regressors"] == "log_return,fear_greed"
    assert params["prophet without"]["regressors"] == "log_return"
    assert result.helps.model == "prophet with"
    assert result.helps.against == "prophet without"
    assert result.helps.reading in {"better", "worse", "not different"}
    assert set(result.metrics.index) == {"naive", "prophet with", "prophet without"}
    document = result.to_json()
    assert set(document["verdict"]) == {
        "with_vs_without", "prophet with_vs_naive", "prophet without_vs_naive"
    }  # fmt: skip
    assert document["answer"] == result.sentence
    # The variant without is exactly Prophet with its own settings: the same numbers as
    # a comparison that never heard of the index.
    plain = run_experiment(
        data,
        ExperimentSettings(
            models=("prophet",),
            model_settings={"prophet": {"regressors": "log_return"}},
            backtest=settings.backtest,
        ),
        future=False,
    )
    mine = forecasts[forecasts["model"] == "prophet without"]["yhat"].to_numpy()
    theirs = plain.backtest.forecasts
    np.testing.assert_array_equal(mine, theirs[theirs["model"] == "prophet"]["yhat"].to_numpy())


def test_ablation_refuses_a_model_without_features():
    settings = ExperimentSettings(backtest=BacktestSettings(horizon=3, folds=2, test_size=24))
    with pytest.raises(ConfigurationError, match="reads no features"):
        feature_ablation(random_walk_candles(200), settings, "fear_greed", model="drift")


# ------------------------------------------------------------------------ the bundle


def test_a_bundle_carries_the_mood_columns_and_restores_them_bit_for_bit():
    candles = candles_from(START, 200, "1D")
    days = pd.date_range("2023-12-01", periods=260, freq="D", tz="UTC")
    values = pd.Series(np.random.default_rng(4).integers(5, 95, 260), index=days, dtype="float64")
    data = joined_candles(values, candles)
    data.loc[data.index[:3], "fear_greed"] = np.nan  # warm-up without a value
    result = run_experiment(
        data,
        ExperimentSettings(
            models=("naive", "drift"), backtest=BacktestSettings(horizon=3, folds=2, test_size=24)
        ),
        future=False,
    )
    restored = read_bundle_data(experiment_bundle(result))
    assert restored is not None
    pd.testing.assert_frame_equal(restored.candles, data, check_freq=False)
    assert data_hash(restored.candles) == result.data["sha256"]


def test_notes_speak_only_of_days_the_candles_use(fake_feargreed, tmp_cache, no_sleep_retry):
    # A day missing long after the candles end is no concern of theirs.
    serve_index(fake_feargreed, "2023-12-25", 60, skip=("2024-02-10",))
    candles = candles_from(START, 20, "1D")
    joined = attach_mood(
        candles, "1d", ["fear_greed"], cache=tmp_cache, url=fake_feargreed.url,
        retry=no_sleep_retry,
    )  # fmt: skip
    assert not any("2024-02-10" in note for note in joined.notes), joined.notes
    assert not any("not published yet" in note for note in joined.notes), joined.notes


def test_ablation_trains_both_variants_on_the_same_candles():
    candles = candles_from(START, 260, "1D", seed=2)
    # The index starts 40 days into the data.
    days = pd.date_range(START + 40 * DAY, periods=400, freq="D", tz="UTC")
    values = pd.Series(np.random.default_rng(8).integers(5, 95, 400), index=days, dtype="float64")
    data = joined_candles(values, candles)
    first = int(data["fear_greed"].notna().to_numpy().argmax())
    assert first > 40
    settings = ExperimentSettings(
        model_settings={"prophet": {"regressors": "log_return"}},
        backtest=BacktestSettings(horizon=3, folds=2, test_size=24, stride=12),
    )
    result = feature_ablation(data, settings, "fear_greed", model="prophet")
    assert result.data["candles"] == len(data) - first
    assert result.data["first"] == data.index[first].isoformat()
    assert any(f"The first {first:,} candles" in note for note in result.notes), result.notes
    assert result.to_json()["notes"] == result.notes
