"""Every model setting has a declared range, checked in one place, and the app's table
(``ui/sharing.py``) offers only values inside it.

Issue 13: ``dropout`` 1.5, ``units`` 200000 and a negative Prophet prior scale gave
tracebacks; every value outside a declared range is now one :class:`ConfigurationError`
line naming the setting.
"""

from __future__ import annotations

import inspect
import math
import zlib

import numpy as np
import pytest
from factories import random_walk_candles
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.errors import ConfigurationError
from forecasting.experiment import ExperimentSettings
from forecasting.models import LSTM, MODELS, ProphetModel, make_model
from forecasting.ranges import HORIZON, LEVEL, SEED, Range

# Settings checked against their annotation only: free text parsed by its own parser
# (feature lists) and plain switches.
UNRANGED = {
    *((alias, "features") for alias in ("lstm", "gru", "conv_lstm", "lstm_attention")),
    ("prophet", "regressors"),
    ("prophet", "log_transform"),
}

# (alias, name, range) for every declared setting of every model.
DECLARED = [
    pytest.param(alias, name, declared, id=f"{alias}.{name}")
    for alias, cls in MODELS.items()
    for name, declared in cls.parameter_ranges.items()
]


# --- the issue's reproductions -------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "settings", "message"),
    [
        # far too many units: hours of training, or no memory
        (
            "lstm",
            {"units": 200_000},
            "LSTM units must be a whole number from 4 to 256, got 200000.",
        ),
        # a dropout rate above 1: Keras raised deep in the fit
        ("lstm", {"dropout": 1.5}, "LSTM dropout must be a number from 0 to 0.9, got 1.5."),
        # a negative prior scale: Prophet raised deep in Stan
        (
            "prophet",
            {"changepoint_prior_scale": -0.05},
            "Prophet changepoint_prior_scale must be a number above 0 and at most 10, got -0.05.",
        ),
    ],
)
def test_the_issue_settings_are_refused_in_one_line(alias, settings, message) -> None:
    model = make_model(alias, **settings)
    with pytest.raises(ConfigurationError) as caught:
        model.check_settings()
    assert str(caught.value) == message
    # The same message from fit (before any data is looked at) and from an experiment.
    with pytest.raises(ConfigurationError, match="^" + message.replace(".", r"\.") + "$"):
        model.fit(random_walk_candles(60))
    with pytest.raises(ConfigurationError, match="must be"):
        ExperimentSettings(models=(alias,), model_settings={alias: settings}).build_models()


def test_a_horizon_of_22_digits_is_refused_by_predict() -> None:
    model = make_model("naive").fit(random_walk_candles(30))
    with pytest.raises(ConfigurationError, match="horizon must be a whole number from 1 to 365"):
        model.predict(1234567890123456789012)


def test_a_horizon_given_as_text_in_the_settings_is_refused_by_an_experiment() -> None:
    settings = ExperimentSettings(models=("lstm",), model_settings={"lstm": {"horizon": "x"}})
    with pytest.raises(ConfigurationError, match="LSTM horizon must be a whole number"):
        settings.build_models()


# --- the declarations ----------------------------------------------------------------------


def test_every_setting_has_a_range_or_is_free_text_or_a_switch() -> None:
    for alias, cls in MODELS.items():
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        declared = set(cls.parameter_ranges)
        assert declared <= set(params), (alias, declared - set(params))
        missing = {(alias, p) for p in params if p not in declared}
        assert missing <= UNRANGED, missing


@pytest.mark.parametrize("alias", list(MODELS))
def test_the_defaults_are_inside_their_ranges(alias: str) -> None:
    model = make_model(alias)
    model.check_settings()
    for name, declared in type(model).parameter_ranges.items():
        assert declared.contains(getattr(model, name)), (alias, name)


@pytest.mark.parametrize(
    ("declared", "inside", "outside"),
    [
        (Range(4, 256, integer=True), [4, 256, np.int64(32)], [3, 257, 32.0, True, "32", None]),
        (Range(0.0, 1.0, lo_open=True, hi_open=True), [0.5, 1e-9], [0, 1, math.nan, "0.5"]),
        (Range(choices=("auto", True, False)), ["auto", True, np.bool_(False)], [1, 0, "yes"]),
        (Range(1, 5, integer=True, optional=True), [None, 1, 5], [0, 6, 2.5]),
    ],
)
def test_a_range_contains_what_it_says(declared: Range, inside: list, outside: list) -> None:
    assert all(declared.contains(value) for value in inside)
    assert not any(declared.contains(value) for value in outside)


# --- property: inside is accepted, outside is refused naming the setting ----------------------


def _inside(declared: Range) -> st.SearchStrategy:
    if declared.choices is not None:
        return st.sampled_from(declared.choices)
    if declared.integer:
        values = st.integers(int(declared.lo), int(declared.hi))
    else:
        values = st.floats(declared.lo, declared.hi, exclude_min=declared.lo_open,
                           exclude_max=declared.hi_open)  # fmt: skip
    return st.one_of(values, st.none()) if declared.optional else values


def _outside(declared: Range) -> st.SearchStrategy:
    """Values a range must refuse: beyond each bound, of the wrong kind, not finite, huge."""
    hostile = st.one_of(
        st.just(math.nan),
        st.just(math.inf),
        st.just(-math.inf),
        st.just(10**30),
        st.just(-(10**5000)),  # more digits than Python prints
        st.text(max_size=8).filter(lambda t: t not in (declared.choices or ())),
        st.lists(st.integers(), min_size=1, max_size=3),
        st.just({"a": 1}),
    )
    if declared.choices is not None:
        # 1 and 0 are not true and false, and no number is a text choice.
        return st.one_of(hostile, st.integers(-5, 5), st.floats(allow_nan=False))
    kinds = [hostile, st.booleans()]
    if not declared.optional:
        kinds.append(st.none())
    if declared.integer:
        kinds += [
            st.integers(max_value=int(declared.lo) - 1),
            st.integers(min_value=int(declared.hi) + 1),
            # a whole number written as a float is still a float
            st.floats(declared.lo, declared.hi).map(lambda x: float(round(x))),
        ]
    else:
        below = st.floats(max_value=declared.lo, exclude_max=not declared.lo_open)
        above = st.floats(min_value=declared.hi, exclude_min=not declared.hi_open)
        kinds += [below.filter(math.isfinite), above.filter(math.isfinite)]
    return st.one_of(*kinds)


@pytest.mark.parametrize(("alias", "name", "declared"), DECLARED)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_values_inside_construct_and_outside_are_refused_naming_the_setting(
    alias: str, name: str, declared: Range, data: st.DataObject
) -> None:
    good = data.draw(_inside(declared), label="inside")
    make_model(alias, **{name: good}).check_settings()

    bad = data.draw(_outside(declared), label="outside")
    with pytest.raises(ConfigurationError) as caught:
        make_model(alias, **{name: bad}).check_settings()
    message = str(caught.value)
    assert message.startswith(f"{MODELS[alias].title} {name} must be "), message
    assert "\n" not in message, message
    assert len(message) < 200, message


# --- a tiny fit for a sample of values inside each range --------------------------------------

# Quick settings the sampled one is added to, and the largest value drawn for settings
# whose cost grows with them (any value inside the range is valid; these keep it quick).
QUICK = {
    "lstm": {
        "lookback": 10,
        "horizon": 3,
        "units": 4,
        "epochs": 1,
        "batch_size": 64,
        "features": "",
    },  # fmt: skip
    "prophet": {"horizon": 3, "calibration_origins": 2, "uncertainty_samples": 50},
}
CAPS = {
    "epochs": 2,
    "mc_samples": 20,
    "uncertainty_samples": 100,
    "calibration_origins": 4,
    "horizon": 20,
    "units": 64,
    "season": 60,
    "window": 100,
}


def _sample(alias: str, name: str, declared: Range, rng: np.random.Generator):
    if declared.choices is not None:
        return declared.choices[int(rng.integers(len(declared.choices)))]
    hi = min(declared.hi, CAPS.get(name, declared.hi))
    if declared.integer:
        return int(rng.integers(int(declared.lo), int(hi) + 1))
    value = float(rng.uniform(declared.lo, hi))
    return value if value > declared.lo or not declared.lo_open else hi / 2


@pytest.mark.slow
@pytest.mark.parametrize(("alias", "name", "declared"), DECLARED)
def test_a_sample_inside_the_range_fits(alias: str, name: str, declared: Range) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{alias}.{name}".encode()))
    value = _sample(alias, name, declared, rng)
    settings = {**QUICK.get(alias, {}), name: value}
    if alias == "lstm" and name == "mc_samples":
        settings["interval"] = "mc_dropout"  # the setting matters only there
    if alias == "lstm" and settings.get("interval") == "mc_dropout":
        settings["mc_samples"] = max(2, settings.get("mc_samples", 2))
    candles = random_walk_candles(500, seed=3)
    model = make_model(alias, **settings).fit(candles)
    horizon = int(settings.get("horizon", 3))
    forecast = model.predict(horizon)
    assert forecast.horizon == horizon
    assert np.isfinite(forecast.mean).all(), (alias, name, value)


# --- the app's table -----------------------------------------------------------------------

# Each setting of ui/sharing.py's SPECS that is a model's (or the shared horizon, level,
# seed), and the declaration it must lie within.
SPEC_RANGES = {
    "horizon": HORIZON,
    "level": LEVEL,
    "seed": SEED,
    **{
        f"lstm.{name}": LSTM.parameter_ranges[name]
        for name in (
            "lookback",
            "layers",
            "units",
            "dropout",
            "epochs",
            "batch_size",
            "learning_rate",
            "patience",
            "target",
            "interval",
            "denoise",
            "denoise_window",
        )
    },  # fmt: skip
    "prophet.changepoint_prior_scale": ProphetModel.parameter_ranges["changepoint_prior_scale"],
    "prophet.weekly": ProphetModel.parameter_ranges["weekly_seasonality"],
    "prophet.yearly": ProphetModel.parameter_ranges["yearly_seasonality"],
    "prophet.seasonality_mode": ProphetModel.parameter_ranges["seasonality_mode"],
    "prophet.max_train_candles": ProphetModel.parameter_ranges["max_train_candles"],
    "prophet.denoise": ProphetModel.parameter_ranges["denoise"],
    "prophet.denoise_window": ProphetModel.parameter_ranges["denoise_window"],
}
# Switches of the pages, not model settings.
SWITCHES = {
    "lstm.enabled", "lstm.networks", "lstm.use_features", "prophet.enabled", "prophet.regressors"
}  # fmt: skip


def test_every_bound_of_the_app_lies_within_the_library_range() -> None:
    from ui.sharing import SPECS

    model_specs = {n for n in SPECS if n.startswith(("lstm.", "prophet."))} - SWITCHES
    assert model_specs | {"horizon", "level", "seed"} == set(SPEC_RANGES)
    for name, declared in SPEC_RANGES.items():
        spec = SPECS[name]
        offered = [spec.default, *(spec.choices or ()), spec.lo, spec.hi]
        for value in offered:
            if value is not None:
                assert declared.contains(value), (name, value, declared.describe())


@pytest.mark.parametrize("name", sorted(SPEC_RANGES))
def test_every_value_a_link_can_set_is_accepted_by_the_library(name: str) -> None:
    """Property over the app's table: parse() accepts only what the models accept."""
    from ui.sharing import SPECS, parse, serialize

    spec = SPECS[name]
    rng = np.random.default_rng(7)
    if spec.choices is not None:
        values = list(spec.choices)
    elif isinstance(spec.default, int):
        values = [spec.lo, spec.hi, *rng.integers(spec.lo, spec.hi + 1, 20).tolist()]
    else:
        values = [spec.lo, spec.hi, *rng.uniform(spec.lo, spec.hi, 20).tolist()]
    for value in values:
        assert SPEC_RANGES[name].contains(parse(name, serialize(value))), (name, value)


# --- the Strategy page's settings ------------------------------------------------------------

# Each strategy setting of the app's table and the StrategySettings field it sets.
STRATEGY_FIELDS = {
    f"strategy.{name}": name
    for name in (
        "threshold",
        "threshold_unit",
        "fee_bps",
        "slippage_bps",
        "allow_short",
        "entry",
        "sizing",
        "fraction",
        "vol_target",
        "vol_lookback",
    )
}


def test_every_strategy_setting_of_the_app_lies_within_the_library_range() -> None:
    from forecasting.strategy import StrategySettings
    from ui.sharing import SPECS

    assert {n for n in SPECS if n.startswith("strategy.")} == set(STRATEGY_FIELDS)
    for name, field in STRATEGY_FIELDS.items():
        declared = StrategySettings.parameter_ranges[field]
        spec = SPECS[name]
        offered = [spec.default, *(spec.choices or ()), spec.lo, spec.hi]
        for value in offered:
            if value is not None:
                assert declared.contains(value), (name, value, declared.describe())
        # The library's own default is the page's.
        assert spec.default == getattr(StrategySettings(), field), name


@pytest.mark.parametrize("name", sorted(STRATEGY_FIELDS))
def test_every_strategy_value_a_link_can_set_builds_the_strategy(name: str) -> None:
    """Property over the table: parse() gives only values StrategySettings accepts, and
    refuses values beyond the bounds, not finite, or of the wrong kind."""
    from forecasting.strategy import StrategySettings
    from ui.sharing import SPECS, parse, serialize

    spec = SPECS[name]
    rng = np.random.default_rng(11)
    if spec.choices is not None:
        values = list(spec.choices)
    elif isinstance(spec.default, bool):
        values = [False, True]
    elif isinstance(spec.default, int):
        values = [spec.lo, spec.hi, *rng.integers(spec.lo, spec.hi + 1, 20).tolist()]
    else:
        values = [spec.lo, spec.hi, *rng.uniform(spec.lo, spec.hi, 20).tolist()]
    field = STRATEGY_FIELDS[name]
    for value in values:
        parsed = parse(name, serialize(value))
        assert getattr(StrategySettings(**{field: parsed}), field) == parsed
    refused = ["nan", "inf", "-inf", "x", ""]
    if spec.lo is not None:
        refused += [serialize(spec.lo - 1), serialize(spec.hi + 1)]
    for text in refused:
        with pytest.raises(ValueError, match="must be"):
            parse(name, text)
