"""Technical features computed with ``ta``, each known at its candle's close.

Every feature's value at a candle depends only on that candle and earlier ones:
computed on a prefix of the data it equals the value computed on the whole.
:func:`lookahead_audit` checks this on any data, and the test suite checks it for every
feature here. ``ta`` is always called with ``fillna=False`` (its filling back-fills,
which leaks the future), and warm-up rows are reported as NaN and dropped, never filled:
``ta``'s ATR and ADX write zeros into their warm-up, which we mask as NaN. The RSI is
Wilder's own (computed here, not by ``ta``; see :func:`_rsi`).

After its warm-up every feature has a value on every candle with a positive close,
flat stretches included (a stablecoin at its peg, a market with no trades): where a
formula would divide zero by zero, the feature defines the value its limit or its
meaning gives, and says so (RSI with no losses is 100; Bollinger %B with bands of
zero width is 0.5). A model reading a window of features never meets an undefined
value after the warm-up, so it never has to skip rows.

A feature is named by a spec string ``kind[:param[:param...]]``, e.g. ``rsi:14``,
``macd:12:26:9``, ``sma:50``, ``log_return``.

Market mood (:data:`MOOD_KINDS`): ``fear_greed`` and ``funding_rate`` read a column that
:func:`forecasting.data.mood.attach_mood` joined to the candles as of each candle's close
(a value is used only from the first candle that closes after it was published), so
they are known at the close like every other feature, and travel with the candles
through folds, windows and refits. Candles without the column raise
:class:`~forecasting.errors.ConfigurationError` saying how to attach it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting.errors import ConfigurationError, InsufficientHistory
from forecasting.ranges import Range

__all__ = [
    "DEFAULT_FEATURES",
    "FEATURE_KINDS",
    "MOOD_KINDS",
    "FeatureSpec",
    "compute_features",
    "lookahead_audit",
    "mood_kinds",
    "parse_features",
    "warmup_length",
]


@dataclass(frozen=True)
class FeatureKind:
    """One kind of feature: its parameters, columns and computation."""

    kind: str
    title: str
    param_names: tuple[str, ...]
    defaults: tuple[int | float, ...]
    compute: Callable[[pd.DataFrame, tuple], pd.DataFrame]
    warmup: Callable[[tuple], int]
    description: str
    ranges: tuple[Range, ...] = ()
    """The valid values of each parameter (same order as ``param_names``)."""


@dataclass(frozen=True, order=True)
class FeatureSpec:
    """A feature and its parameters, such as ``FeatureSpec("rsi", (14,))``."""

    kind: str
    params: tuple[int | float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ConfigurationError(
                f"Unknown feature '{self.kind}'. Choose from: {', '.join(FEATURE_KINDS)}."
            )
        info = FEATURE_KINDS[self.kind]
        params = tuple(self.params) or info.defaults
        if len(params) != len(info.defaults):
            names = ":".join(info.param_names)
            raise ConfigurationError(
                f"Feature '{self.kind}' takes {len(info.defaults)} parameter(s)"
                f"{f' ({names})' if names else ''}, got {len(params)}."
            )
        checked = []
        for name, value, valid in zip(info.param_names, params, info.ranges, strict=True):
            # A window counts candles: 14.5 would be silently truncated to 14 while the
            # column is labelled 14.5, so a whole float is taken and any other refused.
            if valid.integer and _whole_float(value):
                value = int(value)
            valid.check(value, name, f"Feature '{self.kind}':")
            checked.append(value)
        params = tuple(checked)
        if self.kind == "macd" and not params[0] < params[1]:
            raise ConfigurationError("MACD: the fast window must be shorter than the slow one.")
        object.__setattr__(self, "params", params)

    def __str__(self) -> str:
        return ":".join([self.kind, *(_fmt(p) for p in self.params)])

    @property
    def title(self) -> str:
        """A label for screens, e.g. ``RSI(14)``."""
        info = FEATURE_KINDS[self.kind]
        args = ", ".join(_fmt(p) for p in self.params)
        return f"{info.title}({args})" if args else info.title

    def compute(self, candles: pd.DataFrame) -> pd.DataFrame:
        """This feature's columns for ``candles`` (warm-up rows NaN)."""
        frame = FEATURE_KINDS[self.kind].compute(candles, self.params)
        suffix = "_".join(_fmt(p) for p in self.params)
        frame.columns = [f"{c}_{suffix}" if suffix else c for c in frame.columns]
        return frame

    @property
    def warmup(self) -> int:
        """Rows at the start that have no value yet."""
        return FEATURE_KINDS[self.kind].warmup(self.params)


def _number(text: str) -> int | float:
    """``"14"`` as 14, ``"2.5"`` or ``"1e3"`` as a float; ValueError otherwise."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _whole_float(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def _fmt(value: int | float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _ta():
    import ta  # imported on first use: the data pages never pay for it

    return ta


def _wilder_average(values: pd.Series, window: int) -> pd.Series:
    """Wilder's smoothing of per-candle changes (``values[0]`` is the first candle's NaN).

    The first average, at row ``window``, is the plain mean of the first ``window``
    changes; each later one is ``(previous * (window - 1) + value) / window``, which is
    an EMA with ``alpha = 1 / window`` seeded with that mean.
    """
    seeded = values.copy()
    seeded.iloc[: window + 1] = np.nan
    if len(values) > window:
        seeded.iloc[window] = values.iloc[1 : window + 1].mean()
    # Leading NaNs are skipped: the recursion starts at the seed.
    return seeded.ewm(alpha=1.0 / window, adjust=False).mean()


def _rsi(c: pd.DataFrame, p: tuple) -> pd.DataFrame:
    # Wilder's RSI (1978), not ta's RSIIndicator: ta counts the first candle, which has
    # no change, as a zero gain and loss and starts its average there, so its first
    # value comes a candle early, from window - 1 changes, and it differs from Wilder's
    # for many candles after (by (1 - 1/window)**t).
    window = int(p[0])
    change = c["close"].astype("float64").diff()
    avg_gain = _wilder_average(change.clip(lower=0.0), window)
    avg_loss = _wilder_average((-change).clip(lower=0.0), window)
    rsi = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    # No losses over the window: 100, as ta and charting tools report (0/0 included).
    rsi = rsi.mask(avg_loss == 0.0, 100.0)
    return pd.DataFrame({"rsi": rsi})


def _macd(c: pd.DataFrame, p: tuple) -> pd.DataFrame:
    macd = _ta().trend.MACD(
        c["close"], window_slow=int(p[1]), window_fast=int(p[0]), window_sign=int(p[2])
    )
    return pd.DataFrame(
        {"macd": macd.macd(), "macd_signal": macd.macd_signal(), "macd_hist": macd.macd_diff()}
    )


def _sma(c: pd.DataFrame, p: tuple) -> pd.DataFrame:
    sma = _ta().trend.SMAIndicator(c["close"], int(p[0])).sma_indicator()
    # Relative to the close, so the feature is comparable across price levels.
    return pd.DataFrame({"sma_ratio": c["close"] / sma - 1.0})


def _ema(c: pd.DataFrame, p: tuple) -> pd.DataFrame:
    ema = _ta().trend.EMAIndicator(c["close"], int(p[0])).ema_indicator()
    return pd.DataFrame({"ema_ratio": c["close"] / ema - 1.0})


def _bollinger(c: pd.DataFrame, p: tuple) -> pd.DataFrame:
    """%B ``(close - lower) / (upper - lower)`` and the band width ``(upper - lower) / middle``
    (in percent), with ta's bands: the ``window``-candle mean -/+ ``std`` population
    standard deviations.

    On a flat stretch (``window`` equal closes) the bands have zero width and %B is
    0/0: it is defined as 0.5, the close at the middle band (all three bands equal the
    close there), and the width as exactly 0. A window is flat when its highest and
    lowest close are equal, not when the rolling standard deviation is 0: pandas'
    running variance leaves a residue there (a standard deviation around 1e-10 of the
    price, depending on how far back the data starts), which would make %B the ratio
    of two rounding errors.
    """
    window = int(p[0])
    close = c["close"].astype("float64")
    bands = _ta().volatility.BollingerBands(close, window, float(p[1]))
    # NaN during the warm-up compares unequal: the warm-up stays undefined.
    flat = close.rolling(window).max().eq(close.rolling(window).min())
    return pd.DataFrame(
        {
            "bb_pctb": bands.bollinger_pband().mask(flat, 0.5),
            "bb_width": bands.bollinger_wband().mask(flat, 0.0),
        }
    )


def _atr(c: pd.DataFrame, p: tuple) -> pd.DataFrame:
    window = int(p[0])
    if len(c) < window:  # ta indexes past the end of shorter data
        return pd.DataFrame({"atr_ratio": np.full(len(c), np.nan)}, index=c.index)
    atr = _ta().volatility.AverageTrueRange(c["high"], c["low"], c["close"], window)
    values = atr.average_true_range().astype("float64")
    # ta writes 0.0 for the warm-up instead of NaN: a zero there is not a value.
    values.iloc[: window - 1] = np.nan
    return pd.DataFrame({"atr_ratio": values / c["close"]})


def _log_return(c: pd.DataFrame, p: tuple) -> pd.DataFrame:
    return pd.DataFrame({"log_return": np.log(c["close"]).diff()})


def _volume_change(c: pd.DataFrame, p: tuple) -> pd.DataFrame:
    # log(1 + v) keeps zero-volume candles (real: outages, flat candles) finite.
    return pd.DataFrame({"volume_change": np.log1p(c["volume"]).diff()})


def _mood(column: str) -> Callable[[pd.DataFrame, tuple], pd.DataFrame]:
    def compute(c: pd.DataFrame, p: tuple) -> pd.DataFrame:
        if column not in c.columns:
            raise ConfigurationError(
                f"The '{column}' feature needs its values joined to the candles: attach them "
                "with forecasting.data.mood.attach_mood (the app and the command line do it "
                f"when '{column}' is among the features), or leave '{column}' out."
            )
        return pd.DataFrame({column: c[column].astype("float64")}, index=c.index)

    return compute


# A window counts candles. Its bounds: the shortest window with a meaning (RSI, ATR and
# the Bollinger band need two candles to have any spread) and 1000 candles, beyond which
# the warm-up eats years of daily data and the feature is nearly constant.
_WINDOW = Range(1, 1000, integer=True)
_SPREAD_WINDOW = Range(2, 1000, integer=True)
# Standard deviations of a Bollinger band: bands narrower than 0.1 or wider than 10
# standard deviations put every close outside or inside them.
_BAND_STDS = Range(0.1, 10.0)

FEATURE_KINDS: dict[str, FeatureKind] = {
    k.kind: k
    for k in [
        FeatureKind("rsi", "RSI", ("window",), (14,), _rsi, lambda p: int(p[0]),
                    "Relative strength index (0-100) of closes.", (_SPREAD_WINDOW,)),
        FeatureKind("macd", "MACD", ("fast", "slow", "signal"), (12, 26, 9), _macd,
                    lambda p: int(p[1]) + int(p[2]) - 2,
                    "MACD line, signal line and histogram of closes.",
                    (_WINDOW, _SPREAD_WINDOW, _WINDOW)),
        FeatureKind("sma", "SMA", ("window",), (20,), _sma, lambda p: int(p[0]) - 1,
                    "Close relative to its simple moving average, minus 1.", (_WINDOW,)),
        FeatureKind("ema", "EMA", ("window",), (20,), _ema, lambda p: int(p[0]) - 1,
                    "Close relative to its exponential moving average, minus 1.", (_WINDOW,)),
        FeatureKind("bollinger", "Bollinger", ("window", "std"), (20, 2.0), _bollinger,
                    lambda p: int(p[0]) - 1, "Bollinger %B (0.5 when flat) and band width.",
                    (_SPREAD_WINDOW, _BAND_STDS)),
        FeatureKind("atr", "ATR", ("window",), (14,), _atr, lambda p: int(p[0]) - 1,
                    "Average true range relative to the close.", (_SPREAD_WINDOW,)),
        FeatureKind("log_return", "Log return", (), (), _log_return, lambda p: 1,
                    "log(close / previous close)."),
        FeatureKind("volume_change", "Volume change", (), (), _volume_change, lambda p: 1,
                    "log(1 + volume) minus its previous value."),
        FeatureKind("fear_greed", "Fear & Greed", (), (), _mood("fear_greed"), lambda p: 0,
                    "The Crypto Fear & Greed Index (0-100, alternative.me), a day's value "
                    "used from the first candle closing after that day ends."),
        FeatureKind("funding_rate", "Funding rate", (), (), _mood("funding_rate"),
                    lambda p: 0,
                    "The pair's perpetual-futures funding rate (a fraction per funding "
                    "period), used from the first candle closing after its funding time."),
    ]
}  # fmt: skip

MOOD_KINDS: tuple[str, ...] = ("fear_greed", "funding_rate")
"""Feature kinds read from columns joined to the candles, not computed from them."""

DEFAULT_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("rsi", (14,)),
    FeatureSpec("macd", (12, 26, 9)),
    FeatureSpec("log_return"),
)


def parse_features(text: str | Iterable[str] | None) -> tuple[FeatureSpec, ...]:
    """Feature specs from ``"rsi:14,macd:12:26:9,log_return"`` (or a list of such strings).

    ``None`` or an empty string gives :data:`DEFAULT_FEATURES`.

    Raises
    ------
    ConfigurationError
        Naming the spec that could not be read.
    """
    if text is None:
        return DEFAULT_FEATURES
    items = text.split(",") if isinstance(text, str) else list(text)
    items = [item.strip() for item in items if item and item.strip()]
    if not items:
        return DEFAULT_FEATURES
    specs = []
    for item in items:
        kind, *raw = item.split(":")
        try:
            params = tuple(_number(v) for v in raw)
        except ValueError as exc:
            raise ConfigurationError(
                f"Feature '{item}': parameters must be numbers, as in rsi:14 or macd:12:26:9."
            ) from exc
        specs.append(FeatureSpec(kind.strip().lower(), params))
    return tuple(dict.fromkeys(specs))


def mood_kinds(*texts: str | Iterable[str] | None) -> tuple[str, ...]:
    """The :data:`MOOD_KINDS` named in any of ``texts`` (feature spec strings or lists).

    ``mood_kinds("rsi:14,fear_greed", "funding_rate")`` is ``("fear_greed",
    "funding_rate")``; a text that does not parse names none.
    """
    found: set[str] = set()
    for text in texts:
        if not text:
            continue
        try:
            found.update(spec.kind for spec in parse_features(text))
        except ConfigurationError:
            continue
    return tuple(kind for kind in MOOD_KINDS if kind in found)


def warmup_length(specs: Sequence[FeatureSpec]) -> int:
    """Rows without a value at the start, for the slowest of ``specs``."""
    return max((s.warmup for s in specs), default=0)


def compute_features(
    candles: pd.DataFrame,
    specs: Sequence[FeatureSpec] = DEFAULT_FEATURES,
    *,
    drop_warmup: bool = True,
) -> pd.DataFrame:
    """Every feature column of ``specs`` for ``candles``.

    Parameters
    ----------
    candles
        An OHLCV frame; not modified.
    specs
        Which features; see :func:`parse_features`.
    drop_warmup
        Drop the leading rows where any feature has no value yet (never fill them).

    Returns
    -------
    pd.DataFrame
        Feature columns on the candles' index (from the first row with every value).

    Raises
    ------
    InsufficientHistory
        When there are not more candles than the warm-up needs.
    """
    # The same spec twice would give duplicate column names.
    specs = tuple(dict.fromkeys(specs))
    if not specs:
        return pd.DataFrame(index=candles.index)
    frames = [spec.compute(candles) for spec in specs]
    features = pd.concat(frames, axis=1).astype("float64")
    features = features.replace([np.inf, -np.inf], np.nan)
    features.index = candles.index
    if drop_warmup:
        complete = features.notna().all(axis=1).to_numpy()
        if not complete.any():
            raise InsufficientHistory(
                f"{len(candles)} candles are too few for these features: the slowest needs "
                f"{warmup_length(specs) + 1}. Choose a longer date range or shorter windows."
            )
        features = features.iloc[int(np.argmax(complete)) :]
    return features


def lookahead_audit(
    candles: pd.DataFrame,
    specs: Sequence[FeatureSpec] = DEFAULT_FEATURES,
    *,
    checks: int = 6,
    compute: Callable[[pd.DataFrame, Sequence[FeatureSpec]], pd.DataFrame] | None = None,
    tolerance: float = 1e-9,
) -> pd.DataFrame:
    """Check that every feature computed on prefixes of the data equals the full computation.

    A feature that uses later candles (a centred window, a back-fill, a normalisation
    over the whole series) changes when rows are appended; one that does not, doesn't.

    Parameters
    ----------
    candles
        The data to audit on.
    specs
        The features.
    checks
        How many prefixes, spread evenly over the data.
    compute
        The function under audit (``compute_features`` by default; tests plant others).
    tolerance
        Relative difference allowed for floating-point noise.

    Returns
    -------
    pd.DataFrame
        One row per feature column: ``column``, ``passed``, ``max_difference`` (relative),
        ``first_difference`` (the first timestamp whose value changed), ``prefixes``.
    """
    compute = compute or (lambda data, s: compute_features(data, s, drop_warmup=False))
    full = compute(candles, specs)
    # Every short prefix through the warm-up (a back-fill leaks only there), then prefixes
    # spread over the rest of the data.
    early = min(warmup_length(specs) + 3, 60, len(candles) - 1)
    spread = np.linspace(early + 1, len(candles) - 1, checks)
    lengths = sorted({*range(1, early + 1), *(int(n) for n in spread if early < n < len(candles))})
    worst = {c: 0.0 for c in full.columns}
    first: dict[str, pd.Timestamp | None] = {c: None for c in full.columns}
    for length in lengths:
        prefix = compute(candles.iloc[:length], specs)
        for column in full.columns:
            a = full[column].iloc[:length].to_numpy(dtype="float64")
            b = (
                prefix[column].to_numpy(dtype="float64")
                if column in prefix
                else np.full(length, np.nan)
            )
            same_nan = np.isnan(a) & np.isnan(b)
            scale = np.maximum(np.abs(a), 1.0)
            diff = np.where(same_nan, 0.0, np.abs(a - b) / scale)
            diff = np.where(np.isnan(diff), np.inf, diff)  # NaN on one side only
            if diff.max(initial=0.0) > worst[column]:
                worst[column] = float(diff.max())
            bad = np.flatnonzero(diff > tolerance)
            if bad.size and (first[column] is None or full.index[bad[0]] < first[column]):
                first[column] = full.index[bad[0]]
    return pd.DataFrame(
        {
            "column": list(full.columns),
            "passed": [worst[c] <= tolerance for c in full.columns],
            "max_difference": [worst[c] for c in full.columns],
            "first_difference": [first[c] for c in full.columns],
            "prefixes": len(lengths),
        }
    )
