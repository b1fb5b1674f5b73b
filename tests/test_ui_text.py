"""ui.text: user text reaches the screen escaped, on one line, cut short; and only that way.

Streamlit renders messages, captions, labels and tooltips as Markdown. The tests render
what :mod:`ui.text` produces with a CommonMark parser plus the text patterns of
Streamlit's renderer (``tests/app/markdown_check.py``), over random strings made of
Markdown, HTML, LaTeX, directive and shortcode payloads; and read the source of the
app so that no Streamlit call draws a value that did not go through :mod:`ui.text`.
"""

from __future__ import annotations

import ast
import datetime as dt
import re
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.app.markdown_check import foreign, markup_types, visible
from ui import text

ROOT = Path(__file__).resolve().parents[1]

LINK = "[Sign in](https://evil.example/x)"
IMAGE = "![x](https://evil.example/p.png)"
PAYLOADS = [
    LINK,
    IMAGE,
    "[Sign in][r]\n\n[r]: https://evil.example/x",
    "<img src=https://evil.example/p.png>",
    "<https://evil.example/x>",
    "https://evil.example/x",
    "www.evil.example",
    "help@evil.example",
    ":material/home:",
    ":smile:",
    ":red[alert]",
    ":red{#x}",
    "$x^2$",
    "$$\\int$$",
    "`code`",
    "```\nfence\n```",
    "**bold** __b__ *i* _i_",
    "~~gone~~",
    "# Heading",
    "- item",
    "+ item",
    "1. item",
    "2) item",
    "> quote",
    "---",
    "Title\n===",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "&amp; &#60; &lt;",
    "[^1]",
    "\\",
    "\\[",
    "    indented code",
    "\u202eevil\u202c",
    "\x00\x07\x1b[31m",
    "trailing  \nbreak",
]
FRAGMENTS = st.sampled_from(PAYLOADS) | st.text(
    alphabet=st.sampled_from(list("\\`*_~[]()!<>#|$:{}@&+-=.0123456789aw \n\t\r€·é")),
    max_size=8,
)
RANDOM_TEXT = st.lists(FRAGMENTS, max_size=12).map("".join)


def expected(value: str, limit: int = text.LIMIT) -> str:
    """What the reader should see of ``value``: one line, controls gone, cut at ``limit``."""
    one_line = " ".join(value.split())
    kept = "".join(
        c
        for c in one_line
        if not (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u200e\u200f")
        and not ("\u202a" <= c <= "\u202e" or "\u2066" <= c <= "\u2069")
    )
    kept = " ".join(kept.split())
    if len(kept) > limit:
        return f"{kept[:limit].rstrip()}… ({len(kept) - limit:,} more characters)"
    return kept


# --- plain ---------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", PAYLOADS)
def test_each_payload_renders_as_its_characters(payload):
    shown = text.plain(payload)
    assert markup_types(shown) == set(), "nothing but one paragraph of text"
    assert foreign(shown) == []
    assert visible(shown) == expected(payload)


@pytest.mark.parametrize(
    ("value", "markdown"),
    [
        # the payloads: every bracket escaped, the URL broken where Streamlit looks
        (LINK, "\\[Sign in\\]\\(https\\:\u200b//evil.example/x\\)"),
        (IMAGE, "\\!\\[x\\]\\(https\\:\u200b//evil.example/p.png\\)"),
        # ordinary text of the app stays as it is
        ("binance · ETH/USDT · 1d", "binance · ETH/USDT · 1d"),
        ("S&P 500", "S&P 500"),
        ("binance: timed out", "binance: timed out"),
        # a leading list marker or number is escaped, later ones need not be
        ("- 1. x", "\\- 1. x"),
        ("12. x", "12\\. x"),
        # several lines become one
        ("a\n\n# b\r\nc", "a \\# b c"),
    ],
)
def test_plain_escapes_what_streamlit_would_interpret(value, markdown):
    assert text.plain(value) == markdown


def test_plain_cuts_long_text_and_says_how_much():
    shown = text.plain("x" * 1000 + LINK, limit=300)
    assert visible(shown) == "x" * 300 + "… (733 more characters)"
    assert len(text.plain("y" * 10_000_000)) < 400


@settings(max_examples=400, deadline=None)
@given(RANDOM_TEXT, st.integers(min_value=1, max_value=120))
def test_plain_renders_any_text_literally_and_bounded(value, limit):
    shown = text.plain(value, limit=limit)
    assert markup_types(shown) == set()
    assert foreign(shown) == []
    assert visible(shown) == expected(value, limit)
    assert len(visible(shown)) <= limit + len("… (1,000,000 more characters)")


# --- templates ------------------------------------------------------------------------------


def test_markup_escapes_the_values_not_the_template():
    error = ValueError(f"Line 2, column '{IMAGE}' is not a date")
    shown = text.markup("**{name}** said: {problem}", name=LINK, problem=error)
    assert markup_types(shown) == {"strong_open", "strong_close"}
    assert foreign(shown) == []
    assert visible(shown) == f"{LINK} said: Line 2, column '{IMAGE}' is not a date"


@pytest.mark.parametrize(
    ("template", "values", "shown"),
    [
        # numbers and dates keep their format specs and are not escaped
        ("{n:,} candles", {"n": 12345}, "12,345 candles"),
        ("{share:.0%}", {"share": 0.25}, "25%"),
        ("{when:%Y-%m-%d %H:%M}", {"when": pd.Timestamp("2024-01-31 12:30")}, "2024-01-31 12:30"),
        ("{day}", {"day": dt.date(2024, 1, 31)}, "2024-01-31"),
        # text built here is not escaped twice
        ("- {line}", {"line": text.markup("**{m}** wins", m="a_b")}, "- **a\\_b** wins"),
        ("{v}", {"v": text.plain("a*b")}, "a\\*b"),
    ],
)
def test_markup_formats_trusted_values_as_given(template, values, shown):
    assert text.markup(template, **values) == shown


def test_exception_messages_get_more_room_than_other_values():
    message = "x" * 500
    assert "more characters" not in visible(text.markup("{e}", e=RuntimeError(message)))
    assert "200 more characters" in visible(text.markup("{e}", e=message))


@settings(max_examples=200, deadline=None)
@given(RANDOM_TEXT, RANDOM_TEXT)
def test_markup_never_lets_a_value_draw_markup(first, second):
    assume(expected(first))  # "****" is four asterisks, not bold
    shown = text.markup("Could not load **{a}**: {b}", a=first, b=second)
    assert foreign(shown) == []
    assert markup_types(shown) <= {"strong_open", "strong_close"}
    assert visible(shown) == f"Could not load {expected(first)}: {expected(second)}".strip()


# --- the source: every drawn text is a literal or comes from ui.text ------------------------

MESSAGES = {
    "error", "warning", "info", "success", "toast", "caption", "markdown", "write",
    "title", "header", "subheader", "exception", "badge",
}  # fmt: skip
LABELLED = {
    "expander", "popover", "status", "spinner", "metric", "button", "download_button",
    "link_button", "form_submit_button", "page_link", "checkbox", "toggle", "radio",
    "selectbox", "multiselect", "select_slider", "slider", "number_input", "text_input",
    "text_area", "date_input", "time_input", "file_uploader", "color_picker",
    "camera_input", "audio_input", "pills", "segmented_control", "feedback",
}  # fmt: skip
SAFE_CALLS = {"plain", "markup"}
UNSAFE = object()  # a binding whose value the check cannot follow (a parameter, a loop)


def _scopes(tree: ast.Module):
    """Each scope (module, function, lambda) with its own nodes (not nested scopes')."""
    todo = [tree]
    while todo:
        scope = todo.pop()
        own, stack = [], list(ast.iter_child_nodes(scope))
        while stack:
            node = stack.pop()
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                todo.append(node)
                continue
            own.append(node)
            stack.extend(ast.iter_child_nodes(node))
        yield scope, own


def _bindings(scope: ast.AST, own: list[ast.AST]) -> dict[str, list]:
    bound: dict[str, list] = {}
    if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        for arg in ast.walk(scope.args):
            if isinstance(arg, ast.arg):
                bound.setdefault(arg.arg, []).append(UNSAFE)
    assigned = set()
    for node in own:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                value = node.value if isinstance(target, ast.Name) else UNSAFE
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        bound.setdefault(name.id, []).append(value)
                        assigned.add(id(name))
    for node in own:
        # loop targets, with ... as, walrus, augmented assignment, comprehensions
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            if id(node) not in assigned:
                bound.setdefault(node.id, []).append(UNSAFE)
    return bound


def _is_text_call(node: ast.AST, names: set[str]) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "text"
        and node.func.attr in names
    )


def _numeric_spec(spec: ast.AST | None) -> bool:
    # A format spec that a str refuses (",", ".0%", "%Y-%m-%d") proves the value is not text.
    if not isinstance(spec, ast.JoinedStr) or not all(
        isinstance(v, ast.Constant) for v in spec.values
    ):
        return False
    try:
        format("", "".join(v.value for v in spec.values))
    except ValueError:
        return True
    return False


def _safe(node, chain: list[dict], seen: frozenset = frozenset()) -> bool:
    if node is UNSAFE:
        return False
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str | int | float | bool | type(None))
    if isinstance(node, ast.JoinedStr):
        return all(_safe(v, chain, seen) for v in node.values)
    if isinstance(node, ast.FormattedValue):
        return _numeric_spec(node.format_spec) or _safe(node.value, chain, seen)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _safe(node.left, chain, seen) and _safe(node.right, chain, seen)
    if isinstance(node, ast.IfExp):
        return _safe(node.body, chain, seen) and _safe(node.orelse, chain, seen)
    if _is_text_call(node, SAFE_CALLS):
        return True
    if isinstance(node, ast.Name) and node.id not in seen:
        for bound in chain:
            if node.id in bound:
                values = bound[node.id]
                return bool(values) and all(_safe(v, chain, seen | {node.id}) for v in values)
    return False


def _drawn(call: ast.Call) -> list[ast.AST]:
    """The arguments of a Streamlit call that it renders as Markdown."""
    func = call.func
    names = (
        {func.attr}
        if isinstance(func, ast.Attribute)
        else {f.attr for f in (func.body, func.orelse) if isinstance(f, ast.Attribute)}
        if isinstance(func, ast.IfExp)
        else set()
    )
    drawn = [k.value for k in call.keywords if k.arg == "help"]
    if names & MESSAGES:
        drawn += [*call.args, *(k.value for k in call.keywords if k.arg in ("body", "label"))]
    if names & LABELLED:
        drawn += [*call.args[:1], *(k.value for k in call.keywords if k.arg == "label")]
    if names & {"progress", "spinner", "status"}:
        drawn += [*call.args[1:2], *(k.value for k in call.keywords if k.arg == "text")]
    return drawn


def unsafe_calls(source: str, path: str = "<source>") -> list[str]:
    """Each call that draws text not from a literal nor from ``ui.text``."""
    tree = ast.parse(source)
    scopes = {id(scope): (scope, own) for scope, own in _scopes(tree)}
    parents = {}
    for scope, _ in scopes.values():
        for node in ast.walk(scope):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                    parents.setdefault(id(child), scope)
    bindings = {key: _bindings(scope, own) for key, (scope, own) in scopes.items()}
    found = []
    for scope, own in scopes.values():
        chain, outer = [], scope
        while outer is not None:
            chain.append(bindings[id(outer)])
            outer = parents.get(id(outer))
        for call in (n for n in own if isinstance(n, ast.Call)):
            if _is_text_call(call, set(text.__all__)):
                template = call.args[:1]
                if call.func.attr != "plain" and not (
                    template
                    and isinstance(template[0], ast.Constant)
                    and isinstance(template[0].value, str)
                ):
                    found.append(f"{path}:{call.lineno}: text.{call.func.attr} template")
                bad = [k.value for k in call.keywords if k.arg == "help"]
                bad = [v for v in bad if not _safe(v, chain)]
            else:
                bad = [v for v in _drawn(call) if not _safe(v, chain)]
            if bad:
                found.append(
                    f"{path}:{call.lineno}: {ast.unparse(call.func)}({ast.unparse(bad[0])})"
                )
    return sorted(found)


APP_SOURCES = sorted(
    path.relative_to(ROOT).as_posix()
    for path in [ROOT / "app.py", *ROOT.glob("pages/*.py"), *ROOT.glob("ui/*.py")]
    if path.name != "text.py"
)


@pytest.mark.parametrize("path", APP_SOURCES)
def test_every_drawn_text_is_a_literal_or_comes_from_ui_text(path):
    assert unsafe_calls((ROOT / path).read_text(), path) == []


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        # the kinds of call the check must refuse
        ("st.error(str(exc))", True),
        ("st.warning(f'Could not list {exchange}: {exc}')", True),
        ("st.warning('Not valid: ' + '; '.join(refused))", True),
        ("(st.error if bad else st.success)(message)", True),
        ("status.info(f'**{model}**: {note}')", True),
        ("st.caption(dataset.label)", True),
        ("st.selectbox('Symbol', listed, help=f'Listed on {exchange}')", True),
        ("st.expander(name)", True),
        ("bar.progress(0.5, text=details['message'])", True),
        ("def f(x):\n    st.info(x)", True),
        ("for line in lines:\n    st.markdown(line)", True),
        ("text.error(template, problem=exc)", True),
        # and the ones it must let through
        ("st.error('Upload a CSV file.')", False),
        ("st.info(f'{len(filled):,} candles were filled.')", False),
        ("st.warning(f\"{n:,} candle{'s' if n != 1 else ''} dropped\")", False),
        ("st.caption(text.plain(label))", False),
        ("text.error('{problem}', problem=exc)", False),
        ("st.selectbox('Symbol', listed, help=text.markup('{n:,} listed', n=n))", False),
        ("message = text.markup('{a}', a=a)\nbar.progress(1.0, text=message)", False),
        ("st.metric('Missing', missing, help=f'Of {expected:,} expected.')", False),
        ("st.expander(f'Missing candles: {len(gaps):,} ranges')", False),
    ],
)
def test_the_source_check_tells_safe_from_unsafe_calls(source, flagged):
    assert bool(unsafe_calls(source)) is flagged


def test_the_source_check_reads_every_page_and_glue_module():
    assert {"app.py", "pages/data.py", "pages/compare.py", "ui/state.py"} <= set(APP_SOURCES)
    assert not any(re.search(r"text\.py$", path) for path in APP_SOURCES)
