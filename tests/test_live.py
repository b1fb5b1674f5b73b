"""The live round on the local exchange: forecasts written before their candles, scored after.

The whole loop runs against the fake Binance server (a real ccxt client over HTTP on
127.0.0.1) with a clock that moves one candle per round.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.data.cache import CandleCache
from forecasting.data.exchange import PUBLISH_GRACE, RetryPolicy
from forecasting.errors import ConfigurationError, DataUnavailable, NoCandles
from forecasting.evaluation import score
from forecasting.ledger import Ledger, ScoreRound
from forecasting.live import (
    FIRST_TRY,
    RETRY_EVERY,
    default_refit_every,
    next_wait,
    run_forever,
    run_once,
    run_round,
)
from forecasting.models.drift import Drift

SYMBOL = "BTC/USDT"
HOUR_MS = 3_600_000
HOUR = pd.Timedelta(hours=1)
FAST = ("naive", "drift", "seasonal_naive")
HORIZON = 3
HISTORY = 48
# The first round runs 5 s after the close of candle FIRST (its origin).
FIRST = 60
LAG = pd.Timedelta(seconds=5)


class Clock:
    """A clock the test moves by hand (UTC epoch milliseconds)."""

    def __init__(self, now: pd.Timestamp) -> None:
        self.now = int(now.value // 1_000_000)

    def __call__(self) -> int:
        return self.now

    @property
    def stamp(self) -> pd.Timestamp:
        return pd.Timestamp(self.now, unit="ms", tz="UTC")


def _retry() -> RetryPolicy:
    return RetryPolicy(attempts=2, base_delay=0.0, max_delay=0.0, sleep=lambda _: None)


def _serve(fake, series: pd.DataFrame, now: pd.Timestamp, rng=None) -> None:
    """Serve the whole series, the candles that have not closed at ``now`` (the open one
    and the future) scaled at random when ``rng`` is given."""
    open_ = series.index + HOUR > now
    served = series.copy()
    if rng is not None:
        factor = rng.uniform(0.5, 1.5, size=(int(open_.sum()), 1))
        served.loc[open_] = served.loc[open_].to_numpy() * factor
    fake.set_candles(SYMBOL, "1h", served)


def _round(fake, ledger, cache, models=FAST, **options):
    return run_once(
        "binance",
        SYMBOL,
        "1h",
        models,
        ledger=ledger,
        cache=cache,
        exchange=fake.client,
        horizon=HORIZON,
        history=HISTORY,
        retry=_retry(),
        **options,
    )


def _loop(fake, folder: Path, series: pd.DataFrame, rounds: int, *, perturb: int | None = None):
    """``rounds`` rounds, one per candle; returns the ledger (open) and the reports."""
    clock = Clock(series.index[FIRST] + HOUR + LAG)
    ledger = Ledger(folder / "ledger.sqlite3", clock=clock)
    cache = CandleCache(folder / "cache")
    rng = None if perturb is None else np.random.default_rng(perturb)
    reports = []
    for _ in range(rounds):
        _serve(fake, series, clock.stamp, rng)
        reports.append(_round(fake, ledger, cache))
        clock.now += HOUR_MS
    return ledger, reports


def test_the_whole_loop_scores_what_closed_and_never_uses_the_future(
    fake_binance, tmp_path, hourly_candles
) -> None:
    series = hourly_candles(200, "2024-03-01")
    rounds = 24
    ledger, reports = _loop(fake_binance, tmp_path / "a", series, rounds)
    forecasts = ledger.forecasts()
    # One forecast of HORIZON steps per model and round, each from the newest closed candle.
    assert len(forecasts) == rounds * len(FAST) * HORIZON
    origins = [series.index[FIRST + k] for k in range(rounds)]
    assert [r.origin for r in reports] == origins
    assert all(r.models[m].status == "written" for r in reports for m in FAST)
    close = series["close"]
    by_ms = pd.Series(close.to_numpy(), index=close.index.as_unit("ms").asi8)
    # The naive forecast is the origin's close: the forecast used the origin it names.
    naive = forecasts[forecasts["model"] == "naive"]
    np.testing.assert_array_equal(naive["forecast"], by_ms[naive["origin_ms"]].to_numpy())
    np.testing.assert_array_equal(forecasts["origin_close"], by_ms[forecasts["origin_ms"]])

    # (a) Every forecast whose target closed by the last round is scored, with the
    # series' close, and the pooled MAE equals a recomputation by hand.
    last = series.index[FIRST + rounds - 1]  # the newest candle closed at the last round
    scored = ledger.scored("binance", SYMBOL, "1h")
    due = forecasts[forecasts["target_ms"] <= last.value // 1_000_000]
    assert sorted(scored["id"]) == sorted(due["id"])
    actual = by_ms[scored["target_ms"]].to_numpy()
    np.testing.assert_array_equal(scored["actual"], actual)
    np.testing.assert_array_equal(scored["error"], scored["forecast"] - actual)
    np.testing.assert_array_equal(scored["abs_error"], np.abs(scored["forecast"] - actual))
    metrics = score(ledger.backtest("binance", SYMBOL, "1h"))
    for model in FAST:
        mine = scored[scored["model"] == model]
        hand = np.mean(np.abs(mine["forecast"].to_numpy() - by_ms[mine["target_ms"]].to_numpy()))
        assert metrics.loc[model, "mae"] == pytest.approx(hand, rel=1e-12)
    # The model folder holds nothing for models that are fitted every round.
    assert not (tmp_path / "a" / "live-models").exists()

    # (b) The same loop with every candle not yet closed at each round (the open one and
    # all later ones) scaled at random, differently each round: identical forecasts.
    other, _ = _loop(fake_binance, tmp_path / "b", series, rounds, perturb=3)
    columns = ["model", "origin_ms", "target_ms", "step", "forecast", "lower", "upper"]
    pd.testing.assert_frame_equal(
        other.forecasts()[columns].reset_index(drop=True),
        forecasts[columns].reset_index(drop=True),
    )

    # (c) Nothing written late: not even within a minute of each origin closing.
    assert ledger.check().empty
    assert ledger.check(60_000).empty
    assert ledger.integrity_check() == []
    ledger.close()
    other.close()


def test_a_second_round_within_the_same_candle_writes_nothing(
    fake_binance, tmp_path, hourly_candles
) -> None:
    series = hourly_candles(120)
    clock = Clock(series.index[FIRST] + HOUR + LAG)
    cache = CandleCache(tmp_path / "cache")
    _serve(fake_binance, series, clock.stamp)
    with Ledger(tmp_path / "ledger.sqlite3", clock=clock) as ledger:
        first = _round(fake_binance, ledger, cache)
        clock.now += 20 * 60_000  # twenty minutes later, the same candle still open
        again = _round(fake_binance, ledger, cache)
        assert first.written == len(FAST) * HORIZON
        assert again.written == 0
        assert {r.status for r in again.models.values()} == {"up to date"}
        assert again.recorded == 0
        assert len(ledger.forecasts()) == len(FAST) * HORIZON
        tracker = ledger.trackers()
        assert len(tracker) == 1  # one --once schedule, one row
        assert tracker.loc[0, "mode"] == "once"
        assert tracker.loc[0, "state"] == "running"
        assert tracker.loc[0, "last_round_at_ms"] == clock.now


def test_an_exchange_failure_changes_nothing_in_the_ledger(
    fake_binance, tmp_path, hourly_candles
) -> None:
    series = hourly_candles(120)
    clock = Clock(series.index[FIRST] + HOUR + LAG)
    cache = CandleCache(tmp_path / "cache")
    _serve(fake_binance, series, clock.stamp)
    with Ledger(tmp_path / "ledger.sqlite3", clock=clock) as ledger:
        _round(fake_binance, ledger, cache)
        before = (ledger.forecasts(), ledger.candles("binance", SYMBOL, "1h"))
        clock.now += HOUR_MS
        _serve(fake_binance, series, clock.stamp)
        fake_binance.inject("503", times=10)
        with pytest.raises(DataUnavailable) as caught:
            _round(fake_binance, ledger, cache)
        assert "\n" not in str(caught.value)
        pd.testing.assert_frame_equal(ledger.forecasts(), before[0])
        pd.testing.assert_frame_equal(ledger.candles("binance", SYMBOL, "1h"), before[1])
        assert ledger.trackers().loc[0, "last_error"] == " ".join(str(caught.value).split())
        fake_binance.clear_faults()
        retried = _round(fake_binance, ledger, cache)  # the round tried again later
        assert retried.written == len(FAST) * HORIZON
        assert ledger.trackers().loc[0, "last_error"] is None


def test_a_failing_model_is_reported_and_the_others_still_run(
    fake_binance, tmp_path, hourly_candles, monkeypatch
) -> None:
    series = hourly_candles(120)
    clock = Clock(series.index[FIRST] + HOUR + LAG)
    _serve(fake_binance, series, clock.stamp)

    def not_a_number(self, horizon, history):
        return np.full(horizon, np.nan), None, None

    monkeypatch.setattr(Drift, "_predict", not_a_number)
    with Ledger(tmp_path / "ledger.sqlite3", clock=clock) as ledger:
        done = _round(
            fake_binance,
            ledger,
            CandleCache(tmp_path / "cache"),
            settings={"seasonal_naive": {"season": HISTORY + 5}},  # more than it sees
        )
        assert done.models["naive"].status == "written"
        assert done.models["drift"].status == "failed"
        assert "not a number" in done.models["drift"].error
        assert done.models["seasonal_naive"].status == "failed"
        assert "needs at least" in done.models["seasonal_naive"].error
        assert set(done.failed) == {"drift", "seasonal_naive"}
        assert set(ledger.forecasts()["model"]) == {"naive"}
        assert "drift" in ledger.trackers().loc[0, "last_error"]


def test_no_forecast_while_the_newest_closed_candle_is_not_published(
    fake_binance, tmp_path, hourly_candles
) -> None:
    series = hourly_candles(120)
    newest = series.index[FIRST]
    clock = Clock(newest + HOUR + LAG)
    _serve(fake_binance, series, clock.stamp)
    fake_binance.withhold_from(newest)
    cache = CandleCache(tmp_path / "cache")
    with Ledger(tmp_path / "ledger.sqlite3", clock=clock) as ledger:
        early = _round(fake_binance, ledger, cache)
        assert early.behind
        assert early.origin == series.index[FIRST - 1]
        assert {r.status for r in early.models.values()} == {"behind"}
        assert ledger.forecasts().empty
        fake_binance.withhold_from(None)
        clock.now += 30_000
        later = _round(fake_binance, ledger, cache)
        assert not later.behind
        assert later.origin == newest
        assert later.written == len(FAST) * HORIZON
        assert ledger.check().empty


def test_bad_settings_are_refused_before_the_exchange_is_asked(tmp_path, fake_binance) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        for options in ({"refit_every": 0}, {"history": 1}, {"settings": {"lstm": 5}}):
            with pytest.raises(ConfigurationError):
                run_round("binance", SYMBOL, "1h", "naive,lstm", ledger=ledger,
                          exchange=fake_binance.client, **options)  # fmt: skip
        with pytest.raises(ConfigurationError, match="Unknown model"):
            run_round("binance", SYMBOL, "1h", "naive,arima", ledger=ledger)
    assert fake_binance.requests == []


@pytest.mark.parametrize(
    ("timeframe", "every"),
    [("1m", 1440), ("15m", 96), ("1h", 24), ("4h", 6), ("1d", 7), ("3d", 2), ("1w", 1), ("1M", 1)],
)
def test_default_refit_every_is_a_day_of_intraday_and_a_week_of_daily(timeframe, every) -> None:
    assert default_refit_every(timeframe) == every


ORIGIN = pd.Timestamp("2024-03-01 10:00", tz="UTC")  # closed at 11:00; the next at 12:00
NEXT = ORIGIN + 2 * HOUR


@pytest.mark.parametrize(
    ("now", "behind", "failures", "wait"),
    [
        (ORIGIN + HOUR + LAG, False, 0, NEXT + FIRST_TRY - (ORIGIN + HOUR + LAG)),  # done: next
        (NEXT + LAG, True, 0, RETRY_EVERY),  # next candle not published yet: try again soon
        (NEXT + PUBLISH_GRACE + LAG, True, 0, HOUR + FIRST_TRY - LAG - PUBLISH_GRACE),  # gave up
        (NEXT + 5 * HOUR, False, 0, FIRST_TRY),  # a round that took hours: the next close
        (ORIGIN, False, 1, RETRY_EVERY),  # failed once
        (ORIGIN, False, 3, 4 * RETRY_EVERY),  # failed thrice: backing off
        (ORIGIN, False, 20, HOUR),  # at most a candle
    ],
)
def test_next_wait(now, behind, failures, wait) -> None:
    got = next_wait(int(now.value // 1_000_000), "1h", ORIGIN, behind=behind, failures=failures)
    assert got == pytest.approx(wait.total_seconds())


def test_next_wait_tries_within_a_tenth_of_a_short_candle() -> None:
    origin = pd.Timestamp("2024-03-01 10:00", tz="UTC")
    now = origin + pd.Timedelta(minutes=1, seconds=2)  # 2 s after it closed
    assert next_wait(int(now.value // 1_000_000), "1m", origin) == pytest.approx(64.0)


class Sleeper:
    """Moves the clock by what the loop asks, serves what closed, and stops it."""

    def __init__(self, fake, series, clock, *, stop_after, stop=None, interrupt=False, fail_at=()):
        self.fake, self.series, self.clock = fake, series, clock
        self.stop_after, self.stop, self.interrupt = stop_after, stop, interrupt
        self.fail_at, self.waits = set(fail_at), []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if len(self.waits) >= self.stop_after:
            if self.interrupt:
                raise KeyboardInterrupt
            self.stop.set()
            return
        self.clock.now += int(round(seconds * 1000))
        _serve(self.fake, self.series, self.clock.stamp)
        if len(self.waits) in self.fail_at:
            self.fake.inject("503", times=10)
        else:
            self.fake.clear_faults()


@pytest.mark.parametrize("interrupt", [False, True])
def test_run_forever_waits_for_each_candle_and_stops_cleanly(
    fake_binance, tmp_path, hourly_candles, interrupt
) -> None:
    series = hourly_candles(120)
    clock = Clock(series.index[FIRST] + HOUR + LAG)
    _serve(fake_binance, series, clock.stamp)
    stop = threading.Event()
    sleeper = Sleeper(fake_binance, series, clock, stop_after=5, stop=stop, interrupt=interrupt,
                      fail_at={2})  # fmt: skip
    reports, errors = [], []
    with Ledger(tmp_path / "ledger.sqlite3", clock=clock) as ledger:
        options = {
            "ledger": ledger,
            "stop": stop,
            "sleep": sleeper,
            "on_round": reports.append,
            "on_error": errors.append,
            "exchange": fake_binance.client,
            "cache": CandleCache(tmp_path / "cache"),
            "horizon": HORIZON,
            "history": HISTORY,
            "retry": _retry(),
        }
        if interrupt:
            with pytest.raises(KeyboardInterrupt):
                run_forever("binance", SYMBOL, "1h", FAST, **options)
        else:
            assert run_forever("binance", SYMBOL, "1h", FAST, **options) == 4
        # Two rounds a candle apart (each 10 s after its candle closed), a failed round
        # (503), a retry 30 s later, and a last round at the next close.
        assert len(errors) == 1
        assert isinstance(errors[0], DataUnavailable)
        assert [r.origin for r in reports] == list(series.index[FIRST : FIRST + 4])
        assert sleeper.waits[:4] == [3605.0, 3600.0, RETRY_EVERY.total_seconds(), 3570.0]
        assert all(r.written == len(FAST) * HORIZON for r in reports)
        assert len(ledger.forecasts()) == 4 * len(FAST) * HORIZON
        assert ledger.check().empty
        assert ledger.integrity_check() == []
        tracker = ledger.trackers()
        assert list(tracker["state"]) == ["stopped"]
        assert tracker.loc[0, "mode"] == "forever"
        assert tracker.loc[0, "models"] == ["naive", "drift", "seasonal_naive"]


@pytest.mark.slow
def test_the_lstm_keeps_its_fit_between_rounds_until_a_refit_is_due(
    fake_binance, tmp_path, hourly_candles
) -> None:
    from forecasting.models import LSTM

    series = hourly_candles(160)
    settings = {"lstm": {"lookback": 5, "units": 4, "epochs": 2, "features": "", "patience": 1}}
    clock = Clock(series.index[FIRST] + HOUR + LAG)
    cache = CandleCache(tmp_path / "cache")
    done = []
    with Ledger(tmp_path / "ledger.sqlite3", clock=clock) as ledger:
        for _ in range(3):
            _serve(fake_binance, series, clock.stamp)
            done.append(
                _round(fake_binance, ledger, cache, ["lstm"], settings=settings, refit_every=2)
            )
            clock.now += HOUR_MS
        assert [d.models["lstm"].refitted for d in done] == [True, False, True]
        assert [d.models["lstm"].cutoff for d in done] == [done[0].origin] * 2 + [done[2].origin]
        lstm = ledger.forecasts(model="lstm")
        assert list(lstm["cutoff_ms"].unique()) == [
            int(d.models["lstm"].cutoff.value // 1_000_000) for d in (done[0], done[2])
        ]
        # The second round's forecast is the first fit conditioned on the candles up to
        # the second origin, exactly as if the fit had stayed in memory.
        window = lambda k: series.iloc[FIRST + k - HISTORY + 1 : FIRST + k + 1]  # noqa: E731
        model = LSTM(**settings["lstm"], horizon=HORIZON, seed=42).fit(window(0))
        expected = model.predict(HORIZON, history=window(1)).mean
        second = lstm[lstm["origin_ms"] == int(done[1].origin.value // 1_000_000)]
        np.testing.assert_array_equal(second["forecast"].to_numpy(), expected)
        assert ledger.check().empty
    kept = list((tmp_path / "live-models").rglob("*.keras"))
    assert len(kept) == 2  # the newest two fits


def test_a_model_reading_the_index_gets_it_joined_and_offline_fails_cleanly(
    fake_binance, fake_feargreed, tmp_path, hourly_candles, monkeypatch
) -> None:
    series = hourly_candles(120, "2024-03-01")
    days = pd.date_range("2024-02-20", "2024-03-10", freq="D", tz="UTC")
    for k, day in enumerate(days):
        fake_feargreed.set_value(day, 10 + 3 * k)
    monkeypatch.setenv("CFL_FEAR_GREED_URL", fake_feargreed.url)
    clock = Clock(series.index[FIRST] + HOUR + LAG)
    _serve(fake_binance, series, clock.stamp)
    settings = {"prophet": {"regressors": "fear_greed"}}
    with Ledger(tmp_path / "ledger.sqlite3", clock=clock) as ledger:
        cache = CandleCache(tmp_path / "cache")
        report = _round(fake_binance, ledger, cache, ("naive", "prophet"), settings=settings)
        assert report.models["prophet"].status == "written", report.models["prophet"]
        assert len(ledger.forecasts()) == 2 * HORIZON
        # Offline: the round fails in one sentence naming the feature; nothing is written.
        monkeypatch.setenv("CFL_FEAR_GREED_URL", "http://127.0.0.1:9/fng/")
        clock.now += HOUR_MS
        _serve(fake_binance, series, clock.stamp)
        with pytest.raises(DataUnavailable, match="^The fear_greed feature is unavailable"):
            _round(fake_binance, ledger, cache, ("naive", "prophet"), settings=settings)
        assert len(ledger.forecasts()) == 2 * HORIZON


def test_a_model_is_behind_not_up_to_date_while_the_newest_candle_is_withheld(
    fake_binance, tmp_path, hourly_candles
) -> None:
    series = hourly_candles(120)
    clock = Clock(series.index[FIRST] + HOUR + LAG)
    _serve(fake_binance, series, clock.stamp)
    cache = CandleCache(tmp_path / "cache")
    with Ledger(tmp_path / "ledger.sqlite3", clock=clock) as ledger:
        assert _round(fake_binance, ledger, cache).written == len(FAST) * HORIZON
        # The next candle closes, but the exchange has not published it yet: the origin
        # is the one every model forecast from already, yet a forecast is owed.
        clock.now += HOUR_MS
        fake_binance.withhold_from(series.index[FIRST + 1])
        waiting = _round(fake_binance, ledger, cache)
        assert waiting.behind
        assert {r.status for r in waiting.models.values()} == {"behind"}


def test_a_delisted_pair_is_marked_missing_and_a_late_candle_is_not(
    fake_binance, tmp_path, hourly_candles
) -> None:
    series = hourly_candles(120)
    last = series.index[FIRST]  # the pair's last candle
    clock = Clock(last + HOUR + LAG)
    fake_binance.set_candles(SYMBOL, "1h", series.loc[:last])
    cache = CandleCache(tmp_path / "cache")
    day = 86_400_000
    with Ledger(tmp_path / "ledger.sqlite3", clock=clock) as ledger:
        assert _round(fake_binance, ledger, cache).written == len(FAST) * HORIZON
        last_target_close = _ms(last + (HORIZON + 1) * HOUR)
        # Minutes past the last target's close: its candle is merely late (the exchange
        # serves older candles), so nothing is marked.
        clock.now = last_target_close + 5 * 60_000
        late = _round(fake_binance, ledger, cache)
        assert late.behind
        assert late.scored == ScoreRound(scored=0, missing=0)
        assert len(ledger.waiting()) == len(FAST) * HORIZON
        # Six days on, the range asked holds no candle at all; still within the wait.
        clock.now = last_target_close + 6 * day
        with pytest.raises(NoCandles):
            _round(fake_binance, ledger, cache)
        assert len(ledger.waiting()) == len(FAST) * HORIZON
        assert ledger.missing().empty
        # 90 days on, the forecasts are given up: marked missing, not waiting.
        clock.now = last_target_close + 90 * day
        with pytest.raises(NoCandles):
            _round(fake_binance, ledger, cache)
        assert ledger.waiting().empty
        missing = ledger.missing()
        assert len(missing) == len(FAST) * HORIZON
        assert set(missing["missing_reason"]) == {"no candles"}
        assert (missing["marked_at_ms"] == clock.now).all()
        assert ledger.counts()["missing"].to_dict() == dict.fromkeys(FAST, HORIZON)


def _ms(stamp: pd.Timestamp) -> int:
    return int(stamp.value // 1_000_000)


def test_a_tracker_back_after_longer_than_its_history_scores_what_it_missed(
    fake_binance, tmp_path, hourly_candles
) -> None:
    # Forecasts from candle FIRST, then the tracker is stopped for 3 x HISTORY candles:
    # their targets lie before the next round's history window, but the exchange still
    # has them, so they are scored with their closes, never marked as a gap.
    series = hourly_candles(FIRST + 4 * HISTORY)
    clock = Clock(series.index[FIRST] + HOUR + LAG)
    cache = CandleCache(tmp_path / "cache")
    _serve(fake_binance, series, clock.stamp)
    with Ledger(tmp_path / "ledger.sqlite3", clock=clock) as ledger:
        _round(fake_binance, ledger, cache)
        clock.now += 3 * HISTORY * HOUR_MS
        _serve(fake_binance, series, clock.stamp)
        _round(fake_binance, ledger, cache)
        first = ledger.forecasts()
        first = first[first["origin_ms"] == _ms(series.index[FIRST])]
        scored = ledger.scored()
        assert ledger.missing().empty
        assert set(first["id"]) <= set(scored["id"])
        got = scored.set_index("target_ms")["actual"]
        for target_ms in first["target_ms"]:
            at = series.index.get_loc(pd.Timestamp(int(target_ms), unit="ms", tz="UTC"))
            assert float(got.loc[target_ms].iloc[0]) == series["close"].iloc[at]
