"""The command line on hostile values: a message and an exit code, never a traceback.

Property (issue 13): whatever the flags hold (huge, negative or non-numbers, JSON nested
too deeply, settings of the wrong type or outside their ranges), ``main`` prints no
traceback, fails in one line with exit code 2 (a usage error: a flag's value) or 1 (input
the library refused), and when it succeeds with ``--json`` stdout is valid JSON. Runs
in-process on small files with the baselines (a model that would train is only given
settings it must refuse), so it stays quick.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest
from factories import random_walk_candles
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.cli import EXIT_INTERNAL, main
from forecasting.data import write_ohlcv_csv
from forecasting.models import BASELINES, MODELS


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    """120 daily candles of a random walk (a module fixture: hypothesis reuses it)."""
    path = tmp_path_factory.mktemp("fuzz") / "candles.csv"
    write_ohlcv_csv(random_walk_candles(120, seed=5), path)
    return path


def run(argv: list[str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``main(argv)`` (argparse exits with SystemExit)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def strict_json(text: str) -> object:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def check_outcome(code: int, out: str, err: str, *, as_json: bool) -> None:
    assert "Traceback" not in err, err
    assert code != EXIT_INTERNAL, err  # an internal error is a bug the fuzz found
    assert code in (0, 1, 2), (code, err)
    if code == 0:
        if as_json:
            strict_json(out)
        return
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert out == ""


# --- hostile values ---------------------------------------------------------------------------

NUMBER_TEXT = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.integers(1, 400).map(str),  # also valid ones, so that some runs succeed
    st.just("1" * 22),  # the 22-digit horizon
    st.just("9" * 5000),  # more digits than Python reads
    st.sampled_from(["nan", "inf", "-inf", "1e3", "0x10", "", " ", "3.5", "-0", "١٢"]),
    st.text(max_size=12),
)

JSON_VALUE = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**40), 10**40),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=10),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def outside(alias: str) -> st.SearchStrategy[dict]:
    """Settings a model must refuse: one declared setting outside its range."""
    ranges = MODELS[alias].parameter_ranges
    name = st.sampled_from(sorted(ranges))
    value = st.one_of(
        st.just(math.nan),
        st.just(10**30),
        st.just(-(10**30)),
        st.text(max_size=6).filter(lambda t: t not in ("auto", "none", "hampel", "median")),
        st.lists(st.integers(), max_size=2),
    )
    return st.builds(lambda n, v: {n: v}, name, value)


SETTINGS_TEXT = st.one_of(
    JSON_VALUE.map(lambda v: json.dumps(v)),  # Python writes NaN and Infinity, as users do
    st.dictionaries(
        st.sampled_from(["level", "window", "season", "speed", "horizon", "seed"]),
        JSON_VALUE,
        max_size=3,
    ).map(json.dumps),  # fmt: skip
    st.sampled_from([deep(100_000), "{" * 50_000, '{"level": ' + "9" * 5000 + "}", "{oops"]),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    model=st.sampled_from(BASELINES),
    horizon=NUMBER_TEXT,
    seed=st.none() | NUMBER_TEXT,
    settings_text=st.none() | SETTINGS_TEXT,
    as_json=st.booleans(),
)
def test_forecast_never_prints_a_traceback(
    data_file, model, horizon, seed, settings_text, as_json
) -> None:
    argv = ["forecast", "--data", str(data_file), "--model", model, "--horizon", horizon]
    argv += [] if seed is None else ["--seed", seed]
    argv += [] if settings_text is None else ["--settings", settings_text]
    argv += ["--json"] if as_json else []
    code, out, err = run(argv)
    check_outcome(code, out, err, as_json=as_json)
    valid_horizon = horizon.strip().lstrip("+-").isdigit() and len(horizon.strip()) < 30
    if not valid_horizon or not 1 <= int(horizon) <= 365:
        assert code == 2, err  # a flag outside its range is a usage error


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(model=st.sampled_from(["lstm", "prophet"]), data=st.data())
def test_models_that_train_refuse_bad_settings_before_training(data_file, model, data) -> None:
    settings_value = data.draw(outside(model))
    code, out, err = run(
        ["forecast", "--data", str(data_file), "--model", model, "--horizon", "3",
         "--settings", json.dumps(settings_value), "--json"]
    )  # fmt: skip
    check_outcome(code, out, err, as_json=True)
    assert code == 1, err  # refused input
    name = next(iter(settings_value))
    assert f"{MODELS[model].title} {name} must be" in err


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    models=st.lists(st.sampled_from(BASELINES), min_size=1, max_size=2, unique=True),
    layout=st.fixed_dictionaries(
        {},
        optional={
            "--horizon": NUMBER_TEXT,
            "--folds": NUMBER_TEXT,
            "--test-size": NUMBER_TEXT,
            "--stride": NUMBER_TEXT,
            "--window": NUMBER_TEXT,
            "--seed": NUMBER_TEXT,
            "--seeds": NUMBER_TEXT,
            "--test-start": st.one_of(NUMBER_TEXT, st.just("2022-03-01")),
        },
    ),
    settings_text=st.none() | SETTINGS_TEXT | JSON_VALUE.map(lambda v: json.dumps({"drift": v})),
    as_json=st.booleans(),
)
def test_compare_never_prints_a_traceback(
    data_file, models, layout, settings_text, as_json
) -> None:
    argv = ["compare", "--data", str(data_file), "--models", ",".join(models)]
    # Small defaults that fit the 120 candles, then whatever the fuzz chose.
    flags = {"--horizon": "2", "--folds": "2", "--test-size": "20", **layout}
    for flag, value in flags.items():
        argv += [flag, value] if not value.startswith("-") else [f"{flag}={value}"]
    argv += [] if settings_text is None else ["--settings", settings_text]
    argv += ["--json"] if as_json else []
    code, out, err = run(argv)
    check_outcome(code, out, err, as_json=as_json)


@pytest.mark.parametrize(
    ("argv", "code", "phrase"),
    [
        # the 22-digit horizon: a usage error with the range
        (["--horizon", "1234567890123456789012"], 2, "must be a whole number from 1 to 365"),
        # a horizon that is not a number
        (["--horizon", "nan"], 2, "--horizon: must be a whole number from 1 to 365, got 'nan'"),
        # a negative seed
        (["--horizon", "3", "--seed", "-1"], 2, "--seed: must be a whole number from 0 to"),
        # JSON nested deeper than Python reads
        (["--horizon", "3", "--settings", deep(100_000)], 2, "--settings is nested too deeply"),
        # a number with more digits than Python reads
        (["--horizon", "3", "--settings", '{"level": ' + "9" * 5000 + "}"], 2, "--settings"),
        # a setting of the wrong type
        (["--horizon", "3", "--settings", '{"level": "high"}'], 1, "Naive level must be"),
        # NaN is what Python's JSON writes for a missing number: refused, not used
        (["--horizon", "3", "--settings", '{"level": NaN}'], 1, "got nan"),
    ],
)
def test_hostile_forecast_flags_fail_in_one_line(data_file, argv, code, phrase) -> None:
    found, out, err = run(["forecast", "--data", str(data_file), "--model", "naive", *argv])
    check_outcome(found, out, err, as_json=False)
    assert found == code, err
    assert phrase in err


def test_an_unexpected_exception_is_one_line_with_its_own_exit_code(data_file, monkeypatch) -> None:
    import forecasting.data

    def broken(*args, **kwargs):
        raise ValueError("a bug\nover two lines")

    monkeypatch.setattr(forecasting.data, "read_ohlcv_csv", broken)
    argv = ["forecast", "--data", str(data_file), "--model", "naive", "--horizon", "2"]
    code, out, err = run(argv)
    assert code == EXIT_INTERNAL == 3
    assert err.startswith("error: internal error: ValueError: a bug over two lines (a bug")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert out == ""
