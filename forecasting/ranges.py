"""The valid values of every model setting, declared once and checked in one place.

Each model declares a :class:`Range` per setting in its ``parameter_ranges``;
:meth:`forecasting.models.base.Forecaster.check_settings` checks them all (from
``make_model`` and from ``fit``), and the app's settings table (``ui/sharing.py``) takes
its bounds and choices from the same declarations. A bound is where a value stops making
sense or starts costing hours on a shared server; the pages may offer less.

:data:`HORIZON` (candles ahead), :data:`LEVEL` (interval coverage) and :data:`SEED` are
shared by every model, the command line and the pages.
"""

from __future__ import annotations

import math
import numbers
import reprlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from forecasting.errors import ConfigurationError

__all__ = ["HORIZON", "INNER_FOLDS", "LEVEL", "SEED", "TRIALS", "Range", "shown"]


@dataclass(frozen=True)
class Range:
    """The valid values of one setting: a number between bounds, or one of a few choices.

    Attributes
    ----------
    lo, hi
        Bounds for a number (inclusive unless ``lo_open``/``hi_open``).
    integer
        Only whole numbers (``True`` and ``False`` are not numbers here).
    lo_open, hi_open
        The bound itself is excluded (a rate above 0, a share below 1).
    choices
        The only valid values, when it is a choice (text, true/false).
    optional
        ``None`` is valid too (the model then picks the value itself).
    """

    lo: float | None = None
    hi: float | None = None
    integer: bool = False
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[Any, ...] | None = None
    optional: bool = False

    def contains(self, value: Any) -> bool:
        """True when ``value`` is valid (of the right kind and inside the bounds)."""
        if value is None:
            return self.optional
        if self.choices is not None:
            return any(_same_choice(value, choice) for choice in self.choices)
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
            return False
        if self.integer and not isinstance(value, numbers.Integral):
            return False
        # Python compares a huge int with a float exactly (no overflow); NaN fails both.
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return bool(above and below)

    def describe(self) -> str:
        """What is valid, in words: ``"a whole number from 4 to 256"``."""
        if self.choices is not None:
            text = "one of " + ", ".join(_word(c) for c in self.choices)
        else:
            kind = "a whole number" if self.integer else "a number"
            lo, hi = _word(self.lo), _word(self.hi)
            if self.lo_open and self.hi_open:
                text = f"{kind} between {lo} and {hi} (both excluded)"
            elif self.lo_open:
                text = f"{kind} above {lo} and at most {hi}"
            elif self.hi_open:
                text = f"{kind} from {lo} to below {hi}"
            else:
                text = f"{kind} from {lo} to {hi}"
        return f"{text}, or null" if self.optional else text

    def check(self, value: Any, name: str, owner: str = "") -> None:
        """Raise :class:`ConfigurationError` in one line unless ``value`` is valid.

        Parameters
        ----------
        value
            The value given.
        name
            The setting's name, as the user wrote it (``units``, ``--horizon``).
        owner
            Whose setting it is (``"LSTM"``), or ``""``.
        """
        if not self.contains(value):
            who = f"{owner} {name}" if owner else name
            raise ConfigurationError(f"{who} must be {self.describe()}, got {shown(value)}.")


# Candles ahead: a year of daily candles. The pages offer up to 60.
HORIZON = Range(1, 365, integer=True)
# Interval coverage: a share strictly between 0 and 1 (0.9 is a 90 % interval).
LEVEL = Range(0.0, 1.0, lo_open=True, hi_open=True)
# Seeds: what every random generator involved (numpy, TensorFlow, Stan) accepts.
SEED = Range(0, 2**31 - 1, integer=True)
# Trials per outer fold of a tuning run (forecasting.tuning).
TRIALS = Range(1, 10_000, integer=True)
# Inner walk-forward folds inside each outer fold's training window.
INNER_FOLDS = Range(1, 10, integer=True)


def _same_choice(value: Any, choice: Any) -> bool:
    # 1 == True and 0.0 == False in Python: a choice matches only a value of its kind.
    if isinstance(choice, bool):
        return isinstance(value, bool | np.bool_) and bool(value) is choice
    if isinstance(choice, str):
        return isinstance(value, str) and value == choice
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool | np.bool_)
        and (value == choice)
    )


def _word(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 40
_REPR.maxlong = 40


def shown(value: Any) -> str:
    """A value as a message shows it: short, whatever its size or depth."""
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if integral and int(value).bit_length() > 100:
        # repr of an int over 4300 digits raises; nobody reads one anyway.
        digits = int(int(value).bit_length() * math.log10(2)) + 1
        return f"a {'negative ' if value < 0 else ''}number of about {digits} digits"
    try:
        return _REPR.repr(value)
    except Exception:  # a value whose repr fails is still refused with a message
        return f"a {type(value).__name__}"
