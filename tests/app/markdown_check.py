"""What Streamlit would draw for a piece of message Markdown, read without a browser.

Streamlit renders messages with CommonMark plus GitHub's extensions, LaTeX, directives
and emoji shortcodes, and after parsing it turns bare URLs, ``www.`` and e-mail
addresses in the text into links (remark-gfm). :func:`foreign` parses the Markdown with
markdown-it (CommonMark, as Streamlit's parser) and applies the text patterns of
Streamlit's bundle to the text it yields, so a test can check a message draws no link,
image or HTML of its own, in the same terms as the browser test.
"""

from __future__ import annotations

import re

from markdown_it import MarkdownIt
from markdown_it.token import Token

ZERO_WIDTH = "\u200b"
_PARSER = MarkdownIt("commonmark").enable(["table", "strikethrough"])

# The patterns remark-gfm and remark-emoji apply to text nodes, from Streamlit's
# StreamlitMarkdown bundle (JavaScript's \w is ASCII).
_TEXT_PATTERNS = {
    "bare URL": re.compile(r"(https?://|www(?=\.))[-.\w]+", re.IGNORECASE | re.ASCII),
    "e-mail address": re.compile(r"[-.\w+]+@[-\w]+(?:\.[-\w]+)+", re.ASCII),
    "shortcode": re.compile(r":[\w+-]+:", re.ASCII),
}
# Syntax of Streamlit's extensions that CommonMark does not know, unescaped in the source.
_UNESCAPED = r"(?<!\\)(?:\\\\)*"
_SOURCE_PATTERNS = {
    "LaTeX": re.compile(_UNESCAPED + r"\$"),
    "directive": re.compile(_UNESCAPED + r":[A-Za-z]"),
    "Material icon": re.compile(r":material/"),
}
_FOREIGN_TOKENS = {"link_open", "image", "html_inline", "html_block"}
_PLAIN_BLOCKS = {"paragraph_open", "paragraph_close", "inline"}


def tokens(markdown: str) -> list[Token]:
    """Block tokens, each inline one followed by its children."""
    out = []
    for token in _PARSER.parse(markdown):
        out.append(token)
        out.extend(token.children or [])
    return out


def visible(markdown: str) -> str:
    """The text a reader sees (zero-width characters dropped)."""
    parts = [
        token.content
        for token in tokens(markdown)
        if token.type in ("text", "text_special", "code_inline")
    ]
    return "".join(parts).replace(ZERO_WIDTH, "")


def foreign(markdown: str) -> list[str]:
    """What in ``markdown`` would draw a link, an image, HTML or an extension's markup."""
    found = [t.type for t in tokens(markdown) if t.type in _FOREIGN_TOKENS]
    texts = [t.content for t in tokens(markdown) if t.type in ("text", "text_special")]
    for name, pattern in _TEXT_PATTERNS.items():
        found += [f"{name} {m.group()!r}" for text in texts for m in pattern.finditer(text)]
    for name, pattern in _SOURCE_PATTERNS.items():
        found += [f"{name} at {m.start()}" for m in pattern.finditer(markdown)]
    return found


def markup_types(markdown: str) -> set[str]:
    """Every token type that is not plain paragraph text."""
    return {
        t.type
        for t in tokens(markdown)
        if t.type not in _PLAIN_BLOCKS and t.type not in ("text", "text_special", "softbreak")
    }
