"""Technical features: values against hand computations, no look-ahead, warm-up, parsing."""

from __future__ import annotations

import copy
import math
import re
from functools import cache

import numpy as np
import pandas as pd
import pytest
from factories import candles_from_close, sine_trend_candles, with_mood_columns
from fake_exchange import load_shared_csv
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting.errors import ConfigurationError, InsufficientHistory
from forecasting.features import (
    DEFAULT_FEATURES,
    FEATURE_KINDS,
    FeatureSpec,
    compute_features,
    lookahead_audit,
    parse_features,
    warmup_length,
)
from forecasting.ohlcv import normalize_ohlcv

# --- independent reference implementations ------------------------------------------------


def _wilder_rsi(close: list[float], window: int) -> list[float]:
    """Wilder's RSI (New Concepts in Technical Trading Systems, 1978), in plain Python.

    The first average gain (loss) is the mean of the first ``window`` gains (losses);
    then ``avg = (avg * (window - 1) + value) / window``. The first RSI is at row
    ``window`` (it needs ``window`` changes, so ``window + 1`` closes).
    """
    changes = [b - a for a, b in zip(close, close[1:], strict=False)]
    out = [math.nan] * len(close)
    if len(changes) < window:
        return out
    gain = sum(max(c, 0.0) for c in changes[:window]) / window
    loss = sum(max(-c, 0.0) for c in changes[:window]) / window
    for row in range(window, len(close)):
        if row > window:
            change = changes[row - 1]
            gain = (gain * (window - 1) + max(change, 0.0)) / window
            loss = (loss * (window - 1) + max(-change, 0.0)) / window
        out[row] = 100.0 if loss == 0 else 100.0 - 100.0 / (1.0 + gain / loss)
    return out


def _ema(values: pd.Series, span: int) -> pd.Series:
    # The standard EMA: alpha = 2 / (span + 1), seeded with the first value (adjust=False).
    return values.ewm(span=span, adjust=False).mean()


def _macd_standard(close: pd.Series, fast: int, slow: int, signal: int) -> pd.DataFrame:
    """MACD as usually defined: EMA(fast) - EMA(slow), its EMA(signal), and their difference."""
    macd = _ema(close, fast) - _ema(close, slow)
    line = _ema(macd, signal)
    return pd.DataFrame({"macd": macd, "signal": line, "hist": macd - line})


@cache
def _audit_candles() -> pd.DataFrame:
    """Real BTC/USDT daily candles around the March 2020 crash, or a synthetic stand-in."""
    real = load_shared_csv("binance_BTC-USDT_1d.csv")
    if real is None:
        return with_mood_columns(sine_trend_candles(300, noise=0.02, seed=3))
    # -1: the partial last candle. The mood columns are invented (joined as the app does).
    return with_mood_columns(real.iloc[:-1].loc["2019-11-01":"2020-08-31"])


# --- factories ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "candles",
    [
        sine_trend_candles(50),  # daily, the default cycles
        sine_trend_candles(50, "4h", noise=0.05, seed=9),  # intraday, very noisy
        sine_trend_candles(30, "1b"),  # business days: no weekend rows
    ],
    ids=["1d", "4h", "business"],
)
def test_factory_frames_are_valid_ohlcv(candles: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(normalize_ohlcv(candles), candles)
    assert candles.index.name == "timestamp"
    assert candles.index.is_monotonic_increasing
    assert (candles["high"] >= candles[["open", "close"]].max(axis=1)).all()
    assert (candles["low"] <= candles[["open", "close"]].min(axis=1)).all()
    assert (candles[["open", "high", "low", "close", "volume"]] > 0).all().all()


# --- values -------------------------------------------------------------------------------


def test_rsi_tiny_example_worked_by_hand() -> None:
    # closes 10, 11, 10.5, 11.5, 12, 11 -> changes +1, -0.5, +1, +0.5, -1; window 3.
    # row 3: gain (1 + 0 + 1)/3 = 2/3, loss 0.5/3 = 1/6, RS 4, RSI 100 - 100/5 = 80
    # row 4: gain (2/3*2 + 0.5)/3 = 11/18, loss (1/6*2)/3 = 1/9, RS 5.5, RSI 1100/13
    # row 5: gain (11/18*2)/3 = 11/27, loss (1/9*2 + 1)/3 = 11/27, RS 1, RSI 50
    candles = candles_from_close(np.array([10, 11, 10.5, 11.5, 12, 11]))
    rsi = compute_features(candles, [FeatureSpec("rsi", (3,))], drop_warmup=False)["rsi_3"]
    assert rsi.iloc[:3].isna().all()
    np.testing.assert_allclose(rsi.iloc[3:].to_numpy(), [80.0, 1100 / 13, 50.0], rtol=1e-12)


@pytest.mark.parametrize(
    ("closes", "expected"),
    [
        ([1, 2, 3, 4, 5], 100.0),  # only gains: no losses means 100
        ([5, 4, 3, 2, 1], 0.0),  # only losses
        ([3, 3, 3, 3, 3], 100.0),  # no change at all: 0/0, reported as 100 like ta
    ],
    ids=["rising", "falling", "flat"],
)
def test_rsi_extremes(closes: list[float], expected: float) -> None:
    candles = candles_from_close(np.array(closes, dtype="float64"))
    rsi = compute_features(candles, [FeatureSpec("rsi", (3,))])["rsi_3"]
    assert rsi.tolist() == [expected, expected]


@pytest.mark.parametrize(
    "window",
    [
        14,  # the default
        5,  # short: most of the series is past the seed
        30,  # long relative to the 80 candles
    ],
)
def test_rsi_equals_wilders_definition(window: int) -> None:
    candles = sine_trend_candles(80, noise=0.01, seed=4)
    expected = _wilder_rsi(candles["close"].tolist(), window)
    got = compute_features(candles, [FeatureSpec("rsi", (window,))], drop_warmup=False)
    got = got[f"rsi_{window}"]
    # The package's RSI is Wilder's own, from its very first value (row ``window``).
    # ta's RSIIndicator would differ: it counts the first candle as a zero change and
    # smooths from there (an EMA with alpha=1/window and min_periods=window), so its
    # first value is one row early and it only converges to Wilder's later.
    assert np.isnan(expected[:window]).all()
    assert got.iloc[:window].isna().all()
    np.testing.assert_allclose(got.iloc[window:].to_numpy(), expected[window:], rtol=1e-10)
    assert ((got.iloc[window:] >= 0) & (got.iloc[window:] <= 100)).all()


@pytest.mark.parametrize(
    ("fast", "slow", "signal"),
    [
        (12, 26, 9),  # the default
        (5, 13, 4),  # a faster one
    ],
)
def test_macd_equals_the_standard_definition(fast: int, slow: int, signal: int) -> None:
    candles = sine_trend_candles(200, noise=0.01, seed=5)
    close = candles["close"]
    name = f"{fast}_{slow}_{signal}"
    got = compute_features(candles, [FeatureSpec("macd", (fast, slow, signal))], drop_warmup=False)
    standard = _macd_standard(close, fast, slow, signal)

    # ta computes each EMA with ewm(span, adjust=False, min_periods=span): the same
    # recursion as the standard EMA, from the first candle, only masked as NaN until
    # `span` candles are in. So the MACD line is the standard one wherever ta has it.
    macd = got[f"macd_{name}"]
    assert macd.iloc[: slow - 1].isna().all()
    np.testing.assert_allclose(macd.iloc[slow - 1 :], standard["macd"].iloc[slow - 1 :], rtol=1e-12)

    # ta's signal line is the EMA of that *masked* MACD line, so its recursion starts at
    # the first defined MACD value (row slow - 1), not at the first candle: the same
    # EMA, computed on the line from there, matches exactly ...
    first = slow + signal - 2
    seeded = _ema(standard["macd"].iloc[slow - 1 :], signal)
    assert got[f"macd_signal_{name}"].iloc[:first].isna().all()
    np.testing.assert_allclose(
        got[f"macd_signal_{name}"].iloc[first:], seeded.loc[close.index[first:]], rtol=1e-12
    )
    np.testing.assert_allclose(
        got[f"macd_hist_{name}"].iloc[first:],
        (standard["macd"] - seeded).loc[close.index[first:]],
        rtol=1e-9,
        atol=1e-12,
    )
    # ... and the signal seeded at the first candle converges to it: the difference
    # shrinks by (signal - 1) / (signal + 1) per candle.
    late = slice(first + 100, None)
    scale = close.iloc[late].abs().max()
    np.testing.assert_allclose(
        got[f"macd_signal_{name}"].iloc[late], standard["signal"].iloc[late], atol=1e-9 * scale
    )
    np.testing.assert_allclose(
        got[f"macd_hist_{name}"].iloc[late], standard["hist"].iloc[late], atol=1e-9 * scale
    )


def test_simple_features_by_hand() -> None:
    candles = sine_trend_candles(40, noise=0.01, seed=6)
    close, volume = candles["close"], candles["volume"]
    specs = parse_features("sma:5,ema:5,log_return,volume_change,bollinger:5:2")
    got = compute_features(candles, specs, drop_warmup=False)
    np.testing.assert_allclose(got["sma_ratio_5"], close / close.rolling(5).mean() - 1)
    ema = close.ewm(span=5, adjust=False).mean()  # masked for the first 4 rows, as in ta
    np.testing.assert_allclose(got["ema_ratio_5"].iloc[4:], (close / ema - 1).iloc[4:])
    np.testing.assert_allclose(got["log_return"].iloc[1:], np.log(close / close.shift()).iloc[1:])
    np.testing.assert_allclose(
        got["volume_change"].iloc[1:], np.log((1 + volume) / (1 + volume.shift())).iloc[1:]
    )
    mean, std = close.rolling(5).mean(), close.rolling(5).std(ddof=0)  # ta: population std
    lower, upper = mean - 2 * std, mean + 2 * std
    np.testing.assert_allclose(got["bb_pctb_5_2"], (close - lower) / (upper - lower))
    np.testing.assert_allclose(got["bb_width_5_2"], (upper - lower) / mean * 100)


def _flat_stretches() -> pd.DataFrame:
    """Candles that move, stand still (no trades: every price equal, zero volume), move
    again, and end standing still: a stablecoin at its peg, a halted market."""
    rng = np.random.default_rng(11)
    close = 1.0 + 0.004 * rng.standard_normal(150)
    close[40:75] = 1.0  # 35 flat candles in the middle
    close[120:] = 1.0  # 30 at the end
    candles = candles_from_close(close)
    flat = candles.index[np.r_[40:75, 120:150]]
    candles.loc[flat, ["open", "high", "low", "close"]] = 1.0
    candles.loc[flat, "volume"] = 0.0
    return candles


def test_bollinger_pctb_is_one_half_when_the_bands_have_no_width() -> None:
    candles = _flat_stretches()
    got = compute_features(candles, [FeatureSpec("bollinger", (20, 2.0))], drop_warmup=False)
    pctb, width = got["bb_pctb_20_2"], got["bb_width_20_2"]
    # 20 equal closes: the bands meet at the close and %B = (close - lower) / (upper -
    # lower) is 0/0, defined as 0.5 (the middle band), the width as 0. Exactly: on the
    # second stretch pandas' running std is 5e-10, not 0, which left %B at 0.49999997
    # (and at whatever two rounding errors divide to, elsewhere).
    flat = np.zeros(len(candles), dtype=bool)
    flat[40 + 19 : 75] = flat[120 + 19 :] = True
    assert (pctb[flat] == 0.5).all()
    assert (width[flat] == 0.0).all()
    # The same wherever the data starts (the running std's residue does not).
    for start in (30, 100, 125):
        later = compute_features(
            candles.iloc[start:], [FeatureSpec("bollinger")], drop_warmup=False
        )
        pd.testing.assert_series_equal(
            later["bb_pctb_20_2"].loc[pctb.index[flat][-5:]], pctb[flat].iloc[-5:]
        )
    # Everywhere else the usual formula, and nothing undefined after the warm-up.
    close = candles["close"]
    mean, std = close.rolling(20).mean(), close.rolling(20).std(ddof=0)
    expected = (close - (mean - 2 * std)) / (4 * std)
    np.testing.assert_allclose(pctb[~flat].iloc[19:], expected[~flat].iloc[19:], rtol=1e-9)
    assert pctb.iloc[:19].isna().all()
    assert pctb.iloc[19:].notna().all()


# --- no look-ahead ------------------------------------------------------------------------

AUDITED = [
    pytest.param(FeatureSpec("rsi"), id="rsi-default"),  # 14
    pytest.param(FeatureSpec("rsi", (5,)), id="rsi-5"),  # short window
    pytest.param(FeatureSpec("macd"), id="macd-default"),  # 12:26:9
    pytest.param(FeatureSpec("macd", (5, 13, 4)), id="macd-5-13-4"),  # faster lines
    pytest.param(FeatureSpec("sma"), id="sma-default"),  # 20
    pytest.param(FeatureSpec("sma", (7,)), id="sma-7"),  # a week of days
    pytest.param(FeatureSpec("ema"), id="ema-default"),  # 20
    pytest.param(FeatureSpec("ema", (50,)), id="ema-50"),  # a long warm-up
    pytest.param(FeatureSpec("bollinger"), id="bollinger-default"),  # 20 candles, 2 std
    pytest.param(FeatureSpec("bollinger", (10, 1.5)), id="bollinger-10-1.5"),  # fractional std
    pytest.param(FeatureSpec("atr"), id="atr-default"),  # 14 (ta writes zeros in warm-up)
    pytest.param(FeatureSpec("atr", (5,)), id="atr-5"),  # short window
    pytest.param(FeatureSpec("log_return"), id="log_return"),  # no parameters
    pytest.param(FeatureSpec("volume_change"), id="volume_change"),  # no parameters
    pytest.param(FeatureSpec("fear_greed"), id="fear_greed"),  # a joined column
    pytest.param(FeatureSpec("funding_rate"), id="funding_rate"),  # a joined column
]


def test_the_audit_table_covers_every_feature_kind() -> None:
    audited = {param.values[0].kind for param in AUDITED}
    assert audited == set(FEATURE_KINDS)
    for kind, info in FEATURE_KINDS.items():
        if info.param_names:  # a default and a non-default parameter set each
            params = {p.values[0].params for p in AUDITED if p.values[0].kind == kind}
            assert len(params) == 2
            assert info.defaults in params


@pytest.mark.parametrize("spec", AUDITED)
def test_feature_on_a_prefix_equals_feature_on_the_whole(spec: FeatureSpec) -> None:
    candles = _audit_candles()
    audit = lookahead_audit(candles, [spec])
    assert audit["passed"].all(), audit
    assert audit["first_difference"].isna().all()
    assert (audit["prefixes"] > spec.warmup).all()

    # The same check, independently: every short prefix through the warm-up (where a
    # back-fill would leak) and a few long ones.
    full = compute_features(candles, [spec], drop_warmup=False)
    lengths = [*range(1, spec.warmup + 3), len(candles) // 3, len(candles) // 2, len(candles) - 1]
    for length in lengths:
        prefix = compute_features(candles.iloc[:length], [spec], drop_warmup=False)
        pd.testing.assert_frame_equal(prefix, full.iloc[:length], rtol=1e-12)


def _honest(data: pd.DataFrame) -> pd.Series:
    return np.log(data["close"]).diff()


PLANTED = [
    # a centred 5-candle mean reads two candles ahead
    pytest.param(lambda d: d["close"].rolling(5, center=True).mean(), 2, id="centred-mean"),
    # back-filling the first log return copies the second candle's into the first row
    pytest.param(lambda d: _honest(d).bfill(), 0, id="back-fill"),
    # z-score with the whole series' mean and std: every value moves with new data
    pytest.param(lambda d: (d["close"] - d["close"].mean()) / d["close"].std(), 0, id="z-score"),
    # tomorrow's close
    pytest.param(lambda d: d["close"].shift(-1), 0, id="next-close"),
]


@pytest.mark.parametrize(("planted", "first_row"), PLANTED)
def test_audit_catches_planted_lookahead(planted, first_row: int) -> None:
    candles = sine_trend_candles(120, noise=0.01, seed=8)

    def compute(data: pd.DataFrame, specs) -> pd.DataFrame:
        return pd.DataFrame({"honest": _honest(data), "planted": planted(data)})

    audit = lookahead_audit(candles, DEFAULT_FEATURES, compute=compute).set_index("column")
    assert bool(audit.loc["honest", "passed"])
    assert pd.isna(audit.loc["honest", "first_difference"])
    assert not bool(audit.loc["planted", "passed"])
    assert audit.loc["planted", "max_difference"] > 1e-9
    assert audit.loc["planted", "first_difference"] == candles.index[first_row]


def test_real_4h_candles_with_outages_and_a_zero_volume_candle() -> None:
    real = load_shared_csv("binance_BTC-USDT_4h.csv")
    if real is None:
        pytest.skip("the shared real-candle data is not available")
    # August-October 2017: a zero-volume flat candle (2017-09-06T16:00) in the middle.
    candles = with_mood_columns(real.loc["2017-08-17":"2017-10-31"], "4h")
    assert candles.loc["2017-09-06 16:00", "volume"].item() == 0.0
    specs = tuple(FeatureSpec(kind) for kind in FEATURE_KINDS)
    features = compute_features(candles, specs)
    assert np.isfinite(features.to_numpy()).all()
    assert features.index[0] == candles.index[warmup_length(specs)]
    assert lookahead_audit(candles, specs, checks=3)["passed"].all()


@pytest.mark.parametrize("spec", AUDITED)
def test_every_feature_is_defined_after_its_warmup_through_flat_stretches(
    spec: FeatureSpec,
) -> None:
    # Every kind (the audit table covers them all): a feature undefined after its
    # warm-up would make a model skip rows, so a window "ending" at a candle would
    # really end earlier.
    candles = with_mood_columns(_flat_stretches())
    got = compute_features(candles, [spec], drop_warmup=False)
    after = got.iloc[spec.warmup :]
    assert np.isfinite(after.to_numpy()).all(), after[~np.isfinite(after).all(axis=1)]
    # The value defined on the flat stretch is no look-ahead either.
    assert lookahead_audit(candles, [spec])["passed"].all()


# --- warm-up ------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", AUDITED)
def test_warmup_is_the_number_of_leading_rows_without_a_value(spec: FeatureSpec) -> None:
    candles = with_mood_columns(sine_trend_candles(120, noise=0.01, seed=2))
    raw = compute_features(candles, [spec], drop_warmup=False)
    complete = raw.notna().all(axis=1)
    assert not complete.iloc[: spec.warmup].any()  # NaN, never filled
    assert complete.iloc[spec.warmup :].all()
    for column in raw:  # each column: a NaN warm-up, then values (MACD's line comes first)
        defined = raw[column].notna().to_numpy()
        assert defined[int(np.argmax(defined)) :].all(), column


@pytest.mark.parametrize(
    "specs",
    [
        DEFAULT_FEATURES,  # rsi:14, macd:12:26:9, log_return
        tuple(FeatureSpec(kind) for kind in FEATURE_KINDS),  # everything at its defaults
        parse_features("log_return,ema:50,atr:5"),  # the slowest is not the first
    ],
    ids=["defaults", "all-kinds", "mixed"],
)
def test_warmup_rows_are_dropped_not_filled(specs: tuple[FeatureSpec, ...]) -> None:
    candles = with_mood_columns(sine_trend_candles(150, noise=0.01, seed=1))
    raw = compute_features(candles, specs, drop_warmup=False)
    features = compute_features(candles, specs)

    first_complete = raw.index[raw.notna().all(axis=1)][0]
    assert features.index[0] == first_complete == candles.index[warmup_length(specs)]
    assert not features.isna().any().any()
    pd.testing.assert_frame_equal(features, raw.loc[first_complete:])  # values, not fills
    assert raw.iloc[0].isna().any()  # the warm-up itself stays NaN


def test_too_few_candles_for_the_warmup() -> None:
    candles = sine_trend_candles(60)
    specs = DEFAULT_FEATURES
    need = warmup_length(specs) + 1  # 34: MACD(12, 26, 9)
    with pytest.raises(InsufficientHistory, match=f"the slowest needs {need}"):
        compute_features(candles.iloc[: need - 1], specs)
    assert len(compute_features(candles.iloc[:need], specs)) == 1
    with pytest.raises(InsufficientHistory):
        compute_features(candles.iloc[:0], specs)


def test_duplicate_specs_give_each_column_once() -> None:
    candles = sine_trend_candles(60)
    features = compute_features(candles, [FeatureSpec("rsi"), FeatureSpec("rsi", (14,))])
    assert list(features.columns) == ["rsi_14"]


def test_no_specs_give_no_columns() -> None:
    candles = sine_trend_candles(10)
    features = compute_features(candles, ())
    assert features.columns.empty
    assert features.index.equals(candles.index)


def test_inputs_are_not_modified() -> None:
    candles = with_mood_columns(sine_trend_candles(120, noise=0.01))
    before = copy.deepcopy(candles)
    specs = tuple(FeatureSpec(kind) for kind in FEATURE_KINDS)
    compute_features(candles, specs)
    lookahead_audit(candles, specs, checks=2)
    pd.testing.assert_frame_equal(candles, before)


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, DEFAULT_FEATURES),  # nothing chosen: the defaults
        ("", DEFAULT_FEATURES),  # empty text too
        (" , ", DEFAULT_FEATURES),  # only separators
        ("rsi:14,macd:12:26:9,log_return", DEFAULT_FEATURES),  # the defaults spelled out
        ("rsi", (FeatureSpec("rsi", (14,)),)),  # default parameters
        ("rsi:7", (FeatureSpec("rsi", (7,)),)),  # explicit parameter
        (" RSI : 7 ", (FeatureSpec("rsi", (7,)),)),  # case and spaces
        ("rsi:14.0", (FeatureSpec("rsi", (14,)),)),  # a whole float is a count
        ("bollinger:20:2.5", (FeatureSpec("bollinger", (20, 2.5)),)),  # fractional std
        ("rsi,rsi:14,sma:5,rsi", (FeatureSpec("rsi"), FeatureSpec("sma", (5,)))),  # duplicates
        (["ema:9", "log_return"], (FeatureSpec("ema", (9,)), FeatureSpec("log_return"))),  # list
        ("sma:5,sma:50", (FeatureSpec("sma", (5,)), FeatureSpec("sma", (50,)))),  # two windows
    ],
)
def test_parse_features(text, expected: tuple[FeatureSpec, ...]) -> None:
    specs = parse_features(text)
    assert specs == expected
    assert parse_features(",".join(str(s) for s in specs)) == specs  # str() parses back


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rsx:14", "Unknown feature 'rsx'. Choose from: rsi, macd"),  # typo in the kind
        ("rsi:abc", "parameters must be numbers, as in rsi:14"),  # not a number
        ("rsi:", "parameters must be numbers"),  # empty parameter
        ("rsi:0", "window must be a whole number from 2 to 1000, got 0"),  # zero window
        ("rsi:-3", "window must be a whole number from 2 to 1000"),  # negative window
        ("rsi:1", "window must be a whole number from 2 to 1000"),  # no spread in 1 candle
        ("rsi:14.5", "window must be a whole number from 2 to 1000, got 14.5"),  # truncated
        ("ema:100000", "window must be a whole number from 1 to 1000"),  # decades of warm-up
        ("bollinger:20:0", "std must be a number from 0.1 to 10, got 0"),  # zero width
        ("bollinger:20:1e9", "std must be a number from 0.1 to 10"),  # every close inside
        ("rsi:14:3", "takes 1 parameter(s) (window), got 2"),  # too many
        ("macd:12:26", "takes 3 parameter(s) (fast:slow:signal), got 2"),  # too few
        ("log_return:1", "takes 0 parameter(s), got 1"),  # takes none
        ("macd:26:12:9", "fast window must be shorter than the slow one"),  # swapped
        ("macd:12:12:9", "fast window must be shorter"),  # equal
    ],
)
def test_parse_features_rejects(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        parse_features(text)


@pytest.mark.parametrize(
    "params",
    [
        (math.nan,),  # NaN compares false with everything
        (math.inf,),  # infinite window
        (True,),  # a bool is an int, but no window
        ("14",),  # a string
    ],
    ids=["nan", "inf", "bool", "str"],
)
def test_feature_spec_rejects_non_numbers(params: tuple) -> None:
    with pytest.raises(ConfigurationError, match="rsi"):
        FeatureSpec("rsi", params)


def test_feature_spec_labels() -> None:
    spec = FeatureSpec("bollinger", (20, 2.5))
    assert str(spec) == "bollinger:20:2.5"
    assert spec.title == "Bollinger(20, 2.5)"
    assert str(FeatureSpec("bollinger")) == "bollinger:20:2"
    assert FeatureSpec("log_return").title == "Log return"
    # Fractional defaults say which parameters take fractions (the UI's pickers read it).
    assert isinstance(FEATURE_KINDS["bollinger"].defaults[1], float)
    assert all(isinstance(d, int) for k in FEATURE_KINDS.values() for d in k.defaults[:1])


_ANY_NUMBER = st.one_of(
    st.integers(-10, 2000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.integers(),
)


@given(kind=st.sampled_from(sorted(FEATURE_KINDS)), data=st.data())
@settings(max_examples=300, deadline=None)
def test_a_feature_takes_exactly_the_parameters_its_ranges_declare(kind, data) -> None:
    """Whatever numbers arrive (a link, a bundle, the command line), a feature is made
    only from parameters inside its declared ranges; anything else is one
    ConfigurationError naming the parameter, never another exception."""
    info = FEATURE_KINDS[kind]
    params = tuple(data.draw(_ANY_NUMBER) for _ in info.param_names)
    valid = all(
        r.contains(int(v) if r.integer and isinstance(v, float) and v.is_integer() else v)
        for r, v in zip(info.ranges, params, strict=True)
    ) and not (kind == "macd" and not params[0] < params[1])
    if not params:
        valid = True
    if not valid:
        with pytest.raises(ConfigurationError, match=r"^[^\n]+$"):
            FeatureSpec(kind, params)
        return
    spec = FeatureSpec(kind, params)
    assert all(r.contains(v) for r, v in zip(info.ranges, spec.params, strict=True))
    assert parse_features(str(spec)) == (spec,)  # the text form reads back
