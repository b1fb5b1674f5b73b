"""The one way text that is not the app's own reaches the screen: escaped, one line, short.

Streamlit renders the text of messages, captions, labels and ``help=`` tooltips as
Markdown, with GitHub's extensions (bare URLs and e-mail addresses become links), LaTeX
(``$...$``), directives (``:red[...]``), emoji and Material icon shortcodes
(``:smile:``, ``:material/home:``). A symbol in a shared link, a CSV header or cell, an
uploaded file's name, a bundle's key or an exchange's error body shown that way could
draw a link ("Your session expired - sign in again") or an image, which the visitor's
browser fetches at once, inside the app's own message box.

So every value that is not the app's own text goes through :func:`plain`, which cuts it
short, puts it on one line and escapes it so it renders as the characters it holds.
Messages that mix the app's Markdown (a bold button name) with such values are
templates: ``text.error("Could not load {name}: {problem}", name=..., problem=exc)``
escapes the values and leaves the template alone. Exception messages count as user
text: the library's messages quote file names, CSV headers and cells, symbols, link
values and exchange error bodies. Numbers, dates and times are shown as formatted (they
cannot hold Markdown); :class:`Markup` marks text built here, which is not escaped again.

``tests/test_ui_text.py`` reads the source of ``app.py``, ``pages/`` and ``ui/`` so that
no Streamlit call draws text that did not come through here or from a literal.
"""

from __future__ import annotations

import datetime as dt
import numbers
import re
import string
from typing import Any

import numpy as np
import streamlit as st

__all__ = [
    "EXCEPTION_LIMIT",
    "LIMIT",
    "Markup",
    "caption",
    "error",
    "info",
    "markdown",
    "markup",
    "plain",
    "success",
    "toast",
    "warning",
]

#: Characters of one value shown at most; the rest is cut and counted.
LIMIT = 300
#: Exception messages get more room: they are the library's sentences (what went wrong and
#: what to do) around short quotes of user text.
EXCEPTION_LIMIT = 600

# Invisible to the reader, and it ends a word for the patterns Streamlit's renderer looks
# for in text after Markdown is parsed: links in bare URLs (``https://``, ``www.``) and
# e-mail addresses, emoji and icon shortcodes (``:name:``). Escaping alone cannot stop
# them, since they match the text the escapes stand for.
_BREAK = "\u200b"

_SPACE = re.compile(r"\s+")
# C0/C1 controls and the bidirectional overrides that make text read other than it is.
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SPECIAL = re.compile(
    r"""
      (?P<punct>[\\`*_~\[\]()!<>#|${}])  # Markdown, HTML, LaTeX, directive attributes
    | (?P<colon>:(?=\S))                 # directives, shortcodes, URL schemes
    | (?P<at>@(?=[-\w]))                 # e-mail addresses
    | (?P<www>(?i:www)(?=\.))            # bare www. links
    | (?P<entity>&(?=\#?\w+;))           # character references (&amp;)
    | (?P<lead>^[-+=]|^\d+(?=\.))        # list items, headings underlined: a line's start
    """,
    re.VERBOSE,
)
_TRUSTED = (
    numbers.Number,
    dt.date,
    dt.time,
    dt.timedelta,
    np.datetime64,
    np.timedelta64,
)


class Markup(str):
    """Markdown that is safe to show: the app's own text with every value escaped."""

    __slots__ = ()


def _escape(match: re.Match[str]) -> str:
    kind, found = match.lastgroup, match.group()
    if kind == "punct":
        return "\\" + found
    if kind == "colon":
        return "\\:" + _BREAK
    if kind in ("at", "www"):
        return found + _BREAK
    if kind == "entity":
        return "\\&"
    if found[0].isdigit():  # "1. " would start a numbered list
        return found + "\\"
    return "\\" + found


def plain(value: Any, limit: int = LIMIT) -> Markup:
    """``value`` as Markdown that renders as its own characters, on one line, cut short.

    Runs of whitespace (newlines too) become one space; control characters and
    bidirectional overrides are dropped. Past ``limit`` characters the text is cut,
    with an ellipsis and the count of characters cut. Markdown, HTML, LaTeX,
    directive and shortcode syntax is escaped, and bare URLs, ``www.`` and e-mail
    addresses get an invisible break so they stay text.
    """
    if isinstance(value, Markup):
        return value
    text = value if isinstance(value, str) else str(value)
    text = _SPACE.sub(" ", _INVISIBLE.sub("", _SPACE.sub(" ", text))).strip()
    if len(text) > limit:
        text = f"{text[:limit].rstrip()}… ({len(text) - limit:,} more characters)"
    return Markup(_SPECIAL.sub(_escape, text))


class _Formatter(string.Formatter):
    """``str.format`` that escapes every value which is not a number, date or Markup."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def format_field(self, value: Any, format_spec: str) -> str:
        shown = format(value, format_spec)
        if isinstance(value, (Markup, *_TRUSTED)):
            return shown
        limit = max(self.limit, EXCEPTION_LIMIT) if isinstance(value, BaseException) else None
        return plain(shown, limit or self.limit)


def markup(template: str, /, *, limit: int = LIMIT, **values: Any) -> Markup:
    """The template (the app's own Markdown) with each ``{name}`` filled in, escaped.

    Format specs work as in ``str.format`` (``{count:,}``, ``{when:%Y-%m-%d}``).
    Exception values may be ``EXCEPTION_LIMIT`` characters long, others ``limit``.
    """
    return Markup(_Formatter(limit).vformat(template, (), values))


def _show(kind: str, template: str, into: Any, options: dict[str, Any], values: dict) -> Any:
    limit = options.pop("limit")
    body = markup(template, limit=limit, **values)
    options = {k: v for k, v in options.items() if v is not None}
    return getattr(st if into is None else into, kind)(body, **options)


def error(
    template: str,
    /,
    *,
    icon: str | None = None,
    into: Any = None,
    limit: int = LIMIT,
    **values: Any,
) -> Any:
    """``st.error`` of :func:`markup` (in ``into``, a container or placeholder, if given)."""
    return _show("error", template, into, {"icon": icon, "limit": limit}, values)


def warning(
    template: str,
    /,
    *,
    icon: str | None = None,
    into: Any = None,
    limit: int = LIMIT,
    **values: Any,
) -> Any:
    """``st.warning`` of :func:`markup`."""
    return _show("warning", template, into, {"icon": icon, "limit": limit}, values)


def info(
    template: str,
    /,
    *,
    icon: str | None = None,
    into: Any = None,
    limit: int = LIMIT,
    **values: Any,
) -> Any:
    """``st.info`` of :func:`markup`."""
    return _show("info", template, into, {"icon": icon, "limit": limit}, values)


def success(
    template: str,
    /,
    *,
    icon: str | None = None,
    into: Any = None,
    limit: int = LIMIT,
    **values: Any,
) -> Any:
    """``st.success`` of :func:`markup`."""
    return _show("success", template, into, {"icon": icon, "limit": limit}, values)


def toast(template: str, /, *, icon: str | None = None, limit: int = LIMIT, **values: Any) -> Any:
    """``st.toast`` of :func:`markup`."""
    return _show("toast", template, None, {"icon": icon, "limit": limit}, values)


def caption(
    template: str,
    /,
    *,
    help: str | None = None,  # noqa: A002 - Streamlit's name for it
    into: Any = None,
    limit: int = LIMIT,
    **values: Any,
) -> Any:
    """``st.caption`` of :func:`markup`."""
    return _show("caption", template, into, {"help": help, "limit": limit}, values)


def markdown(
    template: str,
    /,
    *,
    help: str | None = None,  # noqa: A002 - Streamlit's name for it
    into: Any = None,
    limit: int = LIMIT,
    **values: Any,
) -> Any:
    """``st.markdown`` of :func:`markup`."""
    return _show("markdown", template, into, {"help": help, "limit": limit}, values)
