"""What the workbench draws from outside (app/shown.py) as Textual takes it: a ``Text``
(never read as markup), or a string for a place Textual reads as markup."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text

from app.shown import NEWLINE, clean, clean_block, clean_line, clean_row, from_ansi

__all__ = [
    "NEWLINE",
    "clean",
    "clean_block",
    "clean_line",
    "clean_row",
    "from_ansi",
    "literal",
    "plain",
]


def plain(text: str, style: str | Style = "", *, one_line: bool = False) -> Text:
    """``text`` as a ``Text`` (never read as markup), control characters shown."""
    return Text(clean(text, one_line=one_line), style=style)


def literal(text: str) -> str:
    """``text`` for a place Textual reads as markup (a border title, a notification):
    one line, control characters shown, square brackets escaped."""
    from textual.markup import escape

    return escape(clean(text, one_line=True))
