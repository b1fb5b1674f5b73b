"""The live ledger: schema, append-only rows, scoring, the timing check, two writers."""

from __future__ import annotations

import math
import multiprocessing
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from forecasting.errors import ConfigurationError, ModelFailed
from forecasting.evaluation import score, verdicts
from forecasting.ledger import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    Ledger,
    ScoreRound,
    default_abandon_ms,
    default_ledger_path,
    default_tolerance_ms,
    forecast_rows,
    scored_backtest,
    settings_hash,
    timing_note,
)
from forecasting.models.base import Forecast

HOUR = 3_600_000
MINUTES_15 = 15 * 60_000
START = 1_704_067_200_000  # 2024-01-01 00:00 UTC
SERIES = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"}


class Clock:
    """A clock the test moves by hand (UTC epoch milliseconds)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def rows_for(
    model: str, origin_ms: int, means: list[float], *, origin_close: float = 100.0, **extra
) -> list[dict]:
    """Ledger rows of one forecast from ``origin_ms``, one per step."""
    return [
        {
            **SERIES,
            "model": model,
            "settings_hash": "s" * 64,
            "origin_ms": origin_ms,
            "origin_close": origin_close,
            "target_ms": origin_ms + step * HOUR,
            "step": step,
            "forecast": mean,
            **extra,
        }
        for step, mean in enumerate(means, 1)
    ]


def candles(first_ms: int, closes: list[float], *, skip: tuple[int, ...] = ()) -> pd.DataFrame:
    """Hourly candles from ``first_ms`` with these closes, leaving out positions in ``skip``."""
    index = pd.DatetimeIndex(
        pd.to_datetime([first_ms + i * HOUR for i in range(len(closes))], unit="ms", utc=True),
        name="timestamp",
    ).as_unit("ms")
    frame = pd.DataFrame(
        {"open": closes, "high": closes, "low": closes, "close": closes, "volume": 1.0},
        index=index,
        dtype="float64",
    )
    return frame.drop(index[list(skip)])


@pytest.fixture
def ledger(tmp_path: Path):
    clock = Clock(START)
    with Ledger(tmp_path / "ledger.sqlite3", clock=clock) as opened:
        yield opened


def test_a_new_ledger_is_wal_versioned_and_marked(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "ledger.sqlite3"
    with Ledger(path):
        pass
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
    assert tables == {"forecasts", "candles", "scores", "missing", "trackers"}
    conn.close()
    with Ledger(path) as again:  # reopening an existing ledger changes nothing
        assert again.integrity_check() == []


def test_default_path_is_in_the_cache_folder(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CFL_CACHE_DIR", str(tmp_path / "cache"))
    assert default_ledger_path() == tmp_path / "cache" / "ledger.sqlite3"
    assert default_ledger_path(tmp_path / "other") == tmp_path / "other" / "ledger.sqlite3"


def test_settings_hash_ignores_key_order() -> None:
    assert settings_hash({"a": 1, "b": [2, 3]}) == settings_hash({"b": [2, 3], "a": 1})
    assert settings_hash({"a": 1}) != settings_hash({"a": 2})
    assert len(settings_hash(None)) == 64


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"timestamp,open\n1,2\n", "not an SQLite file"),  # a CSV given as the ledger
        (None, "not a ledger"),  # another program's SQLite database
        ("newer", "newer than this version reads"),  # a ledger from a later release
    ],
)
def test_a_file_that_is_not_a_readable_ledger_is_one_clear_line(
    tmp_path: Path, content, words: str
) -> None:
    path = tmp_path / "file.sqlite3"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is None:
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE other (x)")
        conn.commit()
        conn.close()
    else:
        with Ledger(path):
            pass
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.close()
    with pytest.raises(ConfigurationError, match=words) as caught:
        Ledger(path)
    assert "\n" not in str(caught.value)


def test_forecast_rows_from_a_model_forecast_round_trip(ledger: Ledger) -> None:
    origin = pd.Timestamp(START, unit="ms", tz="UTC")
    forecast = Forecast(
        timestamps=pd.DatetimeIndex([origin + pd.Timedelta(hours=k) for k in (1, 2)]),
        mean=np.array([101.5, 102.25]),
        lower=np.array([99.0, -np.inf]),
        upper=np.array([104.0, 106.0]),
        level=0.9,
        model="lstm",
    )
    rows = forecast_rows(
        forecast, **SERIES, origin=origin, origin_close=100.0, settings_hash="h", seed=7
    )
    ledger.clock.now = START + HOUR + 1_000
    assert ledger.record_forecasts(rows) == 2
    stored = ledger.waiting()
    assert stored["forecast"].tolist() == [101.5, 102.25]
    assert stored["lower"].tolist() == [99.0, -math.inf]  # an unbounded side is kept as such
    assert stored["level"].tolist() == [0.9, 0.9]
    assert stored["seed"].tolist() == [7, 7]
    assert stored["target_ms"].tolist() == [START + HOUR, START + 2 * HOUR]
    assert stored["made_at_ms"].tolist() == [START + HOUR + 1_000] * 2


def test_writing_a_forecast_again_keeps_the_first(ledger: Ledger) -> None:
    ledger.clock.now = START + HOUR
    assert ledger.record_forecasts(rows_for("naive", START, [100.0, 100.0])) == 2
    ledger.clock.now += 10_000
    assert ledger.record_forecasts(rows_for("naive", START, [555.0, 555.0])) == 0
    kept = ledger.forecasts()
    assert kept["forecast"].tolist() == [100.0, 100.0]
    assert kept["made_at_ms"].tolist() == [START + HOUR] * 2


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"target_ms": START + 90 * 60_000}, ConfigurationError),  # off the hourly grid
        ({"step": 0, "target_ms": START}, ConfigurationError),  # step 0 is the origin itself
        ({"forecast": math.nan}, ModelFailed),  # a model that returned NaN
        ({"forecast": math.inf}, ModelFailed),  # ... or infinity
        ({"origin_close": None}, ConfigurationError),  # a required field left out
        ({"origin_close": math.nan}, ConfigurationError),  # no price at the origin
    ],
)
def test_bad_forecast_rows_are_refused_and_nothing_is_written(
    ledger: Ledger, change: dict, error: type
) -> None:
    rows = rows_for("naive", START, [100.0, 100.0])
    rows[1].update(change)
    with pytest.raises(error):
        ledger.record_forecasts(rows)
    assert ledger.forecasts().empty


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE forecasts SET forecast = 1",
        "DELETE FROM forecasts",
        "UPDATE forecasts SET made_at_ms = 0",
        "UPDATE candles SET close = 1",
        "DELETE FROM candles",
        "UPDATE scores SET actual = 1",
        "DELETE FROM scores",
    ],
)
def test_rows_are_never_changed_or_deleted(ledger: Ledger, statement: str) -> None:
    ledger.clock.now = START + HOUR
    ledger.record_forecasts(rows_for("naive", START, [100.0]))
    ledger.clock.now = START + 3 * HOUR
    ledger.record_candles(**SERIES, candles=candles(START, [100.0, 101.0]))
    assert ledger.score().scored == 1
    conn = sqlite3.connect(ledger.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(statement)
    conn.close()
    assert ledger.scored()["forecast"].tolist() == [100.0]
    assert ledger.scored()["actual"].tolist() == [101.0]


def test_only_closed_and_priced_candles_are_recorded(ledger: Ledger) -> None:
    frame = candles(START, [100.0, 101.0, 0.0, 103.0, 104.0])
    ledger.clock.now = START + 4 * HOUR  # the candle opening at START + 4h is still open
    assert ledger.record_candles(**SERIES, candles=frame) == 3  # and the zero close is left out
    assert ledger.candles(**SERIES)["close"].tolist() == [100.0, 101.0, 103.0]
    # Sent again with other closes: recorded candles keep their first value; the one
    # left out before (now priced) is recorded.
    assert ledger.record_candles(**SERIES, candles=frame.assign(close=7.0)) == 1
    assert ledger.candles(**SERIES)["close"].tolist() == [100.0, 101.0, 7.0, 103.0]


def test_scores_then_marks_a_gap_missing_and_never_scores_it(ledger: Ledger) -> None:
    ledger.clock.now = START + HOUR + 5_000
    ledger.record_forecasts(rows_for("naive", START, [100.0, 100.0, 100.0]))
    ledger.record_forecasts(rows_for("drift", START, [101.0, 102.0, 103.0]))
    # The candle at START + 2h never comes (a gap); START + 1h and + 3h do.
    ledger.clock.now = START + 4 * HOUR
    ledger.record_candles(**SERIES, candles=candles(START, [100.0, 104.0, 0, 98.0], skip=(2,)))
    first = ledger.score()
    assert (first.scored, first.missing) == (4, 0)  # the gap is within its grace still
    # Its target closed at START + 3h; the default grace is two candles.
    ledger.clock.now = START + 5 * HOUR
    assert ledger.score().missing == 0
    ledger.clock.now = START + 5 * HOUR + 1
    assert ledger.score().missing == 2
    missing = ledger.missing()
    assert missing["step"].tolist() == [2, 2]
    assert missing["missing_reason"].tolist() == ["gap", "gap"]
    scored = ledger.scored()
    assert scored["error"].tolist() == [-4.0, 2.0, -3.0, 5.0]
    assert scored["abs_error"].tolist() == [4.0, 2.0, 3.0, 5.0]
    # The candle arrives late after all: a forecast marked missing stays missing.
    ledger.record_candles(**SERIES, candles=candles(START + 2 * HOUR, [99.0]))
    assert ledger.score() == ScoreRound(scored=0, missing=0)
    assert ledger.counts().to_dict(orient="index") == {
        "drift": {"waiting": 0, "scored": 2, "missing": 1, "late": 0},
        "naive": {"waiting": 0, "scored": 2, "missing": 1, "late": 0},
    }


def test_a_shorter_grace_marks_a_gap_sooner(ledger: Ledger) -> None:
    ledger.clock.now = START + HOUR
    ledger.record_forecasts(rows_for("naive", START, [100.0, 100.0]))
    ledger.clock.now = START + 4 * HOUR
    ledger.record_candles(**SERIES, candles=candles(START, [100.0, 0, 101.0], skip=(1,)))
    assert ledger.score(grace_ms=HOUR - 1) == ScoreRound(scored=1, missing=1)
    assert ledger.missing()["target_ms"].tolist() == [START + HOUR]
    assert ledger.scored()["target_ms"].tolist() == [START + 2 * HOUR]


def test_a_pair_that_stops_trading_is_marked_only_when_asked(ledger: Ledger) -> None:
    ledger.clock.now = START + HOUR
    ledger.record_forecasts(rows_for("naive", START, [100.0, 100.0]))
    other = {**SERIES, "symbol": "ETH/USDT"}
    ledger.record_forecasts([{**row, **other} for row in rows_for("naive", START, [9.0])])
    ledger.clock.now = START + 100 * HOUR
    assert ledger.score().missing == 0  # no later candle: it may still come
    assert len(ledger.waiting()) == 3
    # Asked for one series, the ledger gives up on that series' targets only.
    btc = tuple(SERIES.values())
    assert ledger.score(abandon_after_ms=24 * HOUR, series=btc).missing == 2
    assert ledger.missing()["missing_reason"].tolist() == ["no candles", "no candles"]
    assert ledger.missing()["symbol"].tolist() == ["BTC/USDT", "BTC/USDT"]
    assert ledger.waiting()["symbol"].tolist() == ["ETH/USDT"]


@pytest.mark.parametrize(
    ("timeframe", "days"),
    [
        ("1m", 7),  # a week is more than ten candles
        ("12h", 7),
        ("1d", 10),  # ten candles are more than a week
        ("1w", 70),
    ],
)
def test_a_target_is_given_up_after_ten_candles_or_a_week(timeframe, days) -> None:
    assert default_abandon_ms(timeframe) == days * 86_400_000


def _insert_raw(path: Path, made_at_ms: int, origin_ms: int = START, step: int = 1) -> None:
    """A row written behind the ledger's back, as a tampered or a buggy writer would."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO forecasts (exchange, symbol, timeframe, model, settings_hash, "
            "origin_ms, origin_close, target_ms, step, forecast, made_at_ms) "
            "VALUES ('binance', 'BTC/USDT', '1h', 'late', 'h', ?, 100, ?, ?, 100, ?)",
            (origin_ms, origin_ms + step * HOUR, step, made_at_ms),
        )
    conn.close()


def test_check_passes_a_ledger_written_in_time(ledger: Ledger) -> None:
    for origin in (START, START + HOUR, START + 2 * HOUR):
        ledger.clock.now = origin + HOUR  # the instant the origin closes
        ledger.record_forecasts(rows_for("naive", origin, [1.0, 1.0, 1.0]))
        ledger.clock.now = origin + HOUR + MINUTES_15 - 1  # the last instant in time
        ledger.record_forecasts(rows_for("drift", origin, [1.0, 1.0, 1.0]))
    assert ledger.check().empty
    assert len(ledger.forecasts()) == 18
    assert ledger.counts()["late"].tolist() == [0, 0]


@pytest.mark.parametrize(
    ("made_at_ms", "tolerance_ms", "problem"),
    [
        # Written when its first target had closed: that target could be known.
        (START + 2 * HOUR, None, "after its origin closed plus the tolerance"),
        # Written 15 minutes after its origin closed: a quarter of its first target seen.
        (START + HOUR + MINUTES_15, None, "after its origin closed plus the tolerance"),
        # Written a day later.
        (START + 26 * HOUR, None, "after its origin closed plus the tolerance"),
        # Written before its origin candle closed: the origin was a partial candle.
        (START + HOUR - 1, None, "before its origin candle closed"),
        # In time for the default rule, but not within the minute asked for.
        (START + HOUR + 60_000, 60_000, "after its origin closed plus the tolerance"),
    ],
)
def test_check_reports_forecasts_written_out_of_time(
    ledger: Ledger, made_at_ms: int, tolerance_ms: int | None, problem: str
) -> None:
    ledger.clock.now = START + HOUR + 30_000
    ledger.record_forecasts(rows_for("naive", START, [1.0, 1.0]))
    _insert_raw(ledger.path, made_at_ms)
    found = ledger.check(tolerance_ms)
    assert found["model"].tolist() == ["late"]
    assert found["problem"].tolist() == [f"written {problem}"]
    assert found["late_ms"].tolist() == [made_at_ms - (START + HOUR)]
    assert found["origin_close_ms"].tolist() == [START + HOUR]


def test_check_reports_a_target_off_its_step(ledger: Ledger) -> None:
    conn = sqlite3.connect(ledger.path)
    with conn:
        conn.execute(
            "INSERT INTO forecasts (exchange, symbol, timeframe, model, settings_hash, "
            "origin_ms, origin_close, target_ms, step, forecast, made_at_ms) "
            "VALUES ('binance', 'BTC/USDT', '1h', 'odd', 'h', ?, 100, ?, 1, 100, ?)",
            (START, START + 3 * HOUR, START + HOUR),
        )
    conn.close()
    assert ledger.check()["problem"].tolist() == [
        "its target is not step timeframes after its origin"
    ]


@pytest.mark.parametrize("tolerance_ms", [HOUR + 1, -1])
def test_check_refuses_a_tolerance_that_proves_nothing(ledger: Ledger, tolerance_ms) -> None:
    ledger.clock.now = START + HOUR
    ledger.record_forecasts(rows_for("naive", START, [1.0]))
    with pytest.raises(ConfigurationError, match="tolerance"):
        ledger.check(tolerance_ms)


def _write_many(path: str, writer: int, count: int) -> None:
    """One process's writes: ``count`` transactions of two forecasts and one candle."""
    clock = Clock(START)
    with Ledger(path, clock=clock) as ledger:
        for i in range(count):
            origin = START + i * HOUR
            clock.now = origin + HOUR + 1_000  # a second after the origin closed
            ledger.record_forecasts(rows_for(f"writer{writer}", origin, [float(i), float(i)]))
            ledger.record_candles(
                exchange="binance",
                symbol=f"W{writer}/USDT",
                timeframe="1h",
                candles=candles(origin, [float(i + 1)]),
            )


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    with Ledger(path):
        pass
    count = 200
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_write_many, args=(str(path), writer, count)) for writer in (1, 2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    with Ledger(path) as ledger:
        assert ledger.integrity_check() == []
        assert ledger.counts()["waiting"].to_dict() == {"writer1": 2 * count, "writer2": 2 * count}
        for writer in (1, 2):
            closes = ledger.candles("binance", f"W{writer}/USDT", "1h")["close"]
            assert closes.tolist() == [float(i + 1) for i in range(count)]
            rows = ledger.forecasts(model=f"writer{writer}")
            assert sorted(set(rows["origin_ms"])) == [START + i * HOUR for i in range(count)]


def _hand_metrics(rows: list[dict], scales: dict[int, float], level: float) -> dict[str, float]:
    """MAE, RMSE, MAPE, sMAPE, MASE, coverage, width, interval score: plain loops."""
    n = len(rows)
    errors = [r["y"] - r["yhat"] for r in rows]
    out = {
        "mae": sum(abs(e) for e in errors) / n,
        "rmse": math.sqrt(sum(e * e for e in errors) / n),
        "mape": 100 * sum(abs(e) / abs(r["y"]) for e, r in zip(errors, rows, strict=True)) / n,
        "smape": 100
        * sum(
            2 * abs(e) / (abs(r["y"]) + abs(r["yhat"])) for e, r in zip(errors, rows, strict=True)
        )
        / n,
        "mase": sum(abs(e) / scales[r["origin"]] for e, r in zip(errors, rows, strict=True)) / n,
        "n": n,
    }
    if all(r["lower"] is not None for r in rows):
        alpha = 1 - level
        out["coverage"] = sum(r["lower"] <= r["y"] <= r["upper"] for r in rows) / n
        out["width"] = sum(r["upper"] - r["lower"] for r in rows) / n
        out["interval_score"] = (
            sum(
                (r["upper"] - r["lower"])
                + (2 / alpha) * max(r["lower"] - r["y"], 0)
                + (2 / alpha) * max(r["y"] - r["upper"], 0)
                for r in rows
            )
            / n
        )
    return out


def test_metrics_from_the_ledger_equal_a_hand_recomputation(ledger: Ledger) -> None:
    rng = np.random.default_rng(3)
    closes = list(100 + np.round(rng.standard_normal(60).cumsum(), 2))
    horizon, level = 3, 0.8
    origins = range(20, 50, 2)  # every other candle, as a tracker on a schedule might
    expected: dict[str, list[dict]] = {"naive": [], "drift": []}
    for position in origins:
        origin = START + position * HOUR
        last = closes[position]
        ledger.clock.now = origin + HOUR + 1_000
        naive = [last] * horizon
        drift = [last + 0.3 * k for k in range(1, horizon + 1)]
        bands = {"lower": None, "upper": None}
        ledger.record_forecasts(rows_for("naive", origin, naive, origin_close=last))
        for step, mean in enumerate(drift, 1):
            band = {"lower": mean - 1.5, "upper": mean + 1.0}
            ledger.record_forecasts(
                [
                    {
                        **rows_for("drift", origin, drift, origin_close=last)[step - 1],
                        **band,
                        "level": level,
                    }
                ]
            )
            if position + step < 55:
                expected["drift"].append(
                    {"origin": origin, "y": closes[position + step], "yhat": mean, **band}
                )
        expected["naive"] += [
            {"origin": origin, "y": closes[position + k], "yhat": last, **bands}
            for k in range(1, horizon + 1)
            if position + k < 55
        ]
    ledger.clock.now = START + 55 * HOUR  # candles up to START + 54h have closed
    ledger.record_candles(**SERIES, candles=candles(START, closes))
    ledger.score()
    # The MASE scale of an origin: mean |change| of recorded candles up to it.
    scales = {START + p * HOUR: float(np.mean(np.abs(np.diff(closes[: p + 1])))) for p in origins}
    backtest = ledger.backtest(**SERIES)
    metrics = score(backtest)
    for model, rows in expected.items():
        for name, value in _hand_metrics(rows, scales, level).items():
            assert metrics.loc[model, name] == pytest.approx(value, rel=1e-12), (model, name)
    assert math.isnan(metrics.loc["naive", "coverage"])
    hand_ratio = (
        _hand_metrics(expected["drift"], scales, level)["mae"]
        / _hand_metrics(expected["naive"], scales, level)["mae"]
    )
    assert metrics.loc["drift", "mae_vs_naive"] == pytest.approx(hand_ratio, rel=1e-12)
    assert backtest.settings.stride == 2
    assert backtest.settings.horizon == horizon
    found = verdicts(backtest)
    assert found["drift"].against == "naive"
    assert found["drift"].ratio == pytest.approx(hand_ratio, rel=1e-12)


def test_backtest_keeps_only_pairs_every_model_scored(ledger: Ledger) -> None:
    ledger.clock.now = START + HOUR
    ledger.record_forecasts(rows_for("naive", START, [100.0, 100.0]))
    ledger.record_forecasts(rows_for("drift", START, [101.0]))  # one step only
    ledger.clock.now = START + 4 * HOUR
    ledger.record_candles(**SERIES, candles=candles(START, [100.0, 102.0, 103.0]))
    ledger.score()
    backtest = ledger.backtest(**SERIES)
    assert backtest.forecasts.groupby("model")["step"].apply(list).to_dict() == {
        "drift": [1],
        "naive": [1],
    }
    assert backtest.notes == {
        "naive": [
            "1 scored forecasts were left out: not every model forecast those (origin, step) pairs."
        ]
    }
    everything = scored_backtest(
        ledger.scored(), ledger.candles(**SERIES), "1h", common_pairs=False
    )
    assert len(everything.forecasts) == 3


def test_further_seeds_go_to_seed_forecasts(ledger: Ledger) -> None:
    ledger.clock.now = START + HOUR
    ledger.record_forecasts(rows_for("naive", START, [100.0]))
    ledger.record_forecasts(rows_for("lstm", START, [101.0], seed=1))
    ledger.record_forecasts(rows_for("lstm", START, [99.0], seed=2))
    ledger.clock.now = START + 3 * HOUR
    ledger.record_candles(**SERIES, candles=candles(START, [100.0, 102.0]))
    ledger.score()
    backtest = ledger.backtest(**SERIES)
    assert backtest.model_seeds == {"naive": None, "lstm": 1}
    assert backtest.forecasts["yhat"].tolist() == [100.0, 101.0]
    assert backtest.seed_forecasts["lstm"][2]["yhat"].tolist() == [99.0]


def _states_follow_the_rules(ledger: Ledger, now: int) -> None:
    """Right after scoring at ``now``: each forecast's state, decided independently."""
    recorded = set(ledger.candles(**SERIES).index.asi8.tolist())
    newest = max(recorded, default=-1)
    for row in ledger.forecasts().itertuples():
        if pd.notna(row.marked_at_ms):  # marked missing (now or earlier)
            assert row.missing_reason == "gap"
            assert row.marked_at_ms > row.target_ms + 3 * HOUR  # close + two candles of grace
        elif row.target_ms in recorded:
            assert pd.notna(row.scored_at_ms)  # its candle is here: scored
        else:  # waiting: its candle may still come
            assert not (newest > row.target_ms and now > row.target_ms + 3 * HOUR)


# One operation of a random session: forecast from a candle, record candles, score.
_operation = st.one_of(
    st.tuples(
        st.just("forecast"),
        st.sampled_from(["naive", "drift"]),
        st.integers(0, 12),  # origin position
        st.lists(st.floats(1, 1e6, allow_nan=False), min_size=1, max_size=4),
    ),
    st.tuples(st.just("candles"), st.integers(0, 16), st.integers(1, 6)),
    st.tuples(st.just("score"), st.integers(0, 4 * HOUR)),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=st.lists(_operation, min_size=4, max_size=25), gaps=st.sets(st.integers(0, 22)))
def test_random_sessions_score_every_forecast_exactly_once(
    tmp_path_factory, operations: list, gaps: set[int]
) -> None:
    path = tmp_path_factory.mktemp("ledger") / "ledger.sqlite3"
    clock = Clock(START)
    closes = {p: 100.0 + (p * 7919 % 101) / 7 for p in range(40)}  # position -> close
    with Ledger(path, clock=clock) as ledger:
        for operation in operations:
            if operation[0] == "forecast":
                _, model, position, means = operation
                origin = START + position * HOUR
                clock.now = max(clock.now, origin + HOUR)  # written once the origin closed
                if clock.now >= origin + 2 * HOUR:  # its first target has closed
                    before = len(ledger.forecasts())
                    with pytest.raises(ConfigurationError, match="cannot be a forecast"):
                        ledger.record_forecasts(rows_for(model, origin, means))
                    assert len(ledger.forecasts()) == before  # nothing of it written
                else:
                    ledger.record_forecasts(rows_for(model, origin, means))
            elif operation[0] == "candles":
                _, first, count = operation
                clock.now = max(clock.now, START + (first + count) * HOUR)
                kept = [p for p in range(first, first + count) if p not in gaps]
                frame = candles(START, [closes[p] for p in range(40)])
                ledger.record_candles(**SERIES, candles=frame.iloc[kept])
            else:
                clock.now += operation[1]
                ledger.score()
                _states_follow_the_rules(ledger, clock.now)
        everything = ledger.forecasts()
        waiting, scored, missing = ledger.waiting(), ledger.scored(), ledger.missing()
        late = ledger.check()
        counts = ledger.counts()
        recorded = ledger.candles(**SERIES)
    event(f"missing: {'some' if len(missing) else 'none'}")
    event(f"scored: {'some' if len(scored) else 'none'}")
    event(f"late: {'some' if len(late) else 'none'}")
    # No forecast was written once its first target had closed (those were refused).
    assert (everything["made_at_ms"] < everything["origin_ms"] + 2 * HOUR).all()
    # Every forecast is in exactly one state, late ones in none of the other three.
    states = [set(frame["id"]) for frame in (waiting, scored, missing, late)]
    assert sum(len(ids) for ids in states) == len(everything)
    assert set().union(*states) == set(everything["id"])
    assert int(counts.to_numpy().sum()) == len(everything)
    assert int(counts["late"].sum()) == len(late)
    # A score is the recorded close of its target and the forecast minus it, exactly.
    actual = {
        int(ms): close for ms, close in zip(recorded.index.asi8, recorded["close"], strict=True)
    }
    for row in scored.itertuples():
        assert row.actual == actual[row.target_ms] == closes[(row.target_ms - START) // HOUR]
        assert row.error == row.forecast - row.actual
        assert row.abs_error == abs(row.forecast - row.actual)
    # A forecast is marked missing only past its target's close and grace.
    for row in missing.itertuples():
        assert row.marked_at_ms > row.target_ms + 3 * HOUR
        assert row.missing_reason == "gap"
    # The check flags exactly the forecasts written 15 minutes or more after their origin
    # closed (the default tolerance on 1h candles).
    tardy = everything["made_at_ms"] >= everything["origin_ms"] + HOUR + MINUTES_15
    assert late["id"].tolist() == everything.loc[tardy, "id"].tolist()
    with Ledger(path) as ledger:
        assert ledger.integrity_check() == []


def test_a_version_1_ledger_is_brought_to_the_current_version_keeping_its_rows(
    tmp_path: Path,
) -> None:
    from forecasting.ledger import _SCHEMA_V1, _statements

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in _statements(_SCHEMA_V1):
        conn.execute(statement)
    columns = ", ".join((*FORECAST_V1, "made_at_ms"))
    row = rows_for("naive", START, [101.0])[0]
    conn.execute(
        f"INSERT INTO forecasts ({columns}) VALUES ({', '.join('?' * (len(FORECAST_V1) + 1))})",
        [row.get(name) for name in FORECAST_V1] + [START + HOUR],
    )
    conn.close()
    with Ledger(path, clock=Clock(START + HOUR)) as ledger:
        kept = ledger.forecasts()
        assert kept["forecast"].tolist() == [101.0]
        assert kept["cutoff_ms"].isna().all()  # not recorded in version 1
        assert ledger.trackers().empty
        assert ledger.integrity_check() == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    conn.close()


FORECAST_V1 = ("exchange", "symbol", "timeframe", "model", "settings_hash", "seed", "round_id",
               "origin_ms", "origin_close", "target_ms", "step", "forecast", "lower", "upper",
               "level")  # fmt: skip


def test_a_forecast_fitted_on_candles_after_its_origin_is_refused(ledger: Ledger) -> None:
    ledger.clock.now = START + HOUR + 1
    with pytest.raises(ConfigurationError, match="used the future"):
        ledger.record_forecasts(rows_for("naive", START, [1.0], cutoff_ms=START + HOUR))
    assert ledger.record_forecasts(rows_for("naive", START, [1.0], cutoff_ms=START)) == 1
    assert ledger.latest_forecast(**SERIES, model="naive", settings_hash="s" * 64) == {
        "origin_ms": START,
        "cutoff_ms": START,
        "made_at_ms": START + HOUR + 1,
    }
    assert ledger.latest_forecast(**SERIES, model="naive", settings_hash="t" * 64) is None


def test_trackers_are_running_then_stale_after_two_candles_or_stopped(ledger: Ledger) -> None:
    forever = ledger.start_tracker(**SERIES, models=["naive", "lstm"], mode="forever")
    once = ledger.start_tracker(**SERIES, models=["naive"], mode="once")
    assert ledger.start_tracker(**SERIES, models=["naive"], mode="once") == once  # cron again
    ledger.clock.now += HOUR
    ledger.heartbeat(forever, round_done=True)
    table = ledger.trackers().set_index("id")
    assert table.loc[forever, "state"] == table.loc[once, "state"] == "running"
    assert table.loc[forever, "last_round_at_ms"] == START + HOUR
    assert table.loc[forever, "models"] == ["naive", "lstm"]
    ledger.clock.now = START + 2 * HOUR + 1  # the --once schedule's heartbeat: START
    table = ledger.trackers().set_index("id")
    assert table.loc[once, "state"] == "stale"
    assert table.loc[forever, "state"] == "running"
    ledger.stop_tracker(forever)
    assert ledger.trackers().set_index("id").loc[forever, "state"] == "stopped"
    assert ledger.trackers(timeframe="1d").empty
    with pytest.raises(ConfigurationError):
        ledger.start_tracker(**SERIES, models=["naive"], mode="sometimes")


@pytest.mark.parametrize(
    ("timeframe", "tolerance_ms"),
    [
        ("1m", 60_000),  # shorter than 15 minutes: one candle
        ("5m", 300_000),
        ("15m", MINUTES_15),  # from 15 minutes up: 15 minutes
        ("1h", MINUTES_15),
        ("1d", MINUTES_15),
    ],
)
def test_the_default_tolerance_is_one_candle_or_15_minutes(timeframe, tolerance_ms) -> None:
    assert default_tolerance_ms(timeframe) == tolerance_ms


@pytest.mark.parametrize(
    ("now", "batch"),
    [
        # The instant its first target closed, the whole forecast (one step known) is refused.
        (START + 2 * HOUR, [("naive", START, [100.0, 100.0])]),
        # Long after: forecasts equal to the actual closes, as a cheat would write them.
        (START + 500 * HOUR, [("cheat", START, [101.0, 102.0])]),
        # A batch holding one good forecast and one whose target closed: none of it is kept.
        (START + 3 * HOUR + 1, [("naive", START + 2 * HOUR, [1.0]), ("naive", START, [1.0])]),
    ],
)
def test_a_forecast_written_once_its_target_closed_is_refused(ledger: Ledger, now, batch) -> None:
    ledger.clock.now = now
    rows = [row for model, origin, means in batch for row in rows_for(model, origin, means)]
    with pytest.raises(ConfigurationError, match="cannot be a forecast") as caught:
        ledger.record_forecasts(rows)
    assert "\n" not in str(caught.value)
    assert ledger.forecasts().empty
    # The transaction was rolled back: the ledger takes the next write as usual.
    ledger.clock.now = START + HOUR + 1_000
    assert ledger.record_forecasts(rows_for("naive", START, [100.0, 100.0])) == 2


def test_late_forecasts_are_counted_late_and_never_scored(ledger: Ledger) -> None:
    closes = [100.0, 104.0, 98.0]
    # naive is written a second after its origin closed, drift 20 minutes after (before its
    # first target closed, so the ledger keeps it), a cheat long after (behind the ledger's
    # back, as a tampered file or an older version would hold it) with the actual closes.
    ledger.clock.now = START + HOUR + 1_000
    ledger.record_forecasts(rows_for("naive", START, [100.0, 100.0]))
    ledger.clock.now = START + HOUR + 20 * 60_000
    ledger.record_forecasts(rows_for("drift", START, [101.0, 102.0]))
    conn = sqlite3.connect(ledger.path)
    with conn:
        for step, actual in ((1, closes[1]), (2, closes[2])):
            conn.execute(
                "INSERT INTO forecasts (exchange, symbol, timeframe, model, settings_hash, "
                "origin_ms, origin_close, target_ms, step, forecast, made_at_ms) "
                "VALUES ('binance', 'BTC/USDT', '1h', 'cheat', 'h', ?, 100, ?, ?, ?, ?)",
                (START, START + step * HOUR, step, actual, START + 100 * HOUR),
            )
    conn.close()
    ledger.clock.now = START + 4 * HOUR
    ledger.record_candles(**SERIES, candles=candles(START, closes))
    assert ledger.score().scored == 6  # the table records every outcome ...
    # ... but only forecasts made in time count.
    assert ledger.counts().to_dict(orient="index") == {
        "cheat": {"waiting": 0, "scored": 0, "missing": 0, "late": 2},
        "drift": {"waiting": 0, "scored": 0, "missing": 0, "late": 2},
        "naive": {"waiting": 0, "scored": 2, "missing": 0, "late": 0},
    }
    assert ledger.scored()["model"].tolist() == ["naive", "naive"]
    assert ledger.check()["model"].tolist() == ["drift", "drift", "cheat", "cheat"]
    backtest = ledger.backtest(**SERIES)
    assert set(backtest.forecasts["model"]) == {"naive"}
    metrics = score(backtest)
    assert list(metrics.index) == ["naive"]
    assert metrics.loc["naive", "mae"] == pytest.approx((4.0 + 2.0) / 2)
    note = (
        "2 forecasts failed the timing check (2 written 15 minutes or more after their "
        "origin candle closed): counted as late, not scored."
    )
    assert backtest.notes == {"drift": [note], "cheat": [note]}
    # Asked to allow a whole candle, drift's forecasts were in time; the cheat's never are.
    assert ledger.counts(tolerance_ms=HOUR).loc["drift", "scored"] == 2
    wide = ledger.backtest(**SERIES, tolerance_ms=HOUR)
    assert set(wide.forecasts["model"]) == {"naive", "drift"}
    assert score(wide).loc["drift", "mae"] == pytest.approx((3.0 + 4.0) / 2)
    assert list(wide.notes) == ["cheat"]


# --- writing a row again keeps the first, whatever the statement says -------------------

# The append-only tables and the columns that key a row.
_KEYS = {
    "forecasts": ("exchange", "symbol", "timeframe", "model", "settings_hash", "seed",
                  "origin_ms", "step"),
    "candles": ("exchange", "symbol", "timeframe", "open_ms"),
    "scores": ("forecast_id",),
    "missing": ("forecast_id",),
}  # fmt: skip
# Every way SQL has to write over a row whose key is taken.
_OVERWRITES = ("INSERT OR REPLACE", "REPLACE", "upsert", "INSERT OR IGNORE", "INSERT")


def _full_ledger(path: Path) -> None:
    """A ledger holding rows in each append-only table: 4 scores and 2 gaps marked."""
    with Ledger(path, clock=Clock(START + HOUR + 5_000)) as ledger:
        ledger.record_forecasts(rows_for("naive", START, [100.0, 100.0, 100.0], seed=3))
        ledger.record_forecasts(rows_for("drift", START, [101.0, 102.0, 103.0]))
        ledger.clock.now = START + 5 * HOUR + 1
        ledger.record_candles(**SERIES, candles=candles(START, [100.0, 104.0, 0, 98.0], skip=(2,)))
        assert ledger.score() == ScoreRound(scored=4, missing=2)


def _snapshot(path: Path) -> dict[str, list[tuple]]:
    """Every row of the append-only tables, each value with its storage type, exactly."""
    conn = sqlite3.connect(path)
    found = {}
    for table in _KEYS:
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        values = ", ".join(f"typeof({c}) || ':' || quote({c})" for c in columns)
        found[table] = sorted(conn.execute(f"SELECT {values} FROM {table}").fetchall())
    conn.close()
    return found


def _overwrite(conn: sqlite3.Connection, table: str, row: dict, how: str) -> None:
    names = ", ".join(row)
    marks = ", ".join("?" * len(row))
    if how == "upsert":
        sets = ", ".join(f"{name} = excluded.{name}" for name in row if name not in _KEYS[table])
        sql = f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT DO UPDATE SET {sets}"
    else:
        sql = f"{how} INTO {table} ({names}) VALUES ({marks})"
    conn.execute(sql, list(row.values()))


def _rewritten(table: str, row: dict, number: float, variant: int) -> dict:
    """``row`` with every value but its key changed (``variant`` picks, for a forecast,
    whether it keeps its id, drops it, or keeps only its id under another key)."""
    new = {}
    for name, value in row.items():
        if name in _KEYS[table] or name in ("id", "target_ms"):  # a target follows its step
            new[name] = value
        elif name == "reason":
            new[name] = "gap" if value == "no candles" else "no candles"
        elif name in ("level",):
            new[name] = 0.5
        elif isinstance(value, int) or name.endswith("_ms"):
            new[name] = int(abs(number)) + 1 if name != "cutoff_ms" else None
        elif isinstance(value, float) or value is None:
            new[name] = number
        else:
            new[name] = f"{value}-other"
    if table == "forecasts" and variant == 1:
        del new["id"]
    elif table == "forecasts" and variant == 2:
        new["model"] = "other"  # only its id is taken
    return new


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    table=st.sampled_from(list(_KEYS)),
    how=st.sampled_from(_OVERWRITES),
    pick=st.integers(0, 5),
    number=st.floats(-1e9, 1e9, allow_nan=False),
    variant=st.integers(0, 2),
)
def test_no_statement_writes_over_an_append_only_row(
    tmp_path_factory, table: str, how: str, pick: int, number: float, variant: int
) -> None:
    path = tmp_path_factory.mktemp("ledger") / "ledger.sqlite3"
    _full_ledger(path)
    before = _snapshot(path)
    conn = sqlite3.connect(path, isolation_level=None)  # a raw connection, autocommit
    conn.row_factory = sqlite3.Row
    rows = [dict(row) for row in conn.execute(f"SELECT * FROM {table}")]
    row = rows[pick % len(rows)]
    _overwrite(conn, table, _rewritten(table, row, number, variant), how)
    conn.close()
    assert _snapshot(path) == before


def test_every_overwrite_of_every_row_leaves_the_ledger_byte_identical(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    _full_ledger(path)
    before = _snapshot(path)
    assert [len(before[table]) for table in _KEYS] == [6, 3, 4, 2]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    for table in _KEYS:
        for row in [dict(row) for row in conn.execute(f"SELECT * FROM {table}")]:
            for how in _OVERWRITES:
                for variant in range(3):
                    _overwrite(conn, table, _rewritten(table, row, 0.0, variant), how)
    conn.close()
    assert _snapshot(path) == before
    with Ledger(path, clock=Clock(START + 6 * HOUR)) as ledger:
        assert ledger.scored()["forecast"].tolist() == [100.0, 100.0, 101.0, 103.0]
        assert ledger.integrity_check() == []


@pytest.mark.parametrize("row_id", [0, -1])
def test_a_forecast_id_is_positive(tmp_path: Path, row_id: int) -> None:
    # An id of 0 or less would stand where SQLite's own numbering looks for a taken id.
    path = tmp_path / "ledger.sqlite3"
    _full_ledger(path)
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="forecast ids are positive"):
        conn.execute(
            "INSERT INTO forecasts (id, exchange, symbol, timeframe, model, settings_hash, "
            "origin_ms, origin_close, target_ms, step, forecast, made_at_ms) "
            "VALUES (?, 'binance', 'BTC/USDT', '1h', 'x', 'h', ?, 100, ?, 1, 100, ?)",
            (row_id, START, START + HOUR, START + HOUR),
        )
    conn.close()


def test_a_version_2_ledger_gets_the_keep_first_triggers_when_opened(tmp_path: Path) -> None:
    from forecasting.ledger import _MIGRATIONS, _SCHEMA_V1, _statements

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in [*_statements(_SCHEMA_V1), *_statements(_MIGRATIONS[2])]:
        conn.execute(statement)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    insert = (
        "INSERT INTO forecasts (exchange, symbol, timeframe, model, settings_hash, origin_ms, "
        "origin_close, target_ms, step, forecast, made_at_ms) "
        "VALUES ('binance', 'BTC/USDT', '1h', 'naive', ?, ?, 100, ?, 1, ?, ?)"
    )
    for hash_, forecast in (("a", 100.0), ("b", 100.0)):
        conn.execute(insert, (hash_, START, START + HOUR, forecast, START + HOUR))
    # Version 2's hole: REPLACE deleted the first row without firing its DELETE trigger.
    conn.execute(insert.replace("INSERT", "INSERT OR REPLACE"), ("a", START, START + HOUR, 0.0, 1))
    assert conn.execute("SELECT settings_hash, forecast FROM forecasts ORDER BY id").fetchall() == [
        ("b", 100.0),
        ("a", 0.0),
    ]
    conn.close()
    with Ledger(path, clock=Clock(START + HOUR + 1_000)) as ledger:
        assert ledger.forecasts()["forecast"].tolist() == [100.0, 0.0]  # kept as found
        # The ledger's own writes: again keeps the first; a new row goes in.
        assert ledger.record_forecasts(rows_for("naive", START, [5.0], settings_hash="b")) == 0
        assert ledger.record_forecasts(rows_for("naive", START, [5.0], settings_hash="c")) == 1
    before = _snapshot(path)
    conn = sqlite3.connect(path, isolation_level=None)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    conn.execute(insert.replace("INSERT", "INSERT OR REPLACE"), ("b", START, START + HOUR, 0.0, 1))
    conn.execute(insert.replace("INSERT", "REPLACE"), ("c", START, START + HOUR, 0.0, 1))
    conn.close()
    assert _snapshot(path) == before


def test_the_late_note_names_forecasts_written_before_their_origin_closed(
    ledger: Ledger,
) -> None:
    _insert_raw(ledger.path, made_at_ms=START + HOUR - 1_000)  # before its origin closed
    _insert_raw(ledger.path, made_at_ms=START + HOUR + MINUTES_15, step=2)  # too late
    assert ledger.backtest(**SERIES).notes == {
        "late": [
            "2 forecasts failed the timing check (1 written before their origin candle "
            "closed, 1 written 15 minutes or more after their origin candle closed): "
            "counted as late, not scored."
        ]
    }
    assert timing_note(2, "1h") == (
        "Timing check: 2 forecasts were not written within 15 minutes after their origin "
        "candle closed (they were written before that close, or later): counted as late, "
        "not scored."
    )
