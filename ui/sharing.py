"""Every experiment setting, its default and its valid values, and its text form in a URL.

One table (:data:`SPECS`) names every setting a user can change. The pages take their
defaults and widget limits from it, links carry each setting as a query parameter, and
restoring from a link or from a bundle goes through :func:`parse`, which refuses anything
outside the table, so a crafted link can only choose among valid settings.

The bounds and choices of the models' settings (and of the horizon, level and seed) are
the library's own declarations (:mod:`forecasting.ranges`, each model's
``parameter_ranges``): a page may offer less than the library accepts, never more, and
the table is checked against them when this module is imported.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from forecasting.data.csvfile import EARLIEST_DATE as EARLIEST_WRITTEN_DATE
from forecasting.data.exchange import list_exchanges
from forecasting.errors import ForecastingError
from forecasting.experiment import (
    DEFAULT_LOSS,
    DEFAULT_MODELS,
    DEFAULT_SEEDS,
    DEFAULT_STRIDE,
    MAX_SEEDS,
)
from forecasting.features import DEFAULT_FEATURES, FEATURE_KINDS
from forecasting.models import LSTM, MODELS, NETWORKS, ProphetModel
from forecasting.ohlcv import timeframe_seconds
from forecasting.ranges import HORIZON, LEVEL, SEED, Range
from forecasting.strategy import StrategySettings

__all__ = [
    "EARLIEST_DATE",
    "SIDEBAR",
    "SPECS",
    "Refusal",
    "Spec",
    "latest_date",
    "parse",
    "parse_each",
    "serialize",
]


@dataclass(frozen=True)
class Spec:
    """One setting: default, and what values are valid.

    Attributes
    ----------
    default
        The value on first open; its type is the setting's type.
    choices
        Valid values, where only some are.
    lo, hi
        Bounds for numbers (inclusive).
    many
        A list of values from ``choices`` (a multiselect).
    """

    default: Any
    choices: tuple | None = None
    lo: float | None = None
    hi: float | None = None
    many: bool = False

    def describe(self) -> str:
        """The valid values in words: ``"a whole number from 1 to 60"``."""
        if self.many:
            return f"one or more of {_words(self.choices)}, separated by commas"
        if self.choices is not None:
            return f"one of {_words(self.choices)}"
        if isinstance(self.default, bool):
            return "true or false"
        if self.lo is not None:
            kind = "a whole number" if isinstance(self.default, int) else "a number"
            return f"{kind} from {_word(self.lo)} to {_word(self.hi)}"
        return "a date as YYYY-MM-DD, or none"

    def limits(self) -> dict[str, Any]:
        """``min_value``/``max_value`` for ``st.number_input``/``st.slider``."""
        return {"min_value": self.lo, "max_value": self.hi}


def _bounded(default: Any, declared: Range, *, lo: Any = None, hi: Any = None) -> Spec:
    """A number within a library range; ``lo``/``hi`` narrow what the page offers."""
    lo = declared.lo if lo is None else lo
    hi = declared.hi if hi is None else hi
    if not all(declared.contains(value) for value in (lo, hi, default)):
        raise ValueError(f"{lo}..{hi} (default {default}) is outside {declared.describe()}")
    return Spec(default, lo=lo, hi=hi)


def _chosen(default: Any, declared: Range, choices: tuple | None = None) -> Spec:
    """One of a library range's choices, or of ``choices`` (values the page offers,
    each inside the range)."""
    choices = declared.choices if choices is None else choices
    if not all(declared.contains(value) for value in (*choices, default)):
        raise ValueError(f"{choices} (default {default}) is outside {declared.describe()}")
    return Spec(default, choices=choices)


_LSTM = LSTM.parameter_ranges
_PROPHET = ProphetModel.parameter_ranges
_STRATEGY = StrategySettings.parameter_ranges

SPECS: dict[str, Spec] = {
    "horizon": _bounded(7, HORIZON, hi=60),  # the page's picker offers up to 60
    "seed": _bounded(42, SEED),
    "level": _chosen(0.9, LEVEL, (0.5, 0.8, 0.9, 0.95)),
    "lstm.enabled": Spec(True),
    "lstm.networks": Spec(["lstm"], choices=NETWORKS, many=True),
    "lstm.lookback": _bounded(30, _LSTM["lookback"]),
    "lstm.layers": _bounded(1, _LSTM["layers"]),
    "lstm.units": _bounded(32, _LSTM["units"]),
    "lstm.dropout": _bounded(0.1, _LSTM["dropout"], hi=0.5),
    "lstm.epochs": _bounded(30, _LSTM["epochs"]),
    "lstm.batch_size": _bounded(64, _LSTM["batch_size"], lo=8, hi=1024),
    "lstm.learning_rate": _chosen(1e-3, _LSTM["learning_rate"], (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)),
    "lstm.patience": _bounded(5, _LSTM["patience"], hi=50),
    "lstm.target": _chosen("log_return", _LSTM["target"]),
    "lstm.interval": _chosen("conformal", _LSTM["interval"]),
    "lstm.use_features": Spec(True),
    "lstm.denoise": _chosen("none", _LSTM["denoise"]),
    "lstm.denoise_window": _bounded(7, _LSTM["denoise_window"], hi=100),
    "prophet.enabled": Spec(True),
    "prophet.changepoint_prior_scale": _chosen(
        0.05, _PROPHET["changepoint_prior_scale"], (0.001, 0.01, 0.05, 0.1, 0.5)
    ),
    "prophet.weekly": _chosen("auto", _PROPHET["weekly_seasonality"]),
    "prophet.yearly": _chosen("auto", _PROPHET["yearly_seasonality"]),
    "prophet.seasonality_mode": _chosen("additive", _PROPHET["seasonality_mode"]),
    "prophet.max_train_candles": _bounded(3000, _PROPHET["max_train_candles"], lo=100),
    "prophet.regressors": Spec(False),
    "prophet.denoise": _chosen("none", _PROPHET["denoise"]),
    "prophet.denoise_window": _bounded(7, _PROPHET["denoise_window"], hi=100),
    "compare.models": Spec(list(DEFAULT_MODELS), choices=tuple(MODELS), many=True),
    "compare.folds": Spec(3, lo=1, hi=10),
    "compare.test_size": Spec(120, lo=10, hi=5000),
    "compare.stride": Spec(DEFAULT_STRIDE, lo=1, hi=100),
    "compare.window": Spec(0, lo=0, hi=100_000),
    "compare.test_start": Spec(None),
    "compare.loss": Spec(DEFAULT_LOSS, choices=("absolute", "squared")),
    "compare.seeds": Spec(DEFAULT_SEEDS, lo=1, hi=MAX_SEEDS),
    "features.kinds": Spec(
        [spec.kind for spec in DEFAULT_FEATURES], choices=tuple(FEATURE_KINDS), many=True
    ),
    # The Strategy page's rules and costs. Floats throughout (a number input refuses mixed
    # types); 10 bp is the library's default fee, Binance's spot taker fee.
    "strategy.threshold": _bounded(1.0, _STRATEGY["threshold"], lo=0.0, hi=1000.0),
    "strategy.threshold_unit": _chosen("fees", _STRATEGY["threshold_unit"]),
    "strategy.fee_bps": _bounded(10.0, _STRATEGY["fee_bps"], lo=0.0, hi=1000.0),
    "strategy.slippage_bps": _bounded(0.0, _STRATEGY["slippage_bps"], lo=0.0, hi=1000.0),
    "strategy.allow_short": Spec(False),
    "strategy.entry": _chosen("close", _STRATEGY["entry"]),
    "strategy.sizing": _chosen("fixed", _STRATEGY["sizing"]),
    "strategy.fraction": _bounded(1.0, _STRATEGY["fraction"], lo=0.01, hi=1.0),
    "strategy.vol_target": _bounded(0.4, _STRATEGY["vol_target"], lo=0.01, hi=10.0),
    "strategy.vol_lookback": _bounded(30, _STRATEGY["vol_lookback"]),
}
for _kind, _info in FEATURE_KINDS.items():
    for _name, _default, _range in zip(
        _info.param_names, _info.defaults, _info.ranges, strict=True
    ):
        SPECS[f"features.{_kind}.{_name}"] = _bounded(_default, _range)

# The sidebar's data selection: plain widget keys, validated by kind.
SIDEBAR = ("source", "exchange", "symbol", "timeframe", "start", "end", "fill_gaps")
SOURCES = ("exchange", "csv", "sample")
#: The earliest day a date range may start: the earliest date the CSV reader takes
#: (:data:`forecasting.data.csvfile.EARLIEST_DATE`), so a file is never outside it.
EARLIEST_DATE: dt.date = EARLIEST_WRITTEN_DATE.date()
# Exchanges named as examples when a link's exchange is unknown (those ccxt serves).
_EXAMPLE_EXCHANGES = ("binance", "bitstamp", "coinbase", "kraken", "okx", "bybit")


def latest_date() -> dt.date:
    """The latest day a date range may end: today in UTC, which exchanges count in."""
    return dt.datetime.now(dt.UTC).date()


def serialize(value: Any) -> str:
    """The text form of a value in a URL."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(serialize(v) for v in value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def parse(name: str, text: str) -> Any:
    """The value of setting ``name`` from its text form.

    Raises
    ------
    ValueError
        When the name is unknown or the value is not valid for it; its message says
        in plain words what the setting takes (``"must be a whole number from 1 to 60"``).
        Of the sidebar's settings, an exchange must be one ccxt knows that serves
        candles (:func:`forecasting.data.exchange.list_exchanges`, no network) and a
        date must lie from :data:`EARLIEST_DATE` to today (UTC); whether a symbol or a
        timeframe is offered depends on the exchange, which the sidebar checks.
    """
    text = str(text).strip()
    if name in SIDEBAR:
        try:
            return _parse_sidebar(name, text)
        except _Worded:
            raise
        except ValueError as exc:
            raise ValueError(f"must be {_SIDEBAR_WORDS[name]}") from exc
    if name not in SPECS:
        raise ValueError("not a setting of this app")
    try:
        return _parse_setting(name, text)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"must be {SPECS[name].describe()}") from exc


_SIDEBAR_WORDS = {
    "source": "one of exchange, csv, sample",
    "start": "a date as YYYY-MM-DD",
    "end": "a date as YYYY-MM-DD",
    "fill_gaps": "true or false",
    "timeframe": "a timeframe such as 1m, 1h, 4h, 1d or 1w",
    "exchange": "a ccxt exchange id of at most 64 characters",
    "symbol": "a symbol such as BTC/USDT, of at most 64 characters",
}


def _words(values: Any) -> str:
    return ", ".join(_word(v) for v in values)


def _word(value: Any) -> str:
    return serialize(value)


def _parse_setting(name: str, text: str) -> Any:
    spec = SPECS[name]
    if name == "compare.test_start":
        return None if text in ("", "none") else dt.date.fromisoformat(text)
    if spec.many:
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in spec.choices]
        if bad or not values:
            raise ValueError(f"not among {', '.join(map(str, spec.choices))}")
        return list(dict.fromkeys(values))
    value = _typed(text, spec.default, spec.choices)
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"not among {', '.join(map(str, spec.choices))}")
    if spec.lo is not None and not spec.lo <= value <= spec.hi:
        raise ValueError(f"outside {spec.lo}..{spec.hi}")
    return value


def _typed(text: str, default: Any, choices: tuple | None) -> Any:
    if choices is not None and any(isinstance(c, bool) for c in choices):
        mapping = {serialize(c): c for c in choices}
        if text not in mapping:
            raise ValueError("not a valid choice")
        return mapping[text]
    if isinstance(default, bool):
        if text not in ("true", "false"):
            raise ValueError("not true or false")
        return text == "true"
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        value = float(text)
        if choices is not None:
            # 0.001 and 1e-3 are the same choice: match by value, keep the choice itself.
            match = [c for c in choices if abs(c - value) <= 1e-12 * max(1.0, abs(c))]
            return match[0] if match else value
        return value
    return text


class _Worded(ValueError):
    """A refusal whose message is already the plain words shown (``"must be ..."``)."""


def _parse_sidebar(name: str, text: str) -> Any:
    if name == "source":
        if text not in SOURCES:
            raise ValueError(f"not among {', '.join(SOURCES)}")
        return text
    if name in ("start", "end"):
        day = dt.date.fromisoformat(text)
        if not EARLIEST_DATE <= day <= latest_date():
            raise _Worded(
                f"must be a date as YYYY-MM-DD from {EARLIEST_DATE} to today, {latest_date()}"
            )
        return day
    if name == "fill_gaps":
        if text not in ("true", "false"):
            raise ValueError("not true or false")
        return text == "true"
    if name == "timeframe":
        try:
            timeframe_seconds(text)
        except ForecastingError as exc:
            raise ValueError(str(exc)) from exc
        return text
    if not text or len(text) > 64:
        raise ValueError("empty or too long")
    if name == "exchange" and text not in list_exchanges():
        raise _Worded(_unknown_exchange(text))
    return text


def _unknown_exchange(text: str) -> str:
    """``"must be an exchange ccxt knows that serves candles (90 of them), such as ..."``:
    the known ids closest to ``text`` first, then well-known ones."""
    known = list_exchanges()
    close = difflib.get_close_matches(text.lower(), known, n=3, cutoff=0.6)
    examples = list(dict.fromkeys([*close, *(e for e in _EXAMPLE_EXCHANGES if e in known)]))
    return (
        f"must be an exchange ccxt knows that serves candles ({len(known)} of them), such "
        f"as {', '.join(examples[:6])}"
    )


@dataclass(frozen=True)
class Refusal:
    """A setting refused by :func:`parse`: its name and text as given (each cut to 40
    characters), and why, in words (``"must be a whole number from 1 to 60"``).

    ``str()`` is the one-line note ``"horizon=70 (must be a whole number from 1 to 60)"``.
    """

    name: str
    text: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}={self.text} ({self.reason})"

    @property
    def known(self) -> bool:
        """Whether the name is a setting of this app (only its value was refused)."""
        return self.name in SPECS or self.name in SIDEBAR


def parse_each(params: Mapping[str, str]) -> tuple[dict[str, Any], list[Refusal]]:
    """Valid settings from a mapping of texts, and a :class:`Refusal` for each refused.

    Each text is checked on its own (:func:`parse`), then together: a ``start`` after
    the ``end`` refuses both.
    """
    values: dict[str, Any] = {}
    refused: list[Refusal] = []
    for name, text in params.items():
        try:
            values[name] = parse(name, text)
        except (ValueError, TypeError) as exc:
            refused.append(Refusal(str(name)[:40], str(text)[:40], str(exc)))
    start, end = values.get("start"), values.get("end")
    if start is not None and end is not None and start > end:
        # Neither end of a reversed range is used: the range stays as it was.
        del values["start"], values["end"]
        refused += [
            Refusal("start", serialize(start), f"must be on or before the end date, end={end}"),
            Refusal("end", serialize(end), f"must be on or after the start date, start={start}"),
        ]
    return values, refused


def parse_all(params: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Valid settings from a mapping of texts, and a note for each one refused
    (:class:`Refusal`'s text)."""
    values, refused = parse_each(params)
    return values, [str(refusal) for refusal in refused]


def settings_document(values: Mapping[str, Any]) -> str:
    """The JSON kept in a bundle to restore these settings."""
    return json.dumps({name: serialize(value) for name, value in values.items()}, indent=2)
