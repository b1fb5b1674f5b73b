"""A refused link setting is explained in plain words naming what it takes.

Whatever text a link carries for whatever setting, the app either takes a valid value
or says "must be ..." with the allowed values: never Python's own text ("invalid
literal for int() with base 10").
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from ui import sharing

NAMES = sorted(sharing.SPECS) + list(sharing.SIDEBAR)
PYTHON_WORDS = re.compile(r"literal|convert|base 10|fromisoformat|Traceback|Error|\bint\(\)")


@given(
    name=st.sampled_from(NAMES),
    text=st.one_of(
        st.text(max_size=30),
        st.integers().map(str),
        st.floats().map(str),
        st.sampled_from(["", "abc", "1e999", "nan", "-1", "2024-13-01", "true", "none"]),
    ),
)
@settings(max_examples=500, deadline=None)
def test_every_refusal_names_the_allowed_values_in_words(name, text) -> None:
    values, refused = sharing.parse_all({name: text})
    if refused:
        assert not values
        (note,) = refused
        assert " (must be " in note, note
        assert not PYTHON_WORDS.search(note), note
    else:
        value = values[name]
        spec = sharing.SPECS.get(name)
        if spec is not None and spec.lo is not None:
            assert spec.lo <= value <= spec.hi
        if spec is not None and spec.choices is not None and not spec.many:
            assert value in spec.choices


def test_the_reported_cases_read_as_words() -> None:
    _, refused = sharing.parse_all(
        {"horizon": "abc", "lstm.units": "200000", "level": "0.7", "bogus": "1"}
    )
    assert refused == [
        "horizon=abc (must be a whole number from 1 to 60)",
        "lstm.units=200000 (must be a whole number from 4 to 256)",
        "level=0.7 (must be one of 0.5, 0.8, 0.9, 0.95)",
        "bogus=1 (not a setting of this app)",
    ]
